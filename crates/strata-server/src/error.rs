//! The single mapping from internal errors to EBS wire errors, and the one place that
//! words a service error for clients ([`client_message`], which the EC2 mapping in
//! `ec2/mod.rs` uses too: that file only chooses the EC2 error *code*).
//!
//! Every [`ServiceError`] and [`AuthError`] variant is matched without a wildcard, so a new
//! variant does not compile until its wire form is decided here.

use strata_core::ServiceError;
use strata_sigv4::AuthError;
use strata_types::BLOCK_SIZE;
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

/// The text a client reads for `error`. Storage failures are worded without their
/// details (paths, hosts), which only the log gets.
pub fn client_message(error: &ServiceError) -> String {
    match error {
        ServiceError::NotPending { snapshot, status } => format!(
            "The snapshot '{snapshot}' is not pending: its status is '{}'.",
            status.as_str()
        ),
        ServiceError::ParentNotCompleted { parent, status } => format!(
            "The parent snapshot '{parent}' is not completed (status: {}).",
            status.as_str()
        ),
        ServiceError::WrongBlockSize { len } => format!(
            "The block data is {len} bytes; every block must be exactly {BLOCK_SIZE} bytes."
        ),
        ServiceError::BlockChecksumMismatch => {
            "The checksum of the block data does not match x-amz-Checksum.".into()
        }
        ServiceError::ChangedBlocksCountMismatch {
            snapshot,
            claimed,
            written,
        } => format!(
            "ChangedBlocksCount is {claimed}, but {written} distinct blocks were written to snapshot '{snapshot}'."
        ),
        ServiceError::AggregateChecksumMismatch { snapshot } => format!(
            "The aggregate checksum does not match the blocks written to snapshot '{snapshot}'."
        ),
        ServiceError::Store(store) if is_out_of_space(store) => {
            "The server is out of storage space; nothing was stored. Retry once space is freed \
             (delete snapshots and collect garbage) or added."
                .into()
        }
        ServiceError::Store(_) => {
            "The server could not complete the request because of a storage failure; retry later."
                .into()
        }
        ServiceError::InvalidParameter(_)
        | ServiceError::InvalidVolumeSize(_)
        | ServiceError::InvalidTag(_)
        | ServiceError::TagLimitExceeded(_)
        | ServiceError::InvalidBlock(_)
        | ServiceError::InvalidBlockToken(_)
        | ServiceError::InvalidPageToken(_)
        | ServiceError::UnrelatedSnapshots { .. }
        | ServiceError::SnapshotNotFound(_)
        | ServiceError::IdempotencyConflict(_)
        | ServiceError::ConflictingBlockUpdate(_)
        | ServiceError::InvalidCustomerKey(_)
        | ServiceError::KeyAccessDenied(_)
        | ServiceError::PendingSnapshotLimit(_)
        | ServiceError::CorruptData(_) => error.to_string(),
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        let message = client_message(&error);
        let wire = match error {
            ServiceError::InvalidParameter(_)
            | ServiceError::NotPending { .. }
            | ServiceError::ParentNotCompleted { .. }
            | ServiceError::WrongBlockSize { .. }
            | ServiceError::BlockChecksumMismatch
            | ServiceError::ChangedBlocksCountMismatch { .. }
            | ServiceError::AggregateChecksumMismatch { .. } => {
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
            ServiceError::InvalidCustomerKey(_) => {
                WireError::validation(Reason::InvalidCustomerKey, message)
            }
            ServiceError::PendingSnapshotLimit(_) => {
                WireError::new(ErrorCode::ConcurrentLimitExceededException, None, message)
            }
            ServiceError::KeyAccessDenied(_) => WireError::new(
                ErrorCode::AccessDeniedException,
                Some(Reason::DependencyAccessDenied),
                message,
            ),
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
                tracing::error!(error = %ErrorChain(&store), "storage failure");
                WireError::new(ErrorCode::InternalServerException, None, message)
            }
        };
        Self(wire)
    }
}

/// Whether a storage failure is a full disk (ENOSPC).
fn is_out_of_space(error: &strata_core::ports::StoreError) -> bool {
    matches!(error, strata_core::ports::StoreError::Io { source, .. }
        if source.kind() == std::io::ErrorKind::StorageFull)
}

/// An error with its sources, `a: b: c`, for the log.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            // thiserror's `{source}` in a message already shows the cause once.
            let text = cause.to_string();
            if !self.0.to_string().ends_with(&text) {
                write!(f, ": {text}")?;
            }
            source = cause.source();
        }
        Ok(())
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
    use strata_core::snapshot::SnapshotStatus;
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
                ServiceError::NotPending {
                    snapshot: id.clone(),
                    status: SnapshotStatus::Completed,
                },
                400,
                "ValidationException",
                Some("INVALID_PARAMETER_VALUE"),
            ),
            (
                ServiceError::ParentNotCompleted {
                    parent: id.clone(),
                    status: SnapshotStatus::Pending,
                },
                400,
                "ValidationException",
                Some("INVALID_PARAMETER_VALUE"),
            ),
            (
                ServiceError::WrongBlockSize { len: 3 },
                400,
                "ValidationException",
                Some("INVALID_PARAMETER_VALUE"),
            ),
            (
                ServiceError::BlockChecksumMismatch,
                400,
                "ValidationException",
                Some("INVALID_PARAMETER_VALUE"),
            ),
            (
                ServiceError::ChangedBlocksCountMismatch {
                    snapshot: id.clone(),
                    claimed: 2,
                    written: 1,
                },
                400,
                "ValidationException",
                Some("INVALID_PARAMETER_VALUE"),
            ),
            (
                ServiceError::AggregateChecksumMismatch {
                    snapshot: id.clone(),
                },
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
                ServiceError::InvalidCustomerKey(text()),
                400,
                "ValidationException",
                Some("INVALID_CUSTOMER_KEY"),
            ),
            (
                ServiceError::PendingSnapshotLimit(text()),
                400,
                "ConcurrentLimitExceededException",
                None,
            ),
            (
                ServiceError::KeyAccessDenied(text()),
                403,
                "AccessDeniedException",
                Some("DEPENDENCY_ACCESS_DENIED"),
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
        let io = ServiceError::Store(StoreError::io(
            "write /secret/segment",
            std::io::Error::from_raw_os_error(5),
        ));
        let ApiError(wire) = ApiError::from(io);
        assert!(!wire.message.contains("/secret"));
    }

    #[test]
    fn error_chains_show_each_cause_once() {
        let error = StoreError::unavailable("metadata database", std::io::Error::other("refused"));
        assert_eq!(
            ErrorChain(&error).to_string(),
            "storage backend unavailable: metadata database: refused"
        );
        let io = StoreError::io("read x", std::io::Error::other("EIO"));
        assert_eq!(ErrorChain(&io).to_string(), "cannot read x: EIO");
    }
}
