//! The systems under test: Strata in-process (one node or several, on embedded or shared
//! stores), the sink, an external endpoint, moto, and the raw S3 store under Strata.
//!
//! Strata and the sink run on the benchmark's *server runtime* (threads named
//! [`SERVER_THREAD`](crate::cpu::SERVER_THREAD)), apart from the load client's runtime,
//! so that their CPU can be told apart ([`crate::cpu`]). Each measured run gets a fresh
//! instance (a new temp data directory for Strata), so runs do not inherit each other's
//! data; only the `list` fixture, expensive to build, is kept across repeats. On shared
//! engines "fresh" means a new PostgreSQL schema and a new key prefix ([`EngineLease`]),
//! removed at [`Instance::stop`].

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use strata_core::SystemClock;
use strata_server::Settings;
use strata_server::app::{self, AppState, RunningServer};
use tempfile::TempDir;

use crate::client::{EbsClient, Endpoint};
use crate::cpu::ServerCpu;
use crate::engines::{EngineLease, ObjectPrefix, SharedEngines};
use crate::s3::S3Client;
use crate::sink::Sink;

/// Keys of the root account of a self-started Strata.
pub const BENCH_KEY: &str = "AKIDSTRATABENCH";
/// Secret of [`BENCH_KEY`].
const BENCH_SECRET: &str = "strata-bench-secret";
const REGION: &str = "us-east-1";
/// moto listens on a port below this (the ephemeral range starts at 32768 here).
const MOTO_PORT_LIMIT: u16 = 32_768;

/// Which system a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// Strata, started by the benchmark in this process.
    Strata,
    /// The sink (ceiling of HTTP + hashing).
    Sink,
    /// A server the user started (`--endpoint`).
    Endpoint,
    /// moto's server mode (`--moto`).
    Moto,
    /// The S3 store of `--chunks`, reached straight by the same client (the ceiling of
    /// Strata on that store).
    S3,
}

impl TargetKind {
    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Strata => "strata",
            TargetKind::Sink => "sink",
            TargetKind::Endpoint => "endpoint",
            TargetKind::Moto => "moto",
            TargetKind::S3 => "raw-s3",
        }
    }
}

/// What the benchmark needs to start or reach each kind of target.
pub struct Launcher {
    server_runtime: tokio::runtime::Handle,
    data_parent: PathBuf,
    external: Option<(Endpoint, Option<u32>)>,
    moto: Option<MotoProcess>,
    engines: SharedEngines,
    nodes: usize,
}

impl Launcher {
    /// `data_parent`: where Strata's temp data directories go (the disk being measured).
    /// `external`: the `--endpoint` and its keys, with the server's pid if known.
    pub fn new(
        server_runtime: tokio::runtime::Handle,
        data_parent: PathBuf,
        external: Option<(Endpoint, Option<u32>)>,
    ) -> Self {
        Self {
            server_runtime,
            data_parent,
            external,
            moto: None,
            engines: SharedEngines::default(),
            nodes: 1,
        }
    }

    /// Run Strata as `nodes` nodes on `engines` (embedded stores where they name none).
    pub fn with_engines(mut self, engines: SharedEngines, nodes: usize) -> Self {
        self.engines = engines;
        self.nodes = nodes.max(1);
        self
    }

    /// Start moto (once per invocation; runs reset its state instead of restarting it).
    pub fn start_moto(&mut self) -> anyhow::Result<()> {
        self.moto = Some(MotoProcess::start()?);
        Ok(())
    }

    /// The server runtime's handle.
    pub fn server_runtime(&self) -> &tokio::runtime::Handle {
        &self.server_runtime
    }

    /// Where data directories are created.
    pub fn data_parent(&self) -> &Path {
        &self.data_parent
    }

    /// A fresh instance of `kind`, ready for requests.
    pub async fn launch(&self, kind: TargetKind) -> anyhow::Result<Instance> {
        match kind {
            TargetKind::Strata => {
                let dir = self.new_data_dir()?;
                let deployment = self.strata_deployment(dir.path()).await?;
                self.start_deployment(deployment, dir).await
            }
            TargetKind::Sink => {
                let sink = Sink::start(&self.server_runtime)
                    .await
                    .context("cannot start the sink")?;
                let endpoint = local_endpoint(sink.addr, "sink", "sink");
                Ok(Instance {
                    kind,
                    endpoint,
                    cpu: ServerCpu::InProcess,
                    rss_pid: None,
                    nodes: Vec::new(),
                    running: Running::Sink(sink),
                })
            }
            TargetKind::Endpoint => {
                let (endpoint, pid) = self.external.clone().context("no --endpoint was given")?;
                Ok(Instance {
                    kind,
                    endpoint,
                    cpu: pid.map_or(ServerCpu::Unknown, ServerCpu::Process),
                    rss_pid: pid,
                    nodes: Vec::new(),
                    running: Running::External,
                })
            }
            TargetKind::Moto => {
                let moto = self.moto.as_ref().context("moto was not started")?;
                moto.reset().await?;
                Ok(Instance {
                    kind,
                    endpoint: local_endpoint(moto.addr, "testing", "testing"),
                    cpu: ServerCpu::Process(moto.pid()),
                    rss_pid: Some(moto.pid()),
                    nodes: Vec::new(),
                    running: Running::External,
                })
            }
            TargetKind::S3 => {
                let bucket = self
                    .engines
                    .s3
                    .as_ref()
                    .context("no --chunks s3://… was given")?;
                Ok(Instance {
                    kind,
                    endpoint: bucket.endpoint.clone(),
                    // The store is another process, unknown to the benchmark.
                    cpu: ServerCpu::Unknown,
                    rss_pid: None,
                    nodes: Vec::new(),
                    running: Running::RawS3(bucket.fresh_prefix("raw-s3")),
                })
            }
        }
    }

    /// The settings of every node of a fresh Strata deployment under `dir`: one node on
    /// embedded stores, or [`Launcher::with_engines`]'s nodes on a fresh place of the
    /// shared engines (which the deployment owns from here on).
    pub async fn strata_deployment(&self, dir: &Path) -> anyhow::Result<Deployment> {
        if self.engines.is_embedded() {
            return Ok(Deployment {
                nodes: vec![strata_settings(dir)?],
                lease: None,
            });
        }
        let lease = EngineLease::create(&self.engines).await?;
        let nodes = (0..self.nodes)
            .map(|n| {
                let mut settings = strata_settings(&dir.join(format!("node-{n}")))?;
                settings.metadata = lease.metadata.clone();
                settings.chunks = lease.chunks.clone();
                Ok(settings)
            })
            .collect::<anyhow::Result<_>>();
        let mut deployment = Deployment {
            nodes: Vec::new(),
            lease: Some(lease),
        };
        match nodes {
            Ok(nodes) => {
                deployment.nodes = nodes;
                Ok(deployment)
            }
            Err(error) => {
                deployment.abandon().await;
                Err(error)
            }
        }
    }

    /// Start every node of `deployment` (on `dir`), one after the other: the first runs
    /// the migrations and stores the cluster secrets, the others find them.
    pub async fn start_deployment(
        &self,
        deployment: Deployment,
        dir: TempDir,
    ) -> anyhow::Result<Instance> {
        let mut servers = Vec::with_capacity(deployment.nodes.len());
        for settings in &deployment.nodes {
            match self.start_strata(settings).await {
                Ok(server) => servers.push(server),
                Err(error) => {
                    // Leave nothing behind: the nodes already started, then the engines.
                    for server in servers {
                        let _ = server.stop().await;
                    }
                    deployment.abandon().await;
                    return Err(error);
                }
            }
        }
        Ok(Instance::strata_nodes(servers, dir, deployment.lease))
    }

    /// A new empty temp directory under the data parent (removed when dropped).
    pub fn new_data_dir(&self) -> anyhow::Result<TempDir> {
        tempfile::Builder::new()
            .prefix("strata-bench-")
            .tempdir_in(&self.data_parent)
            .with_context(|| {
                format!(
                    "cannot create a directory in {}",
                    self.data_parent.display()
                )
            })
    }

    /// Start Strata on `settings` on the server runtime.
    pub async fn start_strata(&self, settings: &Settings) -> anyhow::Result<RunningServer> {
        let settings = settings.clone();
        // Spawned (not block_on) so that everything Strata starts, its metadata writer
        // thread included, is created from a server-runtime thread.
        self.server_runtime
            .spawn(async move { app::start(&settings, Arc::new(SystemClock)).await })
            .await
            .context("the server start task failed")?
    }

    /// Open Strata's state on `settings` without serving (to seed a fixture directly),
    /// on the server runtime.
    pub async fn open_strata_state(&self, settings: &Settings) -> anyhow::Result<AppState> {
        let settings = settings.clone();
        self.server_runtime
            .spawn(async move { app::open_state(&settings, Arc::new(SystemClock)).await })
            .await
            .context("the open task failed")?
    }
}

/// The nodes of one Strata deployment, and its place on the shared engines if any.
#[derive(Debug)]
pub struct Deployment {
    /// The settings of each node (the first also serves to seed fixtures).
    pub nodes: Vec<Settings>,
    /// The schema and prefix the nodes share (`None`: embedded, one node).
    pub lease: Option<EngineLease>,
}

impl Deployment {
    /// Give up a deployment that will not serve (no node running): remove its place on
    /// the engines. The caller is already reporting a failure, so this one's is dropped.
    pub async fn abandon(self) {
        if let Some(lease) = self.lease {
            let _ = lease.release().await;
        }
    }
}

/// Settings of a self-started Strata on `dir`: port 0, known root keys.
pub fn strata_settings(dir: &Path) -> anyhow::Result<Settings> {
    let mut settings = Settings::new(dir.join("data"))?;
    settings.listen = "127.0.0.1:0".parse()?;
    settings.root_key_from_env = Some((BENCH_KEY.into(), BENCH_SECRET.into()));
    Ok(settings)
}

fn local_endpoint(addr: SocketAddr, key: &str, secret: &str) -> Endpoint {
    Endpoint {
        authority: addr.to_string(),
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        region: REGION.into(),
    }
}

/// An endpoint given on the command line, with keys from the environment.
pub fn external_endpoint(
    url: &str,
    access_key_id: String,
    secret: String,
) -> anyhow::Result<Endpoint> {
    let authority = url
        .strip_prefix("http://")
        .context("--endpoint must be an http:// URL")?
        .trim_end_matches('/');
    anyhow::ensure!(
        !authority.is_empty() && !authority.contains('/'),
        "--endpoint must be http://HOST:PORT"
    );
    Ok(Endpoint {
        authority: authority.to_owned(),
        access_key_id,
        secret_access_key: secret,
        region: REGION.into(),
    })
}

enum Running {
    Strata {
        servers: Vec<RunningServer>,
        // Boxed: the settings it carries would make every instance as large.
        lease: Option<Box<EngineLease>>,
        _dir: TempDir,
    },
    Sink(Sink),
    External,
    RawS3(ObjectPrefix),
}

/// A running target.
pub struct Instance {
    /// What it is.
    pub kind: TargetKind,
    /// How to reach it.
    pub endpoint: Endpoint,
    /// How to account its CPU.
    pub cpu: ServerCpu,
    /// Whose RSS to report as the server's (`None`: only the whole process is known).
    pub rss_pid: Option<u32>,
    /// The authorities of every node when there are several (requests go round robin).
    nodes: Vec<String>,
    running: Running,
}

impl Instance {
    /// A Strata instance started by [`Launcher::start_strata`] on a directory the
    /// instance now owns (removed at [`Instance::stop`]).
    pub fn strata(server: RunningServer, dir: TempDir) -> Self {
        Self::strata_nodes(vec![server], dir, None)
    }

    /// The nodes of one deployment (at least one), with the engines' place they share.
    fn strata_nodes(servers: Vec<RunningServer>, dir: TempDir, lease: Option<EngineLease>) -> Self {
        let nodes: Vec<String> = servers.iter().map(|s| s.addr.to_string()).collect();
        let first = servers.first().map_or_else(
            || SocketAddr::from(([127, 0, 0, 1], 0)),
            |server| server.addr,
        );
        Self {
            kind: TargetKind::Strata,
            endpoint: local_endpoint(first, BENCH_KEY, BENCH_SECRET),
            cpu: ServerCpu::InProcess,
            rss_pid: None,
            nodes,
            running: Running::Strata {
                servers,
                lease: lease.map(Box::new),
                _dir: dir,
            },
        }
    }

    /// A new client (its own connection pool) for this instance, spreading requests
    /// over its nodes in turn.
    pub fn client(&self) -> EbsClient {
        EbsClient::round_robin(self.endpoint.clone(), self.nodes.clone())
    }

    /// The S3 client and the key prefix of a raw S3 instance.
    pub fn object_store(&self) -> anyhow::Result<(S3Client, String)> {
        match &self.running {
            Running::RawS3(objects) => Ok((objects.bucket.client(), objects.prefix.clone())),
            _ => anyhow::bail!("{} is not an object store", self.kind.name()),
        }
    }

    /// Stop it and remove its data. Clients must be dropped first (an idle keep-alive
    /// connection would otherwise hold the graceful shutdown).
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.running {
            Running::Strata {
                servers,
                lease,
                _dir,
            } => {
                let mut stopped = Ok(());
                for server in servers {
                    stopped = stopped.and(server.stop().await);
                }
                // Only once no node uses them.
                match lease {
                    Some(lease) => stopped.and(lease.release().await),
                    None => stopped,
                }
            }
            Running::Sink(sink) => {
                sink.stop();
                Ok(())
            }
            Running::External => Ok(()),
            Running::RawS3(objects) => objects.remove().await,
        }
    }
}

/// moto's server, a child process of the benchmark.
struct MotoProcess {
    child: Child,
    addr: SocketAddr,
}

impl MotoProcess {
    fn start() -> anyhow::Result<Self> {
        let port = free_port_below(MOTO_PORT_LIMIT)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run moto_server (install it with: pip install 'moto[server]')")?;
        let mut moto = Self { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = moto.child.try_wait()? {
                anyhow::bail!("moto_server exited at start ({status})");
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto_server did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Forget every snapshot (moto keeps blocks in memory).
    async fn reset(&self) -> anyhow::Result<()> {
        use http_body_util::{BodyExt, Empty};
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("http://{}/moto-api/reset", self.addr).parse()?;
        let request = http::Request::post(uri).body(Empty::new())?;
        let response = client.request(request).await.context("moto reset failed")?;
        anyhow::ensure!(
            response.status().is_success(),
            "moto reset answered {}",
            response.status()
        );
        let _ = response.into_body().collect().await;
        Ok(())
    }
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        // Only our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on 127.0.0.1 below `limit`, probing from a pid-dependent start so two
/// benchmarks started together are unlikely to race for the same one.
fn free_port_below(limit: u16) -> anyhow::Result<u16> {
    let span = u32::from(limit - 20_000);
    let start = u16::try_from(20_000 + std::process::id() % span).unwrap_or(20_000);
    (start..limit)
        .chain(20_000..start)
        .find(|port| StdListener::bind(("127.0.0.1", *port)).is_ok())
        .context("no free port below 32768 for moto")
}
