//! Why a request failed authentication.
//!
//! The variants are distinct because the server answers each with a different AWS error code
//! and status, and the `Display` text mimics AWS's messages because SDKs show it to users.

use time::OffsetDateTime;

use crate::MAX_CLOCK_SKEW;
use crate::amz_date::format_amz_date;

/// Why [`verify_request`](crate::verify_request) rejected a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (and no presigned-URL query parameters either).
    #[error("Missing Authentication Token")]
    MissingAuthentication,

    /// The signature information is present but unusable; the text says exactly why.
    #[error("{0}")]
    Malformed(String),

    /// The access key id of the credential scope is not known to the server.
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,

    /// The recomputed signature differs from the one the client sent.
    #[error(
        "The request signature we calculated does not match the signature you provided. \
         Check your AWS Secret Access Key and signing method."
    )]
    SignatureMismatch,

    /// `X-Amz-Date` is more than [`MAX_CLOCK_SKEW`] away from the server clock.
    #[error("{}", expired_message(*signed_at, *now))]
    Expired {
        /// The request's `X-Amz-Date`.
        signed_at: OffsetDateTime,
        /// The server clock at verification.
        now: OffsetDateTime,
    },

    /// The body is streamed (the caller has no hash yet) and the client did not say in
    /// `x-amz-content-sha256` what it signed for the payload.
    #[error("Missing required header for this request: x-amz-content-sha256")]
    MissingContentSha256,

    /// `x-amz-content-sha256` names a body hash that is not the hash of the body received.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
}

impl AuthError {
    /// The AWS-like message for this error (same as `Display`).
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The error code AWS's JSON protocols (EBS direct APIs) use for this failure.
    ///
    /// EC2's Query protocol uses other codes (e.g. `AuthFailure`); the server maps those.
    pub fn aws_error_code(&self) -> &'static str {
        match self {
            AuthError::MissingAuthentication => "MissingAuthenticationTokenException",
            AuthError::Malformed(_) | AuthError::MissingContentSha256 => {
                "IncompleteSignatureException"
            }
            AuthError::UnknownAccessKey => "UnrecognizedClientException",
            AuthError::SignatureMismatch | AuthError::Expired { .. } => "InvalidSignatureException",
            AuthError::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status AWS answers this failure with: 400 for malformed requests, 403 for
    /// requests that are well formed but not authentic.
    pub fn status_code(&self) -> http::StatusCode {
        match self {
            AuthError::Malformed(_)
            | AuthError::MissingContentSha256
            | AuthError::ContentSha256Mismatch => http::StatusCode::BAD_REQUEST,
            AuthError::MissingAuthentication
            | AuthError::UnknownAccessKey
            | AuthError::SignatureMismatch
            | AuthError::Expired { .. } => http::StatusCode::FORBIDDEN,
        }
    }
}

/// AWS's wording for a signature outside the clock-skew window, e.g.
/// `Signature expired: 20130524T000000Z is now earlier than 20130524T001500Z
/// (20130524T003000Z - 15 min.)`.
fn expired_message(signed_at: OffsetDateTime, now: OffsetDateTime) -> String {
    let minutes = MAX_CLOCK_SKEW.whole_minutes();
    let signed = format_amz_date(signed_at);
    let now_text = format_amz_date(now);
    if signed_at < now {
        let limit = format_amz_date(now - MAX_CLOCK_SKEW);
        format!(
            "Signature expired: {signed} is now earlier than {limit} ({now_text} - {minutes} min.)"
        )
    } else {
        let limit = format_amz_date(now + MAX_CLOCK_SKEW);
        format!(
            "Signature not yet current: {signed} is still later than {limit} ({now_text} + {minutes} min.)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn expired_message_matches_aws_wording() {
        let err = AuthError::Expired {
            signed_at: datetime!(2013-05-24 00:00:00 UTC),
            now: datetime!(2013-05-24 00:30:00 UTC),
        };
        assert_eq!(
            err.message(),
            "Signature expired: 20130524T000000Z is now earlier than 20130524T001500Z \
             (20130524T003000Z - 15 min.)"
        );
    }

    #[test]
    fn not_yet_current_message_matches_aws_wording() {
        let err = AuthError::Expired {
            signed_at: datetime!(2013-05-24 01:00:00 UTC),
            now: datetime!(2013-05-24 00:30:00 UTC),
        };
        assert_eq!(
            err.message(),
            "Signature not yet current: 20130524T010000Z is still later than 20130524T004500Z \
             (20130524T003000Z + 15 min.)"
        );
    }

    #[test]
    fn expired_message_is_in_utc_whatever_the_offset() {
        let err = AuthError::Expired {
            signed_at: datetime!(2013-05-24 02:00:00 +02:00),
            now: datetime!(2013-05-24 00:30:00 UTC),
        };
        assert!(
            err.message()
                .starts_with("Signature expired: 20130524T000000Z")
        );
    }

    #[test]
    fn codes_and_statuses_follow_aws() {
        assert_eq!(
            AuthError::MissingAuthentication.aws_error_code(),
            "MissingAuthenticationTokenException"
        );
        assert_eq!(
            AuthError::Malformed("x".into()).status_code(),
            http::StatusCode::BAD_REQUEST
        );
        assert_eq!(
            AuthError::SignatureMismatch.status_code(),
            http::StatusCode::FORBIDDEN
        );
        assert_eq!(
            AuthError::UnknownAccessKey.aws_error_code(),
            "UnrecognizedClientException"
        );
        assert!(
            AuthError::SignatureMismatch
                .message()
                .starts_with("The request signature we calculated does not match")
        );
    }
}
