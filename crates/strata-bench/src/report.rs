//! What a run measured, and how it is printed: one `key=value` line (or one JSON object
//! with `--json`) per run, then per scenario and target the median and range over the
//! repeats, the ratios to the sink, to moto and to raw S3, and the targets checked: issue
//! 5's on embedded stores, the PostgreSQL + S3 issue's on shared ones.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::cpu::CpuUse;
use crate::disk::DiskRate;
use crate::options::BenchOptions;
use crate::targets::TargetKind;

const MIB: f64 = 1024.0 * 1024.0;

/// A printable value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A measured number.
    Num(f64),
    /// A count.
    Int(u64),
    /// Text (no spaces, so `key=value` stays splittable; spaces become `_`).
    Text(String),
}

/// One output line: a kind and ordered fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `run`, `disk`, `summary`, `ratio`, `target`.
    pub kind: &'static str,
    /// Ordered fields.
    pub fields: Vec<(String, Value)>,
}

impl Record {
    pub(crate) fn new(kind: &'static str) -> Self {
        Self {
            kind,
            fields: Vec::new(),
        }
    }

    pub(crate) fn text(mut self, key: &str, value: impl Into<String>) -> Self {
        self.fields.push((key.into(), Value::Text(value.into())));
        self
    }

    pub(crate) fn num(mut self, key: &str, value: f64) -> Self {
        self.fields.push((key.into(), Value::Num(value)));
        self
    }

    pub(crate) fn int(mut self, key: &str, value: u64) -> Self {
        self.fields.push((key.into(), Value::Int(value)));
        self
    }

    /// `kind key=value ...`, numbers with up to 4 significant decimals.
    pub fn to_line(&self) -> String {
        let mut line = self.kind.to_owned();
        for (key, value) in &self.fields {
            let _ = match value {
                Value::Num(n) => write!(line, " {key}={}", format_num(*n)),
                Value::Int(n) => write!(line, " {key}={n}"),
                Value::Text(t) => write!(line, " {key}={}", t.replace(char::is_whitespace, "_")),
            };
        }
        line
    }

    /// One JSON object, with `"kind"` first.
    pub fn to_json(&self) -> String {
        let mut object = serde_json::Map::new();
        object.insert("kind".into(), self.kind.into());
        for (key, value) in &self.fields {
            let json = match value {
                Value::Num(n) => serde_json::Number::from_f64(*n)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                Value::Int(n) => (*n).into(),
                Value::Text(t) => t.clone().into(),
            };
            object.insert(key.clone(), json);
        }
        serde_json::Value::Object(object).to_string()
    }
}

fn format_num(n: f64) -> String {
    if n.abs() >= 100.0 {
        format!("{n:.1}")
    } else if n.abs() >= 1.0 {
        format!("{n:.2}")
    } else {
        format!("{n:.4}")
    }
}

/// What one measured run of one scenario on one target gave.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Scenario name.
    pub scenario: &'static str,
    /// Target name.
    pub target: &'static str,
    /// 1-based repeat number.
    pub run: usize,
    /// Operations completed (successful or not) in the timed window.
    pub ops: u64,
    /// Payload bytes moved by successful operations.
    pub bytes: u64,
    /// The timed window.
    pub elapsed: Duration,
    /// Latency of each operation.
    pub latencies: Vec<Duration>,
    /// Failed operations.
    pub errors: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// CPU over the timed window.
    pub cpu: CpuUse,
    /// Peak RSS during the window, MiB, and whose (`server` or `process`).
    pub rss: Option<(&'static str, f64)>,
    /// Scenario-specific figures, in print order.
    pub extra: Vec<(&'static str, f64)>,
    /// The machine's 1-minute load average at the end of the window.
    pub load1: Option<f64>,
}

impl Measurement {
    fn secs(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    /// MiB/s of payload.
    pub fn mib_s(&self) -> f64 {
        to_f64(self.bytes) / MIB / self.secs()
    }

    /// Operations per second.
    pub fn ops_s(&self) -> f64 {
        to_f64(self.ops) / self.secs()
    }

    /// Latency percentile in milliseconds (nearest rank), 0 when nothing ran.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).as_secs_f64() * 1000.0
    }

    /// The figures compared across targets and repeats, by name.
    pub fn figures(&self) -> Vec<(&'static str, f64)> {
        let mut figures = Vec::new();
        // Scenarios that move no payload (start, list) have no MiB/s to compare.
        if self.bytes > 0 {
            figures.push(("mib_s", self.mib_s()));
        }
        figures.extend([
            ("ops_s", self.ops_s()),
            ("p50_ms", self.percentile_ms(50.0)),
            ("p99_ms", self.percentile_ms(99.0)),
            ("client_cpu", self.cpu.client_cores),
        ]);
        if let Some(server) = self.cpu.server_cores {
            figures.push(("server_cpu", server));
        }
        if let Some((_, rss)) = self.rss {
            figures.push(("rss_mib", rss));
        }
        figures.extend(self.extra.iter().copied());
        figures
    }

    /// The `run` line.
    pub fn record(&self) -> Record {
        let mut record = Record::new("run")
            .text("scenario", self.scenario)
            .text("target", self.target)
            .int("run", to_u64(self.run))
            .int("ops", self.ops)
            .num("secs", self.secs());
        if self.bytes > 0 {
            record = record.num("mib_s", self.mib_s());
        }
        record = record
            .num("ops_s", self.ops_s())
            .num("p50_ms", self.percentile_ms(50.0))
            .num("p99_ms", self.percentile_ms(99.0))
            .int("errors", self.errors)
            .num("client_cpu", self.cpu.client_cores);
        record = match self.cpu.server_cores {
            Some(server) => record.num("server_cpu", server),
            None => record.text("server_cpu", "unknown"),
        };
        if let Some((whose, rss)) = self.rss {
            record = record.num(&format!("{whose}_rss_mib"), rss);
        }
        for (key, value) in &self.extra {
            record = record.num(key, *value);
        }
        if let Some(load) = self.load1 {
            record = record.num("load1", load);
        }
        if let Some(error) = &self.first_error {
            record = record.text("first_error", error.chars().take(200).collect::<String>());
        }
        record
    }
}

/// Nearest-rank percentile of unsorted durations.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = (p / 100.0 * to_f64(to_u64(sorted.len()))).ceil();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rank is in 1..=len
    let index = (rank as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Median (upper median for an even count), minimum and maximum.
pub fn median_range(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some((
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
    ))
}

/// A disk baseline of one repeat.
#[derive(Debug, Clone)]
pub struct DiskMeasurement {
    /// 1-based repeat number.
    pub run: usize,
    /// [`DIRECT`], [`BUFFERED`] (the filesystem refused O_DIRECT), [`DIRECT_READ`] or
    /// [`CACHED_READ`].
    pub mode: &'static str,
    /// What was written, how fast.
    pub rate: DiskRate,
    /// The directory written to.
    pub dir: String,
}

/// Streaming O_DIRECT writes.
pub const DIRECT: &str = "o_direct";
/// Streaming buffered writes and one fsync (where O_DIRECT is refused).
pub const BUFFERED: &str = "buffered_fsync";
/// Concurrent 512 KiB O_DIRECT reads.
pub const DIRECT_READ: &str = "o_direct_read";
/// The same reads served by the page cache (where O_DIRECT is refused).
pub const CACHED_READ: &str = "cached_read";

impl DiskMeasurement {
    /// MiB/s.
    pub fn mib_s(&self) -> f64 {
        to_f64(self.rate.bytes) / MIB / self.rate.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `disk` line.
    pub fn record(&self) -> Record {
        Record::new("disk")
            .int("run", to_u64(self.run))
            .text("mode", self.mode)
            .int("mib", self.rate.bytes / (1024 * 1024))
            .num("secs", self.rate.elapsed.as_secs_f64())
            .num("mib_s", self.mib_s())
            .text("dir", self.dir.clone())
    }
}

/// The headline figure of a scenario, and the target ratio checks are made on it.
pub fn headline(scenario: &str) -> &'static str {
    match scenario {
        "start" => "ops_s",
        "list" => "entries_s",
        _ => "mib_s",
    }
}

/// The first line: what is measured, with which sizes, on how many cores.
pub fn setup_record(options: &BenchOptions, targets: &[TargetKind], prepared: Duration) -> Record {
    let names = |list: Vec<&str>| list.join(",");
    Record::new("setup")
        .int(
            "cores",
            to_u64(std::thread::available_parallelism().map_or(0, std::num::NonZero::get)),
        )
        .text(
            "scenarios",
            names(options.scenarios.iter().map(|s| s.name()).collect()),
        )
        .text("targets", names(targets.iter().map(|t| t.name()).collect()))
        .int("blocks", to_u64(options.blocks))
        .int("concurrency", to_u64(options.concurrency))
        .int("start_pairs", to_u64(options.start_pairs))
        .int("start_concurrency", to_u64(options.start_concurrency))
        .int("list_blocks", to_u64(options.list_blocks))
        .int("repeat", to_u64(options.repeat))
        .text("metadata", options.engines.describe().0)
        .text("chunks", options.engines.describe().1)
        .int("nodes", to_u64(options.nodes))
        .text("data_dir", options.data_parent.display().to_string())
        .num("payload_prep_secs", prepared.as_secs_f64())
        .num("load1", crate::cpu::load_average().unwrap_or(f64::NAN))
}

/// The list fixture of a target is ready.
pub fn fixture_record(target: &str, blocks: usize, took: Duration) -> Record {
    Record::new("fixture")
        .text("scenario", "list")
        .text("target", target)
        .int("blocks", to_u64(blocks))
        .num("secs", took.as_secs_f64())
}

/// The raw S3 target's name in reports.
const RAW_S3: &str = "raw-s3";

/// What Strata ran on, which decides the goals it is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    /// Metadata on PostgreSQL.
    pub postgres: bool,
    /// Chunks on S3.
    pub s3: bool,
    /// Nodes sharing the stores.
    pub nodes: usize,
}

impl Default for Deployment {
    /// One node on the embedded stores.
    fn default() -> Self {
        Self {
            postgres: false,
            s3: false,
            nodes: 1,
        }
    }
}

/// Everything measured in one invocation, for the closing lines.
#[derive(Debug, Default)]
pub struct Results {
    runs: Vec<Measurement>,
    disk: Vec<DiskMeasurement>,
    failures: u64,
    deployment: Deployment,
}

impl Results {
    /// Results of Strata on `deployment`.
    pub fn for_deployment(deployment: Deployment) -> Self {
        Self {
            deployment,
            ..Self::default()
        }
    }

    /// Keep a run.
    pub fn add(&mut self, measurement: Measurement) {
        self.runs.push(measurement);
    }

    /// Keep a disk baseline.
    pub fn add_disk(&mut self, disk: DiskMeasurement) {
        self.disk.push(disk);
    }

    /// Note a run that could not be measured at all; returns its `error` line.
    pub fn failure(&mut self, scenario: &str, target: &str, error: &anyhow::Error) -> Record {
        if target != "moto" {
            self.failures += 1;
        }
        Record::new("error")
            .text("scenario", scenario)
            .text("target", target)
            .text("message", format!("{error:#}"))
    }

    /// Failed operations over every run, plus runs that failed as a whole. moto's own
    /// failures are reported in its lines but not counted: they are moto's gaps (it has
    /// no lineages, for one), not the harness's or Strata's.
    pub fn total_errors(&self) -> u64 {
        let operations: u64 = self
            .runs
            .iter()
            .filter(|m| m.target != "moto")
            .map(|m| m.errors)
            .sum();
        operations + self.failures
    }

    /// The runs kept so far.
    pub fn runs(&self) -> &[Measurement] {
        &self.runs
    }

    fn figure_by_run(&self, scenario: &str, target: &str, figure: &str) -> BTreeMap<usize, f64> {
        self.runs
            .iter()
            .filter(|m| m.scenario == scenario && m.target == target)
            .filter_map(|m| {
                m.figures()
                    .into_iter()
                    .find(|(name, _)| *name == figure)
                    .map(|(_, v)| (m.run, v))
            })
            .collect()
    }

    /// A disk baseline per run: `modes` are the write (put ceiling) or read (get) ones.
    fn disk_by_run(&self, modes: &[&str]) -> BTreeMap<usize, f64> {
        self.disk
            .iter()
            .filter(|d| modes.contains(&d.mode))
            .map(|d| (d.run, d.mib_s()))
            .collect()
    }

    /// Per run, `scenario`'s MiB/s over min(sink, disk baseline of `modes`) of that run.
    fn ratios_to_ceiling(&self, scenario: &str, subject: &str, modes: &[&str]) -> Vec<f64> {
        let sink = self.figure_by_run(scenario, "sink", "mib_s");
        let disk = self.disk_by_run(modes);
        self.figure_by_run(scenario, subject, "mib_s")
            .iter()
            .filter_map(|(run, v)| {
                let ceiling = match (sink.get(run), disk.get(run)) {
                    (Some(s), Some(d)) => s.min(*d),
                    (Some(s), None) => *s,
                    (None, Some(d)) => *d,
                    (None, None) => return None,
                };
                Some(v / ceiling)
            })
            .collect()
    }

    /// Median and range per scenario, target and figure; ratios to the sink and moto;
    /// and, with `check_targets`, issue 5's goals (meaningless at smoke sizes).
    pub fn summary(&self, check_targets: bool) -> Vec<Record> {
        let mut records = Vec::new();
        let mut groups: Vec<(&'static str, &'static str)> = Vec::new();
        for m in &self.runs {
            if !groups.contains(&(m.scenario, m.target)) {
                groups.push((m.scenario, m.target));
            }
        }
        for (scenario, target) in &groups {
            let runs: Vec<&Measurement> = self
                .runs
                .iter()
                .filter(|m| m.scenario == *scenario && m.target == *target)
                .collect();
            let mut record = Record::new("summary")
                .text("scenario", *scenario)
                .text("target", *target)
                .int("runs", to_u64(runs.len()))
                .int("errors", runs.iter().map(|m| m.errors).sum());
            let names: Vec<&'static str> = runs[0].figures().iter().map(|(n, _)| *n).collect();
            for name in names {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|m| m.figures().into_iter().find(|(n, _)| *n == name))
                    .map(|(_, v)| v)
                    .collect();
                if let Some((median, min, max)) = median_range(&values) {
                    record = record.num(name, median).text(
                        &format!("{name}_range"),
                        format!("{}..{}", format_num(min), format_num(max)),
                    );
                }
            }
            records.push(record);
        }
        let mut modes: Vec<&'static str> = Vec::new();
        for disk in &self.disk {
            if !modes.contains(&disk.mode) {
                modes.push(disk.mode);
            }
        }
        for mode in modes {
            let rates: Vec<f64> = self
                .disk
                .iter()
                .filter(|d| d.mode == mode)
                .map(DiskMeasurement::mib_s)
                .collect();
            if let Some((median, min, max)) = median_range(&rates) {
                records.push(
                    Record::new("summary")
                        .text("scenario", "disk")
                        .text("mode", mode)
                        .int("runs", to_u64(rates.len()))
                        .num("mib_s", median)
                        .text(
                            "mib_s_range",
                            format!("{}..{}", format_num(min), format_num(max)),
                        ),
                );
            }
        }
        for (scenario, target) in &groups {
            if ["sink", "moto", RAW_S3].contains(target) {
                continue;
            }
            for reference in ["sink", "moto"] {
                if let Some(record) = self.ratio(scenario, target, reference, scenario) {
                    records.push(record);
                }
            }
            // Against the store under Strata; a dedup put against its put, since storing
            // nothing new is what Strata adds there.
            let reference_scenario = match *scenario {
                "put" | "put-dup" => "put",
                "get" => "get",
                _ => continue,
            };
            if let Some(record) = self.ratio(scenario, target, RAW_S3, reference_scenario) {
                records.push(record);
            }
        }
        if check_targets {
            records.extend(self.target_checks());
        }
        records
    }

    /// Per-run ratios of `target` to `reference` on `figure`, in the same scenario.
    fn ratios(&self, scenario: &str, target: &str, reference: &str, figure: &str) -> Vec<f64> {
        self.ratios_across(scenario, target, reference, scenario, figure)
    }

    /// Per-run ratios of `target` in `scenario` to `reference` in `reference_scenario`.
    fn ratios_across(
        &self,
        scenario: &str,
        target: &str,
        reference: &str,
        reference_scenario: &str,
        figure: &str,
    ) -> Vec<f64> {
        let ours = self.figure_by_run(scenario, target, figure);
        let theirs = self.figure_by_run(reference_scenario, reference, figure);
        ours.iter()
            .filter_map(|(run, v)| theirs.get(run).filter(|t| **t > 0.0).map(|t| v / t))
            .collect()
    }

    /// The `ratio` line of `target` in `scenario` to `reference` in `reference_scenario`
    /// (named `REFERENCE-SCENARIO` when the scenarios differ).
    fn ratio(
        &self,
        scenario: &str,
        target: &str,
        reference: &str,
        reference_scenario: &str,
    ) -> Option<Record> {
        let figure = headline(scenario);
        let ratios = self.ratios_across(scenario, target, reference, reference_scenario, figure);
        let (median, min, max) = median_range(&ratios)?;
        let to = if scenario == reference_scenario {
            reference.to_owned()
        } else {
            format!("{reference}-{reference_scenario}")
        };
        Some(
            Record::new("ratio")
                .text("scenario", scenario)
                .text("target", target)
                .text("to", to)
                .text("figure", figure)
                .num("median", median)
                .text("range", format!("{}..{}", format_num(min), format_num(max))),
        )
    }

    fn median_of(&self, scenario: &str, target: &str, figure: &str) -> Option<f64> {
        let values: Vec<f64> = self
            .figure_by_run(scenario, target, figure)
            .into_values()
            .collect();
        median_range(&values).map(|(m, _, _)| m)
    }

    /// The issue-5 targets, checked on medians (ratios: median of per-run ratios).
    fn target_checks(&self) -> Vec<Record> {
        let subject = ["strata", "endpoint"]
            .into_iter()
            .find(|t| self.runs.iter().any(|m| m.target == *t));
        let Some(subject) = subject else {
            return Vec::new();
        };
        let mut checks = Vec::new();
        let mut check = |figure: &str, value: Option<f64>, goal: Goal| {
            if let Some(value) = value {
                checks.push(
                    Record::new("target")
                        .text("figure", figure)
                        .num("value", value)
                        .text("goal", goal.to_string())
                        .text("met", if goal.met_by(value) { "yes" } else { "no" }),
                );
            }
        };
        let ratio = |ratios: Vec<f64>| median_range(&ratios).map(|r| r.0);
        if self.deployment != Deployment::default() {
            // The PostgreSQL + S3 issue: against the store itself, measured alongside.
            let put = ratio(self.ratios("put", subject, RAW_S3, "mib_s"));
            check("put_vs_raw_s3", put, Goal::AtLeast(0.60));
            let get = ratio(self.ratios("get", subject, RAW_S3, "mib_s"));
            check("get_vs_raw_s3", get, Goal::AtLeast(0.60));
            let dup = ratio(self.ratios_across("put-dup", subject, RAW_S3, "put", "mib_s"));
            check("put_dup_vs_raw_s3_put", dup, Goal::AtLeast(2.0));
            if self.deployment.postgres {
                let pairs = self.median_of("start", subject, "ops_s");
                check("start_pairs_s", pairs, Goal::AtLeast(500.0));
            }
            return checks;
        }
        // Put: against min(sink, disk) of the same repeat.
        let put = ratio(self.ratios_to_ceiling("put", subject, &[DIRECT, BUFFERED]));
        check("put_vs_min_sink_disk", put, Goal::AtLeast(0.70));
        let put_mib = self.median_of("put", subject, "mib_s");
        check("put_mib_s", put_mib, Goal::AtLeast(500.0));
        let dup = ratio(self.ratios("put-dup", subject, "sink", "mib_s"));
        check("put_dup_vs_sink", dup, Goal::AtLeast(0.90));
        let get = ratio(self.ratios("get", subject, "sink", "mib_s"));
        check("get_vs_sink", get, Goal::AtLeast(0.80));
        // Not an issue-5 goal, but what bounds get on uncached chunks: the disk's reads.
        if self.disk.iter().any(|d| d.mode == DIRECT_READ) {
            let get_disk = ratio(self.ratios_to_ceiling("get", subject, &[DIRECT_READ]));
            check("get_vs_min_sink_disk_read", get_disk, Goal::AtLeast(0.80));
        }
        for scenario in ["put", "get"] {
            let p99 = self.median_of(scenario, subject, "p99_ms");
            check(&format!("{scenario}_p99_ms"), p99, Goal::AtMost(100.0));
        }
        let entries = self.median_of("list", subject, "entries_s");
        check("list_entries_s", entries, Goal::AtLeast(1e6));
        for volume in ["1tib", "64tib"] {
            let ms = self.median_of("list", subject, &format!("changed_ms_{volume}"));
            check(&format!("changed_ms_{volume}"), ms, Goal::AtMost(20.0));
        }
        let pairs = self.median_of("start", subject, "ops_s");
        check("start_pairs_s", pairs, Goal::AtLeast(2000.0));
        checks
    }
}

/// An issue-5 goal for one figure.
#[derive(Debug, Clone, Copy)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met_by(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(bound) => value >= bound,
            Goal::AtMost(bound) => value <= bound,
        }
    }
}

impl std::fmt::Display for Goal {
    /// `>=0.70`, `<=100`: ratios with two decimals, other bounds as whole numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sign, bound) = match self {
            Goal::AtLeast(bound) => (">=", bound),
            Goal::AtMost(bound) => ("<=", bound),
        };
        if *bound < 1.0 {
            write!(f, "{sign}{bound:.2}")
        } else {
            write!(f, "{sign}{bound:.0}")
        }
    }
}

/// `u64 as f64` for counts (exact below 2^53, far above anything measured here).
#[allow(clippy::cast_precision_loss)]
pub fn to_f64(n: u64) -> f64 {
    n as f64
}

/// `usize` to `u64` (lossless on every supported target).
pub fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goals_print_as_before_and_include_their_bound() {
        let cases = [
            (Goal::AtLeast(0.70), ">=0.70", 0.70, 0.69),
            (Goal::AtLeast(2000.0), ">=2000", 2000.0, 1999.9),
            (Goal::AtLeast(1e6), ">=1000000", 1e6, 999_999.0),
            (Goal::AtMost(100.0), "<=100", 100.0, 100.1),
        ];
        for (goal, text, meets, misses) in cases {
            assert_eq!(goal.to_string(), text);
            assert!(goal.met_by(meets), "{text} by {meets}");
            assert!(!goal.met_by(misses), "{text} by {misses}");
        }
    }

    fn measurement(target: &'static str, run: usize, mib: u64) -> Measurement {
        scenario_measurement("put", target, run, mib)
    }

    fn scenario_measurement(
        scenario: &'static str,
        target: &'static str,
        run: usize,
        mib: u64,
    ) -> Measurement {
        Measurement {
            scenario,
            target,
            run,
            ops: 2 * mib,
            bytes: mib * 1024 * 1024,
            elapsed: Duration::from_secs(1),
            latencies: vec![Duration::from_millis(10), Duration::from_millis(30)],
            errors: 0,
            first_error: None,
            cpu: CpuUse::default(),
            rss: None,
            extra: Vec::new(),
            load1: None,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&values, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
        assert_eq!(median_range(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
    }

    #[test]
    fn lines_render_as_key_value_and_json() {
        let record = measurement("strata", 1, 100).record();
        let line = record.to_line();
        assert!(
            line.starts_with("run scenario=put target=strata run=1 ops=200"),
            "{line}"
        );
        assert!(line.contains(" mib_s=100.0 "), "{line}");
        let json: serde_json::Value = serde_json::from_str(&record.to_json()).expect("json");
        assert_eq!(json["kind"], "run");
        assert_eq!(json["errors"], 0);
    }

    #[test]
    fn ratios_pair_runs_and_targets_use_the_smaller_ceiling() {
        let mut results = Results::default();
        for run in 1..=3 {
            results.add(measurement("strata", run, 100 * to_u64(run)));
            results.add(measurement("sink", run, 200 * to_u64(run)));
            results.add_disk(DiskMeasurement {
                run,
                mode: DIRECT,
                rate: DiskRate {
                    bytes: 1000 * 1024 * 1024,
                    elapsed: Duration::from_secs(1),
                    direct: true,
                },
                dir: "/tmp".into(),
            });
        }
        let lines: Vec<String> = results.summary(true).iter().map(Record::to_line).collect();
        let ratio = lines
            .iter()
            .find(|l| l.starts_with("ratio scenario=put target=strata to=sink"))
            .expect("ratio line");
        assert!(
            ratio.contains("median=0.5000 range=0.5000..0.5000"),
            "{ratio}"
        );
        let check = lines
            .iter()
            .find(|l| l.contains("figure=put_vs_min_sink_disk"))
            .expect("check line");
        assert!(check.ends_with("met=no"), "{check}");
    }

    #[test]
    fn shared_stores_are_held_to_raw_s3_and_dedup_to_its_put() {
        let mut results = Results::for_deployment(Deployment {
            postgres: true,
            s3: true,
            nodes: 2,
        });
        for run in 1..=3 {
            let n = to_u64(run);
            results.add(scenario_measurement("put", "strata", run, 70 * n));
            results.add(scenario_measurement("put", RAW_S3, run, 100 * n));
            results.add(scenario_measurement("put-dup", "strata", run, 150 * n));
            results.add(scenario_measurement("get", "strata", run, 50 * n));
            results.add(scenario_measurement("get", RAW_S3, run, 100 * n));
            // 2 ops per MiB in these measurements: 600 pairs/s.
            results.add(scenario_measurement("start", "strata", run, 300));
        }
        let lines: Vec<String> = results.summary(true).iter().map(Record::to_line).collect();
        let line = |start: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no `{start}` in {lines:#?}"))
                .clone()
        };
        let put = line("ratio scenario=put target=strata to=raw-s3 ");
        assert!(put.contains("median=0.7000"), "{put}");
        // Dedup puts against raw S3's put of the same repeat, not against a raw put-dup.
        let dup = line("ratio scenario=put-dup target=strata to=raw-s3-put ");
        assert!(dup.contains("median=1.50"), "{dup}");
        assert!(line("target figure=put_vs_raw_s3 ").ends_with("goal=>=0.60 met=yes"));
        assert!(line("target figure=get_vs_raw_s3 ").ends_with("goal=>=0.60 met=no"));
        assert!(line("target figure=put_dup_vs_raw_s3_put ").ends_with("goal=>=2 met=no"));
        assert!(line("target figure=start_pairs_s ").ends_with("goal=>=500 met=yes"));
        // Raw S3 is a reference, never a subject, and the embedded goals do not apply.
        assert!(
            !lines.iter().any(|l| l.contains("target=raw-s3 to=")),
            "{lines:#?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("put_vs_min_sink_disk")),
            "{lines:#?}"
        );
    }
}
