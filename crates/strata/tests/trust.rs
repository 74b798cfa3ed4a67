//! Transport, keys and files of `strata serve`, as a real process:
//!
//! * TLS (`--tls-cert --tls-key`): a test CA and server certificates are made at test time
//!   (rcgen); aws-sdk-ebs, boto3 and the aws CLI talk to the server verifying that CA (and
//!   fail without it); SIGHUP swaps the certificate for new connections and a failed
//!   reload keeps the old one.
//! * Files: the data directory is 0700 and every file in it 0600; a key file others may
//!   read stops the start, naming the file and the chmod that fixes it.
//! * Scoped keys of the config file, added and revoked by SIGHUP.
//!
//! boto3 and the aws CLI are required (a test without them fails, naming them); `ci/test`
//! installs them.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ebs::primitives::ByteStream;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls;

const KEY: &str = "AKIDTLSTEST";
const SECRET: &str = "tls-test-secret";

/// A CA able to sign server certificates for 127.0.0.1.
struct TestCa {
    pem: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key"))
            .expect("self-signed CA");
        Self {
            pem: issuer.as_ref().pem(),
            issuer,
        }
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
    fn server_cert(&self) -> (String, String) {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params
            .distinguished_name
            .push(DnType::CommonName, "strata test server");
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.pem).expect("write CA");
        path.to_path_buf()
    }
}

/// Write a key file readable by its owner only (the server refuses others).
fn write_key(path: &Path, pem: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, pem).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// `strata serve` over TLS, stderr in a file, on a port of its own choosing.
struct TlsServe {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

/// `strata serve` with `args`, the test's root keys, and the data directory `dir/data`.
fn serve_command(dir: &Path, args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
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
        .env_remove("STRATA_CONFIG")
        .env_remove("RUST_LOG");
    command
}

impl TlsServe {
    fn start(dir: &Path, ca: &TestCa) -> Self {
        let (cert, key) = ca.server_cert();
        std::fs::write(dir.join("server.crt"), cert).expect("write cert");
        write_key(&dir.join("server.key"), &key);
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        Self::spawn(
            dir,
            &[
                "--tls-cert".as_ref(),
                cert.as_os_str(),
                "--tls-key".as_ref(),
                key.as_os_str(),
            ],
            "https://",
        )
    }

    /// Start `strata serve` with `args` and read its address (after `scheme`) from the
    /// banner.
    fn spawn(dir: &Path, args: &[&std::ffi::OsStr], scheme: &str) -> Self {
        let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let mut child = serve_command(dir, args)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("strata serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the banner");
        let addr = line
            .split(scheme)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no https address in {line:?}; stderr: {}",
                    std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
                )
            });
        Self {
            child,
            addr,
            dir: dir.to_path_buf(),
        }
    }

    fn endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    fn http_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(mut self) {
        self.signal("-TERM");
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

impl Drop for TlsServe {
    fn drop(&mut self) {
        // Only when a test failed before `stop`: the child is ours, by its PID.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An EBS client that trusts `ca_pem` only.
fn ebs_client(endpoint: &str, ca_pem: &str) -> aws_sdk_ebs::Client {
    ebs_client_as(endpoint, Some(ca_pem), KEY, SECRET)
}

/// An EBS client with these keys, trusting `ca_pem` only (or, without it, for http).
fn ebs_client_as(
    endpoint: &str,
    ca_pem: Option<&str>,
    key: &str,
    secret: &str,
) -> aws_sdk_ebs::Client {
    let mut builder = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
    if let Some(ca_pem) = ca_pem {
        let tls = TlsContext::builder()
            .with_trust_store(TrustStore::empty().with_pem_certificate(ca_pem.as_bytes()))
            .build()
            .expect("tls context");
        builder = builder.tls_context(tls);
    }
    let http = builder.build_https();
    let config = aws_sdk_ebs::Config::builder()
        .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
        .region(aws_sdk_ebs::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_ebs::config::Credentials::new(
            key, secret, None, None, "test",
        ))
        .http_client(http)
        .retry_config(aws_sdk_ebs::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ebs::Client::from_conf(config)
}

/// The certificate a new TLS connection to `addr` is shown, verified against `ca_pem`.
async fn presented_cert(addr: SocketAddr, ca_pem: &str) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (_, session) = stream.get_ref();
    Ok(session
        .peer_certificates()
        .and_then(|certs| certs.first())
        .map(|cert| cert.to_vec())
        .unwrap_or_default())
}

fn block(seed: u8) -> Vec<u8> {
    (0..524_288u32)
        .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
        .collect()
}

/// aws-sdk-ebs over TLS, trusting the test CA: a whole snapshot round trip. A client
/// trusting another CA, and plain HTTP to the TLS port, get nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sdk_ebs_verifies_the_test_ca() {
    use base64::Engine;
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("strata test CA");
    let server = TlsServe::start(dir.path(), &ca);
    let ebs = ebs_client(&server.endpoint(), &ca.pem);

    let snapshot = ebs
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect("StartSnapshot over TLS")
        .snapshot_id
        .expect("id");
    let data = block(5);
    let digest = sha2::Sha256::digest(&data);
    let b64 = base64::engine::general_purpose::STANDARD;
    ebs.put_snapshot_block()
        .snapshot_id(&snapshot)
        .block_index(2)
        .block_data(ByteStream::from(data.clone()))
        .data_length(524_288)
        .checksum(b64.encode(digest))
        .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .send()
        .await
        .expect("PutSnapshotBlock over TLS");
    ebs.complete_snapshot()
        .snapshot_id(&snapshot)
        .changed_blocks_count(1)
        .send()
        .await
        .expect("CompleteSnapshot");
    let listed = ebs
        .list_snapshot_blocks()
        .snapshot_id(&snapshot)
        .send()
        .await
        .expect("ListSnapshotBlocks");
    let token = listed.blocks()[0].block_token().expect("token").to_owned();
    let got = ebs
        .get_snapshot_block()
        .snapshot_id(&snapshot)
        .block_index(2)
        .block_token(token)
        .send()
        .await
        .expect("GetSnapshotBlock");
    let bytes = got.block_data.collect().await.expect("body").into_bytes();
    assert_eq!(bytes.as_ref(), data.as_slice());

    // A client that trusts another CA refuses the server's certificate.
    let stranger = TestCa::new("another CA");
    let refused = ebs_client(&server.endpoint(), &stranger.pem)
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect_err("an untrusted certificate");
    assert!(
        matches!(refused, aws_sdk_ebs::error::SdkError::DispatchFailure(_)),
        "{refused:?}"
    );
    assert!(presented_cert(server.addr, &stranger.pem).await.is_err());

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = tokio::task::spawn_blocking({
        let addr = server.addr;
        move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("write");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            answer
        }
    })
    .await
    .expect("plain client");
    assert!(!plain.starts_with(b"HTTP/1.1 200"), "{plain:?}");
    server.stop();
}

/// Whether `program` runs; under CI its absence fails the test.
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

fn client(program: &str, ca_bundle: Option<&Path>) -> Command {
    let mut command = Command::new(program);
    command
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_CA_BUNDLE");
    if let Some(bundle) = ca_bundle {
        command.env("AWS_CA_BUNDLE", bundle);
    }
    command
}

const BOTO3_ROUND_TRIP: &str = r#"
import base64, hashlib, sys, boto3
endpoint = sys.argv[1]
ebs = boto3.client("ebs", endpoint_url=endpoint)
snap = ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
data = bytes(range(256)) * 2048
digest = hashlib.sha256(data).digest()
ebs.put_snapshot_block(SnapshotId=snap, BlockIndex=1, BlockData=data, DataLength=524288,
                       Checksum=base64.b64encode(digest).decode(), ChecksumAlgorithm="SHA256")
ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=1)
blocks = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=1, BlockToken=blocks[0]["BlockToken"])
assert got["BlockData"].read() == data
ec2 = boto3.client("ec2", endpoint_url=endpoint)
described = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
assert described[0]["State"] == "completed", described
print(snap)
"#;

/// boto3 with `AWS_CA_BUNDLE` naming the test CA: EBS and EC2 calls over TLS. Without
/// the bundle, certificate verification fails.
#[test]
fn boto3_verifies_the_test_ca() {
    if !available("python3", &["-c", "import boto3"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("strata test CA");
    let bundle = ca.write(&dir.path().join("ca.pem"));
    let server = TlsServe::start(dir.path(), &ca);
    let output = client("python3", Some(&bundle))
        .args(["-c", BOTO3_ROUND_TRIP, &server.endpoint()])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "boto3 over TLS failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.stderr()
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("snap-"));

    let untrusted = client("python3", None)
        .args(["-c", BOTO3_ROUND_TRIP, &server.endpoint()])
        .output()
        .expect("python3 runs");
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("CERTIFICATE_VERIFY_FAILED"), "{stderr}");
    server.stop();
}

/// The aws CLI with `AWS_CA_BUNDLE`: `aws ebs start-snapshot` and `aws ec2
/// describe-snapshots` over TLS; without the bundle it fails on the certificate.
#[test]
fn aws_cli_verifies_the_test_ca() {
    if !available("aws", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("strata test CA");
    let bundle = ca.write(&dir.path().join("ca.pem"));
    let server = TlsServe::start(dir.path(), &ca);
    let endpoint = server.endpoint();
    let output = client("aws", Some(&bundle))
        .args([
            "ebs",
            "start-snapshot",
            "--volume-size",
            "1",
            "--endpoint-url",
            &endpoint,
            "--output",
            "json",
        ])
        .output()
        .expect("aws runs");
    assert!(
        output.status.success(),
        "aws ebs over TLS failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let started: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let snapshot = started["SnapshotId"].as_str().expect("id").to_owned();
    let described = client("aws", Some(&bundle))
        .args([
            "ec2",
            "describe-snapshots",
            "--snapshot-ids",
            &snapshot,
            "--endpoint-url",
            &endpoint,
            "--output",
            "json",
        ])
        .output()
        .expect("aws runs");
    assert!(
        described.status.success(),
        "aws ec2 over TLS failed: {}",
        String::from_utf8_lossy(&described.stderr)
    );
    let described: serde_json::Value = serde_json::from_slice(&described.stdout).expect("json");
    assert_eq!(described["Snapshots"][0]["SnapshotId"], snapshot.as_str());

    let untrusted = client("aws", None)
        .args([
            "ebs",
            "start-snapshot",
            "--volume-size",
            "1",
            "--endpoint-url",
            &endpoint,
        ])
        .output()
        .expect("aws runs");
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(stderr.contains("CERTIFICATE_VERIFY_FAILED"), "{stderr}");
    server.stop();
}

/// SIGHUP to the process (by its PID) after the files were replaced: a new connection is
/// shown the new certificate (signed by a second CA). A reload from a broken key file
/// fails, is logged, and the certificate in use stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_for_new_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first_ca = TestCa::new("first CA");
    let server = TlsServe::start(dir.path(), &first_ca);
    let first = presented_cert(server.addr, &first_ca.pem)
        .await
        .expect("the first certificate");

    let second_ca = TestCa::new("second CA");
    let (cert, key) = second_ca.server_cert();
    let expected = CertificateDer::from_pem_slice(cert.as_bytes())
        .expect("pem")
        .to_vec();
    std::fs::write(dir.path().join("server.crt"), &cert).expect("swap cert");
    write_key(&dir.path().join("server.key"), &key);
    // Not before the signal: the files alone change nothing.
    assert_eq!(
        presented_cert(server.addr, &first_ca.pem).await.as_deref(),
        Ok(first.as_slice())
    );
    server.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(seen) = presented_cert(server.addr, &second_ca.pem).await {
            assert_eq!(seen, expected);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new certificate after SIGHUP: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(presented_cert(server.addr, &first_ca.pem).await.is_err());
    // Requests work with the new certificate.
    ebs_client(&server.endpoint(), &second_ca.pem)
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect("StartSnapshot after the reload");

    // A broken key: the reload fails, is logged, and the second certificate stays.
    write_key(&dir.path().join("server.key"), "not a key");
    server.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("TLS reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failure logged: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.stderr().contains("server.key"),
        "{}",
        server.stderr()
    );
    assert_eq!(
        presented_cert(server.addr, &second_ca.pem).await,
        Ok(expected)
    );
    server.stop();
}

/// Every directory under `root` (and `root`) and every file in them, with its mode.
fn modes(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode() & 0o7777;
        found.push((dir.clone(), true, mode));
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let entry = entry.expect("entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                found.push((entry.path(), false, meta.permissions().mode() & 0o7777));
            }
        }
    }
    found
}

/// A fresh data directory (and its missing parent) is created 0700, and every file the
/// server writes in it, chunk segments included, is 0600, whatever the caller's umask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private_to_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The root key generated (not from the environment), so root-credentials is written.
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--gc-interval-secs",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("STRATA_ROOT_ACCESS_KEY_ID")
        .env_remove("STRATA_ROOT_SECRET_ACCESS_KEY")
        .env_remove("STRATA_CONFIG")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("strata serve starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    let (mut key, mut secret) = (String::new(), String::new());
    while !banner.contains("serving") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).expect("read") > 0, "no banner");
        if let Some(v) = line.trim().strip_prefix("aws_access_key_id = ") {
            key = v.to_owned();
        }
        if let Some(v) = line.trim().strip_prefix("aws_secret_access_key = ") {
            secret = v.to_owned();
        }
        banner = line;
    }
    let addr: SocketAddr = banner
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok())
        .expect("address");
    let server = TlsServe {
        child,
        addr,
        dir: dir.path().to_path_buf(),
    };
    // One block stored, so the chunk store has written its segment and index.
    let ebs = ebs_client_as(&server.http_endpoint(), None, &key, &secret);
    let snapshot = ebs
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect("StartSnapshot")
        .snapshot_id
        .expect("id");
    {
        use base64::Engine;
        use sha2::Digest;
        let data = block(1);
        ebs.put_snapshot_block()
            .snapshot_id(&snapshot)
            .block_index(0)
            .checksum(base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&data)))
            .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .data_length(524_288)
            .block_data(ByteStream::from(data))
            .send()
            .await
            .expect("PutSnapshotBlock");
    }
    ebs.complete_snapshot()
        .snapshot_id(&snapshot)
        .changed_blocks_count(1)
        .send()
        .await
        .expect("CompleteSnapshot");
    server.stop();

    let found = modes(&dir.path().join("data"));
    let names: Vec<String> = found
        .iter()
        .map(|(path, _, _)| path.display().to_string())
        .collect();
    for expected in ["root-credentials", "metadata.redb", ".seg"] {
        assert!(
            names.iter().any(|name| name.ends_with(expected)),
            "no {expected} in {names:?}"
        );
    }
    for (path, is_dir, mode) in found {
        let want = if is_dir { 0o700 } else { 0o600 };
        assert_eq!(mode, want, "{} is {mode:04o}", path.display());
    }
}

/// A key file that its group or others may read stops the start (exit 1) before anything
/// is created, naming the file and the chmod that fixes it: root-credentials, the TLS key,
/// and a config file holding secrets. A config file without secrets may be world-readable.
#[test]
fn readable_key_files_stop_the_start() {
    use std::os::unix::fs::PermissionsExt;
    let refused = |dir: &Path, args: &[&std::ffi::OsStr], file: &Path| {
        let output = serve_command(dir, args)
            .env_remove("STRATA_ROOT_ACCESS_KEY_ID")
            .env_remove("STRATA_ROOT_SECRET_ACCESS_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("strata serve runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("chmod 600 {}", file.display())),
            "{stderr}"
        );
        assert!(stderr.contains("readable by"), "{stderr}");
    };
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };

    // root-credentials written by an earlier version or copied with cp: 0644.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    let credentials = data.join("root-credentials");
    std::fs::write(
        &credentials,
        "aws_access_key_id=AK\naws_secret_access_key=SK\n",
    )
    .expect("write");
    chmod(&credentials, 0o644);
    refused(dir.path(), &[], &credentials);
    assert!(!data.join("metadata.redb").exists(), "nothing was created");
    chmod(&credentials, 0o600);

    // The TLS key, group-readable.
    let ca = TestCa::new("CA");
    let (cert, key) = ca.server_cert();
    let cert_path = dir.path().join("server.crt");
    let key_path = dir.path().join("server.key");
    std::fs::write(&cert_path, cert).expect("cert");
    std::fs::write(&key_path, key).expect("key");
    chmod(&key_path, 0o640);
    refused(
        dir.path(),
        &[
            "--tls-cert".as_ref(),
            cert_path.as_os_str(),
            "--tls-key".as_ref(),
            key_path.as_os_str(),
        ],
        &key_path,
    );

    // A config file with an account's secret, world-readable.
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        "[[accounts]]\nid = \"111122223333\"\n[[accounts.keys]]\naccess_key_id = \"AKIDX\"\nsecret_access_key = \"sx\"\n",
    )
    .expect("config");
    chmod(&config, 0o644);
    refused(
        dir.path(),
        &["--config".as_ref(), config.as_os_str()],
        &config,
    );
}

/// Keys of the config file, scoped and added or revoked by SIGHUP to the running process:
/// a read-only key of the root account lists and reads, is refused StartSnapshot with
/// AccessDeniedException; after the file drops it and names a new key, SIGHUP makes the
/// old key unknown (UnrecognizedClientException) and the new one work. A broken file on
/// SIGHUP changes nothing and is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_revokes_scoped_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("strata.toml");
    let write_config = |keys: &str| {
        write_key(&config, keys);
    };
    write_config(
        r#"
[[accounts]]
id = "000000000000"
[[accounts.keys]]
access_key_id = "AKIDREADER"
secret_access_key = "reader-secret"
allow = ["ListSnapshotBlocks", "ListChangedBlocks", "GetSnapshotBlock", "DescribeSnapshots"]
"#,
    );
    let server = TlsServe::spawn(
        dir.path(),
        &["--config".as_ref(), config.as_os_str()],
        "http://",
    );
    let endpoint = server.http_endpoint();
    let root = ebs_client_as(&endpoint, None, KEY, SECRET);
    let snapshot = root
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect("StartSnapshot")
        .snapshot_id
        .expect("id");
    root.complete_snapshot()
        .snapshot_id(&snapshot)
        .changed_blocks_count(0)
        .send()
        .await
        .expect("CompleteSnapshot");

    let reader = ebs_client_as(&endpoint, None, "AKIDREADER", "reader-secret");
    reader
        .list_snapshot_blocks()
        .snapshot_id(&snapshot)
        .send()
        .await
        .expect("the read-only key lists");
    let refused = reader
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect_err("the read-only key may not start");
    assert!(
        format!("{refused:?}").contains("AccessDeniedException"),
        "{refused:?}"
    );

    write_config(
        r#"
[[accounts]]
id = "000000000000"
[[accounts.keys]]
access_key_id = "AKIDNEWKEY"
secret_access_key = "new-secret"
"#,
    );
    server.signal("-HUP");
    let fresh = ebs_client_as(&endpoint, None, "AKIDNEWKEY", "new-secret");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fresh.start_snapshot().volume_size(1).send().await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new key is not accepted: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revoked = reader
        .list_snapshot_blocks()
        .snapshot_id(&snapshot)
        .send()
        .await
        .expect_err("the removed key is refused");
    assert!(
        format!("{revoked:?}").contains("UnrecognizedClientException"),
        "{revoked:?}"
    );

    // A broken file: logged, and the keys in force stay.
    write_config("[[accounts]]\nid = ");
    server.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("access key reload failed") {
        assert!(
            Instant::now() < deadline,
            "no failure logged: {}",
            server.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fresh
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect("the new key still works");
    server.stop();
}

/// coldsnap (aws-sdk-rust with its default rustls client) over TLS. The Rust SDK does not
/// read `AWS_CA_BUNDLE`; its client loads the system's roots through rustls-native-certs,
/// which honours `SSL_CERT_FILE`, so that is how coldsnap is pointed at the test CA. With
/// only `AWS_CA_BUNDLE` set, coldsnap refuses the certificate.
#[test]
fn coldsnap_uploads_and_downloads_over_tls() {
    if !available("coldsnap", &["--help"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("strata test CA");
    let bundle = ca.write(&dir.path().join("ca.pem"));
    let server = TlsServe::start(dir.path(), &ca);
    let endpoint = server.endpoint();
    let image_path = dir.path().join("disk.img");
    let image: Vec<u8> = (0..4u8).flat_map(block).collect();
    std::fs::write(&image_path, &image).expect("image");

    let upload = |trust: &str| {
        let mut command = client("coldsnap", Some(&bundle));
        if trust == "SSL_CERT_FILE" {
            command.env("SSL_CERT_FILE", &bundle);
        } else {
            command.env_remove("SSL_CERT_FILE");
        }
        command
            .args(["--region", "us-east-1", "--endpoint", &endpoint])
            .args(["upload", "--no-progress", "--wait"])
            .arg(&image_path)
            .output()
            .expect("coldsnap runs")
    };
    let refused = upload("AWS_CA_BUNDLE only");
    assert!(
        !refused.status.success(),
        "coldsnap trusted the test CA without SSL_CERT_FILE"
    );
    let uploaded = upload("SSL_CERT_FILE");
    assert!(
        uploaded.status.success(),
        "coldsnap upload over TLS failed: {}",
        String::from_utf8_lossy(&uploaded.stderr)
    );
    let id = String::from_utf8_lossy(&uploaded.stdout).trim().to_owned();
    assert!(id.starts_with("snap-"), "coldsnap printed {id:?}");

    let out = dir.path().join("out.img");
    let downloaded = client("coldsnap", Some(&bundle))
        .env("SSL_CERT_FILE", &bundle)
        .args(["--region", "us-east-1", "--endpoint", &endpoint])
        .args(["download", "--no-progress", &id])
        .arg(&out)
        .output()
        .expect("coldsnap runs");
    assert!(
        downloaded.status.success(),
        "coldsnap download over TLS failed: {}",
        String::from_utf8_lossy(&downloaded.stderr)
    );
    let copy = std::fs::read(&out).expect("downloaded image");
    assert_eq!(&copy[..image.len()], image.as_slice());
    assert!(copy[image.len()..].iter().all(|b| *b == 0));
    server.stop();
}
