//! Error shapes: the modelled exceptions, the common AWS authentication errors, their
//! HTTP statuses, and the `Reason` values.
//!
//! On the wire an error is `x-amzn-ErrorType: <code>` plus a JSON body
//! `{"Message": ..., "Reason": ...}` (`Reason` only for shapes that have one).

use serde::Serialize;

/// The error code sent in `x-amzn-ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400, modelled, has `Reason`.
    ValidationException,
    /// 404, modelled, has `Reason`.
    ResourceNotFoundException,
    /// 403, modelled, `Reason` required.
    AccessDeniedException,
    /// 400, modelled, has `Reason`. Retried by SDKs as throttling.
    RequestThrottledException,
    /// 402, modelled, has `Reason`.
    ServiceQuotaExceededException,
    /// 400, modelled (StartSnapshot).
    ConcurrentLimitExceededException,
    /// 409, modelled (StartSnapshot).
    ConflictException,
    /// 500, modelled.
    InternalServerException,
    /// 403, common: the signature does not match or has expired.
    InvalidSignatureException,
    /// 403, common: unknown access key.
    UnrecognizedClientException,
    /// 403, common: no authentication at all.
    MissingAuthenticationTokenException,
    /// 400, common: a malformed Authorization header.
    IncompleteSignatureException,
    /// 404, common: no operation has this method and path.
    UnknownOperationException,
}

impl ErrorCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ValidationException => "ValidationException",
            ErrorCode::ResourceNotFoundException => "ResourceNotFoundException",
            ErrorCode::AccessDeniedException => "AccessDeniedException",
            ErrorCode::RequestThrottledException => "RequestThrottledException",
            ErrorCode::ServiceQuotaExceededException => "ServiceQuotaExceededException",
            ErrorCode::ConcurrentLimitExceededException => "ConcurrentLimitExceededException",
            ErrorCode::ConflictException => "ConflictException",
            ErrorCode::InternalServerException => "InternalServerException",
            ErrorCode::InvalidSignatureException => "InvalidSignatureException",
            ErrorCode::UnrecognizedClientException => "UnrecognizedClientException",
            ErrorCode::MissingAuthenticationTokenException => "MissingAuthenticationTokenException",
            ErrorCode::IncompleteSignatureException => "IncompleteSignatureException",
            ErrorCode::UnknownOperationException => "UnknownOperationException",
        }
    }

    /// The HTTP status of this error.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::ValidationException
            | ErrorCode::RequestThrottledException
            | ErrorCode::ConcurrentLimitExceededException
            | ErrorCode::IncompleteSignatureException => 400,
            ErrorCode::ServiceQuotaExceededException => 402,
            ErrorCode::AccessDeniedException
            | ErrorCode::InvalidSignatureException
            | ErrorCode::UnrecognizedClientException
            | ErrorCode::MissingAuthenticationTokenException => 403,
            ErrorCode::ResourceNotFoundException | ErrorCode::UnknownOperationException => 404,
            ErrorCode::ConflictException => 409,
            ErrorCode::InternalServerException => 500,
        }
    }
}

/// `Reason` values Strata sends (a subset of the model's enums).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// ValidationException: a parameter value is wrong or the state forbids the call.
    InvalidParameterValue,
    /// ValidationException: a malformed snapshot id.
    InvalidSnapshotId,
    /// ValidationException: a block index outside the volume or not an integer.
    InvalidBlock,
    /// ValidationException: a bad block token.
    InvalidBlockToken,
    /// ValidationException: a bad page token.
    InvalidPageToken,
    /// ValidationException: ListChangedBlocks across lineages.
    UnrelatedSnapshots,
    /// ValidationException: a malformed tag.
    InvalidTag,
    /// ValidationException: a volume size out of range.
    InvalidVolumeSize,
    /// ValidationException: writes racing CompleteSnapshot.
    ConflictingBlockUpdate,
    /// ResourceNotFoundException: no such snapshot (for this caller, in this state).
    SnapshotNotFound,
    /// AccessDeniedException: the account may not do this.
    UnauthorizedAccount,
    /// ValidationException: an unknown or disabled KMS key (or one the server cannot use).
    InvalidCustomerKey,
    /// AccessDeniedException: the KMS key belongs to another account.
    DependencyAccessDenied,
    /// RequestThrottledException: the account's request rate quota.
    AccountThrottled,
    /// RequestThrottledException: the snapshot's request rate quota.
    ResourceLevelThrottle,
}

impl Reason {
    /// The value as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            Reason::InvalidSnapshotId => "INVALID_SNAPSHOT_ID",
            Reason::InvalidBlock => "INVALID_BLOCK",
            Reason::InvalidBlockToken => "INVALID_BLOCK_TOKEN",
            Reason::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Reason::UnrelatedSnapshots => "UNRELATED_SNAPSHOTS",
            Reason::InvalidTag => "INVALID_TAG",
            Reason::InvalidVolumeSize => "INVALID_VOLUME_SIZE",
            Reason::ConflictingBlockUpdate => "CONFLICTING_BLOCK_UPDATE",
            Reason::SnapshotNotFound => "SNAPSHOT_NOT_FOUND",
            Reason::UnauthorizedAccount => "UNAUTHORIZED_ACCOUNT",
            Reason::InvalidCustomerKey => "INVALID_CUSTOMER_KEY",
            Reason::DependencyAccessDenied => "DEPENDENCY_ACCESS_DENIED",
            Reason::AccountThrottled => "ACCOUNT_THROTTLED",
            Reason::ResourceLevelThrottle => "RESOURCE_LEVEL_THROTTLE",
        }
    }
}

/// An error ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    /// The code.
    pub code: ErrorCode,
    /// The message (at most 256 characters are sent, the model's `ErrorMessage`).
    pub message: String,
    /// The reason, for shapes that carry one.
    pub reason: Option<Reason>,
}

/// The model's maximum `ErrorMessage` length.
const MAX_MESSAGE_CHARS: usize = 256;

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<Reason>,
}

impl WireError {
    /// A new error.
    pub fn new(code: ErrorCode, reason: Option<Reason>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            reason,
        }
    }

    /// A ValidationException with `reason`.
    pub fn validation(reason: Reason, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationException, Some(reason), message)
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let message: String = self.message.chars().take(MAX_MESSAGE_CHARS).collect();
        serde_json::to_vec(&ErrorBody {
            message: &message,
            reason: self.reason,
        })
        .unwrap_or_else(|_| b"{}".to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_message_and_reason() {
        let error = WireError::validation(Reason::InvalidBlockToken, "bad token");
        assert_eq!(
            String::from_utf8(error.body()).expect("utf8"),
            r#"{"Message":"bad token","Reason":"INVALID_BLOCK_TOKEN"}"#
        );
        let internal = WireError::new(ErrorCode::InternalServerException, None, "x".repeat(400));
        let body: serde_json::Value = serde_json::from_slice(&internal.body()).expect("json");
        assert_eq!(body["Message"].as_str().map(str::len), Some(256));
        assert!(body.get("Reason").is_none());
    }

    #[test]
    fn statuses_follow_the_model() {
        assert_eq!(ErrorCode::ValidationException.status(), 400);
        assert_eq!(ErrorCode::ResourceNotFoundException.status(), 404);
        assert_eq!(ErrorCode::ConflictException.status(), 409);
        assert_eq!(ErrorCode::ServiceQuotaExceededException.status(), 402);
        assert_eq!(ErrorCode::InternalServerException.status(), 500);
    }
}
