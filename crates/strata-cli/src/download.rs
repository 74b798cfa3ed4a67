//! [`Downloader`]: a snapshot into a sparse file or onto a block device, verified and
//! resumable.
//!
//! # Files
//! For `OUTPUT` a regular file, the data goes to `OUTPUT.strata-partial`, and each block is
//! recorded in `OUTPUT.strata-resume` (a [`ManifestLog`]) once its bytes are on stable
//! storage (the partial file is fsynced before a batch of entries is appended). At the end the
//! partial file is fsynced and renamed to `OUTPUT`, the log is removed and
//! `OUTPUT.strata-manifest` is written. So `OUTPUT` either does not exist or is complete, and
//! running the same command again after any interruption fetches only the blocks not yet
//! recorded.
//!
//! The output is sparse: blocks the snapshot does not have, and all-zero blocks, are left as
//! holes (or punched, when resuming into a file that may hold stale bytes there). A block
//! device is written in place, zeros included, since its old content is unknown; it is not
//! resumable.
//!
//! # Length
//! A snapshot only knows its volume size in GiB, not the length of the image it was made
//! from. The output is the volume size unless a length is given, directly or through the
//! manifest written by the upload (which also makes every block checked against it; the CLI
//! finds that manifest by itself when it is next to the output or in the manifest cache,
//! see [`Manifest::find`]). A length that would cut off blocks the snapshot has is refused
//! unless [`DownloadOptions::truncate`] says so.
//!
//! # Stopping
//! With a [`StopSignal`], a stop request (Ctrl-C in the CLI) ends the download after saving
//! every block already written: the next run resumes from there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_types::{BLOCK_SIZE, BLOCKS_PER_GIB, BlockIndex, ChunkDigest, SnapshotId};
use tokio::task::{JoinHandle, JoinSet};

use crate::api::SnapshotClient;
use crate::error::{DownloadError, ImageError};
use crate::image::{BLOCK_BYTES, TargetImage, TargetKind, sync_parent_dir};
use crate::manifest::{Manifest, ManifestLog};
use crate::progress::{ProgressEvent, Reporter, Step, StopSignal};
use crate::upload::DEFAULT_CONCURRENCY;

/// Suffix of the file a download writes before renaming it to the output.
pub const PARTIAL_SUFFIX: &str = ".strata-partial";
/// Suffix of a download's resume log.
pub const RESUME_SUFFIX: &str = ".strata-resume";

/// How often finished blocks are made durable and recorded.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
const CHECKPOINT_BLOCKS: usize = 1024;

/// What to download and how.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// A file path or block device.
    pub output: PathBuf,
    /// Output length in bytes; `None`: the expected manifest's image size, else the volume
    /// size. Blocks past it are not fetched.
    pub size: Option<u64>,
    /// A manifest of the snapshot: every block is checked against it, and it gives the length.
    pub expected: Option<Manifest>,
    /// Blocks in flight at once.
    pub concurrency: usize,
    /// Replace an existing output (required for a block device).
    pub force: bool,
    /// Write `OUTPUT.strata-manifest` when done (regular files only).
    pub write_manifest: bool,
    /// Also keep that manifest in the cache by snapshot id ([`Manifest::save_to_cache`]).
    pub cache_manifest: bool,
    /// Allow an explicit [`size`](Self::size) that cuts off blocks the snapshot has.
    pub truncate: bool,
    /// Stop early (saving progress) when this is given.
    pub stop: Option<StopSignal>,
}

impl DownloadOptions {
    /// Defaults for downloading `snapshot` to `output`.
    pub fn new(snapshot: SnapshotId, output: impl Into<PathBuf>) -> Self {
        Self {
            snapshot,
            output: output.into(),
            size: None,
            expected: None,
            concurrency: DEFAULT_CONCURRENCY,
            force: false,
            write_manifest: true,
            cache_manifest: false,
            truncate: false,
            stop: None,
        }
    }
}

/// What a download did.
#[derive(Debug, Clone)]
pub struct DownloadSummary {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Where it went.
    pub output: PathBuf,
    /// Output length in bytes.
    pub size: u64,
    /// Blocks the snapshot has within that length.
    pub blocks_total: u64,
    /// Blocks fetched by this run.
    pub blocks_fetched: u64,
    /// Blocks an earlier, interrupted run had already saved (not fetched again).
    pub blocks_resumed: u64,
    /// Bytes fetched by this run.
    pub bytes_fetched: u64,
    /// Fetched blocks that were all zeros (left as holes).
    pub zero_blocks: u64,
    /// The manifest written, if any.
    pub manifest: Option<PathBuf>,
    /// Why the manifest could not be written, if it could not (the download succeeded).
    pub manifest_warning: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// How to treat an all-zero block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ZeroBlocks {
    /// Leave the hole of a freshly created file.
    Skip,
    /// Punch a hole: a resumed file may hold bytes of an unrecorded, interrupted write.
    Punch,
    /// Write zeros (block devices).
    Write,
}

/// Where the bytes go and how progress is recorded.
struct Destination {
    target: Arc<TargetImage>,
    zero_blocks: ZeroBlocks,
    /// For regular files: the resume log, and the partial file to rename at the end.
    log: Option<ManifestLog>,
    partial: Option<PathBuf>,
    /// Digests of blocks saved so far (earlier runs included).
    saved: Manifest,
    /// Indexes saved so far.
    done: BTreeSet<BlockIndex>,
    resumed: u64,
}

/// Downloads snapshots through a [`SnapshotClient`].
#[derive(Debug, Clone)]
pub struct Downloader {
    client: SnapshotClient,
    reporter: Reporter,
}

impl Downloader {
    /// A downloader that reports progress (and the client's retries) to `reporter`.
    pub fn new(client: &SnapshotClient, reporter: Reporter) -> Self {
        Self {
            client: client.with_reporter(reporter.clone()),
            reporter,
        }
    }

    /// Download `options.snapshot` to `options.output`.
    pub async fn download(
        &self,
        options: &DownloadOptions,
    ) -> Result<DownloadSummary, DownloadError> {
        let started = Instant::now();
        let snapshot = &options.snapshot;
        if let Some(expected) = &options.expected
            && &expected.snapshot != snapshot
        {
            return Err(DownloadError::Invalid(format!(
                "the manifest describes {}, not {snapshot}",
                expected.snapshot
            )));
        }
        self.reporter.step(Step::Listing(snapshot.clone()));
        let listing = self.client.list_blocks(snapshot).await?;
        let volume_bytes = listing.volume_size.gib() * BLOCKS_PER_GIB * BLOCK_BYTES;
        let size = options
            .size
            .or(options.expected.as_ref().map(|m| m.image_size))
            .unwrap_or(volume_bytes);
        if size > volume_bytes {
            return Err(DownloadError::Invalid(format!(
                "{snapshot} holds {volume_bytes} bytes; cannot produce {size}"
            )));
        }
        if options.size.is_some()
            && options.expected.is_none()
            && !options.truncate
            && let Some((last, _)) = listing.blocks.last()
            && u64::from(last.get()) * BLOCK_BYTES >= size
        {
            return Err(DownloadError::Truncates {
                snapshot: snapshot.clone(),
                size,
                data_end: (u64::from(last.get()) + 1) * BLOCK_BYTES,
            });
        }
        if let Some(expected) = &options.expected {
            let listed: BTreeSet<BlockIndex> = listing.blocks.iter().map(|(i, _)| *i).collect();
            if let Some(index) = expected.blocks.keys().find(|i| !listed.contains(i)) {
                return Err(DownloadError::Mismatch {
                    snapshot: snapshot.clone(),
                    index: *index,
                    expected: expected.digest(*index).to_hex(),
                    actual: format!(
                        "{} (the snapshot does not have it)",
                        ChunkDigest::zero_block()
                    ),
                });
            }
        }
        let wanted: Vec<(BlockIndex, String)> = listing
            .blocks
            .into_iter()
            .filter(|(index, _)| u64::from(index.get()) * BLOCK_BYTES < size)
            .collect();

        let mut destination = prepare(options, snapshot, listing.volume_size, size)?;
        if destination.target.kind() == TargetKind::BlockDevice {
            zero_fill_gaps(&destination.target, &wanted, size).await?;
        }
        let todo: Vec<(BlockIndex, String)> = wanted
            .iter()
            .filter(|(index, _)| !destination.done.contains(index))
            .cloned()
            .collect();
        let total = wanted.len() as u64;
        self.reporter.report(ProgressEvent::Started {
            total_bytes: total * BLOCK_BYTES,
            already_done: (total - todo.len() as u64) * BLOCK_BYTES,
        });

        let fetched = match self.fetch_all(options, &todo, size, &mut destination).await {
            Ok(fetched) => fetched,
            Err(error) => {
                return Err(DownloadError::Interrupted {
                    saved: destination.done.len() as u64,
                    total,
                    cause: Box::new(error),
                });
            }
        };

        self.reporter.step(Step::Syncing);
        let target = Arc::clone(&destination.target);
        blocking(move || target.sync_all()).await??;
        let mut manifest = None;
        let mut manifest_warning = None;
        if let (Some(partial), Some(log)) = (&destination.partial, &destination.log) {
            std::fs::rename(partial, &options.output).map_err(|e| {
                ImageError::new("rename the finished download to", &options.output, e)
            })?;
            sync_parent_dir(&options.output)?;
            // The output is complete; a leftover log would only make a later run think so too.
            let _ = std::fs::remove_file(log.path());
            if options.write_manifest {
                let path = Manifest::path_for(&options.output);
                match destination.saved.write(&path) {
                    Ok(()) => manifest = Some(path),
                    Err(error) => manifest_warning = Some(error.to_string()),
                }
            }
            if options.cache_manifest
                && options.expected.is_none()
                && let Err(error) = destination.saved.save_to_cache()
            {
                manifest_warning.get_or_insert_with(|| error.to_string());
            }
        }
        Ok(DownloadSummary {
            snapshot: snapshot.clone(),
            output: options.output.clone(),
            size,
            blocks_total: total,
            blocks_fetched: fetched.count,
            bytes_fetched: fetched.count * BLOCK_BYTES,
            blocks_resumed: destination.resumed,
            zero_blocks: fetched.zeros,
            manifest,
            manifest_warning,
            elapsed: started.elapsed(),
        })
    }

    /// Fetch `todo`, `concurrency` at a time, checkpointing as blocks land.
    ///
    /// A checkpoint's data sync runs beside the fetches rather than in their way: waiting
    /// for it here would drain the pipeline once a second (an fsync of a busy file takes
    /// tens to hundreds of milliseconds), and the next fetches would start only after it.
    /// Blocks that land during a sync wait for the next checkpoint.
    async fn fetch_all(
        &self,
        options: &DownloadOptions,
        todo: &[(BlockIndex, String)],
        size: u64,
        destination: &mut Destination,
    ) -> Result<Fetched, DownloadError> {
        let expected = options.expected.clone().map(Arc::new);
        let mut tasks: JoinSet<Result<(BlockIndex, ChunkDigest), DownloadError>> = JoinSet::new();
        let mut pending: Vec<(BlockIndex, ChunkDigest)> = Vec::new();
        let mut syncing: Option<Checkpoint> = None;
        let mut last_checkpoint = Instant::now();
        let mut fetched = Fetched::default();
        let concurrency = options.concurrency.max(1);
        let stop = options.stop.clone().unwrap_or_default();
        let mut queue = todo.iter();
        loop {
            while tasks.len() < concurrency {
                let Some((index, token)) = queue.next() else {
                    break;
                };
                let job = FetchJob {
                    client: self.client.clone(),
                    snapshot: options.snapshot.clone(),
                    index: *index,
                    token: token.clone(),
                    target: Arc::clone(&destination.target),
                    zero_blocks: destination.zero_blocks,
                    expected: expected.clone(),
                    size,
                };
                tasks.spawn(job.run());
            }
            if tasks.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                recorded = wait_for(&mut syncing, destination), if syncing.is_some() => {
                    if let Err(error) = recorded {
                        // The output could not be made durable: nothing more is recorded.
                        tasks.abort_all();
                        return Err(error);
                    }
                    continue;
                }
                () = stop.stopped(), if options.stop.is_some() => {
                    tasks.abort_all();
                    // Blocks still in flight are not recorded; those done are saved.
                    settle(destination, &mut syncing, &mut pending).await?;
                    return Err(DownloadError::Stopped);
                }
            };
            let Some(joined) = joined else {
                break;
            };
            let outcome =
                joined.map_err(|e| DownloadError::Internal(format!("a block task failed: {e}")));
            match outcome.and_then(|r| r) {
                Ok((index, digest)) => {
                    fetched.count += 1;
                    if digest.is_zero_block() {
                        fetched.zeros += 1;
                    }
                    pending.push((index, digest));
                    self.reporter.advance(BLOCK_BYTES);
                }
                Err(error) => {
                    tasks.abort_all();
                    // Keep what is already written, so the next run resumes from here.
                    let _ = settle(destination, &mut syncing, &mut pending).await;
                    return Err(error);
                }
            }
            if syncing.is_none()
                && (pending.len() >= CHECKPOINT_BLOCKS
                    || last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL)
            {
                syncing = Checkpoint::start(destination, &mut pending);
                last_checkpoint = Instant::now();
            }
        }
        settle(destination, &mut syncing, &mut pending).await?;
        Ok(fetched)
    }
}

#[derive(Default)]
struct Fetched {
    count: u64,
    zeros: u64,
}

/// Blocks written to the output whose data sync is under way; they are recorded when it ends
/// (data first, so a recorded block is always really there).
struct Checkpoint {
    blocks: Vec<(BlockIndex, ChunkDigest)>,
    /// `None` when there is no log to record into (a block device): nothing to wait for.
    sync: Option<JoinHandle<Result<(), ImageError>>>,
}

impl Checkpoint {
    /// Start syncing the data of every block in `pending` (all already written); `None` when
    /// there are none.
    fn start(
        destination: &Destination,
        pending: &mut Vec<(BlockIndex, ChunkDigest)>,
    ) -> Option<Self> {
        if pending.is_empty() {
            return None;
        }
        let sync = destination.log.as_ref().map(|_| {
            let target = Arc::clone(&destination.target);
            tokio::task::spawn_blocking(move || target.sync_data())
        });
        Some(Self {
            blocks: std::mem::take(pending),
            sync,
        })
    }

    /// The sync has ended with `synced`: on success, append the blocks to the log and count
    /// them as done.
    fn record(
        self,
        destination: &mut Destination,
        synced: Result<(), DownloadError>,
    ) -> Result<(), DownloadError> {
        synced?;
        if let Some(log) = destination.log.as_mut() {
            log.append(&self.blocks)?;
        }
        for (index, digest) in self.blocks {
            destination.saved.insert(index, digest);
            destination.done.insert(index);
        }
        Ok(())
    }
}

/// Wait for the checkpoint under way, if any, to finish its sync, then record it.
/// Cancel-safe (it runs in a `select!`): until the sync ends the checkpoint stays in
/// `syncing`, and nothing is awaited between its end and the record.
async fn wait_for(
    syncing: &mut Option<Checkpoint>,
    destination: &mut Destination,
) -> Result<(), DownloadError> {
    let synced = match syncing.as_mut().and_then(|c| c.sync.as_mut()) {
        Some(sync) => match sync.await {
            Ok(synced) => synced.map_err(DownloadError::from),
            Err(e) => Err(DownloadError::Internal(format!("a sync task failed: {e}"))),
        },
        None => Ok(()),
    };
    match syncing.take() {
        Some(checkpoint) => checkpoint.record(destination, synced),
        None => Ok(()),
    }
}

/// Record every written block before the download ends: the checkpoint under way, then
/// what landed since.
async fn settle(
    destination: &mut Destination,
    syncing: &mut Option<Checkpoint>,
    pending: &mut Vec<(BlockIndex, ChunkDigest)>,
) -> Result<(), DownloadError> {
    wait_for(syncing, destination).await?;
    let mut last = Checkpoint::start(destination, pending);
    wait_for(&mut last, destination).await
}

/// Open or create the output (and, for files, resume an earlier run when its log matches).
fn prepare(
    options: &DownloadOptions,
    snapshot: &SnapshotId,
    volume_size: strata_types::VolumeSize,
    size: u64,
) -> Result<Destination, DownloadError> {
    let output = &options.output;
    let fresh = Manifest::new(snapshot.clone(), volume_size, size);
    let is_block_device = std::fs::metadata(output).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    if output.is_dir() {
        return Err(DownloadError::OutputIsDirectory(output.clone()));
    }
    if output.exists() && !options.force {
        return Err(DownloadError::Invalid(format!(
            "{} already exists; pass --force to overwrite it",
            output.display()
        )));
    }
    if is_block_device {
        let target = TargetImage::open_existing(output)?;
        if target.len() < size {
            return Err(DownloadError::Invalid(format!(
                "{} holds {} bytes; the snapshot needs {size}",
                output.display(),
                target.len()
            )));
        }
        return Ok(Destination {
            target: Arc::new(target),
            zero_blocks: ZeroBlocks::Write,
            log: None,
            partial: None,
            saved: fresh,
            done: BTreeSet::new(),
            resumed: 0,
        });
    }

    let partial = with_suffix(output, PARTIAL_SUFFIX);
    let resume = with_suffix(output, RESUME_SUFFIX);
    if resume.exists()
        && partial.exists()
        && let Ok((log, saved, done)) = ManifestLog::reopen(&resume)
    {
        let target = TargetImage::open_existing(&partial)?;
        if saved.snapshot == *snapshot && saved.image_size == size && target.len() == size {
            let resumed = done.len() as u64;
            return Ok(Destination {
                target: Arc::new(target),
                zero_blocks: ZeroBlocks::Punch,
                log: Some(log),
                partial: Some(partial),
                saved,
                done,
                resumed,
            });
        }
    }
    // No usable earlier run: start over.
    let target = TargetImage::create_sparse(&partial, size)?;
    let log = ManifestLog::create(&resume, &fresh)?;
    Ok(Destination {
        target: Arc::new(target),
        zero_blocks: ZeroBlocks::Skip,
        log: Some(log),
        partial: Some(partial),
        saved: fresh,
        done: BTreeSet::new(),
        resumed: 0,
    })
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// On a block device, write zeros where the snapshot has no block.
async fn zero_fill_gaps(
    target: &Arc<TargetImage>,
    wanted: &[(BlockIndex, String)],
    size: u64,
) -> Result<(), DownloadError> {
    let mut gaps = Vec::new();
    let mut at = 0u64;
    for (index, _) in wanted {
        let start = u64::from(index.get()) * BLOCK_BYTES;
        if start > at {
            gaps.push((at, start - at));
        }
        at = start + BLOCK_BYTES;
    }
    if at < size {
        gaps.push((at, size - at));
    }
    let target = Arc::clone(target);
    blocking(move || {
        gaps.iter()
            .try_for_each(|&(offset, len)| target.zero_range(offset, len))
    })
    .await??;
    Ok(())
}

/// One block's work: fetch (verified by the client), check, write.
struct FetchJob {
    client: SnapshotClient,
    snapshot: SnapshotId,
    index: BlockIndex,
    token: String,
    target: Arc<TargetImage>,
    zero_blocks: ZeroBlocks,
    expected: Option<Arc<Manifest>>,
    size: u64,
}

impl FetchJob {
    async fn run(self) -> Result<(BlockIndex, ChunkDigest), DownloadError> {
        let block = self
            .client
            .get_block(&self.snapshot, self.index, &self.token)
            .await?;
        if let Some(expected) = &self.expected {
            let want = expected.digest(self.index);
            if want != block.digest {
                return Err(DownloadError::Mismatch {
                    snapshot: self.snapshot.clone(),
                    index: self.index,
                    expected: want.to_hex(),
                    actual: block.digest.to_hex(),
                });
            }
        }
        let offset = u64::from(self.index.get()) * BLOCK_BYTES;
        let len = usize::try_from((self.size - offset).min(BLOCK_BYTES)).unwrap_or(BLOCK_SIZE);
        let zero = block.digest.is_zero_block();
        let (target, mode) = (self.target, self.zero_blocks);
        blocking(move || match (zero, mode) {
            (true, ZeroBlocks::Skip) => Ok(()),
            (true, ZeroBlocks::Punch) => target.zero_range(offset, len as u64),
            _ => target.write_at(offset, &block.data[..len]),
        })
        .await??;
        Ok((self.index, block.digest))
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, DownloadError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DownloadError::Internal(format!("a write task failed: {e}")))
}
