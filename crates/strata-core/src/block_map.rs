//! The block map: a persistent, content-addressed radix tree from [`BlockIndex`] to
//! [`ChunkDigest`].
//!
//! # Shape
//! The 30-bit key space (enough for the 2^27 blocks of a 64 TiB volume) is cut into five
//! levels of 6 bits. A node at level 0 (a leaf) holds up to 64 chunk digests; a node at
//! level `L > 0` holds up to 64 hashes of level `L - 1` nodes. Absent slots cost nothing: a
//! node stores a 64-bit occupancy bitmap and only the occupied slots. An empty map has no
//! root at all (`None`).
//!
//! # Structural sharing
//! A node is named by the SHA-256 of its encoding ([`NodeHash`]), so identical subtrees are
//! one stored node, and a node never changes once written. A child snapshot's tree is built
//! from its parent's by rewriting only the paths to the written indexes ([`apply`]); every
//! other subtree is shared by hash. Two trees are compared by walking both from the roots
//! and descending only where hashes differ ([`diff`]), so the cost is
//! O(changed blocks x depth), independent of the volume size.
//!
//! # Encoding (version 1, frozen: nodes are persisted)
//! `[level: u8][bitmap: u64 little-endian][32-byte slot value; popcount(bitmap)]`,
//! slots in ascending order. The level byte keeps a leaf and an inner node with the same
//! slot bytes from sharing a hash.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use strata_types::{BlockIndex, ChunkDigest, InvalidValue};

use crate::ports::StoreError;

/// Bits of the block index consumed per tree level.
pub const FANOUT_BITS: u32 = 6;
/// Slots per node.
pub const FANOUT: usize = 1 << FANOUT_BITS;
/// Number of levels; the root sits at level `LEVELS - 1`.
pub const LEVELS: u8 = 5;
const ROOT_LEVEL: u8 = LEVELS - 1;

/// The content address of a tree node (SHA-256 of its encoding).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct NodeHash(pub [u8; 32]);

impl NodeHash {
    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for NodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeHash({})", &self.to_hex()[..16])
    }
}

impl TryFrom<String> for NodeHash {
    type Error = InvalidValue;
    fn try_from(text: String) -> Result<Self, InvalidValue> {
        ChunkDigest::from_hex(&text).map(|d| NodeHash(d.0))
    }
}

impl From<NodeHash> for String {
    fn from(hash: NodeHash) -> String {
        hash.to_hex()
    }
}

/// One decoded tree node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    level: u8,
    bitmap: u64,
    /// Values of the occupied slots, ascending: chunk digests in a leaf, child hashes above.
    slots: Vec<[u8; 32]>,
}

impl Node {
    /// The level of this node (0 = leaf).
    pub fn level(&self) -> u8 {
        self.level
    }

    /// The values of the occupied slots, ascending: chunk digests in a leaf (level 0),
    /// child node hashes above.
    pub fn values(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.slots.iter().copied()
    }

    /// The value in `slot`, if occupied.
    fn get(&self, slot: usize) -> Option<[u8; 32]> {
        let bit = 1u64 << slot;
        if self.bitmap & bit == 0 {
            return None;
        }
        let position = (self.bitmap & (bit - 1)).count_ones() as usize;
        self.slots.get(position).copied()
    }

    /// Occupied slots and their values, ascending.
    fn entries(&self) -> impl Iterator<Item = (usize, [u8; 32])> + '_ {
        (0..FANOUT)
            .filter(|slot| self.bitmap & (1u64 << slot) != 0)
            .zip(self.slots.iter().copied())
    }

    /// Serialize (format version 1, see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + 32 * self.slots.len());
        out.push(self.level);
        out.extend_from_slice(&self.bitmap.to_le_bytes());
        for slot in &self.slots {
            out.extend_from_slice(slot);
        }
        out
    }

    /// Parse an encoded node, checking its structure.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt(format!("block-map node: {why}"));
        let (&level, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
        if level >= LEVELS {
            return Err(corrupt("level out of range"));
        }
        let bitmap_bytes: [u8; 8] = rest
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| corrupt("truncated header"))?;
        let bitmap = u64::from_le_bytes(bitmap_bytes);
        let body = &rest[8..];
        if bitmap == 0 || body.len() != 32 * bitmap.count_ones() as usize {
            return Err(corrupt("slot count does not match the bitmap"));
        }
        let slots = body
            .chunks_exact(32)
            .map(|chunk| {
                let mut slot = [0u8; 32];
                slot.copy_from_slice(chunk);
                slot
            })
            .collect();
        Ok(Self {
            level,
            bitmap,
            slots,
        })
    }

    /// The content address of an encoded node.
    pub fn hash_encoded(encoded: &[u8]) -> NodeHash {
        NodeHash(Sha256::digest(encoded).into())
    }
}

/// Read access to stored nodes. Implemented by metadata stores (and by test fixtures).
///
/// Nodes are immutable, so an implementation may cache them freely.
pub trait NodeSource {
    /// Load the node named `hash`. A missing node is corruption: trees only reference
    /// nodes that were committed before them.
    fn load(&self, hash: &NodeHash) -> Result<Arc<Node>, StoreError>;
}

/// The result of [`apply`]: the new root and every node it created, ready to be stored.
#[derive(Debug, Default)]
pub struct TreeUpdate {
    /// The new root (`None` for an empty map).
    pub root: Option<NodeHash>,
    /// Nodes written by this update, encoded. Storing one that already exists is harmless.
    pub new_nodes: Vec<(NodeHash, Vec<u8>)>,
}

/// Build a new tree from `root` with `writes` applied and every index `>= keep_below`
/// removed (a child may be smaller than its parent).
///
/// `writes` must be sorted by index, with unique indexes, all below `keep_below`.
/// Only nodes on the paths to written or truncated indexes are rewritten.
pub fn apply(
    source: &impl NodeSource,
    root: Option<NodeHash>,
    writes: &[(BlockIndex, ChunkDigest)],
    keep_below: u64,
) -> Result<TreeUpdate, StoreError> {
    let mut builder = TreeBuilder::new(root, keep_below);
    builder.push(source, writes)?;
    builder.finish(source)
}

/// Builds the tree [`apply`] builds from a stream of writes, in memory bounded by one
/// level-1 subtree's writes (4,096) plus the nodes not yet taken: CompleteSnapshot feeds
/// it pages of pending writes and stores the finished nodes in batches
/// ([`TreeBuilder::take_batch`]) before the seal, so a snapshot of millions of writes
/// never holds them, or its tree, in memory at once.
///
/// It rebuilds one level-1 subtree (4,096 indexes, up to 65 nodes) at a time as the
/// writes pass its end; [`TreeBuilder::finish`] then rebuilds the three levels above
/// from the new subtree roots. The result is the same tree, node for node, as
/// [`apply`] of all the writes at once.
#[derive(Debug)]
pub struct TreeBuilder {
    root: Option<NodeHash>,
    keep_below: u64,
    /// The first index of the level-1 subtree whose writes are being gathered.
    group_base: Option<u64>,
    group_writes: Vec<(BlockIndex, ChunkDigest)>,
    /// The last index pushed, to check the stream ascends.
    last: Option<u64>,
    /// The rebuilt level-1 subtrees, by first index, ascending: `None` when a subtree
    /// became empty (truncated away).
    subtrees: Vec<(u64, Option<[u8; 32]>)>,
    /// Nodes built and not yet taken.
    nodes: Vec<(NodeHash, Vec<u8>)>,
    nodes_bytes: usize,
    /// The roots of the subtrees whose nodes are in `nodes`.
    roots: Vec<NodeHash>,
}

/// Finished nodes taken from a [`TreeBuilder`]: every node under `roots` that the build
/// created, and only those (the rest of each subtree was stored before).
#[derive(Debug, Default)]
pub struct NodeBatch {
    /// The level-1 subtree roots the nodes belong to.
    pub roots: Vec<NodeHash>,
    /// The nodes, encoded.
    pub nodes: Vec<(NodeHash, Vec<u8>)>,
}

/// Indexes under one level-1 subtree: the unit a [`TreeBuilder`] rebuilds.
const SUBTREE_SPAN: u64 = span(1);
/// The level whose slots hold level-1 subtree roots.
const SUBTREE_PARENT_LEVEL: u8 = 2;

impl TreeBuilder {
    /// A build on the tree `root` (a parent's, or `None`), keeping indexes below
    /// `keep_below`.
    pub fn new(root: Option<NodeHash>, keep_below: u64) -> Self {
        Self {
            root,
            keep_below,
            group_base: None,
            group_writes: Vec::new(),
            last: None,
            subtrees: Vec::new(),
            nodes: Vec::new(),
            nodes_bytes: 0,
            roots: Vec::new(),
        }
    }

    /// Add the next writes: ascending, unique, each above every write pushed before and
    /// below `keep_below` (else [`StoreError::Corrupt`]: the writes come from a store
    /// that promised that order).
    pub fn push(
        &mut self,
        source: &impl NodeSource,
        writes: &[(BlockIndex, ChunkDigest)],
    ) -> Result<(), StoreError> {
        for &(index, digest) in writes {
            let position = u64::from(index.get());
            if self.last.is_some_and(|last| position <= last) || position >= self.keep_below {
                return Err(StoreError::Corrupt(format!(
                    "pending write at block {position} is out of order or beyond the volume"
                )));
            }
            self.last = Some(position);
            let base = position - position % SUBTREE_SPAN;
            if self.group_base != Some(base) {
                self.close_group(source)?;
                self.group_base = Some(base);
            }
            self.group_writes.push((index, digest));
        }
        Ok(())
    }

    /// Bytes of the nodes built and not yet taken (closed subtrees only).
    pub fn pending_bytes(&self) -> usize {
        self.nodes_bytes
    }

    /// Take the nodes of the subtrees closed so far.
    pub fn take_batch(&mut self) -> NodeBatch {
        self.nodes_bytes = 0;
        NodeBatch {
            roots: std::mem::take(&mut self.roots),
            nodes: std::mem::take(&mut self.nodes),
        }
    }

    /// Rebuild the subtree whose writes were gathered, if any.
    fn close_group(&mut self, source: &impl NodeSource) -> Result<(), StoreError> {
        let Some(base) = self.group_base.take() else {
            return Ok(());
        };
        let writes = std::mem::take(&mut self.group_writes);
        self.rebuild_subtree(source, base, &writes)?;
        self.group_writes = writes;
        self.group_writes.clear();
        Ok(())
    }

    fn rebuild_subtree(
        &mut self,
        source: &impl NodeSource,
        base: u64,
        writes: &[(BlockIndex, ChunkDigest)],
    ) -> Result<(), StoreError> {
        let existing = subtree_root(source, self.root, base)?;
        let before = self.nodes.len();
        let rebuilt = rebuild(
            source,
            existing,
            1,
            0,
            base,
            writes,
            self.keep_below,
            &mut self.nodes,
        )?;
        self.nodes_bytes += self.nodes[before..]
            .iter()
            .map(|(_, encoded)| encoded.len() + 32)
            .sum::<usize>();
        if let Some(root) = rebuilt
            && self.nodes.len() > before
        {
            self.roots.push(root);
        }
        self.subtrees.push((base, rebuilt.map(|h| h.0)));
        Ok(())
    }

    /// Close the last subtree, rebuild the one the truncation cuts (if no write did),
    /// and build the levels above: the new root and the nodes not taken yet.
    pub fn finish(mut self, source: &impl NodeSource) -> Result<TreeUpdate, StoreError> {
        self.close_group(source)?;
        if !self.keep_below.is_multiple_of(SUBTREE_SPAN) {
            let cut = self.keep_below - self.keep_below % SUBTREE_SPAN;
            if self.subtrees.last().is_none_or(|(base, _)| *base < cut) {
                self.rebuild_subtree(source, cut, &[])?;
            }
        }
        let subtrees = std::mem::take(&mut self.subtrees);
        let root = rebuild(
            source,
            self.root,
            ROOT_LEVEL,
            SUBTREE_PARENT_LEVEL,
            0,
            &subtrees,
            self.keep_below,
            &mut self.nodes,
        )?;
        Ok(TreeUpdate {
            root,
            new_nodes: self.nodes,
        })
    }
}

/// The root of the level-1 subtree starting at `base` in the tree `root`, if present.
fn subtree_root(
    source: &impl NodeSource,
    root: Option<NodeHash>,
    base: u64,
) -> Result<Option<NodeHash>, StoreError> {
    let mut current = root;
    let mut level = ROOT_LEVEL;
    while let Some(hash) = current {
        if level == 1 {
            return Ok(Some(hash));
        }
        let node = source.load(&hash)?;
        let slot = ((base / slot_span(level)) % FANOUT as u64) as usize;
        current = node.get(slot).map(NodeHash);
        level -= 1;
    }
    Ok(None)
}

/// Number of block indexes under one node of `level`.
const fn span(level: u8) -> u64 {
    1 << (FANOUT_BITS * (level as u32 + 1))
}

/// Number of block indexes under one slot of a node of `level`.
const fn slot_span(level: u8) -> u64 {
    1 << (FANOUT_BITS * level as u32)
}

/// What replaces one slot of a node at the bottom level of a [`rebuild`]: a block write
/// (the slot of a leaf) or a rebuilt subtree (the slot of a level-2 node).
trait Replacement {
    /// The first block index under the slot.
    fn position(&self) -> u64;
    /// The slot's new value (`None`: now empty).
    fn value(&self) -> Option<[u8; 32]>;
}

impl Replacement for (BlockIndex, ChunkDigest) {
    fn position(&self) -> u64 {
        u64::from(self.0.get())
    }
    fn value(&self) -> Option<[u8; 32]> {
        Some(self.1.0)
    }
}

impl Replacement for (u64, Option<[u8; 32]>) {
    fn position(&self) -> u64 {
        self.0
    }
    fn value(&self) -> Option<[u8; 32]> {
        self.1
    }
}

/// Rebuild the node `existing` of `level` covering indexes from `base`: the slots of its
/// descendants at level `bottom` named by `replacements` (ascending, unique) take their
/// new values, indexes `>= keep_below` are removed, and every other subtree is kept by
/// hash. Pushes every node it builds to `new_nodes`.
#[allow(clippy::too_many_arguments)]
fn rebuild<R: Replacement>(
    source: &impl NodeSource,
    existing: Option<NodeHash>,
    level: u8,
    bottom: u8,
    base: u64,
    replacements: &[R],
    keep_below: u64,
    new_nodes: &mut Vec<(NodeHash, Vec<u8>)>,
) -> Result<Option<NodeHash>, StoreError> {
    if base >= keep_below {
        return Ok(None);
    }
    let truncated = base + span(level) > keep_below;
    if replacements.is_empty() && (!truncated || existing.is_none()) {
        return Ok(existing);
    }
    let old = existing.map(|hash| source.load(&hash)).transpose()?;
    let mut bitmap = 0u64;
    let mut slots = Vec::with_capacity(FANOUT);
    let mut remaining = replacements;
    for slot in 0..FANOUT {
        let child_base = base + slot as u64 * slot_span(level);
        let child_end = child_base + slot_span(level);
        let split = remaining.partition_point(|r| r.position() < child_end);
        let (child_replacements, rest) = remaining.split_at(split);
        remaining = rest;
        let old_value = old.as_ref().and_then(|node| node.get(slot));
        let value = if child_base >= keep_below {
            None
        } else if level == bottom {
            match child_replacements.last() {
                Some(replacement) => replacement.value(),
                None => old_value,
            }
        } else if child_replacements.is_empty() && child_end <= keep_below {
            old_value
        } else {
            rebuild(
                source,
                old_value.map(NodeHash),
                level - 1,
                bottom,
                child_base,
                child_replacements,
                keep_below,
                new_nodes,
            )?
            .map(|h| h.0)
        };
        if let Some(value) = value {
            bitmap |= 1 << slot;
            slots.push(value);
        }
    }
    if bitmap == 0 {
        return Ok(None);
    }
    let encoded = Node {
        level,
        bitmap,
        slots,
    }
    .encode();
    let hash = Node::hash_encoded(&encoded);
    new_nodes.push((hash, encoded));
    Ok(Some(hash))
}

/// The digest stored at `index`, if any.
pub fn lookup(
    source: &impl NodeSource,
    root: Option<NodeHash>,
    index: BlockIndex,
) -> Result<Option<ChunkDigest>, StoreError> {
    let mut current = root;
    let mut level = ROOT_LEVEL;
    let key = u64::from(index.get());
    while let Some(hash) = current {
        let node = source.load(&hash)?;
        let slot = ((key / slot_span(level)) % FANOUT as u64) as usize;
        let value = node.get(slot);
        if level == 0 {
            return Ok(value.map(ChunkDigest));
        }
        current = value.map(NodeHash);
        level -= 1;
    }
    Ok(None)
}

/// Up to `limit` entries with index `>= start`, ascending.
pub fn scan(
    source: &impl NodeSource,
    root: Option<NodeHash>,
    start: BlockIndex,
    limit: usize,
) -> Result<Vec<(BlockIndex, ChunkDigest)>, StoreError> {
    let mut out = Vec::new();
    if let Some(root) = root {
        let node = source.load(&root)?;
        scan_node(source, &node, 0, u64::from(start.get()), limit, &mut out)?;
    }
    Ok(out)
}

fn scan_node(
    source: &impl NodeSource,
    node: &Node,
    base: u64,
    start: u64,
    limit: usize,
    out: &mut Vec<(BlockIndex, ChunkDigest)>,
) -> Result<(), StoreError> {
    let level = node.level;
    for (slot, value) in node.entries() {
        if out.len() >= limit {
            break;
        }
        let child_base = base + slot as u64 * slot_span(level);
        if child_base + slot_span(level) <= start {
            continue;
        }
        if level == 0 {
            out.push((index_at(child_base)?, ChunkDigest(value)));
        } else {
            let child = source.load(&NodeHash(value))?;
            scan_node(source, &child, child_base, start, limit, out)?;
        }
    }
    Ok(())
}

fn index_at(position: u64) -> Result<BlockIndex, StoreError> {
    u32::try_from(position)
        .map(BlockIndex::new)
        .map_err(|_| StoreError::Corrupt("block-map index beyond 2^32".into()))
}

/// One index at which two trees differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Difference {
    /// The block index.
    pub index: BlockIndex,
    /// The content in the first tree, if present there.
    pub first: Option<ChunkDigest>,
    /// The content in the second tree, if present there.
    pub second: Option<ChunkDigest>,
}

/// Work counters of a [`diff`], for tests that assert its complexity.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiffStats {
    /// Nodes loaded from the source.
    pub nodes_visited: u64,
}

/// Up to `limit` indexes `>= start` at which `first` and `second` differ, ascending.
///
/// Subtrees with equal hashes are skipped without being loaded, so the work is
/// O(differences x depth) nodes.
pub fn diff(
    source: &impl NodeSource,
    first: Option<NodeHash>,
    second: Option<NodeHash>,
    start: BlockIndex,
    limit: usize,
    stats: &mut DiffStats,
) -> Result<Vec<Difference>, StoreError> {
    let mut out = Vec::new();
    if first != second {
        let mut load = |hash: Option<NodeHash>| -> Result<Option<Arc<Node>>, StoreError> {
            hash.map(|h| {
                stats.nodes_visited += 1;
                source.load(&h)
            })
            .transpose()
        };
        let a = load(first)?;
        let b = load(second)?;
        let mut walk = DiffWalk {
            source,
            start: u64::from(start.get()),
            limit,
            out: &mut out,
            stats,
        };
        walk.nodes(a.as_deref(), b.as_deref(), ROOT_LEVEL, 0)?;
    }
    Ok(out)
}

struct DiffWalk<'a, S> {
    source: &'a S,
    start: u64,
    limit: usize,
    out: &'a mut Vec<Difference>,
    stats: &'a mut DiffStats,
}

impl<S: NodeSource> DiffWalk<'_, S> {
    fn load(&mut self, value: Option<[u8; 32]>) -> Result<Option<Arc<Node>>, StoreError> {
        value
            .map(|v| {
                self.stats.nodes_visited += 1;
                self.source.load(&NodeHash(v))
            })
            .transpose()
    }

    fn nodes(
        &mut self,
        a: Option<&Node>,
        b: Option<&Node>,
        level: u8,
        base: u64,
    ) -> Result<(), StoreError> {
        let occupied = a.map_or(0, |n| n.bitmap) | b.map_or(0, |n| n.bitmap);
        for slot in (0..FANOUT).filter(|s| occupied & (1u64 << s) != 0) {
            if self.out.len() >= self.limit {
                break;
            }
            let child_base = base + slot as u64 * slot_span(level);
            if child_base + slot_span(level) <= self.start {
                continue;
            }
            let va = a.and_then(|n| n.get(slot));
            let vb = b.and_then(|n| n.get(slot));
            if va == vb {
                continue;
            }
            if level == 0 {
                self.out.push(Difference {
                    index: index_at(child_base)?,
                    first: va.map(ChunkDigest),
                    second: vb.map(ChunkDigest),
                });
            } else {
                let ca = self.load(va)?;
                let cb = self.load(vb)?;
                self.nodes(ca.as_deref(), cb.as_deref(), level - 1, child_base)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Mutex;

    use proptest::prelude::*;

    /// An in-memory node store that counts loads.
    #[derive(Default)]
    pub(crate) struct MemoryNodes {
        nodes: Mutex<HashMap<NodeHash, Arc<Node>>>,
    }

    impl MemoryNodes {
        pub(crate) fn store(&self, update: &TreeUpdate) {
            let mut nodes = self.nodes.lock().expect("lock");
            for (hash, encoded) in &update.new_nodes {
                assert_eq!(Node::hash_encoded(encoded), *hash);
                let node = Node::decode(encoded).expect("valid node");
                nodes.insert(*hash, Arc::new(node));
            }
        }

        /// Copy every node under `root` from `other`.
        pub(crate) fn copy_tree(&self, other: &MemoryNodes, root: Option<NodeHash>) {
            let mut stack: Vec<NodeHash> = root.into_iter().collect();
            while let Some(hash) = stack.pop() {
                let node = other.load(&hash).expect("node");
                if node.level() > 0 {
                    stack.extend(node.values().map(NodeHash));
                }
                self.nodes.lock().expect("lock").insert(hash, node);
            }
        }

        fn len(&self) -> usize {
            self.nodes.lock().expect("lock").len()
        }
    }

    impl NodeSource for MemoryNodes {
        fn load(&self, hash: &NodeHash) -> Result<Arc<Node>, StoreError> {
            self.nodes
                .lock()
                .expect("lock")
                .get(hash)
                .cloned()
                .ok_or_else(|| StoreError::Corrupt(format!("missing node {hash:?}")))
        }
    }

    fn digest(n: u64) -> ChunkDigest {
        ChunkDigest::of(&n.to_le_bytes())
    }

    fn writes(map: &BTreeMap<u32, u64>) -> Vec<(BlockIndex, ChunkDigest)> {
        map.iter()
            .map(|(i, c)| (BlockIndex::new(*i), digest(*c)))
            .collect()
    }

    fn build(
        nodes: &MemoryNodes,
        parent: Option<NodeHash>,
        w: &[(BlockIndex, ChunkDigest)],
        keep_below: u64,
    ) -> Option<NodeHash> {
        let update = apply(nodes, parent, w, keep_below).expect("apply");
        nodes.store(&update);
        update.root
    }

    fn contents(nodes: &MemoryNodes, root: Option<NodeHash>) -> BTreeMap<u32, ChunkDigest> {
        scan(nodes, root, BlockIndex::new(0), usize::MAX)
            .expect("scan")
            .into_iter()
            .map(|(i, d)| (i.get(), d))
            .collect()
    }

    const MAX_BLOCKS: u64 = 134_217_728;

    #[test]
    fn writes_out_of_order_or_beyond_the_volume_are_refused() {
        let nodes = MemoryNodes::default();
        let mut builder = TreeBuilder::new(None, 100);
        builder
            .push(&nodes, &[(BlockIndex::new(5), digest(1))])
            .expect("first write");
        assert!(
            builder
                .push(&nodes, &[(BlockIndex::new(5), digest(2))])
                .is_err()
        );
        let mut builder = TreeBuilder::new(None, 100);
        assert!(
            builder
                .push(&nodes, &[(BlockIndex::new(100), digest(1))])
                .is_err()
        );
    }

    /// A build of a million writes never holds more than the nodes not taken plus one
    /// subtree's writes.
    #[test]
    fn a_big_build_holds_only_what_was_not_taken() {
        let nodes = MemoryNodes::default();
        let mut builder = TreeBuilder::new(None, MAX_BLOCKS);
        let mut taken = 0;
        for page in 0..250u32 {
            let writes: Vec<_> = (page * 4_000..(page + 1) * 4_000)
                .map(|i| (BlockIndex::new(i), digest(u64::from(i))))
                .collect();
            builder.push(&nodes, &writes).expect("push");
            assert!(
                builder.pending_bytes() < 300_000,
                "one page's subtrees at most"
            );
            let batch = builder.take_batch();
            taken += batch.nodes.len();
            nodes.store(&TreeUpdate {
                root: None,
                new_nodes: batch.nodes,
            });
        }
        let finished = builder.finish(&nodes).expect("finish");
        nodes.store(&finished);
        // 15,625 leaves and 245 level-1 subtrees left behind the finish's 4 + 1 + 1.
        assert_eq!(taken + finished.new_nodes.len(), 15_625 + 245 + 4 + 1 + 1);
        assert_eq!(contents(&nodes, finished.root).len(), 1_000_000);
    }

    #[test]
    fn empty_tree_has_no_root_and_no_entries() {
        let nodes = MemoryNodes::default();
        let root = build(&nodes, None, &[], MAX_BLOCKS);
        assert_eq!(root, None);
        assert!(contents(&nodes, root).is_empty());
        assert_eq!(
            lookup(&nodes, root, BlockIndex::new(7)).expect("lookup"),
            None
        );
    }

    #[test]
    fn extreme_indexes_round_trip() {
        let nodes = MemoryNodes::default();
        let w = vec![
            (BlockIndex::new(0), digest(1)),
            (BlockIndex::new(63), digest(2)),
            (BlockIndex::new(64), digest(3)),
            (BlockIndex::new(134_217_727), digest(4)),
        ];
        let root = build(&nodes, None, &w, MAX_BLOCKS);
        for (index, d) in &w {
            assert_eq!(lookup(&nodes, root, *index).expect("lookup"), Some(*d));
        }
        assert_eq!(
            lookup(&nodes, root, BlockIndex::new(1)).expect("lookup"),
            None
        );
        let scanned = scan(&nodes, root, BlockIndex::new(0), 10).expect("scan");
        assert_eq!(scanned, w);
        let from_64 = scan(&nodes, root, BlockIndex::new(64), 1).expect("scan");
        assert_eq!(from_64, vec![w[2]]);
    }

    #[test]
    fn identical_content_shares_every_node() {
        let nodes = MemoryNodes::default();
        let w: Vec<_> = (0..1000).map(|i| (BlockIndex::new(i), digest(7))).collect();
        let a = build(&nodes, None, &w, MAX_BLOCKS);
        let count = nodes.len();
        let b = build(&nodes, None, &w, MAX_BLOCKS);
        assert_eq!(a, b);
        assert_eq!(nodes.len(), count);
    }

    #[test]
    fn child_rewrites_only_the_paths_it_touches() {
        let nodes = MemoryNodes::default();
        let parent_writes: Vec<_> = (0..100_000u32)
            .map(|i| (BlockIndex::new(i), digest(u64::from(i))))
            .collect();
        let parent = build(&nodes, None, &parent_writes, MAX_BLOCKS);
        let update = apply(
            &nodes,
            parent,
            &[(BlockIndex::new(5), digest(999_999))],
            MAX_BLOCKS,
        )
        .expect("apply");
        assert_eq!(update.new_nodes.len(), usize::from(LEVELS));
    }

    #[test]
    fn truncation_drops_indexes_beyond_the_new_size() {
        let nodes = MemoryNodes::default();
        let w: Vec<_> = [0u32, 2047, 2048, 5000, 100_000]
            .iter()
            .map(|i| (BlockIndex::new(*i), digest(u64::from(*i))))
            .collect();
        let parent = build(&nodes, None, &w, MAX_BLOCKS);
        let child = build(&nodes, parent, &[], 2048);
        let kept: Vec<u32> = contents(&nodes, child).keys().copied().collect();
        assert_eq!(kept, vec![0, 2047]);
        let empty = build(&nodes, parent, &[], 0);
        assert_eq!(empty, None);
    }

    /// The scale test: a 2,000,000-block snapshot, a child with 1,000 changes; the
    /// diff must visit O(changes x depth) nodes, not O(volume).
    #[test]
    fn diff_of_a_large_lineage_visits_only_changed_paths() {
        let nodes = MemoryNodes::default();
        let parent_writes: Vec<_> = (0..2_000_000u32)
            .map(|i| (BlockIndex::new(i), digest(u64::from(i % 977))))
            .collect();
        let parent = build(&nodes, None, &parent_writes, MAX_BLOCKS);
        let changes: Vec<_> = (0..1000u32)
            .map(|k| {
                (
                    BlockIndex::new(k * 1999 + 3),
                    digest(5_000_000 + u64::from(k)),
                )
            })
            .collect();
        let child = build(&nodes, parent, &changes, MAX_BLOCKS);

        let mut stats = DiffStats::default();
        let found = diff(
            &nodes,
            parent,
            child,
            BlockIndex::new(0),
            usize::MAX,
            &mut stats,
        )
        .expect("diff");
        assert_eq!(found.len(), 1000);
        assert!(
            found
                .iter()
                .zip(&changes)
                .all(|(d, c)| d.index == c.0 && d.second == Some(c.1) && d.first.is_some())
        );
        let bound = 2 * 1000 * u64::from(LEVELS) + 2;
        assert!(
            stats.nodes_visited <= bound,
            "visited {} nodes, bound {bound}",
            stats.nodes_visited
        );

        // The same changes near the top of a 64 TiB key space cost the same.
        let high: Vec<_> = changes
            .iter()
            .map(|(i, d)| (BlockIndex::new(i.get() + 132_000_000), *d))
            .collect();
        let sparse_parent = build(&nodes, None, &[(BlockIndex::new(0), digest(1))], MAX_BLOCKS);
        let sparse_child = build(&nodes, sparse_parent, &high, MAX_BLOCKS);
        let mut high_stats = DiffStats::default();
        let found = diff(
            &nodes,
            sparse_parent,
            sparse_child,
            BlockIndex::new(0),
            usize::MAX,
            &mut high_stats,
        )
        .expect("diff");
        assert_eq!(found.len(), 1000);
        assert!(high_stats.nodes_visited <= bound);
    }

    #[test]
    fn corrupt_nodes_are_rejected() {
        assert!(Node::decode(&[]).is_err());
        assert!(Node::decode(&[9, 1, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut one = vec![0u8, 1, 0, 0, 0, 0, 0, 0, 0];
        assert!(Node::decode(&one).is_err());
        one.extend_from_slice(&[0u8; 32]);
        assert!(Node::decode(&one).is_ok());
    }

    fn arb_map(max_index: u32) -> impl Strategy<Value = BTreeMap<u32, u64>> {
        proptest::collection::btree_map(0..max_index, 0u64..8, 0..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A child's map equals its parent's with the writes applied (and truncated).
        #[test]
        fn child_equals_parent_plus_writes(
            parent_map in arb_map(20_000),
            child_writes in arb_map(20_000),
            keep_below in prop_oneof![Just(MAX_BLOCKS), 1u64..20_000],
        ) {
            let nodes = MemoryNodes::default();
            let parent = build(&nodes, None, &writes(&parent_map), MAX_BLOCKS);
            let kept_writes: BTreeMap<u32, u64> = child_writes
                .into_iter()
                .filter(|(i, _)| u64::from(*i) < keep_below)
                .collect();
            let child = build(&nodes, parent, &writes(&kept_writes), keep_below);

            let mut expected: BTreeMap<u32, ChunkDigest> = parent_map
                .iter()
                .filter(|(i, _)| u64::from(**i) < keep_below)
                .map(|(i, c)| (*i, digest(*c)))
                .collect();
            expected.extend(kept_writes.iter().map(|(i, c)| (*i, digest(*c))));
            prop_assert_eq!(contents(&nodes, child), expected);
        }

        /// Fed in pages of any size, with batches taken and stored between them (as
        /// CompleteSnapshot does), a [`TreeBuilder`] builds the tree of its parent plus
        /// the writes: every node the result references is in a batch, in the finish or
        /// in the parent's tree, and each batch holds the subtrees under its roots.
        #[test]
        fn a_build_in_pages_equals_the_parent_plus_the_writes(
            parent_map in arb_map(40_000),
            child_writes in arb_map(40_000),
            keep_below in prop_oneof![Just(MAX_BLOCKS), 1u64..40_000],
            page in 1usize..3_000,
            batch_bytes in 0usize..400_000,
        ) {
            let nodes = MemoryNodes::default();
            let parent = build(&nodes, None, &writes(&parent_map), MAX_BLOCKS);
            let kept: BTreeMap<u32, u64> = child_writes
                .into_iter()
                .filter(|(i, _)| u64::from(*i) < keep_below)
                .collect();
            let all = writes(&kept);
            // A store of its own, holding only the parent's tree and what the build hands out.
            let child_nodes = MemoryNodes::default();
            child_nodes.copy_tree(&nodes, parent);
            let mut builder = TreeBuilder::new(parent, keep_below);
            for chunk in all.chunks(page) {
                builder.push(&child_nodes, chunk).expect("push");
                if builder.pending_bytes() > batch_bytes {
                    let batch = builder.take_batch();
                    let update = TreeUpdate { root: None, new_nodes: batch.nodes };
                    child_nodes.store(&update);
                    for root in &batch.roots {
                        prop_assert_eq!(child_nodes.load(root).expect("staged root").level(), 1);
                    }
                }
            }
            let finished = builder.finish(&child_nodes).expect("finish");
            child_nodes.store(&finished);
            let mut expected: BTreeMap<u32, ChunkDigest> = parent_map
                .iter()
                .filter(|(i, _)| u64::from(**i) < keep_below)
                .map(|(i, c)| (*i, digest(*c)))
                .collect();
            expected.extend(kept.iter().map(|(i, c)| (*i, digest(*c))));
            prop_assert_eq!(contents(&child_nodes, finished.root), expected);
        }

        /// The tree diff equals a naive comparison of the two maps, from any start index
        /// and with any page size.
        #[test]
        fn diff_equals_naive_model(
            base_map in arb_map(10_000),
            first_writes in arb_map(10_000),
            second_writes in arb_map(10_000),
            start in 0u32..10_000,
            limit in 1usize..300,
        ) {
            let nodes = MemoryNodes::default();
            let base = build(&nodes, None, &writes(&base_map), MAX_BLOCKS);
            let first = build(&nodes, base, &writes(&first_writes), MAX_BLOCKS);
            let second = build(&nodes, base, &writes(&second_writes), MAX_BLOCKS);
            let a = contents(&nodes, first);
            let b = contents(&nodes, second);
            let expected: Vec<Difference> = a
                .keys()
                .chain(b.keys())
                .copied()
                .collect::<std::collections::BTreeSet<u32>>()
                .into_iter()
                .filter(|i| *i >= start && a.get(i) != b.get(i))
                .map(|i| Difference {
                    index: BlockIndex::new(i),
                    first: a.get(&i).copied(),
                    second: b.get(&i).copied(),
                })
                .take(limit)
                .collect();
            let mut stats = DiffStats::default();
            let found = diff(&nodes, first, second, BlockIndex::new(start), limit, &mut stats)
                .expect("diff");
            prop_assert_eq!(found, expected);
        }
    }
}
