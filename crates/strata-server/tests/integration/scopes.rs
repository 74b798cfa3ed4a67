//! Access keys with an allow list of operations: a read-only key (as a restore job gets)
//! reads through aws-sdk-ebs and is refused every write with `AccessDeniedException`; on
//! the EC2 API with `UnauthorizedOperation`; on the admin API with
//! `AccessDeniedException`. Keys of the config file are reloaded without a restart.

use std::collections::BTreeSet;
use std::sync::Arc;

use aws_sdk_ebs::primitives::ByteStream;
use strata_server::credentials::AccessKey;
use strata_types::AccountId;

use crate::harness::{BLOCK, Harness, RawRequest, block, checksum};
use crate::sdk::{complete, put, start};

const READER_KEY: &str = "AKIDRESTOREJOB";
const READER_SECRET: &str = "restore-job-secret";
const READ_ONLY: [&str; 4] = [
    "ListSnapshotBlocks",
    "ListChangedBlocks",
    "GetSnapshotBlock",
    "DescribeSnapshots",
];

fn with_reader() -> Harness {
    Harness::with_settings(|settings| {
        let allow: BTreeSet<String> = READ_ONLY.iter().map(|s| (*s).to_owned()).collect();
        settings.extra_keys.push(AccessKey {
            allow: Some(Arc::new(allow)),
            ..AccessKey::new(
                READER_KEY.into(),
                READER_SECRET.into(),
                AccountId::parse("000000000000").expect("root account"),
            )
        });
    })
}

fn is_access_denied<E: std::fmt::Debug>(error: &aws_sdk_ebs::error::SdkError<E>) -> bool {
    let text = format!("{error:?}");
    text.contains("AccessDeniedException") && text.contains("UnauthorizedAccount")
}

#[tokio::test]
async fn a_read_only_key_reads_and_is_refused_writes() {
    let harness = with_reader();
    let root = harness.client();
    let parent = start(&root, 1, None).await;
    put(&root, &parent, 3, &block(3)).await;
    complete(&root, &parent, 1, None).await;
    let child = start(&root, 1, Some(&parent)).await;
    put(&root, &child, 4, &block(4)).await;
    complete(&root, &child, 1, None).await;
    let pending = start(&root, 1, None).await;

    let reader = harness.client_as(READER_KEY, READER_SECRET);
    // Reads: the snapshots of its account.
    let listed = reader
        .list_snapshot_blocks()
        .snapshot_id(&parent)
        .send()
        .await
        .expect("ListSnapshotBlocks with the read-only key");
    let token = listed.blocks()[0].block_token().expect("token").to_owned();
    let got = reader
        .get_snapshot_block()
        .snapshot_id(&parent)
        .block_index(3)
        .block_token(token)
        .send()
        .await
        .expect("GetSnapshotBlock with the read-only key");
    let data = got.block_data.collect().await.expect("body").into_bytes();
    assert_eq!(data.as_ref(), block(3).as_slice());
    let changed = reader
        .list_changed_blocks()
        .first_snapshot_id(&parent)
        .second_snapshot_id(&child)
        .send()
        .await
        .expect("ListChangedBlocks with the read-only key");
    assert_eq!(changed.changed_blocks().len(), 1);

    // Writes: refused, and nothing happens.
    let refused = reader
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect_err("StartSnapshot is not in the allow list");
    assert!(is_access_denied(&refused), "{refused:?}");
    let data = block(9);
    let refused = reader
        .put_snapshot_block()
        .snapshot_id(&pending)
        .block_index(0)
        .block_data(ByteStream::from(data.clone()))
        .data_length(i32::try_from(BLOCK).expect("fits"))
        .checksum(checksum(&data))
        .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .send()
        .await
        .expect_err("PutSnapshotBlock is not in the allow list");
    assert!(is_access_denied(&refused), "{refused:?}");
    let refused = reader
        .complete_snapshot()
        .snapshot_id(&pending)
        .changed_blocks_count(0)
        .send()
        .await
        .expect_err("CompleteSnapshot is not in the allow list");
    assert!(is_access_denied(&refused), "{refused:?}");
    let blocks = root
        .list_snapshot_blocks()
        .snapshot_id(&pending)
        .send()
        .await;
    // The pending snapshot got no block (and is still pending: not listable yet, or empty).
    if let Ok(blocks) = blocks {
        assert!(blocks.blocks().is_empty());
    }

    // The same key with the raw wire form: status, type and reason.
    let raw = RawRequest {
        credentials: Some((READER_KEY.into(), READER_SECRET.into())),
        ..RawRequest::new("POST", "/snapshots")
            .header("content-type", "application/json")
            .body(br#"{"VolumeSize":1}"#.to_vec())
    };
    let response = harness.raw(raw).await;
    response.assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    assert!(
        response.json()["Message"]
            .as_str()
            .is_some_and(|m| m.contains("ebs:StartSnapshot")),
        "{:?}",
        response.json()
    );
}

#[tokio::test]
async fn a_read_only_key_may_describe_but_not_delete_or_tag_on_ec2_nor_use_the_admin_api() {
    let harness = with_reader();
    let root = harness.client();
    let id = start(&root, 1, None).await;
    complete(&root, &id, 0, None).await;
    let as_reader = |raw: RawRequest| RawRequest {
        credentials: Some((READER_KEY.into(), READER_SECRET.into())),
        ..raw
    };
    let described = harness
        .raw(as_reader(RawRequest::ec2(&[
            ("Action", "DescribeSnapshots"),
            ("SnapshotId.1", &id),
        ])))
        .await;
    assert_eq!(described.status, 200, "{:?}", described.body);
    for params in [
        vec![("Action", "DeleteSnapshot"), ("SnapshotId", id.as_str())],
        vec![
            ("Action", "CreateTags"),
            ("ResourceId.1", id.as_str()),
            ("Tag.1.Key", "k"),
            ("Tag.1.Value", "v"),
        ],
    ] {
        harness
            .raw(as_reader(RawRequest::ec2(&params)))
            .await
            .assert_ec2_error(403, "UnauthorizedOperation");
    }
    // Still there: the refused delete did nothing.
    let described = harness
        .raw(RawRequest::ec2(&[
            ("Action", "DescribeSnapshots"),
            ("SnapshotId.1", &id),
        ]))
        .await;
    assert_eq!(described.status, 200);
    assert!(String::from_utf8_lossy(&described.body).contains(&id));

    harness
        .raw(as_reader(RawRequest::admin("GET", "/snapshots")))
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    // The root key, unscoped, still may.
    assert_eq!(
        harness
            .raw(RawRequest::admin("GET", "/snapshots"))
            .await
            .status,
        200
    );
}
