//! Building the `aws-sdk-ebs` client from the usual AWS sources.
//!
//! Region, credentials and endpoint come from `aws-config`'s default chains (environment,
//! shared config and credentials files, SSO-less profiles, web identity, container and
//! instance metadata), overridden by the `--region`, `--profile` and `--endpoint` flags.
//! `AWS_ENDPOINT_URL_EBS` / `AWS_ENDPOINT_URL` are honoured by the SDK itself.
//!
//! HTTP goes through `aws-smithy-http-client` on rustls with the *ring* provider: the SDK's
//! default HTTPS client uses aws-lc, whose C build takes minutes. Plain `http://` endpoints
//! (a local Strata) and `https://` (AWS, or Strata behind a TLS proxy) both work.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ebs::config::Region;
use aws_sdk_ebs::config::{HttpClient, ProvideCredentials, SharedHttpClient};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::error::ConnectError;

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Endpoint URL, e.g. `http://127.0.0.1:9555`; `None`: the SDK's (AWS, or `AWS_ENDPOINT_URL*`).
    pub endpoint: Option<String>,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    /// Region; `None`: from the environment or profile.
    pub region: Option<String>,
    /// TCP/TLS connect deadline; `None`: 5 s.
    pub connect_timeout: Option<Duration>,
}

/// The region used when only an endpoint is given: a self-hosted server accepts any region,
/// so requiring one there would only be a nuisance.
const ENDPOINT_ONLY_REGION: &str = "us-east-1";

/// An HTTP client for the SDK: hyper + rustls (ring), http and https.
pub fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Build an SDK client. Fails early, with a clear message, when no region or no credentials
/// can be found, instead of failing on the first request.
pub async fn connect(options: &ConnectOptions) -> Result<aws_sdk_ebs::Client, ConnectError> {
    connect_with(options, http_client()).await
}

/// [`connect`] with a caller-supplied HTTP client (tests, proxies).
pub async fn connect_with(
    options: &ConnectOptions,
    http: impl HttpClient + 'static,
) -> Result<aws_sdk_ebs::Client, ConnectError> {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(options.connect_timeout.unwrap_or(Duration::from_secs(5)))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        // Retries are ours (crate::retry): one place decides, with per-attempt deadlines.
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    } else if options.endpoint.is_some() {
        // With an explicit endpoint (a local Strata), look for a region in the environment
        // and profile only: the default chain would also ask the instance metadata service,
        // which costs seconds off EC2. Any region will do for a self-hosted server.
        let mut profile = ProfileFileRegionProvider::builder();
        if let Some(name) = &options.profile {
            profile = profile.profile_name(name);
        }
        let chain = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
            .or_else(profile.build())
            .or_else(Region::new(ENDPOINT_ONLY_REGION));
        loader = loader.region(chain);
    }
    if let Some(endpoint) = &options.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let shared = loader.load().await;
    let mut builder = aws_sdk_ebs::config::Builder::from(&shared);
    if shared.region().is_none() {
        if shared.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_EBS").is_some() {
            builder = builder.region(Region::new(ENDPOINT_ONLY_REGION));
        } else {
            return Err(ConnectError::NoRegion);
        }
    }
    let provider = shared
        .credentials_provider()
        .ok_or_else(|| ConnectError::Credentials("no credential provider".into()))?;
    provider
        .provide_credentials()
        .await
        // The top-level message: the root cause is usually the last provider tried (often
        // the instance metadata service), which would mislead.
        .map_err(|e| ConnectError::Credentials(e.to_string()))?;
    Ok(aws_sdk_ebs::Client::from_conf(builder.build()))
}

/// A client with fixed credentials and no environment lookups (tests, embedding): endpoint,
/// region `us-east-1`, the same HTTP client and timeouts as [`connect`], no SDK retries.
pub fn static_client(
    endpoint: &str,
    access_key_id: &str,
    secret_access_key: &str,
) -> aws_sdk_ebs::Client {
    let config = aws_sdk_ebs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(ENDPOINT_ONLY_REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ebs::config::Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "static",
        ))
        .http_client(http_client())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .build(),
        )
        .build();
    aws_sdk_ebs::Client::from_conf(config)
}

/// The innermost message of an error chain: the part a user can act on.
pub(crate) fn root_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
