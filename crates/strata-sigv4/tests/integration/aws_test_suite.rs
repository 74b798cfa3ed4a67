//! Replays the AWS SigV4 test-suite vectors in `tests/data/aws-signing-test-suite`.

use std::path::{Path, PathBuf};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use strata_sigv4::{PayloadHash, canonical_request, sha256_hex, verify_request};
use time::macros::{datetime, format_description};
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::signer::SECRET;

const VECTOR_COUNT: usize = 29;

/// One test-suite request, parsed into what a server would see.
struct Vector {
    name: String,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
    expected_canonical_request: String,
}

impl Vector {
    fn load(dir: &Path) -> Vector {
        let name = dir
            .file_name()
            .expect("vector directory name")
            .to_string_lossy()
            .into_owned();
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file)).expect("test vector file is readable")
        };
        let raw = read("header-signed-request.txt");
        let (head, body) = raw.split_once("\n\n").unwrap_or((&raw, ""));
        let mut lines = head.lines();
        let request_line = lines.next().expect("request line");
        let (method, target) = request_line.split_once(' ').expect("METHOD target");
        let target = target.strip_suffix(" HTTP/1.1").unwrap_or(target);
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':').expect("Name:value header line");
            // hyper strips optional whitespace around header values; do the same.
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value.trim_matches([' ', '\t'])).expect("header value"),
            );
        }
        Vector {
            name,
            method: method.parse().expect("method"),
            uri: percent_encode_non_ascii(target)
                .parse()
                .expect("request target"),
            headers,
            body: body.as_bytes().to_vec(),
            expected_canonical_request: read("header-canonical-request.txt"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ascii header"))
    }

    /// The payload hash the signer used: the declared one, else the body's.
    fn payload_hash(&self) -> String {
        self.header("x-amz-content-sha256")
            .map(str::to_string)
            .unwrap_or_else(|| sha256_hex(&self.body))
    }

    fn signed_headers(&self) -> Vec<&str> {
        let auth = self.header("authorization").expect("signed request");
        let (_, rest) = auth.split_once("SignedHeaders=").expect("SignedHeaders");
        rest.split(',')
            .next()
            .unwrap_or_default()
            .split(';')
            .collect()
    }

    /// The vectors are verified at the moment they were signed.
    fn signed_at(&self) -> OffsetDateTime {
        let amz_date = self.header("x-amz-date").expect("X-Amz-Date");
        PrimitiveDateTime::parse(
            amz_date,
            format_description!("[year][month][day]T[hour][minute][second]Z"),
        )
        .expect("X-Amz-Date parses")
        .assume_utc()
    }
}

/// The suite writes UTF-8 raw in one request line; on the wire (and in `http::Uri`) it is
/// percent-encoded, which canonicalises the same.
fn percent_encode_non_ascii(target: &str) -> String {
    target
        .bytes()
        .map(|b| {
            if b.is_ascii() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn vectors() -> Vec<Vector> {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/aws-signing-test-suite/v4");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("test-suite directory exists")
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    dirs.sort();
    let vectors: Vec<Vector> = dirs.iter().map(|dir| Vector::load(dir)).collect();
    assert_eq!(vectors.len(), VECTOR_COUNT, "all vectors are present");
    vectors
}

#[test]
fn canonical_requests_match_the_suite() {
    let mut failures = Vec::new();
    for vector in vectors() {
        let actual = canonical_request(
            &vector.method,
            &vector.uri,
            &vector.headers,
            &vector.signed_headers(),
            &vector.payload_hash(),
        );
        if actual.as_deref() != Ok(vector.expected_canonical_request.as_str()) {
            failures.push(format!(
                "{}:\n--- expected\n{}\n--- actual\n{actual:?}",
                vector.name, vector.expected_canonical_request
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn signed_requests_of_the_suite_verify() {
    let credentials =
        std::collections::HashMap::from([("AKIDEXAMPLE".to_string(), SECRET.to_string())]);
    let mut failures = Vec::new();
    for vector in vectors() {
        let result = verify_request(
            &vector.method,
            &vector.uri,
            &vector.headers,
            Some(&sha256_hex(&vector.body)),
            vector.signed_at(),
            &credentials,
        );
        if let Err(err) = result {
            failures.push(format!("{}: {err:?}", vector.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Test 1 of the brief, spelled out: the classic "get-vanilla" vector.
#[test]
fn get_vanilla() {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
    headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    let uri = Uri::from_static("/");
    let empty = sha256_hex(b"");

    let creq = canonical_request(
        &Method::GET,
        &uri,
        &headers,
        &["host", "x-amz-date"],
        &empty,
    )
    .expect("canonical request");
    assert_eq!(
        creq,
        "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
         host;x-amz-date\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );

    headers.insert(
        "authorization",
        HeaderValue::from_static(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
    );
    let credentials = std::collections::HashMap::from([(
        "AKIDEXAMPLE".to_string(),
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
    )]);
    let verified = verify_request(
        &Method::GET,
        &uri,
        &headers,
        Some(&empty),
        datetime!(2015-08-30 12:40:00 UTC),
        &credentials,
    )
    .expect("get-vanilla verifies");
    assert_eq!(verified.access_key_id, "AKIDEXAMPLE");
    assert_eq!(verified.region, "us-east-1");
    assert_eq!(verified.service, "service");
    assert_eq!(verified.signed_at, datetime!(2015-08-30 12:36:00 UTC));
    assert_eq!(verified.payload_hash, PayloadHash::Sha256Hex(empty));
}
