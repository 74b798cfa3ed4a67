//! Property tests through the whole server: correctly signed requests with arbitrary
//! labels, query parameters, headers and bodies (EBS), and arbitrary forms (EC2), are
//! answered with a well-formed answer of the right protocol and never a 5xx.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::harness::{Harness, RawRequest, RawResponse, block};
use crate::sdk::{complete, put, start};

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Values drawn towards the edges the decoders care about.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("100".to_owned()),
        Just("524288".to_owned()),
        Just("2147483648".to_owned()),
        Just("99999999999999999999".to_owned()),
        Just("SHA256".to_owned()),
        Just("LINEAR".to_owned()),
        Just("snap-".to_owned()),
        "[0-9]{1,12}",
        "snap-[0-9a-f]{1,20}",
        "[A-Za-z0-9+/=]{0,40}",
        "\\PC{0,12}",
    ]
}

#[derive(Debug, Clone)]
struct EbsCase {
    method: &'static str,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    unsigned_payload: bool,
}

fn ebs_case(ids: Vec<String>) -> impl Strategy<Value = EbsCase> {
    let id = prop_oneof![
        proptest::sample::select(ids),
        value().prop_map(|s| encode(&s)),
        "[^/]{0,10}".prop_map(|s| encode(&s)),
    ];
    let index = prop_oneof![value(), "[0-9]{1,3}"];
    // Mostly the method the shape routes with, sometimes another one.
    let line = (0..6usize, id.clone(), index, 0..8usize).prop_map(|(shape, id, index, odd)| {
        let (method, path) = match shape {
            0 => ("POST", "/snapshots".to_owned()),
            1 => ("PUT", format!("/snapshots/{id}/blocks/{}", encode(&index))),
            2 => ("GET", format!("/snapshots/{id}/blocks/{}", encode(&index))),
            3 => ("GET", format!("/snapshots/{id}/blocks")),
            4 => ("GET", format!("/snapshots/{id}/changedblocks")),
            _ => ("POST", format!("/snapshots/completion/{id}")),
        };
        let method = match odd {
            0 => "DELETE",
            1 => "PUT",
            _ => method,
        };
        (method, path)
    });
    let query = proptest::collection::vec(
        (
            proptest::sample::select(vec![
                "maxResults",
                "pageToken",
                "startingBlockIndex",
                "blockToken",
                "firstSnapshotId",
            ])
            .prop_map(str::to_owned),
            prop_oneof![value(), id],
        ),
        0..4,
    );
    let headers = proptest::collection::vec(
        (
            proptest::sample::select(vec![
                "x-amz-data-length",
                "x-amz-checksum",
                "x-amz-checksum-algorithm",
                "x-amz-progress",
                "x-amz-changedblockscount",
                "x-amz-checksum-aggregation-method",
            ]),
            "[!-~]{0,20}",
        ),
        0..6,
    );
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        "\\{\"VolumeSize\":(1|0|-1|65536|1e3|\"1\"|null)(,\"(Timeout|Description|ClientToken|KmsKeyArn|Encrypted|ParentSnapshotId|Tags)\":(10|\"x\"|\"\\PC{0,8}\"|true|\\[\\{\"Key\":\"\\PC{0,4}\"\\}\\]|null))?\\}"
            .prop_map(String::into_bytes),
    ];
    (line, query, headers, body, proptest::bool::weighted(0.25)).prop_map(
        |((method, path), query, headers, body, unsigned_payload)| EbsCase {
            method,
            path,
            query,
            headers,
            body,
            unsigned_payload,
        },
    )
}

fn ec2_form() -> impl Strategy<Value = Vec<(String, String)>> {
    let name = prop_oneof![
        Just("SnapshotId.1".to_owned()),
        Just("Owner.1".to_owned()),
        Just("MaxResults".to_owned()),
        Just("NextToken".to_owned()),
        Just("DryRun".to_owned()),
        "(ResourceId|SnapshotId|Owner)\\.[0-9]{1,3}",
        "(Filter|Tag)\\.[0-9]{1,2}\\.(Name|Key|Value)",
        "Filter\\.[0-9]\\.Value\\.[0-9]{1,2}",
        "\\PC{0,8}",
    ];
    let filter_name = prop_oneof![
        Just("status".to_owned()),
        Just("tag:team".to_owned()),
        Just("description".to_owned()),
        Just("tag-key".to_owned()),
        Just("start-time".to_owned()),
    ];
    (
        proptest::sample::select(vec![
            "DescribeSnapshots",
            "DeleteSnapshot",
            "CreateTags",
            "DeleteTags",
            "RunInstances",
        ]),
        proptest::collection::vec(
            (name, prop_oneof![value(), filter_name, "[*?\\\\a-z]{0,8}"]),
            0..10,
        ),
    )
        .prop_map(|(action, mut params)| {
            params.insert(0, ("Action".to_owned(), action.to_owned()));
            params
        })
}

fn config() -> Config {
    Config {
        cases: 400,
        failure_persistence: None,
        ..Config::default()
    }
}

fn check_ebs_answer(response: &RawResponse) -> Result<(), TestCaseError> {
    prop_assert!(
        response.status < 500,
        "{} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    if response.status >= 400 {
        prop_assert!(!response.error_type().is_empty());
        prop_assert!(
            response.json()["Message"].is_string(),
            "{:?}",
            response.body
        );
    }
    Ok(())
}

#[test]
fn arbitrary_signed_requests_get_well_formed_answers_and_never_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let harness = Harness::new();
    // Real snapshots to aim at: one pending with a block, one completed.
    let ids = runtime.block_on(async {
        let client = harness.client();
        let pending = start(&client, 1, None).await;
        put(&client, &pending, 0, &block(0)).await;
        let completed = start(&client, 1, None).await;
        put(&client, &completed, 1, &block(1)).await;
        complete(&client, &completed, 1, None).await;
        vec![pending, completed]
    });

    // What the cases got, to show they reach the handlers and not only the router.
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<String, usize>::new());
    let mut runner = TestRunner::new(config());
    let outcome = runner.run(&ebs_case(ids), |case| {
        let query: Vec<String> = case
            .query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let target = if query.is_empty() {
            case.path.clone()
        } else {
            format!("{}?{}", case.path, query.join("&"))
        };
        let mut request = RawRequest::new(case.method, target).body(case.body.clone());
        for (name, value) in &case.headers {
            request = request.header(name, value.clone());
        }
        request.unsigned_payload = case.unsigned_payload;
        let response = runtime.block_on(harness.raw(request));
        let kind = format!(
            "{} {} {}",
            response.status,
            response.error_type(),
            response.reason()
        );
        *seen.lock().expect("counts").entry(kind).or_default() += 1;
        check_ebs_answer(&response)
    });
    if let Err(error) = outcome {
        panic!("{error}");
    }
    let seen = seen.into_inner().expect("counts");
    assert!(seen.len() >= 8, "too few kinds of answers: {seen:?}");
    assert!(
        seen.keys().any(|k| k.starts_with('2')),
        "no success: {seen:?}"
    );
    eprintln!("EBS answers: {seen:?}");

    let mut runner = TestRunner::new(config());
    let outcome = runner.run(&ec2_form(), |params| {
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let response = runtime.block_on(harness.raw(RawRequest::ec2(&params)));
        prop_assert!(
            response.status < 500,
            "{} {}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        let text =
            std::str::from_utf8(&response.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(roxmltree::Document::parse(text).is_ok(), "{text}");
        Ok(())
    });
    if let Err(error) = outcome {
        panic!("{error}");
    }
}
