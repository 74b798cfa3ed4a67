//! Parsing of the `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
//! Signature=…` header.
//!
//! Real clients differ in separators (`, ` from botocore and aws-sigv4, `,` alone from some
//! hand-rolled signers), so components may be separated by any mix of commas and whitespace;
//! none of the component values can contain either.

use crate::AuthError;

/// The only algorithm supported: SigV4 with HMAC-SHA256.
pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// The fixed last element of every SigV4 credential scope.
const SCOPE_TERMINATOR: &str = "aws4_request";

/// The `YYYYMMDD/region/service` part of a credential, which also scopes the signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CredentialScope {
    /// `YYYYMMDD`; checked against `X-Amz-Date` by the caller.
    pub(crate) date: String,
    pub(crate) region: String,
    pub(crate) service: String,
}

impl CredentialScope {
    /// The scope as it appears in the string to sign: `date/region/service/aws4_request`.
    pub(crate) fn as_scope_string(&self) -> String {
        format!(
            "{}/{}/{}/{SCOPE_TERMINATOR}",
            self.date, self.region, self.service
        )
    }
}

/// The parsed contents of the `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub(crate) access_key_id: String,
    pub(crate) scope: CredentialScope,
    /// Lowercase header names, in the order the client listed them (that order is what it
    /// put in its canonical request).
    pub(crate) signed_headers: Vec<String>,
    /// The signature exactly as sent; compared byte-wise with the lowercase hex we compute.
    pub(crate) signature: String,
}

/// Parses an `Authorization` header value.
pub(crate) fn parse_authorization(value: &str) -> Result<Authorization, AuthError> {
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((value, ""));
    if algorithm != ALGORITHM {
        return Err(AuthError::Malformed(format!(
            "Unsupported Authorization algorithm '{algorithm}'; only {ALGORITHM} \
             (header-signed SigV4) is supported."
        )));
    }
    let components = Components::parse(rest)?;
    let (credential, signed_headers, signature) = components.require_all(value)?;
    let (access_key_id, scope) = parse_credential(credential)?;
    Ok(Authorization {
        access_key_id,
        scope,
        signed_headers: parse_signed_headers(signed_headers)?,
        signature: signature.to_string(),
    })
}

/// The three `Key=Value` components after the algorithm, each at most once.
#[derive(Default)]
struct Components<'a> {
    credential: Option<&'a str>,
    signed_headers: Option<&'a str>,
    signature: Option<&'a str>,
}

impl<'a> Components<'a> {
    /// Splits on commas and whitespace and sorts the parts into their slots; unknown or
    /// repeated keys are rejected rather than guessed at.
    fn parse(rest: &'a str) -> Result<Self, AuthError> {
        let mut components = Components::default();
        let parts = rest
            .split(|c: char| c == ',' || c.is_ascii_whitespace())
            .filter(|part| !part.is_empty());
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                return Err(AuthError::Malformed(format!(
                    "Authorization header component '{part}' is not of the form Key=Value."
                )));
            };
            let slot = match key {
                "Credential" => &mut components.credential,
                "SignedHeaders" => &mut components.signed_headers,
                "Signature" => &mut components.signature,
                _ => {
                    return Err(AuthError::Malformed(format!(
                        "Unknown Authorization header component '{key}'."
                    )));
                }
            };
            if slot.replace(value).is_some() {
                return Err(AuthError::Malformed(format!(
                    "Authorization header component '{key}' appears more than once."
                )));
            }
        }
        Ok(components)
    }

    /// Returns (Credential, SignedHeaders, Signature), or one error listing every missing or
    /// empty component, worded like AWS's IncompleteSignatureException.
    fn require_all(self, header: &str) -> Result<(&'a str, &'a str, &'a str), AuthError> {
        let present = |v: Option<&'a str>| v.filter(|v| !v.is_empty());
        match (
            present(self.credential),
            present(self.signed_headers),
            present(self.signature),
        ) {
            (Some(c), Some(h), Some(s)) => Ok((c, h, s)),
            (c, h, s) => {
                let mut message = String::new();
                for (name, value) in [("Credential", c), ("Signature", s), ("SignedHeaders", h)] {
                    if value.is_none() {
                        message.push_str(&format!(
                            "Authorization header requires '{name}' parameter. "
                        ));
                    }
                }
                message.push_str(&format!("Authorization={header}"));
                Err(AuthError::Malformed(message))
            }
        }
    }
}

/// Parses `AKID/YYYYMMDD/region/service/aws4_request`.
fn parse_credential(credential: &str) -> Result<(String, CredentialScope), AuthError> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = parts[..] else {
        return Err(AuthError::Malformed(format!(
            "Credential should be of the form \
             <access key id>/<YYYYMMDD>/<region>/<service>/aws4_request, got '{credential}'."
        )));
    };
    if access_key_id.is_empty() || region.is_empty() || service.is_empty() {
        return Err(AuthError::Malformed(format!(
            "Credential has an empty access key id, region or service: '{credential}'."
        )));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthError::Malformed(format!(
            "Credential date must be YYYYMMDD, got '{date}'."
        )));
    }
    if terminator != SCOPE_TERMINATOR {
        return Err(AuthError::Malformed(format!(
            "Credential should be scoped with a valid terminator: '{SCOPE_TERMINATOR}', \
             not '{terminator}'."
        )));
    }
    let scope = CredentialScope {
        date: date.to_string(),
        region: region.to_string(),
        service: service.to_string(),
    };
    Ok((access_key_id.to_string(), scope))
}

/// Parses `host;x-amz-date;…`. Names must already be in canonical (lowercase) form: the
/// client wrote exactly this string into its canonical request, so a name we would have to
/// rewrite could never verify.
fn parse_signed_headers(list: &str) -> Result<Vec<String>, AuthError> {
    let mut names: Vec<String> = Vec::new();
    for name in list.split(';') {
        let valid = !name.is_empty()
            && http::HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| n.as_str() == name);
        if !valid {
            return Err(AuthError::Malformed(format!(
                "SignedHeaders must be a ';'-separated list of lowercase header names, \
                 got '{list}'."
            )));
        }
        if names.iter().any(|n| n == name) {
            return Err(AuthError::Malformed(format!(
                "SignedHeaders lists '{name}' more than once."
            )));
        }
        names.push(name.to_string());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNATURE: &str = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31";

    fn expected() -> Authorization {
        Authorization {
            access_key_id: "AKIDEXAMPLE".into(),
            scope: CredentialScope {
                date: "20150830".into(),
                region: "us-east-1".into(),
                service: "service".into(),
            },
            signed_headers: vec!["host".into(), "x-amz-date".into()],
            signature: SIGNATURE.into(),
        }
    }

    fn malformed_message(header: &str) -> String {
        match parse_authorization(header) {
            Err(AuthError::Malformed(message)) => message,
            other => panic!("expected Malformed for {header:?}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_sdk_format() {
        let header = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={SIGNATURE}"
        );
        assert_eq!(parse_authorization(&header), Ok(expected()));
    }

    #[test]
    fn tolerates_separator_variations() {
        for sep in [",", ", ", " ", " , ", ",  ", "\t"] {
            let header = format!(
                "AWS4-HMAC-SHA256  Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request\
                 {sep}SignedHeaders=host;x-amz-date{sep}Signature={SIGNATURE} "
            );
            assert_eq!(parse_authorization(&header), Ok(expected()), "{header:?}");
        }
    }

    #[test]
    fn component_order_does_not_matter() {
        let header = format!(
            "AWS4-HMAC-SHA256 Signature={SIGNATURE}, SignedHeaders=host;x-amz-date, \
             Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
        );
        assert_eq!(parse_authorization(&header), Ok(expected()));
    }

    #[test]
    fn rejects_other_algorithms() {
        assert!(malformed_message("AWS AKIDEXAMPLE:c2lnbmF0dXJl").contains("Unsupported"));
        assert!(
            malformed_message("AWS4-ECDSA-P256-SHA256 Credential=a/b/c/aws4_request")
                .contains("Unsupported")
        );
        assert!(malformed_message("garbage").contains("Unsupported"));
        assert!(malformed_message("").contains("Unsupported"));
    }

    #[test]
    fn reports_every_missing_component() {
        let message = malformed_message("AWS4-HMAC-SHA256 SignedHeaders=host");
        assert!(message.contains("requires 'Credential'"), "{message}");
        assert!(message.contains("requires 'Signature'"), "{message}");
        assert!(!message.contains("requires 'SignedHeaders'"), "{message}");
        let message = malformed_message("AWS4-HMAC-SHA256");
        assert!(message.contains("requires 'SignedHeaders'"), "{message}");
        let message = malformed_message(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host, Signature=",
        );
        assert!(message.contains("requires 'Signature'"), "{message}");
    }

    #[test]
    fn rejects_unknown_repeated_and_valueless_components() {
        let base = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                    SignedHeaders=host, Signature=ab";
        assert!(malformed_message(&format!("AWS4-HMAC-SHA256 {base}, Extra=1")).contains("Extra"));
        assert!(
            malformed_message(&format!("AWS4-HMAC-SHA256 {base}, Signature=cd"))
                .contains("more than once")
        );
        assert!(malformed_message(&format!("AWS4-HMAC-SHA256 {base}, oops")).contains("Key=Value"));
    }

    #[test]
    fn validates_the_credential_scope() {
        let with_credential = |credential: &str| {
            malformed_message(&format!(
                "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders=host, Signature=ab"
            ))
        };
        assert!(with_credential("AKIDEXAMPLE/20150830/us-east-1/service").contains("form"));
        assert!(with_credential("AKID/20150830/us-east-1/service/aws4_request/x").contains("form"));
        assert!(
            with_credential("AKID/2015083/us-east-1/service/aws4_request").contains("YYYYMMDD")
        );
        assert!(
            with_credential("AKID/2015-8-3/us-east-1/service/aws4_request").contains("YYYYMMDD")
        );
        assert!(with_credential("/20150830/us-east-1/service/aws4_request").contains("empty"));
        assert!(with_credential("AKID/20150830//service/aws4_request").contains("empty"));
        assert!(
            with_credential("AKID/20150830/us-east-1/service/aws5_request").contains("terminator")
        );
    }

    #[test]
    fn validates_signed_headers() {
        let with_signed = |signed: &str| {
            malformed_message(&format!(
                "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders={signed}, Signature=ab"
            ))
        };
        assert!(with_signed("Host;x-amz-date").contains("lowercase"));
        assert!(with_signed("host;;x-amz-date").contains("lowercase"));
        assert!(with_signed("host;x-amz-date;").contains("lowercase"));
        assert!(with_signed("host;b@d").contains("lowercase"));
        assert!(with_signed("host;host").contains("more than once"));
    }

    #[test]
    fn scope_string_has_the_terminator() {
        assert_eq!(
            expected().scope.as_scope_string(),
            "20150830/us-east-1/service/aws4_request"
        );
    }
}
