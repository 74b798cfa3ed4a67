//! Block checksums and the `LINEAR` aggregate checksum of CompleteSnapshot.
//!
//! A block's checksum is its SHA-256 ([`ChunkDigest`]); on the wire it travels base64
//! encoded. The body is hashed while it streams in ([`BlockHasher`]), so a block is
//! checked without a second pass over its bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};

use crate::buffers::BlockBuffer;
use sha2::{Digest, Sha256};
use strata_types::{BLOCK_SIZE, BlockIndex, ChunkDigest};

/// Base64 text of a digest, as in `x-amz-Checksum`.
pub fn to_base64(digest: &ChunkDigest) -> String {
    STANDARD.encode(digest.0)
}

/// Parse a base64 SHA-256 checksum; `None` if it is not base64 of exactly 32 bytes.
pub fn from_base64(text: &str) -> Option<ChunkDigest> {
    let bytes = STANDARD.decode(text).ok()?;
    let array: [u8; 32] = bytes.try_into().ok()?;
    Some(ChunkDigest(array))
}

/// The `LINEAR` aggregate: SHA-256 over the raw 32-byte digests of the final content of
/// each written index, in ascending index order (what coldsnap sends; see behavior.md §7.3).
pub fn linear_aggregate(blocks: &[(BlockIndex, ChunkDigest)]) -> ChunkDigest {
    debug_assert!(blocks.windows(2).all(|w| w[0].0 < w[1].0));
    let mut hasher = Sha256::new();
    for (_, digest) in blocks {
        hasher.update(digest.0);
    }
    ChunkDigest(hasher.finalize().into())
}

/// Accumulates a block body frame by frame, hashing as it goes, and keeps what the caller
/// will need of it ([`BlockHasher::keeping_frames`], [`BlockHasher::copying`],
/// [`BlockHasher::discarding`]).
#[derive(Debug)]
pub struct BlockHasher {
    hasher: Sha256,
    body: Body,
    len: usize,
}

/// What a [`BlockHasher`] keeps of the body.
#[derive(Debug)]
enum Body {
    /// The frames as received (no copy).
    Frames(Vec<Bytes>),
    /// One aligned copy, made frame by frame while each frame is still in the CPU's cache.
    Copied(BlockBuffer),
    /// Nothing: only the digest and the length are wanted.
    Discarded,
}

/// Alignment of block buffers: the chunk store can then write them with `O_DIRECT`,
/// without a copy into the page cache.
pub const BUFFER_ALIGN: usize = 4096;

/// An empty buffer with room for `capacity` bytes whose first byte sits on a
/// [`BUFFER_ALIGN`] boundary (for `O_DIRECT` reads and writes).
pub fn aligned_buffer(capacity: usize) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(capacity + BUFFER_ALIGN);
    let pad = buffer.as_ptr().align_offset(BUFFER_ALIGN);
    buffer.resize(pad, 0);
    bytes::Buf::advance(&mut buffer, pad);
    buffer
}

impl Default for BlockHasher {
    fn default() -> Self {
        Self::keeping_frames()
    }
}

impl BlockHasher {
    /// Keep the frames as they arrive: no copy now, one later if [`HashedBlock::into_bytes`]
    /// needs one.
    pub fn keeping_frames() -> Self {
        Self::keeping(Body::Frames(Vec::new()))
    }

    /// Copy each frame into one aligned block buffer as it arrives: for content about to be
    /// written, which then needs no further copy. Copying a frame right after hashing it
    /// reads it from the cache instead of from memory.
    pub fn copying() -> Self {
        Self::keeping(Body::Copied(BlockBuffer::take()))
    }

    /// Keep nothing but the digest and the length: for content already stored. Each frame
    /// is dropped once hashed.
    pub fn discarding() -> Self {
        Self::keeping(Body::Discarded)
    }

    fn keeping(body: Body) -> Self {
        Self {
            hasher: Sha256::new(),
            body,
            len: 0,
        }
    }

    /// Add the next frame. Returns false, keeping nothing more, once the body would exceed
    /// one block (so a hostile body cannot grow memory).
    pub fn update_frame(&mut self, frame: Bytes) -> bool {
        if let Body::Frames(frames) = &mut self.body {
            if self.len + frame.len() > BLOCK_SIZE {
                return false;
            }
            self.hasher.update(&frame);
            self.len += frame.len();
            frames.push(frame);
            return true;
        }
        self.update(&frame)
    }

    /// Add the next bytes. See [`BlockHasher::update_frame`].
    pub fn update(&mut self, data: &[u8]) -> bool {
        if self.len + data.len() > BLOCK_SIZE {
            return false;
        }
        self.hasher.update(data);
        self.len += data.len();
        match &mut self.body {
            Body::Frames(frames) => frames.push(Bytes::copy_from_slice(data)),
            // Cannot overflow: the length was checked against one block above.
            Body::Copied(buffer) => return buffer.extend_from_slice(data),
            Body::Discarded => {}
        }
        true
    }

    /// Bytes received so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The received body (what was kept of it) and its digest.
    pub fn finish(self) -> HashedBlock {
        HashedBlock {
            digest: ChunkDigest(self.hasher.finalize().into()),
            body: self.body,
            len: self.len,
        }
    }
}

/// A body together with the SHA-256 computed over exactly these bytes.
#[derive(Debug)]
pub struct HashedBlock {
    /// Their SHA-256.
    pub digest: ChunkDigest,
    body: Body,
    len: usize,
}

impl HashedBlock {
    /// `data` with its SHA-256 `digest`, which the caller has computed (not checked here).
    pub fn with_digest(data: Bytes, digest: ChunkDigest) -> Self {
        Self {
            digest,
            len: data.len(),
            body: Body::Frames(vec![data]),
        }
    }

    /// The body's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The body in one piece, in a [`BUFFER_ALIGN`]-aligned buffer when it fits one block
    /// (so it can be written with `O_DIRECT`): at most one copy, none if it was copied as
    /// it arrived. `None` if it was discarded ([`BlockHasher::discarding`]).
    pub fn into_bytes(self) -> Option<Bytes> {
        let frames = match self.body {
            Body::Copied(buffer) => return Some(buffer.freeze()),
            Body::Discarded => return None,
            Body::Frames(frames) => frames,
        };
        if let [only] = &frames[..]
            && (only.as_ptr().align_offset(BUFFER_ALIGN) == 0 || only.len() > BLOCK_SIZE)
        {
            return Some(only.clone());
        }
        let mut buffer = BlockBuffer::take();
        for frame in &frames {
            if !buffer.extend_from_slice(frame) {
                // Longer than a block (only `with_digest` can make one): unaligned is fine.
                return Some(frames.concat().into());
            }
        }
        Some(buffer.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strata_types::BLOCK_SIZE;

    #[test]
    fn linear_aggregate_matches_the_worked_example() {
        // behavior.md §7.3: index 0 = 0x01 bytes, index 1 = 0x02 bytes.
        let blocks = vec![
            (BlockIndex::new(0), ChunkDigest::of(&vec![1u8; BLOCK_SIZE])),
            (BlockIndex::new(1), ChunkDigest::of(&vec![2u8; BLOCK_SIZE])),
        ];
        assert_eq!(
            to_base64(&linear_aggregate(&blocks)),
            "fccGN1xyY7l5uqsw58BLULbsU8thbz9pDvzr9oCk5yk="
        );
    }

    #[test]
    fn base64_checksums_must_be_32_bytes() {
        let digest = ChunkDigest::of(b"abc");
        assert_eq!(from_base64(&to_base64(&digest)), Some(digest));
        assert_eq!(from_base64("AAAA"), None);
        assert_eq!(from_base64("not base64!"), None);
    }

    #[test]
    fn block_buffers_are_aligned_for_direct_io() {
        let mut hasher = BlockHasher::default();
        for _ in 0..8 {
            assert!(hasher.update(&[5u8; BLOCK_SIZE / 8]));
        }
        let block = hasher.finish();
        assert_eq!(block.len(), BLOCK_SIZE);
        let data = block.into_bytes().expect("kept");
        assert_eq!(data.as_ptr().align_offset(BUFFER_ALIGN), 0);
        assert_eq!(data.len(), BLOCK_SIZE);
        assert!(data.iter().all(|b| *b == 5));
    }

    #[test]
    fn every_way_of_keeping_the_body_hashes_the_same() {
        let content: Vec<u8> = (0..BLOCK_SIZE).map(|n| (n % 251) as u8).collect();
        let expected = ChunkDigest::of(&content);
        let hash = |mut hasher: BlockHasher| {
            // Uneven frames, as a connection delivers them.
            for piece in content.chunks(65_521) {
                assert!(hasher.update_frame(Bytes::copy_from_slice(piece)));
            }
            assert!(!hasher.update(&[0]), "a block and one byte is too long");
            hasher.finish()
        };
        let kept = hash(BlockHasher::keeping_frames());
        let copied = hash(BlockHasher::copying());
        let discarded = hash(BlockHasher::discarding());
        for block in [&kept, &copied, &discarded] {
            assert_eq!((block.digest, block.len()), (expected, BLOCK_SIZE));
        }
        let copied = copied.into_bytes().expect("copied");
        assert_eq!(copied.as_ptr().align_offset(BUFFER_ALIGN), 0);
        assert_eq!(copied, content);
        assert_eq!(kept.into_bytes().expect("kept"), content);
        assert!(discarded.into_bytes().is_none());
    }

    #[test]
    fn hasher_refuses_more_than_one_block() {
        let mut hasher = BlockHasher::default();
        assert!(hasher.update(&vec![0u8; BLOCK_SIZE]));
        assert!(!hasher.update(&[0u8]));
        let block = hasher.finish();
        assert!(block.digest.is_zero_block());
        assert_eq!(block.into_bytes().expect("kept").len(), BLOCK_SIZE);
    }

    proptest! {
        /// The aggregate depends only on the final content per index, not on upload order.
        #[test]
        fn linear_aggregate_ignores_upload_order(
            mut uploads in proptest::collection::vec((0u32..50, 0u8..4), 1..40),
            seed in any::<u64>(),
        ) {
            let final_map = |list: &[(u32, u8)]| {
                let mut map = std::collections::BTreeMap::new();
                for (i, c) in list { map.insert(*i, *c); }
                map.into_iter()
                    .map(|(i, c)| (BlockIndex::new(i), ChunkDigest::of(&[c])))
                    .collect::<Vec<_>>()
            };
            let expected = linear_aggregate(&final_map(&uploads));
            // Shuffle while keeping, for each index, the relative order of its writes.
            let mut keyed: Vec<(u64, usize)> = uploads.iter().enumerate()
                .map(|(n, (i, _))| ((u64::from(*i) ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15), n))
                .collect();
            keyed.sort();
            uploads = keyed.into_iter().map(|(_, n)| uploads[n]).collect();
            prop_assert_eq!(linear_aggregate(&final_map(&uploads)), expected);
        }
    }
}
