//! The S3 store misbehaving under a running server: a proxy in front of the CI's Ceph RGW
//! (the real engine, reached through a wrapper that answers some requests itself) makes
//! S3 answer `503 SlowDown` or `500 InternalError`, stop answering anything but 500 for a
//! while, or answer slowly. Through aws-sdk-ebs, each PutSnapshotBlock either succeeds or
//! fails quickly with a retryable 5xx — never a hang, never a 4xx the client would not
//! retry — every acknowledged block reads back verified, and the server recovers by itself
//! when S3 does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::{TokioExecutor, TokioIo};
use strata_server::Settings;
use strata_server::app;
use strata_server::stores::MetadataBackend;
use tokio::net::TcpListener;

use crate::harness::{ROOT_KEY, ROOT_SECRET, TestClock, block, client_at, fresh_engines, var};
use crate::sdk::{complete, put_request, start};

/// What the proxy does with the requests it receives.
#[derive(Debug, Clone, Copy, Default)]
struct Mode {
    /// Answer every n-th request itself, alternately `503 SlowDown` and `500 InternalError`.
    fail_every: Option<u64>,
    /// Answer every request `500 InternalError` (S3 is down).
    outage: bool,
    /// Wait this long before forwarding each request.
    delay: Duration,
}

/// A fault-injecting HTTP proxy in front of an S3 endpoint.
struct FaultyS3 {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    injected: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyS3 {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(Mutex::new(Mode::default()));
        let injected = Arc::new(AtomicU64::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        let client: HyperClient<_, Full<Bytes>> =
            HyperClient::builder(TokioExecutor::new()).build_http();
        let (task_mode, task_injected) = (Arc::clone(&mode), Arc::clone(&injected));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (mode, injected, counter, client, upstream) = (
                    Arc::clone(&task_mode),
                    Arc::clone(&task_injected),
                    Arc::clone(&counter),
                    client.clone(),
                    upstream.clone(),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (mode, injected, counter, client, upstream) = (
                            Arc::clone(&mode),
                            Arc::clone(&injected),
                            Arc::clone(&counter),
                            client.clone(),
                            upstream.clone(),
                        );
                        async move {
                            let now = *mode.lock().expect("mode");
                            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                            let fault = if now.outage {
                                Some((500, "InternalError"))
                            } else {
                                match now.fail_every {
                                    Some(every) if n % every == 0 => {
                                        Some(if (n / every) % 2 == 0 {
                                            (503, "SlowDown")
                                        } else {
                                            (500, "InternalError")
                                        })
                                    }
                                    _ => None,
                                }
                            };
                            if let Some((status, code)) = fault {
                                injected.fetch_add(1, Ordering::SeqCst);
                                return Ok::<_, hyper::Error>(s3_error(status, code));
                            }
                            tokio::time::sleep(now.delay).await;
                            Ok(forward(&client, &upstream, request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            mode,
            injected,
            task,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultyS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn s3_error(status: u16, code: &str) -> hyper::Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

/// Send `request` on to the real S3 endpoint unchanged (the `Host` header included, which
/// the signature covers) and return its answer.
async fn forward(
    client: &HyperClient<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    upstream: &str,
    request: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let (mut parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return s3_error(500, "InternalError");
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("{upstream}{path}").parse().expect("upstream uri");
    let Ok(response) = client
        .request(hyper::Request::from_parts(parts, Full::new(body)))
        .await
    else {
        return s3_error(503, "ServiceUnavailable");
    };
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    hyper::Response::from_parts(parts, Full::new(body))
}

/// One PutSnapshotBlock, timed: its HTTP status (200 or the error's).
async fn timed_put(
    client: &aws_sdk_ebs::Client,
    id: &str,
    index: i32,
    data: &[u8],
) -> (u16, Duration) {
    let started = Instant::now();
    let result = put_request(client, id, index, data).send().await;
    let status = match result {
        Ok(_) => 200,
        Err(error) => error.raw_response().map_or(0, |r| r.status().as_u16()),
    };
    (status, started.elapsed())
}

async fn read_back(client: &aws_sdk_ebs::Client, id: &str, expected: &[(i32, Vec<u8>)]) {
    let listed = crate::sdk::list_all(client, id, 1000).await;
    assert_eq!(
        listed.len(),
        expected.len(),
        "{id}: every acknowledged block is listed"
    );
    for ((index, token), (want_index, want)) in listed.iter().zip(expected) {
        assert_eq!(index, want_index);
        let got = client
            .get_snapshot_block()
            .snapshot_id(id)
            .block_index(*index)
            .block_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GetSnapshotBlock {id}/{index}: {e:?}"));
        let data = got.block_data.collect().await.expect("body").into_bytes();
        assert_eq!(data.as_ref(), want.as_slice(), "{id}/{index}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_outages_and_slowness_answer_retryable_errors_or_succeed_and_lose_nothing() {
    let proxy = FaultyS3::start(var("S3_ENDPOINT")).await;
    let (url, mut chunks) = fresh_engines().await;
    chunks.s3_endpoint = Some(proxy.endpoint());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings::new(dir.path().join("node")).expect("settings");
    settings.listen = "127.0.0.1:0".parse().expect("addr");
    settings.root_key_from_env = Some((ROOT_KEY.into(), ROOT_SECRET.into()));
    settings.gc_interval = None;
    settings.metadata = MetadataBackend::Postgres(url);
    settings.chunks = chunks;
    let clock = TestClock::new();
    let server = app::start(&settings, clock.clone() as Arc<dyn strata_core::Clock>)
        .await
        .expect("server starts");
    let client = client_at(server.addr, &clock);
    let id = start(&client, 1, None).await;
    let mut acknowledged = Vec::new();

    // 1. One S3 request in three fails (503 SlowDown, 500 InternalError): the service's
    //    retries absorb them, every Put succeeds.
    proxy.set(Mode {
        fail_every: Some(3),
        ..Mode::default()
    });
    for index in 0..12 {
        let data = block(9000 + index as u64);
        let (status, took) = timed_put(&client, &id, index, &data).await;
        assert_eq!(
            status, 200,
            "put {index} with 1 in 3 S3 requests failing ({took:?})"
        );
        acknowledged.push((index, data));
    }
    assert!(
        proxy.injected.load(Ordering::SeqCst) >= 4,
        "faults were injected"
    );

    // 2. S3 is down: every Put answers a retryable 5xx, quickly (the service gives up after
    //    its retries, about a second and a half), and nothing is recorded for it.
    proxy.set(Mode {
        outage: true,
        ..Mode::default()
    });
    for index in 12..16 {
        let (status, took) = timed_put(&client, &id, index, &block(9000 + index as u64)).await;
        assert!(
            (500..600).contains(&status),
            "put {index} during an S3 outage answered {status}, not a retryable 5xx"
        );
        assert!(
            took < Duration::from_secs(10),
            "put {index} took {took:?}: it must not hang"
        );
    }

    // 3. S3 is back but slow (300 ms per request): the same Puts, retried as a client
    //    does, succeed.
    proxy.set(Mode {
        delay: Duration::from_millis(300),
        ..Mode::default()
    });
    for index in 12..16 {
        let data = block(9000 + index as u64);
        let (status, took) = timed_put(&client, &id, index, &data).await;
        assert_eq!(status, 200, "put {index} on a slow S3 ({took:?})");
        assert!(took >= Duration::from_millis(300), "the delay applied");
        acknowledged.push((index, data));
    }

    // Everything acknowledged is there and verified, read through the faults again.
    proxy.set(Mode {
        fail_every: Some(4),
        ..Mode::default()
    });
    complete(&client, &id, 16, None).await;
    read_back(&client, &id, &acknowledged).await;
    proxy.set(Mode::default());
    server.stop().await.expect("clean stop");
}
