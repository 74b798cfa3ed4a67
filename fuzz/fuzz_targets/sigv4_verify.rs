//! `strata_sigv4::verify_request` on arbitrary requests. The input is lines: method,
//! request target, then `name: value` headers (the Authorization, X-Amz-Date and
//! x-amz-content-sha256 headers are where the parser works). A line `body` makes the
//! verifier get a body hash, as for small bodies.
#![no_main]

use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let Some(Ok(method)) = lines.next().map(Method::from_bytes) else {
        return;
    };
    let Some(Ok(uri)) = lines.next().map(Uri::try_from) else {
        return;
    };
    let mut headers = HeaderMap::new();
    let mut body = false;
    for line in lines {
        if line == b"body" {
            body = true;
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let secrets = HashMap::from([(
        "AKIDEXAMPLE".to_owned(),
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
    )]);
    let now = time::macros::datetime!(2024-03-01 10:20:30 UTC);
    let hash = body.then(|| strata_sigv4::sha256_hex(data));
    let result =
        strata_sigv4::verify_request(&method, &uri, &headers, hash.as_deref(), now, &secrets);
    // What the server does with a refusal: its message, code and status.
    if let Err(error) = result {
        let _ = (error.message(), error.aws_error_code(), error.status_code());
    }
    // The canonical request over every header present, as if all were signed.
    let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
    let _ = strata_sigv4::canonical_request(&method, &uri, &headers, &names, "UNSIGNED-PAYLOAD");
});
