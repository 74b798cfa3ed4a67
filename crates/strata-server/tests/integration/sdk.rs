//! Thin helpers over `aws-sdk-ebs` calls used by many tests.

use aws_sdk_ebs::Client;
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};

use crate::harness::checksum;

pub async fn start(client: &Client, size_gib: i64, parent: Option<&str>) -> String {
    client
        .start_snapshot()
        .volume_size(size_gib)
        .set_parent_snapshot_id(parent.map(str::to_owned))
        .send()
        .await
        .expect("StartSnapshot")
        .snapshot_id()
        .expect("SnapshotId")
        .to_owned()
}

/// A 1 GiB snapshot with an inactivity timeout of `minutes`.
pub async fn start_with_timeout(client: &Client, minutes: i32) -> String {
    client
        .start_snapshot()
        .volume_size(1)
        .timeout(minutes)
        .send()
        .await
        .expect("StartSnapshot")
        .snapshot_id()
        .expect("SnapshotId")
        .to_owned()
}

pub async fn put(client: &Client, id: &str, index: i32, data: &[u8]) {
    put_request(client, id, index, data)
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutSnapshotBlock {id}/{index}: {e:?}"));
}

/// A PutSnapshotBlock of `data` with its checksum, ready to send.
pub fn put_request(
    client: &Client,
    id: &str,
    index: i32,
    data: &[u8],
) -> aws_sdk_ebs::operation::put_snapshot_block::builders::PutSnapshotBlockFluentBuilder {
    client
        .put_snapshot_block()
        .snapshot_id(id)
        .block_index(index)
        .block_data(ByteStream::from(data.to_vec()))
        .data_length(i32::try_from(data.len()).expect("len"))
        .checksum(checksum(data))
        .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
}

pub async fn complete(client: &Client, id: &str, count: i32, aggregate: Option<String>) {
    let mut request = client
        .complete_snapshot()
        .snapshot_id(id)
        .changed_blocks_count(count);
    if let Some(aggregate) = aggregate {
        request = request
            .checksum(aggregate)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear);
    }
    let response = request.send().await.expect("CompleteSnapshot");
    assert_eq!(response.status().map(|s| s.as_str()), Some("completed"));
}

/// Every block of a snapshot, through the SDK's paginator.
pub async fn list_all(client: &Client, id: &str, page: i32) -> Vec<(i32, String)> {
    let pages: Vec<_> = client
        .list_snapshot_blocks()
        .snapshot_id(id)
        .max_results(page)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("ListSnapshotBlocks");
    pages
        .iter()
        .flat_map(|p| p.blocks())
        .map(|b| {
            (
                b.block_index().expect("index"),
                b.block_token().expect("token").to_owned(),
            )
        })
        .collect()
}

/// Read a block and check the response headers against its bytes.
pub async fn get(client: &Client, id: &str, index: i32, token: &str) -> Vec<u8> {
    let response = client
        .get_snapshot_block()
        .snapshot_id(id)
        .block_index(index)
        .block_token(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GetSnapshotBlock {id}/{index}: {e:?}"));
    assert_eq!(response.data_length(), Some(524_288));
    assert_eq!(
        response.checksum_algorithm().map(|a| a.as_str()),
        Some("SHA256")
    );
    let expected = response.checksum().expect("checksum").to_owned();
    let data = response
        .block_data
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec();
    assert_eq!(checksum(&data), expected);
    data
}
