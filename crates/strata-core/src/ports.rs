//! The two storage ports: snapshot metadata (records, pending writes, tree nodes) and
//! chunk bytes. Each method's doc states the guarantee an adapter must give; the
//! service's correctness argument (see the crate docs) rests on exactly these.

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};

use crate::block_map::{NodeHash, NodeSource};
use crate::encryption::KeyRecord;
use crate::retry::AsStoreError;
use crate::snapshot::SnapshotRecord;

/// A storage failure, by kind, so that a retry policy can act on it and a log can show
/// its cause (the source chain).
///
/// The rule adapters follow: a kind that [`StoreError::is_retryable`] accepts is returned
/// only when repeating the same call is safe, because the call had no effect or because
/// repeating it has the same effect as doing it once.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// An I/O operation of the backend failed.
    #[error("cannot {operation}: {source}")]
    Io {
        /// What was being done ("write segment 0000002a.seg", ...).
        operation: String,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A concurrent change won (a serialization failure, a conditional write refused, an
    /// object being deleted): the same call may succeed when repeated.
    #[error("conflicting concurrent change: {0}")]
    Conflict(String),
    /// The backend cannot be reached or is overloaded right now.
    #[error("storage backend unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The client library's error, if any.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The store was shut down (or its writer stopped): nothing more will succeed.
    #[error("the store is closed: {0}")]
    Closed(String),
    /// Stored data is damaged or inconsistent. Never retried.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Any other backend failure; repeating the call will not help.
    #[error("storage backend error: {0}")]
    Backend(String),
}

impl StoreError {
    /// An [`StoreError::Io`] for `operation`.
    pub fn io(operation: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            operation: operation.into(),
            source: Arc::new(source),
        }
    }

    /// An [`StoreError::Unavailable`] with its cause.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// Whether repeating the same call may succeed (see the rule on [`StoreError`]).
    /// I/O errors are retryable only for the kinds that say "not now": a full disk or a
    /// media error stays what it is.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Conflict(_) | StoreError::Unavailable { .. } => true,
            StoreError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
            ),
            StoreError::Closed(_) | StoreError::Corrupt(_) | StoreError::Backend(_) => false,
        }
    }
}

/// A point in the metadata store's commit order, issued by the store (never by a
/// caller's clock) to every node write and to every GC view: of two stamps, the larger
/// was issued later. One store issues them for every node of a cluster, so comparing
/// stamps never compares two machines' clocks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(pub u64);

/// One Put's announcement of the content it is about to write
/// ([`MetadataStore::announce_put`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnnouncementId(pub u64);

/// What [`MetadataStore::announce_put`] did and learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announced {
    /// The announcement, to withdraw.
    pub id: AnnouncementId,
    /// Whether the chunk registry says content with this digest is stored: then the Put
    /// may record its write without storing the bytes (the record checks it again).
    pub registered: bool,
}

/// A chunk the metadata store knows is stored ([`GcView::chunks`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredChunk {
    /// Its digest.
    pub digest: ChunkDigest,
    /// Its size in bytes.
    pub size: u64,
    /// The stamp of the last write record that stored or re-used it.
    pub stamp: Stamp,
}

/// What [`MetadataStore::create_snapshot`] did.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// The record was stored.
    Created,
    /// The owner already used this client token: here is the snapshot it created.
    ClientTokenExists(Box<SnapshotRecord>),
    /// The record names a parent that is gone, not completed, or whose root is not the
    /// record's `base_root` any more: nothing was stored.
    ParentGone,
}

/// One block write to record on a pending snapshot.
#[derive(Debug, Clone)]
pub struct BlockWrite {
    /// The pending snapshot.
    pub snapshot: SnapshotId,
    /// Where the block goes.
    pub index: BlockIndex,
    /// Its content, already durable in the chunk store.
    pub digest: ChunkDigest,
    /// The client's `x-amz-Progress`, if sent.
    pub progress: Option<u8>,
    /// The time of the write (Unix milliseconds); restarts the inactivity timeout.
    pub at_ms: i64,
    /// `Some(size)` when this Put stored the chunk itself: the record registers it. `None`
    /// when the Put relied on the registry (the chunk was registered when announced): the
    /// record is then refused unless the chunk is still registered
    /// ([`RecordBlockError::ChunkNotRegistered`]). Ignored for the zero block, which is
    /// never stored.
    pub stored_size: Option<u64>,
    /// An opaque value kept with the write until the seal, replacing the previous write's
    /// at this index (and removed by a write without one). For an encrypted snapshot: the
    /// client's checksum of the plaintext, masked under the snapshot's key, which
    /// CompleteSnapshot's aggregate check needs since `digest` names the ciphertext
    /// ([`crate::encryption`]). `None` for a plaintext snapshot.
    pub checksum: Option<[u8; 32]>,
}

/// Why a block write was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RecordBlockError {
    /// The snapshot does not exist (any more).
    #[error("snapshot not found")]
    NotFound,
    /// The snapshot left `pending` before the write committed.
    #[error("snapshot is not pending")]
    NotPending(Box<SnapshotRecord>),
    /// The write relied on a registered chunk that is not registered any more (found
    /// damaged and forgotten, or condemned by GC, since the Put was announced): nothing
    /// was recorded; store the bytes and record again.
    #[error("the chunk is not registered as stored any more")]
    ChunkNotRegistered,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AsStoreError for RecordBlockError {
    fn as_store_error(&self) -> Option<&StoreError> {
        match self {
            RecordBlockError::Store(error) => Some(error),
            RecordBlockError::NotFound
            | RecordBlockError::NotPending(_)
            | RecordBlockError::ChunkNotRegistered => None,
        }
    }
}

/// The writes of a pending snapshot, read in one consistent view.
#[derive(Debug, Clone, Default)]
pub struct PendingWrites {
    /// Final content per written index, ascending, unique.
    pub blocks: Vec<(BlockIndex, ChunkDigest)>,
    /// The [`BlockWrite::checksum`] of the final write per index, for the indexes whose
    /// final write carried one; ascending, unique.
    pub checksums: Vec<(BlockIndex, [u8; 32])>,
    /// The snapshot's write sequence number when this view was taken.
    pub sequence: u64,
}

/// What [`MetadataStore::seal_snapshot`] makes of a pending snapshot: only the
/// completion, applied to the record *as stored* when the seal commits (tags changed since
/// the tree was built are kept). See [`SnapshotRecord::completed`].
#[derive(Debug, Clone)]
pub struct Seal {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// The snapshot's write sequence number the tree was built from.
    pub expected_sequence: u64,
    /// The root of the block map (`None`: empty).
    pub root: Option<NodeHash>,
    /// Distinct indexes written.
    pub changed_blocks: u64,
    /// Completion time (Unix ms).
    pub completed_at_ms: i64,
    /// Tree nodes to store; a node that exists already is stamped again.
    pub new_nodes: Vec<(NodeHash, Vec<u8>)>,
}

/// Why a seal was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SealError {
    /// The snapshot is gone or no longer pending.
    #[error("snapshot is not pending")]
    NotPending,
    /// A block write committed after the tree was built; rebuild and retry.
    #[error("the snapshot changed while it was being sealed")]
    Raced,
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Snapshot metadata: records, the client-token index, pending block writes and block-map
/// tree nodes.
///
/// Every method is atomic. Every method that returns `Ok` after a write has made that write
/// durable: a crash after the return loses nothing.
pub trait MetadataStore: Send + Sync + 'static {
    /// A read view of tree nodes, usable from blocking threads.
    type Nodes: NodeSource + Send + 'static;

    /// Store a new snapshot record. If `record.client_token` is set and the same owner already
    /// created a snapshot with that token, nothing is written and that snapshot is returned.
    /// If `record.parent` is set, the record is stored only if, in the same transaction, the
    /// parent exists, belongs to the same owner, is `completed` and has `record.base_root`
    /// as its root; else nothing is written ([`CreateOutcome::ParentGone`]). So a child is
    /// never built on a tree whose snapshot was deleted (and collected) meanwhile.
    fn create_snapshot(
        &self,
        record: SnapshotRecord,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// The record of `id`, if it exists.
    fn snapshot(
        &self,
        id: &SnapshotId,
    ) -> impl Future<Output = Result<Option<SnapshotRecord>, StoreError>> + Send;

    /// Atomically read, change and store one record: `change` sees the stored record and
    /// returns the replacement, or `None` to leave it as it is. Returns the stored
    /// replacement, or `None` if the snapshot does not exist or `change` declined.
    fn update_snapshot(
        &self,
        id: &SnapshotId,
        change: RecordChange,
    ) -> impl Future<Output = Result<Option<SnapshotRecord>, StoreError>> + Send;

    /// Remove a snapshot in any state: its record, pending writes, staged roots and
    /// client-token entry.
    /// Returns false if it did not exist. Its tree nodes and chunks are left to GC.
    fn delete_snapshot(
        &self,
        id: &SnapshotId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Record a block write, atomically with the check that the snapshot is still pending
    /// *at the write's time* (`write.at_ms` not past the stored record's deadline: a write
    /// that crossed it is refused with the record as of that time, so a timed-out snapshot
    /// never comes back to life), bump its write sequence, progress and last-activity
    /// time. Later writes to the same index replace earlier ones.
    ///
    /// In the same transaction, the chunk registry: a write that stored its chunk
    /// (`stored_size`) registers it; one that relied on the registry is refused with
    /// [`RecordBlockError::ChunkNotRegistered`] unless the chunk is registered; and either
    /// way the chunk is stamped with this transaction's stamp (so a collection whose view
    /// is older keeps it), and a write of a condemned chunk is refused the same way.
    /// Implementations may group concurrent calls into one transaction, but each call
    /// returns only once its write is durable.
    fn record_block(
        &self,
        write: BlockWrite,
    ) -> impl Future<Output = Result<(), RecordBlockError>> + Send;

    /// One page of the recorded writes of a pending snapshot (or of one in `error`):
    /// up to `limit` writes at indexes after `after` (from the first when `None`),
    /// ascending, with the checksums of those writes and the snapshot's write sequence,
    /// all of one consistent view. Empty for a snapshot that does not exist or is
    /// completed. Pages whose sequences are equal are pages of one state of the writes
    /// (a write bumps the sequence), so a reader that finds every page's sequence equal
    /// read one consistent whole, in bounded memory.
    fn pending_writes_page(
        &self,
        id: &SnapshotId,
        after: Option<BlockIndex>,
        limit: usize,
    ) -> impl Future<Output = Result<PendingWrites, StoreError>> + Send;

    /// Every recorded write of a pending snapshot, in one consistent view: the pages of
    /// [`MetadataStore::pending_writes_page`] read again from the start whenever a write
    /// moved the sequence between them. For small snapshots and tests; CompleteSnapshot
    /// reads the pages itself.
    fn pending_writes(
        &self,
        id: &SnapshotId,
    ) -> impl Future<Output = Result<PendingWrites, StoreError>> + Send {
        async move {
            const PAGE: usize = 65_536;
            'read: loop {
                let mut all = PendingWrites::default();
                let mut after = None;
                let mut sequence = None;
                loop {
                    let page = self.pending_writes_page(id, after, PAGE).await?;
                    if sequence.is_some_and(|s| s != page.sequence) {
                        continue 'read;
                    }
                    sequence = Some(page.sequence);
                    all.sequence = page.sequence;
                    after = page.blocks.last().map(|(index, _)| *index);
                    let full = page.blocks.len() >= PAGE;
                    all.blocks.extend(page.blocks);
                    all.checksums.extend(page.checksums);
                    if !full {
                        return Ok(all);
                    }
                }
            }
        }
    }

    /// Store tree nodes of a snapshot being completed ahead of its seal, so that a seal
    /// of millions of writes is not one huge transaction: in one transaction, only if
    /// the snapshot is pending (else [`SealError::NotPending`]), store `nodes` (each
    /// stamped with this transaction's stamp, whether new or already stored) and record
    /// `roots` as staged for the snapshot. While the snapshot is stored as pending, every
    /// node under a staged root is kept by GC ([`GcView::staged`]); the seal, a deletion
    /// or a drop of its pending writes forgets its staged roots.
    /// `nodes` must hold every node under `roots` that is not already stored under a
    /// root GC keeps.
    fn stage_nodes(
        &self,
        id: &SnapshotId,
        roots: Vec<NodeHash>,
        nodes: Vec<(NodeHash, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), SealError>> + Send;

    /// Seal a pending snapshot: store the nodes (each stamped with this transaction's
    /// stamp, whether new or already stored), complete the stored record
    /// ([`SnapshotRecord::completed`]), forget its staged roots and drop its pending
    /// writes, in one transaction; only if its write sequence still equals
    /// `expected_sequence`. The root may reference nodes staged before
    /// ([`MetadataStore::stage_nodes`]). An adapter may drop the pending writes of a big
    /// snapshot after the seal commits, in bounded steps: they are no longer read (see
    /// [`MetadataStore::pending_writes_page`]) and GC keeps their chunks at most a little
    /// longer.
    fn seal_snapshot(&self, seal: Seal) -> impl Future<Output = Result<(), SealError>> + Send;

    /// Announce that a Put of content `digest` is under way, and say whether the chunk is
    /// registered as stored. From the moment this returns until
    /// [`MetadataStore::withdraw_put`], [`MetadataStore::condemn_chunks`] — on any process
    /// sharing this store — keeps the digest. Atomic with respect to `condemn_chunks`:
    /// either the announcement is seen by a condemnation, or it is refused with
    /// [`StoreError::Conflict`] because the digest is condemned (retry once the deletion
    /// is finalized). Announcements need not survive the process that made them (its Puts
    /// end with it); a store shared by many processes lets them lapse after a while.
    fn announce_put(
        &self,
        digest: ChunkDigest,
    ) -> impl Future<Output = Result<Announced, StoreError>> + Send;

    /// Withdraw an announcement (after the Put's write record committed, or when the Put
    /// gave up). Never fails from the caller's side: an announcement that cannot be
    /// withdrawn lapses. The withdrawal may take effect a little later (a shared store
    /// may delete it in the background): a chunk is then kept a little longer, never
    /// shorter.
    fn withdraw_put(&self, id: AnnouncementId);

    /// Take or renew the lease `name` for `holder` until `ttl` from now, by the store's
    /// clock. Returns whether `holder` holds it: true if it was free, expired, or already
    /// `holder`'s (then it is renewed). Exclusive: while one holder's lease has not
    /// expired, every other holder gets false. Background work that must run once per
    /// cluster (GC, the timeout sweep) runs only under its lease; a crashed holder's lease
    /// expires.
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Give the lease `name` up, if `holder` holds it (else nothing happens).
    fn release_lease(
        &self,
        name: &str,
        holder: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The cluster secret `name` (the token key, ...): the one stored, or else
    /// `candidate`, stored now — atomically, so that every process sharing the store gets
    /// the same value (the first to store one wins). Durable on return.
    fn secret(
        &self,
        name: &str,
        candidate: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, StoreError>> + Send;

    /// Store a key of the local key service ([`crate::encryption`]) unless a key with its
    /// id exists; returns the key as stored (the first stored wins, so two processes
    /// creating an account's default key at once both get the same one). Durable on
    /// return.
    fn create_key(
        &self,
        key: KeyRecord,
    ) -> impl Future<Output = Result<KeyRecord, StoreError>> + Send;

    /// The key `id`, if it exists.
    fn key(&self, id: &str) -> impl Future<Output = Result<Option<KeyRecord>, StoreError>> + Send;

    /// Every key owned by `owner` (every key when `None`), ordered by id.
    fn keys(
        &self,
        owner: Option<&AccountId>,
    ) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send;

    /// Enable or disable the key `id`, atomically; returns the key as stored now, or
    /// `None` if there is no such key. Durable on return.
    fn set_key_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> impl Future<Output = Result<Option<KeyRecord>, StoreError>> + Send;

    /// A node reader for tree walks (which run on blocking threads).
    fn nodes(&self) -> Result<Self::Nodes, StoreError>;

    /// Every snapshot owned by `owner` (every snapshot when `None`), ordered by id.
    fn list_snapshots(
        &self,
        owner: Option<&AccountId>,
    ) -> impl Future<Output = Result<Vec<SnapshotRecord>, StoreError>> + Send;

    /// One consistent view for garbage collection: every record, the digests written to
    /// every snapshot that has pending writes, the staged roots of every snapshot stored as
    /// pending, every stored node and every registered
    /// chunk with its stamp, and a node reader of the same instant; and the view's own
    /// stamp, `start`, issued so that every write visible in the view is stamped before it
    /// and every later one (every one not visible) at or after it.
    fn gc_view(&self) -> impl Future<Output = Result<GcView<Self::Nodes>, StoreError>> + Send;

    /// Delete the nodes in `hashes` last stamped before `stamped_before` (a node written or
    /// re-written since is kept), in the transaction that checks it. Returns how many were
    /// deleted.
    fn delete_nodes(
        &self,
        hashes: Vec<NodeHash>,
        stamped_before: Stamp,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Drop the pending writes and staged roots of snapshots that are in `error` (timed
    /// out); a snapshot that is not in `error` any more is left alone. Returns how many
    /// writes were dropped.
    fn drop_pending_writes(
        &self,
        ids: Vec<SnapshotId>,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The first step of deleting chunks, in one transaction: for each digest that is not
    /// announced and not registered with a stamp at or after `stamped_before` (re-used
    /// since the collection's view), unregister it and write a tombstone. Returns the
    /// digests condemned. From then on `announce_put` of them is refused
    /// ([`StoreError::Conflict`]) and write records of them are refused, until
    /// [`MetadataStore::finalize_chunks`]: so a re-upload never races the deletion of its
    /// own content.
    fn condemn_chunks(
        &self,
        digests: Vec<ChunkDigest>,
        stamped_before: Stamp,
    ) -> impl Future<Output = Result<Vec<ChunkDigest>, StoreError>> + Send;

    /// The digests condemned and not finalized (left by a collection that stopped between
    /// its steps: the next one deletes and finalizes them first).
    fn condemned_chunks(&self)
    -> impl Future<Output = Result<Vec<ChunkDigest>, StoreError>> + Send;

    /// The last step of deleting chunks: remove the tombstones of `digests` (their objects
    /// are deleted). Idempotent.
    fn finalize_chunks(
        &self,
        digests: Vec<ChunkDigest>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Unregister a chunk found damaged (no tombstone: the next Put of its content stores
    /// it again, which repairs every snapshot that references it). Idempotent.
    fn forget_chunk(
        &self,
        digest: ChunkDigest,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// A read-modify-write of one record, run atomically by the store.
pub type RecordChange = Box<dyn FnOnce(&SnapshotRecord) -> Option<SnapshotRecord> + Send>;

/// See [`MetadataStore::gc_view`].
pub struct GcView<N> {
    /// The view's stamp: nodes stamped at or after it were written after the view.
    pub start: Stamp,
    /// Every snapshot record.
    pub records: Vec<SnapshotRecord>,
    /// Digests recorded as pending writes, per snapshot.
    pub pending: Vec<(SnapshotId, Vec<ChunkDigest>)>,
    /// The staged roots ([`MetadataStore::stage_nodes`]) of snapshots stored as pending:
    /// their subtrees are live.
    pub staged: Vec<NodeHash>,
    /// Every stored node and the stamp of its last write.
    pub nodes: Vec<(NodeHash, Stamp)>,
    /// Every registered chunk.
    pub chunks: Vec<RegisteredChunk>,
    /// Reads nodes as of the same instant.
    pub reader: N,
}

/// Chunk bytes, named by the SHA-256 of their content: what every object store does
/// well, and nothing more. Which chunks are wanted, and when one may be deleted, is the
/// metadata store's business (its chunk registry, ADR 0004).
pub trait ChunkStore: Send + Sync + 'static {
    /// Store `data` under `digest`. The caller has verified `digest == sha256(data)`.
    /// Idempotent: storing content that is stored already is harmless (it may replace it
    /// with identical bytes), so correctness never depends on conditional writes. An
    /// adapter may skip the write only when it knows its copy is intact: a copy found
    /// damaged by [`ChunkStore::get`] is replaced. Durable on return.
    fn put(
        &self,
        digest: ChunkDigest,
        data: Bytes,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The bytes stored under `digest`, or `None` if nothing is. Verified by the store: the
    /// bytes are checked against a checksum recorded when they were stored (computed from
    /// the bytes whose SHA-256 the caller of [`ChunkStore::put`] verified), and a mismatch
    /// (or a medium that cannot return them) is [`StoreError::Corrupt`]. Wrong bytes are
    /// never returned, and a transient failure is never `Corrupt`.
    fn get(
        &self,
        digest: ChunkDigest,
    ) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;

    /// Delete the chunks of `digests` (absent ones are skipped). Idempotent. Returns the
    /// bytes freed, as far as the store knows.
    fn delete(
        &self,
        digests: Vec<ChunkDigest>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` stored chunks with digests after `after` (from the first when
    /// `None`), in ascending digest order: a listing in pages, for finding objects no
    /// write record registered (a Put that crashed between storing and recording).
    fn list(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StoredChunk>, StoreError>> + Send;
}

/// One entry of [`ChunkStore::list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredChunk {
    /// Its name.
    pub digest: ChunkDigest,
    /// Size in bytes.
    pub size: u64,
    /// When its bytes were written (by the store's clock): an unregistered chunk younger
    /// than the collection's grace period is kept, in case its Put is still recording.
    pub written: SystemTime,
}
