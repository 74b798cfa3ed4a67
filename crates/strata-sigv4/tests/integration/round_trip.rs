//! Requests shaped like real EBS/EC2 traffic, signed by aws-sigv4, must verify.

use aws_sigv4::http_request::{PercentEncodingMode, UriPathNormalizationMode};
use http::HeaderValue;
use strata_sigv4::{PayloadHash, VerifiedRequest, sha256_hex};

use crate::signer::{
    ACCESS_KEY_ID, HOST, SIGNED_AT, Signer, request, verify_at, verify_streaming, verify_with_body,
};

const SNAPSHOT: &str = "snap-0123456789abcdef0";

fn expect_verified(request: &http::Request<Vec<u8>>) -> VerifiedRequest {
    match verify_with_body(request) {
        Ok(verified) => verified,
        Err(err) => panic!(
            "{} {} should verify, got {err:?}\nheaders: {:#?}",
            request.method(),
            request.uri(),
            request.headers()
        ),
    }
}

#[test]
fn get_snapshot_block() {
    let mut req = request(
        "GET",
        &format!("/snapshots/{SNAPSHOT}/blocks/42?blockToken=AAUB%2Babc%2F%3D"),
        b"",
    );
    Signer::default().sign(&mut req);
    let verified = expect_verified(&req);
    assert_eq!(
        verified,
        VerifiedRequest {
            access_key_id: ACCESS_KEY_ID.into(),
            region: "us-east-1".into(),
            service: "ebs".into(),
            signed_at: SIGNED_AT,
            payload_hash: PayloadHash::Sha256Hex(sha256_hex(b"")),
            signed_headers: verified.signed_headers.clone(),
        }
    );
    assert!(verified.signed_headers.iter().any(|h| h == "host"));
    assert!(verified.signed_headers.iter().any(|h| h == "x-amz-date"));
}

#[test]
fn list_snapshot_blocks_with_page_token() {
    let mut req = request(
        "GET",
        &format!("/snapshots/{SNAPSHOT}/blocks?pageToken=AAUB%2Babc%2F%3D&maxResults=100"),
        b"",
    );
    Signer::default().sign(&mut req);
    expect_verified(&req);
}

#[test]
fn list_changed_blocks_with_several_query_parameters() {
    let mut req = request(
        "GET",
        &format!(
            "/snapshots/{SNAPSHOT}/changedblocks?firstSnapshotId=snap-0aaaaaaaaaaaaaaaa\
             &startingBlockIndex=0&maxResults=500&pageToken=x%2By%2Fz%3D%3D"
        ),
        b"",
    );
    Signer::default().sign(&mut req);
    expect_verified(&req);
}

#[test]
fn complete_snapshot_with_ebs_headers() {
    let mut req = request("POST", &format!("/snapshots/completion/{SNAPSHOT}"), b"");
    let headers = req.headers_mut();
    headers.insert("x-amz-ChangedBlocksCount", HeaderValue::from_static("5"));
    headers.insert(
        "x-amz-Checksum",
        HeaderValue::from_static("q1Xh/9+UqVBM5xJfSkMeJiQ9y2vL8CLNzdXy7bDf9+Y="),
    );
    headers.insert(
        "x-amz-Checksum-Algorithm",
        HeaderValue::from_static("SHA256"),
    );
    headers.insert(
        "x-amz-Checksum-Aggregation-Method",
        HeaderValue::from_static("LINEAR"),
    );
    Signer::default().sign(&mut req);
    expect_verified(&req);
}

#[test]
fn start_snapshot_with_json_body() {
    let body = br#"{"VolumeSize":8,"Timeout":60,"ClientToken":"c0ffee","Description":"a b"}"#;
    let mut req = request("POST", "/snapshots", body);
    let headers = req.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from(body.len()));
    Signer::default().sign(&mut req);
    let verified = expect_verified(&req);
    assert_eq!(
        verified.payload_hash,
        PayloadHash::Sha256Hex(sha256_hex(body))
    );
}

#[test]
fn put_snapshot_block_unsigned_payload() {
    let block = vec![0xAB_u8; 512 * 1024];
    let mut req = request("PUT", &format!("/snapshots/{SNAPSHOT}/blocks/7"), &block);
    let headers = req.headers_mut();
    headers.insert("x-amz-Data-Length", HeaderValue::from(block.len()));
    headers.insert(
        "x-amz-Checksum",
        HeaderValue::from_static("3tDV0rv8UuRb2JbGzNSpy1+tvK0a4x0/Oe+4aCfJsy0="),
    );
    headers.insert(
        "x-amz-Checksum-Algorithm",
        HeaderValue::from_static("SHA256"),
    );
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    Signer::put_snapshot_block().sign(&mut req);
    assert_eq!(req.headers()["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");

    let streamed = verify_streaming(&req).expect("streaming PutSnapshotBlock verifies");
    assert_eq!(streamed.payload_hash, PayloadHash::Unsigned);
    let buffered = expect_verified(&req);
    assert_eq!(buffered.payload_hash, PayloadHash::Unsigned);
}

#[test]
fn content_sha256_header_lets_streaming_bodies_verify() {
    let body = b"some block data";
    let mut req = request("PUT", &format!("/snapshots/{SNAPSHOT}/blocks/8"), body);
    Signer::with_content_sha256_header().sign(&mut req);

    let streamed = verify_streaming(&req).expect("hash from the header verifies");
    assert_eq!(
        streamed.payload_hash,
        PayloadHash::Sha256Hex(sha256_hex(body))
    );
    expect_verified(&req);
}

#[test]
fn header_values_with_extra_spaces_and_repeats() {
    let mut req = request("POST", "/snapshots", b"{}");
    let headers = req.headers_mut();
    headers.insert(
        "x-custom-spaces",
        HeaderValue::from_static("  lots   of    spaces  "),
    );
    headers.insert("x-custom-quoted", HeaderValue::from_static("\"a   b   c\""));
    headers.append("x-custom-multi", HeaderValue::from_static("value4"));
    headers.append("x-custom-multi", HeaderValue::from_static(" value1  b"));
    headers.append("x-custom-multi", HeaderValue::from_static("value3"));
    headers.insert("x-custom-tab", HeaderValue::from_static("a\tb \t c"));
    Signer::default().sign(&mut req);
    expect_verified(&req);
}

#[test]
fn session_token_is_tolerated() {
    let mut req = request("GET", &format!("/snapshots/{SNAPSHOT}/blocks"), b"");
    let signer = Signer {
        session_token: Some("FwoGZXIvYXdzEBYaDH+token/with=chars"),
        ..Signer::default()
    };
    signer.sign(&mut req);
    assert!(req.headers().contains_key("x-amz-security-token"));
    expect_verified(&req);
}

#[test]
fn ec2_query_api_post_form_body() {
    let body = b"Action=DescribeVolumes&Version=2016-11-15&VolumeId.1=vol-0123456789abcdef0";
    let mut req = request("POST", "/", body);
    req.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    let signer = Signer {
        service: "ec2",
        region: "eu-west-3",
        ..Signer::default()
    };
    signer.sign(&mut req);
    let verified = expect_verified(&req);
    assert_eq!(
        (verified.service.as_str(), verified.region.as_str()),
        ("ec2", "eu-west-3")
    );
}

#[test]
fn ec2_query_api_get_with_query() {
    let mut req = request(
        "GET",
        "/?Action=DescribeSnapshots&Version=2016-11-15&Filter.1.Name=tag%3AName\
         &Filter.1.Value.1=my%20snap%2A&MaxResults=5",
        b"",
    );
    let signer = Signer {
        service: "ec2",
        ..Signer::default()
    };
    signer.sign(&mut req);
    expect_verified(&req);
}

#[test]
fn percent_encoded_path_is_double_encoded() {
    let mut req = request(
        "GET",
        "/snapshots/snap%3A01%2Fweird%25id/blocks/3?x=%E2%9C%93",
        b"",
    );
    Signer::default().sign(&mut req);
    expect_verified(&req);
}

#[test]
fn dot_segments_and_double_slashes_are_normalized() {
    for target in [
        "/snapshots/./snap-1/../snap-2/blocks/1",
        "//snapshots//snap-1/blocks/1/",
        "/snapshots/snap-1/blocks/..",
    ] {
        let mut req = request("GET", target, b"");
        Signer::default().sign(&mut req);
        expect_verified(&req);
    }
}

#[test]
fn query_with_odd_but_valid_encodings() {
    let mut req = request(
        "GET",
        "/snapshots?b=%2b%2f&a=x:y@z!$'()*,;&flag&a=1&empty=",
        b"",
    );
    Signer::default().sign(&mut req);
    expect_verified(&req);
}

/// A raw `+` in the query is a literal plus (canonically `%2B`), never a space. The server's
/// query parser must agree, or a `%2B` → `+` rewrite would change a value without
/// breaking the signature.
#[test]
fn raw_plus_in_query_is_a_literal_plus() {
    let mut req = request("GET", "/snapshots?pageToken=AAUB%2Babc", b"");
    Signer::default().sign(&mut req);
    *req.uri_mut() = "/snapshots?pageToken=AAUB+abc".parse().expect("valid uri");
    expect_verified(&req);
}

#[test]
fn non_default_port_in_host() {
    let mut req = request("GET", "/snapshots", b"");
    req.headers_mut()
        .insert("host", HeaderValue::from_static("127.0.0.1:9443"));
    Signer::default().sign(&mut req);
    expect_verified(&req);
}

#[test]
fn unsigned_headers_added_in_transit_do_not_matter() {
    let mut req = request("GET", "/snapshots", b"");
    req.headers_mut()
        .insert("user-agent", HeaderValue::from_static("aws-sdk-rust/1.0"));
    Signer::default().sign(&mut req);
    assert!(
        !req.headers()["authorization"]
            .to_str()
            .expect("ascii")
            .contains("user-agent")
    );
    let headers = req.headers_mut();
    headers.insert("user-agent", HeaderValue::from_static("changed-by-proxy"));
    headers.insert("x-amzn-trace-id", HeaderValue::from_static("Root=1-abc"));
    headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    expect_verified(&req);
}

#[test]
fn absolute_form_target_verifies_too() {
    let mut req = request("GET", "/snapshots?maxResults=1", b"");
    Signer::default().sign(&mut req);
    *req.uri_mut() = format!("https://{HOST}/snapshots?maxResults=1")
        .parse()
        .expect("valid absolute uri");
    expect_verified(&req);
}

#[test]
fn clock_skew_within_the_limit_is_accepted() {
    let mut req = request("GET", "/snapshots", b"");
    Signer::default().sign(&mut req);
    let body = sha256_hex(b"");
    for offset in [-15, -14, 0, 14, 15] {
        let now = SIGNED_AT + time::Duration::minutes(offset);
        verify_at(&req, Some(&body), now).expect("within 15 minutes");
    }
}

#[test]
fn single_encoding_signer_verifies_when_nothing_needs_double_encoding() {
    // Documents the boundary: the verifier always double-encodes, so only paths without '%'
    // verify for a client configured like S3 (single encoding, no normalisation).
    let mut signer = Signer::default();
    signer.settings.percent_encoding_mode = PercentEncodingMode::Single;
    signer.settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let mut req = request("GET", &format!("/snapshots/{SNAPSHOT}/blocks/1"), b"");
    signer.sign(&mut req);
    expect_verified(&req);
}
