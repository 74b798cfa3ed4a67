//! Strata's default single-node storage: snapshot metadata in a redb database
//! ([`RedbMetadataStore`]) and chunk bytes in append-only segment files with their own
//! index ([`FsChunkStore`]). Both implement the ports of `strata_core::ports`.
//!
//! A data directory holds `metadata.redb` and `chunks/`; [`EmbeddedStore::open`] opens both.

mod chunks;
mod group_commit;
mod metadata;

use std::path::Path;

pub use chunks::{ChunkLocation, ChunkStoreOptions, FsChunkStore};
pub use metadata::{RedbMetadataStore, RedbNodes};
use strata_core::ports::StoreError;

/// Both embedded stores of one data directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    /// Snapshot metadata.
    pub metadata: RedbMetadataStore,
    /// Chunk bytes.
    pub chunks: FsChunkStore,
}

impl EmbeddedStore {
    /// Open (creating if needed) the stores under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let store = Self {
            metadata: RedbMetadataStore::open(&data_dir.join("metadata.redb"))?,
            chunks: FsChunkStore::open(data_dir.join("chunks"))?,
        };
        // `metadata.redb` and `chunks/` may have just been created: their names must be
        // durable before anything written into them is acknowledged.
        std::fs::File::open(data_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StoreError::Backend(format!("cannot sync {}: {e}", data_dir.display())))?;
        Ok(store)
    }
}
