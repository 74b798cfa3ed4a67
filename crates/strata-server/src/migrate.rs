//! `strata migrate`: copy the store of an embedded data directory into other stores
//! (PostgreSQL and an S3 bucket, for a cluster) — the snapshots with
//! [`strata_core::migrate`], and the cluster secrets, so the root keys and the tokens of
//! the data directory keep working on every node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use strata_core::migrate::{MigrateOptions, Migration};
pub use strata_core::migrate::{MigrationReport, Outcome, SnapshotReport};
use strata_core::ports::MetadataStore;

use crate::app::{ROOT_CREDENTIALS_SECRET, TOKEN_KEY_SECRET, token_key};
use crate::credentials::ROOT_CREDENTIALS_FILE;
use crate::stores::{ChunkBackend, MetadataBackend, Stores};

/// Where from, where to.
#[derive(Debug, Clone)]
pub struct MigrateSettings {
    /// The embedded data directory to copy (the server using it stopped).
    pub from_data_dir: PathBuf,
    /// The target's metadata store.
    pub metadata: MetadataBackend,
    /// The target's chunk store.
    pub chunks: ChunkBackend,
    /// The target's own data directory, for a target with an embedded part.
    pub data_dir: Option<PathBuf>,
    /// Blocks copied at once.
    pub concurrency: usize,
}

/// What happened to one cluster secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOutcome {
    /// The target holds the data directory's (stored by this run or an earlier one).
    Copied,
    /// The target keeps its own (an existing cluster): the data directory's is not used.
    TargetKeepsItsOwn,
    /// The data directory has none.
    Absent,
}

/// A finished migration.
#[derive(Debug)]
pub struct Migrated {
    /// Per snapshot.
    pub report: MigrationReport,
    /// The token key.
    pub token_key: SecretOutcome,
    /// The root account's keys.
    pub root_credentials: SecretOutcome,
}

/// Copy the data directory's store into the target; `progress` sees each snapshot done.
pub async fn migrate(
    settings: &MigrateSettings,
    progress: impl FnMut(&SnapshotReport),
) -> anyhow::Result<Migrated> {
    let from = &settings.from_data_dir;
    anyhow::ensure!(
        from.join("metadata.redb").is_file(),
        "{} is not a Strata data directory (it has no metadata.redb)",
        from.display()
    );
    let embedded_part = settings.metadata == MetadataBackend::Embedded
        || matches!(settings.chunks, ChunkBackend::Embedded);
    let target_dir = match (&settings.data_dir, embedded_part) {
        (Some(dir), _) => dir.clone(),
        (None, false) => PathBuf::from("unused: the target has no embedded part"),
        (None, true) => anyhow::bail!(
            "the target keeps metadata or chunks in a data directory: give it with --data-dir"
        ),
    };
    if embedded_part && same_dir(from, &target_dir) {
        anyhow::bail!("--data-dir is the directory being copied: give another one");
    }
    let source = Stores::open(from, &MetadataBackend::Embedded, &ChunkBackend::Embedded)
        .await
        .with_context(|| {
            format!(
                "cannot open {} (is a server still running on it? stop it first)",
                from.display()
            )
        })?;
    let target = Stores::open(&target_dir, &settings.metadata, &settings.chunks).await?;

    let key = token_key(&source.metadata, from).await?;
    let token_key = copy_secret(&target.metadata, TOKEN_KEY_SECRET, Some(key.to_vec())).await?;
    let root = match std::fs::read(from.join(ROOT_CREDENTIALS_FILE)) {
        // The stored secret if there is one (it is the file's, which seeds it).
        Ok(file) => Some(
            source
                .metadata
                .secret(ROOT_CREDENTIALS_SECRET, file)
                .await
                .context("cannot read the data directory's root credentials")?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read {}", from.join(ROOT_CREDENTIALS_FILE).display())
            });
        }
    };
    let root_credentials = copy_secret(&target.metadata, ROOT_CREDENTIALS_SECRET, root).await?;

    let migration = Migration::new(
        (Arc::new(source.metadata), Arc::new(source.chunks)),
        (Arc::new(target.metadata), Arc::new(target.chunks)),
        MigrateOptions {
            concurrency: settings.concurrency,
        },
    );
    let report = migration
        .run(progress)
        .await
        .context("cannot list the data directory's snapshots")?;
    Ok(Migrated {
        report,
        token_key,
        root_credentials,
    })
}

/// Offer the source's secret to the target: the first store of a secret wins, so an
/// existing cluster keeps its own.
async fn copy_secret(
    target: &impl MetadataStore,
    name: &str,
    value: Option<Vec<u8>>,
) -> anyhow::Result<SecretOutcome> {
    let Some(value) = value else {
        return Ok(SecretOutcome::Absent);
    };
    let held = target
        .secret(name, value.clone())
        .await
        .with_context(|| format!("cannot store the {name} secret in the target"))?;
    Ok(if held == value {
        SecretOutcome::Copied
    } else {
        SecretOutcome::TargetKeepsItsOwn
    })
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}
