//! The engines under a cluster misbehaving for real, in the middle of an upload through
//! two `strata serve` processes: radosgw stopped with SIGSTOP for 10 s and resumed, and
//! PostgreSQL restarted (every connection cut). Each time the API answers a retryable error
//! or succeeds, answers within its timeouts instead of hanging, recovers by itself when the
//! engine is back, and every acknowledged block reads back intact.
//!
//! Its own test binary, and its tests take turns (`TURN`): they stop engines that every
//! other test of the workspace uses, and cargo runs test binaries one after another.

#[path = "shared/nodes.rs"]
mod nodes;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use strata_cli::api::CompletionStatus;
use strata_cli::error::ApiError;
use strata_types::{BlockIndex, SnapshotId};

use nodes::{Cluster, aggregate, assert_reads, block, start_snapshot, strata_binary, var};

static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BLOCKS: u32 = 80;

/// A single Put must be answered within this long even while an engine is stopped: the
/// S3 request timeout (30 s) plus the service's retries' backoff, with room to spare. A
/// Put that takes longer hangs.
const ANSWER_WITHIN: Duration = Duration::from_secs(45);

/// Send `signal` (`STOP`, `CONT`) to `pid`.
fn signal(pid: &str, signal: &str) {
    let status = Command::new("kill")
        .args([format!("-{signal}"), pid.to_owned()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// radosgw stopped until dropped: a failing test still lets it run again (every later
/// test needs it).
struct Stopped(String);

impl Stopped {
    fn radosgw() -> Self {
        // ci/ceph-rgw.sh: "MON_PID OSD_PID RGW_PID".
        let pids = var("CEPH_CI_PIDS");
        let rgw = pids
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("CEPH_CI_PIDS has no radosgw PID: {pids:?}"))
            .to_owned();
        signal(&rgw, "STOP");
        Self(rgw)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(&self.0, "CONT");
    }
}

/// Restart the PostgreSQL server of `ci/postgres.sh` (`pg_restart`).
fn restart_postgres() {
    var("PG_CI_DIR");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../ci/postgres.sh");
    let output = Command::new("bash")
        .args(["-c", "source \"$1\" && pg_restart", "pg_restart", script])
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "pg_restart failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every block of the volume put through `client` by four writers, each Put with the
/// client's retries; `acked` counts the acknowledged ones. Answers the slowest Put.
fn upload(
    client: &strata_cli::SnapshotClient,
    snapshot: &SnapshotId,
    seed: u64,
    acked: &Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Duration> {
    let next = Arc::new(AtomicU32::new(0));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (client, snapshot, next, acked) = (
                client.clone(),
                snapshot.clone(),
                next.clone(),
                acked.clone(),
            );
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                loop {
                    let index = next.fetch_add(1, Ordering::SeqCst);
                    if index >= BLOCKS {
                        return slowest;
                    }
                    let (data, digest) = block(seed, index);
                    let started = Instant::now();
                    client
                        .put_block(
                            &snapshot,
                            BlockIndex::new(index),
                            &data,
                            &digest,
                            None,
                            true,
                        )
                        .await
                        .unwrap_or_else(|e| panic!("block {index} not stored after retries: {e}"));
                    slowest = slowest.max(started.elapsed());
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        let mut slowest = Duration::ZERO;
        for writer in writers {
            slowest = slowest.max(writer.await.expect("writer"));
        }
        slowest
    })
}

/// One Put with a single attempt into `snapshot` (a snapshot of its own, not the upload's),
/// as a client without retries sees the service while the engine is away: success, or a
/// retryable error, within [`ANSWER_WITHIN`].
async fn probe(cluster: &Cluster, node: usize, snapshot: &SnapshotId, seed: u64) -> String {
    let client = cluster.impatient_client(node);
    // Content nothing stored yet, so the Put must reach the chunk store (a dedup hit would
    // not), at an index of its own.
    let (data, digest) = block(!seed, node as u32);
    let started = Instant::now();
    let result: Result<(), ApiError> = client
        .put_block(
            snapshot,
            BlockIndex::new(node as u32),
            &data,
            &digest,
            None,
            false,
        )
        .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < ANSWER_WITHIN,
        "a Put while the engine is away took {elapsed:?}: it hangs"
    );
    match result {
        Ok(()) => format!("stored in {elapsed:?}"),
        Err(error) => {
            assert!(
                error.retryable,
                "a Put while the engine is away must fail retryably (5xx or throttling), not {:?}: {}",
                error.code, error.message
            );
            format!("{:?} in {elapsed:?}", error.code)
        }
    }
}

async fn wait_for_acks(acked: &AtomicUsize, count: usize, cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.load(Ordering::SeqCst) < count {
        assert!(
            Instant::now() < deadline,
            "no progress:\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Complete through node 1 and read every block back through both nodes.
async fn finish_and_verify(cluster: &Cluster, snapshot: &SnapshotId, seed: u64) {
    let status = cluster
        .client(1)
        .complete_snapshot(snapshot, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
        .await
        .unwrap_or_else(|e| panic!("CompleteSnapshot: {e}\n{}", cluster.logs()));
    assert_eq!(status, CompletionStatus::Completed);
    assert_reads(&cluster.client(0), snapshot, seed, BLOCKS).await;
    assert_reads(&cluster.client(1), snapshot, seed, BLOCKS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn radosgw_stopped_for_10_s_mid_upload_the_upload_rides_it_out_and_loses_nothing() {
    let _turn = TURN.lock().await;
    let seed = rand::random::<u64>();
    let cluster = Cluster::start(strata_binary(), 2).await;
    let client = cluster.client(0);
    let snapshot = start_snapshot(&client).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let uploading = upload(&client, &snapshot, seed, &acked);
    wait_for_acks(&acked, 16, &cluster).await;

    let probed = start_snapshot(&client).await;
    let stopped = Stopped::radosgw();
    // Probes on both nodes while it is stopped, sent at once and answered whenever the
    // service decides: each within ANSWER_WITHIN (measured from sending), never hanging.
    let probes = async {
        tokio::join!(
            probe(&cluster, 0, &probed, seed),
            probe(&cluster, 1, &probed, seed)
        )
    };
    let resume = async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stopped);
    };
    let ((first, second), ()) = tokio::join!(probes, resume);
    println!("while radosgw was stopped: node 0 {first}, node 1 {second}");

    let slowest = uploading.await.expect("upload");
    println!("the slowest Put of the upload took {slowest:?}");
    assert!(
        slowest < ANSWER_WITHIN,
        "the slowest Put (with retries) took {slowest:?}"
    );
    finish_and_verify(&cluster, &snapshot, seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_mid_upload_the_nodes_reconnect_and_lose_nothing() {
    let _turn = TURN.lock().await;
    let seed = rand::random::<u64>();
    let cluster = Cluster::start(strata_binary(), 2).await;
    let client = cluster.client(0);
    let snapshot = start_snapshot(&client).await;
    let acked = Arc::new(AtomicUsize::new(0));
    let uploading = upload(&client, &snapshot, seed, &acked);
    wait_for_acks(&acked, 16, &cluster).await;

    let probed = start_snapshot(&client).await;
    tokio::task::spawn_blocking(restart_postgres)
        .await
        .expect("restart");
    // Right after the restart every pooled connection of both nodes is dead: the first
    // requests must still be answered (retryably at worst), and then succeed.
    let (first, second) = tokio::join!(
        probe(&cluster, 0, &probed, seed),
        probe(&cluster, 1, &probed, seed)
    );
    println!("right after PostgreSQL restarted: node 0 {first}, node 1 {second}");

    let slowest = uploading.await.expect("upload");
    println!("the slowest Put of the upload took {slowest:?}");
    finish_and_verify(&cluster, &snapshot, seed).await;
}
