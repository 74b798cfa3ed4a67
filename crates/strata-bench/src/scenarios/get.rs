//! `get`: list a completed snapshot, then read every block, verifying each body's SHA-256.

use std::sync::Arc;
use std::time::Instant;

use super::{RunContext, Scenario, Window, measurement, ms, run_pool, upload, volume_gib};
use crate::client::{EbsClient, ListedBlock};
use crate::report::{Measurement, to_u64};
use crate::targets::Instance;

/// The page size of every listing (the model's maximum).
pub const LIST_PAGE: u32 = 10_000;

/// Upload `blocks` distinct blocks and complete (untimed); returns the snapshot id.
pub async fn completed_snapshot(
    context: &RunContext<'_>,
    client: &EbsClient,
    blocks: usize,
) -> anyhow::Result<String> {
    let snapshot = client.start_snapshot(volume_gib(blocks), None).await?;
    let indexes: Vec<u32> = (0..u32::try_from(blocks)?).collect();
    upload(
        client,
        &snapshot,
        Arc::new(indexes),
        context.payloads.clone(),
        context.options.concurrency,
    )
    .await?;
    client.complete(&snapshot, to_u64(blocks)).await?;
    Ok(snapshot)
}

/// Read `reads` blocks (round robin over the listing) at `concurrency`, verified.
pub async fn read_blocks(
    client: &EbsClient,
    snapshot: &str,
    listing: Arc<Vec<ListedBlock>>,
    reads: usize,
    concurrency: usize,
    deadline: Instant,
) -> super::PoolOutcome {
    let (client, snapshot) = (client.clone(), Arc::new(snapshot.to_owned()));
    run_pool(concurrency, reads, deadline, move |n| {
        let (client, snapshot, listing) =
            (client.clone(), Arc::clone(&snapshot), Arc::clone(&listing));
        async move {
            let block = &listing[n % listing.len()];
            let bytes = client
                .get_block(&snapshot, block.block_index, &block.block_token)
                .await?;
            Ok(to_u64(bytes))
        }
    })
    .await
}

/// The timed window covers the listing (`list_ms`) and the reads.
pub async fn run(context: &RunContext<'_>, instance: &Instance) -> anyhow::Result<Measurement> {
    let options = context.options;
    let client = instance.client();
    let snapshot = completed_snapshot(context, &client, options.blocks).await?;
    let window = Window::open(context, instance);
    let started = Instant::now();
    let listing = client.list_all_blocks(&snapshot, LIST_PAGE).await?;
    let list_ms = ms(started.elapsed());
    anyhow::ensure!(
        listing.len() == options.blocks,
        "the listing has {} blocks, {} were written",
        listing.len(),
        options.blocks
    );
    let mut outcome = read_blocks(
        &client,
        &snapshot,
        Arc::new(listing),
        options.blocks,
        options.concurrency,
        context.deadline(),
    )
    .await;
    // The window began before the listing.
    outcome.elapsed = started.elapsed();
    let window = window.close();
    Ok(measurement(
        Scenario::Get,
        context,
        instance,
        outcome,
        window,
        vec![("list_ms", list_ms)],
    ))
}
