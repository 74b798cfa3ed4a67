//! Strata's default single-node storage: snapshot metadata in a redb database
//! ([`RedbMetadataStore`]) and chunk bytes in append-only segment files with their own
//! index ([`FsChunkStore`]). Both implement the ports of `strata_core::ports`.
//!
//! A data directory holds `metadata.redb` and `chunks/`; [`EmbeddedStore::open`] opens both.

mod backup;
mod chunks;
mod group_commit;
mod metadata;

use std::path::Path;

pub use backup::{copy_private_file, sync_dir};
pub use chunks::{ChunkBackup, ChunkLocation, ChunkStoreOptions, FsChunkStore};
pub use metadata::{MetadataBackup, RedbMetadataStore, RedbNodes};
use strata_core::ports::StoreError;

/// The metadata database's file name in a data directory.
const METADATA_FILE: &str = "metadata.redb";
/// The chunk store's directory in a data directory.
const CHUNKS_DIR: &str = "chunks";

/// Whether `chunks` holds chunk data: a segment file that is not empty, or a chunk file of
/// format 1 (two levels of fan-out directories).
fn holds_chunks(chunks: &Path) -> Result<bool, StoreError> {
    let segments = chunks.join("segments");
    let listed = |dir: &Path| -> Result<Vec<std::fs::DirEntry>, StoreError> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::io(format!("list {}", dir.display()), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(StoreError::io(format!("list {}", dir.display()), e)),
        }
    };
    let segment_data = listed(&segments)?
        .iter()
        .any(|entry| entry.metadata().is_ok_and(|m| m.is_file() && m.len() > 0));
    let legacy_fan_out = listed(chunks)?.iter().any(|entry| {
        let name = entry.file_name();
        name.len() == 2
            && name
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_hexdigit())
    });
    Ok(segment_data || legacy_fan_out)
}

/// Both embedded stores of one data directory.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    /// Snapshot metadata.
    pub metadata: RedbMetadataStore,
    /// Chunk bytes.
    pub chunks: FsChunkStore,
}

impl EmbeddedStore {
    /// Open (creating if needed) the stores under `data_dir`. A data directory whose
    /// `chunks/` holds data but whose `metadata.redb` is missing is refused: opened with
    /// empty metadata, the first garbage collection would find every chunk unreferenced
    /// and delete it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Backend(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let metadata_path = data_dir.join(METADATA_FILE);
        if !metadata_path.exists() && holds_chunks(&data_dir.join(CHUNKS_DIR))? {
            return Err(StoreError::Backend(format!(
                "{} is missing, but {} holds chunks: restore {METADATA_FILE} from a backup \
                 (opening with empty metadata would let garbage collection delete every chunk); \
                 to give those chunks up, move {CHUNKS_DIR}/ away first",
                metadata_path.display(),
                data_dir.join(CHUNKS_DIR).display()
            )));
        }
        let store = Self {
            metadata: RedbMetadataStore::open(&metadata_path)?,
            chunks: FsChunkStore::open(data_dir.join(CHUNKS_DIR))?,
        };
        // A data directory of an earlier format has no chunk registry yet (ADR 0004).
        let registered = store
            .metadata
            .fill_chunk_registry_once(|| store.chunks.inventory())?;
        if registered > 0 {
            tracing::info!(
                chunks = registered,
                "chunk registry filled from the chunk index"
            );
        }
        // `metadata.redb` and `chunks/` may have just been created: their names must be
        // durable before anything written into them is acknowledged.
        std::fs::File::open(data_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StoreError::Backend(format!("cannot sync {}: {e}", data_dir.display())))?;
        Ok(store)
    }
}
