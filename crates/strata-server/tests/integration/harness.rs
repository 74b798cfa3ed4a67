//! Test harness: a Strata server on a temp data directory, reached either in-process
//! (the real router, no socket) or over a real TCP socket, with the real `aws-sdk-ebs`
//! client (real SigV4 signing and serialization) and a raw signed-request helper for
//! inputs the SDK refuses to send. Time is a controllable clock shared by the server and
//! the clients' signers, so tests can move it (timeouts, token expiry).
//!
//! The stores: the embedded ones of the data directory, or — with
//! `STRATA_TEST_STORES=postgres-s3` — a fresh PostgreSQL schema and a fresh prefix of the
//! CI's Ceph RGW bucket per server (`DATABASE_URL` and the `S3_*` variables), so the same
//! suite proves the API on both. `ci/test` runs it both ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::config::retry::RetryConfig;
use aws_sdk_ebs::config::{BehaviorVersion, Credentials, Region};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use axum::Router;
use axum::body::Body;
use base64::Engine;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector as HyperConnector;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};
use strata_core::ports::ChunkStore;
use strata_server::Settings;
use strata_server::app::{self, RunningServer};
use tempfile::TempDir;
use tower::ServiceExt;

pub const ROOT_KEY: &str = "AKIDSTRATATEST";
pub const ROOT_SECRET: &str = "root-secret-for-tests";
pub const OTHER_KEY: &str = "AKIDOTHERACCOUNT";
pub const OTHER_SECRET: &str = "other-secret-for-tests";
pub const OTHER_ACCOUNT: &str = "111122223333";
pub const BLOCK: usize = 524_288;
/// The master key of servers on PostgreSQL and S3 (64 hex digits).
pub const TEST_MASTER_KEY: &str =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A clock the test moves by hand; starts at the real time.
#[derive(Debug)]
pub struct TestClock {
    now_ms: AtomicI64,
}

impl TestClock {
    pub fn new() -> Arc<Self> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis();
        Arc::new(Self {
            now_ms: AtomicI64::new(i64::try_from(now).expect("fits")),
        })
    }

    /// Move time forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).expect("fits");
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }

    pub fn system_time(&self) -> SystemTime {
        let ms = u64::try_from(self.now_ms.load(Ordering::SeqCst)).expect("after 1970");
        UNIX_EPOCH + Duration::from_millis(ms)
    }
}

impl strata_core::Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone)]
struct ClockSource(Arc<TestClock>);

impl aws_smithy_async::time::TimeSource for ClockSource {
    fn now(&self) -> SystemTime {
        self.0.system_time()
    }
}

/// How requests reach the server.
#[derive(Clone, Debug)]
enum Target {
    Router(Router),
    Socket(Box<HyperClient<HyperConnector, Body>>),
}

impl Target {
    async fn send(&self, request: http::Request<Body>) -> Result<http::Response<Body>, String> {
        match self {
            Target::Router(router) => router
                .clone()
                .oneshot(request)
                .await
                .map_err(|e| e.to_string()),
            Target::Socket(client) => client
                .request(request)
                .await
                .map(|r| r.map(Body::new))
                .map_err(|e| e.to_string()),
        }
    }
}

/// An `aws-sdk-ebs` HTTP client that sends through a [`Target`].
#[derive(Clone, Debug)]
struct TestHttpClient(Target);

impl HttpClient for TestHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(self.clone())
    }
}

impl HttpConnector for TestHttpClient {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let target = self.0.clone();
        HttpConnectorFuture::new(async move {
            let request = request
                .try_into_http1x()
                .map_err(|e| ConnectorError::other(e.into(), None))?
                .map(Body::new);
            let response = target
                .send(request)
                .await
                .map_err(|e| ConnectorError::io(e.into()))?;
            let (parts, body) = response.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| ConnectorError::io(e.into()))?
                .to_bytes();
            HttpResponse::try_from(http::Response::from_parts(parts, SdkBody::from(bytes)))
                .map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// A server on a temp directory, in-process.
pub struct Harness {
    pub dir: TempDir,
    pub clock: Arc<TestClock>,
    settings: Settings,
    router: Router,
}

impl Harness {
    pub fn new() -> Self {
        Self::with_settings(|_| {})
    }

    pub fn with_settings(adjust: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = TestClock::new();
        let mut settings = Settings::new(dir.path().join("data")).expect("settings");
        settings.listen = "127.0.0.1:0".parse().expect("addr");
        settings.root_key_from_env = Some((ROOT_KEY.into(), ROOT_SECRET.into()));
        settings.extra_keys = vec![strata_server::credentials::AccessKey::new(
            OTHER_KEY.into(),
            OTHER_SECRET.into(),
            strata_types::AccountId::parse(OTHER_ACCOUNT).expect("account"),
        )];
        // Background GC would race the tests' own collections; tests that want it turn it on.
        settings.gc_interval = None;
        if on_postgres_and_s3() {
            let (url, chunks) = on_background_runtime(fresh_engines());
            settings.metadata = strata_server::stores::MetadataBackend::Postgres(url);
            settings.chunks = chunks;
            // A cluster has no data directory to keep a generated master key in.
            settings.encryption.master_key = Some(TEST_MASTER_KEY.into());
        }
        adjust(&mut settings);
        let router = open_router(&settings, &clock);
        Self {
            dir,
            clock,
            settings,
            router,
        }
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.settings.data_dir.clone()
    }

    /// The S3 chunk store of this harness's server, opened beside it.
    fn s3_chunks(&self) -> strata_store_s3::S3ChunkStore {
        let strata_server::stores::ChunkBackend::S3(settings) =
            self.settings.chunks.resolve().expect("chunk options")
        else {
            panic!("the harness's chunks are not on S3");
        };
        on_background_runtime(strata_store_s3::S3ChunkStore::connect(&settings))
            .expect("connect to the bucket")
    }

    /// Simulate a restart: the caller must have dropped every client of this harness.
    pub fn restart(self) -> Self {
        let Harness {
            dir,
            clock,
            settings,
            router,
        } = self;
        drop(router);
        let router = open_router(&settings, &clock);
        Self {
            dir,
            clock,
            settings,
            router,
        }
    }

    /// An SDK client of the root account, in-process.
    pub fn client(&self) -> aws_sdk_ebs::Client {
        self.client_as(ROOT_KEY, ROOT_SECRET)
    }

    /// An SDK client with other credentials, in-process.
    pub fn client_as(&self, key: &str, secret: &str) -> aws_sdk_ebs::Client {
        sdk_client(
            Target::Router(self.router.clone()),
            "http://strata.test",
            &self.clock,
            key,
            secret,
        )
    }

    /// Start the same data directory behind a real socket (the in-process router must not
    /// be used meanwhile: both would open the same database).
    pub async fn into_socket(self) -> SocketHarness {
        let Harness {
            dir,
            clock,
            settings,
            router,
        } = self;
        drop(router);
        let server = app::start(&settings, clock.clone() as Arc<dyn strata_core::Clock>)
            .await
            .expect("server starts");
        SocketHarness {
            dir,
            clock,
            settings,
            server: Some(server),
        }
    }

    /// Send a raw request, signed as the root account unless `raw.credentials` says otherwise.
    pub async fn raw(&self, raw: RawRequest) -> RawResponse {
        send_raw(&Target::Router(self.router.clone()), &self.clock, raw).await
    }
}

/// The bytes of every object under the harness's bucket prefix (none on embedded stores,
/// whose chunks are files of the data directory).
pub fn stored_objects(harness: &Harness) -> Vec<Vec<u8>> {
    if !on_postgres_and_s3() {
        return Vec::new();
    }
    let store = harness.s3_chunks();
    on_background_runtime(async move {
        let mut objects = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(after, 1000).await.expect("list objects");
            let Some(last) = page.last() else {
                return objects;
            };
            after = Some(last.digest);
            for chunk in &page {
                let bytes = store.get(chunk.digest).await.expect("get").expect("listed");
                objects.push(bytes.to_vec());
            }
        }
    })
}

/// Bytes of 512 KiB chunks the harness's store holds. Embedded: the allocated size of its
/// segment files (GC punches holes where deleted chunks were), rounded down to whole
/// blocks, which leaves out the file system's own few KiB of extent blocks. On S3: the
/// sizes of the objects under its prefix.
pub fn stored_chunk_bytes(harness: &Harness) -> u64 {
    use std::os::unix::fs::MetadataExt;
    if on_postgres_and_s3() {
        let chunks = harness.s3_chunks();
        return on_background_runtime(async move {
            let (mut total, mut after) = (0, None);
            loop {
                let page = chunks.list(after, 1000).await.expect("list the bucket");
                let Some(last) = page.last() else {
                    return total;
                };
                after = Some(last.digest);
                total += page.iter().map(|c| c.size).sum::<u64>();
            }
        });
    }
    let data_dir = harness.data_dir();
    let allocated: u64 = std::fs::read_dir(data_dir.join("chunks/segments")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.metadata().map_or(0, |m| m.blocks() * 512))
            .sum()
    });
    allocated / BLOCK as u64 * BLOCK as u64
}

/// Damage the stored copy of `content`, as rot would: one byte flipped in its segment
/// slot, or in its object (written back through the adapter, unverified).
pub fn damage_chunk(harness: &Harness, content: &[u8]) {
    let mut damaged = content.to_vec();
    damaged[1000] ^= 0xff;
    if on_postgres_and_s3() {
        let chunks = harness.s3_chunks();
        let digest = strata_types::ChunkDigest::of(content);
        on_background_runtime(chunks.put(digest, damaged.into())).expect("overwrite the object");
        return;
    }
    let (path, offset) = find_chunk(&harness.data_dir(), content);
    let mut bytes = std::fs::read(&path).expect("segment file");
    bytes[offset as usize + 1000] ^= 0xff;
    std::fs::write(&path, &bytes).expect("corrupt it");
}

/// Lose the stored bytes of `content`: the segment cut off before its slot, or its object
/// deleted.
pub fn lose_chunk(harness: &Harness, content: &[u8]) {
    if on_postgres_and_s3() {
        let chunks = harness.s3_chunks();
        let digest = strata_types::ChunkDigest::of(content);
        on_background_runtime(chunks.delete(vec![digest])).expect("delete the object");
        return;
    }
    let (path, offset) = find_chunk(&harness.data_dir(), content);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|file| file.set_len(offset))
        .expect("truncate");
}

/// The segment file and offset where the chunk with exactly these bytes is stored.
fn find_chunk(data_dir: &std::path::Path, content: &[u8]) -> (std::path::PathBuf, u64) {
    for entry in std::fs::read_dir(data_dir.join("chunks/segments")).expect("segments") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("segment");
        if let Some(slot) = bytes
            .chunks(4096)
            .enumerate()
            .map(|(n, _)| n * 4096)
            .find(|&at| bytes[at..].starts_with(content))
        {
            return (path, slot as u64);
        }
    }
    panic!("no segment holds the chunk");
}

/// Whether this run puts every server on PostgreSQL and S3 (`STRATA_TEST_STORES`).
pub fn on_postgres_and_s3() -> bool {
    match std::env::var("STRATA_TEST_STORES").as_deref() {
        Ok("postgres-s3") => true,
        Ok("embedded") | Err(_) => false,
        Ok(other) => {
            panic!("STRATA_TEST_STORES must be `embedded` or `postgres-s3`, not {other:?}")
        }
    }
}

pub fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: tests on PostgreSQL and S3 need DATABASE_URL (from \
             `source ci/postgres.sh && pg_up`) and S3_ENDPOINT, S3_REGION, S3_BUCKET, \
             S3_ACCESS_KEY, S3_SECRET_KEY (from `source ci/ceph-rgw.sh && ceph_up`)"
        )
    })
}

/// A fresh PostgreSQL schema (its URL) and a fresh bucket prefix (the chunk options):
/// engines no other test uses.
pub async fn fresh_engines() -> (String, strata_server::stores::ChunkOptions) {
    let schema = format!("c_{:016x}", rand::random::<u64>());
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
    let url = format!("{admin_url}{separator}options=-c%20search_path%3D{schema}");
    let chunks = strata_server::stores::ChunkOptions {
        chunks: Some(format!("s3://{}/cluster-{schema}", var("S3_BUCKET"))),
        s3_endpoint: Some(var("S3_ENDPOINT")),
        s3_region: Some(var("S3_REGION")),
        s3_access_key_id: Some(var("S3_ACCESS_KEY")),
        s3_secret_access_key: Some(var("S3_SECRET_KEY")),
    };
    (url, chunks)
}

/// Run `work` to completion on a runtime that lives as long as the test process, from a
/// thread of its own (callers are synchronous, some inside a test's runtime). The
/// PostgreSQL and S3 adapters start tasks where they are opened: those must outlive the
/// call, so they cannot run on a runtime made for it.
fn on_background_runtime<T: Send>(work: impl std::future::Future<Output = T> + Send) -> T {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("background runtime")
    });
    std::thread::scope(|scope| {
        scope
            .spawn(|| runtime.block_on(work))
            .join()
            .expect("the background thread")
    })
}

fn open_router(settings: &Settings, clock: &Arc<TestClock>) -> Router {
    let clock = clock.clone() as Arc<dyn strata_core::Clock>;
    if on_postgres_and_s3() {
        let state =
            on_background_runtime(app::open_state(settings, clock)).expect("server state opens");
        return app::router(Arc::new(state));
    }
    // The embedded stores start no tasks: opening them on a runtime of their own (callers
    // are synchronous, some inside a test's runtime) leaves nothing behind.
    let state = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(app::open_state(settings, clock))
            })
            .join()
            .expect("the opening thread")
    })
    .expect("server state opens");
    app::router(Arc::new(state))
}

fn sdk_client(
    target: Target,
    endpoint: &str,
    clock: &Arc<TestClock>,
    key: &str,
    secret: &str,
) -> aws_sdk_ebs::Client {
    let config = aws_sdk_ebs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .http_client(TestHttpClient(target))
        .time_source(ClockSource(clock.clone()))
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_ebs::Client::from_conf(config)
}

/// A server behind a real TCP socket on 127.0.0.1.
pub struct SocketHarness {
    dir: TempDir,
    pub clock: Arc<TestClock>,
    settings: Settings,
    server: Option<RunningServer>,
}

impl SocketHarness {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.as_ref().expect("running").addr
    }

    /// The metrics listener's address, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().expect("running").metrics_addr
    }

    pub fn client(&self) -> aws_sdk_ebs::Client {
        let client = HyperClient::builder(TokioExecutor::new()).build_http();
        sdk_client(
            Target::Socket(Box::new(client)),
            &format!("http://{}", self.addr()),
            &self.clock,
            ROOT_KEY,
            ROOT_SECRET,
        )
    }

    /// Shut the server down gracefully and reopen its data in-process.
    pub async fn stop(mut self) -> Harness {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("clean shutdown");
        }
        let router = open_router(&self.settings, &self.clock);
        Harness {
            dir: self.dir,
            clock: self.clock,
            settings: self.settings,
            router,
        }
    }
}

/// An SDK client of the root account to the server listening at `addr` (one node of a
/// cluster the test started itself).
pub fn client_at(addr: std::net::SocketAddr, clock: &Arc<TestClock>) -> aws_sdk_ebs::Client {
    let client = HyperClient::builder(TokioExecutor::new()).build_http();
    sdk_client(
        Target::Socket(Box::new(client)),
        &format!("http://{addr}"),
        clock,
        ROOT_KEY,
        ROOT_SECRET,
    )
}

/// Sign `raw` and send it to the server listening at `addr`.
pub async fn raw_at(addr: std::net::SocketAddr, clock: &TestClock, raw: RawRequest) -> RawResponse {
    let client = HyperClient::builder(TokioExecutor::new()).build_http();
    let target = Target::Socket(Box::new(client));
    let authority = addr.to_string();
    send_raw_to(&target, &authority, clock, raw).await
}

/// A request to sign and send by hand.
pub struct RawRequest {
    pub method: &'static str,
    /// Path and query, already percent-encoded.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Sign `UNSIGNED-PAYLOAD` (as SDKs do for PutSnapshotBlock).
    pub unsigned_payload: bool,
    /// `None`: do not sign at all.
    pub credentials: Option<(String, String)>,
    /// Shift the signing time relative to the server clock.
    pub signing_offset: time::Duration,
    /// The SigV4 service name (`ebs`, `ec2`, `strata`).
    pub service: &'static str,
    /// Send this body instead of `body` (which is then only used for signing): for bodies
    /// that arrive over time. Only with `unsigned_payload` does the signature still match.
    pub streamed: Option<Body>,
    /// Headers added after signing, so the signature does not cover them.
    pub unsigned_headers: Vec<(String, String)>,
}

impl RawRequest {
    pub fn new(method: &'static str, target: impl Into<String>) -> Self {
        Self {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: Vec::new(),
            unsigned_payload: false,
            credentials: Some((ROOT_KEY.into(), ROOT_SECRET.into())),
            signing_offset: time::Duration::ZERO,
            service: "ebs",
            streamed: None,
            unsigned_headers: Vec::new(),
        }
    }

    /// An admin API request (`/_strata/v1/...`), signed for the `strata` service.
    pub fn admin(method: &'static str, path: &str) -> Self {
        let mut raw = Self::new(method, format!("/_strata/v1{path}"));
        raw.service = "strata";
        raw
    }

    /// An EC2 Query request: `POST /` with the form-encoded `params`.
    pub fn ec2(params: &[(&str, &str)]) -> Self {
        let body: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let mut raw = Self::new("POST", "/")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .body(format!("Version=2016-11-15&{}", body.join("&")).into_bytes());
        raw.service = "ec2";
        raw
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// A PutSnapshotBlock as the SDK would send it, with the given headers.
    pub fn put_block(snapshot: &str, index: &str, data: Vec<u8>) -> Self {
        let checksum = checksum(&data);
        let mut raw = Self::new("PUT", format!("/snapshots/{snapshot}/blocks/{index}"))
            .header("x-amz-data-length", data.len().to_string())
            .header("x-amz-checksum", checksum)
            .header("x-amz-checksum-algorithm", "SHA256")
            .body(data);
        raw.unsigned_payload = true;
        raw
    }
}

/// What came back.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

impl RawResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn error_type(&self) -> &str {
        self.headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body parsed as XML (EC2 responses).
    pub fn xml(&self) -> roxmltree::Document<'_> {
        let text = std::str::from_utf8(&self.body).expect("utf-8 body");
        roxmltree::Document::parse(text).expect("well-formed XML")
    }

    /// Assert an EC2 error: status, `<Code>`, and a request id.
    #[track_caller]
    pub fn assert_ec2_error(&self, status: u16, code: &str) {
        let doc = self.xml();
        let found = doc
            .descendants()
            .find(|n| n.has_tag_name("Code"))
            .and_then(|n| n.text())
            .unwrap_or("");
        assert_eq!(
            (self.status, found),
            (status, code),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(doc.root_element().tag_name().name(), "Response");
        assert!(doc.descendants().any(|n| n.has_tag_name("RequestID")));
        assert!(doc.descendants().any(|n| n.has_tag_name("Message")));
    }

    pub fn reason(&self) -> String {
        self.json()["Reason"].as_str().unwrap_or("").to_owned()
    }

    /// Assert status, `x-amzn-ErrorType`, `Reason` (empty: none), and the request id.
    #[track_caller]
    pub fn assert_error(&self, status: u16, error_type: &str, reason: &str) {
        assert_eq!(
            (self.status, self.error_type(), self.reason().as_str()),
            (status, error_type, reason),
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert!(self.headers.contains_key("x-amzn-requestid"));
        assert!(
            self.json()["Message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
}

async fn send_raw(target: &Target, clock: &TestClock, raw: RawRequest) -> RawResponse {
    send_raw_to(target, "strata.test", clock, raw).await
}

/// [`send_raw`] to the server named by `authority` (`HOST[:PORT]`, also the signed host).
async fn send_raw_to(
    target: &Target,
    authority: &str,
    clock: &TestClock,
    raw: RawRequest,
) -> RawResponse {
    let request = signed(authority, clock, &raw);
    let request = match raw.streamed {
        Some(body) => request.map(|_| body),
        None => request.map(Body::from),
    };
    let response = target.send(request).await.expect("request sent");
    let (parts, body) = response.into_parts();
    RawResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// The request `raw` describes, to the server named by `authority`, signed as it says.
pub fn signed(authority: &str, clock: &TestClock, raw: &RawRequest) -> http::Request<Vec<u8>> {
    let mut request = http::Request::builder()
        .method(raw.method)
        .uri(format!("http://{authority}{}", raw.target))
        .header("host", authority)
        .body(raw.body.clone())
        .expect("request");
    for (name, value) in &raw.headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    if let Some((key, secret)) = &raw.credentials {
        let identity: Identity = Credentials::new(key, secret, None, None, "raw").into();
        let mut settings = SigningSettings::default();
        if raw.unsigned_payload {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let when = time::OffsetDateTime::from(clock.system_time()) + raw.signing_offset;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(raw.service)
            .time(SystemTime::from(when))
            .settings(settings)
            .build()
            .expect("signing params")
            .into();
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.to_str().expect("ascii").to_owned()))
            .collect();
        let body = if raw.unsigned_payload {
            SignableBody::UnsignedPayload
        } else {
            SignableBody::Bytes(&raw.body)
        };
        let signable = SignableRequest::new(
            raw.method,
            request.uri().to_string(),
            headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            body,
        )
        .expect("signable");
        let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
        instructions.apply_to_request_http1x(&mut request);
    }
    for (name, value) in &raw.unsigned_headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    request
}

/// base64 SHA-256, as in `x-amz-Checksum`.
pub fn checksum(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

/// A block of pseudo-random content determined by `seed`.
pub fn block(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(BLOCK);
    while data.len() < BLOCK {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data
}

/// The LINEAR aggregate of blocks given in ascending index order.
pub fn linear(blocks: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for data in blocks {
        hasher.update(Sha256::digest(data));
    }
    base64::engine::general_purpose::STANDARD.encode(hasher.finalize())
}

fn form_encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}
