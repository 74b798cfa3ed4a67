//! Encryption at rest: the local key service's keys, and the block cipher (ADR 0005).
//!
//! ```text
//! master key (32 bytes, from a file or the environment; never stored by Strata)
//!   └─ wraps ─► key material of each KMS-like key (32 random bytes; stored only wrapped,
//!               in the metadata store: [`KeyRecord`])
//!                 └─ HKDF-SHA256 ─► cipher key (AES-256-GCM), nonce key, checksum-mask key
//! ```
//!
//! A block of an encrypted snapshot is stored as an envelope
//! `"SEB2" ‖ nonce (12) ‖ AES-256-GCM(plaintext) ‖ tag (16)`, named like every chunk by the
//! SHA-256 of what is stored, so the chunk stores, GC and scrub work unchanged and never
//! need a key. The nonce is an HMAC of the block index and the plaintext under the key's
//! nonce key (a synthetic IV): the same plaintext at the same index under the same key
//! gives the same envelope, so a block is stored once per key and position (a child's
//! rewrite of an unchanged block, the same image uploaded twice: "dedup only within one
//! key"); under two keys it gives two unrelated envelopes. A nonce repeats only for an
//! identical index and plaintext, which then repeats the whole envelope and reveals nothing
//! but that equality.
//!
//! The associated data binds the envelope to its format, its key and its block index, so
//! an envelope moved to another position of the block map (by someone who can rewrite the
//! metadata store) does not open there. It does not bind the snapshot: a child reads its
//! parent's envelopes for every block it did not write, and children always share their
//! parent's key. Envelopes of the first format, `"SEB1"` (bound to format and key only),
//! still open, at any index.

use hmac::{Hmac, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use strata_types::{AccountId, BlockIndex, ChunkDigest};

/// The envelope's format tag: key id and block index in the associated data.
const BLOCK_MAGIC: &[u8; 4] = b"SEB2";
/// The first format's tag (associated data: the key id only); still opened.
const BLOCK_MAGIC_V1: &[u8; 4] = b"SEB1";
/// The wrapped key material's format tag.
const WRAP_MAGIC: &[u8; 4] = b"SKW1";
const TAG_LEN: usize = 16;

/// Bytes an envelope adds to its plaintext.
pub const ENVELOPE_OVERHEAD: usize = BLOCK_MAGIC.len() + NONCE_LEN + TAG_LEN;

/// Why a key or an envelope could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The master key is malformed.
    #[error("the master key must be 32 bytes, given as 64 hex digits or in base64 ({0})")]
    BadMasterKey(String),
    /// Wrapped key material did not unwrap: a different master key, or damage.
    #[error("the key material of key {0} does not unwrap with this master key")]
    Unwrap(String),
    /// An envelope did not open: not encrypted under this key, or damaged.
    #[error("the block does not decrypt under key {0}")]
    Open(String),
}

/// The key that wraps every key's material. Only ever in memory.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A new random master key.
    pub fn generate() -> Self {
        Self::from_bytes(rand::random())
    }

    /// Parse the text form: 64 hex digits or standard base64 of 32 bytes (surrounding
    /// white space ignored).
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        use base64::Engine as _;
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|e| CryptoError::BadMasterKey(e.to_string()))?
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| CryptoError::BadMasterKey(format!("not hex or base64: {e}")))?
        };
        let bytes = <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| CryptoError::BadMasterKey(format!("{} bytes given", bytes.len())))?;
        Ok(Self::from_bytes(bytes))
    }

    /// The text form [`MasterKey::parse`] reads (hex).
    pub fn to_text(&self) -> String {
        hex::encode(self.0)
    }

    fn cipher(&self) -> LessSafeKey {
        aes_key(&self.0)
    }

    /// Wrap fresh key material for the key `key_id` (the id is the associated data, so
    /// wrapped material cannot be moved to another key).
    fn wrap(&self, key_id: &str, material: &[u8; 32]) -> String {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut sealed = material.to_vec();
        let aad = [WRAP_MAGIC.as_slice(), key_id.as_bytes()].concat();
        self.cipher()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut sealed,
            )
            .unwrap_or_else(|_| unreachable!("sealing 32 bytes cannot exceed GCM's limit"));
        let mut wrapped = WRAP_MAGIC.to_vec();
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        hex::encode(wrapped)
    }

    fn unwrap_material(&self, key_id: &str, wrapped: &str) -> Result<[u8; 32], CryptoError> {
        let fail = || CryptoError::Unwrap(key_id.to_owned());
        let wrapped = hex::decode(wrapped).map_err(|_| fail())?;
        let rest = wrapped
            .strip_prefix(WRAP_MAGIC.as_slice())
            .ok_or_else(fail)?;
        if rest.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(fail());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let aad = [WRAP_MAGIC.as_slice(), key_id.as_bytes()].concat();
        let mut sealed = sealed.to_vec();
        let material = self
            .cipher()
            .open_in_place(nonce, Aad::from(aad), &mut sealed)
            .map_err(|_| fail())?;
        <[u8; 32]>::try_from(&*material).map_err(|_| fail())
    }
}

/// A key of the local key service, as stored: its material only wrapped by the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id (a UUID), the last part of its ARN.
    pub id: String,
    /// `arn:aws:kms:REGION:ACCOUNT:key/ID`.
    pub arn: String,
    /// The owning account: only it may use the key.
    pub owner: AccountId,
    /// Free text given at creation.
    pub description: Option<String>,
    /// Disabled keys neither encrypt nor decrypt.
    pub enabled: bool,
    /// The account's default key (AWS's `aws/ebs`), created on first use.
    pub account_default: bool,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// The key material wrapped by the master key (hex of `"SKW1" ‖ nonce ‖ sealed ‖ tag`).
    pub wrapped_material: String,
}

impl KeyRecord {
    /// A new key with fresh material wrapped by `master`.
    pub fn create(
        master: &MasterKey,
        id: String,
        region: &str,
        owner: AccountId,
        description: Option<String>,
        account_default: bool,
        created_ms: i64,
    ) -> Self {
        let material: [u8; 32] = rand::random();
        let wrapped_material = master.wrap(&id, &material);
        Self {
            arn: format!("arn:aws:kms:{region}:{owner}:key/{id}"),
            id,
            owner,
            description,
            enabled: true,
            account_default,
            created_ms,
            wrapped_material,
        }
    }

    /// The key's block cipher, once its material is unwrapped by `master`.
    pub fn data_key(&self, master: &MasterKey) -> Result<DataKey, CryptoError> {
        let material = master.unwrap_material(&self.id, &self.wrapped_material)?;
        Ok(DataKey::derive(&self.id, &material))
    }
}

/// The id of `owner`'s default key in this cluster: the same on every node, so that two
/// nodes creating it at once store one key ([`crate::ports::MetadataStore::create_key`]).
pub fn default_key_id(owner: &AccountId) -> String {
    use sha2::Digest as _;
    let hash = Sha256::digest(format!("strata default key of account {owner}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The id part of a key ARN (`...:key/ID`), if it has one.
pub fn key_id_of_arn(arn: &str) -> Option<&str> {
    arn.rsplit_once(":key/")
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

/// One key's block cipher.
pub struct DataKey {
    key_id: String,
    cipher: LessSafeKey,
    nonce_key: [u8; 32],
    mask_key: [u8; 32],
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    fn derive(key_id: &str, material: &[u8; 32]) -> Self {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"strata encryption at rest v1").extract(material);
        let expand = |label: &[u8]| -> [u8; 32] {
            let mut out = [0u8; 32];
            let info = [label];
            prk.expand(&info, hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(&mut out))
                .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 length"));
            out
        };
        Self {
            key_id: key_id.to_owned(),
            cipher: aes_key(&expand(b"block cipher")),
            nonce_key: expand(b"block nonce"),
            mask_key: expand(b"checksum mask"),
        }
    }

    /// The associated data of an envelope of format `magic` at `index`.
    fn aad(&self, magic: &[u8; 4], index: BlockIndex) -> Aad<Vec<u8>> {
        let mut aad = [magic.as_slice(), self.key_id.as_bytes()].concat();
        if magic == BLOCK_MAGIC {
            aad.extend_from_slice(&index.get().to_be_bytes());
        }
        Aad::from(aad)
    }

    /// The envelope of `plaintext` at block `index` under this key: the same for the same
    /// plaintext at the same index.
    pub fn seal(&self, index: BlockIndex, plaintext: &[u8]) -> Vec<u8> {
        let mut mac = hmac_of(&self.nonce_key);
        mac.update(&index.get().to_be_bytes());
        mac.update(plaintext);
        let tag = mac.finalize().into_bytes();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag[..NONCE_LEN]);
        let mut envelope = Vec::with_capacity(plaintext.len() + ENVELOPE_OVERHEAD);
        envelope.extend_from_slice(BLOCK_MAGIC);
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(plaintext);
        let header = BLOCK_MAGIC.len() + NONCE_LEN;
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                self.aad(BLOCK_MAGIC, index),
                &mut envelope[header..],
            )
            .unwrap_or_else(|_| unreachable!("a block is far below GCM's length limit"));
        envelope.extend_from_slice(tag.as_ref());
        envelope
    }

    /// The plaintext of an envelope sealed at block `index` under this key (or of a
    /// first-format envelope under this key, at any index); any other input is refused.
    pub fn open(&self, index: BlockIndex, envelope: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let fail = || CryptoError::Open(self.key_id.clone());
        let (magic, rest) = match envelope.split_first_chunk::<4>() {
            Some((magic, rest)) if magic == BLOCK_MAGIC => (BLOCK_MAGIC, rest),
            Some((magic, rest)) if magic == BLOCK_MAGIC_V1 => (BLOCK_MAGIC_V1, rest),
            _ => return Err(fail()),
        };
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(fail());
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut sealed = sealed.to_vec();
        let plaintext_len = self
            .cipher
            .open_in_place(nonce, self.aad(magic, index), &mut sealed)
            .map_err(|_| fail())?
            .len();
        sealed.truncate(plaintext_len);
        Ok(sealed)
    }

    /// Mask (or unmask: the operation is its own inverse) the client's checksum of a block
    /// stored as `chunk`, for keeping it in the pending writes without revealing it.
    pub fn mask_checksum(&self, chunk: &ChunkDigest, checksum: [u8; 32]) -> [u8; 32] {
        let mut mac = hmac_of(&self.mask_key);
        mac.update(&chunk.0);
        let mask = mac.finalize().into_bytes();
        let mut masked = checksum;
        for (byte, m) in masked.iter_mut().zip(mask.iter()) {
            *byte ^= m;
        }
        masked
    }
}

fn aes_key(bytes: &[u8; 32]) -> LessSafeKey {
    let key = UnboundKey::new(&AES_256_GCM, bytes)
        .unwrap_or_else(|_| unreachable!("32 bytes is an AES-256 key"));
    LessSafeKey::new(key)
}

fn hmac_of(key: &[u8; 32]) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> AccountId {
        AccountId::parse("111122223333").expect("account")
    }

    fn key(master: &MasterKey, id: &str) -> KeyRecord {
        KeyRecord::create(master, id.into(), "us-east-1", owner(), None, false, 0)
    }

    #[test]
    fn an_envelope_opens_to_its_plaintext_and_is_the_same_for_the_same_plaintext() {
        let master = MasterKey::generate();
        let data_key = key(&master, "k1").data_key(&master).expect("unwrap");
        let block = vec![7u8; 4096];
        let at = BlockIndex::new(3);
        let sealed = data_key.seal(at, &block);
        assert_eq!(sealed.len(), block.len() + ENVELOPE_OVERHEAD);
        assert_eq!(
            data_key.seal(at, &block),
            sealed,
            "deterministic within one key and index"
        );
        assert!(
            !sealed.windows(64).any(|w| w == &block[..64]),
            "no plaintext"
        );
        assert_eq!(data_key.open(at, &sealed).expect("open"), block);
        let other = vec![8u8; 4096];
        assert_ne!(
            data_key.seal(at, &other)[4..16],
            sealed[4..16],
            "another nonce"
        );
    }

    #[test]
    fn two_keys_give_unrelated_envelopes_that_do_not_open_under_each_other() {
        let master = MasterKey::generate();
        let first = key(&master, "k1").data_key(&master).expect("unwrap");
        let second = key(&master, "k2").data_key(&master).expect("unwrap");
        let block = vec![1u8; 1024];
        let at = BlockIndex::new(0);
        assert_ne!(first.seal(at, &block), second.seal(at, &block));
        assert!(second.open(at, &first.seal(at, &block)).is_err());
    }

    #[test]
    fn a_flipped_bit_anywhere_in_an_envelope_is_refused() {
        let master = MasterKey::generate();
        let data_key = key(&master, "k1").data_key(&master).expect("unwrap");
        let at = BlockIndex::new(1);
        let sealed = data_key.seal(at, &[3u8; 256]);
        for position in [0, 5, 20, sealed.len() - 1] {
            let mut damaged = sealed.clone();
            damaged[position] ^= 1;
            assert!(
                data_key.open(at, &damaged).is_err(),
                "bit flipped at {position}"
            );
        }
        assert!(data_key.open(at, &sealed[..10]).is_err());
    }

    #[test]
    fn an_envelope_opens_only_at_the_index_it_was_sealed_for() {
        let master = MasterKey::generate();
        let data_key = key(&master, "k1").data_key(&master).expect("unwrap");
        let block = vec![5u8; 2048];
        let sealed = data_key.seal(BlockIndex::new(7), &block);
        assert_eq!(
            data_key.open(BlockIndex::new(7), &sealed).expect("open"),
            block
        );
        for elsewhere in [0, 6, 8, 7 + (1 << 16)] {
            assert!(
                data_key.open(BlockIndex::new(elsewhere), &sealed).is_err(),
                "an envelope of block 7 opened as block {elsewhere}"
            );
        }
        assert_ne!(
            data_key.seal(BlockIndex::new(8), &block),
            sealed,
            "the same plaintext at another index is another envelope"
        );
    }

    #[test]
    fn first_format_envelopes_still_open() {
        let master = MasterKey::generate();
        let data_key = key(&master, "k1").data_key(&master).expect("unwrap");
        let block = vec![9u8; 1024];
        // Sealed as the first format did: "SEB1", the key id alone as associated data.
        let nonce = [4u8; NONCE_LEN];
        let mut envelope = [BLOCK_MAGIC_V1.as_slice(), &nonce, &block].concat();
        let tag = data_key
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([BLOCK_MAGIC_V1.as_slice(), b"k1"].concat()),
                &mut envelope[BLOCK_MAGIC_V1.len() + NONCE_LEN..],
            )
            .expect("seal");
        envelope.extend_from_slice(tag.as_ref());
        for index in [0, 41] {
            assert_eq!(
                data_key
                    .open(BlockIndex::new(index), &envelope)
                    .expect("open"),
                block
            );
        }
        let mut relabelled = envelope.clone();
        relabelled[..4].copy_from_slice(BLOCK_MAGIC);
        assert!(
            data_key.open(BlockIndex::new(0), &relabelled).is_err(),
            "a first-format envelope relabelled as the second does not open"
        );
    }

    #[test]
    fn material_unwraps_only_with_its_master_key_and_under_its_own_id() {
        let master = MasterKey::generate();
        let record = key(&master, "k1");
        assert!(!record.wrapped_material.contains(&master.to_text()));
        assert!(record.data_key(&MasterKey::generate()).is_err());
        let moved = KeyRecord {
            id: "k2".into(),
            ..record.clone()
        };
        assert!(
            moved.data_key(&master).is_err(),
            "wrapped material bound to its id"
        );
        let again = MasterKey::parse(&master.to_text()).expect("parse");
        assert!(record.data_key(&again).is_ok());
    }

    #[test]
    fn master_keys_parse_from_hex_or_base64_of_32_bytes() {
        use base64::Engine as _;
        let bytes = [9u8; 32];
        let hex_text = hex::encode(bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(
            MasterKey::parse(&hex_text).expect("hex").to_text(),
            hex_text
        );
        assert_eq!(
            MasterKey::parse(&format!(" {b64}\n"))
                .expect("b64")
                .to_text(),
            hex_text
        );
        assert!(MasterKey::parse("abc").is_err());
        assert!(MasterKey::parse(&hex::encode([1u8; 16])).is_err());
    }

    #[test]
    fn checksum_masks_are_their_own_inverse_and_hide_the_checksum() {
        let master = MasterKey::generate();
        let data_key = key(&master, "k1").data_key(&master).expect("unwrap");
        let chunk = ChunkDigest::of(b"envelope");
        let checksum = ChunkDigest::of(b"plaintext").0;
        let masked = data_key.mask_checksum(&chunk, checksum);
        assert_ne!(masked, checksum);
        assert_eq!(data_key.mask_checksum(&chunk, masked), checksum);
    }

    #[test]
    fn default_key_ids_are_uuids_fixed_per_account_and_arns_name_their_id() {
        let id = default_key_id(&owner());
        assert_eq!(id, default_key_id(&owner()));
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        let other = AccountId::parse("444455556666").expect("account");
        assert_ne!(id, default_key_id(&other));
        assert_eq!(
            key_id_of_arn("arn:aws:kms:us-east-1:111122223333:key/abc"),
            Some("abc")
        );
        assert_eq!(
            key_id_of_arn("arn:aws:kms:us-east-1:111122223333:key/"),
            None
        );
        assert_eq!(key_id_of_arn("alias/x"), None);
    }
}
