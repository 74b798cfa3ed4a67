//! Which storage a server runs on: the embedded stores of one data directory, or engines
//! shared by several nodes (PostgreSQL for metadata, an S3-compatible object store for
//! chunks). [`Metadata`] and [`Chunks`] are the
//! ports over whichever adapter was configured, so the service and every handler have one
//! concrete type whatever the deployment; each method forwards to the adapter.

use std::path::Path;

use strata_core::block_map::{Node, NodeHash, NodeSource};
use strata_core::encryption::KeyRecord;
use strata_core::ports::{
    Announced, AnnouncementId, BlockWrite, ChunkStore, CreateOutcome, GcView, MetadataStore,
    PendingWrites, RecordBlockError, RecordChange, Seal, SealError, Stamp, StoreError, StoredChunk,
};
use strata_core::snapshot::SnapshotRecord;
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore, RedbNodes};
use strata_store_postgres::{PgNodes, PostgresMetadataStore};
use strata_store_s3::{S3ChunkStore, S3Location, S3Settings};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId};

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

/// `--chunks` and the `--s3-*` settings as given (flags, environment, config file), before
/// they are checked: [`ChunkOptions::resolve`] turns them into a [`ChunkBackend`].
#[derive(Clone, Default)]
pub struct ChunkOptions {
    /// `embedded` (the default) or `s3://BUCKET[/PREFIX]`.
    pub chunks: Option<String>,
    /// The S3 endpoint URL (`--s3-endpoint`); unset: AWS S3 of the region.
    pub s3_endpoint: Option<String>,
    /// The S3 signing region (`--s3-region`, default `us-east-1`).
    pub s3_region: Option<String>,
    /// `STRATA_S3_ACCESS_KEY_ID`.
    pub s3_access_key_id: Option<String>,
    /// `STRATA_S3_SECRET_ACCESS_KEY`.
    pub s3_secret_access_key: Option<String>,
}

impl std::fmt::Debug for ChunkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkOptions")
            .field("chunks", &self.chunks)
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field(
                "s3_secret_access_key",
                &self.s3_secret_access_key.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// Where chunk bytes live (`--chunks`).
#[derive(Debug, Clone)]
pub enum ChunkBackend {
    /// Segment files under `chunks/` in the data directory.
    Embedded,
    /// Objects in an S3 bucket, shared by every node of a cluster.
    S3(S3Settings),
}

impl ChunkOptions {
    /// Check the options: a location that parses, and credentials for S3. The messages
    /// name the flag or variable to fix; they never show a secret.
    pub fn resolve(&self) -> anyhow::Result<ChunkBackend> {
        let given = self.chunks.as_deref().unwrap_or("embedded");
        if given == "embedded" {
            let stray = [
                ("--s3-endpoint", self.s3_endpoint.is_some()),
                ("--s3-region", self.s3_region.is_some()),
            ];
            if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                anyhow::bail!(
                    "{flag} is given but the chunks are embedded: add --chunks s3://BUCKET[/PREFIX]"
                );
            }
            return Ok(ChunkBackend::Embedded);
        }
        let location = S3Location::parse(given).map_err(|e| {
            anyhow::anyhow!("--chunks must be `embedded` or s3://BUCKET[/PREFIX]: {e}")
        })?;
        let (Some(key_id), Some(secret)) = (&self.s3_access_key_id, &self.s3_secret_access_key)
        else {
            anyhow::bail!(
                "--chunks {location} needs the bucket's credentials: set STRATA_S3_ACCESS_KEY_ID and \
                 STRATA_S3_SECRET_ACCESS_KEY (or s3_access_key_id and s3_secret_access_key in the config file)"
            );
        };
        if let Some(endpoint) = &self.s3_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            anyhow::bail!("--s3-endpoint must be an http:// or https:// URL, not {endpoint:?}");
        }
        Ok(ChunkBackend::S3(S3Settings::new(
            location,
            self.s3_endpoint.clone(),
            self.s3_region
                .clone()
                .unwrap_or_else(|| "us-east-1".to_owned()),
            key_id.clone(),
            secret.clone(),
        )))
    }
}

impl ChunkBackend {
    /// For the startup line: the kind and place, never a credential.
    pub fn describe(&self) -> String {
        match self {
            ChunkBackend::Embedded => "embedded (chunks/)".into(),
            ChunkBackend::S3(settings) => format!(
                "S3 {} at {}",
                settings.location,
                settings.endpoint.as_deref().unwrap_or("AWS")
            ),
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
    /// Objects in an S3 bucket.
    S3(S3ChunkStore),
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
    /// PostgreSQL and S3 adapters start tasks on it.
    pub async fn open(
        data_dir: &Path,
        metadata: &MetadataBackend,
        chunks: &ChunkBackend,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let s3 = match chunks {
            ChunkBackend::Embedded => None,
            ChunkBackend::S3(settings) => {
                Some(S3ChunkStore::connect(settings).await.with_context(|| {
                    format!("cannot open the chunk store {}", settings.location)
                })?)
            }
        };
        match (metadata, s3) {
            (MetadataBackend::Embedded, None) => {
                let store = EmbeddedStore::open(data_dir).with_context(|| {
                    format!("cannot open the data directory {}", data_dir.display())
                })?;
                Ok(Self {
                    metadata: Metadata::Embedded(store.metadata),
                    chunks: Chunks::Embedded(store.chunks),
                })
            }
            (MetadataBackend::Embedded, Some(s3)) => {
                refuse_local_chunks(data_dir)?;
                create_dir(data_dir)?;
                let store = RedbMetadataStore::open(&data_dir.join("metadata.redb"))
                    .context("cannot open metadata.redb")?;
                // The registry of a store born with S3 chunks is complete from the start.
                store.fill_chunk_registry_once(|| Ok(Vec::new()))?;
                sync_dir(data_dir)?;
                Ok(Self {
                    metadata: Metadata::Embedded(store),
                    chunks: Chunks::S3(s3),
                })
            }
            (MetadataBackend::Postgres(url), s3) => {
                let metadata = PostgresMetadataStore::connect(url)
                    .await
                    .context("cannot open the PostgreSQL metadata store")?;
                let chunks = match s3 {
                    Some(s3) => Chunks::S3(s3),
                    None => {
                        create_dir(data_dir)?;
                        Chunks::Embedded(
                            FsChunkStore::open(data_dir.join("chunks"))
                                .context("cannot open the chunk directory")?,
                        )
                    }
                };
                Ok(Self {
                    metadata: Metadata::Postgres(metadata),
                    chunks,
                })
            }
        }
    }
}

fn create_dir(data_dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// A data directory whose chunks are local files cannot switch to S3 by a flag: its
/// snapshots would name chunks the bucket does not hold. (`strata migrate` copies them.)
fn refuse_local_chunks(data_dir: &Path) -> anyhow::Result<()> {
    let chunks = data_dir.join("chunks");
    let has_files = std::fs::read_dir(&chunks)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    anyhow::ensure!(
        !has_files,
        "{} holds chunks of this data directory: they are not in the bucket, so it cannot \
         start with --chunks s3://...; copy the store with `strata migrate` instead",
        chunks.display()
    );
    Ok(())
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
        staged: view.staged,
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

    async fn pending_writes_page(
        &self,
        id: &SnapshotId,
        after: Option<BlockIndex>,
        limit: usize,
    ) -> Result<PendingWrites, StoreError> {
        on_metadata!(self, s => s.pending_writes_page(id, after, limit).await)
    }

    async fn stage_nodes(
        &self,
        id: &SnapshotId,
        roots: Vec<NodeHash>,
        nodes: Vec<(NodeHash, Vec<u8>)>,
    ) -> Result<(), SealError> {
        on_metadata!(self, s => s.stage_nodes(id, roots, nodes).await)
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

    async fn create_key(&self, key: KeyRecord) -> Result<KeyRecord, StoreError> {
        on_metadata!(self, s => s.create_key(key).await)
    }

    async fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        on_metadata!(self, s => s.key(id).await)
    }

    async fn keys(&self, owner: Option<&AccountId>) -> Result<Vec<KeyRecord>, StoreError> {
        on_metadata!(self, s => s.keys(owner).await)
    }

    async fn set_key_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Option<KeyRecord>, StoreError> {
        on_metadata!(self, s => s.set_key_enabled(id, enabled).await)
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
            Chunks::S3($store) => $call,
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

    #[test]
    fn chunk_options_name_what_is_missing_and_never_show_the_secret() {
        let embedded = ChunkOptions::default().resolve().expect("default");
        assert!(matches!(embedded, ChunkBackend::Embedded));
        let stray = ChunkOptions {
            s3_endpoint: Some("http://127.0.0.1:7480".into()),
            ..ChunkOptions::default()
        };
        let error = stray.resolve().expect_err("endpoint without s3 chunks");
        assert!(error.to_string().contains("--chunks s3://"), "{error}");
        let mut options = ChunkOptions {
            chunks: Some("s3://strata-chunks/cluster".into()),
            s3_endpoint: Some("http://127.0.0.1:7480".into()),
            ..ChunkOptions::default()
        };
        let error = options.resolve().expect_err("no credentials");
        assert!(
            error.to_string().contains("STRATA_S3_ACCESS_KEY_ID"),
            "{error}"
        );
        options.s3_access_key_id = Some("AKID".into());
        options.s3_secret_access_key = Some("hunter2".into());
        let backend = options.resolve().expect("complete");
        assert!(!format!("{backend:?} {options:?}").contains("hunter2"));
        assert_eq!(
            backend.describe(),
            "S3 s3://strata-chunks/cluster/ at http://127.0.0.1:7480"
        );
        options.chunks = Some("s3://NOT_A_BUCKET".into());
        assert!(options.resolve().is_err());
        options.chunks = Some("s3://strata-chunks".into());
        options.s3_endpoint = Some("127.0.0.1:7480".into());
        let error = options.resolve().expect_err("endpoint without scheme");
        assert!(error.to_string().contains("--s3-endpoint"), "{error}");
    }
}
