//! [`FsChunkStore`]: chunk bytes as files named by their digest.
//!
//! # Layout (format version 1)
//! `ROOT/ab/cd/abcd…(64 hex digits)` holds the raw 524,288 bytes of the chunk whose
//! SHA-256 is `abcd…`. The two fan-out levels keep directories small (65,536 leaves).
//! `ROOT/tmp/` holds files being written; whatever is left there after a crash is
//! garbage and is removed at open.
//!
//! # Concurrency with garbage collection
//! [`FsChunkStore::put`] of an existing chunk refreshes its modification time, and
//! [`ChunkStore::delete_if_idle`] deletes only a chunk not refreshed since its cutoff; both
//! hold the same per-digest lock (striped), so a re-upload either refreshes the file before
//! the check or finds it gone and writes it again.
//!
//! # Durability
//! A chunk is written to `tmp/`, fsynced, renamed into place, and the directory that
//! received it is fsynced, so a file under its final name is always complete and survives
//! power loss. Newly created fan-out directories are fsynced into their parents too.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use strata_core::ports::{ChunkStore, StoreError, StoredChunk};
use strata_types::ChunkDigest;

/// Chunks as files under one directory.
///
/// Cheap to clone: clones share the directory and the temp-name counter.
#[derive(Debug, Clone)]
pub struct FsChunkStore {
    root: Arc<PathBuf>,
    temp_counter: Arc<AtomicU64>,
    locks: Arc<[Mutex<()>; LOCK_STRIPES]>,
}

/// Per-digest locks, striped by the digest's first byte.
const LOCK_STRIPES: usize = 256;

impl FsChunkStore {
    /// Open (creating if needed) a chunk directory and clear leftovers of interrupted writes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        let temp = root.join("tmp");
        if temp.exists() {
            fs::remove_dir_all(&temp).map_err(|e| io_error("clear", &temp, &e))?;
        }
        fs::create_dir_all(&temp).map_err(|e| io_error("create", &temp, &e))?;
        sync_dir(&root)?;
        Ok(Self {
            root: Arc::new(root),
            temp_counter: Arc::new(AtomicU64::new(0)),
            locks: Arc::new(std::array::from_fn(|_| Mutex::new(()))),
        })
    }

    /// Where the chunk `digest` lives.
    pub fn chunk_path(&self, digest: &ChunkDigest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join(&hex[0..2]).join(&hex[2..4]).join(hex)
    }

    fn lock(&self, digest: &ChunkDigest) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned stripe only means another thread panicked while holding it; the
        // file system state it guards is still consistent.
        self.locks[usize::from(digest.0[0])]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn put_blocking(&self, digest: ChunkDigest, data: &[u8]) -> Result<(), StoreError> {
        let target = self.chunk_path(&digest);
        let _guard = self.lock(&digest);
        match File::options().write(true).open(&target) {
            Ok(existing) => {
                // Already stored: refresh its modification time so GC sees it as in use.
                return existing
                    .set_modified(std::time::SystemTime::now())
                    .map_err(|e| io_error("refresh", &target, &e));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("open", &target, &e)),
        }
        let dir = target.parent().unwrap_or(self.root.as_path()).to_path_buf();
        ensure_dir(&dir)?;
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let temp = self
            .root
            .join("tmp")
            .join(format!("{}.{n}", digest.to_hex()));
        let mut file = create_for(&temp, data).map_err(|e| io_error("create", &temp, &e))?;
        // The modification time is set from the fine-grained clock: the kernel stamps new
        // files with a coarse one that can lag the GC cutoff by a tick (see `strata_core::gc`).
        file.write_all(data)
            .and_then(|()| file.set_modified(SystemTime::now()))
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write", &temp, &e))?;
        drop(file);
        fs::rename(&temp, &target).map_err(|e| io_error("rename", &target, &e))?;
        sync_dir(&dir)
    }

    fn get_blocking(&self, digest: ChunkDigest) -> Result<Option<Bytes>, StoreError> {
        let path = self.chunk_path(&digest);
        match fs::read(&path) {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, &e)),
        }
    }

    fn list_blocking(&self) -> Result<Vec<StoredChunk>, StoreError> {
        let mut chunks = Vec::new();
        for first in read_dir(&self.root)? {
            let name = first.file_name();
            if name.len() != 2 || !first.path().is_dir() {
                continue; // `tmp/` and anything foreign
            }
            for second in read_dir(&first.path())? {
                for entry in read_dir(&second.path())? {
                    let Some(digest) = entry
                        .file_name()
                        .to_str()
                        .and_then(|n| ChunkDigest::from_hex(n).ok())
                    else {
                        continue;
                    };
                    let path = entry.path();
                    let metadata = entry.metadata().map_err(|e| io_error("stat", &path, &e))?;
                    chunks.push(StoredChunk {
                        digest,
                        size: metadata.len(),
                        modified: metadata
                            .modified()
                            .map_err(|e| io_error("stat", &path, &e))?,
                    });
                }
            }
        }
        Ok(chunks)
    }

    fn delete_if_idle_blocking(
        &self,
        digest: ChunkDigest,
        idle_since: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        let path = self.chunk_path(&digest);
        let _guard = self.lock(&digest);
        let metadata = match fs::metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("stat", &path, &e)),
        };
        let modified = metadata
            .modified()
            .map_err(|e| io_error("stat", &path, &e))?;
        if modified >= idle_since {
            return Ok(None);
        }
        fs::remove_file(&path).map_err(|e| io_error("delete", &path, &e))?;
        Ok(Some(metadata.len()))
    }
}

/// Create `path` for writing `data`: with `O_DIRECT` (no copy into the page cache) when
/// the buffer allows it and the file system supports it, else buffered.
fn create_for(path: &Path, data: &[u8]) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        const ALIGN: usize = strata_core::checksum::BUFFER_ALIGN;
        if data.as_ptr().align_offset(ALIGN) == 0 && data.len().is_multiple_of(ALIGN) {
            let mut direct = options.clone();
            direct.custom_flags(libc::O_DIRECT);
            match direct.open(path) {
                Ok(file) => return Ok(file),
                // tmpfs and some others refuse O_DIRECT: write through the page cache there.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    options.open(path)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    fs::read_dir(dir)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io_error("list", dir, &e))
}

impl ChunkStore for FsChunkStore {
    async fn put(&self, digest: ChunkDigest, data: Bytes) -> Result<(), StoreError> {
        let store = self.clone();
        blocking(move || store.put_blocking(digest, &data)).await
    }

    async fn get(&self, digest: ChunkDigest) -> Result<Option<Bytes>, StoreError> {
        let store = self.clone();
        blocking(move || store.get_blocking(digest)).await
    }

    async fn list(&self) -> Result<Vec<StoredChunk>, StoreError> {
        let store = self.clone();
        blocking(move || store.list_blocking()).await
    }

    async fn delete_if_idle(
        &self,
        digest: ChunkDigest,
        idle_since: SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        let store = self.clone();
        blocking(move || store.delete_if_idle_blocking(digest, idle_since)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Backend(format!("chunk worker failed: {e}")))?
}

/// Create `dir` (and its parent) if missing, making each creation durable.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.is_dir() {
            ensure_dir(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => sync_dir(parent)?,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create", dir, &e)),
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, &e))
}

fn io_error(action: &str, path: &Path, error: &std::io::Error) -> StoreError {
    StoreError::Backend(format!("cannot {action} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_round_trip_and_writes_are_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsChunkStore::open(dir.path().join("chunks")).expect("open");
        let data = Bytes::from(vec![9u8; 1000]);
        let digest = ChunkDigest::of(&data);
        assert_eq!(store.get(digest).await.expect("get"), None);
        store.put(digest, data.clone()).await.expect("put");
        store.put(digest, data.clone()).await.expect("put again");
        assert_eq!(store.get(digest).await.expect("get"), Some(data));
        assert!(store.chunk_path(&digest).is_file());
        let leftovers = fs::read_dir(dir.path().join("chunks/tmp"))
            .expect("tmp")
            .count();
        assert_eq!(leftovers, 0);
    }

    #[tokio::test]
    async fn deletion_spares_chunks_refreshed_since_the_cutoff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FsChunkStore::open(dir.path().join("chunks")).expect("open");
        let data = Bytes::from(vec![3u8; 100]);
        let digest = ChunkDigest::of(&data);
        store.put(digest, data.clone()).await.expect("put");
        let listed = store.list().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].digest, listed[0].size), (digest, 100));
        let before_refresh = SystemTime::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        store.put(digest, data.clone()).await.expect("refresh");
        assert_eq!(
            store
                .delete_if_idle(digest, before_refresh)
                .await
                .expect("delete"),
            None
        );
        assert!(store.get(digest).await.expect("get").is_some());
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        assert_eq!(
            store.delete_if_idle(digest, later).await.expect("delete"),
            Some(100)
        );
        assert_eq!(store.get(digest).await.expect("get"), None);
        assert_eq!(
            store.delete_if_idle(digest, later).await.expect("delete"),
            None
        );
        // A put after the deletion stores it again.
        store.put(digest, data.clone()).await.expect("put again");
        assert_eq!(store.get(digest).await.expect("get"), Some(data));
    }

    #[tokio::test]
    async fn interrupted_writes_are_cleared_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("chunks");
        drop(FsChunkStore::open(&root).expect("open"));
        fs::write(root.join("tmp/half-written"), b"partial").expect("write");
        drop(FsChunkStore::open(&root).expect("reopen"));
        assert_eq!(fs::read_dir(root.join("tmp")).expect("tmp").count(), 0);
    }
}
