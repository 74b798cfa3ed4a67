//! Garbage collection: mark and sweep with a grace period, planned then executed.
//! The reasoning is in `docs/adr/0002-garbage-collection.md`; in short:
//!
//! - **Live** is decided from one consistent metadata view: the roots of completed
//!   snapshots, the base roots of pending ones (the parent tree their writes apply to), and
//!   the digests of pending writes. Everything reachable from a live root is live.
//! - **Nodes** are deleted only if unreachable at the view *and* stamped before the view's
//!   own stamp (see [`crate::ports::Stamp`]): the store stamps every node a seal writes (or
//!   re-writes) when the seal commits, and checks the stamp in the transaction that
//!   deletes, so a node a tree committed after the view needs is never deleted — however
//!   long before its commit the seal was prepared.
//! - **Timed-out snapshots** lose their pending writes only once their `error` status is
//!   *stored*. A pending snapshot the plan merely computes as past its deadline is still
//!   pending here (its writes stay live); executing the plan records its timeout, and the
//!   next collection frees its writes. The store refuses writes past a deadline, so such a
//!   snapshot cannot come back to life holding writes whose chunks were freed.
//! - **Chunks** are deleted only if unreferenced at the view, not being written right now,
//!   and not stored or refreshed since the cutoff (checked again atomically with the
//!   deletion). The cutoff is the wall clock at the start minus a grace period. A Put
//!   announces its digest to the metadata store ([`crate::ports::MetadataStore::announce_put`],
//!   seen by every process sharing the store) before storing the chunk and withdraws it
//!   after its write record commits; the view, taken after the cutoff, carries the
//!   announcements of that moment. So a write committed after the view either was announced
//!   before it (its digest is live), or stored its chunk after the cutoff (its file is too
//!   young to delete). The grace period only absorbs wall-clock steps backwards.
//!
//! [`plan`] only reads; [`GcPlan`] is the complete intent (shown by dry runs); executing
//! it is the only code path that deletes, and every deletion is conditional and
//! idempotent, so a crash in the middle leaves garbage for the next run, never damage.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use strata_types::{ChunkDigest, SnapshotId};

use crate::block_map::{Node, NodeHash, NodeSource};
use crate::ports::{GcView, Stamp, StoreError, StoredChunk};
use crate::snapshot::SnapshotStatus;

/// How a collection is run.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// A chunk stored or refreshed less than this before a collection starts is never
    /// deleted by it (a margin for wall-clock steps; see the module docs).
    pub chunk_grace: Duration,
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            chunk_grace: Duration::from_secs(60),
        }
    }
}

/// What a collection would delete, and why the rest stays.
#[derive(Debug, Clone, Default)]
pub struct GcPlan {
    /// Nodes to delete if still stamped before this (the view's stamp).
    pub node_cutoff: Stamp,
    /// Chunks to delete if still idle since this time (wall clock).
    pub chunk_cutoff: Option<SystemTime>,
    /// Live tree nodes found.
    pub live_nodes: usize,
    /// Live chunk digests found (including pending writes).
    pub live_chunks: usize,
    /// Unreachable nodes old enough to delete.
    pub garbage_nodes: Vec<NodeHash>,
    /// Unreferenced chunks old enough to delete, with their sizes.
    pub garbage_chunks: Vec<(ChunkDigest, u64)>,
    /// Snapshots stored in `error` whose pending writes can be dropped.
    pub expired_snapshots: Vec<SnapshotId>,
    /// Pending snapshots past their deadline: executing the plan records their timeout
    /// (their writes stay live until a later collection sees them in `error`).
    pub due_snapshots: Vec<SnapshotId>,
    /// Unreferenced chunks kept because they are younger than the grace period.
    pub young_chunks: usize,
}

impl GcPlan {
    /// Chunk bytes the plan would free.
    pub fn chunk_bytes(&self) -> u64 {
        self.garbage_chunks.iter().map(|(_, size)| size).sum()
    }
}

/// What executing a plan did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Nodes deleted.
    pub nodes_deleted: usize,
    /// Chunks deleted.
    pub chunks_deleted: usize,
    /// Chunk bytes freed.
    pub bytes_freed: u64,
    /// Planned chunks kept because they were refreshed meanwhile.
    pub chunks_kept: usize,
    /// Pending writes of timed-out snapshots dropped.
    pub pending_writes_dropped: usize,
}

/// Decide what is garbage. `now_ms` is the service clock at the start (to find pending
/// snapshots past their deadline); `wall_now` the wall clock at the start (chunk
/// modification times are wall time).
pub fn plan<N: NodeSource>(
    view: &GcView<N>,
    chunks: &[StoredChunk],
    now_ms: i64,
    wall_now: SystemTime,
    options: GcOptions,
) -> Result<GcPlan, StoreError> {
    let mut live_nodes = HashSet::new();
    let mut live_chunks: HashSet<ChunkDigest> = view.announced.clone();
    let mut expired_snapshots = Vec::new();
    let mut due_snapshots = Vec::new();
    let mut pending_alive = HashSet::new();
    for record in &view.records {
        // The stored status, not the one computed for `now_ms`: see the module docs.
        match record.status {
            SnapshotStatus::Completed => {
                mark(&view.reader, record.root, &mut live_nodes, &mut live_chunks)?
            }
            SnapshotStatus::Pending => {
                if record.status_at(now_ms) == SnapshotStatus::Error {
                    due_snapshots.push(record.id.clone());
                }
                pending_alive.insert(record.id.clone());
                mark(
                    &view.reader,
                    record.base_root,
                    &mut live_nodes,
                    &mut live_chunks,
                )?;
            }
            SnapshotStatus::Error => expired_snapshots.push(record.id.clone()),
        }
    }
    for (id, digests) in &view.pending {
        // Writes of a snapshot missing from the view (deleted meanwhile) are garbage; of
        // one in error, dropped below.
        if pending_alive.contains(id) {
            live_chunks.extend(digests.iter().copied());
        }
    }
    expired_snapshots.retain(|id| view.pending.iter().any(|(p, d)| p == id && !d.is_empty()));

    let garbage_nodes = view
        .nodes
        .iter()
        .filter(|(hash, stamp)| !live_nodes.contains(hash) && *stamp < view.start)
        .map(|(hash, _)| *hash)
        .collect();
    let chunk_cutoff = wall_now
        .checked_sub(options.chunk_grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut young_chunks = 0;
    let mut garbage_chunks = Vec::new();
    for chunk in chunks {
        if live_chunks.contains(&chunk.digest) {
            continue;
        }
        if chunk.modified < chunk_cutoff {
            garbage_chunks.push((chunk.digest, chunk.size));
        } else {
            young_chunks += 1;
        }
    }
    Ok(GcPlan {
        node_cutoff: view.start,
        chunk_cutoff: Some(chunk_cutoff),
        live_nodes: live_nodes.len(),
        live_chunks: live_chunks.len(),
        garbage_nodes,
        garbage_chunks,
        expired_snapshots,
        due_snapshots,
        young_chunks,
    })
}

/// Add every node under `root` and every chunk its leaves name; shared subtrees are
/// visited once.
fn mark(
    reader: &impl NodeSource,
    root: Option<NodeHash>,
    live_nodes: &mut HashSet<NodeHash>,
    live_chunks: &mut HashSet<ChunkDigest>,
) -> Result<(), StoreError> {
    let mut stack: Vec<NodeHash> = root.into_iter().collect();
    while let Some(hash) = stack.pop() {
        if !live_nodes.insert(hash) {
            continue;
        }
        let node: std::sync::Arc<Node> = reader.load(&hash)?;
        if node.level() == 0 {
            live_chunks.extend(node.values().map(ChunkDigest));
        } else {
            stack.extend(node.values().map(NodeHash));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_map::apply;
    use crate::block_map::tests::MemoryNodes;
    use crate::snapshot::SnapshotRecord;
    use strata_types::{AccountId, BlockIndex, VolumeSize};

    fn record(id: &str, status: SnapshotStatus, root: Option<NodeHash>) -> SnapshotRecord {
        let id = SnapshotId::parse(id).expect("id");
        SnapshotRecord {
            lineage: id.clone(),
            id,
            owner: AccountId::parse("000000000000").expect("account"),
            status,
            volume_size: VolumeSize::from_gib(1).expect("size"),
            parent: None,
            description: None,
            tags: Vec::new(),
            encrypted: false,
            kms_key_arn: None,
            timeout_minutes: 60,
            client_token: None,
            start_fingerprint: String::new(),
            start_time_ms: 0,
            last_activity_ms: 0,
            completion_time_ms: None,
            progress: None,
            write_sequence: 0,
            changed_blocks: 0,
            root: if status == SnapshotStatus::Completed {
                root
            } else {
                None
            },
            base_root: if status == SnapshotStatus::Pending {
                root
            } else {
                None
            },
            status_message: None,
        }
    }

    fn digest(n: u8) -> ChunkDigest {
        ChunkDigest::of(&[n])
    }

    /// Deleting a parent keeps every node and chunk its child still shares; what only the
    /// parent used becomes garbage, and young or pending content is kept.
    #[test]
    fn plans_keep_everything_reachable_and_only_old_garbage() {
        let nodes = MemoryNodes::default();
        let parent = apply(
            &nodes,
            None,
            &[
                (BlockIndex::new(0), digest(1)),
                (BlockIndex::new(5000), digest(2)),
            ],
            1 << 20,
        )
        .expect("parent");
        nodes.store(&parent);
        let child = apply(
            &nodes,
            parent.root,
            &[(BlockIndex::new(5000), digest(3))],
            1 << 20,
        )
        .expect("child");
        nodes.store(&child);
        let all_nodes: Vec<(NodeHash, Stamp)> = parent
            .new_nodes
            .iter()
            .chain(&child.new_nodes)
            .map(|(h, _)| (*h, Stamp(10)))
            .collect();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let old = wall - Duration::from_secs(5_000);
        let chunk = |n: u8, modified| StoredChunk {
            digest: digest(n),
            size: 100,
            modified,
        };
        let chunks = vec![
            chunk(1, old),
            chunk(2, old),
            chunk(3, old),
            chunk(4, old),
            chunk(5, wall),
        ];
        let view = GcView {
            start: Stamp(20),
            // The parent was deleted: only the child (completed) and a pending snapshot remain.
            records: vec![
                record("snap-0c", SnapshotStatus::Completed, child.root),
                record("snap-0d", SnapshotStatus::Pending, None),
            ],
            pending: vec![(SnapshotId::parse("snap-0d").expect("id"), vec![digest(4)])],
            nodes: all_nodes,
            announced: HashSet::new(),
            reader: nodes,
        };
        let plan = plan(
            &view,
            &chunks,
            20,
            wall,
            GcOptions {
                chunk_grace: Duration::from_secs(60),
            },
        )
        .expect("plan");
        // Chunk 2 was only in the parent; 5 is unreferenced but young.
        assert_eq!(plan.garbage_chunks, vec![(digest(2), 100)]);
        assert_eq!(plan.young_chunks, 1);
        assert_eq!(plan.live_chunks, 3);
        // The parent's root and the path to 5000 are garbage; the shared leaf of index 0 is not.
        assert!(!plan.garbage_nodes.is_empty());
        for hash in &plan.garbage_nodes {
            assert!(parent.new_nodes.iter().any(|(h, _)| h == hash));
            assert!(!child.new_nodes.iter().any(|(h, _)| h == hash));
        }
        assert_eq!(plan.live_nodes + plan.garbage_nodes.len(), view.nodes.len());
    }

    #[test]
    fn announced_digests_are_live() {
        let view = |announced: HashSet<ChunkDigest>| GcView {
            start: Stamp(1),
            records: Vec::new(),
            pending: Vec::new(),
            nodes: Vec::new(),
            announced,
            reader: MemoryNodes::default(),
        };
        let old = StoredChunk {
            digest: digest(1),
            size: 1,
            modified: SystemTime::UNIX_EPOCH,
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let busy = view(HashSet::from([digest(1)]));
        let kept = plan(&busy, &[old], 0, wall, GcOptions::default()).expect("plan");
        assert!(kept.garbage_chunks.is_empty(), "an announced chunk is kept");
        let idle =
            plan(&view(HashSet::new()), &[old], 0, wall, GcOptions::default()).expect("plan");
        assert_eq!(idle.garbage_chunks.len(), 1);
    }

    #[test]
    fn nodes_stamped_at_or_after_the_view_are_kept() {
        let tree = apply(
            &MemoryNodes::default(),
            None,
            &[(BlockIndex::new(0), digest(1))],
            1 << 20,
        )
        .expect("tree");
        let view_at = |start| {
            let reader = MemoryNodes::default();
            reader.store(&tree);
            GcView {
                start: Stamp(start),
                records: Vec::new(),
                pending: Vec::new(),
                nodes: tree
                    .new_nodes
                    .iter()
                    .map(|(h, _)| (*h, Stamp(50)))
                    .collect(),
                announced: HashSet::new(),
                reader,
            }
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let early = plan(&view_at(50), &[], 0, wall, GcOptions::default()).expect("plan");
        assert!(
            early.garbage_nodes.is_empty(),
            "stamped at the view's start: kept"
        );
        let later = plan(&view_at(51), &[], 0, wall, GcOptions::default()).expect("plan");
        assert_eq!(later.garbage_nodes.len(), tree.new_nodes.len());
        assert_eq!(later.node_cutoff, Stamp(51));
    }

    /// Only a stored `error` frees pending writes: a snapshot stored as pending but past
    /// its deadline keeps them live and is only marked due (issue 10, race 1).
    #[test]
    fn only_a_stored_timeout_frees_pending_writes() {
        let mut overdue = record("snap-0a", SnapshotStatus::Pending, None);
        overdue.timeout_minutes = 10;
        let failed = record("snap-0b", SnapshotStatus::Error, None);
        let pending = vec![
            (overdue.id.clone(), vec![digest(1)]),
            (failed.id.clone(), vec![digest(2)]),
        ];
        let view = GcView {
            start: Stamp(1),
            records: vec![overdue.clone(), failed.clone()],
            pending,
            nodes: Vec::new(),
            announced: HashSet::new(),
            reader: MemoryNodes::default(),
        };
        let old = |n| StoredChunk {
            digest: digest(n),
            size: 1,
            modified: SystemTime::UNIX_EPOCH,
        };
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let past_deadline = overdue.deadline_ms() + 1;
        let plan = plan(
            &view,
            &[old(1), old(2)],
            past_deadline,
            wall,
            GcOptions::default(),
        )
        .expect("plan");
        assert_eq!(plan.garbage_chunks, vec![(digest(2), 1)]);
        assert_eq!(plan.due_snapshots, vec![overdue.id]);
        assert_eq!(plan.expired_snapshots, vec![failed.id]);
    }
}
