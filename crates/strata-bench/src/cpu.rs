//! CPU and memory accounting from `/proc`, so a report can say who spent the machine.
//!
//! The server under test usually runs in this very process (on its own runtime), so the
//! process total cannot be read as "the server". We instead sum the client's threads
//! (named [`CLIENT_THREAD`], plus the thread driving the scenario) and charge everything
//! else in the process to the server: its runtime workers, its blocking pool, the metadata
//! writer thread, and threads that already exited (the kernel keeps their time in the
//! process total, which a per-thread sum of the server's threads would lose).
//!
//! Times come from `utime + stime` in `stat` files, in clock ticks of `USER_HZ`, which
//! Linux fixes at 100 per second for user space on every architecture Strata targets.

use std::path::{Path, PathBuf};
use std::time::Instant;

/// Name given to every thread of the load client's runtime.
pub const CLIENT_THREAD: &str = "bench-client";
/// Name given to every thread of the runtime hosting an in-process server (Strata or sink).
pub const SERVER_THREAD: &str = "bench-server";

const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) from one `stat` file, `None` if it cannot be read (a
/// thread that exited between listing and reading).
fn stat_cpu_seconds(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: parse after it.
    let after_name = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // tick counts stay far below 2^52
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

fn thread_name(task_dir: &Path) -> String {
    std::fs::read_to_string(task_dir.join("comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// The id of the calling thread, read from `/proc/thread-self` (no `unsafe` gettid).
pub fn current_thread_id() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Where the CPU time of a measurement goes.
#[derive(Debug, Clone)]
pub enum ServerCpu {
    /// The server runs in this process: charge it everything that is not the client.
    InProcess,
    /// The server is another process (a child such as moto, or `--server-pid`).
    Process(u32),
    /// The server is elsewhere; its CPU is unknown.
    Unknown,
}

/// A CPU snapshot of the client and the server at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    client: f64,
    server: Option<f64>,
}

/// Measures the client's and the server's CPU over an interval.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    server: ServerCpu,
    /// The thread that drives the scenario (counts as client).
    driver: Option<u32>,
}

/// CPU used over an interval, in cores (CPU seconds per wall second).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    /// Load client.
    pub client_cores: f64,
    /// Server under test, if known.
    pub server_cores: Option<f64>,
}

/// A started measurement.
#[derive(Debug)]
pub struct CpuSpan {
    meter: CpuMeter,
    start: Sample,
}

impl CpuMeter {
    /// A meter for `server`; the calling thread is counted as client.
    pub fn new(server: ServerCpu) -> Self {
        Self {
            server,
            driver: current_thread_id(),
        }
    }

    fn client_seconds(&self) -> f64 {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return 0.0;
        };
        tasks
            .filter_map(Result::ok)
            .filter(|task| {
                let is_driver = task
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|tid| Some(tid) == self.driver);
                is_driver || thread_name(&task.path()).starts_with(CLIENT_THREAD)
            })
            .filter_map(|task| stat_cpu_seconds(&task.path().join("stat")))
            .sum()
    }

    fn sample(&self) -> Sample {
        let client = self.client_seconds();
        let server = match &self.server {
            ServerCpu::InProcess => {
                stat_cpu_seconds(Path::new("/proc/self/stat")).map(|total| total - client)
            }
            ServerCpu::Process(pid) => {
                stat_cpu_seconds(&PathBuf::from(format!("/proc/{pid}/stat")))
            }
            ServerCpu::Unknown => None,
        };
        Sample {
            at: Instant::now(),
            client,
            server,
        }
    }

    /// Start measuring.
    pub fn start(&self) -> CpuSpan {
        CpuSpan {
            meter: self.clone(),
            start: self.sample(),
        }
    }
}

impl CpuSpan {
    /// CPU used since [`CpuMeter::start`].
    pub fn finish(&self) -> CpuUse {
        let end = self.meter.sample();
        let wall = end.at.duration_since(self.start.at).as_secs_f64().max(1e-9);
        CpuUse {
            client_cores: (end.client - self.start.client) / wall,
            server_cores: end
                .server
                .zip(self.start.server)
                .map(|(e, s)| ((e - s) / wall).max(0.0)),
        }
    }
}

/// The 1-minute load average: on a shared machine, the figure that says how much of it
/// other work was using while a run was measured.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident set size of `pid` (or this process), MiB, from `/proc/PID/status`.
pub fn rss_mib(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(
        || PathBuf::from("/proc/self/status"),
        |pid| PathBuf::from(format!("/proc/{pid}/status")),
    );
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples a resident set size every 100 ms in the background and keeps the peak.
#[derive(Debug)]
pub struct RssPeak {
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    /// Start sampling `pid` (or this process) on the current runtime.
    pub fn start(pid: Option<u32>) -> Self {
        use std::sync::atomic::Ordering;
        let peak_kib = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let shared = std::sync::Arc::clone(&peak_kib);
        let task = tokio::spawn(async move {
            loop {
                if let Some(mib) = rss_mib(pid) {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    shared.fetch_max((mib * 1024.0) as u64, Ordering::Relaxed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        Self { peak_kib, task }
    }

    /// Stop sampling; the peak in MiB, if any sample was taken.
    pub fn finish(self, pid: Option<u32>) -> Option<f64> {
        self.task.abort();
        // One last sample, so a window shorter than the period still has a value.
        let last = rss_mib(pid).unwrap_or(0.0);
        #[allow(clippy::cast_precision_loss)]
        let peak = self.peak_kib.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0;
        let peak = peak.max(last);
        (peak > 0.0).then_some(peak)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_cpu_and_rss_are_readable() {
        let meter = CpuMeter::new(ServerCpu::InProcess);
        let span = meter.start();
        // Burn a little CPU on the driver thread so the client share moves.
        let mut x = 0u64;
        let until = Instant::now() + std::time::Duration::from_millis(50);
        while Instant::now() < until {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let used = span.finish();
        assert!(used.client_cores >= 0.0);
        assert!(used.server_cores.is_some());
        assert!(rss_mib(None).is_some_and(|mib| mib > 0.0));
        assert!(current_thread_id().is_some());
    }

    #[test]
    fn stat_parsing_skips_names_with_spaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stat");
        let mut fields = vec!["0"; 20];
        fields[11] = "150";
        fields[12] = "50";
        std::fs::write(&path, format!("42 (a b) c) {}", fields.join(" "))).expect("write");
        assert_eq!(stat_cpu_seconds(&path), Some(2.0));
    }
}
