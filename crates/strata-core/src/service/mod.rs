//! [`SnapshotService`]: one method per EBS direct API operation, in domain types.
//!
//! One file per operation group, so "where do I change X" has one answer:
//!
//! | file | operations |
//! |---|---|
//! | `start.rs` | StartSnapshot: validation, client-token idempotency, the parent's base tree |
//! | `put.rs` | PutSnapshotBlock: the check before the body ([`WritePermit`]), then store and record |
//! | `complete.rs` | CompleteSnapshot: count and aggregate checks, building and sealing the tree |
//! | `read.rs` | ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock, paging |
//! | `lifecycle.rs` | DescribeSnapshots' view, DeleteSnapshot, the timeout sweep |
//! | `tags.rs` | CreateTags, DeleteTags |
//! | `gc.rs` | planning and executing garbage collection |
//! | `scrub.rs` | reading every chunk and node back, quarantining what is damaged |
//! | `keys.rs` | the local key service, and which key encrypts a new snapshot |
//!
//! This file holds the service itself and the lookups every group shares.

mod complete;
mod gc;
mod keys;
mod lifecycle;
mod put;
mod read;
mod scrub;
mod start;
mod tags;

use std::sync::Arc;

use strata_types::{AccountId, SnapshotId};

use crate::clock::Clock;
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore, RecordChange, StoreError};
use crate::retry::RetryPolicy;
use crate::snapshot::{SnapshotRecord, SnapshotStatus};
use crate::tokens::TokenIssuer;

pub use complete::{AggregateChecksum, CompleteLimits};
pub use gc::{GC_LEASE, LEASE_TTL, TIMEOUT_SWEEP_LEASE};
pub use keys::{EncryptionConfig, KEY_CACHE_TTL};
pub use put::WritePermit;
pub use read::{BlockData, BlockPage, ChangedBlock, ChangedPage, DEFAULT_MAX_RESULTS, PageRequest};
pub use scrub::{ChunkFault, ChunkFinding, SCRUB_LEASE, ScrubOptions, ScrubReport};
pub use start::{DEFAULT_TIMEOUT_MINUTES, StartSnapshotInput};
pub use tags::MAX_TAGS;

/// The snapshot service: the EBS direct API semantics over the two storage ports.
pub struct SnapshotService<M, C> {
    metadata: Arc<M>,
    chunks: Arc<C>,
    tokens: TokenIssuer,
    clock: Arc<dyn Clock>,
    retry: RetryPolicy,
    stats: Arc<crate::stats::ServiceStats>,
    encryption: Option<Arc<keys::Encryption>>,
    pending_limit: Option<usize>,
    complete_limits: CompleteLimits,
}

impl<M, C> Clone for SnapshotService<M, C> {
    fn clone(&self) -> Self {
        Self {
            metadata: Arc::clone(&self.metadata),
            chunks: Arc::clone(&self.chunks),
            tokens: self.tokens.clone(),
            clock: Arc::clone(&self.clock),
            retry: self.retry,
            stats: Arc::clone(&self.stats),
            encryption: self.encryption.clone(),
            pending_limit: self.pending_limit,
            complete_limits: self.complete_limits,
        }
    }
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// Assemble a service from its stores, token key and clock.
    pub fn new(
        metadata: Arc<M>,
        chunks: Arc<C>,
        tokens: TokenIssuer,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            metadata,
            chunks,
            tokens,
            clock,
            retry: RetryPolicy::default(),
            stats: Arc::default(),
            encryption: None,
            pending_limit: None,
            complete_limits: CompleteLimits::default(),
        }
    }

    /// The same service with other CompleteSnapshot page and batch sizes (for tests,
    /// which stage nodes ahead of the seal with a few writes).
    pub fn with_complete_limits(mut self, limits: CompleteLimits) -> Self {
        self.complete_limits = limits;
        self
    }

    /// The same service with at most `limit` pending snapshots per account (AWS: 100);
    /// StartSnapshot beyond it is refused ([`ServiceError::PendingSnapshotLimit`]).
    pub fn with_pending_limit(mut self, limit: usize) -> Self {
        self.pending_limit = Some(limit);
        self
    }

    /// The same service with another retry policy for its storage calls.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The metadata store (for admin views).
    pub fn metadata(&self) -> &M {
        &self.metadata
    }

    /// What the service counted since it was built (see [`crate::stats`]).
    pub fn stats(&self) -> &crate::stats::ServiceStats {
        &self.stats
    }

    /// The service clock, Unix milliseconds.
    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The record of `id` if `owner` owns it (any status).
    pub async fn owned_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<SnapshotRecord, ServiceError> {
        let stored = crate::with_retries!(
            self.retry,
            "read a snapshot record",
            self.metadata.snapshot(id)
        )?;
        match stored {
            Some(record) if record.owner == *owner => Ok(record),
            _ => Err(ServiceError::SnapshotNotFound(id.clone())),
        }
    }

    /// The record of `id` if `owner` owns it and it is completed.
    async fn readable_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<SnapshotRecord, ServiceError> {
        let record = self.owned_snapshot(owner, id).await?;
        if record.status_at(self.now_ms()) == SnapshotStatus::Completed {
            Ok(record)
        } else {
            Err(ServiceError::SnapshotNotFound(id.clone()))
        }
    }

    /// Persist the move of a timed-out pending snapshot to `error`.
    async fn expire_if_due(&self, record: SnapshotRecord) -> Result<SnapshotRecord, ServiceError> {
        let now = self.now_ms();
        if record.status != SnapshotStatus::Pending
            || record.status_at(now) == SnapshotStatus::Pending
        {
            return Ok(record);
        }
        let change: RecordChange = Box::new(move |stored: &SnapshotRecord| {
            // Only a snapshot that is still pending *and still idle* times out: a Put may
            // have landed since the caller read the record.
            (stored.status == SnapshotStatus::Pending
                && stored.status_at(now) == SnapshotStatus::Error)
                .then(|| stored.as_of(now))
        });
        match self.metadata.update_snapshot(&record.id, change).await? {
            Some(expired) => {
                tracing::info!(id = %expired.id, "pending snapshot timed out");
                Ok(expired)
            }
            // Someone else changed it first; report what is stored now.
            None => self.owned_snapshot(&record.owner, &record.id).await,
        }
    }
}

fn not_pending(record: &SnapshotRecord) -> ServiceError {
    ServiceError::NotPending {
        snapshot: record.id.clone(),
        status: record.status,
    }
}

/// Run CPU-bound or blocking storage work off the async threads.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Store(StoreError::Backend(format!("worker failed: {e}"))))?
        .map_err(ServiceError::from)
}
