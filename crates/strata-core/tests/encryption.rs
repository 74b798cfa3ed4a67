//! Encryption at rest through the service, on the memory stores: what is stored is never
//! the plaintext, reads give the plaintext back with its checksum, content is stored once
//! per key, children keep their parent's key, and a key that is unknown, foreign or
//! disabled refuses writes and reads with the modelled errors.

use std::sync::Arc;

use strata_core::checksum::linear_aggregate;
use strata_core::encryption::MasterKey;
use strata_core::ports::{ChunkStore, StoredChunk};
use strata_core::service::{AggregateChecksum, EncryptionConfig, PageRequest, StartSnapshotInput};
use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_core::tokens::TokenIssuer;
use strata_core::{ServiceError, SnapshotService, SystemClock};
use strata_store_testkit::conformance::fixtures::{account, content};
use strata_store_testkit::{MemoryChunkStore, MemoryMetadataStore};
use strata_types::{AccountId, BLOCK_SIZE, BlockIndex, ChunkDigest, SnapshotId};

type Service = SnapshotService<MemoryMetadataStore, MemoryChunkStore>;

fn service_with(by_default: bool) -> (Service, Arc<MemoryChunkStore>) {
    let chunks = Arc::new(MemoryChunkStore::new());
    let service = SnapshotService::new(
        Arc::new(MemoryMetadataStore::new()),
        Arc::clone(&chunks),
        TokenIssuer::new([1; 32]),
        Arc::new(SystemClock),
    )
    .with_encryption(EncryptionConfig {
        master: MasterKey::generate(),
        region: "eu-west-1".into(),
        by_default,
    });
    (service, chunks)
}

fn service() -> (Service, Arc<MemoryChunkStore>) {
    service_with(false)
}

fn encrypted(kms_key_arn: Option<&str>) -> StartSnapshotInput {
    StartSnapshotInput {
        volume_size_gib: 1,
        encrypted: Some(true),
        kms_key_arn: kms_key_arn.map(str::to_owned),
        ..StartSnapshotInput::default()
    }
}

fn child_of(parent: &SnapshotId) -> StartSnapshotInput {
    StartSnapshotInput {
        volume_size_gib: 1,
        parent: Some(parent.clone()),
        ..StartSnapshotInput::default()
    }
}

async fn put(
    service: &Service,
    owner: &AccountId,
    id: &SnapshotId,
    index: u32,
    data: &[u8],
) -> Result<ChunkDigest, ServiceError> {
    let permit = service
        .begin_put(owner, id, BlockIndex::new(index), ChunkDigest::of(data))
        .await?;
    let mut hasher = permit.block_hasher();
    assert!(hasher.update(data));
    service.put_block(permit, hasher.finish(), None).await
}

/// Upload `blocks` into a new snapshot started with `input` and complete it with the
/// aggregate of the plaintexts.
async fn upload(
    service: &Service,
    owner: &AccountId,
    input: StartSnapshotInput,
    blocks: &[(u32, Vec<u8>)],
) -> Result<SnapshotRecord, ServiceError> {
    let record = service.start_snapshot(owner, input).await?;
    for (index, data) in blocks {
        let checksum = put(service, owner, &record.id, *index, data).await?;
        assert_eq!(
            checksum,
            ChunkDigest::of(data),
            "Put answers the plaintext's checksum"
        );
    }
    let aggregate = linear_aggregate(
        &blocks
            .iter()
            .map(|(index, data)| (BlockIndex::new(*index), ChunkDigest::of(data)))
            .collect::<Vec<_>>(),
    );
    let count = i64::try_from(blocks.len()).expect("count");
    let status = service
        .complete_snapshot(
            owner,
            &record.id,
            count,
            Some(AggregateChecksum { digest: aggregate }),
        )
        .await?;
    assert_eq!(status, SnapshotStatus::Completed);
    Ok(record)
}

/// Every block of a completed snapshot, read through GetSnapshotBlock, with the
/// checksum each read reported.
async fn read_all(
    service: &Service,
    owner: &AccountId,
    id: &SnapshotId,
) -> Result<Vec<(u32, Vec<u8>, ChunkDigest)>, ServiceError> {
    let page = service
        .list_blocks(owner, id, PageRequest::default())
        .await?;
    let mut blocks = Vec::new();
    for (index, token) in page.blocks {
        let block = service.get_block(owner, id, index, &token).await?;
        blocks.push((index.get(), block.data.to_vec(), block.digest));
    }
    Ok(blocks)
}

async fn stored(chunks: &MemoryChunkStore) -> Vec<StoredChunk> {
    chunks.list(None, 10_000).await.expect("list")
}

#[tokio::test]
async fn an_encrypted_snapshot_stores_no_plaintext_and_reads_back_identical() {
    let (service, chunks) = service();
    let owner = account(1);
    let blocks = vec![
        (0, content(1)),
        (5, content(2)),
        (9, vec![0u8; BLOCK_SIZE]),
        (12, content(1)),
    ];
    let record = upload(&service, &owner, encrypted(None), &blocks)
        .await
        .expect("upload");
    let record = service
        .owned_snapshot(&owner, &record.id)
        .await
        .expect("record");
    assert!(record.encrypted);
    let arn = record
        .kms_key_arn
        .clone()
        .expect("the default key is reported");
    assert!(
        arn.starts_with("arn:aws:kms:eu-west-1:000000000001:key/"),
        "{arn}"
    );

    let listed = stored(&chunks).await;
    assert_eq!(
        listed.len(),
        3,
        "three non-zero blocks, one repeated at another index: an envelope is bound to its \
         index, so the repeat is an envelope of its own"
    );
    for chunk in &listed {
        let bytes = chunks
            .get(chunk.digest)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(
            bytes.len(),
            BLOCK_SIZE + strata_core::encryption::ENVELOPE_OVERHEAD
        );
        for (_, plaintext) in &blocks[..2] {
            assert!(
                !bytes.windows(32).any(|w| w == &plaintext[100..132]),
                "a stored chunk holds plaintext"
            );
            assert_ne!(chunk.digest, ChunkDigest::of(plaintext));
        }
    }
    let read = read_all(&service, &owner, &record.id).await.expect("read");
    assert_eq!(read.len(), blocks.len());
    for ((index, data, digest), (want_index, want)) in read.iter().zip(&blocks) {
        assert_eq!(index, want_index);
        assert!(data == want, "block {index} reads back as written");
        assert_eq!(
            *digest,
            ChunkDigest::of(want),
            "the checksum of the plaintext"
        );
    }
}

#[tokio::test]
async fn content_is_stored_once_per_key_and_never_shared_between_keys() {
    let (service, chunks) = service();
    let owner = account(1);
    let blocks = vec![(0, content(7)), (1, content(8))];
    upload(&service, &owner, encrypted(None), &blocks)
        .await
        .expect("first");
    upload(&service, &owner, encrypted(None), &blocks)
        .await
        .expect("same key again");
    assert_eq!(
        stored(&chunks).await.len(),
        2,
        "the same key stores content once"
    );

    let key = service
        .create_key(&owner, Some("second".into()))
        .await
        .expect("create");
    upload(&service, &owner, encrypted(Some(&key.arn)), &blocks)
        .await
        .expect("second key");
    assert_eq!(
        stored(&chunks).await.len(),
        4,
        "another key stores its own envelopes"
    );
    let plain = StartSnapshotInput {
        volume_size_gib: 1,
        ..StartSnapshotInput::default()
    };
    upload(&service, &owner, plain, &blocks)
        .await
        .expect("plaintext");
    assert_eq!(
        stored(&chunks).await.len(),
        6,
        "and plaintext is not shared either"
    );
    let keys = service.list_keys(Some(&owner)).await.expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k.account_default).count(), 1);
}

#[tokio::test]
async fn children_of_an_encrypted_parent_stay_encrypted_under_its_key() {
    let (service, _chunks) = service();
    let owner = account(1);
    let parent = upload(
        &service,
        &owner,
        encrypted(None),
        &[(0, content(1)), (1, content(2))],
    )
    .await
    .expect("parent");
    let parent = service
        .owned_snapshot(&owner, &parent.id)
        .await
        .expect("record");
    let child = upload(&service, &owner, child_of(&parent.id), &[(1, content(3))])
        .await
        .expect("child");
    let child = service
        .owned_snapshot(&owner, &child.id)
        .await
        .expect("record");
    assert!(child.encrypted);
    assert_eq!(child.kms_key_arn, parent.kms_key_arn);
    let read = read_all(&service, &owner, &child.id).await.expect("read");
    let contents: Vec<_> = read.into_iter().map(|(i, data, _)| (i, data)).collect();
    assert!(contents == vec![(0, content(1)), (1, content(3))]);
    let changed = service
        .list_changed_blocks(&owner, Some(&parent.id), &child.id, PageRequest::default())
        .await
        .expect("diff");
    let indexes: Vec<u32> = changed.blocks.iter().map(|b| b.index.get()).collect();
    assert_eq!(indexes, vec![1]);

    let other = service.create_key(&owner, None).await.expect("create");
    let mut input = child_of(&parent.id);
    input.kms_key_arn = Some(other.arn.clone());
    let error = service
        .start_snapshot(&owner, input)
        .await
        .expect_err("other key");
    assert!(
        matches!(error, ServiceError::InvalidCustomerKey(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_disabled_key_refuses_writes_and_reads_until_it_is_enabled() {
    let (service, _chunks) = service();
    let owner = account(1);
    let done = upload(&service, &owner, encrypted(None), &[(0, content(1))])
        .await
        .expect("upload");
    let done = service
        .owned_snapshot(&owner, &done.id)
        .await
        .expect("record");
    let arn = done.kms_key_arn.clone().expect("arn");
    let pending = service
        .start_snapshot(&owner, encrypted(None))
        .await
        .expect("pending");
    let page = service
        .list_blocks(&owner, &done.id, PageRequest::default())
        .await
        .expect("list");
    let (index, token) = page.blocks[0].clone();

    let disabled = service.set_key_enabled(&arn, false).await.expect("disable");
    assert!(!disabled.enabled);
    let read = service.get_block(&owner, &done.id, index, &token).await;
    assert!(
        matches!(&read, Err(ServiceError::InvalidCustomerKey(m)) if m.contains("disabled")),
        "{read:?}"
    );
    let write = put(&service, &owner, &pending.id, 0, &content(2)).await;
    assert!(
        matches!(write, Err(ServiceError::InvalidCustomerKey(_))),
        "{write:?}"
    );
    let start = service.start_snapshot(&owner, encrypted(Some(&arn))).await;
    assert!(
        matches!(start, Err(ServiceError::InvalidCustomerKey(_))),
        "{start:?}"
    );

    service.set_key_enabled(&arn, true).await.expect("enable");
    let block = service
        .get_block(&owner, &done.id, index, &token)
        .await
        .expect("readable again");
    assert!(block.data.as_ref() == content(1).as_slice());
    put(&service, &owner, &pending.id, 0, &content(2))
        .await
        .expect("writable again");
}

#[tokio::test]
async fn unknown_foreign_and_unusable_keys_are_refused_with_the_modelled_errors() {
    let (service, _chunks) = service();
    let owner = account(1);
    let unknown = "arn:aws:kms:eu-west-1:000000000001:key/00000000-0000-4000-8000-000000000000";
    let error = service
        .start_snapshot(&owner, encrypted(Some(unknown)))
        .await
        .expect_err("unknown");
    assert!(
        matches!(error, ServiceError::InvalidCustomerKey(_)),
        "{error:?}"
    );

    let theirs = service.create_key(&account(2), None).await.expect("create");
    let error = service
        .start_snapshot(&owner, encrypted(Some(&theirs.arn)))
        .await
        .expect_err("foreign");
    assert!(
        matches!(error, ServiceError::KeyAccessDenied(_)),
        "{error:?}"
    );
    // The right id under a wrong ARN (another account or region) is not that key.
    let moved = theirs.arn.replace(":000000000002:", ":000000000001:");
    let error = service
        .start_snapshot(&owner, encrypted(Some(&moved)))
        .await
        .expect_err("moved");
    assert!(
        matches!(error, ServiceError::InvalidCustomerKey(_)),
        "{error:?}"
    );

    let mut unencrypted_with_key = encrypted(Some(&theirs.arn));
    unencrypted_with_key.encrypted = Some(false);
    let error = service
        .start_snapshot(&owner, unencrypted_with_key)
        .await
        .expect_err("key without encryption");
    assert!(
        matches!(error, ServiceError::InvalidParameter(_)),
        "{error:?}"
    );

    let no_master = SnapshotService::new(
        Arc::new(MemoryMetadataStore::new()),
        Arc::new(MemoryChunkStore::new()),
        TokenIssuer::new([1; 32]),
        Arc::new(SystemClock),
    );
    let error = no_master
        .start_snapshot(&owner, encrypted(None))
        .await
        .expect_err("no master key");
    assert!(
        matches!(&error, ServiceError::InvalidCustomerKey(m) if m.contains("--master-key-file")),
        "{error:?}"
    );
}

#[tokio::test]
async fn encryption_by_default_encrypts_unasked_and_refuses_unencrypted_parents() {
    let (plain_service, _) = service();
    let owner = account(1);
    let plain = StartSnapshotInput {
        volume_size_gib: 1,
        ..StartSnapshotInput::default()
    };
    let record = plain_service
        .start_snapshot(&owner, plain.clone())
        .await
        .expect("start");
    assert!(!record.encrypted && record.encryption_key.is_none());

    let (service, chunks) = service_with(true);
    let parent = service
        .start_snapshot(&owner, plain.clone())
        .await
        .expect("start");
    assert!(parent.encrypted && parent.encryption_key.is_some());
    put(&service, &owner, &parent.id, 0, &content(4))
        .await
        .expect("put");
    let listed = stored(&chunks).await;
    assert_ne!(
        listed[0].digest,
        ChunkDigest::of(&content(4)),
        "stored encrypted"
    );
    let mut asked_not_to = plain;
    asked_not_to.encrypted = Some(false);
    let record = service
        .start_snapshot(&owner, asked_not_to)
        .await
        .expect("start");
    assert!(
        record.encrypted,
        "encryption by default cannot be turned off per request"
    );

    // A parent stored unencrypted (before the switch) cannot have children now.
    let (unswitched, _) = service_with(false);
    let old = upload(
        &unswitched,
        &owner,
        StartSnapshotInput {
            volume_size_gib: 1,
            ..StartSnapshotInput::default()
        },
        &[(0, content(1))],
    )
    .await
    .expect("old");
    let switched = unswitched.with_encryption(EncryptionConfig {
        master: MasterKey::generate(),
        region: "eu-west-1".into(),
        by_default: true,
    });
    let error = switched
        .start_snapshot(&owner, child_of(&old.id))
        .await
        .expect_err("unencrypted parent");
    assert!(
        matches!(error, ServiceError::InvalidParameter(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_wrong_aggregate_is_still_refused_for_an_encrypted_snapshot() {
    let (service, _chunks) = service();
    let owner = account(1);
    let record = service
        .start_snapshot(&owner, encrypted(None))
        .await
        .expect("start");
    put(&service, &owner, &record.id, 0, &content(1))
        .await
        .expect("put");
    put(&service, &owner, &record.id, 1, &content(2))
        .await
        .expect("put");
    let wrong = linear_aggregate(&[
        (BlockIndex::new(0), ChunkDigest::of(&content(2))),
        (BlockIndex::new(1), ChunkDigest::of(&content(1))),
    ]);
    let error = service
        .complete_snapshot(
            &owner,
            &record.id,
            2,
            Some(AggregateChecksum { digest: wrong }),
        )
        .await
        .expect_err("wrong aggregate");
    assert!(
        matches!(error, ServiceError::AggregateChecksumMismatch { .. }),
        "{error:?}"
    );
}
