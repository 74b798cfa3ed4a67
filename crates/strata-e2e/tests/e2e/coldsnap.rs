//! Interoperability with coldsnap, both ways, when `coldsnap` is on PATH (CI installs it);
//! otherwise each test fails, naming it.

use std::process::{Command, Output};
use std::time::Instant;

use strata_cli::{DownloadOptions, Downloader, Reporter, UploadOptions, Uploader};
use strata_types::SnapshotId;

use super::harness::{KEY, SECRET, TestServer};
use super::images::{sha256_file, standard_image, zeros_from};

fn coldsnap_available() -> bool {
    let found = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("coldsnap").is_file())
    });
    if !found {
        super::harness::required("coldsnap not on PATH");
    }
    found
}

async fn coldsnap(server: &TestServer, args: Vec<String>) -> Output {
    let endpoint = server.endpoint();
    tokio::task::spawn_blocking(move || {
        Command::new("coldsnap")
            .arg("--endpoint")
            .arg(&endpoint)
            .args(&args)
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .expect("coldsnap runs")
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_uploaded_by_coldsnap_downloads_identically_with_strata() {
    if !coldsnap_available() {
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    let info = standard_image(&image);
    let started = Instant::now();
    let output = coldsnap(&server, vec!["upload".into(), image.display().to_string()]).await;
    let coldsnap_time = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout
        .split_whitespace()
        .find(|word| word.starts_with("snap-"))
        .expect("coldsnap prints the snapshot id");
    let snapshot = SnapshotId::parse(id).expect("snapshot id");

    let restored = dir.path().join("restored.img");
    let mut download = DownloadOptions::new(snapshot, &restored);
    download.size = Some(info.len);
    Downloader::new(&server.client(), Reporter::silent())
        .download(&download)
        .await
        .expect("strata download");
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));

    let started = Instant::now();
    Uploader::new(&server.client(), Reporter::silent())
        .upload(&UploadOptions::new(&image))
        .await
        .expect("strata upload");
    println!(
        "upload of 256 MiB: coldsnap {:.2} s, strata {:.2} s",
        coldsnap_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_uploaded_by_strata_downloads_identically_with_coldsnap() {
    if !coldsnap_available() {
        return;
    }
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    let info = standard_image(&image);
    let summary = Uploader::new(&server.client(), Reporter::silent())
        .upload(&UploadOptions::new(&image))
        .await
        .expect("strata upload");
    let restored = dir.path().join("restored.img");
    let output = coldsnap(
        &server,
        vec![
            "download".into(),
            summary.snapshot.to_string(),
            restored.display().to_string(),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // coldsnap writes the whole volume: the image, then zeros.
    assert!(std::fs::metadata(&restored).expect("metadata").len() >= info.len);
    assert_eq!(
        sha256_file(&restored, Some(info.len)),
        sha256_file(&image, None)
    );
    assert!(zeros_from(&restored, info.len));
}

/// Whether `marker` occurs in any file under `dir` (a missing directory holds nothing).
fn in_any_file(dir: &std::path::Path, marker: &[u8]) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.into_iter().any(|entry| {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            in_any_file(&path, marker)
        } else {
            let bytes = std::fs::read(&path).expect("read");
            bytes.windows(marker.len()).any(|w| w == marker)
        }
    })
}

/// coldsnap's `--kms-key-id` with a key made by `strata keys create`: the data directory
/// holds no plaintext, strata downloads the image back identical, and `strata keys
/// disable` stops the download until `strata keys enable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coldsnap_uploads_encrypted_under_a_strata_key_that_gates_every_download() {
    let Some(binary) = super::binary::strata_binary() else {
        return;
    };
    if !coldsnap_available() {
        return;
    }
    let server = TestServer::start().await;
    let endpoint = server.endpoint();
    let keys = |args: &[&str]| {
        let mut all = vec!["keys"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--endpoint", endpoint.as_str()]);
        super::binary::strata(&binary, &all)
    };
    let created = keys(&["create", "--description", "coldsnap e2e"]);
    assert!(
        created.status.success(),
        "{}",
        super::binary::text(&created.stderr)
    );
    let arn = super::binary::text(&created.stdout);
    assert!(
        arn.starts_with("arn:aws:kms:us-east-1:"),
        "stdout is the ARN: {arn}"
    );
    let listed = keys(&["list", "--json"]);
    let listed: serde_json::Value =
        serde_json::from_slice(&listed.stdout).expect("list --json is JSON");
    assert!(
        listed
            .as_array()
            .expect("an array")
            .iter()
            .any(|k| k["arn"] == arn.as_str()
                && k["enabled"] == true
                && k["description"] == "coldsnap e2e"),
        "{listed}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("secret.img");
    let marker = b"<<A-SECRET-THAT-MUST-NOT-BE-STORED>>";
    let data: Vec<u8> = marker.iter().copied().cycle().take(8 << 20).collect();
    std::fs::write(&image, &data).expect("write image");
    let output = coldsnap(
        &server,
        vec![
            "upload".into(),
            "--kms-key-id".into(),
            arn.clone(),
            image.display().to_string(),
        ],
    )
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let id = stdout
        .split_whitespace()
        .find(|word| word.starts_with("snap-"))
        .expect("coldsnap prints the snapshot id");
    let snapshot = SnapshotId::parse(id).expect("snapshot id");
    assert!(
        !in_any_file(server.data_dir(), marker),
        "the data directory holds the image's plaintext"
    );

    let download = |name: &str| {
        let restored = dir.path().join(name);
        let mut options = DownloadOptions::new(snapshot.clone(), &restored);
        options.size = Some(data.len() as u64);
        let client = server.client_with(super::harness::impatient());
        async move {
            Downloader::new(&client, Reporter::silent())
                .download(&options)
                .await
                .map(|_| restored)
        }
    };
    let restored = download("restored.img").await.expect("strata download");
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));

    let disabled = keys(&["disable", &arn]);
    assert!(
        disabled.status.success(),
        "{}",
        super::binary::text(&disabled.stderr)
    );
    assert!(super::binary::text(&disabled.stdout).ends_with("is disabled"));
    let refused = download("refused.img")
        .await
        .expect_err("the key is disabled");
    assert!(format!("{refused:#}").contains("disabled"), "{refused:#}");
    let enabled = keys(&["enable", &arn]);
    assert!(
        enabled.status.success(),
        "{}",
        super::binary::text(&enabled.stderr)
    );
    let again = download("again.img").await.expect("readable again");
    assert_eq!(sha256_file(&again, None), sha256_file(&image, None));
}

/// `strata upload --kms-key-id` (the library's `kms_key_arn`): the snapshot is encrypted,
/// its zero blocks and holes are sent too (an encrypted snapshot's unwritten blocks are not
/// zeros on AWS), and it downloads identical; a plain upload of the same image skips them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_upload_sends_its_zero_blocks_and_downloads_identically() {
    let Some(binary) = super::binary::strata_binary() else {
        return;
    };
    let server = TestServer::start().await;
    let created = super::binary::strata(
        &binary,
        &["keys", "create", "--endpoint", server.endpoint().as_str()],
    );
    assert!(
        created.status.success(),
        "{}",
        super::binary::text(&created.stderr)
    );
    let arn = super::binary::text(&created.stdout);
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    let info = standard_image(&image);
    let blocks = info.len.div_ceil(512 * 1024);

    let mut options = UploadOptions::new(&image);
    options.kms_key_arn = Some(arn);
    let encrypted = Uploader::new(&server.client(), Reporter::silent())
        .upload(&options)
        .await
        .expect("encrypted upload");
    assert_eq!(encrypted.zero_blocks_skipped, 0, "zero blocks are sent");
    assert_eq!(encrypted.blocks_sent, blocks);
    let plain = Uploader::new(&server.client(), Reporter::silent())
        .upload(&UploadOptions::new(&image))
        .await
        .expect("plain upload");
    assert!(plain.zero_blocks_skipped > 0 && plain.blocks_sent < blocks);

    let restored = dir.path().join("restored.img");
    let mut download = DownloadOptions::new(encrypted.snapshot.clone(), &restored);
    download.size = Some(info.len);
    Downloader::new(&server.client(), Reporter::silent())
        .download(&download)
        .await
        .expect("download");
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));

    let mut with_parent = UploadOptions::new(&image);
    with_parent.parent = Some(encrypted.snapshot);
    with_parent.encrypted = true;
    let refused = Uploader::new(&server.client(), Reporter::silent())
        .upload(&with_parent)
        .await
        .expect_err("--encrypted with --parent");
    assert!(refused.to_string().contains("--parent"), "{refused}");
}
