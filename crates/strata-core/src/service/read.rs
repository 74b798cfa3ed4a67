//! The read operations: ListSnapshotBlocks, ListChangedBlocks, GetSnapshotBlock.

use bytes::Bytes;
use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

use super::{SnapshotService, run_blocking};
use crate::block_map::{self, DiffStats};
use crate::error::ServiceError;
use crate::ports::{ChunkStore, MetadataStore, StoreError};
use crate::tokens::{BLOCK_TOKEN_LIFETIME_MS, Listing, PAGE_TOKEN_LIFETIME_MS, TokenError};

/// Page sizes of the List operations: default 100, smaller values raised to 100 (EBS FAQ),
/// at most 10,000 (the model's `MaxResults`).
pub const DEFAULT_MAX_RESULTS: usize = 100;

const MAX_RESULTS_LIMIT: i64 = 10_000;

static ZERO_BLOCK: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];

/// Paging parameters shared by both List operations, as sent.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// `maxResults`.
    pub max_results: Option<i64>,
    /// `startingBlockIndex`.
    pub starting_block_index: Option<BlockIndex>,
    /// `pageToken` (takes precedence over the starting index).
    pub page_token: Option<String>,
}

/// One page of ListSnapshotBlocks.
#[derive(Debug, Clone)]
pub struct BlockPage {
    /// Blocks and their tokens, ascending.
    pub blocks: Vec<(BlockIndex, String)>,
    /// When the block tokens expire (Unix milliseconds).
    pub expiry_ms: i64,
    /// The snapshot's volume size.
    pub volume_size: VolumeSize,
    /// Where the listing continues, if it does.
    pub next_token: Option<String>,
}

/// One entry of ListChangedBlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangedBlock {
    /// The index.
    pub index: BlockIndex,
    /// Token to read the first snapshot's block, if it has one.
    pub first_token: Option<String>,
    /// Token to read the second snapshot's block, if it has one.
    pub second_token: Option<String>,
}

/// One page of ListChangedBlocks.
#[derive(Debug, Clone)]
pub struct ChangedPage {
    /// Changed blocks, ascending.
    pub blocks: Vec<ChangedBlock>,
    /// When the block tokens expire (Unix milliseconds).
    pub expiry_ms: i64,
    /// The second snapshot's volume size.
    pub volume_size: VolumeSize,
    /// Where the listing continues, if it does.
    pub next_token: Option<String>,
}

/// A verified block read.
#[derive(Debug, Clone)]
pub struct BlockData {
    /// The 512 KiB of content.
    pub data: Bytes,
    /// Its SHA-256, checked against the bytes just now (of the plaintext, for a block
    /// encrypted at rest, whose envelope was checked and opened).
    pub digest: ChunkDigest,
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// ListSnapshotBlocks: the blocks of a completed snapshot, parent's included.
    pub async fn list_blocks(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
        page: PageRequest,
    ) -> Result<BlockPage, ServiceError> {
        let record = self.readable_snapshot(owner, id).await?;
        let now = self.now_ms();
        let limit = page_size(page.max_results)?;
        let start = self.page_start(&page, Listing::Blocks(id), now)?;
        let nodes = self.metadata.nodes()?;
        let root = record.root;
        let mut entries =
            run_blocking(move || block_map::scan(&nodes, root, start, limit + 1)).await?;
        let next_token = self.next_page(&mut entries, limit, Listing::Blocks(id), now, |e| e.0);
        let expiry_ms = now + BLOCK_TOKEN_LIFETIME_MS;
        let blocks = entries
            .into_iter()
            .map(|(index, digest)| {
                let token = self.tokens.block_token(id, index, digest, expiry_ms);
                (index, token)
            })
            .collect();
        Ok(BlockPage {
            blocks,
            expiry_ms,
            volume_size: record.volume_size,
            next_token,
        })
    }

    /// ListChangedBlocks: indexes whose content differs between two snapshots of one lineage
    /// (or every block of `second` when `first` is absent).
    pub async fn list_changed_blocks(
        &self,
        owner: &AccountId,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> Result<ChangedPage, ServiceError> {
        let second_record = self.readable_snapshot(owner, second).await?;
        let first_root = match first {
            Some(first_id) => {
                let first_record = self.readable_snapshot(owner, first_id).await?;
                if first_record.lineage != second_record.lineage {
                    return Err(ServiceError::UnrelatedSnapshots {
                        first: first_id.clone(),
                        second: second.clone(),
                    });
                }
                first_record.root
            }
            None => None,
        };
        let now = self.now_ms();
        let limit = page_size(page.max_results)?;
        let listing = Listing::Changed { first, second };
        let start = self.page_start(&page, listing, now)?;
        let nodes = self.metadata.nodes()?;
        let second_root = second_record.root;
        let mut differences = run_blocking(move || {
            let mut stats = DiffStats::default();
            block_map::diff(
                &nodes,
                first_root,
                second_root,
                start,
                limit + 1,
                &mut stats,
            )
        })
        .await?;
        let next_token = self.next_page(&mut differences, limit, listing, now, |d| d.index);
        let expiry_ms = now + BLOCK_TOKEN_LIFETIME_MS;
        let blocks = differences
            .into_iter()
            .map(|d| ChangedBlock {
                index: d.index,
                first_token: match (first, d.first) {
                    (Some(first_id), Some(digest)) => Some(
                        self.tokens
                            .block_token(first_id, d.index, digest, expiry_ms),
                    ),
                    _ => None,
                },
                second_token: d
                    .second
                    .map(|digest| self.tokens.block_token(second, d.index, digest, expiry_ms)),
            })
            .collect();
        Ok(ChangedPage {
            blocks,
            expiry_ms,
            volume_size: second_record.volume_size,
            next_token,
        })
    }

    /// GetSnapshotBlock: the block named by a token, verified against its digest.
    pub async fn get_block(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
        index: BlockIndex,
        block_token: &str,
    ) -> Result<BlockData, ServiceError> {
        let record = self.readable_snapshot(owner, id).await?;
        if !record.volume_size.contains(index) {
            return Err(ServiceError::InvalidBlock(format!(
                "The block index {index} is outside the volume of {} GiB.",
                record.volume_size.gib()
            )));
        }
        let digest = self
            .tokens
            .open_block_token(block_token, id, index, self.now_ms())
            .map_err(|e| {
                ServiceError::InvalidBlockToken(match e {
                    TokenError::Invalid => format!(
                        "The block token is not valid for block {index} of snapshot '{id}'."
                    ),
                    TokenError::Expired => "The block token has expired.".into(),
                })
            })?;
        if digest.is_zero_block() {
            return Ok(BlockData {
                data: Bytes::from_static(&ZERO_BLOCK),
                digest,
            });
        }
        // Before the read: a disabled key refuses it.
        let data_key = self.snapshot_data_key(&record).await?;
        // The chunk store verifies what it returns (see `ChunkStore::get`).
        let read = crate::with_retries!(self.retry, "read a chunk", self.chunks.get(digest));
        if matches!(read, Ok(None) | Err(StoreError::Corrupt(_))) {
            // Unregistered, so the next upload of the same content stores it again (and
            // a Put relying on the registry right now finds out; see `put`).
            if let Err(error) = self.metadata.forget_chunk(digest).await {
                tracing::error!(chunk = %digest, %error, "cannot unregister a damaged chunk");
            }
        }
        match read {
            Ok(Some(data)) => match data_key {
                None => Ok(BlockData { data, digest }),
                Some(key) => {
                    // The envelope is intact (the chunk store verified it), so a failure
                    // to open it is a key that does not match, not damage to forget.
                    let opened = tokio::task::spawn_blocking(move || {
                        key.open(index, &data).map(|plaintext| {
                            let digest = ChunkDigest::of(&plaintext);
                            (Bytes::from(plaintext), digest)
                        })
                    })
                    .await
                    .map_err(|e| {
                        ServiceError::Store(StoreError::Backend(format!("worker failed: {e}")))
                    })?;
                    match opened {
                        Ok((data, digest)) => Ok(BlockData { data, digest }),
                        Err(why) => {
                            tracing::error!(%id, %index, chunk = %digest, "{why}");
                            Err(ServiceError::CorruptData(format!(
                                "Block {index} of snapshot '{id}' does not decrypt under the snapshot's key."
                            )))
                        }
                    }
                }
            },
            Ok(None) => {
                tracing::error!(%id, %index, chunk = %digest, "stored chunk is missing");
                Err(ServiceError::CorruptData(format!(
                    "The data of block {index} of snapshot '{id}' is missing from the chunk store; uploading the same content again (to any snapshot) restores it."
                )))
            }
            Err(StoreError::Corrupt(why)) => {
                tracing::error!(%id, %index, chunk = %digest, "stored chunk is damaged: {why}");
                Err(ServiceError::CorruptData(format!(
                    "The stored data of block {index} of snapshot '{id}' failed its checksum; uploading the same content again (to any snapshot) repairs it."
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn page_start(
        &self,
        page: &PageRequest,
        listing: Listing<'_>,
        now: i64,
    ) -> Result<BlockIndex, ServiceError> {
        match &page.page_token {
            Some(token) => self
                .tokens
                .open_page_token(token, listing, now)
                .map_err(|e| {
                    ServiceError::InvalidPageToken(match e {
                        TokenError::Invalid => {
                            "The page token is not valid for this listing.".into()
                        }
                        TokenError::Expired => "The page token has expired.".into(),
                    })
                }),
            None => Ok(page.starting_block_index.unwrap_or(BlockIndex::new(0))),
        }
    }

    /// Trim `entries` (fetched with `limit + 1`) to `limit` and issue the next-page token.
    fn next_page<T>(
        &self,
        entries: &mut Vec<T>,
        limit: usize,
        listing: Listing<'_>,
        now: i64,
        index_of: impl Fn(&T) -> BlockIndex,
    ) -> Option<String> {
        if entries.len() <= limit {
            return None;
        }
        let next = index_of(&entries[limit]);
        entries.truncate(limit);
        Some(
            self.tokens
                .page_token(listing, next, now + PAGE_TOKEN_LIFETIME_MS),
        )
    }
}

fn page_size(max_results: Option<i64>) -> Result<usize, ServiceError> {
    match max_results {
        None => Ok(DEFAULT_MAX_RESULTS),
        Some(n) if n > MAX_RESULTS_LIMIT => Err(ServiceError::InvalidParameter(format!(
            "MaxResults is {n}; the maximum is {MAX_RESULTS_LIMIT}."
        ))),
        // A count cannot be negative: a client bug, not a small page.
        Some(n) if n < 0 => Err(ServiceError::InvalidParameter(format!(
            "MaxResults is {n}; it must be between 100 and {MAX_RESULTS_LIMIT}."
        ))),
        Some(n) => {
            Ok(usize::try_from(n).map_or(DEFAULT_MAX_RESULTS, |n| n.max(DEFAULT_MAX_RESULTS)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_raised_to_100_and_capped_at_10000() {
        assert_eq!(page_size(None).ok(), Some(100));
        assert_eq!(page_size(Some(5)).ok(), Some(100));
        assert_eq!(page_size(Some(0)).ok(), Some(100));
        assert!(page_size(Some(-1)).is_err());
        assert!(page_size(Some(i64::MIN)).is_err());
        assert_eq!(page_size(Some(10_000)).ok(), Some(10_000));
        assert!(page_size(Some(10_001)).is_err());
    }
}
