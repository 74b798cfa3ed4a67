//! A block device as download target and upload source, through a loop device. Needs root
//! and `losetup`; fails, naming what is missing, otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_cli::{
    DownloadOptions, Downloader, Reporter, UploadOptions, Uploader, Verifier, VerifyOptions,
};

use super::harness::TestServer;
use super::images::{Fill, MIB, generate, sha256_file};

/// A loop device over a file, detached on drop.
struct LoopDevice(PathBuf);

impl LoopDevice {
    fn attach(backing: &Path) -> Option<Self> {
        let output = match Command::new("losetup")
            .args(["--find", "--show"])
            .arg(backing)
            .output()
        {
            Ok(output) => output,
            Err(error) => {
                super::harness::required(&format!("losetup does not run ({error})"));
                return None;
            }
        };
        if !output.status.success() {
            super::harness::required(&format!(
                "cannot attach a loop device ({})",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
            return None;
        }
        let device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Some(Self(PathBuf::from(device)))
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup")
            .arg("--detach")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_device_is_a_download_target_and_an_upload_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The device starts full of non-zero bytes: the download must zero what the snapshot lacks.
    let backing = dir.path().join("backing");
    std::fs::write(
        &backing,
        vec![0xa5u8; usize::try_from(32 * MIB).expect("fits")],
    )
    .expect("write");
    let Some(device) = LoopDevice::attach(&backing) else {
        return;
    };
    let server = TestServer::start().await;
    let client = server.client();
    let image = dir.path().join("disk.img");
    let len = 32 * MIB;
    generate(
        &image,
        len,
        &[
            (0..5, Fill::Random(1)),
            (10..12, Fill::Zeros),
            (20..30, Fill::Partial(2)),
        ],
    );
    let snapshot = Uploader::new(&client, Reporter::silent())
        .upload(&UploadOptions::new(&image))
        .await
        .expect("upload")
        .snapshot;

    let mut download = DownloadOptions::new(snapshot.clone(), &device.0);
    download.size = Some(len);
    let refused = Downloader::new(&client, Reporter::silent())
        .download(&download)
        .await;
    assert!(refused.is_err_and(|e| e.to_string().contains("--force")));
    download.force = true;
    Downloader::new(&client, Reporter::silent())
        .download(&download)
        .await
        .expect("download to the device");
    assert_eq!(sha256_file(&device.0, Some(len)), sha256_file(&image, None));

    let from_device = Uploader::new(&client, Reporter::silent())
        .upload(&UploadOptions::new(&device.0))
        .await
        .expect("upload from the device");
    assert_eq!(from_device.image_size, len);
    let mut verify = VerifyOptions::new(from_device.snapshot);
    verify.image = Some(image);
    let report = Verifier::new(&client, Reporter::silent())
        .verify(&verify)
        .await
        .expect("verify");
    assert!(report.is_ok(), "{:?}", report.findings);
}
