//! Garbage collection as the service runs it: plan (it deletes nothing), then execute (the
//! only code that deletes). The reasoning is in [`crate::gc`].

use super::{SnapshotService, run_blocking};
use crate::error::ServiceError;
use crate::gc::{self, GcOptions, GcPlan, GcReport};
use crate::ports::{ChunkStore, MetadataStore};

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// Decide what garbage collection would delete. It deletes nothing, but it first
    /// records the timeouts that are due (what every read already reports), so that the
    /// writes of those snapshots, stored as `error` from then on, are freed by this
    /// collection rather than the next (GC frees only a stored `error`: see `gc`).
    pub async fn plan_gc(&self, options: GcOptions) -> Result<GcPlan, ServiceError> {
        self.expire_idle_snapshots().await?;
        // Order matters (see `gc`): the cutoff, then the view (with the announcements).
        let now = self.now_ms();
        let wall_now = std::time::SystemTime::now();
        let view = self.metadata.gc_view().await?;
        let chunks = self.chunks.list().await?;
        let plan = run_blocking(move || gc::plan(&view, &chunks, now, wall_now, options)).await?;
        Ok(plan)
    }

    /// Execute a plan: the only code that deletes stored data. Nodes and chunks go in
    /// batches, so a store commits each batch at once and no writer is held for long.
    pub async fn execute_gc(&self, plan: &GcPlan) -> Result<GcReport, ServiceError> {
        const NODE_BATCH: usize = 1024;
        const CHUNK_BATCH: usize = 1024;
        let mut report = GcReport::default();
        for batch in plan.garbage_nodes.chunks(NODE_BATCH) {
            report.nodes_deleted += self
                .metadata
                .delete_nodes(batch.to_vec(), plan.node_cutoff)
                .await?;
        }
        // Record the timeouts the plan found due; their writes are freed by a later
        // collection, once the view shows them stored as `error`.
        for id in &plan.due_snapshots {
            if let Some(record) = self.metadata.snapshot(id).await? {
                self.expire_if_due(record).await?;
            }
        }
        report.pending_writes_dropped = self
            .metadata
            .drop_pending_writes(plan.expired_snapshots.clone())
            .await?;
        let cutoff = plan.chunk_cutoff.unwrap_or(std::time::UNIX_EPOCH);
        for batch in plan.garbage_chunks.chunks(CHUNK_BATCH) {
            let digests = batch.iter().map(|(digest, _)| *digest).collect();
            for freed in self.chunks.delete_if_idle(digests, cutoff).await? {
                match freed {
                    Some(bytes) => {
                        report.chunks_deleted += 1;
                        report.bytes_freed += bytes;
                    }
                    None => report.chunks_kept += 1,
                }
            }
        }
        tracing::info!(?report, "garbage collection finished");
        Ok(report)
    }
}
