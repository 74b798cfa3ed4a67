//! Block payloads and their checksums, computed before the clock starts so the load client
//! spends its CPU on the wire, not on generating or hashing what it sends.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use strata_types::BLOCK_SIZE;

/// One 512 KiB block ready to send.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The bytes (cloning is a reference-count increment).
    pub data: Bytes,
    /// Its SHA-256.
    pub digest: [u8; 32],
    /// `x-amz-Checksum`: base64 of the digest, ready to put in a header.
    pub checksum: HeaderValue,
}

impl Payload {
    /// The block whose bytes are determined by `seed` (pseudo-random, incompressible).
    pub fn generate(seed: u64) -> Self {
        Self::from_data(Bytes::from(random_block(seed)))
    }

    /// Hash `data` and prepare its header.
    pub fn from_data(data: Bytes) -> Self {
        let digest: [u8; 32] = Sha256::digest(&data).into();
        let checksum = HeaderValue::from_str(&STANDARD.encode(digest))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Self {
            data,
            digest,
            checksum,
        }
    }
}

/// A xorshift stream: fast, deterministic, and good enough that no two seeds share a block
/// and compression or dedup below the content hash cannot help the server.
fn random_block(seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut data = Vec::with_capacity(BLOCK_SIZE);
    while data.len() < BLOCK_SIZE {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data
}

/// A family of distinct blocks: the first `resident` are computed once and kept; later ones
/// (only needed for uploads larger than memory should hold, e.g. an RSS run of 8 GiB) are
/// generated on demand, which costs the client one hash per block.
#[derive(Debug, Clone)]
pub struct PayloadSet {
    family: u64,
    resident: std::sync::Arc<Vec<Payload>>,
}

impl PayloadSet {
    /// Compute `resident` blocks of family `family` (families never share content).
    pub fn new(family: u64, resident: usize) -> Self {
        let blocks = (0..resident as u64)
            .map(|i| Payload::generate(Self::seed(family, i)))
            .collect();
        Self {
            family,
            resident: std::sync::Arc::new(blocks),
        }
    }

    /// A set made of given blocks (an index past the end makes a block of its own).
    pub fn from_payloads(payloads: Vec<Payload>) -> Self {
        Self {
            family: u64::MAX >> 24,
            resident: std::sync::Arc::new(payloads),
        }
    }

    fn seed(family: u64, index: u64) -> u64 {
        (family << 40) ^ (index + 1)
    }

    /// How many blocks are precomputed.
    pub fn resident(&self) -> usize {
        self.resident.len()
    }

    /// Block `index` of the family.
    pub fn get(&self, index: usize) -> Payload {
        match self.resident.get(index) {
            Some(payload) => payload.clone(),
            None => Payload::generate(Self::seed(self.family, index as u64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_distinct_full_size_and_stable() {
        let set = PayloadSet::new(1, 3);
        let a = set.get(0);
        let b = set.get(1);
        assert_eq!(a.data.len(), BLOCK_SIZE);
        assert_ne!(a.digest, b.digest);
        // On-demand blocks equal what a resident set would hold.
        assert_eq!(set.get(5).digest, PayloadSet::new(1, 6).get(5).digest);
        assert_ne!(PayloadSet::new(2, 1).get(0).digest, a.digest);
        assert_eq!(
            a.checksum.to_str().expect("ascii"),
            STANDARD.encode(Sha256::digest(&a.data))
        );
    }
}
