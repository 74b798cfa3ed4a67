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
            ServiceError::InvalidTag(_) => WireError::validation(Reason::InvalidTag, message),
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
