//! Which storage a server runs on: the embedded stores of one data directory, or engines
//! shared by several nodes (PostgreSQL for metadata). [`Metadata`] and [`Chunks`] are the
//! ports over whichever adapter was configured, so the service and every handler have one
//! concrete type whatever the deployment; each method forwards to the adapter.

use std::path::Path;

use strata_core::block_map::{Node, NodeHash, NodeSource};
use strata_core::ports::{
    Announced, AnnouncementId, BlockWrite, ChunkStore, CreateOutcome, GcView, MetadataStore,
    PendingWrites, RecordBlockError, RecordChange, Seal, SealError, Stamp, StoreError, StoredChunk,
};
use strata_core::snapshot::SnapshotRecord;
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore, RedbNodes};
use strata_store_postgres::{PgNodes, PostgresMetadataStore};
use strata_types::{AccountId, ChunkDigest, SnapshotId};

/// Where snapshot metadata lives (`--metadata`).
#[derive(Clone, PartialEq, Eq)]
pub enum MetadataBackend {
    /// `metadata.redb` in the data directory.
    Embedded,
    /// A PostgreSQL database, shared by every node of a cluster: its URL
    /// (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB`), which may hold a password.
    Postgres(String),
}

impl std::fmt::Debug for MetadataBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        match self {
            MetadataBackend::Embedded => f.write_str("Embedded"),
            MetadataBackend::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl MetadataBackend {
    /// Parse `--metadata`: `embedded`, or a `postgres://` / `postgresql://` URL.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        if text == "embedded" {
            return Ok(MetadataBackend::Embedded);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(MetadataBackend::Postgres(text.to_owned()));
        }
        anyhow::bail!(
            "--metadata must be `embedded` or postgres://USER[:PASSWORD]@HOST[:PORT]/DB, not {:?}",
            text.split('@').next_back().unwrap_or_default()
        )
    }

    /// For the startup line: the kind and host, never a password.
    pub fn describe(&self) -> String {
        match self {
            MetadataBackend::Embedded => "embedded (metadata.redb)".into(),
            MetadataBackend::Postgres(url) => {
                let host = url.rsplit('@').next().unwrap_or("");
                format!("PostgreSQL at {host}")
            }
        }
    }
}

/// The metadata port over the configured adapter.
#[derive(Clone)]
pub enum Metadata {
    /// The embedded store of one data directory.
    Embedded(RedbMetadataStore),
    /// PostgreSQL, shared by a cluster.
    Postgres(PostgresMetadataStore),
}

/// The chunk port over the configured adapter.
#[derive(Clone)]
pub enum Chunks {
    /// Segment files in the data directory.
    Embedded(FsChunkStore),
}

/// The stores a server runs on.
pub struct Stores {
    /// Snapshot metadata.
    pub metadata: Metadata,
    /// Chunk bytes.
    pub chunks: Chunks,
}

impl Stores {
    /// Open (creating if needed) the configured stores. Runs on the server's runtime: the
    /// PostgreSQL adapter starts tasks on it.
    pub async fn open(data_dir: &Path, metadata: &MetadataBackend) -> anyhow::Result<Self> {
        use anyhow::Context;
        match metadata {
            MetadataBackend::Embedded => {
                let store = EmbeddedStore::open(data_dir).with_context(|| {
                    format!("cannot open the data directory {}", data_dir.display())
                })?;
                Ok(Self {
                    metadata: Metadata::Embedded(store.metadata),
                    chunks: Chunks::Embedded(store.chunks),
                })
            }
            MetadataBackend::Postgres(url) => {
                let metadata = PostgresMetadataStore::connect(url)
                    .await
                    .context("cannot open the PostgreSQL metadata store")?;
                std::fs::create_dir_all(data_dir).with_context(|| {
                    format!("cannot create the data directory {}", data_dir.display())
                })?;
                let chunks = FsChunkStore::open(data_dir.join("chunks"))
                    .context("cannot open the chunk directory")?;
                Ok(Self {
                    metadata: Metadata::Postgres(metadata),
                    chunks: Chunks::Embedded(chunks),
                })
            }
        }
    }
}

/// A node reader of the configured metadata adapter.
pub enum Nodes {
    /// Of the embedded store.
    Embedded(RedbNodes),
    /// Of PostgreSQL.
    Postgres(PgNodes),
}

impl NodeSource for Nodes {
    fn load(&self, hash: &NodeHash) -> Result<std::sync::Arc<Node>, StoreError> {
        match self {
            Nodes::Embedded(nodes) => nodes.load(hash),
            Nodes::Postgres(nodes) => nodes.load(hash),
        }
    }
}

/// `match` over the metadata adapter, the same expression for each.
macro_rules! on_metadata {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Metadata::Embedded($store) => $call,
            Metadata::Postgres($store) => $call,
        }
    };
}

fn view_of<N>(view: GcView<N>, reader: impl FnOnce(N) -> Nodes) -> GcView<Nodes> {
    GcView {
        start: view.start,
        records: view.records,
        pending: view.pending,
        nodes: view.nodes,
        chunks: view.chunks,
        reader: reader(view.reader),
    }
}

impl MetadataStore for Metadata {
    type Nodes = Nodes;

    async fn create_snapshot(&self, record: SnapshotRecord) -> Result<CreateOutcome, StoreError> {
        on_metadata!(self, s => s.create_snapshot(record).await)
    }

    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StoreError> {
        on_metadata!(self, s => s.snapshot(id).await)
    }

    async fn update_snapshot(
        &self,
        id: &SnapshotId,
        change: RecordChange,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        on_metadata!(self, s => s.update_snapshot(id, change).await)
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        on_metadata!(self, s => s.delete_snapshot(id).await)
    }

    async fn record_block(&self, write: BlockWrite) -> Result<(), RecordBlockError> {
        on_metadata!(self, s => s.record_block(write).await)
    }

    async fn pending_writes(&self, id: &SnapshotId) -> Result<PendingWrites, StoreError> {
        on_metadata!(self, s => s.pending_writes(id).await)
    }

    async fn seal_snapshot(&self, seal: Seal) -> Result<(), SealError> {
        on_metadata!(self, s => s.seal_snapshot(seal).await)
    }

    async fn announce_put(&self, digest: ChunkDigest) -> Result<Announced, StoreError> {
        on_metadata!(self, s => s.announce_put(digest).await)
    }

    fn withdraw_put(&self, id: AnnouncementId) {
        on_metadata!(self, s => s.withdraw_put(id))
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        on_metadata!(self, s => s.acquire_lease(name, holder, ttl).await)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        on_metadata!(self, s => s.release_lease(name, holder).await)
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        on_metadata!(self, s => s.secret(name, candidate).await)
    }

    fn nodes(&self) -> Result<Nodes, StoreError> {
        match self {
            Metadata::Embedded(s) => s.nodes().map(Nodes::Embedded),
            Metadata::Postgres(s) => s.nodes().map(Nodes::Postgres),
        }
    }

    async fn list_snapshots(
        &self,
        owner: Option<&AccountId>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        on_metadata!(self, s => s.list_snapshots(owner).await)
    }

    async fn gc_view(&self) -> Result<GcView<Nodes>, StoreError> {
        match self {
            Metadata::Embedded(s) => Ok(view_of(s.gc_view().await?, Nodes::Embedded)),
            Metadata::Postgres(s) => Ok(view_of(s.gc_view().await?, Nodes::Postgres)),
        }
    }

    async fn delete_nodes(
        &self,
        hashes: Vec<NodeHash>,
        stamped_before: Stamp,
    ) -> Result<usize, StoreError> {
        on_metadata!(self, s => s.delete_nodes(hashes, stamped_before).await)
    }

    async fn drop_pending_writes(&self, ids: Vec<SnapshotId>) -> Result<usize, StoreError> {
        on_metadata!(self, s => s.drop_pending_writes(ids).await)
    }

    async fn condemn_chunks(
        &self,
        digests: Vec<ChunkDigest>,
        stamped_before: Stamp,
    ) -> Result<Vec<ChunkDigest>, StoreError> {
        on_metadata!(self, s => s.condemn_chunks(digests, stamped_before).await)
    }

    async fn condemned_chunks(&self) -> Result<Vec<ChunkDigest>, StoreError> {
        on_metadata!(self, s => s.condemned_chunks().await)
    }

    async fn finalize_chunks(&self, digests: Vec<ChunkDigest>) -> Result<(), StoreError> {
        on_metadata!(self, s => s.finalize_chunks(digests).await)
    }

    async fn forget_chunk(&self, digest: ChunkDigest) -> Result<(), StoreError> {
        on_metadata!(self, s => s.forget_chunk(digest).await)
    }
}

/// `match` over the chunk adapter, the same expression for each.
macro_rules! on_chunks {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Chunks::Embedded($store) => $call,
        }
    };
}

impl ChunkStore for Chunks {
    async fn put(&self, digest: ChunkDigest, data: bytes::Bytes) -> Result<(), StoreError> {
        on_chunks!(self, s => s.put(digest, data).await)
    }

    async fn get(&self, digest: ChunkDigest) -> Result<Option<bytes::Bytes>, StoreError> {
        on_chunks!(self, s => s.get(digest).await)
    }

    async fn delete(&self, digests: Vec<ChunkDigest>) -> Result<u64, StoreError> {
        on_chunks!(self, s => s.delete(digests).await)
    }

    async fn list(
        &self,
        after: Option<ChunkDigest>,
        limit: usize,
    ) -> Result<Vec<StoredChunk>, StoreError> {
        on_chunks!(self, s => s.list(after, limit).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_parse_and_never_show_their_password() {
        assert_eq!(
            MetadataBackend::parse("embedded").expect("embedded"),
            MetadataBackend::Embedded
        );
        let pg = MetadataBackend::parse("postgres://strata:hunter2@db.example:5432/strata")
            .expect("postgres");
        assert!(!format!("{pg:?}").contains("hunter2"));
        assert_eq!(pg.describe(), "PostgreSQL at db.example:5432/strata");
        let error = MetadataBackend::parse("mysql://u:hunter2@h/db").expect_err("refused");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
