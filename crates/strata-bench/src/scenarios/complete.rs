//! `complete-big` (issue 10, "Complete in bounded memory"): CompleteSnapshot of a snapshot
//! with N pending writes (4,000,000 by default, on a volume just big enough), while Puts of
//! distinct blocks go on into another snapshot at the start concurrency. Reports how long
//! the completion took, the p99 of the concurrent Puts (the measurement's latencies), and
//! the RSS: its peak during the completion and the baseline just before it, so that what
//! the completion itself costs is the difference. Strata only, self-started (the pending
//! writes are seeded past the HTTP layer, as `list` does); run only when named.
//!
//! The server runs in the benchmark's process, so the RSS is the process's: the baseline
//! holds the client's payloads (run with a small `--blocks`, e.g. 64, to keep it small).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{PoolOutcome, RunContext, Scenario, Window, families, measurement, ms, volume_gib};
use crate::client::EbsClient;
use crate::cpu::rss_mib;
use crate::payloads::PayloadSet;
use crate::report::{Measurement, to_u64};
use crate::targets::{Instance, TargetKind};

/// Distinct contents of the seeded writes (their chunks are stored once).
const SEED_POOL: usize = 16;
/// Volume of the snapshot the concurrent Puts go to, GiB.
const OTHER_VOLUME_GIB: u64 = 64;

/// One run: seed, start a server on it, then measure the completion.
pub async fn run(context: &RunContext<'_>) -> anyhow::Result<Measurement> {
    let options = context.options;
    let launcher = context.launcher;
    let blocks = options.complete_blocks;
    let dir = launcher.new_data_dir()?;
    let deployment = launcher.strata_deployment(dir.path()).await?;
    let seeding = Instant::now();
    let seeded = {
        let settings = deployment.nodes.first().context("a deployment has nodes")?;
        let state = launcher.open_strata_state(settings).await?;
        let owner = settings.root_account.clone();
        let pool = PayloadSet::new(families::COMPLETE_POOL, SEED_POOL);
        let indexes: Vec<u32> = (0..to_u64(blocks))
            .map(|i| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        let volume = i64::try_from(volume_gib(blocks))?;
        launcher
            .server_runtime()
            .spawn(async move {
                let id = crate::seed::pending(&state, &owner, &pool, volume, &indexes).await?;
                // Dropping the state closes the database before the server opens it.
                drop(state);
                anyhow::Ok(id.to_string())
            })
            .await?
    };
    let big = match seeded {
        Ok(id) => id,
        Err(error) => {
            deployment.abandon().await;
            return Err(error);
        }
    };
    eprintln!(
        "complete-big: seeded {blocks} pending writes in {:.1} s",
        seeding.elapsed().as_secs_f64()
    );
    let instance = launcher.start_deployment(deployment, dir).await?;
    let measured = measure(context, &instance, &big, blocks).await;
    instance.stop().await?;
    measured
}

async fn measure(
    context: &RunContext<'_>,
    instance: &Instance,
    big: &str,
    blocks: usize,
) -> anyhow::Result<Measurement> {
    anyhow::ensure!(
        instance.kind == TargetKind::Strata,
        "complete-big runs on a self-started Strata"
    );
    let client = instance.client();
    let other = client.start_snapshot(OTHER_VOLUME_GIB, None).await?;
    let concurrency = context.options.start_concurrency;
    let payloads = context.payloads.clone();
    let stop = Arc::new(AtomicBool::new(false));

    let baseline = rss_mib(instance.rss_pid);
    let window = Window::open(context, instance);
    let putting = Instant::now();
    let mut putters = tokio::task::JoinSet::new();
    let slots = to_u64(concurrency);
    for worker in 0..slots {
        let (client, other, payloads, stop) = (
            client.clone(),
            other.clone(),
            payloads.clone(),
            stop.clone(),
        );
        putters.spawn(
            async move { put_until(&client, &other, &payloads, &stop, worker, slots).await },
        );
    }
    // Let the Puts reach their pace before the completion starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let completed = client.complete(big, to_u64(blocks)).await;
    let complete_time = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut outcome = PoolOutcome::default();
    while let Some(joined) = putters.join_next().await {
        outcome.absorb(joined.context("a Put worker failed")?);
    }
    // The Puts' own window (the completion and the half second before it).
    outcome.elapsed = putting.elapsed();
    let window = window.close();
    if let Err(error) = completed {
        outcome.errors += 1;
        outcome.first_error = Some(format!("CompleteSnapshot: {error}"));
    }
    let mut extra = vec![
        ("complete_ms", ms(complete_time)),
        #[allow(clippy::cast_precision_loss)]
        ("pending_writes", blocks as f64),
    ];
    if let Some(baseline) = baseline {
        extra.push(("rss_before_mib", baseline));
    }
    drop(client);
    Ok(measurement(
        Scenario::CompleteBig,
        context,
        instance,
        outcome,
        window,
        extra,
    ))
}

/// Put blocks into `snapshot` until `stop`: worker `w` of `slots` writes indexes
/// `w, w + slots, …` (wrapping inside the volume), each with the next payload.
async fn put_until(
    client: &EbsClient,
    snapshot: &str,
    payloads: &PayloadSet,
    stop: &AtomicBool,
    worker: u64,
    slots: u64,
) -> PoolOutcome {
    let volume_blocks = OTHER_VOLUME_GIB * strata_types::BLOCKS_PER_GIB;
    let mut outcome = PoolOutcome::default();
    let mut n = worker;
    while !stop.load(Ordering::SeqCst) {
        let index = u32::try_from(n % volume_blocks).unwrap_or(0);
        let payload = payloads.get(usize::try_from(n).unwrap_or(0));
        let sent = Instant::now();
        let result = client.put_block(snapshot, index, &payload).await;
        outcome.latencies.push(sent.elapsed());
        outcome.ops += 1;
        match result {
            Ok(()) => {
                outcome.ok += 1;
                outcome.bytes += to_u64(payload.data.len());
            }
            Err(error) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| error.to_string());
            }
        }
        n += slots;
    }
    outcome
}
