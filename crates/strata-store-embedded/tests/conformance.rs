//! The conformance suite of `strata-store-testkit` against the embedded adapters, each
//! case on a fresh store in its own temporary directory.

use strata_store_embedded::{FsChunkStore, RedbMetadataStore};
use tempfile::TempDir;

async fn metadata() -> (RedbMetadataStore, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbMetadataStore::open(&dir.path().join("metadata.redb")).expect("open");
    (store, dir)
}

async fn chunks() -> (FsChunkStore, TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsChunkStore::open(dir.path().join("chunks")).expect("open");
    (store, dir)
}

mod metadata_store {
    strata_store_testkit::metadata_store_conformance!(super::metadata);
}

mod chunk_store {
    strata_store_testkit::chunk_store_conformance!(super::chunks);
}
