//! SigV4 round trip: a request signed over `strata_sigv4::canonical_request` with the
//! secret (by the key derivation AWS documents, written out here independently of the
//! crate's own) verifies, and reports who signed and what the signature covers, whatever
//! its method, path, query, extra headers, signed-header order and payload mode; outside
//! the clock-skew window it is expired; one changed signature character or another secret
//! makes it a mismatch.

#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;
use strata_sigv4::{
    AuthError, MAX_CLOCK_SKEW, PayloadHash, canonical_request, sha256_hex, verify_request,
};
use time::OffsetDateTime;

const ACCESS_KEY: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

/// What an SDK encodes in a path segment or query component.
const SDK_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: Verb,
    segments: Vec<&'a str>,
    /// Segments as they come (when they make a valid URI), not encoded by us.
    raw_segments: bool,
    query: Vec<(&'a str, &'a str)>,
    extra: Vec<(Extra<'a>, &'a [u8])>,
    /// Which of the optional headers are signed, bit by bit.
    sign_mask: u64,
    reverse_order: bool,
    payload: Payload,
    /// Whether the caller passes the body's hash (it always may; it must without the header).
    caller_hashes_body: bool,
    body: &'a [u8],
    region: Vec<u8>,
    service: Vec<u8>,
    /// Seconds after 2000-01-01.
    signed_at: u32,
    skew_seconds: i16,
    tamper: (usize, u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Verb {
    Get,
    Put,
    Post,
    Delete,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Payload {
    /// No header: the body's hash is what was signed.
    BodyHash,
    /// `x-amz-content-sha256: <hex>`.
    HeaderHash,
    /// `x-amz-content-sha256: UNSIGNED-PAYLOAD`.
    Unsigned,
}

#[derive(Arbitrary, Debug)]
enum Extra<'a> {
    Checksum,
    ContentType,
    DataLength,
    SecurityToken,
    Other(&'a [u8]),
}

/// `bytes` as a non-empty name of `[a-z0-9-]`, safe in a credential scope and a header name.
fn token(bytes: &[u8], fallback: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
    let text: String = bytes
        .iter()
        .take(24)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    if text.is_empty() {
        fallback.to_owned()
    } else {
        text
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SigV4's signature of `canonical`, from the documented key derivation.
fn sign(secret: &str, amz_date: &str, region: &str, service: &str, canonical: &str) -> String {
    let date = &amz_date[..8];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let key = hmac_sha256(&key, region.as_bytes());
    let key = hmac_sha256(&key, service.as_bytes());
    let key = hmac_sha256(&key, b"aws4_request");
    hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()))
}

fn amz_date(at: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

fuzz_target!(|input: Input<'_>| {
    let method = match input.method {
        Verb::Get => Method::GET,
        Verb::Put => Method::PUT,
        Verb::Post => Method::POST,
        Verb::Delete => Method::DELETE,
    };
    let encode = |text: &str| utf8_percent_encode(text, SDK_ENCODE).to_string();
    let path: Vec<String> = input
        .segments
        .iter()
        .map(|s| {
            if input.raw_segments {
                (*s).to_owned()
            } else {
                encode(s)
            }
        })
        .collect();
    let query: Vec<String> = input
        .query
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    let mut target = format!("/{}", path.join("/"));
    if !query.is_empty() {
        target = format!("{target}?{}", query.join("&"));
    }
    let Ok(uri) = target.parse::<Uri>() else {
        return;
    };

    let signed_at = OffsetDateTime::UNIX_EPOCH
        + time::Duration::seconds(946_684_800 + i64::from(input.signed_at));
    let date = amz_date(signed_at);
    let region = token(&input.region, "us-east-1");
    let service = token(&input.service, "ebs");
    let body_hash = sha256_hex(input.body);

    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("ebs.example.internal"));
    headers.insert("x-amz-date", HeaderValue::from_str(&date).expect("ASCII"));
    let payload_hash = match input.payload {
        Payload::BodyHash => body_hash.clone(),
        Payload::HeaderHash => body_hash.clone(),
        Payload::Unsigned => "UNSIGNED-PAYLOAD".to_owned(),
    };
    if input.payload != Payload::BodyHash {
        let value = HeaderValue::from_str(&payload_hash).expect("ASCII");
        headers.insert("x-amz-content-sha256", value);
    }
    let mut optional: Vec<String> = headers
        .keys()
        .map(|n| n.as_str().to_owned())
        .filter(|n| n == "x-amz-content-sha256")
        .collect();
    for (name, value) in &input.extra {
        let name = match name {
            Extra::Checksum => "x-amz-checksum".to_owned(),
            Extra::ContentType => "content-type".to_owned(),
            Extra::DataLength => "x-amz-data-length".to_owned(),
            Extra::SecurityToken => "x-amz-security-token".to_owned(),
            Extra::Other(bytes) => format!("x-{}", token(bytes, "extra")),
        };
        // The SigV4 headers themselves appear once, as set above.
        if matches!(
            name.as_str(),
            "host" | "x-amz-date" | "x-amz-content-sha256" | "authorization"
        ) {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        let header = HeaderName::from_bytes(name.as_bytes()).expect("a token is a header name");
        headers.append(header, value);
        if !optional.contains(&name) {
            optional.push(name);
        }
    }
    let mut signed: Vec<String> = vec!["host".to_owned(), "x-amz-date".to_owned()];
    for (bit, name) in optional.into_iter().enumerate() {
        if input.sign_mask >> (bit % 64) & 1 == 1 {
            signed.push(name);
        }
    }
    signed.sort();
    if input.reverse_order {
        signed.reverse();
    }
    let signed_refs: Vec<&str> = signed.iter().map(String::as_str).collect();
    let Ok(canonical) = canonical_request(&method, &uri, &headers, &signed_refs, &payload_hash)
    else {
        // A signed header no client could sign (not text): the verifier refuses it too.
        return;
    };

    let signature = sign(SECRET, &date, &region, &service, &canonical);
    let authorization = |signature: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/{region}/{service}/aws4_request, \
             SignedHeaders={}, Signature={signature}",
            &date[..8],
            signed.join(";")
        )
    };
    headers.insert(
        "authorization",
        HeaderValue::from_str(&authorization(&signature)).expect("ASCII"),
    );
    let secrets = HashMap::from([(ACCESS_KEY.to_owned(), SECRET.to_owned())]);
    let now = signed_at + time::Duration::seconds(i64::from(input.skew_seconds));
    let caller_hash =
        (input.caller_hashes_body || input.payload == Payload::BodyHash).then_some(&*body_hash);
    let verify = |headers: &HeaderMap, secrets: &HashMap<String, String>| {
        verify_request(&method, &uri, headers, caller_hash, now, secrets)
    };

    let result = verify(&headers, &secrets);
    if (now - signed_at).abs() > MAX_CLOCK_SKEW {
        assert!(
            matches!(result, Err(AuthError::Expired { .. })),
            "{result:?}"
        );
        return;
    }
    let verified = match result {
        Ok(verified) => verified,
        Err(error) => panic!("{target} {headers:?}: {error:?}\n{canonical}"),
    };
    assert_eq!(verified.access_key_id, ACCESS_KEY);
    assert_eq!(verified.region, region);
    assert_eq!(verified.service, service);
    assert_eq!(verified.signed_at, signed_at);
    assert_eq!(verified.signed_headers, signed);
    let expected = match input.payload {
        Payload::Unsigned => PayloadHash::Unsigned,
        _ => PayloadHash::Sha256Hex(body_hash.clone()),
    };
    assert_eq!(verified.payload_hash, expected);

    // One character of the signature changed (to another hex digit, so it still parses).
    let (position, digit) = input.tamper;
    let position = position % signature.len();
    let replacement = char::from(b"0123456789abcdef"[usize::from(digit % 16)]);
    let mut tampered: Vec<char> = signature.chars().collect();
    if tampered[position] != replacement {
        tampered[position] = replacement;
        let tampered: String = tampered.into_iter().collect();
        let mut altered = headers.clone();
        altered.insert(
            "authorization",
            HeaderValue::from_str(&authorization(&tampered)).expect("ASCII"),
        );
        assert_eq!(
            verify(&altered, &secrets),
            Err(AuthError::SignatureMismatch)
        );
    }
    let other = HashMap::from([(ACCESS_KEY.to_owned(), format!("{SECRET}x"))]);
    assert_eq!(verify(&headers, &other), Err(AuthError::SignatureMismatch));
});
