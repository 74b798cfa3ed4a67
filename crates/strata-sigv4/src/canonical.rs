//! The SigV4 canonical request, rebuilt from the request as the server received it.
//!
//! Every rule here mirrors what aws-sigv4 (and botocore, for anything an SDK actually sends)
//! does for a non-S3 service; a single differing byte makes every signature fail, so the
//! unit tests pin each rule down with the AWS test-suite expectations.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, Method, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};

use crate::AuthError;

/// Everything but RFC 3986's unreserved characters `A-Z a-z 0-9 - _ . ~` is encoded.
const ENCODE_ALL_BUT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// For paths, `/` separates segments and is kept as is.
const ENCODE_PATH: &AsciiSet = &ENCODE_ALL_BUT_UNRESERVED.remove(b'/');

/// Builds the canonical request that a client signing `signed_headers` of this request would
/// have built:
///
/// ```text
/// METHOD \n CanonicalURI \n CanonicalQuery \n CanonicalHeaders \n SignedHeaders \n PayloadHash
/// ```
///
/// `uri` is the request target as received (path and raw, still percent-encoded query);
/// `signed_headers` are lowercase names in the order the client listed them; `payload_hash`
/// goes in verbatim (a hex SHA-256 or `UNSIGNED-PAYLOAD`).
///
/// Fails with [`AuthError::Malformed`] if a signed header is absent from the request or its
/// value is not UTF-8.
pub fn canonical_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    signed_headers: &[&str],
    payload_hash: &str,
) -> Result<String, AuthError> {
    let mut out = String::new();
    out.push_str(method.as_str());
    out.push('\n');
    out.push_str(&canonical_uri(uri.path()));
    out.push('\n');
    out.push_str(&canonical_query(uri.query().unwrap_or("")));
    out.push('\n');
    for name in signed_headers {
        out.push_str(name);
        out.push(':');
        out.push_str(&canonical_header_value(name, headers, uri)?);
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// The canonical URI for a non-S3 service: the path with dot segments and empty segments
/// removed, then percent-encoded once more. The path on the wire is already encoded, so a
/// `%` becomes `%25` ("double encoding"), exactly as the SDKs do when signing.
pub(crate) fn canonical_uri(path: &str) -> String {
    percent_encode(normalize_path(path).as_bytes(), ENCODE_PATH).to_string()
}

/// RFC 3986 §5.2.4 dot-segment removal, plus dropping empty segments (`//`), as aws-sigv4
/// and botocore normalise before signing. A trailing `/` (or `/.`, `/..`) is kept as `/`.
fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    let absolute = if path.starts_with('/') {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(format!("/{path}"))
    };
    if !absolute.contains('.') && !absolute.contains("//") {
        return absolute;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in absolute.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut normalized = format!("/{}", segments.join("/"));
    let ends_in_directory =
        absolute.ends_with('/') || absolute.ends_with("/.") || absolute.ends_with("/..");
    if ends_in_directory && !normalized.ends_with('/') {
        normalized.push('/');
    }
    Cow::Owned(normalized)
}

/// The canonical query string: every `key=value` pair (a bare `key` has an empty value)
/// percent-decoded, re-encoded with only unreserved characters left bare and uppercase hex,
/// sorted by encoded key then encoded value, joined with `&`.
///
/// Decoding first makes differently-encoded spellings of the same value (`%2b`, `%2B`)
/// agree. A literal `+` is *not* a space here; it canonicalises to `%2B`.
pub(crate) fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                reencode_query_component(key),
                reencode_query_component(value),
            )
        })
        .collect();
    pairs.sort_unstable();
    let joined: Vec<String> = pairs
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    joined.join("&")
}

/// Percent-decodes one query key or value and encodes it again in canonical form.
fn reencode_query_component(raw: &str) -> String {
    let decoded: Cow<'_, [u8]> = percent_decode_str(raw).into();
    percent_encode(&decoded, ENCODE_ALL_BUT_UNRESERVED).to_string()
}

/// All values of header `name`, each with spaces trimmed and runs of spaces collapsed,
/// joined with `,` in the order received.
///
/// An HTTP/2 request carries its host in the URI authority rather than a `host` header, so
/// that is used when the header itself is absent.
fn canonical_header_value(name: &str, headers: &HeaderMap, uri: &Uri) -> Result<String, AuthError> {
    let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
    if values.is_empty() {
        return match uri.authority() {
            Some(authority) if name == "host" => Ok(trim_spaces(authority.as_str())),
            _ => Err(AuthError::Malformed(format!(
                "SignedHeaders lists '{name}' but the request has no such header."
            ))),
        };
    }
    let mut trimmed = Vec::with_capacity(values.len());
    for value in values {
        let text = std::str::from_utf8(value.as_bytes()).map_err(|_| {
            AuthError::Malformed(format!("The value of signed header '{name}' is not UTF-8."))
        })?;
        trimmed.push(trim_spaces(text));
    }
    Ok(trimmed.join(","))
}

/// SigV4's "Trimall": strip leading and trailing spaces and turn each run of spaces into one.
///
/// Only the space character counts, as in aws-sigv4; tabs are kept. (botocore collapses all
/// whitespace, but no SDK sends tabs in header values.)
fn trim_spaces(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split(' ').filter(|word| !word.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_is_double_encoded() {
        // aws-signing-test-suite "double-encode-path" and "double-url-encode".
        assert_eq!(
            canonical_uri("/test/@connections/JBDvjfGEIAMCERw%3D"),
            "/test/%40connections/JBDvjfGEIAMCERw%253D"
        );
        assert_eq!(
            canonical_uri(
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A892717189312%3Afunction%3Amy-rusty-fun/invocations"
            ),
            "/2015-03-31/functions/arn%253Aaws%253Alambda%253Aus-west-2%253A892717189312%253Afunction%253Amy-rusty-fun/invocations"
        );
    }

    #[test]
    fn uri_keeps_unreserved_and_encodes_sub_delims() {
        assert_eq!(
            canonical_uri("/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
            "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
        );
        assert_eq!(
            canonical_uri("/a!$&'()*+,;=:@b"),
            "/a%21%24%26%27%28%29%2A%2B%2C%3B%3D%3A%40b"
        );
        assert_eq!(
            canonical_uri("/snapshots/snap-0123456789abcdef0/blocks/42"),
            "/snapshots/snap-0123456789abcdef0/blocks/42"
        );
    }

    #[test]
    fn uri_is_normalized_like_the_test_suite() {
        for (raw, canonical) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../a", "/a"),
            ("/a/.b/c.", "/a/.b/c."),
            ("/a/%2E%2E/b", "/a/%252E%252E/b"),
            ("relative", "/relative"),
        ] {
            assert_eq!(canonical_uri(raw), canonical, "path {raw:?}");
        }
    }

    #[test]
    fn query_is_decoded_reencoded_and_sorted() {
        // aws-signing-test-suite "get-vanilla-query-order-encoded".
        assert_eq!(
            canonical_query("Param-3=Value3&Param=Value2&%E1%88%B4=Value1"),
            "%E1%88%B4=Value1&Param=Value2&Param-3=Value3"
        );
        // "get-vanilla-query-order-key-case": uppercase sorts before lowercase.
        assert_eq!(
            canonical_query("Param2=value2&Param1=value1"),
            "Param1=value1&Param2=value2"
        );
        assert_eq!(
            canonical_query("pageToken=AAUB%2Babc%2F%3D&maxResults=100"),
            "maxResults=100&pageToken=AAUB%2Babc%2F%3D"
        );
    }

    #[test]
    fn query_edge_cases() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("flag"), "flag=");
        assert_eq!(canonical_query("a=&b"), "a=&b=");
        assert_eq!(canonical_query("a=1&&b=2&"), "a=1&b=2");
        assert_eq!(canonical_query("a=b=c"), "a=b%3Dc");
        assert_eq!(canonical_query("k=a+b"), "k=a%2Bb", "'+' is not a space");
        assert_eq!(
            canonical_query("k=%2b%7e%41"),
            "k=%2B~A",
            "hex case and needless escapes"
        );
        assert_eq!(canonical_query("k=a%20b"), "k=a%20b");
        assert_eq!(
            canonical_query("k=100%"),
            "k=100%25",
            "a stray '%' is literal"
        );
        assert_eq!(canonical_query("k=%zz"), "k=%25zz");
        assert_eq!(
            canonical_query("k=%FF"),
            "k=%FF",
            "bytes are kept, not made UTF-8"
        );
        assert_eq!(canonical_query("b=2&a=2&a=1"), "a=1&a=2&b=2");
        assert_eq!(canonical_query("a=x:y/z@w"), "a=x%3Ay%2Fz%40w");
    }

    #[test]
    fn header_values_are_trimmed_and_joined() {
        assert_eq!(trim_spaces("  a   b  c "), "a b c");
        assert_eq!(trim_spaces("\"a   b   c\""), "\"a b c\"");
        assert_eq!(trim_spaces("a\t b"), "a\t b");
        assert_eq!(trim_spaces("   "), "");

        let mut headers = HeaderMap::new();
        headers.append("my-header1", HeaderValue::from_static("value4"));
        headers.append("my-header1", HeaderValue::from_static("  value1 "));
        headers.append("my-header1", HeaderValue::from_static("value3"));
        let uri = Uri::from_static("/");
        assert_eq!(
            canonical_header_value("my-header1", &headers, &uri),
            Ok("value4,value1,value3".to_string())
        );
    }

    #[test]
    fn missing_signed_header_is_malformed() {
        let headers = HeaderMap::new();
        let uri = Uri::from_static("/");
        assert!(matches!(
            canonical_header_value("x-custom", &headers, &uri),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            canonical_header_value("host", &headers, &uri),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn host_falls_back_to_the_uri_authority() {
        let headers = HeaderMap::new();
        let uri = Uri::from_static("https://ebs.local:8443/snapshots");
        assert_eq!(
            canonical_header_value("host", &headers, &uri),
            Ok("ebs.local:8443".to_string())
        );
    }

    #[test]
    fn non_utf8_header_value_is_malformed() {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_bytes(b"caf\xe9").expect("obs-text is a valid header value");
        headers.insert("x-custom", value);
        let uri = Uri::from_static("/");
        assert!(matches!(
            canonical_header_value("x-custom", &headers, &uri),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn get_vanilla_canonical_request() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        let creq = canonical_request(
            &Method::GET,
            &Uri::from_static("/"),
            &headers,
            &["host", "x-amz-date"],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        );
        assert_eq!(
            creq.as_deref(),
            Ok(
                "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
                host;x-amz-date\n\
                e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
    }
}
