//! PutSnapshotBlock: checked before the body is read, then stored and recorded.

use std::sync::Arc;

use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId};

use super::{SnapshotService, not_pending};
use crate::body::{BlockHasher, HashedBlock};
use crate::encryption::DataKey;
use crate::error::ServiceError;
use crate::ports::{
    AnnouncementId, BlockWrite, ChunkStore, MetadataStore, RecordBlockError, StoreError,
};
use crate::snapshot::{SnapshotRecord, SnapshotStatus};
use bytes::Bytes;

/// Proof that a block write was checked (owner, state, index) before its body was read,
/// and what was learnt about its claimed content. While it lives, the claimed digest is
/// announced as being written, so GC keeps a stored chunk of that content.
#[derive(Debug)]
pub struct WritePermit {
    record: SnapshotRecord,
    index: BlockIndex,
    claimed: ChunkDigest,
    /// Whether the chunk registry says content with the claimed digest is stored: then
    /// the bytes need not be stored again (the write record checks it once more).
    registered: bool,
    /// The announcement of the claimed digest; `None` for a block to encrypt, whose
    /// chunk is named by its envelope and announced once the body is sealed.
    _announcement: Option<Announcement>,
    /// The snapshot's data key, if its blocks are encrypted at rest.
    data_key: Option<Arc<DataKey>>,
}

/// Withdraws a Put's announcement when dropped: after its write record committed, or
/// when the Put fails or its client goes away.
struct Announcement {
    id: AnnouncementId,
    withdraw: Box<dyn Fn(AnnouncementId) + Send + Sync>,
}

impl std::fmt::Debug for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Announcement").field(&self.id).finish()
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        (self.withdraw)(self.id);
    }
}

impl WritePermit {
    /// Whether the target holds the claimed content already (registered when the Put was
    /// announced, or the zero block): then the body's bytes are not stored again.
    pub fn content_is_stored(&self) -> bool {
        self.registered
    }

    /// The hasher the body should be read into: one that copies the body into an aligned
    /// buffer as it arrives, kept even when the content is registered as stored, since
    /// the registry may lose it before the write is recorded (a read finding the stored
    /// copy damaged); only the zero block, never stored, is just hashed.
    pub fn block_hasher(&self) -> BlockHasher {
        if self.claimed.is_zero_block() {
            BlockHasher::discarding()
        } else {
            BlockHasher::copying()
        }
    }
}

impl<M: MetadataStore, C: ChunkStore> SnapshotService<M, C> {
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
        // The record and the announcement at once: two metadata round trips that do not
        // depend on each other, and every Put waits for both before its body is read.
        // Announced before the registry is asked, and until the write record commits: a
        // collection then keeps a stored chunk of this content (see `gc`), so "registered"
        // stays true unless a read finds the chunk damaged, which the record catches. A
        // body that turns out not to match `claimed` (or a Put refused for its snapshot)
        // only kept the chunk a while longer.
        let (record, announced) = tokio::join!(
            self.writable_snapshot(owner, id, index),
            self.announce(claimed)
        );
        let record = record?;
        // Checked before the body is read: a disabled key refuses the Put at once.
        let data_key = self.snapshot_data_key(&record).await?;
        if data_key.is_some() && !claimed.is_zero_block() {
            // The chunk is named by the sealed block's digest, announced once it is
            // known; this announcement of the plaintext's is withdrawn as it drops.
            drop(announced);
            return Ok(WritePermit {
                record,
                index,
                claimed,
                registered: false,
                _announcement: None,
                data_key,
            });
        }
        let (announcement, registered) = announced?;
        Ok(WritePermit {
            record,
            index,
            claimed,
            registered: registered || claimed.is_zero_block(),
            _announcement: Some(announcement),
            data_key,
        })
    }

    /// Announce a Put of `digest` (waiting, within the retry policy, while a collection
    /// finishes deleting that content) and learn whether it is registered as stored.
    async fn announce(&self, digest: ChunkDigest) -> Result<(Announcement, bool), ServiceError> {
        let first = crate::with_retries!(
            self.retry,
            "announce a put",
            self.metadata.announce_put(digest)
        );
        let announced = match first {
            // Still condemned after the retries: maybe by a collection that died before
            // finishing (race 8). Finish it if no collection holds the lease, then ask again.
            Err(StoreError::Conflict(_)) if self.finish_abandoned_deletion(digest).await? => {
                crate::with_retries!(
                    self.retry,
                    "announce a put",
                    self.metadata.announce_put(digest)
                )?
            }
            other => other?,
        };
        let metadata = Arc::clone(&self.metadata);
        let announcement = Announcement {
            id: announced.id,
            withdraw: Box::new(move |id| metadata.withdraw_put(id)),
        };
        Ok((announcement, announced.registered))
    }

    /// Finish deleting `digest` if it was condemned by a collection that stopped between
    /// condemning and finalizing (its node died): under the GC lease, so never while a live
    /// collection may be deleting that object itself (then `Ok(false)`: the Put is refused
    /// retryably, and the collection finalizes soon). Only this digest, so the Put waits
    /// for one delete, not for the dead collection's whole batch (the next collection
    /// finishes the rest). `Ok(true)`: ask again.
    async fn finish_abandoned_deletion(&self, digest: ChunkDigest) -> Result<bool, ServiceError> {
        use super::gc::{GC_LEASE, LEASE_TTL};
        let holder = format!("put-{:016x}", rand::random::<u64>());
        if !self
            .metadata
            .acquire_lease(GC_LEASE, &holder, LEASE_TTL)
            .await?
        {
            return Ok(false);
        }
        let finished = async {
            if self.metadata.condemned_chunks().await?.contains(&digest) {
                crate::with_retries!(
                    self.retry,
                    "delete a condemned chunk",
                    self.chunks.delete(vec![digest])
                )?;
                self.metadata.finalize_chunks(vec![digest]).await?;
                tracing::info!(
                    %digest,
                    "finished deleting a chunk that a stopped collection condemned"
                );
            }
            Ok::<_, ServiceError>(true)
        }
        .await;
        if let Err(error) = self.metadata.release_lease(GC_LEASE, &holder).await {
            tracing::warn!(%error, "cannot release the GC lease; it expires by itself");
        }
        finished
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
    /// it unless it is stored already (a block of an encrypted snapshot as its envelope),
    /// record it. Returns the block's checksum, once both the bytes and the record are
    /// durable. The snapshot's state is not read again: the record write itself
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
            mut registered,
            _announcement,
            data_key,
        } = permit;
        let id = &record.id;
        if block.len() != BLOCK_SIZE {
            return Err(ServiceError::WrongBlockSize { len: block.len() });
        }
        if block.digest != claimed {
            return Err(ServiceError::BlockChecksumMismatch);
        }
        if record.status_at(self.now_ms()) != SnapshotStatus::Pending {
            // The body took us past the deadline as last seen; the stored one may be later.
            self.writable_snapshot(&record.owner, id, index).await?;
        }
        let mut digest = block.digest;
        let mut data = block.into_bytes();
        let mut checksum = None;
        let mut _sealed_announcement = None;
        if let Some(key) = &data_key {
            if !digest.is_zero_block() {
                let plaintext = data.clone().ok_or_else(|| {
                    ServiceError::Store(StoreError::Backend(
                        "the body to encrypt was not kept".into(),
                    ))
                })?;
                let sealing = Arc::clone(key);
                let envelope = Bytes::from(
                    tokio::task::spawn_blocking(move || sealing.seal(index, &plaintext))
                        .await
                        .map_err(|e| {
                            ServiceError::Store(StoreError::Backend(format!("worker failed: {e}")))
                        })?,
                );
                digest = ChunkDigest::of(&envelope);
                let (announcement, stored) = self.announce(digest).await?;
                _sealed_announcement = Some(announcement);
                registered = stored;
                data = Some(envelope);
            }
            checksum = Some(key.mask_checksum(&digest, claimed.0));
        }
        let mut write = BlockWrite {
            snapshot: id.clone(),
            index,
            digest,
            progress,
            at_ms: self.now_ms(),
            stored_size: None,
            checksum,
        };
        if !registered {
            write.stored_size = Some(self.store_chunk(digest, data.as_ref()).await?);
        }
        match self.record_write(&write).await {
            Err(RecordBlockError::ChunkNotRegistered) => {
                // The registry lost the chunk after the announcement (a read found it
                // damaged, or its deletion began): store the verified bytes ourselves,
                // once any deletion of this content is finished, and record again.
                tracing::info!(%id, %index, chunk = %digest, "registered chunk went away during a put; storing it again");
                let (_again, _) = self.announce(digest).await?;
                write.stored_size = Some(self.store_chunk(digest, data.as_ref()).await?);
                write.at_ms = self.now_ms();
                self.record_write(&write).await
            }
            other => other,
        }
        .map_err(|error| match error {
            RecordBlockError::NotFound => ServiceError::SnapshotNotFound(id.clone()),
            RecordBlockError::NotPending(record) => not_pending(&record),
            RecordBlockError::ChunkNotRegistered => ServiceError::Store(StoreError::Conflict(
                "the chunk of this write was deleted while it was being written; send it again"
                    .into(),
            )),
            RecordBlockError::Store(e) => e.into(),
        })?;
        self.stats.record_put(&digest, write.stored_size.is_none());
        Ok(claimed)
    }

    /// Store a verified chunk; returns its size.
    async fn store_chunk(
        &self,
        digest: ChunkDigest,
        data: Option<&Bytes>,
    ) -> Result<u64, ServiceError> {
        let data = data.ok_or_else(|| {
            ServiceError::Store(StoreError::Backend(
                "the body of new content was not kept".into(),
            ))
        })?;
        crate::with_retries!(
            self.retry,
            "store a chunk",
            self.chunks.put(digest, data.clone())
        )?;
        Ok(data.len() as u64)
    }

    async fn record_write(&self, write: &BlockWrite) -> Result<(), RecordBlockError> {
        crate::with_retries!(self.retry, "record a block write", {
            self.metadata.record_block(write.clone())
        })
    }
}
