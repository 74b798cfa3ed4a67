//! `list`: metadata at scale. ListSnapshotBlocks over a big snapshot (2,000,000 blocks by
//! default, MaxResults 10000), and ListChangedBlocks between a parent of that size and a
//! child with 1,000 changed blocks, on a 1 TiB volume (blocks packed at the start) and on
//! a 64 TiB volume (the same number of blocks spread over the whole volume): the second
//! must cost no more than the first.
//!
//! Big logical snapshots cost little disk because their blocks come from a small pool of
//! distinct contents. Uploading 2,000,000 blocks over HTTP would still move 1 TiB, so for
//! a self-started Strata the fixture is seeded through the server's own service, before it
//! serves: the pool's blocks go through `put_block`, the other writes are recorded in the
//! metadata store as `put_block` would record them, and CompleteSnapshot builds the trees
//! as usual. The state is the one HTTP uploads would leave. Other targets (moto, an
//! external endpoint) are seeded over HTTP with at most [`HTTP_SEED_LIMIT`] blocks, and
//! their figures say so (`entries`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::get::LIST_PAGE;
use super::{RunContext, Scenario, Window, families, measurement, ms, upload};
use crate::client::{ClientError, EbsClient};
use crate::payloads::PayloadSet;
use crate::report::{Measurement, to_u64};
use crate::scenarios::PoolOutcome;
use crate::seed::{self, LineageSpec};
use crate::targets::{Deployment, Instance, Launcher, TargetKind};

/// Most blocks seeded over HTTP (moto, `--endpoint`).
pub const HTTP_SEED_LIMIT: usize = 2048;
/// 1 TiB and 64 TiB, in GiB.
const SMALL_VOLUME_GIB: u64 = 1024;
const LARGE_VOLUME_GIB: u64 = 65_536;

/// One parent/child pair of a lineage.
#[derive(Debug, Clone)]
pub struct Lineage {
    /// `1tib` or `64tib`.
    pub label: &'static str,
    /// The parent (big) snapshot.
    pub parent: String,
    /// The child, with `changes` blocks rewritten.
    pub child: String,
    /// How many blocks differ.
    pub changes: usize,
}

/// The snapshots the `list` scenario reads.
#[derive(Debug, Clone)]
pub struct ListFixture {
    /// Blocks in each parent.
    pub blocks: usize,
    /// The two lineages; the first one's parent is also the ListSnapshotBlocks subject.
    pub lineages: Vec<Lineage>,
}

fn spec(volume_gib: u64, blocks: usize, changes: usize) -> LineageSpec {
    let volume_blocks = volume_gib * strata_types::BLOCKS_PER_GIB;
    // Spread the blocks evenly over the volume (stride 1 on 1 TiB for 2,000,000 blocks).
    let stride = (volume_blocks / to_u64(blocks).max(1)).max(1);
    let indexes: Vec<u32> = (0..to_u64(blocks))
        .map(|i| u32::try_from(i * stride).unwrap_or(u32::MAX))
        .collect();
    let changes = changes.min(blocks);
    let step = blocks / changes.max(1);
    let changed = (0..changes).map(|k| k * step).collect();
    LineageSpec {
        volume_gib,
        indexes,
        changed_positions: changed,
    }
}

/// Build the fixture on a new instance of `kind`.
pub async fn prepare(
    context: &RunContext<'_>,
    launcher: &Launcher,
    kind: TargetKind,
) -> anyhow::Result<(Instance, ListFixture)> {
    let options = context.options;
    let pool = PayloadSet::new(families::LIST_POOL, options.list_pool);
    if kind == TargetKind::Strata {
        let blocks = options.list_blocks;
        let specs = [
            ("1tib", spec(SMALL_VOLUME_GIB, blocks, options.list_changes)),
            (
                "64tib",
                spec(LARGE_VOLUME_GIB, blocks, options.list_changes),
            ),
        ];
        let dir = launcher.new_data_dir()?;
        let deployment = launcher.strata_deployment(dir.path()).await?;
        let seeded = match seed_lineages(launcher, &deployment, specs, pool).await {
            Ok(seeded) => seeded,
            Err(error) => {
                deployment.abandon().await;
                return Err(error);
            }
        };
        let instance = launcher.start_deployment(deployment, dir).await?;
        return Ok((
            instance,
            ListFixture {
                blocks,
                lineages: seeded,
            },
        ));
    }
    let instance = launcher.launch(kind).await?;
    let blocks = options.list_blocks.min(HTTP_SEED_LIMIT);
    let client = instance.client();
    let mut lineages = Vec::new();
    for (label, volume) in [("1tib", SMALL_VOLUME_GIB), ("64tib", LARGE_VOLUME_GIB)] {
        let spec = spec(volume, blocks, options.list_changes.min(blocks / 2));
        lineages.push(http_lineage(&client, label, &pool, &spec, options.concurrency).await?);
    }
    drop(client);
    Ok((instance, ListFixture { blocks, lineages }))
}

/// Seed the lineages of `specs` straight into the first node's state (before any node
/// serves).
async fn seed_lineages(
    launcher: &Launcher,
    deployment: &Deployment,
    specs: [(&'static str, LineageSpec); 2],
    pool: PayloadSet,
) -> anyhow::Result<Vec<Lineage>> {
    let settings = deployment.nodes.first().context("a deployment has nodes")?;
    let state = launcher.open_strata_state(settings).await?;
    let owner = settings.root_account.clone();
    launcher
        .server_runtime()
        .spawn(async move {
            let mut lineages = Vec::new();
            for (label, spec) in specs {
                let (parent, child) = seed::lineage(&state, &owner, &pool, &spec).await?;
                lineages.push(Lineage {
                    label,
                    parent,
                    child,
                    changes: spec.changed_positions.len(),
                });
            }
            // Dropping the state here closes the database before the server opens it.
            drop(state);
            anyhow::Ok(lineages)
        })
        .await?
}

/// Seed a lineage over HTTP: parent with every index, child with the changed ones.
async fn http_lineage(
    client: &EbsClient,
    label: &'static str,
    pool: &PayloadSet,
    spec: &LineageSpec,
    concurrency: usize,
) -> anyhow::Result<Lineage> {
    let parent = client.start_snapshot(spec.volume_gib, None).await?;
    // Parent: index n gets pool block n % P; child: the next pool block at changed positions.
    let cycle = pool.resident().max(1);
    let parent_pool = rotated(pool, cycle, spec.indexes.len(), 0);
    upload(
        client,
        &parent,
        Arc::new(spec.indexes.clone()),
        parent_pool,
        concurrency,
    )
    .await?;
    client.complete(&parent, to_u64(spec.indexes.len())).await?;
    let child = client
        .start_snapshot(spec.volume_gib, Some(&parent))
        .await?;
    let changed: Vec<u32> = spec
        .changed_positions
        .iter()
        .map(|p| spec.indexes[*p])
        .collect();
    let child_pool = PayloadSet::from_payloads(
        spec.changed_positions
            .iter()
            .map(|p| pool.get((p + 1) % cycle))
            .collect(),
    );
    upload(client, &child, Arc::new(changed), child_pool, concurrency).await?;
    client
        .complete(&child, to_u64(spec.changed_positions.len()))
        .await?;
    Ok(Lineage {
        label,
        parent,
        child,
        changes: spec.changed_positions.len(),
    })
}

/// A payload set whose block n is `pool[(n + shift) % cycle]`.
fn rotated(pool: &PayloadSet, cycle: usize, count: usize, shift: usize) -> PayloadSet {
    PayloadSet::from_payloads((0..count).map(|n| pool.get((n + shift) % cycle)).collect())
}

/// List every page of ListChangedBlocks; returns the entries and the wall time.
async fn changed_listing(
    client: &EbsClient,
    lineage: &Lineage,
) -> Result<(usize, Duration), ClientError> {
    let started = Instant::now();
    let mut entries = 0;
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_changed(&lineage.parent, &lineage.child, LIST_PAGE, token.as_deref())
            .await?;
        entries += page.changed_blocks.len();
        match page.next_token {
            Some(next) => token = Some(next),
            None => return Ok((entries, started.elapsed())),
        }
    }
}

/// One measured run over the fixture.
pub async fn measure(
    context: &RunContext<'_>,
    instance: &Instance,
    fixture: &ListFixture,
) -> anyhow::Result<Measurement> {
    let client = instance.client();
    let subject = &fixture.lineages[0].parent;
    let mut outcome = PoolOutcome::default();
    let mut extra = Vec::new();
    let window = Window::open(context, instance);

    // ListSnapshotBlocks, page by page; a page's latency is one operation.
    let started = Instant::now();
    let mut entries = 0usize;
    let mut token: Option<String> = None;
    loop {
        let sent = Instant::now();
        let page = client
            .list_blocks(subject, LIST_PAGE, token.as_deref())
            .await;
        outcome.latencies.push(sent.elapsed());
        outcome.ops += 1;
        match page {
            Ok(page) => {
                outcome.ok += 1;
                entries += page.blocks.len();
                match page.next_token {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            Err(error) => {
                outcome.errors += 1;
                outcome.first_error = Some(error.to_string());
                break;
            }
        }
    }
    outcome.elapsed = started.elapsed();
    if outcome.errors == 0 && entries != fixture.blocks {
        outcome.errors += 1;
        outcome.first_error = Some(format!("listed {entries} blocks of {}", fixture.blocks));
    }
    let secs = outcome.elapsed.as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)]
    extra.push(("entries_s", entries as f64 / secs));
    #[allow(clippy::cast_precision_loss)]
    extra.push(("entries", entries as f64));

    for lineage in &fixture.lineages {
        match changed_listing(&client, lineage).await {
            Ok((found, elapsed)) => {
                if found != lineage.changes {
                    outcome.errors += 1;
                    outcome.first_error.get_or_insert_with(|| {
                        format!(
                            "{}: {found} changed blocks listed, {} made",
                            lineage.label, lineage.changes
                        )
                    });
                }
                extra.push((changed_key(lineage.label), ms(elapsed)));
            }
            Err(error) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    let window = window.close();
    Ok(measurement(
        Scenario::List,
        context,
        instance,
        outcome,
        window,
        extra,
    ))
}

fn changed_key(label: &str) -> &'static str {
    if label == "64tib" {
        "changed_ms_64tib"
    } else {
        "changed_ms_1tib"
    }
}
