//! The metadata store's contract (`strata_core::ports::MetadataStore`), checked on the redb
//! adapter, plus the service's behaviour when a seal keeps racing with block writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use strata_core::block_map::{self, NodeSource};
use strata_core::body::BlockHasher;
use strata_core::ports::{
    BlockWrite, CreateOutcome, MetadataStore, PendingWrites, RecordBlockError, Seal, SealError,
    StoreError,
};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_core::tokens::TokenIssuer;
use strata_core::{ServiceError, SnapshotService, SystemClock};
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore};
use strata_types::{AccountId, BlockIndex, ChunkDigest, SnapshotId, VolumeSize};

fn account() -> AccountId {
    AccountId::parse("000000000000").expect("account")
}

fn record(id: &str, token: Option<&str>) -> SnapshotRecord {
    let id = SnapshotId::parse(id).expect("id");
    SnapshotRecord {
        lineage: id.clone(),
        id,
        owner: account(),
        status: SnapshotStatus::Pending,
        volume_size: VolumeSize::from_gib(1).expect("size"),
        parent: None,
        description: None,
        tags: Vec::new(),
        encrypted: false,
        kms_key_arn: None,
        timeout_minutes: 60,
        client_token: token.map(str::to_owned),
        start_fingerprint: "f".into(),
        start_time_ms: 0,
        last_activity_ms: 0,
        completion_time_ms: None,
        progress: None,
        write_sequence: 0,
        changed_blocks: 0,
        root: None,
        base_root: None,
        status_message: None,
    }
}

fn write(id: &str, index: u32, seed: u8) -> BlockWrite {
    BlockWrite {
        snapshot: SnapshotId::parse(id).expect("id"),
        index: BlockIndex::new(index),
        digest: ChunkDigest::of(&[seed]),
        progress: Some(seed),
        at_ms: i64::from(seed),
    }
}

#[tokio::test]
async fn records_client_tokens_and_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbMetadataStore::open(&dir.path().join("m.redb")).expect("open");
    let a = record("snap-0a", Some("tok"));
    assert!(matches!(
        store.create_snapshot(a.clone()).await.expect("create"),
        CreateOutcome::Created
    ));
    match store
        .create_snapshot(record("snap-0b", Some("tok")))
        .await
        .expect("create")
    {
        CreateOutcome::ClientTokenExists(existing) => assert_eq!(existing.id, a.id),
        CreateOutcome::Created => panic!("the token was reused"),
    }
    assert!(store.snapshot(&a.id).await.expect("get").is_some());
    assert!(
        store
            .snapshot(&SnapshotId::parse("snap-0b").expect("id"))
            .await
            .expect("get")
            .is_none()
    );

    store
        .record_block(write("snap-0a", 5, 1))
        .await
        .expect("write");
    store
        .record_block(write("snap-0a", 2, 2))
        .await
        .expect("write");
    store
        .record_block(write("snap-0a", 5, 3))
        .await
        .expect("overwrite");
    let pending = store.pending_writes(&a.id).await.expect("pending");
    assert_eq!(pending.sequence, 3);
    assert_eq!(
        pending.blocks,
        vec![
            (BlockIndex::new(2), ChunkDigest::of(&[2])),
            (BlockIndex::new(5), ChunkDigest::of(&[3])),
        ]
    );
    let stored = store.snapshot(&a.id).await.expect("get").expect("exists");
    assert_eq!(stored.progress, Some(3));
    assert_eq!(stored.last_activity_ms, 3);
    assert!(matches!(
        store.record_block(write("snap-0c", 1, 1)).await,
        Err(RecordBlockError::NotFound)
    ));
}

#[tokio::test]
async fn seal_is_atomic_and_detects_races() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbMetadataStore::open(&dir.path().join("m.redb")).expect("open");
    let a = record("snap-0a", None);
    store.create_snapshot(a.clone()).await.expect("create");
    store
        .record_block(write("snap-0a", 1, 1))
        .await
        .expect("write");
    let pending = store.pending_writes(&a.id).await.expect("pending");
    let update = block_map::apply(&store.nodes().expect("nodes"), None, &pending.blocks, 2048)
        .expect("tree");
    let sealed = SnapshotRecord {
        status: SnapshotStatus::Completed,
        root: update.root,
        changed_blocks: 1,
        ..a.clone()
    };
    // A write after the tree was built makes the seal fail…
    store
        .record_block(write("snap-0a", 2, 2))
        .await
        .expect("write");
    let raced = store
        .seal_snapshot(Seal {
            expected_sequence: pending.sequence,
            record: sealed.clone(),
            new_nodes: update.new_nodes.clone(),
            written_ms: 1,
        })
        .await;
    assert!(matches!(raced, Err(SealError::Raced)));
    assert!(
        store
            .nodes()
            .expect("nodes")
            .load(&update.root.expect("root"))
            .is_err(),
        "a failed seal stores no node"
    );
    // …and a seal with the current sequence succeeds, atomically.
    let PendingWrites { sequence, .. } = store.pending_writes(&a.id).await.expect("pending");
    store
        .seal_snapshot(Seal {
            expected_sequence: sequence,
            record: sealed.clone(),
            new_nodes: update.new_nodes.clone(),
            written_ms: 1,
        })
        .await
        .expect("seal");
    let stored = store.snapshot(&a.id).await.expect("get").expect("exists");
    assert_eq!(stored.status, SnapshotStatus::Completed);
    assert!(
        store
            .pending_writes(&a.id)
            .await
            .expect("pending")
            .blocks
            .is_empty()
    );
    let nodes = store.nodes().expect("nodes");
    assert_eq!(
        block_map::lookup(&nodes, stored.root, BlockIndex::new(1)).expect("lookup"),
        Some(ChunkDigest::of(&[1]))
    );
    // A completed snapshot takes no more writes and no second seal.
    assert!(matches!(
        store.record_block(write("snap-0a", 3, 3)).await,
        Err(RecordBlockError::NotPending(_))
    ));
    assert!(matches!(
        store
            .seal_snapshot(Seal {
                expected_sequence: sequence,
                record: sealed,
                new_nodes: Vec::new(),
                written_ms: 1,
            })
            .await,
        Err(SealError::NotPending)
    ));
    // Deleting removes the record and frees the client token; nodes stay for GC.
    assert!(store.delete_snapshot(&a.id).await.expect("delete"));
    assert!(store.snapshot(&a.id).await.expect("get").is_none());
    assert!(!store.delete_snapshot(&a.id).await.expect("delete again"));
    assert!(nodes.load(&stored.root.expect("root")).is_ok());
}

#[tokio::test]
async fn concurrent_writes_are_grouped_and_all_durable_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.redb");
    {
        let store = RedbMetadataStore::open(&path).expect("open");
        store
            .create_snapshot(record("snap-0a", None))
            .await
            .expect("create");
        let tasks: Vec<_> = (0..500u32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { store.record_block(write("snap-0a", i, 1)).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("task").expect("write");
        }
    }
    // Dropping the store released the file: it reopens at once, with every write.
    let store = RedbMetadataStore::open(&path).expect("reopen");
    let id = SnapshotId::parse("snap-0a").expect("id");
    let pending = store.pending_writes(&id).await.expect("pending");
    assert_eq!(pending.blocks.len(), 500);
    assert_eq!(pending.sequence, 500);
}

/// A metadata store whose seals race with writes a given number of times.
struct RacingStore {
    inner: RedbMetadataStore,
    races_left: AtomicUsize,
}

impl MetadataStore for RacingStore {
    type Nodes = <RedbMetadataStore as MetadataStore>::Nodes;

    async fn create_snapshot(&self, record: SnapshotRecord) -> Result<CreateOutcome, StoreError> {
        self.inner.create_snapshot(record).await
    }
    async fn snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, StoreError> {
        self.inner.snapshot(id).await
    }
    async fn update_snapshot(
        &self,
        id: &SnapshotId,
        change: strata_core::ports::RecordChange,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        self.inner.update_snapshot(id, change).await
    }
    async fn delete_snapshot(&self, id: &SnapshotId) -> Result<bool, StoreError> {
        self.inner.delete_snapshot(id).await
    }
    async fn gc_view(&self) -> Result<strata_core::ports::GcView<Self::Nodes>, StoreError> {
        self.inner.gc_view().await
    }
    async fn delete_nodes(
        &self,
        hashes: Vec<strata_core::block_map::NodeHash>,
        before: i64,
    ) -> Result<usize, StoreError> {
        self.inner.delete_nodes(hashes, before).await
    }
    async fn drop_pending_writes(&self, ids: Vec<SnapshotId>) -> Result<usize, StoreError> {
        self.inner.drop_pending_writes(ids).await
    }
    async fn record_block(&self, write: BlockWrite) -> Result<(), RecordBlockError> {
        self.inner.record_block(write).await
    }
    async fn pending_writes(&self, id: &SnapshotId) -> Result<PendingWrites, StoreError> {
        self.inner.pending_writes(id).await
    }
    async fn seal_snapshot(&self, seal: Seal) -> Result<(), SealError> {
        let raced = self
            .races_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if raced {
            Err(SealError::Raced)
        } else {
            self.inner.seal_snapshot(seal).await
        }
    }
    fn nodes(&self) -> Result<Self::Nodes, StoreError> {
        self.inner.nodes()
    }
    async fn list_snapshots(
        &self,
        owner: Option<&AccountId>,
    ) -> Result<Vec<SnapshotRecord>, StoreError> {
        self.inner.list_snapshots(owner).await
    }
}

/// A service over `metadata` and `chunks`, with one pending 1 GiB snapshot.
async fn service_with_snapshot<M: MetadataStore>(
    metadata: M,
    chunks: FsChunkStore,
) -> (SnapshotService<M, FsChunkStore>, AccountId, SnapshotId) {
    let service = SnapshotService::new(
        Arc::new(metadata),
        Arc::new(chunks),
        TokenIssuer::new([0; 32]),
        Arc::new(SystemClock),
    );
    let owner = account();
    let snapshot = service
        .start_snapshot(
            &owner,
            strata_core::service::StartSnapshotInput {
                volume_size_gib: 1,
                ..Default::default()
            },
        )
        .await
        .expect("start");
    (service, owner, snapshot.id)
}

async fn complete_with_races(races: usize) -> Result<SnapshotStatus, ServiceError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let metadata = RacingStore {
        inner: store.metadata,
        races_left: AtomicUsize::new(races),
    };
    let (service, owner, id) = service_with_snapshot(metadata, store.chunks).await;
    let mut hasher = BlockHasher::default();
    assert!(hasher.update(&vec![7u8; strata_types::BLOCK_SIZE]));
    let block = hasher.finish();
    let digest = block.digest;
    let permit = service
        .begin_put(&owner, &id, BlockIndex::new(0), digest)
        .await
        .expect("writable");
    service.put_block(permit, block, None).await.expect("put");
    service.complete_snapshot(&owner, &id, 1, None).await
}

#[tokio::test]
async fn complete_retries_a_raced_seal_then_reports_conflicting_updates() {
    assert_eq!(
        complete_with_races(2)
            .await
            .expect("completes after two races"),
        SnapshotStatus::Completed
    );
    assert!(matches!(
        complete_with_races(100).await,
        Err(ServiceError::ConflictingBlockUpdate(_))
    ));
}

/// New content must come with its body: a block read with a hasher that kept nothing
/// (the one for content already stored) is refused as an internal error, and nothing is
/// stored or recorded; with the hasher the permit asks for, the same put succeeds.
#[tokio::test]
async fn new_content_is_refused_without_its_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let (service, owner, id) = service_with_snapshot(store.metadata, store.chunks).await;
    let data = vec![3u8; strata_types::BLOCK_SIZE];
    let digest = ChunkDigest::of(&data);
    let hashed = |mut hasher: BlockHasher| {
        assert!(hasher.update(&data));
        hasher.finish()
    };

    let permit = service
        .begin_put(&owner, &id, BlockIndex::new(0), digest)
        .await
        .expect("writable");
    let error = service
        .put_block(permit, hashed(BlockHasher::discarding()), None)
        .await
        .expect_err("no body to store");
    assert!(
        matches!(&error, ServiceError::Store(StoreError::Backend(why)) if why.contains("not kept")),
        "{error:?}"
    );
    assert!(
        service
            .metadata()
            .pending_writes(&id)
            .await
            .expect("pending")
            .blocks
            .is_empty()
    );

    let permit = service
        .begin_put(&owner, &id, BlockIndex::new(0), digest)
        .await
        .expect("writable");
    let hasher = permit.block_hasher();
    service
        .put_block(permit, hashed(hasher), None)
        .await
        .expect("put with the body");
    assert_eq!(
        service
            .complete_snapshot(&owner, &id, 1, None)
            .await
            .expect("complete"),
        SnapshotStatus::Completed
    );
}
