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
