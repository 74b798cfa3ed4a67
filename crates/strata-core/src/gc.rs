//! Garbage collection: mark and sweep with a grace period, planned then executed.
//! The reasoning is in `docs/adr/0002-garbage-collection.md`; in short:
//!
//! - **Live** is decided from one consistent metadata view: the roots of completed
//!   snapshots, the base roots of pending ones (the parent tree their writes apply to),
//!   the subtrees a CompleteSnapshot of a pending one stored ahead of its seal (its staged
//!   roots), and the digests of pending writes. Everything reachable from a live root is
//!   live.
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
//! - **Chunks** are deleted in three steps, each idempotent (ADR 0004): *condemn* (one
//!   metadata transaction keeps every candidate that is announced by a Put in flight or
//!   was re-used by a write record stamped at or after the view, and tombstones the rest),
//!   *delete* the objects, *finalize* (drop the tombstones). A Put announces its digest
//!   before it decides whether to store the bytes, atomically with condemnations, and its
//!   write record re-stamps the chunk: so a write committed after the view either was
//!   announced when the chunk was condemned (kept), or re-stamped it (kept), or found it
//!   condemned and waits for the deletion to finish before storing it again. Candidates
//!   are the registered chunks the view found unreferenced and the stored objects no
//!   write record registered (Puts that crashed between storing and recording), the
//!   latter only once older than the grace period. No clock of one node is compared with
//!   another's: stamps come from the metadata store.
//!
//! [`plan`] only reads; [`GcPlan`] is the complete intent (shown by dry runs); executing
//! it is the only code path that deletes, and every deletion is conditional and
//! idempotent, so a crash in the middle leaves garbage for the next run, never damage.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use strata_types::{ChunkDigest, SnapshotId};

use crate::block_map::{Node, NodeHash, NodeSource};
use crate::ports::{GcView, Stamp, StoreError, StoredChunk};
use crate::snapshot::SnapshotStatus;

/// How a collection is run.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// A stored chunk that no write record registered is deleted only once it is older
    /// than this (its Put may still be recording it; see the module docs).
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
    /// Nodes and chunks are deleted only if still stamped before this (the view's stamp).
    pub node_cutoff: Stamp,
    /// Live tree nodes found.
    pub live_nodes: usize,
    /// Live chunk digests found (including pending writes).
    pub live_chunks: usize,
    /// Unreachable nodes old enough to delete.
    pub garbage_nodes: Vec<NodeHash>,
    /// Unreferenced chunks to condemn and delete, with their sizes.
    pub garbage_chunks: Vec<(ChunkDigest, u64)>,
    /// Snapshots stored in `error` whose pending writes can be dropped.
    pub expired_snapshots: Vec<SnapshotId>,
    /// Pending snapshots past their deadline: executing the plan records their timeout
    /// (their writes stay live until a later collection sees them in `error`).
    pub due_snapshots: Vec<SnapshotId>,
    /// Unregistered chunks kept because they are younger than the grace period.
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
    /// Planned chunks kept because a Put announced or re-used them meanwhile.
    pub chunks_kept: usize,
    /// Pending writes of timed-out snapshots dropped.
    pub pending_writes_dropped: usize,
}

/// Decide what is garbage. `stored` lists the chunk store (taken after the view);
/// `now_ms` is the service clock at the start (to find pending snapshots past their
/// deadline); `wall_now` the wall clock (the write times of stored chunks are wall time).
pub fn plan<N: NodeSource>(
    view: &GcView<N>,
    stored: &[StoredChunk],
    now_ms: i64,
    wall_now: SystemTime,
    options: GcOptions,
) -> Result<GcPlan, StoreError> {
    let mut live_nodes = HashSet::new();
    let mut live_chunks: HashSet<ChunkDigest> = HashSet::new();
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
    // Nodes a Complete stored ahead of its seal (the view holds only those of pending
    // snapshots): the seal will reference them.
    for root in &view.staged {
        mark(&view.reader, Some(*root), &mut live_nodes, &mut live_chunks)?;
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
    let registered: HashMap<ChunkDigest, &crate::ports::RegisteredChunk> =
        view.chunks.iter().map(|c| (c.digest, c)).collect();
    let mut garbage_chunks: Vec<(ChunkDigest, u64)> = view
        .chunks
        .iter()
        .filter(|c| !live_chunks.contains(&c.digest) && c.stamp < view.start)
        .map(|c| (c.digest, c.size))
        .collect();
    let orphan_cutoff = wall_now
        .checked_sub(options.chunk_grace)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut young_chunks = 0;
    for chunk in stored {
        if registered.contains_key(&chunk.digest) || live_chunks.contains(&chunk.digest) {
            continue;
        }
        if chunk.written < orphan_cutoff {
            garbage_chunks.push((chunk.digest, chunk.size));
        } else {
            young_chunks += 1;
        }
    }
    Ok(GcPlan {
        node_cutoff: view.start,
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
    use crate::ports::RegisteredChunk;
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
            encryption_key: None,
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

    fn registered(n: u8, stamp: u64) -> RegisteredChunk {
        RegisteredChunk {
            digest: digest(n),
            size: 100,
            stamp: Stamp(stamp),
        }
    }

    fn stored(n: u8, written: SystemTime) -> StoredChunk {
        StoredChunk {
            digest: digest(n),
            size: 100,
            written,
        }
    }

    fn empty_view(start: u64) -> GcView<MemoryNodes> {
        GcView {
            start: Stamp(start),
            records: Vec::new(),
            pending: Vec::new(),
            staged: Vec::new(),
            nodes: Vec::new(),
            chunks: Vec::new(),
            reader: MemoryNodes::default(),
        }
    }

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(10_000)
    }

    /// Deleting a parent keeps every node and chunk its child still shares; what only the
    /// parent used becomes garbage, and pending content is kept.
    #[test]
    fn plans_keep_everything_reachable() {
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
        let view = GcView {
            start: Stamp(20),
            // The parent was deleted: only the child (completed) and a pending snapshot remain.
            records: vec![
                record("snap-0c", SnapshotStatus::Completed, child.root),
                record("snap-0d", SnapshotStatus::Pending, None),
            ],
            pending: vec![(SnapshotId::parse("snap-0d").expect("id"), vec![digest(4)])],
            staged: Vec::new(),
            nodes: all_nodes,
            chunks: (1..=4).map(|n| registered(n, 10)).collect(),
            reader: nodes,
        };
        let listed: Vec<StoredChunk> = (1..=4).map(|n| stored(n, wall())).collect();
        let plan = plan(&view, &listed, 20, wall(), GcOptions::default()).expect("plan");
        // Chunk 2 was only in the parent.
        assert_eq!(plan.garbage_chunks, vec![(digest(2), 100)]);
        assert_eq!(plan.live_chunks, 3);
        // The parent's root and the path to 5000 are garbage; the shared leaf of index 0 is not.
        assert!(!plan.garbage_nodes.is_empty());
        for hash in &plan.garbage_nodes {
            assert!(parent.new_nodes.iter().any(|(h, _)| h == hash));
            assert!(!child.new_nodes.iter().any(|(h, _)| h == hash));
        }
        assert_eq!(plan.live_nodes + plan.garbage_nodes.len(), view.nodes.len());
    }

    /// A registered chunk re-used by a write record stamped at or after the view is kept
    /// (the record committed after the view: its pending write is not in it).
    #[test]
    fn chunks_stamped_at_or_after_the_view_are_kept() {
        let mut view = empty_view(50);
        view.chunks = vec![registered(1, 49), registered(2, 50), registered(3, 51)];
        let plan = plan(&view, &[], 0, wall(), GcOptions::default()).expect("plan");
        assert_eq!(plan.garbage_chunks, vec![(digest(1), 100)]);
    }

    /// A stored chunk no record registered is garbage once older than the grace period:
    /// younger, its Put may still be recording it.
    #[test]
    fn unregistered_chunks_are_garbage_only_after_the_grace_period() {
        let mut view = empty_view(5);
        view.chunks = vec![registered(1, 1)];
        let options = GcOptions {
            chunk_grace: Duration::from_secs(60),
        };
        let listed = [
            stored(1, wall() - Duration::from_secs(3600)),
            stored(2, wall() - Duration::from_secs(3600)),
            stored(3, wall() - Duration::from_secs(10)),
        ];
        let plan = plan(&view, &listed, 0, wall(), options).expect("plan");
        assert_eq!(
            plan.garbage_chunks,
            vec![(digest(1), 100), (digest(2), 100)],
            "registered garbage once, the old orphan, not the young one"
        );
        assert_eq!(plan.young_chunks, 1);
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
            let mut view = empty_view(start);
            view.reader.store(&tree);
            view.nodes = tree
                .new_nodes
                .iter()
                .map(|(h, _)| (*h, Stamp(50)))
                .collect();
            view
        };
        let early = plan(&view_at(50), &[], 0, wall(), GcOptions::default()).expect("plan");
        assert!(
            early.garbage_nodes.is_empty(),
            "stamped at the view's start: kept"
        );
        let later = plan(&view_at(51), &[], 0, wall(), GcOptions::default()).expect("plan");
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
        let mut view = empty_view(5);
        view.records = vec![overdue.clone(), failed.clone()];
        view.pending = vec![
            (overdue.id.clone(), vec![digest(1)]),
            (failed.id.clone(), vec![digest(2)]),
        ];
        view.chunks = vec![registered(1, 1), registered(2, 1)];
        let past_deadline = overdue.deadline_ms() + 1;
        let plan = plan(&view, &[], past_deadline, wall(), GcOptions::default()).expect("plan");
        assert_eq!(plan.garbage_chunks, vec![(digest(2), 100)]);
        assert_eq!(plan.due_snapshots, vec![overdue.id]);
        assert_eq!(plan.expired_snapshots, vec![failed.id]);
    }

    /// The subtrees a Complete stored ahead of its seal are live, with the chunks they
    /// name, although no record references them yet.
    #[test]
    fn staged_subtrees_are_live() {
        let tree = apply(
            &MemoryNodes::default(),
            None,
            &[
                (BlockIndex::new(0), digest(1)),
                (BlockIndex::new(5000), digest(2)),
            ],
            1 << 20,
        )
        .expect("tree");
        let mut view = empty_view(100);
        view.reader.store(&tree);
        view.nodes = tree.new_nodes.iter().map(|(h, _)| (*h, Stamp(1))).collect();
        view.chunks = vec![registered(1, 1), registered(2, 1)];
        view.records = vec![record("snap-0a", SnapshotStatus::Pending, None)];
        let unstaged = plan(&view, &[], 0, wall(), GcOptions::default()).expect("plan");
        assert_eq!(unstaged.garbage_nodes.len(), tree.new_nodes.len());
        // The level-1 subtree holding block 0: its two nodes (and chunk 1) stay.
        let level_one = tree
            .new_nodes
            .iter()
            .find(|(_, encoded)| encoded[0] == 1)
            .map(|(h, _)| *h)
            .expect("a level-1 node");
        view.staged = vec![level_one];
        let staged = plan(&view, &[], 0, wall(), GcOptions::default()).expect("plan");
        assert_eq!(staged.garbage_nodes.len(), tree.new_nodes.len() - 2);
        assert!(!staged.garbage_nodes.contains(&level_one));
        assert_eq!(staged.garbage_chunks.len(), 1);
    }
}
