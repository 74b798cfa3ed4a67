//! Progress bars, retry notices and the number formats of the summaries.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{ProgressEvent, Reporter, RetryNotice};

/// Progress for one command: a bar on an interactive stderr (a spinner until the byte count
/// is known), otherwise only retry notices (at most one a second, since 64 workers fail
/// together when a server restarts; the ones left out are counted in the next).
pub(crate) struct Ui {
    bar: Option<ProgressBar>,
    quiet: bool,
    verb: &'static str,
}

const SPINNER: &str = "{spinner} {elapsed} {wide_msg}";
const BAR: &str = "{spinner} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta} {wide_msg}";

impl Ui {
    pub(crate) fn new(quiet: bool, verb: &'static str) -> Self {
        let interactive = !quiet && std::io::stderr().is_terminal();
        let bar = interactive.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(style(SPINNER));
            bar.set_message(verb);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, quiet, verb }
    }

    pub(crate) fn reporter(&self) -> Reporter {
        let Some(bar) = self.bar.clone() else {
            return retry_printer(self.quiet);
        };
        let notices = Notices::default();
        let verb = self.verb;
        Reporter::new(move |event| match event {
            ProgressEvent::Step(step) => bar.set_message(step.to_string()),
            ProgressEvent::Started {
                total_bytes,
                already_done,
            } => {
                bar.set_style(style(BAR));
                bar.set_message(verb);
                bar.set_length(*total_bytes);
                bar.set_position(*already_done);
                bar.reset_eta();
            }
            ProgressEvent::Advanced { bytes } => bar.inc(*bytes),
            ProgressEvent::Retrying(notice) => {
                if let Some(line) = notices.line(notice) {
                    bar.println(line);
                }
            }
        })
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Rate-limited retry notices: one line a second at most, counting the ones left out.
#[derive(Clone, Default)]
pub(crate) struct Notices {
    last: Arc<Mutex<Option<Instant>>>,
    suppressed: Arc<AtomicU64>,
}

impl Notices {
    /// The line to print for `notice`, or `None` when one was printed less than a second ago.
    pub(crate) fn line(&self, notice: &RetryNotice) -> Option<String> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        let others = self.suppressed.swap(0, Ordering::Relaxed);
        Some(notice_line(notice, others))
    }
}

/// `retrying CALL in 0.4 s (attempt 2 of 10 failed: ERROR)`, plus how many other retries
/// were not shown since the last line.
pub(crate) fn notice_line(notice: &RetryNotice, others: u64) -> String {
    let more = match others {
        0 => String::new(),
        1 => "; 1 other retry not shown".to_owned(),
        n => format!("; {n} other retries not shown"),
    };
    format!(
        "retrying {} in {} (attempt {} of {} failed: {}{more})",
        notice.call,
        duration(notice.delay),
        notice.attempt,
        notice.max_attempts,
        notice.error
    )
}

/// A reporter that only prints retry notices to stderr (rate-limited), unless quiet.
pub(crate) fn retry_printer(quiet: bool) -> Reporter {
    if quiet {
        return Reporter::silent();
    }
    let notices = Notices::default();
    Reporter::new(move |event| {
        if let ProgressEvent::Retrying(notice) = event
            && let Some(line) = notices.line(notice)
        {
            eprintln!("{line}");
        }
    })
}

pub(crate) fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

/// A duration for people: `850 ms`, `2.4 s`, `3 min 05 s`.
pub(crate) fn duration(elapsed: Duration) -> String {
    let ms = elapsed.as_millis();
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", elapsed.as_secs_f64())
    } else {
        let secs = elapsed.as_secs();
        format!("{} min {:02} s", secs / 60, secs % 60)
    }
}

/// `2.4 s (344 MiB/s)`; the rate is left out when nothing was transferred or the time is too
/// short to measure (under 10 ms).
pub(crate) fn rate(n: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if n == 0 || seconds < 0.01 {
        return duration(elapsed);
    }
    // Display only: precision loss in the conversion does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mib = n as f64 / (1024.0 * 1024.0) / seconds;
    format!("{} ({mib:.0} MiB/s)", duration(elapsed))
}

/// `1 block`, `2 blocks`.
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(duration(Duration::from_millis(43)), "43 ms");
        assert_eq!(duration(Duration::from_millis(2400)), "2.4 s");
        assert_eq!(duration(Duration::from_secs(185)), "3 min 05 s");
        assert_eq!(rate(0, Duration::from_secs(2)), "2.0 s");
        assert_eq!(rate(1 << 20, Duration::from_millis(3)), "3 ms");
        assert_eq!(rate(100 << 20, Duration::from_secs(2)), "2.0 s (50 MiB/s)");
        assert_eq!(count(1, "range", "ranges"), "1 range");
        assert_eq!(count(2, "range", "ranges"), "2 ranges");
    }

    #[test]
    fn notices_count_attempts_and_what_they_left_out() {
        let notice = |attempt| RetryNotice {
            call: "GetSnapshotBlock (snap-1, block 7)".into(),
            attempt,
            max_attempts: 10,
            delay: Duration::from_millis(400),
            error: "timed out".into(),
        };
        let notices = Notices::default();
        assert_eq!(
            notices.line(&notice(1)).as_deref(),
            Some(
                "retrying GetSnapshotBlock (snap-1, block 7) in 400 ms (attempt 1 of 10 failed: timed out)"
            )
        );
        assert_eq!(notices.line(&notice(2)), None);
        assert_eq!(notices.line(&notice(3)), None);
        *notices.last.lock().expect("lock") = None;
        let line = notices.line(&notice(4)).expect("printed");
        assert!(
            line.ends_with("(attempt 4 of 10 failed: timed out; 2 other retries not shown)"),
            "{line}"
        );
    }
}
