//! Hostile input: text XML cannot carry, EC2 requests built to cost quadratic work, and
//! payloads signed `UNSIGNED-PAYLOAD` where the SDKs never send it.

use std::time::{Duration, Instant};

use aws_sdk_ebs::types::Tag;

use crate::harness::{Harness, RawRequest, block};
use crate::sdk::start;

/// The text of the first `name` element under each `<snapshotSet><item>`.
fn item_texts(response: &crate::harness::RawResponse, name: &str) -> Vec<String> {
    let doc = response.xml();
    doc.descendants()
        .filter(|n| n.has_tag_name(name))
        .map(|n| n.text().unwrap_or("").to_owned())
        .collect()
}

/// Descriptions and tags may hold any character (the model's pattern is `[\S\s]*`), but
/// XML 1.0 cannot carry most C0 controls, nor U+FFFE/U+FFFF, even as character references.
/// The EC2 view shows each such character as U+FFFD; the EBS view keeps the value.
#[tokio::test]
async fn ec2_answers_stay_well_formed_whatever_text_was_stored() {
    let harness = Harness::new();
    let client = harness.client();
    let description = "disk\u{0}one\u{1b}[31m\rline\ttab\u{ffff}end";
    let started = client
        .start_snapshot()
        .volume_size(1)
        .description(description)
        .tags(Tag::builder().key("k\u{7}").value("v\u{8}\u{c}").build())
        .send()
        .await
        .expect("start");
    assert_eq!(started.description(), Some(description), "stored as given");
    let id = started.snapshot_id().expect("id").to_owned();
    let tagged = harness
        .raw(RawRequest::ec2(&[
            ("Action", "CreateTags"),
            ("ResourceId.1", &id),
            ("Tag.1.Key", "added"),
            ("Tag.1.Value", "\u{1}\u{2}\u{3}"),
        ]))
        .await;
    assert_eq!(
        tagged.status,
        200,
        "{}",
        String::from_utf8_lossy(&tagged.body)
    );

    let response = harness
        .raw(RawRequest::ec2(&[
            ("Action", "DescribeSnapshots"),
            ("SnapshotId.1", &id),
        ]))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        item_texts(&response, "description"),
        vec!["disk\u{fffd}one\u{fffd}[31m\rline\ttab\u{fffd}end"]
    );
    let mut keys = item_texts(&response, "key");
    keys.sort();
    assert_eq!(keys, vec!["added", "k\u{fffd}"]);
    let mut values = item_texts(&response, "value");
    values.sort();
    assert_eq!(
        values,
        vec!["v\u{fffd}\u{fffd}", "\u{fffd}\u{fffd}\u{fffd}"]
    );

    // Filters still match the stored text.
    let filtered = harness
        .raw(RawRequest::ec2(&[
            ("Action", "DescribeSnapshots"),
            ("Filter.1.Name", "tag:added"),
            ("Filter.1.Value.1", "\u{1}\u{2}\u{3}"),
        ]))
        .await;
    assert_eq!(item_texts(&filtered, "snapshotId"), vec![id]);
}

/// Parameters are grouped in O(n log n), and the filters, values and ids a request may
/// carry are bounded, so one 1 MiB form cannot buy seconds of CPU.
#[tokio::test]
async fn ec2_requests_cannot_buy_quadratic_work() {
    let harness = Harness::new();
    let client = harness.client();
    start(&client, 1, None).await;

    // 30,000 distinct filters (about 900 KiB): refused, and quickly.
    let names: Vec<(String, String)> = (1..=30_000)
        .map(|n| (format!("Filter.{n}.Name"), "status".to_owned()))
        .collect();
    let mut params: Vec<(&str, &str)> = vec![("Action", "DescribeSnapshots")];
    params.extend(names.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let started = Instant::now();
    let response = harness.raw(RawRequest::ec2(&params)).await;
    let took = started.elapsed();
    response.assert_ec2_error(400, "FilterLimitExceeded");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");

    // Too many values in one filter, too many ids: refused.
    let values: Vec<(String, String)> = (1..=201)
        .map(|n| (format!("Filter.1.Value.{n}"), "pending".to_owned()))
        .collect();
    let mut params: Vec<(&str, &str)> =
        vec![("Action", "DescribeSnapshots"), ("Filter.1.Name", "status")];
    params.extend(values.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    harness
        .raw(RawRequest::ec2(&params))
        .await
        .assert_ec2_error(400, "FilterLimitExceeded");
    let ids: Vec<(String, String)> = (1..=1001)
        .map(|n| (format!("SnapshotId.{n}"), format!("snap-{n:017x}")))
        .collect();
    let mut params: Vec<(&str, &str)> = vec![("Action", "DescribeSnapshots")];
    params.extend(ids.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    harness
        .raw(RawRequest::ec2(&params))
        .await
        .assert_ec2_error(400, "InvalidParameterValue");

    // The limits themselves are served: 50 filters of 200 values each.
    let mut owned = Vec::new();
    for filter in 1..=50 {
        owned.push((format!("Filter.{filter}.Name"), "status".to_owned()));
        for value in 1..=200 {
            owned.push((format!("Filter.{filter}.Value.{value}"), "p?nd*".to_owned()));
        }
    }
    let mut params: Vec<(&str, &str)> = vec![("Action", "DescribeSnapshots")];
    params.extend(owned.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let response = harness.raw(RawRequest::ec2(&params)).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(item_texts(&response, "snapshotId").len(), 1);

    // MaxResults outside 5..=1000 is an error, negative values included.
    for max in ["-1", "0", "4", "1001", "99999999999"] {
        harness
            .raw(RawRequest::ec2(&[
                ("Action", "DescribeSnapshots"),
                ("MaxResults", max),
            ]))
            .await
            .assert_ec2_error(400, "InvalidParameterValue");
    }
}

/// `UNSIGNED-PAYLOAD` leaves the body unauthenticated. The SDKs send it only for
/// PutSnapshotBlock, whose body is then bound to the signature by the signed
/// `x-amz-Checksum`; anywhere else, or without that header signed, it is refused.
#[tokio::test]
async fn unsigned_payloads_are_accepted_only_for_puts_with_a_signed_checksum() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start(&client, 1, None).await;

    let mut start_unsigned = RawRequest::new("POST", "/snapshots")
        .header("content-type", "application/json")
        .body(br#"{"VolumeSize":1}"#.to_vec());
    start_unsigned.unsigned_payload = true;
    harness
        .raw(start_unsigned)
        .await
        .assert_error(400, "IncompleteSignatureException", "");

    let mut complete_unsigned = RawRequest::new("POST", format!("/snapshots/completion/{id}"))
        .header("x-amz-changedblockscount", "0");
    complete_unsigned.unsigned_payload = true;
    harness
        .raw(complete_unsigned)
        .await
        .assert_error(400, "IncompleteSignatureException", "");

    let mut describe_unsigned = RawRequest::ec2(&[("Action", "DescribeSnapshots")]);
    describe_unsigned.unsigned_payload = true;
    harness
        .raw(describe_unsigned)
        .await
        .assert_ec2_error(400, "IncompleteSignature");

    let mut admin_unsigned = RawRequest::admin("GET", "/snapshots");
    admin_unsigned.unsigned_payload = true;
    harness
        .raw(admin_unsigned)
        .await
        .assert_error(400, "IncompleteSignatureException", "");

    // A Put whose x-amz-Checksum is not signed: body and checksum could both be swapped.
    let data = block(1);
    let mut unsigned_checksum = RawRequest::new("PUT", format!("/snapshots/{id}/blocks/0"))
        .header("x-amz-data-length", "524288")
        .header("x-amz-checksum-algorithm", "SHA256")
        .body(data.clone());
    unsigned_checksum.unsigned_payload = true;
    unsigned_checksum.unsigned_headers =
        vec![("x-amz-checksum".to_owned(), crate::harness::checksum(&data))];
    harness
        .raw(unsigned_checksum)
        .await
        .assert_error(400, "IncompleteSignatureException", "");

    // As the SDKs send it: accepted.
    let response = harness.raw(RawRequest::put_block(&id, "0", data)).await;
    assert_eq!(
        response.status,
        201,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
}
