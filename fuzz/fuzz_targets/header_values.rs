//! The decoders of header values and path labels the EBS handlers call, on arbitrary text
//! (the input, lossily as UTF-8): `x-amz-Checksum` (base64 SHA-256), snapshot ids (labels,
//! parameters, and their JSON form), block indexes, hex digests, account ids, volume sizes
//! (the text as an integer, else its first 8 bytes). Each refuses or accepts without a
//! panic, and what it accepts displays as the canonical spelling it was parsed from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_core::checksum::{from_base64, to_base64};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    // The standard engine refuses missing padding and non-zero trailing bits, so a
    // checksum that decodes is the one encoding of its digest.
    if let Some(digest) = from_base64(text) {
        assert_eq!(to_base64(&digest), text);
    }
    if let Ok(id) = SnapshotId::parse(text) {
        assert_eq!(id.as_str(), text);
        assert!(text.len() <= SnapshotId::MAX_LEN && text.starts_with("snap-"));
    }
    // The JSON form (records, admin answers) accepts exactly what `parse` accepts.
    let quoted = serde_json::to_string(text).expect("a string serializes");
    assert_eq!(
        serde_json::from_str::<SnapshotId>(&quoted).ok(),
        SnapshotId::parse(text).ok()
    );
    if let Ok(index) = BlockIndex::parse(text) {
        assert_eq!(text.parse::<u64>().ok(), Some(u64::from(index.get())));
        assert_eq!(BlockIndex::parse(&index.to_string()), Ok(index));
    }
    if let Ok(digest) = ChunkDigest::from_hex(text) {
        assert_eq!(digest.to_hex(), text.to_ascii_lowercase());
    }
    if let Ok(account) = AccountId::parse(text) {
        assert_eq!(account.as_str(), text);
    }
    let gib = text.trim().parse::<i64>().unwrap_or_else(|_| {
        let mut bytes = [0u8; 8];
        let n = data.len().min(8);
        bytes[..n].copy_from_slice(&data[..n]);
        i64::from_le_bytes(bytes)
    });
    match VolumeSize::from_gib(gib) {
        Ok(size) => {
            assert_eq!(i64::try_from(size.gib()).ok(), Some(gib));
            assert!(size.block_count() <= 134_217_728);
        }
        Err(_) => assert!(!(1..=65_536).contains(&gib)),
    }
});
