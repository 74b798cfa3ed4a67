//! [`FsChunkStore`]: chunk bytes appended to segment files, found through an index.
//!
//! # Layout (format version 2)
//! | path | what |
//! |---|---|
//! | `ROOT/segments/0000002a.seg` | append-only segment files; each chunk at a 4 KiB-aligned offset |
//! | `ROOT/index.redb` | digest → (segment, offset, length, XXH3-64 checksum, store time) |
//!
//! Format version 1 (one file per chunk under `ROOT/ab/cd/`) is imported at open.
//! `docs/adr/0003-chunk-segments.md` says why segments and not files.
//!
//! # Writes and durability
//! A new chunk is handed to the index's committer, which gives a whole group of chunks
//! consecutive slots in the active segment, writes them (with `O_DIRECT` from their 4 KiB-
//! aligned buffers, no copy through the page cache; one `pwritev` per run of adjacent
//! slots), `fdatasync`s the segments once and commits their index entries in one
//! transaction before any of them is acknowledged. An entry therefore never points at
//! bytes that are not durable; bytes without an entry (a crash between the write and the
//! commit) are given back at the next open. The putting task awaits the committer's answer
//! directly: no thread is parked per put.
//!
//! # Reads
//! Every read is checked against the XXH3-64 checksum recorded when the chunk was stored,
//! which was computed from the very bytes whose SHA-256 the writer verified. A mismatch is
//! [`StoreError::Corrupt`]: wrong bytes are never returned. (XXH3 runs at memory speed; the
//! SHA-256 it replaces was a third of the server's CPU on reads.) A media error (`EIO`)
//! reading the bytes is damage too; other read errors are transient and change nothing. A
//! damaged chunk's entry is dropped, so uploading the same content again stores it afresh
//! and heals every snapshot that refers to it.
//!
//! # Concurrency
//! Which chunks are wanted, and when one may be deleted, is decided by the metadata store
//! (its chunk registry, ADR 0004); this store only keeps bytes. A put of a digest that is
//! indexed already writes nothing (its bytes were verified when stored, and a copy found
//! damaged is dropped from the index at once); puts of one digest take the digest's lock
//! (striped), so concurrent uploads of the same content store it once. A deletion removes
//! the index entry durably first and only then punches the hole, so an entry never points
//! at a hole.

mod index;
mod recovery;
mod segments;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use strata_core::ports::{ChunkStore, StoreError, StoredChunk};
use strata_types::ChunkDigest;
use tokio::sync::{Mutex, MutexGuard};
use xxhash_rust::xxh3::xxh3_64;

use index::{Index, Location};
use recovery::io_error;
use segments::Segments;

/// Per-digest locks, striped by the digest's first bits. Many stripes, because a put holds
/// its stripe until its group commit is durable. They are async-aware locks: a put holds
/// its stripe across the `await` of its group commit, on the calling task, with no thread
/// parked for it; blocking threads (forgetting a damaged chunk) take them with
/// `blocking_lock`.
const LOCK_STRIPES: usize = 4096;

/// Tunables of [`FsChunkStore`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkStoreOptions {
    /// A segment receives new chunks until it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for ChunkStoreOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
        }
    }
}

/// Where a chunk's bytes are on disk (for tools and tests that inspect the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The segment file.
    pub path: PathBuf,
    /// The offset of the first byte in it.
    pub offset: u64,
    /// The chunk's length.
    pub len: u64,
}

/// What [`FsChunkStore::backup_to`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkBackup {
    /// Chunks in the copied index.
    pub chunks: u64,
    /// Their bytes.
    pub chunk_bytes: u64,
    /// The copied index's file size.
    pub index_bytes: u64,
    /// Segment bytes written (the chunks and the slot padding between adjacent ones).
    pub segment_bytes: u64,
    /// Bytes of the files in `lost+found/`.
    pub lost_found_bytes: u64,
}

/// Chunks in segment files under one directory. Cheap to clone.
#[derive(Clone)]
pub struct FsChunkStore {
    inner: Arc<Inner>,
}

struct Inner {
    segments_dir: PathBuf,
    /// Shared with the index's committer, the only one that allocates slots.
    segments: Arc<Segments>,
    index: Index,
    stripes: Box<[Mutex<()>]>,
}

impl std::fmt::Debug for FsChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsChunkStore")
            .field("segments", &self.inner.segments_dir)
            .finish_non_exhaustive()
    }
}

impl FsChunkStore {
    /// Open (creating if needed) a chunk directory with the default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        Self::open_with(root, ChunkStoreOptions::default())
    }

    /// Open (creating if needed) a chunk directory: reclaim the space of interrupted writes
    /// and import chunks of format version 1.
    pub fn open_with(
        root: impl Into<PathBuf>,
        options: ChunkStoreOptions,
    ) -> Result<Self, StoreError> {
        let root = root.into();
        let segments_dir = root.join("segments");
        let index_path = root.join("index.redb");
        // Before anything is created: a missing index must not be replaced by an empty one.
        recovery::require_index(&index_path, &segments_dir)?;
        std::fs::create_dir_all(&segments_dir)
            .map_err(|e| io_error("create", &segments_dir, &e))?;
        let segments = Arc::new(Segments::new(
            segments_dir.clone(),
            options.segment_bytes.max(1),
        ));
        let index = Index::open(&index_path, Arc::clone(&segments))?;
        // The names of the index and of the segment directory must be durable before any
        // segment is: a segment whose index vanished in a crash would refuse the open.
        sync_dir(&root)?;
        let reclaimed = recovery::reclaim(
            &segments_dir,
            &root.join("lost+found"),
            &segments,
            &index.all()?,
        )?;
        segments.start_at(reclaimed.next_segment);
        if reclaimed != recovery::Reclaimed::default() {
            tracing::info!(?reclaimed, "chunk store opened");
        }
        let store = Self {
            inner: Arc::new(Inner {
                segments_dir,
                segments,
                index,
                stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            }),
        };
        store.import_legacy(&root)?;
        Ok(store)
    }

    /// How many groups (one `fdatasync` and index commit each) the chunk committer has
    /// taken so far: with concurrent puts, fewer than the chunks stored.
    pub fn commit_groups(&self) -> u64 {
        self.inner.index.groups()
    }

    /// Every stored chunk and its size, in digest order.
    pub fn inventory(&self) -> Result<Vec<(ChunkDigest, u64)>, StoreError> {
        Ok(self
            .inner
            .index
            .all()?
            .into_iter()
            .map(|(digest, location)| (digest, u64::from(location.len)))
            .collect())
    }

    /// Write a copy of this chunk directory into `target` (a new directory; its parent
    /// exists): the index as of one moment, then exactly the segment bytes its entries name,
    /// sparse (`crate::backup`), then `lost+found/`. Puts go on meanwhile; chunks stored
    /// after the index was copied are not in the copy. Nothing may delete chunks while it
    /// runs (the caller holds the GC lease): a deletion punches the bytes an entry of the
    /// copied index still names.
    pub fn backup_to(&self, target: &Path) -> Result<ChunkBackup, StoreError> {
        use crate::backup::{RangesByFile, copy_dir_files, copy_ranges, create_private_dir};
        create_private_dir(target)?;
        let entries = self.inner.index.backup_to(&target.join("index.redb"))?;
        let segments_dir = target.join("segments");
        create_private_dir(&segments_dir)?;
        let mut by_segment = RangesByFile::new();
        let mut chunk_bytes = 0;
        for (_, location) in &entries {
            chunk_bytes += u64::from(location.len);
            by_segment
                .entry(location.segment)
                .or_default()
                .push((location.offset, location.offset + u64::from(location.len)));
        }
        let mut segment_bytes = 0;
        for (id, ranges) in by_segment {
            let name = segments::file_name(id);
            segment_bytes += copy_ranges(
                &self.inner.segments_dir.join(&name),
                &segments_dir.join(&name),
                ranges,
                segments::SLOT_ALIGN,
            )?;
        }
        sync_dir(&segments_dir)?;
        let lost_found = copy_dir_files(
            &root_of(&self.inner.segments_dir).join("lost+found"),
            &target.join("lost+found"),
        )?;
        sync_dir(target)?;
        let index = target.join("index.redb");
        let index_bytes = std::fs::metadata(&index)
            .map_err(|e| io_error("inspect", &index, &e))?
            .len();
        Ok(ChunkBackup {
            chunks: entries.len() as u64,
            index_bytes,
            chunk_bytes,
            segment_bytes,
            lost_found_bytes: lost_found,
        })
    }

    /// Where the chunk `digest` is stored, if it is.
    pub fn locate(&self, digest: &ChunkDigest) -> Result<Option<ChunkLocation>, StoreError> {
        Ok(self.inner.index.get(digest)?.map(|location| ChunkLocation {
            path: self
                .inner
                .segments_dir
                .join(segments::file_name(location.segment)),
            offset: location.offset,
            len: u64::from(location.len),
        }))
    }

    /// Move the chunk files of format version 1 into segments (each verified against its
    /// name first), then remove them.
    fn import_legacy(&self, root: &Path) -> Result<(), StoreError> {
        let legacy = recovery::legacy_chunks(root)?;
        if !legacy.is_empty() {
            tracing::info!(chunks = legacy.len(), "importing chunk files of format 1");
        }
        for (digest, path) in legacy {
            let data = std::fs::read(&path).map_err(|e| io_error("read", &path, &e))?;
            if ChunkDigest::of(&data) != digest {
                // Kept where it is, so nothing is lost; reads of it keep failing as before.
                tracing::error!(path = %path.display(), "a chunk file of format 1 does not match its name");
                continue;
            }
            // Nothing else uses the store while it opens: no stripe to take.
            if self.inner.index.get(&digest)?.is_none() {
                let checksum = xxh3_64(&data);
                self.inner
                    .index
                    .insert_blocking(digest, Bytes::from(data), checksum)?;
            }
            std::fs::remove_file(&path).map_err(|e| io_error("remove", &path, &e))?;
        }
        recovery::remove_legacy_dirs(root)
    }

    /// The stripe of `digest`, waiting on this thread: for blocking threads only (it
    /// panics on a runtime thread, where [`Self::stripe_async`] is the one to use).
    fn stripe(&self, digest: &ChunkDigest) -> MutexGuard<'_, ()> {
        self.inner.stripes[stripe_of(digest)].blocking_lock()
    }

    async fn stripe_async(&self, digest: &ChunkDigest) -> MutexGuard<'_, ()> {
        let stripe = &self.inner.stripes[stripe_of(digest)];
        // Free nearly always: take it without going through the runtime's scheduling.
        match stripe.try_lock() {
            Ok(guard) => guard,
            Err(_) => stripe.lock().await,
        }
    }

    fn get_blocking(&self, digest: ChunkDigest) -> Result<Option<Bytes>, StoreError> {
        let Some(location) = self.inner.index.get(&digest)? else {
            return Ok(None);
        };
        match self.read_verified(&digest, &location) {
            Err(StoreError::Corrupt(why)) => {
                self.forget_damaged(digest, &location, &why);
                Err(StoreError::Corrupt(why))
            }
            other => other.map(Some),
        }
    }

    /// The bytes at `location`, checked against its XXH3.
    fn read_verified(
        &self,
        digest: &ChunkDigest,
        location: &Location,
    ) -> Result<Bytes, StoreError> {
        let segment = self
            .inner
            .segments
            .get(location.segment)
            .map_err(|e| io_error("open", &self.inner.segments_dir, &e))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "chunk {digest}: segment {} is missing",
                    segments::file_name(location.segment)
                ))
            })?;
        let data = segment
            .read_at(location.offset, location.len as usize)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => StoreError::Corrupt(format!(
                    "chunk {digest}: {} ends before the chunk",
                    segment.path().display()
                )),
                // The medium cannot return these bytes: damage, like a failed checksum.
                // Any other error (EMFILE, ENOMEM, EAGAIN…) is of the moment and says
                // nothing about the bytes, so it must not get the chunk forgotten.
                _ if e.raw_os_error() == Some(libc::EIO) => StoreError::Corrupt(format!(
                    "chunk {digest}: media error reading {}+{}: {e}",
                    segment.path().display(),
                    location.offset
                )),
                _ => io_error("read", segment.path(), &e),
            })?;
        if xxh3_64(&data) != location.checksum {
            return Err(StoreError::Corrupt(format!(
                "chunk {digest} at {}+{} failed its checksum",
                segment.path().display(),
                location.offset
            )));
        }
        Ok(data)
    }

    /// Drop the index entry of a chunk whose bytes at `location` are damaged, so that the
    /// next put of the same content stores it again (repairing every snapshot that refers
    /// to it) instead of finding it indexed. Only if the entry still points there: a put
    /// may have stored the content again meanwhile. The slot is reclaimed at the next
    /// open, like any slot without an entry. A failure only leaves the chunk damaged.
    fn forget_damaged(&self, digest: ChunkDigest, location: &Location, why: &str) {
        let _stripe = self.stripe(&digest);
        let forgotten = match self.inner.index.get(&digest) {
            Ok(Some(current)) if current == *location => self.inner.index.remove(vec![digest]),
            Ok(_) => return,
            Err(e) => Err(e),
        };
        match forgotten {
            Ok(()) => {
                tracing::error!(chunk = %digest, "damaged chunk forgotten ({why}); the next upload of its content repairs it");
            }
            Err(error) => {
                tracing::error!(chunk = %digest, %error, "cannot forget a damaged chunk ({why})");
            }
        }
    }

    fn list_blocking(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        Ok(self
            .inner
            .index
            .page(after, limit)?
            .into_iter()
            .map(|(digest, location)| StoredChunk {
                digest,
                size: u64::from(location.len),
                written: location.stored_at(),
            })
            .collect())
    }

    fn delete_blocking(&self, digests: &[ChunkDigest]) -> Result<u64, StoreError> {
        let mut victims: Vec<(ChunkDigest, Location)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for digest in digests {
            if !seen.insert(*digest) {
                continue;
            }
            if let Some(location) = self.inner.index.get(digest)? {
                victims.push((*digest, location));
            }
        }
        self.inner
            .index
            .remove(victims.iter().map(|(digest, _)| *digest).collect())?;
        let mut freed = 0;
        for (digest, location) in &victims {
            freed += u64::from(location.len);
            // The entry is gone durably: the slot is garbage whatever happens next (a
            // failure here only leaves space for the next open to reclaim).
            if let Err(e) = self.punch(location) {
                tracing::warn!(chunk = %digest, "cannot free a deleted chunk's space yet: {e}");
            }
        }
        Ok(freed)
    }

    fn punch(&self, location: &Location) -> std::io::Result<()> {
        if let Some(segment) = self.inner.segments.get(location.segment)? {
            segment.punch(location.offset, location.slot())?;
        }
        Ok(())
    }
}

/// The chunk directory of its `segments/` directory.
fn root_of(segments_dir: &Path) -> &Path {
    segments_dir.parent().unwrap_or(segments_dir)
}

fn stripe_of(digest: &ChunkDigest) -> usize {
    usize::from(u16::from_le_bytes([digest.0[0], digest.0[1]])) % LOCK_STRIPES
}

impl ChunkStore for FsChunkStore {
    async fn put(&self, digest: ChunkDigest, data: Bytes) -> Result<(), StoreError> {
        // Held until the chunk is durable and indexed: a concurrent put of the same content
        // waits here, then finds it stored.
        let _stripe = self.stripe_async(&digest).await;
        // An index lookup, on the calling task (microseconds, less than a hop to a blocking
        // thread). An indexed copy is intact as far as anyone knows (see the module docs).
        if self.inner.index.get(&digest)?.is_some() {
            return Ok(());
        }
        let checksum = xxh3_64(&data);
        // If this future is dropped while waiting (the client went away), the committer
        // still stores the chunk; a put of the same content meanwhile may store a second
        // copy, whose entry wins, and the next open reclaims the first one's slot.
        self.inner.index.insert(digest, data, checksum).await
    }

    async fn get(&self, digest: ChunkDigest) -> Result<Option<Bytes>, StoreError> {
        let store = self.clone();
        blocking(move || store.get_blocking(digest)).await
    }

    async fn delete(&self, digests: Vec<ChunkDigest>) -> Result<u64, StoreError> {
        let store = self.clone();
        blocking(move || store.delete_blocking(&digests)).await
    }

    async fn list(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        let store = self.clone();
        blocking(move || store.list_blocking(after, limit)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Backend(format!("chunk worker failed: {e}")))?
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("sync", dir, &e))
}

#[cfg(test)]
mod tests;
