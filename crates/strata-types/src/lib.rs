//! Strata's domain vocabulary.
//!
//! Every value that crosses a crate boundary inside Strata is one of these newtypes, parsed
//! once at the edge (HTTP, config, storage) and trusted afterwards. Nothing here does I/O or
//! knows about the wire format: the types only parse, validate and display themselves.

use std::fmt;
use std::sync::OnceLock;

use rand::Rng;
use sha2::{Digest, Sha256};

/// Size of one snapshot block: 512 KiB, the only `DataLength` the EBS direct APIs accept.
/// <https://docs.aws.amazon.com/ebs/latest/APIReference/API_PutSnapshotBlock.html>
pub const BLOCK_SIZE: usize = 524_288;

/// Blocks per GiB of volume (1 GiB / 512 KiB).
pub const BLOCKS_PER_GIB: u64 = 2048;

/// Largest volume the EBS direct APIs accept: 64 TiB.
/// <https://docs.aws.amazon.com/ebs/latest/APIReference/API_StartSnapshot.html>
pub const MAX_VOLUME_SIZE_GIB: u64 = 65_536;

/// A value failed validation; the message says which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A snapshot id: `snap-` followed by lowercase hex, at most 64 characters in all.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct SnapshotId(String);

impl SnapshotId {
    /// Maximum length of a snapshot id (the model's `SnapshotId` shape).
    pub const MAX_LEN: usize = 64;

    /// Parse and validate an id received from a client or read back from storage.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        let hex_part = text.strip_prefix("snap-").unwrap_or("");
        let valid = text.len() <= Self::MAX_LEN
            && !hex_part.is_empty()
            && hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidValue(format!(
                "The snapshot ID '{text}' is not valid: expected 'snap-' followed by lowercase hexadecimal digits."
            )))
        }
    }

    /// A fresh random id in the form AWS issues today: `snap-` + 17 hex digits.
    pub fn generate() -> Self {
        let value: u128 = rand::rng().random();
        let hex = format!("{value:032x}");
        Self(format!("snap-{}", &hex[..17]))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The position of a 512 KiB block in a volume (byte offset / 512 KiB).
///
/// The largest volume has 134,217,728 blocks, so every valid index fits in a `u32`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct BlockIndex(u32);

impl BlockIndex {
    /// Wrap a raw index.
    pub const fn new(index: u32) -> Self {
        Self(index)
    }

    /// Parse a decimal index from a URL path or query; rejects signs, blanks and overflow.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidValue(format!(
                "The block index '{text}' is not a non-negative integer."
            )));
        }
        text.parse::<u32>()
            .map(Self)
            .map_err(|_| InvalidValue(format!("The block index '{text}' is out of range.")))
    }

    /// The raw index.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for BlockIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A volume size in GiB, 1 ..= 65536.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "i64", into = "u64")]
pub struct VolumeSize(u64);

impl VolumeSize {
    /// Validate a size in GiB.
    pub fn from_gib(gib: i64) -> Result<Self, InvalidValue> {
        match u64::try_from(gib) {
            Ok(g) if (1..=MAX_VOLUME_SIZE_GIB).contains(&g) => Ok(Self(g)),
            _ => Err(InvalidValue(format!(
                "The volume size {gib} GiB is not valid: it must be between 1 and {MAX_VOLUME_SIZE_GIB} GiB."
            ))),
        }
    }

    /// The size in GiB.
    pub const fn gib(self) -> u64 {
        self.0
    }

    /// How many blocks a volume of this size has; valid indexes are `0..block_count()`.
    pub const fn block_count(self) -> u64 {
        self.0 * BLOCKS_PER_GIB
    }

    /// Whether `index` lies inside a volume of this size.
    pub const fn contains(self, index: BlockIndex) -> bool {
        (index.0 as u64) < self.block_count()
    }
}

/// The SHA-256 of a block's content: the name under which its bytes are stored once.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct ChunkDigest(pub [u8; 32]);

impl ChunkDigest {
    /// Digest `data` with SHA-256 (the CPU's SHA extensions are used when present).
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The digest of a block of 524,288 zero bytes. Such blocks are recorded but never stored.
    pub fn zero_block() -> Self {
        static ZERO: OnceLock<ChunkDigest> = OnceLock::new();
        *ZERO.get_or_init(|| ChunkDigest::of(&vec![0u8; BLOCK_SIZE]))
    }

    /// Whether this is the digest of an all-zero block.
    pub fn is_zero_block(&self) -> bool {
        *self == Self::zero_block()
    }

    /// Lowercase hex, as used for file names.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse lowercase or uppercase hex.
    pub fn from_hex(text: &str) -> Result<Self, InvalidValue> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| InvalidValue(format!("'{text}' is not a hex SHA-256 digest")))?;
        Ok(Self(bytes))
    }
}

impl fmt::Debug for ChunkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkDigest({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// An AWS-style account id: twelve decimal digits.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// Validate a 12-digit account id.
    pub fn parse(text: &str) -> Result<Self, InvalidValue> {
        if text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidValue(format!(
                "The account id '{text}' is not valid: expected 12 decimal digits."
            )))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! text_conversions {
    ($ty:ident, $parse:path, $render:expr) => {
        impl TryFrom<String> for $ty {
            type Error = InvalidValue;
            fn try_from(text: String) -> Result<Self, InvalidValue> {
                $parse(&text)
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                $render(value)
            }
        }
    };
}

text_conversions!(SnapshotId, SnapshotId::parse, |v: SnapshotId| v.0);
text_conversions!(AccountId, AccountId::parse, |v: AccountId| v.0);
text_conversions!(ChunkDigest, ChunkDigest::from_hex, |v: ChunkDigest| v
    .to_hex());

impl TryFrom<i64> for VolumeSize {
    type Error = InvalidValue;
    fn try_from(gib: i64) -> Result<Self, InvalidValue> {
        Self::from_gib(gib)
    }
}

impl From<VolumeSize> for u64 {
    fn from(value: VolumeSize) -> u64 {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_follow_the_model_pattern() {
        assert!(SnapshotId::parse("snap-0123456789abcdef0").is_ok());
        for bad in [
            "",
            "snap-",
            "snap-ABC",
            "vol-123",
            "snap-12g",
            "snap-0123-4",
        ] {
            assert!(SnapshotId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("snap-{}", "a".repeat(60));
        assert!(SnapshotId::parse(&long).is_err());
        let generated = SnapshotId::generate();
        assert_eq!(generated.as_str().len(), 22);
        assert_eq!(SnapshotId::parse(generated.as_str()), Ok(generated));
    }

    #[test]
    fn block_indexes_are_plain_decimals() {
        assert_eq!(BlockIndex::parse("0").map(BlockIndex::get), Ok(0));
        assert_eq!(
            BlockIndex::parse("134217727").map(BlockIndex::get),
            Ok(134_217_727)
        );
        for bad in ["", "-1", "+1", "1.5", "abc", "99999999999"] {
            assert!(BlockIndex::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn volume_sizes_are_bounded() {
        assert!(VolumeSize::from_gib(0).is_err());
        assert!(VolumeSize::from_gib(-5).is_err());
        assert!(VolumeSize::from_gib(65_537).is_err());
        let max = VolumeSize::from_gib(65_536).expect("max size");
        assert_eq!(max.block_count(), 134_217_728);
        assert!(max.contains(BlockIndex::new(134_217_727)));
        let one = VolumeSize::from_gib(1).expect("1 GiB");
        assert!(one.contains(BlockIndex::new(2047)));
        assert!(!one.contains(BlockIndex::new(2048)));
    }

    #[test]
    fn zero_block_digest_matches_the_published_constant() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(ChunkDigest::zero_block().0);
        assert_eq!(b64, "B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=");
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let digest = ChunkDigest::of(b"strata");
        assert_eq!(ChunkDigest::from_hex(&digest.to_hex()), Ok(digest));
        assert!(ChunkDigest::from_hex("zz").is_err());
    }

    proptest::proptest! {
        /// Whatever a client sends as an id, index, digest or account, parsing refuses it or
        /// keeps exactly its text (no silent rewriting), and never panics.
        #[test]
        fn parsers_refuse_or_keep_the_text(
            text in proptest::prop_oneof![
                "snap-[0-9a-fA-F]{0,64}",
                "[0-9]{0,12}",
                "[0-9a-fA-F]{64}",
                proptest::prelude::any::<String>(),
            ],
        ) {
            if let Ok(id) = SnapshotId::parse(&text) {
                proptest::prop_assert_eq!(id.as_str(), text.as_str());
                proptest::prop_assert!(text.len() <= SnapshotId::MAX_LEN);
                let json = serde_json::to_string(&id).expect("serializes");
                proptest::prop_assert_eq!(serde_json::from_str::<SnapshotId>(&json).ok(), Some(id));
            }
            if let Ok(index) = BlockIndex::parse(&text) {
                proptest::prop_assert_eq!(text.parse::<u64>().ok(), Some(u64::from(index.get())));
                proptest::prop_assert_eq!(BlockIndex::parse(&index.to_string()), Ok(index));
            }
            if let Ok(digest) = ChunkDigest::from_hex(&text) {
                proptest::prop_assert_eq!(digest.to_hex(), text.to_ascii_lowercase());
            }
            if let Ok(account) = AccountId::parse(&text) {
                proptest::prop_assert_eq!(account.as_str(), text.as_str());
            }
        }

        #[test]
        fn volume_sizes_accept_exactly_the_model_range(gib in proptest::prelude::any::<i64>()) {
            let in_range = (1..=65_536).contains(&gib);
            proptest::prop_assert_eq!(VolumeSize::from_gib(gib).is_ok(), in_range);
            if let Ok(size) = VolumeSize::from_gib(gib) {
                proptest::prop_assert_eq!(i64::try_from(size.gib()).ok(), Some(gib));
            }
        }
    }
}
