//! [`RedbMetadataStore`]: snapshot metadata in one redb database file.
//!
//! # Tables (format version 1)
//! | table | key | value |
//! |---|---|---|
//! | `snapshots` | snapshot id | `SnapshotRecord` as JSON |
//! | `client_tokens` | (owner account, client token) | snapshot id |
//! | `pending_blocks` | (snapshot id, block index) | chunk digest (32 bytes) |
//! | `nodes` | node hash (32 bytes) | stamp of the last write (u64 LE) ‖ encoded block-map node |
//! | `meta` | `"last_stamp"` | the last stamp issued (u64) |
//! | `meta` | `"chunk_registry"` | 1 once the chunk registry was filled from the chunk index |
//! | `secrets` | name (`"token-key"`, ...) | the cluster secret's bytes |
//! | `chunks` | chunk digest (32 bytes) | (size, stamp of the last write record that stored or re-used it) |
//! | `condemned_chunks` | chunk digest (32 bytes) | `()`: a tombstone of a chunk being deleted |
//! | `pending_checksums` | (snapshot id, block index) | the [`BlockWrite::checksum`] of the index's final write, if it carried one (32 bytes) |
//! | `kms_keys` | key id | `KeyRecord` as JSON text |
//! | `staged_roots` | (snapshot id, node hash) | `()`: a subtree stored ahead of the snapshot's seal |
//! | `pending_purges` | snapshot id | `()`: a sealed or deleted snapshot whose pending writes are still being dropped |
//!
//! `pending_checksums` and `kms_keys` came with encryption at rest, the last two with
//! the bounded-memory CompleteSnapshot. They are tables of their own, not new
//! fields of existing values, so a file written before them opens unchanged: every table
//! is created on open if missing, and a missing row means what it meant before (no
//! checksum, no key).
//!
//! # Stamps
//! The store issues [`Stamp`]s: one per write group (stored when the group wrote nodes
//! or chunk registrations), one per GC view,
//! each `max(last + 1, wall-clock ms)`. The wall-clock floor keeps them above the node
//! write times of the first format (Unix ms, in the same place of the node value) and
//! above the stamps of an earlier run even if `meta` was not written. The writer holds
//! the stamp lock from taking its group's stamp until the group has committed, and a GC
//! view takes its stamp and opens its read transaction under the same lock: so every node
//! write the view can see is stamped before the view's stamp, and every other one after.
//!
//! # Group commit
//! All writes go through one writer thread. It takes every request queued at the moment,
//! applies them in one redb transaction, commits it with `Durability::Immediate` (one
//! fsync for the whole group) and only then answers each request. Under concurrent
//! uploads this turns N fsyncs into one without weakening durable-on-ack. A request whose
//! precondition fails (snapshot not pending, sequence moved) changes nothing and gets its
//! error; the rest of the group still commits.
//!
//! Reads open their own read transaction on the calling (blocking) thread and never wait
//! for the writer.
//!
//! # Big seals and deletions
//! A seal of a snapshot with more than [`PURGE_IN_SEAL`] writes, and every deletion, do
//! not drop the pending writes in their own transaction (millions of rows would stall
//! every other write behind it): they queue the snapshot in `pending_purges`, and the
//! writes are dropped afterwards, [`PURGE_BATCH`] rows per write group, by a task the
//! store starts (and, after a crash, when the store is opened). Nothing reads them
//! meanwhile: pages of pending writes are empty for a snapshot that is gone or
//! completed, and GC keeps their chunks only as long as the rows are there.
//!
//! # Announcements and condemned chunks
//! Announcements live in memory ([`Announcements`]), with an in-memory copy of the
//! tombstones behind the same lock, so an announcement and a condemnation are atomic with
//! respect to each other. The writer marks a condemnation in memory before its group
//! commits (lifting it again if the group fails) and lifts a finalized one only after the
//! group committed: the memory never says "not condemned" while a tombstone is stored.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, TableDefinition};
use strata_core::announcements::Announcements;
use strata_core::block_map::{Node, NodeHash, NodeSource};
use strata_core::encryption::KeyRecord;
use strata_core::leases::LocalLeases;
use strata_core::ports::{
    Announced, AnnouncementId, BlockWrite, CreateOutcome, GcView, MetadataStore, PendingWrites,
    RecordBlockError, RecordChange, RegisteredChunk, Seal, SealError, Stamp, StoreError,
};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};
use tokio::sync::oneshot;

use crate::group_commit::GroupCommitThread;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const CLIENT_TOKENS: TableDefinition<(&str, &str), &str> = TableDefinition::new("client_tokens");
const PENDING_BLOCKS: TableDefinition<(&str, u32), [u8; 32]> =
    TableDefinition::new("pending_blocks");
/// Keyed like `pending_blocks`, and emptied with it (see [`Pending`]).
const PENDING_CHECKSUMS: TableDefinition<(&str, u32), [u8; 32]> =
    TableDefinition::new("pending_checksums");
const NODES: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("nodes");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LAST_STAMP: &str = "last_stamp";
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("secrets");
const CHUNKS: TableDefinition<[u8; 32], (u64, u64)> = TableDefinition::new("chunks");
const CONDEMNED: TableDefinition<[u8; 32], ()> = TableDefinition::new("condemned_chunks");
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("kms_keys");
const STAGED: TableDefinition<(&str, [u8; 32]), ()> = TableDefinition::new("staged_roots");
const PURGES: TableDefinition<&str, ()> = TableDefinition::new("pending_purges");

/// The memory redb may use to cache the metadata file (its default is 1 GiB, and a
/// Complete of millions of writes reads them all): the server's memory stays bounded
/// whatever the store holds, and the kernel's page cache keeps the rest close.
const METADATA_CACHE_BYTES: usize = 32 << 20;

/// A seal drops at most this many pending writes in its own transaction; a bigger
/// snapshot's are purged afterwards (module docs).
const PURGE_IN_SEAL: u64 = 16_384;
/// Pending writes dropped per purge step.
const PURGE_BATCH: usize = 8_192;
const CHUNK_REGISTRY_FILLED: &str = "chunk_registry";

/// What [`RedbMetadataStore::backup_to`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetadataBackup {
    /// Snapshot records (any state).
    pub snapshots: u64,
    /// Of which completed.
    pub completed_snapshots: u64,
    /// Rows of every table.
    pub rows: u64,
    /// The copy's file size.
    pub bytes: u64,
}

/// Snapshot metadata in a redb file. Cheap to clone.
///
/// Dropping the last clone stops the writer thread (after it finished its group) and
/// closes the database, so the same file can be opened again at once.
#[derive(Clone)]
pub struct RedbMetadataStore {
    writer: Arc<GroupCommitThread<WriteRequest>>,
    db: Arc<Database>,
    stamps: Arc<Stamps>,
    /// In memory: only this process opens the database, and its Puts end with it.
    announcements: Arc<Announcements>,
    /// In memory too: this process is the whole cluster of this database.
    leases: Arc<LocalLeases>,
}

/// The last stamp issued, and the lock that orders stamps with commits (module docs).
struct Stamps {
    last: Mutex<u64>,
}

impl Stamps {
    fn lock(&self) -> MutexGuard<'_, u64> {
        // A plain number: consistent whatever a panicking holder did.
        self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The next stamp after `last`: above it and not below the wall clock in ms.
fn next_stamp(last: &mut u64) -> Stamp {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    *last = (*last + 1).max(now_ms);
    Stamp(*last)
}

impl std::fmt::Debug for RedbMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbMetadataStore")
    }
}

// Short-lived channel messages, one per request: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum WriteRequest {
    Create(
        SnapshotRecord,
        oneshot::Sender<Result<CreateOutcome, StoreError>>,
    ),
    Update(
        SnapshotId,
        RecordChange,
        oneshot::Sender<Result<Option<SnapshotRecord>, StoreError>>,
    ),
    Delete(SnapshotId, oneshot::Sender<Result<bool, StoreError>>),
    /// Drop up to [`PURGE_BATCH`] pending writes of a queued purge; answers whether the
    /// purge is finished.
    Purge(SnapshotId, oneshot::Sender<Result<bool, StoreError>>),
    Stage(
        SnapshotId,
        Vec<NodeHash>,
        Vec<(NodeHash, Vec<u8>)>,
        oneshot::Sender<Result<(), SealError>>,
    ),
    DeleteNodes(
        Vec<NodeHash>,
        Stamp,
        oneshot::Sender<Result<usize, StoreError>>,
    ),
    DropPending(Vec<SnapshotId>, oneshot::Sender<Result<usize, StoreError>>),
    RecordBlock(BlockWrite, oneshot::Sender<Result<(), RecordBlockError>>),
    /// Answers whether the pending writes were left to a purge.
    Seal(Box<Seal>, oneshot::Sender<Result<bool, SealError>>),
    Secret(
        String,
        Vec<u8>,
        oneshot::Sender<Result<Vec<u8>, StoreError>>,
    ),
    CreateKey(KeyRecord, oneshot::Sender<Result<KeyRecord, StoreError>>),
    SetKeyEnabled(
        String,
        bool,
        oneshot::Sender<Result<Option<KeyRecord>, StoreError>>,
    ),
    Condemn(
        Vec<ChunkDigest>,
        Stamp,
        oneshot::Sender<Result<Vec<ChunkDigest>, StoreError>>,
    ),
    Finalize(Vec<ChunkDigest>, oneshot::Sender<Result<(), StoreError>>),
    Forget(ChunkDigest, oneshot::Sender<Result<(), StoreError>>),
}

/// One request of a group, with its outcome once applied (sent only after the group's
/// transaction commits, see [`commit`]).
// One per request of the group being applied, short-lived: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Job {
    Create(SnapshotRecord, Answer<CreateOutcome, StoreError>),
    Update(
        SnapshotId,
        Change,
        Answer<Option<SnapshotRecord>, StoreError>,
    ),
    Delete(SnapshotId, Answer<bool, StoreError>),
    Purge(SnapshotId, Answer<bool, StoreError>),
    Stage(
        SnapshotId,
        Vec<NodeHash>,
        Vec<(NodeHash, Vec<u8>)>,
        Answer<(), SealError>,
    ),
    DeleteNodes(Vec<NodeHash>, Stamp, Answer<usize, StoreError>),
    DropPending(Vec<SnapshotId>, Answer<usize, StoreError>),
    RecordBlock(BlockWrite, Answer<(), RecordBlockError>),
    Seal(Box<Seal>, Answer<bool, SealError>),
    Secret(String, Vec<u8>, Answer<Vec<u8>, StoreError>),
    CreateKey(KeyRecord, Answer<KeyRecord, StoreError>),
    SetKeyEnabled(String, bool, Answer<Option<KeyRecord>, StoreError>),
    /// The digests, the cutoff, and the digests this job marked condemned in memory (on
    /// its first application; a replay of the group re-uses them).
    Condemn(
        Vec<ChunkDigest>,
        Stamp,
        Option<Vec<ChunkDigest>>,
        Answer<Vec<ChunkDigest>, StoreError>,
    ),
    Finalize(Vec<ChunkDigest>, Answer<(), StoreError>),
    Forget(ChunkDigest, Answer<(), StoreError>),
}

/// The change of an `Update`, which can run only once (`FnOnce`): a replay of its group
/// re-applies its outcome, if the record is still the one it saw.
#[allow(clippy::large_enum_variant)]
enum Change {
    Pending(RecordChange),
    /// It ran on this record (`None`: there was none).
    Ran(Option<SnapshotRecord>),
}

impl From<WriteRequest> for Job {
    fn from(request: WriteRequest) -> Self {
        match request {
            WriteRequest::Create(record, tx) => Job::Create(record, Answer::new(tx)),
            WriteRequest::Update(id, change, tx) => {
                Job::Update(id, Change::Pending(change), Answer::new(tx))
            }
            WriteRequest::Delete(id, tx) => Job::Delete(id, Answer::new(tx)),
            WriteRequest::Purge(id, tx) => Job::Purge(id, Answer::new(tx)),
            WriteRequest::Stage(id, roots, nodes, tx) => {
                Job::Stage(id, roots, nodes, Answer::new(tx))
            }
            WriteRequest::DeleteNodes(hashes, before, tx) => {
                Job::DeleteNodes(hashes, before, Answer::new(tx))
            }
            WriteRequest::DropPending(ids, tx) => Job::DropPending(ids, Answer::new(tx)),
            WriteRequest::RecordBlock(write, tx) => Job::RecordBlock(write, Answer::new(tx)),
            WriteRequest::Seal(seal, tx) => Job::Seal(seal, Answer::new(tx)),
            WriteRequest::Secret(name, candidate, tx) => {
                Job::Secret(name, candidate, Answer::new(tx))
            }
            WriteRequest::CreateKey(key, tx) => Job::CreateKey(key, Answer::new(tx)),
            WriteRequest::SetKeyEnabled(id, enabled, tx) => {
                Job::SetKeyEnabled(id, enabled, Answer::new(tx))
            }
            WriteRequest::Condemn(digests, cutoff, tx) => {
                Job::Condemn(digests, cutoff, None, Answer::new(tx))
            }
            WriteRequest::Finalize(digests, tx) => Job::Finalize(digests, Answer::new(tx)),
            WriteRequest::Forget(digest, tx) => Job::Forget(digest, Answer::new(tx)),
        }
    }
}

impl Job {
    /// Send the outcome, or `failure` if this request failed or its group did not commit;
    /// first settle what the job changed in memory (see the module docs).
    fn send(self, failure: Option<StoreError>, announcements: &Announcements) {
        match &self {
            Job::Condemn(_, _, Some(marked), _) if failure.is_some() => {
                announcements.absolve(marked);
            }
            Job::Finalize(digests, _) if failure.is_none() => announcements.absolve(digests),
            _ => {}
        }
        match self {
            Job::Create(_, answer) => answer.send(failure),
            Job::Update(_, _, answer) => answer.send(failure),
            Job::Delete(_, answer) | Job::Purge(_, answer) => answer.send(failure),
            Job::Stage(_, _, _, answer) => answer.send(failure),
            Job::DeleteNodes(_, _, answer) | Job::DropPending(_, answer) => answer.send(failure),
            Job::RecordBlock(_, answer) => answer.send(failure),
            Job::Seal(_, answer) => answer.send(failure),
            Job::Secret(_, _, answer) => answer.send(failure),
            Job::CreateKey(_, answer) => answer.send(failure),
            Job::SetKeyEnabled(_, _, answer) => answer.send(failure),
            Job::Condemn(_, _, _, answer) => answer.send(failure),
            Job::Finalize(_, answer) | Job::Forget(_, answer) => answer.send(failure),
        }
    }
}

/// Where a request's outcome goes, and the outcome once computed.
struct Answer<T, E> {
    tx: oneshot::Sender<Result<T, E>>,
    outcome: Option<Result<T, E>>,
}

impl<T, E: From<StoreError>> Answer<T, E> {
    fn new(tx: oneshot::Sender<Result<T, E>>) -> Self {
        Self { tx, outcome: None }
    }

    fn send(self, failure: Option<StoreError>) {
        let result = match (failure, self.outcome) {
            (None, Some(outcome)) => outcome,
            (Some(error), _) => Err(error.into()),
            // Every job of a committed group has its outcome.
            (None, None) => {
                Err(StoreError::Backend("a metadata write was not applied".into()).into())
            }
        };
        // A dropped receiver means the caller went away; nothing to tell it.
        let _ = self.tx.send(result);
    }
}

fn backend(error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        // The I/O error itself, not its text: a full disk stays recognisable as one.
        redb::Error::Io(io) => StoreError::io("write the metadata database", io),
        error => StoreError::Backend(format!("metadata database: {error}")),
    }
}

fn decode_record(bytes: &[u8]) -> Result<SnapshotRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("snapshot record: {e}")))
}

fn encode_record(record: &SnapshotRecord) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(record).map_err(|e| StoreError::Backend(format!("encode record: {e}")))
}

impl RedbMetadataStore {
    /// Open or create the database at `path` and start its writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Arc::new(
            redb::Builder::new()
                .set_cache_size(METADATA_CACHE_BYTES)
                .create(path)
                .map_err(backend)?,
        );
        // Create every table up front so readers never meet a missing one.
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(SNAPSHOTS).map_err(backend)?;
        txn.open_table(CLIENT_TOKENS).map_err(backend)?;
        txn.open_table(PENDING_BLOCKS).map_err(backend)?;
        txn.open_table(PENDING_CHECKSUMS).map_err(backend)?;
        txn.open_table(NODES).map_err(backend)?;
        txn.open_table(SECRETS).map_err(backend)?;
        txn.open_table(CHUNKS).map_err(backend)?;
        txn.open_table(KEYS).map_err(backend)?;
        txn.open_table(STAGED).map_err(backend)?;
        txn.open_table(PURGES).map_err(backend)?;
        let announcements = Arc::new(Announcements::default());
        {
            // Tombstones left by a collection that stopped between its steps.
            let condemned = txn.open_table(CONDEMNED).map_err(backend)?;
            let mut left = Vec::new();
            for entry in condemned.iter().map_err(backend)? {
                left.push(ChunkDigest(entry.map_err(backend)?.0.value()));
            }
            announcements.condemn(left);
        }
        let last_stamp = txn
            .open_table(META)
            .map_err(backend)?
            .get(LAST_STAMP)
            .map_err(backend)?
            .map_or(0, |v| v.value());
        txn.commit().map_err(backend)?;
        finish_purges(&db)?;

        let stamps = Arc::new(Stamps {
            last: Mutex::new(last_stamp),
        });
        let writer_stamps = Arc::clone(&stamps);
        let writer_announcements = Arc::clone(&announcements);
        let writer = GroupCommitThread::spawn(
            "strata-metadata-writer",
            Arc::clone(&db),
            move |db, group| commit(db, &writer_stamps, &writer_announcements, group),
        )?;
        Ok(Self {
            writer: Arc::new(writer),
            db,
            stamps,
            announcements,
            leases: Arc::default(),
        })
    }

    /// Drop the pending writes of a queued purge in the background, one bounded step per
    /// write group, so the writes of other snapshots go on between the steps. The task
    /// holds the writer only while it queues a step: dropping the store still releases
    /// the database, and the next open finishes what is left ([`finish_purges`]).
    fn spawn_purge(&self, id: SnapshotId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let writer = Arc::downgrade(&self.writer);
        runtime.spawn(async move {
            loop {
                let (tx, rx) = oneshot::channel();
                let queued = writer
                    .upgrade()
                    .is_some_and(|writer| writer.send(WriteRequest::Purge(id.clone(), tx)).is_ok());
                if !queued {
                    return;
                }
                match rx.await {
                    Ok(Ok(false)) => {}
                    Ok(Ok(true)) | Err(_) => return,
                    Ok(Err(error)) => {
                        tracing::warn!(
                            %error,
                            snapshot = %id,
                            "dropping the pending writes of a sealed or deleted snapshot failed; \
                             the next start finishes it"
                        );
                        return;
                    }
                }
            }
        });
    }

    /// Fill the chunk registry from the chunk store's own index, once: a data directory
    /// written before the registry existed (its chunks are all registered, stamped older
    /// than any collection's view, so unreferenced ones are collected as usual). Runs
    /// while the store is opened, before it serves anything.
    pub fn fill_chunk_registry_once(
        &self,
        chunks: impl FnOnce() -> Result<Vec<(ChunkDigest, u64)>, StoreError>,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let mut filled = 0;
        {
            let mut meta = txn.open_table(META).map_err(backend)?;
            if meta.get(CHUNK_REGISTRY_FILLED).map_err(backend)?.is_some() {
                return Ok(0);
            }
            let mut registry = txn.open_table(CHUNKS).map_err(backend)?;
            for (digest, size) in chunks()? {
                if registry.get(digest.0).map_err(backend)?.is_none() {
                    registry.insert(digest.0, (size, 0)).map_err(backend)?;
                    filled += 1;
                }
            }
            meta.insert(CHUNK_REGISTRY_FILLED, 1).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(filled)
    }

    /// Write a copy of the whole database, as of one moment, to the new file `target`: every
    /// table through one read transaction (writers go on meanwhile and the copy sees none of
    /// them), committed durably (`crate::backup`). Refuses an existing `target`, and fails
    /// if the database holds a table this method does not copy.
    pub fn backup_to(&self, target: &Path) -> Result<MetadataBackup, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let mut snapshots = 0;
        let mut completed = 0;
        for entry in txn
            .open_table(SNAPSHOTS)
            .map_err(backend)?
            .iter()
            .map_err(backend)?
        {
            let record = decode_record(entry.map_err(backend)?.1.value())?;
            snapshots += 1;
            completed += u64::from(record.status == SnapshotStatus::Completed);
        }
        let rows = crate::backup::copy_database("metadata.redb", &txn, target, |copy| {
            copy.table(SNAPSHOTS)?;
            copy.table(CLIENT_TOKENS)?;
            copy.table(PENDING_BLOCKS)?;
            copy.table(PENDING_CHECKSUMS)?;
            copy.table(NODES)?;
            copy.table(META)?;
            copy.table(SECRETS)?;
            copy.table(CHUNKS)?;
            copy.table(CONDEMNED)?;
            copy.table(KEYS)?;
            copy.table(STAGED)?;
            copy.table(PURGES)?;
            Ok(())
        })?;
        let bytes = std::fs::metadata(target)
            .map_err(|e| StoreError::io(format!("inspect {}", target.display()), e))?
            .len();
        Ok(MetadataBackup {
            snapshots,
            completed_snapshots: completed,
            rows,
            bytes,
        })
    }

    /// How many write groups (one transaction each) the writer has taken so far: with
    /// concurrent writers, fewer than the writes.
    pub fn write_groups(&self) -> u64 {
        self.writer.groups()
    }

    async fn write<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<T>) -> WriteRequest,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer.send(request(tx))?;
        rx.await
            .map_err(|_| StoreError::Backend("the metadata writer dropped a request".into()))
    }

    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("metadata reader failed: {e}")))?
    }
}

/// One group of the writer thread: apply, commit, reply.
///
/// A request that fails (a record that does not decode, a storage error while applying
/// it) fails alone: the group's transaction is dropped and the group applied again
/// without it, until the rest commits. The replay sees what the first attempt saw (same
/// committed state, same requests before the failed one, in the same order), so an
/// `Update`'s outcome is re-applied rather than its change run again (it is `FnOnce`);
/// [`apply_update`] checks the record is indeed the one the change saw. Each
/// round takes one request out, so a group of N takes at most N + 1 transactions, and
/// only when requests fail. A failure of the group itself (opening the tables, writing
/// the records, the commit) fails every request still in it.
fn commit(db: &Database, stamps: &Stamps, announcements: &Announcements, group: Vec<WriteRequest>) {
    // Held until the group committed (or failed): see the module docs on stamps.
    let mut last = stamps.lock();
    let stamp = next_stamp(&mut last);
    let mut jobs: Vec<Job> = group.into_iter().map(Job::from).collect();
    let mut failed: Vec<Option<StoreError>> = vec![None; jobs.len()];
    let group_failure = loop {
        match apply_group(db, stamp, announcements, &mut jobs, &failed) {
            Ok(()) => break None,
            Err(GroupFailure::Request(at, error)) => {
                tracing::warn!(%error, "a metadata write failed; its group is applied without it");
                failed[at] = Some(error);
            }
            Err(GroupFailure::Group(error)) => {
                tracing::error!(%error, "metadata group commit failed");
                break Some(error);
            }
        }
    };
    drop(last);
    for (job, failure) in jobs.into_iter().zip(failed) {
        job.send(failure.or_else(|| group_failure.clone()), announcements);
    }
}

/// Finish the purges a previous run left (it stopped before they were done): while the
/// store is opened, before anything else writes.
fn finish_purges(db: &Database) -> Result<(), StoreError> {
    let queued: Vec<SnapshotId> = {
        let txn = db.begin_read().map_err(backend)?;
        let purges = txn.open_table(PURGES).map_err(backend)?;
        let mut ids = Vec::new();
        for entry in purges.iter().map_err(backend)? {
            let id = entry.map_err(backend)?.0.value().to_owned();
            ids.push(
                SnapshotId::parse(&id)
                    .map_err(|e| StoreError::Corrupt(format!("queued purge '{id}': {e}")))?,
            );
        }
        ids
    };
    for id in queued {
        loop {
            let txn = db.begin_write().map_err(backend)?;
            let done = {
                let mut pending = Pending {
                    blocks: txn.open_table(PENDING_BLOCKS).map_err(backend)?,
                    checksums: txn.open_table(PENDING_CHECKSUMS).map_err(backend)?,
                };
                let mut purges = txn.open_table(PURGES).map_err(backend)?;
                purge_step(&mut pending, &mut purges, &id)?
            };
            txn.commit().map_err(backend)?;
            if done {
                break;
            }
        }
    }
    Ok(())
}

/// Why [`apply_group`] did not commit.
enum GroupFailure {
    /// The job at this position failed.
    Request(usize, StoreError),
    /// The transaction failed, whatever its requests.
    Group(StoreError),
}

/// Apply every job of `jobs` not `failed` in one transaction and commit it; each job
/// keeps its outcome.
fn apply_group(
    db: &Database,
    stamp: Stamp,
    announcements: &Announcements,
    jobs: &mut [Job],
    failed: &[Option<StoreError>],
) -> Result<(), GroupFailure> {
    let whole = GroupFailure::Group;
    let txn = db.begin_write().map_err(backend).map_err(whole)?;
    {
        let mut snapshots =
            Records::new(txn.open_table(SNAPSHOTS).map_err(backend).map_err(whole)?);
        let mut tokens = txn
            .open_table(CLIENT_TOKENS)
            .map_err(backend)
            .map_err(whole)?;
        let mut pending = Pending {
            blocks: txn
                .open_table(PENDING_BLOCKS)
                .map_err(backend)
                .map_err(whole)?,
            checksums: txn
                .open_table(PENDING_CHECKSUMS)
                .map_err(backend)
                .map_err(whole)?,
        };
        let mut nodes = txn.open_table(NODES).map_err(backend).map_err(whole)?;
        let mut registry = txn.open_table(CHUNKS).map_err(backend).map_err(whole)?;
        let mut stamped = false;
        for (at, job) in jobs.iter_mut().enumerate() {
            if failed[at].is_some() {
                continue;
            }
            let applied = match job {
                Job::Create(record, answer) => create(&mut snapshots, &mut tokens, record)
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::Update(id, change, answer) => apply_update(&mut snapshots, id, change, answer),
                Job::Delete(id, answer) => txn
                    .open_table(PURGES)
                    .map_err(backend)
                    .and_then(|mut purges| {
                        let mut staged = txn.open_table(STAGED).map_err(backend)?;
                        delete(&mut snapshots, &mut tokens, &mut purges, &mut staged, id)
                    })
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::Purge(id, answer) => txn
                    .open_table(PURGES)
                    .map_err(backend)
                    .and_then(|mut purges| purge_step(&mut pending, &mut purges, id))
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::Stage(id, roots, staged_nodes, answer) => {
                    stamped = true;
                    txn.open_table(STAGED)
                        .map_err(backend)
                        .and_then(|mut staged| {
                            stage(
                                &mut snapshots,
                                &mut nodes,
                                &mut staged,
                                id,
                                roots,
                                staged_nodes,
                                stamp,
                            )
                        })
                        .map(|r| answer.outcome = Some(r))
                }
                Job::DeleteNodes(hashes, before, answer) => {
                    delete_nodes(&mut nodes, hashes, *before).map(|r| answer.outcome = Some(Ok(r)))
                }
                Job::DropPending(ids, answer) => txn
                    .open_table(STAGED)
                    .map_err(backend)
                    .and_then(|mut staged| {
                        drop_pending(&mut snapshots, &mut pending, &mut staged, ids)
                    })
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::RecordBlock(write, answer) => {
                    stamped = true;
                    let chunks = Registry {
                        table: &mut registry,
                        announcements,
                        stamp,
                    };
                    record_block(&mut snapshots, &mut pending, chunks, write)
                        .map(|r| answer.outcome = Some(r))
                }
                Job::Condemn(digests, cutoff, marked, answer) => txn
                    .open_table(CONDEMNED)
                    .map_err(backend)
                    .and_then(|mut condemned| {
                        condemn(
                            &mut registry,
                            &mut condemned,
                            announcements,
                            digests,
                            *cutoff,
                            marked,
                        )
                    })
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::Finalize(digests, answer) => txn
                    .open_table(CONDEMNED)
                    .map_err(backend)
                    .and_then(|mut condemned| {
                        for digest in digests.iter() {
                            condemned.remove(digest.0).map_err(backend)?;
                        }
                        Ok(())
                    })
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::Forget(digest, answer) => registry
                    .remove(digest.0)
                    .map_err(backend)
                    .map(|_| answer.outcome = Some(Ok(()))),
                Job::Secret(name, candidate, answer) => txn
                    .open_table(SECRETS)
                    .map_err(backend)
                    .and_then(|mut secrets| secret(&mut secrets, name, candidate))
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::CreateKey(key, answer) => txn
                    .open_table(KEYS)
                    .map_err(backend)
                    .and_then(|mut keys| create_key(&mut keys, key))
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::SetKeyEnabled(id, enabled, answer) => txn
                    .open_table(KEYS)
                    .map_err(backend)
                    .and_then(|mut keys| set_key_enabled(&mut keys, id, *enabled))
                    .map(|r| answer.outcome = Some(Ok(r))),
                Job::Seal(seal, answer) => {
                    stamped = true;
                    let mut sealing = || -> Result<_, StoreError> {
                        let mut tables = SealTables {
                            staged: txn.open_table(STAGED).map_err(backend)?,
                            purges: txn.open_table(PURGES).map_err(backend)?,
                        };
                        seal_snapshot(
                            &mut snapshots,
                            &mut pending,
                            &mut nodes,
                            &mut tables,
                            seal,
                            stamp,
                        )
                    };
                    sealing().map(|r| answer.outcome = Some(r))
                }
            };
            // Dropping the transaction (on return) undoes whatever the job half did.
            applied.map_err(|error| GroupFailure::Request(at, error))?;
        }
        snapshots.flush().map_err(whole)?;
        if stamped {
            let mut meta = txn.open_table(META).map_err(backend).map_err(whole)?;
            meta.insert(LAST_STAMP, stamp.0)
                .map_err(backend)
                .map_err(whole)?;
        }
    }
    txn.commit().map_err(backend).map_err(whole)
}

/// Apply an `Update`: run its change, or on a replay re-apply what it produced. The
/// replay normally sees the record the change saw (see [`commit`]); should an earlier
/// request have failed only on the replay, it may not, and the update then fails alone
/// (retryable) rather than writing a record computed from another one.
fn apply_update(
    snapshots: &mut Records<'_>,
    id: &SnapshotId,
    change: &mut Change,
    answer: &mut Answer<Option<SnapshotRecord>, StoreError>,
) -> Result<(), StoreError> {
    let stored = snapshots.load(id)?;
    match std::mem::replace(change, Change::Ran(stored.clone())) {
        Change::Pending(change) => answer.outcome = Some(Ok(update(snapshots, id, change)?)),
        Change::Ran(seen) if seen == stored => {
            if let Some(Ok(Some(record))) = &answer.outcome {
                snapshots.save(record);
            }
        }
        Change::Ran(_) => {
            return Err(StoreError::Conflict(
                "the snapshot record changed while its write group was applied again".into(),
            ));
        }
    }
    Ok(())
}

// Next to the code it tests, not at the end of the file, while the rest of this file is
// being rewritten for ports v2 (keeps the two changes apart); move it there afterwards.
#[cfg(test)]
#[allow(clippy::items_after_test_module)]
mod group_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use strata_core::snapshot::Tag;
    use strata_types::VolumeSize;

    use super::*;

    fn record(id: &SnapshotId) -> SnapshotRecord {
        SnapshotRecord {
            lineage: id.clone(),
            id: id.clone(),
            owner: AccountId::parse("000000000000").expect("account"),
            status: SnapshotStatus::Pending,
            volume_size: VolumeSize::from_gib(1).expect("size"),
            parent: None,
            description: None,
            tags: Vec::new(),
            encrypted: false,
            kms_key_arn: None,
            encryption_key: None,
            timeout_minutes: 60,
            client_token: None,
            start_fingerprint: "f".into(),
            start_time_ms: 0,
            last_activity_ms: 0,
            completion_time_ms: None,
            progress: None,
            write_sequence: 0,
            changed_blocks: 0,
            root: None,
            base_root: None,
            status_message: None,
        }
    }

    /// One group: a tag change, then block writes, one of them to a snapshot whose stored
    /// record no longer decodes. Only that write fails; the rest commits, durably, and the
    /// tag change ran once (a change can only run once: the group is replayed without the
    /// failed request, re-using its outcome).
    #[tokio::test]
    async fn one_failing_request_fails_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.redb");
        let good = SnapshotId::parse("snap-0a").expect("id");
        let bad = SnapshotId::parse("snap-0b").expect("id");
        let changes = Arc::new(AtomicUsize::new(0));
        {
            let store = RedbMetadataStore::open(&path).expect("open");
            store.create_snapshot(record(&good)).await.expect("create");
            let txn = store.db.begin_write().expect("txn");
            txn.open_table(SNAPSHOTS)
                .expect("table")
                .insert(bad.as_str(), b"{damaged".as_slice())
                .expect("insert");
            txn.commit().expect("commit");

            let (tagged, tag_answer) = oneshot::channel();
            let counted = Arc::clone(&changes);
            let change: RecordChange = Box::new(move |stored: &SnapshotRecord| {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut record = stored.clone();
                record.tags.push(Tag {
                    key: "k".into(),
                    value: "v".into(),
                });
                Some(record)
            });
            let mut group = vec![WriteRequest::Update(good.clone(), change, tagged)];
            let mut answers = Vec::new();
            for (index, id) in [(1, &good), (2, &bad), (3, &good), (4, &good)] {
                let (done, answer) = oneshot::channel();
                let write = BlockWrite {
                    snapshot: id.clone(),
                    index: BlockIndex::new(index),
                    digest: ChunkDigest::of(&[index as u8]),
                    progress: None,
                    at_ms: 0,
                    stored_size: Some(1),
                    checksum: None,
                };
                group.push(WriteRequest::RecordBlock(write, done));
                answers.push(answer);
            }
            commit(&store.db, &store.stamps, &store.announcements, group);

            let tagged = tag_answer.await.expect("answered");
            assert!(
                matches!(&tagged, Ok(Some(r)) if r.tags.len() == 1),
                "{tagged:?}"
            );
            let mut outcomes = Vec::new();
            for answer in answers {
                outcomes.push(answer.await.expect("answered"));
            }
            assert!(outcomes[0].is_ok(), "{outcomes:?}");
            assert!(
                matches!(
                    &outcomes[1],
                    Err(RecordBlockError::Store(StoreError::Corrupt(_)))
                ),
                "{outcomes:?}"
            );
            assert!(outcomes[2].is_ok() && outcomes[3].is_ok(), "{outcomes:?}");
        }
        assert_eq!(changes.load(Ordering::SeqCst), 1);
        let store = RedbMetadataStore::open(&path).expect("reopen");
        let pending = store.pending_writes(&good).await.expect("pending");
        let indexes: Vec<u32> = pending.blocks.iter().map(|(i, _)| i.get()).collect();
        assert_eq!(indexes, vec![1, 3, 4]);
        assert_eq!(pending.sequence, 3);
        let stored = store.snapshot(&good).await.expect("get").expect("exists");
        assert_eq!(stored.tags.len(), 1);
    }
}

type Table<'t, K, V> = redb::Table<'t, K, V>;

/// The snapshot records of one group, decoded at most once and encoded at most once per
/// group: a group of 64 block writes to one snapshot touches its record 64 times, and JSON
/// work per write was a visible share of the writer thread.
struct Records<'t> {
    table: Table<'t, &'static str, &'static [u8]>,
    /// Records read or written in this group; `None` is a record deleted in this group.
    cache: HashMap<SnapshotId, Option<SnapshotRecord>>,
    /// Records to write (or delete) when the group ends.
    dirty: HashSet<SnapshotId>,
}

impl<'t> Records<'t> {
    fn new(table: Table<'t, &'static str, &'static [u8]>) -> Self {
        Self {
            table,
            cache: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    fn load(&mut self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StoreError> {
        if let Some(cached) = self.cache.get(id) {
            return Ok(cached.clone());
        }
        let record = self
            .table
            .get(id.as_str())
            .map_err(backend)?
            .map(|v| decode_record(v.value()))
            .transpose()?;
        self.cache.insert(id.clone(), record.clone());
        Ok(record)
    }

    fn save(&mut self, record: &SnapshotRecord) {
        self.cache.insert(record.id.clone(), Some(record.clone()));
        self.dirty.insert(record.id.clone());
    }

    fn remove(&mut self, id: &SnapshotId) {
        self.cache.insert(id.clone(), None);
        self.dirty.insert(id.clone());
    }

    /// Write the group's changes into the transaction.
    fn flush(&mut self) -> Result<(), StoreError> {
        for id in self.dirty.drain() {
            match self.cache.get(&id) {
                Some(Some(record)) => {
                    let bytes = encode_record(record)?;
                    self.table
                        .insert(id.as_str(), bytes.as_slice())
                        .map_err(backend)?;
                }
                _ => {
                    self.table.remove(id.as_str()).map_err(backend)?;
                }
            }
        }
        Ok(())
    }
}

fn create(
    snapshots: &mut Records<'_>,
    tokens: &mut Table<'_, (&str, &str), &str>,
    record: &SnapshotRecord,
) -> Result<CreateOutcome, StoreError> {
    if let Some(parent) = &record.parent {
        let intact = snapshots.load(parent)?.is_some_and(|p| {
            p.status == SnapshotStatus::Completed
                && p.owner == record.owner
                && p.root == record.base_root
        });
        if !intact {
            return Ok(CreateOutcome::ParentGone);
        }
    }
    if let Some(token) = &record.client_token {
        let key = (record.owner.as_str(), token.as_str());
        let existing = tokens
            .get(key)
            .map_err(backend)?
            .map(|v| v.value().to_owned());
        if let Some(existing_id) = existing {
            let id = SnapshotId::parse(&existing_id)
                .map_err(|e| StoreError::Corrupt(format!("client token index: {e}")))?;
            // A token whose snapshot is gone no longer binds anything.
            if let Some(existing) = snapshots.load(&id)? {
                return Ok(CreateOutcome::ClientTokenExists(Box::new(existing)));
            }
        }
        tokens.insert(key, record.id.as_str()).map_err(backend)?;
    }
    snapshots.save(record);
    Ok(CreateOutcome::Created)
}

fn update(
    snapshots: &mut Records<'_>,
    id: &SnapshotId,
    change: RecordChange,
) -> Result<Option<SnapshotRecord>, StoreError> {
    let Some(stored) = snapshots.load(id)? else {
        return Ok(None);
    };
    match change(&stored) {
        Some(record) if record.id == *id => {
            snapshots.save(&record);
            Ok(Some(record))
        }
        _ => Ok(None),
    }
}

/// The pending writes in a group's transaction: their digests and, apart, the checksums
/// of those that carried one (a table of its own, see the module docs). Every change of
/// a write goes through here, so a checksum never outlives or misses its write.
struct Pending<'t> {
    blocks: Table<'t, (&'static str, u32), [u8; 32]>,
    checksums: Table<'t, (&'static str, u32), [u8; 32]>,
}

impl Pending<'_> {
    /// Record `write`, replacing the previous write at its index, checksum included.
    fn insert(&mut self, write: &BlockWrite) -> Result<(), StoreError> {
        let key = (write.snapshot.as_str(), write.index.get());
        self.blocks.insert(key, write.digest.0).map_err(backend)?;
        match write.checksum {
            Some(checksum) => {
                self.checksums.insert(key, checksum).map_err(backend)?;
            }
            // The write it replaces may have carried one: it is no longer the final write.
            None => {
                self.checksums.remove(key).map_err(backend)?;
            }
        }
        Ok(())
    }

    /// Drop every pending write of `id` with its checksum; returns how many writes.
    fn remove(&mut self, id: &SnapshotId) -> Result<usize, StoreError> {
        let range = (id.as_str(), 0)..=(id.as_str(), u32::MAX);
        let mut removed = 0;
        self.blocks
            .retain_in(range.clone(), |_, _| {
                removed += 1;
                false
            })
            .map_err(backend)?;
        self.checksums
            .retain_in(range, |_, _| false)
            .map_err(backend)?;
        Ok(removed)
    }

    /// Drop up to `limit` pending writes of `id` (the first ones), with their checksums;
    /// returns how many writes.
    fn remove_some(&mut self, id: &SnapshotId, limit: usize) -> Result<usize, StoreError> {
        let mut last = None;
        let mut count = 0;
        for entry in self
            .blocks
            .range((id.as_str(), 0)..=(id.as_str(), u32::MAX))
            .map_err(backend)?
            .take(limit)
        {
            last = Some(entry.map_err(backend)?.0.value().1);
            count += 1;
        }
        let Some(last) = last else {
            return Ok(0);
        };
        let range = (id.as_str(), 0)..=(id.as_str(), last);
        self.blocks
            .retain_in(range.clone(), |_, _| false)
            .map_err(backend)?;
        self.checksums
            .retain_in(range, |_, _| false)
            .map_err(backend)?;
        Ok(count)
    }
}

/// Forget the staged roots of `id`.
fn remove_staged(
    staged: &mut Table<'_, (&'static str, [u8; 32]), ()>,
    id: &SnapshotId,
) -> Result<(), StoreError> {
    staged
        .retain_in(
            (id.as_str(), [0; 32])..=(id.as_str(), [0xff; 32]),
            |_, _| false,
        )
        .map_err(backend)
}

/// One step of a queued purge: drop up to [`PURGE_BATCH`] pending writes of `id`, and
/// the queue entry once none is left. Returns whether the purge is finished.
fn purge_step(
    pending: &mut Pending<'_>,
    purges: &mut Table<'_, &'static str, ()>,
    id: &SnapshotId,
) -> Result<bool, StoreError> {
    if pending.remove_some(id, PURGE_BATCH)? < PURGE_BATCH {
        purges.remove(id.as_str()).map_err(backend)?;
        return Ok(true);
    }
    Ok(false)
}

/// Store nodes ahead of a seal (see [`MetadataStore::stage_nodes`]).
fn stage(
    snapshots: &mut Records<'_>,
    nodes: &mut Table<'_, [u8; 32], &[u8]>,
    staged: &mut Table<'_, (&'static str, [u8; 32]), ()>,
    id: &SnapshotId,
    roots: &[NodeHash],
    staged_nodes: &[(NodeHash, Vec<u8>)],
    stamp: Stamp,
) -> Result<Result<(), SealError>, StoreError> {
    if snapshots
        .load(id)?
        .is_none_or(|r| r.status != SnapshotStatus::Pending)
    {
        return Ok(Err(SealError::NotPending));
    }
    store_nodes(nodes, staged_nodes, stamp)?;
    for root in roots {
        staged.insert((id.as_str(), root.0), ()).map_err(backend)?;
    }
    Ok(Ok(()))
}

/// Store (or re-stamp) nodes with `stamp`.
fn store_nodes(
    nodes: &mut Table<'_, [u8; 32], &[u8]>,
    new_nodes: &[(NodeHash, Vec<u8>)],
    stamp: Stamp,
) -> Result<(), StoreError> {
    let mut value = Vec::new();
    for (hash, encoded) in new_nodes {
        value.clear();
        value.extend_from_slice(&stamp.0.to_le_bytes());
        value.extend_from_slice(encoded);
        nodes.insert(hash.0, value.as_slice()).map_err(backend)?;
    }
    Ok(())
}

fn delete(
    snapshots: &mut Records<'_>,
    tokens: &mut Table<'_, (&str, &str), &str>,
    purges: &mut Table<'_, &'static str, ()>,
    staged: &mut Table<'_, (&'static str, [u8; 32]), ()>,
    id: &SnapshotId,
) -> Result<bool, StoreError> {
    let Some(record) = snapshots.load(id)? else {
        return Ok(false);
    };
    if let Some(token) = &record.client_token {
        tokens
            .remove((record.owner.as_str(), token.as_str()))
            .map_err(backend)?;
    }
    // Its pending writes may be millions: dropped afterwards (module docs).
    purges.insert(id.as_str(), ()).map_err(backend)?;
    remove_staged(staged, id)?;
    snapshots.remove(id);
    Ok(true)
}

fn delete_nodes(
    nodes: &mut Table<'_, [u8; 32], &[u8]>,
    hashes: &[NodeHash],
    stamped_before: Stamp,
) -> Result<usize, StoreError> {
    let mut deleted = 0;
    for hash in hashes {
        let stamp = match nodes.get(hash.0).map_err(backend)? {
            Some(value) => split_node_value(value.value())?.0,
            None => continue,
        };
        if stamp < stamped_before {
            nodes.remove(hash.0).map_err(backend)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

fn decode_key(text: &str) -> Result<KeyRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("key record: {e}")))
}

fn encode_key(key: &KeyRecord) -> Result<String, StoreError> {
    serde_json::to_string(key).map_err(|e| StoreError::Backend(format!("encode key: {e}")))
}

/// The stored key with `key`'s id, or `key` stored now. In the writer's transaction, so
/// a second create of the same id (in this group or a later one) finds the first.
fn create_key(keys: &mut Table<'_, &str, &str>, key: &KeyRecord) -> Result<KeyRecord, StoreError> {
    if let Some(stored) = keys.get(key.id.as_str()).map_err(backend)? {
        return decode_key(stored.value());
    }
    keys.insert(key.id.as_str(), encode_key(key)?.as_str())
        .map_err(backend)?;
    Ok(key.clone())
}

/// The key `id` with `enabled` set, stored; `None` if there is no such key.
fn set_key_enabled(
    keys: &mut Table<'_, &str, &str>,
    id: &str,
    enabled: bool,
) -> Result<Option<KeyRecord>, StoreError> {
    let stored = keys
        .get(id)
        .map_err(backend)?
        .map(|v| decode_key(v.value()))
        .transpose()?;
    let Some(mut key) = stored else {
        return Ok(None);
    };
    key.enabled = enabled;
    keys.insert(id, encode_key(&key)?.as_str())
        .map_err(backend)?;
    Ok(Some(key))
}

/// The stored secret `name`, or `candidate` stored now.
fn secret(
    secrets: &mut Table<'_, &str, &[u8]>,
    name: &str,
    candidate: &[u8],
) -> Result<Vec<u8>, StoreError> {
    if let Some(stored) = secrets.get(name).map_err(backend)? {
        return Ok(stored.value().to_vec());
    }
    secrets.insert(name, candidate).map_err(backend)?;
    Ok(candidate.to_vec())
}

fn drop_pending(
    snapshots: &mut Records<'_>,
    pending: &mut Pending<'_>,
    staged: &mut Table<'_, (&'static str, [u8; 32]), ()>,
    ids: &[SnapshotId],
) -> Result<usize, StoreError> {
    let mut dropped = 0;
    for id in ids {
        if snapshots
            .load(id)?
            .is_some_and(|r| r.status == SnapshotStatus::Error)
        {
            dropped += pending.remove(id)?;
            remove_staged(staged, id)?;
        }
    }
    Ok(dropped)
}

/// A stored node value: (stamp of the last write, encoded node).
fn split_node_value(value: &[u8]) -> Result<(Stamp, &[u8]), StoreError> {
    let (stamp, encoded) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("block-map node value is truncated".into()))?;
    Ok((Stamp(u64::from_le_bytes(*stamp)), encoded))
}

/// The chunk registry as a write record sees it.
struct Registry<'a, 't> {
    table: &'a mut Table<'t, [u8; 32], (u64, u64)>,
    announcements: &'a Announcements,
    stamp: Stamp,
}

fn record_block(
    snapshots: &mut Records<'_>,
    pending: &mut Pending<'_>,
    chunks: Registry<'_, '_>,
    write: &BlockWrite,
) -> Result<Result<(), RecordBlockError>, StoreError> {
    let Some(mut record) = snapshots.load(&write.snapshot)? else {
        return Ok(Err(RecordBlockError::NotFound));
    };
    // Pending at the write's time, not only as stored: see `MetadataStore::record_block`.
    if record.status_at(write.at_ms) != SnapshotStatus::Pending {
        return Ok(Err(RecordBlockError::NotPending(Box::new(
            record.as_of(write.at_ms),
        ))));
    }
    if !write.digest.is_zero_block() {
        if chunks.announcements.is_condemned(&write.digest) {
            return Ok(Err(RecordBlockError::ChunkNotRegistered));
        }
        let registered = chunks
            .table
            .get(write.digest.0)
            .map_err(backend)?
            .map(|v| v.value().0);
        let Some(size) = write.stored_size.or(registered) else {
            return Ok(Err(RecordBlockError::ChunkNotRegistered));
        };
        chunks
            .table
            .insert(write.digest.0, (size, chunks.stamp.0))
            .map_err(backend)?;
    }
    pending.insert(write)?;
    record.write_sequence += 1;
    record.last_activity_ms = record.last_activity_ms.max(write.at_ms);
    if write.progress.is_some() {
        record.progress = write.progress;
    }
    snapshots.save(&record);
    Ok(Ok(()))
}

/// The tables a seal writes besides the records, pending writes and nodes.
struct SealTables<'t> {
    staged: Table<'t, (&'static str, [u8; 32]), ()>,
    purges: Table<'t, &'static str, ()>,
}

/// Seal (see [`MetadataStore::seal_snapshot`]); the outcome says whether the pending
/// writes were left to a purge.
fn seal_snapshot(
    snapshots: &mut Records<'_>,
    pending: &mut Pending<'_>,
    nodes: &mut Table<'_, [u8; 32], &[u8]>,
    tables: &mut SealTables<'_>,
    seal: &Seal,
    stamp: Stamp,
) -> Result<Result<bool, SealError>, StoreError> {
    let id = &seal.snapshot;
    let stored = match snapshots.load(id)? {
        Some(stored) if stored.status == SnapshotStatus::Pending => stored,
        _ => return Ok(Err(SealError::NotPending)),
    };
    if stored.write_sequence != seal.expected_sequence {
        return Ok(Err(SealError::Raced));
    }
    store_nodes(nodes, &seal.new_nodes, stamp)?;
    snapshots.save(&stored.completed(seal.root, seal.changed_blocks, seal.completed_at_ms));
    remove_staged(&mut tables.staged, id)?;
    if seal.changed_blocks > PURGE_IN_SEAL {
        tables.purges.insert(id.as_str(), ()).map_err(backend)?;
        return Ok(Ok(true));
    }
    pending.remove(id)?;
    Ok(Ok(false))
}

/// Condemn the digests not announced and not re-used since `cutoff` (see
/// [`MetadataStore::condemn_chunks`]): marked in memory first (atomic with announcements;
/// a replay of the group re-uses the first marking), then unregistered and tombstoned.
fn condemn(
    registry: &mut Table<'_, [u8; 32], (u64, u64)>,
    condemned: &mut Table<'_, [u8; 32], ()>,
    announcements: &Announcements,
    digests: &[ChunkDigest],
    cutoff: Stamp,
    marked: &mut Option<Vec<ChunkDigest>>,
) -> Result<Vec<ChunkDigest>, StoreError> {
    if marked.is_none() {
        let mut idle = Vec::new();
        for digest in digests {
            let reused = registry
                .get(digest.0)
                .map_err(backend)?
                .is_some_and(|v| v.value().1 >= cutoff.0);
            if !reused {
                idle.push(*digest);
            }
        }
        *marked = Some(announcements.condemn(idle));
    }
    let marked = marked.as_deref().unwrap_or_default();
    for digest in marked {
        registry.remove(digest.0).map_err(backend)?;
        condemned.insert(digest.0, ()).map_err(backend)?;
    }
    Ok(marked.to_vec())
}

/// A consistent read view of tree nodes (one read transaction).
pub struct RedbNodes {
    table: ReadOnlyTable<[u8; 32], &'static [u8]>,
}

impl NodeSource for RedbNodes {
    fn load(&self, hash: &NodeHash) -> Result<Arc<Node>, StoreError> {
        let value =
            self.table.get(hash.0).map_err(backend)?.ok_or_else(|| {
                StoreError::Corrupt(format!("block-map node {hash:?} is missing"))
            })?;
        let (_, bytes) = split_node_value(value.value())?;
        if Node::hash_encoded(bytes) != *hash {
            return Err(StoreError::Corrupt(format!(
                "block-map node {hash:?} does not match its hash"
            )));
        }
        Node::decode(bytes).map(Arc::new)
    }
}

impl MetadataStore for RedbMetadataStore {
    type Nodes = RedbNodes;

    async fn create_snapshot(&self, record: SnapshotRecord) -> Result<CreateOutcome, StoreError> {
        self.write(|tx| WriteRequest::Create(record, tx)).await?
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StoreError> {
        // A point read of one small record, on the calling task: it takes microseconds (the
        // table's pages stay in redb's cache under load), less than a hop to a blocking
        // thread and back, and every Put and Get starts with it.
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(SNAPSHOTS).map_err(backend)?;
        let value = table.get(id.as_str()).map_err(backend)?;
        value.map(|v| decode_record(v.value())).transpose()
    }

    async fn update_snapshot(
        &self,
        id: &SnapshotId,
        change: RecordChange,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let id = id.clone();
        self.write(|tx| WriteRequest::Update(id, change, tx))
            .await?
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        let deleted = self
            .write(|tx| WriteRequest::Delete(id.clone(), tx))
            .await??;
        if deleted {
            self.spawn_purge(id.clone());
        }
        Ok(deleted)
    }

    async fn gc_view(&self) -> Result<GcView<RedbNodes>, StoreError> {
        let stamps = Arc::clone(&self.stamps);
        self.read(move |db| {
            // The stamp and the read transaction under the writer's stamp lock (module docs).
            let (start, txn) = {
                let mut last = stamps.lock();
                let start = next_stamp(&mut last);
                (start, db.begin_read().map_err(backend)?)
            };
            let snapshots = txn.open_table(SNAPSHOTS).map_err(backend)?;
            let mut records = Vec::new();
            for entry in snapshots.iter().map_err(backend)? {
                let (_, value) = entry.map_err(backend)?;
                records.push(decode_record(value.value())?);
            }
            let pending_table = txn.open_table(PENDING_BLOCKS).map_err(backend)?;
            let mut pending: Vec<(SnapshotId, Vec<ChunkDigest>)> = Vec::new();
            for entry in pending_table.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let id = key.value().0;
                let digest = ChunkDigest(value.value());
                match pending.last_mut() {
                    Some((last, digests)) if last.as_str() == id => digests.push(digest),
                    _ => {
                        let id = SnapshotId::parse(id)
                            .map_err(|e| StoreError::Corrupt(format!("pending write key: {e}")))?;
                        pending.push((id, vec![digest]));
                    }
                }
            }
            let pending_ids: HashSet<&str> = records
                .iter()
                .filter(|r| r.status == SnapshotStatus::Pending)
                .map(|r| r.id.as_str())
                .collect();
            let mut staged = Vec::new();
            for entry in txn
                .open_table(STAGED)
                .map_err(backend)?
                .iter()
                .map_err(backend)?
            {
                let (key, _) = entry.map_err(backend)?;
                let (id, root) = key.value();
                if pending_ids.contains(id) {
                    staged.push(NodeHash(root));
                }
            }
            let registry = txn.open_table(CHUNKS).map_err(backend)?;
            let mut chunks = Vec::new();
            for entry in registry.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                let (size, stamp) = value.value();
                chunks.push(RegisteredChunk {
                    digest: ChunkDigest(key.value()),
                    size,
                    stamp: Stamp(stamp),
                });
            }
            let table = txn.open_table(NODES).map_err(backend)?;
            let mut nodes = Vec::new();
            for entry in table.iter().map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                nodes.push((NodeHash(key.value()), split_node_value(value.value())?.0));
            }
            Ok(GcView {
                start,
                records,
                pending,
                staged,
                nodes,
                chunks,
                reader: RedbNodes { table },
            })
        })
        .await
    }

    async fn delete_nodes(
        &self,
        hashes: Vec<NodeHash>,
        stamped_before: Stamp,
    ) -> Result<usize, StoreError> {
        self.write(|tx| WriteRequest::DeleteNodes(hashes, stamped_before, tx))
            .await?
    }

    async fn drop_pending_writes(&self, ids: Vec<SnapshotId>) -> Result<usize, StoreError> {
        self.write(|tx| WriteRequest::DropPending(ids, tx)).await?
    }

    async fn condemn_chunks(
        &self,
        digests: Vec<ChunkDigest>,
        stamped_before: Stamp,
    ) -> Result<Vec<ChunkDigest>, StoreError> {
        self.write(|tx| WriteRequest::Condemn(digests, stamped_before, tx))
            .await?
    }

    async fn condemned_chunks(&self) -> Result<Vec<ChunkDigest>, StoreError> {
        self.read(|db| {
            let txn = db.begin_read().map_err(backend)?;
            let condemned = txn.open_table(CONDEMNED).map_err(backend)?;
            let mut digests = Vec::new();
            for entry in condemned.iter().map_err(backend)? {
                digests.push(ChunkDigest(entry.map_err(backend)?.0.value()));
            }
            Ok(digests)
        })
        .await
    }

    async fn finalize_chunks(&self, digests: Vec<ChunkDigest>) -> Result<(), StoreError> {
        self.write(|tx| WriteRequest::Finalize(digests, tx)).await?
    }

    async fn forget_chunk(&self, digest: ChunkDigest) -> Result<(), StoreError> {
        self.write(|tx| WriteRequest::Forget(digest, tx)).await?
    }

    async fn record_block(&self, write: BlockWrite) -> Result<(), RecordBlockError> {
        self.write(|tx| WriteRequest::RecordBlock(write, tx))
            .await?
    }

    async fn pending_writes_page(
        &self,
        id: &SnapshotId,
        after: Option<BlockIndex>,
        limit: usize,
    ) -> Result<PendingWrites, StoreError> {
        let id = id.clone();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let snapshots = txn.open_table(SNAPSHOTS).map_err(backend)?;
            let record = match snapshots.get(id.as_str()).map_err(backend)? {
                Some(v) => decode_record(v.value())?,
                // Its writes may still be there, waiting for their purge: not readable.
                None => return Ok(PendingWrites::default()),
            };
            let mut page = PendingWrites {
                sequence: record.write_sequence,
                ..PendingWrites::default()
            };
            let first = match after {
                Some(index) if index.get() == u32::MAX => return Ok(page),
                Some(index) => index.get() + 1,
                None => 0,
            };
            if record.status == SnapshotStatus::Completed {
                return Ok(page);
            }
            let pending = txn.open_table(PENDING_BLOCKS).map_err(backend)?;
            for entry in pending
                .range((id.as_str(), first)..=(id.as_str(), u32::MAX))
                .map_err(backend)?
                .take(limit)
            {
                let (key, value) = entry.map_err(backend)?;
                page.blocks
                    .push((BlockIndex::new(key.value().1), ChunkDigest(value.value())));
            }
            let Some(last) = page.blocks.last().map(|(index, _)| index.get()) else {
                return Ok(page);
            };
            let stored = txn.open_table(PENDING_CHECKSUMS).map_err(backend)?;
            for entry in stored
                .range((id.as_str(), first)..=(id.as_str(), last))
                .map_err(backend)?
            {
                let (key, value) = entry.map_err(backend)?;
                page.checksums
                    .push((BlockIndex::new(key.value().1), value.value()));
            }
            Ok(page)
        })
        .await
    }

    async fn seal_snapshot(&self, seal: Seal) -> Result<(), SealError> {
        let id = seal.snapshot.clone();
        let purge = self
            .write(|tx| WriteRequest::Seal(Box::new(seal), tx))
            .await??;
        if purge {
            self.spawn_purge(id);
        }
        Ok(())
    }

    async fn stage_nodes(
        &self,
        id: &SnapshotId,
        roots: Vec<NodeHash>,
        nodes: Vec<(NodeHash, Vec<u8>)>,
    ) -> Result<(), SealError> {
        self.write(|tx| WriteRequest::Stage(id.clone(), roots, nodes, tx))
            .await?
    }

    async fn announce_put(&self, digest: ChunkDigest) -> Result<Announced, StoreError> {
        let id = self
            .announcements
            .announce(digest)
            .ok_or_else(|| StoreError::Conflict(format!("chunk {digest} is being deleted")))?;
        // A point read, on the calling task, like `snapshot`.
        let registered = (|| {
            let txn = self.db.begin_read().map_err(backend)?;
            let registry = txn.open_table(CHUNKS).map_err(backend)?;
            Ok::<_, StoreError>(registry.get(digest.0).map_err(backend)?.is_some())
        })();
        match registered {
            Ok(registered) => Ok(Announced { id, registered }),
            Err(error) => {
                self.announcements.withdraw(id);
                Err(error)
            }
        }
    }

    fn withdraw_put(&self, id: AnnouncementId) {
        self.announcements.withdraw(id);
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.leases.acquire(name, holder, ttl))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.leases.release(name, holder);
        Ok(())
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let name = name.to_owned();
        self.write(|tx| WriteRequest::Secret(name, candidate, tx))
            .await?
    }

    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord, StoreError> {
        self.write(|tx| WriteRequest::CreateKey(key, tx)).await?
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let keys = txn.open_table(KEYS).map_err(backend)?;
            let value = keys.get(id.as_str()).map_err(backend)?;
            value.map(|v| decode_key(v.value())).transpose()
        })
        .await
    }

    async fn keys(&self, owner: Option<&AccountId>) -> Result<Vec<KeyRecord>, StoreError> {
        let owner = owner.cloned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let keys = txn.open_table(KEYS).map_err(backend)?;
            let mut out = Vec::new();
            // In key order: by id, as the port asks.
            for entry in keys.iter().map_err(backend)? {
                let (_, value) = entry.map_err(backend)?;
                let key = decode_key(value.value())?;
                if owner.as_ref().is_none_or(|o| *o == key.owner) {
                    out.push(key);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn set_key_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let id = id.to_owned();
        self.write(|tx| WriteRequest::SetKeyEnabled(id, enabled, tx))
            .await?
    }

    fn nodes(&self) -> Result<RedbNodes, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = txn.open_table(NODES).map_err(backend)?;
        Ok(RedbNodes { table })
    }

    async fn list_snapshots(
        &self,
        owner: Option<&AccountId>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        let owner = owner.cloned();
        self.read(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let table = txn.open_table(SNAPSHOTS).map_err(backend)?;
            let mut out = Vec::new();
            for entry in table.iter().map_err(backend)? {
                let (_, value) = entry.map_err(backend)?;
                let record = decode_record(value.value())?;
                if owner.as_ref().is_none_or(|o| *o == record.owner) {
                    out.push(record);
                }
            }
            Ok(out)
        })
        .await
    }
}
