//! What the service counts as it works, for the server's metrics: every acknowledged
//! PutSnapshotBlock, and how many of them were deduplicated (their content was stored
//! already) or all-zero (recorded, never stored).
//!
//! [`ServiceStats`] is owned by the [`crate::SnapshotService`] (and shared by its clones);
//! the counters are plain atomics, bumped once per operation after it succeeded, and read
//! whole as a [`StatsSnapshot`]. They start at zero with the process: a scraper sees
//! counters that reset on restart, as Prometheus counters may.
//!
//! [`SnapshotCounts`] is the other kind of figure: computed from the snapshot records when
//! asked (their number by status), not kept.

use std::sync::atomic::{AtomicU64, Ordering};

use strata_types::{BLOCK_SIZE, ChunkDigest};

use crate::snapshot::{SnapshotRecord, SnapshotStatus};

/// The service's counters since the process started.
#[derive(Debug, Default)]
pub struct ServiceStats {
    blocks_written: AtomicU64,
    blocks_deduplicated: AtomicU64,
    zero_blocks: AtomicU64,
}

/// The counters of [`ServiceStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Acknowledged PutSnapshotBlock requests (each a [`BLOCK_SIZE`] block).
    pub blocks_written: u64,
    /// Of those, blocks whose content was already stored: no bytes were written for them.
    pub blocks_deduplicated: u64,
    /// Of those, all-zero blocks: recorded, never stored.
    pub zero_blocks: u64,
}

impl StatsSnapshot {
    /// Blocks whose content this process stored (neither deduplicated nor zero).
    pub fn blocks_stored(&self) -> u64 {
        self.blocks_written
            .saturating_sub(self.blocks_deduplicated)
            .saturating_sub(self.zero_blocks)
    }

    /// Bytes the clients wrote: every acknowledged block, whole.
    pub fn logical_bytes_written(&self) -> u64 {
        self.blocks_written.saturating_mul(BLOCK_SIZE as u64)
    }

    /// Bytes of new content stored for them.
    pub fn bytes_stored(&self) -> u64 {
        self.blocks_stored().saturating_mul(BLOCK_SIZE as u64)
    }
}

impl ServiceStats {
    /// Count an acknowledged block write of `digest`; `already_stored` says whether the
    /// write found its content stored and wrote no bytes for it (true for the zero block,
    /// which is never stored).
    pub fn record_put(&self, digest: &ChunkDigest, already_stored: bool) {
        self.blocks_written.fetch_add(1, Ordering::Relaxed);
        if digest.is_zero_block() {
            self.zero_blocks.fetch_add(1, Ordering::Relaxed);
        } else if already_stored {
            self.blocks_deduplicated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counters now. Each is read atomically; a write counted meanwhile may show in
    /// `blocks_written` and not yet in the others (never the other way round: they are
    /// read after it).
    pub fn snapshot(&self) -> StatsSnapshot {
        let blocks_written = self.blocks_written.load(Ordering::Relaxed);
        StatsSnapshot {
            blocks_written,
            blocks_deduplicated: self.blocks_deduplicated.load(Ordering::Relaxed),
            zero_blocks: self.zero_blocks.load(Ordering::Relaxed),
        }
    }
}

/// How many snapshots there are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    /// Accepting writes.
    pub pending: u64,
    /// Sealed and readable.
    pub completed: u64,
    /// Timed out (kept until deleted).
    pub error: u64,
}

impl SnapshotCounts {
    /// Count `records` by their status as of `now_ms` (a pending snapshot past its
    /// deadline counts as `error`, as every read reports it).
    pub fn of<'a>(records: impl IntoIterator<Item = &'a SnapshotRecord>, now_ms: i64) -> Self {
        let mut counts = Self::default();
        for record in records {
            let slot = match record.status_at(now_ms) {
                SnapshotStatus::Pending => &mut counts.pending,
                SnapshotStatus::Completed => &mut counts.completed,
                SnapshotStatus::Error => &mut counts.error,
            };
            *slot += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_counted_as_new_deduplicated_or_zero() {
        let stats = ServiceStats::default();
        let new = ChunkDigest([1; 32]);
        stats.record_put(&new, false);
        stats.record_put(&new, true);
        stats.record_put(&ChunkDigest::zero_block(), true);
        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot,
            StatsSnapshot {
                blocks_written: 3,
                blocks_deduplicated: 1,
                zero_blocks: 1,
            }
        );
        assert_eq!(snapshot.blocks_stored(), 1);
        assert_eq!(snapshot.logical_bytes_written(), 3 * BLOCK_SIZE as u64);
        assert_eq!(snapshot.bytes_stored(), BLOCK_SIZE as u64);
    }
}
