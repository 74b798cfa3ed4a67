//! AWS Signature Version 4 verification (the server side), as pure functions.
//!
//! Strata serves the Amazon EBS direct APIs (REST-JSON, service name `ebs`) and a few EC2
//! Query APIs (service `ec2`) to unmodified AWS SDK clients (aws-sdk-rust, boto3, the aws CLI).
//! Those clients sign every request with SigV4 *header* authentication; this crate recomputes
//! the signature from the request as the server received it and compares.
//!
//! The entry point is [`verify_request`]. It never reads the clock (the caller passes `now`)
//! and never reads the body (the caller passes the body's SHA-256 when it has one), so it is
//! deterministic and trivially testable.
//!
//! # What is verified
//!
//! * The `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…` header
//!   is well formed and its credential scope is `AKID/YYYYMMDD/region/service/aws4_request`.
//! * `X-Amz-Date` is present, is a valid `YYYYMMDDTHHMMSSZ` timestamp, agrees with the scope
//!   date, and lies within [`MAX_CLOCK_SKEW`] of `now` (either direction).
//! * `host` is signed and every signed header is present in the request.
//! * The signature, recomputed over the canonical request exactly as aws-sigv4 builds it for
//!   a non-S3 service (normalised and double-encoded path, decoded and re-encoded sorted
//!   query, trimmed header values, payload hash), matches in constant time.
//! * The payload: when `x-amz-content-sha256` carries a hex digest and the caller passed the
//!   body hash, the two must agree; without the header the caller's body hash is what was
//!   signed. See [`PayloadHash`] for the streaming case, where the caller finishes the check.
//!
//! # What is *not* verified
//!
//! * Presigned URLs (query-string authentication, `X-Amz-Algorithm=…` in the query) are
//!   rejected as [`AuthError::Malformed`].
//! * Chunked/streaming signatures (`x-amz-content-sha256: STREAMING-…`, `aws-chunked`
//!   bodies) are rejected as [`AuthError::Malformed`]; only `UNSIGNED-PAYLOAD` or a whole-body
//!   hash are supported.
//! * SigV4a (`AWS4-ECDSA-P256-SHA256`) and SigV2 are rejected as [`AuthError::Malformed`].
//! * The region and service of the credential scope are *returned*, not checked: the caller
//!   decides which ones it serves.
//! * Session tokens (`x-amz-security-token`) are tolerated, signed or not, but not validated;
//!   the secret is whatever [`CredentialLookup`] returns for the access key id.
//! * Replay within the clock-skew window is not detected (AWS does not either).
//!
//! # What the caller must do
//!
//! * Pass the request target as received; route on the same path and query. The signature
//!   covers the *normalised* path (`/a/./b/../c` and `/a//c` sign like `/a/c`, as in AWS), so
//!   either normalise before routing or reject paths with dot or empty segments.
//! * Parse query strings the same way this crate canonicalises them: percent-decoding only,
//!   with a literal `+` meaning `+`. A form decoder that turns `+` into a space (such as
//!   `serde_urlencoded`, behind `axum::extract::Query`) would let `%2B` be rewritten to `+`
//!   without breaking the signature yet change the value the handler sees.
//! * When [`PayloadHash::Sha256Hex`] came from the header and no body hash was passed,
//!   compare it with the body's SHA-256 once the body is read; when it is
//!   [`PayloadHash::Unsigned`], the body is not authenticated at all.
//! * Check [`VerifiedRequest::service`] and [`VerifiedRequest::region`].
//! * Decide where [`PayloadHash::Unsigned`] is acceptable at all, and which signed header
//!   ([`VerifiedRequest::signed_headers`]) must then bind the body (e.g. a checksum).
//!
//! # Example
//!
//! ```
//! use std::collections::HashMap;
//! use http::{HeaderMap, HeaderValue, Method, Uri};
//! use strata_sigv4::{PayloadHash, sha256_hex, verify_request};
//!
//! // The AWS SigV4 test-suite request "get-vanilla".
//! let mut headers = HeaderMap::new();
//! headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
//! headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
//! headers.insert("authorization", HeaderValue::from_static(
//!     "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
//!      SignedHeaders=host;x-amz-date, \
//!      Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
//! ));
//! let secrets = HashMap::from([(
//!     "AKIDEXAMPLE".to_string(),
//!     "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
//! )]);
//! let now = time::macros::datetime!(2015-08-30 12:40:00 UTC);
//!
//! let verified = verify_request(
//!     &Method::GET,
//!     &Uri::from_static("/"),
//!     &headers,
//!     Some(&sha256_hex(b"")),
//!     now,
//!     &secrets,
//! )?;
//! assert_eq!(verified.access_key_id, "AKIDEXAMPLE");
//! assert_eq!(verified.service, "service");
//! assert_eq!(verified.payload_hash, PayloadHash::Sha256Hex(sha256_hex(b"")));
//! # Ok::<(), strata_sigv4::AuthError>(())
//! ```

mod amz_date;
mod authorization;
mod canonical;
mod error;
mod signing;
mod verify;

use std::collections::HashMap;

pub use canonical::canonical_request;
pub use error::AuthError;
pub use verify::verify_request;

/// How far `X-Amz-Date` may be from the server clock, in either direction, as on AWS.
pub const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(15);

/// Looks up the secret for an access key id. Implemented by the server.
pub trait CredentialLookup {
    /// The secret access key for `access_key_id`, or None if the key is unknown.
    fn secret_access_key(&self, access_key_id: &str) -> Option<String>;
}

/// A fixed table of access key id → secret access key, handy for configuration files and
/// tests.
impl<S: std::hash::BuildHasher> CredentialLookup for HashMap<String, String, S> {
    fn secret_access_key(&self, access_key_id: &str) -> Option<String> {
        self.get(access_key_id).cloned()
    }
}

/// What a successful verification proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRequest {
    /// The access key id from the credential scope; its secret produced the signature.
    pub access_key_id: String,
    /// The region from the credential scope, e.g. `us-east-1`.
    pub region: String,
    /// The service from the credential scope, e.g. `ebs` or `ec2`.
    pub service: String,
    /// The request's `X-Amz-Date`, in UTC.
    pub signed_at: time::OffsetDateTime,
    /// What the signature says about the body.
    pub payload_hash: PayloadHash,
    /// The signed header names (lowercase, as the client listed them). With
    /// [`PayloadHash::Unsigned`] only these headers bind the body to the signature, so a
    /// caller accepting an unsigned body checks that the header describing it is here.
    pub signed_headers: Vec<String>,
}

/// What the signature covers of the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayloadHash {
    /// The client signed `UNSIGNED-PAYLOAD` (x-amz-content-sha256 header); body not covered.
    Unsigned,
    /// The body is covered: this lowercase hex SHA-256 was used in the canonical request.
    /// When it came from the x-amz-content-sha256 header and the caller did not pass the body
    /// hash, the caller MUST compare it with the body's real SHA-256 after reading the body.
    Sha256Hex(String),
}

/// Lowercase hex SHA-256 of `data`, the form SigV4 uses for payload hashes.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_hex_of_empty_input_is_the_well_known_digest() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashmap_is_a_credential_lookup() {
        let table = HashMap::from([("AKID".to_string(), "secret".to_string())]);
        assert_eq!(table.secret_access_key("AKID").as_deref(), Some("secret"));
        assert_eq!(table.secret_access_key("OTHER"), None);
    }
}
