//! Where the master key of encryption at rest comes from (ADR 0005).
//!
//! In order: `--master-key-file` (a file private to the server's user), the
//! `STRATA_MASTER_KEY` environment variable, or — for an embedded metadata store only —
//! `master.key` in the data directory, generated on first start. A cluster node without
//! one serves unencrypted snapshots only: nodes must share their master key, which
//! Strata never stores in the metadata database beside the keys it wraps.

use std::path::{Path, PathBuf};

use anyhow::Context;
use strata_core::encryption::MasterKey;
use strata_core::service::EncryptionConfig;

use crate::config::{DEFAULT_REGION, Settings};
use crate::credentials::{check_private, write_private};
use crate::stores::MetadataBackend;

/// The master key file of an embedded store's data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where this server's master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// A file (`--master-key-file`, or the data directory's `master.key`).
    File(PathBuf),
    /// `STRATA_MASTER_KEY`.
    Environment,
    /// Generated now into the data directory's `master.key`.
    Generated(PathBuf),
}

/// The service's encryption settings, or `None` when the server has no master key.
pub fn encryption_config(
    settings: &Settings,
) -> anyhow::Result<Option<(EncryptionConfig, MasterKeySource)>> {
    let encryption = &settings.encryption;
    let region = encryption
        .region
        .clone()
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let found = if let Some(path) = &encryption.master_key_file {
        Some((read_master_key(path)?, MasterKeySource::File(path.clone())))
    } else if let Some(text) = &encryption.master_key {
        let master = MasterKey::parse(text).context("STRATA_MASTER_KEY")?;
        Some((master, MasterKeySource::Environment))
    } else if settings.metadata == MetadataBackend::Embedded {
        Some(data_dir_master_key(&settings.data_dir)?)
    } else {
        None
    };
    if found.is_none() && encryption.by_default {
        anyhow::bail!(
            "encryption by default needs a master key: give --master-key-file FILE or \
             STRATA_MASTER_KEY (nodes of a cluster share one)"
        );
    }
    Ok(found.map(|(master, source)| {
        (
            EncryptionConfig {
                master,
                region,
                by_default: encryption.by_default,
            },
            source,
        )
    }))
}

fn read_master_key(path: &Path) -> anyhow::Result<MasterKey> {
    check_private(path, "the master key file")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the master key file {}", path.display()))?;
    MasterKey::parse(&text).with_context(|| format!("the master key file {}", path.display()))
}

/// The data directory's master key, generated on first start.
fn data_dir_master_key(data_dir: &Path) -> anyhow::Result<(MasterKey, MasterKeySource)> {
    let path = data_dir.join(MASTER_KEY_FILE);
    if path.exists() {
        return Ok((read_master_key(&path)?, MasterKeySource::File(path)));
    }
    let master = MasterKey::generate();
    write_private(&path, &format!("{}\n", master.to_text()))?;
    Ok((master, MasterKeySource::Generated(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_embedded_store_keeps_a_generated_master_key_and_a_cluster_needs_one_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings::new(dir.path()).expect("settings");
        let (first, source) = encryption_config(&settings)
            .expect("config")
            .expect("embedded stores get one");
        assert!(matches!(source, MasterKeySource::Generated(_)));
        let (again, source) = encryption_config(&settings).expect("config").expect("kept");
        assert_eq!(
            source,
            MasterKeySource::File(dir.path().join(MASTER_KEY_FILE))
        );
        assert_eq!(first.master.to_text(), again.master.to_text());
        assert_eq!(first.region, "us-east-1");

        let mut cluster = settings.clone();
        cluster.metadata = MetadataBackend::parse("postgres://u@localhost/db").expect("url");
        assert!(encryption_config(&cluster).expect("config").is_none());
        cluster.encryption.by_default = true;
        let error = encryption_config(&cluster).expect_err("needs a key");
        assert!(
            format!("{error:#}").contains("--master-key-file"),
            "{error:#}"
        );
        cluster.encryption.master_key = Some(first.master.to_text());
        let (given, source) = encryption_config(&cluster).expect("config").expect("given");
        assert_eq!(source, MasterKeySource::Environment);
        assert_eq!(given.master.to_text(), first.master.to_text());
        cluster.encryption.master_key = Some("short".into());
        assert!(encryption_config(&cluster).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_master_key_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master");
        std::fs::write(&path, MasterKey::generate().to_text()).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut settings = Settings::new(dir.path()).expect("settings");
        settings.encryption.master_key_file = Some(path.clone());
        let error = encryption_config(&settings).expect_err("readable");
        assert!(format!("{error:#}").contains("chmod 600"), "{error:#}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(encryption_config(&settings).expect("config").is_some());
    }
}
