//! Over a real TCP socket: the SDK end to end, `/health`, a stalled body being cut off,
//! and graceful shutdown.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Harness, block};
use crate::sdk::{complete, get, list_all, put, start};

#[tokio::test]
async fn sdk_round_trip_over_a_socket() {
    let server = Harness::new().into_socket().await;
    let client = server.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 4, &block(4)).await;
    complete(&client, &id, 1, None).await;
    let blocks = list_all(&client, &id, 100).await;
    assert_eq!(get(&client, &id, 4, &blocks[0].1).await, block(4));

    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    drop(client);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_off() {
    let harness = Harness::with_settings(|s| s.body_timeout = Duration::from_millis(500));
    let server = harness.into_socket().await;
    let mut stream = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect");
    // StartSnapshot's body is announced but never sent: the server answers instead of
    // waiting forever (the signature is not even checked before the body arrives).
    let request = b"POST /snapshots HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"Volu";
    stream.write_all(request).await.expect("write");
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
        .await
        .expect("the server answered before the test's own timeout")
        .expect("read");
    let response = String::from_utf8_lossy(&buffer[..read]);
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("not received in time"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_keeps_every_acknowledged_block() {
    let server = Harness::new().into_socket().await;
    let client = server.client();
    let id = start(&client, 1, None).await;
    let uploads: Vec<_> = (0..32)
        .map(|i| {
            let client = client.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let data = block(i as u64);
                client
                    .put_snapshot_block()
                    .snapshot_id(&id)
                    .block_index(i)
                    .block_data(data.clone().into())
                    .data_length(524_288)
                    .checksum(crate::harness::checksum(&data))
                    .checksum_algorithm(
                        aws_sdk_ebs::types::ChecksumAlgorithm::ChecksumAlgorithmSha256,
                    )
                    .send()
                    .await
                    .is_ok()
                    .then_some(i)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let addr = server.addr();
    let harness = server.stop().await;
    let mut acknowledged = Vec::new();
    for upload in uploads {
        let outcome = tokio::time::timeout(Duration::from_secs(10), upload)
            .await
            .expect("no request hangs across shutdown")
            .expect("task");
        acknowledged.extend(outcome);
    }
    assert!(
        !acknowledged.is_empty(),
        "requests in flight at shutdown were finished"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed"
    );
    // Every acknowledged block is there after the restart.
    let client = harness.client();
    complete(&client, &id, acknowledged.len() as i32, None).await;
    let stored: Vec<i32> = list_all(&client, &id, 100)
        .await
        .iter()
        .map(|b| b.0)
        .collect();
    acknowledged.sort_unstable();
    assert_eq!(stored, acknowledged);
}
