//! Several `strata serve` processes over one PostgreSQL schema and one S3 prefix
//! (`crate::nodes`), one of them killed with SIGKILL in the middle of the work: the
//! survivors finish it, nothing acknowledged is lost, and a restart of every node reads
//! the same bytes. (The in-process cluster tests of strata-server cover the interleavings;
//! these cover a node dying at a random point of its own, as it does in production.)

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_cli::api::CompletionStatus;
use strata_types::BlockIndex;

use crate::nodes::{
    Cluster, admin, aggregate, assert_reads, block, put, start_snapshot, strata_binary, text,
};

/// Puts through node A with 8 in flight; A is killed after `acks_before_kill` were
/// acknowledged, with others in flight. Node B then writes whatever A did not acknowledge
/// (as a client retrying through the balancer does) and completes; every block reads back
/// through B, and again through both after every node was killed and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_upload_loses_no_acknowledged_block_and_another_finishes() {
    let binary = strata_binary();
    const BLOCKS: u32 = 96;
    let seed = rand::random::<u64>();
    let mut cluster = Cluster::start(binary, 2).await;
    let a = cluster.impatient_client(0);
    let snapshot = start_snapshot(&a).await;

    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(AtomicU32::new(0));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (a, snapshot, acknowledged, next) = (
            a.clone(),
            snapshot.clone(),
            acknowledged.clone(),
            next.clone(),
        );
        writers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::SeqCst);
                if index >= BLOCKS {
                    return;
                }
                let (data, digest) = block(seed, index);
                match a
                    .put_block(
                        &snapshot,
                        BlockIndex::new(index),
                        &data,
                        &digest,
                        None,
                        true,
                    )
                    .await
                {
                    Ok(()) => {
                        acknowledged.lock().expect("lock").insert(index);
                    }
                    // The node died under this Put: the client does not know whether it
                    // was stored, and will send it again elsewhere.
                    Err(_) => return,
                }
            }
        }));
    }
    let acks_before_kill = 20 + (seed % 40) as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while acknowledged.lock().expect("lock").len() < acks_before_kill {
        assert!(
            Instant::now() < deadline,
            "no progress:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    cluster.kill(0);
    for writer in writers {
        writer.await.expect("writer");
    }
    let acked = acknowledged.lock().expect("lock").clone();
    assert!(
        acked.len() >= acks_before_kill && acked.len() < BLOCKS as usize,
        "A was killed mid-upload ({} of {BLOCKS} acknowledged)",
        acked.len()
    );

    // The client goes on through B: the blocks A did not acknowledge, then Complete.
    let b = cluster.client(1);
    for index in (0..BLOCKS).filter(|i| !acked.contains(i)) {
        put(&b, &snapshot, seed, index).await;
    }
    let status = b
        .complete_snapshot(&snapshot, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
        .await
        .unwrap_or_else(|e| panic!("CompleteSnapshot on B: {e}\n{}", cluster.logs()));
    assert_eq!(status, CompletionStatus::Completed);
    assert_reads(&b, &snapshot, seed, BLOCKS).await;

    // Every node killed and started again: the same bytes through each.
    cluster.restart(0);
    cluster.restart(1);
    assert_reads(&cluster.client(0), &snapshot, seed, BLOCKS).await;
    assert_reads(&cluster.client(1), &snapshot, seed, BLOCKS).await;
}

/// CompleteSnapshot sent to node A, and A killed while it may be sealing. The client's
/// retry through node B answers `completed` whether A's seal committed or not, and the
/// snapshot reads whole through B and after a restart of A.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_during_complete_the_retry_on_another_node_completes() {
    let binary = strata_binary();
    const BLOCKS: u32 = 160;
    let seed = rand::random::<u64>();
    let mut cluster = Cluster::start(binary, 2).await;
    let a = cluster.impatient_client(0);
    let snapshot = start_snapshot(&a).await;
    let mut writers = Vec::new();
    for lane in 0..8u32 {
        let (a, snapshot) = (a.clone(), snapshot.clone());
        writers.push(tokio::spawn(async move {
            for index in (lane..BLOCKS).step_by(8) {
                put(&a, &snapshot, seed, index).await;
            }
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }

    let completing = {
        let (a, snapshot) = (a.clone(), snapshot.clone());
        tokio::spawn(async move {
            a.complete_snapshot(&snapshot, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
                .await
        })
    };
    // Somewhere between "not arrived yet" and "answered".
    tokio::time::sleep(Duration::from_millis(seed % 60)).await;
    cluster.kill(0);
    let first = completing.await.expect("complete task");
    if let Ok(status) = &first {
        assert_eq!(
            *status,
            CompletionStatus::Completed,
            "A answered before dying"
        );
    }

    let b = cluster.client(1);
    let status = b
        .complete_snapshot(&snapshot, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
        .await
        .unwrap_or_else(|e| panic!("CompleteSnapshot retried on B: {e}\n{}", cluster.logs()));
    assert_eq!(status, CompletionStatus::Completed);
    assert_reads(&b, &snapshot, seed, BLOCKS).await;
    cluster.restart(0);
    assert_reads(&cluster.client(0), &snapshot, seed, BLOCKS).await;
}

/// A node holding the collection lease is killed while it collects (a deleted snapshot's
/// chunks being freed) and node B uploads a snapshot with that same content meanwhile. B's
/// snapshot reads whole, now and after every node restarted; the dead node's lease expires
/// instead of blocking collections forever (checked by its holder being gone from the
/// answer of the next collection only after the TTL, so here: B's collection either runs
/// or says another is running, never fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_mid_collection_while_another_reuploads_loses_nothing() {
    let binary = strata_binary();
    const BLOCKS: u32 = 64;
    let seed = rand::random::<u64>();
    let mut cluster = Cluster::start(binary.clone(), 2).await;
    let a = cluster.client(0);
    let doomed = start_snapshot(&a).await;
    for index in 0..BLOCKS {
        put(&a, &doomed, seed, index).await;
    }
    let status = a
        .complete_snapshot(&doomed, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
        .await
        .expect("complete");
    assert_eq!(status, CompletionStatus::Completed);
    let deleted = admin(
        &binary,
        &cluster.endpoint(0),
        &["snapshots", "delete", doomed.as_str()],
    );
    assert!(
        deleted.status.success(),
        "delete: {}",
        text(&deleted.stderr)
    );

    // B re-uploads the same content while A collects; A dies at a random point of it.
    let b = cluster.client(1);
    let reupload = start_snapshot(&b).await;
    let uploading = {
        let (b, reupload) = (b.clone(), reupload.clone());
        tokio::spawn(async move {
            for index in 0..BLOCKS {
                put(&b, &reupload, seed, index).await;
            }
        })
    };
    let collecting = {
        let (binary, endpoint) = (binary.clone(), cluster.endpoint(0));
        tokio::task::spawn_blocking(move || admin(&binary, &endpoint, &["gc"]))
    };
    tokio::time::sleep(Duration::from_millis(50 + seed % 200)).await;
    cluster.kill(0);
    // Killed or finished: either is fine; which one it was is printed.
    let collected = collecting.await.expect("gc task");
    println!(
        "the collection on A: {}",
        if collected.status.success() {
            text(&collected.stdout)
        } else {
            format!("cut off ({})", collected.status)
        }
    );
    uploading.await.expect("upload");
    let status = b
        .complete_snapshot(&reupload, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
        .await
        .unwrap_or_else(|e| panic!("CompleteSnapshot on B: {e}\n{}", cluster.logs()));
    assert_eq!(status, CompletionStatus::Completed);
    assert_reads(&b, &reupload, seed, BLOCKS).await;

    // A collection on B now: it runs (A's lease was released or never taken) or reports
    // that the dead holder's lease has not expired yet; it never deletes what B wrote.
    let gc = admin(&binary, &cluster.endpoint(1), &["gc"]);
    let stderr = text(&gc.stderr);
    println!("the collection on B: {} {stderr}", text(&gc.stdout));
    assert!(
        gc.status.success() || stderr.contains("running already"),
        "gc on B: {stderr}"
    );
    cluster.restart(0);
    cluster.restart(1);
    assert_reads(&cluster.client(0), &reupload, seed, BLOCKS).await;
}
