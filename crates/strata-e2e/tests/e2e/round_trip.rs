//! Full uploads and downloads: identical content, sparse output, verification.

use std::collections::BTreeSet;

use strata_cli::download::{PARTIAL_SUFFIX, RESUME_SUFFIX};
use strata_cli::verify::Finding;
use strata_cli::{
    DownloadOptions, Downloader, Manifest, Reporter, UploadOptions, Uploader, Verifier,
    VerifyOptions,
};
use strata_types::BlockIndex;

use super::harness::TestServer;
use super::images::{
    BLOCK, Fill, MIB, allocated_bytes, generate, modified_copy, sha256_file, standard_image,
    zeros_from,
};

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_sparse_image_round_trips_identically_and_sparse() {
    let server = TestServer::start().await;
    let client = server.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    let info = {
        let image = image.clone();
        tokio::task::spawn_blocking(move || standard_image(&image))
            .await
            .expect("generate")
    };

    let mut upload = UploadOptions::new(&image);
    upload.manifest_out = Some(Manifest::path_for(&image));
    let summary = Uploader::new(&client, Reporter::silent())
        .upload(&upload)
        .await
        .expect("upload");
    assert_eq!(summary.volume_size.gib(), 1);
    assert_eq!(summary.blocks_sent, info.data_blocks.len() as u64);
    assert_eq!(
        summary.zero_blocks_skipped,
        512 - info.data_blocks.len() as u64,
        "without a parent every zero block is skipped"
    );
    // The service holds exactly the data blocks.
    let listing = client.list_blocks(&summary.snapshot).await.expect("list");
    let listed: BTreeSet<u32> = listing.blocks.iter().map(|(i, _)| i.get()).collect();
    assert_eq!(listed, info.data_blocks);

    // With the upload's manifest: the original length, every block checked, identical.
    let restored = dir.path().join("restored.img");
    let mut download = DownloadOptions::new(summary.snapshot.clone(), &restored);
    download.expected = Some(Manifest::read(&Manifest::path_for(&image)).expect("manifest"));
    let fetched = Downloader::new(&client, Reporter::silent())
        .download(&download)
        .await
        .expect("download");
    assert_eq!(fetched.blocks_fetched, info.data_blocks.len() as u64);
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));
    let allocated = allocated_bytes(&restored);
    assert!(
        allocated < info.len / 2,
        "the download is sparse: {allocated} bytes allocated for {}",
        info.len
    );
    assert!(!with_suffix(&restored, PARTIAL_SUFFIX).exists());
    assert!(!with_suffix(&restored, RESUME_SUFFIX).exists());
    let written = Manifest::read(&Manifest::path_for(&restored)).expect("download manifest");
    let uploaded = Manifest::read(&Manifest::path_for(&image)).expect("upload manifest");
    assert_eq!(written.blocks, uploaded.blocks);

    // Without a manifest: the volume size, the image followed by zeros.
    let whole = dir.path().join("whole.img");
    Downloader::new(&client, Reporter::silent())
        .download(&DownloadOptions::new(summary.snapshot.clone(), &whole))
        .await
        .expect("download");
    assert_eq!(
        std::fs::metadata(&whole).expect("metadata").len(),
        1024 * MIB
    );
    assert_eq!(
        sha256_file(&whole, Some(info.len)),
        sha256_file(&image, None)
    );
    assert!(zeros_from(&whole, info.len));

    // An existing output is not overwritten without force.
    let again = Downloader::new(&client, Reporter::silent())
        .download(&DownloadOptions::new(summary.snapshot.clone(), &whole))
        .await;
    assert!(again.is_err_and(|e| e.to_string().contains("already exists")));

    // Verify: clean against the image; a changed image shows exactly the changed blocks.
    let mut verify = VerifyOptions::new(summary.snapshot.clone());
    verify.image = Some(image.clone());
    let report = Verifier::new(&client, Reporter::silent())
        .verify(&verify)
        .await
        .expect("verify");
    assert!(report.is_ok(), "{:?}", report.findings);
    assert_eq!(report.blocks_checked, info.data_blocks.len() as u64);

    let changed = dir.path().join("changed.img");
    {
        let (image, changed, info) = (image.clone(), changed.clone(), info.clone());
        tokio::task::spawn_blocking(move || {
            modified_copy(
                &image,
                &changed,
                &info,
                &[
                    (5, Fill::Random(50)),
                    (100, Fill::Random(51)),
                    (130, Fill::Hole),
                ],
            )
        })
        .await
        .expect("copy");
    }
    verify.image = Some(changed);
    let report = Verifier::new(&client, Reporter::silent())
        .verify(&verify)
        .await
        .expect("verify");
    let flagged: Vec<u32> = report
        .findings
        .iter()
        .map(|f| match f {
            Finding::DiffersFromImage { index } => index.get(),
            Finding::Unreadable { index, .. } => panic!("block {index} unreadable"),
            Finding::PastImageEnd { index } => panic!("block {index} past the image's end"),
        })
        .collect();
    assert_eq!(flagged, vec![5, 100, 130]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unaligned_image_round_trips_with_its_manifest() {
    let server = TestServer::start().await;
    let client = server.client();
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("odd.img");
    let len = 7 * BLOCK + 12_345;
    let info = generate(
        &image,
        len,
        &[(0..2, Fill::Random(9)), (6..8, Fill::Random(10))],
    );
    let mut upload = UploadOptions::new(&image);
    upload.manifest_out = Some(Manifest::path_for(&image));
    let summary = Uploader::new(&client, Reporter::silent())
        .upload(&upload)
        .await
        .expect("upload");
    assert_eq!(summary.blocks_sent, info.data_blocks.len() as u64);

    let restored = dir.path().join("restored.img");
    let mut download = DownloadOptions::new(summary.snapshot.clone(), &restored);
    download.expected = Some(Manifest::read(&Manifest::path_for(&image)).expect("manifest"));
    Downloader::new(&client, Reporter::silent())
        .download(&download)
        .await
        .expect("download");
    assert_eq!(std::fs::metadata(&restored).expect("metadata").len(), len);
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));

    // A manifest of another snapshot is refused; a manifest that disagrees is caught.
    let mut forged = Manifest::read(&Manifest::path_for(&image)).expect("manifest");
    forged.insert(BlockIndex::new(1), strata_types::ChunkDigest::of(b"not it"));
    let mut download = DownloadOptions::new(summary.snapshot.clone(), dir.path().join("x.img"));
    download.expected = Some(forged);
    let error = Downloader::new(&client, Reporter::silent())
        .download(&download)
        .await
        .expect_err("mismatch");
    assert!(error.to_string().contains("block 1 of"), "{error}");
}
