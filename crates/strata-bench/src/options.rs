//! What to measure: [`BenchArgs`] (the flags of `strata bench`) become [`BenchOptions`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use strata_server::stores::{ChunkOptions, MetadataBackend};

use crate::client::Endpoint;
use crate::engines::{S3Bucket, SharedEngines};
use crate::profile::PerfControl;
use crate::scenarios::Scenario;
use crate::targets::{TargetKind, external_endpoint};

/// `strata bench`: measure Strata against a sink, the disk and optionally moto.
///
/// Example: strata bench --repeat 3 --scenario put,get
///
/// On PostgreSQL + S3, against the raw S3 store, with two nodes:
/// strata bench --metadata postgres://… --chunks s3://BUCKET --s3-endpoint http://HOST:PORT
/// --nodes 2 --scenario put,put-dup,get,start
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scenarios to run, in order (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Blocks per put, put-dup and get run (512 KiB each).
    #[arg(long, default_value_t = 2048)]
    pub blocks: usize,
    /// Concurrent requests of put, put-dup, get and mixed.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Start+Complete pairs per start run.
    #[arg(long, default_value_t = 2000)]
    pub start_pairs: usize,
    /// Concurrent pairs of the start scenario.
    #[arg(long, default_value_t = 16)]
    pub start_concurrency: usize,
    /// Blocks of the big snapshots of the list scenario.
    #[arg(long, default_value_t = 2_000_000)]
    pub list_blocks: usize,
    /// Changed blocks between parent and child in the list scenario.
    #[arg(long, default_value_t = 1000)]
    pub list_changes: usize,
    /// Distinct contents of the list scenario's blocks.
    #[arg(long, default_value_t = 16)]
    pub list_pool: usize,
    /// Pending writes of the snapshot the complete-big scenario completes.
    #[arg(long, default_value_t = 4_000_000)]
    pub complete_blocks: usize,
    /// Runs of each scenario; each run is printed, then the median and range.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Stop a timed phase after this many seconds even if work is left.
    #[arg(long, default_value_t = 60)]
    pub max_seconds: u64,
    /// MiB written by the O_DIRECT disk baseline per repeat (0: skip the disk baselines).
    #[arg(long, default_value_t = 1024)]
    pub disk_mib: u64,
    /// Directory for Strata's temp data directories and the disk baselines.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Do not measure the sink.
    #[arg(long)]
    pub no_sink: bool,
    /// Also measure moto's server (`moto_server` on PATH; pip install 'moto[server]').
    #[arg(long)]
    pub moto: bool,
    /// Measure this server (http://HOST:PORT) instead of starting Strata.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Access key for --endpoint (ignored without it: the self-started server has its own).
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// Secret key for --endpoint.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub secret_access_key: Option<String>,
    /// Process id of the --endpoint server, to report its CPU and RSS.
    #[arg(long, requires = "endpoint")]
    pub server_pid: Option<u32>,
    /// Memory for precomputed payloads, MiB; larger uploads generate blocks on the fly.
    #[arg(long, default_value_t = 2048)]
    pub resident_mib: usize,
    /// One JSON object per line instead of key=value.
    #[arg(long)]
    pub json: bool,
    /// FIFOs `CTL[,ACK]` of a `perf record --control fifo:CTL,ACK -D -1` to enable only
    /// during timed windows (see docs/performance.md).
    #[arg(long)]
    pub perf_control: Option<String>,
    /// With --perf-control: profile only the windows of this target (e.g. `strata`, to
    /// compare with a profile of `sink` from the same kind of run).
    #[arg(long, value_enum, requires = "perf_control")]
    pub perf_target: Option<TargetKind>,
    /// A few seconds of every scenario at tiny sizes; fails on any error (for CI).
    #[arg(long)]
    pub smoke: bool,
    /// Run Strata's metadata on this PostgreSQL database
    /// (postgres://USER[:PASSWORD]@HOST[:PORT]/DB), each run in a new schema, dropped after.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Run Strata's chunks in this bucket (s3://BUCKET[/PREFIX]), each run under a new
    /// prefix, emptied after; also measures the raw S3 baseline there.
    #[arg(long)]
    pub chunks: Option<String>,
    /// The S3 endpoint of --chunks (http://HOST:PORT: the load client speaks plain HTTP).
    #[arg(long, env = "STRATA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// The signing region of --chunks.
    #[arg(long, env = "STRATA_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Access key of the --chunks bucket.
    #[arg(long, env = "STRATA_S3_ACCESS_KEY_ID", hide_env_values = true)]
    pub s3_access_key_id: Option<String>,
    /// Secret key of the --chunks bucket.
    #[arg(long, env = "STRATA_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Strata nodes sharing --metadata and --chunks; requests go to each in turn.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
}

/// Resolved options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scenarios, in order.
    pub scenarios: Vec<Scenario>,
    /// Blocks per put/put-dup/get run.
    pub blocks: usize,
    /// Concurrency of the data scenarios.
    pub concurrency: usize,
    /// Pairs per start run.
    pub start_pairs: usize,
    /// Concurrency of the start scenario.
    pub start_concurrency: usize,
    /// Blocks of each big list snapshot.
    pub list_blocks: usize,
    /// Changes in each list lineage.
    pub list_changes: usize,
    /// Distinct contents in the list fixture.
    pub list_pool: usize,
    /// Pending writes completed by `complete-big`.
    pub complete_blocks: usize,
    /// Runs per scenario.
    pub repeat: usize,
    /// Longest timed phase.
    pub max_phase: Duration,
    /// Bytes of the O_DIRECT baseline (0: no disk baselines).
    pub disk_bytes: u64,
    /// Parent of temp data directories.
    pub data_parent: PathBuf,
    /// Measure the sink.
    pub sink: bool,
    /// Measure moto.
    pub moto: bool,
    /// An external server instead of a self-started Strata, and its pid.
    pub endpoint: Option<(Endpoint, Option<u32>)>,
    /// Precomputed payload blocks.
    pub resident_blocks: usize,
    /// JSON lines.
    pub json: bool,
    /// Profile only the timed windows.
    pub perf_control: Option<PerfControl>,
    /// Profile only this target's windows (all targets' if `None`).
    pub perf_target: Option<TargetKind>,
    /// Smoke mode: tiny sizes, no verdict on timings.
    pub smoke: bool,
    /// The engines Strata runs on (embedded where none is named).
    pub engines: SharedEngines,
    /// Strata nodes (more than one only on shared engines).
    pub nodes: usize,
}

impl BenchOptions {
    /// The smoke configuration: every scenario on the sink and Strata at tiny sizes,
    /// a few seconds in all (debug build included).
    pub fn smoke(data_parent: PathBuf) -> Self {
        Self {
            scenarios: Scenario::ALL.to_vec(),
            blocks: 48,
            concurrency: 8,
            start_pairs: 24,
            start_concurrency: 4,
            list_blocks: 3000,
            list_changes: 10,
            list_pool: 4,
            complete_blocks: 5000,
            repeat: 1,
            max_phase: Duration::from_secs(20),
            disk_bytes: 8 * 1024 * 1024,
            data_parent,
            sink: true,
            moto: false,
            endpoint: None,
            resident_blocks: 64,
            json: false,
            perf_control: None,
            perf_target: None,
            smoke: true,
            engines: SharedEngines::default(),
            nodes: 1,
        }
    }
}

impl BenchArgs {
    /// Validate the flags.
    pub fn into_options(self) -> anyhow::Result<BenchOptions> {
        let data_parent = self.data_dir.clone().unwrap_or_else(std::env::temp_dir);
        let engines = self.engines()?;
        anyhow::ensure!(self.nodes > 0, "--nodes must be at least 1");
        anyhow::ensure!(
            self.nodes == 1 || (engines.postgres.is_some() && engines.s3.is_some()),
            "--nodes {} needs stores the nodes share: --metadata postgres://… and --chunks s3://…",
            self.nodes
        );
        anyhow::ensure!(
            self.endpoint.is_none() || engines.is_embedded(),
            "--endpoint measures a server that is already running: --metadata and --chunks \
             choose the stores of a self-started Strata"
        );
        if self.smoke {
            let mut options = BenchOptions::smoke(data_parent);
            options.json = self.json;
            if !self.scenario.is_empty() {
                options.scenarios = self.scenario;
            }
            options.engines = engines;
            options.nodes = self.nodes;
            return Ok(options);
        }
        anyhow::ensure!(
            self.blocks > 0 && self.concurrency > 0,
            "--blocks and --concurrency must be positive"
        );
        anyhow::ensure!(self.repeat > 0, "--repeat must be at least 1");
        anyhow::ensure!(
            self.list_pool > 1,
            "--list-pool must be at least 2 (a child needs other content)"
        );
        let endpoint = match &self.endpoint {
            Some(url) => {
                let key = self
                    .access_key_id
                    .clone()
                    .context("--endpoint needs AWS_ACCESS_KEY_ID")?;
                let secret = self
                    .secret_access_key
                    .clone()
                    .context("--endpoint needs AWS_SECRET_ACCESS_KEY")?;
                Some((external_endpoint(url, key, secret)?, self.server_pid))
            }
            None => None,
        };
        Ok(BenchOptions {
            scenarios: if self.scenario.is_empty() {
                Scenario::ALL.to_vec()
            } else {
                self.scenario
            },
            blocks: self.blocks,
            concurrency: self.concurrency,
            start_pairs: self.start_pairs,
            start_concurrency: self.start_concurrency.max(1),
            list_blocks: self.list_blocks.max(2),
            list_changes: self.list_changes.max(1),
            list_pool: self.list_pool,
            complete_blocks: self.complete_blocks.max(1),
            repeat: self.repeat,
            max_phase: Duration::from_secs(self.max_seconds.max(1)),
            disk_bytes: self.disk_mib * 1024 * 1024,
            data_parent,
            sink: !self.no_sink,
            moto: self.moto,
            endpoint,
            resident_blocks: self.resident_mib * 2,
            json: self.json,
            perf_control: self.perf_control.as_deref().map(PerfControl::parse),
            perf_target: self.perf_target,
            smoke: false,
            engines,
            nodes: self.nodes,
        })
    }

    /// `--metadata`, `--chunks` and the `--s3-*` settings, checked as `strata serve`
    /// checks them (the same parsers), plus what the raw S3 client needs.
    fn engines(&self) -> anyhow::Result<SharedEngines> {
        let postgres = match self.metadata.as_deref().map(MetadataBackend::parse) {
            None | Some(Ok(MetadataBackend::Embedded)) => None,
            Some(Ok(MetadataBackend::Postgres(url))) => Some(url),
            Some(Err(error)) => return Err(error),
        };
        let chunk_options = ChunkOptions {
            chunks: self.chunks.clone(),
            s3_endpoint: self.s3_endpoint.clone(),
            s3_region: Some(self.s3_region.clone()),
            s3_access_key_id: self.s3_access_key_id.clone(),
            s3_secret_access_key: self.s3_secret_access_key.clone(),
        };
        let s3 = match (&self.chunks, chunk_options.resolve()) {
            (None, _) => None,
            (Some(chunks), _) if chunks == "embedded" => None,
            (Some(chunks), Ok(_)) => Some(S3Bucket::parse(
                chunks,
                self.s3_endpoint.as_deref(),
                &self.s3_region,
                self.s3_access_key_id.clone().unwrap_or_default(),
                self.s3_secret_access_key.clone().unwrap_or_default(),
            )?),
            (Some(_), Err(error)) => return Err(error),
        };
        Ok(SharedEngines { postgres, s3 })
    }
}
