//! The snapshot records as DescribeSnapshots and the admin API see them, DeleteSnapshot,
//! and the sweep that makes timeouts durable.

use strata_types::{AccountId, SnapshotId};

use super::SnapshotService;
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore};
use crate::snapshot::{SnapshotRecord, SnapshotStatus};

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// Every snapshot of `owner`, with the status as of now (timeouts applied).
    pub async fn list_snapshots(
        &self,
        owner: &AccountId,
    ) -> Result<Vec<SnapshotRecord>, ServiceError> {
        let now = self.now_ms();
        let records = self.metadata.list_snapshots(Some(owner)).await?;
        Ok(records.iter().map(|r| r.as_of(now)).collect())
    }

    /// One snapshot of `owner`, with the status as of now.
    pub async fn describe_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<SnapshotRecord, ServiceError> {
        let record = self.owned_snapshot(owner, id).await?;
        Ok(record.as_of(self.now_ms()))
    }

    /// DeleteSnapshot: remove a snapshot in any state (a pending one is cancelled). Its data
    /// is reclaimed by the next garbage collection, unless other snapshots share it.
    pub async fn delete_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<(), ServiceError> {
        self.owned_snapshot(owner, id).await?;
        if self.metadata.delete_snapshot(id).await? {
            tracing::info!(%id, "snapshot deleted");
            Ok(())
        } else {
            Err(ServiceError::SnapshotNotFound(id.clone()))
        }
    }

    /// Move every idle pending snapshot past its timeout to `error` (the background sweep;
    /// reads apply timeouts by themselves, this makes them durable and their data
    /// reclaimable). Returns how many timed out.
    pub async fn expire_idle_snapshots(&self) -> Result<usize, ServiceError> {
        let now = self.now_ms();
        let mut expired = 0;
        for record in self.metadata.list_snapshots(None).await? {
            if record.status == SnapshotStatus::Pending
                && record.status_at(now) == SnapshotStatus::Error
                && self.expire_if_due(record).await?.status == SnapshotStatus::Error
            {
                expired += 1;
            }
        }
        Ok(expired)
    }
}
