//! Background work of a running server: the inactivity-timeout sweep, periodic garbage
//! collection and periodic scrubs. All stop when the server shuts down; each runs under
//! its cluster lease, so one node of a cluster does it at a time.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::{run_gc, run_scrub};
use crate::app::AppState;

/// How often timed-out pending snapshots are moved to `error`.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How often the periodic work runs (`None`: never in the background).
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// Garbage collection.
    pub gc: Option<Duration>,
    /// Scrub (at the server's scrub rate).
    pub scrub: Option<Duration>,
}

/// Run the sweep every [`SWEEP_INTERVAL`], GC and scrub at their `intervals`, until
/// `stop` changes.
pub async fn run(state: Arc<AppState>, intervals: Intervals, mut stop: watch::Receiver<bool>) {
    let never = Duration::from_secs(86_400 * 365);
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut gc = tokio::time::interval(intervals.gc.unwrap_or(never));
    let mut scrub = tokio::time::interval(intervals.scrub.unwrap_or(never));
    // The first tick of an interval is immediate; GC and scrub wait one period after start.
    gc.tick().await;
    scrub.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = sweep.tick() => {
                match state.service.sweep_timeouts(&state.node_id).await {
                    Ok(None | Some(0)) => {}
                    Ok(Some(n)) => tracing::info!(expired = n, "pending snapshots timed out"),
                    Err(error) => tracing::warn!(%error, "timeout sweep failed"),
                }
            }
            _ = gc.tick(), if intervals.gc.is_some() => {
                if let Err(error) = run_gc(&state, false).await {
                    tracing::warn!(%error, "background garbage collection failed");
                }
            }
            _ = scrub.tick(), if intervals.scrub.is_some() => {
                if let Err(error) = run_scrub(&state, state.scrub_rate).await {
                    tracing::warn!(%error, "background scrub failed");
                }
            }
        }
    }
}
