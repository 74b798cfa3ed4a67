//! Encryption at rest through `aws-sdk-ebs` and the admin API: no plaintext anywhere in
//! what the server stores, identical reads, keys disabled and enabled, and the modelled
//! errors for keys that are unknown or another account's.

use aws_sdk_ebs::Client;
use aws_sdk_ebs::operation::get_snapshot_block::GetSnapshotBlockError;
use aws_sdk_ebs::operation::put_snapshot_block::PutSnapshotBlockError;
use aws_sdk_ebs::operation::start_snapshot::StartSnapshotError;

use crate::harness::{
    BLOCK, Harness, OTHER_KEY, OTHER_SECRET, RawRequest, checksum, linear, stored_objects,
};
use crate::sdk::{complete, list_all, put, put_request};

/// A block of a repeated, recognisable text: `marker` found in a file means plaintext.
fn pattern_block(label: &str) -> (Vec<u8>, Vec<u8>) {
    let marker = format!("<<STRATA-PLAINTEXT-{label}>>").into_bytes();
    let block: Vec<u8> = marker.iter().copied().cycle().take(BLOCK).collect();
    (block, marker)
}

async fn create_key(harness: &Harness, as_other: bool, description: &str) -> String {
    let mut request = RawRequest::admin("POST", &format!("/keys?description={description}"));
    if as_other {
        request.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    }
    let response = harness.raw(request).await;
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["arn"].as_str().expect("arn").to_owned()
}

async fn set_key(harness: &Harness, arn: &str, verb: &str) -> serde_json::Value {
    let escaped = percent_encoding::utf8_percent_encode(arn, percent_encoding::NON_ALPHANUMERIC);
    let response = harness
        .raw(RawRequest::admin(
            "POST",
            &format!("/keys/{escaped}/{verb}"),
        ))
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

async fn start_encrypted(
    client: &Client,
    arn: Option<&str>,
) -> Result<(String, Option<String>), StartSnapshotError> {
    let response = client
        .start_snapshot()
        .volume_size(1)
        .encrypted(true)
        .set_kms_key_arn(arn.map(str::to_owned))
        .send()
        .await
        .map_err(|e| e.into_service_error())?;
    assert_eq!(response.sse_type().map(|s| s.as_str()), Some("sse-kms"));
    Ok((
        response.snapshot_id().expect("id").to_owned(),
        response.kms_key_arn().map(str::to_owned),
    ))
}

/// Whether `marker` occurs in any file under the data directory, or (on S3) in any object
/// of the harness's bucket prefix.
fn stored_anywhere(harness: &Harness, marker: &[u8]) -> bool {
    fn walk(dir: &std::path::Path, marker: &[u8]) -> bool {
        // A server on PostgreSQL and S3 may not create its data directory at all.
        let Ok(entries) = std::fs::read_dir(dir) else {
            return false;
        };
        entries.into_iter().any(|entry| {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, marker)
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                bytes.windows(marker.len()).any(|w| w == marker)
            }
        })
    }
    walk(&harness.data_dir(), marker)
        || stored_objects(harness)
            .iter()
            .any(|bytes| bytes.windows(marker.len()).any(|w| w == marker))
}

fn is_invalid_customer_key(reason: Option<&aws_sdk_ebs::types::ValidationExceptionReason>) -> bool {
    reason.map(|r| r.as_str()) == Some("INVALID_CUSTOMER_KEY")
}

#[tokio::test]
async fn an_encrypted_snapshot_stores_no_plaintext_and_its_key_gates_every_read() {
    let harness = Harness::new();
    let client = harness.client();
    let arn = create_key(&harness, false, "scan").await;
    let (id, reported) = start_encrypted(&client, Some(&arn)).await.expect("start");
    assert_eq!(reported.as_deref(), Some(arn.as_str()));
    let blocks: Vec<(Vec<u8>, Vec<u8>)> = (0..4).map(|i| pattern_block(&format!("E{i}"))).collect();
    for (index, (data, _)) in blocks.iter().enumerate() {
        put(&client, &id, index as i32, data).await;
    }
    let zero = vec![0u8; BLOCK];
    put(&client, &id, 9, &zero).await;
    let mut written: Vec<&[u8]> = blocks.iter().map(|(data, _)| data.as_slice()).collect();
    written.push(&zero);
    complete(&client, &id, 5, Some(linear(&written))).await;

    // The scan finds plaintext where there is some: an unencrypted snapshot beside it.
    let (plain, plain_marker) = pattern_block("PLAIN");
    let plain_id = crate::sdk::start(&client, 1, None).await;
    put(&client, &plain_id, 0, &plain).await;
    complete(&client, &plain_id, 1, None).await;
    assert!(
        stored_anywhere(&harness, &plain_marker),
        "the scan sees plaintext"
    );
    for (_, marker) in &blocks {
        assert!(
            !stored_anywhere(&harness, marker),
            "plaintext of an encrypted block is stored"
        );
    }

    let listed = list_all(&client, &id, 100).await;
    assert_eq!(listed.len(), 5);
    let read = |index: i32, token: String| {
        let client = client.clone();
        let id = id.clone();
        async move {
            client
                .get_snapshot_block()
                .snapshot_id(id)
                .block_index(index)
                .block_token(token)
                .send()
                .await
        }
    };
    for (index, token) in &listed {
        let response = read(*index, token.clone()).await.expect("GetSnapshotBlock");
        let want: &[u8] = written[if *index == 9 { 4 } else { *index as usize }];
        assert_eq!(response.checksum(), Some(checksum(want).as_str()));
        let data = response
            .block_data
            .collect()
            .await
            .expect("body")
            .into_bytes();
        assert!(data.as_ref() == want, "block {index} reads back identical");
    }

    let pending = start_encrypted(&client, Some(&arn)).await.expect("start").0;
    let disabled = set_key(&harness, &arn, "disable").await;
    assert_eq!(disabled["enabled"], false);
    let (index, token) = listed[0].clone();
    let error = read(index, token.clone())
        .await
        .expect_err("disabled key")
        .into_service_error();
    match &error {
        GetSnapshotBlockError::ValidationException(e) => {
            assert!(is_invalid_customer_key(e.reason()), "{e:?}");
            assert!(e.message().is_some_and(|m| m.contains("disabled")), "{e:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let error = put_request(&client, &pending, 0, &blocks[0].0)
        .send()
        .await
        .expect_err("disabled key")
        .into_service_error();
    assert!(
        matches!(&error, PutSnapshotBlockError::ValidationException(e) if is_invalid_customer_key(e.reason())),
        "{error:?}"
    );
    let error = start_encrypted(&client, Some(&arn))
        .await
        .expect_err("disabled key");
    assert!(
        matches!(&error, StartSnapshotError::ValidationException(e) if is_invalid_customer_key(e.reason())),
        "{error:?}"
    );

    set_key(&harness, &arn, "enable").await;
    read(index, token).await.expect("readable again");
    put(&client, &pending, 0, &blocks[0].0).await;

    // After a restart the master key and the key service give the same blocks back.
    drop(client);
    let harness = harness.restart();
    let client = harness.client();
    let listed = list_all(&client, &id, 100).await;
    let data = crate::sdk::get(&client, &id, listed[1].0, &listed[1].1).await;
    assert!(data == blocks[1].0, "readable after a restart");
}

#[tokio::test]
async fn unknown_and_foreign_keys_are_refused_and_each_account_sees_its_own_keys() {
    let harness = Harness::new();
    let client = harness.client();
    let unknown = "arn:aws:kms:us-east-1:000000000000:key/00000000-0000-4000-8000-000000000000";
    let error = start_encrypted(&client, Some(unknown))
        .await
        .expect_err("unknown key");
    match &error {
        StartSnapshotError::ValidationException(e) => {
            assert!(is_invalid_customer_key(e.reason()), "{e:?}");
        }
        other => panic!("unexpected {other:?}"),
    }

    let theirs = create_key(&harness, true, "theirs").await;
    assert!(theirs.contains(":111122223333:key/"), "{theirs}");
    let error = start_encrypted(&client, Some(&theirs))
        .await
        .expect_err("foreign key");
    match &error {
        StartSnapshotError::AccessDeniedException(e) => {
            assert_eq!(e.reason().as_str(), "DEPENDENCY_ACCESS_DENIED", "{e:?}");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Encrypted without a key: the account's default key, created on first use.
    let (_, default_arn) = start_encrypted(&client, None).await.expect("default key");
    let default_arn = default_arn.expect("the default key is reported");
    let listed = harness.raw(RawRequest::admin("GET", "/keys")).await;
    assert_eq!(listed.status, 200);
    let keys = listed.json()["keys"].as_array().cloned().expect("keys");
    assert_eq!(keys.len(), 2, "root sees every account's keys: {keys:?}");
    assert!(
        keys.iter()
            .any(|k| k["arn"] == default_arn.as_str() && k["account_default"] == true)
    );
    let mut as_other = RawRequest::admin("GET", "/keys");
    as_other.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    let theirs_listed = harness.raw(as_other).await.json();
    let theirs_keys = theirs_listed["keys"].as_array().cloned().expect("keys");
    assert_eq!(theirs_keys.len(), 1);
    assert_eq!(theirs_keys[0]["arn"], theirs.as_str());
    assert!(
        theirs_listed.to_string().find("wrapped").is_none(),
        "no key material is shown"
    );

    // Another account cannot disable the root account's key.
    let escaped =
        percent_encoding::utf8_percent_encode(&default_arn, percent_encoding::NON_ALPHANUMERIC);
    let mut disable = RawRequest::admin("POST", &format!("/keys/{escaped}/disable"));
    disable.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    harness
        .raw(disable)
        .await
        .assert_error(400, "ValidationException", "INVALID_CUSTOMER_KEY");
    // Nor create one for it.
    let mut create = RawRequest::admin("POST", "/keys?account=000000000000");
    create.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    harness
        .raw(create)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
}

#[tokio::test]
async fn encryption_by_default_encrypts_snapshots_that_did_not_ask() {
    let harness = Harness::with_settings(|settings| settings.encryption.by_default = true);
    let client = harness.client();
    let response = client
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect("StartSnapshot");
    assert_eq!(response.sse_type().map(|s| s.as_str()), Some("sse-kms"));
    let id = response.snapshot_id().expect("id").to_owned();
    let (data, marker) = pattern_block("DEFAULT");
    put(&client, &id, 0, &data).await;
    complete(&client, &id, 1, None).await;
    assert!(!stored_anywhere(&harness, &marker), "stored encrypted");
    let listed = list_all(&client, &id, 100).await;
    assert!(crate::sdk::get(&client, &id, listed[0].0, &listed[0].1).await == data);
}
