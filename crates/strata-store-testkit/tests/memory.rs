//! The conformance suite against the in-memory adapters (the reference implementation).

use strata_store_testkit::{MemoryChunkStore, MemoryMetadataStore};

async fn metadata() -> (MemoryMetadataStore, ()) {
    (MemoryMetadataStore::new(), ())
}

async fn chunks() -> (MemoryChunkStore, ()) {
    (MemoryChunkStore::new(), ())
}

mod metadata_store {
    strata_store_testkit::metadata_store_conformance!(super::metadata);
}

mod chunk_store {
    strata_store_testkit::chunk_store_conformance!(super::chunks);
}
