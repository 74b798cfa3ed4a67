//! Seeding big snapshots directly through a self-started Strata's own service, for the
//! `list` and `complete-big` scenarios (see `scenarios/list.rs` for why).
//!
//! Only the public API of the composition root is used: the pool's blocks go through
//! `SnapshotService::put_block` (chunk stored, write recorded), every other block's write
//! is recorded with `MetadataStore::record_block` exactly as `put_block` records it after
//! storing a chunk that already exists, and both snapshots are completed by
//! `SnapshotService::complete_snapshot`.

use anyhow::Context;
use strata_core::body::HashedBlock;
use strata_core::ports::{BlockWrite, MetadataStore};
use strata_core::service::StartSnapshotInput;
use strata_server::app::AppState;
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};
use tokio::task::JoinSet;

use crate::payloads::{Payload, PayloadSet};

/// Record writes this many at a time, so the group-commit writer sees full groups.
const IN_FLIGHT: usize = 4096;

/// A parent snapshot with a block at each of `indexes` (ascending), and a child that
/// rewrites the blocks at `changed_positions` (positions in `indexes`) with other content.
#[derive(Debug, Clone)]
pub struct LineageSpec {
    /// Volume size, GiB.
    pub volume_gib: u64,
    /// The parent's block indexes, ascending.
    pub indexes: Vec<u32>,
    /// Positions in `indexes` the child rewrites.
    pub changed_positions: Vec<usize>,
}

/// Seed one lineage; returns (parent id, child id).
pub async fn lineage(
    state: &AppState,
    owner: &AccountId,
    pool: &PayloadSet,
    spec: &LineageSpec,
) -> anyhow::Result<(String, String)> {
    let service = &state.service;
    let cycle = pool.resident().max(1);
    let volume_gib = i64::try_from(spec.volume_gib)?;
    let parent = pending(state, owner, pool, volume_gib, &spec.indexes).await?;
    let count = i64::try_from(spec.indexes.len())?;
    service
        .complete_snapshot(owner, &parent, count, None)
        .await
        .context("seed: complete parent")?;

    let child = service
        .start_snapshot(owner, start_input(volume_gib, Some(parent.clone())))
        .await
        .context("seed: start child")?;
    for position in &spec.changed_positions {
        let index = spec.indexes[*position];
        put(
            state,
            owner,
            &child.id,
            index,
            &pool.get((position + 1) % cycle),
        )
        .await?;
    }
    let changes = i64::try_from(spec.changed_positions.len())?;
    service
        .complete_snapshot(owner, &child.id, changes, None)
        .await
        .context("seed: complete child")?;
    Ok((parent.to_string(), child.id.to_string()))
}

/// A pending snapshot of `volume_gib` GiB with a recorded write at each of `indexes`
/// (ascending): index `indexes[n]` gets pool block `n % P`. The pool's blocks go through
/// `put_block`; every other write is recorded as `put_block` records a block whose chunk
/// is stored.
pub async fn pending(
    state: &AppState,
    owner: &AccountId,
    pool: &PayloadSet,
    volume_gib: i64,
    indexes: &[u32],
) -> anyhow::Result<SnapshotId> {
    let service = &state.service;
    let cycle = pool.resident().max(1);
    let snapshot = service
        .start_snapshot(owner, start_input(volume_gib, None))
        .await
        .context("seed: start")?;
    // The pool's blocks through the real path, so their chunks exist.
    for (position, index) in indexes.iter().enumerate().take(cycle) {
        put(
            state,
            owner,
            &snapshot.id,
            *index,
            &pool.get(position % cycle),
        )
        .await?;
    }
    // Every other write recorded as put_block records a block whose chunk is stored.
    let metadata = service.metadata().clone();
    let mut writes = JoinSet::new();
    for (position, index) in indexes.iter().enumerate().skip(cycle) {
        if writes.len() >= IN_FLIGHT {
            join_one(&mut writes).await?;
        }
        let write = BlockWrite {
            snapshot: snapshot.id.clone(),
            index: BlockIndex::new(*index),
            digest: ChunkDigest(pool.get(position % cycle).digest),
            progress: None,
            at_ms: state.clock.now_ms(),
            // Re-used content: its chunk was registered by the puts above.
            stored_size: None,
            // The bench seeds plaintext snapshots.
            checksum: None,
        };
        let metadata = metadata.clone();
        writes.spawn(async move { metadata.record_block(write).await });
    }
    while !writes.is_empty() {
        join_one(&mut writes).await?;
    }
    Ok(snapshot.id)
}

fn start_input(volume_size_gib: i64, parent: Option<SnapshotId>) -> StartSnapshotInput {
    StartSnapshotInput {
        volume_size_gib,
        parent,
        ..StartSnapshotInput::default()
    }
}

async fn put(
    state: &AppState,
    owner: &AccountId,
    snapshot: &SnapshotId,
    index: u32,
    payload: &Payload,
) -> anyhow::Result<()> {
    let digest = ChunkDigest(payload.digest);
    let block = HashedBlock::with_digest(payload.data.clone(), digest);
    let permit = state
        .service
        .begin_put(owner, snapshot, BlockIndex::new(index), digest)
        .await
        .context("seed: check block")?;
    state
        .service
        .put_block(permit, block, None)
        .await
        .context("seed: put block")?;
    Ok(())
}

async fn join_one<E: std::error::Error + Send + Sync + 'static>(
    writes: &mut JoinSet<Result<(), E>>,
) -> anyhow::Result<()> {
    if let Some(joined) = writes.join_next().await {
        joined
            .context("seed: record task failed")?
            .context("seed: record block")?;
    }
    Ok(())
}
