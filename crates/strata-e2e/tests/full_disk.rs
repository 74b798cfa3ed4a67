//! A full disk under a running server: `strata serve` on a small loop-mounted ext4 file
//! system, filled by uploads of distinct blocks. A Put that cannot be stored answers an
//! error (never 200 for a block that is not stored) and the server keeps serving; every
//! acknowledged block reads back; deleting a snapshot and collecting frees space on the
//! full disk; then uploads succeed again. Needs root (CI runs as root); without it the
//! test fails and says so.

#[path = "shared/nodes.rs"]
mod nodes;

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_cli::SnapshotClient;
use strata_types::{BlockIndex, SnapshotId};

use nodes::{Cluster, admin, aggregate, block, start_snapshot, strata_binary, text};

/// A loop-mounted ext4 image, unmounted on drop.
struct LoopFs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl LoopFs {
    fn create(mib: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(mib << 20))
            .expect("image");
        run("mkfs.ext4", &["-q", "-F", "-m", "0", path(&image)]);
        run("mount", &["-o", "loop", path(&image), path(&mount)]);
        Self { _dir: dir, mount }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} cannot run: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        text(&output.stderr)
    );
}

fn can_mount() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if text(&uid.stdout) != "0" {
        return Err("mounting a loop file system needs root".into());
    }
    if Command::new("mkfs.ext4").arg("-V").output().is_err() {
        return Err("mkfs.ext4 is missing (e2fsprogs)".into());
    }
    Ok(())
}

/// Put distinct blocks into `id` from `first` on until one fails; returns the acknowledged
/// indexes and the error of the failed one.
async fn fill(
    client: &SnapshotClient,
    id: &SnapshotId,
    seed: u64,
    first: u32,
) -> (Vec<u32>, String) {
    let mut acknowledged = Vec::new();
    for index in first..first + 4000 {
        let (data, digest) = block(seed, index);
        match client
            .put_block(id, BlockIndex::new(index), &data, &digest, None, true)
            .await
        {
            Ok(()) => acknowledged.push(index),
            Err(error) => return (acknowledged, error.to_string()),
        }
    }
    panic!("4000 blocks (2 GiB) fitted on the small file system");
}

async fn assert_reads(client: &SnapshotClient, id: &SnapshotId, seed: u64, indexes: &[u32]) {
    let listing = client.list_blocks(id).await.expect("ListSnapshotBlocks");
    let listed: Vec<u32> = listing.blocks.iter().map(|(i, _)| i.get()).collect();
    assert_eq!(listed, indexes, "{id}: the listed blocks");
    for (index, token) in &listing.blocks {
        let fetched = client
            .get_block(id, *index, token)
            .await
            .unwrap_or_else(|e| panic!("GetSnapshotBlock {id}/{index}: {e}"));
        assert_eq!(fetched.digest, block(seed, index.get()).1, "{id}/{index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_puts_cleanly_loses_nothing_and_recovers_after_gc() {
    if let Err(why) = can_mount() {
        panic!(
            "{why}: this test needs it (`bash ci/test`, run as root, installs what the tests need)"
        );
    }
    let fs = LoopFs::create(96);
    let binary = strata_binary();
    let mut server = Cluster::start_embedded_in(binary.clone(), &fs.mount.join("data"));
    let client = server.impatient_client(0);

    // A snapshot that fills the disk, completed with what was acknowledged.
    let first = start_snapshot(&client).await;
    let (written, error) = fill(&client, &first, 1, 0).await;
    assert!(written.len() > 20, "only {} blocks fitted", written.len());
    println!("disk full after {} blocks: {error}", written.len());
    assert!(
        error.contains("InternalServerException") && error.contains("out of storage space"),
        "a full disk answers a server-side error that says so: {error}"
    );
    let complete = client
        .complete_snapshot(
            &first,
            written.len() as u64,
            &aggregate(1, written.iter().copied()),
        )
        .await;
    // The completion needs a little metadata space: it succeeds, or fails cleanly and
    // succeeds once space is freed below.
    let completed_first = complete.is_ok();
    // The server still serves: the acknowledged blocks of a completed snapshot read back.
    if completed_first {
        assert_reads(&client, &first, 1, &written).await;
    }

    // A second snapshot cannot take more either.
    let second = start_snapshot(&client).await;
    let (more, _) = fill(&client, &second, 2, 0).await;
    assert!(
        more.len() < 3,
        "{} more blocks fitted on a full disk",
        more.len()
    );

    // Deleting the second and the first frees their space at the next collection, on the
    // full disk.
    let endpoint = server.endpoint(0);
    for id in [&second, &first] {
        let deleted = admin(&binary, &endpoint, &["snapshots", "delete", id.as_str()]);
        assert!(
            deleted.status.success(),
            "delete {id}: {}",
            text(&deleted.stderr)
        );
    }
    let gc = admin(&binary, &endpoint, &["gc"]);
    assert!(
        gc.status.success(),
        "gc on a full disk: {}\n{}",
        text(&gc.stderr),
        server.logs()
    );
    println!("gc: {}", text(&gc.stdout));

    // Uploads succeed again, and everything reads back, after a restart too.
    let third = start_snapshot(&client).await;
    let mut indexes = Vec::new();
    for index in 0..40 {
        nodes::put(&client, &third, 3, index).await;
        indexes.push(index);
    }
    client
        .complete_snapshot(&third, 40, &aggregate(3, 0..40))
        .await
        .expect("complete after GC");
    server.restart(0);
    let client = server.client(0);
    assert_reads(&client, &third, 3, &indexes).await;
    server.kill(0);
}
