//! Copying every snapshot of one store into another (`strata migrate`): an embedded data
//! directory into a cluster's PostgreSQL and object store, or any pair of adapters.
//!
//! Each snapshot is re-created in the target through the target's own
//! [`SnapshotService`], as a backup client would upload it: a pending record with the
//! source's id, owner, lineage, tags and client token; one Put per block that differs
//! from its parent (announced, verified against its digest, stored unless the target
//! holds that content, recorded); a CompleteSnapshot that builds the block map in the
//! target. So every invariant of the target's store holds for migrated data exactly as
//! for uploaded data, a target cluster may keep serving while it runs, and no SQL or
//! object layout is written twice. Then:
//!
//! - **Verified**: the block map rebuilt in the target must have the source's root hash.
//!   Trees are content-addressed, so equal roots mean equal maps; every chunk this run
//!   stored is read back from the target (whose `get` checks it against its digest), and
//!   every chunk read from the source was checked by the source's `get` and hashed again
//!   by the Put.
//! - **Exact**: the record is then restored field by field (times, progress, counts,
//!   parent): the target's record equals the source's.
//! - **Idempotent and resumable**: a snapshot whose record in the target equals the
//!   source's is skipped; one left unfinished by an interrupted run (pending in the target,
//!   completed in the source) is started over, its chunks already in the target not copied
//!   again. A different snapshot under the same id is refused, never overwritten.
//!
//! Parents are migrated before their children, so a child's Puts are only the blocks it
//! changed and its tree shares the parent's nodes. A completed snapshot whose parent was
//! deleted is copied whole. A pending snapshot is copied with its writes when the tree it
//! is built on is in the target (it can then be completed there); one built on a deleted
//! parent is skipped with the reason. A snapshot that timed out is copied as the `error`
//! record it is.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use strata_types::{BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId};
use tokio::task::JoinSet;

use crate::block_map::{self, DiffStats};
use crate::clock::{Clock, SystemClock};
use crate::error::ServiceError;
use crate::ports::{ChunkStore, CreateOutcome, MetadataStore, StoreError};
use crate::retry::RetryPolicy;
use crate::service::SnapshotService;
use crate::snapshot::{SnapshotRecord, SnapshotStatus};
use crate::tokens::TokenIssuer;

/// How a migration runs.
#[derive(Debug, Clone, Copy)]
pub struct MigrateOptions {
    /// Blocks copied at once (each holds at most two copies of one block in memory).
    pub concurrency: usize,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self { concurrency: 16 }
    }
}

/// What happened to one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Copied by this run.
    Copied,
    /// The target already held it (an earlier run copied it).
    AlreadyPresent,
    /// Left alone, for this reason.
    Skipped(String),
    /// Not copied: this went wrong (the run goes on with the other snapshots).
    Failed(String),
}

/// One snapshot's part of a migration.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its status in the source.
    pub status: SnapshotStatus,
    /// What happened.
    pub outcome: Outcome,
    /// Blocks put into the target (those that differ from the parent).
    pub blocks: u64,
    /// Of those, blocks whose content this run stored in the target (read back verified).
    pub chunks_stored: u64,
    /// Bytes of those chunks.
    pub bytes_stored: u64,
    /// Blocks whose content the target held already (an earlier snapshot, run or dedup).
    pub chunks_present: u64,
    /// All-zero blocks (recorded, never stored).
    pub zero_blocks: u64,
}

impl SnapshotReport {
    fn new(record: &SnapshotRecord, outcome: Outcome) -> Self {
        Self {
            id: record.id.clone(),
            status: record.status,
            outcome,
            blocks: 0,
            chunks_stored: 0,
            bytes_stored: 0,
            chunks_present: 0,
            zero_blocks: 0,
        }
    }
}

/// A whole migration, one entry per source snapshot, parents first.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Per snapshot.
    pub snapshots: Vec<SnapshotReport>,
}

impl MigrationReport {
    /// How many snapshots ended with `outcome`'s kind.
    pub fn count(&self, kind: fn(&Outcome) -> bool) -> usize {
        self.snapshots.iter().filter(|s| kind(&s.outcome)).count()
    }

    /// Whether any snapshot failed.
    pub fn failed(&self) -> bool {
        self.count(|o| matches!(o, Outcome::Failed(_))) > 0
    }

    /// Chunks stored by this run, and their bytes.
    pub fn stored(&self) -> (u64, u64) {
        self.snapshots.iter().fold((0, 0), |(n, b), s| {
            (n + s.chunks_stored, b + s.bytes_stored)
        })
    }
}

/// Copies the snapshots of a source store into a target store.
pub struct Migration<SM, SC, TM, TC> {
    source_metadata: Arc<SM>,
    source_chunks: Arc<SC>,
    target: SnapshotService<TM, TC>,
    target_metadata: Arc<TM>,
    target_chunks: Arc<TC>,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
    options: MigrateOptions,
}

/// Why one snapshot could not be copied: reported, and the run goes on.
type Failure = String;

impl<SM, SC, TM, TC> Migration<SM, SC, TM, TC>
where
    SM: MetadataStore,
    SC: ChunkStore,
    TM: MetadataStore,
    TC: ChunkStore,
{
    /// A migration from the `source` stores into the `target` stores.
    pub fn new(
        source: (Arc<SM>, Arc<SC>),
        target: (Arc<TM>, Arc<TC>),
        options: MigrateOptions,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        // The service only puts and completes: it never issues a token anyone sees.
        let tokens = TokenIssuer::new(rand::random());
        let service = SnapshotService::new(
            Arc::clone(&target.0),
            Arc::clone(&target.1),
            tokens,
            Arc::clone(&clock),
        );
        Self {
            source_metadata: source.0,
            source_chunks: source.1,
            target: service,
            target_metadata: target.0,
            target_chunks: target.1,
            retry: RetryPolicy::default(),
            clock,
            options: MigrateOptions {
                concurrency: options.concurrency.max(1),
            },
        }
    }

    /// Copy every snapshot, parents first; `progress` sees each snapshot's report as it
    /// is done. Fails only when the source cannot be listed: a snapshot that cannot be
    /// copied is reported as [`Outcome::Failed`] and the others are still copied.
    pub async fn run(
        &self,
        mut progress: impl FnMut(&SnapshotReport),
    ) -> Result<MigrationReport, ServiceError> {
        let records = crate::with_retries!(
            self.retry,
            "list the source's snapshots",
            self.source_metadata.list_snapshots(None)
        )?;
        let mut report = MigrationReport::default();
        let mut not_copied = HashSet::new();
        for record in parents_first(records) {
            let snapshot = match &record.parent {
                // Its Puts would be all its blocks, not its changes: wait for the parent.
                Some(parent) if not_copied.contains(parent) => SnapshotReport::new(
                    &record,
                    Outcome::Skipped(format!("its parent {parent} was not copied")),
                ),
                _ => self.migrate(&record).await,
            };
            if matches!(snapshot.outcome, Outcome::Failed(_) | Outcome::Skipped(_)) {
                not_copied.insert(record.id.clone());
            }
            if let Outcome::Failed(why) = &snapshot.outcome {
                tracing::warn!(snapshot = %record.id, %why, "snapshot not migrated");
            }
            progress(&snapshot);
            report.snapshots.push(snapshot);
        }
        Ok(report)
    }

    async fn migrate(&self, source: &SnapshotRecord) -> SnapshotReport {
        if let Some(key) = &source.encryption_key {
            // Its blocks are sealed under a key of the source's key service, which a
            // migration does not carry over (nor the master key that unwraps it).
            return SnapshotReport::new(
                source,
                Outcome::Skipped(format!(
                    "encrypted at rest under key {key}; encrypted snapshots are not migrated"
                )),
            );
        }
        let expected = target_record(source, self.clock.now_ms());
        // Counts of a copy that fails halfway are kept: what it stored is in the target.
        let mut report = SnapshotReport::new(source, Outcome::Copied);
        let done = match self.start_over_if_unfinished(source, &expected).await {
            Err(why) => Err(why),
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => match expected.status {
                SnapshotStatus::Completed => self.copy_completed(source, &mut report).await,
                SnapshotStatus::Pending => self.copy_pending(source, &mut report).await,
                SnapshotStatus::Error => self.copy_record(&expected).await,
            },
        };
        report.outcome = done.unwrap_or_else(Outcome::Failed);
        report
    }

    /// Look at what the target holds under the source's id: `Some` outcome when there is
    /// nothing to do; `None` when the snapshot is to be copied (a leftover of an
    /// interrupted run was deleted first).
    async fn start_over_if_unfinished(
        &self,
        source: &SnapshotRecord,
        expected: &SnapshotRecord,
    ) -> Result<Option<Outcome>, Failure> {
        let id = &source.id;
        let Some(held) = self.target_record_of(id).await? else {
            return Ok(None);
        };
        if held == *expected {
            return Ok(Some(Outcome::AlreadyPresent));
        }
        if held.owner != source.owner || held.lineage != source.lineage {
            return Err(format!(
                "the target holds another snapshot {id} (owner {}, lineage {}): left alone",
                held.owner, held.lineage
            ));
        }
        match (expected.status, held.status) {
            // Copied before, changed in the target since (tags): the data is the same.
            (SnapshotStatus::Completed, SnapshotStatus::Completed) if held.root == source.root => {
                Ok(Some(Outcome::AlreadyPresent))
            }
            (SnapshotStatus::Completed, SnapshotStatus::Completed) => Err(format!(
                "the target's {id} is completed with other content (root {:?}, the source's {:?}): left alone",
                held.root, source.root
            )),
            // An interrupted copy: only a migration creates a pending snapshot with the id
            // of a completed one. Its chunks stay registered in the target, so starting
            // over copies only what is missing.
            (SnapshotStatus::Completed, _) => {
                tracing::info!(snapshot = %id, "starting over the unfinished copy of an earlier run");
                crate::with_retries!(
                    self.retry,
                    "delete an unfinished copy",
                    self.target_metadata.delete_snapshot(id)
                )
                .map_err(|e| format!("cannot delete the unfinished copy: {e}"))?;
                Ok(None)
            }
            // A pending or failed snapshot copied before and written in the target since:
            // those writes may be acknowledged, so they are never undone.
            _ => Ok(Some(Outcome::Skipped(format!(
                "the target's copy is {} and changed since it was copied; left alone",
                held.status.as_str()
            )))),
        }
    }

    /// A completed snapshot: Put every block that differs from the parent, Complete in the
    /// target, check the root, restore the record.
    async fn copy_completed(
        &self,
        source: &SnapshotRecord,
        report: &mut SnapshotReport,
    ) -> Result<Outcome, Failure> {
        let base = self.usable_base(source).await?;
        let transient = self.transient_record(source, base.is_some());
        self.create(transient).await?;
        let writes = self.changed_blocks(source, base.is_some()).await?;
        self.copy_blocks(source, writes, report).await?;
        let count = i64::try_from(report.blocks).unwrap_or(i64::MAX);
        self.target
            .complete_snapshot(&source.owner, &source.id, count, None)
            .await
            .map_err(|e| format!("cannot complete the copy: {e}"))?;
        let copied = self.target_record_of(&source.id).await?;
        let root = copied.as_ref().and_then(|r| r.root);
        if root != source.root {
            // Never leave wrong content under the source's id: the next run copies again.
            let deleted = self.target_metadata.delete_snapshot(&source.id).await;
            return Err(format!(
                "the block map rebuilt in the target has root {root:?}, the source's is {:?}; \
                 the copy was deleted ({})",
                source.root,
                if deleted.is_ok() {
                    "run again"
                } else {
                    "delete it before running again"
                }
            ));
        }
        let restore = source.clone();
        self.restore(source, move |held| {
            (held.status == SnapshotStatus::Completed && held.root == restore.root)
                .then(|| restore.clone())
        })
        .await?;
        Ok(Outcome::Copied)
    }

    /// A pending snapshot: its record and writes, so it can be completed in the target.
    async fn copy_pending(
        &self,
        source: &SnapshotRecord,
        report: &mut SnapshotReport,
    ) -> Result<Outcome, Failure> {
        let base = self.usable_base(source).await?;
        if source.base_root.is_some() && base.is_none() {
            return Ok(Outcome::Skipped(
                "pending on a parent that is not in the target (deleted in the source): \
                 complete or delete it in the source and run again"
                    .into(),
            ));
        }
        self.create(self.transient_record(source, true)).await?;
        let writes = crate::with_retries!(
            self.retry,
            "read the source's pending writes",
            self.source_metadata.pending_writes(&source.id)
        )
        .map_err(|e| format!("cannot read its pending writes: {e}"))?
        .blocks;
        self.copy_blocks(source, writes, report).await?;
        let restore = source.clone();
        self.restore(source, move |held| {
            (held.status == SnapshotStatus::Pending).then(|| SnapshotRecord {
                write_sequence: held.write_sequence.max(restore.write_sequence),
                ..restore.clone()
            })
        })
        .await?;
        Ok(Outcome::Copied)
    }

    /// A snapshot with no data to copy (timed out): its record alone.
    async fn copy_record(&self, record: &SnapshotRecord) -> Result<Outcome, Failure> {
        self.create(SnapshotRecord {
            parent: None,
            ..record.clone()
        })
        .await?;
        let restore = record.clone();
        self.restore(record, move |_| Some(restore.clone())).await?;
        Ok(Outcome::Copied)
    }

    /// The source's parent, if the target holds it as the tree the snapshot was built on
    /// (completed, same owner, root = the snapshot's base root): then only the changed
    /// blocks are copied and the trees share nodes.
    async fn usable_base(&self, source: &SnapshotRecord) -> Result<Option<SnapshotId>, Failure> {
        let Some(parent) = &source.parent else {
            return Ok(None);
        };
        let held = self.target_record_of(parent).await?;
        Ok(held
            .filter(|p| {
                p.status == SnapshotStatus::Completed
                    && p.owner == source.owner
                    && p.root == source.base_root
            })
            .map(|p| p.id))
    }

    /// The pending record the copy starts from: the source's identity, with fresh
    /// activity (so the target's timeout sweep leaves it alone while it is copied) and
    /// no writes yet. `with_base`: built on the parent's tree, which the target holds.
    fn transient_record(&self, source: &SnapshotRecord, with_base: bool) -> SnapshotRecord {
        SnapshotRecord {
            status: SnapshotStatus::Pending,
            parent: if with_base {
                source.parent.clone()
            } else {
                None
            },
            base_root: if with_base { source.base_root } else { None },
            last_activity_ms: self.clock.now_ms(),
            timeout_minutes: source.timeout_minutes.max(60),
            completion_time_ms: None,
            progress: None,
            write_sequence: 0,
            changed_blocks: 0,
            root: None,
            status_message: None,
            ..source.clone()
        }
    }

    async fn create(&self, record: SnapshotRecord) -> Result<(), Failure> {
        let id = record.id.clone();
        let outcome = crate::with_retries!(
            self.retry,
            "create a snapshot record",
            self.target_metadata.create_snapshot(record.clone())
        )
        .map_err(|e| format!("cannot create its record: {e}"))?;
        match outcome {
            CreateOutcome::Created => Ok(()),
            CreateOutcome::ClientTokenExists(other) => Err(format!(
                "its client token already names snapshot {} of the same owner in the target",
                other.id
            )),
            CreateOutcome::ParentGone => Err(format!(
                "its parent {:?} went away in the target while {id} was being copied",
                record.parent
            )),
        }
    }

    /// Replace the copied record with the source's (`restore` sees the record as held
    /// and returns the replacement, or `None` if it changed unexpectedly).
    async fn restore(
        &self,
        source: &SnapshotRecord,
        restore: impl Fn(&SnapshotRecord) -> Option<SnapshotRecord> + Clone + Send + 'static,
    ) -> Result<(), Failure> {
        let restored = crate::with_retries!(self.retry, "restore a snapshot record", {
            let restore = restore.clone();
            self.target_metadata
                .update_snapshot(&source.id, Box::new(move |held| restore(held)))
        })
        .map_err(|e| format!("cannot restore its record: {e}"))?;
        match restored {
            Some(_) => Ok(()),
            None => Err("its copy changed in the target before its record was restored".into()),
        }
    }

    async fn target_record_of(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, Failure> {
        crate::with_retries!(
            self.retry,
            "read a target record",
            self.target_metadata.snapshot(id)
        )
        .map_err(|e| format!("cannot read the target's record of {id}: {e}"))
    }

    /// The blocks to put: those that differ from the parent's tree (`with_base`), or all.
    async fn changed_blocks(
        &self,
        source: &SnapshotRecord,
        with_base: bool,
    ) -> Result<Vec<(BlockIndex, ChunkDigest)>, Failure> {
        let nodes = self
            .source_metadata
            .nodes()
            .map_err(|e| format!("cannot read the source's block map: {e}"))?;
        let (base, root) = (source.base_root, source.root);
        let keep_below = source.volume_size.block_count();
        let id = source.id.clone();
        let walk = move || -> Result<Vec<(BlockIndex, ChunkDigest)>, String> {
            let read = |e: StoreError| format!("cannot read the source's block map: {e}");
            if !with_base {
                return block_map::scan(&nodes, root, BlockIndex::new(0), usize::MAX).map_err(read);
            }
            let differences = block_map::diff(
                &nodes,
                base,
                root,
                BlockIndex::new(0),
                usize::MAX,
                &mut DiffStats::default(),
            )
            .map_err(read)?;
            let mut writes = Vec::with_capacity(differences.len());
            for difference in differences {
                match difference.second {
                    Some(digest) => writes.push((difference.index, digest)),
                    // Beyond a smaller child's volume: the rebuild truncates them.
                    None if u64::from(difference.index.get()) >= keep_below => {}
                    None => {
                        return Err(format!(
                            "{id} has no block {} that its parent has: no write makes such a tree",
                            difference.index
                        ));
                    }
                }
            }
            Ok(writes)
        };
        tokio::task::spawn_blocking(walk)
            .await
            .map_err(|e| format!("block-map walk failed: {e}"))?
    }

    /// Put `writes` into the copy, `concurrency` at a time: first one block of each
    /// distinct content, then the blocks that repeat one (which then find it stored), so
    /// no content is stored twice by two concurrent Puts.
    async fn copy_blocks(
        &self,
        source: &SnapshotRecord,
        writes: Vec<(BlockIndex, ChunkDigest)>,
        report: &mut SnapshotReport,
    ) -> Result<(), Failure> {
        let mut seen = HashSet::new();
        let (firsts, repeats): (Vec<_>, Vec<_>) = writes
            .into_iter()
            .partition(|(_, digest)| seen.insert(*digest));
        self.put_blocks(source, firsts, report).await?;
        self.put_blocks(source, repeats, report).await
    }

    async fn put_blocks(
        &self,
        source: &SnapshotRecord,
        writes: Vec<(BlockIndex, ChunkDigest)>,
        report: &mut SnapshotReport,
    ) -> Result<(), Failure> {
        let mut running = JoinSet::new();
        let mut first_failure = None;
        let mut writes = writes.into_iter();
        loop {
            while running.len() < self.options.concurrency && first_failure.is_none() {
                let Some((index, digest)) = writes.next() else {
                    break;
                };
                let copy = BlockCopy {
                    source_chunks: Arc::clone(&self.source_chunks),
                    target: self.target.clone(),
                    target_chunks: Arc::clone(&self.target_chunks),
                    retry: self.retry,
                    record: source.clone(),
                };
                running.spawn(async move { copy.run(index, digest).await });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            match joined {
                Ok(Ok(copied)) => {
                    report.blocks += 1;
                    match copied {
                        Copied::Zero => report.zero_blocks += 1,
                        Copied::Present => report.chunks_present += 1,
                        Copied::Stored(bytes) => {
                            report.chunks_stored += 1;
                            report.bytes_stored += bytes;
                        }
                    }
                }
                Ok(Err(why)) => {
                    first_failure.get_or_insert(why);
                }
                Err(e) => {
                    first_failure.get_or_insert(format!("a block copy failed: {e}"));
                }
            }
        }
        match first_failure {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

/// What one block copy did.
enum Copied {
    Zero,
    Present,
    Stored(u64),
}

/// One block's copy, on its own task.
struct BlockCopy<SC, TM, TC> {
    source_chunks: Arc<SC>,
    target: SnapshotService<TM, TC>,
    target_chunks: Arc<TC>,
    retry: RetryPolicy,
    record: SnapshotRecord,
}

impl<SC: ChunkStore, TM: MetadataStore, TC: ChunkStore> BlockCopy<SC, TM, TC> {
    async fn run(self, index: BlockIndex, digest: ChunkDigest) -> Result<Copied, Failure> {
        let at = |what: String| format!("block {index} (chunk {digest}): {what}");
        let data = if digest.is_zero_block() {
            Bytes::from(vec![0u8; BLOCK_SIZE])
        } else {
            crate::with_retries!(
                self.retry,
                "read a source chunk",
                self.source_chunks.get(digest)
            )
            .map_err(|e| at(format!("cannot read it from the source: {e}")))?
            .ok_or_else(|| at("the source does not hold its chunk".into()))?
        };
        let (owner, id) = (&self.record.owner, &self.record.id);
        let permit = self
            .target
            .begin_put(owner, id, index, digest)
            .await
            .map_err(|e| at(format!("the target refused it: {e}")))?;
        let present = permit.content_is_stored();
        let mut hasher = permit.block_hasher();
        if !hasher.update(&data) {
            return Err(at(format!("the source's chunk is {} bytes", data.len())));
        }
        // The Put hashes the bytes again and refuses them unless they match the digest.
        self.target
            .put_block(permit, hasher.finish(), self.record.progress)
            .await
            .map_err(|e| at(format!("the target refused it: {e}")))?;
        if digest.is_zero_block() {
            return Ok(Copied::Zero);
        }
        if present {
            return Ok(Copied::Present);
        }
        // Read back what this run stored: the target's get checks it against its digest.
        let read = crate::with_retries!(
            self.retry,
            "read a copied chunk back",
            self.target_chunks.get(digest)
        )
        .map_err(|e| at(format!("reading it back from the target failed: {e}")))?;
        match read {
            Some(bytes) if bytes.len() == data.len() => Ok(Copied::Stored(bytes.len() as u64)),
            Some(bytes) => Err(at(format!("read back {} bytes", bytes.len()))),
            None => Err(at("the target does not hold it after storing it".into())),
        }
    }
}

/// The record the target should hold for `source`: the same, except that a snapshot
/// past its deadline is copied as the `error` it is (without the base root, whose tree
/// the target may not hold and nothing will read).
fn target_record(source: &SnapshotRecord, now_ms: i64) -> SnapshotRecord {
    if source.status_at(now_ms) == SnapshotStatus::Error {
        SnapshotRecord {
            base_root: None,
            ..source.as_of(now_ms)
        }
    } else {
        source.clone()
    }
}

/// `records` with every parent before its children (a parent that is not among them,
/// deleted, does not hold its children back), otherwise in start order.
fn parents_first(mut records: Vec<SnapshotRecord>) -> Vec<SnapshotRecord> {
    records.sort_by(|a, b| (a.start_time_ms, &a.id).cmp(&(b.start_time_ms, &b.id)));
    let present: HashSet<SnapshotId> = records.iter().map(|r| r.id.clone()).collect();
    let mut children: HashMap<SnapshotId, Vec<SnapshotRecord>> = HashMap::new();
    let mut roots = Vec::new();
    for record in records {
        match &record.parent {
            Some(parent) if present.contains(parent) && *parent != record.id => {
                children.entry(parent.clone()).or_default().push(record);
            }
            _ => roots.push(record),
        }
    }
    let mut ordered = Vec::new();
    let mut stack: Vec<SnapshotRecord> = roots.into_iter().rev().collect();
    while let Some(record) = stack.pop() {
        if let Some(kids) = children.remove(&record.id) {
            stack.extend(kids.into_iter().rev());
        }
        ordered.push(record);
    }
    // A cycle (impossible from the service) would leave records behind: keep them last.
    ordered.extend(children.into_values().flatten());
    ordered
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_types::{AccountId, VolumeSize};

    fn record(id: &str, parent: Option<&str>, start: i64) -> SnapshotRecord {
        let id = SnapshotId::parse(id).expect("id");
        SnapshotRecord {
            lineage: id.clone(),
            id,
            owner: AccountId::parse("000000000001").expect("account"),
            status: SnapshotStatus::Completed,
            volume_size: VolumeSize::from_gib(1).expect("size"),
            parent: parent.map(|p| SnapshotId::parse(p).expect("parent")),
            description: None,
            tags: Vec::new(),
            encrypted: false,
            kms_key_arn: None,
            encryption_key: None,
            timeout_minutes: 60,
            client_token: None,
            start_fingerprint: String::new(),
            start_time_ms: start,
            last_activity_ms: start,
            completion_time_ms: Some(start),
            progress: Some(100),
            write_sequence: 0,
            changed_blocks: 0,
            root: None,
            base_root: None,
            status_message: None,
        }
    }

    #[test]
    fn parents_come_before_their_children_whatever_the_start_times() {
        let a = "snap-0000000000000000a";
        let b = "snap-0000000000000000b";
        let c = "snap-0000000000000000c";
        let orphan = "snap-0000000000000000d";
        // Clocks of different nodes: the child b claims to have started before a.
        let ordered = parents_first(vec![
            record(c, Some(b), 30),
            record(b, Some(a), 5),
            record(a, None, 10),
            record(orphan, Some("snap-0000000000000000e"), 1),
        ]);
        let ids: Vec<&str> = ordered.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [orphan, a, b, c]);
    }
}
