//! The EC2 Query API on the same listener: DescribeSnapshots, DeleteSnapshot, CreateTags,
//! DeleteTags, driven by raw signed requests (service `ec2`) and parsed with an XML parser;
//! the EBS and EC2 views of a snapshot agree at every step.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ebs::error::ProvideErrorMetadata;
use aws_sdk_ebs::types::Tag;

use crate::harness::{Harness, OTHER_KEY, OTHER_SECRET, RawRequest, block};
use crate::sdk::{complete, list_all, put, start, start_with_timeout};

/// One `<item>` of a DescribeSnapshots response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Ec2Snapshot {
    fields: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
}

impl Ec2Snapshot {
    fn get(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// Parsed DescribeSnapshots: the items and the next token.
async fn describe(
    harness: &Harness,
    params: &[(&str, &str)],
) -> (Vec<Ec2Snapshot>, Option<String>) {
    let mut all = vec![("Action", "DescribeSnapshots")];
    all.extend_from_slice(params);
    let response = harness.raw(RawRequest::ec2(&all)).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/xml;charset=UTF-8")
    );
    let doc = response.xml();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "DescribeSnapshotsResponse");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://ec2.amazonaws.com/doc/2016-11-15/")
    );
    assert!(root.children().any(|n| n.has_tag_name("requestId")));
    let set = root
        .children()
        .find(|n| n.has_tag_name("snapshotSet"))
        .expect("snapshotSet");
    let items = set
        .children()
        .filter(|n| n.has_tag_name("item"))
        .map(|item| {
            let mut snapshot = Ec2Snapshot::default();
            for field in item.children().filter(roxmltree::Node::is_element) {
                if field.has_tag_name("tagSet") {
                    for tag in field.children().filter(|n| n.has_tag_name("item")) {
                        let text = |name: &str| {
                            tag.children()
                                .find(|n| n.has_tag_name(name))
                                .and_then(|n| n.text())
                                .unwrap_or("")
                                .to_owned()
                        };
                        snapshot.tags.insert(text("key"), text("value"));
                    }
                } else {
                    snapshot.fields.insert(
                        field.tag_name().name().to_owned(),
                        field.text().unwrap_or("").to_owned(),
                    );
                }
            }
            snapshot
        })
        .collect();
    let next = root
        .children()
        .find(|n| n.has_tag_name("nextToken"))
        .and_then(|n| n.text())
        .map(str::to_owned);
    (items, next)
}

async fn describe_one(harness: &Harness, id: &str) -> Ec2Snapshot {
    let (items, _) = describe(harness, &[("SnapshotId.1", id)]).await;
    assert_eq!(items.len(), 1);
    items.into_iter().next().expect("one item")
}

#[tokio::test]
async fn ebs_and_ec2_views_agree_through_the_lifecycle() {
    let harness = Harness::new();
    let client = harness.client();
    let started = client
        .start_snapshot()
        .volume_size(3)
        .description("disk <1> & more")
        .tags(Tag::builder().key("team").value("storage").build())
        .send()
        .await
        .expect("start");
    let id = started.snapshot_id().expect("id").to_owned();

    // Visible the moment StartSnapshot returns, pending, 0%.
    let view = describe_one(&harness, &id).await;
    assert_eq!(view.get("snapshotId"), id);
    assert_eq!(view.get("status"), "pending");
    assert_eq!(view.get("progress"), "0%");
    assert_eq!(view.get("volumeId"), "vol-ffffffff");
    assert_eq!(view.get("volumeSize"), "3");
    assert_eq!(view.get("ownerId"), "000000000000");
    assert_eq!(view.get("description"), "disk <1> & more");
    assert_eq!(view.get("encrypted"), "false");
    assert_eq!(view.get("storageTier"), "standard");
    assert_eq!(view.tags.get("team").map(String::as_str), Some("storage"));
    let start_ms = started.start_time().expect("time").to_millis().expect("ms");
    // The SDK reads the JSON number back as a float: allow its last-millisecond rounding.
    let candidates = [start_ms, start_ms + 1].map(strata_wire::ec2::iso8601_ms);
    assert!(
        candidates.contains(&view.get("startTime").to_owned()),
        "{}",
        view.get("startTime")
    );
    assert!(!view.fields.contains_key("completionTime"));

    // Progress follows x-amz-Progress.
    let data = block(1);
    let put_with_progress = RawRequest::put_block(&id, "0", data).header("x-amz-progress", "40");
    assert_eq!(harness.raw(put_with_progress).await.status, 201);
    assert_eq!(describe_one(&harness, &id).await.get("progress"), "40%");

    complete(&client, &id, 1, None).await;
    let view = describe_one(&harness, &id).await;
    assert_eq!(view.get("status"), "completed");
    assert_eq!(view.get("progress"), "100%");
    assert!(!view.get("completionTime").is_empty());
    // And the EBS read APIs agree: readable now.
    assert_eq!(list_all(&client, &id, 100).await.len(), 1);
}

#[tokio::test]
async fn describe_snapshots_filters_owners_and_pages() {
    let harness = Harness::new();
    let client = harness.client();
    let mut ids = Vec::new();
    for i in 0..7i64 {
        let id = client
            .start_snapshot()
            .volume_size(i + 1)
            .description(format!("image-{i}.raw"))
            .tags(
                Tag::builder()
                    .key("parity")
                    .value(if i % 2 == 0 { "even" } else { "odd" })
                    .build(),
            )
            .send()
            .await
            .expect("start")
            .snapshot_id()
            .expect("id")
            .to_owned();
        if i < 3 {
            complete(&client, &id, 0, None).await;
        }
        ids.push(id);
    }
    let other = harness.client_as(OTHER_KEY, OTHER_SECRET);
    let foreign = start(&other, 1, None).await;

    let count = |items: &Vec<Ec2Snapshot>| items.len();
    let (all, next) = describe(&harness, &[]).await;
    assert_eq!(count(&all), 7, "only the caller's snapshots");
    assert!(next.is_none());
    assert!(!all.iter().any(|s| s.get("snapshotId") == foreign));
    let (own, _) = describe(&harness, &[("Owner.1", "self")]).await;
    assert_eq!(count(&own), 7);
    let (by_id, _) = describe(&harness, &[("Owner.1", "000000000000")]).await;
    assert_eq!(count(&by_id), 7);
    let (amazon, _) = describe(&harness, &[("Owner.1", "amazon")]).await;
    assert_eq!(count(&amazon), 0);

    let filtered = |name: &'static str, values: &'static [&'static str]| {
        let mut params = vec![("Filter.1.Name", name)];
        let keys = ["Filter.1.Value.1", "Filter.1.Value.2", "Filter.1.Value.3"];
        for (key, value) in keys.iter().zip(values) {
            params.push((key, value));
        }
        params
    };
    for (name, values, expected) in [
        ("status", &["completed"][..], 3),
        ("status", &["pending", "completed"][..], 7),
        ("tag:parity", &["even"][..], 4),
        ("tag-key", &["parity"][..], 7),
        ("tag-key", &["nope"][..], 0),
        ("volume-size", &["1", "2"][..], 2),
        ("description", &["image-?.raw"][..], 7),
        ("description", &["*-6.*"][..], 1),
        ("progress", &["100%"][..], 3),
        ("volume-id", &["vol-ffffffff"][..], 7),
        ("encrypted", &["false"][..], 7),
        ("owner-id", &["000000000000"][..], 7),
        ("storage-tier", &["standard"][..], 7),
        ("owner-alias", &["amazon"][..], 0),
    ] {
        let (items, _) = describe(&harness, &filtered(name, values)).await;
        assert_eq!(count(&items), expected, "filter {name}={values:?}");
    }
    // Filters combine with AND.
    let (both, _) = describe(
        &harness,
        &[
            ("Filter.1.Name", "status"),
            ("Filter.1.Value.1", "completed"),
            ("Filter.2.Name", "tag:parity"),
            ("Filter.2.Value.1", "odd"),
        ],
    )
    .await;
    assert_eq!(count(&both), 1);
    let first_id: &str = &ids[0];
    let (one, _) = describe(
        &harness,
        &[
            ("Filter.1.Name", "snapshot-id"),
            ("Filter.1.Value.1", first_id),
        ],
    )
    .await;
    assert_eq!(one[0].get("snapshotId"), ids[0]);

    // MaxResults + NextToken page through everything exactly once.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = vec![("MaxResults", "5")];
        if let Some(t) = &token {
            params.push(("NextToken", t.as_str()));
        }
        let (page, next) = describe(&harness, &params).await;
        assert!(page.len() <= 5);
        seen.extend(page.iter().map(|s| s.get("snapshotId").to_owned()));
        match next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn describe_snapshots_errors() {
    let harness = Harness::new();
    let id = start(&harness.client(), 1, None).await;
    let ec2 = |params: &[(&str, &str)]| {
        let mut all = vec![("Action", "DescribeSnapshots")];
        all.extend_from_slice(params);
        RawRequest::ec2(&all)
    };
    let missing = "snap-0123456789abcdef0";
    type Params<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Params, u16, &str); 8] = [
        (
            &[("SnapshotId.1", &id), ("SnapshotId.2", missing)],
            400,
            "InvalidSnapshot.NotFound",
        ),
        (
            &[("SnapshotId.1", "snap-XYZ")],
            400,
            "InvalidSnapshotID.Malformed",
        ),
        (
            &[("Filter.1.Name", "colour"), ("Filter.1.Value.1", "x")],
            400,
            "InvalidParameterValue",
        ),
        (&[("MaxResults", "4")], 400, "InvalidParameterValue"),
        (&[("MaxResults", "1001")], 400, "InvalidParameterValue"),
        (
            &[("MaxResults", "5"), ("SnapshotId.1", &id)],
            400,
            "InvalidParameterCombination",
        ),
        (&[("NextToken", "garbage")], 400, "InvalidParameterValue"),
        (&[("DryRun", "true")], 412, "DryRunOperation"),
    ];
    for (params, status, code) in cases {
        harness
            .raw(ec2(params))
            .await
            .assert_ec2_error(status, code);
    }
    // Another account's snapshot does not exist for the caller.
    let other = RawRequest {
        credentials: Some((OTHER_KEY.into(), OTHER_SECRET.into())),
        ..ec2(&[("SnapshotId.1", &id)])
    };
    harness
        .raw(other)
        .await
        .assert_ec2_error(400, "InvalidSnapshot.NotFound");
    harness
        .raw(RawRequest::ec2(&[("Action", "RunInstances")]))
        .await
        .assert_ec2_error(400, "InvalidAction");
    harness
        .raw(RawRequest::ec2(&[]))
        .await
        .assert_ec2_error(400, "InvalidAction");
}

#[tokio::test]
async fn ec2_authentication_errors() {
    let harness = Harness::new();
    let params = [("Action", "DescribeSnapshots")];
    let unsigned = RawRequest {
        credentials: None,
        ..RawRequest::ec2(&params)
    };
    harness
        .raw(unsigned)
        .await
        .assert_ec2_error(401, "AuthFailure");
    let unknown = RawRequest {
        credentials: Some(("AKIDNOBODY".into(), "x".into())),
        ..RawRequest::ec2(&params)
    };
    harness
        .raw(unknown)
        .await
        .assert_ec2_error(401, "AuthFailure");
    let wrong = RawRequest {
        credentials: Some((crate::harness::ROOT_KEY.into(), "wrong".into())),
        ..RawRequest::ec2(&params)
    };
    harness
        .raw(wrong)
        .await
        .assert_ec2_error(403, "SignatureDoesNotMatch");
    let stale = RawRequest {
        signing_offset: time::Duration::minutes(30),
        ..RawRequest::ec2(&params)
    };
    harness
        .raw(stale)
        .await
        .assert_ec2_error(400, "RequestExpired");
    let garbage = RawRequest {
        credentials: None,
        ..RawRequest::ec2(&params).header("authorization", "AWS4-HMAC-SHA256 nonsense")
    };
    harness
        .raw(garbage)
        .await
        .assert_ec2_error(400, "IncompleteSignature");
    // Signed for the wrong service.
    let mut wrong_service = RawRequest::ec2(&params);
    wrong_service.service = "ebs";
    harness
        .raw(wrong_service)
        .await
        .assert_ec2_error(400, "IncompleteSignature");
    // And an EBS call signed for ec2 is refused too.
    let mut ebs_as_ec2 = RawRequest::new("GET", "/snapshots/snap-0123456789abcdef0/blocks");
    ebs_as_ec2.service = "ec2";
    harness
        .raw(ebs_as_ec2)
        .await
        .assert_error(400, "IncompleteSignatureException", "");
}

#[tokio::test]
async fn delete_snapshot_in_any_state() {
    let harness = Harness::new();
    let client = harness.client();
    let pending = start(&client, 1, None).await;
    put(&client, &pending, 0, &block(1)).await;
    let done = start(&client, 1, None).await;
    complete(&client, &done, 0, None).await;
    for id in [&pending, &done] {
        let dry = harness
            .raw(RawRequest::ec2(&[
                ("Action", "DeleteSnapshot"),
                ("SnapshotId", id),
                ("DryRun", "true"),
            ]))
            .await;
        dry.assert_ec2_error(412, "DryRunOperation");
        let response = harness
            .raw(RawRequest::ec2(&[
                ("Action", "DeleteSnapshot"),
                ("SnapshotId", id),
            ]))
            .await;
        assert_eq!(response.status, 200);
        let doc = response.xml();
        assert_eq!(
            doc.root_element().tag_name().name(),
            "DeleteSnapshotResponse"
        );
        let ret = doc
            .descendants()
            .find(|n| n.has_tag_name("return"))
            .and_then(|n| n.text());
        assert_eq!(ret, Some("true"));
        // Gone for both APIs.
        let again = harness
            .raw(RawRequest::ec2(&[
                ("Action", "DeleteSnapshot"),
                ("SnapshotId", id),
            ]))
            .await;
        again.assert_ec2_error(400, "InvalidSnapshot.NotFound");
        let error = client
            .list_snapshot_blocks()
            .snapshot_id(id)
            .send()
            .await
            .expect_err("deleted");
        assert_eq!(error.code(), Some("ResourceNotFoundException"));
    }
    // A Put or Complete to the cancelled snapshot is 404.
    let put = harness
        .raw(RawRequest::put_block(&pending, "1", block(2)))
        .await;
    put.assert_error(404, "ResourceNotFoundException", "SNAPSHOT_NOT_FOUND");
    harness
        .raw(RawRequest::ec2(&[("Action", "DeleteSnapshot")]))
        .await
        .assert_ec2_error(400, "MissingParameter");
    harness
        .raw(RawRequest::ec2(&[
            ("Action", "DeleteSnapshot"),
            ("SnapshotId", "snap-!"),
        ]))
        .await
        .assert_ec2_error(400, "InvalidSnapshotID.Malformed");
    // Another account cannot delete the caller's snapshots.
    let kept = start(&client, 1, None).await;
    let foreign = RawRequest {
        credentials: Some((OTHER_KEY.into(), OTHER_SECRET.into())),
        ..RawRequest::ec2(&[("Action", "DeleteSnapshot"), ("SnapshotId", &kept)])
    };
    harness
        .raw(foreign)
        .await
        .assert_ec2_error(400, "InvalidSnapshot.NotFound");
    assert_eq!(describe_one(&harness, &kept).await.get("status"), "pending");
}

#[tokio::test]
async fn tags_are_shared_between_start_snapshot_and_ec2() {
    let harness = Harness::new();
    let client = harness.client();
    let id = client
        .start_snapshot()
        .volume_size(1)
        .tags(Tag::builder().key("a").value("1").build())
        .send()
        .await
        .expect("start")
        .snapshot_id()
        .expect("id")
        .to_owned();
    let second = start(&client, 1, None).await;
    let create = RawRequest::ec2(&[
        ("Action", "CreateTags"),
        ("ResourceId.1", &id),
        ("ResourceId.2", &second),
        ("Tag.1.Key", "a"),
        ("Tag.1.Value", "2"),
        ("Tag.2.Key", "b"),
        ("Tag.2.Value", ""),
    ]);
    let response = harness.raw(create).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.xml().root_element().tag_name().name(),
        "CreateTagsResponse"
    );
    let view = describe_one(&harness, &id).await;
    assert_eq!(
        view.tags,
        BTreeMap::from([("a".into(), "2".into()), ("b".into(), String::new())])
    );
    assert_eq!(describe_one(&harness, &second).await.tags.len(), 2);

    // DeleteTags by key and value: a non-matching value leaves the tag.
    let delete = |tags: &[(&'static str, &'static str)]| {
        let mut params = vec![("Action", "DeleteTags"), ("ResourceId.1", id.as_str())];
        params.extend_from_slice(tags);
        RawRequest::ec2(&params)
    };
    assert_eq!(
        harness
            .raw(delete(&[("Tag.1.Key", "a"), ("Tag.1.Value", "1")]))
            .await
            .status,
        200
    );
    assert_eq!(describe_one(&harness, &id).await.tags.len(), 2);
    assert_eq!(harness.raw(delete(&[("Tag.1.Key", "a")])).await.status, 200);
    assert_eq!(
        describe_one(&harness, &id).await.tags,
        BTreeMap::from([("b".into(), String::new())])
    );
    assert_eq!(
        harness.raw(delete(&[])).await.status,
        200,
        "no tags given: all removed"
    );
    assert!(describe_one(&harness, &id).await.tags.is_empty());

    // Errors: unknown snapshot, non-snapshot id, reserved prefix, too many tags, no tags.
    let tag_params = |resource: &'static str| {
        vec![
            ("Action", "CreateTags"),
            ("ResourceId.1", resource),
            ("Tag.1.Key", "k"),
        ]
    };
    harness
        .raw(RawRequest::ec2(&tag_params("snap-0123456789abcdef0")))
        .await
        .assert_ec2_error(400, "InvalidSnapshot.NotFound");
    harness
        .raw(RawRequest::ec2(&tag_params("vol-0123")))
        .await
        .assert_ec2_error(400, "InvalidID");
    harness
        .raw(RawRequest::ec2(&[
            ("Action", "CreateTags"),
            ("ResourceId.1", &id),
            ("Tag.1.Key", "aws:x"),
        ]))
        .await
        .assert_ec2_error(400, "InvalidParameterValue");
    harness
        .raw(RawRequest::ec2(&[
            ("Action", "CreateTags"),
            ("ResourceId.1", &id),
        ]))
        .await
        .assert_ec2_error(400, "MissingParameter");
    harness
        .raw(RawRequest::ec2(&[
            ("Action", "CreateTags"),
            ("Tag.1.Key", "k"),
        ]))
        .await
        .assert_ec2_error(400, "MissingParameter");
    let keys: Vec<String> = (0..51).map(|i| format!("k{i}")).collect();
    let names: Vec<String> = (1..=51).map(|i| format!("Tag.{i}.Key")).collect();
    let mut many = vec![("Action", "CreateTags"), ("ResourceId.1", id.as_str())];
    many.extend(
        names
            .iter()
            .map(String::as_str)
            .zip(keys.iter().map(String::as_str)),
    );
    harness
        .raw(RawRequest::ec2(&many))
        .await
        .assert_ec2_error(400, "TagLimitExceeded");
    assert!(
        describe_one(&harness, &id).await.tags.is_empty(),
        "all or nothing"
    );
}

#[tokio::test]
async fn timeouts_move_snapshots_to_error_and_survive_restarts() {
    let harness = Harness::new();
    let client = harness.client();
    let id = start_with_timeout(&client, 10).await;
    put(&client, &id, 0, &block(1)).await;
    harness.clock.advance(Duration::from_secs(5 * 60));
    drop(client);
    // After a restart the remaining time is what it was: 5 more minutes.
    let harness = harness.restart();
    let client = harness.client();
    harness.clock.advance(Duration::from_secs(4 * 60));
    assert_eq!(describe_one(&harness, &id).await.get("status"), "pending");
    put(&client, &id, 1, &block(2)).await; // restarts the timer
    harness.clock.advance(Duration::from_secs(9 * 60));
    assert_eq!(describe_one(&harness, &id).await.get("status"), "pending");
    harness.clock.advance(Duration::from_secs(2 * 60));
    let view = describe_one(&harness, &id).await;
    assert_eq!(view.get("status"), "error");
    assert!(view.get("statusMessage").contains("timeout"));
    let error = client
        .list_snapshot_blocks()
        .snapshot_id(&id)
        .send()
        .await
        .expect_err("error state");
    assert_eq!(error.code(), Some("ResourceNotFoundException"));
    drop(client);
    // And stays in error across a restart.
    let harness = harness.restart();
    assert_eq!(describe_one(&harness, &id).await.get("status"), "error");
}
