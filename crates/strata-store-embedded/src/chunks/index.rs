//! The chunk index: digest → where the chunk's bytes are and their at-rest checksum, in
//! `chunks/index.redb`, written by one committer thread with group commit.
//!
//! A new chunk is acknowledged only after it was written, its segment `fdatasync`ed and its
//! index entry committed. The committer takes every request queued at the moment, gives
//! their chunks consecutive slots (it is the only thread that allocates), writes them (one
//! `pwritev` per run of adjacent slots: one submission for many chunks),
//! syncs each segment written to once, commits all their entries in one transaction (one
//! fsync of the index), and only then answers: under concurrent uploads N chunk writes
//! cost a few system calls, one `fdatasync` per segment and one index commit, not N of each.
//! Removals queued in the same group are committed first, in their own transaction, so
//! that a failing insert (a full disk) cannot fail the removals that would free space.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use strata_core::ports::StoreError;
use strata_types::ChunkDigest;
use tokio::sync::oneshot;

use super::segments::{Segment, Segments, slot_len};
use crate::group_commit::GroupCommitThread;

/// digest → [`Location`], encoded by [`Location::encode`].
const CHUNKS: TableDefinition<[u8; 32], [u8; 32]> = TableDefinition::new("chunks");

/// Where a chunk is stored, and what it must read back as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Location {
    /// The segment file.
    pub(super) segment: u32,
    /// Its byte offset there (a multiple of 4 KiB).
    pub(super) offset: u64,
    /// The chunk's length in bytes.
    pub(super) len: u32,
    /// XXH3-64 of the chunk's bytes, computed from the bytes whose SHA-256 the writer
    /// verified: a read is checked against it instead of re-computing the SHA-256.
    pub(super) checksum: u64,
    /// When the chunk was stored (nanoseconds since the Unix epoch, wall clock).
    pub(super) stored_ns: u64,
}

impl Location {
    fn encode(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out[0..4].copy_from_slice(&self.segment.to_le_bytes());
        out[4..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..16].copy_from_slice(&self.offset.to_le_bytes());
        out[16..24].copy_from_slice(&self.checksum.to_le_bytes());
        out[24..32].copy_from_slice(&self.stored_ns.to_le_bytes());
        out
    }

    fn decode(raw: &[u8; 32]) -> Self {
        let u32_at =
            |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let u64_at = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&raw[at..at + 8]);
            u64::from_le_bytes(bytes)
        };
        Self {
            segment: u32_at(0),
            len: u32_at(4),
            offset: u64_at(8),
            checksum: u64_at(16),
            stored_ns: u64_at(24),
        }
    }

    /// The bytes it occupies in its segment.
    pub(super) fn slot(&self) -> u64 {
        slot_len(u64::from(self.len))
    }

    /// When it was stored.
    pub(super) fn stored_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.stored_ns)
    }
}

/// Nanoseconds since the Unix epoch, now.
pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The index database and its committer thread. Dropping it stops the thread (after its
/// current group) and closes the database.
pub(super) struct Index {
    db: Arc<Database>,
    committer: GroupCommitThread<Request>,
}

enum Request {
    /// Give `data` a slot, write it there, sync it, then index it under `digest`.
    Insert {
        digest: ChunkDigest,
        data: Bytes,
        /// XXH3-64 of `data`, computed by the caller.
        checksum: u64,
        done: Done,
    },
    /// Remove these entries.
    Remove {
        digests: Vec<ChunkDigest>,
        done: Done,
    },
}

/// Where the committer sends a request's outcome: a thread waiting for it, or a task.
enum Done {
    Blocking(mpsc::SyncSender<Result<(), StoreError>>),
    Task(oneshot::Sender<Result<(), StoreError>>),
}

impl Done {
    fn send(self, outcome: Result<(), StoreError>) {
        // A dropped receiver means the caller went away; nothing to tell it.
        let _ = match self {
            Done::Blocking(sender) => sender.send(outcome).ok(),
            Done::Task(sender) => sender.send(outcome).ok(),
        };
    }
}

/// The memory redb may use to cache the chunk index (its default is 1 GiB): bounded, as
/// the metadata's is; the kernel's page cache keeps the rest close.
const INDEX_CACHE_BYTES: usize = 32 << 20;

impl Index {
    /// Open the index at `path`; its committer places new chunks in `segments`.
    pub(super) fn open(path: &Path, segments: Arc<Segments>) -> Result<Self, StoreError> {
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(INDEX_CACHE_BYTES)
                .create(path)
                .map_err(backend)?,
        );
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(CHUNKS).map_err(backend)?;
        txn.commit().map_err(backend)?;
        let committer = GroupCommitThread::spawn(
            "strata-chunk-committer",
            Arc::clone(&db),
            move |db, group| commit(db, &segments, group),
        )?;
        Ok(Self { db, committer })
    }

    /// How many groups the committer has taken so far.
    pub(super) fn groups(&self) -> u64 {
        self.committer.groups()
    }

    /// Where `digest` is stored, if it is.
    pub(super) fn get(&self, digest: &ChunkDigest) -> Result<Option<Location>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CHUNKS).map_err(backend)?;
        Ok(table
            .get(digest.0)
            .map_err(backend)?
            .map(|raw| Location::decode(&raw.value())))
    }

    /// Every entry, in digest order.
    pub(super) fn all(&self) -> Result<Vec<(ChunkDigest, Location)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CHUNKS).map_err(backend)?;
        table
            .iter()
            .map_err(backend)?
            .map(|entry| {
                let (key, value) = entry.map_err(backend)?;
                Ok((ChunkDigest(key.value()), Location::decode(&value.value())))
            })
            .collect()
    }

    /// Copy the index, as of one moment, into the new database `target`; returns the
    /// entries of that moment (from the same read transaction), whose bytes the caller
    /// copies next.
    pub(super) fn backup_to(
        &self,
        target: &Path,
    ) -> Result<Vec<(ChunkDigest, Location)>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        crate::backup::copy_database("chunks/index.redb", &txn, target, |copy| {
            copy.table(CHUNKS).map(drop)
        })?;
        let table = txn.open_table(CHUNKS).map_err(backend)?;
        table
            .iter()
            .map_err(backend)?
            .map(|entry| {
                let (key, value) = entry.map_err(backend)?;
                Ok((ChunkDigest(key.value()), Location::decode(&value.value())))
            })
            .collect()
    }

    /// Up to `limit` entries after `after` (from the first when `None`), in digest order.
    pub(super) fn page(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> Result<Vec<(ChunkDigest, Location)>, StoreError> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(CHUNKS).map_err(backend)?;
        let start = after.map_or(Bound::Unbounded, |d| Bound::Excluded(d.0));
        table
            .range::<[u8; 32]>((start, Bound::Unbounded))
            .map_err(backend)?
            .take(limit)
            .map(|entry| {
                let (key, value) = entry.map_err(backend)?;
                Ok((ChunkDigest(key.value()), Location::decode(&value.value())))
            })
            .collect()
    }

    /// Store `data` (whose XXH3-64 is `checksum`) under `digest`: resolves once the bytes
    /// and the entry are durable (shared with whatever else is queued). The caller makes
    /// sure the digest is not stored already.
    pub(super) async fn insert(
        &self,
        digest: ChunkDigest,
        data: Bytes,
        checksum: u64,
    ) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.committer.send(Request::Insert {
            digest,
            data,
            checksum,
            done: Done::Task(done),
        })?;
        answer.await.map_err(|_| dropped())?
    }

    /// [`Index::insert`], waiting on this thread (for callers outside the async runtime).
    pub(super) fn insert_blocking(
        &self,
        digest: ChunkDigest,
        data: Bytes,
        checksum: u64,
    ) -> Result<(), StoreError> {
        self.call(|done| Request::Insert {
            digest,
            data,
            checksum,
            done,
        })
    }

    /// Remove the entries of `digests`, durably (waiting on this thread).
    pub(super) fn remove(&self, digests: Vec<ChunkDigest>) -> Result<(), StoreError> {
        if digests.is_empty() {
            return Ok(());
        }
        self.call(|done| Request::Remove { digests, done })
    }

    fn call(&self, request: impl FnOnce(Done) -> Request) -> Result<(), StoreError> {
        let (done, answer) = mpsc::sync_channel(1);
        self.committer.send(request(Done::Blocking(done)))?;
        answer.recv().map_err(|_| dropped())?
    }
}

fn dropped() -> StoreError {
    StoreError::Backend("the chunk committer dropped a request".into())
}

/// One group of the committer: the removals in a transaction of their own, answered;
/// then place, write, sync, commit and answer the inserts.
///
/// Removals go first and alone because they are how GC frees space: sharing a
/// transaction with inserts, they failed whenever an insert did (a write failing with
/// ENOSPC), so a full disk could never be emptied. Reordering them is safe: an insert and
/// a removal of the same digest are never queued together (both are sent under the
/// digest's lock stripe and answered before it is released).
fn commit(db: &Database, segments: &Segments, group: Vec<Request>) {
    let (removals, inserts): (Vec<Request>, Vec<Request>) = group
        .into_iter()
        .partition(|request| matches!(request, Request::Remove { .. }));
    if !removals.is_empty() {
        let outcome = remove_entries(db, &removals);
        answer(removals, outcome, "chunk removals");
    }
    if !inserts.is_empty() {
        let outcome = commit_group(db, segments, &inserts);
        answer(inserts, outcome, "chunk group commit");
    }
}

fn answer(requests: Vec<Request>, outcome: Result<(), StoreError>, what: &str) {
    if let Err(error) = &outcome {
        tracing::error!(%error, "{what} failed");
    }
    for request in requests {
        match request {
            Request::Insert { done, .. } | Request::Remove { done, .. } => {
                done.send(outcome.clone());
            }
        }
    }
}

/// Remove the entries of every `Remove` of `group`, in one transaction.
fn remove_entries(db: &Database, group: &[Request]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(backend)?;
    {
        let mut table = txn.open_table(CHUNKS).map_err(backend)?;
        for request in group {
            if let Request::Remove { digests, .. } = request {
                for digest in digests {
                    table.remove(digest.0).map_err(backend)?;
                }
            }
        }
    }
    txn.commit().map_err(backend)
}

/// Give the group's new chunks consecutive slots (the committer is the only thread that
/// allocates, so a group's slots are adjacent), write them with one `pwritev` per run of
/// adjacent slots, sync every segment written to, then commit their index entries in one
/// transaction.
fn commit_group(db: &Database, segments: &Segments, group: &[Request]) -> Result<(), StoreError> {
    let stored_ns = now_ns();
    let mut placed: Vec<(Arc<Segment>, ChunkDigest, Location, &[u8])> = Vec::new();
    for request in group {
        if let Request::Insert {
            digest,
            data,
            checksum,
            ..
        } = request
        {
            let len = u32::try_from(data.len())
                .map_err(|_| StoreError::Backend(format!("a chunk of {} bytes", data.len())))?;
            let (segment, offset) = segments
                .allocate(u64::from(len))
                .map_err(|e| StoreError::io("allocate a chunk slot", e))?;
            let location = Location {
                segment: segment.id,
                offset,
                len,
                checksum: *checksum,
                stored_ns,
            };
            placed.push((segment, *digest, location, &data[..]));
        }
    }
    let mut written: HashMap<u32, &Segment> = HashMap::new();
    let mut start = 0;
    while start < placed.len() {
        let (segment, _, first, _) = &placed[start];
        // A run: adjacent slots of one segment, every chunk filling its slot exactly.
        let mut end = start + 1;
        while end < placed.len()
            && placed[end].0.id == segment.id
            && placed[end - 1].2.offset + placed[end - 1].2.slot() == placed[end].2.offset
            && u64::from(placed[end - 1].2.len) == placed[end - 1].2.slot()
        {
            end += 1;
        }
        let parts: Vec<&[u8]> = placed[start..end].iter().map(|p| p.3).collect();
        segment
            .write_all_vectored_at(first.offset, &parts)
            // The I/O error itself, not its text: a full disk stays recognisable as one.
            .map_err(|e| StoreError::io(format!("write {}", segment.path().display()), e))?;
        written.entry(segment.id).or_insert(segment);
        start = end;
    }
    for segment in written.values() {
        segment
            .sync()
            .map_err(|e| StoreError::io(format!("sync {}", segment.path().display()), e))?;
    }
    let txn = db.begin_write().map_err(backend)?;
    {
        let mut table = txn.open_table(CHUNKS).map_err(backend)?;
        for (_, digest, location, _) in &placed {
            table.insert(digest.0, location.encode()).map_err(backend)?;
        }
    }
    txn.commit().map_err(backend)
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("chunk index: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_round_trip() {
        let location = Location {
            segment: 0xdead_beef,
            offset: 0x0123_4567_89ab_c000,
            len: 524_288,
            checksum: u64::MAX - 3,
            stored_ns: 1_764_000_000_123_456_789,
        };
        assert_eq!(Location::decode(&location.encode()), location);
        assert_eq!(location.slot(), 524_288);
    }

    /// A group whose insert fails (here a write fails with ENOSPC) still commits its
    /// removals: GC frees space exactly when the disk is full.
    #[test]
    fn a_failed_insert_does_not_fail_a_removal_in_its_group() {
        use std::sync::atomic::Ordering::SeqCst;
        let dir = tempfile::tempdir().expect("tempdir");
        let segments = Arc::new(Segments::new(dir.path().to_path_buf(), 1 << 30));
        let index =
            Index::open(&dir.path().join("index.redb"), Arc::clone(&segments)).expect("open");
        let chunk = |byte: u8| {
            let data = Bytes::from(vec![byte; 4096]);
            (
                ChunkDigest::of(&data),
                xxhash_rust::xxh3::xxh3_64(&data),
                data,
            )
        };
        let (old, old_checksum, old_data) = chunk(1);
        index
            .insert_blocking(old, old_data, old_checksum)
            .expect("insert");

        segments.faults.write_errno.store(libc::ENOSPC, SeqCst);
        let (new, new_checksum, new_data) = chunk(2);
        let (insert_done, inserted) = mpsc::sync_channel(1);
        let (remove_done, removed) = mpsc::sync_channel(1);
        // One group, the way the committer would take them if queued together.
        commit(
            &index.db,
            &segments,
            vec![
                Request::Insert {
                    digest: new,
                    data: new_data,
                    checksum: new_checksum,
                    done: Done::Blocking(insert_done),
                },
                Request::Remove {
                    digests: vec![old],
                    done: Done::Blocking(remove_done),
                },
            ],
        );
        let insert = inserted.recv().expect("answered");
        assert!(
            matches!(&insert, Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::StorageFull),
            "{insert:?}"
        );
        let removal = removed.recv().expect("answered");
        assert!(removal.is_ok(), "{removal:?}");
        assert_eq!(index.get(&old).expect("get"), None, "removed durably");
        assert_eq!(index.get(&new).expect("get"), None);
    }
}
