//! The six operations through `aws-sdk-ebs`: every field, round trips, paging,
//! idempotency, concurrency and the inactivity timeout.

use std::time::Duration;

use aws_sdk_ebs::error::ProvideErrorMetadata;
use aws_sdk_ebs::types::Tag;

use crate::harness::{BLOCK, Harness, block, linear};
use crate::sdk::{complete, get, list_all, put, start, start_with_timeout};

#[tokio::test]
async fn start_snapshot_reports_every_field() {
    let harness = Harness::new();
    let client = harness.client();
    let before = harness.clock.system_time();
    let response = client
        .start_snapshot()
        .volume_size(8)
        .description("disk.img")
        .tags(Tag::builder().key("team").value("storage").build())
        .tags(Tag::builder().key("empty").value("").build())
        .timeout(10)
        .client_token("token-1")
        .send()
        .await
        .expect("StartSnapshot");
    let id = response.snapshot_id().expect("id");
    assert!(id.starts_with("snap-") && id.len() == 22, "{id}");
    assert_eq!(response.owner_id(), Some("000000000000"));
    assert_eq!(response.status().map(|s| s.as_str()), Some("pending"));
    assert_eq!(response.volume_size(), Some(8));
    assert_eq!(response.block_size(), Some(524_288));
    assert_eq!(response.description(), Some("disk.img"));
    assert_eq!(response.sse_type().map(|s| s.as_str()), Some("none"));
    let tags: Vec<_> = response
        .tags()
        .iter()
        .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
        .collect();
    assert_eq!(tags, vec![("team", "storage"), ("empty", "")]);
    let started = response.start_time().expect("StartTime");
    let started =
        std::time::UNIX_EPOCH + Duration::from_millis(started.to_millis().expect("ms") as u64);
    assert!(
        started >= before - Duration::from_secs(1) && started <= before + Duration::from_secs(1)
    );

    let created = harness
        .raw(crate::harness::RawRequest::admin("POST", "/keys"))
        .await;
    let arn = created.json()["arn"]
        .as_str()
        .expect("a key ARN")
        .to_owned();
    assert!(
        arn.starts_with("arn:aws:kms:us-east-1:000000000000:key/"),
        "{arn}"
    );
    let encrypted = client
        .start_snapshot()
        .volume_size(1)
        .encrypted(true)
        .kms_key_arn(&arn)
        .send()
        .await
        .expect("encrypted StartSnapshot");
    assert_eq!(encrypted.sse_type().map(|s| s.as_str()), Some("sse-kms"));
    assert_eq!(encrypted.kms_key_arn(), Some(arn.as_str()));
}

#[tokio::test]
async fn blocks_round_trip_with_overwrites_zero_blocks_and_aggregate() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;
    let zero = vec![0u8; BLOCK];
    put(&client, &id, 7, &block(1)).await;
    put(&client, &id, 0, &block(2)).await;
    put(&client, &id, 7, &block(3)).await; // overwrite: last write wins
    put(&client, &id, 2047, &zero).await;
    put(&client, &id, 5, &block(2)).await; // same content as index 0: stored once
    let aggregate = linear(&[&block(2), &block(2), &block(3), &zero]);
    complete(&client, &id, 4, Some(aggregate)).await;
    // Completing again is idempotent.
    complete(&client, &id, 4, None).await;

    let blocks = list_all(&client, &id, 100).await;
    let indexes: Vec<i32> = blocks.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, vec![0, 5, 7, 2047]);
    let expected = [block(2), block(2), block(3), zero];
    for ((index, token), data) in blocks.iter().zip(&expected) {
        assert_eq!(
            &get(&client, &id, *index, token).await,
            data,
            "block {index}"
        );
    }
    // Identical content is stored once; zero blocks are never stored.
    assert_eq!(
        crate::harness::stored_chunk_bytes(&harness),
        3 * BLOCK as u64,
        "blocks 2, 1 and 3 are distinct; zero is not stored"
    );
}

#[tokio::test]
async fn listing_pages_across_thousands_of_blocks() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 2, None).await;
    let contents: Vec<Vec<u8>> = (0..4).map(block).collect();
    let indexes: Vec<i32> = (0..2500).map(|i| i * 3 / 2).collect();
    for chunk in indexes.chunks(64) {
        let puts = chunk.iter().map(|&i| {
            let client = client.clone();
            let id = id.clone();
            let data = contents[(i % 4) as usize].clone();
            async move { put(&client, &id, i, &data).await }
        });
        futures_join_all(puts).await;
    }
    complete(&client, &id, 2500, None).await;

    let listed = list_all(&client, &id, 1000).await;
    let listed_indexes: Vec<i32> = listed.iter().map(|(i, _)| *i).collect();
    assert_eq!(listed_indexes, indexes);

    // Small pages are raised to 100 entries; the last page has no NextToken.
    let first = client
        .list_snapshot_blocks()
        .snapshot_id(&id)
        .max_results(10)
        .send()
        .await
        .expect("page");
    assert_eq!(first.blocks().len(), 100);
    assert!(first.next_token().is_some());
    assert_eq!(first.volume_size(), Some(2));
    assert_eq!(first.block_size(), Some(524_288));
    assert!(first.expiry_time().is_some());

    // StartingBlockIndex starts at the next written index.
    let from = client
        .list_snapshot_blocks()
        .snapshot_id(&id)
        .starting_block_index(3000)
        .max_results(10_000)
        .send()
        .await
        .expect("page");
    let from_indexes: Vec<i32> = from
        .blocks()
        .iter()
        .filter_map(|b| b.block_index())
        .collect();
    assert_eq!(
        from_indexes,
        indexes
            .iter()
            .copied()
            .filter(|i| *i >= 3000)
            .collect::<Vec<_>>()
    );
    assert!(from.next_token().is_none());

    // A page token beats StartingBlockIndex.
    let next = client
        .list_snapshot_blocks()
        .snapshot_id(&id)
        .next_token(first.next_token().expect("token"))
        .starting_block_index(0)
        .send()
        .await
        .expect("page 2");
    assert_eq!(
        next.blocks().first().and_then(|b| b.block_index()),
        Some(indexes[100])
    );
}

/// `futures::future::join_all` without the dependency.
async fn futures_join_all<F: std::future::Future<Output = ()> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    for handle in handles {
        handle.await.expect("task");
    }
}

#[tokio::test]
async fn client_token_makes_start_snapshot_idempotent() {
    let harness = Harness::new();
    let client = harness.client();
    let first = client
        .start_snapshot()
        .volume_size(4)
        .client_token("retry-me")
        .description("a")
        .send()
        .await
        .expect("first");
    let again = client
        .start_snapshot()
        .volume_size(4)
        .client_token("retry-me")
        .description("a")
        .send()
        .await
        .expect("retry");
    assert_eq!(first.snapshot_id(), again.snapshot_id());
    let conflict = client
        .start_snapshot()
        .volume_size(5)
        .client_token("retry-me")
        .description("a")
        .send()
        .await
        .expect_err("different parameters");
    assert_eq!(conflict.code(), Some("ConflictException"));
    assert!(conflict.into_service_error().is_conflict_exception());
    // The SDK fills a fresh token by itself: two plain calls make two snapshots.
    let a = start(&client, 1, None).await;
    let b = start(&client, 1, None).await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn sixty_four_concurrent_writers_lose_nothing() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = client.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            put(&client, &id, i, &block(100 + i as u64)).await;
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let expected: Vec<Vec<u8>> = (0..64).map(|i| block(100 + i)).collect();
    let refs: Vec<&[u8]> = expected.iter().map(Vec::as_slice).collect();
    complete(&client, &id, 64, Some(linear(&refs))).await;
    let blocks = list_all(&client, &id, 100).await;
    assert_eq!(blocks.len(), 64);
    for (index, token) in blocks.iter().step_by(9) {
        assert_eq!(
            get(&client, &id, *index, token).await,
            expected[*index as usize]
        );
    }
}

#[tokio::test]
async fn idle_pending_snapshots_time_out_to_error() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start_with_timeout(&client, 10).await;
    put(&client, &id, 0, &block(1)).await;
    // Each Put restarts the timer.
    harness.clock.advance(Duration::from_secs(9 * 60));
    put(&client, &id, 1, &block(2)).await;
    harness.clock.advance(Duration::from_secs(9 * 60));
    put(&client, &id, 2, &block(3)).await;
    harness.clock.advance(Duration::from_secs(11 * 60));

    let late = client
        .put_snapshot_block()
        .snapshot_id(&id)
        .block_index(3)
        .block_data(block(4).into())
        .data_length(524_288)
        .checksum(crate::harness::checksum(&block(4)))
        .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .send()
        .await
        .expect_err("timed out");
    assert_eq!(late.code(), Some("ValidationException"));
    assert!(late.message().unwrap_or("").contains("error"), "{late:?}");
    let complete = client
        .complete_snapshot()
        .snapshot_id(&id)
        .changed_blocks_count(3)
        .send()
        .await
        .expect_err("timed out");
    assert_eq!(complete.code(), Some("ValidationException"));
    let list = client
        .list_snapshot_blocks()
        .snapshot_id(&id)
        .send()
        .await
        .expect_err("not readable");
    assert_eq!(list.code(), Some("ResourceNotFoundException"));
}

#[tokio::test]
async fn a_smaller_child_does_not_inherit_blocks_beyond_its_size() {
    let harness = Harness::new();
    let client = harness.client();
    let parent = start(&client, 2, None).await;
    put(&client, &parent, 10, &block(1)).await;
    put(&client, &parent, 3000, &block(2)).await;
    complete(&client, &parent, 2, None).await;
    let child = start(&client, 1, Some(&parent)).await;
    complete(&client, &child, 0, None).await;
    let blocks = list_all(&client, &child, 100).await;
    assert_eq!(blocks.iter().map(|b| b.0).collect::<Vec<_>>(), vec![10]);
    let larger = start(&client, 3, Some(&parent)).await;
    put(&client, &larger, 5000, &block(3)).await;
    complete(&client, &larger, 1, None).await;
    let blocks = list_all(&client, &larger, 100).await;
    assert_eq!(
        blocks.iter().map(|b| b.0).collect::<Vec<_>>(),
        vec![10, 3000, 5000]
    );
}
