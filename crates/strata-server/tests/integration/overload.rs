//! Overload: the memory budget of request bodies and block reads in flight. Once slow
//! clients hold it, further requests are answered `RequestThrottledException` at once
//! (EC2: `RequestLimitExceeded`), and the budget comes back when they finish.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ebs::error::ProvideErrorMetadata;
use http_body_util::channel::Channel;

use crate::harness::{BLOCK, Harness, RawRequest, block};
use crate::sdk::{put, start};

#[tokio::test]
async fn a_spent_body_budget_is_answered_request_throttled_at_once() {
    let harness = Arc::new(Harness::with_settings(|s| {
        s.limits.body_budget_bytes = 2 * BLOCK;
        s.body_timeout = Duration::from_secs(30);
        s.limits.body_deadline = Duration::from_secs(30);
    }));
    let client = harness.client();
    let id = start(&client, 1, None).await;

    // Two Puts whose bodies stop half way hold the whole budget.
    let mut senders = Vec::new();
    let mut slow = Vec::new();
    for index in 0..2 {
        let (mut sender, body) = Channel::<bytes::Bytes>::new(1);
        let data = block(index);
        sender
            .send_data(bytes::Bytes::copy_from_slice(&data[..BLOCK / 2]))
            .await
            .expect("buffered");
        senders.push(sender);
        let mut request = RawRequest::put_block(&id, &index.to_string(), data);
        request.streamed = Some(axum::body::Body::new(body));
        let harness = Arc::clone(&harness);
        slow.push(tokio::spawn(async move { harness.raw(request).await }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third Put is refused at once, before its body is read.
    let started = Instant::now();
    let response = harness.raw(RawRequest::put_block(&id, "2", block(2))).await;
    let took = started.elapsed();
    response.assert_error(400, "RequestThrottledException", "");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    // The SDK sees the modelled exception (which it retries as throttling).
    let error = client
        .put_snapshot_block()
        .snapshot_id(&id)
        .block_index(3)
        .block_data(block(3).into())
        .data_length(524_288)
        .checksum(crate::harness::checksum(&block(3)))
        .checksum_algorithm(aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256)
        .send()
        .await
        .expect_err("throttled")
        .into_service_error();
    assert!(error.is_request_throttled_exception(), "{error:?}");
    // Small bodies are charged too: an EC2 form is answered EC2's throttling error.
    let describe = harness
        .raw(RawRequest::ec2(&[("Action", "DescribeSnapshots")]))
        .await;
    describe.assert_ec2_error(503, "RequestLimitExceeded");
    // A request without a body needs no budget.
    let listing = client
        .list_snapshot_blocks()
        .snapshot_id(&id)
        .send()
        .await
        .expect_err("pending snapshot");
    assert_eq!(listing.code(), Some("ResourceNotFoundException"));

    // The slow bodies end short; their budget comes back and Puts work again.
    drop(senders);
    for request in slow {
        let response = request.await.expect("task");
        response.assert_error(400, "ValidationException", "INVALID_PARAMETER_VALUE");
    }
    put(&client, &id, 2, &block(2)).await;
}
