//! Log lines on stderr: text (coloured only when stderr is a terminal) or one JSON object
//! per line, filtered by `RUST_LOG` when set.

use std::io::IsTerminal;

use strata_server::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber; `default_filter` applies when `RUST_LOG` is unset or
/// invalid.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        // The event's fields at the top level, next to `timestamp`, `level`, `target` and
        // the request's span (`span.request_id`).
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}
