//! A Strata server for one test, restartable on the same address and data directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use strata_cli::{RetryPolicy, SnapshotClient};
use strata_server::Settings;
use strata_server::app::{self, RunningServer};
use tempfile::TempDir;

pub const KEY: &str = "AKIDSTRATAE2E";
pub const SECRET: &str = "e2e-secret";

/// A test whose tool is missing fails, here and under CI alike: no test passes without
/// having run. The message names what is missing; `bash ci/test` (as root) installs it all.
#[track_caller]
pub fn required(reason: &str) {
    panic!(
        "{reason}: this test needs it (`bash ci/test`, run as root, installs and builds what the tests need)"
    );
}

/// The master key of servers on PostgreSQL and S3 (64 hex digits).
const TEST_MASTER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// A running (or stopped) server.
pub struct TestServer {
    /// Holds the data directory until the server is dropped.
    _dir: TempDir,
    settings: Settings,
    server: Option<RunningServer>,
    addr: SocketAddr,
}

impl TestServer {
    /// Start on 127.0.0.1 with a free port.
    pub async fn start() -> Self {
        Self::start_with_keys(KEY, SECRET).await
    }

    /// Start with other root keys (for tests with two servers that must not share them).
    /// The stores: a data directory, or with `STRATA_TEST_STORES=postgres-s3` a fresh
    /// PostgreSQL schema and bucket prefix (`ci/test` runs the suite both ways).
    pub async fn start_with_keys(key: &str, secret: &str) -> Self {
        let on_engines = match std::env::var("STRATA_TEST_STORES").as_deref() {
            Ok("postgres-s3") => true,
            Ok("embedded") | Err(_) => false,
            Ok(other) => {
                panic!("STRATA_TEST_STORES must be `embedded` or `postgres-s3`, not {other:?}")
            }
        };
        Self::start_on(key, secret, on_engines).await
    }

    /// Start on a data directory whatever `STRATA_TEST_STORES` says (a test that needs
    /// one: `strata migrate` copies from it).
    pub async fn start_embedded() -> Self {
        Self::start_on(KEY, SECRET, false).await
    }

    async fn start_on(key: &str, secret: &str, on_engines: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::new(dir.path().join("data")).expect("settings");
        settings.listen = "127.0.0.1:0".parse().expect("addr");
        settings.root_key_from_env = Some((key.into(), secret.into()));
        if on_engines {
            let (url, chunks) = crate::nodes::fresh_engines().await;
            settings.metadata = strata_server::stores::MetadataBackend::Postgres(url);
            settings.chunks = strata_server::stores::ChunkOptions {
                chunks: Some(chunks),
                s3_endpoint: Some(crate::nodes::var("S3_ENDPOINT")),
                s3_region: Some(crate::nodes::var("S3_REGION")),
                s3_access_key_id: Some(crate::nodes::var("S3_ACCESS_KEY")),
                s3_secret_access_key: Some(crate::nodes::var("S3_SECRET_KEY")),
            };
            // A cluster keeps no generated master key: give it one.
            settings.encryption.master_key = Some(TEST_MASTER_KEY.into());
        }
        let server = app::start(&settings, Arc::new(strata_core::SystemClock))
            .await
            .expect("server starts");
        let addr = server.addr;
        // A restart must come back on the same port.
        settings.listen = addr;
        Self {
            _dir: dir,
            settings,
            server: Some(server),
            addr,
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.settings.data_dir
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client with the default retry policy.
    pub fn client(&self) -> SnapshotClient {
        self.client_with(RetryPolicy::default())
    }

    pub fn client_with(&self, retry: RetryPolicy) -> SnapshotClient {
        SnapshotClient::new(
            strata_cli::connect::static_client(&self.endpoint(), KEY, SECRET),
            retry,
        )
    }

    /// Graceful stop: in-flight requests finish, new connections are refused.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean shutdown");
        }
    }

    /// Start again on the same address and data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        // The port was just released; give the kernel a few tries.
        for attempt in 0..50 {
            match app::start(&self.settings, Arc::new(strata_core::SystemClock)).await {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(error) if attempt < 49 => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("restart failed: {error:#}"),
            }
        }
    }
}

/// A retry policy that gives up quickly (fault tests).
pub fn impatient() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(200),
        attempt_timeout: Duration::from_secs(5),
    }
}
