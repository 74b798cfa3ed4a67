//! `/metrics`: the server's figures in the Prometheus text format (version 0.0.4), kept and
//! encoded by `prometheus-client`.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `strata_requests_total{operation,status}` | counter | requests answered, by operation and HTTP status |
//! | `strata_request_duration_seconds{operation,status}` | histogram | from the request head to the response head |
//! | `strata_request_bytes_total{operation}` | counter | request body bytes read |
//! | `strata_response_bytes_total{operation}` | counter | response body bytes sent (as announced by the response) |
//! | `strata_blocks_written_total` | counter | acknowledged PutSnapshotBlock requests |
//! | `strata_blocks_deduplicated_total` | counter | of those, blocks whose content was stored already |
//! | `strata_zero_blocks_total` | counter | of those, all-zero blocks (never stored) |
//! | `strata_block_bytes_written_total` | counter | logical bytes written (blocks × 512 KiB) |
//! | `strata_block_bytes_stored_total` | counter | bytes of new content stored for them (the rest was deduplicated or zero) |
//! | `strata_snapshots{status}` | gauge | snapshots by status (`pending`, `completed`, `error`), counted at each scrape |
//! | `strata_gc_runs_total{mode,result}` | counter | collections (`mode` `collect` or `dry_run`; `result` `ok`, `failed` or `busy`) |
//! | `strata_gc_duration_seconds{mode}` | histogram | how long collections took (also failed ones) |
//! | `strata_gc_freed_bytes_total` | counter | chunk bytes garbage collection freed |
//! | `strata_gc_deleted_chunks_total` | counter | chunks garbage collection deleted |
//! | `strata_scrub_runs_total{result}` | counter | scrubs (`ok`, `failed` or `busy`) |
//! | `strata_scrub_checked_chunks_total` | counter | chunks a scrub read back and checked |
//! | `strata_scrub_checked_bytes_total` | counter | their bytes |
//! | `strata_scrub_findings_total{kind}` | counter | what scrubs found (`damaged_chunk`, `missing_chunk`, `damaged_node`) |
//! | `strata_build_info{version,commit}` | gauge | always 1 |
//!
//! Counters start at zero with the process. The operation label is one of a closed set
//! (the EBS and EC2 operation names, `Admin*`, `Metrics`, `Unknown`), never taken from the
//! request as sent, so a client cannot grow the number of series.
//!
//! Who may read them: on the API listener, `GET /metrics` signed with SigV4 for the service
//! `strata` by a key of the root account (the figures cover every account); and, when
//! `metrics_listen` is set, unauthenticated on that second address (bind it to an address
//! only the scraper reaches).

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use strata_core::stats::{ServiceStats, SnapshotCounts};
use strata_wire::admin::{GcSummary, LastRun, ScrubSummary};

use crate::app::StrataService;
use crate::error::ApiError;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GcLabels {
    mode: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GcModeLabels {
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latencies: 0.25 ms to about 8 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Collection times: 1 ms to about 17 min.
fn gc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 11))
}

/// How a garbage collection ended, for [`Metrics::observe_gc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcOutcome {
    /// It ran; this many chunks and bytes were freed (0 for a dry run).
    Done {
        /// Chunks deleted.
        chunks_deleted: u64,
        /// Bytes freed.
        bytes_freed: u64,
    },
    /// Another collection held the lease.
    Busy,
    /// It failed.
    Failed,
}

/// Every metric of the server, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<RequestLabels>,
    bytes_in: Family<OperationLabels, Counter>,
    bytes_out: Family<OperationLabels, Counter>,
    snapshots: Family<StatusLabels, Gauge>,
    gc_runs: Family<GcLabels, Counter>,
    gc_durations: HistogramFamily<GcModeLabels>,
    gc_freed_bytes: Counter,
    gc_deleted_chunks: Counter,
    scrub_runs: Family<ResultLabels, Counter>,
    scrub_checked_chunks: Counter,
    scrub_checked_bytes: Counter,
    scrub_findings: Family<KindLabels, Counter>,
    /// The same request figures summed over every operation, for the console's
    /// throughput (summing the families would walk every series at each poll).
    totals: Totals,
    /// What the console shows of the last collection and scrub.
    last_gc: Mutex<Option<LastRun<GcSummary>>>,
    last_scrub: Mutex<Option<LastRun<ScrubSummary>>>,
}

/// Request counters summed over every operation.
#[derive(Debug, Default)]
struct Totals {
    requests: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// [`Metrics::totals`]: requests answered, body bytes in and out, since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTotals {
    /// Requests answered.
    pub requests: u64,
    /// Request body bytes read.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// How a scrub ended, for [`Metrics::observe_scrub`].
#[derive(Debug, Clone, Copy)]
pub enum ScrubOutcome<'a> {
    /// It ran to the end.
    Done(&'a strata_core::service::ScrubReport),
    /// Another scrub held the lease.
    Busy,
    /// It failed.
    Failed,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// The metrics of a server over `service`, whose counters ([`ServiceStats`]) are read
    /// at each scrape.
    pub fn new(service: StrataService) -> Self {
        let mut registry = Registry::with_prefix("strata");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by operation and HTTP status",
            requests.clone(),
        );
        let durations: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from the request head to the response head",
            Unit::Seconds,
            durations.clone(),
        );
        let bytes_in = Family::<OperationLabels, Counter>::default();
        registry.register("request_bytes", "Request body bytes read", bytes_in.clone());
        let bytes_out = Family::<OperationLabels, Counter>::default();
        registry.register(
            "response_bytes",
            "Response body bytes sent",
            bytes_out.clone(),
        );
        let snapshots = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "snapshots",
            "Snapshots by status, counted at the scrape",
            snapshots.clone(),
        );
        let gc_runs = Family::<GcLabels, Counter>::default();
        registry.register(
            "gc_runs",
            "Garbage collections, by mode (collect, dry_run) and result (ok, failed, busy)",
            gc_runs.clone(),
        );
        let gc_durations: HistogramFamily<GcModeLabels> =
            Family::new_with_constructor(gc_histogram);
        registry.register_with_unit(
            "gc_duration",
            "How long garbage collections took",
            Unit::Seconds,
            gc_durations.clone(),
        );
        let gc_freed_bytes = Counter::default();
        registry.register(
            "gc_freed_bytes",
            "Chunk bytes freed by garbage collection",
            gc_freed_bytes.clone(),
        );
        let gc_deleted_chunks = Counter::default();
        registry.register(
            "gc_deleted_chunks",
            "Chunks deleted by garbage collection",
            gc_deleted_chunks.clone(),
        );
        let scrub_runs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "scrub_runs",
            "Scrubs, by result (ok, failed, busy)",
            scrub_runs.clone(),
        );
        let scrub_checked_chunks = Counter::default();
        registry.register(
            "scrub_checked_chunks",
            "Chunks read back and checked by scrubs",
            scrub_checked_chunks.clone(),
        );
        let scrub_checked_bytes = Counter::default();
        registry.register(
            "scrub_checked_bytes",
            "Chunk bytes read back and checked by scrubs",
            scrub_checked_bytes.clone(),
        );
        let scrub_findings = Family::<KindLabels, Counter>::default();
        registry.register(
            "scrub_findings",
            "What scrubs found, by kind (damaged_chunk, missing_chunk, damaged_node)",
            scrub_findings.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: crate::build::VERSION,
                commit: crate::build::COMMIT,
            })
            .set(1);
        registry.register("build_info", "The running build", build);
        registry.register_collector(Box::new(StatsCollector(service)));
        Self {
            registry,
            requests,
            durations,
            bytes_in,
            bytes_out,
            snapshots,
            gc_runs,
            gc_durations,
            gc_freed_bytes,
            gc_deleted_chunks,
            scrub_runs,
            scrub_checked_chunks,
            scrub_checked_bytes,
            scrub_findings,
            totals: Totals::default(),
            last_gc: Mutex::new(None),
            last_scrub: Mutex::new(None),
        }
    }

    /// Requests and bytes since start, over every operation.
    pub fn totals(&self) -> RequestTotals {
        RequestTotals {
            requests: self.totals.requests.load(Ordering::Relaxed),
            bytes_in: self.totals.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.totals.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Remember how the last garbage collection ended.
    pub fn set_last_gc(&self, run: LastRun<GcSummary>) {
        // A poisoned lock only means a panic while replacing a value: the value is whole.
        *self.last_gc.lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
    }

    /// Remember how the last scrub ended.
    pub fn set_last_scrub(&self, run: LastRun<ScrubSummary>) {
        *self.last_scrub.lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
    }

    /// The last garbage collection of this process.
    pub fn last_gc(&self) -> Option<LastRun<GcSummary>> {
        self.last_gc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The last scrub of this process.
    pub fn last_scrub(&self) -> Option<LastRun<ScrubSummary>> {
        self.last_scrub
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Count one scrub.
    pub fn observe_scrub(&self, outcome: ScrubOutcome<'_>) {
        use strata_core::service::ChunkFault;
        let result = match outcome {
            ScrubOutcome::Done(report) => {
                self.scrub_checked_chunks.inc_by(report.chunks_checked);
                self.scrub_checked_bytes.inc_by(report.bytes_checked);
                for finding in &report.chunks {
                    let kind = match finding.fault {
                        ChunkFault::Damaged(_) => "damaged_chunk",
                        ChunkFault::Missing => "missing_chunk",
                    };
                    self.scrub_findings
                        .get_or_create(&KindLabels { kind })
                        .inc();
                }
                self.scrub_findings
                    .get_or_create(&KindLabels {
                        kind: "damaged_node",
                    })
                    .inc_by(report.nodes.len() as u64);
                "ok"
            }
            ScrubOutcome::Busy => "busy",
            ScrubOutcome::Failed => "failed",
        };
        self.scrub_runs
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Count one answered request of `operation` (a name from the closed set).
    pub fn observe_request(
        &self,
        operation: &'static str,
        status: u16,
        duration: Duration,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let labels = RequestLabels { operation, status };
        self.requests.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(duration.as_secs_f64());
        let operation = OperationLabels { operation };
        self.bytes_in.get_or_create(&operation).inc_by(bytes_in);
        self.bytes_out.get_or_create(&operation).inc_by(bytes_out);
        self.totals.requests.fetch_add(1, Ordering::Relaxed);
        self.totals.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        self.totals
            .bytes_out
            .fetch_add(bytes_out, Ordering::Relaxed);
    }

    /// Count one garbage collection.
    pub fn observe_gc(&self, dry_run: bool, duration: Duration, outcome: GcOutcome) {
        let mode = if dry_run { "dry_run" } else { "collect" };
        let result = match outcome {
            GcOutcome::Done {
                chunks_deleted,
                bytes_freed,
            } => {
                self.gc_deleted_chunks.inc_by(chunks_deleted);
                self.gc_freed_bytes.inc_by(bytes_freed);
                "ok"
            }
            GcOutcome::Busy => "busy",
            GcOutcome::Failed => "failed",
        };
        self.gc_runs.get_or_create(&GcLabels { mode, result }).inc();
        self.gc_durations
            .get_or_create(&GcModeLabels { mode })
            .observe(duration.as_secs_f64());
    }

    /// Everything, in the Prometheus text format: the snapshot counts are taken from
    /// `service`'s metadata first (one listing of every record), as of `now_ms`.
    pub async fn render(&self, service: &StrataService, now_ms: i64) -> Result<String, ApiError> {
        use strata_core::ports::MetadataStore;
        let records = service
            .metadata()
            .list_snapshots(None)
            .await
            .map_err(strata_core::ServiceError::from)?;
        let counts = SnapshotCounts::of(&records, now_ms);
        for (status, count) in [
            ("pending", counts.pending),
            ("completed", counts.completed),
            ("error", counts.error),
        ] {
            self.snapshots
                .get_or_create(&StatusLabels { status })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .map_err(|_| ApiError::internal("cannot encode the metrics"))?;
        Ok(text)
    }
}

/// Reads the service's [`ServiceStats`] at each scrape.
struct StatsCollector(StrataService);

impl fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StatsCollector").finish_non_exhaustive()
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats: &ServiceStats = self.0.stats();
        let now = stats.snapshot();
        for (name, help, value) in [
            (
                "blocks_written",
                "Acknowledged PutSnapshotBlock requests.",
                now.blocks_written,
            ),
            (
                "blocks_deduplicated",
                "Blocks written whose content was stored already.",
                now.blocks_deduplicated,
            ),
            (
                "zero_blocks",
                "All-zero blocks written (recorded, never stored).",
                now.zero_blocks,
            ),
            (
                "block_bytes_written",
                "Logical bytes written (blocks of 512 KiB).",
                now.logical_bytes_written(),
            ),
            (
                "block_bytes_stored",
                "Bytes of new content stored for the blocks written.",
                now.bytes_stored(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}
