//! The sink: the cheapest server that still speaks the EBS direct API routes. It verifies
//! each PutSnapshotBlock body's SHA-256 against `x-amz-Checksum` and discards it, answers
//! Start/Complete/List minimally, and serves one fixed precomputed block for every
//! GetSnapshotBlock. It checks no signature and stores nothing but the written indexes.
//!
//! Measured with the same client in the same run, it is the ceiling of HTTP + hashing on
//! this machine, and Strata's figures are reported as a ratio to it (the machine is shared
//! and noisy, so absolute figures move from run to run; ratios move much less).

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use sha2::{Digest, Sha256};
use strata_types::BLOCK_SIZE;
use strata_wire::headers::{CHECKSUM, CHECKSUM_ALGORITHM, DATA_LENGTH, ERROR_TYPE, SHA256};
use strata_wire::query::{self, Query};
use strata_wire::{Operation, route};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::payloads::Payload;

/// The sink's page size when the client asks for none (the service's default).
const DEFAULT_PAGE: usize = 100;
/// The largest page (the model's `MaxResults`).
const MAX_PAGE: usize = 10_000;

/// What the sink remembers: written indexes per snapshot (for the List answers).
struct SinkState {
    next_id: AtomicU64,
    written: Mutex<HashMap<String, BTreeSet<u32>>>,
    block: Payload,
}

/// A running sink.
#[derive(Debug)]
pub struct Sink {
    /// Its address on 127.0.0.1.
    pub addr: SocketAddr,
    accept: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Bind 127.0.0.1:0 and serve on `runtime` until [`Sink::stop`].
    pub async fn start(runtime: &tokio::runtime::Handle) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SinkState {
            next_id: AtomicU64::new(1),
            written: Mutex::new(HashMap::new()),
            block: Payload::generate(0x5157_4b00),
        });
        let accept = runtime.spawn(accept_loop(listener, state));
        Ok(Self { addr, accept })
    }

    /// Stop accepting and drop every connection.
    pub fn stop(self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<SinkState>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        // Best effort: a socket that refuses TCP_NODELAY still works, only slower.
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(handle(&state, request).await) }
            });
            // A connection error only ends that connection (the client reports it).
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow over a long run.
        while connections.try_join_next().is_some() {}
    }
}

type SinkResponse = Response<Full<Bytes>>;

async fn handle(state: &SinkState, request: Request<Incoming>) -> SinkResponse {
    let Some(operation) = route(request.method().as_str(), request.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "UnknownOperationException");
    };
    let query = Query::parse(request.uri().query());
    match operation {
        Operation::StartSnapshot => start(state, request).await,
        Operation::PutSnapshotBlock {
            snapshot_id,
            block_index,
        } => put(state, &snapshot_id, &block_index, request).await,
        Operation::CompleteSnapshot { .. } => {
            // Drain the (empty) body so the connection can be reused.
            let _ = request.into_body().collect().await;
            json_response(StatusCode::ACCEPTED, &json!({ "Status": "completed" }))
        }
        Operation::ListSnapshotBlocks { snapshot_id } => {
            let (indexes, next) = page(state, &snapshot_id, &query);
            let blocks: Vec<_> = indexes
                .iter()
                .map(|i| json!({ "BlockIndex": i, "BlockToken": "sink" }))
                .collect();
            list_response("Blocks", blocks, next)
        }
        Operation::ListChangedBlocks { second_snapshot_id } => {
            let (indexes, next) = page(state, &second_snapshot_id, &query);
            let blocks: Vec<_> = indexes
                .iter()
                .map(|i| json!({ "BlockIndex": i, "SecondBlockToken": "sink" }))
                .collect();
            list_response("ChangedBlocks", blocks, next)
        }
        Operation::GetSnapshotBlock { .. } => {
            let mut response = Response::new(Full::new(state.block.data.clone()));
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(DATA_LENGTH, HeaderValue::from(BLOCK_SIZE));
            headers.insert(CHECKSUM, state.block.checksum.clone());
            headers.insert(CHECKSUM_ALGORITHM, HeaderValue::from_static(SHA256));
            response
        }
    }
}

async fn start(state: &SinkState, request: Request<Incoming>) -> SinkResponse {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "ValidationException"),
    };
    let volume_size = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["VolumeSize"].as_u64())
        .unwrap_or(1);
    let id = format!(
        "snap-{:017x}",
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    json_response(
        StatusCode::CREATED,
        &json!({
            "SnapshotId": id,
            "OwnerId": "000000000000",
            "Status": "pending",
            "StartTime": 0,
            "VolumeSize": volume_size,
            "BlockSize": BLOCK_SIZE,
            "SseType": "none",
        }),
    )
}

/// Hash the body frame by frame as it arrives (as Strata does), compare, discard.
async fn put(
    state: &SinkState,
    snapshot: &str,
    index: &str,
    request: Request<Incoming>,
) -> SinkResponse {
    let claimed = request
        .headers()
        .get(CHECKSUM)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| STANDARD.decode(v).ok());
    let Ok(index) = index.parse::<u32>() else {
        return error(StatusCode::BAD_REQUEST, "ValidationException");
    };
    let mut body = request.into_body();
    let mut hasher = Sha256::new();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return error(StatusCode::BAD_REQUEST, "ValidationException");
        };
        if let Ok(data) = frame.into_data() {
            length += data.len();
            hasher.update(&data);
        }
    }
    let digest = hasher.finalize();
    if length != BLOCK_SIZE || claimed.as_deref() != Some(digest.as_slice()) {
        return error(StatusCode::BAD_REQUEST, "ValidationException");
    }
    if let Ok(mut written) = state.written.lock() {
        written
            .entry(snapshot.to_owned())
            .or_default()
            .insert(index);
    }
    let mut response = json_response(StatusCode::CREATED, &json!({}));
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&STANDARD.encode(digest)) {
        headers.insert(CHECKSUM, value);
    }
    headers.insert(CHECKSUM_ALGORITHM, HeaderValue::from_static(SHA256));
    response
}

/// One page of the written indexes of `snapshot`, and the next page's token.
fn page(state: &SinkState, snapshot: &str, query: &Query) -> (Vec<u32>, Option<String>) {
    let limit = query
        .get(query::MAX_RESULTS)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(DEFAULT_PAGE)
        .clamp(DEFAULT_PAGE, MAX_PAGE);
    // The sink's page token is simply the next index.
    let from = query
        .get(query::PAGE_TOKEN)
        .or_else(|| query.get(query::STARTING_BLOCK_INDEX))
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    let Ok(written) = state.written.lock() else {
        return (Vec::new(), None);
    };
    let mut indexes: Vec<u32> = written
        .get(snapshot)
        .map(|set| set.range(from..).take(limit + 1).copied().collect())
        .unwrap_or_default();
    let next = (indexes.len() > limit).then(|| indexes[limit].to_string());
    indexes.truncate(limit);
    (indexes, next)
}

fn list_response(
    member: &str,
    blocks: Vec<serde_json::Value>,
    next: Option<String>,
) -> SinkResponse {
    let mut body = json!({
        member: blocks,
        "ExpiryTime": 0,
        "VolumeSize": 1,
        "BlockSize": BLOCK_SIZE,
    });
    if let Some(next) = next {
        body["NextToken"] = next.into();
    }
    json_response(StatusCode::OK, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> SinkResponse {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, error_type: &'static str) -> SinkResponse {
    let mut response = json_response(status, &json!({ "Message": error_type }));
    response
        .headers_mut()
        .insert(ERROR_TYPE, HeaderValue::from_static(error_type));
    response
}
