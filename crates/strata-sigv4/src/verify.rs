//! [`verify_request`]: the checks in the order that gives the most useful error.
//!
//! Cheap structural checks come first (they need no secret and report precise
//! `Malformed` messages), then the clock and the payload, then the credential lookup, and the
//! signature comparison last.

use http::{HeaderMap, Method, Uri};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::amz_date::parse_amz_date;
use crate::authorization::{Authorization, parse_authorization};
use crate::canonical::canonical_request;
use crate::signing::{signature, string_to_sign};
use crate::{AuthError, CredentialLookup, MAX_CLOCK_SKEW, PayloadHash, VerifiedRequest};

/// The payload hash a client signs when the body is not covered by the signature.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Verify a header-signed (Authorization: AWS4-HMAC-SHA256 ...) request.
///
/// `uri` is the request target exactly as received (path and raw query, still
/// percent-encoded). `body_sha256_hex` is the lowercase hex SHA-256 of the body if the caller
/// already has the body (small requests); `None` for streaming bodies, in which case the
/// `x-amz-content-sha256` header must be present (else [`AuthError::MissingContentSha256`]).
/// `now` is the server clock: the crate never reads the clock itself.
///
/// On success the returned [`VerifiedRequest`] says who signed, for which region and service
/// (the caller checks those), and what the signature covers of the body.
pub fn verify_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body_sha256_hex: Option<&str>,
    now: OffsetDateTime,
    credentials: &impl CredentialLookup,
) -> Result<VerifiedRequest, AuthError> {
    let auth = authorization(uri, headers)?;
    let (amz_date, signed_at) = signing_time(headers, &auth)?;
    check_host_is_signed(&auth)?;
    check_clock_skew(signed_at, now)?;
    let (canonical_payload_hash, payload_hash) = payload_hash(headers, body_sha256_hex)?;
    let signed_headers: Vec<&str> = auth.signed_headers.iter().map(String::as_str).collect();
    let creq = canonical_request(
        method,
        uri,
        headers,
        &signed_headers,
        &canonical_payload_hash,
    )?;
    let secret = credentials
        .secret_access_key(&auth.access_key_id)
        .ok_or(AuthError::UnknownAccessKey)?;
    check_signature(&auth, &secret, amz_date, &creq)?;

    Ok(VerifiedRequest {
        access_key_id: auth.access_key_id,
        region: auth.scope.region,
        service: auth.scope.service,
        signed_at,
        payload_hash,
        signed_headers: auth.signed_headers,
    })
}

/// Finds and parses the `Authorization` header. Without it the request is anonymous, unless
/// it carries presigned-URL parameters, which are recognised only to say they are
/// unsupported.
fn authorization(uri: &Uri, headers: &HeaderMap) -> Result<Authorization, AuthError> {
    match single_header(headers, "authorization")? {
        Some(value) => parse_authorization(value),
        None if has_presigned_query(uri) => Err(AuthError::Malformed(
            "Query-string (presigned URL) authentication is not supported; \
             sign the request with an Authorization header."
                .into(),
        )),
        None => Err(AuthError::MissingAuthentication),
    }
}

/// Whether the query has an `X-Amz-Algorithm` parameter, the marker of a presigned URL.
fn has_presigned_query(uri: &Uri) -> bool {
    uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(key, _)| key) == "X-Amz-Algorithm")
    })
}

/// The value of a header that must not be repeated, as text.
///
/// Repeats and non-text values are rejected: the SigV4 headers are machine-generated ASCII,
/// and a duplicate would make it ambiguous which one was meant.
fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, AuthError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::Malformed(format!(
            "The '{name}' header appears more than once."
        )));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| AuthError::Malformed(format!("The '{name}' header is not ASCII text.")))
}

/// `X-Amz-Date`, verbatim (it goes into the string to sign) and parsed, after checking that
/// it agrees with the credential scope.
fn signing_time<'h>(
    headers: &'h HeaderMap,
    auth: &Authorization,
) -> Result<(&'h str, OffsetDateTime), AuthError> {
    let amz_date = single_header(headers, "x-amz-date")?.ok_or_else(|| {
        AuthError::Malformed(
            "Authorization header requires existence of an 'X-Amz-Date' header.".into(),
        )
    })?;
    let signed_at = parse_amz_date(amz_date)?;
    check_scope_date(auth, amz_date)?;
    Ok((amz_date, signed_at))
}

/// The credential scope date must be the date part of `X-Amz-Date`; otherwise the signing
/// key and the string to sign disagree and no signature could ever match.
fn check_scope_date(auth: &Authorization, amz_date: &str) -> Result<(), AuthError> {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    if auth.scope.date == date {
        return Ok(());
    }
    Err(AuthError::Malformed(format!(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
         HTTP: '{}' != '{date}', from '{amz_date}'.",
        auth.scope.date
    )))
}

/// `host` must be signed, or a request signed for one endpoint could be replayed to another.
fn check_host_is_signed(auth: &Authorization) -> Result<(), AuthError> {
    if auth.signed_headers.iter().any(|name| name == "host") {
        return Ok(());
    }
    Err(AuthError::Malformed(
        "'Host' must be a 'SignedHeader' in the AWS Authorization.".into(),
    ))
}

/// Rejects a request whose `X-Amz-Date` is more than [`MAX_CLOCK_SKEW`] from `now`, either
/// way (exactly the limit is still accepted).
fn check_clock_skew(signed_at: OffsetDateTime, now: OffsetDateTime) -> Result<(), AuthError> {
    if (now - signed_at).abs() > MAX_CLOCK_SKEW {
        return Err(AuthError::Expired { signed_at, now });
    }
    Ok(())
}

/// Recomputes the signature over `canonical_request` and compares it with the client's in
/// constant time, so response timing reveals nothing about how much of a guess was right.
fn check_signature(
    auth: &Authorization,
    secret_access_key: &str,
    amz_date: &str,
    canonical_request: &str,
) -> Result<(), AuthError> {
    let string_to_sign = string_to_sign(amz_date, &auth.scope, canonical_request);
    let expected = signature(secret_access_key, &auth.scope, &string_to_sign);
    if bool::from(expected.as_bytes().ct_eq(auth.signature.as_bytes())) {
        Ok(())
    } else {
        Err(AuthError::SignatureMismatch)
    }
}

/// Decides the payload hash of the canonical request, returning it verbatim (as the client
/// signed it) together with what it means.
///
/// With an `x-amz-content-sha256` header its literal value was signed; a hex digest there must
/// agree with the body's hash when the caller has one. Without the header the client signed
/// the body's hash, which only the caller can supply.
fn payload_hash(
    headers: &HeaderMap,
    body_sha256_hex: Option<&str>,
) -> Result<(String, PayloadHash), AuthError> {
    let Some(declared) = single_header(headers, "x-amz-content-sha256")? else {
        let body = body_sha256_hex.ok_or(AuthError::MissingContentSha256)?;
        let body = body.to_ascii_lowercase();
        return Ok((body.clone(), PayloadHash::Sha256Hex(body)));
    };
    if declared == UNSIGNED_PAYLOAD {
        return Ok((declared.to_string(), PayloadHash::Unsigned));
    }
    if declared.starts_with("STREAMING-") {
        return Err(AuthError::Malformed(format!(
            "Chunked (streaming) payload signing is not supported (x-amz-content-sha256: \
             {declared}); send UNSIGNED-PAYLOAD or the SHA-256 of the whole body."
        )));
    }
    if declared.len() != 64 || !declared.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed(format!(
            "x-amz-content-sha256 must be UNSIGNED-PAYLOAD or a hex SHA-256, got '{declared}'."
        )));
    }
    if body_sha256_hex.is_some_and(|body| !body.eq_ignore_ascii_case(declared)) {
        return Err(AuthError::ContentSha256Mismatch);
    }
    Ok((
        declared.to_string(),
        PayloadHash::Sha256Hex(declared.to_ascii_lowercase()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn with_content_sha256(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-content-sha256", HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn payload_hash_from_the_body_when_no_header() {
        assert_eq!(
            payload_hash(&HeaderMap::new(), Some(EMPTY_SHA256)),
            Ok((
                EMPTY_SHA256.to_string(),
                PayloadHash::Sha256Hex(EMPTY_SHA256.to_string())
            ))
        );
        assert_eq!(
            payload_hash(&HeaderMap::new(), None),
            Err(AuthError::MissingContentSha256)
        );
    }

    #[test]
    fn payload_hash_unsigned() {
        for body in [None, Some(EMPTY_SHA256)] {
            assert_eq!(
                payload_hash(&with_content_sha256("UNSIGNED-PAYLOAD"), body),
                Ok(("UNSIGNED-PAYLOAD".to_string(), PayloadHash::Unsigned))
            );
        }
    }

    #[test]
    fn payload_hash_from_the_header_is_checked_against_the_body() {
        let headers = with_content_sha256(EMPTY_SHA256);
        let expected = Ok((
            EMPTY_SHA256.to_string(),
            PayloadHash::Sha256Hex(EMPTY_SHA256.to_string()),
        ));
        assert_eq!(payload_hash(&headers, None), expected);
        assert_eq!(payload_hash(&headers, Some(EMPTY_SHA256)), expected);
        assert_eq!(
            payload_hash(&headers, Some(&EMPTY_SHA256.to_ascii_uppercase())),
            expected
        );
        assert_eq!(
            payload_hash(&headers, Some(&crate::sha256_hex(b"x"))),
            Err(AuthError::ContentSha256Mismatch)
        );
    }

    #[test]
    fn payload_hash_rejects_streaming_and_junk() {
        for value in [
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "unsigned-payload",
            "abc",
        ] {
            assert!(
                matches!(
                    payload_hash(&with_content_sha256(value), None),
                    Err(AuthError::Malformed(_))
                ),
                "{value}"
            );
        }
    }

    #[test]
    fn presigned_query_is_recognised() {
        assert!(has_presigned_query(&Uri::from_static(
            "/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x"
        )));
        assert!(has_presigned_query(&Uri::from_static(
            "/?a=1&X-Amz-Algorithm"
        )));
        assert!(!has_presigned_query(&Uri::from_static(
            "/?x-amz-algorithm2=1"
        )));
        assert!(!has_presigned_query(&Uri::from_static("/")));
    }

    #[test]
    fn clock_skew_limit_is_inclusive() {
        let now = time::macros::datetime!(2015-08-30 12:36:00 UTC);
        assert_eq!(check_clock_skew(now - MAX_CLOCK_SKEW, now), Ok(()));
        assert_eq!(check_clock_skew(now + MAX_CLOCK_SKEW, now), Ok(()));
        let late = now - MAX_CLOCK_SKEW - time::Duration::SECOND;
        assert_eq!(
            check_clock_skew(late, now),
            Err(AuthError::Expired {
                signed_at: late,
                now
            })
        );
    }
}
