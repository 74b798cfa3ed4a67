//! `mixed`: uploads to several snapshots and verified readers of another, all at once, as
//! a backup server sees when some clients back up while others restore.

use std::sync::Arc;
use std::time::Instant;

use super::get::{LIST_PAGE, completed_snapshot, read_blocks};
use super::{RunContext, Scenario, Window, measurement, run_pool, volume_gib};
use crate::report::{Measurement, to_f64, to_u64};
use crate::targets::Instance;

/// Concurrent uploads, each to its own snapshot.
const UPLOADS: usize = 4;
const MIB: f64 = 1024.0 * 1024.0;

/// Half the concurrency uploads N/2 blocks spread over [`UPLOADS`] snapshots, the other
/// half reads N/2 blocks of a completed snapshot; figures are totals, with the put and
/// get rates apart in `put_mib_s` and `get_mib_s`.
pub async fn run(context: &RunContext<'_>, instance: &Instance) -> anyhow::Result<Measurement> {
    let options = context.options;
    let client = instance.client();
    let half = (options.blocks / 2).max(UPLOADS);
    let workers = (options.concurrency / 2).max(1);
    let source = completed_snapshot(context, &client, half).await?;
    let listing = Arc::new(client.list_all_blocks(&source, LIST_PAGE).await?);
    let per_upload = half.div_ceil(UPLOADS);
    let mut uploads = Vec::new();
    for _ in 0..UPLOADS {
        uploads.push(client.start_snapshot(volume_gib(per_upload), None).await?);
    }
    let uploads = Arc::new(uploads);
    let writer_payloads = context.mixed_payloads.clone();

    let window = Window::open(context, instance);
    let started = Instant::now();
    let deadline = context.deadline();
    let writes = {
        let (client, uploads) = (client.clone(), Arc::clone(&uploads));
        run_pool(workers, half, deadline, move |n| {
            let (client, uploads) = (client.clone(), Arc::clone(&uploads));
            let payload = writer_payloads.get(n);
            async move {
                let snapshot = &uploads[n % UPLOADS];
                let index = u32::try_from(n / UPLOADS).unwrap_or(u32::MAX);
                client.put_block(snapshot, index, &payload).await?;
                Ok(to_u64(payload.data.len()))
            }
        })
    };
    let reads = read_blocks(&client, &source, listing, half, workers, deadline);
    let (writes, reads) = tokio::join!(writes, reads);
    let elapsed = started.elapsed();
    let window = window.close();

    // Each side's rate over its own duration: both do N/2 operations, so over the common
    // window they would always look equal.
    let rate =
        |bytes: u64, took: std::time::Duration| to_f64(bytes) / MIB / took.as_secs_f64().max(1e-9);
    let extra = vec![
        ("put_mib_s", rate(writes.bytes, writes.elapsed)),
        ("get_mib_s", rate(reads.bytes, reads.elapsed)),
        (
            "put_p99_ms",
            crate::report::percentile(&writes.latencies, 99.0).as_secs_f64() * 1000.0,
        ),
        (
            "get_p99_ms",
            crate::report::percentile(&reads.latencies, 99.0).as_secs_f64() * 1000.0,
        ),
    ];
    // The uploads stay pending: the instance is discarded after the run.
    let mut outcome = writes;
    outcome.absorb(reads);
    outcome.elapsed = elapsed;
    Ok(measurement(
        Scenario::Mixed,
        context,
        instance,
        outcome,
        window,
        extra,
    ))
}
