//! [`SnapshotService`]: one method per EBS direct API operation, in domain types.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

use crate::block_map::{self, DiffStats};
use crate::checksum::{BlockHasher, HashedBlock, linear_aggregate};
use crate::error::ServiceError;
use crate::gc::{self, GcOptions, GcPlan, GcReport, InFlight, InFlightGuard};
use crate::ports::{
    BlockWrite, ChunkStore, CreateOutcome, MetadataStore, RecordBlockError, RecordChange, Seal,
    SealError, StoreError,
};
use crate::snapshot::{SnapshotRecord, SnapshotStatus, Tag};
use crate::tokens::{
    BLOCK_TOKEN_LIFETIME_MS, Listing, PAGE_TOKEN_LIFETIME_MS, TokenError, TokenIssuer,
};

/// Default, minimum and maximum inactivity timeout, minutes (the model's `Timeout`).
pub const DEFAULT_TIMEOUT_MINUTES: i64 = 60;
const TIMEOUT_RANGE_MINUTES: std::ops::RangeInclusive<i64> = 10..=4320;
/// Tags per snapshot, and tag key/value lengths (the model's `Tags`, `TagKey`, `TagValue`).
pub const MAX_TAGS: usize = 50;
const MAX_TAG_KEY_LEN: usize = 127;
const MAX_TAG_VALUE_LEN: usize = 255;
const MAX_DESCRIPTION_LEN: usize = 255;
const MAX_CLIENT_TOKEN_LEN: usize = 255;
const MAX_KMS_KEY_ARN_LEN: usize = 2048;
/// Page sizes of the List operations: default 100, smaller values raised to 100 (EBS FAQ),
/// at most 10,000 (the model's `MaxResults`).
pub const DEFAULT_MAX_RESULTS: usize = 100;
const MAX_RESULTS_LIMIT: i64 = 10_000;
/// How often CompleteSnapshot rebuilds the tree when block writes race with it.
const SEAL_ATTEMPTS: usize = 5;

static ZERO_BLOCK: [u8; BLOCK_SIZE] = [0; BLOCK_SIZE];

/// The service's time source; tests substitute a controllable one.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// StartSnapshot's parameters, as the client sent them.
#[derive(Debug, Clone, Default)]
pub struct StartSnapshotInput {
    /// Size in GiB (validated here).
    pub volume_size_gib: i64,
    /// The snapshot to be incremental on.
    pub parent: Option<SnapshotId>,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Description.
    pub description: Option<String>,
    /// Idempotency token.
    pub client_token: Option<String>,
    /// Encryption requested.
    pub encrypted: Option<bool>,
    /// KMS key requested.
    pub kms_key_arn: Option<String>,
    /// Inactivity timeout, minutes.
    pub timeout_minutes: Option<i64>,
}

/// Proof that a block write was checked (owner, state, index) before its body was read,
/// and what was learnt about its claimed content. While it lives, the claimed digest is
/// announced as being written, so GC keeps a stored chunk of that content.
#[derive(Debug)]
pub struct WritePermit {
    record: SnapshotRecord,
    index: BlockIndex,
    claimed: ChunkDigest,
    /// Whether content with the claimed digest was already stored (and was just refreshed):
    /// then the body only needs to be hashed, not kept.
    stored: bool,
    _in_flight: InFlightGuard,
}

impl WritePermit {
    /// The hasher the body should be read into: one that keeps nothing when the claimed
    /// content is stored, one that copies the body into an aligned buffer as it arrives
    /// when it is new.
    pub fn block_hasher(&self) -> BlockHasher {
        if self.stored {
            BlockHasher::discarding()
        } else {
            BlockHasher::copying()
        }
    }
}

/// CompleteSnapshot's optional aggregate checksum.
#[derive(Debug, Clone, Copy)]
pub struct AggregateChecksum {
    /// The claimed `LINEAR` aggregate.
    pub digest: ChunkDigest,
}

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
    /// Its SHA-256, checked against the bytes just now.
    pub digest: ChunkDigest,
}

/// The snapshot service: the EBS direct API semantics over the two storage ports.
pub struct SnapshotService<M, C> {
    metadata: Arc<M>,
    chunks: Arc<C>,
    tokens: TokenIssuer,
    clock: Arc<dyn Clock>,
    in_flight: Arc<InFlight>,
}

impl<M, C> Clone for SnapshotService<M, C> {
    fn clone(&self) -> Self {
        Self {
            metadata: Arc::clone(&self.metadata),
            chunks: Arc::clone(&self.chunks),
            tokens: self.tokens.clone(),
            clock: Arc::clone(&self.clock),
            in_flight: Arc::clone(&self.in_flight),
        }
    }
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
    /// Assemble a service from its stores, token key and clock.
    pub fn new(
        metadata: Arc<M>,
        chunks: Arc<C>,
        tokens: TokenIssuer,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            metadata,
            chunks,
            tokens,
            clock,
            in_flight: Arc::default(),
        }
    }

    /// The metadata store (for admin views).
    pub fn metadata(&self) -> &M {
        &self.metadata
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// StartSnapshot: create a pending snapshot (or return the one this client token made).
    pub async fn start_snapshot(
        &self,
        owner: &AccountId,
        input: StartSnapshotInput,
    ) -> Result<SnapshotRecord, ServiceError> {
        let validated = validate_start(&input)?;
        let now = self.now_ms();
        let fingerprint = start_fingerprint(&input, &validated);

        let (lineage_of_parent, base_root) = match &input.parent {
            Some(parent_id) => {
                let parent = self.owned_snapshot(owner, parent_id).await?;
                if parent.status_at(now) != SnapshotStatus::Completed {
                    return Err(ServiceError::InvalidParameter(format!(
                        "The parent snapshot '{parent_id}' is not completed (status: {}).",
                        parent.status_at(now).as_str()
                    )));
                }
                (Some(parent.lineage), parent.root)
            }
            None => (None, None),
        };
        let id = SnapshotId::generate();
        let record = SnapshotRecord {
            lineage: lineage_of_parent.unwrap_or_else(|| id.clone()),
            id,
            owner: owner.clone(),
            status: SnapshotStatus::Pending,
            volume_size: validated.volume_size,
            parent: input.parent.clone(),
            description: input.description.clone(),
            tags: input.tags.clone(),
            encrypted: input.encrypted.unwrap_or(false),
            kms_key_arn: input.kms_key_arn.clone(),
            timeout_minutes: validated.timeout_minutes,
            client_token: input.client_token.clone(),
            start_fingerprint: fingerprint,
            start_time_ms: now,
            last_activity_ms: now,
            completion_time_ms: None,
            progress: None,
            write_sequence: 0,
            changed_blocks: 0,
            root: None,
            base_root,
            status_message: None,
        };
        match self.metadata.create_snapshot(record.clone()).await? {
            CreateOutcome::Created => Ok(record),
            CreateOutcome::ClientTokenExists(existing) => {
                if existing.start_fingerprint == record.start_fingerprint {
                    Ok(*existing)
                } else {
                    Err(ServiceError::IdempotencyConflict(format!(
                        "The client token was already used for snapshot '{}' with different parameters.",
                        existing.id
                    )))
                }
            }
        }
    }

    /// PutSnapshotBlock, first half: check, before the body is read, that a block may be
    /// written at `index`, and whether content with the `claimed` digest (the request's
    /// `x-amz-Checksum`) is already stored. The permit carries both into
    /// [`Self::put_block`], and says how to read the body ([`WritePermit::block_hasher`]).
    pub async fn begin_put(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
        index: BlockIndex,
        claimed: ChunkDigest,
    ) -> Result<WritePermit, ServiceError> {
        let record = self.writable_snapshot(owner, id, index).await?;
        // Announced before the lookup, and until the write record commits: GC then keeps
        // a stored chunk of this content (see `gc`), so "stored" stays true. A body that
        // turns out not to match `claimed` only cost the chunk a refresh.
        let in_flight = self.in_flight.announce(claimed);
        let stored = claimed.is_zero_block() || self.chunks.touch(claimed).await?;
        Ok(WritePermit {
            record,
            index,
            claimed,
            stored,
            _in_flight: in_flight,
        })
    }

    /// The record of `id` if a block may be written at `index` now.
    async fn writable_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
        index: BlockIndex,
    ) -> Result<SnapshotRecord, ServiceError> {
        let record = self.owned_snapshot(owner, id).await?;
        let record = self.expire_if_due(record).await?;
        if record.status != SnapshotStatus::Pending {
            return Err(not_pending(&record));
        }
        if !record.volume_size.contains(index) {
            return Err(ServiceError::InvalidBlock(format!(
                "The block index {index} is outside the volume of {} GiB (valid: 0 to {}).",
                record.volume_size.gib(),
                record.volume_size.block_count() - 1
            )));
        }
        Ok(record)
    }

    /// PutSnapshotBlock, second half: verify the body against the claimed checksum, store
    /// it unless it is stored already, record it. Returns only once both the bytes and the
    /// record are durable. The snapshot's state is not read again: the record write itself
    /// refuses a snapshot that left `pending` meanwhile, and only a deadline that may have
    /// passed costs a re-read.
    pub async fn put_block(
        &self,
        permit: WritePermit,
        block: HashedBlock,
        progress: Option<u8>,
    ) -> Result<ChunkDigest, ServiceError> {
        let WritePermit {
            record,
            index,
            claimed,
            stored,
            _in_flight,
        } = permit;
        let id = &record.id;
        if block.len() != BLOCK_SIZE {
            return Err(ServiceError::InvalidParameter(format!(
                "The block data is {} bytes; every block must be exactly {BLOCK_SIZE} bytes.",
                block.len()
            )));
        }
        if block.digest != claimed {
            return Err(ServiceError::InvalidParameter(
                "The checksum of the block data does not match x-amz-Checksum.".into(),
            ));
        }
        if record.status_at(self.now_ms()) != SnapshotStatus::Pending {
            // The body took us past the deadline as last seen; the stored one may be later.
            self.writable_snapshot(&record.owner, id, index).await?;
        }
        let digest = block.digest;
        if !stored {
            let data = block.into_bytes().ok_or_else(|| {
                ServiceError::Store(StoreError::Backend(
                    "the body of new content was not kept".into(),
                ))
            })?;
            self.chunks.put(digest, data).await?;
        }
        let write = BlockWrite {
            snapshot: id.clone(),
            index,
            digest,
            progress,
            at_ms: self.now_ms(),
        };
        match self.metadata.record_block(write).await {
            Ok(()) => Ok(digest),
            Err(RecordBlockError::NotFound) => Err(ServiceError::SnapshotNotFound(id.clone())),
            Err(RecordBlockError::NotPending(record)) => Err(not_pending(&record)),
            Err(RecordBlockError::Store(e)) => Err(e.into()),
        }
    }

    /// CompleteSnapshot: check the count and aggregate, build the block map, seal.
    pub async fn complete_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
        changed_blocks_count: i64,
        aggregate: Option<AggregateChecksum>,
    ) -> Result<SnapshotStatus, ServiceError> {
        for _ in 0..SEAL_ATTEMPTS {
            let record = self.owned_snapshot(owner, id).await?;
            let record = self.expire_if_due(record).await?;
            match record.status {
                SnapshotStatus::Completed => return Ok(SnapshotStatus::Completed),
                SnapshotStatus::Error => return Err(not_pending(&record)),
                SnapshotStatus::Pending => {}
            }
            let pending = self.metadata.pending_writes(id).await?;
            let written = pending.blocks.len() as u64;
            if u64::try_from(changed_blocks_count).ok() != Some(written) {
                return Err(ServiceError::InvalidParameter(format!(
                    "ChangedBlocksCount is {changed_blocks_count}, but {written} distinct blocks were written to snapshot '{id}'."
                )));
            }
            if let Some(claimed) = aggregate
                && claimed.digest != linear_aggregate(&pending.blocks)
            {
                return Err(ServiceError::InvalidParameter(format!(
                    "The aggregate checksum does not match the blocks written to snapshot '{id}'."
                )));
            }
            let parent_root = record.base_root;
            let nodes = self.metadata.nodes()?;
            let keep_below = record.volume_size.block_count();
            let blocks = pending.blocks;
            let update =
                run_blocking(move || block_map::apply(&nodes, parent_root, &blocks, keep_below))
                    .await?;
            let now = self.now_ms();
            let sealed = SnapshotRecord {
                status: SnapshotStatus::Completed,
                root: update.root,
                changed_blocks: written,
                completion_time_ms: Some(now),
                last_activity_ms: now,
                progress: Some(100),
                ..record
            };
            let seal = Seal {
                expected_sequence: pending.sequence,
                record: sealed,
                new_nodes: update.new_nodes,
                written_ms: now,
            };
            match self.metadata.seal_snapshot(seal).await {
                Ok(()) => return Ok(SnapshotStatus::Completed),
                Err(SealError::Raced) => continue,
                Err(SealError::NotPending) => {
                    let record = self.owned_snapshot(owner, id).await?;
                    if record.status == SnapshotStatus::Completed {
                        return Ok(SnapshotStatus::Completed);
                    }
                    return Err(not_pending(&record));
                }
                Err(SealError::Store(e)) => return Err(e.into()),
            }
        }
        Err(ServiceError::ConflictingBlockUpdate(format!(
            "Blocks kept being written to snapshot '{id}' while it was being completed."
        )))
    }

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
        // The chunk store verifies what it returns (see `ChunkStore::get`).
        match self.chunks.get(digest).await {
            Ok(Some(data)) => Ok(BlockData { data, digest }),
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

    /// The record of `id` if `owner` owns it (any status).
    pub async fn owned_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<SnapshotRecord, ServiceError> {
        match self.metadata.snapshot(id).await? {
            Some(record) if record.owner == *owner => Ok(record),
            _ => Err(ServiceError::SnapshotNotFound(id.clone())),
        }
    }

    /// The record of `id` if `owner` owns it and it is completed.
    async fn readable_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<SnapshotRecord, ServiceError> {
        let record = self.owned_snapshot(owner, id).await?;
        if record.status_at(self.now_ms()) == SnapshotStatus::Completed {
            Ok(record)
        } else {
            Err(ServiceError::SnapshotNotFound(id.clone()))
        }
    }

    /// Persist the move of a timed-out pending snapshot to `error`.
    async fn expire_if_due(&self, record: SnapshotRecord) -> Result<SnapshotRecord, ServiceError> {
        let now = self.now_ms();
        if record.status != SnapshotStatus::Pending
            || record.status_at(now) == SnapshotStatus::Pending
        {
            return Ok(record);
        }
        let change: RecordChange = Box::new(move |stored: &SnapshotRecord| {
            // Only a snapshot that is still pending *and still idle* times out: a Put may
            // have landed since the caller read the record.
            (stored.status == SnapshotStatus::Pending
                && stored.status_at(now) == SnapshotStatus::Error)
                .then(|| stored.as_of(now))
        });
        match self.metadata.update_snapshot(&record.id, change).await? {
            Some(expired) => {
                tracing::info!(id = %expired.id, "pending snapshot timed out");
                Ok(expired)
            }
            // Someone else changed it first; report what is stored now.
            None => self.owned_snapshot(&record.owner, &record.id).await,
        }
    }

    /// Every snapshot of `owner`, with the status as of now (timeouts applied).
    pub async fn list_snapshots(
        &self,
        owner: &AccountId,
    ) -> Result<Vec<SnapshotRecord>, ServiceError> {
        let now = self.now_ms();
        let records = self.metadata.list_snapshots(Some(owner)).await?;
        Ok(records.iter().map(|r| r.as_of(now)).collect())
    }

    /// One snapshot of `owner`, with the status as of now.
    pub async fn describe_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<SnapshotRecord, ServiceError> {
        let record = self.owned_snapshot(owner, id).await?;
        Ok(record.as_of(self.now_ms()))
    }

    /// DeleteSnapshot: remove a snapshot in any state (a pending one is cancelled). Its data
    /// is reclaimed by the next garbage collection, unless other snapshots share it.
    pub async fn delete_snapshot(
        &self,
        owner: &AccountId,
        id: &SnapshotId,
    ) -> Result<(), ServiceError> {
        self.owned_snapshot(owner, id).await?;
        if self.metadata.delete_snapshot(id).await? {
            tracing::info!(%id, "snapshot deleted");
            Ok(())
        } else {
            Err(ServiceError::SnapshotNotFound(id.clone()))
        }
    }

    /// CreateTags: add or overwrite tags on snapshots of `owner`; all or nothing.
    pub async fn create_tags(
        &self,
        owner: &AccountId,
        ids: &[SnapshotId],
        tags: &[Tag],
    ) -> Result<(), ServiceError> {
        for id in ids {
            let mut merged = self.owned_snapshot(owner, id).await?.tags;
            merge_tags(&mut merged, tags);
            validate_tags(&merged)?;
        }
        for id in ids {
            let tags = tags.to_vec();
            let change: RecordChange = Box::new(move |stored: &SnapshotRecord| {
                let mut record = stored.clone();
                merge_tags(&mut record.tags, &tags);
                (record.tags.len() <= MAX_TAGS).then_some(record)
            });
            if self.metadata.update_snapshot(id, change).await?.is_none() {
                return Err(ServiceError::SnapshotNotFound(id.clone()));
            }
        }
        Ok(())
    }

    /// DeleteTags: remove tags by key (and value, when given; all tags when `keys` is empty).
    pub async fn delete_tags(
        &self,
        owner: &AccountId,
        ids: &[SnapshotId],
        keys: &[(String, Option<String>)],
    ) -> Result<(), ServiceError> {
        for id in ids {
            self.owned_snapshot(owner, id).await?;
        }
        for id in ids {
            let keys = keys.to_vec();
            let change: RecordChange = Box::new(move |stored: &SnapshotRecord| {
                let mut record = stored.clone();
                record.tags.retain(|tag| {
                    !keys.is_empty()
                        && !keys.iter().any(|(key, value)| {
                            *key == tag.key && value.as_ref().is_none_or(|v| *v == tag.value)
                        })
                });
                Some(record)
            });
            self.metadata.update_snapshot(id, change).await?;
        }
        Ok(())
    }

    /// Move every idle pending snapshot past its timeout to `error` (the background sweep;
    /// reads apply timeouts by themselves, this makes them durable and their data
    /// reclaimable). Returns how many timed out.
    pub async fn expire_idle_snapshots(&self) -> Result<usize, ServiceError> {
        let now = self.now_ms();
        let mut expired = 0;
        for record in self.metadata.list_snapshots(None).await? {
            if record.status == SnapshotStatus::Pending
                && record.status_at(now) == SnapshotStatus::Error
                && self.expire_if_due(record).await?.status == SnapshotStatus::Error
            {
                expired += 1;
            }
        }
        Ok(expired)
    }

    /// Decide what garbage collection would delete (reads only).
    pub async fn plan_gc(&self, options: GcOptions) -> Result<GcPlan, ServiceError> {
        // Order matters (see `gc`): the cutoff, then the in-flight set, then the view.
        let now = self.now_ms();
        let wall_now = std::time::SystemTime::now();
        let in_flight = self.in_flight.snapshot();
        let view = self.metadata.gc_view().await?;
        let chunks = self.chunks.list().await?;
        let plan =
            run_blocking(move || gc::plan(&view, &chunks, &in_flight, now, wall_now, options))
                .await?;
        Ok(plan)
    }

    /// Execute a plan: the only code that deletes stored data. Nodes and chunks go in
    /// batches, so a store commits each batch at once and no writer is held for long.
    pub async fn execute_gc(&self, plan: &GcPlan) -> Result<GcReport, ServiceError> {
        const NODE_BATCH: usize = 1024;
        const CHUNK_BATCH: usize = 1024;
        let mut report = GcReport::default();
        for batch in plan.garbage_nodes.chunks(NODE_BATCH) {
            report.nodes_deleted += self
                .metadata
                .delete_nodes(batch.to_vec(), plan.node_cutoff_ms)
                .await?;
        }
        // Record the timeouts first: only snapshots stored as `error` lose their writes.
        for id in &plan.expired_snapshots {
            if let Some(record) = self.metadata.snapshot(id).await? {
                self.expire_if_due(record).await?;
            }
        }
        report.pending_writes_dropped = self
            .metadata
            .drop_pending_writes(plan.expired_snapshots.clone())
            .await?;
        let cutoff = plan.chunk_cutoff.unwrap_or(std::time::UNIX_EPOCH);
        for batch in plan.garbage_chunks.chunks(CHUNK_BATCH) {
            let digests = batch.iter().map(|(digest, _)| *digest).collect();
            for freed in self.chunks.delete_if_idle(digests, cutoff).await? {
                match freed {
                    Some(bytes) => {
                        report.chunks_deleted += 1;
                        report.bytes_freed += bytes;
                    }
                    None => report.chunks_kept += 1,
                }
            }
        }
        tracing::info!(?report, "garbage collection finished");
        Ok(report)
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

fn not_pending(record: &SnapshotRecord) -> ServiceError {
    ServiceError::InvalidParameter(format!(
        "The snapshot '{}' is not pending: its status is '{}'.",
        record.id,
        record.status.as_str()
    ))
}

/// Run CPU-bound or blocking storage work off the async threads.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Store(StoreError::Backend(format!("worker failed: {e}"))))?
        .map_err(ServiceError::from)
}

fn page_size(max_results: Option<i64>) -> Result<usize, ServiceError> {
    match max_results {
        None => Ok(DEFAULT_MAX_RESULTS),
        Some(n) if n > MAX_RESULTS_LIMIT => Err(ServiceError::InvalidParameter(format!(
            "MaxResults is {n}; the maximum is {MAX_RESULTS_LIMIT}."
        ))),
        Some(n) => {
            Ok(usize::try_from(n).map_or(DEFAULT_MAX_RESULTS, |n| n.max(DEFAULT_MAX_RESULTS)))
        }
    }
}

struct ValidatedStart {
    volume_size: VolumeSize,
    timeout_minutes: u32,
}

fn validate_start(input: &StartSnapshotInput) -> Result<ValidatedStart, ServiceError> {
    let volume_size = VolumeSize::from_gib(input.volume_size_gib)
        .map_err(|e| ServiceError::InvalidVolumeSize(e.0))?;
    let timeout = input.timeout_minutes.unwrap_or(DEFAULT_TIMEOUT_MINUTES);
    let timeout_minutes = u32::try_from(timeout)
        .ok()
        .filter(|_| TIMEOUT_RANGE_MINUTES.contains(&timeout))
        .ok_or_else(|| {
            ServiceError::InvalidParameter(format!(
                "Timeout is {timeout} minutes; it must be between 10 and 4320."
            ))
        })?;
    if input.encrypted == Some(true) && input.parent.is_some() {
        return Err(ServiceError::InvalidParameter(
            "Encrypted cannot be combined with ParentSnapshotId.".into(),
        ));
    }
    if let Some(description) = &input.description
        && (description.is_empty() || description.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(ServiceError::InvalidParameter(format!(
            "Description must be 1 to {MAX_DESCRIPTION_LEN} characters."
        )));
    }
    if let Some(token) = &input.client_token
        && (token.is_empty()
            || token.len() > MAX_CLIENT_TOKEN_LEN
            || token.chars().any(char::is_whitespace))
    {
        return Err(ServiceError::InvalidParameter(format!(
            "ClientToken must be 1 to {MAX_CLIENT_TOKEN_LEN} characters without white space."
        )));
    }
    if let Some(arn) = &input.kms_key_arn
        && !valid_kms_key_arn(arn)
    {
        return Err(ServiceError::InvalidParameter(
            "KmsKeyArn is not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID).".into(),
        ));
    }
    validate_tags(&input.tags)?;
    Ok(ValidatedStart {
        volume_size,
        timeout_minutes,
    })
}

fn validate_tags(tags: &[Tag]) -> Result<(), ServiceError> {
    if tags.len() > MAX_TAGS {
        return Err(ServiceError::TagLimitExceeded(format!(
            "{} tags were given; a snapshot can have at most {MAX_TAGS}.",
            tags.len()
        )));
    }
    let mut keys = std::collections::HashSet::new();
    for tag in tags {
        let key_len = tag.key.chars().count();
        if key_len == 0 || key_len > MAX_TAG_KEY_LEN {
            return Err(ServiceError::InvalidTag(format!(
                "Tag keys must be 1 to {MAX_TAG_KEY_LEN} characters."
            )));
        }
        if tag.value.chars().count() > MAX_TAG_VALUE_LEN {
            return Err(ServiceError::InvalidTag(format!(
                "The value of tag '{}' is longer than {MAX_TAG_VALUE_LEN} characters.",
                tag.key
            )));
        }
        if !keys.insert(tag.key.as_str()) {
            return Err(ServiceError::InvalidTag(format!(
                "The tag key '{}' is given more than once.",
                tag.key
            )));
        }
    }
    Ok(())
}

/// The model's pattern `arn:aws[a-z\-]*:kms:.*:[0-9]{12}:key/.*`, length 1..=2048.
fn valid_kms_key_arn(arn: &str) -> bool {
    if arn.is_empty() || arn.len() > MAX_KMS_KEY_ARN_LEN {
        return false;
    }
    let Some(rest) = arn.strip_prefix("arn:aws") else {
        return false;
    };
    let partition_end = rest
        .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
        .unwrap_or(rest.len());
    let Some(rest) = rest[partition_end..].strip_prefix(":kms:") else {
        return false;
    };
    // ".*:[0-9]{12}:key/" somewhere after the region.
    rest.match_indices(":key/").any(|(pos, _)| {
        let before = &rest[..pos];
        before.len() >= 12
            && before[before.len() - 12..]
                .bytes()
                .all(|b| b.is_ascii_digit())
            && (before.len() == 12 || before.as_bytes()[before.len() - 13] == b':')
    })
}

/// Add `new` to `tags`, replacing the values of keys already present.
fn merge_tags(tags: &mut Vec<Tag>, new: &[Tag]) {
    for tag in new {
        match tags.iter_mut().find(|t| t.key == tag.key) {
            Some(existing) => existing.value.clone_from(&tag.value),
            None => tags.push(tag.clone()),
        }
    }
}

/// A canonical digest of the start parameters, compared when a client token is reused.
fn start_fingerprint(input: &StartSnapshotInput, validated: &ValidatedStart) -> String {
    let mut hasher = Sha256::new();
    let mut field = |value: &str| {
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    };
    field(&validated.volume_size.gib().to_string());
    field(input.parent.as_ref().map_or("", SnapshotId::as_str));
    field(input.description.as_deref().unwrap_or("\u{0}"));
    field(&input.encrypted.unwrap_or(false).to_string());
    field(input.kms_key_arn.as_deref().unwrap_or(""));
    field(&validated.timeout_minutes.to_string());
    for tag in &input.tags {
        field(&tag.key);
        field(&tag.value);
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kms_key_arns_follow_the_model_pattern() {
        assert!(valid_kms_key_arn(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        ));
        assert!(valid_kms_key_arn(
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/x"
        ));
        assert!(!valid_kms_key_arn("arn:aws:kms:us-east-1:1111:key/x"));
        assert!(!valid_kms_key_arn("arn:aws:s3:::bucket"));
        assert!(!valid_kms_key_arn("alias/foo"));
    }

    #[test]
    fn page_sizes_are_raised_to_100_and_capped_at_10000() {
        assert_eq!(page_size(None).ok(), Some(100));
        assert_eq!(page_size(Some(5)).ok(), Some(100));
        assert_eq!(page_size(Some(-1)).ok(), Some(100));
        assert_eq!(page_size(Some(10_000)).ok(), Some(10_000));
        assert!(page_size(Some(10_001)).is_err());
    }
}
