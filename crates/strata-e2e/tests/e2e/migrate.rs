//! `strata migrate`: an embedded data directory written by a real server through the
//! client — a lineage of three uploads, a branch, and the same image uploaded twice
//! (dedup) — copied by the binary into a cluster over PostgreSQL and Ceph RGW while its
//! node serves. Every snapshot downloads from the cluster identical to its image, the
//! cluster's ListChangedBlocks names the same changes, and a second run copies nothing.

use std::collections::BTreeSet;

use strata_cli::{Differ, DownloadOptions, Downloader, Reporter, UploadOptions, Uploader};

use super::harness::TestServer;
use super::images::{Fill, modified_copy, sha256_file, standard_image};
use crate::nodes::{Cluster, strata_binary, text};

/// The line `strata migrate` printed for `snapshot`.
fn line_of<'a>(stdout: &'a str, snapshot: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with(snapshot))
        .unwrap_or_else(|| panic!("no line for {snapshot} in:\n{stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_moves_into_a_live_cluster_verified_and_a_second_run_copies_nothing() {
    let binary = strata_binary();
    let mut server = TestServer::start_embedded().await;
    let client = server.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, next, last, branch) = (
        dir.path().join("base.img"),
        dir.path().join("next.img"),
        dir.path().join("last.img"),
        dir.path().join("branch.img"),
    );
    let (info, next_changes) = {
        let (base, next, last, branch) = (base.clone(), next.clone(), last.clone(), branch.clone());
        tokio::task::spawn_blocking(move || {
            let info = standard_image(&base);
            let next_changes = [
                (3, Fill::Repeated(70)),
                (130, Fill::Hole),
                (200, Fill::Random(71)),
            ];
            let next_info = modified_copy(&base, &next, &info, &next_changes);
            modified_copy(&next, &last, &next_info, &[(4, Fill::Random(72))]);
            // The branch writes content the lineage has elsewhere: stored once.
            modified_copy(&base, &branch, &info, &[(9, Fill::Repeated(70))]);
            (info, next_changes)
        })
        .await
        .expect("images")
    };
    let uploader = Uploader::new(&client, Reporter::silent());
    let upload = |image: &std::path::Path, parent: Option<&strata_types::SnapshotId>| {
        let mut options = UploadOptions::new(image);
        options.parent = parent.cloned();
        options.base = parent.map(|_| base.clone());
        options
    };
    let s1 = uploader
        .upload(&upload(&base, None))
        .await
        .expect("base")
        .snapshot;
    let mut next_options = upload(&next, Some(&s1));
    next_options.base = Some(base.clone());
    let s2 = uploader.upload(&next_options).await.expect("next").snapshot;
    let mut last_options = upload(&last, Some(&s2));
    last_options.base = Some(next.clone());
    let s3 = uploader.upload(&last_options).await.expect("last").snapshot;
    let s4 = uploader
        .upload(&upload(&branch, Some(&s1)))
        .await
        .expect("branch")
        .snapshot;
    let twice = uploader
        .upload(&upload(&base, None))
        .await
        .expect("again")
        .snapshot;
    server.stop().await;

    let mut cluster = Cluster::start(binary, 1).await;
    let output = cluster.migrate(server.data_dir());
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "migrate failed:\n{stdout}\n{}\n{}",
        text(&output.stderr),
        cluster.logs()
    );
    assert!(
        stdout.contains("5 snapshots: 5 copied, 0 already in the target, 0 skipped, 0 failed"),
        "{stdout}"
    );
    // Children put only their changes; content stored once is not stored again.
    assert!(
        line_of(&stdout, s2.as_str()).contains("copied: 3 blocks"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, s3.as_str()).contains("copied: 1 block, 1 chunk stored"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, s4.as_str()).contains("0 chunks stored"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, twice.as_str()).contains("0 chunks stored"),
        "{stdout}"
    );
    // The cluster was serving before: it keeps the token key it made.
    assert!(
        stdout.contains("token key: the target keeps its own"),
        "{stdout}"
    );

    // Every snapshot reads back identical from the cluster's node.
    let node = cluster.client(0);
    for (snapshot, image) in [
        (&s1, &base),
        (&s2, &next),
        (&s3, &last),
        (&s4, &branch),
        (&twice, &base),
    ] {
        let restored = dir.path().join(format!("{snapshot}.img"));
        let mut download = DownloadOptions::new(snapshot.clone(), &restored);
        download.size = Some(info.len);
        Downloader::new(&node, Reporter::silent())
            .download(&download)
            .await
            .unwrap_or_else(|e| panic!("download {snapshot}: {e:#}\n{}", cluster.logs()));
        assert_eq!(
            sha256_file(&restored, None),
            sha256_file(image, None),
            "{snapshot}"
        );
    }
    let report = Differ::new(&node, Reporter::silent())
        .diff(&s1, &s2)
        .await
        .expect("diff on the cluster");
    let changed: BTreeSet<u32> = strata_cli::diff::indexes(&report)
        .into_iter()
        .map(|i| i.get())
        .collect();
    let expected: BTreeSet<u32> = next_changes.iter().map(|(i, _)| *i as u32).collect();
    assert_eq!(changed, expected);

    let again = cluster.migrate(server.data_dir());
    let stdout = text(&again.stdout);
    assert!(again.status.success(), "{stdout}\n{}", text(&again.stderr));
    assert!(
        stdout.contains(
            "5 snapshots: 0 copied, 5 already in the target, 0 skipped, 0 failed; 0 chunks stored"
        ),
        "{stdout}"
    );
    cluster.kill(0);
}
