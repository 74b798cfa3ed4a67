//! The races of issue 10 as scenarios any pair of adapters can run: the service over the
//! adapters wrapped by [`crate::faults`], whose gates hold one operation at a chosen point
//! while the scenario runs others to completion, so each race happens in exactly the order
//! that broke it. [`race_scenarios!`] instantiates every scenario for one pair of adapters
//! (one `#[tokio::test]` each); `strata-core` runs them on the in-memory adapters, the
//! embedded store on its own. Every scenario failed on the code before its fix (the
//! closing note of issue 10 shows the runs).

use std::sync::Arc;
use std::time::Duration;

use strata_core::gc::GcOptions;
use strata_core::ports::{ChunkStore, MetadataStore};
use strata_core::service::{CompleteLimits, PageRequest, StartSnapshotInput};
use strata_core::snapshot::{SnapshotStatus, Tag};
use strata_core::tokens::TokenIssuer;
use strata_core::{ServiceError, SnapshotService};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};

use crate::conformance::fixtures::{account, content};
use crate::{Faults, FaultyChunks, FaultyMetadata, ManualClock, Op};

/// Instantiate every scenario of [`crate::races`] for one pair of adapters. `$open` is an
/// async function returning `(metadata, chunks, probe, guard)`: fresh stores, a
/// [`ChunkProbe`] on the chunk store's bytes, and whatever must outlive the test (a
/// temporary directory).
#[macro_export]
macro_rules! race_scenarios {
    ($open:path) => {
        $crate::race_scenarios!(@cases $open;
            race_1_a_put_crossing_the_deadline_cannot_revive_writes_gc_freed,
            race_2_a_seal_queued_before_a_gc_plan_keeps_the_nodes_it_rewrites,
            race_3_a_chunk_reused_while_a_long_plan_waits_is_kept,
            race_4_a_dedup_put_survives_a_read_that_finds_its_chunk_damaged,
            race_6_a_child_is_never_started_on_a_parent_deleted_meanwhile,
            race_6_tags_changed_while_a_snapshot_completes_are_kept,
            race_7_a_complete_overtaken_by_another_answers_completed,
            race_8_a_put_finishes_the_deletion_a_dead_collection_left_behind,
            race_9_subtrees_stored_ahead_of_a_seal_survive_a_collection,
            race_9_a_write_between_pages_makes_the_complete_read_again,
            collections_and_sweeps_run_only_under_their_lease,
            io_errors_of_the_chunk_store_answer_cleanly_and_lose_nothing,
        );
    };
    (@cases $open:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let (metadata, chunks, probe, _guard) = $open().await;
                let harness = $crate::races::Harness::new(metadata, chunks, probe);
                $crate::races::$case(harness).await;
            }
        )*
    };
}

/// A look at the chunk store's bytes, past its port.
pub struct ChunkProbe {
    /// Whether the store holds the chunk.
    pub has: Box<dyn Fn(&ChunkDigest) -> bool + Send + Sync>,
    /// Damage the stored copy of a chunk, as rot on a disk would.
    pub damage: Box<dyn Fn(&ChunkDigest) + Send + Sync>,
}

type Service<M, C> = SnapshotService<FaultyMetadata<M>, FaultyChunks<C>>;

/// A service over gated stores, with a clock the scenario moves.
pub struct Harness<M, C> {
    service: Service<M, C>,
    faults: Faults,
    clock: ManualClock,
    probe: ChunkProbe,
    owner: AccountId,
}

impl<M: MetadataStore, C: ChunkStore> Harness<M, C> {
    /// The service over `metadata` and `chunks`, each wrapped with one shared [`Faults`].
    pub fn new(metadata: M, chunks: C, probe: ChunkProbe) -> Self {
        let faults = Faults::new();
        let clock = ManualClock::default();
        let service = SnapshotService::new(
            Arc::new(FaultyMetadata::new(metadata, faults.clone())),
            Arc::new(FaultyChunks::new(chunks, faults.clone())),
            TokenIssuer::new([5; 32]),
            Arc::new(clock.clone()),
        );
        Self {
            service,
            faults,
            clock,
            probe,
            owner: account(1),
        }
    }

    async fn start(&self, parent: Option<&SnapshotId>, timeout_minutes: i64) -> SnapshotId {
        self.service
            .start_snapshot(&self.owner, start_input(parent, timeout_minutes))
            .await
            .expect("start")
            .id
    }

    async fn complete(&self, id: &SnapshotId, count: i64) {
        self.service
            .complete_snapshot(&self.owner, id, count, None)
            .await
            .expect("complete");
    }

    /// Collect now: plan (chunks need no age) and execute.
    async fn collect(&self) {
        // Chunk times are wall-clock: let a moment pass so everything stored is "before".
        tokio::time::sleep(Duration::from_millis(2)).await;
        let plan = self.service.plan_gc(no_grace()).await.expect("plan");
        self.service.execute_gc(&plan).await.expect("execute");
    }

    /// Every block of a completed snapshot, read through the service.
    async fn read_all(&self, id: &SnapshotId) -> Result<Vec<(u32, Vec<u8>)>, ServiceError> {
        read_all(&self.service, &self.owner, id).await
    }
}

fn start_input(parent: Option<&SnapshotId>, timeout_minutes: i64) -> StartSnapshotInput {
    StartSnapshotInput {
        volume_size_gib: 1,
        parent: parent.cloned(),
        timeout_minutes: Some(timeout_minutes),
        ..StartSnapshotInput::default()
    }
}

fn no_grace() -> GcOptions {
    GcOptions {
        chunk_grace: Duration::ZERO,
    }
}

/// PutSnapshotBlock as the HTTP handler runs it: permit, body, store and record.
async fn put<M: MetadataStore, C: ChunkStore>(
    service: &Service<M, C>,
    owner: &AccountId,
    id: &SnapshotId,
    index: u32,
    data: &[u8],
) -> Result<ChunkDigest, ServiceError> {
    let claimed = ChunkDigest::of(data);
    let permit = service
        .begin_put(owner, id, BlockIndex::new(index), claimed)
        .await?;
    let mut hasher = permit.block_hasher();
    assert!(hasher.update(data));
    service.put_block(permit, hasher.finish(), None).await
}

async fn read_all<M: MetadataStore, C: ChunkStore>(
    service: &Service<M, C>,
    owner: &AccountId,
    id: &SnapshotId,
) -> Result<Vec<(u32, Vec<u8>)>, ServiceError> {
    let page = service
        .list_blocks(
            owner,
            id,
            PageRequest {
                max_results: Some(10_000),
                ..PageRequest::default()
            },
        )
        .await?;
    let mut blocks = Vec::new();
    for (index, token) in page.blocks {
        let block = service.get_block(owner, id, index, &token).await?;
        blocks.push((index.get(), block.data.to_vec()));
    }
    Ok(blocks)
}

/// Race 1: GC must not free the pending writes of a snapshot it only *computes* as timed
/// out. A Put that checked the snapshot before its deadline and records its write after it
/// would otherwise bring the snapshot back to pending, holding a write whose chunk the
/// collection deleted meanwhile. Fixed: GC treats only a stored `error` as expired, and the
/// store refuses to record a write past the snapshot's deadline.
pub async fn race_1_a_put_crossing_the_deadline_cannot_revive_writes_gc_freed<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let id = h.start(None, 10).await;
    put(&h.service, &h.owner, &id, 0, &content(1))
        .await
        .expect("first put");

    // The late put has passed its checks and is storing its chunk when the deadline passes.
    let storing = h.faults.gate_next(Op::PutChunk);
    let late = {
        let (service, owner, id) = (h.service.clone(), h.owner.clone(), id.clone());
        tokio::spawn(async move { put(&service, &owner, &id, 1, &content(2)).await })
    };
    storing.reached().await;
    h.clock.advance_minutes(11);
    tokio::time::sleep(Duration::from_millis(2)).await;
    let plan = h.service.plan_gc(no_grace()).await.expect("plan");
    storing.open();
    let late = late.await.expect("task");
    h.service.execute_gc(&plan).await.expect("execute");

    // Whatever the late put was told, no write the store kept may name a freed chunk.
    let pending = h
        .service
        .metadata()
        .pending_writes(&id)
        .await
        .expect("pending writes");
    for (index, digest) in &pending.blocks {
        assert!(
            (h.probe.has)(digest),
            "block {index} of {id} is recorded, but GC freed its chunk (late put: {late:?})"
        );
    }
    assert!(
        matches!(late, Err(ServiceError::NotPending { .. })),
        "a write past the deadline is refused: {late:?}"
    );
}

/// Race 2: a seal re-writes nodes that may already exist (node hashes do not depend on
/// their position, so an image uploaded again reuses garbage nodes). If the seal stamps
/// them with a time taken before it was queued, a GC whose plan started in between deletes
/// nodes the completed snapshot then references. Fixed: the store stamps node writes when
/// they commit, and GC deletes only nodes stamped before its plan's stamp.
pub async fn race_2_a_seal_queued_before_a_gc_plan_keeps_the_nodes_it_rewrites<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let first = h.start(None, 60).await;
    put(&h.service, &h.owner, &first, 0, &content(1))
        .await
        .expect("put");
    h.complete(&first, 1).await;
    h.service
        .delete_snapshot(&h.owner, &first)
        .await
        .expect("delete");

    // The same image again: its tree is made of exactly the garbage nodes of `first`.
    let second = h.start(None, 60).await;
    put(&h.service, &h.owner, &second, 0, &content(1))
        .await
        .expect("put");
    let sealing = h.faults.gate_next(Op::SealSnapshot);
    let complete = {
        let (service, owner, id) = (h.service.clone(), h.owner.clone(), second.clone());
        tokio::spawn(async move { service.complete_snapshot(&owner, &id, 1, None).await })
    };
    sealing.reached().await;
    h.clock.advance_ms(1);
    let plan = h.service.plan_gc(no_grace()).await.expect("plan");
    sealing.open();
    let status = complete.await.expect("task").expect("complete");
    assert_eq!(status, SnapshotStatus::Completed);
    h.service.execute_gc(&plan).await.expect("execute");

    let blocks = h
        .read_all(&second)
        .await
        .expect("the completed snapshot reads");
    assert_eq!(blocks, vec![(0, content(1))]);
}

/// Race 3: a dedup Put settled by the chunk store's refresh memory (one hour, by the wall
/// clock) while nothing bounded how long a GC plan ran: a chunk re-used early in a long plan
/// could be deleted late in it. Fixed: re-use is recorded in the metadata store, by the
/// write record, with the store's stamp; a collection condemns only chunks stamped before
/// its view, whatever the clocks say.
pub async fn race_3_a_chunk_reused_while_a_long_plan_waits_is_kept<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let first = h.start(None, 600).await;
    put(&h.service, &h.owner, &first, 0, &content(1))
        .await
        .expect("put");
    h.complete(&first, 1).await;
    h.service
        .delete_snapshot(&h.owner, &first)
        .await
        .expect("delete");
    tokio::time::sleep(Duration::from_millis(2)).await;
    let plan = h.service.plan_gc(no_grace()).await.expect("plan");
    assert_eq!(plan.garbage_chunks.len(), 1, "content 1 is garbage now");

    // The same content is uploaded again (deduplicated) while the plan waits, for hours.
    let second = h.start(None, 600).await;
    put(&h.service, &h.owner, &second, 0, &content(1))
        .await
        .expect("dedup put");
    h.clock.advance_minutes(180);
    let report = h.service.execute_gc(&plan).await.expect("execute");
    assert_eq!(report.chunks_deleted, 0, "{report:?}");
    h.complete(&second, 1).await;
    let blocks = h.read_all(&second).await.expect("reads");
    assert_eq!(blocks, vec![(0, content(1))]);
}

/// Race 4: a dedup Put was acknowledged from the chunk index alone. A GET that found the
/// stored copy damaged meanwhile forgot it, and the acknowledged write named content that
/// was not stored, while the verified client bytes had been dropped. Fixed: the write
/// record checks the chunk registry in its own transaction; a Put whose chunk left it
/// stores the bytes it kept and records again.
pub async fn race_4_a_dedup_put_survives_a_read_that_finds_its_chunk_damaged<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let first = h.start(None, 60).await;
    put(&h.service, &h.owner, &first, 0, &content(1))
        .await
        .expect("put");
    h.complete(&first, 1).await;

    let second = h.start(None, 60).await;
    let recording = h.faults.gate_next(Op::RecordBlock);
    let dedup = {
        let (service, owner, id) = (h.service.clone(), h.owner.clone(), second.clone());
        tokio::spawn(async move { put(&service, &owner, &id, 0, &content(1)).await })
    };
    recording.reached().await;
    (h.probe.damage)(&ChunkDigest::of(&content(1)));
    let damaged = h.read_all(&first).await;
    assert!(
        matches!(damaged, Err(ServiceError::CorruptData(_))),
        "the damaged copy is found: {damaged:?}"
    );
    recording.open();
    dedup
        .await
        .expect("task")
        .expect("the dedup put is acknowledged");
    h.complete(&second, 1).await;

    let blocks = h
        .read_all(&second)
        .await
        .expect("the acknowledged write reads back");
    assert_eq!(blocks, vec![(0, content(1))]);
    let repaired = h
        .read_all(&first)
        .await
        .expect("and repairs the first snapshot");
    assert_eq!(repaired, vec![(0, content(1))]);
}

/// Race 6 (start): StartSnapshot reads its parent's root, then creates the child with it.
/// A DeleteSnapshot of the parent and a GC in between leave the child built on a tree that
/// no longer exists. Fixed: the store creates the child only if the parent is still there,
/// completed, with the same root, atomically with the creation.
pub async fn race_6_a_child_is_never_started_on_a_parent_deleted_meanwhile<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let parent = h.start(None, 60).await;
    put(&h.service, &h.owner, &parent, 0, &content(1))
        .await
        .expect("put");
    h.complete(&parent, 1).await;

    let creating = h.faults.gate_next(Op::CreateSnapshot);
    let start = {
        let (service, owner, parent) = (h.service.clone(), h.owner.clone(), parent.clone());
        tokio::spawn(async move {
            service
                .start_snapshot(&owner, start_input(Some(&parent), 60))
                .await
        })
    };
    creating.reached().await;
    h.service
        .delete_snapshot(&h.owner, &parent)
        .await
        .expect("delete the parent");
    h.clock.advance_ms(1);
    h.collect().await;
    creating.open();

    match start.await.expect("task") {
        Err(ServiceError::SnapshotNotFound(missing)) => assert_eq!(missing, parent),
        Ok(child) => {
            h.complete(&child.id, 0).await;
            let blocks = h.read_all(&child.id).await;
            panic!("a child was started on a deleted parent; reading it: {blocks:?}");
        }
        Err(other) => panic!("unexpected: {other:?}"),
    }
}

/// Race 6 (complete): CompleteSnapshot reads the record, builds the tree and seals; tags
/// created or deleted in between were overwritten by the record it read. Fixed: the seal
/// changes only the completion fields of the stored record.
pub async fn race_6_tags_changed_while_a_snapshot_completes_are_kept<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let id = h.start(None, 60).await;
    put(&h.service, &h.owner, &id, 0, &content(1))
        .await
        .expect("put");
    let sealing = h.faults.gate_next(Op::SealSnapshot);
    let complete = {
        let (service, owner, id) = (h.service.clone(), h.owner.clone(), id.clone());
        tokio::spawn(async move { service.complete_snapshot(&owner, &id, 1, None).await })
    };
    sealing.reached().await;
    let tag = Tag {
        key: "team".into(),
        value: "storage".into(),
    };
    h.service
        .create_tags(
            &h.owner,
            std::slice::from_ref(&id),
            std::slice::from_ref(&tag),
        )
        .await
        .expect("tag");
    sealing.open();
    complete.await.expect("task").expect("complete");

    let record = h
        .service
        .describe_snapshot(&h.owner, &id)
        .await
        .expect("describe");
    assert_eq!(record.status, SnapshotStatus::Completed);
    assert_eq!(record.tags, vec![tag], "the tag created meanwhile survives");
}

/// Race 7 (found by the cluster tests: two nodes completing one snapshot): a
/// CompleteSnapshot that read the record as pending, overtaken by another that sealed it,
/// read the pending writes after the seal dropped them, found none and answered
/// "ChangedBlocksCount is 1, but 0 distinct blocks were written". Fixed: a mismatch is
/// checked against the record again, and a snapshot completed meanwhile is completed.
pub async fn race_7_a_complete_overtaken_by_another_answers_completed<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let id = h.start(None, 60).await;
    put(&h.service, &h.owner, &id, 0, &content(1))
        .await
        .expect("put");
    let reading = h.faults.gate_next(Op::PendingWrites);
    let overtaken = {
        let (service, owner, id) = (h.service.clone(), h.owner.clone(), id.clone());
        tokio::spawn(async move { service.complete_snapshot(&owner, &id, 1, None).await })
    };
    reading.reached().await;
    h.complete(&id, 1).await;
    reading.open();
    let status = overtaken
        .await
        .expect("task")
        .expect("the overtaken complete");
    assert_eq!(status, SnapshotStatus::Completed);
    let blocks = h.read_all(&id).await.expect("read back");
    assert_eq!(blocks, vec![(0, content(1))]);
}

/// Race 8 (found by the e2e test that kills a node mid-collection): a collection that
/// dies between condemning a chunk and finalizing its deletion leaves a tombstone that
/// refuses every Put of that content, until another collection runs: which is not before
/// the dead holder's lease lapses, and not before the next scheduled run after that (15
/// minutes by default). A re-upload of the content failed all that time. Fixed: a Put
/// refused by a tombstone takes the GC lease if no live collection holds it, finishes that
/// deletion itself (delete the object, finalize) and goes on; while a collection holds the
/// lease, the Put is refused retryably and deletes nothing.
/// Blocks in four level-1 subtrees (4,096 indexes each) of an 8 GiB volume.
const SPREAD: [u32; 4] = [0, 4_096, 8_192, 12_288];

/// A service that reads one pending write per page and stores every finished subtree
/// ahead of the seal, as CompleteSnapshot does for millions of writes.
fn staging_service<M: MetadataStore, C: ChunkStore>(h: &Harness<M, C>) -> Service<M, C> {
    h.service.clone().with_complete_limits(CompleteLimits {
        page: 1,
        stage_bytes: 0,
    })
}

async fn start_spread<M: MetadataStore, C: ChunkStore>(h: &Harness<M, C>) -> SnapshotId {
    let input = StartSnapshotInput {
        volume_size_gib: 8,
        timeout_minutes: Some(60),
        ..StartSnapshotInput::default()
    };
    let id = h
        .service
        .start_snapshot(&h.owner, input)
        .await
        .expect("start")
        .id;
    for (n, index) in SPREAD.iter().enumerate() {
        put(&h.service, &h.owner, &id, *index, &content(10 + n as u32))
            .await
            .expect("put");
    }
    id
}

/// Bounded-memory CompleteSnapshot stores finished subtrees before its seal. A collection
/// that runs entirely between the two finds them referenced by no record: unless the
/// staged roots are live, it deletes them, and the seal then commits a tree whose nodes
/// are gone.
pub async fn race_9_subtrees_stored_ahead_of_a_seal_survive_a_collection<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let id = start_spread(&h).await;
    let service = staging_service(&h);
    let staged_before = h.faults.calls(Op::StageNodes);
    let sealing = h.faults.gate_next(Op::SealSnapshot);
    let complete = {
        let (owner, id) = (h.owner.clone(), id.clone());
        tokio::spawn(async move { service.complete_snapshot(&owner, &id, 4, None).await })
    };
    sealing.reached().await;
    assert!(
        h.faults.calls(Op::StageNodes) > staged_before,
        "the complete stored subtrees ahead of its seal"
    );
    h.clock.advance_ms(1);
    h.collect().await;
    sealing.open();
    let status = complete.await.expect("task").expect("complete");
    assert_eq!(status, SnapshotStatus::Completed);
    let blocks = h
        .read_all(&id)
        .await
        .expect("every node of the completed snapshot is stored");
    let expected: Vec<(u32, Vec<u8>)> = SPREAD
        .iter()
        .enumerate()
        .map(|(n, index)| (*index, content(10 + n as u32)))
        .collect();
    assert_eq!(blocks, expected);
    // Once sealed, what was staged is referenced by the snapshot: a collection keeps it.
    h.collect().await;
    assert_eq!(h.read_all(&id).await.expect("read after GC"), expected);
}

/// A block written while CompleteSnapshot reads its pages moves the write sequence: the
/// pages read before it no longer belong to the same state, so the complete reads again
/// and its tree holds the new block.
pub async fn race_9_a_write_between_pages_makes_the_complete_read_again<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    let id = start_spread(&h).await;
    let service = staging_service(&h);
    let second_page = h
        .faults
        .gate(Op::PendingWrites, h.faults.calls(Op::PendingWrites) + 2);
    let complete = {
        let (owner, id) = (h.owner.clone(), id.clone());
        tokio::spawn(async move { service.complete_snapshot(&owner, &id, 4, None).await })
    };
    second_page.reached().await;
    // Rewrites block 0, whose page was read already; the count stays 4.
    put(&h.service, &h.owner, &id, SPREAD[0], &content(99))
        .await
        .expect("put");
    second_page.open();
    let status = complete.await.expect("task").expect("complete");
    assert_eq!(status, SnapshotStatus::Completed);
    let blocks = h.read_all(&id).await.expect("read");
    assert_eq!(blocks[0], (SPREAD[0], content(99)));
    assert_eq!(blocks.len(), 4);
}

pub async fn race_8_a_put_finishes_the_deletion_a_dead_collection_left_behind<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    use strata_core::service::{GC_LEASE, LEASE_TTL};
    let metadata = h.service.metadata();
    let doomed = h.start(None, 60).await;
    let digest = put(&h.service, &h.owner, &doomed, 0, &content(8))
        .await
        .expect("put");
    h.complete(&doomed, 1).await;
    h.service
        .delete_snapshot(&h.owner, &doomed)
        .await
        .expect("delete");

    // A collection condemns the chunk, then its node dies before deleting and finalizing.
    assert!(
        metadata
            .acquire_lease(GC_LEASE, "dead-node", LEASE_TTL)
            .await
            .expect("lease")
    );
    let view = metadata.gc_view().await.expect("view");
    // The Put's own announcement is withdrawn in the background by a shared store (the
    // port allows it to take effect a little later): condemn once it has.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let condemned = metadata
            .condemn_chunks(vec![digest], view.start)
            .await
            .expect("condemn");
        if condemned == vec![digest] {
            break;
        }
        assert!(
            condemned.is_empty() && std::time::Instant::now() < deadline,
            "the chunk is condemned once the Put's announcement is withdrawn, got {condemned:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // While its lease is alive, a Put of that content is refused retryably and deletes
    // nothing (the collection may be deleting the object right now).
    let reupload = h.start(None, 60).await;
    let refused = put(&h.service, &h.owner, &reupload, 0, &content(8)).await;
    let error = refused.expect_err("a live collection is deleting that content");
    assert!(
        matches!(&error, ServiceError::Store(e) if e.is_retryable()),
        "refused retryably, not {error:?}"
    );
    assert!((h.probe.has)(&digest), "the Put deleted nothing");

    // The lease lapses (released here: not every store's clock can be moved by a test).
    metadata
        .release_lease(GC_LEASE, "dead-node")
        .await
        .expect("release");
    put(&h.service, &h.owner, &reupload, 0, &content(8))
        .await
        .expect("the Put finishes the dead collection's deletion and stores the block");
    h.complete(&reupload, 1).await;
    assert_eq!(
        h.read_all(&reupload).await.expect("read"),
        vec![(0, content(8))]
    );
    assert!(
        metadata
            .condemned_chunks()
            .await
            .expect("condemned")
            .is_empty(),
        "the tombstone is finalized"
    );
    // And a collection now keeps the chunk the re-upload references.
    h.collect().await;
    assert_eq!(
        h.read_all(&reupload).await.expect("read"),
        vec![(0, content(8))]
    );
}

/// Background work that must run once per cluster runs under its lease: while another
/// holder's GC lease is alive, a collection does not start; once it is released, it does.
/// The sweep likewise.
pub async fn collections_and_sweeps_run_only_under_their_lease<M: MetadataStore, C: ChunkStore>(
    h: Harness<M, C>,
) {
    use strata_core::service::{GC_LEASE, LEASE_TTL, TIMEOUT_SWEEP_LEASE};
    let metadata = h.service.metadata();
    assert!(
        metadata
            .acquire_lease(GC_LEASE, "other-node", LEASE_TTL)
            .await
            .expect("lease")
    );
    let blocked = h
        .service
        .collect_garbage("this-node", no_grace(), false)
        .await
        .expect("collect");
    assert!(blocked.is_none(), "another node is collecting");
    metadata
        .release_lease(GC_LEASE, "other-node")
        .await
        .expect("release");
    let ran = h
        .service
        .collect_garbage("this-node", no_grace(), false)
        .await
        .expect("collect");
    assert!(matches!(ran, Some((_, Some(_)))), "{ran:?}");
    assert!(
        metadata
            .acquire_lease(GC_LEASE, "other-node", LEASE_TTL)
            .await
            .expect("lease"),
        "a finished collection gives its lease back"
    );

    assert!(
        metadata
            .acquire_lease(TIMEOUT_SWEEP_LEASE, "other-node", LEASE_TTL)
            .await
            .expect("lease")
    );
    assert_eq!(
        h.service.sweep_timeouts("this-node").await.expect("sweep"),
        None
    );
}

/// I/O errors of the chunk store (EIO on a write, then on a read) met through the
/// service: the Put that met one is refused and records nothing, and its retry succeeds;
/// a read that met one fails without calling the chunk damaged (a transient fault is not
/// corruption: the chunk stays registered and later Puts still deduplicate against it);
/// a stored copy that really is damaged is found by the read, is no longer trusted, and
/// the next upload of that content repairs it. No acknowledged block is lost.
pub async fn io_errors_of_the_chunk_store_answer_cleanly_and_lose_nothing<
    M: MetadataStore,
    C: ChunkStore,
>(
    h: Harness<M, C>,
) {
    use strata_core::ports::StoreError;
    let eio = || StoreError::io("test", std::io::Error::from_raw_os_error(5));
    let id = h.start(None, 60).await;
    put(&h.service, &h.owner, &id, 0, &content(1))
        .await
        .expect("put");

    h.faults
        .fail(Op::PutChunk, h.faults.calls(Op::PutChunk) + 1, eio());
    let refused = put(&h.service, &h.owner, &id, 1, &content(2)).await;
    assert!(
        matches!(&refused, Err(ServiceError::Store(StoreError::Io { .. }))),
        "an EIO on the write refuses the Put: {refused:?}"
    );
    let pending = h
        .service
        .metadata()
        .pending_writes(&id)
        .await
        .expect("pending");
    assert_eq!(pending.blocks.len(), 1, "the refused Put recorded nothing");
    put(&h.service, &h.owner, &id, 1, &content(2))
        .await
        .expect("the retry");
    h.complete(&id, 2).await;
    let written = vec![(0, content(1)), (1, content(2))];

    h.faults
        .fail(Op::GetChunk, h.faults.calls(Op::GetChunk) + 1, eio());
    let failed = h.read_all(&id).await;
    assert!(
        matches!(&failed, Err(ServiceError::Store(StoreError::Io { .. }))),
        "an EIO on the read is a storage failure, not corruption: {failed:?}"
    );
    let other = h.start(None, 60).await;
    let still = h
        .service
        .begin_put(
            &h.owner,
            &other,
            BlockIndex::new(0),
            ChunkDigest::of(&content(1)),
        )
        .await
        .expect("begin");
    assert!(
        still.content_is_stored(),
        "the chunk an EIO met is still registered"
    );
    drop(still);
    assert_eq!(h.read_all(&id).await.expect("read again"), written);

    let rotted = ChunkDigest::of(&content(2));
    (h.probe.damage)(&rotted);
    let damaged = h.read_all(&id).await;
    assert!(
        matches!(&damaged, Err(ServiceError::CorruptData(_))),
        "{damaged:?}"
    );
    let distrusted = h
        .service
        .begin_put(&h.owner, &other, BlockIndex::new(1), rotted)
        .await
        .expect("begin");
    assert!(
        !distrusted.content_is_stored(),
        "a copy found damaged is not relied on"
    );
    drop(distrusted);
    put(&h.service, &h.owner, &other, 1, &content(2))
        .await
        .expect("the re-upload");
    assert_eq!(
        h.read_all(&id).await.expect("repaired by the re-upload"),
        written
    );
}
