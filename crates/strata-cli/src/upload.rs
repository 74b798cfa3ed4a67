//! [`Uploader`]: a raw image or block device into a new snapshot, full or incremental.
//!
//! # What is sent
//! For every block the uploader knows two digests: the new image's, and what the snapshot
//! would read there if the block were not sent (its *baseline*): zeros without a parent, the
//! parent's content with one. A block is sent exactly when the two differ. So:
//! - without a parent, all-zero blocks are skipped (an unwritten block reads as zeros);
//! - with a parent, an all-zero block is skipped only where the parent holds zeros too,
//!   and written where the parent has data (else the child would inherit that data);
//! - blocks equal to the parent's are skipped: the upload is incremental.
//!
//! The parent's content is known, in order of preference, from `--base` (the image the parent
//! was made from, compared locally), the parent's manifest (`IMAGE.strata-manifest` written by
//! the upload or download of the parent; see [`crate::manifest`]), or by fetching the
//! parent's block where the parent has one (ListSnapshotBlocks says where). Parent blocks
//! past the end of the new image but inside the new volume are zeroed the same way.
//!
//! # Resuming
//! With a resume log (`IMAGE.strata-upload` from the CLI), every block the service
//! acknowledged is recorded. If the upload stops, the next run with the same image size,
//! volume size and parent continues the same pending snapshot: a recorded block counts as
//! what the snapshot holds at that index, so it is sent again only if the image changed
//! there. If the pending snapshot is gone (expired, or deleted), the upload stops with
//! [`UploadError::ResumeLost`] (the service's answer comes at the first write: a resumed
//! snapshot's "not found" is not retried), unless the log recorded no block yet, in which
//! case nothing is lost by starting over and it does so ([`UploadSummary::abandoned`] says
//! so). [`UploadOptions::restart`] discards a resume log up front. The log is removed once
//! the snapshot is complete.
//!
//! # Robustness
//! At most `concurrency` blocks are in flight; each Put is retried by the client's
//! [`crate::RetryPolicy`] with a deadline per attempt. StartSnapshot carries a client token,
//! so its retries cannot create two snapshots. CompleteSnapshot sends the count of written
//! blocks and the LINEAR aggregate of their digests, so the service rejects an upload that
//! lost or mixed up a block.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use strata_types::{BLOCK_SIZE, BLOCKS_PER_GIB, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};
use tokio::task::JoinSet;

use crate::api::{BlockListing, CompletionStatus, SnapshotClient, StartRequest};
use crate::error::{ImageError, UploadError};
use crate::image::{BLOCK_BYTES, SourceImage, is_zero};
use crate::manifest::{Manifest, ManifestLog};
use crate::progress::{ProgressEvent, Reporter, Step};

/// Suffix of an upload's resume log: `disk.img` → `disk.img.strata-upload`.
pub const RESUME_SUFFIX: &str = ".strata-upload";

/// The resume log path that goes with `image`.
pub fn resume_state_for(image: &std::path::Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(RESUME_SUFFIX);
    PathBuf::from(name)
}

/// Default number of blocks in flight (as coldsnap and AWS's guidance use).
pub const DEFAULT_CONCURRENCY: usize = 64;

/// What to upload and how.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The raw image or block device.
    pub image: PathBuf,
    /// Make the snapshot incremental on this completed snapshot.
    pub parent: Option<SnapshotId>,
    /// The image the parent was made from: compared locally to find the changed blocks.
    pub base: Option<PathBuf>,
    /// The parent's manifest. `None`: the image's own manifest, if it describes the parent.
    pub parent_manifest: Option<PathBuf>,
    /// Where to write the new snapshot's manifest; `None`: nowhere.
    pub manifest_out: Option<PathBuf>,
    /// Volume size; `None`: the image's size rounded up to a GiB.
    pub volume_size: Option<VolumeSize>,
    /// Snapshot description.
    pub description: Option<String>,
    /// Snapshot tags.
    pub tags: Vec<(String, String)>,
    /// Blocks in flight at once.
    pub concurrency: usize,
    /// Minutes of inactivity after which the service abandons the pending snapshot.
    pub timeout_minutes: Option<u32>,
    /// How long to wait for a snapshot CompleteSnapshot left `pending` to become readable;
    /// `None`: do not wait.
    pub wait: Option<Duration>,
    /// Where to record acknowledged blocks, so an interrupted upload resumes (see the module
    /// doc); `None`: an interrupted upload starts over.
    pub resume_state: Option<PathBuf>,
    /// Ignore (and replace) a resume log: start a new snapshot.
    pub restart: bool,
    /// Also keep the manifest in the cache by snapshot id ([`Manifest::save_to_cache`]), so
    /// a later download finds the image length.
    pub cache_manifest: bool,
    /// Ask for an encrypted snapshot (not with a parent: a child is encrypted like its
    /// parent).
    pub encrypted: bool,
    /// Encrypt under this KMS key (implies `encrypted` without a parent).
    pub kms_key_arn: Option<String>,
}

impl UploadOptions {
    /// Defaults for uploading `image` (no parent, default concurrency, no manifest).
    pub fn new(image: impl Into<PathBuf>) -> Self {
        Self {
            image: image.into(),
            parent: None,
            base: None,
            parent_manifest: None,
            manifest_out: None,
            volume_size: None,
            description: None,
            tags: Vec::new(),
            concurrency: DEFAULT_CONCURRENCY,
            timeout_minutes: None,
            wait: Some(Duration::from_secs(600)),
            resume_state: None,
            restart: false,
            cache_manifest: false,
            encrypted: false,
            kms_key_arn: None,
        }
    }
}

/// How the parent's content was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// No parent: the baseline is zeros.
    Empty,
    /// From the base image.
    BaseImage,
    /// From the parent's manifest.
    Manifest,
    /// By fetching the parent's blocks where it has them.
    Fetched,
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct UploadSummary {
    /// The new snapshot.
    pub snapshot: SnapshotId,
    /// Its volume size.
    pub volume_size: VolumeSize,
    /// Length of the image.
    pub image_size: u64,
    /// Blocks examined.
    pub blocks_scanned: u64,
    /// Blocks sent (PutSnapshotBlock) by this run.
    pub blocks_sent: u64,
    /// Blocks an earlier, interrupted run had sent to the same snapshot (and this run did not
    /// send again).
    pub blocks_resumed: u64,
    /// The pending snapshot a resume log named that was gone, so this run started a new one.
    pub abandoned: Option<SnapshotId>,
    /// All-zero blocks not sent because the baseline is zero there.
    pub zero_blocks_skipped: u64,
    /// Data blocks not sent because the parent holds the same content.
    pub unchanged_blocks_skipped: u64,
    /// Parent blocks fetched to compare (only without base image and manifest).
    pub parent_blocks_fetched: u64,
    /// How the parent's content was known.
    pub baseline: Baseline,
    /// What CompleteSnapshot (and the wait after it) left.
    pub status: CompletionStatus,
    /// The manifest written, if any.
    pub manifest: Option<PathBuf>,
    /// Why the manifest could not be written, if it could not (the upload itself succeeded).
    pub manifest_warning: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The parent's content, as far as the uploader can know it.
#[derive(Clone)]
enum ParentContent {
    Empty,
    Base(Arc<SourceImage>),
    Manifest(Arc<Manifest>),
    Fetch {
        snapshot: SnapshotId,
        tokens: Arc<HashMap<BlockIndex, String>>,
    },
}

impl ParentContent {
    fn baseline(&self) -> Baseline {
        match self {
            ParentContent::Empty => Baseline::Empty,
            ParentContent::Base(_) => Baseline::BaseImage,
            ParentContent::Manifest(_) => Baseline::Manifest,
            ParentContent::Fetch { .. } => Baseline::Fetched,
        }
    }

    /// Whether the parent certainly reads zeros at `index`, without any I/O.
    fn certainly_zero(&self, index: BlockIndex) -> bool {
        match self {
            ParentContent::Empty => true,
            ParentContent::Base(base) => base.in_hole(u64::from(index.get())),
            ParentContent::Manifest(manifest) => !manifest.blocks.contains_key(&index),
            ParentContent::Fetch { tokens, .. } => !tokens.contains_key(&index),
        }
    }
}

/// The snapshot being written, and what an earlier run already put in it.
struct Target {
    snapshot: SnapshotId,
    /// Digest of each block an earlier run sent (zero blocks included).
    previous: Arc<HashMap<BlockIndex, ChunkDigest>>,
    log: Option<ManifestLog>,
    resumed: bool,
    /// The service encrypts the snapshot (see [`crate::api::Started::encrypted`]).
    encrypted: bool,
}

/// What an encrypted snapshot reads where nothing was written, as far as a client can
/// know: not zeros (AWS returns garbage there), so no block compares equal to it and an
/// all-zero block is sent. (No SHA-256 output is all ones in practice.)
const UNWRITTEN_ENCRYPTED: ChunkDigest = ChunkDigest([0xff; 32]);

/// The outcome of one block.
struct BlockOutcome {
    index: BlockIndex,
    digest: ChunkDigest,
    sent: bool,
    parent_fetched: bool,
}

/// Uploads images through a [`SnapshotClient`].
#[derive(Debug, Clone)]
pub struct Uploader {
    client: SnapshotClient,
    reporter: Reporter,
}

impl Uploader {
    /// An uploader that reports progress (and the client's retries) to `reporter`.
    pub fn new(client: &SnapshotClient, reporter: Reporter) -> Self {
        Self {
            client: client.with_reporter(reporter.clone()),
            reporter,
        }
    }

    /// Upload `options.image` into a new snapshot (or, with a matching resume log, into the
    /// snapshot an interrupted run left pending) and complete it.
    pub async fn upload(&self, options: &UploadOptions) -> Result<UploadSummary, UploadError> {
        let started = Instant::now();
        match self.attempt(options, !options.restart, started).await {
            // The snapshot the log names cannot be written any more (expired, or gone).
            Err(UploadError::Interrupted {
                snapshot,
                cause,
                resumed: true,
                ..
            }) if lost_snapshot(&cause) => {
                let path = options.resume_state.clone().unwrap_or_default();
                let saved = ManifestLog::reopen(&path).map_or(0, |(_, _, done)| done.len());
                if saved > 0 {
                    return Err(UploadError::ResumeLost {
                        snapshot,
                        log: path,
                        saved: saved as u64,
                        cause,
                    });
                }
                // Nothing was recorded: a new snapshot loses nothing.
                let _ = std::fs::remove_file(&path);
                let mut summary = self.attempt(options, false, started).await?;
                summary.abandoned = Some(snapshot);
                Ok(summary)
            }
            outcome => outcome,
        }
    }

    async fn attempt(
        &self,
        options: &UploadOptions,
        may_resume: bool,
        started: Instant,
    ) -> Result<UploadSummary, UploadError> {
        let image = Arc::new(open(&options.image)?);
        let volume_size = volume_size_for(image.len(), options.volume_size)?;
        let parent = self.parent_content(options).await?;
        let mut target = self
            .start_or_resume(options, volume_size, image.len(), may_resume)
            .await?;

        let snapshot = target.snapshot.clone();
        let resumable = target.log.is_some();
        let resumed = target.resumed;
        let interrupted = |cause: UploadError| UploadError::Interrupted {
            snapshot: snapshot.clone(),
            resumable,
            resumed,
            cause: Box::new(cause),
        };
        let scan = self
            .send_blocks(
                &mut target,
                &image,
                &parent,
                volume_size,
                options.concurrency,
            )
            .await
            .map_err(interrupted)?;
        let status = self
            .complete(&snapshot, &scan.written, options.wait)
            .await
            .map_err(interrupted)?;
        if let Some(path) = &options.resume_state {
            // Complete: nothing left to resume.
            let _ = std::fs::remove_file(path);
        }

        let mut manifest = Manifest::new(snapshot.clone(), volume_size, image.len());
        manifest.parent = options.parent.clone();
        manifest.blocks = scan.content;
        let (manifest_path, mut manifest_warning) = match &options.manifest_out {
            Some(path) => match manifest.write(path) {
                Ok(()) => (Some(path.clone()), None),
                Err(error) => (None, Some(error.to_string())),
            },
            None => (None, None),
        };
        if options.cache_manifest
            && let Err(error) = manifest.save_to_cache()
        {
            manifest_warning.get_or_insert_with(|| error.to_string());
        }
        Ok(UploadSummary {
            snapshot,
            volume_size,
            image_size: image.len(),
            blocks_scanned: scan.scanned,
            blocks_sent: scan.sent,
            blocks_resumed: scan.resumed,
            abandoned: None,
            zero_blocks_skipped: scan.zero_skipped,
            unchanged_blocks_skipped: scan.unchanged_skipped,
            parent_blocks_fetched: scan.parent_fetched,
            baseline: parent.baseline(),
            status,
            manifest: manifest_path,
            manifest_warning,
            elapsed: started.elapsed(),
        })
    }

    /// Continue the snapshot a matching resume log names, or start a new one (and its log).
    async fn start_or_resume(
        &self,
        options: &UploadOptions,
        volume_size: VolumeSize,
        image_size: u64,
        may_resume: bool,
    ) -> Result<Target, UploadError> {
        if let Some(path) = options
            .resume_state
            .as_ref()
            .filter(|p| may_resume && p.exists())
            && let Ok((log, state, done)) = ManifestLog::reopen(path)
            && state.image_size == image_size
            && state.volume_size == volume_size
            && state.parent == options.parent
        {
            let previous = done.iter().map(|&i| (i, state.digest(i))).collect();
            return Ok(Target {
                snapshot: state.snapshot,
                previous: Arc::new(previous),
                log: Some(log),
                resumed: true,
                // The resume log does not say: as asked (a resumed run repeats the flags).
                encrypted: options.encrypted || options.kms_key_arn.is_some(),
            });
        }
        self.reporter.step(Step::Starting);
        if options.encrypted && options.parent.is_some() {
            return Err(UploadError::Invalid(
                "--encrypted cannot be combined with --parent: a child is encrypted like its parent (give --kms-key-id to name the key)"
                    .into(),
            ));
        }
        let started = self
            .client
            .start_snapshot(&StartRequest {
                volume_size,
                parent: options.parent.clone(),
                description: options.description.clone().or_else(|| {
                    options
                        .image
                        .file_name()
                        .map(|n| n.to_string_lossy().chars().take(255).collect())
                }),
                tags: options.tags.clone(),
                timeout_minutes: options.timeout_minutes,
                // AWS refuses Encrypted with a parent; a key may still be named.
                encrypted: options.parent.is_none()
                    && (options.encrypted || options.kms_key_arn.is_some()),
                kms_key_arn: options.kms_key_arn.clone(),
            })
            .await?;
        let snapshot = started.snapshot;
        let log = match &options.resume_state {
            Some(path) => {
                let mut header = Manifest::new(snapshot.clone(), volume_size, image_size);
                header.parent = options.parent.clone();
                Some(ManifestLog::create(path, &header)?)
            }
            None => None,
        };
        Ok(Target {
            snapshot,
            previous: Arc::new(HashMap::new()),
            log,
            resumed: false,
            encrypted: started.encrypted,
        })
    }

    /// Work out where the parent's content comes from (see the module doc).
    async fn parent_content(&self, options: &UploadOptions) -> Result<ParentContent, UploadError> {
        let Some(parent) = &options.parent else {
            if options.base.is_some() || options.parent_manifest.is_some() {
                return Err(UploadError::Invalid(
                    "--base and --parent-manifest need --parent (the snapshot the base image was uploaded as)"
                        .into(),
                ));
            }
            return Ok(ParentContent::Empty);
        };
        self.reporter.step(Step::Listing(parent.clone()));
        let listing = self.client.list_blocks(parent).await?;

        if let Some(base) = &options.base {
            // A manifest next to the base names the snapshot the base was uploaded as or
            // restored from: refuse an obvious mix-up.
            let beside = Manifest::path_for(base);
            if beside.exists() {
                let manifest = Manifest::read(&beside)?;
                if &manifest.snapshot != parent {
                    return Err(UploadError::Invalid(format!(
                        "the base image {} belongs to {} (says {}), not to the parent {parent}",
                        base.display(),
                        manifest.snapshot,
                        beside.display()
                    )));
                }
            }
            return Ok(ParentContent::Base(Arc::new(open(base)?)));
        }

        let explicit = options.parent_manifest.is_some();
        let path = options
            .parent_manifest
            .clone()
            .unwrap_or_else(|| Manifest::path_for(&options.image));
        if explicit || path.exists() {
            let manifest = match Manifest::read(&path) {
                Ok(manifest) => manifest,
                Err(error) if explicit => return Err(error.into()),
                // An unreadable manifest the user did not name is ignored: fetching the
                // parent's blocks is slower but needs no manifest.
                Err(_) => return Ok(fetch_baseline(parent, listing)),
            };
            if &manifest.snapshot == parent {
                // Every data block of the manifest must exist in the parent; if not, the
                // manifest is stale or forged, and trusting it would corrupt the child.
                let listed: std::collections::HashSet<BlockIndex> =
                    listing.blocks.iter().map(|(index, _)| *index).collect();
                if let Some(index) = manifest.blocks.keys().find(|i| !listed.contains(i)) {
                    return Err(UploadError::Invalid(format!(
                        "the manifest {} does not match {parent}: block {index} is not in the snapshot",
                        path.display()
                    )));
                }
                return Ok(ParentContent::Manifest(Arc::new(manifest)));
            }
            if explicit {
                return Err(UploadError::Invalid(format!(
                    "the manifest {} describes {}, not the parent {parent}",
                    path.display(),
                    manifest.snapshot
                )));
            }
        }
        Ok(fetch_baseline(parent, listing))
    }

    /// Scan every block, send those that differ from the parent, `concurrency` at a time.
    async fn send_blocks(
        &self,
        target: &mut Target,
        image: &Arc<SourceImage>,
        parent: &ParentContent,
        volume_size: VolumeSize,
        concurrency: usize,
    ) -> Result<ScanResult, UploadError> {
        let end = scan_end(image, parent, volume_size);
        self.reporter.report(ProgressEvent::Started {
            total_bytes: end * BLOCK_BYTES,
            already_done: 0,
        });
        let processed = Arc::new(AtomicU64::new(0));
        let mut result = ScanResult {
            written: target.previous.iter().map(|(i, d)| (*i, *d)).collect(),
            ..ScanResult::default()
        };
        let mut tasks: JoinSet<Result<BlockOutcome, UploadError>> = JoinSet::new();
        let concurrency = concurrency.max(1);
        for raw in 0..end {
            let Ok(raw) = u32::try_from(raw) else { break };
            let index = BlockIndex::new(raw);
            result.scanned += 1;
            // Fast path: a hole over a zero baseline needs neither a read nor a task. An
            // encrypted snapshot's unwritten blocks do not read as zeros on AWS: there,
            // only a zero block written before is a zero baseline.
            let zero_baseline = match target.previous.get(&index) {
                Some(digest) => digest.is_zero_block(),
                None => !target.encrypted && parent.certainly_zero(index),
            };
            if image.in_hole(u64::from(raw)) && zero_baseline {
                if target.previous.contains_key(&index) {
                    result.resumed += 1;
                } else {
                    result.zero_skipped += 1;
                }
                processed.fetch_add(1, Ordering::Relaxed);
                self.reporter.advance(BLOCK_BYTES);
                continue;
            }
            while tasks.len() >= concurrency {
                self.collect(&mut tasks, &mut result, target).await?;
            }
            let job = BlockJob {
                client: self.client.clone(),
                snapshot: target.snapshot.clone(),
                image: Arc::clone(image),
                parent: parent.clone(),
                previous: Arc::clone(&target.previous),
                index,
                processed: Arc::clone(&processed),
                total: end,
                just_started: !target.resumed,
                encrypted: target.encrypted,
            };
            tasks.spawn(job.run());
        }
        while !tasks.is_empty() {
            self.collect(&mut tasks, &mut result, target).await?;
        }
        Ok(result)
    }

    /// Wait for one block task and fold its outcome in (recording a sent block in the resume
    /// log); on error, stop the others.
    async fn collect(
        &self,
        tasks: &mut JoinSet<Result<BlockOutcome, UploadError>>,
        result: &mut ScanResult,
        target: &mut Target,
    ) -> Result<(), UploadError> {
        let outcome = match tasks.join_next().await {
            Some(Ok(Ok(outcome))) => outcome,
            Some(Ok(Err(error))) => {
                tasks.abort_all();
                return Err(error);
            }
            Some(Err(join)) => {
                tasks.abort_all();
                return Err(UploadError::Internal(format!(
                    "a block task failed: {join}"
                )));
            }
            None => return Ok(()),
        };
        self.reporter.advance(BLOCK_BYTES);
        if outcome.parent_fetched {
            result.parent_fetched += 1;
        }
        if outcome.sent {
            result.sent += 1;
            result.written.insert(outcome.index, outcome.digest);
            if let Some(log) = target.log.as_mut() {
                log.append(&[(outcome.index, outcome.digest)])?;
            }
        } else if target.previous.contains_key(&outcome.index) {
            result.resumed += 1;
        } else if outcome.digest.is_zero_block() {
            result.zero_skipped += 1;
        } else {
            result.unchanged_skipped += 1;
        }
        if !outcome.digest.is_zero_block() {
            result.content.insert(outcome.index, outcome.digest);
        }
        Ok(())
    }

    /// CompleteSnapshot, then (if it is still sealing) wait until it is readable.
    async fn complete(
        &self,
        snapshot: &SnapshotId,
        written: &BTreeMap<BlockIndex, ChunkDigest>,
        wait: Option<Duration>,
    ) -> Result<CompletionStatus, UploadError> {
        self.reporter.step(Step::Completing(snapshot.clone()));
        let aggregate = linear_aggregate(written.values());
        let status = self
            .client
            .complete_snapshot(snapshot, written.len() as u64, &aggregate)
            .await?;
        match (status, wait) {
            (CompletionStatus::Error, _) => Err(UploadError::Invalid(format!(
                "the service put {snapshot} in the error state"
            ))),
            (CompletionStatus::Pending, Some(limit)) => {
                self.reporter
                    .step(Step::WaitingForCompletion(snapshot.clone()));
                let deadline = Instant::now() + limit;
                loop {
                    if self.client.is_readable(snapshot).await? {
                        return Ok(CompletionStatus::Completed);
                    }
                    if Instant::now() >= deadline {
                        return Ok(CompletionStatus::Pending);
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            (status, _) => Ok(status),
        }
    }
}

#[derive(Default)]
struct ScanResult {
    scanned: u64,
    /// Blocks sent by this run.
    sent: u64,
    /// Digest of every block the snapshot holds written (earlier runs included).
    written: BTreeMap<BlockIndex, ChunkDigest>,
    /// Digest of every data block of the new image (for its manifest).
    content: BTreeMap<BlockIndex, ChunkDigest>,
    zero_skipped: u64,
    unchanged_skipped: u64,
    parent_fetched: u64,
    /// Blocks an earlier run sent that this run did not send again.
    resumed: u64,
}

/// One block's work: read, compare with the baseline, send if different.
struct BlockJob {
    client: SnapshotClient,
    snapshot: SnapshotId,
    image: Arc<SourceImage>,
    parent: ParentContent,
    previous: Arc<HashMap<BlockIndex, ChunkDigest>>,
    index: BlockIndex,
    processed: Arc<AtomicU64>,
    total: u64,
    just_started: bool,
    /// The snapshot is encrypted: an unwritten block is not a zero baseline.
    encrypted: bool,
}

impl BlockJob {
    async fn run(self) -> Result<BlockOutcome, UploadError> {
        let raw = u64::from(self.index.get());
        let image = Arc::clone(&self.image);
        let (data, digest) = blocking(move || read_and_hash(&image, raw)).await??;
        let (baseline, parent_fetched) = self.baseline().await?;
        let sent = digest != baseline;
        if sent {
            let done = self.processed.load(Ordering::Relaxed);
            let percent = u8::try_from(done * 100 / self.total.max(1)).unwrap_or(100);
            let data = data.unwrap_or_else(|| Bytes::from(vec![0u8; BLOCK_SIZE]));
            self.client
                .put_block(
                    &self.snapshot,
                    self.index,
                    &data,
                    &digest,
                    Some(percent),
                    self.just_started,
                )
                .await?;
        }
        self.processed.fetch_add(1, Ordering::Relaxed);
        Ok(BlockOutcome {
            index: self.index,
            digest,
            sent,
            parent_fetched,
        })
    }

    /// The digest the snapshot would read at this index without a write, and whether it
    /// took a fetch to learn it.
    async fn baseline(&self) -> Result<(ChunkDigest, bool), UploadError> {
        if let Some(digest) = self.previous.get(&self.index) {
            return Ok((*digest, false));
        }
        let raw = u64::from(self.index.get());
        // Where nothing was written, for certain: zeros, or not known when encrypted.
        let unwritten = if self.encrypted {
            UNWRITTEN_ENCRYPTED
        } else {
            ChunkDigest::zero_block()
        };
        match &self.parent {
            ParentContent::Empty => Ok((unwritten, false)),
            ParentContent::Manifest(manifest) => Ok((
                if manifest.blocks.contains_key(&self.index) {
                    manifest.digest(self.index)
                } else {
                    unwritten
                },
                false,
            )),
            ParentContent::Base(base) => {
                let base = Arc::clone(base);
                let (_, digest) = blocking(move || read_and_hash(&base, raw)).await??;
                // A hole or zeros of the base image may be a block the parent never wrote.
                let digest = if digest.is_zero_block() {
                    unwritten
                } else {
                    digest
                };
                Ok((digest, false))
            }
            ParentContent::Fetch { snapshot, tokens } => match tokens.get(&self.index) {
                None => Ok((unwritten, false)),
                Some(token) => {
                    let block = self.client.get_block(snapshot, self.index, token).await?;
                    Ok((block.digest, true))
                }
            },
        }
    }
}

/// Read block `index` and hash it; zero blocks (holes included) come back without data.
fn read_and_hash(
    image: &SourceImage,
    index: u64,
) -> Result<(Option<Bytes>, ChunkDigest), ImageError> {
    if image.in_hole(index) {
        return Ok((None, ChunkDigest::zero_block()));
    }
    let data = image.read_block(index)?;
    if is_zero(&data) {
        return Ok((None, ChunkDigest::zero_block()));
    }
    let digest = ChunkDigest::of(&data);
    Ok((Some(data), digest))
}

fn fetch_baseline(parent: &SnapshotId, listing: BlockListing) -> ParentContent {
    ParentContent::Fetch {
        snapshot: parent.clone(),
        tokens: Arc::new(listing.blocks.into_iter().collect()),
    }
}

/// Whether an interrupted resumed upload failed because its snapshot cannot be written any
/// more: the service said "not found" (gone) or refused for good (no longer pending). A
/// failure to reach the service at all says nothing about the snapshot.
fn lost_snapshot(cause: &UploadError) -> bool {
    matches!(cause, UploadError::Api(api)
        if api.is_not_found() || (api.code.is_some() && !api.is_retryable()))
}

/// Run blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, UploadError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| UploadError::Internal(format!("a read task failed: {e}")))
}

fn open(path: &std::path::Path) -> Result<SourceImage, UploadError> {
    Ok(SourceImage::open(path)?)
}

/// The LINEAR aggregate: SHA-256 over the raw 32-byte digests in ascending index order
/// (what coldsnap sends and AWS accepts).
pub fn linear_aggregate<'a>(digests: impl IntoIterator<Item = &'a ChunkDigest>) -> ChunkDigest {
    let mut hasher = Sha256::new();
    for digest in digests {
        hasher.update(digest.0);
    }
    ChunkDigest(hasher.finalize().into())
}

/// The volume size for an image of `len` bytes: the requested one if it is large enough,
/// else the length rounded up to a GiB.
fn volume_size_for(len: u64, requested: Option<VolumeSize>) -> Result<VolumeSize, UploadError> {
    const GIB: u64 = BLOCKS_PER_GIB * BLOCK_BYTES;
    let needed = len.div_ceil(GIB).max(1);
    match requested {
        Some(size) if size.gib() < needed => Err(UploadError::Invalid(format!(
            "the image needs a volume of at least {needed} GiB, not {} GiB",
            size.gib()
        ))),
        Some(size) => Ok(size),
        None => i64::try_from(needed)
            .ok()
            .and_then(|gib| VolumeSize::from_gib(gib).ok())
            .ok_or_else(|| {
                UploadError::Invalid(format!(
                    "the image is too large for a snapshot ({len} bytes)"
                ))
            }),
    }
}

/// One past the last block to examine: the image's blocks, plus parent blocks beyond the
/// image that the new volume would otherwise inherit.
fn scan_end(image: &SourceImage, parent: &ParentContent, volume_size: VolumeSize) -> u64 {
    let parent_end = match parent {
        ParentContent::Empty => 0,
        ParentContent::Base(base) => base.block_count(),
        ParentContent::Manifest(manifest) => manifest
            .blocks
            .keys()
            .next_back()
            .map_or(0, |i| u64::from(i.get()) + 1),
        ParentContent::Fetch { tokens, .. } => tokens
            .keys()
            .map(|i| u64::from(i.get()) + 1)
            .max()
            .unwrap_or(0),
    };
    image
        .block_count()
        .max(parent_end)
        .min(volume_size.block_count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn linear_aggregate_matches_the_documented_example() {
        // behavior.md §7.3: blocks of 0x01 and 0x02.
        let digests = [
            ChunkDigest::of(&vec![1u8; BLOCK_SIZE]),
            ChunkDigest::of(&vec![2u8; BLOCK_SIZE]),
        ];
        let aggregate = linear_aggregate(digests.iter());
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(aggregate.0),
            "fccGN1xyY7l5uqsw58BLULbsU8thbz9pDvzr9oCk5yk="
        );
    }

    #[test]
    fn volume_size_rounds_up_and_checks_the_request() {
        let gib = BLOCKS_PER_GIB * BLOCK_BYTES;
        let size = |g| VolumeSize::from_gib(g).expect("size");
        assert_eq!(volume_size_for(0, None).expect("ok"), size(1));
        assert_eq!(volume_size_for(gib, None).expect("ok"), size(1));
        assert_eq!(volume_size_for(gib + 1, None).expect("ok"), size(2));
        assert_eq!(volume_size_for(gib, Some(size(4))).expect("ok"), size(4));
        assert!(volume_size_for(gib + 1, Some(size(1))).is_err());
    }
}
