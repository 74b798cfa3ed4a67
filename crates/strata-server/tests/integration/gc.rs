//! Garbage collection through the admin API: deleting and timing out snapshots returns
//! disk space, shared content survives, dry runs delete nothing, and collections running
//! while uploads re-use the same content never lose a byte.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_wire::admin::GcSummary;

use crate::harness::{BLOCK, Harness, OTHER_KEY, OTHER_SECRET, RawRequest, block};
use crate::sdk::{complete, get, list_all, put, start, start_with_timeout};

async fn gc(harness: &Harness, dry_run: bool) -> GcSummary {
    let response = harness
        .raw(RawRequest::admin("POST", &format!("/gc?dryRun={dry_run}")))
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    serde_json::from_slice(&response.body).expect("GcSummary")
}

fn chunk_bytes(harness: &Harness) -> u64 {
    crate::harness::stored_chunk_bytes(harness)
}

async fn delete(harness: &Harness, id: &str) {
    let response = harness
        .raw(RawRequest::ec2(&[
            ("Action", "DeleteSnapshot"),
            ("SnapshotId", id),
        ]))
        .await;
    assert_eq!(response.status, 200);
}

/// Every block of `id` equals `expected`.
async fn assert_contents(harness: &Harness, id: &str, expected: &BTreeMap<i32, Vec<u8>>) {
    let client = harness.client();
    let blocks = list_all(&client, id, 1000).await;
    assert_eq!(blocks.len(), expected.len(), "{id}");
    for (index, token) in &blocks {
        assert_eq!(
            &get(&client, id, *index, token).await,
            &expected[index],
            "{id}/{index}"
        );
    }
}

#[tokio::test]
async fn gc_returns_the_space_of_deleted_and_timed_out_snapshots() {
    let harness = Harness::with_settings(|s| s.gc_grace = Duration::ZERO);
    let client = harness.client();
    // A: 8 distinct blocks. B (child of A) replaces 4 of them. C: 4 blocks of its own.
    let a = start(&client, 1, None).await;
    for i in 0..8 {
        put(&client, &a, i, &block(i as u64)).await;
    }
    complete(&client, &a, 8, None).await;
    let b = start(&client, 1, Some(&a)).await;
    for i in 0..4 {
        put(&client, &b, i, &block(100 + i as u64)).await;
    }
    complete(&client, &b, 4, None).await;
    let c = start(&client, 1, None).await;
    for i in 0..4 {
        put(&client, &c, i, &block(200 + i as u64)).await;
    }
    complete(&client, &c, 4, None).await;
    // D: pending with 3 blocks, then abandoned past its timeout.
    let d = start_with_timeout(&client, 10).await;
    for i in 0..3 {
        put(&client, &d, i, &block(300 + i as u64)).await;
    }
    let b_contents: BTreeMap<i32, Vec<u8>> = (0..8)
        .map(|i| {
            (
                i,
                if i < 4 {
                    block(100 + i as u64)
                } else {
                    block(i as u64)
                },
            )
        })
        .collect();

    let before = chunk_bytes(&harness);
    assert_eq!(before, 19 * BLOCK as u64);
    // Nothing is garbage yet.
    let idle = gc(&harness, false).await;
    assert_eq!(
        (idle.chunks_deleted, idle.nodes_deleted),
        (0, 0),
        "{idle:?}"
    );

    harness.clock.advance(Duration::from_secs(11 * 60));
    delete(&harness, &a).await;
    delete(&harness, &c).await;

    // A dry run says what would go and deletes nothing.
    let dry = gc(&harness, true).await;
    assert!(dry.dry_run);
    assert_eq!(dry.garbage_chunks, 11, "{dry:?}"); // A's 4 replaced, C's 4, D's 3
    assert_eq!(dry.garbage_bytes, 11 * BLOCK as u64);
    assert!(dry.garbage_nodes > 0);
    assert_eq!(dry.expired_snapshots, 1);
    assert_eq!((dry.chunks_deleted, dry.bytes_freed), (0, 0));
    assert_eq!(chunk_bytes(&harness), before);

    let done = gc(&harness, false).await;
    assert_eq!(done.chunks_deleted, 11, "{done:?}");
    assert_eq!(done.bytes_freed, 11 * BLOCK as u64);
    assert_eq!(done.nodes_deleted, dry.garbage_nodes);
    assert_eq!(done.pending_writes_dropped, 3);
    // What is left is exactly what B needs, and B reads back identical.
    assert_eq!(chunk_bytes(&harness), 8 * BLOCK as u64);
    assert_contents(&harness, &b, &b_contents).await;
    // A second collection finds nothing more.
    let again = gc(&harness, false).await;
    assert_eq!(
        (again.garbage_chunks, again.garbage_nodes),
        (0, 0),
        "{again:?}"
    );
    // B's tree still diffs and serves after a restart.
    drop(client);
    let harness = harness.restart();
    assert_contents(&harness, &b, &b_contents).await;
}

#[tokio::test]
async fn a_pending_child_of_a_deleted_parent_still_completes() {
    let harness = Harness::with_settings(|s| s.gc_grace = Duration::ZERO);
    let client = harness.client();
    let parent = start(&client, 1, None).await;
    put(&client, &parent, 0, &block(1)).await;
    put(&client, &parent, 1, &block(2)).await;
    complete(&client, &parent, 2, None).await;
    let child = start(&client, 1, Some(&parent)).await;
    put(&client, &child, 1, &block(3)).await;
    delete(&harness, &parent).await;
    let collected = gc(&harness, false).await;
    assert_eq!(
        collected.chunks_deleted, 0,
        "the child's base tree keeps both blocks: {collected:?}"
    );
    complete(&client, &child, 1, None).await;
    let expected = BTreeMap::from([(0, block(1)), (1, block(3))]);
    assert_contents(&harness, &child, &expected).await;
    // Now block(2) is garbage.
    let collected = gc(&harness, false).await;
    assert_eq!(collected.chunks_deleted, 1);
    assert_contents(&harness, &child, &expected).await;
}

#[tokio::test]
async fn only_the_root_account_may_collect() {
    let harness = Harness::new();
    let other = RawRequest {
        credentials: Some((OTHER_KEY.into(), OTHER_SECRET.into())),
        ..RawRequest::admin("POST", "/gc")
    };
    harness
        .raw(other)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    let unknown = RawRequest::admin("PUT", "/gc");
    harness
        .raw(unknown)
        .await
        .assert_error(404, "UnknownOperationException", "");
}

/// GC loops while several uploaders write, complete, verify and delete snapshots whose
/// blocks come from one small pool of contents, so deleted content keeps turning into
/// garbage while other uploads store the same content again. Every surviving snapshot
/// must read back identical.
#[tokio::test]
async fn gc_running_during_uploads_of_the_same_content_loses_nothing() {
    let harness = std::sync::Arc::new(Harness::with_settings(|s| s.gc_grace = Duration::ZERO));
    let pool: std::sync::Arc<Vec<Vec<u8>>> =
        std::sync::Arc::new((0..12).map(|i| block(5000 + i)).collect());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let harness = harness.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut totals = (0usize, 0u64);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let summary = gc(&harness, false).await;
                totals.0 += 1;
                totals.1 += summary.bytes_freed;
            }
            totals
        })
    };
    let started = std::time::Instant::now();
    let mut uploaders = Vec::new();
    for worker in 0..4u64 {
        let harness = harness.clone();
        let pool = pool.clone();
        uploaders.push(tokio::spawn(async move {
            let client = harness.client();
            let mut survivors = Vec::new();
            for round in 0..12u64 {
                let id = start(&client, 1, None).await;
                let mut expected = BTreeMap::new();
                // Kept snapshots use half the pool: the other half is garbage once the
                // uploads end, so the last collection frees something whatever the timing.
                let kept = round % 3 == 2;
                for i in 0..6i32 {
                    let pick = (worker * 7 + round * 5 + i as u64 * 3) % 12;
                    let content = &pool[(if kept { pick % 6 } else { pick }) as usize];
                    put(&client, &id, i, content).await;
                    expected.insert(i, content.clone());
                }
                complete(&client, &id, 6, None).await;
                assert_contents(&harness, &id, &expected).await;
                if kept {
                    survivors.push((id, expected));
                } else {
                    delete(&harness, &id).await;
                }
            }
            survivors
        }));
    }
    let mut survivors = Vec::new();
    for uploader in uploaders {
        survivors.extend(uploader.await.expect("uploader"));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (collections, freed) = collector.await.expect("collector");
    let summary = gc(&harness, false).await;
    for (id, expected) in &survivors {
        assert_contents(&harness, id, expected).await;
    }
    assert!(collections > 3, "GC ran {collections} times");
    assert!(
        freed + summary.bytes_freed > 0,
        "deleted content was collected"
    );
    println!(
        "concurrency: {collections} collections in {:.1} s while 4 uploaders wrote 48 snapshots; {} survivors intact; {freed} bytes freed during the run",
        started.elapsed().as_secs_f64(),
        survivors.len()
    );
}
