//! Background work of a running server: the inactivity-timeout sweep and periodic
//! garbage collection. Both stop when the server shuts down.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::admin::run_gc;
use crate::app::AppState;

/// How often timed-out pending snapshots are moved to `error`.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Run the sweep every [`SWEEP_INTERVAL`] and GC every `gc_interval` (never when `None`),
/// until `stop` changes.
pub async fn run(
    state: Arc<AppState>,
    gc_interval: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut gc = tokio::time::interval(gc_interval.unwrap_or(Duration::from_secs(86_400 * 365)));
    // The first tick of an interval is immediate; GC waits one period after start.
    gc.tick().await;
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
            _ = gc.tick(), if gc_interval.is_some() => {
                if let Err(error) = run_gc(&state, false).await {
                    tracing::warn!(%error, "background garbage collection failed");
                }
            }
        }
    }
}
