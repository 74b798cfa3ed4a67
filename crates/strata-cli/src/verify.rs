//! [`Verifier`]: read every block of a snapshot and check it, optionally against an image.
//!
//! Each block is fetched through [`SnapshotClient::get_block`], which checks its SHA-256
//! against the service's checksum. With an image, each block's digest is also compared with
//! the image's block at the same index, and every image block the snapshot does not have
//! must be zeros (that is what the snapshot reads there).
//!
//! A block that cannot be read correctly is a finding, not an error: the report lists all
//! of them. The check stops with an error only when the service cannot be reached at all.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_types::{BlockIndex, ChunkDigest, SnapshotId};
use tokio::task::JoinSet;

use crate::api::SnapshotClient;
use crate::error::{ImageError, VerifyError};
use crate::image::{BLOCK_BYTES, SourceImage, is_zero};
use crate::progress::{ProgressEvent, Reporter, Step};
use crate::upload::DEFAULT_CONCURRENCY;

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// An image the snapshot should equal.
    pub image: Option<PathBuf>,
    /// Blocks in flight at once.
    pub concurrency: usize,
}

impl VerifyOptions {
    /// Verify `snapshot` alone, with the default concurrency.
    pub fn new(snapshot: SnapshotId) -> Self {
        Self {
            snapshot,
            image: None,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// Something wrong with one block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The service answered, but not with a correct block (after retries).
    Unreadable {
        /// The block.
        index: BlockIndex,
        /// Why.
        error: String,
    },
    /// The block differs from the image.
    DiffersFromImage {
        /// The block.
        index: BlockIndex,
    },
}

/// What a verification found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The snapshot.
    pub snapshot: SnapshotId,
    /// Blocks of the snapshot read and checked.
    pub blocks_checked: u64,
    /// Image blocks compared (snapshot blocks, plus image blocks the snapshot does not have).
    pub image_blocks_compared: u64,
    /// Problems, in ascending block order.
    pub findings: Vec<Finding>,
    /// Wall time.
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Whether nothing was wrong.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Verifies snapshots through a [`SnapshotClient`].
#[derive(Debug, Clone)]
pub struct Verifier {
    client: SnapshotClient,
    reporter: Reporter,
}

impl Verifier {
    /// A verifier that reports progress (and retries) to `reporter`.
    pub fn new(client: &SnapshotClient, reporter: Reporter) -> Self {
        Self {
            client: client.with_reporter(reporter.clone()),
            reporter,
        }
    }

    /// Verify `options.snapshot`.
    pub async fn verify(&self, options: &VerifyOptions) -> Result<VerifyReport, VerifyError> {
        let started = Instant::now();
        let snapshot = &options.snapshot;
        let image = match &options.image {
            Some(path) => Some(Arc::new(SourceImage::open(path)?)),
            None => None,
        };
        self.reporter.step(Step::Listing(snapshot.clone()));
        let listing = self.client.list_blocks(snapshot).await?;
        let listed: HashSet<BlockIndex> = listing.blocks.iter().map(|(i, _)| *i).collect();
        // Image blocks the snapshot lacks must be zeros; holes need no read.
        let unlisted: Vec<u64> = match &image {
            Some(image) => (0..image.block_count())
                .filter(|&i| {
                    u32::try_from(i).map_or(true, |raw| !listed.contains(&BlockIndex::new(raw)))
                })
                .filter(|&i| !image.in_hole(i))
                .collect(),
            None => Vec::new(),
        };
        self.reporter.report(ProgressEvent::Started {
            total_bytes: (listing.blocks.len() + unlisted.len()) as u64 * BLOCK_BYTES,
            already_done: 0,
        });

        let mut findings = Vec::new();
        let concurrency = options.concurrency.max(1);
        let mut tasks: JoinSet<Result<Option<Finding>, VerifyError>> = JoinSet::new();
        let mut queue = listing.blocks.into_iter();
        let mut checked = 0u64;
        loop {
            while tasks.len() < concurrency {
                let Some((index, token)) = queue.next() else {
                    break;
                };
                let client = self.client.clone();
                let snapshot = snapshot.clone();
                let image = image.clone();
                tasks
                    .spawn(async move { check_block(client, snapshot, index, token, image).await });
            }
            let Some(joined) = tasks.join_next().await else {
                break;
            };
            let outcome = joined.map_err(internal).and_then(|r| r);
            match outcome {
                Ok(finding) => {
                    checked += 1;
                    findings.extend(finding);
                    self.reporter.advance(BLOCK_BYTES);
                }
                Err(error) => {
                    tasks.abort_all();
                    return Err(error);
                }
            }
        }

        let mut compared = 0;
        if let Some(image) = &image {
            compared = checked;
            for index in unlisted {
                let image = Arc::clone(image);
                let zero = tokio::task::spawn_blocking(move || {
                    image.read_block(index).map(|block| is_zero(&block))
                })
                .await
                .map_err(internal)??;
                if !zero {
                    findings.push(Finding::DiffersFromImage {
                        index: BlockIndex::new(u32::try_from(index).unwrap_or(u32::MAX)),
                    });
                }
                compared += 1;
                self.reporter.advance(BLOCK_BYTES);
            }
        }
        findings.sort_by_key(|f| match f {
            Finding::Unreadable { index, .. } | Finding::DiffersFromImage { index } => *index,
        });
        Ok(VerifyReport {
            snapshot: snapshot.clone(),
            blocks_checked: checked,
            image_blocks_compared: compared,
            findings,
            elapsed: started.elapsed(),
        })
    }
}

async fn check_block(
    client: SnapshotClient,
    snapshot: SnapshotId,
    index: BlockIndex,
    token: String,
    image: Option<Arc<SourceImage>>,
) -> Result<Option<Finding>, VerifyError> {
    let block = match client.get_block(&snapshot, index, &token).await {
        Ok(block) => block,
        // The service answered (or answered wrongly): a finding about this block.
        Err(error) if error.code.is_some() => {
            return Ok(Some(Finding::Unreadable {
                index,
                error: error.to_string(),
            }));
        }
        // The service cannot be reached: the whole check cannot go on.
        Err(error) => return Err(error.into()),
    };
    let Some(image) = image else {
        return Ok(None);
    };
    let raw = u64::from(index.get());
    let expected = tokio::task::spawn_blocking(move || -> Result<ChunkDigest, ImageError> {
        if image.in_hole(raw) {
            return Ok(ChunkDigest::zero_block());
        }
        let data = image.read_block(raw)?;
        Ok(if is_zero(&data) {
            ChunkDigest::zero_block()
        } else {
            ChunkDigest::of(&data)
        })
    })
    .await
    .map_err(internal)??;
    Ok((expected != block.digest).then_some(Finding::DiffersFromImage { index }))
}

fn internal(error: tokio::task::JoinError) -> VerifyError {
    VerifyError::Internal(format!("a worker task failed: {error}"))
}
