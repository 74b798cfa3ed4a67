//! The race scenarios of the test kit (`strata_store_testkit::races`) with the metadata on
//! a real PostgreSQL (`DATABASE_URL`, a fresh schema each) and the chunks in memory: the
//! ordering rules of ADR 0004 as this adapter implements them (stamps under the fence,
//! per-digest locks between announcements, write records and condemnations).

mod common;

use strata_store_postgres::PostgresMetadataStore;
use strata_store_testkit::MemoryChunkStore;
use strata_store_testkit::races::ChunkProbe;

async fn postgres() -> (
    PostgresMetadataStore,
    MemoryChunkStore,
    ChunkProbe,
    common::Schema,
) {
    let schema = common::Schema::create().await;
    let metadata = schema.store().await;
    let chunks = MemoryChunkStore::new();
    let (has, damage) = (chunks.clone(), chunks.clone());
    let probe = ChunkProbe {
        has: Box::new(move |digest| has.contains(digest)),
        damage: Box::new(move |digest| {
            damage.damage(digest);
        }),
    };
    (metadata, chunks, probe, schema)
}

strata_store_testkit::race_scenarios!(postgres);
