//! End to end with third-party clients against a server on a real socket: coldsnap
//! (upload --wait, download, wait), boto3 and the aws CLI (EC2 waiter, tags, deletion).
//! `.ci/run` installs them; on a developer machine without them these tests say so and
//! pass, but under CI (`CI` set) a missing client is a failure, never a silent skip.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::harness::{Harness, ROOT_KEY, ROOT_SECRET, SocketHarness, block};
use crate::sdk::{complete, put, start, start_with_timeout};

/// Whether `program` runs; its absence fails the test, here as under CI (no test passes
/// without having run).
fn available(program: &str, probe: &[&str]) -> bool {
    let found = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{program} is not installed: this test needs it (`bash ci/test` installs it)"
    );
    found
}

/// A command with the server's endpoint credentials in its environment.
fn client_command(program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env("AWS_ACCESS_KEY_ID", ROOT_KEY)
        .env("AWS_SECRET_ACCESS_KEY", ROOT_SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN");
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().expect("client runs");
    assert!(
        output.status.success(),
        "{:?} failed: {}\n{}",
        command,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A 48 MiB + 100 KiB sparse image: random, repeated and zero regions, a partial last block.
fn make_image(path: &Path) -> Vec<u8> {
    let mut image = vec![0u8; 48 * 1024 * 1024 + 100 * 1024];
    for (n, region) in image.chunks_mut(524_288).enumerate() {
        match n % 5 {
            0 | 1 => {
                let content = block(n as u64 + 1);
                region.copy_from_slice(&content[..region.len()]);
            }
            2 => {
                let content = block(7);
                region.copy_from_slice(&content[..region.len()]);
            }
            _ => {} // zeros
        }
    }
    std::fs::write(path, &image).expect("write image");
    image
}

fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

async fn socket() -> SocketHarness {
    Harness::new().into_socket().await
}

#[tokio::test]
async fn coldsnap_uploads_waits_and_downloads() {
    if !available("coldsnap", &["--help"]) {
        return;
    }
    let server = socket().await;
    let endpoint = format!("http://{}", server.addr());
    let dir = tempfile::tempdir().expect("tempdir");
    let image_path = dir.path().join("disk.img");
    let image = make_image(&image_path);

    let mut upload = client_command("coldsnap");
    upload
        .args([
            "--region",
            "us-east-1",
            "--endpoint",
            &endpoint,
            "upload",
            "--no-progress",
            "--wait",
        ])
        .arg(&image_path);
    let upload = tokio::task::spawn_blocking(move || run(upload))
        .await
        .expect("upload");
    let id = String::from_utf8_lossy(&upload.stdout).trim().to_owned();
    assert!(id.starts_with("snap-"), "coldsnap printed {id:?}");

    let out = dir.path().join("out.img");
    let mut download = client_command("coldsnap");
    download
        .args([
            "--region",
            "us-east-1",
            "--endpoint",
            &endpoint,
            "download",
            "--no-progress",
            &id,
        ])
        .arg(&out);
    tokio::task::spawn_blocking(move || run(download))
        .await
        .expect("download");
    let downloaded = std::fs::read(&out).expect("downloaded image");
    // coldsnap sizes the output to the whole volume (1 GiB); the rest must be zeros.
    assert_eq!(downloaded.len(), 1 << 30);
    assert_eq!(
        sha256(&downloaded[..image.len()]),
        sha256(&image),
        "identical SHA-256"
    );
    assert!(downloaded[image.len()..].iter().all(|b| *b == 0));
    drop(server.stop().await);
}

#[tokio::test]
async fn coldsnap_wait_follows_the_snapshot_state() {
    if !available("coldsnap", &["--help"]) {
        return;
    }
    let server = socket().await;
    let endpoint = format!("http://{}", server.addr());
    let client = server.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 0, &block(1)).await;

    let wait = |id: &str, attempts: &str| {
        let mut command = client_command("coldsnap");
        command.args([
            "--region",
            "us-east-1",
            "--endpoint",
            &endpoint,
            "wait",
            "--seconds-between-attempts",
            "1",
            "--successes-required",
            "2",
            "--max-attempts",
            attempts,
            id,
        ]);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command.spawn().expect("coldsnap wait starts")
    };
    // Pending: the wait does not finish...
    let mut waiting = wait(&id, "60");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        waiting.try_wait().expect("status").is_none(),
        "wait returned while pending"
    );
    // ...until the snapshot completes.
    complete(&client, &id, 1, None).await;
    let status = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .expect("join")
        .expect("wait output");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    // A snapshot that timed out (error) makes the wait fail at once.
    let abandoned = start_with_timeout(&client, 10).await;
    server.clock.advance(Duration::from_secs(11 * 60));
    let failing = wait(&abandoned, "30");
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || failing.wait_with_output())
        .await
        .expect("join")
        .expect("wait output");
    assert!(
        !output.status.success(),
        "wait succeeded on an errored snapshot"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop(server.stop().await);
}

#[tokio::test]
async fn boto3_and_the_aws_cli_drive_the_lifecycle() {
    if !available("python3", &["-c", "import boto3"]) {
        return;
    }
    let server = socket().await;
    let endpoint = format!("http://{}", server.addr());
    let client = server.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 2, &block(2)).await;
    complete(&client, &id, 1, None).await;
    let script = r#"
import sys, boto3
endpoint, snap = sys.argv[1], sys.argv[2]
ec2 = boto3.client("ec2", endpoint_url=endpoint)
ebs = boto3.client("ebs", endpoint_url=endpoint)
ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1, "MaxAttempts": 5})
ec2.create_tags(Resources=[snap], Tags=[{"Key": "backup", "Value": "nightly"}])
found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:backup", "Values": ["night*"]}])["Snapshots"]
assert [s["SnapshotId"] for s in found] == [snap], found
assert found[0]["State"] == "completed" and found[0]["Progress"] == "100%", found
blocks = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
assert [b["BlockIndex"] for b in blocks] == [2], blocks
data = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=2, BlockToken=blocks[0]["BlockToken"])["BlockData"].read()
assert len(data) == 524288
paginator = ec2.get_paginator("describe_snapshots")
assert sum(len(p["Snapshots"]) for p in paginator.paginate(PaginationConfig={"PageSize": 5})) == 1
ec2.delete_snapshot(SnapshotId=snap)
try:
    ec2.describe_snapshots(SnapshotIds=[snap])
    raise SystemExit("deleted snapshot still described")
except ec2.exceptions.ClientError as e:
    assert e.response["Error"]["Code"] == "InvalidSnapshot.NotFound", e.response
print("boto3 ok")
"#;
    let mut python = client_command("python3");
    python.args(["-c", script, &endpoint, &id]);
    let output = tokio::task::spawn_blocking(move || run(python))
        .await
        .expect("python");
    assert!(String::from_utf8_lossy(&output.stdout).contains("boto3 ok"));

    if available("aws", &["--version"]) {
        let other = start(&client, 1, None).await;
        complete(&client, &other, 0, None).await;
        let aws = |args: &[&str]| {
            let mut command = client_command("aws");
            command.args(args).args(["--endpoint-url", &endpoint]);
            command
        };
        let waited = aws(&[
            "ec2",
            "wait",
            "snapshot-completed",
            "--snapshot-ids",
            &other,
        ]);
        tokio::task::spawn_blocking(move || run(waited))
            .await
            .expect("aws wait");
        let described = aws(&[
            "ec2",
            "describe-snapshots",
            "--query",
            "Snapshots[].State",
            "--output",
            "text",
        ]);
        let output = tokio::task::spawn_blocking(move || run(described))
            .await
            .expect("aws describe");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "completed");
    }
    drop(server.stop().await);
}
