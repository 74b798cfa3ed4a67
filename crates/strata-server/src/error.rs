//! The single mapping from internal errors to EBS wire errors.
//!
//! Every [`ServiceError`] and [`AuthError`] variant is matched without a wildcard, so a new
//! variant does not compile until its wire form is decided here.

use strata_core::ServiceError;
use strata_sigv4::AuthError;
use strata_wire::{ErrorCode, Reason, WireError};

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub WireError);

impl ApiError {
    /// ValidationException with `reason`.
    pub fn validation(reason: Reason, message: impl Into<String>) -> Self {
        Self(WireError::validation(reason, message))
    }

    /// ValidationException, INVALID_PARAMETER_VALUE.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::validation(Reason::InvalidParameterValue, message)
    }

    /// InternalServerException with a message safe to show.
    pub fn internal(message: impl Into<String>) -> Self {
        Self(WireError::new(
            ErrorCode::InternalServerException,
            None,
            message,
        ))
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let message = error.to_string();
        let wire = match error {
            ServiceError::InvalidParameter(_) => {
                WireError::validation(Reason::InvalidParameterValue, message)
            }
            ServiceError::InvalidVolumeSize(_) => {
                WireError::validation(Reason::InvalidVolumeSize, message)
            }
            ServiceError::InvalidTag(_) | ServiceError::TagLimitExceeded(_) => {
                WireError::validation(Reason::InvalidTag, message)
            }
            ServiceError::InvalidBlock(_) => WireError::validation(Reason::InvalidBlock, message),
            ServiceError::InvalidBlockToken(_) => {
                WireError::validation(Reason::InvalidBlockToken, message)
            }
            ServiceError::InvalidPageToken(_) => {
                WireError::validation(Reason::InvalidPageToken, message)
            }
            ServiceError::UnrelatedSnapshots { .. } => {
                WireError::validation(Reason::UnrelatedSnapshots, message)
            }
            ServiceError::ConflictingBlockUpdate(_) => {
                WireError::validation(Reason::ConflictingBlockUpdate, message)
            }
            ServiceError::SnapshotNotFound(_) => WireError::new(
                ErrorCode::ResourceNotFoundException,
                Some(Reason::SnapshotNotFound),
                message,
            ),
            ServiceError::IdempotencyConflict(_) => {
                WireError::new(ErrorCode::ConflictException, None, message)
            }
            ServiceError::CorruptData(_) => {
                WireError::new(ErrorCode::InternalServerException, None, message)
            }
            ServiceError::Store(store) => {
                tracing::error!(error = %store, "storage failure");
                WireError::new(
                    ErrorCode::InternalServerException,
                    None,
                    "The server could not complete the request because of a storage failure; retry later.",
                )
            }
        };
        Self(wire)
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        let code = match error {
            AuthError::MissingAuthentication => ErrorCode::MissingAuthenticationTokenException,
            AuthError::Malformed(_) => ErrorCode::IncompleteSignatureException,
            AuthError::UnknownAccessKey => ErrorCode::UnrecognizedClientException,
            AuthError::SignatureMismatch
            | AuthError::Expired { .. }
            | AuthError::MissingContentSha256
            | AuthError::ContentSha256Mismatch => ErrorCode::InvalidSignatureException,
        };
        Self(WireError::new(code, None, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_core::ports::StoreError;
    use strata_types::SnapshotId;

    /// The wire form of every service error, in one table.
    #[test]
    fn every_service_error_has_its_wire_form() {
        let id = SnapshotId::parse("snap-0a").expect("id");
        let text = || "x".to_owned();
        let cases = [
            (
                ServiceError::InvalidParameter(text()),
                400,
                "ValidationException",
                Some("INVALID_PARAMETER_VALUE"),
            ),
            (
                ServiceError::InvalidVolumeSize(text()),
                400,
                "ValidationException",
                Some("INVALID_VOLUME_SIZE"),
            ),
            (
                ServiceError::InvalidTag(text()),
                400,
                "ValidationException",
                Some("INVALID_TAG"),
            ),
            (
                ServiceError::InvalidBlock(text()),
                400,
                "ValidationException",
                Some("INVALID_BLOCK"),
            ),
            (
                ServiceError::InvalidBlockToken(text()),
                400,
                "ValidationException",
                Some("INVALID_BLOCK_TOKEN"),
            ),
            (
                ServiceError::InvalidPageToken(text()),
                400,
                "ValidationException",
                Some("INVALID_PAGE_TOKEN"),
            ),
            (
                ServiceError::UnrelatedSnapshots {
                    first: id.clone(),
                    second: id.clone(),
                },
                400,
                "ValidationException",
                Some("UNRELATED_SNAPSHOTS"),
            ),
            (
                ServiceError::ConflictingBlockUpdate(text()),
                400,
                "ValidationException",
                Some("CONFLICTING_BLOCK_UPDATE"),
            ),
            (
                ServiceError::SnapshotNotFound(id.clone()),
                404,
                "ResourceNotFoundException",
                Some("SNAPSHOT_NOT_FOUND"),
            ),
            (
                ServiceError::IdempotencyConflict(text()),
                409,
                "ConflictException",
                None,
            ),
            (
                ServiceError::CorruptData(text()),
                500,
                "InternalServerException",
                None,
            ),
            (
                ServiceError::Store(StoreError::Backend(text())),
                500,
                "InternalServerException",
                None,
            ),
        ];
        for (error, status, code, reason) in cases {
            let ApiError(wire) = ApiError::from(error);
            assert_eq!(wire.code.status(), status);
            assert_eq!(wire.code.as_str(), code);
            assert_eq!(wire.reason.map(Reason::as_str), reason);
        }
    }

    #[test]
    fn storage_details_are_not_shown_to_clients() {
        let ApiError(wire) = ApiError::from(ServiceError::Store(StoreError::Backend(
            "/secret/path".into(),
        )));
        assert!(!wire.message.contains("/secret/path"));
    }
}
