//! Errors of the snapshot service.
//!
//! Each variant is a decision about what the client did wrong (or what went wrong
//! inside), named in domain terms. The causes a client acts on carry their facts as fields
//! (which snapshot, which status, what was claimed and what was found), and the HTTP adapter
//! renders their text: it maps every variant to exactly one EBS exception, `Reason` and
//! message in a single exhaustive `match`, so adding a variant forces a decision about its
//! wire form. The `Display` texts here are for logs and tests.

use strata_types::SnapshotId;

use crate::ports::StoreError;
use crate::snapshot::SnapshotStatus;

/// Why a snapshot operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// A parameter has an invalid value (one not covered by a variant below).
    #[error("{0}")]
    InvalidParameter(String),
    /// The snapshot is not `pending`, so it takes no writes and cannot be completed.
    #[error("snapshot {snapshot} is not pending (status {status:?})")]
    NotPending {
        /// The snapshot.
        snapshot: SnapshotId,
        /// Its status now.
        status: SnapshotStatus,
    },
    /// StartSnapshot named a parent that is not `completed`.
    #[error("parent {parent} is not completed (status {status:?})")]
    ParentNotCompleted {
        /// The parent.
        parent: SnapshotId,
        /// Its status now.
        status: SnapshotStatus,
    },
    /// A PutSnapshotBlock body is not exactly one block long.
    #[error("block data of {len} bytes")]
    WrongBlockSize {
        /// The body's length.
        len: usize,
    },
    /// A PutSnapshotBlock body does not hash to its `x-amz-Checksum`.
    #[error("block data does not match its checksum")]
    BlockChecksumMismatch,
    /// CompleteSnapshot's `ChangedBlocksCount` differs from the distinct indexes written.
    #[error("ChangedBlocksCount {claimed} for {snapshot}, {written} written")]
    ChangedBlocksCountMismatch {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The count the client sent.
        claimed: i64,
        /// The distinct indexes written.
        written: u64,
    },
    /// CompleteSnapshot's `LINEAR` aggregate differs from the one of the blocks written.
    #[error("the aggregate checksum of {snapshot} does not match")]
    AggregateChecksumMismatch {
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// The volume size is out of range.
    #[error("{0}")]
    InvalidVolumeSize(String),
    /// A tag is malformed, duplicated or over the limit.
    #[error("{0}")]
    InvalidTag(String),
    /// More tags than a snapshot may have.
    #[error("{0}")]
    TagLimitExceeded(String),
    /// A block index is outside the volume.
    #[error("{0}")]
    InvalidBlock(String),
    /// A block token is forged, altered, expired or for another block.
    #[error("{0}")]
    InvalidBlockToken(String),
    /// A page token is forged, altered, expired or from another listing.
    #[error("{0}")]
    InvalidPageToken(String),
    /// ListChangedBlocks on snapshots of different lineages.
    #[error("{first} and {second} are not related")]
    UnrelatedSnapshots {
        /// The first snapshot.
        first: SnapshotId,
        /// The second snapshot.
        second: SnapshotId,
    },
    /// The snapshot does not exist, is not the caller's, or is not in a readable state.
    #[error("The snapshot '{0}' does not exist.")]
    SnapshotNotFound(SnapshotId),
    /// A client token was reused with different parameters.
    #[error("{0}")]
    IdempotencyConflict(String),
    /// Block writes kept racing with CompleteSnapshot.
    #[error("{0}")]
    ConflictingBlockUpdate(String),
    /// The KMS key is unknown, disabled, not the one the snapshot's lineage uses, or the
    /// server has no master key to use it with.
    #[error("{0}")]
    InvalidCustomerKey(String),
    /// The KMS key belongs to another account.
    #[error("{0}")]
    KeyAccessDenied(String),
    /// The account has as many pending snapshots as its quota allows.
    #[error("{0}")]
    PendingSnapshotLimit(String),
    /// Stored data failed its checksum or is missing: never served.
    #[error("{0}")]
    CorruptData(String),
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
