//! AWS-shaped quotas from the config file, through `aws-sdk-ebs`: request rates per
//! snapshot and per account answer `RequestThrottledException` with the modelled reasons,
//! and the pending-snapshot quota answers `ConcurrentLimitExceededException` and holds
//! when StartSnapshots race.

use aws_sdk_ebs::operation::get_snapshot_block::GetSnapshotBlockError;
use aws_sdk_ebs::operation::put_snapshot_block::PutSnapshotBlockError;
use aws_sdk_ebs::operation::start_snapshot::StartSnapshotError;

use crate::harness::{Harness, OTHER_KEY, OTHER_SECRET, block};
use crate::sdk::{complete, list_all, put, put_request, start};

/// A rate so low that a second request within the test is always over it.
const SLOW: f64 = 0.01;

fn with_quotas(
    account: &[(&str, f64)],
    snapshot: &[(&str, f64)],
    pending: Option<usize>,
) -> Harness {
    let map = |pairs: &[(&str, f64)]| pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    Harness::with_settings(|settings| {
        settings.quota_rates =
            strata_server::quotas::QuotaRates::new(map(account), map(snapshot)).expect("rates");
        settings.pending_snapshot_limit = pending;
    })
}

#[tokio::test]
async fn a_snapshots_put_rate_throttles_that_snapshot_only() {
    let harness = with_quotas(&[], &[("PutSnapshotBlock", SLOW)], None);
    let client = harness.client();
    let (first, second) = (start(&client, 1, None).await, start(&client, 1, None).await);
    put(&client, &first, 0, &block(1)).await;
    let error = put_request(&client, &first, 1, &block(2))
        .send()
        .await
        .expect_err("over the snapshot's rate")
        .into_service_error();
    match &error {
        PutSnapshotBlockError::RequestThrottledException(e) => {
            assert_eq!(
                e.reason().map(|r| r.as_str()),
                Some("RESOURCE_LEVEL_THROTTLE")
            );
            assert!(
                e.message().is_some_and(|m| m.contains("PutSnapshotBlock")),
                "{e:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    put(&client, &second, 0, &block(2)).await;
    complete(&client, &first, 1, None).await;
}

#[tokio::test]
async fn an_accounts_get_rate_throttles_that_account_only() {
    let harness = with_quotas(&[("GetSnapshotBlock", SLOW)], &[], None);
    let client = harness.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 0, &block(1)).await;
    put(&client, &id, 1, &block(2)).await;
    complete(&client, &id, 2, None).await;
    let blocks = list_all(&client, &id, 100).await;
    let get = |index: usize| {
        client
            .get_snapshot_block()
            .snapshot_id(&id)
            .block_index(blocks[index].0)
            .block_token(&blocks[index].1)
            .send()
    };
    get(0).await.expect("the first read");
    let error = get(1)
        .await
        .expect_err("over the account's rate")
        .into_service_error();
    match &error {
        GetSnapshotBlockError::RequestThrottledException(e) => {
            assert_eq!(e.reason().map(|r| r.as_str()), Some("ACCOUNT_THROTTLED"));
        }
        other => panic!("unexpected {other:?}"),
    }
    // Another account has its own bucket.
    let other = harness.client_as(OTHER_KEY, OTHER_SECRET);
    let theirs = start(&other, 1, None).await;
    put(&other, &theirs, 0, &block(3)).await;
    complete(&other, &theirs, 1, None).await;
    let listed = list_all(&other, &theirs, 100).await;
    crate::sdk::get(&other, &theirs, listed[0].0, &listed[0].1).await;
}

#[tokio::test]
async fn the_pending_snapshot_quota_refuses_one_more_and_holds_when_starts_race() {
    let harness = with_quotas(&[], &[], Some(2));
    let client = harness.client();
    let first = client
        .start_snapshot()
        .volume_size(1)
        .client_token("first")
        .send()
        .await
        .expect("first")
        .snapshot_id()
        .expect("id")
        .to_owned();
    start(&client, 1, None).await;
    let error = client
        .start_snapshot()
        .volume_size(1)
        .send()
        .await
        .expect_err("a third pending snapshot")
        .into_service_error();
    assert!(
        matches!(
            error,
            StartSnapshotError::ConcurrentLimitExceededException(_)
        ),
        "{error:?}"
    );
    // The retry of a StartSnapshot that was created is the same snapshot, not one more.
    let again = client
        .start_snapshot()
        .volume_size(1)
        .client_token("first")
        .send()
        .await
        .expect("the retry");
    assert_eq!(again.snapshot_id(), Some(first.as_str()));
    // Another account has its own quota; completing one frees a place.
    let other = harness.client_as(OTHER_KEY, OTHER_SECRET);
    start(&other, 1, None).await;
    put(&client, &first, 0, &block(1)).await;
    complete(&client, &first, 1, None).await;
    start(&client, 1, None).await;

    // Eight StartSnapshots at once against a quota of two, on an account with none
    // pending: never more than two are kept, and the refused ones leave nothing behind.
    let racing = harness.client_as(OTHER_KEY, OTHER_SECRET);
    let mine = start(&racing, 1, None).await;
    put(&racing, &mine, 0, &block(2)).await;
    complete(&racing, &mine, 1, None).await;
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let client = racing.clone();
            tokio::spawn(async move { client.start_snapshot().volume_size(1).send().await })
        })
        .collect();
    let mut started = 0;
    for handle in starts {
        match handle.await.expect("task") {
            Ok(_) => started += 1,
            Err(e) => assert!(
                matches!(
                    e.into_service_error(),
                    StartSnapshotError::ConcurrentLimitExceededException(_)
                ),
                "only the quota refuses"
            ),
        }
    }
    assert!(
        started <= 1,
        "{started} kept beside the one pending: over the quota of 2"
    );
    let listed = harness
        .raw(crate::harness::RawRequest {
            credentials: Some((OTHER_KEY.into(), OTHER_SECRET.into())),
            ..crate::harness::RawRequest::admin("GET", "/snapshots")
        })
        .await
        .json();
    let pending = listed["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .filter(|s| s["status"] == "pending")
        .count();
    assert_eq!(pending, 1 + started, "refused starts are undone: {listed}");
}
