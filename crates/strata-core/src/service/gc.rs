//! Garbage collection as the service runs it: plan (it deletes nothing), then execute (the
//! only code that deletes). The reasoning is in [`crate::gc`].

use std::time::Duration;

use super::{SnapshotService, run_blocking};
use crate::error::ServiceError;
use crate::gc::{self, GcOptions, GcPlan, GcReport};
use crate::ports::{ChunkStore, MetadataStore, StoreError, StoredChunk};

/// The lease a collection runs under: one collection per cluster at a time.
pub const GC_LEASE: &str = "gc";
/// The lease the timeout sweep runs under.
pub const TIMEOUT_SWEEP_LEASE: &str = "timeout-sweep";
/// How long a lease lasts unless renewed. A collection renews it every
/// [`LEASE_RENEWAL`] while it runs (and before every batch of deletions), so only a
/// holder that stopped running — killed, or frozen for this long — loses it. Short,
/// because a dead holder's lease blocks the next collection, and the Puts of content it
/// condemned (race 8), until it lapses: 20 s stays inside the retry window of a backup
/// client (the strata client retries for about 40 s).
pub const LEASE_TTL: Duration = Duration::from_secs(20);
/// How often a running collection renews its lease: a few renewals fit in one TTL, so a
/// slow store answering one renewal late does not lose it.
pub const LEASE_RENEWAL: Duration = Duration::from_secs(5);

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// Decide what garbage collection would delete. It deletes nothing, but it first
    /// records the timeouts that are due (what every read already reports), so that the
    /// writes of those snapshots, stored as `error` from then on, are freed by this
    /// collection rather than the next (GC frees only a stored `error`: see `gc`).
    pub async fn plan_gc(&self, options: GcOptions) -> Result<GcPlan, ServiceError> {
        self.expire_idle_snapshots().await?;
        // The view first, then the chunk store's listing: a chunk stored after the view
        // is either registered with a later stamp or announced (see `gc`).
        let now = self.now_ms();
        let view = self.metadata.gc_view().await?;
        let stored = self.stored_chunks().await?;
        let wall_now = std::time::SystemTime::now();
        let plan = run_blocking(move || gc::plan(&view, &stored, now, wall_now, options)).await?;
        Ok(plan)
    }

    /// Every chunk in the chunk store, page by page.
    async fn stored_chunks(&self) -> Result<Vec<StoredChunk>, ServiceError> {
        const PAGE: usize = 1000;
        let mut all: Vec<StoredChunk> = Vec::new();
        loop {
            let after = all.last().map(|c| c.digest);
            let page = crate::with_retries!(
                self.retry,
                "list the chunk store",
                self.chunks.list(after, PAGE)
            )?;
            let full = page.len() == PAGE;
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// A collection under the [`GC_LEASE`], as `holder` (a name unique to this process):
    /// plan, then (unless `dry_run`) execute, renewing the lease before each batch of
    /// deletions. `Ok(None)` when another holder's lease has not expired: a collection is
    /// running elsewhere. A lease lost midway stops the run before its next batch.
    pub async fn collect_garbage(
        &self,
        holder: &str,
        options: GcOptions,
        dry_run: bool,
    ) -> Result<Option<(GcPlan, Option<GcReport>)>, ServiceError> {
        if !self
            .metadata
            .acquire_lease(GC_LEASE, holder, LEASE_TTL)
            .await?
        {
            return Ok(None);
        }
        let work = async {
            let plan = self.plan_gc(options).await?;
            let report = match dry_run {
                true => None,
                false => Some(self.execute_gc_as(&plan, Some(holder)).await?),
            };
            Ok(Some((plan, report)))
        };
        // The lease is renewed while the collection runs (a plan over a large store can
        // take longer than the TTL). A renewal that finds the lease gone stops renewing;
        // the next batch's own renewal then stops the run before it deletes anything.
        let heartbeat = self.renew_gc_lease_while_running(holder);
        let outcome = tokio::select! {
            outcome = work => outcome,
            never = heartbeat => match never {},
        };
        if let Err(error) = self.metadata.release_lease(GC_LEASE, holder).await {
            tracing::warn!(%error, "cannot release the GC lease; it expires by itself");
        }
        outcome
    }

    /// Renew `holder`'s GC lease every [`LEASE_RENEWAL`], for as long as the caller polls
    /// this (it never returns). A renewal that finds the lease taken over stops renewing.
    async fn renew_gc_lease_while_running(&self, holder: &str) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(LEASE_RENEWAL).await;
            match self
                .metadata
                .acquire_lease(GC_LEASE, holder, LEASE_TTL)
                .await
            {
                Ok(true) => {}
                Ok(false) => return std::future::pending().await,
                Err(error) => tracing::warn!(%error, "cannot renew the GC lease; trying again"),
            }
        }
    }

    /// The timeout sweep under the [`TIMEOUT_SWEEP_LEASE`], as `holder`: how many
    /// snapshots timed out, or `None` when another holder runs the sweep.
    pub async fn sweep_timeouts(&self, holder: &str) -> Result<Option<usize>, ServiceError> {
        if !self
            .metadata
            .acquire_lease(TIMEOUT_SWEEP_LEASE, holder, LEASE_TTL)
            .await?
        {
            return Ok(None);
        }
        // Kept until it expires or the next sweep renews it: the holder stays the same.
        self.expire_idle_snapshots().await.map(Some)
    }

    /// Execute a plan: the only code that deletes stored data. Nodes and chunks go in
    /// batches, so a store commits each batch at once and no writer is held for long.
    pub async fn execute_gc(&self, plan: &GcPlan) -> Result<GcReport, ServiceError> {
        self.execute_gc_as(plan, None).await
    }

    /// [`Self::execute_gc`], renewing `holder`'s GC lease before every batch.
    async fn execute_gc_as(
        &self,
        plan: &GcPlan,
        holder: Option<&str>,
    ) -> Result<GcReport, ServiceError> {
        const NODE_BATCH: usize = 1024;
        const CHUNK_BATCH: usize = 1024;
        let renew = async || -> Result<(), ServiceError> {
            let Some(holder) = holder else {
                return Ok(());
            };
            if self
                .metadata
                .acquire_lease(GC_LEASE, holder, LEASE_TTL)
                .await?
            {
                Ok(())
            } else {
                Err(ServiceError::Store(StoreError::Conflict(
                    "the GC lease was taken over by another holder; this collection stops".into(),
                )))
            }
        };
        let mut report = GcReport::default();
        for batch in plan.garbage_nodes.chunks(NODE_BATCH) {
            renew().await?;
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
        // Chunks a stopped collection condemned but did not finish deleting go first.
        let leftover = self.metadata.condemned_chunks().await?;
        for batch in leftover.chunks(CHUNK_BATCH) {
            renew().await?;
            report.bytes_freed += self.chunks.delete(batch.to_vec()).await?;
            report.chunks_deleted += batch.len();
            self.metadata.finalize_chunks(batch.to_vec()).await?;
        }
        for batch in plan.garbage_chunks.chunks(CHUNK_BATCH) {
            renew().await?;
            let digests = batch.iter().map(|(digest, _)| *digest).collect();
            let condemned = self
                .metadata
                .condemn_chunks(digests, plan.node_cutoff)
                .await?;
            report.chunks_kept += batch.len() - condemned.len();
            if condemned.is_empty() {
                continue;
            }
            // The sizes the plan knows (the registry's or the listing's): an object
            // store's delete does not say how many bytes it freed.
            let freed = self.chunks.delete(condemned.clone()).await?;
            let planned: u64 = batch
                .iter()
                .filter(|(digest, _)| condemned.contains(digest))
                .map(|(_, size)| size)
                .sum();
            report.bytes_freed += planned.max(freed);
            report.chunks_deleted += condemned.len();
            self.metadata.finalize_chunks(condemned).await?;
        }
        tracing::info!(
            nodes_deleted = report.nodes_deleted,
            chunks_deleted = report.chunks_deleted,
            bytes_freed = report.bytes_freed,
            chunks_kept = report.chunks_kept,
            pending_writes_dropped = report.pending_writes_dropped,
            "garbage collection finished"
        );
        Ok(report)
    }
}
