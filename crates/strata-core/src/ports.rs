//! The two storage ports: snapshot metadata (records, pending writes, tree nodes) and
//! chunk bytes. Each method's doc states the guarantee an adapter must give; the
//! service's correctness argument (see the crate docs) rests on exactly these.

use std::future::Future;

use bytes::Bytes;
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};

use crate::block_map::{NodeHash, NodeSource};
use crate::snapshot::SnapshotRecord;

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, connection, ...). May succeed if retried.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// Stored data is damaged or inconsistent. Never retried.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// What [`MetadataStore::create_snapshot`] did.
#[derive(Debug, Clone)]
pub enum CreateOutcome {
    /// The record was stored.
    Created,
    /// The owner already used this client token: here is the snapshot it created.
    ClientTokenExists(Box<SnapshotRecord>),
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
    /// Storage failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The writes of a pending snapshot, read in one consistent view.
#[derive(Debug, Clone, Default)]
pub struct PendingWrites {
    /// Final content per written index, ascending, unique.
    pub blocks: Vec<(BlockIndex, ChunkDigest)>,
    /// The snapshot's write sequence number when this view was taken.
    pub sequence: u64,
}

/// The completed form of a snapshot, stored by [`MetadataStore::seal_snapshot`].
#[derive(Debug, Clone)]
pub struct Seal {
    /// The snapshot's write sequence number the tree was built from.
    pub expected_sequence: u64,
    /// The sealed record (status completed, root and counters set).
    pub record: SnapshotRecord,
    /// Tree nodes to store (insert-if-absent).
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
    fn create_snapshot(
        &self,
        record: SnapshotRecord,
    ) -> impl Future<Output = Result<CreateOutcome, StoreError>> + Send;

    /// The record of `id`, if it exists.
    fn snapshot(
        &self,
        id: &SnapshotId,
    ) -> impl Future<Output = Result<Option<SnapshotRecord>, StoreError>> + Send;

    /// Replace a record that is still pending (status transitions such as timeout to error).
    /// Returns false, writing nothing, if the stored record is no longer pending.
    fn update_pending(
        &self,
        record: SnapshotRecord,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Record a block write, atomically with the check that the snapshot is still pending,
    /// bump its write sequence, progress and last-activity time. Later writes to the same
    /// index replace earlier ones. Implementations may group concurrent calls into one
    /// transaction, but each call returns only once its write is durable.
    fn record_block(
        &self,
        write: BlockWrite,
    ) -> impl Future<Output = Result<(), RecordBlockError>> + Send;

    /// The recorded writes of a pending snapshot, in one consistent view.
    fn pending_writes(
        &self,
        id: &SnapshotId,
    ) -> impl Future<Output = Result<PendingWrites, StoreError>> + Send;

    /// Seal a pending snapshot: store the nodes and the completed record, and drop its pending
    /// writes, in one transaction; only if its write sequence still equals
    /// `expected_sequence`.
    fn seal_snapshot(&self, seal: Seal) -> impl Future<Output = Result<(), SealError>> + Send;

    /// A node reader for tree walks (which run on blocking threads).
    fn nodes(&self) -> Result<Self::Nodes, StoreError>;

    /// Every snapshot owned by `owner`, ordered by id.
    fn list_snapshots(
        &self,
        owner: &AccountId,
    ) -> impl Future<Output = Result<Vec<SnapshotRecord>, StoreError>> + Send;
}

/// Chunk bytes, named by the SHA-256 of their content.
pub trait ChunkStore: Send + Sync + 'static {
    /// Store `data` under `digest`. The caller has verified `digest == sha256(data)`.
    /// Idempotent: storing an existing chunk is a cheap no-op. Durable on return.
    fn put(
        &self,
        digest: ChunkDigest,
        data: Bytes,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The bytes stored under `digest`, or `None`. Not verified here: readers check the
    /// digest before trusting the bytes.
    fn get(
        &self,
        digest: ChunkDigest,
    ) -> impl Future<Output = Result<Option<Bytes>, StoreError>> + Send;
}
