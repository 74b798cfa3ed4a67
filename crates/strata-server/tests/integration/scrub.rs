//! Scrub through the admin API (`strata verify --all`): bits flipped in a stored chunk
//! and a chunk lost are found, named with the snapshot and blocks that use them, counted
//! in /metrics, quarantined so that a re-upload repairs them; only root may scrub.

use crate::harness::{
    Harness, OTHER_KEY, OTHER_SECRET, RawRequest, block, damage_chunk, lose_chunk,
};
use crate::sdk::{complete, get, list_all, put, start};

async fn scrub(harness: &Harness) -> serde_json::Value {
    let response = harness
        .raw(RawRequest::admin("POST", "/scrub?rateMiB=0"))
        .await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()
}

fn digest_hex(data: &[u8]) -> String {
    strata_types::ChunkDigest::of(data).to_hex()
}

#[tokio::test]
async fn a_scrub_finds_flipped_bits_and_lost_chunks_and_a_reupload_repairs_them() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;
    for (index, seed) in [(0, 1), (1, 2), (2, 3), (7, 1)] {
        put(&client, &id, index, &block(seed)).await;
    }
    complete(&client, &id, 4, None).await;

    let clean = scrub(&harness).await;
    assert_eq!(clean["chunks_checked"], 3, "{clean}");
    assert_eq!(clean["bytes_checked"], 3 * 524_288, "{clean}");
    assert!(
        clean["nodes_checked"].as_u64().is_some_and(|n| n > 0),
        "{clean}"
    );
    assert_eq!(clean["chunk_findings"], serde_json::json!([]));

    damage_chunk(&harness, &block(1));
    // The last chunk stored (an embedded store loses it by cutting its segment short).
    lose_chunk(&harness, &block(3));
    // A read of the rotted block fails: never wrong bytes.
    let blocks = list_all(&client, &id, 100).await;
    let read = client
        .get_snapshot_block()
        .snapshot_id(&id)
        .block_index(0)
        .block_token(&blocks[0].1)
        .send()
        .await
        .expect_err("damaged");
    assert_eq!(
        aws_sdk_ebs::error::ProvideErrorMetadata::code(&read),
        Some("InternalServerException")
    );

    let report = scrub(&harness).await;
    let findings = report["chunk_findings"]
        .as_array()
        .cloned()
        .expect("findings");
    assert_eq!(findings.len(), 2, "{report}");
    let finding = |data: &[u8]| {
        findings
            .iter()
            .find(|f| f["chunk"] == digest_hex(data).as_str())
            .cloned()
            .unwrap_or_else(|| panic!("not reported: {report}"))
    };
    // Damaged where the store still holds the bytes; missing where the read that found
    // them damaged had the store drop them (the embedded store's index).
    let rotted = finding(&block(1));
    assert!(
        rotted["fault"] == "damaged" || rotted["fault"] == "missing",
        "{rotted}"
    );
    assert_eq!(
        rotted["snapshots"],
        serde_json::json!([{"snapshot": id, "blocks": [0, 7]}])
    );
    let lost = finding(&block(3));
    assert!(
        lost["fault"] == "missing" || lost["fault"] == "damaged",
        "{lost}"
    );
    assert_eq!(
        lost["snapshots"],
        serde_json::json!([{"snapshot": id, "blocks": [2]}])
    );

    let mut metrics = RawRequest::new("GET", "/metrics");
    metrics.service = "strata";
    let text = String::from_utf8(harness.raw(metrics).await.body.to_vec()).expect("text");
    assert!(
        text.contains("strata_scrub_runs_total{result=\"ok\"} 2"),
        "{text}"
    );
    let found: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("strata_scrub_findings_total{kind=\"") && !l.contains("damaged_node")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(found, 2, "{text}");

    // The same content uploaded again (any snapshot) repairs both.
    let again = start(&client, 1, None).await;
    put(&client, &again, 0, &block(1)).await;
    put(&client, &again, 1, &block(3)).await;
    complete(&client, &again, 2, None).await;
    let blocks = list_all(&client, &id, 100).await;
    for ((index, token), seed) in blocks.iter().zip([1, 2, 3, 1]) {
        assert!(
            get(&client, &id, *index, token).await == block(seed),
            "block {index}"
        );
    }
    let after = scrub(&harness).await;
    assert_eq!(after["chunk_findings"], serde_json::json!([]), "{after}");
    assert_eq!(after["chunks_checked"], 3, "{after}");

    let mut other = RawRequest::admin("POST", "/scrub");
    other.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    harness
        .raw(other)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    harness
        .raw(RawRequest::admin("POST", "/scrub?rateMiB=fast"))
        .await
        .assert_error(400, "ValidationException", "INVALID_PARAMETER_VALUE");
}
