//! SigV4 authentication of EBS requests: the bridge between the HTTP request and the
//! pure verifier in `strata_sigv4`.

use std::collections::BTreeSet;
use std::sync::Arc;

use http::request::Parts;
use strata_sigv4::{AuthError, PayloadHash, verify_request};
use strata_types::AccountId;
use strata_wire::{ErrorCode, Reason, WireError};
use time::OffsetDateTime;

use crate::app::AppState;

/// Who sent a request, and what its signature covered.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account the key belongs to.
    pub account: AccountId,
    /// The access key the request was signed with.
    pub access_key_id: String,
    /// How the payload was signed; a hex hash must still be compared with a streamed body.
    pub payload_hash: PayloadHash,
    /// The operations the key may call (`None`: all of its account's).
    pub allow: Option<Arc<BTreeSet<String>>>,
}

impl Caller {
    /// Whether the key's scope includes `operation` (a name of
    /// [`crate::credentials::OPERATIONS`]).
    pub fn may(&self, operation: &str) -> bool {
        self.allow
            .as_ref()
            .is_none_or(|allowed| allowed.contains(operation))
    }

    /// `AccessDeniedException` for an operation outside the key's scope, in the words AWS
    /// uses for an IAM denial.
    pub fn denied(&self, operation: &str) -> WireError {
        WireError::new(
            ErrorCode::AccessDeniedException,
            Some(Reason::UnauthorizedAccount),
            format!(
                "User: {} is not authorized to perform: ebs:{operation} (the access key's \
                 allow list does not include it)",
                self.access_key_id
            ),
        )
    }
}

/// How a request's body must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodySigning {
    /// The signature covers the body's SHA-256 (every operation but PutSnapshotBlock).
    Signed,
    /// `UNSIGNED-PAYLOAD` is also accepted, as the SDKs send PutSnapshotBlock, but only if
    /// this header, which binds the body (`x-amz-Checksum`), is among the signed headers
    /// when present (when absent, the operation's own validation refuses the request).
    UnsignedIfSigned(&'static str),
}

/// Verify the request's signature, made for `service` (`ebs`, `ec2` or the admin API's
/// `strata`). `body_sha256_hex` is the hash of an already-read body, or `None` for a
/// streamed one (whose `x-amz-content-sha256` header then says what was signed).
/// `UNSIGNED-PAYLOAD` is refused (`IncompleteSignatureException`) unless `body` allows it.
pub fn authenticate(
    state: &AppState,
    parts: &Parts,
    body_sha256_hex: Option<&str>,
    service: &str,
    body: BodySigning,
) -> Result<Caller, AuthError> {
    let now_ms = state.clock.now_ms();
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut headers = parts.headers.clone();
    // HTTP/1.1 clients send Host; a request built in-process has only an absolute URI.
    if !headers.contains_key(http::header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        headers.insert(http::header::HOST, value);
    }
    // One ring for the signature and the account: a reload cannot come in between.
    let keys = state.keys.current();
    let verified = verify_request(
        &parts.method,
        &parts.uri,
        &headers,
        body_sha256_hex,
        now,
        &*keys,
    )?;
    if verified.service != service {
        return Err(AuthError::Malformed(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if verified.payload_hash == PayloadHash::Unsigned {
        match body {
            BodySigning::Signed => {
                return Err(AuthError::Malformed(
                    "x-amz-content-sha256: UNSIGNED-PAYLOAD is accepted only for \
                     PutSnapshotBlock; sign the SHA-256 of the body."
                        .into(),
                ));
            }
            BodySigning::UnsignedIfSigned(header) => {
                // Without the header the request fails its own validation (it is required).
                if parts.headers.contains_key(header)
                    && !verified.signed_headers.iter().any(|h| h == header)
                {
                    return Err(AuthError::Malformed(format!(
                        "With x-amz-content-sha256: UNSIGNED-PAYLOAD the '{header}' header \
                         must be signed (SignedHeaders), or nothing binds the body to the \
                         signature."
                    )));
                }
            }
        }
    }
    let key = keys
        .get(&verified.access_key_id)
        .ok_or(AuthError::UnknownAccessKey)?;
    Ok(Caller {
        account: key.account.clone(),
        allow: key.allow.clone(),
        access_key_id: verified.access_key_id,
        payload_hash: verified.payload_hash,
    })
}
