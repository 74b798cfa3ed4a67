//! `POST /_strata/v1/backup?dir=ABSOLUTE_PATH`: an online, consistent copy of an embedded
//! data directory into a new directory on the server's host, taken by the running server
//! (it holds the redb files open, so no other process can read them consistently).
//!
//! # Why the copy is consistent
//! The copy must never hold metadata that names a chunk the copied chunk store lacks.
//! 1. **Nothing is deleted while it runs.** The backup holds the cluster's GC lease
//!    ([`GC_LEASE`], under its own holder name, so not even this node's collector can
//!    renew it) and renews it every [`LEASE_RENEWAL`]; GC deletes chunks and nodes only
//!    under that lease, so no segment byte is punched and no node removed until the copy
//!    is done. A collection running when the backup starts is waited for.
//! 2. **Metadata first, in one read transaction** (`RedbMetadataStore::backup_to`): a
//!    point in time of every table, block maps, pending writes and registry alike.
//! 3. **Then the chunk index, in one read transaction** (`FsChunkStore::backup_to`).
//!    A chunk is in the index before any write record names it (durability rule 1 of
//!    `ARCHITECTURE.md`), and nothing leaves the index meanwhile (1.), so the index of
//!    this later moment holds every chunk the metadata names; chunks stored in between
//!    are unreferenced extras, collected like any young garbage.
//! 4. **Then the segment bytes that index names**, read after it was taken: segments are
//!    append-only and nothing is punched (1.), so those bytes are still there; appends
//!    after the index copy are simply not copied.
//!
//! The private files of the data directory come along (0600): `root-credentials`,
//! `master.key` (without it encrypted snapshots cannot be read), the first format's
//! `token-key`, and `chunks/lost+found/`. Restoring is starting a server on the copy.
//!
//! Only the embedded stores are backed up: PostgreSQL and S3 have backups of their own
//! (`docs/deployment.md`), and the answer says so.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use strata_core::ports::{MetadataStore, StoreError};
use strata_core::service::{GC_LEASE, LEASE_TTL};
use strata_store_embedded::{FsChunkStore, RedbMetadataStore, copy_private_file, sync_dir};
use strata_wire::admin::BackupSummary;
use strata_wire::{ErrorCode, WireError};

use crate::app::AppState;
use crate::error::ApiError;
use crate::stores::{Chunks, Metadata};

/// How often the backup renews the GC lease (as a collection does).
const LEASE_RENEWAL: Duration = Duration::from_secs(5);
/// How long a backup waits for a running collection to finish before it gives up.
const LEASE_WAIT: Duration = Duration::from_secs(120);
/// How often it tries for the lease meanwhile.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// The files of a data directory's top level that a backup copies, if present.
const PRIVATE_FILES: &[&str] = &["root-credentials", "master.key", "token-key"];

/// What a backup copies from: the embedded stores of the data directory, or why there is
/// nothing this call can copy.
#[derive(Clone)]
pub enum BackupSource {
    /// The embedded stores (clones of the ones the service uses) and their directory.
    Embedded {
        /// The data directory (for its private files).
        data_dir: PathBuf,
        /// `metadata.redb`.
        metadata: RedbMetadataStore,
        /// `chunks/`.
        chunks: FsChunkStore,
    },
    /// Not embedded: the reason, for the error message.
    Unsupported(&'static str),
}

impl BackupSource {
    /// The source of a server on `metadata` and `chunks` in `data_dir`.
    pub fn of(metadata: &Metadata, chunks: &Chunks, data_dir: &Path) -> Self {
        match (metadata, chunks) {
            (Metadata::Embedded(metadata), Chunks::Embedded(chunks)) => BackupSource::Embedded {
                data_dir: data_dir.to_owned(),
                metadata: metadata.clone(),
                chunks: chunks.clone(),
            },
            (Metadata::Postgres(_), _) => BackupSource::Unsupported(
                "the metadata is in PostgreSQL: back it up with PostgreSQL's tools (PITR, \
                 docs/deployment.md), the chunks with their store's",
            ),
            (Metadata::Embedded(_), Chunks::S3(_)) => BackupSource::Unsupported(
                "the chunks are in S3: back the bucket up with its own tools, and \
                 metadata.redb with the server stopped",
            ),
        }
    }
}

/// Check `dir` and make it the backup's directory: absolute, outside the data directory,
/// and new or empty; created (or set) 0700.
pub fn prepare_target(dir: &str, data_dir: &Path) -> Result<PathBuf, ApiError> {
    let path = PathBuf::from(dir);
    if dir.is_empty() || !path.is_absolute() {
        return Err(ApiError::invalid_parameter(format!(
            "dir must be an absolute path on the server's machine, not {dir:?}"
        )));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(ApiError::invalid_parameter(format!(
            "dir must not contain `..`: {dir:?}"
        )));
    }
    if let (Ok(data), Some(parent)) = (data_dir.canonicalize(), path.parent())
        && let Ok(parent) = parent.canonicalize()
        && parent.starts_with(&data)
    {
        return Err(ApiError::invalid_parameter(format!(
            "dir {dir:?} is inside the data directory {}: put the backup elsewhere",
            data.display()
        )));
    }
    match std::fs::read_dir(&path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ApiError::invalid_parameter(format!(
                    "{dir} exists and is not empty: a backup goes into a new or empty directory"
                )));
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| failed(&format!("cannot make {dir} private: {e}")))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| {
                    ApiError::invalid_parameter(format!(
                        "cannot create {dir} (its parent directory must exist): {e}"
                    ))
                })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(ApiError::invalid_parameter(format!(
                "{dir} exists and is not a directory"
            )));
        }
        Err(e) => {
            return Err(ApiError::invalid_parameter(format!(
                "cannot read {dir}: {e}"
            )));
        }
    }
    Ok(path)
}

/// Take the backup into `dir` (see the module docs).
pub async fn run_backup(state: &AppState, dir: &str) -> Result<BackupSummary, ApiError> {
    let (data_dir, metadata, chunks) = match &state.backup_source {
        BackupSource::Embedded {
            data_dir,
            metadata,
            chunks,
        } => (data_dir.clone(), metadata.clone(), chunks.clone()),
        BackupSource::Unsupported(why) => {
            return Err(ApiError::invalid_parameter(format!(
                "backup copies embedded stores only; {why}"
            )));
        }
    };
    let target = prepare_target(dir, &data_dir)?;
    let started = Instant::now();
    // Its own holder name: under the node's name, this node's collector would renew the
    // backup's lease and collect during the copy.
    let holder = format!("{}/backup", state.node_id);
    let lease = state.service.metadata();
    acquire(lease, &holder, LEASE_WAIT).await?;
    let lost = AtomicBool::new(false);
    let heartbeat = async {
        loop {
            tokio::time::sleep(LEASE_RENEWAL).await;
            match lease.acquire_lease(GC_LEASE, &holder, LEASE_TTL).await {
                Ok(true) => {}
                Ok(false) => {
                    lost.store(true, Ordering::SeqCst);
                    return std::future::pending::<std::convert::Infallible>().await;
                }
                Err(error) => tracing::warn!(%error, "cannot renew the GC lease; trying again"),
            }
        }
    };
    let copy_target = target.clone();
    let copy =
        tokio::task::spawn_blocking(move || copy_all(&data_dir, &metadata, &chunks, &copy_target));
    let copied = tokio::select! {
        copied = copy => copied,
        never = heartbeat => match never {},
    };
    if let Err(error) = lease.release_lease(GC_LEASE, &holder).await {
        tracing::warn!(%error, "cannot release the GC lease; it expires by itself");
    }
    let incomplete = |why: String| {
        tracing::error!(dir = %target.display(), "backup failed: {why}");
        // The path first: the message is cut at 256 characters.
        failed(&format!(
            "incomplete backup in {} (delete it): {why}",
            target.display()
        ))
    };
    let mut summary = match copied {
        Ok(Ok(summary)) => summary,
        Ok(Err(error)) => return Err(incomplete(error.to_string())),
        Err(error) => return Err(incomplete(format!("the copying thread failed: {error}"))),
    };
    if lost.load(Ordering::SeqCst) {
        return Err(incomplete(
            "the GC lease was lost while copying, so a collection may have run".into(),
        ));
    }
    summary.dir = target.display().to_string();
    summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        dir = %summary.dir,
        snapshots = summary.snapshots,
        chunks = summary.chunks,
        bytes = summary.bytes,
        duration_ms = summary.duration_ms,
        "backup written"
    );
    Ok(summary)
}

/// Take the GC lease as `holder`, waiting up to `wait` (in the service: [`LEASE_WAIT`])
/// for a running collection.
async fn acquire(metadata: &Metadata, holder: &str, wait: Duration) -> Result<(), ApiError> {
    let deadline = Instant::now() + wait;
    loop {
        match metadata.acquire_lease(GC_LEASE, holder, LEASE_TTL).await {
            Ok(true) => return Ok(()),
            Ok(false) if Instant::now() < deadline => tokio::time::sleep(LEASE_POLL).await,
            Ok(false) => {
                return Err(ApiError::invalid_parameter(format!(
                    "a garbage collection has held the GC lease for over {} s; try again when it is done",
                    wait.as_secs()
                )));
            }
            Err(error) => return Err(failed(&format!("cannot take the GC lease: {error}"))),
        }
    }
}

/// The copy itself, in the order the module docs argue for.
fn copy_all(
    data_dir: &Path,
    metadata: &RedbMetadataStore,
    chunks: &FsChunkStore,
    target: &Path,
) -> Result<BackupSummary, StoreError> {
    let meta = metadata.backup_to(&target.join("metadata.redb"))?;
    let copied = chunks.backup_to(&target.join("chunks"))?;
    let mut files = 0;
    let mut file_bytes = 0;
    for name in PRIVATE_FILES {
        let source = data_dir.join(name);
        if source.is_file() {
            file_bytes += copy_private_file(&source, &target.join(name))?;
            files += 1;
        }
    }
    sync_dir(target)?;
    Ok(BackupSummary {
        dir: String::new(),
        snapshots: meta.snapshots,
        completed_snapshots: meta.completed_snapshots,
        chunks: copied.chunks,
        chunk_bytes: copied.chunk_bytes,
        bytes: meta.bytes
            + copied.index_bytes
            + copied.segment_bytes
            + copied.lost_found_bytes
            + file_bytes,
        private_files: files,
        duration_ms: 0,
    })
}

/// An InternalServerException with `message` (the caller is the root account: it is the
/// operator, and needs the file and the error to act on).
fn failed(message: &str) -> ApiError {
    ApiError(WireError::new(
        ErrorCode::InternalServerException,
        None,
        message.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backup takes the GC lease before it copies: while a collection holds it the
    /// backup waits and then refuses, and while the backup holds it no collection gets it.
    #[tokio::test]
    async fn the_backup_and_a_collection_exclude_each_other_through_the_gc_lease() {
        let data = tempfile::tempdir().expect("tempdir");
        let metadata = Metadata::Embedded(
            RedbMetadataStore::open(&data.path().join("metadata.redb")).expect("open"),
        );
        assert!(
            metadata
                .acquire_lease(GC_LEASE, "node-a", LEASE_TTL)
                .await
                .expect("lease")
        );
        let error = acquire(&metadata, "node-b/backup", Duration::from_millis(300))
            .await
            .expect_err("a collection holds the lease");
        assert_eq!(error.0.code, ErrorCode::ValidationException);
        assert!(message(&error).contains("GC lease"), "{}", message(&error));
        metadata
            .release_lease(GC_LEASE, "node-a")
            .await
            .expect("release");
        acquire(&metadata, "node-b/backup", Duration::from_millis(300))
            .await
            .expect("the lease is free now");
        assert!(
            !metadata
                .acquire_lease(GC_LEASE, "node-a", LEASE_TTL)
                .await
                .expect("lease"),
            "no collection while the backup holds the lease"
        );
    }

    fn message(error: &ApiError) -> String {
        format!("{:?}", error.0)
    }

    #[test]
    fn a_relative_or_dotted_path_is_refused() {
        let data = tempfile::tempdir().expect("tempdir");
        for dir in ["", "backup", "./backup", "/tmp/../tmp/strata-backup-x"] {
            let error = prepare_target(dir, data.path()).expect_err(dir);
            assert_eq!(error.0.code, ErrorCode::ValidationException, "{dir}");
        }
        assert!(!Path::new("backup").exists());
    }

    #[test]
    fn an_existing_non_empty_directory_is_refused_and_left_alone() {
        let data = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("keep"), b"mine").expect("write");
        let error =
            prepare_target(outside.path().to_str().expect("utf-8"), data.path()).expect_err("x");
        assert!(message(&error).contains("not empty"), "{}", message(&error));
        assert_eq!(
            std::fs::read(outside.path().join("keep")).expect("read"),
            b"mine"
        );
    }

    #[test]
    fn a_file_or_a_dir_inside_the_data_dir_is_refused() {
        let data = tempfile::tempdir().expect("tempdir");
        let file = data.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        let not_dir = outside.path().join("file");
        std::fs::write(&not_dir, b"x").expect("write");
        assert!(prepare_target(not_dir.to_str().expect("utf-8"), data.path()).is_err());
        let inside = data.path().join("backup");
        let error =
            prepare_target(inside.to_str().expect("utf-8"), data.path()).expect_err("inside");
        assert!(message(&error).contains("inside the data directory"));
        assert!(!inside.exists());
    }

    #[test]
    fn a_new_or_empty_directory_is_made_private() {
        let data = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let new = outside.path().join("new");
        let made = prepare_target(new.to_str().expect("utf-8"), data.path()).expect("new");
        assert_eq!(made, new);
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&new), 0o700);
        let empty = outside.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        prepare_target(empty.to_str().expect("utf-8"), data.path()).expect("empty");
        assert_eq!(mode(&empty), 0o700);
        // A missing parent is not created: the client names a directory whose parent exists.
        let orphan = outside.path().join("a/b");
        assert!(prepare_target(orphan.to_str().expect("utf-8"), data.path()).is_err());
    }
}
