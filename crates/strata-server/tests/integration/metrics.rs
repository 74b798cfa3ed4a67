//! `/metrics`: scraped before, during and after uploads through `aws-sdk-ebs`, the counters
//! move by exactly the blocks, bytes and deduplication hits the test caused; collections
//! are counted with what they freed; only the root account (or the metrics listener) may
//! read them.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_wire::admin::GcSummary;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{BLOCK, Harness, OTHER_KEY, OTHER_SECRET, RawRequest, block};
use crate::sdk::{complete, get, list_all, put, start};

/// One scrape: every sample by its name and labels as printed (`name{a="x",b="y"}`).
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    /// The sample's value; a series not yet created reads as 0, as Prometheus' `rate`
    /// treats a new series.
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// How much `series` grew since `before`.
    fn delta(&self, before: &Scrape, series: &str) -> f64 {
        self.get(series) - before.get(series)
    }
}

fn parse(text: &str) -> Scrape {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().expect("a number");
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{series} twice"
        );
    }
    Scrape(samples)
}

async fn scrape(harness: &Harness) -> Scrape {
    let response = harness.raw(metrics_request()).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let content_type = response
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(std::str::from_utf8(&response.body).expect("utf-8"))
}

/// `GET /metrics`, signed for the `strata` service (as the admin API) by the root key.
fn metrics_request() -> RawRequest {
    let mut raw = RawRequest::new("GET", "/metrics");
    raw.service = "strata";
    raw
}

const PUT_201: &str = r#"strata_requests_total{operation="PutSnapshotBlock",status="201"}"#;
const PUT_400: &str = r#"strata_requests_total{operation="PutSnapshotBlock",status="400"}"#;
const PUT_BYTES: &str = r#"strata_request_bytes_total{operation="PutSnapshotBlock"}"#;
const GET_BYTES_OUT: &str = r#"strata_response_bytes_total{operation="GetSnapshotBlock"}"#;
const WRITTEN: &str = "strata_blocks_written_total";
const DEDUP: &str = "strata_blocks_deduplicated_total";
const ZERO: &str = "strata_zero_blocks_total";
const LOGICAL: &str = "strata_block_bytes_written_total";
const STORED: &str = "strata_block_bytes_stored_total";
const PENDING: &str = r#"strata_snapshots{status="pending"}"#;
const COMPLETED: &str = r#"strata_snapshots{status="completed"}"#;

#[tokio::test]
async fn counters_move_by_exactly_the_blocks_bytes_and_dedup_hits_of_an_upload() {
    let harness = Harness::new();
    let client = harness.client();
    let before = scrape(&harness).await;
    assert_eq!(before.get(WRITTEN), 0.0);
    assert_eq!(before.get(PENDING), 0.0);
    let builds: Vec<(&String, &f64)> = before
        .0
        .iter()
        .filter(|(series, _)| series.starts_with("strata_build_info{"))
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(builds[0].0.contains(&version), "{builds:?}");
    assert_eq!(*builds[0].1, 1.0);

    // One snapshot: three distinct blocks, two repeats of them, two zero blocks.
    let first = start(&client, 1, None).await;
    let zero = vec![0u8; BLOCK];
    let writes: [(i32, &[u8]); 7] = [
        (0, &block(1)),
        (1, &block(2)),
        (2, &block(3)),
        (3, &block(1)),
        (4, &block(2)),
        (5, &zero),
        (6, &zero),
    ];
    for (index, data) in &writes {
        put(&client, &first, *index, data).await;
    }
    // A Put whose body does not match its checksum is answered 400 and writes nothing.
    let mut rejected = RawRequest::put_block(&first, "7", block(4));
    rejected
        .headers
        .retain(|(name, _)| name != "x-amz-checksum");
    rejected = rejected.header("x-amz-checksum", crate::harness::checksum(&block(5)));
    let answer = harness.raw(rejected).await;
    assert_eq!(
        answer.status,
        400,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );

    let during = scrape(&harness).await;
    assert_eq!(during.delta(&before, WRITTEN), 7.0);
    assert_eq!(during.delta(&before, DEDUP), 2.0);
    assert_eq!(during.delta(&before, ZERO), 2.0);
    assert_eq!(during.delta(&before, LOGICAL), 7.0 * BLOCK as f64);
    assert_eq!(during.delta(&before, STORED), 3.0 * BLOCK as f64);
    assert_eq!(during.delta(&before, PUT_201), 7.0);
    assert_eq!(during.delta(&before, PUT_400), 1.0);
    // Every body byte of the eight Puts was read (the rejected one's too: it was hashed).
    assert_eq!(during.delta(&before, PUT_BYTES), 8.0 * BLOCK as f64);
    assert_eq!(during.get(PENDING), 1.0);
    assert_eq!(during.get(COMPLETED), 0.0);
    assert_eq!(
        during.delta(
            &before,
            r#"strata_request_duration_seconds_count{operation="PutSnapshotBlock",status="201"}"#
        ),
        7.0
    );
    assert!(
        during.get(
            r#"strata_request_duration_seconds_sum{operation="PutSnapshotBlock",status="201"}"#
        ) > 0.0
    );

    complete(&client, &first, 7, None).await;
    // A second snapshot repeats one stored block and adds one new one.
    let second = start(&client, 1, None).await;
    put(&client, &second, 0, &block(3)).await;
    put(&client, &second, 1, &block(6)).await;
    complete(&client, &second, 2, None).await;
    let blocks = list_all(&client, &first, 100).await;
    let (index, token) = &blocks[0];
    assert_eq!(get(&client, &first, *index, token).await, block(1));

    let after = scrape(&harness).await;
    assert_eq!(after.delta(&during, WRITTEN), 2.0);
    assert_eq!(after.delta(&during, DEDUP), 1.0);
    assert_eq!(after.delta(&during, ZERO), 0.0);
    assert_eq!(after.delta(&during, STORED), BLOCK as f64);
    assert_eq!(after.delta(&during, PUT_BYTES), 2.0 * BLOCK as f64);
    assert_eq!(after.delta(&during, GET_BYTES_OUT), BLOCK as f64);
    assert_eq!(
        after.delta(
            &during,
            r#"strata_requests_total{operation="CompleteSnapshot",status="202"}"#
        ),
        2.0
    );
    assert_eq!(after.get(PENDING), 0.0);
    assert_eq!(after.get(COMPLETED), 2.0);
}

#[tokio::test]
async fn collections_are_counted_with_what_they_freed() {
    let harness = Harness::with_settings(|s| s.gc_grace = Duration::ZERO);
    let client = harness.client();
    let id = start(&client, 1, None).await;
    for i in 0..3 {
        put(&client, &id, i, &block(10 + i as u64)).await;
    }
    complete(&client, &id, 3, None).await;
    let deleted = harness
        .raw(RawRequest::ec2(&[
            ("Action", "DeleteSnapshot"),
            ("SnapshotId", &id),
        ]))
        .await;
    assert_eq!(deleted.status, 200);
    let before = scrape(&harness).await;

    let dry = harness
        .raw(RawRequest::admin("POST", "/gc?dryRun=true"))
        .await;
    assert_eq!(dry.status, 200);
    let response = harness.raw(RawRequest::admin("POST", "/gc")).await;
    assert_eq!(response.status, 200);
    let summary: GcSummary = serde_json::from_slice(&response.body).expect("GcSummary");
    assert_eq!(summary.chunks_deleted, 3, "{summary:?}");

    let after = scrape(&harness).await;
    let runs = |mode: &str, result: &str| {
        after.delta(
            &before,
            &format!(r#"strata_gc_runs_total{{mode="{mode}",result="{result}"}}"#),
        )
    };
    assert_eq!(runs("collect", "ok"), 1.0);
    assert_eq!(runs("dry_run", "ok"), 1.0);
    assert_eq!(
        after.delta(&before, "strata_gc_freed_bytes_total"),
        summary.bytes_freed as f64
    );
    assert!(summary.bytes_freed >= 3 * BLOCK as u64, "{summary:?}");
    assert_eq!(after.delta(&before, "strata_gc_deleted_chunks_total"), 3.0);
    assert_eq!(
        after.delta(
            &before,
            r#"strata_gc_duration_seconds_count{mode="collect"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn only_the_root_account_reads_the_metrics_on_the_api_listener() {
    let harness = Harness::new();
    let mut other = metrics_request();
    other.credentials = Some((OTHER_KEY.into(), OTHER_SECRET.into()));
    harness
        .raw(other)
        .await
        .assert_error(403, "AccessDeniedException", "UNAUTHORIZED_ACCOUNT");
    let mut unsigned = metrics_request();
    unsigned.credentials = None;
    assert_eq!(harness.raw(unsigned).await.status, 403);
    let mut ebs = metrics_request();
    ebs.service = "ebs";
    assert_eq!(
        harness.raw(ebs).await.status / 100,
        4,
        "signed for another service"
    );
    // The refusals are counted too (as the operation `Metrics`).
    let text = scrape(&harness).await;
    assert_eq!(
        text.get(r#"strata_requests_total{operation="Metrics",status="403"}"#),
        2.0
    );
}

/// Send one request head and read the whole answer (the server closes after it).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    answer
}

#[tokio::test]
async fn the_metrics_listener_serves_only_metrics_and_without_authentication() {
    let harness = Harness::with_settings(|s| {
        s.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    });
    let server = harness.into_socket().await;
    let client = server.client();
    let id = start(&client, 1, None).await;
    put(&client, &id, 0, &block(1)).await;
    let metrics_addr = server.metrics_addr().expect("a metrics listener");
    assert_ne!(metrics_addr, server.addr());

    let answer = http_get(metrics_addr, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let scraped = parse(body);
    assert_eq!(scraped.get(WRITTEN), 1.0);
    assert_eq!(scraped.get(PUT_201), 1.0);
    assert_eq!(scraped.get(PENDING), 1.0);
    // Nothing else is served there; the API listener still wants a signature.
    let other = http_get(metrics_addr, &format!("/snapshots/{id}/blocks")).await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    let unsigned = http_get(server.addr(), "/metrics").await;
    assert!(unsigned.starts_with("HTTP/1.1 403"), "{unsigned}");
    drop(client);
    server.stop().await;
}
