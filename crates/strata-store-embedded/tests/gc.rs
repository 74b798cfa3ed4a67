//! A garbage collection interrupted halfway (the process dies after executing part of its
//! plan) leaves every live snapshot intact, and the next collection finishes the job.

use std::sync::Arc;
use std::time::Duration;

use strata_core::body::BlockHasher;
use strata_core::gc::{GcOptions, GcPlan};
use strata_core::service::{PageRequest, StartSnapshotInput};
use strata_core::tokens::TokenIssuer;
use strata_core::{SnapshotService, SystemClock};
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore};
use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, SnapshotId};

type Service = SnapshotService<RedbMetadataStore, FsChunkStore>;

fn open(dir: &std::path::Path) -> Service {
    let store = EmbeddedStore::open(dir).expect("open");
    SnapshotService::new(
        Arc::new(store.metadata),
        Arc::new(store.chunks),
        TokenIssuer::new([9; 32]),
        Arc::new(SystemClock),
    )
}

fn content(seed: u8) -> Vec<u8> {
    let mut data = vec![seed; BLOCK_SIZE];
    data[0] = seed.wrapping_mul(31);
    data[BLOCK_SIZE - 1] = 7;
    data
}

async fn write(
    service: &Service,
    owner: &AccountId,
    parent: Option<&SnapshotId>,
    blocks: &[(u32, u8)],
) -> SnapshotId {
    let input = StartSnapshotInput {
        volume_size_gib: 1,
        parent: parent.cloned(),
        ..StartSnapshotInput::default()
    };
    let id = service
        .start_snapshot(owner, input)
        .await
        .expect("start")
        .id;
    for (index, seed) in blocks {
        let mut hasher = BlockHasher::default();
        assert!(hasher.update(&content(*seed)));
        let block = hasher.finish();
        let digest = block.digest;
        let permit = service
            .begin_put(owner, &id, BlockIndex::new(*index), digest)
            .await
            .expect("writable");
        service.put_block(permit, block, None).await.expect("put");
    }
    let count = i64::try_from(blocks.len()).expect("count");
    service
        .complete_snapshot(owner, &id, count, None)
        .await
        .expect("complete");
    id
}

/// Read every block of `id` and compare with `expected` (index, content seed).
async fn verify(service: &Service, owner: &AccountId, id: &SnapshotId, expected: &[(u32, u8)]) {
    let page = service
        .list_blocks(
            owner,
            id,
            PageRequest {
                max_results: Some(1000),
                ..PageRequest::default()
            },
        )
        .await
        .expect("list");
    let indexes: Vec<u32> = page.blocks.iter().map(|(i, _)| i.get()).collect();
    assert_eq!(
        indexes,
        expected.iter().map(|(i, _)| *i).collect::<Vec<_>>()
    );
    for ((index, token), (_, seed)) in page.blocks.iter().zip(expected) {
        let block = service
            .get_block(owner, id, *index, token)
            .await
            .expect("get");
        assert_eq!(block.data.as_ref(), content(*seed).as_slice());
    }
}

#[tokio::test]
async fn an_interrupted_collection_damages_nothing_and_the_next_one_finishes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = AccountId::parse("000000000000").expect("account");
    let options = GcOptions {
        chunk_grace: Duration::ZERO,
    };
    let service = open(dir.path());
    let a_blocks: Vec<(u32, u8)> = (0..10).map(|i| (i * 100, i as u8 + 1)).collect();
    let a = write(&service, &owner, None, &a_blocks).await;
    let b_writes: Vec<(u32, u8)> = (0..5).map(|i| (i * 200, 50 + i as u8)).collect();
    let b = write(&service, &owner, Some(&a), &b_writes).await;
    let c = write(&service, &owner, None, &[(1, 90), (2, 91), (3, 92)]).await;
    let mut b_expected: std::collections::BTreeMap<u32, u8> = a_blocks.iter().copied().collect();
    b_expected.extend(b_writes.iter().copied());
    let b_expected: Vec<(u32, u8)> = b_expected.into_iter().collect();
    verify(&service, &owner, &b, &b_expected).await;

    service.delete_snapshot(&owner, &a).await.expect("delete a");
    service.delete_snapshot(&owner, &c).await.expect("delete c");
    let plan = service.plan_gc(options).await.expect("plan");
    // B replaced A's blocks at 0, 200, 400, 600 and 800; C's 3 blocks went with C.
    assert_eq!(plan.garbage_chunks.len(), 5 + 3, "{plan:?}");
    assert!(!plan.garbage_nodes.is_empty());

    // Execute half of the plan, then "crash": drop everything without finishing.
    let half = GcPlan {
        garbage_nodes: plan.garbage_nodes[..plan.garbage_nodes.len() / 2].to_vec(),
        garbage_chunks: plan.garbage_chunks[..plan.garbage_chunks.len() / 2].to_vec(),
        ..plan.clone()
    };
    let partial = service.execute_gc(&half).await.expect("partial");
    assert_eq!(partial.chunks_deleted, half.garbage_chunks.len());
    drop(service);

    let service = open(dir.path());
    verify(&service, &owner, &b, &b_expected).await;
    let rest = service.plan_gc(options).await.expect("plan again");
    assert_eq!(
        rest.garbage_chunks.len(),
        plan.garbage_chunks.len() - half.garbage_chunks.len()
    );
    assert_eq!(
        rest.garbage_nodes.len(),
        plan.garbage_nodes.len() - half.garbage_nodes.len()
    );
    let report = service.execute_gc(&rest).await.expect("finish");
    assert_eq!(report.chunks_deleted, rest.garbage_chunks.len());
    verify(&service, &owner, &b, &b_expected).await;
    let done = service.plan_gc(options).await.expect("final plan");
    assert!(done.garbage_chunks.is_empty() && done.garbage_nodes.is_empty());
    // Exactly B's distinct contents remain on disk.
    let remaining = done.live_chunks;
    assert_eq!(remaining, b_expected.len());
}
