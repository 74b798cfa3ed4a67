//! `backup_to` of both embedded stores: a copy taken while the stores are open holds every
//! table and exactly the chunk bytes its index names, sparse, and opens as a data directory
//! that reads every snapshot back.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_core::gc::GcOptions;
use strata_core::snapshot::SnapshotStatus;
use strata_core::tokens::TokenIssuer;
use strata_core::{SnapshotService, SystemClock};
use strata_store_embedded::{EmbeddedStore, RedbMetadataStore};
use strata_types::{AccountId, BLOCK_SIZE};

use common::{Service, verify, write};

fn service_of(store: &EmbeddedStore) -> Service {
    SnapshotService::new(
        Arc::new(store.metadata.clone()),
        Arc::new(store.chunks.clone()),
        TokenIssuer::new([9; 32]),
        Arc::new(SystemClock),
    )
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
    let a = write(&service, &owner, None, &a_blocks, true).await;
    let garbage: Vec<(u32, u8)> = (0..40).map(|i| (i, 100 + i as u8)).collect();
    let c = write(&service, &owner, None, &garbage, true).await;
    let b_blocks = [(7, 200), (8, 201)];
    let b = write(&service, &owner, None, &b_blocks, true).await;
    // Pending at the backup: its writes come along and it stays pending.
    let pending = write(&service, &owner, None, &[(1, 210)], false).await;
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
    write(&service, &owner, None, &[(0, 220)], true).await;
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
