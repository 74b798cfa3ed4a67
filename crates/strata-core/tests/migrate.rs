//! `strata_core::migrate` between in-memory stores: a source with lineages, branches,
//! dedup, zero blocks, a deleted parent, a pending and a timed-out snapshot and two
//! owners is copied, read back block by block through the target's service, completed
//! there, collected, copied again (nothing to do), and copied after an interruption.

use std::sync::Arc;
use std::time::Duration;

use strata_core::gc::GcOptions;
use strata_core::migrate::{MigrateOptions, Migration, MigrationReport, Outcome};
use strata_core::ports::{CreateOutcome, MetadataStore, StoreError};
use strata_core::service::{PageRequest, StartSnapshotInput};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus, Tag};
use strata_core::tokens::TokenIssuer;
use strata_core::{SnapshotService, SystemClock};
use strata_store_testkit::conformance::fixtures::{account, content, pending, snapshot_id};
use strata_store_testkit::{Faults, FaultyChunks, MemoryChunkStore, MemoryMetadataStore, Op};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};

type Service<C> = SnapshotService<MemoryMetadataStore, C>;

fn service<C: strata_core::ports::ChunkStore>(
    metadata: &Arc<MemoryMetadataStore>,
    chunks: &Arc<C>,
) -> Service<C> {
    SnapshotService::new(
        Arc::clone(metadata),
        Arc::clone(chunks),
        TokenIssuer::new([9; 32]),
        Arc::new(SystemClock),
    )
}

/// The source store and what the test knows about it.
struct Source {
    metadata: Arc<MemoryMetadataStore>,
    chunks: Arc<MemoryChunkStore>,
    service: Service<MemoryChunkStore>,
    completed: Vec<(AccountId, SnapshotId)>,
    pending: SnapshotId,
    pending_on_deleted_parent: SnapshotId,
    timed_out: SnapshotId,
    /// Distinct non-zero contents written.
    distinct: u64,
}

async fn start(
    service: &Service<MemoryChunkStore>,
    owner: &AccountId,
    parent: Option<&SnapshotId>,
    input: StartSnapshotInput,
) -> SnapshotId {
    service
        .start_snapshot(
            owner,
            StartSnapshotInput {
                volume_size_gib: 1,
                parent: parent.cloned(),
                ..input
            },
        )
        .await
        .expect("start")
        .id
}

async fn put(
    service: &Service<MemoryChunkStore>,
    owner: &AccountId,
    id: &SnapshotId,
    index: u32,
    data: &[u8],
) {
    let permit = service
        .begin_put(owner, id, BlockIndex::new(index), ChunkDigest::of(data))
        .await
        .expect("begin put");
    let mut hasher = permit.block_hasher();
    assert!(hasher.update(data));
    service
        .put_block(permit, hasher.finish(), Some(50))
        .await
        .expect("put");
}

async fn complete(service: &Service<MemoryChunkStore>, owner: &AccountId, id: &SnapshotId) {
    let count = service
        .metadata()
        .pending_writes(id)
        .await
        .expect("writes")
        .blocks
        .len();
    service
        .complete_snapshot(owner, id, count as i64, None)
        .await
        .expect("complete");
}

/// A store with two owners; owner 1 has a chain base → child → grandchild, a branch off
/// base, a snapshot whose parent was deleted, a pending child and a timed-out snapshot.
async fn source() -> Source {
    let metadata = Arc::new(MemoryMetadataStore::new());
    let chunks = Arc::new(MemoryChunkStore::new());
    let service = service(&metadata, &chunks);
    let (one, two) = (account(1), account(2));
    let zero = vec![0u8; strata_types::BLOCK_SIZE];

    let base = start(
        &service,
        &one,
        None,
        StartSnapshotInput {
            description: Some("base".into()),
            client_token: Some("base-token".into()),
            ..StartSnapshotInput::default()
        },
    )
    .await;
    for i in 0..6 {
        put(&service, &one, &base, i, &content(i)).await;
    }
    put(&service, &one, &base, 6, &zero).await;
    put(&service, &one, &base, 7, &content(0)).await; // dedup within the snapshot
    put(&service, &one, &base, 2000, &content(1)).await; // far away: another subtree
    complete(&service, &one, &base).await;

    let child = start(
        &service,
        &one,
        Some(&base),
        StartSnapshotInput {
            tags: vec![Tag {
                key: "k".into(),
                value: "v".into(),
            }],
            ..StartSnapshotInput::default()
        },
    )
    .await;
    put(&service, &one, &child, 1, &content(100)).await;
    put(&service, &one, &child, 2, &content(2)).await; // same as the parent: no change
    put(&service, &one, &child, 3, &content(4)).await; // dedup against the parent
    put(&service, &one, &child, 10, &content(101)).await;
    complete(&service, &one, &child).await;

    let grandchild = start(&service, &one, Some(&child), StartSnapshotInput::default()).await;
    put(&service, &one, &grandchild, 0, &zero).await;
    put(&service, &one, &grandchild, 11, &content(102)).await;
    complete(&service, &one, &grandchild).await;

    let branch = start(&service, &one, Some(&base), StartSnapshotInput::default()).await;
    put(&service, &one, &branch, 5, &content(103)).await;
    complete(&service, &one, &branch).await;

    // A child whose parent is deleted afterwards: copied whole.
    let doomed = start(&service, &one, None, StartSnapshotInput::default()).await;
    put(&service, &one, &doomed, 0, &content(104)).await;
    complete(&service, &one, &doomed).await;
    let orphan = start(&service, &one, Some(&doomed), StartSnapshotInput::default()).await;
    put(&service, &one, &orphan, 1, &content(105)).await;
    complete(&service, &one, &orphan).await;
    let pending_on_deleted_parent =
        start(&service, &one, Some(&doomed), StartSnapshotInput::default()).await;
    put(&service, &one, &pending_on_deleted_parent, 2, &content(106)).await;
    service
        .delete_snapshot(&one, &doomed)
        .await
        .expect("delete");

    // Pending, on the child: copied with its writes, completed in the target.
    let pending_id = start(
        &service,
        &one,
        Some(&child),
        StartSnapshotInput {
            client_token: Some("pending-token".into()),
            ..StartSnapshotInput::default()
        },
    )
    .await;
    put(&service, &one, &pending_id, 4, &content(107)).await;
    put(&service, &one, &pending_id, 12, &content(101)).await;

    // Timed out long ago (its record as a node that died left it: stored pending).
    let timed_out = snapshot_id(0xdead);
    let mut record = pending(&timed_out, &one, 1_600_000_000_000);
    record.timeout_minutes = 10;
    assert!(matches!(
        metadata.create_snapshot(record).await.expect("create"),
        CreateOutcome::Created
    ));

    let other = start(
        &service,
        &two,
        None,
        StartSnapshotInput {
            client_token: Some("base-token".into()), // the same token, another owner
            ..StartSnapshotInput::default()
        },
    )
    .await;
    put(&service, &two, &other, 0, &content(0)).await; // dedup across owners
    put(&service, &two, &other, 1, &content(108)).await;
    complete(&service, &two, &other).await;

    Source {
        metadata,
        chunks,
        service,
        completed: vec![
            (one.clone(), base),
            (one.clone(), child),
            (one.clone(), grandchild),
            (one.clone(), branch),
            (one.clone(), orphan),
            (two, other),
        ],
        pending: pending_id,
        pending_on_deleted_parent,
        timed_out,
        // contents 0..=5, 100, 101, 102, 103, 104, 105, 106, 107, 108
        distinct: 15,
    }
}

/// Every block of a completed snapshot, read through a service (tokens, verification).
async fn read_all<C: strata_core::ports::ChunkStore>(
    service: &Service<C>,
    owner: &AccountId,
    id: &SnapshotId,
) -> Vec<(u32, Vec<u8>)> {
    let page = service
        .list_blocks(
            owner,
            id,
            PageRequest {
                max_results: Some(10_000),
                ..PageRequest::default()
            },
        )
        .await
        .expect("list blocks");
    let mut blocks = Vec::new();
    for (index, token) in page.blocks {
        let block = service
            .get_block(owner, id, index, &token)
            .await
            .expect("get");
        blocks.push((index.get(), block.data.to_vec()));
    }
    blocks
}

async fn changed<C: strata_core::ports::ChunkStore>(
    service: &Service<C>,
    owner: &AccountId,
    first: &SnapshotId,
    second: &SnapshotId,
) -> Vec<u32> {
    let page = service
        .list_changed_blocks(owner, Some(first), second, PageRequest::default())
        .await
        .expect("changed blocks");
    page.blocks.iter().map(|b| b.index.get()).collect()
}

async fn records(metadata: &MemoryMetadataStore) -> Vec<SnapshotRecord> {
    metadata.list_snapshots(None).await.expect("list")
}

fn outcome_of<'a>(report: &'a MigrationReport, id: &SnapshotId) -> &'a Outcome {
    &report
        .snapshots
        .iter()
        .find(|s| s.id == *id)
        .expect("reported")
        .outcome
}

async fn migrate<C: strata_core::ports::ChunkStore>(
    source: &Source,
    metadata: &Arc<MemoryMetadataStore>,
    chunks: &Arc<C>,
) -> MigrationReport {
    Migration::new(
        (Arc::clone(&source.metadata), Arc::clone(&source.chunks)),
        (Arc::clone(metadata), Arc::clone(chunks)),
        MigrateOptions { concurrency: 4 },
    )
    .run(|_| {})
    .await
    .expect("migration runs")
}

#[tokio::test]
async fn a_store_is_copied_exactly_verified_and_a_second_run_does_nothing() {
    let source = source().await;
    let metadata = Arc::new(MemoryMetadataStore::new());
    let chunks = Arc::new(MemoryChunkStore::new());
    let target = service(&metadata, &chunks);

    let report = migrate(&source, &metadata, &chunks).await;
    assert!(!report.failed(), "{report:#?}");
    assert_eq!(
        outcome_of(&report, &source.pending_on_deleted_parent),
        &Outcome::Skipped(
            "pending on a parent that is not in the target (deleted in the source): \
             complete or delete it in the source and run again"
                .into()
        )
    );
    // Each distinct content stored once, whatever the number of blocks naming it.
    assert_eq!(
        report.stored().0,
        source.distinct - 1,
        "106 is only in the skipped one"
    );

    // The records are the source's, field by field (the timed-out one as the error it is).
    let copied = records(&metadata).await;
    for record in records(&source.metadata).await {
        if record.id == source.pending_on_deleted_parent {
            assert!(!copied.iter().any(|r| r.id == record.id));
            continue;
        }
        let held = copied.iter().find(|r| r.id == record.id).expect("copied");
        if record.id == source.timed_out {
            assert_eq!(held.status, SnapshotStatus::Error);
            assert_eq!(held.status_message, record.as_of(i64::MAX).status_message);
        } else {
            assert_eq!(*held, record);
        }
    }

    // Every block reads back identical through the target's service, and diffs agree.
    for (owner, id) in &source.completed {
        assert_eq!(
            read_all(&target, owner, id).await,
            read_all(&source.service, owner, id).await,
            "{id}"
        );
    }
    let (one, ids) = (account(1), &source.completed);
    assert_eq!(
        changed(&target, &one, &ids[0].1, &ids[1].1).await,
        [1, 3, 10]
    );
    assert_eq!(
        changed(&target, &one, &ids[0].1, &ids[2].1).await,
        changed(&source.service, &one, &ids[0].1, &ids[2].1).await
    );

    // Client tokens came along: a retried start returns the copied snapshot.
    let again = target
        .start_snapshot(
            &one,
            StartSnapshotInput {
                volume_size_gib: 1,
                description: Some("base".into()),
                client_token: Some("base-token".into()),
                ..StartSnapshotInput::default()
            },
        )
        .await
        .expect("start with the token");
    assert_eq!(again.id, ids[0].1);

    // A collection in the target keeps everything: chunks are registered, nodes stamped.
    tokio::time::sleep(Duration::from_millis(2)).await;
    let plan = target
        .plan_gc(GcOptions {
            chunk_grace: Duration::ZERO,
        })
        .await
        .expect("plan");
    target.execute_gc(&plan).await.expect("collect");
    for (owner, id) in &source.completed {
        assert_eq!(
            read_all(&target, owner, id).await,
            read_all(&source.service, owner, id).await,
            "{id} after GC"
        );
    }

    // The pending snapshot completes in the target with its two writes.
    target
        .complete_snapshot(&one, &source.pending, 2, None)
        .await
        .expect("complete the copied pending snapshot");
    let blocks = read_all(&target, &one, &source.pending).await;
    assert!(blocks.contains(&(4, content(107))) && blocks.contains(&(12, content(101))));
    assert!(blocks.contains(&(1, content(100))), "built on the child");

    // Again: nothing to copy (the completed-since pending one is left alone).
    let second = migrate(&source, &metadata, &chunks).await;
    assert_eq!(second.stored(), (0, 0));
    for snapshot in &second.snapshots {
        match &snapshot.outcome {
            Outcome::AlreadyPresent => {}
            Outcome::Skipped(_)
                if snapshot.id == source.pending
                    || snapshot.id == source.pending_on_deleted_parent => {}
            other => panic!("{}: {other:?}", snapshot.id),
        }
    }
}

#[tokio::test]
async fn an_interrupted_run_is_finished_by_the_next_without_copying_twice() {
    let source = source().await;
    let metadata = Arc::new(MemoryMetadataStore::new());
    let faults = Faults::new();
    let chunks = Arc::new(FaultyChunks::new(MemoryChunkStore::new(), faults.clone()));
    // The sixth chunk stored fails for good (a full bucket, say): that snapshot stops
    // half copied, its earlier blocks recorded.
    faults.fail(Op::PutChunk, 6, StoreError::Backend("bucket full".into()));

    let first = migrate(&source, &metadata, &chunks).await;
    assert!(first.failed(), "{first:#?}");
    let failed: Vec<_> = first
        .snapshots
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
        .collect();
    assert_eq!(failed.len(), 1, "{first:#?}");
    let half = records(&metadata).await;
    let left = half
        .iter()
        .find(|r| r.id == failed[0].id)
        .expect("left behind");
    assert_eq!(
        left.status,
        SnapshotStatus::Pending,
        "half copied, not completed"
    );

    let second = migrate(&source, &metadata, &chunks).await;
    assert!(!second.failed(), "{second:#?}");
    assert_eq!(
        first.stored().0 + second.stored().0,
        source.distinct - 1,
        "no chunk stored by the first run is stored again"
    );
    let target = service(&metadata, &chunks);
    for (owner, id) in &source.completed {
        assert_eq!(
            read_all(&target, owner, id).await,
            read_all(&source.service, owner, id).await,
            "{id}"
        );
    }
}

#[tokio::test]
async fn another_snapshot_under_the_same_id_is_refused_never_overwritten() {
    let source = source().await;
    let metadata = Arc::new(MemoryMetadataStore::new());
    let chunks = Arc::new(MemoryChunkStore::new());
    let (owner, id) = source.completed[0].clone();
    // Someone else's snapshot with that id in the target.
    let mut stranger = pending(&id, &account(7), 1);
    stranger.status = SnapshotStatus::Completed;
    metadata
        .create_snapshot(stranger.clone())
        .await
        .expect("create");

    let report = migrate(&source, &metadata, &chunks).await;
    match outcome_of(&report, &id) {
        Outcome::Failed(why) => assert!(why.contains("another snapshot"), "{why}"),
        other => panic!("{other:?}"),
    }
    let held = metadata
        .snapshot(&id)
        .await
        .expect("read")
        .expect("still there");
    assert_eq!(held, stranger);
    assert_ne!(held.owner, owner);
}

#[tokio::test]
async fn other_content_or_a_taken_client_token_in_the_target_is_refused() {
    let source = source().await;
    let metadata = Arc::new(MemoryMetadataStore::new());
    let chunks = Arc::new(MemoryChunkStore::new());
    let originals = records(&source.metadata).await;
    // Owner 2's snapshot (it has no parent) and owner 1's base.
    let (_, owned_by_two) = &source.completed[5];
    let (_, base) = &source.completed[0];

    // Owner 2's id completed in the target with another root (same owner, lineage).
    let mut other = originals
        .iter()
        .find(|r| r.id == *owned_by_two)
        .expect("owner 2's")
        .clone();
    other.root = None;
    metadata
        .create_snapshot(other.clone())
        .await
        .expect("create");
    // The base's client token already used by another snapshot of its owner.
    let mut taker = pending(&snapshot_id(0xbeef), &account(1), 1);
    taker.client_token = Some("base-token".into());
    metadata.create_snapshot(taker).await.expect("create");

    let report = migrate(&source, &metadata, &chunks).await;
    match outcome_of(&report, owned_by_two) {
        Outcome::Failed(why) => assert!(why.contains("other content"), "{why}"),
        other => panic!("{other:?}"),
    }
    match outcome_of(&report, base) {
        Outcome::Failed(why) => assert!(why.contains("client token already names"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        metadata.snapshot(owned_by_two).await.expect("read"),
        Some(other),
        "left alone"
    );
    assert_eq!(metadata.snapshot(base).await.expect("read"), None);
}
