//! The race scenarios of the test kit (`strata_store_testkit::races`) on the in-memory
//! adapters: the service's own behaviour, without files.

use strata_store_testkit::races::HasChunk;
use strata_store_testkit::{MemoryChunkStore, MemoryMetadataStore};

async fn memory() -> (MemoryMetadataStore, MemoryChunkStore, HasChunk, ()) {
    let chunks = MemoryChunkStore::new();
    let probe = chunks.clone();
    let has_chunk: HasChunk = Box::new(move |digest| probe.contains(digest));
    (MemoryMetadataStore::new(), chunks, has_chunk, ())
}

strata_store_testkit::race_scenarios!(memory);
