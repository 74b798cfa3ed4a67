//! `POST /_strata/v1/backup?dir=…` (`strata store backup`): root only, into a new or empty
//! absolute directory; a copy of the embedded stores that a new server opens; refused with
//! the reason on PostgreSQL and S3.

use crate::harness::{Harness, OTHER_KEY, OTHER_SECRET, RawRequest, block, on_postgres_and_s3};
use crate::sdk::{complete, get, list_all, put, start};

fn escaped(path: &std::path::Path) -> String {
    percent_encoding::utf8_percent_encode(
        path.to_str().expect("utf-8"),
        percent_encoding::NON_ALPHANUMERIC,
    )
    .to_string()
}

#[tokio::test]
async fn a_backup_is_for_root_into_a_new_absolute_directory_and_opens_as_a_data_dir() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 0, &block(1)).await;
    put(&client, &id, 5, &block(2)).await;
    complete(&client, &id, 2, None).await;

    let outside = tempfile::tempdir().expect("tempdir");
    let copy = outside.path().join("copy");
    let mut other = RawRequest::admin("POST", &format!("/backup?dir={}", escaped(&copy)));
    other.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    harness
        .raw(other)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    for query in ["", "?dir=relative%2Fdir", "?dir=%2Ftmp%2F..%2Fcopy"] {
        harness
            .raw(RawRequest::admin("POST", &format!("/backup{query}")))
            .await
            .assert_error(400, "ValidationException", "INVALID_PARAMETER_VALUE");
    }
    assert!(!copy.exists(), "a refused backup writes nothing");

    let response = harness
        .raw(RawRequest::admin(
            "POST",
            &format!("/backup?dir={}", escaped(&copy)),
        ))
        .await;
    if on_postgres_and_s3() {
        response.assert_error(400, "ValidationException", "INVALID_PARAMETER_VALUE");
        let message = String::from_utf8_lossy(&response.body).into_owned();
        assert!(message.contains("embedded stores only"), "{message}");
        assert!(!copy.exists());
        return;
    }
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let summary = response.json();
    assert_eq!(summary["snapshots"], 1, "{summary}");
    assert_eq!(summary["completed_snapshots"], 1, "{summary}");
    assert_eq!(summary["chunks"], 2, "{summary}");
    assert_eq!(
        summary["chunk_bytes"],
        2 * strata_types::BLOCK_SIZE,
        "{summary}"
    );
    assert_eq!(summary["dir"], copy.to_str().expect("utf-8"), "{summary}");
    // The same directory again is not empty now.
    harness
        .raw(RawRequest::admin(
            "POST",
            &format!("/backup?dir={}", escaped(&copy)),
        ))
        .await
        .assert_error(400, "ValidationException", "INVALID_PARAMETER_VALUE");

    // A server on the copy reads the snapshot back.
    let restored = Harness::with_settings(|settings| settings.data_dir = copy.clone());
    let client = restored.client();
    let blocks = list_all(&client, &id, 100).await;
    assert_eq!(blocks.len(), 2);
    for ((index, token), seed) in blocks.iter().zip([1, 2]) {
        assert!(
            get(&client, &id, *index, token).await == block(seed),
            "block {index}"
        );
    }
}
