//! The one HTTP entry point: request id, routing, authentication, handler, error mapping,
//! and the per-request log line.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use strata_sigv4::sha256_hex;
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode, Params};
use strata_wire::headers::{CHECKSUM, ERROR_TYPE, REQUEST_ID};
use strata_wire::{ErrorCode, Operation, WireError, route};
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::{BodySigning, Caller, authenticate};
use crate::connections::ClientAddr;
use crate::error::ApiError;
use crate::limits::Reservation;
use crate::{admin, ec2, handlers};

/// Largest body accepted by operations other than PutSnapshotBlock (StartSnapshot's JSON).
const MAX_SMALL_BODY: usize = 64 * 1024;
/// Largest EC2 Query body (DescribeSnapshots may list many ids and filters).
const MAX_EC2_BODY: usize = 1024 * 1024;
/// SigV4 service names.
const EBS_SERVICE: &str = "ebs";
const EC2_SERVICE: &str = "ec2";

/// The router: `/health` for load balancers, everything else through [`handle`]; a panic
/// anywhere below is answered by [`crate::panics::catch_panics`].
pub fn router(state: Arc<AppState>) -> Router {
    let router = Router::new().route("/health", get(health));
    #[cfg(test)]
    let router = router.route(tests::PANIC_PATH, get(tests::panic_handler));
    router
        .fallback(handle)
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::panics::catch_panics))
}

/// The router of the metrics listener (`metrics_listen`): `/metrics` without
/// authentication, and `/health`.
pub fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(unauthenticated_metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::panics::catch_panics))
}

async fn unauthenticated_metrics(State(state): State<Arc<AppState>>) -> Response {
    metrics_response(&state)
        .await
        .unwrap_or_else(|error| error_response(&error.0))
}

/// The metrics as a `200` text answer.
async fn metrics_response(state: &AppState) -> Result<Response, ApiError> {
    let text = state
        .metrics
        .render(&state.service, state.clock.now_ms())
        .await?;
    let mut response = Response::new(Body::from(text));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    Ok(response)
}

async fn health() -> Response {
    let mut response = Response::new(Body::from("ok\n"));
    if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Which API a request is for.
enum Api {
    /// An EBS direct API operation.
    Ebs(Operation),
    /// The EC2 Query API (`POST /`).
    Ec2,
    /// Strata's admin API.
    Admin,
    /// `/metrics`, signed by a key of the root account.
    Metrics,
    /// The web console's files (`crate::console`).
    Console,
}

fn classify(method: &http::Method, path: &str) -> Option<Api> {
    if path.starts_with(strata_wire::admin::PREFIX) {
        return Some(Api::Admin);
    }
    if path == "/metrics" {
        return Some(Api::Metrics);
    }
    if crate::console::is_console_path(path) {
        return Some(Api::Console);
    }
    if path == "/" && method == http::Method::POST {
        return Some(Api::Ec2);
    }
    route(method.as_str(), path).map(Api::Ebs)
}

/// Serve one request of any of the three APIs, with its request id, its log line and
/// its metrics.
async fn handle(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let span = tracing::info_span!("request", request_id = %request_id);
    let client = request.extensions().get::<ClientAddr>().map(|addr| addr.0);
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The body bytes the handler reads, whatever it was announced as.
    let bytes_in = Arc::new(AtomicU64::new(0));
    let request = request.map(|body| Body::new(CountingBody::new(body, Arc::clone(&bytes_in))));
    let mut caller = None;
    let (name, snapshot, mut response) = match classify(&method, &path) {
        Some(Api::Ebs(op)) => {
            let name = op.name();
            let snapshot = op.snapshot_label().unwrap_or("-").to_owned();
            let result = run_ebs(&state, op, request, &mut caller)
                .instrument(span.clone())
                .await;
            let response = result.unwrap_or_else(|error| error_response(&error.0));
            (name, snapshot, response)
        }
        Some(Api::Ec2) => {
            let (action, response) = run_ec2(&state, request, &request_id, &mut caller)
                .instrument(span.clone())
                .await;
            (action, "-".to_owned(), response)
        }
        Some(Api::Admin) => {
            let name = admin::operation_name(&method, &path);
            let result = run_admin(&state, request, &mut caller)
                .instrument(span.clone())
                .await;
            let response = result.unwrap_or_else(|error| error_response(&error.0));
            (name, "-".to_owned(), response)
        }
        Some(Api::Metrics) => {
            let result = run_metrics(&state, request, &mut caller)
                .instrument(span.clone())
                .await;
            let response = result.unwrap_or_else(|error| error_response(&error.0));
            ("Metrics", "-".to_owned(), response)
        }
        Some(Api::Console) => (
            "Console",
            "-".to_owned(),
            crate::console::serve(&method, &path),
        ),
        None => {
            let error = WireError::new(
                ErrorCode::UnknownOperationException,
                None,
                format!("No operation matches {method} {path}."),
            );
            ("Unknown", "-".to_owned(), error_response(&error))
        }
    };
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let error_type = response
        .headers()
        .get(ERROR_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    // Every answer here is a whole buffer, so its length is known before it is sent.
    let bytes_out = http_body::Body::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    let bytes_in = bytes_in.load(Ordering::Relaxed);
    let elapsed = started.elapsed();
    state
        .metrics
        .observe_request(name, status, elapsed, bytes_in, bytes_out);
    let (account, access_key_id) = caller.as_ref().map_or(("-", "-"), |caller: &Caller| {
        (caller.account.as_str(), caller.access_key_id.as_str())
    });
    span.in_scope(|| {
        tracing::info!(
            client = %client.map_or_else(|| "-".to_owned(), |addr| addr.to_string()),
            account = %account,
            access_key_id = %access_key_id,
            method = %method,
            path = %path,
            operation = %name,
            snapshot = %snapshot,
            status,
            error = %error_type,
            bytes_in,
            bytes_out,
            duration_ms = duration_ms(elapsed),
            "request"
        );
    });
    response
}

/// Milliseconds with microsecond precision, as a number that prints as such (`26.239`,
/// not `26.239015000000002`).
fn duration_ms(elapsed: std::time::Duration) -> f64 {
    // Exact below 2^53 microseconds (285 years).
    elapsed.as_micros() as f64 / 1000.0
}

/// A request body that counts the bytes read from it.
struct CountingBody {
    inner: Body,
    read: Arc<AtomicU64>,
}

impl CountingBody {
    fn new(inner: Body, read: Arc<AtomicU64>) -> Self {
        Self { inner, read }
    }
}

impl http_body::Body for CountingBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.read.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Authenticate an EBS request, then run the operation's handler.
async fn run_ebs(
    state: &AppState,
    op: Operation,
    request: Request<Body>,
    who: &mut Option<Caller>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    if let Operation::PutSnapshotBlock {
        snapshot_id,
        block_index,
    } = op
    {
        // The block body streams; the signature covers it only through x-amz-content-sha256
        // or, with UNSIGNED-PAYLOAD (as the SDKs send it), through the signed x-amz-Checksum.
        let caller = authenticate(
            state,
            &parts,
            None,
            EBS_SERVICE,
            BodySigning::UnsignedIfSigned(CHECKSUM),
        )?;
        let caller = who.insert(caller);
        if !caller.may("PutSnapshotBlock") {
            return Err(ApiError(caller.denied("PutSnapshotBlock")));
        }
        // Before the body is read: a throttled Put costs the server nothing more.
        state
            .quotas
            .admit("PutSnapshotBlock", &caller.account, Some(&snapshot_id))?;
        return handlers::put_snapshot_block::handle(
            state,
            caller,
            &snapshot_id,
            &block_index,
            &parts,
            body,
        )
        .await;
    }
    let (body, _reservation) = read_small_body(state, body, MAX_SMALL_BODY).await?;
    let caller = authenticate(
        state,
        &parts,
        Some(&sha256_hex(&body)),
        EBS_SERVICE,
        BodySigning::Signed,
    )?;
    let caller = &*who.insert(caller);
    if !caller.may(op.name()) {
        return Err(ApiError(caller.denied(op.name())));
    }
    state
        .quotas
        .admit(op.name(), &caller.account, op.snapshot_label())?;
    match op {
        Operation::StartSnapshot => handlers::start_snapshot::handle(state, caller, &body).await,
        Operation::CompleteSnapshot { snapshot_id } => {
            handlers::complete_snapshot::handle(state, caller, &snapshot_id, &parts).await
        }
        Operation::ListSnapshotBlocks { snapshot_id } => {
            handlers::list_snapshot_blocks::handle(state, caller, &snapshot_id, &parts).await
        }
        Operation::ListChangedBlocks { second_snapshot_id } => {
            handlers::list_changed_blocks::handle(state, caller, &second_snapshot_id, &parts).await
        }
        Operation::GetSnapshotBlock {
            snapshot_id,
            block_index,
        } => {
            handlers::get_snapshot_block::handle(state, caller, &snapshot_id, &block_index, &parts)
                .await
        }
        Operation::PutSnapshotBlock { .. } => Err(ApiError::internal("unreachable route")),
    }
}

/// Read, authenticate and run an EC2 Query request; errors are rendered as EC2 XML.
async fn run_ec2(
    state: &AppState,
    request: Request<Body>,
    request_id: &str,
    who: &mut Option<Caller>,
) -> (&'static str, Response) {
    let (parts, body) = request.into_parts();
    let (body, _reservation) = match read_small_body(state, body, MAX_EC2_BODY).await {
        Ok(read) => read,
        Err(error) => {
            let code = if error.0.code == ErrorCode::RequestThrottledException {
                Ec2ErrorCode::RequestLimitExceeded
            } else {
                Ec2ErrorCode::InvalidParameterValue
            };
            let error = Ec2Error::new(code, error.0.message);
            return ("Ec2", ec2::error_response(&error, request_id));
        }
    };
    let params = Params::parse_form(&body);
    let name = ec2::action(&params).unwrap_or("Ec2");
    let signed = authenticate(
        state,
        &parts,
        Some(&sha256_hex(&body)),
        EC2_SERVICE,
        BodySigning::Signed,
    );
    let result = match signed {
        Ok(caller) if !caller.may(name) => {
            let denied = Ec2Error::new(
                Ec2ErrorCode::UnauthorizedOperation,
                format!(
                    "You are not authorized to perform this operation: the access key {} may \
                     not call {name}.",
                    caller.access_key_id
                ),
            );
            *who = Some(caller);
            Err(denied)
        }
        Ok(caller) => ec2::handle(state, who.insert(caller), &params, request_id).await,
        Err(error) => Err(ec2::auth_error(&error)),
    };
    let response = result.unwrap_or_else(|error| ec2::error_response(&error, request_id));
    (name, response)
}

/// Authenticate and run an admin request.
async fn run_admin(
    state: &AppState,
    request: Request<Body>,
    who: &mut Option<Caller>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (body, _reservation) = read_small_body(state, body, MAX_SMALL_BODY).await?;
    let operation = admin::operation_name(&parts.method, parts.uri.path());
    if operation == "AdminEndSession" {
        // Anyone holding the cookie may end its session, even an expired one; the header
        // keeps another site from signing the user out.
        return crate::console::end_session(state, &parts.headers);
    }
    let signed = parts.headers.contains_key(http::header::AUTHORIZATION)
        || parts
            .uri
            .query()
            .is_some_and(|q| q.contains("X-Amz-Signature="));
    let session = (!signed)
        .then(|| crate::console::session_cookie(&parts.headers))
        .flatten();
    let caller = match session {
        // A session must be started by a signature, never by another session (which
        // would extend it forever).
        Some(token) if operation != "AdminStartSession" => {
            crate::console::authenticate(state, &parts.headers, token)?
        }
        _ => authenticate(
            state,
            &parts,
            Some(&sha256_hex(&body)),
            strata_wire::admin::SERVICE,
            BodySigning::Signed,
        )?,
    };
    if !caller.may(operation) {
        return Err(ApiError(caller.denied(operation)));
    }
    admin::handle(state, who.insert(caller), &parts).await
}

/// `GET /metrics` on the API listener: signed for the admin API's service by a key of the
/// root account, since the figures cover every account.
async fn run_metrics(
    state: &AppState,
    request: Request<Body>,
    who: &mut Option<Caller>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    if parts.method != http::Method::GET {
        return Err(ApiError(WireError::new(
            ErrorCode::UnknownOperationException,
            None,
            format!("No operation matches {} /metrics (only GET).", parts.method),
        )));
    }
    let (body, _reservation) = read_small_body(state, body, MAX_SMALL_BODY).await?;
    let caller = authenticate(
        state,
        &parts,
        Some(&sha256_hex(&body)),
        strata_wire::admin::SERVICE,
        BodySigning::Signed,
    )?;
    if !caller.may("GetMetrics") {
        return Err(ApiError(caller.denied("GetMetrics")));
    }
    if who.insert(caller).account != state.root_account {
        return Err(ApiError(WireError::new(
            ErrorCode::AccessDeniedException,
            Some(strata_wire::Reason::UnauthorizedAccount),
            "Only the root account may read the metrics.",
        )));
    }
    metrics_response(state).await
}

/// Read a small body whole, within the size limit and the body timeout (which bounds the
/// whole body, not only its stalls), after reserving its announced size (`content-length`:
/// nothing for a request without a body; `limit` for a chunked one) from the memory
/// budget. The caller holds the reservation until the request is done.
async fn read_small_body(
    state: &AppState,
    body: Body,
    limit: usize,
) -> Result<(bytes::Bytes, Reservation), ApiError> {
    let announced = http_body::Body::size_hint(&body)
        .upper()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(limit);
    let reservation = state.limits.try_reserve(announced.min(limit))?;
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(state.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok((collected.to_bytes(), reservation)),
        Ok(Err(error)) => Err(ApiError::invalid_parameter(format!(
            "The request body could not be read (at most {limit} bytes): {error}"
        ))),
        Err(_) => Err(ApiError::invalid_parameter(
            "The request body was not received in time.",
        )),
    }
}

/// The HTTP form of an error: status, `x-amzn-ErrorType`, JSON body.
pub fn error_response(error: &WireError) -> Response {
    let status =
        StatusCode::from_u16(error.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::from(error.body()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(ERROR_TYPE, HeaderValue::from_static(error.code.as_str()));
    response
}

/// A JSON success response.
pub fn json_response(status: u16, body: &impl serde::Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::internal(format!("cannot encode the response: {e}")))?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::response::Response;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A route that panics, present only in this crate's unit tests.
    pub(super) const PANIC_PATH: &str = "/_strata_test/panic";

    pub(super) async fn panic_handler() -> Response {
        panic!("a handler bug");
    }

    /// Read one response with a `content-length` body from a keep-alive connection.
    async fn read_response(stream: &mut tokio::net::TcpStream) -> String {
        let mut data = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&data).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return text;
                }
            }
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .expect("the server answers")
                .expect("read");
            assert!(read > 0, "the connection was dropped: {text:?}");
            data.extend_from_slice(&buffer[..read]);
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_server_exception_and_keeps_the_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = crate::Settings::new(dir.path().join("data")).expect("settings");
        settings.listen = "127.0.0.1:0".parse().expect("addr");
        settings.root_key_from_env = Some(("AKIDTEST".into(), "secret".into()));
        settings.gc_interval = None;
        let server = crate::app::start(&settings, Arc::new(strata_core::SystemClock))
            .await
            .expect("server starts");
        let mut stream = tokio::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let request = format!("GET {PANIC_PATH} HTTP/1.1\r\nhost: x\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let answer = read_response(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(
            answer.contains("x-amzn-errortype: InternalServerException"),
            "{answer}"
        );
        assert!(answer.contains("x-amzn-requestid: "), "{answer}");
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let json: serde_json::Value = serde_json::from_str(body).expect("JSON body");
        assert!(json["Message"].as_str().is_some_and(|m| !m.is_empty()));
        // The same connection serves the next request.
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
        drop(stream);
        server.stop().await.expect("stops");
    }
}
