//! Every exception and `Reason` the server can return, produced through the HTTP stack
//! (raw signed requests where the SDK would refuse the input), each asserting the status,
//! `x-amzn-ErrorType`, `Reason` and the request id.

use std::time::Duration;

use aws_sdk_ebs::error::ProvideErrorMetadata;

use crate::harness::{BLOCK, Harness, OTHER_KEY, OTHER_SECRET, RawRequest, block, checksum};
use crate::sdk::{complete, get, list_all, put, start};

const VALIDATION: &str = "ValidationException";
const NOT_FOUND: &str = "ResourceNotFoundException";

fn start_body(json: &str) -> RawRequest {
    RawRequest::new("POST", "/snapshots")
        .header("content-type", "application/json")
        .body(json.as_bytes().to_vec())
}

/// A completed snapshot with block 1 written, and its block token.
async fn completed_snapshot(harness: &Harness) -> (String, String) {
    let client = harness.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 1, &block(1)).await;
    complete(&client, &id, 1, None).await;
    let token = list_all(&client, &id, 100).await.remove(0).1;
    (id, token)
}

#[tokio::test]
async fn start_snapshot_validation() {
    let harness = Harness::new();
    let cases = [
        (r#"{"VolumeSize":0}"#, "INVALID_VOLUME_SIZE"),
        (r#"{"VolumeSize":65537}"#, "INVALID_VOLUME_SIZE"),
        (r#"{}"#, "INVALID_PARAMETER_VALUE"),
        (r#"not json"#, "INVALID_PARAMETER_VALUE"),
        (r#"{"VolumeSize":"8"}"#, "INVALID_PARAMETER_VALUE"),
        (r#"{"VolumeSize":1,"Timeout":9}"#, "INVALID_PARAMETER_VALUE"),
        (
            r#"{"VolumeSize":1,"Timeout":4321}"#,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            r#"{"VolumeSize":1,"Description":""}"#,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            r#"{"VolumeSize":1,"ClientToken":"has space"}"#,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            r#"{"VolumeSize":1,"KmsKeyArn":"alias/mine"}"#,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            r#"{"VolumeSize":1,"Tags":[{"Value":"no key"}]}"#,
            "INVALID_TAG",
        ),
        (
            r#"{"VolumeSize":1,"Tags":[{"Key":"a"},{"Key":"a"}]}"#,
            "INVALID_TAG",
        ),
        (
            r#"{"VolumeSize":1,"ParentSnapshotId":"snap-XYZ"}"#,
            "INVALID_SNAPSHOT_ID",
        ),
    ];
    for (body, reason) in cases {
        let response = harness.raw(start_body(body)).await;
        response.assert_error(400, VALIDATION, reason);
    }
    let long = format!(r#"{{"VolumeSize":1,"Description":"{}"}}"#, "d".repeat(256));
    harness
        .raw(start_body(&long))
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    let long_key = format!(
        r#"{{"VolumeSize":1,"Tags":[{{"Key":"{}"}}]}}"#,
        "k".repeat(128)
    );
    harness
        .raw(start_body(&long_key))
        .await
        .assert_error(400, VALIDATION, "INVALID_TAG");
    let tags: Vec<String> = (0..51)
        .map(|i| format!(r#"{{"Key":"k{i}","Value":"v"}}"#))
        .collect();
    let many = format!(r#"{{"VolumeSize":1,"Tags":[{}]}}"#, tags.join(","));
    harness
        .raw(start_body(&many))
        .await
        .assert_error(400, VALIDATION, "INVALID_TAG");

    // Parent rules: must exist (404), be completed, and exclude Encrypted.
    let missing = r#"{"VolumeSize":1,"ParentSnapshotId":"snap-0123456789abcdef0"}"#;
    harness
        .raw(start_body(missing))
        .await
        .assert_error(404, NOT_FOUND, "SNAPSHOT_NOT_FOUND");
    let pending = start(&harness.client(), 1, None).await;
    let body = format!(r#"{{"VolumeSize":1,"ParentSnapshotId":"{pending}"}}"#);
    harness
        .raw(start_body(&body))
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    let (done, _) = completed_snapshot(&harness).await;
    let body = format!(r#"{{"VolumeSize":1,"ParentSnapshotId":"{done}","Encrypted":true}}"#);
    harness
        .raw(start_body(&body))
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    let body = format!(r#"{{"VolumeSize":1,"ParentSnapshotId":"{done}"}}"#);
    assert_eq!(harness.raw(start_body(&body)).await.status, 201);
}

#[tokio::test]
async fn put_snapshot_block_validation() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;
    let data = block(7);

    // Wrong checksum: nothing is stored.
    let wrong = RawRequest::put_block(&id, "0", data.clone());
    let wrong = RawRequest {
        headers: wrong
            .headers
            .into_iter()
            .map(|(n, v)| {
                if n == "x-amz-checksum" {
                    (n, checksum(b"other"))
                } else {
                    (n, v)
                }
            })
            .collect(),
        ..wrong
    };
    harness
        .raw(wrong)
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");

    // Short body with an honest checksum and length header.
    let short = RawRequest::put_block(&id, "0", vec![1u8; 1000]);
    harness
        .raw(short)
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    // Body longer than a block.
    let mut long_data = data.clone();
    long_data.push(0);
    let long = RawRequest::put_block(&id, "0", long_data);
    let long = RawRequest {
        headers: long
            .headers
            .into_iter()
            .map(|(n, v)| {
                if n == "x-amz-data-length" {
                    (n, BLOCK.to_string())
                } else {
                    (n, v)
                }
            })
            .collect(),
        ..long
    };
    harness
        .raw(long)
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    // Missing and unsupported headers.
    for (name, value) in [
        ("x-amz-checksum-algorithm", "MD5"),
        ("x-amz-checksum", "not-base64!"),
        ("x-amz-data-length", "4096"),
        ("x-amz-progress", "101"),
    ] {
        let mut request = RawRequest::put_block(&id, "0", data.clone());
        request.headers.retain(|(n, _)| n != name);
        request.headers.push((name.to_owned(), value.to_owned()));
        harness
            .raw(request)
            .await
            .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
        let mut missing = RawRequest::put_block(&id, "0", data.clone());
        missing.headers.retain(|(n, _)| n != name);
        if name != "x-amz-progress" {
            harness
                .raw(missing)
                .await
                .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
        }
    }

    // Index outside the volume, negative, or not a number.
    for index in ["2048", "-1", "1.5", "abc", "99999999999"] {
        let request = RawRequest::put_block(&id, index, data.clone());
        harness
            .raw(request)
            .await
            .assert_error(400, VALIDATION, "INVALID_BLOCK");
    }
    // Malformed and unknown snapshot ids.
    let request = RawRequest::put_block("snap-NOPE", "0", data.clone());
    harness
        .raw(request)
        .await
        .assert_error(400, VALIDATION, "INVALID_SNAPSHOT_ID");
    let request = RawRequest::put_block("snap-0123456789abcdef0", "0", data.clone());
    harness
        .raw(request)
        .await
        .assert_error(404, NOT_FOUND, "SNAPSHOT_NOT_FOUND");

    // None of the refused writes was recorded.
    complete(&client, &id, 0, None).await;
    assert!(list_all(&client, &id, 100).await.is_empty());
    // Writes to a completed snapshot are refused.
    let request = RawRequest::put_block(&id, "0", data.clone());
    harness
        .raw(request)
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    // A good raw put on a fresh snapshot works and echoes the checksum.
    let fresh = start(&client, 1, None).await;
    let response = harness
        .raw(RawRequest::put_block(&fresh, "3", data.clone()))
        .await;
    assert_eq!(response.status, 201);
    assert_eq!(
        response
            .headers
            .get("x-amz-checksum")
            .and_then(|v| v.to_str().ok()),
        Some(checksum(&data).as_str())
    );
    assert_eq!(response.body.as_ref(), b"{}");
}

/// The body timeout is a limit on silence, not on the whole body: a body that keeps arriving
/// is read however long it takes; one that stops is cut off once it has been silent that long.
#[tokio::test]
async fn a_put_body_is_cut_off_only_when_it_stalls() {
    use http_body_util::channel::Channel;
    let timeout = Duration::from_millis(300);
    let harness = Harness::with_settings(|s| s.body_timeout = timeout);
    let client = harness.client();
    let id = start(&client, 1, None).await;
    let data = block(3);

    // Eight pieces 100 ms apart: 800 ms in all, never 300 ms of silence.
    let (mut sender, body) = Channel::<bytes::Bytes>::new(1);
    let pieces: Vec<bytes::Bytes> = data
        .chunks(BLOCK / 8)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let feeder = tokio::spawn(async move {
        for piece in pieces {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sender.send_data(piece).await.expect("the server reads on");
        }
    });
    let mut steady = RawRequest::put_block(&id, "0", data.clone());
    steady.streamed = Some(axum::body::Body::new(body));
    let started = std::time::Instant::now();
    assert_eq!(harness.raw(steady).await.status, 201);
    assert!(
        started.elapsed() > timeout * 2,
        "the body took longer than the timeout"
    );
    feeder.await.expect("feeder");

    // Half a block, then silence (the sender stays open, so the body has not ended).
    let (mut sender, body) = Channel::<bytes::Bytes>::new(1);
    sender
        .send_data(bytes::Bytes::copy_from_slice(&data[..BLOCK / 2]))
        .await
        .expect("buffered");
    let mut stalled = RawRequest::put_block(&id, "1", data.clone());
    stalled.streamed = Some(axum::body::Body::new(body));
    let response = harness.raw(stalled).await;
    response.assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    let message = response.json()["Message"].as_str().unwrap_or("").to_owned();
    assert!(
        message.contains("stalled") && message.contains(&format!("after {} bytes", BLOCK / 2)),
        "{message}"
    );
    drop(sender);

    complete(&client, &id, 1, None).await;
    let indexes: Vec<i32> = list_all(&client, &id, 100)
        .await
        .iter()
        .map(|b| b.0)
        .collect();
    assert_eq!(indexes, vec![0], "the stalled write was not recorded");
}

/// A put of content that is already stored reads its body without keeping it (the decision
/// is made from `x-amz-Checksum` before the body): the body must still hash to the claim.
#[tokio::test]
async fn a_body_claiming_stored_content_must_still_match_it() {
    let harness = Harness::new();
    let client = harness.client();
    let stored = block(7);
    let first = start(&client, 1, None).await;
    put(&client, &first, 0, &stored).await;
    let id = start(&client, 1, None).await;
    let before = crate::harness::stored_chunk_bytes(&harness);

    // Stored content claimed, other bytes sent; and the zero block claimed, other bytes sent.
    let zero = vec![0u8; BLOCK];
    for claimed in [&stored, &zero] {
        let mut lie = RawRequest::put_block(&id, "0", block(8));
        for (name, value) in &mut lie.headers {
            if name == "x-amz-checksum" {
                *value = checksum(claimed);
            }
        }
        harness
            .raw(lie)
            .await
            .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    }
    // The honest put of stored content is recorded without a second copy.
    put(&client, &id, 1, &stored).await;
    assert_eq!(
        crate::harness::stored_chunk_bytes(&harness),
        before,
        "nothing was written: neither the refused bodies nor the stored content again"
    );
    complete(&client, &id, 1, None).await;
    let blocks = list_all(&client, &id, 100).await;
    assert_eq!(blocks.len(), 1, "only index 1 was recorded");
    let (index, token) = &blocks[0];
    assert_eq!(*index, 1);
    assert_eq!(get(&client, &id, 1, token).await, stored);
}

#[tokio::test]
async fn complete_snapshot_validation() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 0, &block(1)).await;
    put(&client, &id, 1, &block(2)).await;
    let target = format!("/snapshots/completion/{id}");
    let with = |headers: &[(&str, &str)]| {
        let mut request = RawRequest::new("POST", target.clone());
        for (n, v) in headers {
            request = request.header(n, *v);
        }
        request
    };
    for headers in [
        vec![("x-amz-changedblockscount", "1")],
        vec![("x-amz-changedblockscount", "-1")],
        vec![("x-amz-changedblockscount", "two")],
        vec![],
        vec![
            ("x-amz-changedblockscount", "2"),
            (
                "x-amz-checksum",
                "fccGN1xyY7l5uqsw58BLULbsU8thbz9pDvzr9oCk5yk=",
            ),
            ("x-amz-checksum-algorithm", "SHA256"),
            ("x-amz-checksum-aggregation-method", "LINEAR"),
        ],
        vec![
            ("x-amz-changedblockscount", "2"),
            (
                "x-amz-checksum",
                "fccGN1xyY7l5uqsw58BLULbsU8thbz9pDvzr9oCk5yk=",
            ),
            ("x-amz-checksum-aggregation-method", "TREE"),
        ],
    ] {
        let response = harness.raw(with(&headers)).await;
        response.assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    }
    // The snapshot stayed pending: a correct Complete still works.
    let aggregate = crate::harness::linear(&[&block(1), &block(2)]);
    complete(&client, &id, 2, Some(aggregate)).await;
    let unknown = harness
        .raw(
            RawRequest::new("POST", "/snapshots/completion/snap-00000000000000000")
                .header("x-amz-changedblockscount", "0"),
        )
        .await;
    unknown.assert_error(404, NOT_FOUND, "SNAPSHOT_NOT_FOUND");
}

#[tokio::test]
async fn reads_validate_ids_indexes_and_tokens() {
    let harness = Harness::new();
    let (id, token) = completed_snapshot(&harness).await;
    let get = |index: &str, token: &str| {
        RawRequest::new(
            "GET",
            format!("/snapshots/{id}/blocks/{index}?blockToken={token}"),
        )
    };
    let ok = harness.raw(get("1", &token)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body.len(), BLOCK);
    assert_eq!(
        ok.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/octet-stream")
    );
    let mut altered = token.clone().into_bytes();
    altered[20] = if altered[20] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).expect("ascii");
    let (other, other_token) = completed_snapshot(&harness).await;
    assert_ne!(other, id);
    let block =
        |index: &str, token: &str| format!("/snapshots/{id}/blocks/{index}?blockToken={token}");
    let cases = [
        // A token for another index, an altered one, a foreign string, none at all, and
        // a token of another snapshot.
        (block("2", &token), "INVALID_BLOCK_TOKEN"),
        (block("1", &altered), "INVALID_BLOCK_TOKEN"),
        (block("1", "AAUBabc%2F%3D"), "INVALID_BLOCK_TOKEN"),
        (
            format!("/snapshots/{id}/blocks/1"),
            "INVALID_PARAMETER_VALUE",
        ),
        (block("1", &other_token), "INVALID_BLOCK_TOKEN"),
        // Indexes and ids.
        (block("2048", &token), "INVALID_BLOCK"),
        (block("-3", &token), "INVALID_BLOCK"),
        (
            "/snapshots/snap-zz/blocks/1?blockToken=x".into(),
            "INVALID_SNAPSHOT_ID",
        ),
        ("/snapshots/vol-1/blocks".into(), "INVALID_SNAPSHOT_ID"),
        (
            format!("/snapshots/{id}/changedblocks?firstSnapshotId=nope"),
            "INVALID_SNAPSHOT_ID",
        ),
    ];
    for (target, reason) in cases {
        harness
            .raw(RawRequest::new("GET", target))
            .await
            .assert_error(400, VALIDATION, reason);
    }

    // Block tokens expire after 7 days.
    harness
        .clock
        .advance(Duration::from_secs(7 * 24 * 3600 + 60));
    harness
        .raw(get("1", &token))
        .await
        .assert_error(400, VALIDATION, "INVALID_BLOCK_TOKEN");
}

#[tokio::test]
async fn listings_validate_paging_parameters_and_tokens() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;
    for i in 0..150 {
        put(&client, &id, i, &vec![0u8; BLOCK]).await;
    }
    complete(&client, &id, 150, None).await;
    let list = |query: &str| RawRequest::new("GET", format!("/snapshots/{id}/blocks?{query}"));
    let page = harness.raw(list("maxResults=100")).await;
    assert_eq!(page.status, 200);
    let next = page.json()["NextToken"]
        .as_str()
        .expect("NextToken")
        .to_owned();
    assert!(next.bytes().all(|b| b.is_ascii_alphanumeric()) && next.len() <= 256);

    harness.raw(list("maxResults=10001")).await.assert_error(
        400,
        VALIDATION,
        "INVALID_PARAMETER_VALUE",
    );
    harness.raw(list("maxResults=ten")).await.assert_error(
        400,
        VALIDATION,
        "INVALID_PARAMETER_VALUE",
    );
    harness
        .raw(list("startingBlockIndex=-1"))
        .await
        .assert_error(400, VALIDATION, "INVALID_PARAMETER_VALUE");
    harness
        .raw(list("pageToken=AAUB%2Bforged%3D"))
        .await
        .assert_error(400, VALIDATION, "INVALID_PAGE_TOKEN");
    // A page token of ListSnapshotBlocks is not valid for ListChangedBlocks.
    let changed = RawRequest::new(
        "GET",
        format!("/snapshots/{id}/changedblocks?pageToken={next}"),
    );
    harness
        .raw(changed)
        .await
        .assert_error(400, VALIDATION, "INVALID_PAGE_TOKEN");
    // Nor for another snapshot's listing.
    let (other, _) = completed_snapshot(&harness).await;
    let elsewhere = RawRequest::new("GET", format!("/snapshots/{other}/blocks?pageToken={next}"));
    harness
        .raw(elsewhere)
        .await
        .assert_error(400, VALIDATION, "INVALID_PAGE_TOKEN");
    // It works now, and expires after 60 minutes.
    assert_eq!(
        harness.raw(list(&format!("pageToken={next}"))).await.status,
        200
    );
    harness.clock.advance(Duration::from_secs(61 * 60));
    harness
        .raw(list(&format!("pageToken={next}")))
        .await
        .assert_error(400, VALIDATION, "INVALID_PAGE_TOKEN");
}

#[tokio::test]
async fn snapshots_are_private_and_unreadable_until_completed() {
    let harness = Harness::new();
    let (id, token) = completed_snapshot(&harness).await;
    let pending = start(&harness.client(), 1, None).await;
    // Pending snapshots are not readable.
    let list_pending = RawRequest::new("GET", format!("/snapshots/{pending}/blocks"));
    harness
        .raw(list_pending)
        .await
        .assert_error(404, NOT_FOUND, "SNAPSHOT_NOT_FOUND");
    let changed_pending = RawRequest::new(
        "GET",
        format!("/snapshots/{id}/changedblocks?firstSnapshotId={pending}"),
    );
    harness
        .raw(changed_pending)
        .await
        .assert_error(404, NOT_FOUND, "SNAPSHOT_NOT_FOUND");
    // Another account sees nothing of the root account's snapshots.
    let other = harness.client_as(OTHER_KEY, OTHER_SECRET);
    let error = other
        .list_snapshot_blocks()
        .snapshot_id(&id)
        .send()
        .await
        .expect_err("private");
    assert_eq!(error.code(), Some(NOT_FOUND));
    assert!(error.message().unwrap_or("").contains("does not exist"));
    let error = other
        .get_snapshot_block()
        .snapshot_id(&id)
        .block_index(1)
        .block_token(&token)
        .send()
        .await
        .expect_err("private");
    assert_eq!(error.code(), Some(NOT_FOUND));
    let error = other
        .start_snapshot()
        .volume_size(1)
        .parent_snapshot_id(&id)
        .send()
        .await
        .expect_err("foreign parent");
    assert_eq!(error.code(), Some(NOT_FOUND));
    let foreign_put = RawRequest::put_block(&pending, "0", block(1));
    let foreign_put = RawRequest {
        credentials: Some((OTHER_KEY.into(), OTHER_SECRET.into())),
        ..foreign_put
    };
    harness
        .raw(foreign_put)
        .await
        .assert_error(404, NOT_FOUND, "SNAPSHOT_NOT_FOUND");
    // The other account's own snapshots work.
    let own = start(&other, 1, None).await;
    complete(&other, &own, 0, None).await;
}

#[tokio::test]
async fn authentication_failures() {
    let harness = Harness::new();
    let target = "/snapshots/snap-0123456789abcdef0/blocks";
    let unsigned = RawRequest {
        credentials: None,
        ..RawRequest::new("GET", target)
    };
    harness
        .raw(unsigned)
        .await
        .assert_error(403, "MissingAuthenticationTokenException", "");
    let unknown = RawRequest {
        credentials: Some(("AKIDUNKNOWN".into(), "x".into())),
        ..RawRequest::new("GET", target)
    };
    harness
        .raw(unknown)
        .await
        .assert_error(403, "UnrecognizedClientException", "");
    let wrong_secret = RawRequest {
        credentials: Some((crate::harness::ROOT_KEY.into(), "wrong".into())),
        ..RawRequest::new("GET", target)
    };
    harness
        .raw(wrong_secret)
        .await
        .assert_error(403, "InvalidSignatureException", "");
    let stale = RawRequest {
        signing_offset: time::Duration::minutes(-20),
        ..RawRequest::new("GET", target)
    };
    let response = harness.raw(stale).await;
    response.assert_error(403, "InvalidSignatureException", "");
    assert!(
        response.json()["Message"]
            .as_str()
            .unwrap_or("")
            .contains("Signature expired")
    );
    let garbage = RawRequest {
        credentials: None,
        ..RawRequest::new("GET", target).header("authorization", "AWS4-HMAC-SHA256 garbage")
    };
    harness
        .raw(garbage)
        .await
        .assert_error(400, "IncompleteSignatureException", "");
    // A StartSnapshot body altered after signing fails the signature.
    let mut tampered = start_body(r#"{"VolumeSize":1}"#);
    tampered.headers.push((
        "x-amz-content-sha256".into(),
        crate::harness::sha256_hex(b"{}"),
    ));
    harness
        .raw(tampered)
        .await
        .assert_error(403, "InvalidSignatureException", "");
    // Unknown routes.
    let unknown_route = RawRequest::new("DELETE", "/snapshots/snap-1");
    harness
        .raw(unknown_route)
        .await
        .assert_error(404, "UnknownOperationException", "");
    // /health needs no signature.
    let health = RawRequest {
        credentials: None,
        ..RawRequest::new("GET", "/health")
    };
    assert_eq!(harness.raw(health).await.status, 200);
}

#[tokio::test]
async fn corrupt_or_missing_chunks_are_never_served_and_a_new_upload_repairs_them() {
    let harness = Harness::new();
    let (id, token) = completed_snapshot(&harness).await;
    let get_block_1 = || {
        RawRequest::new(
            "GET",
            format!("/snapshots/{id}/blocks/1?blockToken={token}"),
        )
    };
    crate::harness::damage_chunk(&harness, &block(1));
    for _ in 0..2 {
        // The second time the damaged chunk is already forgotten: still an error.
        harness
            .raw(get_block_1())
            .await
            .assert_error(500, "InternalServerException", "");
    }

    // The same content uploaded again, to another snapshot, repairs the first one.
    let client = harness.client();
    let other = start(&client, 1, None).await;
    put(&client, &other, 9, &block(1)).await;
    let response = harness.raw(get_block_1()).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body.as_ref(), block(1).as_slice());

    // Missing bytes: the segment ends before the (new copy of the) chunk, or the object is
    // gone.
    crate::harness::lose_chunk(&harness, &block(1));
    harness
        .raw(get_block_1())
        .await
        .assert_error(500, "InternalServerException", "");
}

#[tokio::test]
async fn the_sdk_sees_modelled_errors_with_reasons() {
    let harness = Harness::new();
    let client = harness.client();
    let error = client
        .list_snapshot_blocks()
        .snapshot_id("snap-0123456789abcdef0")
        .send()
        .await
        .expect_err("missing")
        .into_service_error();
    let not_found = match error {
        aws_sdk_ebs::operation::list_snapshot_blocks::ListSnapshotBlocksError::ResourceNotFoundException(e) => e,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        not_found.reason().map(|r| r.as_str()),
        Some("SNAPSHOT_NOT_FOUND")
    );
    assert_eq!(
        not_found.message(),
        Some("The snapshot 'snap-0123456789abcdef0' does not exist.")
    );
    let error = client
        .start_snapshot()
        .volume_size(0)
        .send()
        .await
        .expect_err("invalid")
        .into_service_error();
    let validation = match error {
        aws_sdk_ebs::operation::start_snapshot::StartSnapshotError::ValidationException(e) => e,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(
        validation.reason().map(|r| r.as_str()),
        Some("INVALID_VOLUME_SIZE")
    );
}
