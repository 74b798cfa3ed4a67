//! A cluster of `strata serve` processes over the CI engines, for the tests that kill
//! nodes (e2e `cluster`) and those that stop the engines under them (`engine_faults`):
//! one fresh PostgreSQL schema (`DATABASE_URL`) and one fresh S3 prefix (the `S3_*`
//! variables of ci/ceph-rgw.sh) per cluster, nodes on fixed ports so a restart comes
//! back on the same endpoint, and the test volume's blocks.

#![allow(dead_code)] // each test binary uses its part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use strata_cli::api::StartRequest;
use strata_cli::{RetryPolicy, SnapshotClient};
use strata_types::{BlockIndex, ChunkDigest, SnapshotId, VolumeSize};
use tempfile::TempDir;

/// The root keys every node is started with.
pub const KEY: &str = "AKIDSTRATACLUSTER";
pub const SECRET: &str = "cluster-secret";

/// The `strata` binary next to the test executable (`cargo build -p strata` builds it;
/// `ci/test` does before the tests).
pub fn strata_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let binary = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .join("strata");
    assert!(
        binary.is_file(),
        "the strata binary is not built ({} missing; run cargo build -p strata)",
        binary.display()
    );
    binary
}

pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: the cluster tests need PostgreSQL (DATABASE_URL, from \
             `source ci/postgres.sh && pg_up`) and an S3 store (S3_ENDPOINT, S3_REGION, \
             S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY, from `source ci/ceph-rgw.sh && ceph_up`)"
        )
    })
}

/// A fresh PostgreSQL schema (the URL that selects it) and a fresh prefix of the S3
/// bucket (its `s3://` location): engines no other test uses.
pub async fn fresh_engines() -> (String, String) {
    let schema = format!("p_{:016x}", rand::random::<u64>());
    let admin_url = var("DATABASE_URL");
    let (admin, connection) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls)
        .await
        .expect("connect to DATABASE_URL");
    let driver = tokio::spawn(connection);
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    drop(admin);
    let _ = driver.await;
    let separator = if admin_url.contains('?') { '&' } else { '?' };
    (
        format!("{admin_url}{separator}options=-c%20search_path%3D{schema}"),
        format!("s3://{}/e2e-{schema}", var("S3_BUCKET")),
    )
}

/// One `strata serve` process of the cluster, on a fixed port so a restart comes back on
/// the same endpoint. Killed on drop.
pub struct Node {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    /// Where the current process's output starts in `log`.
    log_start: usize,
}

/// The shared engines of a cluster: a fresh schema and a fresh bucket prefix.
pub struct Cluster {
    dir: TempDir,
    binary: PathBuf,
    /// The PostgreSQL URL and the `s3://` location; `None`: one node on its data directory.
    engines: Option<(String, String)>,
    nodes: Vec<Node>,
}

impl Cluster {
    pub async fn start(binary: PathBuf, count: usize) -> Self {
        let engines = fresh_engines().await;
        Self::launch_all(binary, Some(engines), count, None)
    }

    /// One node on the embedded stores of its data directory (no engines), restartable
    /// on the same directory: the crash tests.
    pub fn start_embedded(binary: PathBuf) -> Self {
        Self::launch_all(binary, None, 1, None)
    }

    /// One node on the embedded stores of `data_dir` (a file system the test made).
    pub fn start_embedded_in(binary: PathBuf, data_dir: &Path) -> Self {
        Self::launch_all(binary, None, 1, Some(data_dir.to_path_buf()))
    }

    fn launch_all(
        binary: PathBuf,
        engines: Option<(String, String)>,
        count: usize,
        data_dir: Option<PathBuf>,
    ) -> Self {
        let mut cluster = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            binary,
            engines,
            nodes: Vec::new(),
        };
        for n in 0..count {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let data_dir = data_dir
                .clone()
                .unwrap_or_else(|| cluster.dir.path().join(format!("node-{n}")));
            let log = cluster.dir.path().join(format!("node-{n}.out"));
            cluster.nodes.push(Node {
                child: None,
                port,
                data_dir,
                log,
                log_start: 0,
            });
        }
        for n in 0..count {
            cluster.launch(n);
        }
        for n in 0..count {
            cluster.wait_serving(n);
        }
        cluster
    }

    /// Start node `n`'s process (not waiting for it).
    pub fn launch(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        // Appended: a restarted node's log follows the output of the one before.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        node.log_start = std::fs::metadata(&node.log).map_or(0, |m| m.len() as usize);
        let mut command = Command::new(&self.binary);
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{}", node.port)])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--gc-interval-secs", "0"]);
        if let Some((database_url, chunks)) = &self.engines {
            command
                .env("STRATA_METADATA", database_url)
                .env("STRATA_CHUNKS", chunks)
                .env("STRATA_S3_ENDPOINT", var("S3_ENDPOINT"))
                .env("STRATA_S3_REGION", var("S3_REGION"))
                .env("STRATA_S3_ACCESS_KEY_ID", var("S3_ACCESS_KEY"))
                .env("STRATA_S3_SECRET_ACCESS_KEY", var("S3_SECRET_KEY"));
        }
        let child = command
            .env("STRATA_ROOT_ACCESS_KEY_ID", KEY)
            .env("STRATA_ROOT_SECRET_ACCESS_KEY", SECRET)
            .env("RUST_LOG", "warn")
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("strata serve starts");
        node.child = Some(child);
    }

    /// Wait for node `n`'s "serving" line (its stores are open and it listens).
    pub fn wait_serving(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let node = &mut self.nodes[n];
        loop {
            let whole = std::fs::read_to_string(&node.log).unwrap_or_default();
            let output = whole.get(node.log_start..).unwrap_or_default();
            if output.contains("is serving") {
                return;
            }
            let child = node.child.as_mut().expect("launched");
            if let Some(status) = child.try_wait().expect("wait") {
                panic!("node {n} exited ({status}) before serving:\n{output}");
            }
            assert!(
                Instant::now() < deadline,
                "node {n} not serving after 60 s:\n{output}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL node `n`: no shutdown, no flush, whatever it was doing stops there.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut child) = self.nodes[n].child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Kill node `n` and start it again on the same port and data directory.
    pub fn restart(&mut self, n: usize) {
        self.kill(n);
        self.launch(n);
        self.wait_serving(n);
    }

    pub fn endpoint(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[n].port)
    }

    /// Run `strata migrate --from-data-dir FROM` into this cluster's schema and prefix
    /// (while its nodes serve).
    pub fn migrate(&self, from: &Path) -> std::process::Output {
        let (database_url, chunks) = self.engines.as_ref().expect("a cluster on engines");
        Command::new(&self.binary)
            .arg("migrate")
            .arg("--from-data-dir")
            .arg(from)
            .env("STRATA_METADATA", database_url)
            .env("STRATA_CHUNKS", chunks)
            .env("STRATA_S3_ENDPOINT", var("S3_ENDPOINT"))
            .env("STRATA_S3_REGION", var("S3_REGION"))
            .env("STRATA_S3_ACCESS_KEY_ID", var("S3_ACCESS_KEY"))
            .env("STRATA_S3_SECRET_ACCESS_KEY", var("S3_SECRET_KEY"))
            .env("RUST_LOG", "warn")
            .output()
            .expect("strata migrate runs")
    }

    /// A client of node `n` that gives up at once: a request to a killed node fails
    /// instead of waiting for it to come back.
    pub fn impatient_client(&self, n: usize) -> SnapshotClient {
        self.client_with(n, single_attempt())
    }

    /// A client of node `n` that retries as a backup tool does.
    pub fn client(&self, n: usize) -> SnapshotClient {
        self.client_with(n, RetryPolicy::default())
    }

    pub fn client_with(&self, n: usize, retry: RetryPolicy) -> SnapshotClient {
        SnapshotClient::new(
            strata_cli::connect::static_client(&self.endpoint(n), KEY, SECRET),
            retry,
        )
    }

    /// Every node's output, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                format!(
                    "--- node {n}:\n{}",
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in 0..self.nodes.len() {
            self.kill(n);
        }
    }
}

pub fn single_attempt() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 1,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(10),
        attempt_timeout: Duration::from_secs(30),
    }
}

/// Block `index` of the test volume whose content is chosen by `seed`.
pub fn block(seed: u64, index: u32) -> (Bytes, ChunkDigest) {
    let mut data = vec![0u8; strata_types::BLOCK_SIZE];
    rand::rngs::StdRng::seed_from_u64(seed ^ (u64::from(index) << 32)).fill_bytes(&mut data);
    let digest = ChunkDigest(Sha256::digest(&data).into());
    (Bytes::from(data), digest)
}

/// The LINEAR aggregate of blocks `indexes` (ascending).
pub fn aggregate(seed: u64, indexes: impl IntoIterator<Item = u32>) -> ChunkDigest {
    let mut hasher = Sha256::new();
    for index in indexes {
        hasher.update(block(seed, index).1.0);
    }
    ChunkDigest(hasher.finalize().into())
}

pub async fn start_snapshot(client: &SnapshotClient) -> SnapshotId {
    try_start_snapshot(client).await.expect("StartSnapshot")
}

/// StartSnapshot of a 1 GiB volume, which may fail (the server may be gone).
pub async fn try_start_snapshot(
    client: &SnapshotClient,
) -> Result<SnapshotId, strata_cli::ApiError> {
    client
        .start_snapshot(&StartRequest {
            volume_size: VolumeSize::from_gib(1).expect("size"),
            parent: None,
            description: None,
            tags: Vec::new(),
            timeout_minutes: None,
            encrypted: false,
            kms_key_arn: None,
        })
        .await
        .map(|started| started.snapshot)
}

pub async fn put(client: &SnapshotClient, snapshot: &SnapshotId, seed: u64, index: u32) {
    let (data, digest) = block(seed, index);
    client
        .put_block(snapshot, BlockIndex::new(index), &data, &digest, None, true)
        .await
        .unwrap_or_else(|e| panic!("PutSnapshotBlock {index}: {e}"));
}

/// Read every block of `snapshot` through `client` and compare it with what was written:
/// exactly `blocks` blocks, each with the content of `seed`.
pub async fn assert_reads(client: &SnapshotClient, snapshot: &SnapshotId, seed: u64, blocks: u32) {
    let listing = client
        .list_blocks(snapshot)
        .await
        .expect("ListSnapshotBlocks");
    let listed: Vec<u32> = listing.blocks.iter().map(|(i, _)| i.get()).collect();
    assert_eq!(listed, (0..blocks).collect::<Vec<_>>(), "the listed blocks");
    for (index, token) in &listing.blocks {
        let fetched = client
            .get_block(snapshot, *index, token)
            .await
            .unwrap_or_else(|e| panic!("GetSnapshotBlock {index}: {e}"));
        assert_eq!(
            fetched.digest,
            block(seed, index.get()).1,
            "block {index} reads back what was written"
        );
    }
}

/// Run an admin command of the `strata` binary (`strata gc`, `strata snapshots …`) against
/// `endpoint` with the root keys.
pub fn admin(binary: &Path, endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary)
        .args(args)
        .args(["--endpoint", endpoint])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .expect("strata runs")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}
