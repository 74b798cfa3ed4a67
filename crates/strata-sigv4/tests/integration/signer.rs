//! Signs `http` 1.x requests with the real `aws-sigv4` crate, the way aws-sdk-rust does, and
//! hands them to `verify_request` the way the server sees them.

use std::collections::HashMap;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use strata_sigv4::{AuthError, VerifiedRequest, sha256_hex, verify_request};
use time::OffsetDateTime;
use time::macros::datetime;

pub const ACCESS_KEY_ID: &str = "AKIDEXAMPLE";
pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
pub const HOST: &str = "ebs.us-east-1.amazonaws.com";
/// When the test requests are signed.
pub const SIGNED_AT: OffsetDateTime = datetime!(2024-03-01 10:20:30 UTC);

/// The server's credential table.
pub fn credentials() -> HashMap<String, String> {
    HashMap::from([(ACCESS_KEY_ID.to_string(), SECRET.to_string())])
}

/// How to sign; `Default` is aws-sdk-rust's setup for an EBS operation with a small body.
#[derive(Clone)]
pub struct Signer {
    pub access_key_id: &'static str,
    pub secret: &'static str,
    pub session_token: Option<&'static str>,
    pub region: &'static str,
    pub service: &'static str,
    pub time: OffsetDateTime,
    /// Sign `UNSIGNED-PAYLOAD` instead of the body's hash.
    pub unsigned_payload: bool,
    pub settings: SigningSettings,
}

impl Default for Signer {
    fn default() -> Self {
        Signer {
            access_key_id: ACCESS_KEY_ID,
            secret: SECRET,
            session_token: None,
            region: "us-east-1",
            service: "ebs",
            time: SIGNED_AT,
            unsigned_payload: false,
            settings: SigningSettings::default(),
        }
    }
}

impl Signer {
    /// aws-sdk-ebs's PutSnapshotBlock: `UNSIGNED-PAYLOAD`, announced in x-amz-content-sha256.
    pub fn put_snapshot_block() -> Self {
        let mut signer = Signer {
            unsigned_payload: true,
            ..Signer::default()
        };
        signer.settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        signer
    }

    /// The body hash is signed and also sent in x-amz-content-sha256.
    pub fn with_content_sha256_header() -> Self {
        let mut signer = Signer::default();
        signer.settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        signer
    }

    /// Signs `request` in place (adds Authorization, X-Amz-Date, …). The request target is
    /// origin-form with a `host` header, as a server receives it.
    pub fn sign(&self, request: &mut http::Request<Vec<u8>>) {
        let identity: Identity = Credentials::from_keys(
            self.access_key_id,
            self.secret,
            self.session_token.map(str::to_string),
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.region)
            .name(self.service)
            .time(SystemTime::from(self.time))
            .settings(self.settings.clone())
            .build()
            .expect("complete signing params")
            .into();
        let url = format!("https://{HOST}{}", request.uri());
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str(),
                    value.to_str().expect("test header values are ASCII"),
                )
            })
            .collect();
        let body = if self.unsigned_payload {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(request.body())
        };
        let signable =
            SignableRequest::new(request.method().as_str(), url, headers.into_iter(), body)
                .expect("signable request");
        let (instructions, _signature) = sign(signable, &params)
            .expect("signing succeeds")
            .into_parts();
        instructions.apply_to_request_http1x(request);
    }
}

/// Builds a request as the server receives it: origin-form target plus a `host` header.
pub fn request(method: &str, target: &str, body: &[u8]) -> http::Request<Vec<u8>> {
    http::Request::builder()
        .method(method)
        .uri(target)
        .header("host", HOST)
        .body(body.to_vec())
        .expect("valid test request")
}

/// Verifies as a server that has read the (small) body: passes the body's hash.
pub fn verify_with_body(request: &http::Request<Vec<u8>>) -> Result<VerifiedRequest, AuthError> {
    verify_at(request, Some(&sha256_hex(request.body())), SIGNED_AT)
}

/// Verifies as a server that streams the body: no body hash.
pub fn verify_streaming(request: &http::Request<Vec<u8>>) -> Result<VerifiedRequest, AuthError> {
    verify_at(request, None, SIGNED_AT)
}

/// Verifies with an explicit body hash and server clock.
pub fn verify_at(
    request: &http::Request<Vec<u8>>,
    body_sha256_hex: Option<&str>,
    now: OffsetDateTime,
) -> Result<VerifiedRequest, AuthError> {
    verify_request(
        request.method(),
        request.uri(),
        request.headers(),
        body_sha256_hex,
        now,
        &credentials(),
    )
}
