//! Each way a request can be wrong maps to exactly one `AuthError` variant.

use std::collections::HashMap;
use std::time::Duration as StdDuration;

use aws_sigv4::http_request::SignatureLocation;
use http::{HeaderValue, Method};
use strata_sigv4::{AuthError, sha256_hex, verify_request};
use time::Duration;

use crate::signer::{
    ACCESS_KEY_ID, SECRET, SIGNED_AT, Signer, request, verify_at, verify_streaming,
    verify_with_body,
};

const TARGET: &str =
    "/snapshots/snap-0123456789abcdef0/blocks?pageToken=AAUB%2Babc%2F%3D&maxResults=100";

/// A correctly signed request; every test below breaks exactly one thing about it.
fn signed() -> http::Request<Vec<u8>> {
    let mut req = request("POST", TARGET, br#"{"a":1}"#);
    let headers = req.headers_mut();
    headers.insert("x-amz-checksum", HeaderValue::from_static("abc+/="));
    headers.insert("content-length", HeaderValue::from_static("7"));
    Signer::default().sign(&mut req);
    assert!(authorization(&req).contains("content-length;"));
    verify_with_body(&req).expect("the untampered request verifies");
    req
}

fn authorization(req: &http::Request<Vec<u8>>) -> String {
    req.headers()["authorization"]
        .to_str()
        .expect("ascii")
        .to_string()
}

fn set_authorization(req: &mut http::Request<Vec<u8>>, value: &str) {
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(value).expect("valid header value"),
    );
}

fn assert_malformed(result: Result<strata_sigv4::VerifiedRequest, AuthError>, needle: &str) {
    match result {
        Err(AuthError::Malformed(message)) => {
            assert!(
                message.contains(needle),
                "'{message}' should mention '{needle}'"
            )
        }
        other => panic!("expected Malformed mentioning '{needle}', got {other:?}"),
    }
}

#[test]
fn wrong_secret_is_a_signature_mismatch() {
    let mut req = request("GET", TARGET, b"");
    let signer = Signer {
        secret: "not-the-secret",
        ..Signer::default()
    };
    signer.sign(&mut req);
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn unknown_access_key() {
    let mut req = request("GET", TARGET, b"");
    let signer = Signer {
        access_key_id: "AKIDUNKNOWN",
        ..Signer::default()
    };
    signer.sign(&mut req);
    assert_eq!(verify_with_body(&req), Err(AuthError::UnknownAccessKey));
}

#[test]
fn tampered_method() {
    let mut req = signed();
    *req.method_mut() = Method::PUT;
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn tampered_path() {
    let mut req = signed();
    *req.uri_mut() = TARGET
        .replace("snap-0123456789abcdef0", "snap-0123456789abcdef1")
        .parse()
        .expect("valid uri");
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn tampered_query_value() {
    for tampered in [
        TARGET.replace("maxResults=100", "maxResults=101"),
        TARGET.replace("%2Babc", "%20abc"),
        format!("{TARGET}&extra=1"),
        TARGET.replace("&maxResults=100", ""),
    ] {
        let mut req = signed();
        *req.uri_mut() = tampered.parse().expect("valid uri");
        assert_eq!(
            verify_with_body(&req),
            Err(AuthError::SignatureMismatch),
            "{tampered}"
        );
    }
}

#[test]
fn tampered_signed_header_value() {
    for (name, value) in [
        ("x-amz-checksum", "abc+/=="),
        ("host", "evil.example.com"),
        ("content-length", "8"),
    ] {
        let mut req = signed();
        req.headers_mut()
            .insert(name, HeaderValue::from_static(value));
        assert_eq!(
            verify_with_body(&req),
            Err(AuthError::SignatureMismatch),
            "{name}"
        );
    }
}

#[test]
fn extra_value_for_a_signed_header() {
    let mut req = signed();
    req.headers_mut()
        .append("x-amz-checksum", HeaderValue::from_static("second"));
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn tampered_body() {
    let mut req = signed();
    *req.body_mut() = br#"{"a":2}"#.to_vec();
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn tampered_x_amz_date_breaks_the_signature() {
    let mut req = signed();
    let later = "20240301T102031Z";
    req.headers_mut()
        .insert("x-amz-date", HeaderValue::from_static(later));
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn tampered_scope_region_or_service() {
    for (from, to) in [("/us-east-1/", "/us-west-2/"), ("/ebs/", "/ec2/")] {
        let mut req = signed();
        let auth = authorization(&req).replace(from, to);
        set_authorization(&mut req, &auth);
        assert_eq!(
            verify_with_body(&req),
            Err(AuthError::SignatureMismatch),
            "{to}"
        );
    }
}

#[test]
fn signature_in_uppercase_hex_is_rejected() {
    let mut req = signed();
    let auth = authorization(&req);
    let (head, signature) = auth.split_once("Signature=").expect("has a signature");
    set_authorization(
        &mut req,
        &format!("{head}Signature={}", signature.to_ascii_uppercase()),
    );
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn truncated_signature_is_rejected() {
    let mut req = signed();
    let auth = authorization(&req);
    set_authorization(&mut req, &auth[..auth.len() - 1]);
    assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
}

#[test]
fn expired_and_not_yet_current() {
    let req = signed();
    let body = sha256_hex(req.body());
    for offset in [
        Duration::minutes(16),
        Duration::minutes(-16),
        Duration::days(2),
    ] {
        let now = SIGNED_AT + offset;
        assert_eq!(
            verify_at(&req, Some(&body), now),
            Err(AuthError::Expired {
                signed_at: SIGNED_AT,
                now
            }),
            "{offset}"
        );
    }
    let now = SIGNED_AT + Duration::minutes(16);
    let message = verify_at(&req, Some(&body), now)
        .expect_err("expired")
        .message();
    assert_eq!(
        message,
        "Signature expired: 20240301T102030Z is now earlier than 20240301T102130Z \
         (20240301T103630Z - 15 min.)"
    );
}

#[test]
fn missing_authorization() {
    let mut req = signed();
    req.headers_mut().remove("authorization");
    assert_eq!(
        verify_with_body(&req),
        Err(AuthError::MissingAuthentication)
    );

    let bare = request("GET", "/snapshots", b"");
    assert_eq!(
        verify_with_body(&bare),
        Err(AuthError::MissingAuthentication)
    );
}

#[test]
fn garbage_authorization() {
    for garbage in [
        "",
        "garbage",
        "Bearer abc.def.ghi",
        "AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240301/us-east-1/ebs/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE, SignedHeaders=host, Signature=00",
    ] {
        let mut req = signed();
        set_authorization(&mut req, garbage);
        assert!(
            matches!(verify_with_body(&req), Err(AuthError::Malformed(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn scope_date_differs_from_x_amz_date() {
    let mut req = signed();
    let auth = authorization(&req).replace("/20240301/", "/20240302/");
    set_authorization(&mut req, &auth);
    assert_malformed(verify_with_body(&req), "'20240302' != '20240301'");
}

#[test]
fn missing_or_unparsable_x_amz_date() {
    let mut req = signed();
    req.headers_mut().remove("x-amz-date");
    req.headers_mut().insert(
        "date",
        HeaderValue::from_static("Fri, 01 Mar 2024 10:20:30 GMT"),
    );
    assert_malformed(verify_with_body(&req), "X-Amz-Date");

    let mut req = signed();
    req.headers_mut().insert(
        "x-amz-date",
        HeaderValue::from_static("2024-03-01T10:20:30Z"),
    );
    assert_malformed(verify_with_body(&req), "X-Amz-Date");

    let mut req = signed();
    req.headers_mut()
        .append("x-amz-date", HeaderValue::from_static("20240301T102030Z"));
    assert_malformed(verify_with_body(&req), "more than once");
}

#[test]
fn host_not_signed() {
    let mut signer = Signer::default();
    signer
        .settings
        .excluded_headers
        .get_or_insert_with(Vec::new)
        .push("host".into());
    let mut req = request("GET", TARGET, b"");
    signer.sign(&mut req);
    assert!(!authorization(&req).contains("host"));
    assert_malformed(verify_with_body(&req), "'Host' must be a 'SignedHeader'");
}

#[test]
fn signed_header_absent_from_request() {
    let mut req = signed();
    req.headers_mut().remove("x-amz-checksum");
    assert_malformed(verify_with_body(&req), "'x-amz-checksum'");
}

#[test]
fn content_sha256_differs_from_body() {
    let mut req = request("PUT", TARGET, b"the real body");
    Signer::with_content_sha256_header().sign(&mut req);
    *req.body_mut() = b"another body".to_vec();
    assert_eq!(
        verify_with_body(&req),
        Err(AuthError::ContentSha256Mismatch)
    );
}

#[test]
fn streaming_body_without_content_sha256() {
    let req = signed();
    assert!(!req.headers().contains_key("x-amz-content-sha256"));
    assert_eq!(verify_streaming(&req), Err(AuthError::MissingContentSha256));
}

#[test]
fn chunked_streaming_signatures_are_unsupported() {
    let mut req = request("PUT", TARGET, b"");
    req.headers_mut().insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
    );
    Signer::default().sign(&mut req);
    assert_malformed(verify_streaming(&req), "streaming");
}

#[test]
fn presigned_urls_are_unsupported() {
    let mut signer = Signer::default();
    signer.settings.signature_location = SignatureLocation::QueryParams;
    signer.settings.expires_in = Some(StdDuration::from_secs(300));
    let mut req = request("GET", "/snapshots?maxResults=1", b"");
    signer.sign(&mut req);
    assert!(!req.headers().contains_key("authorization"));
    assert_malformed(verify_with_body(&req), "presigned");
}

#[test]
fn credential_lookup_is_only_asked_about_the_signing_key() {
    struct Recorder(std::cell::RefCell<Vec<String>>);
    impl strata_sigv4::CredentialLookup for Recorder {
        fn secret_access_key(&self, access_key_id: &str) -> Option<String> {
            self.0.borrow_mut().push(access_key_id.to_string());
            HashMap::from([(ACCESS_KEY_ID.to_string(), SECRET.to_string())])
                .get(access_key_id)
                .cloned()
        }
    }
    let req = signed();
    let recorder = Recorder(Default::default());
    let body = sha256_hex(req.body());
    verify_request(
        req.method(),
        req.uri(),
        req.headers(),
        Some(&body),
        SIGNED_AT,
        &recorder,
    )
    .expect("verifies");
    assert_eq!(*recorder.0.borrow(), vec![ACCESS_KEY_ID.to_string()]);
}
