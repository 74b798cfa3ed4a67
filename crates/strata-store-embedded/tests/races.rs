//! The race scenarios of the test kit (`strata_store_testkit::races`) on the embedded
//! adapters, each on a fresh data directory.

use strata_store_embedded::{FsChunkStore, RedbMetadataStore};
use strata_store_testkit::races::HasChunk;
use tempfile::TempDir;

async fn embedded() -> (RedbMetadataStore, FsChunkStore, HasChunk, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let metadata = RedbMetadataStore::open(&dir.path().join("metadata.redb")).expect("open");
    let chunks = FsChunkStore::open(dir.path().join("chunks")).expect("open");
    let probe = chunks.clone();
    let has_chunk: HasChunk =
        Box::new(move |digest| probe.locate(digest).expect("chunk index").is_some());
    (metadata, chunks, has_chunk, dir)
}

strata_store_testkit::race_scenarios!(embedded);
