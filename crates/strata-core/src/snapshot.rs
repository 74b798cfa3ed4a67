//! The snapshot record and its lifecycle.
//!
//! ```text
//! StartSnapshot ──► Pending ──CompleteSnapshot (count and checksum valid)──► Completed
//!                      └── no Put/Complete for `timeout` ──► Error
//! ```
//! Only a `Pending` snapshot accepts writes; only a `Completed` one can be read.

use serde::{Deserialize, Serialize};
use strata_types::{AccountId, SnapshotId, VolumeSize};

use crate::block_map::NodeHash;

/// The lifecycle state of a snapshot (the wire's `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotStatus {
    /// Accepting writes.
    Pending,
    /// Sealed and readable.
    Completed,
    /// Abandoned (inactivity timeout); never readable.
    Error,
}

impl SnapshotStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotStatus::Pending => "pending",
            SnapshotStatus::Completed => "completed",
            SnapshotStatus::Error => "error",
        }
    }
}

/// A user tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    /// 1..=127 characters.
    pub key: String,
    /// 0..=255 characters.
    pub value: String,
}

/// Everything stored about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The id.
    pub id: SnapshotId,
    /// The owning account; other accounts never see the snapshot.
    pub owner: AccountId,
    /// Lifecycle state as last stored (see [`SnapshotRecord::status_at`] for the timeout).
    pub status: SnapshotStatus,
    /// Size in GiB.
    pub volume_size: VolumeSize,
    /// The snapshot this one is incremental on.
    pub parent: Option<SnapshotId>,
    /// The oldest ancestor (the snapshot itself when it has no parent). Two snapshots are
    /// related exactly when their lineages are equal.
    pub lineage: SnapshotId,
    /// Free text, at most 255 characters.
    pub description: Option<String>,
    /// Tags given at start.
    pub tags: Vec<Tag>,
    /// Whether the snapshot is reported as encrypted.
    pub encrypted: bool,
    /// The KMS key reported: for a snapshot encrypted at rest, the ARN of the key that
    /// encrypts its blocks.
    pub kms_key_arn: Option<String>,
    /// The id of the key whose data key encrypts the blocks ([`crate::encryption`]);
    /// `None` for blocks stored in plaintext (also for the snapshots a version without
    /// encryption at rest recorded as `encrypted`).
    #[serde(default)]
    pub encryption_key: Option<String>,
    /// Inactivity timeout in minutes.
    pub timeout_minutes: u32,
    /// Idempotency token given at start, if any.
    pub client_token: Option<String>,
    /// A canonical rendering of the start parameters, compared on client-token reuse.
    pub start_fingerprint: String,
    /// Start time, Unix milliseconds.
    pub start_time_ms: i64,
    /// Last Start/Put/Complete, Unix milliseconds: the inactivity timer's origin.
    pub last_activity_ms: i64,
    /// Completion time, Unix milliseconds.
    pub completion_time_ms: Option<i64>,
    /// The last `x-amz-Progress` a client sent.
    pub progress: Option<u8>,
    /// Count of recorded block writes; bumps on every write (the seal's race check).
    pub write_sequence: u64,
    /// Number of distinct indexes written to this snapshot (set when completed).
    pub changed_blocks: u64,
    /// Root of the block map (set when completed; `None` is an empty map).
    pub root: Option<NodeHash>,
    /// The parent's root, captured at start: the tree this snapshot's writes apply to.
    /// Keeping it here (and live for GC) lets the parent be deleted while the child is
    /// still pending.
    #[serde(default)]
    pub base_root: Option<NodeHash>,
    /// Why the snapshot is in `error`.
    pub status_message: Option<String>,
}

impl SnapshotRecord {
    /// When the inactivity timer of a pending snapshot runs out (Unix milliseconds).
    pub fn deadline_ms(&self) -> i64 {
        self.last_activity_ms
            .saturating_add(i64::from(self.timeout_minutes) * 60_000)
    }

    /// The status as of `now_ms`: a pending snapshot past its deadline is in error even if
    /// the stored record has not been updated yet.
    pub fn status_at(&self, now_ms: i64) -> SnapshotStatus {
        if self.status == SnapshotStatus::Pending && now_ms > self.deadline_ms() {
            SnapshotStatus::Error
        } else {
            self.status
        }
    }

    /// The record completed at `at_ms` with the block map `root` of `changed_blocks`
    /// distinct writes: what a seal makes of the record as stored (every other field,
    /// tags included, stays as it is).
    pub fn completed(&self, root: Option<NodeHash>, changed_blocks: u64, at_ms: i64) -> Self {
        SnapshotRecord {
            status: SnapshotStatus::Completed,
            root,
            changed_blocks,
            completion_time_ms: Some(at_ms),
            last_activity_ms: at_ms,
            progress: Some(100),
            ..self.clone()
        }
    }

    /// The record as of `now_ms`: a pending snapshot past its deadline reads as timed out
    /// (status `error` with its message), whether or not that was stored yet.
    pub fn as_of(&self, now_ms: i64) -> SnapshotRecord {
        if self.status_at(now_ms) == self.status {
            return self.clone();
        }
        SnapshotRecord {
            status: SnapshotStatus::Error,
            status_message: Some(format!(
                "No block was written and the snapshot was not completed within its timeout of {} minutes.",
                self.timeout_minutes
            )),
            ..self.clone()
        }
    }
}
