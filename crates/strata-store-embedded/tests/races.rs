//! The race scenarios of the test kit (`strata_store_testkit::races`) on the embedded
//! adapters, each on a fresh data directory.

use std::os::unix::fs::FileExt;

use strata_store_embedded::{FsChunkStore, RedbMetadataStore};
use strata_store_testkit::races::ChunkProbe;
use tempfile::TempDir;

async fn embedded() -> (RedbMetadataStore, FsChunkStore, ChunkProbe, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = RedbMetadataStore::open(&dir.path().join("metadata.redb")).expect("open");
    let chunks = FsChunkStore::open(dir.path().join("chunks")).expect("open");
    let (has, damage) = (chunks.clone(), chunks.clone());
    let probe = ChunkProbe {
        has: Box::new(move |digest| has.locate(digest).expect("chunk index").is_some()),
        // One byte flipped in the segment file, where the chunk's bytes are.
        damage: Box::new(move |digest| {
            let at = damage.locate(digest).expect("chunk index").expect("stored");
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&at.path)
                .expect("segment");
            let mut byte = [0u8; 1];
            file.read_exact_at(&mut byte, at.offset).expect("read");
            file.write_all_at(&[byte[0] ^ 1], at.offset).expect("write");
        }),
    };
    (metadata, chunks, probe, dir)
}

strata_store_testkit::race_scenarios!(embedded);
