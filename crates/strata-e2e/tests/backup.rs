//! `strata store backup DIR` against a running embedded server (issue 14): the copy is
//! taken while 32 clients upload (their contents overlap, so chunks are shared) and
//! delete every third snapshot they complete, and `strata gc` runs over and over (a
//! collection during the copy could delete chunks of a snapshot the copied metadata
//! still holds). A new server
//! started on the copy must then read back, block by block and byte-identical:
//!
//! - every snapshot completed before the backup was asked for;
//! - every other snapshot the copy holds as completed, deleted ones included (none may
//!   name a chunk the copy lacks, whatever was in flight while it was taken);
//!
//! and must not hold the snapshots deleted before the backup.

#[path = "shared/nodes.rs"]
mod nodes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_cli::SnapshotClient;
use strata_types::{BlockIndex, SnapshotId};

use nodes::{Cluster, admin, aggregate, assert_reads, block, strata_binary, text};

/// Clients uploading while the backup is taken.
const UPLOADERS: u64 = 32;
/// Blocks per snapshot.
const BLOCKS: u32 = 4;
/// Distinct contents (snapshots with the same seed share every chunk).
const SEEDS: u64 = 5;

/// Upload one snapshot of `BLOCKS` blocks of `seed` and complete it.
async fn upload(client: &SnapshotClient, seed: u64) -> Result<SnapshotId, strata_cli::ApiError> {
    let id = nodes::try_start_snapshot(client).await?;
    for index in 0..BLOCKS {
        let (data, digest) = block(seed, index);
        client
            .put_block(&id, BlockIndex::new(index), &data, &digest, None, true)
            .await?;
    }
    client
        .complete_snapshot(&id, u64::from(BLOCKS), &aggregate(seed, 0..BLOCKS))
        .await?;
    Ok(id)
}

/// Run the `strata` binary's admin command `args` on a blocking thread.
async fn admin_async(endpoint: &str, args: &[&str]) -> std::process::Output {
    let endpoint = endpoint.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        admin(&strata_binary(), &endpoint, &args)
    })
    .await
    .expect("the admin command runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_during_a_32_way_upload_restores_every_snapshot() {
    let server = Cluster::start_embedded(strata_binary());
    let endpoint = server.endpoint(0);
    let client = server.client(0);

    // Before the backup: completed snapshots, two of them deleted (their chunks are
    // garbage the collector wants to delete while the copy is taken).
    let mut before = BTreeMap::new();
    let mut deleted = Vec::new();
    for seed in 0..SEEDS + 2 {
        let id = upload(&client, 100 + seed).await.expect("upload before");
        if seed >= SEEDS {
            let gone = admin_async(&endpoint, &["snapshots", "delete", id.as_str()]).await;
            assert!(gone.status.success(), "{}", text(&gone.stderr));
            deleted.push(id);
        } else {
            before.insert(id, 100 + seed);
        }
    }

    // During: 32 uploaders and a collector, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let completed: Arc<Mutex<BTreeMap<SnapshotId, u64>>> = Arc::default();
    // Completed, then deleted while the test ran (moved out of `completed` before the
    // deletion is sent).
    let deleted_during: Arc<Mutex<BTreeMap<SnapshotId, u64>>> = Arc::default();
    let mut uploaders = Vec::new();
    for worker in 0..UPLOADERS {
        let (client, stop, completed, deleted_during, endpoint) = (
            server.client(0),
            stop.clone(),
            completed.clone(),
            deleted_during.clone(),
            endpoint.clone(),
        );
        uploaders.push(tokio::spawn(async move {
            let mut round = 0;
            while !stop.load(Ordering::SeqCst) {
                let seed = (worker + round) % SEEDS;
                let id = upload(&client, seed)
                    .await
                    .unwrap_or_else(|e| panic!("uploader {worker}: {e}"));
                if round % 3 == 2 {
                    deleted_during
                        .lock()
                        .expect("ledger")
                        .insert(id.clone(), seed);
                    let gone = admin_async(&endpoint, &["snapshots", "delete", id.as_str()]).await;
                    assert!(gone.status.success(), "{}", text(&gone.stderr));
                } else {
                    completed.lock().expect("ledger").insert(id, seed);
                }
                round += 1;
            }
        }));
    }
    let collector = {
        let (endpoint, stop) = (endpoint.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0;
            while !stop.load(Ordering::SeqCst) {
                // A collection asked for while the backup holds the GC lease is refused
                // or waits; either is fine here, only the copy is judged.
                admin_async(&endpoint, &["gc"]).await;
                runs += 1;
            }
            runs
        })
    };
    // Let the upload get going, so the copy is taken with Puts and completions in flight.
    let warmed = Instant::now() + Duration::from_secs(60);
    while completed.lock().expect("ledger").len() < UPLOADERS as usize {
        assert!(Instant::now() < warmed, "the uploads did not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let completed_before_backup = completed.lock().expect("ledger").clone();

    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy");
    let copy_arg = copy.to_str().expect("utf-8").to_owned();
    let backup = admin_async(&endpoint, &["store", "backup", &copy_arg, "--json"]).await;
    let backed_up = completed.lock().expect("ledger").len();
    // A little more upload after the copy: none of it may matter to the copy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for uploader in uploaders {
        uploader.await.expect("uploader");
    }
    let gc_runs = collector.await.expect("collector");
    assert!(
        backup.status.success(),
        "{}\n{}",
        text(&backup.stderr),
        server.logs()
    );
    let summary: serde_json::Value = serde_json::from_slice(&backup.stdout).expect("JSON");
    assert_eq!(summary["dir"], copy_arg.as_str(), "{summary}");
    let all_completed = completed.lock().expect("ledger").clone();
    let all_deleted = deleted_during.lock().expect("ledger").clone();
    eprintln!(
        "{} snapshots completed during the test ({} before the backup, {} by its end), {} gc runs; backup: {summary}",
        all_completed.len(),
        completed_before_backup.len(),
        backed_up,
        gc_runs
    );
    assert!(
        summary["completed_snapshots"].as_u64().expect("count")
            >= (before.len() + completed_before_backup.len()) as u64,
        "{summary}"
    );
    assert_private(&copy);

    // Restore: a new server on the copy (the original keeps its data directory).
    drop(server);
    let restored = Cluster::start_embedded_in(strata_binary(), &copy);
    let client = restored.client(0);
    for (id, seed) in before.iter().chain(&completed_before_backup) {
        assert_reads(&client, id, *seed, BLOCKS).await;
    }
    let mut in_copy = 0;
    for (id, seed) in &all_completed {
        if completed_before_backup.contains_key(id) {
            continue;
        }
        // Completed while the backup ran or after: in the copy as completed (then whole),
        // or as pending, or not at all.
        if client.is_readable(id).await.expect("ListSnapshotBlocks") {
            assert_reads(&client, id, *seed, BLOCKS).await;
            in_copy += 1;
        }
    }
    eprintln!("{in_copy} snapshots completed during the backup are in the copy");
    // Deleted while the test ran: in the copy or not, but whole if they are.
    let mut deleted_in_copy = 0;
    for (id, seed) in &all_deleted {
        if client.is_readable(id).await.expect("ListSnapshotBlocks") {
            assert_reads(&client, id, *seed, BLOCKS).await;
            deleted_in_copy += 1;
        }
    }
    eprintln!(
        "{} snapshots deleted during the test, {deleted_in_copy} of them in the copy",
        all_deleted.len()
    );
    for id in &deleted {
        assert!(
            !client.is_readable(id).await.expect("ListSnapshotBlocks"),
            "{id} was deleted before the backup"
        );
    }
    // The copy serves as a data directory: new uploads go in, and a scrub finds it intact.
    let after = upload(&client, 7)
        .await
        .expect("upload into the restored copy");
    assert_reads(&client, &after, 7, BLOCKS).await;
    let scrub = admin_async(
        &restored.endpoint(0),
        &["verify", "--all", "--rate-mib", "0"],
    )
    .await;
    assert_eq!(
        scrub.status.code(),
        Some(0),
        "{}\n{}",
        text(&scrub.stdout),
        text(&scrub.stderr)
    );
}

/// The copy is as private as a data directory: the directory 0700, its files 0600.
fn assert_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        if path.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            assert_private(&path);
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
        }
    }
}

/// A backup into a directory that is not empty is refused with a clear message and
/// writes nothing there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_into_a_used_directory_is_refused_and_writes_nothing() {
    let server = Cluster::start_embedded(strata_binary());
    let endpoint = server.endpoint(0);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("keep"), b"mine").expect("write");
    let used = admin_async(
        &endpoint,
        &["store", "backup", dir.path().to_str().expect("utf-8")],
    )
    .await;
    assert_eq!(used.status.code(), Some(1), "{}", text(&used.stdout));
    let message = text(&used.stderr);
    assert!(message.contains("not empty"), "{message}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["keep"],
        "nothing was written beside the user's file"
    );
}
