//! Property tests: whatever aws-sigv4 signs verifies, and no altered signature does.

use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use strata_sigv4::AuthError;

use crate::signer::{SIGNED_AT, Signer, request, verify_at, verify_streaming, verify_with_body};

/// What an SDK encodes: everything but the RFC 3986 unreserved characters.
const SDK_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A laxer client: leaves characters raw that are legal in a path or query anyway. (`+`,
/// `&`, `=` and `/` stay encoded: raw they would change the request's meaning.)
const LAX_ENCODE: &AsciiSet = &SDK_ENCODE
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';')
    .remove(b':')
    .remove(b'@');

/// Percent-encodes `text` the way some client might, optionally with lowercase hex digits.
fn encode(text: &str, lax: bool, lowercase_hex: bool) -> String {
    let set = if lax { LAX_ENCODE } else { SDK_ENCODE };
    let encoded = utf8_percent_encode(text, set).to_string();
    if !lowercase_hex {
        return encoded;
    }
    let mut out = String::with_capacity(encoded.len());
    let mut hex_digits_left = 0;
    for c in encoded.chars() {
        if c == '%' {
            hex_digits_left = 2;
            out.push(c);
        } else if hex_digits_left > 0 {
            hex_digits_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A path segment: a dot segment, an empty one, or arbitrary text.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just(String::new()),
        8 => "\\PC{0,12}",
    ]
}

/// A query key: often one of a few short ones, so repeated keys (then sorted by value) and
/// keys that sort differently encoded and decoded (`a` vs `a-b` vs `A` vs `%`) are common.
fn query_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "A", "a-b", "a%", "", "\u{1234}"]).prop_map(String::from),
        2 => "\\PC{0,8}",
    ]
}

/// One generated request, before signing.
#[derive(Debug, Clone)]
struct Generated {
    method: &'static str,
    segments: Vec<String>,
    trailing_slash: bool,
    query: Vec<(String, String)>,
    lax: bool,
    lowercase_hex: bool,
    header_values: Vec<String>,
    body: Vec<u8>,
    mode: PayloadMode,
    skew_seconds: i64,
}

#[derive(Debug, Clone, Copy)]
enum PayloadMode {
    /// Body hash signed, no header (aws-sdk-rust default).
    BodyHash,
    /// Body hash signed and sent in x-amz-content-sha256.
    BodyHashHeader,
    /// UNSIGNED-PAYLOAD in x-amz-content-sha256 (PutSnapshotBlock).
    Unsigned,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "HEAD"]),
        prop::collection::vec(segment(), 0..5),
        any::<bool>(),
        prop::collection::vec((query_key(), "\\PC{0,12}"), 0..6),
        (any::<bool>(), any::<bool>()),
        prop::collection::vec("[ -~\t]{0,24}", 1..4),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::sample::select(vec![
            PayloadMode::BodyHash,
            PayloadMode::BodyHashHeader,
            PayloadMode::Unsigned,
        ]),
        -900_i64..=900,
    )
        .prop_map(
            |(
                method,
                segments,
                trailing_slash,
                query,
                (lax, lowercase_hex),
                header_values,
                body,
                mode,
                skew_seconds,
            )| {
                Generated {
                    method,
                    segments,
                    trailing_slash,
                    query,
                    lax,
                    lowercase_hex,
                    header_values,
                    body,
                    mode,
                    skew_seconds,
                }
            },
        )
}

impl Generated {
    fn target(&self) -> String {
        let encoded: Vec<String> = self
            .segments
            .iter()
            .map(|s| encode(s, self.lax, self.lowercase_hex))
            .collect();
        let mut target = format!("/{}", encoded.join("/"));
        if self.trailing_slash && !target.ends_with('/') {
            target.push('/');
        }
        if !self.query.is_empty() {
            let pairs: Vec<String> = self
                .query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        encode(k, self.lax, self.lowercase_hex),
                        encode(v, self.lax, self.lowercase_hex)
                    )
                })
                .collect();
            target.push('?');
            target.push_str(&pairs.join("&"));
        }
        target
    }

    fn signed_request(&self) -> http::Request<Vec<u8>> {
        let mut req = request(self.method, &self.target(), &self.body);
        for value in &self.header_values {
            req.headers_mut().append(
                "x-custom-value",
                HeaderValue::from_str(value).expect("visible ASCII is a valid header value"),
            );
        }
        let signer = match self.mode {
            PayloadMode::BodyHash => Signer::default(),
            PayloadMode::BodyHashHeader => Signer::with_content_sha256_header(),
            PayloadMode::Unsigned => Signer::put_snapshot_block(),
        };
        signer.sign(&mut req);
        req
    }

    fn now(&self) -> time::OffsetDateTime {
        SIGNED_AT + time::Duration::seconds(self.skew_seconds)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn whatever_aws_sigv4_signs_verifies(generated in generated()) {
        let req = generated.signed_request();
        let body_hash = strata_sigv4::sha256_hex(req.body());
        let result = verify_at(&req, Some(&body_hash), generated.now());
        prop_assert!(result.is_ok(), "target {} headers {:?}: {:?}", req.uri(), req.headers(), result);
        if !matches!(generated.mode, PayloadMode::BodyHash) {
            prop_assert!(verify_streaming(&req).is_ok());
        }
    }

    #[test]
    fn any_altered_signature_character_is_rejected(
        generated in generated(),
        index in 0_usize..64,
        replacement in prop::sample::select(
            ('0'..='9').chain('a'..='z').chain('A'..='Z').collect::<Vec<char>>()
        ),
    ) {
        let mut req = generated.signed_request();
        let auth = req.headers()["authorization"].to_str().expect("ascii").to_string();
        let start = auth.find("Signature=").expect("signature") + "Signature=".len();
        let mut signature: Vec<char> = auth[start..].chars().collect();
        prop_assume!(signature[index] != replacement);
        signature[index] = replacement;
        let tampered = format!("{}{}", &auth[..start], signature.into_iter().collect::<String>());
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&tampered).expect("valid header"),
        );
        prop_assert_eq!(verify_with_body(&req), Err(AuthError::SignatureMismatch));
    }
}
