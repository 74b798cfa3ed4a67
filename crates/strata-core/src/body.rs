//! Block bodies as they arrive: hashed frame by frame ([`BlockHasher`]) and kept only as
//! far as the put needs them (the frames, one aligned copy, or nothing), so a block is
//! checked without a second pass over its bytes and stored content costs no copy.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use strata_types::{BLOCK_SIZE, ChunkDigest};

use crate::buffers::{BUFFER_ALIGN, BlockBuffer};

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
}
