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
    /// The snapshot has data in a block that lies past the end of the image.
    PastImageEnd {
        /// The block.
        index: BlockIndex,
    },
}

impl Finding {
    /// The block concerned.
    pub fn index(&self) -> BlockIndex {
        match self {
            Finding::Unreadable { index, .. }
            | Finding::DiffersFromImage { index }
            | Finding::PastImageEnd { index } => *index,
        }
    }

    /// What is wrong, in a few words (the same for every block of a [`FindingRange`]).
    pub fn what(&self) -> &'static str {
        match self {
            Finding::Unreadable { .. } => "unreadable",
            Finding::DiffersFromImage { .. } => "differs from the image",
            Finding::PastImageEnd { .. } => "has data past the end of the image",
        }
    }
}

/// Consecutive blocks with the same kind of finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FindingRange {
    /// First block.
    pub first_block: u32,
    /// Last block (inclusive).
    pub last_block: u32,
    /// What is wrong ([`Finding::what`]).
    pub problem: &'static str,
    /// The first block's error, for unreadable blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FindingRange {
    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        u64::from(self.last_block - self.first_block) + 1
    }
}

/// Collapse findings (ascending) into ranges of consecutive blocks of one kind, so a
/// 100 GiB volume that differs everywhere is a line, not 200,000.
pub fn finding_ranges(findings: &[Finding]) -> Vec<FindingRange> {
    let mut ranges: Vec<FindingRange> = Vec::new();
    for finding in findings {
        let index = finding.index().get();
        match ranges.last_mut() {
            Some(last) if last.problem == finding.what() && last.last_block + 1 == index => {
                last.last_block = index;
            }
            _ => ranges.push(FindingRange {
                first_block: index,
                last_block: index,
                problem: finding.what(),
                error: match finding {
                    Finding::Unreadable { error, .. } => Some(error.clone()),
                    _ => None,
                },
            }),
        }
    }
    ranges
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
    /// The image's length, when one was compared.
    pub image_size: Option<u64>,
    /// End of the snapshot's last block (0 without blocks).
    pub data_end: u64,
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
        let data_end = listing
            .blocks
            .last()
            .map_or(0, |(i, _)| (u64::from(i.get()) + 1) * BLOCK_BYTES);
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
        findings.sort_by_key(Finding::index);
        Ok(VerifyReport {
            snapshot: snapshot.clone(),
            blocks_checked: checked,
            image_blocks_compared: compared,
            findings,
            image_size: image.as_ref().map(|i| i.len()),
            data_end,
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
    if raw >= image.block_count() {
        return Ok((!block.digest.is_zero_block()).then_some(Finding::PastImageEnd { index }));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_findings_of_one_kind_collapse() {
        let differs = |i| Finding::DiffersFromImage {
            index: BlockIndex::new(i),
        };
        let mut findings: Vec<Finding> = (0..200_000).map(differs).collect();
        findings.push(Finding::Unreadable {
            index: BlockIndex::new(200_000),
            error: "bad".into(),
        });
        findings.push(Finding::Unreadable {
            index: BlockIndex::new(200_001),
            error: "worse".into(),
        });
        findings.push(differs(200_005));
        findings.push(Finding::PastImageEnd {
            index: BlockIndex::new(200_006),
        });
        let ranges = finding_ranges(&findings);
        let summary: Vec<_> = ranges
            .iter()
            .map(|r| (r.first_block, r.last_block, r.problem))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, 199_999, "differs from the image"),
                (200_000, 200_001, "unreadable"),
                (200_005, 200_005, "differs from the image"),
                (200_006, 200_006, "has data past the end of the image"),
            ]
        );
        assert_eq!(ranges[0].blocks(), 200_000);
        assert_eq!(ranges[1].error.as_deref(), Some("bad"));
    }
}
