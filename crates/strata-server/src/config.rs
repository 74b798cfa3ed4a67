//! Server settings: command-line flags, environment and an optional TOML file, validated
//! into one [`Settings`] value before anything starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use strata_types::AccountId;

use crate::credentials::AccessKey;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9555";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./strata-data";
/// Default root account id.
pub const DEFAULT_ROOT_ACCOUNT: &str = "000000000000";
/// How long a request body may stall between two pieces before the request is cut off.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often background garbage collection runs.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// How often a background scrub reads every chunk and node back: weekly.
pub const DEFAULT_SCRUB_INTERVAL: Duration = Duration::from_secs(7 * 86_400);
/// How fast a scrub reads, MiB per second: a fraction of a disk's or a bucket's bandwidth.
pub const DEFAULT_SCRUB_RATE_MIB: u64 = 64;
/// How long an unreferenced chunk is kept after it was last stored (see `strata_core::gc`).
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(60);
/// How long a client has to send a whole request head, from the connection's opening or
/// from the head's first byte. Real clients send a head in one write; nginx allows 60 s.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a keep-alive connection may sit idle between requests (an AWS load balancer
/// allows 60 s; SDK connection pools reuse connections well within that).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; further ones are answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// How long a whole request body may take, however steadily it arrives: a 512 KiB block
/// at 10 KiB/s. coldsnap gives up on an attempt after 20 s.
pub const DEFAULT_BODY_DEADLINE: Duration = Duration::from_secs(60);
/// Memory for request bodies and block reads in flight (512 blocks).
pub const DEFAULT_BODY_BUDGET_BYTES: usize = 256 << 20;

/// The optional config file (`--config`). Every key has a `strata serve` flag of the same
/// name (`listen` is `--listen`, `gc_interval_secs` is `--gc-interval-secs`), except the
/// limits and `accounts`, which only the file sets; a flag given on the command line (or
/// its environment variable) wins over the file. `packaging/strata.toml` documents every
/// key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// Where data lives.
    pub data_dir: Option<PathBuf>,
    /// A second address serving only `/metrics`, without authentication.
    pub metrics_listen: Option<SocketAddr>,
    /// How log lines are written.
    pub log_format: Option<LogFormat>,
    /// The root account's id.
    pub root_account_id: Option<String>,
    /// The root account's access key id (with `root_secret_access_key`).
    pub root_access_key_id: Option<String>,
    /// The root account's secret access key (with `root_access_key_id`).
    pub root_secret_access_key: Option<String>,
    /// Extra accounts and their keys.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// Seconds a request body may stall.
    pub body_timeout_secs: Option<u64>,
    /// Seconds between background garbage collections; 0 turns them off.
    pub gc_interval_secs: Option<u64>,
    /// Seconds an unreferenced chunk is kept after it was last stored.
    pub gc_grace_secs: Option<u64>,
    /// Seconds between background scrubs; 0 turns them off.
    pub scrub_interval_secs: Option<u64>,
    /// MiB per second a scrub reads at most; 0: unpaced.
    pub scrub_rate_mib: Option<u64>,
    /// Seconds a client has to send a whole request head.
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a keep-alive connection may sit idle between requests.
    pub idle_timeout_secs: Option<u64>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Seconds a whole request body may take.
    pub body_deadline_secs: Option<u64>,
    /// MiB of request bodies and block reads in flight.
    pub body_budget_mib: Option<usize>,
    /// Where snapshot metadata lives: `embedded`, or a `postgres://` URL.
    pub metadata: Option<String>,
    /// Where chunk bytes live: `embedded`, or `s3://BUCKET[/PREFIX]`.
    pub chunks: Option<String>,
    /// The S3 endpoint URL (with `chunks = "s3://..."`).
    pub s3_endpoint: Option<String>,
    /// The S3 signing region.
    pub s3_region: Option<String>,
    /// The bucket's access key id (else `STRATA_S3_ACCESS_KEY_ID`).
    pub s3_access_key_id: Option<String>,
    /// The bucket's secret access key (else `STRATA_S3_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: Option<String>,
    /// PEM certificate chain of the listener (with `tls_key`): serve HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the listener (with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// File holding the master key that wraps the encryption keys (else
    /// `STRATA_MASTER_KEY`, else `master.key` in the data directory of an embedded store).
    pub master_key_file: Option<PathBuf>,
    /// Encrypt every new snapshot at rest, asked or not (AWS's encryption by default).
    pub encrypt_by_default: Option<bool>,
    /// The region named in the ARNs of encryption keys.
    pub region: Option<String>,
    /// AWS-shaped quotas (none unless set).
    pub quotas: Option<QuotasConfig>,
}

/// `[quotas]`: optional, AWS-shaped. Rates are requests per second, enforced by each node
/// (a cluster of N nodes admits up to N times them); the pending-snapshot quota is counted
/// across the cluster.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasConfig {
    /// Pending snapshots an account may have at once (AWS: 100); beyond it StartSnapshot
    /// is `ConcurrentLimitExceededException`.
    pub pending_snapshots_per_account: Option<usize>,
    /// Requests per second per account, by EBS operation (AWS: StartSnapshot 10,
    /// CompleteSnapshot 10, PutSnapshotBlock 1000, GetSnapshotBlock 1000,
    /// ListSnapshotBlocks 50, ListChangedBlocks 50); beyond it `RequestThrottledException`
    /// `ACCOUNT_THROTTLED`.
    #[serde(default)]
    pub requests_per_second_per_account: std::collections::BTreeMap<String, f64>,
    /// Requests per second per snapshot, by EBS operation (AWS: PutSnapshotBlock 1000,
    /// GetSnapshotBlock 1000); beyond it `RequestThrottledException`
    /// `RESOURCE_LEVEL_THROTTLE`.
    #[serde(default)]
    pub requests_per_second_per_snapshot: std::collections::BTreeMap<String, f64>,
}

/// How the server writes its log lines (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event, `key=value` fields; coloured only on a terminal.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format '{other}' (text or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// One `[[accounts]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// 12-digit account id.
    pub id: String,
    /// Its keys.
    pub keys: Vec<KeyConfig>,
}

/// One `[[accounts.keys]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// The operations this key may call (e.g. a read-only key for restores:
    /// `["ListSnapshotBlocks", "ListChangedBlocks", "GetSnapshotBlock",
    /// "DescribeSnapshots"]`); unset, every operation of its account.
    pub allow: Option<Vec<String>>,
}

impl ConfigFile {
    /// Read and parse a config file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Whether the file holds a secret (the root secret or an account's key), so that it
    /// must not be readable by others.
    pub fn holds_secrets(&self) -> bool {
        self.root_secret_access_key.is_some()
            || self.accounts.iter().any(|account| !account.keys.is_empty())
    }

    /// The configured keys, validated.
    pub fn access_keys(&self) -> anyhow::Result<Vec<AccessKey>> {
        let mut keys = Vec::new();
        for account in &self.accounts {
            let id = AccountId::parse(&account.id).map_err(anyhow::Error::msg)?;
            for key in &account.keys {
                anyhow::ensure!(
                    !key.access_key_id.is_empty() && !key.secret_access_key.is_empty(),
                    "account {id}: access keys and secrets must not be empty"
                );
                let allow = key
                    .allow
                    .as_deref()
                    .map(crate::credentials::parse_allow_list)
                    .transpose()
                    .with_context(|| format!("access key {}", key.access_key_id))?;
                keys.push(AccessKey {
                    allow: allow.map(std::sync::Arc::new),
                    ..AccessKey::new(
                        key.access_key_id.clone(),
                        key.secret_access_key.clone(),
                        id.clone(),
                    )
                });
            }
        }
        Ok(keys)
    }
}

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where data lives.
    pub data_dir: PathBuf,
    /// The root account.
    pub root_account: AccountId,
    /// The root key pair from the environment, if given.
    pub root_key_from_env: Option<(String, String)>,
    /// Keys of further accounts.
    pub extra_keys: Vec<AccessKey>,
    /// How long a request body may stall.
    pub body_timeout: Duration,
    /// Background GC period (`None`: only on demand).
    pub gc_interval: Option<Duration>,
    /// GC grace period for unreferenced chunks.
    pub gc_grace: Duration,
    /// Background scrub period (`None`: only `strata verify --all`).
    pub scrub_interval: Option<Duration>,
    /// MiB per second a scrub reads at most (0: unpaced).
    pub scrub_rate_mib: u64,
    /// Bounds on connections and on requests in flight.
    pub limits: Limits,
    /// Where snapshot metadata lives (`--metadata`).
    pub metadata: crate::stores::MetadataBackend,
    /// Where chunk bytes live (`--chunks`, `--s3-*`), checked by the server at start.
    pub chunks: crate::stores::ChunkOptions,
    /// A second address serving only `/metrics`, unauthenticated (`None`: only the
    /// SigV4-authenticated `/metrics` of the main listener).
    pub metrics_listen: Option<SocketAddr>,
    /// The listener's certificate and key (`None`: plain HTTP).
    pub tls: Option<crate::tls::TlsFiles>,
    /// The config file these settings were read from, read again on SIGHUP for its keys.
    pub config_file: Option<PathBuf>,
    /// Encryption at rest.
    pub encryption: EncryptionSettings,
    /// Request-rate quotas (empty: none).
    pub quota_rates: crate::quotas::QuotaRates,
    /// Pending snapshots per account (`None`: unlimited).
    pub pending_snapshot_limit: Option<usize>,
}

/// Default region named in the ARNs of encryption keys.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where the master key comes from, and how new snapshots are encrypted.
#[derive(Clone, Default)]
pub struct EncryptionSettings {
    /// A file holding the master key (`--master-key-file`), private to the server's user.
    pub master_key_file: Option<PathBuf>,
    /// The master key itself (`STRATA_MASTER_KEY`); loses to the file.
    pub master_key: Option<String>,
    /// Encrypt every new snapshot (`--encrypt-by-default`).
    pub by_default: bool,
    /// The region of key ARNs (`--region`; default us-east-1).
    pub region: Option<String>,
}

impl std::fmt::Debug for EncryptionSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptionSettings")
            .field("master_key_file", &self.master_key_file)
            .field("master_key", &self.master_key.as_ref().map(|_| "(set)"))
            .field("by_default", &self.by_default)
            .field("region", &self.region)
            .finish()
    }
}

/// Bounds on connections and on the time and memory requests in flight may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request head must be complete this long after the connection opened or after the
    /// head's first byte arrived; else the connection is closed.
    pub header_read_timeout: Duration,
    /// A keep-alive connection idle (no request in flight, nothing sent either way) this
    /// long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; beyond, a connection is answered 503
    /// `RequestThrottledException` and closed.
    pub max_connections: usize,
    /// A whole request body must arrive within this long (in addition to the stall timer).
    pub body_deadline: Duration,
    /// Bytes of request bodies and block reads in flight; beyond, requests are answered
    /// `RequestThrottledException` at once.
    pub body_budget_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_deadline: DEFAULT_BODY_DEADLINE,
            body_budget_bytes: DEFAULT_BODY_BUDGET_BYTES,
        }
    }
}

impl Settings {
    /// Settings with every default, for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        Ok(Self {
            listen: DEFAULT_LISTEN.parse()?,
            data_dir: data_dir.into(),
            root_account: AccountId::parse(DEFAULT_ROOT_ACCOUNT).map_err(anyhow::Error::msg)?,
            root_key_from_env: None,
            extra_keys: Vec::new(),
            body_timeout: DEFAULT_BODY_TIMEOUT,
            gc_interval: Some(DEFAULT_GC_INTERVAL),
            gc_grace: DEFAULT_GC_GRACE,
            scrub_interval: Some(DEFAULT_SCRUB_INTERVAL),
            scrub_rate_mib: DEFAULT_SCRUB_RATE_MIB,
            limits: Limits::default(),
            metadata: crate::stores::MetadataBackend::Embedded,
            chunks: crate::stores::ChunkOptions::default(),
            metrics_listen: None,
            tls: None,
            config_file: None,
            encryption: EncryptionSettings::default(),
            quota_rates: crate::quotas::QuotaRates::default(),
            pending_snapshot_limit: None,
        })
    }

    /// The defaults with `file` applied: what `strata serve --config FILE` starts from
    /// before its flags.
    pub fn from_config_file(file: &ConfigFile) -> anyhow::Result<Self> {
        let data_dir = file
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Self::new(data_dir)?.with_config_file(file)
    }

    /// Apply a config file on top of these settings.
    pub fn with_config_file(mut self, file: &ConfigFile) -> anyhow::Result<Self> {
        self.extra_keys.extend(file.access_keys()?);
        if let Some(listen) = file.listen {
            self.listen = listen;
        }
        if let Some(data_dir) = &file.data_dir {
            anyhow::ensure!(
                !data_dir.as_os_str().is_empty(),
                "data_dir must not be empty"
            );
            self.data_dir = data_dir.clone();
        }
        if let Some(metrics_listen) = file.metrics_listen {
            self.metrics_listen = Some(metrics_listen);
        }
        if let Some(id) = &file.root_account_id {
            self.root_account =
                AccountId::parse(id).map_err(|e| anyhow::anyhow!("root_account_id: {e}"))?;
        }
        match (&file.root_access_key_id, &file.root_secret_access_key) {
            (Some(id), Some(secret)) => {
                anyhow::ensure!(
                    !id.is_empty() && !secret.is_empty(),
                    "root_access_key_id and root_secret_access_key must not be empty"
                );
                self.root_key_from_env = Some((id.clone(), secret.clone()));
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "root_access_key_id and root_secret_access_key go together: set both or neither"
            ),
        }
        if let Some(secs) = file.body_timeout_secs {
            anyhow::ensure!(secs > 0, "body_timeout_secs must be positive");
            self.body_timeout = Duration::from_secs(secs);
        }
        if let Some(secs) = file.gc_interval_secs {
            self.gc_interval = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(secs) = file.gc_grace_secs {
            self.gc_grace = Duration::from_secs(secs);
        }
        if let Some(secs) = file.scrub_interval_secs {
            self.scrub_interval = (secs > 0).then(|| Duration::from_secs(secs));
        }
        if let Some(mib) = file.scrub_rate_mib {
            self.scrub_rate_mib = mib;
        }
        let positive = |name: &str, secs: Option<u64>| -> anyhow::Result<Option<Duration>> {
            secs.map(|secs| {
                anyhow::ensure!(secs > 0, "{name} must be positive");
                Ok(Duration::from_secs(secs))
            })
            .transpose()
        };
        let limits = &mut self.limits;
        if let Some(timeout) = positive("header_read_timeout_secs", file.header_read_timeout_secs)?
        {
            limits.header_read_timeout = timeout;
        }
        if let Some(timeout) = positive("idle_timeout_secs", file.idle_timeout_secs)? {
            limits.idle_timeout = timeout;
        }
        if let Some(deadline) = positive("body_deadline_secs", file.body_deadline_secs)? {
            limits.body_deadline = deadline;
        }
        if let Some(max) = file.max_connections {
            anyhow::ensure!(max > 0, "max_connections must be positive");
            limits.max_connections = max;
        }
        let chunks = &mut self.chunks;
        for (setting, from_file) in [
            (&mut chunks.chunks, &file.chunks),
            (&mut chunks.s3_endpoint, &file.s3_endpoint),
            (&mut chunks.s3_region, &file.s3_region),
            (&mut chunks.s3_access_key_id, &file.s3_access_key_id),
            (&mut chunks.s3_secret_access_key, &file.s3_secret_access_key),
        ] {
            if from_file.is_some() {
                setting.clone_from(from_file);
            }
        }
        if let Some(metadata) = &file.metadata {
            self.metadata = crate::stores::MetadataBackend::parse(metadata)?;
        }
        match (&file.tls_cert, &file.tls_key) {
            (Some(cert), Some(key)) => {
                self.tls = Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                });
            }
            (None, None) => {}
            _ => anyhow::bail!("tls_cert and tls_key go together: set both or neither"),
        }
        if let Some(quotas) = &file.quotas {
            self.quota_rates = crate::quotas::QuotaRates::new(
                quotas.requests_per_second_per_account.clone(),
                quotas.requests_per_second_per_snapshot.clone(),
            )?;
            if let Some(limit) = quotas.pending_snapshots_per_account {
                anyhow::ensure!(
                    limit > 0,
                    "quotas.pending_snapshots_per_account must be positive"
                );
                self.pending_snapshot_limit = Some(limit);
            }
        }
        if let Some(path) = &file.master_key_file {
            self.encryption.master_key_file = Some(path.clone());
        }
        if let Some(on) = file.encrypt_by_default {
            self.encryption.by_default = on;
        }
        if let Some(region) = &file.region {
            anyhow::ensure!(!region.is_empty(), "region must not be empty");
            self.encryption.region = Some(region.clone());
        }
        if let Some(mib) = file.body_budget_mib {
            // One block must fit, or no PutSnapshotBlock could ever run.
            anyhow::ensure!(mib >= 1, "body_budget_mib must be at least 1");
            limits.body_budget_bytes = mib.saturating_mul(1 << 20);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_declare_accounts_and_refuse_typos() {
        let file: ConfigFile = toml::from_str(
            r#"
            body_timeout_secs = 5
            header_read_timeout_secs = 7
            idle_timeout_secs = 30
            max_connections = 10
            body_deadline_secs = 40
            body_budget_mib = 3
            [[accounts]]
            id = "111122223333"
            [[accounts.keys]]
            access_key_id = "AKIAOTHER"
            secret_access_key = "secret"
            "#,
        )
        .expect("valid config");
        let settings = Settings::new("/tmp/x")
            .and_then(|s| s.with_config_file(&file))
            .expect("settings");
        assert_eq!(settings.extra_keys.len(), 1);
        assert_eq!(settings.extra_keys[0].account.as_str(), "111122223333");
        assert_eq!(settings.body_timeout, Duration::from_secs(5));
        assert_eq!(
            settings.limits,
            Limits {
                header_read_timeout: Duration::from_secs(7),
                idle_timeout: Duration::from_secs(30),
                max_connections: 10,
                body_deadline: Duration::from_secs(40),
                body_budget_bytes: 3 << 20,
            }
        );
        for zero in [
            "idle_timeout_secs = 0",
            "max_connections = 0",
            "body_budget_mib = 0",
        ] {
            let file: ConfigFile = toml::from_str(zero).expect("parses");
            let settings = Settings::new("/tmp/x").expect("defaults");
            assert!(settings.with_config_file(&file).is_err(), "{zero}");
        }

        assert!(toml::from_str::<ConfigFile>("body_timeout = 5").is_err());
        let half_tls: ConfigFile = toml::from_str("tls_cert = \"c.pem\"").expect("parses");
        assert!(
            Settings::new("/tmp/x")
                .expect("defaults")
                .with_config_file(&half_tls)
                .is_err()
        );
        let tls: ConfigFile =
            toml::from_str("tls_cert = \"c.pem\"\ntls_key = \"k.pem\"").expect("parses");
        let settings = Settings::new("/tmp/x")
            .expect("defaults")
            .with_config_file(&tls);
        assert_eq!(
            settings.expect("tls").tls.map(|files| files.key),
            Some(PathBuf::from("k.pem"))
        );
        let scoped: ConfigFile = toml::from_str(
            "[[accounts]]\nid = \"111122223333\"\n[[accounts.keys]]\naccess_key_id = \"A\"\n\
             secret_access_key = \"S\"\nallow = [\"GetSnapshotBlock\"]",
        )
        .expect("parses");
        assert!(scoped.holds_secrets());
        let keys = scoped.access_keys().expect("valid scope");
        assert!(
            keys[0]
                .allow
                .as_ref()
                .is_some_and(|a| a.contains("GetSnapshotBlock"))
        );
        let typo: ConfigFile = toml::from_str(
            "[[accounts]]\nid = \"111122223333\"\n[[accounts.keys]]\naccess_key_id = \"A\"\n\
             secret_access_key = \"S\"\nallow = [\"GetSnapshotBlocks\"]",
        )
        .expect("parses");
        let error = typo.access_keys().expect_err("unknown operation");
        assert!(
            format!("{error:#}").contains("GetSnapshotBlocks"),
            "{error:#}"
        );
        let bad_account: ConfigFile =
            toml::from_str("[[accounts]]\nid = \"12\"\nkeys = []").expect("parses");
        assert!(bad_account.access_keys().is_err());
    }
}
