//! Block checksums and the `LINEAR` aggregate checksum of CompleteSnapshot.
//!
//! A block's checksum is its SHA-256 ([`ChunkDigest`]); on the wire it travels base64
//! encoded. Bodies are hashed while they stream in: [`crate::body`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use strata_types::{BlockIndex, ChunkDigest};

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
    let mut aggregate = LinearAggregate::default();
    for (_, digest) in blocks {
        aggregate.add(digest);
    }
    aggregate.finish()
}

/// [`linear_aggregate`] computed as the digests stream past, in ascending index order
/// (CompleteSnapshot reads the pending writes in pages).
#[derive(Debug, Clone, Default)]
pub struct LinearAggregate {
    hasher: Sha256,
}

impl LinearAggregate {
    /// Add the final content of the next written index.
    pub fn add(&mut self, digest: &ChunkDigest) {
        self.hasher.update(digest.0);
    }

    /// The aggregate of everything added.
    pub fn finish(self) -> ChunkDigest {
        ChunkDigest(self.hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    proptest::proptest! {
        /// Any `x-amz-Checksum` text is refused or is the one encoding of its digest (the
        /// standard engine refuses missing padding and non-zero trailing bits).
        #[test]
        fn checksums_that_decode_are_canonical(
            text in proptest::prop_oneof![
                "[A-Za-z0-9+/]{42,44}={0,2}",
                "[A-Za-z0-9+/=]{0,48}",
                proptest::prelude::any::<String>(),
            ],
        ) {
            if let Some(digest) = from_base64(&text) {
                proptest::prop_assert_eq!(to_base64(&digest), text);
            }
        }

        #[test]
        fn every_digest_round_trips(bytes in proptest::prelude::any::<[u8; 32]>()) {
            let digest = ChunkDigest(bytes);
            proptest::prop_assert_eq!(from_base64(&to_base64(&digest)), Some(digest));
        }
    }
}
