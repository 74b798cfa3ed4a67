//! The cryptographic half of SigV4: string to sign, signing key, signature.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::authorization::{ALGORITHM, CredentialScope};
use crate::sha256_hex;

type HmacSha256 = Hmac<Sha256>;

/// `AWS4-HMAC-SHA256 \n amz_date \n scope \n hex(sha256(canonical request))`.
pub(crate) fn string_to_sign(
    amz_date: &str,
    scope: &CredentialScope,
    canonical_request: &str,
) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        scope.as_scope_string(),
        sha256_hex(canonical_request.as_bytes())
    )
}

/// The lowercase hex signature of `string_to_sign` under the key derived for `scope`.
pub(crate) fn signature(
    secret_access_key: &str,
    scope: &CredentialScope,
    string_to_sign: &str,
) -> String {
    let key = signing_key(secret_access_key, scope);
    hex::encode(hmac_sha256(&key, string_to_sign.as_bytes()))
}

/// The key derivation chain: HMAC("AWS4"+secret, date) → region → service → "aws4_request".
fn signing_key(secret_access_key: &str, scope: &CredentialScope) -> [u8; 32] {
    let date_key = hmac_sha256(
        format!("AWS4{secret_access_key}").as_bytes(),
        scope.date.as_bytes(),
    );
    let region_key = hmac_sha256(&date_key, scope.region.as_bytes());
    let service_key = hmac_sha256(&region_key, scope.service.as_bytes());
    hmac_sha256(&service_key, b"aws4_request")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC is defined for keys of any length (long keys are hashed), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_scope() -> CredentialScope {
        CredentialScope {
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "iam".into(),
        }
    }

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        // From AWS's "Examples of how to derive a signing key for Signature Version 4".
        let key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &example_scope());
        assert_eq!(
            hex::encode(key),
            "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
        );
    }

    #[test]
    fn get_vanilla_string_to_sign_and_signature() {
        let scope = CredentialScope {
            service: "service".into(),
            ..example_scope()
        };
        let creq = "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\n\
                    host;x-amz-date\n\
                    e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let sts = string_to_sign("20150830T123600Z", &scope, creq);
        assert_eq!(
            sts,
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\n\
             bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
        assert_eq!(
            signature("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", &scope, &sts),
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }
}
