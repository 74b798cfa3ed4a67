//! CompleteSnapshot, in memory bounded whatever the number of writes: the pending writes
//! are read in pages, the aggregate is hashed and the tree built as they stream past
//! ([`TreeBuilder`]), and finished subtrees are stored ahead of the seal in bounded
//! transactions ([`MetadataStore::stage_nodes`], kept by GC until the seal). The seal
//! itself then stores only the last nodes and flips the record, so it never stalls other
//! snapshots' writes behind one huge transaction.

use std::sync::Arc;

use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};

use super::{SnapshotService, not_pending, run_blocking};
use crate::block_map::{NodeBatch, TreeBuilder};
use crate::checksum::LinearAggregate;
use crate::encryption::DataKey;
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore, PendingWrites, Seal, SealError, StoreError};
use crate::retry::AsStoreError;
use crate::snapshot::{SnapshotRecord, SnapshotStatus};

/// How often CompleteSnapshot rebuilds the tree when block writes race with it.
const SEAL_ATTEMPTS: usize = 5;

/// How CompleteSnapshot reads and stores in bounded steps.
#[derive(Debug, Clone, Copy)]
pub struct CompleteLimits {
    /// Pending writes read per page (the default, 16,384, is about 600 KiB).
    pub page: usize,
    /// Built nodes are stored ahead of the seal once they take this many bytes (the
    /// default, 2 MiB, is about 60,000 writes' worth: smaller snapshots are sealed in
    /// one transaction).
    pub stage_bytes: usize,
}

impl Default for CompleteLimits {
    fn default() -> Self {
        Self {
            page: 16_384,
            stage_bytes: 2 << 20,
        }
    }
}

/// CompleteSnapshot's optional aggregate checksum.
#[derive(Debug, Clone, Copy)]
pub struct AggregateChecksum {
    /// The claimed `LINEAR` aggregate.
    pub digest: ChunkDigest,
}

/// How one attempt ended.
enum Attempt {
    Completed,
    /// A block write moved the snapshot's sequence: build again.
    Raced,
}

impl AsStoreError for SealError {
    fn as_store_error(&self) -> Option<&StoreError> {
        match self {
            SealError::Store(error) => Some(error),
            SealError::NotPending | SealError::Raced => None,
        }
    }
}

/// The `LINEAR` aggregate as the pages stream past: of the written digests, or for a
/// snapshot encrypted at rest (whose digests name envelopes) of the clients' checksums
/// kept, masked, with the writes.
struct Aggregate {
    linear: LinearAggregate,
    key: Option<Arc<DataKey>>,
}

impl Aggregate {
    fn add(&mut self, id: &SnapshotId, page: &PendingWrites) -> Result<(), ServiceError> {
        let Some(key) = &self.key else {
            for (_, digest) in &page.blocks {
                self.linear.add(digest);
            }
            return Ok(());
        };
        // Both ascending and of the same indexes: walk them side by side.
        let mut checksums = page.checksums.iter().peekable();
        for (index, digest) in &page.blocks {
            while checksums.next_if(|(at, _)| at < index).is_some() {}
            let Some((_, value)) = checksums.next_if(|(at, _)| at == index) else {
                return Err(ServiceError::Store(StoreError::Corrupt(format!(
                    "the write of block {index} of encrypted snapshot '{id}' has no checksum"
                ))));
            };
            self.linear
                .add(&ChunkDigest(key.mask_checksum(digest, *value)));
        }
        Ok(())
    }
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
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
            let outcome = self
                .build_and_seal(&record, changed_blocks_count, aggregate)
                .await;
            match outcome {
                Ok(Attempt::Completed) => return Ok(SnapshotStatus::Completed),
                Ok(Attempt::Raced) => continue,
                Err(error) => {
                    // Another CompleteSnapshot (on this node or another) may have sealed
                    // the snapshot meanwhile, which a later page then finds empty: that
                    // snapshot is completed, not miscounted or gone from pending.
                    if matches!(
                        error,
                        ServiceError::ChangedBlocksCountMismatch { .. }
                            | ServiceError::AggregateChecksumMismatch { .. }
                            | ServiceError::NotPending { .. }
                    ) {
                        let record = self.owned_snapshot(owner, id).await?;
                        if record.status == SnapshotStatus::Completed {
                            return Ok(SnapshotStatus::Completed);
                        }
                    }
                    return Err(error);
                }
            }
        }
        Err(ServiceError::ConflictingBlockUpdate(format!(
            "Blocks kept being written to snapshot '{id}' while it was being completed."
        )))
    }

    /// One attempt: read the pending writes page by page, checking that the sequence stays
    /// put; build the tree as they pass, storing finished subtrees ahead; check the count
    /// and the aggregate; seal.
    async fn build_and_seal(
        &self,
        record: &SnapshotRecord,
        changed_blocks_count: i64,
        claimed: Option<AggregateChecksum>,
    ) -> Result<Attempt, ServiceError> {
        let id = &record.id;
        let mut aggregate = match claimed {
            Some(_) => Some(Aggregate {
                linear: LinearAggregate::default(),
                key: self.snapshot_data_key(record).await?,
            }),
            None => None,
        };
        let mut nodes = self.metadata.nodes()?;
        let mut builder = TreeBuilder::new(record.base_root, record.volume_size.block_count());
        let mut sequence = None;
        let mut after: Option<BlockIndex> = None;
        let mut written = 0u64;
        let CompleteLimits {
            page: page_size,
            stage_bytes,
        } = self.complete_limits;
        let page_size = page_size.max(1);
        loop {
            let page = crate::with_retries!(
                self.retry,
                "read pending writes",
                self.metadata.pending_writes_page(id, after, page_size)
            )?;
            if sequence.is_some_and(|s| s != page.sequence) {
                return Ok(Attempt::Raced);
            }
            sequence = Some(page.sequence);
            if let Some(aggregate) = &mut aggregate {
                aggregate.add(id, &page)?;
            }
            written += page.blocks.len() as u64;
            after = page.blocks.last().map(|(index, _)| *index);
            let more = page.blocks.len() >= page_size;
            (builder, nodes) = run_blocking(move || {
                builder.push(&nodes, &page.blocks)?;
                Ok((builder, nodes))
            })
            .await?;
            if builder.pending_bytes() > 0 && builder.pending_bytes() >= stage_bytes {
                let batch = builder.take_batch();
                if let Some(attempt) = self.stage(id, batch).await? {
                    return Ok(attempt);
                }
            }
            if !more {
                break;
            }
        }
        if u64::try_from(changed_blocks_count).ok() != Some(written) {
            return Err(ServiceError::ChangedBlocksCountMismatch {
                snapshot: id.clone(),
                claimed: changed_blocks_count,
                written,
            });
        }
        if let (Some(claimed), Some(aggregate)) = (claimed, aggregate)
            && claimed.digest != aggregate.linear.finish()
        {
            return Err(ServiceError::AggregateChecksumMismatch {
                snapshot: id.clone(),
            });
        }
        let update = run_blocking(move || builder.finish(&nodes)).await?;
        let seal = Seal {
            snapshot: id.clone(),
            expected_sequence: sequence.unwrap_or(0),
            root: update.root,
            changed_blocks: written,
            completed_at_ms: self.now_ms(),
            new_nodes: update.new_nodes,
        };
        match self.metadata.seal_snapshot(seal).await {
            Ok(()) => Ok(Attempt::Completed),
            Err(SealError::Raced) => Ok(Attempt::Raced),
            Err(SealError::NotPending) => Err(self.not_pending_now(id).await?),
            Err(SealError::Store(e)) => Err(e.into()),
        }
    }

    /// Store a batch of finished subtrees ahead of the seal (idempotent, so retried on
    /// transient failures). `Some` when the attempt must end.
    async fn stage(
        &self,
        id: &SnapshotId,
        batch: NodeBatch,
    ) -> Result<Option<Attempt>, ServiceError> {
        let staged = crate::with_retries!(
            self.retry,
            "store tree nodes ahead of the seal",
            self.metadata
                .stage_nodes(id, batch.roots.clone(), batch.nodes.clone())
        );
        match staged {
            Ok(()) => Ok(None),
            Err(SealError::Raced) => Ok(Some(Attempt::Raced)),
            Err(SealError::NotPending) => Err(self.not_pending_now(id).await?),
            Err(SealError::Store(e)) => Err(e.into()),
        }
    }

    /// The error for a snapshot a seal or a staging found not pending (the caller
    /// answers Completed if it was completed meanwhile).
    async fn not_pending_now(&self, id: &SnapshotId) -> Result<ServiceError, ServiceError> {
        match self.metadata.snapshot(id).await? {
            Some(record) => Ok(not_pending(&record)),
            None => Ok(ServiceError::SnapshotNotFound(id.clone())),
        }
    }
}
