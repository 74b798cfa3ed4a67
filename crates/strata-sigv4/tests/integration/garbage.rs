//! Property tests on hostile input: whatever arrives in the Authorization header, the
//! date, the other headers or the request target, verification returns an error (or,
//! for an untouched signed request, success) and never panics.

use http::{HeaderName, HeaderValue};
use proptest::prelude::*;

use crate::signer::{Signer, request, verify_streaming, verify_with_body};

/// Text drawn towards the separators and prefixes the parser splits on.
fn authorization_like() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("AWS4-HMAC-SHA256".to_owned()),
        Just("Credential=".to_owned()),
        Just("SignedHeaders=".to_owned()),
        Just("Signature=".to_owned()),
        Just("AKIDEXAMPLE/20240301/us-east-1/ebs/aws4_request".to_owned()),
        Just("host;x-amz-date".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        Just("/".to_owned()),
        Just("=".to_owned()),
        Just(";".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,4}",
    ];
    proptest::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

/// A header value as HTTP may carry it: visible ASCII, spaces, tabs and obs-text bytes.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(prop_oneof![0x20u8..0x7f, Just(b'\t'), 0x80u8..=0xff], 0..80)
}

/// Headers the signature of [`signed_put`] covers or depends on.
fn signing_header() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("x-amz-date"),
        Just("x-amz-content-sha256"),
        Just("host"),
        Just("x-amz-checksum"),
    ]
}

/// A request signed as PutSnapshotBlock is (x-amz-content-sha256: UNSIGNED-PAYLOAD).
fn signed_put() -> http::Request<Vec<u8>> {
    let mut req = request(
        "PUT",
        "/snapshots/snap-0123456789abcdef0/blocks/7",
        &[7u8; 64],
    );
    req.headers_mut()
        .insert("x-amz-checksum", HeaderValue::from_static("abc="));
    Signer::put_snapshot_block().sign(&mut req);
    req
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_authorization_header_is_an_error_not_a_panic(value in authorization_like()) {
        let mut req = signed_put();
        if let Ok(value) = HeaderValue::from_str(&value) {
            req.headers_mut().insert("authorization", value);
            // A value that happens to be the real one verifies; anything else is refused.
            let original = signed_put();
            let same = original.headers().get("authorization") == req.headers().get("authorization");
            prop_assert_eq!(verify_streaming(&req).is_ok(), same);
        }
    }

    #[test]
    fn a_truncated_authorization_header_is_an_error(cut in 0usize..400) {
        let mut req = signed_put();
        let full = req.headers()["authorization"].as_bytes().to_vec();
        if cut < full.len()
            && let Ok(value) = HeaderValue::from_bytes(&full[..cut])
        {
            req.headers_mut().insert("authorization", value);
            prop_assert!(verify_streaming(&req).is_err());
        }
    }

    #[test]
    fn any_signing_header_value_is_handled(
        name in signing_header(),
        value in header_bytes(),
        repeat in any::<bool>(),
    ) {
        let mut req = signed_put();
        let Ok(value) = HeaderValue::from_bytes(&value) else { return Ok(()); };
        if repeat {
            req.headers_mut().append(HeaderName::from_static(name), value);
        } else {
            req.headers_mut().insert(HeaderName::from_static(name), value);
        }
        let _ = verify_streaming(&req);
        let _ = verify_with_body(&req);
    }

    #[test]
    fn a_changed_or_repeated_signed_header_is_refused(
        name in signing_header(),
        value in "[!-~]{0,40}",
        repeat in any::<bool>(),
    ) {
        let mut req = signed_put();
        let unchanged = req.headers().get(name).is_some_and(|v| v.as_bytes() == value.as_bytes());
        let Ok(value) = HeaderValue::from_str(&value) else { return Ok(()); };
        if repeat {
            req.headers_mut().append(HeaderName::from_static(name), value);
        } else {
            req.headers_mut().insert(HeaderName::from_static(name), value);
        }
        prop_assert_eq!(verify_streaming(&req).is_ok(), !repeat && unchanged);
    }

    #[test]
    fn any_request_target_is_handled(
        path in proptest::collection::vec(
            prop_oneof![
                Just("/".to_owned()),
                Just("%".to_owned()),
                Just("%2F".to_owned()),
                Just("..".to_owned()),
                Just(".".to_owned()),
                "[a-zA-Z0-9_~!$&'()*+,;=:@-]{0,6}",
                "%[0-9a-fA-F]{2}",
            ],
            0..12,
        ),
        query in "[a-zA-Z0-9=&%+._~-]{0,40}",
    ) {
        let target = format!("/{}{}{}", path.concat(), if query.is_empty() { "" } else { "?" }, query);
        let Ok(uri) = target.parse::<http::Uri>() else { return Ok(()); };
        let mut req = signed_put();
        *req.uri_mut() = uri;
        // Signed for another target, so refused; never a panic.
        let _ = verify_streaming(&req);
        let _ = verify_with_body(&req);
    }
}

#[test]
fn the_untouched_request_verifies() {
    let req = signed_put();
    assert!(
        verify_streaming(&req).is_ok(),
        "{:?}",
        verify_streaming(&req)
    );
}
