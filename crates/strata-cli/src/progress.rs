//! Progress reporting: the operations call a [`Reporter`]; the CLI turns events into bars.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use strata_types::SnapshotId;

/// Something a long operation tells its caller as it goes.
#[derive(Debug, Clone)]
pub enum ProgressEvent {
    /// A step without a byte count started.
    Step(Step),
    /// The byte-counted part started: `total_bytes` will be processed.
    Started {
        /// Bytes to process in all (including any a resumed run already did).
        total_bytes: u64,
        /// Bytes already done by an earlier, interrupted run.
        already_done: u64,
    },
    /// `bytes` more were processed (sent, fetched, compared or skipped as unchanged).
    Advanced {
        /// Bytes processed since the last event.
        bytes: u64,
    },
    /// A request failed and will be retried after `delay`.
    Retrying(RetryNotice),
}

/// Steps that have no byte count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Listing the blocks of a snapshot.
    Listing(SnapshotId),
    /// Listing the changes between two snapshots.
    ListingChanges(SnapshotId, SnapshotId),
    /// Creating the snapshot.
    Starting,
    /// Sending CompleteSnapshot.
    Completing(SnapshotId),
    /// Waiting for a snapshot to become readable.
    WaitingForCompletion(SnapshotId),
    /// Scanning the image for what to send or compare.
    Scanning,
    /// Flushing the output to stable storage.
    Syncing,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Listing(id) => write!(f, "listing the blocks of {id}"),
            Step::ListingChanges(a, b) => write!(f, "listing the changes from {a} to {b}"),
            Step::Starting => f.write_str("starting the snapshot"),
            Step::Completing(id) => write!(f, "completing {id}"),
            Step::WaitingForCompletion(id) => write!(f, "waiting for {id} to complete"),
            Step::Scanning => f.write_str("scanning"),
            Step::Syncing => f.write_str("syncing the output"),
        }
    }
}

/// A failed attempt that will be retried.
#[derive(Debug, Clone)]
pub struct RetryNotice {
    /// The call, e.g. `PutSnapshotBlock (snap-0abc, block 7)`.
    pub call: String,
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// Attempts the call may make in all.
    pub max_attempts: u32,
    /// The pause before the next attempt.
    pub delay: Duration,
    /// Why the attempt failed.
    pub error: String,
}

type Callback = dyn Fn(&ProgressEvent) + Send + Sync;

/// Where an operation sends its [`ProgressEvent`]s; cheap to clone, may be silent.
#[derive(Clone, Default)]
pub struct Reporter(Option<Arc<Callback>>);

impl Reporter {
    /// Send events to `callback` (called from any task; keep it quick).
    pub fn new(callback: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(callback)))
    }

    /// Drop every event.
    pub fn silent() -> Self {
        Self(None)
    }

    /// Report one event.
    pub fn report(&self, event: ProgressEvent) {
        if let Some(callback) = &self.0 {
            callback(&event);
        }
    }

    pub(crate) fn step(&self, step: Step) {
        self.report(ProgressEvent::Step(step));
    }

    pub(crate) fn advance(&self, bytes: u64) {
        self.report(ProgressEvent::Advanced { bytes });
    }
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Reporter(callback)"
        } else {
            "Reporter(silent)"
        })
    }
}

/// A request to stop early, shared between a caller (the CLI's Ctrl-C handler) and an
/// operation that can stop cleanly (a download saves its progress first).
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<StopState>);

#[derive(Debug, Default)]
struct StopState {
    stopped: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl StopSignal {
    /// A signal not yet given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask every holder to stop.
    pub fn stop(&self) {
        self.0
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes once [`stop`](Self::stop) has been called.
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}
