//! [`Syncer`]: copy snapshots from one EBS direct endpoint to another (AWS to a Strata DR
//! site, one Strata to another), a whole lineage incrementally.
//!
//! # What is sent
//! The source snapshots are given oldest first, each an ancestor of the next (the EBS
//! direct APIs do not say which snapshot is whose parent, so the caller names the chain).
//! The first is copied whole: every block ListSnapshotBlocks lists, except all-zero ones
//! (an unwritten block reads as zeros). Each next one becomes a snapshot on the target whose
//! parent is the previous copy, holding exactly the blocks ListChangedBlocks reports between
//! the two sources: the new content where the later snapshot has a block, zeros where only
//! the earlier one had it. So the target's lineage has the same shape, and its own
//! ListChangedBlocks between two copies names the same blocks as the source's between the
//! originals (Strata reports blocks whose content differs; AWS reports written blocks, which
//! may be more).
//!
//! Every block read is verified against the source's checksum ([`SnapshotClient::get_block`])
//! and written with its SHA-256, which the target verifies; CompleteSnapshot sends the count
//! and the LINEAR aggregate, so a lost or mixed-up block is refused.
//!
//! # Resuming
//! A state file records each finished copy (`done SOURCE TARGET`) and the copy in progress
//! (`pending SOURCE TARGET`), whose written blocks go to `STATE.blocks` (a
//! [`ManifestLog`]). Running the same sync again skips finished copies, continues the
//! pending snapshot (sending only unrecorded blocks), and then the rest; a later sync of a
//! longer chain with the same first snapshot copies only the new snapshots. A pending target
//! snapshot that is gone (expired) is started again.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_types::{BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};
use tokio::task::JoinSet;

use crate::api::{CompletionStatus, SnapshotClient, StartRequest};
use crate::error::{ApiError, ImageError, SyncError};
use crate::image::BLOCK_BYTES;
use crate::manifest::{Manifest, ManifestLog};
use crate::progress::{ProgressEvent, Reporter, Step, StopSignal};
use crate::upload::{DEFAULT_CONCURRENCY, linear_aggregate};

const STATE_MAGIC: &str = "strata-sync 1";

/// What to copy and how.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Source snapshots, oldest first, each an ancestor of the next.
    pub chain: Vec<SnapshotId>,
    /// The state file (see the module doc); `None`: not resumable.
    pub state: Option<PathBuf>,
    /// Blocks in flight at once.
    pub concurrency: usize,
    /// Description of each copy; `None`: `copy of SOURCE`.
    pub description: Option<String>,
    /// Tags of each copy.
    pub tags: Vec<(String, String)>,
    /// Stop early (what is written is recorded) when this is given.
    pub stop: Option<StopSignal>,
}

impl SyncOptions {
    /// Defaults for copying `chain`.
    pub fn new(chain: Vec<SnapshotId>) -> Self {
        Self {
            chain,
            state: None,
            concurrency: DEFAULT_CONCURRENCY,
            description: None,
            tags: Vec::new(),
            stop: None,
        }
    }
}

/// What happened to one snapshot of the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopiedSnapshot {
    /// The source snapshot.
    pub source: SnapshotId,
    /// Its copy on the target.
    pub target: SnapshotId,
    /// The copy's parent on the target.
    pub target_parent: Option<SnapshotId>,
    /// Blocks written by this run.
    pub blocks_written: u64,
    /// Of those, blocks of zeros (where the earlier snapshot had data and this one not).
    pub zero_blocks_written: u64,
    /// Blocks an earlier, interrupted run had written.
    pub blocks_written_earlier: u64,
    /// Copied by an earlier run; nothing was done now.
    pub already_copied: bool,
}

/// What a sync did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyncSummary {
    /// One entry per source snapshot, in chain order.
    pub snapshots: Vec<CopiedSnapshot>,
    /// Bytes written to the target by this run.
    pub bytes_written: u64,
    /// Wall time.
    #[serde(rename = "elapsed_seconds", serialize_with = "seconds")]
    pub elapsed: Duration,
}

fn seconds<S: serde::Serializer>(elapsed: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(elapsed.as_secs_f64())
}

/// The state file: finished copies and the one in progress.
#[derive(Debug, Default)]
struct SyncState {
    done: BTreeMap<SnapshotId, SnapshotId>,
    pending: Option<(SnapshotId, SnapshotId)>,
}

impl SyncState {
    fn read(path: &Path) -> Result<Self, SyncError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(ImageError::new("read the sync state", path, e).into()),
        };
        let mut lines = text.lines();
        if lines.next() != Some(STATE_MAGIC) {
            return Err(SyncError::Invalid(format!(
                "{} is not a sync state file (expected '{STATE_MAGIC}')",
                path.display()
            )));
        }
        let mut state = Self::default();
        // A torn last line (a crash mid-append) is ignored.
        let complete = text.ends_with('\n');
        let count = text.lines().count();
        for (n, line) in text.lines().enumerate().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parsed = match fields.as_slice() {
                [kind, source, target] => SnapshotId::parse(source)
                    .ok()
                    .zip(SnapshotId::parse(target).ok())
                    .map(|ids| (*kind, ids)),
                _ => None,
            };
            match parsed {
                Some(("done", (source, target))) => {
                    if state.pending.as_ref().is_some_and(|(s, _)| *s == source) {
                        state.pending = None;
                    }
                    state.done.insert(source, target);
                }
                Some(("pending", ids)) => state.pending = Some(ids),
                _ if n + 1 == count && !complete => {}
                _ => {
                    return Err(SyncError::Invalid(format!(
                        "{}:{}: unexpected line '{line}'",
                        path.display(),
                        n + 1
                    )));
                }
            }
        }
        Ok(state)
    }

    fn append(
        path: &Path,
        kind: &str,
        source: &SnapshotId,
        target: &SnapshotId,
    ) -> Result<(), SyncError> {
        let fresh = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| ImageError::new("open the sync state", path, e))?;
        let mut text = String::new();
        if fresh {
            text.push_str(STATE_MAGIC);
            text.push('\n');
        }
        text.push_str(&format!("{kind} {source} {target}\n"));
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| ImageError::new("write the sync state", path, e))?;
        Ok(())
    }
}

/// The block log of the copy in progress, next to the state file.
fn blocks_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".blocks");
    PathBuf::from(name)
}

/// Copies snapshots from a source client to a target client.
#[derive(Debug, Clone)]
pub struct Syncer {
    source: SnapshotClient,
    target: SnapshotClient,
    reporter: Reporter,
}

/// One block to write to the copy: where to read it, or zeros.
#[derive(Debug, Clone)]
enum Work {
    Fetch { index: BlockIndex, token: String },
    Zero { index: BlockIndex },
}

impl Work {
    fn index(&self) -> BlockIndex {
        match self {
            Work::Fetch { index, .. } | Work::Zero { index } => *index,
        }
    }
}

impl Syncer {
    /// A syncer reporting progress (and both clients' retries) to `reporter`.
    pub fn new(source: &SnapshotClient, target: &SnapshotClient, reporter: Reporter) -> Self {
        Self {
            source: source.with_reporter(reporter.clone()),
            target: target.with_reporter(reporter.clone()),
            reporter,
        }
    }

    /// Copy `options.chain` to the target (see the module doc).
    pub async fn sync(&self, options: &SyncOptions) -> Result<SyncSummary, SyncError> {
        let started = Instant::now();
        if options.chain.is_empty() {
            return Err(SyncError::Invalid("no snapshot to copy".into()));
        }
        let mut state = match &options.state {
            Some(path) => SyncState::read(path)?,
            None => SyncState::default(),
        };
        let mut summary = SyncSummary {
            snapshots: Vec::new(),
            bytes_written: 0,
            elapsed: Duration::ZERO,
        };
        let mut previous: Option<(SnapshotId, SnapshotId)> = None;
        for source in &options.chain {
            if let Some(target) = state.done.get(source) {
                summary.snapshots.push(CopiedSnapshot {
                    source: source.clone(),
                    target: target.clone(),
                    target_parent: previous.as_ref().map(|(_, t)| t.clone()),
                    blocks_written: 0,
                    zero_blocks_written: 0,
                    blocks_written_earlier: 0,
                    already_copied: true,
                });
                previous = Some((source.clone(), target.clone()));
                continue;
            }
            let copied = match self
                .copy_one(options, &mut state, source, previous.as_ref(), true)
                .await
            {
                // The pending copy an earlier run left is gone (expired): start it again.
                Err(SyncError::LostPending) => {
                    state.pending = None;
                    self.copy_one(options, &mut state, source, previous.as_ref(), false)
                        .await?
                }
                outcome => outcome?,
            };
            summary.bytes_written += copied.blocks_written * BLOCK_BYTES;
            previous = Some((source.clone(), copied.target.clone()));
            state.done.insert(source.clone(), copied.target.clone());
            summary.snapshots.push(copied);
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    /// Copy one source snapshot onto the target, incremental on `previous` (source and its
    /// copy) when given.
    async fn copy_one(
        &self,
        options: &SyncOptions,
        state: &mut SyncState,
        source: &SnapshotId,
        previous: Option<&(SnapshotId, SnapshotId)>,
        may_resume: bool,
    ) -> Result<CopiedSnapshot, SyncError> {
        // What to write.
        let (volume_size, work) = match previous {
            None => {
                self.reporter.step(Step::Listing(source.clone()));
                let listing = self.source.list_blocks(source).await?;
                let work = listing
                    .blocks
                    .into_iter()
                    .map(|(index, token)| Work::Fetch { index, token })
                    .collect::<Vec<_>>();
                (listing.volume_size, work)
            }
            Some((earlier, _)) => {
                self.reporter
                    .step(Step::ListingChanges(earlier.clone(), source.clone()));
                let changes = self.source.list_changed_blocks(earlier, source).await?;
                let work = changes
                    .blocks
                    .into_iter()
                    .map(|block| match block.second_token {
                        Some(token) => Work::Fetch {
                            index: block.index,
                            token,
                        },
                        None => Work::Zero { index: block.index },
                    })
                    .collect::<Vec<_>>();
                (changes.volume_size, work)
            }
        };
        let target_parent = previous.map(|(_, copy)| copy.clone());

        // The target snapshot: the pending one of an interrupted run, or a new one.
        let (target, mut log, written, resumed) = self
            .start_or_resume(
                options,
                state,
                source,
                volume_size,
                target_parent.as_ref(),
                may_resume,
            )
            .await?;
        let earlier = written.len() as u64;
        let todo: Vec<Work> = work
            .into_iter()
            .filter(|w| !written.contains_key(&w.index()))
            .collect();
        self.reporter.report(ProgressEvent::Started {
            total_bytes: (todo.len() as u64 + earlier) * BLOCK_BYTES,
            already_done: earlier * BLOCK_BYTES,
        });
        let mut written = written;
        let outcome = self
            .write_all(
                options,
                source,
                &target,
                todo,
                target_parent.is_none(),
                !resumed,
                &mut written,
                log.as_mut(),
            )
            .await;
        let (sent, zeros) = match outcome {
            Ok(counts) => counts,
            Err(SyncError::Api(api)) if resumed && api.is_not_found() => {
                return Err(SyncError::LostPending);
            }
            Err(error) => {
                return Err(SyncError::Interrupted {
                    snapshot: source.clone(),
                    target,
                    resumable: options.state.is_some(),
                    cause: Box::new(error),
                });
            }
        };

        self.reporter.step(Step::Completing(target.clone()));
        let aggregate = linear_aggregate(written.values());
        let status = self
            .target
            .complete_snapshot(&target, written.len() as u64, &aggregate)
            .await
            .map_err(|error| {
                if resumed && error.is_not_found() {
                    return SyncError::LostPending;
                }
                SyncError::Interrupted {
                    snapshot: source.clone(),
                    target: target.clone(),
                    resumable: options.state.is_some(),
                    cause: Box::new(error.into()),
                }
            })?;
        if status == CompletionStatus::Error {
            return Err(SyncError::Invalid(format!(
                "the target put {target} (the copy of {source}) in the error state"
            )));
        }
        if status == CompletionStatus::Pending {
            // The next copy needs this one as its parent: wait until it is readable.
            self.reporter
                .step(Step::WaitingForCompletion(target.clone()));
            let deadline = Instant::now() + Duration::from_secs(600);
            while !self.target.is_readable(&target).await? {
                if Instant::now() >= deadline {
                    return Err(SyncError::Invalid(format!(
                        "{target} (the copy of {source}) did not complete within 10 minutes; run the sync again"
                    )));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        if let Some(path) = &options.state {
            SyncState::append(path, "done", source, &target)?;
            if let Some(log) = log.take() {
                let _ = std::fs::remove_file(log.path());
            }
        }
        Ok(CopiedSnapshot {
            source: source.clone(),
            target,
            target_parent,
            blocks_written: sent,
            zero_blocks_written: zeros,
            blocks_written_earlier: earlier,
            already_copied: false,
        })
    }

    /// The pending copy an interrupted run left for `source` (with the blocks it wrote), or
    /// a new target snapshot.
    async fn start_or_resume(
        &self,
        options: &SyncOptions,
        state: &mut SyncState,
        source: &SnapshotId,
        volume_size: VolumeSize,
        parent: Option<&SnapshotId>,
        may_resume: bool,
    ) -> Result<Started, SyncError> {
        if let (Some(path), Some((pending_source, pending_target))) =
            (&options.state, &state.pending)
            && may_resume
            && pending_source == source
            && let Ok((log, recorded, done)) = ManifestLog::reopen(&blocks_path(path))
            && &recorded.snapshot == pending_target
            && recorded.parent.as_ref() == parent
            && recorded.volume_size == volume_size
        {
            let written = done.iter().map(|&i| (i, recorded.digest(i))).collect();
            return Ok((pending_target.clone(), Some(log), written, true));
        }
        self.reporter.step(Step::Starting);
        let target = self
            .target
            .start_snapshot(&StartRequest {
                volume_size,
                parent: parent.cloned(),
                description: Some(
                    options
                        .description
                        .clone()
                        .unwrap_or_else(|| format!("copy of {source}")),
                ),
                tags: options.tags.clone(),
                timeout_minutes: None,
                encrypted: false,
                kms_key_arn: None,
            })
            .await?
            .snapshot;
        let log = match &options.state {
            Some(path) => {
                SyncState::append(path, "pending", source, &target)?;
                state.pending = Some((source.clone(), target.clone()));
                let mut header =
                    Manifest::new(target.clone(), volume_size, volume_size.gib() << 30);
                header.parent = parent.cloned();
                Some(ManifestLog::create(&blocks_path(path), &header)?)
            }
            None => None,
        };
        Ok((target, log, BTreeMap::new(), false))
    }

    /// Read and write `todo`, `concurrency` at a time, recording each written block.
    /// Returns (blocks written, of them zeros).
    #[allow(clippy::too_many_arguments)]
    async fn write_all(
        &self,
        options: &SyncOptions,
        source: &SnapshotId,
        target: &SnapshotId,
        todo: Vec<Work>,
        no_parent: bool,
        fresh: bool,
        written: &mut BTreeMap<BlockIndex, ChunkDigest>,
        mut log: Option<&mut ManifestLog>,
    ) -> Result<(u64, u64), SyncError> {
        let zero = Bytes::from(vec![0u8; BLOCK_SIZE]);
        let total = todo.len() as u64 + written.len() as u64;
        let mut tasks: JoinSet<Result<Option<(BlockIndex, ChunkDigest)>, ApiError>> =
            JoinSet::new();
        let mut queue = todo.into_iter();
        let (mut sent, mut zeros) = (0u64, 0u64);
        let concurrency = options.concurrency.max(1);
        let stop = options.stop.clone().unwrap_or_default();
        loop {
            while tasks.len() < concurrency {
                let Some(work) = queue.next() else { break };
                let (from, to) = (self.source.clone(), self.target.clone());
                let (source, target, zero) = (source.clone(), target.clone(), zero.clone());
                // `written` holds the earlier run's blocks and this run's finished ones.
                let percent = u8::try_from((written.len() as u64 * 100 / total.max(1)).min(100))
                    .unwrap_or(100);
                tasks.spawn(async move {
                    let (index, data, digest) = match work {
                        Work::Zero { index } => (index, zero, ChunkDigest::zero_block()),
                        Work::Fetch { index, token } => {
                            let block = from.get_block(&source, index, &token).await?;
                            (index, block.data, block.digest)
                        }
                    };
                    // Without a parent an all-zero block reads as zeros unwritten.
                    if no_parent && digest.is_zero_block() {
                        return Ok(None);
                    }
                    to.put_block(&target, index, &data, &digest, Some(percent), fresh)
                        .await?;
                    Ok(Some((index, digest)))
                });
            }
            if tasks.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                () = stop.stopped(), if options.stop.is_some() => {
                    tasks.abort_all();
                    return Err(SyncError::Stopped);
                }
            };
            let Some(joined) = joined else { break };
            let outcome =
                joined.map_err(|e| SyncError::Internal(format!("a block task failed: {e}")))?;
            match outcome {
                Ok(Some((index, digest))) => {
                    if let Some(log) = log.as_deref_mut() {
                        log.append(&[(index, digest)])?;
                    }
                    written.insert(index, digest);
                    sent += 1;
                    if digest.is_zero_block() {
                        zeros += 1;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tasks.abort_all();
                    return Err(error.into());
                }
            }
            self.reporter.advance(BLOCK_BYTES);
        }
        Ok((sent, zeros))
    }
}

/// A target snapshot to write: its id, its block log, the blocks an earlier run wrote, and
/// whether it was resumed (then "not found" means it is gone, not that the service has yet
/// to learn of it).
type Started = (
    SnapshotId,
    Option<ManifestLog>,
    BTreeMap<BlockIndex, ChunkDigest>,
    bool,
);

/// The default state file of a sync of `first…` to `target_endpoint`: in the cache
/// directory, named after both, so the same sync run again (or extended) finds it.
pub fn default_state_path(first: &SnapshotId, target_endpoint: &str) -> Option<PathBuf> {
    let endpoint: String = target_endpoint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    crate::manifest::cache_dir().map(|dir| {
        dir.join("sync")
            .join(format!("{first}-to-{endpoint}.state"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_round_trips_and_ignores_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sync.state");
        let id = |s: &str| SnapshotId::parse(s).expect("id");
        assert!(SyncState::read(&path).expect("empty").done.is_empty());
        SyncState::append(&path, "pending", &id("snap-a"), &id("snap-c")).expect("append");
        SyncState::append(&path, "done", &id("snap-a"), &id("snap-c")).expect("append");
        SyncState::append(&path, "pending", &id("snap-b"), &id("snap-d")).expect("append");
        let mut file = OpenOptions::new().append(true).open(&path).expect("open");
        file.write_all(b"done snap-b sn").expect("torn");
        let state = SyncState::read(&path).expect("read");
        assert_eq!(state.done.get(&id("snap-a")), Some(&id("snap-c")));
        assert_eq!(state.pending, Some((id("snap-b"), id("snap-d"))));
        std::fs::write(&path, "something else\n").expect("write");
        assert!(SyncState::read(&path).is_err());
    }
}
