//! Errors of the snapshot service.
//!
//! Each variant is a decision about what the client did wrong (or what went wrong
//! inside), named in domain terms. The HTTP adapter maps every variant to exactly one EBS
//! exception and `Reason` in a single exhaustive `match`, so adding a variant forces a
//! decision about its wire form.

use strata_types::SnapshotId;

use crate::ports::StoreError;

/// Why a snapshot operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    /// A parameter has an invalid value or the snapshot is in the wrong state for it.
    #[error("{0}")]
    InvalidParameter(String),
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
    /// Stored data failed its checksum or is missing: never served.
    #[error("{0}")]
    CorruptData(String),
    /// The storage backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
