//! Where to connect and as whom: one rule for every `strata` subcommand that talks to a
//! server (the transfers here and the admin commands of `crates/strata`).
//!
//! - **Endpoint:** `--endpoint`, else `STRATA_ENDPOINT`, else `AWS_ENDPOINT_URL_EBS`, else
//!   `AWS_ENDPOINT_URL`; with none of them, the command's default (AWS's regional endpoint
//!   for the transfers, `http://127.0.0.1:9555` for the admin commands, which only Strata
//!   serves). It must be an `http://` or `https://` URL whose host resolves: anything else is
//!   a configuration error, reported before any request.
//! - **Region:** `--region`, else `AWS_REGION` / `AWS_DEFAULT_REGION`, else the profile's; with
//!   an endpoint and none of those, `us-east-1` (a self-hosted server accepts any).
//! - **Credentials:** `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or the profile given by
//!   `--profile`/`AWS_PROFILE`; else, for an endpoint that is not AWS, the root keys of
//!   the server's data directory (`--data-dir`, `STRATA_DATA_DIR`, default `./strata-data`)
//!   when that directory has them; else the rest of the AWS chain (default profile, web
//!   identity, container and instance metadata).
//! - **The target of a copy** (`strata copy`/`sync`) has its own flags (`--to-endpoint`,
//!   `--to-region`, `--to-profile`, `--to-data-dir`) and no environment variable of its own;
//!   a `--to-data-dir`'s keys come before the environment's
//!   ([`ConnectOptions::prefer_data_dir`]).
//!
//! HTTP goes through `aws-smithy-http-client` on rustls with the *ring* provider: the SDK's
//! default HTTPS client uses aws-lc, whose C build takes minutes. Plain `http://` endpoints
//! (a local Strata) and `https://` (AWS, or Strata behind a TLS proxy) both work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ebs::config::{Credentials, Region, SharedCredentialsProvider};
use aws_sdk_ebs::config::{HttpClient, ProvideCredentials, SharedHttpClient};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

use crate::error::ConnectError;

/// Environment variable naming the endpoint (after `--endpoint`, before the AWS variables).
pub const ENDPOINT_ENV: &str = "STRATA_ENDPOINT";
/// Environment variable naming the data directory whose root keys are the last resort.
pub const DATA_DIR_ENV: &str = "STRATA_DATA_DIR";
/// The data directory `strata serve` uses by default.
pub const DEFAULT_DATA_DIR: &str = "./strata-data";
/// The endpoint of a local `strata serve` (the admin commands' default).
pub const LOCAL_ENDPOINT: &str = "http://127.0.0.1:9555";

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Endpoint URL, e.g. `http://127.0.0.1:9555`; `None`: AWS's regional endpoint. (The
    /// environment's is applied by the caller, with [`resolve_endpoint`].)
    pub endpoint: Option<String>,
    /// Named profile of the shared config files.
    pub profile: Option<String>,
    /// Region; `None`: from the environment or profile.
    pub region: Option<String>,
    /// TCP/TLS connect deadline; `None`: 5 s.
    pub connect_timeout: Option<Duration>,
    /// A Strata data directory whose `root-credentials` are used when nothing else gives
    /// credentials (only with an endpoint that is not AWS); `None`: none.
    pub data_dir: Option<PathBuf>,
    /// Use the data directory's keys before the environment's (they were named explicitly,
    /// as `--to-data-dir` of a copy is).
    pub prefer_data_dir: bool,
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

/// The endpoint by the rule of this module: `flag`, else the first set of `STRATA_ENDPOINT`,
/// `AWS_ENDPOINT_URL_EBS`, `AWS_ENDPOINT_URL`; `None`: the caller's default.
pub fn resolve_endpoint(flag: Option<&str>) -> Option<String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    flag.map(str::to_owned)
        .or_else(|| env(ENDPOINT_ENV))
        .or_else(|| env("AWS_ENDPOINT_URL_EBS"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
}

/// The host and port of an endpoint URL, or why it is not one (with a hint).
pub fn parse_endpoint(url: &str) -> Result<(String, u16), ConnectError> {
    let invalid = |hint: String| ConnectError::InvalidEndpoint {
        endpoint: url.to_owned(),
        hint,
    };
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => {
            return Err(invalid(format!(
                "it has no scheme; did you mean http://{url}?"
            )));
        }
    };
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        other => {
            return Err(invalid(format!(
                "the scheme must be http or https, not {other}"
            )));
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // [v6]:port
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| invalid("the IPv6 address has no closing ]".into()))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("it has no host, e.g. http://127.0.0.1:9555".into()));
    }
    let port = match port {
        None => default_port,
        Some(text) => text
            .parse()
            .map_err(|_| invalid(format!("'{text}' is not a port number")))?,
    };
    Ok((host.to_owned(), port))
}

/// Check an endpoint before any request: a URL, whose host name resolves.
pub async fn check_endpoint(url: &str) -> Result<(), ConnectError> {
    let (host, port) = parse_endpoint(url)?;
    let lookup = tokio::net::lookup_host((host.clone(), port));
    match tokio::time::timeout(Duration::from_secs(10), lookup)
        .await
        .map(|found| found.map(|mut addrs| addrs.next().is_some()))
    {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(ConnectError::UnknownHost {
            host,
            cause: "no addresses".into(),
        }),
        Ok(Err(error)) => Err(ConnectError::UnknownHost {
            host,
            cause: error.to_string(),
        }),
        Err(_) => Err(ConnectError::UnknownHost {
            host,
            cause: "the lookup took more than 10 s".into(),
        }),
    }
}

/// Whether `url` is one of AWS's own endpoints (where a Strata data directory's keys must
/// never be sent).
fn is_aws(url: &str) -> bool {
    parse_endpoint(url).is_ok_and(|(host, _)| {
        let host = host.to_ascii_lowercase();
        host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
    })
}

/// The root keys a Strata data directory holds (`root-credentials`, written by `strata
/// serve`), if it has readable ones.
pub fn data_dir_credentials(dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(dir.join("root-credentials")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.trim().strip_prefix('='))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    Some(Credentials::new(
        field("aws_access_key_id")?,
        field("aws_secret_access_key")?,
        None,
        None,
        "strata-data-dir",
    ))
}

/// Where the credentials came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The AWS chain (environment, profile, ...).
    Aws,
    /// The root keys of this data directory.
    DataDir(PathBuf),
}

/// Endpoint, region and credentials, resolved by the rule of this module.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The endpoint, `None`: AWS's regional endpoint.
    pub endpoint: Option<String>,
    /// The signing region.
    pub region: Region,
    /// Credentials (refreshed as the provider needs).
    pub credentials: SharedCredentialsProvider,
    /// Where they came from.
    pub source: CredentialSource,
}

impl Resolved {
    /// The current credentials.
    pub async fn credentials(&self) -> Result<Credentials, ConnectError> {
        self.credentials
            .provide_credentials()
            .await
            .map_err(|e| ConnectError::Credentials(e.to_string()))
    }
}

/// Resolve region and credentials for `options.endpoint` (see the module doc; the endpoint
/// is taken as given: apply [`resolve_endpoint`] first where the environment should count,
/// as the CLI does for every source). Fails early, with a clear message, when the endpoint
/// is malformed or does not resolve, or when no region or no credentials can be found,
/// instead of failing on the first request.
pub async fn resolve(options: &ConnectOptions) -> Result<Resolved, ConnectError> {
    let endpoint = options.endpoint.clone();
    if let Some(url) = &endpoint {
        check_endpoint(url).await?;
    }
    let region = resolve_region(options, endpoint.is_some()).await?;
    let env_keys = std::env::var_os("AWS_ACCESS_KEY_ID").is_some();
    let profile_named = options.profile.is_some() || std::env::var_os("AWS_PROFILE").is_some();
    if (options.prefer_data_dir || (!env_keys && !profile_named))
        && let (Some(url), Some(dir)) = (&endpoint, &options.data_dir)
        && !is_aws(url)
        && let Some(keys) = data_dir_credentials(dir)
    {
        return Ok(Resolved {
            endpoint,
            region,
            credentials: SharedCredentialsProvider::new(keys),
            source: CredentialSource::DataDir(dir.clone()),
        });
    }
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .region(region.clone());
    if let Some(profile) = &options.profile {
        loader = loader.profile_name(profile);
    }
    let shared = loader.load().await;
    let provider = shared
        .credentials_provider()
        .ok_or_else(|| ConnectError::Credentials("no credential provider".into()))?;
    provider
        .provide_credentials()
        .await
        // The top-level message: the root cause is usually the last provider tried (often
        // the instance metadata service), which would mislead.
        .map_err(|e| ConnectError::Credentials(e.to_string()))?;
    Ok(Resolved {
        endpoint,
        region,
        credentials: provider,
        source: CredentialSource::Aws,
    })
}

async fn resolve_region(
    options: &ConnectOptions,
    has_endpoint: bool,
) -> Result<Region, ConnectError> {
    if let Some(region) = &options.region {
        return Ok(Region::new(region.clone()));
    }
    let mut profile = ProfileFileRegionProvider::builder();
    if let Some(name) = &options.profile {
        profile = profile.profile_name(name);
    }
    // Environment and profile only: the default chain would also ask the instance
    // metadata service, which costs seconds off EC2.
    let chain = RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new())
        .or_else(profile.build());
    match chain.region().await {
        Some(region) => Ok(region),
        None if has_endpoint => Ok(Region::new(ENDPOINT_ONLY_REGION)),
        None => Err(ConnectError::NoRegion),
    }
}

/// Build an SDK client by the rule of this module (see [`resolve`]).
pub async fn connect(options: &ConnectOptions) -> Result<aws_sdk_ebs::Client, ConnectError> {
    let resolved = resolve(options).await?;
    Ok(client_for(
        &resolved,
        options.connect_timeout,
        http_client(),
    ))
}

/// An SDK client for resolved settings, with a caller-supplied HTTP client (tests, proxies).
pub fn client_for(
    resolved: &Resolved,
    connect_timeout: Option<Duration>,
    http: impl HttpClient + 'static,
) -> aws_sdk_ebs::Client {
    let mut builder = aws_sdk_ebs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(resolved.region.clone())
        .credentials_provider(resolved.credentials.clone())
        .http_client(http)
        // Retries are ours (crate::retry): one place decides, with per-attempt deadlines.
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(connect_timeout.unwrap_or(Duration::from_secs(5)))
                .build(),
        );
    if let Some(endpoint) = &resolved.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    aws_sdk_ebs::Client::from_conf(builder.build())
}

/// A client with fixed credentials and no environment lookups (tests, embedding): endpoint,
/// region `us-east-1`, the same HTTP client and timeouts as [`connect`], no SDK retries.
pub fn static_client(
    endpoint: &str,
    access_key_id: &str,
    secret_access_key: &str,
) -> aws_sdk_ebs::Client {
    let resolved = Resolved {
        endpoint: Some(endpoint.to_owned()),
        region: Region::new(ENDPOINT_ONLY_REGION),
        credentials: SharedCredentialsProvider::new(Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "static",
        )),
        source: CredentialSource::Aws,
    };
    client_for(&resolved, None, http_client())
}

/// The innermost message of an error chain: the part a user can act on.
pub(crate) fn root_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// Whether an error chain contains "connection refused" (nothing listens at the address).
pub(crate) fn is_connection_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        if error.to_string().contains("Connection refused") {
            return true;
        }
        current = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:9555").ok(),
            Some(("127.0.0.1".into(), 9555))
        );
        assert_eq!(
            parse_endpoint("https://ebs.us-east-1.amazonaws.com/").ok(),
            Some(("ebs.us-east-1.amazonaws.com".into(), 443))
        );
        assert_eq!(
            parse_endpoint("http://[::1]:80").ok(),
            Some(("::1".into(), 80))
        );
        let message = |url: &str| parse_endpoint(url).expect_err("invalid").to_string();
        assert!(
            message("127.0.0.1:9555").contains("did you mean http://127.0.0.1:9555?"),
            "{}",
            message("127.0.0.1:9555")
        );
        assert!(message("ftp://x").contains("http or https"));
        assert!(message("http://:80").contains("no host"));
        assert!(message("http://h:port").contains("not a port"));
    }

    #[test]
    fn aws_endpoints_are_recognised() {
        assert!(is_aws("https://ebs.eu-west-1.amazonaws.com"));
        assert!(!is_aws("http://127.0.0.1:9555"));
        assert!(!is_aws("http://amazonaws.com.example.org"));
    }

    #[test]
    fn data_dir_keys_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(data_dir_credentials(dir.path()).is_none());
        std::fs::write(
            dir.path().join("root-credentials"),
            "[default]\naws_access_key_id = AKID\naws_secret_access_key=SECRET\n",
        )
        .expect("write");
        let keys = data_dir_credentials(dir.path()).expect("keys");
        assert_eq!(
            (keys.access_key_id(), keys.secret_access_key()),
            ("AKID", "SECRET")
        );
    }
}
