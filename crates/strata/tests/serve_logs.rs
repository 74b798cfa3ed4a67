//! `strata serve`'s log lines, read from a real server process: JSON with `--log-format
//! json` (start line with version and commit, configuration summary without secrets,
//! request lines with client, account, key, method, path, status, bytes and duration, the
//! GC line as fields, a final "stopped"), and text without colour codes when stderr is not
//! a terminal. Also `strata --version`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "AKIDLOGTEST";
const SECRET: &str = "log-test-secret-never-logged";

/// `strata serve` with stderr in a file, on a port of its own choosing.
struct Serve {
    child: Child,
    addr: SocketAddr,
}

impl Serve {
    fn start(dir: &Path, args: &[&str]) -> Self {
        let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--gc-interval-secs",
                "0",
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(args)
            .env("STRATA_ROOT_ACCESS_KEY_ID", KEY)
            .env("STRATA_ROOT_SECRET_ACCESS_KEY", SECRET)
            .env_remove("RUST_LOG")
            .env_remove("STRATA_CONFIG")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("strata serve starts");
        // "Strata is serving the EBS direct APIs on http://127.0.0.1:PORT (data in …)"
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the banner");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self { child, addr }
    }

    /// SIGTERM, as systemd stops a service, and wait (at most 30 s) for a clean exit.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "strata serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "strata serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // Only when a test failed before `stop`.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request without a signature; the status code.
fn unsigned_get(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// A client command against the server, signed with the root key.
fn strata(addr: SocketAddr, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .args(["--endpoint", &format!("http://{addr}")])
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env_remove("STRATA_ENDPOINT")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("strata runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn field<'a>(line: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    &line[name]
}

fn message(line: &serde_json::Value) -> &str {
    field(line, "message").as_str().unwrap_or("")
}

#[test]
fn json_logs_carry_start_configuration_requests_and_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Serve::start(dir.path(), &["--log-format", "json"]);
    let addr = server.addr;
    let path = "/snapshots/snap-0123456789abcdef0/blocks";
    assert_eq!(unsigned_get(addr, path), 403);
    strata(addr, &["snapshots", "list"]);
    strata(addr, &["gc"]);
    server.stop();

    let text = std::fs::read_to_string(dir.path().join("stderr")).expect("logs");
    assert!(!text.contains(SECRET), "a secret in the logs:\n{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in the logs:\n{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    for line in &lines {
        assert!(field(line, "timestamp").is_string(), "{line}");
        assert!(field(line, "level").is_string(), "{line}");
    }

    let first = &lines[0];
    assert_eq!(message(first), "strata starting", "{first}");
    assert_eq!(field(first, "version"), env!("CARGO_PKG_VERSION"));
    let commit = field(first, "commit").as_str().expect("commit");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    let config = lines
        .iter()
        .find(|line| message(line) == "configuration")
        .expect("a configuration line");
    assert_eq!(field(config, "listen"), "127.0.0.1:0");
    assert_eq!(
        field(config, "data_dir").as_str(),
        dir.path().join("data").to_str()
    );
    assert_eq!(field(config, "max_connections"), 1024);
    assert_eq!(field(config, "body_budget_mib"), 256);
    assert_eq!(field(config, "gc_interval_secs"), 0);
    assert_eq!(message(lines.last().expect("lines")), "stopped");

    let requests: Vec<&serde_json::Value> =
        lines.iter().filter(|l| message(l) == "request").collect();
    let unsigned = requests
        .iter()
        .find(|l| field(l, "path") == path)
        .expect("the unsigned request's line");
    let client = field(unsigned, "client").as_str().expect("client");
    assert!(client.starts_with("127.0.0.1:"), "{unsigned}");
    assert_eq!(field(unsigned, "method"), "GET");
    assert_eq!(field(unsigned, "operation"), "ListSnapshotBlocks");
    assert_eq!(field(unsigned, "snapshot"), "snap-0123456789abcdef0");
    assert_eq!(field(unsigned, "status"), 403);
    assert_eq!(field(unsigned, "account"), "-");
    assert_eq!(field(unsigned, "access_key_id"), "-");
    assert_eq!(field(unsigned, "bytes_in"), 0);
    assert!(field(unsigned, "bytes_out").as_u64().is_some_and(|n| n > 0));
    assert!(
        field(unsigned, "span")["request_id"].is_string(),
        "{unsigned}"
    );
    for line in &requests {
        let ms = field(line, "duration_ms").as_f64().expect("a number");
        assert!(ms >= 0.0, "{line}");
        // Microsecond precision: at most three decimals as printed.
        let printed = field(line, "duration_ms").to_string();
        let decimals = printed.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{printed}");
    }
    let signed = requests
        .iter()
        .find(|l| field(l, "operation") == "AdminListSnapshots")
        .expect("the admin request's line");
    assert_eq!(field(signed, "account"), "000000000000");
    assert_eq!(field(signed, "access_key_id"), KEY);
    assert_eq!(field(signed, "status"), 200);
    assert_eq!(field(signed, "path"), "/_strata/v1/snapshots");

    let gc = lines
        .iter()
        .find(|l| message(l) == "garbage collection finished")
        .expect("the GC line");
    assert_eq!(field(gc, "bytes_freed"), 0, "{gc}");
    assert_eq!(field(gc, "chunks_deleted"), 0, "{gc}");
    assert!(!text.contains("GcReport"), "{text}");
}

#[test]
fn text_logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Serve::start(dir.path(), &[]);
    assert_eq!(unsigned_get(server.addr, "/snapshots"), 404);
    server.stop();
    let text = std::fs::read_to_string(dir.path().join("stderr")).expect("logs");
    assert!(!text.contains('\u{1b}'), "colour codes:\n{text}");
    assert!(!text.contains(SECRET), "a secret in the logs:\n{text}");
    let request = text
        .lines()
        .find(|l| l.contains(" request ") && l.contains("path=/snapshots"))
        .unwrap_or_else(|| panic!("no request line:\n{text}"));
    for expected in [
        "client=127.0.0.1:",
        "account=- ",
        "method=GET",
        "status=404",
        "bytes_in=0",
        "duration_ms=",
    ] {
        assert!(request.contains(expected), "{expected} in {request}");
    }
    assert!(text.contains("strata starting"), "{text}");
    assert!(
        text.lines().last().is_some_and(|l| l.ends_with("stopped")),
        "{text}"
    );
}

#[test]
fn version_names_the_release_and_the_commit() {
    let output = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--version")
        .output()
        .expect("strata runs");
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).expect("utf-8");
    // The commit the binary was built from is HEAD (build.rs rebuilds when HEAD moves);
    // without git the build says `unknown`.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = match std::env::var("STRATA_GIT_COMMIT") {
        Ok(given) if !given.trim().is_empty() => given,
        _ => head.unwrap_or_else(|| "unknown".to_owned()),
    };
    assert_eq!(
        printed,
        format!("strata {} (commit {commit})\n", env!("CARGO_PKG_VERSION"))
    );
}
