//! What the redb metadata adapter adds to the port's contract (whose conformance cases run
//! in `conformance.rs`): grouped, durable writes across a reopen; plus the service's
//! behaviour when a seal keeps racing with block writes.

use std::sync::Arc;

use strata_core::body::BlockHasher;
use strata_core::encryption::{KeyRecord, MasterKey};
use strata_core::ports::{BlockWrite, MetadataStore, StoreError};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_core::tokens::TokenIssuer;
use strata_core::{ServiceError, SnapshotService, SystemClock};
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore};
use strata_store_testkit::{Faults, FaultyMetadata, Op};
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
        encryption_key: None,
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
        stored_size: Some(1),
        checksum: None,
    }
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
        // Grouped: one commit per write would make this 500 (plus the create).
        let groups = store.write_groups();
        assert!(groups < 250, "{groups} write groups for 501 writes");
    }
    // Dropping the store released the file: it reopens at once, with every write.
    let store = RedbMetadataStore::open(&path).expect("reopen");
    let id = SnapshotId::parse("snap-0a").expect("id");
    let pending = store.pending_writes(&id).await.expect("pending");
    assert_eq!(pending.blocks.len(), 500);
    assert_eq!(pending.sequence, 500);
}

/// Keys and pending checksums are in the file, not only in memory: after a reopen the
/// keys read back as created (a disabled one still disabled), and the pending writes
/// carry their checksums (a rewrite without one having removed its index's).
#[tokio::test]
async fn keys_and_pending_checksums_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.redb");
    let master = MasterKey::generate();
    let key = |id: &str| {
        KeyRecord::create(
            &master,
            id.into(),
            "us-east-1",
            account(),
            Some(format!("key {id}")),
            false,
            1,
        )
    };
    let (kept, disabled) = (key("k1"), key("k2"));
    {
        let store = RedbMetadataStore::open(&path).expect("open");
        store
            .create_snapshot(record("snap-0a", None))
            .await
            .expect("create");
        for (index, seed, checksum) in [(3, 1, Some([7; 32])), (4, 2, Some([8; 32])), (4, 3, None)]
        {
            let checked = BlockWrite {
                checksum,
                ..write("snap-0a", index, seed)
            };
            store.record_block(checked).await.expect("write");
        }
        for created in [&kept, &disabled] {
            store.create_key(created.clone()).await.expect("create key");
        }
        store
            .set_key_enabled("k2", false)
            .await
            .expect("disable")
            .expect("exists");
    }
    let store = RedbMetadataStore::open(&path).expect("reopen");
    let id = SnapshotId::parse("snap-0a").expect("id");
    let pending = store.pending_writes(&id).await.expect("pending");
    assert_eq!(pending.blocks.len(), 2);
    assert_eq!(pending.checksums, vec![(BlockIndex::new(3), [7; 32])]);
    let disabled = KeyRecord {
        enabled: false,
        ..disabled
    };
    assert_eq!(
        store.keys(None).await.expect("keys"),
        vec![kept.clone(), disabled]
    );
    assert_eq!(
        store.create_key(key("k1")).await.expect("create again"),
        kept,
        "the key stored before the reopen wins"
    );
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

/// Put block 0 of `id` (always the same content).
async fn put_block_zero<M: MetadataStore>(
    service: &SnapshotService<M, FsChunkStore>,
    owner: &AccountId,
    id: &SnapshotId,
) {
    let mut hasher = BlockHasher::default();
    assert!(hasher.update(&vec![7u8; strata_types::BLOCK_SIZE]));
    let block = hasher.finish();
    let permit = service
        .begin_put(owner, id, BlockIndex::new(0), block.digest)
        .await
        .expect("writable");
    service.put_block(permit, block, None).await.expect("put");
}

/// CompleteSnapshot while the first `races` seals really race: each is held at a gate
/// until block 0 has been written again (same content, so the count still matches).
async fn complete_with_races(races: usize) -> Result<SnapshotStatus, ServiceError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let faults = Faults::new();
    let metadata = FaultyMetadata::new(store.metadata, faults.clone());
    let (service, owner, id) = service_with_snapshot(metadata, store.chunks).await;
    put_block_zero(&service, &owner, &id).await;
    let gates: Vec<_> = (1..=races)
        .map(|n| faults.gate(Op::SealSnapshot, n))
        .collect();
    let racer = {
        let (service, owner, id) = (service.clone(), owner.clone(), id.clone());
        tokio::spawn(async move {
            for gate in gates {
                gate.reached().await;
                put_block_zero(&service, &owner, &id).await;
                gate.open();
            }
        })
    };
    let outcome = service.complete_snapshot(&owner, &id, 1, None).await;
    // Beyond the service's attempts, the remaining gates are never reached.
    racer.abort();
    outcome
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
