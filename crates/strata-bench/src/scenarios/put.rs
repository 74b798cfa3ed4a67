//! `put` and `put-dup`: PutSnapshotBlock throughput at concurrency C, durable on ack.

use std::sync::Arc;
use std::time::Instant;

use super::{RunContext, Scenario, Window, measurement, ms, run_pool, volume_gib};
use crate::report::{Measurement, to_u64};
use crate::targets::Instance;

/// `put`: blocks 0..N of a new snapshot, each with distinct content; then Complete, timed
/// apart (`complete_ms`), since it is one request and not part of the data path.
pub async fn distinct(
    context: &RunContext<'_>,
    instance: &Instance,
) -> anyhow::Result<Measurement> {
    let options = context.options;
    let client = instance.client();
    let snapshot = Arc::new(
        client
            .start_snapshot(volume_gib(options.blocks), None)
            .await?,
    );
    let window = Window::open(context, instance);
    let outcome = {
        let (client, snapshot, payloads) = (
            client.clone(),
            Arc::clone(&snapshot),
            context.payloads.clone(),
        );
        run_pool(
            options.concurrency,
            options.blocks,
            context.deadline(),
            move |n| {
                let (client, snapshot) = (client.clone(), Arc::clone(&snapshot));
                let payload = payloads.get(n);
                async move {
                    let index = u32::try_from(n).unwrap_or(u32::MAX);
                    client.put_block(&snapshot, index, &payload).await?;
                    Ok(to_u64(payload.data.len()))
                }
            },
        )
        .await
    };
    let window = window.close();
    let completing = Instant::now();
    client.complete(&snapshot, outcome.ok).await?;
    let complete_ms = ms(completing.elapsed());
    Ok(measurement(
        Scenario::Put,
        context,
        instance,
        outcome,
        window,
        vec![("complete_ms", complete_ms)],
    ))
}

/// `put-dup`: one block stored first (untimed), then the same content at N other indexes:
/// the server has nothing new to write but the record of each block.
pub async fn duplicate(
    context: &RunContext<'_>,
    instance: &Instance,
) -> anyhow::Result<Measurement> {
    let options = context.options;
    let client = instance.client();
    let snapshot = Arc::new(
        client
            .start_snapshot(volume_gib(options.blocks + 1), None)
            .await?,
    );
    let payload = context.payloads.get(0);
    client.put_block(&snapshot, 0, &payload).await?;
    let window = Window::open(context, instance);
    let outcome = {
        let (client, snapshot) = (client.clone(), Arc::clone(&snapshot));
        run_pool(
            options.concurrency,
            options.blocks,
            context.deadline(),
            move |n| {
                let (client, snapshot, payload) =
                    (client.clone(), Arc::clone(&snapshot), payload.clone());
                async move {
                    let index = u32::try_from(n + 1).unwrap_or(u32::MAX);
                    client.put_block(&snapshot, index, &payload).await?;
                    Ok(to_u64(payload.data.len()))
                }
            },
        )
        .await
    };
    let window = window.close();
    client.complete(&snapshot, outcome.ok + 1).await?;
    Ok(measurement(
        Scenario::PutDup,
        context,
        instance,
        outcome,
        window,
        Vec::new(),
    ))
}
