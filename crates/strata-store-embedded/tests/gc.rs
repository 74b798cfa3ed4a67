//! A garbage collection interrupted halfway (the process dies after executing part of its
//! plan) leaves every live snapshot intact, and the next collection finishes the job.

mod common;

use std::sync::Arc;
use std::time::Duration;

use strata_core::gc::{GcOptions, GcPlan};
use strata_core::tokens::TokenIssuer;
use strata_core::{SnapshotService, SystemClock};
use strata_store_embedded::EmbeddedStore;
use strata_types::AccountId;

use common::{Service, verify, write};

fn open(dir: &std::path::Path) -> Service {
    let store = EmbeddedStore::open(dir).expect("open");
    SnapshotService::new(
        Arc::new(store.metadata),
        Arc::new(store.chunks),
        TokenIssuer::new([9; 32]),
        Arc::new(SystemClock),
    )
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
    let a = write(&service, &owner, None, &a_blocks, true).await;
    let b_writes: Vec<(u32, u8)> = (0..5).map(|i| (i * 200, 50 + i as u8)).collect();
    let b = write(&service, &owner, Some(&a), &b_writes, true).await;
    let c = write(&service, &owner, None, &[(1, 90), (2, 91), (3, 92)], true).await;
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
