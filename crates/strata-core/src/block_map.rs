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
    debug_assert!(writes.windows(2).all(|w| w[0].0 < w[1].0));
    debug_assert!(writes.iter().all(|(i, _)| u64::from(i.get()) < keep_below));
    let mut update = TreeUpdate::default();
    update.root = rebuild(
        source,
        root,
        ROOT_LEVEL,
        0,
        writes,
        keep_below,
        &mut update.new_nodes,
    )?;
    Ok(update)
}

/// Number of block indexes under one node of `level`.
const fn span(level: u8) -> u64 {
    1 << (FANOUT_BITS * (level as u32 + 1))
}

/// Number of block indexes under one slot of a node of `level`.
const fn slot_span(level: u8) -> u64 {
    1 << (FANOUT_BITS * level as u32)
}

fn rebuild(
    source: &impl NodeSource,
    existing: Option<NodeHash>,
    level: u8,
    base: u64,
    writes: &[(BlockIndex, ChunkDigest)],
    keep_below: u64,
    new_nodes: &mut Vec<(NodeHash, Vec<u8>)>,
) -> Result<Option<NodeHash>, StoreError> {
    if base >= keep_below {
        return Ok(None);
    }
    let truncated = base + span(level) > keep_below;
    if writes.is_empty() && (!truncated || existing.is_none()) {
        return Ok(existing);
    }
    let old = existing.map(|hash| source.load(&hash)).transpose()?;
    let mut bitmap = 0u64;
    let mut slots = Vec::with_capacity(FANOUT);
    let mut remaining = writes;
    for slot in 0..FANOUT {
        let child_base = base + slot as u64 * slot_span(level);
        let child_end = child_base + slot_span(level);
        let split = remaining.partition_point(|(i, _)| u64::from(i.get()) < child_end);
        let (child_writes, rest) = remaining.split_at(split);
        remaining = rest;
        let old_value = old.as_ref().and_then(|node| node.get(slot));
        let value = if child_base >= keep_below {
            None
        } else if level == 0 {
            child_writes.last().map(|(_, d)| d.0).or(old_value)
        } else if child_writes.is_empty() && child_end <= keep_below {
            old_value
        } else {
            rebuild(
                source,
                old_value.map(NodeHash),
                level - 1,
                child_base,
                child_writes,
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
