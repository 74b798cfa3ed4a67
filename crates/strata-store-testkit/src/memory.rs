//! In-memory adapters of both ports: the reference implementation of each sentence of
//! the ports' rustdoc, small enough to read next to it. Every method takes one lock, so
//! every method is atomic; nothing is durable (the process is the store's lifetime).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use strata_core::announcements::Announcements;
use strata_core::block_map::{Node, NodeHash, NodeSource};
use strata_core::encryption::KeyRecord;
use strata_core::leases::LocalLeases;
use strata_core::ports::{
    Announced, AnnouncementId, BlockWrite, ChunkStore, CreateOutcome, GcView, MetadataStore,
    PendingWrites, RecordBlockError, RecordChange, RegisteredChunk, Seal, SealError, Stamp,
    StoreError, StoredChunk,
};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};
use xxhash_rust::xxh3::xxh3_64;

/// Stored nodes: hash → (stamp of the last write, encoded node). Shared copy-on-write
/// with the readers handed out, so a reader is a consistent view at no cost.
type NodeMap = Arc<BTreeMap<NodeHash, (Stamp, Arc<[u8]>)>>;

/// One pending write: its content and checksum together, so whatever drops a write drops
/// its checksum.
struct PendingWrite {
    digest: ChunkDigest,
    checksum: Option<[u8; 32]>,
}

#[derive(Default)]
struct Metadata {
    last_stamp: u64,
    snapshots: BTreeMap<SnapshotId, SnapshotRecord>,
    tokens: HashMap<(AccountId, String), SnapshotId>,
    /// The final write per index of each pending snapshot.
    pending: BTreeMap<(SnapshotId, BlockIndex), PendingWrite>,
    nodes: NodeMap,
    secrets: HashMap<String, Vec<u8>>,
    /// Keys of the local key service by id (ordered, as `keys` lists them).
    keys: BTreeMap<String, KeyRecord>,
    /// The chunk registry: digest → (size, stamp of the last record that stored or re-used it).
    chunks: BTreeMap<ChunkDigest, (u64, Stamp)>,
    /// Tombstones of chunks being deleted.
    condemned: BTreeSet<ChunkDigest>,
    /// Subtree roots staged by a CompleteSnapshot ahead of its seal, per snapshot.
    staged: BTreeSet<(SnapshotId, NodeHash)>,
}

impl Metadata {
    fn next_stamp(&mut self) -> Stamp {
        self.last_stamp += 1;
        Stamp(self.last_stamp)
    }

    fn remove_pending(&mut self, id: &SnapshotId) -> usize {
        let keys: Vec<_> = self
            .pending
            .range((id.clone(), BlockIndex::new(0))..=(id.clone(), BlockIndex::new(u32::MAX)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in &keys {
            self.pending.remove(key);
        }
        self.staged.retain(|(staged_for, _)| staged_for != id);
        keys.len()
    }
}

/// The metadata port in memory. Cheap to clone; clones share the same store.
#[derive(Clone, Default)]
pub struct MemoryMetadataStore {
    state: Arc<Mutex<Metadata>>,
    announcements: Arc<Announcements>,
    leases: Arc<LocalLeases>,
}

impl std::fmt::Debug for MemoryMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryMetadataStore")
    }
}

impl MemoryMetadataStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Metadata> {
        // Every method leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stamp of a stored node (for tests of the stamping rules).
    pub fn node_stamp(&self, hash: &NodeHash) -> Option<Stamp> {
        self.lock().nodes.get(hash).map(|(stamp, _)| *stamp)
    }

    /// Flip a bit of a stored node, as rot would (for tests of what detects it). Returns
    /// whether the node was stored.
    pub fn damage_node(&self, hash: &NodeHash) -> bool {
        let mut state = self.lock();
        let Some((stamp, encoded)) = state.nodes.get(hash).cloned() else {
            return false;
        };
        let mut damaged = encoded.to_vec();
        if let Some(last) = damaged.last_mut() {
            *last ^= 1;
        }
        Arc::make_mut(&mut state.nodes).insert(*hash, (stamp, damaged.into()));
        true
    }
}

/// A view of the nodes stored when it was taken.
#[derive(Clone)]
pub struct MemoryNodes {
    nodes: NodeMap,
}

impl NodeSource for MemoryNodes {
    fn load(&self, hash: &NodeHash) -> Result<Arc<Node>, StoreError> {
        let (_, encoded) = self
            .nodes
            .get(hash)
            .ok_or_else(|| StoreError::Corrupt(format!("block-map node {hash:?} is missing")))?;
        if Node::hash_encoded(encoded) != *hash {
            return Err(StoreError::Corrupt(format!(
                "block-map node {hash:?} does not match its hash"
            )));
        }
        Node::decode(encoded).map(Arc::new)
    }
}

impl MetadataStore for MemoryMetadataStore {
    type Nodes = MemoryNodes;

    async fn create_snapshot(&self, record: SnapshotRecord) -> Result<CreateOutcome, StoreError> {
        let mut state = self.lock();
        if let Some(parent) = &record.parent {
            let intact = state.snapshots.get(parent).is_some_and(|p| {
                p.status == SnapshotStatus::Completed
                    && p.owner == record.owner
                    && p.root == record.base_root
            });
            if !intact {
                return Ok(CreateOutcome::ParentGone);
            }
        }
        if let Some(token) = &record.client_token {
            let key = (record.owner.clone(), token.clone());
            if let Some(existing) = state
                .tokens
                .get(&key)
                .and_then(|id| state.snapshots.get(id))
            {
                return Ok(CreateOutcome::ClientTokenExists(Box::new(existing.clone())));
            }
            state.tokens.insert(key, record.id.clone());
        }
        state.snapshots.insert(record.id.clone(), record);
        Ok(CreateOutcome::Created)
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StoreError> {
        Ok(self.lock().snapshots.get(id).cloned())
    }

    async fn update_snapshot(
        &self,
        id: &SnapshotId,
        change: RecordChange,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let mut state = self.lock();
        let Some(stored) = state.snapshots.get(id) else {
            return Ok(None);
        };
        match change(stored) {
            Some(record) if record.id == *id => {
                state.snapshots.insert(id.clone(), record.clone());
                Ok(Some(record))
            }
            _ => Ok(None),
        }
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        let mut state = self.lock();
        let Some(record) = state.snapshots.remove(id) else {
            return Ok(false);
        };
        if let Some(token) = record.client_token {
            state.tokens.remove(&(record.owner, token));
        }
        state.remove_pending(id);
        Ok(true)
    }

    async fn record_block(&self, write: BlockWrite) -> Result<(), RecordBlockError> {
        let mut state = self.lock();
        let Some(record) = state.snapshots.get(&write.snapshot) else {
            return Err(RecordBlockError::NotFound);
        };
        if record.status_at(write.at_ms) != SnapshotStatus::Pending {
            return Err(RecordBlockError::NotPending(Box::new(
                record.as_of(write.at_ms),
            )));
        }
        let mut record = record.clone();
        if !write.digest.is_zero_block() {
            let registered = state.chunks.get(&write.digest).map(|(size, _)| *size);
            let size = match (write.stored_size, registered) {
                _ if state.condemned.contains(&write.digest) => {
                    return Err(RecordBlockError::ChunkNotRegistered);
                }
                (Some(size), _) | (None, Some(size)) => size,
                (None, None) => return Err(RecordBlockError::ChunkNotRegistered),
            };
            let stamp = state.next_stamp();
            state.chunks.insert(write.digest, (size, stamp));
        }
        record.write_sequence += 1;
        record.last_activity_ms = record.last_activity_ms.max(write.at_ms);
        if write.progress.is_some() {
            record.progress = write.progress;
        }
        state.pending.insert(
            (write.snapshot.clone(), write.index),
            PendingWrite {
                digest: write.digest,
                checksum: write.checksum,
            },
        );
        state.snapshots.insert(write.snapshot, record);
        Ok(())
    }

    async fn pending_writes_page(
        &self,
        id: &SnapshotId,
        after: Option<BlockIndex>,
        limit: usize,
    ) -> Result<PendingWrites, StoreError> {
        let state = self.lock();
        let sequence = state.snapshots.get(id).map_or(0, |r| r.write_sequence);
        let from = match after {
            Some(index) => std::ops::Bound::Excluded((id.clone(), index)),
            None => std::ops::Bound::Included((id.clone(), BlockIndex::new(0))),
        };
        let to = std::ops::Bound::Included((id.clone(), BlockIndex::new(u32::MAX)));
        let mut blocks = Vec::new();
        let mut checksums = Vec::new();
        for ((_, index), write) in state.pending.range((from, to)).take(limit) {
            blocks.push((*index, write.digest));
            if let Some(checksum) = write.checksum {
                checksums.push((*index, checksum));
            }
        }
        Ok(PendingWrites {
            blocks,
            checksums,
            sequence,
        })
    }

    async fn stage_nodes(
        &self,
        id: &SnapshotId,
        roots: Vec<NodeHash>,
        nodes: Vec<(NodeHash, Vec<u8>)>,
    ) -> Result<(), SealError> {
        let mut state = self.lock();
        if state
            .snapshots
            .get(id)
            .is_none_or(|r| r.status != SnapshotStatus::Pending)
        {
            return Err(SealError::NotPending);
        }
        let stamp = state.next_stamp();
        let stored = Arc::make_mut(&mut state.nodes);
        for (hash, encoded) in nodes {
            stored.insert(hash, (stamp, encoded.into()));
        }
        state
            .staged
            .extend(roots.into_iter().map(|root| (id.clone(), root)));
        Ok(())
    }

    async fn seal_snapshot(&self, seal: Seal) -> Result<(), SealError> {
        let mut state = self.lock();
        let stored = match state.snapshots.get(&seal.snapshot) {
            Some(stored) if stored.status == SnapshotStatus::Pending => stored,
            _ => return Err(SealError::NotPending),
        };
        if stored.write_sequence != seal.expected_sequence {
            return Err(SealError::Raced);
        }
        let sealed = stored.completed(seal.root, seal.changed_blocks, seal.completed_at_ms);
        let stamp = state.next_stamp();
        let nodes = Arc::make_mut(&mut state.nodes);
        for (hash, encoded) in seal.new_nodes {
            nodes.insert(hash, (stamp, encoded.into()));
        }
        state.remove_pending(&seal.snapshot);
        state.snapshots.insert(seal.snapshot, sealed);
        Ok(())
    }

    async fn announce_put(&self, digest: ChunkDigest) -> Result<Announced, StoreError> {
        // Under the state lock, which `condemn_chunks` holds while it looks at the
        // announcements: the two are atomic with respect to each other.
        let state = self.lock();
        if state.condemned.contains(&digest) {
            return Err(StoreError::Conflict(format!(
                "chunk {digest} is being deleted"
            )));
        }
        let id = self
            .announcements
            .announce(digest)
            .ok_or_else(|| StoreError::Conflict(format!("chunk {digest} is being deleted")))?;
        Ok(Announced {
            id,
            registered: state.chunks.contains_key(&digest),
        })
    }

    fn withdraw_put(&self, id: AnnouncementId) {
        self.announcements.withdraw(id);
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        Ok(self.leases.acquire(name, holder, ttl))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.leases.release(name, holder);
        Ok(())
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .lock()
            .secrets
            .entry(name.to_owned())
            .or_insert(candidate)
            .clone())
    }

    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord, StoreError> {
        Ok(self
            .lock()
            .keys
            .entry(key.id.clone())
            .or_insert(key)
            .clone())
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.lock().keys.get(id).cloned())
    }

    async fn keys(&self, owner: Option<&AccountId>) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(self
            .lock()
            .keys
            .values()
            .filter(|k| owner.is_none_or(|o| *o == k.owner))
            .cloned()
            .collect())
    }

    async fn set_key_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.lock().keys.get_mut(id).map(|key| {
            key.enabled = enabled;
            key.clone()
        }))
    }

    fn nodes(&self) -> Result<MemoryNodes, StoreError> {
        Ok(MemoryNodes {
            nodes: Arc::clone(&self.lock().nodes),
        })
    }

    async fn list_snapshots(
        &self,
        owner: Option<&AccountId>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        Ok(self
            .lock()
            .snapshots
            .values()
            .filter(|r| owner.is_none_or(|o| *o == r.owner))
            .cloned()
            .collect())
    }

    async fn gc_view(&self) -> Result<GcView<MemoryNodes>, StoreError> {
        let mut state = self.lock();
        let start = state.next_stamp();
        let mut pending: Vec<(SnapshotId, Vec<ChunkDigest>)> = Vec::new();
        for ((id, _), write) in &state.pending {
            match pending.last_mut() {
                Some((last, digests)) if last == id => digests.push(write.digest),
                _ => pending.push((id.clone(), vec![write.digest])),
            }
        }
        let staged = state
            .staged
            .iter()
            .filter(|(id, _)| {
                state
                    .snapshots
                    .get(id)
                    .is_some_and(|r| r.status == SnapshotStatus::Pending)
            })
            .map(|(_, root)| *root)
            .collect();
        Ok(GcView {
            start,
            records: state.snapshots.values().cloned().collect(),
            pending,
            staged,
            nodes: state
                .nodes
                .iter()
                .map(|(hash, (stamp, _))| (*hash, *stamp))
                .collect(),
            chunks: state
                .chunks
                .iter()
                .map(|(digest, (size, stamp))| RegisteredChunk {
                    digest: *digest,
                    size: *size,
                    stamp: *stamp,
                })
                .collect(),
            reader: MemoryNodes {
                nodes: Arc::clone(&state.nodes),
            },
        })
    }

    async fn delete_nodes(
        &self,
        hashes: Vec<NodeHash>,
        stamped_before: Stamp,
    ) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let nodes = Arc::make_mut(&mut state.nodes);
        let mut deleted = 0;
        for hash in hashes {
            if nodes
                .get(&hash)
                .is_some_and(|(stamp, _)| *stamp < stamped_before)
            {
                nodes.remove(&hash);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn drop_pending_writes(&self, ids: Vec<SnapshotId>) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let mut dropped = 0;
        for id in ids {
            if state
                .snapshots
                .get(&id)
                .is_some_and(|r| r.status == SnapshotStatus::Error)
            {
                dropped += state.remove_pending(&id);
            }
        }
        Ok(dropped)
    }

    async fn condemn_chunks(
        &self,
        digests: Vec<ChunkDigest>,
        stamped_before: Stamp,
    ) -> Result<Vec<ChunkDigest>, StoreError> {
        let mut state = self.lock();
        let announced = self.announcements.digests();
        let mut condemned = Vec::new();
        for digest in digests {
            let reused = state
                .chunks
                .get(&digest)
                .is_some_and(|(_, stamp)| *stamp >= stamped_before);
            if announced.contains(&digest) || reused || !state.condemned.insert(digest) {
                continue;
            }
            state.chunks.remove(&digest);
            condemned.push(digest);
        }
        Ok(condemned)
    }

    async fn condemned_chunks(&self) -> Result<Vec<ChunkDigest>, StoreError> {
        Ok(self.lock().condemned.iter().copied().collect())
    }

    async fn finalize_chunks(&self, digests: Vec<ChunkDigest>) -> Result<(), StoreError> {
        let mut state = self.lock();
        for digest in digests {
            state.condemned.remove(&digest);
        }
        Ok(())
    }

    async fn forget_chunk(&self, digest: ChunkDigest) -> Result<(), StoreError> {
        self.lock().chunks.remove(&digest);
        Ok(())
    }
}

struct StoredBytes {
    data: Bytes,
    /// XXH3-64 of the bytes as stored: reads are checked against it.
    checksum: u64,
    written: SystemTime,
}

/// The chunk port in memory. Cheap to clone; clones share the same store.
#[derive(Clone, Default)]
pub struct MemoryChunkStore {
    chunks: Arc<Mutex<BTreeMap<ChunkDigest, StoredBytes>>>,
}

impl std::fmt::Debug for MemoryChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryChunkStore")
    }
}

impl MemoryChunkStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ChunkDigest, StoredBytes>> {
        self.chunks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Flip one bit of a stored chunk, as rot on a disk would (for tests of verified
    /// reads). Returns false if the chunk is not stored.
    pub fn damage(&self, digest: &ChunkDigest) -> bool {
        let mut chunks = self.lock();
        let Some(stored) = chunks.get_mut(digest) else {
            return false;
        };
        let mut bytes = stored.data.to_vec();
        if let Some(first) = bytes.first_mut() {
            *first ^= 1;
        }
        stored.data = bytes.into();
        true
    }

    /// Whether `digest` is stored.
    pub fn contains(&self, digest: &ChunkDigest) -> bool {
        self.lock().contains_key(digest)
    }
}

impl ChunkStore for MemoryChunkStore {
    async fn put(&self, digest: ChunkDigest, data: Bytes) -> Result<(), StoreError> {
        // Always (re)written: identical bytes, or the repair of a damaged copy.
        self.lock().insert(
            digest,
            StoredBytes {
                checksum: xxh3_64(&data),
                data,
                written: SystemTime::now(),
            },
        );
        Ok(())
    }

    async fn get(&self, digest: ChunkDigest) -> Result<Option<Bytes>, StoreError> {
        let chunks = self.lock();
        let Some(stored) = chunks.get(&digest) else {
            return Ok(None);
        };
        if xxh3_64(&stored.data) != stored.checksum {
            return Err(StoreError::Corrupt(format!(
                "chunk {digest} failed its checksum"
            )));
        }
        Ok(Some(stored.data.clone()))
    }

    async fn delete(&self, digests: Vec<ChunkDigest>) -> Result<u64, StoreError> {
        let mut chunks = self.lock();
        Ok(digests
            .iter()
            .filter_map(|digest| chunks.remove(digest))
            .map(|stored| stored.data.len() as u64)
            .sum())
    }

    async fn list(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        Ok(self
            .lock()
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(digest, stored)| StoredChunk {
                digest: *digest,
                size: stored.data.len() as u64,
                written: stored.written,
            })
            .collect())
    }
}
