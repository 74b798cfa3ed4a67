//! Profiling exactly the timed windows: with `--perf-control CTL[,ACK]`, the benchmark
//! tells a `perf record --control fifo:CTL,ACK -D -1 ...` that started it disabled when to
//! sample (`enable` as a window opens, `disable` as it closes), so setup phases such as
//! uploading the blocks a `get` run reads never pollute the profile.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

/// The control (and optional acknowledgement) FIFOs of a `perf record`.
#[derive(Debug, Clone)]
pub struct PerfControl {
    control: PathBuf,
    ack: Option<PathBuf>,
}

impl PerfControl {
    /// Parse `CTL` or `CTL,ACK`.
    pub fn parse(text: &str) -> Self {
        match text.split_once(',') {
            Some((control, ack)) => Self {
                control: control.into(),
                ack: Some(ack.into()),
            },
            None => Self {
                control: text.into(),
                ack: None,
            },
        }
    }

    /// Send `enable` or `disable` and wait for perf's acknowledgement when there is one.
    /// Failures are reported on stderr and otherwise ignored: profiling is best effort.
    pub fn send(&self, command: &str) {
        let sent = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.control)
            .and_then(|mut fifo| fifo.write_all(format!("{command}\n").as_bytes()));
        if let Err(error) = sent {
            eprintln!("perf control {}: {error}", self.control.display());
            return;
        }
        if let Some(ack) = &self.ack
            && let Ok(fifo) = std::fs::File::open(ack)
        {
            let mut line = String::new();
            let _ = BufReader::new(fifo).read_line(&mut line);
        }
    }
}
