//! Strata's own admin API (not part of AWS): JSON over SigV4-signed HTTP under
//! [`PREFIX`], used by the `strata snapshots` and `strata gc` commands.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /_strata/v1/snapshots?status=&tag=K[=V]&description=&owner=&maxResults=&nextToken=` | [`SnapshotList`] of the caller's snapshots (filtered, paged when `maxResults` is given; `owner`: root only) |
//! | `GET /_strata/v1/snapshots/{id}/lineage` | [`Lineage`]: every snapshot of its tree, with changed blocks against the parent |
//! | `GET /_strata/v1/storage` | [`StorageSummary`] (root account only) |
//! | `GET /_strata/v1/activity` | [`Activity`]: request counters and the last GC and scrub (root account only) |
//! | `POST /_strata/v1/session` | 204 + `Set-Cookie: strata_session=...` for the web console (SigV4-signed) |
//! | `POST /_strata/v1/session/end` | 204, the cookie cleared and revoked |
//! | `GET /_strata/v1/snapshots/{id}` | [`AdminSnapshot`] |
//! | `DELETE /_strata/v1/snapshots/{id}` | 204 |
//! | `POST /_strata/v1/gc?dryRun=true\|false` | [`GcSummary`] (root account only) |
//! | `POST /_strata/v1/scrub?rateMiB=N` | [`ScrubSummary`] (root account only): every chunk and node read back and checked |
//! | `POST /_strata/v1/keys?description=TEXT[&account=ID]` | [`AdminKey`]: a new encryption key (another account's: root only) |
//! | `GET /_strata/v1/keys` | [`KeyList`]: the caller's keys (root: every account's) |
//! | `POST /_strata/v1/keys/{id or ARN}/disable`, `.../enable` | [`AdminKey`] as it is now |

use serde::{Deserialize, Serialize};

/// Path prefix of the admin API.
pub const PREFIX: &str = "/_strata/v1";
/// The SigV4 service name admin requests are signed for.
pub const SERVICE: &str = "strata";

/// A tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminTag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Everything the admin view shows of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminSnapshot {
    /// Id.
    pub id: String,
    /// Owning account.
    pub owner: String,
    /// `pending`, `completed` or `error` (timeouts applied).
    pub status: String,
    /// Why it is in error.
    pub status_message: Option<String>,
    /// Size in GiB.
    pub volume_size_gib: u64,
    /// Parent snapshot.
    pub parent: Option<String>,
    /// Oldest ancestor's id.
    pub lineage: String,
    /// Description.
    pub description: Option<String>,
    /// Tags.
    pub tags: Vec<AdminTag>,
    /// Encryption requested.
    pub encrypted: bool,
    /// Start time, Unix ms.
    pub start_time_ms: i64,
    /// Completion time, Unix ms.
    pub completion_time_ms: Option<i64>,
    /// Distinct blocks written to this snapshot (completed ones; pending: writes so far).
    pub written_blocks: u64,
    /// Last progress reported by the client.
    pub progress: Option<u8>,
}

/// `GET /_strata/v1/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotList {
    /// The caller's snapshots, by id.
    pub snapshots: Vec<AdminSnapshot>,
    /// Where the next page starts (only with `maxResults`, when more match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// One snapshot of a [`Lineage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageNode {
    /// The snapshot as the admin view shows it.
    pub snapshot: AdminSnapshot,
    /// Blocks whose content differs from the parent's (completed snapshot and parent;
    /// `None` when either is not completed). For a root: its allocated blocks.
    pub changed_blocks: Option<u64>,
}

/// `GET /_strata/v1/snapshots/{id}/lineage`: the whole tree the snapshot belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    /// The snapshot asked about.
    pub snapshot: String,
    /// The oldest ancestor.
    pub root: String,
    /// Every snapshot of the tree, parents before children (by start time, then id).
    pub nodes: Vec<LineageNode>,
}

/// One point of [`StorageSummary::growth`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrowthPoint {
    /// Completion time of a snapshot, Unix ms.
    pub time_ms: i64,
    /// Logical bytes written into the completed snapshots kept, up to then.
    pub written_bytes: u64,
    /// Completed snapshots kept, up to then.
    pub snapshots: u64,
}

/// `GET /_strata/v1/storage`: what the store holds and what dedup and zero detection save.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageSummary {
    /// Completed snapshots (every account).
    pub completed_snapshots: u64,
    /// Pending snapshots.
    pub pending_snapshots: u64,
    /// Bytes clients wrote into the completed snapshots kept (written blocks x 512 KiB):
    /// what storing each snapshot's changes separately would take.
    pub logical_bytes: u64,
    /// Bytes of the chunks in the chunk store (each distinct content once; zeros never).
    pub physical_bytes: u64,
    /// Chunks in the chunk store.
    pub chunks: u64,
    /// Since this process started: blocks written, of which deduplicated and zero.
    pub blocks_written: u64,
    /// Of those, content stored already.
    pub blocks_deduplicated: u64,
    /// Of those, all-zero (never stored).
    pub zero_blocks: u64,
    /// Bytes deduplication saved since start (deduplicated blocks x 512 KiB).
    pub dedup_saved_bytes: u64,
    /// Bytes zero detection saved since start (zero blocks x 512 KiB).
    pub zero_saved_bytes: u64,
    /// Logical bytes over time, one point per completed snapshot.
    pub growth: Vec<GrowthPoint>,
}

/// What the last garbage collection or scrub of this process did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun<T> {
    /// When it ended, Unix ms.
    pub finished_ms: i64,
    /// `ok`, `busy` or `failed`.
    pub result: String,
    /// Its summary (when `ok`).
    pub summary: Option<T>,
    /// The error (when `failed` or `busy`).
    pub error: Option<String>,
}

/// `GET /_strata/v1/activity`: cumulative counters (a client derives throughput from two
/// readings) and the last GC and scrub run by this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// When the counters were read, Unix ms.
    pub now_ms: i64,
    /// Requests answered since start.
    pub requests: u64,
    /// Request body bytes read since start.
    pub bytes_in: u64,
    /// Response body bytes sent since start.
    pub bytes_out: u64,
    /// Blocks written since start.
    pub blocks_written: u64,
    /// The last garbage collection.
    pub last_gc: Option<LastRun<GcSummary>>,
    /// The last scrub.
    pub last_scrub: Option<LastRun<ScrubSummary>>,
}

/// `POST /_strata/v1/gc`: the plan, and what executing it did (zeros for a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcSummary {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// Live tree nodes.
    pub live_nodes: usize,
    /// Live chunks.
    pub live_chunks: usize,
    /// Nodes the plan deletes.
    pub garbage_nodes: usize,
    /// Chunks the plan deletes.
    pub garbage_chunks: usize,
    /// Bytes of those chunks.
    pub garbage_bytes: u64,
    /// Unreferenced chunks kept for the grace period.
    pub young_chunks: usize,
    /// Timed-out snapshots whose pending writes are dropped.
    pub expired_snapshots: usize,
    /// Nodes deleted.
    pub nodes_deleted: usize,
    /// Chunks deleted.
    pub chunks_deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Planned chunks kept because they were re-uploaded meanwhile.
    pub chunks_kept: usize,
    /// Pending writes dropped.
    pub pending_writes_dropped: usize,
}

/// One key of the local key service (never its material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminKey {
    /// The key id (a UUID).
    pub key_id: String,
    /// `arn:aws:kms:REGION:ACCOUNT:key/ID`, what `KmsKeyArn` names.
    pub arn: String,
    /// Owning account.
    pub account: String,
    /// Description given at creation.
    pub description: Option<String>,
    /// Whether it encrypts and decrypts.
    pub enabled: bool,
    /// The account's default key (used when a request to encrypt names none).
    pub account_default: bool,
    /// Creation time, Unix ms.
    pub created_ms: i64,
}

/// `GET /_strata/v1/keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyList {
    /// By id.
    pub keys: Vec<AdminKey>,
}

/// `POST /_strata/v1/scrub`: what was checked and what was found (damaged or missing
/// chunks are quarantined: the next upload of their content repairs them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubSummary {
    /// Chunks read back and checked against their digest.
    pub chunks_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Block-map nodes read back and checked against their hash.
    pub nodes_checked: u64,
    /// How long the scrub took.
    pub duration_ms: u64,
    /// Chunks damaged or missing.
    pub chunk_findings: Vec<ChunkFindingView>,
    /// Nodes damaged or missing.
    pub node_findings: Vec<NodeFindingView>,
}

/// One chunk a scrub found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkFindingView {
    /// The chunk's SHA-256, hex.
    pub chunk: String,
    /// `damaged` or `missing`.
    pub fault: String,
    /// What the store said.
    pub detail: Option<String>,
    /// The completed snapshots whose blocks name it.
    pub snapshots: Vec<SnapshotBlocks>,
}

/// Blocks of one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotBlocks {
    /// The snapshot.
    pub snapshot: String,
    /// Block indexes, ascending.
    pub blocks: Vec<u32>,
}

/// One node a scrub found wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFindingView {
    /// The node's hash, hex.
    pub node: String,
    /// What was wrong.
    pub detail: String,
}

/// `POST /_strata/v1/backup?dir=ABSOLUTE_PATH`: what the online backup of an embedded data
/// directory wrote (into `dir`, on the server's machine).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// The directory written, as the server resolved it.
    pub dir: String,
    /// Snapshot records copied (any state).
    pub snapshots: u64,
    /// Of which completed.
    pub completed_snapshots: u64,
    /// Chunks copied.
    pub chunks: u64,
    /// Their bytes.
    pub chunk_bytes: u64,
    /// Bytes written in all (metadata, chunk index, segment data, private files).
    pub bytes: u64,
    /// Private files of the data directory copied (`root-credentials`, `master.key`, ...).
    pub private_files: u64,
    /// How long the backup took.
    pub duration_ms: u64,
}
