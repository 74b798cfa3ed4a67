//! The server goes away in the middle of a transfer: the client retries and finishes, or
//! fails quickly with a clear message and (for downloads) a state the next run resumes from.
//! Never a hang, never a wrong byte in the output.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_cli::download::{PARTIAL_SUFFIX, RESUME_SUFFIX};
use strata_cli::manifest::ManifestLog;
use strata_cli::upload::resume_state_for;
use strata_cli::{
    DownloadError, DownloadOptions, Downloader, Manifest, ProgressEvent, Reporter, StopSignal,
    UploadError, UploadOptions, Uploader,
};
use strata_types::{BlockIndex, ChunkDigest, SnapshotId, VolumeSize};
use tokio::sync::Notify;

use super::harness::{TestServer, impatient};
use super::images::{Fill, MIB, generate, sha256_file};

/// A reporter that fires `notify` once `fraction` of the byte total has been processed.
fn trip_at(fraction: f64) -> (Reporter, Arc<Notify>) {
    let notify = Arc::new(Notify::new());
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicU64::new(0));
    let fired = Arc::new(AtomicBool::new(false));
    let trigger = Arc::clone(&notify);
    let reporter = Reporter::new(move |event| match event {
        ProgressEvent::Started {
            total_bytes,
            already_done,
        } => {
            total.store(*total_bytes, Ordering::SeqCst);
            done.store(*already_done, Ordering::SeqCst);
        }
        ProgressEvent::Advanced { bytes } => {
            let now = done.fetch_add(*bytes, Ordering::SeqCst) + bytes;
            #[allow(
                clippy::cast_precision_loss,
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss
            )]
            let threshold = (total.load(Ordering::SeqCst) as f64 * fraction) as u64;
            if now >= threshold && !fired.swap(true, Ordering::SeqCst) {
                trigger.notify_one();
            }
        }
        _ => {}
    });
    (reporter, notify)
}

/// 96 MiB of random data: every block is sent or fetched.
fn data_image(dir: &Path) -> PathBuf {
    let path = dir.join("data.img");
    generate(&path, 96 * MIB, &[(0..192, Fill::Random(77))]);
    path
}

async fn upload(server: &TestServer, image: &Path) -> SnapshotId {
    Uploader::new(&server.client(), Reporter::silent())
        .upload(&UploadOptions::new(image))
        .await
        .expect("upload")
        .snapshot
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_rides_out_a_server_restart() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = data_image(dir.path());
    let (reporter, tripped) = trip_at(0.3);
    let client = server.client();
    let mut options = UploadOptions::new(&image);
    options.concurrency = 8;
    let task = tokio::spawn(async move { Uploader::new(&client, reporter).upload(&options).await });
    tripped.notified().await;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().await;
    let summary = tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("no hang")
        .expect("join")
        .expect("the upload finishes after the restart");
    assert_eq!(summary.blocks_sent, 192);

    let restored = dir.path().join("restored.img");
    let mut download = DownloadOptions::new(summary.snapshot, &restored);
    download.size = Some(96 * MIB);
    Downloader::new(&server.client(), Reporter::silent())
        .download(&download)
        .await
        .expect("download");
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_rides_out_a_server_restart() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = data_image(dir.path());
    let snapshot = upload(&server, &image).await;

    let (reporter, tripped) = trip_at(0.3);
    let restored = dir.path().join("restored.img");
    let mut options = DownloadOptions::new(snapshot, &restored);
    options.size = Some(96 * MIB);
    options.concurrency = 8;
    let client = server.client();
    let task =
        tokio::spawn(async move { Downloader::new(&client, reporter).download(&options).await });
    tripped.notified().await;
    server.stop().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().await;
    tokio::time::timeout(Duration::from_secs(120), task)
        .await
        .expect("no hang")
        .expect("join")
        .expect("the download finishes after the restart");
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_fails_fast_and_resumes() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = data_image(dir.path());
    let snapshot = upload(&server, &image).await;

    let (reporter, tripped) = trip_at(0.4);
    let restored = dir.path().join("restored.img");
    let mut options = DownloadOptions::new(snapshot, &restored);
    options.size = Some(96 * MIB);
    options.concurrency = 4;
    let client = server.client_with(impatient());
    let first = {
        let options = options.clone();
        tokio::spawn(async move { Downloader::new(&client, reporter).download(&options).await })
    };
    tripped.notified().await;
    server.stop().await;
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(60), first)
        .await
        .expect("no hang")
        .expect("join")
        .expect_err("the server is gone");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails promptly"
    );
    let DownloadError::Interrupted { saved, total, .. } = &error else {
        panic!("not an interruption: {error}");
    };
    assert!(*saved > 0 && *saved < *total, "{saved} of {total}");
    assert!(
        error
            .to_string()
            .contains("run the same command again to resume")
    );
    assert!(
        !restored.exists(),
        "no half-written output under the final name"
    );
    assert!(with_suffix(&restored, PARTIAL_SUFFIX).exists());
    assert!(with_suffix(&restored, RESUME_SUFFIX).exists());

    server.restart().await;
    let summary = Downloader::new(&server.client(), Reporter::silent())
        .download(&options)
        .await
        .expect("the second run finishes");
    assert!(summary.blocks_resumed >= *saved, "{summary:?}");
    assert_eq!(summary.blocks_fetched + summary.blocks_resumed, 192);
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));
    assert!(!with_suffix(&restored, RESUME_SUFFIX).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_upload_fails_fast_and_resumes() {
    let mut server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = data_image(dir.path());
    let (reporter, tripped) = trip_at(0.3);
    let client = server.client_with(impatient());
    let mut options = UploadOptions::new(&image);
    options.concurrency = 4;
    options.resume_state = Some(resume_state_for(&image));
    let task = {
        let options = options.clone();
        tokio::spawn(async move { Uploader::new(&client, reporter).upload(&options).await })
    };
    tripped.notified().await;
    server.stop().await;
    let error = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("no hang")
        .expect("join")
        .expect_err("the server is gone");
    let UploadError::Interrupted { snapshot, .. } = &error else {
        panic!("not an interruption: {error}");
    };
    let message = error.to_string();
    assert!(
        message.contains("run the same command again to resume"),
        "{message}"
    );
    assert!(message.contains("after 3 attempts"), "{message}");
    assert!(resume_state_for(&image).exists());

    // The next run continues the same snapshot and sends only what is missing.
    server.restart().await;
    let summary = Uploader::new(&server.client(), Reporter::silent())
        .upload(&options)
        .await
        .expect("second run");
    assert_eq!(&summary.snapshot, snapshot);
    assert!(summary.blocks_resumed > 0, "{summary:?}");
    assert!(summary.blocks_sent < 192, "{summary:?}");
    // Each block is counted once: sent now, or sent by the first run (issue 13, item 9).
    assert_eq!(
        summary.blocks_sent + summary.blocks_resumed,
        192,
        "{summary:?}"
    );
    assert_eq!(summary.unchanged_blocks_skipped, 0, "{summary:?}");
    assert!(!resume_state_for(&image).exists());

    let restored = dir.path().join("restored.img");
    let mut download = DownloadOptions::new(summary.snapshot, &restored);
    download.size = Some(96 * MIB);
    Downloader::new(&server.client(), Reporter::silent())
        .download(&download)
        .await
        .expect("download");
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));
}

/// A resume log naming a pending snapshot that no longer exists, with `blocks` recorded.
fn lost_log(image: &Path, blocks: u32) -> SnapshotId {
    let lost = SnapshotId::parse("snap-0123456789abcdef0").expect("id");
    let header = Manifest::new(
        lost.clone(),
        VolumeSize::from_gib(1).expect("size"),
        8 * MIB,
    );
    let mut log = ManifestLog::create(&resume_state_for(image), &header).expect("log");
    for index in 0..blocks {
        log.append(&[(BlockIndex::new(index), ChunkDigest::of(b"x"))])
            .expect("append");
    }
    lost
}

/// Issue 13, item 3: resuming into a deleted snapshot used to retry for 25 s and then start
/// over silently. Now the first write fails at once, and the upload says what happened and
/// starts over only when asked (or when the log recorded nothing, so nothing is lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_log_naming_a_lost_snapshot_stops_or_starts_over_when_asked() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("small.img");
    generate(&image, 8 * MIB, &[(0..16, Fill::Random(3))]);
    let state = resume_state_for(&image);
    let lost = lost_log(&image, 1);
    let mut options = UploadOptions::new(&image);
    options.resume_state = Some(state.clone());

    // The default retry policy: a lost snapshot must not be retried.
    let started = Instant::now();
    let error = Uploader::new(&server.client(), Reporter::silent())
        .upload(&options)
        .await
        .expect_err("refuses to start over on its own");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails at once, not after retries: {:?}",
        started.elapsed()
    );
    let UploadError::ResumeLost {
        snapshot, saved, ..
    } = &error
    else {
        panic!("not ResumeLost: {error}");
    };
    assert_eq!((snapshot, *saved), (&lost, 1));
    let message = error.to_string();
    assert!(
        message.contains("deleted or expired") && message.contains("--restart"),
        "{message}"
    );
    assert!(state.exists(), "the log is kept until the user decides");

    options.restart = true;
    let summary = Uploader::new(&server.client(), Reporter::silent())
        .upload(&options)
        .await
        .expect("starts over when asked");
    assert_ne!(summary.snapshot, lost);
    assert_eq!((summary.blocks_sent, summary.blocks_resumed), (16, 0));
    assert!(!state.exists());

    // A log that recorded nothing: starting over loses nothing, and the summary says so.
    let lost = lost_log(&image, 0);
    options.restart = false;
    let started = Instant::now();
    let summary = Uploader::new(&server.client(), Reporter::silent())
        .upload(&options)
        .await
        .expect("starts over");
    assert_eq!(summary.abandoned.as_ref(), Some(&lost));
    assert_eq!((summary.blocks_sent, summary.blocks_resumed), (16, 0));
    assert!(
        summary.elapsed >= started.elapsed().mul_f64(0.5),
        "the summary reports the whole run's time: {:?} of {:?}",
        summary.elapsed,
        started.elapsed()
    );
}

/// Issue 13, item 8: a stop request (Ctrl-C) saves the blocks already written, so even an
/// early interrupt resumes (progress used to be recorded only once a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_download_saves_its_progress() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = data_image(dir.path());
    let snapshot = upload(&server, &image).await;

    let (reporter, tripped) = trip_at(0.1);
    let restored = dir.path().join("restored.img");
    let stop = StopSignal::new();
    let mut options = DownloadOptions::new(snapshot, &restored);
    options.size = Some(96 * MIB);
    options.concurrency = 4;
    options.stop = Some(stop.clone());
    let client = server.client();
    let first = {
        let options = options.clone();
        tokio::spawn(async move { Downloader::new(&client, reporter).download(&options).await })
    };
    tripped.notified().await;
    stop.stop();
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .expect("no hang")
        .expect("join")
        .expect_err("stopped");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stops promptly: {:?}",
        started.elapsed()
    );
    let DownloadError::Interrupted {
        saved,
        total,
        cause,
    } = &error
    else {
        panic!("not an interruption: {error}");
    };
    assert!(matches!(**cause, DownloadError::Stopped), "{error}");
    assert!(*saved >= 19 && *saved < *total, "{saved} of {total}");
    let (_, _, recorded) =
        ManifestLog::reopen(&with_suffix(&restored, RESUME_SUFFIX)).expect("log");
    assert_eq!(
        recorded.len() as u64,
        *saved,
        "every saved block is in the log"
    );

    options.stop = None;
    let summary = Downloader::new(&server.client(), Reporter::silent())
        .download(&options)
        .await
        .expect("resumes");
    assert_eq!(summary.blocks_resumed, *saved);
    assert_eq!(summary.blocks_fetched + summary.blocks_resumed, 192);
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));
}
