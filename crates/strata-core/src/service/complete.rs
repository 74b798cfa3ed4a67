//! CompleteSnapshot.

use strata_types::{AccountId, ChunkDigest, SnapshotId};

use super::{SnapshotService, not_pending, run_blocking};
use crate::block_map;
use crate::checksum::linear_aggregate;
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore, PendingWrites, Seal, SealError, StoreError};
use crate::snapshot::{SnapshotRecord, SnapshotStatus};

/// How often CompleteSnapshot rebuilds the tree when block writes race with it.
const SEAL_ATTEMPTS: usize = 5;

/// CompleteSnapshot's optional aggregate checksum.
#[derive(Debug, Clone, Copy)]
pub struct AggregateChecksum {
    /// The claimed `LINEAR` aggregate.
    pub digest: ChunkDigest,
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// The `LINEAR` aggregate of the blocks written: of their digests, or for a snapshot
    /// encrypted at rest (whose digests name envelopes) of the clients' checksums kept,
    /// masked, with the writes.
    async fn aggregate_of(
        &self,
        record: &SnapshotRecord,
        pending: &PendingWrites,
    ) -> Result<ChunkDigest, ServiceError> {
        let Some(key) = self.snapshot_data_key(record).await? else {
            return Ok(linear_aggregate(&pending.blocks));
        };
        let masked: std::collections::HashMap<_, _> = pending.checksums.iter().copied().collect();
        let mut checksums = Vec::with_capacity(pending.blocks.len());
        for (index, digest) in &pending.blocks {
            let Some(value) = masked.get(index) else {
                return Err(ServiceError::Store(StoreError::Corrupt(format!(
                    "the write of block {index} of encrypted snapshot '{}' has no checksum",
                    record.id
                ))));
            };
            checksums.push((*index, ChunkDigest(key.mask_checksum(digest, *value))));
        }
        Ok(linear_aggregate(&checksums))
    }

    /// CompleteSnapshot: check the count and aggregate, build the block map, seal.
    pub async fn complete_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
        changed_blocks_count: i64,
        aggregate: Option<AggregateChecksum>,
    ) -> Result<SnapshotStatus, ServiceError> {
        for _ in 0..SEAL_ATTEMPTS {
            let record = self.owned_snapshot(owner, id).await?;
            let record = self.expire_if_due(record).await?;
            match record.status {
                SnapshotStatus::Completed => return Ok(SnapshotStatus::Completed),
                SnapshotStatus::Error => return Err(not_pending(&record)),
                SnapshotStatus::Pending => {}
            }
            let pending = crate::with_retries!(
                self.retry,
                "read pending writes",
                self.metadata.pending_writes(id)
            )?;
            let written = pending.blocks.len() as u64;
            let mismatch = if u64::try_from(changed_blocks_count).ok() != Some(written) {
                Some(ServiceError::ChangedBlocksCountMismatch {
                    snapshot: id.clone(),
                    claimed: changed_blocks_count,
                    written,
                })
            } else if let Some(claimed) = aggregate
                && claimed.digest != self.aggregate_of(&record, &pending).await?
            {
                Some(ServiceError::AggregateChecksumMismatch {
                    snapshot: id.clone(),
                })
            } else {
                None
            };
            if let Some(mismatch) = mismatch {
                // Another CompleteSnapshot (on this node or another) may have sealed the
                // snapshot between the record read above and the pending writes read,
                // which then finds none: that snapshot is completed, not miscounted.
                let record = self.owned_snapshot(owner, id).await?;
                if record.status == SnapshotStatus::Completed {
                    return Ok(SnapshotStatus::Completed);
                }
                return Err(mismatch);
            }
            let parent_root = record.base_root;
            let nodes = self.metadata.nodes()?;
            let keep_below = record.volume_size.block_count();
            let blocks = pending.blocks;
            let update =
                run_blocking(move || block_map::apply(&nodes, parent_root, &blocks, keep_below))
                    .await?;
            let seal = Seal {
                snapshot: id.clone(),
                expected_sequence: pending.sequence,
                root: update.root,
                changed_blocks: written,
                completed_at_ms: self.now_ms(),
                new_nodes: update.new_nodes,
            };
            match self.metadata.seal_snapshot(seal).await {
                Ok(()) => return Ok(SnapshotStatus::Completed),
                Err(SealError::Raced) => continue,
                Err(SealError::NotPending) => {
                    let record = self.owned_snapshot(owner, id).await?;
                    if record.status == SnapshotStatus::Completed {
                        return Ok(SnapshotStatus::Completed);
                    }
                    return Err(not_pending(&record));
                }
                Err(SealError::Store(e)) => return Err(e.into()),
            }
        }
        Err(ServiceError::ConflictingBlockUpdate(format!(
            "Blocks kept being written to snapshot '{id}' while it was being completed."
        )))
    }
}
