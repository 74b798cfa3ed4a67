//! The `strata` binary end to end: `strata serve` in a child process, driven by
//! `strata upload/download/verify/diff/nbd` with credentials from the environment, checking
//! stdout, stderr and exit codes.
//!
//! Cargo only provides the path of binaries of the test's own package, so the binary is
//! looked up next to the test executable (`target/<profile>/strata`, built by
//! `cargo build -p strata`); without it the tests fail, naming it.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::harness::{KEY, SECRET};
use super::images::{BLOCK, Fill, MIB, generate, modified_copy, sha256_file};

pub(super) fn strata_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let binary = profile_dir.join("strata");
    if binary.is_file() {
        Some(binary)
    } else {
        super::harness::required(&format!(
            "the strata binary is not built ({} missing; run cargo build -p strata)",
            binary.display()
        ));
        None
    }
}

/// `strata serve` on a free port, killed on drop.
struct ServeProcess {
    child: Child,
    endpoint: String,
}

impl ServeProcess {
    fn start(binary: &Path, data_dir: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(data_dir)
            .env("STRATA_ROOT_ACCESS_KEY_ID", KEY)
            .env("STRATA_ROOT_SECRET_ACCESS_KEY", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("strata serve starts");
        // Wait for the "serving" line.
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        assert!(line.contains("serving"), "unexpected: {line}");
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a client command with credentials in the environment and empty AWS config files
/// (so whatever the machine has in ~/.aws does not leak in).
pub(super) fn strata(binary: &Path, args: &[&str]) -> Output {
    let empty = std::env::temp_dir().join("strata-e2e-empty-aws-config");
    if !empty.exists() {
        std::fs::write(&empty, "").expect("write");
    }
    Command::new(binary)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("strata runs")
}

pub(super) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

#[test]
fn the_binary_uploads_downloads_verifies_and_diffs() {
    let Some(binary) = strata_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ServeProcess::start(&binary, &dir.path().join("data"));
    let endpoint = server.endpoint.as_str();
    let image = dir.path().join("disk.img");
    let info = generate(
        &image,
        20 * MIB + 5,
        &[(0..10, Fill::Random(1)), (30..41, Fill::Repeated(2))],
    );
    let image_arg = image.to_str().expect("utf-8");

    let upload = strata(
        &binary,
        &["upload", image_arg, "--endpoint", endpoint, "--quiet"],
    );
    assert!(upload.status.success(), "{}", text(&upload.stderr));
    let parent = text(&upload.stdout);
    assert!(
        parent.starts_with("snap-"),
        "stdout is the snapshot id: {parent}"
    );
    assert!(dir.path().join("disk.img.strata-manifest").is_file());

    // Download with the manifest: the original length, identical.
    let restored = dir.path().join("restored.img");
    let restored_arg = restored.to_str().expect("utf-8");
    let download = strata(
        &binary,
        &[
            "download",
            &parent,
            restored_arg,
            "--endpoint",
            endpoint,
            "--manifest",
            &format!("{image_arg}.strata-manifest"),
        ],
    );
    assert!(download.status.success(), "{}", text(&download.stderr));
    assert!(
        text(&download.stderr).starts_with("downloaded"),
        "{}",
        text(&download.stderr)
    );
    assert_eq!(sha256_file(&restored, None), sha256_file(&image, None));

    // Again: refused, one line, exit 2 (a usage error: --force would overwrite).
    let again = strata(
        &binary,
        &["download", &parent, restored_arg, "--endpoint", endpoint],
    );
    assert_eq!(again.status.code(), Some(2));
    let stderr = text(&again.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.lines().count() == 1,
        "{stderr}"
    );

    let verify = strata(
        &binary,
        &["verify", &parent, image_arg, "--endpoint", endpoint],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert!(
        text(&verify.stdout).starts_with("ok: 21 blocks"),
        "{}",
        text(&verify.stdout)
    );

    // Change two blocks; incremental upload via the manifest; diff; verify finds the change.
    let next = dir.path().join("next.img");
    modified_copy(
        &image,
        &next,
        &info,
        &[(2, Fill::Random(9)), (35, Fill::Hole)],
    );
    let next_arg = next.to_str().expect("utf-8");
    let mismatch = strata(
        &binary,
        &["verify", &parent, next_arg, "--endpoint", endpoint],
    );
    assert_eq!(mismatch.status.code(), Some(3));
    assert!(
        text(&mismatch.stdout).contains("block 2: differs"),
        "{}",
        text(&mismatch.stdout)
    );

    let child = strata(
        &binary,
        &[
            "upload",
            next_arg,
            "--parent",
            &parent,
            "--parent-manifest",
            &format!("{image_arg}.strata-manifest"),
            "--endpoint",
            endpoint,
        ],
    );
    assert!(child.status.success(), "{}", text(&child.stderr));
    let child_id = text(&child.stdout);
    assert!(
        text(&child.stderr).contains("2 blocks sent"),
        "{}",
        text(&child.stderr)
    );

    let diff = strata(
        &binary,
        &["diff", &parent, &child_id, "--endpoint", endpoint, "--json"],
    );
    assert_eq!(diff.status.code(), Some(3), "{}", text(&diff.stderr));
    let json = text(&diff.stdout);
    assert!(json.contains("\"changed_blocks\": 2"), "{json}");
    assert!(
        json.contains(&format!("\"changed_bytes\": {}", 2 * BLOCK)),
        "{json}"
    );
    let table = strata(
        &binary,
        &["diff", &parent, &child_id, "--endpoint", endpoint],
    );
    assert!(
        text(&table.stdout).ends_with("2 blocks (1.00 MiB) differ in 2 ranges"),
        "{}",
        text(&table.stdout)
    );
}

#[test]
fn the_binary_fails_clearly_and_fast_without_a_server() {
    let Some(binary) = strata_binary() else {
        return;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let started = Instant::now();
    let output = strata(
        &binary,
        &[
            "download",
            "snap-0123456789abcdef0",
            "/tmp/never-written.img",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--max-attempts",
            "2",
        ],
    );
    // Nothing listens there: not worth retrying (issue 13, item 2).
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        output.status.code(),
        Some(1),
        "refused: {}",
        text(&output.stderr)
    );
    let stderr = text(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ListSnapshotBlocks (snap-0123456789abcdef0) failed: cannot reach the endpoint: connection refused"),
        "{stderr}"
    );

    let help = Command::new(&binary).arg("--help").output().expect("help");
    let help = text(&help.stdout);
    for command in ["serve", "upload", "download", "diff", "verify", "nbd"] {
        assert!(help.contains(command), "{help}");
    }
    let upload_help = Command::new(&binary)
        .args(["upload", "--help"])
        .output()
        .expect("help");
    assert!(text(&upload_help.stdout).contains("Examples:"));
}

/// `strata verify --all` scrubs the server: clean, then a flipped bit in a segment file is
/// reported with its snapshot and block (exit 3, JSON for scripts), and gone once the
/// image is uploaded again.
#[test]
fn verify_all_scrubs_the_server_and_names_what_rotted() {
    let Some(binary) = strata_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let server = ServeProcess::start(&binary, &data_dir);
    let endpoint = server.endpoint.as_str();
    let image = dir.path().join("disk.img");
    generate(&image, 4 * MIB, &[(0..8, Fill::Random(5))]);
    let image_arg = image.to_str().expect("utf-8");
    let upload = strata(
        &binary,
        &["upload", image_arg, "--endpoint", endpoint, "--quiet"],
    );
    assert!(upload.status.success(), "{}", text(&upload.stderr));
    let snapshot = text(&upload.stdout);

    let clean = strata(&binary, &["verify", "--all", "--endpoint", endpoint]);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));
    let summary = text(&clean.stdout);
    assert!(
        summary.starts_with("checked 8 chunks (4.0 MiB)"),
        "{summary}"
    );
    assert!(summary.ends_with("everything is intact"), "{summary}");

    // Flip a bit of block 3's stored copy, found by its bytes in the segment files.
    let start = usize::try_from(3 * BLOCK).expect("offset");
    let block = std::fs::read(&image).expect("image")[start..start + 4096].to_vec();
    let segments = data_dir.join("chunks/segments");
    let (path, offset) = std::fs::read_dir(&segments)
        .expect("segments")
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let bytes = std::fs::read(&path).ok()?;
            let offset = bytes.windows(block.len()).position(|w| w == block)?;
            Some((path, offset))
        })
        .next()
        .expect("block 3 is in a segment");
    let mut bytes = std::fs::read(&path).expect("segment");
    bytes[offset + 100] ^= 0x10;
    std::fs::write(&path, &bytes).expect("rot");

    let found = strata(
        &binary,
        &[
            "verify",
            "--all",
            "--rate-mib",
            "0",
            "--json",
            "--endpoint",
            endpoint,
        ],
    );
    assert_eq!(found.status.code(), Some(3), "{}", text(&found.stderr));
    let report: serde_json::Value = serde_json::from_slice(&found.stdout).expect("JSON");
    let findings = report["chunk_findings"].as_array().expect("findings");
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["fault"], "damaged");
    assert_eq!(
        findings[0]["snapshots"],
        serde_json::json!([{"snapshot": snapshot, "blocks": [3]}])
    );

    let again = strata(
        &binary,
        &["upload", image_arg, "--endpoint", endpoint, "--quiet"],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    let repaired = strata(&binary, &["verify", "--all", "--endpoint", endpoint]);
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}",
        text(&repaired.stdout)
    );
    let verify = strata(
        &binary,
        &["verify", &snapshot, image_arg, "--endpoint", endpoint],
    );
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stdout));
}
