//! Crash proof of the embedded store: `strata serve` on its data directory is killed with
//! SIGKILL at a random moment while four clients start, upload, complete and delete
//! snapshots (their contents overlap, so chunks are shared) and a fifth collects garbage
//! over and over. After each restart:
//!
//! - every acknowledged completion reads back block by block, byte-identical;
//! - every acknowledged deletion is gone;
//! - every pending snapshot completes with exactly its acknowledged blocks (plus the one
//!   whose Put was in flight, if it was recorded) and reads back identical;
//! - every snapshot of the trials before is verified again, so data also survives later
//!   crashes and collections.
//!
//! `STRATA_CRASH_TRIALS` trials (4 in CI); the long mode is `STRATA_CRASH_TRIALS=100`.

#[path = "shared/nodes.rs"]
mod nodes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use strata_cli::SnapshotClient;
use strata_types::{BlockIndex, SnapshotId};

use nodes::{Cluster, admin, aggregate, block, strata_binary, try_start_snapshot};

/// Blocks per snapshot.
const BLOCKS: u32 = 8;

/// What the clients were told, per snapshot.
#[derive(Debug, Clone, Default)]
struct Entry {
    /// The content seed (shared by several snapshots: their chunks are the same).
    seed: u64,
    /// Puts answered 200.
    acknowledged: BTreeSet<u32>,
    /// Puts sent (answered or not).
    attempted: BTreeSet<u32>,
    complete_sent: bool,
    completed: bool,
    delete_sent: bool,
    deleted: bool,
}

type Ledger = Arc<Mutex<BTreeMap<SnapshotId, Entry>>>;

fn note(ledger: &Ledger, id: &SnapshotId, change: impl FnOnce(&mut Entry)) {
    let mut ledger = ledger.lock().expect("ledger");
    change(ledger.entry(id.clone()).or_default());
}

/// One client: snapshots of `BLOCKS` blocks, completed, one in three deleted, until the
/// server stops answering.
async fn upload_until_the_crash(
    client: SnapshotClient,
    endpoint: String,
    ledger: Ledger,
    worker: u64,
) {
    let binary = strata_binary();
    for round in 0u64.. {
        let seed = (worker + round) % 3;
        let Ok(id) = try_start_snapshot(&client).await else {
            return;
        };
        note(&ledger, &id, |e| e.seed = seed);
        for index in 0..BLOCKS {
            note(&ledger, &id, |e| {
                e.attempted.insert(index);
            });
            let (data, digest) = block(seed, index);
            if client
                .put_block(&id, BlockIndex::new(index), &data, &digest, None, true)
                .await
                .is_err()
            {
                return;
            }
            note(&ledger, &id, |e| {
                e.acknowledged.insert(index);
            });
        }
        note(&ledger, &id, |e| e.complete_sent = true);
        if client
            .complete_snapshot(&id, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
            .await
            .is_err()
        {
            return;
        }
        note(&ledger, &id, |e| e.completed = true);
        if round % 3 == 2 {
            note(&ledger, &id, |e| e.delete_sent = true);
            let (binary, endpoint, id2) = (binary.clone(), endpoint.clone(), id.clone());
            let deleted = tokio::task::spawn_blocking(move || {
                admin(&binary, &endpoint, &["snapshots", "delete", id2.as_str()])
            })
            .await
            .expect("delete runs");
            if !deleted.status.success() {
                return;
            }
            note(&ledger, &id, |e| e.deleted = true);
        }
    }
}

/// Collect garbage until the server stops answering.
async fn collect_until_the_crash(endpoint: String) -> u32 {
    let binary = strata_binary();
    let mut runs = 0;
    loop {
        let (binary, endpoint) = (binary.clone(), endpoint.clone());
        let output = tokio::task::spawn_blocking(move || admin(&binary, &endpoint, &["gc"]))
            .await
            .expect("gc runs");
        if !output.status.success() {
            return runs;
        }
        runs += 1;
    }
}

/// Every block of a completed snapshot, compared with what was written.
async fn assert_reads(
    client: &SnapshotClient,
    id: &SnapshotId,
    seed: u64,
    indexes: &BTreeSet<u32>,
) {
    let listing = client
        .list_blocks(id)
        .await
        .unwrap_or_else(|e| panic!("ListSnapshotBlocks {id}: {e}"));
    let listed: BTreeSet<u32> = listing.blocks.iter().map(|(i, _)| i.get()).collect();
    assert_eq!(&listed, indexes, "{id}: the listed blocks");
    for (index, token) in &listing.blocks {
        let fetched = client
            .get_block(id, *index, token)
            .await
            .unwrap_or_else(|e| panic!("GetSnapshotBlock {id}/{index}: {e}"));
        assert_eq!(fetched.digest, block(seed, index.get()).1, "{id}/{index}");
    }
}

/// Check every snapshot of the ledger after a restart, completing the pending ones.
/// Returns (acknowledged blocks verified, snapshots checked).
async fn verify(client: &SnapshotClient, ledger: &Ledger) -> (usize, usize) {
    let entries: Vec<(SnapshotId, Entry)> = ledger
        .lock()
        .expect("ledger")
        .iter()
        .map(|(id, e)| (id.clone(), e.clone()))
        .collect();
    let mut blocks = 0;
    for (id, mut entry) in entries.iter().cloned() {
        if entry.deleted {
            let gone = client.list_blocks(&id).await;
            let code = gone.err().and_then(|e| e.code);
            assert_eq!(
                code.as_deref(),
                Some("ResourceNotFoundException"),
                "{id} was deleted"
            );
            continue;
        }
        let readable = client
            .is_readable(&id)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        if entry.delete_sent && !readable {
            // The delete may have been done before the crash; then it is gone.
            continue;
        }
        if entry.completed {
            assert!(readable, "{id}: its completion was acknowledged");
        }
        if !readable {
            // Pending: complete it with the acknowledged blocks, or — if the Put in
            // flight at the crash was recorded too — with that one as well.
            let count = entry.acknowledged.len() as u64;
            let first = client
                .complete_snapshot(
                    &id,
                    count,
                    &aggregate(entry.seed, entry.acknowledged.iter().copied()),
                )
                .await;
            if first.is_err() {
                let attempted = entry.attempted.len() as u64;
                client
                    .complete_snapshot(&id, attempted, &aggregate(entry.seed, entry.attempted.iter().copied()))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{id}: completes with neither its acknowledged blocks nor those plus the one in flight: {e}")
                    });
                entry.acknowledged = entry.attempted.clone();
            }
            entry.completed = true;
            entry.complete_sent = true;
            let stored = entry.clone();
            note(ledger, &id, move |e| *e = stored);
        }
        assert_reads(client, &id, entry.seed, &entry.acknowledged).await;
        blocks += entry.acknowledged.len();
    }
    (blocks, entries.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_data_survives_sigkill_at_random_moments() {
    let trials: u32 = std::env::var("STRATA_CRASH_TRIALS")
        .ok()
        .map(|t| t.parse().expect("STRATA_CRASH_TRIALS is a number"))
        .unwrap_or(4);
    let mut server = Cluster::start_embedded(strata_binary());
    let ledger: Ledger = Arc::default();
    let started = Instant::now();
    let (mut verified, mut collections) = (0, 0);
    for trial in 0..trials {
        let endpoint = server.endpoint(0);
        let mut workers = Vec::new();
        for worker in 0..4 {
            let client = server.impatient_client(0);
            workers.push(tokio::spawn(upload_until_the_crash(
                client,
                endpoint.clone(),
                Arc::clone(&ledger),
                worker,
            )));
        }
        let collector = tokio::spawn(collect_until_the_crash(endpoint.clone()));
        let uptime = Duration::from_millis(rand::rng().random_range(300..2500));
        tokio::time::sleep(uptime).await;
        server.kill(0);
        for worker in workers {
            tokio::time::timeout(Duration::from_secs(60), worker)
                .await
                .expect("a client stops once the server is gone")
                .expect("client");
        }
        collections += tokio::time::timeout(Duration::from_secs(60), collector)
            .await
            .expect("the collector stops")
            .expect("collector");
        server.restart(0);
        let client = server.client(0);
        let (blocks, snapshots) = verify(&client, &ledger).await;
        verified += blocks;
        println!(
            "trial {trial}: killed after {uptime:?}; {snapshots} snapshots checked, {blocks} acknowledged blocks read back"
        );
    }
    // A last collection after the last crash keeps everything that is still wanted.
    let output = admin(&strata_binary(), &server.endpoint(0), &["gc"]);
    assert!(
        output.status.success(),
        "gc: {}",
        nodes::text(&output.stderr)
    );
    let client = server.client(0);
    let (blocks, snapshots) = verify(&client, &ledger).await;
    println!(
        "{trials} crashes in {:.0} s: {verified} acknowledged block reads verified across the trials, \
         {collections} collections during them; after a last collection {snapshots} snapshots and \
         {blocks} blocks intact",
        started.elapsed().as_secs_f64()
    );
}
