//! Incremental uploads: only changed blocks are sent, whichever way the parent is known.

use std::collections::BTreeSet;

use strata_cli::upload::Baseline;
use strata_cli::{
    Differ, DownloadOptions, Downloader, Manifest, Reporter, UploadOptions, Uploader,
};

use super::harness::TestServer;
use super::images::{BLOCK, Fill, modified_copy, sha256_file, standard_image};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_uploads_send_only_the_changed_blocks() {
    let server = TestServer::start().await;
    let client = server.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.img");
    let next = dir.path().join("next.img");
    // 1% of the 512 blocks change: data rewritten, a hole filled, data zeroed, zeros made
    // data. Block 400 is written with zeros over a hole: not a change.
    let changes = [
        (3, Fill::Random(90)),
        (70, Fill::Random(91)),
        (130, Fill::Hole),
        (195, Fill::Random(92)),
        (320, Fill::Partial(93)),
        (400, Fill::Zeros),
    ];
    let changed: BTreeSet<u32> = [3, 70, 130, 195, 320].into();
    let (base_info, next_info) = {
        let (base, next) = (base.clone(), next.clone());
        tokio::task::spawn_blocking(move || {
            let info = standard_image(&base);
            let next_info = modified_copy(&base, &next, &info, &changes);
            (info, next_info)
        })
        .await
        .expect("generate")
    };
    assert_eq!(next_info.len, base_info.len);

    let mut upload = UploadOptions::new(&base);
    upload.manifest_out = Some(Manifest::path_for(&base));
    let parent = Uploader::new(&client, Reporter::silent())
        .upload(&upload)
        .await
        .expect("parent upload")
        .snapshot;

    let uploader = Uploader::new(&client, Reporter::silent());
    let differ = Differ::new(&client, Reporter::silent());
    let ways = [
        ("--base", Some(base.clone()), None, Baseline::BaseImage),
        (
            "--parent-manifest",
            None,
            Some(Manifest::path_for(&base)),
            Baseline::Manifest,
        ),
        ("--parent alone", None, None, Baseline::Fetched),
    ];
    for (way, base_image, parent_manifest, baseline) in ways {
        let mut upload = UploadOptions::new(&next);
        upload.parent = Some(parent.clone());
        upload.base = base_image;
        upload.parent_manifest = parent_manifest;
        let summary = uploader.upload(&upload).await.expect("child upload");
        assert_eq!(summary.baseline, baseline, "{way}");
        assert_eq!(summary.blocks_sent, changed.len() as u64, "{way}");
        if baseline == Baseline::Fetched {
            assert!(summary.parent_blocks_fetched > 0, "{way}");
        } else {
            assert_eq!(summary.parent_blocks_fetched, 0, "{way}");
        }

        // The service agrees: ListChangedBlocks names exactly the changed blocks.
        let report = differ.diff(&parent, &summary.snapshot).await.expect("diff");
        let reported: BTreeSet<u32> = strata_cli::diff::indexes(&report)
            .into_iter()
            .map(|i| i.get())
            .collect();
        assert_eq!(reported, changed, "{way}");
        assert_eq!(report.changed_bytes, changed.len() as u64 * BLOCK);

        let restored = dir.path().join(format!("child-{}.img", summary.snapshot));
        let mut download = DownloadOptions::new(summary.snapshot.clone(), &restored);
        download.size = Some(next_info.len);
        Downloader::new(&client, Reporter::silent())
            .download(&download)
            .await
            .expect("child download");
        assert_eq!(
            sha256_file(&restored, None),
            sha256_file(&next, None),
            "{way}"
        );
    }
}
