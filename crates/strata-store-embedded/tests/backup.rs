//! `backup_to` of both embedded stores: a copy taken while the stores are open holds every
//! table and exactly the chunk bytes its index names, sparse, and opens as a data directory
//! that reads every snapshot back.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_core::body::BlockHasher;
use strata_core::gc::GcOptions;
use strata_core::service::{PageRequest, StartSnapshotInput};
use strata_core::snapshot::SnapshotStatus;
use strata_core::tokens::TokenIssuer;
use strata_core::{SnapshotService, SystemClock};
use strata_store_embedded::{EmbeddedStore, FsChunkStore, RedbMetadataStore};
use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, SnapshotId};

type Service = SnapshotService<RedbMetadataStore, FsChunkStore>;

fn service_of(store: &EmbeddedStore) -> Service {
    SnapshotService::new(
        Arc::new(store.metadata.clone()),
        Arc::new(store.chunks.clone()),
        TokenIssuer::new([9; 32]),
        Arc::new(SystemClock),
    )
}

fn content(seed: u8) -> Vec<u8> {
    let mut data = vec![seed; BLOCK_SIZE];
    data[0] = seed.wrapping_mul(31);
    data[BLOCK_SIZE - 1] = 7;
    data
}

/// Start a snapshot and write `blocks` (index, content seed); complete it if `complete`.
async fn write(
    service: &Service,
    owner: &AccountId,
    blocks: &[(u32, u8)],
    complete: bool,
) -> SnapshotId {
    let input = StartSnapshotInput {
        volume_size_gib: 1,
        ..StartSnapshotInput::default()
    };
    let id = service
        .start_snapshot(owner, input)
        .await
        .expect("start")
        .id;
    for (index, seed) in blocks {
        let mut hasher = BlockHasher::default();
        assert!(hasher.update(&content(*seed)));
        let block = hasher.finish();
        let permit = service
            .begin_put(owner, &id, BlockIndex::new(*index), block.digest)
            .await
            .expect("writable");
        service.put_block(permit, block, None).await.expect("put");
    }
    if complete {
        let count = i64::try_from(blocks.len()).expect("count");
        service
            .complete_snapshot(owner, &id, count, None)
            .await
            .expect("complete");
    }
    id
}

async fn verify(service: &Service, owner: &AccountId, id: &SnapshotId, expected: &[(u32, u8)]) {
    let page = service
        .list_blocks(
            owner,
            id,
            PageRequest {
                max_results: Some(1000),
                ..PageRequest::default()
            },
        )
        .await
        .expect("list");
    let indexes: Vec<u32> = page.blocks.iter().map(|(i, _)| i.get()).collect();
    assert_eq!(
        indexes,
        expected.iter().map(|(i, _)| *i).collect::<Vec<_>>()
    );
    for ((index, token), (_, seed)) in page.blocks.iter().zip(expected) {
        let block = service
            .get_block(owner, id, *index, token)
            .await
            .expect("get");
        assert_eq!(block.data.as_ref(), content(*seed).as_slice());
    }
}

/// Bytes the file system allocated to the segment files under `chunks`, and their length.
fn segment_usage(chunks: &Path) -> (u64, u64) {
    let mut allocated = 0;
    let mut length = 0;
    for entry in std::fs::read_dir(chunks.join("segments")).expect("list") {
        let meta = entry.expect("entry").metadata().expect("stat");
        allocated += meta.blocks() * 512;
        length += meta.len();
    }
    (allocated, length)
}

#[tokio::test]
async fn a_backup_of_open_stores_reads_back_and_keeps_the_holes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = AccountId::parse("000000000000").expect("account");
    let store = EmbeddedStore::open(&dir.path().join("data")).expect("open");
    let service = service_of(&store);
    let a_blocks: Vec<(u32, u8)> = (0..40).map(|i| (i * 3, i as u8 + 1)).collect();
    let a = write(&service, &owner, &a_blocks, true).await;
    let garbage: Vec<(u32, u8)> = (0..40).map(|i| (i, 100 + i as u8)).collect();
    let c = write(&service, &owner, &garbage, true).await;
    let b_blocks = [(7, 200), (8, 201)];
    let b = write(&service, &owner, &b_blocks, true).await;
    // Pending at the backup: its writes come along and it stays pending.
    let pending = write(&service, &owner, &[(1, 210)], false).await;
    service.delete_snapshot(&owner, &c).await.expect("delete");
    let options = GcOptions {
        chunk_grace: Duration::ZERO,
    };
    let plan = service.plan_gc(options).await.expect("plan");
    assert_eq!(plan.garbage_chunks.len(), garbage.len());
    service.execute_gc(&plan).await.expect("gc");
    let (allocated, length) = segment_usage(&dir.path().join("data/chunks"));
    assert!(
        allocated < length,
        "GC punched holes: {allocated} < {length}"
    );

    let target = dir.path().join("backup");
    std::fs::create_dir(&target).expect("mkdir");
    let meta = store
        .metadata
        .backup_to(&target.join("metadata.redb"))
        .expect("metadata");
    let chunks = store
        .chunks
        .backup_to(&target.join("chunks"))
        .expect("chunks");
    assert_eq!(
        (meta.snapshots, meta.completed_snapshots),
        (3, 2),
        "{meta:?}"
    );
    let live = a_blocks.len() + b_blocks.len() + 1;
    assert_eq!(chunks.chunks, live as u64, "{chunks:?}");
    assert_eq!(chunks.chunk_bytes, (live * BLOCK_SIZE) as u64);
    // Only the live chunks were written: the copy is as sparse as the source.
    let (copy_allocated, _) = segment_usage(&target.join("chunks"));
    assert!(
        copy_allocated <= allocated && copy_allocated < (live as u64 + 8) * BLOCK_SIZE as u64,
        "copy allocates {copy_allocated} bytes, source {allocated}, live data {}",
        live * BLOCK_SIZE
    );
    // The source goes on serving while it is copied; a second copy into the same files is
    // refused rather than mixed in.
    write(&service, &owner, &[(0, 220)], true).await;
    assert!(
        store
            .metadata
            .backup_to(&target.join("metadata.redb"))
            .is_err()
    );
    assert!(store.chunks.backup_to(&target.join("chunks")).is_err());

    let copy = EmbeddedStore::open(&target).expect("the copy opens as a data directory");
    let restored = service_of(&copy);
    verify(&restored, &owner, &a, &a_blocks).await;
    verify(&restored, &owner, &b, &b_blocks).await;
    let record = restored
        .describe_snapshot(&owner, &pending)
        .await
        .expect("pending one");
    assert_eq!(record.status, SnapshotStatus::Pending);
    assert!(
        restored.describe_snapshot(&owner, &c).await.is_err(),
        "deleted before the backup"
    );
    // Nothing the copied metadata names is missing from the copied chunks.
    let report = restored
        .scrub(
            "test",
            strata_core::service::ScrubOptions {
                bytes_per_second: None,
            },
        )
        .await
        .expect("scrub")
        .expect("lease");
    assert!(
        report.chunks.is_empty() && report.nodes.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.chunks_checked, live as u64);
}

#[tokio::test]
async fn a_table_the_backup_does_not_know_fails_it() {
    const EXTRA: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("added_later");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata.redb");
    {
        let db = redb::Database::create(&path).expect("create");
        let txn = db.begin_write().expect("write");
        txn.open_table(EXTRA)
            .expect("table")
            .insert("x", 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let store = RedbMetadataStore::open(&path).expect("open");
    let target = dir.path().join("copy.redb");
    let error = store.backup_to(&target).expect_err("unknown table");
    assert!(error.to_string().contains("added_later"), "{error}");
}
