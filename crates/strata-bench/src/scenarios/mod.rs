//! The scenarios of issue 5. Each runs against one [`Instance`] and returns one
//! [`Measurement`]; setup (creating snapshots, uploading what a reader needs) happens
//! before the timed window and is never counted.
//!
//! | scenario | timed window |
//! |---|---|
//! | `put` | N distinct blocks at concurrency C (Complete after, timed apart) |
//! | `put-dup` | N puts of one block already stored |
//! | `get` | listing a completed snapshot of N blocks + N verified GETs at C |
//! | `list` | ListSnapshotBlocks over a big snapshot; ListChangedBlocks over two lineages |
//! | `start` | StartSnapshot + CompleteSnapshot(0) pairs at the start concurrency |
//! | `mixed` | uploads to 4 snapshots and verified reads of another, at once |
//! | `complete-big` | CompleteSnapshot of N seeded pending writes while Puts go on into another snapshot (Strata only, self-started; run only when named) |
//! | `overload` | idle and half-open connections, a trickled body, 10× the memory budget in Puts (Strata only, its own server with tight limits; run only when named) |
//!
//! The raw S3 target runs only `put` and `get`, on objects instead of blocks
//! ([`raw_s3`]).

mod complete;
mod get;
mod list;
mod mixed;
pub mod overload;
mod put;
mod raw_s3;
mod start;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use list::{ListFixture, prepare as prepare_list};
use strata_types::BLOCKS_PER_GIB;
use tokio::task::JoinSet;

use crate::client::{ClientError, EbsClient};
use crate::cpu::{CpuMeter, CpuSpan, CpuUse, RssPeak};
use crate::options::BenchOptions;
use crate::payloads::PayloadSet;
use crate::profile::PerfControl;
use crate::report::{Measurement, to_u64};
use crate::targets::{Instance, Launcher, TargetKind};

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// N distinct random blocks at concurrency C, then Complete.
    Put,
    /// The same content N times (the dedup path).
    PutDup,
    /// List + verified GETs of a completed snapshot.
    Get,
    /// ListSnapshotBlocks over a big snapshot; ListChangedBlocks over lineages.
    List,
    /// StartSnapshot + CompleteSnapshot(0 blocks) round trips.
    Start,
    /// Several uploads and readers at once.
    Mixed,
    /// Hostile and excessive load on a server with tight limits (only when named).
    Overload,
    /// CompleteSnapshot of millions of pending writes during Puts (only when named).
    CompleteBig,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 6] = [
        Scenario::Put,
        Scenario::PutDup,
        Scenario::Get,
        Scenario::List,
        Scenario::Start,
        Scenario::Mixed,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Put => "put",
            Scenario::PutDup => "put-dup",
            Scenario::Get => "get",
            Scenario::List => "list",
            Scenario::Start => "start",
            Scenario::Mixed => "mixed",
            Scenario::Overload => "overload",
            Scenario::CompleteBig => "complete-big",
        }
    }

    /// Whether the scenario is measured on `kind`. Comparing with the sink means nothing
    /// for `list` (the sink stores nothing, so its listings are not a ceiling of
    /// Strata's); a bare object store has only puts and gets, and a put of stored content
    /// costs it what any put does.
    pub fn measures(self, kind: TargetKind) -> bool {
        match kind {
            _ if matches!(self, Scenario::Overload | Scenario::CompleteBig) => {
                kind == TargetKind::Strata
            }
            TargetKind::Sink => self != Scenario::List,
            TargetKind::S3 => matches!(self, Scenario::Put | Scenario::Get),
            TargetKind::Strata | TargetKind::Endpoint | TargetKind::Moto => true,
        }
    }
}

/// Payload families: distinct families never share a block.
pub mod families {
    /// Blocks uploaded by `put`, `get` and the `mixed` readers' fixture.
    pub const MAIN: u64 = 1;
    /// Blocks uploaded by the `mixed` writers.
    pub const MIXED_WRITERS: u64 = 2;
    /// The small pool of the `list` fixture.
    pub const LIST_POOL: u64 = 3;
    /// The pool of the `complete-big` scenario's seeded writes.
    pub const COMPLETE_POOL: u64 = 4;
}

/// What every scenario run gets.
pub struct RunContext<'a> {
    /// The options.
    pub options: &'a BenchOptions,
    /// Precomputed distinct blocks (family [`families::MAIN`]).
    pub payloads: &'a PayloadSet,
    /// Blocks of the `mixed` writers (family [`families::MIXED_WRITERS`]).
    pub mixed_payloads: &'a PayloadSet,
    /// Starts targets and reaches the server runtime.
    pub launcher: &'a Launcher,
    /// 1-based repeat number.
    pub run: usize,
}

impl RunContext<'_> {
    /// When the timed phase must stop taking new work.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.options.max_phase
    }
}

/// Run one scenario (not `list`, which needs its fixture: see [`list::measure`]).
pub async fn run(
    scenario: Scenario,
    context: &RunContext<'_>,
    instance: &Instance,
) -> anyhow::Result<Measurement> {
    if instance.kind == TargetKind::S3 {
        return match scenario {
            Scenario::Put => raw_s3::put(context, instance).await,
            Scenario::Get => raw_s3::get(context, instance).await,
            _ => anyhow::bail!("{} does not run on raw S3", scenario.name()),
        };
    }
    match scenario {
        Scenario::Put => put::distinct(context, instance).await,
        Scenario::PutDup => put::duplicate(context, instance).await,
        Scenario::Get => get::run(context, instance).await,
        Scenario::Start => start::run(context, instance).await,
        Scenario::Mixed => mixed::run(context, instance).await,
        Scenario::List => anyhow::bail!("the list scenario runs on its fixture"),
        Scenario::Overload => anyhow::bail!("the overload scenario starts its own server"),
        Scenario::CompleteBig => anyhow::bail!("the complete-big scenario seeds its own server"),
    }
}

pub use complete::run as run_complete_big;
pub use list::measure as measure_list;

/// The smallest volume holding `blocks` blocks (at least 1 GiB).
pub fn volume_gib(blocks: usize) -> u64 {
    to_u64(blocks).div_ceil(BLOCKS_PER_GIB).max(1)
}

/// The outcome of a pool of workers over a numbered set of operations.
#[derive(Debug, Default)]
pub struct PoolOutcome {
    /// Operations attempted.
    pub ops: u64,
    /// Operations that succeeded.
    pub ok: u64,
    /// Payload bytes of successful operations.
    pub bytes: u64,
    /// Failed operations.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Latency of every operation.
    pub latencies: Vec<Duration>,
    /// Wall time of the pool.
    pub elapsed: Duration,
}

impl PoolOutcome {
    fn absorb(&mut self, other: PoolOutcome) {
        self.ops += other.ops;
        self.ok += other.ok;
        self.bytes += other.bytes;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }

    /// Turn any failure into an error (for setup phases, which must succeed).
    pub fn require_success(&self, what: &str) -> anyhow::Result<()> {
        match &self.first_error {
            None => Ok(()),
            Some(error) => anyhow::bail!("{what}: {} of {} failed: {error}", self.errors, self.ops),
        }
    }
}

/// Run operations `0..count` on `concurrency` workers of the current (client) runtime;
/// each worker takes the next number until none is left or `deadline` passed. `op`
/// returns the payload bytes moved.
pub async fn run_pool<F, Fut>(
    concurrency: usize,
    count: usize,
    deadline: Instant,
    op: F,
) -> PoolOutcome
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, ClientError>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let (op, next) = (Arc::clone(&op), Arc::clone(&next));
        workers.spawn(async move {
            let mut outcome = PoolOutcome::default();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count || Instant::now() >= deadline {
                    break outcome;
                }
                let sent = Instant::now();
                let result = op(n).await;
                outcome.latencies.push(sent.elapsed());
                outcome.ops += 1;
                match result {
                    Ok(bytes) => {
                        outcome.ok += 1;
                        outcome.bytes += bytes;
                    }
                    Err(error) => {
                        outcome.errors += 1;
                        if outcome.first_error.is_none() {
                            outcome.first_error = Some(error.to_string());
                        }
                    }
                }
            }
        });
    }
    let mut total = PoolOutcome::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(outcome) => total.absorb(outcome),
            Err(error) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("worker failed: {error}"));
            }
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Upload blocks `indexes` of a snapshot (setup, untimed): index `indexes[n]` gets
/// `payload(n)`. Fails on the first error.
pub async fn upload(
    client: &EbsClient,
    snapshot: &str,
    indexes: Arc<Vec<u32>>,
    payloads: PayloadSet,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (client, snapshot) = (client.clone(), Arc::new(snapshot.to_owned()));
    let count = indexes.len();
    let far = Instant::now() + Duration::from_secs(24 * 3600);
    let outcome = run_pool(concurrency, count, far, move |n| {
        let (client, snapshot, indexes) =
            (client.clone(), Arc::clone(&snapshot), Arc::clone(&indexes));
        let payload = payloads.get(n);
        async move {
            client.put_block(&snapshot, indexes[n], &payload).await?;
            Ok(0)
        }
    })
    .await;
    outcome.require_success("setup upload")
}

/// The timed window: CPU of client and server, and the server's (or process's) RSS.
pub struct Window {
    cpu: CpuSpan,
    rss: RssPeak,
    rss_pid: Option<u32>,
    perf: Option<PerfControl>,
}

impl Window {
    /// Open the window for `instance` (call on the client runtime).
    pub fn open(context: &RunContext<'_>, instance: &Instance) -> Self {
        let profiled = context
            .options
            .perf_target
            .is_none_or(|kind| kind == instance.kind);
        let perf = context.options.perf_control.clone().filter(|_| profiled);
        if let Some(perf) = &perf {
            perf.send("enable");
        }
        Self {
            cpu: CpuMeter::new(instance.cpu.clone()).start(),
            rss: RssPeak::start(instance.rss_pid),
            rss_pid: instance.rss_pid,
            perf,
        }
    }

    /// Close it: CPU used, and peak RSS labelled `server` (a separate process) or
    /// `process` (the server shares this process with the client and its payloads).
    pub fn close(self) -> (CpuUse, Option<(&'static str, f64)>) {
        let cpu = self.cpu.finish();
        if let Some(perf) = &self.perf {
            perf.send("disable");
        }
        let whose = if self.rss_pid.is_some() {
            "server"
        } else {
            "process"
        };
        let rss = self.rss.finish(self.rss_pid).map(|mib| (whose, mib));
        (cpu, rss)
    }
}

/// Assemble a measurement from a pool outcome.
pub fn measurement(
    scenario: Scenario,
    context: &RunContext<'_>,
    instance: &Instance,
    outcome: PoolOutcome,
    window: (CpuUse, Option<(&'static str, f64)>),
    extra: Vec<(&'static str, f64)>,
) -> Measurement {
    Measurement {
        scenario: scenario.name(),
        target: instance.kind.name(),
        run: context.run,
        ops: outcome.ops,
        bytes: outcome.bytes,
        elapsed: outcome.elapsed,
        latencies: outcome.latencies,
        errors: outcome.errors,
        first_error: outcome.first_error,
        cpu: window.0,
        rss: window.1,
        extra,
        load1: crate::cpu::load_average(),
    }
}

/// Milliseconds, for extra figures.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
