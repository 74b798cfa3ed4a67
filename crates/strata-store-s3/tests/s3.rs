//! What the S3 adapter does when the object store misbehaves: a missing bucket, refused
//! credentials, an endpoint that is down, a body cut off on the way, an object whose bytes
//! rotted, and objects under the prefix that are not chunks. The rule tested throughout: a
//! transient failure is `Unavailable` (retryable) and never `Corrupt`, because the service
//! forgets a chunk it is told is corrupt.

mod common;

use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use strata_core::ports::{ChunkStore, StoreError};
use strata_store_s3::{S3ChunkStore, S3Location};
use strata_types::ChunkDigest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn chunk(seed: u8) -> (ChunkDigest, Bytes) {
    let data: Vec<u8> = (0..512 * 1024u32)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    (ChunkDigest::of(&data), Bytes::from(data))
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_error_naming_it() {
    let mut settings = common::settings("");
    settings.location = S3Location::parse("s3://strata-no-such-bucket").expect("parse");
    let error = S3ChunkStore::connect(&settings)
        .await
        .expect_err("connect to a missing bucket");
    let StoreError::Backend(message) = &error else {
        panic!("a missing bucket is not a Backend error: {error:?}");
    };
    assert!(
        message.contains("'strata-no-such-bucket' does not exist") && message.contains("create it"),
        "{message}"
    );
}

#[tokio::test]
async fn refused_credentials_are_a_clear_error_without_the_secret() {
    let mut settings = common::settings("");
    settings.secret_access_key = "not-the-secret-of-this-key".to_owned();
    let error = S3ChunkStore::connect(&settings)
        .await
        .expect_err("connect with a wrong secret");
    let shown = format!("{error} {error:?}");
    assert!(
        matches!(&error, StoreError::Backend(m) if m.contains("denied")),
        "{error:?}"
    );
    assert!(!shown.contains("not-the-secret-of-this-key"), "{shown}");
}

#[tokio::test]
async fn an_endpoint_that_is_down_is_unavailable_within_seconds() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut settings = common::settings("");
    settings.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let started = Instant::now();
    let error = S3ChunkStore::connect(&settings)
        .await
        .expect_err("connect to a closed port");
    assert!(
        matches!(error, StoreError::Unavailable { .. }) && error.is_retryable(),
        "{error:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A TCP proxy to the store that passes requests through and cuts every response off
/// after `limit` bytes: a connection reset in the middle of a body.
async fn cutting_proxy(limit: usize) -> String {
    let upstream = common::var("S3_ENDPOINT")
        .trim_start_matches("http://")
        .to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let mut sent = 0;
                let mut buffer = vec![0u8; 16 * 1024];
                while sent < limit {
                    let Ok(n) = server_read.read(&mut buffer).await else {
                        break;
                    };
                    if n == 0 {
                        break;
                    }
                    let n = n.min(limit - sent);
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                // Dropping both halves closes the connection mid-body.
            });
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_body_cut_off_on_the_way_is_unavailable_not_corrupt() {
    let (store, _cleanup) = common::fresh_store().await;
    let (digest, data) = chunk(1);
    store.put(digest, data.clone()).await.expect("put");

    let mut settings = common::settings("");
    settings.location = S3Location::parse(&format!(
        "s3://{}/{}",
        store.bucket(),
        store.key(&digest).split("/chunks/").next().expect("prefix")
    ))
    .expect("parse");
    // Enough for the HEAD at connect (no body) and a response head, not for 512 KiB.
    settings.endpoint = Some(cutting_proxy(64 * 1024).await);
    let through_proxy = S3ChunkStore::connect(&settings).await.expect("connect");
    assert_eq!(through_proxy.key(&digest), store.key(&digest));
    let error = through_proxy
        .get(digest)
        .await
        .expect_err("a body cut off at 64 KiB");
    assert!(
        matches!(error, StoreError::Unavailable { .. }) && error.is_retryable(),
        "a cut-off body must be retryable, never corrupt: {error:?}"
    );
    // The chunk is intact, and read in full straight from the store.
    assert_eq!(store.get(digest).await.expect("get"), Some(data));
}

#[tokio::test]
async fn an_object_whose_bytes_rotted_is_corrupt_and_a_put_repairs_it() {
    let (store, _cleanup) = common::fresh_store().await;
    let (digest, data) = chunk(2);
    store.put(digest, data.clone()).await.expect("put");
    for damaged in [
        {
            let mut flipped = data.to_vec();
            flipped[4096] ^= 0x10;
            flipped
        },
        data[..1000].to_vec(),
        Vec::new(),
    ] {
        let length = damaged.len();
        store
            .client()
            .put_object()
            .bucket(store.bucket())
            .key(store.key(&digest))
            .body(ByteStream::from(damaged))
            .send()
            .await
            .expect("overwrite the object");
        let error = store.get(digest).await.expect_err("damaged object");
        assert!(
            matches!(&error, StoreError::Corrupt(m) if m.contains(&digest.to_hex())),
            "{length}-byte damage: {error:?}"
        );
        // The store's put replaces whatever is there: the next upload of the content heals it.
        store.put(digest, data.clone()).await.expect("put again");
        assert_eq!(store.get(digest).await.expect("get"), Some(data.clone()));
    }
}

#[tokio::test]
async fn objects_under_the_prefix_that_are_not_chunks_are_not_listed() {
    let (store, _cleanup) = common::fresh_store().await;
    let (digest, data) = chunk(3);
    store.put(digest, data).await.expect("put");
    let prefix = store.key(&digest);
    let chunk_prefix = prefix.trim_end_matches(&digest.to_hex()).to_owned();
    for stray in ["README", "zz-not-a-digest", "00"] {
        store
            .client()
            .put_object()
            .bucket(store.bucket())
            .key(format!("{chunk_prefix}{stray}"))
            .body(ByteStream::from_static(b"operator's file"))
            .send()
            .await
            .expect("put a stray object");
    }
    let listed = store.list(None, 10).await.expect("list");
    assert_eq!(
        listed.iter().map(|c| c.digest).collect::<Vec<_>>(),
        vec![digest]
    );
    for stray in ["README", "zz-not-a-digest", "00"] {
        store
            .client()
            .delete_object()
            .bucket(store.bucket())
            .key(format!("{chunk_prefix}{stray}"))
            .send()
            .await
            .expect("remove the stray object");
    }
}
