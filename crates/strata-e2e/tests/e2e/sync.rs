//! `strata copy` / `strata sync` between two servers (issue 13): a lineage of five
//! snapshots recreated on the target with the same ListChangedBlocks answers, a later sync
//! that copies only the new snapshots, and an interrupted sync that resumes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use strata_cli::{
    DownloadOptions, Downloader, ProgressEvent, Reporter, SnapshotClient, SyncError, SyncOptions,
    Syncer, UploadOptions, Uploader,
};
use strata_types::{BlockIndex, SnapshotId};
use tokio::sync::Notify;

use super::harness::TestServer;
use super::images::{Fill, ImageInfo, MIB, generate, modified_copy, sha256_file};

/// Upload `image` (incremental on `parent`, compared with `base`).
async fn upload(
    server: &TestServer,
    image: &Path,
    parent: Option<(&SnapshotId, &Path)>,
) -> SnapshotId {
    let mut options = UploadOptions::new(image);
    if let Some((parent, base)) = parent {
        options.parent = Some(parent.clone());
        options.base = Some(base.to_owned());
    }
    Uploader::new(&server.client(), Reporter::silent())
        .upload(&options)
        .await
        .expect("upload")
        .snapshot
}

/// Five images, each a few blocks different from the one before (new data, changed data,
/// data turned to zeros), uploaded as one lineage.
async fn lineage(server: &TestServer, dir: &Path) -> Vec<(SnapshotId, PathBuf)> {
    let first = dir.join("v0.img");
    let mut info: ImageInfo = generate(
        &first,
        16 * MIB,
        &[(0..6, Fill::Random(1)), (10..12, Fill::Repeated(2))],
    );
    let mut chain = vec![(upload(server, &first, None).await, first)];
    let changes: [&[(u64, Fill)]; 4] = [
        &[(1, Fill::Random(10)), (20, Fill::Random(11))],
        &[(2, Fill::Hole), (21, Fill::Random(12))],
        &[(20, Fill::Random(13)), (30, Fill::Repeated(2))],
        &[
            (0, Fill::Random(14)),
            (10, Fill::Hole),
            (31, Fill::Random(15)),
        ],
    ];
    for (n, change) in changes.iter().enumerate() {
        let next = dir.join(format!("v{}.img", n + 1));
        let (parent, base) = chain.last().expect("parent").clone();
        info = modified_copy(&base, &next, &info, change);
        let id = upload(server, &next, Some((&parent, &base))).await;
        chain.push((id, next));
    }
    chain
}

async fn changed(client: &SnapshotClient, a: &SnapshotId, b: &SnapshotId) -> Vec<BlockIndex> {
    client
        .list_changed_blocks(a, b)
        .await
        .expect("changes")
        .blocks
        .into_iter()
        .map(|block| block.index)
        .collect()
}

async fn listed(client: &SnapshotClient, snapshot: &SnapshotId) -> BTreeSet<BlockIndex> {
    client
        .list_blocks(snapshot)
        .await
        .expect("list")
        .blocks
        .into_iter()
        .map(|(index, _)| index)
        .collect()
}

async fn download_equals(server: &TestServer, snapshot: &SnapshotId, image: &Path, dir: &Path) {
    let out = dir.join(format!("{snapshot}.out"));
    let mut options = DownloadOptions::new(snapshot.clone(), &out);
    options.size = Some(std::fs::metadata(image).expect("image").len());
    Downloader::new(&server.client(), Reporter::silent())
        .download(&options)
        .await
        .expect("download");
    assert_eq!(
        sha256_file(&out, None),
        sha256_file(image, None),
        "{snapshot}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lineage_of_five_is_recreated_with_the_same_changes() {
    let (source, target) = (TestServer::start().await, TestServer::start().await);
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = lineage(&source, dir.path()).await;
    let ids: Vec<SnapshotId> = chain.iter().map(|(id, _)| id.clone()).collect();
    let state = dir.path().join("sync.state");
    let syncer = Syncer::new(&source.client(), &target.client(), Reporter::silent());

    // First the first three, then all five: the second run copies only the two new ones.
    let mut options = SyncOptions::new(ids[..3].to_vec());
    options.state = Some(state.clone());
    let first = syncer.sync(&options).await.expect("sync of three");
    assert_eq!(first.snapshots.len(), 3);
    assert!(first.snapshots.iter().all(|s| !s.already_copied));
    options.chain = ids.clone();
    let summary = syncer.sync(&options).await.expect("sync of five");
    let copied: Vec<bool> = summary.snapshots.iter().map(|s| s.already_copied).collect();
    assert_eq!(copied, [true, true, true, false, false]);
    assert_eq!(
        summary.snapshots[..3]
            .iter()
            .map(|s| &s.target)
            .collect::<Vec<_>>(),
        first
            .snapshots
            .iter()
            .map(|s| &s.target)
            .collect::<Vec<_>>()
    );

    let targets: Vec<SnapshotId> = summary.snapshots.iter().map(|s| s.target.clone()).collect();
    for (n, copy) in summary.snapshots.iter().enumerate() {
        assert_eq!(
            copy.target_parent.as_ref(),
            n.checked_sub(1).map(|p| &targets[p])
        );
    }
    let (from, to) = (source.client(), target.client());
    for n in 1..5 {
        let original = changed(&from, &ids[n - 1], &ids[n]).await;
        assert!(!original.is_empty());
        assert_eq!(
            changed(&to, &targets[n - 1], &targets[n]).await,
            original,
            "changes from copy {} to copy {n}",
            n - 1
        );
        // Only the changed blocks were written to each child copy.
        let written = if n < 3 {
            &first.snapshots[n]
        } else {
            &summary.snapshots[n]
        };
        assert_eq!(written.blocks_written, original.len() as u64, "{written:?}");
    }
    // Across the lineage, not only between neighbours.
    assert_eq!(
        changed(&to, &targets[0], &targets[4]).await,
        changed(&from, &ids[0], &ids[4]).await
    );
    for n in 0..5 {
        assert_eq!(listed(&to, &targets[n]).await, listed(&from, &ids[n]).await);
    }
    download_equals(&target, &targets[4], &chain[4].1, dir.path()).await;
    download_equals(&target, &targets[0], &chain[0].1, dir.path()).await;
}

/// A reporter that fires `notify` after `blocks` blocks were written.
fn trip_after(blocks: u64) -> (Reporter, Arc<Notify>) {
    let notify = Arc::new(Notify::new());
    let done = Arc::new(AtomicU64::new(0));
    let fired = Arc::new(AtomicBool::new(false));
    let trigger = Arc::clone(&notify);
    let reporter = Reporter::new(move |event| {
        if let ProgressEvent::Advanced { bytes } = event
            && done.fetch_add(*bytes, Ordering::SeqCst) + bytes >= blocks * 524_288
            && !fired.swap(true, Ordering::SeqCst)
        {
            trigger.notify_one();
        }
    });
    (reporter, notify)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_sync_resumes_where_it_stopped() {
    let source = TestServer::start().await;
    let mut target = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("big.img");
    generate(&image, 48 * MIB, &[(0..96, Fill::Random(40))]);
    let snapshot = upload(&source, &image, None).await;
    let state = dir.path().join("sync.state");
    let mut options = SyncOptions::new(vec![snapshot.clone()]);
    options.state = Some(state.clone());
    options.concurrency = 4;

    let (reporter, tripped) = trip_after(30);
    let syncer = Syncer::new(
        &source.client(),
        &target.client_with(super::harness::impatient()),
        reporter,
    );
    let task = {
        let options = options.clone();
        tokio::spawn(async move { syncer.sync(&options).await })
    };
    tripped.notified().await;
    target.stop().await;
    let error = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("no hang")
        .expect("join")
        .expect_err("the target is gone");
    let SyncError::Interrupted {
        target: pending, ..
    } = &error
    else {
        panic!("not an interruption: {error}");
    };
    assert!(
        error
            .to_string()
            .contains("run the same command again to resume"),
        "{error}"
    );

    target.restart().await;
    let summary = Syncer::new(&source.client(), &target.client(), Reporter::silent())
        .sync(&options)
        .await
        .expect("the second run finishes");
    let copy = &summary.snapshots[0];
    assert_eq!(&copy.target, pending, "the same pending copy is completed");
    assert!(copy.blocks_written_earlier >= 30, "{copy:?}");
    assert_eq!(
        copy.blocks_written + copy.blocks_written_earlier,
        96,
        "{copy:?}"
    );
    download_equals(&target, &copy.target, &image, dir.path()).await;
}
