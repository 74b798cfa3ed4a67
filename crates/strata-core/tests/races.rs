//! The race scenarios of the test kit (`strata_store_testkit::races`) on the in-memory
//! adapters: the service's own behaviour, without files.

use strata_store_testkit::races::ChunkProbe;
use strata_store_testkit::{MemoryChunkStore, MemoryMetadataStore};

async fn memory() -> (MemoryMetadataStore, MemoryChunkStore, ChunkProbe, ()) {
    let chunks = MemoryChunkStore::new();
    let (has, damage) = (chunks.clone(), chunks.clone());
    let probe = ChunkProbe {
        has: Box::new(move |digest| has.contains(digest)),
        damage: Box::new(move |digest| {
            damage.damage(digest);
        }),
    };
    (MemoryMetadataStore::new(), chunks, probe, ())
}

strata_store_testkit::race_scenarios!(memory);
