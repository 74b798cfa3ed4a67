//! A panic while the metadata writer applies a group (here inside a record change, which
//! is the caller's code) fails that request and leaves the writer running.

use strata_core::ports::{MetadataStore, RecordChange};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_store_embedded::RedbMetadataStore;
use strata_types::{AccountId, SnapshotId, VolumeSize};

fn record(id: &SnapshotId) -> SnapshotRecord {
    SnapshotRecord {
        lineage: id.clone(),
        id: id.clone(),
        owner: AccountId::parse("000000000000").expect("account"),
        status: SnapshotStatus::Pending,
        volume_size: VolumeSize::from_gib(1).expect("size"),
        parent: None,
        description: None,
        tags: Vec::new(),
        encrypted: false,
        kms_key_arn: None,
        encryption_key: None,
        timeout_minutes: 60,
        client_token: None,
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

#[tokio::test]
async fn a_panic_in_a_group_fails_its_request_and_later_writes_still_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RedbMetadataStore::open(&dir.path().join("m.redb")).expect("open");
    let id = SnapshotId::parse("snap-0a").expect("id");
    store.create_snapshot(record(&id)).await.expect("create");

    let panicking: RecordChange = Box::new(|_| panic!("injected panic in a record change"));
    store
        .update_snapshot(&id, panicking)
        .await
        .expect_err("the panicking request fails");

    let change: RecordChange = Box::new(|stored| {
        Some(SnapshotRecord {
            description: Some("after the panic".into()),
            ..stored.clone()
        })
    });
    let updated = store
        .update_snapshot(&id, change)
        .await
        .expect("the writer still runs");
    assert!(updated.is_some());
    let stored = store.snapshot(&id).await.expect("get").expect("exists");
    assert_eq!(stored.description.as_deref(), Some("after the panic"));
}
