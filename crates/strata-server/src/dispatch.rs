//! The one HTTP entry point: request id, routing, authentication, handler, error mapping,
//! and the per-request log line.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use strata_sigv4::sha256_hex;
use strata_wire::headers::{ERROR_TYPE, REQUEST_ID};
use strata_wire::{ErrorCode, Operation, WireError, route};
use tracing::Instrument;

use crate::app::AppState;
use crate::auth::authenticate;
use crate::error::ApiError;
use crate::handlers;

/// Largest body accepted by operations other than PutSnapshotBlock (StartSnapshot's JSON).
const MAX_SMALL_BODY: usize = 64 * 1024;

/// The router: `/health` for load balancers, everything else through [`handle`].
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(handle)
        .with_state(state)
}

async fn health() -> Response {
    let mut response = Response::new(Body::from("ok\n"));
    if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Serve one EBS request.
async fn handle(State(state): State<Arc<AppState>>, request: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = Instant::now();
    let span = tracing::info_span!("request", request_id = %request_id);
    let operation = route(request.method().as_str(), request.uri().path());
    let name = operation.as_ref().map_or("Unknown", Operation::name);
    let snapshot = operation
        .as_ref()
        .and_then(Operation::snapshot_label)
        .unwrap_or("-")
        .to_owned();
    let result = async {
        match operation {
            Some(op) => run(&state, op, request).await,
            None => Err(ApiError(WireError::new(
                ErrorCode::UnknownOperationException,
                None,
                format!(
                    "No EBS operation matches {} {}.",
                    request.method(),
                    request.uri().path()
                ),
            ))),
        }
    }
    .instrument(span.clone())
    .await;
    let mut response = result.unwrap_or_else(|error| error_response(&error.0));
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
    span.in_scope(|| {
        tracing::info!(
            operation = name,
            snapshot = %snapshot,
            status,
            error = %error_type,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}

/// Authenticate, then run the operation's handler.
async fn run(
    state: &AppState,
    op: Operation,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    if let Operation::PutSnapshotBlock {
        snapshot_id,
        block_index,
    } = op
    {
        // The block body streams; the signature covers it only through x-amz-content-sha256.
        let caller = authenticate(state, &parts, None)?;
        return handlers::put_snapshot_block::handle(
            state,
            &caller,
            &snapshot_id,
            &block_index,
            &parts,
            body,
        )
        .await;
    }
    let body = read_small_body(state, body).await?;
    let caller = authenticate(state, &parts, Some(&sha256_hex(&body)))?;
    match op {
        Operation::StartSnapshot => handlers::start_snapshot::handle(state, &caller, &body).await,
        Operation::CompleteSnapshot { snapshot_id } => {
            handlers::complete_snapshot::handle(state, &caller, &snapshot_id, &parts).await
        }
        Operation::ListSnapshotBlocks { snapshot_id } => {
            handlers::list_snapshot_blocks::handle(state, &caller, &snapshot_id, &parts).await
        }
        Operation::ListChangedBlocks { second_snapshot_id } => {
            handlers::list_changed_blocks::handle(state, &caller, &second_snapshot_id, &parts).await
        }
        Operation::GetSnapshotBlock {
            snapshot_id,
            block_index,
        } => {
            handlers::get_snapshot_block::handle(state, &caller, &snapshot_id, &block_index, &parts)
                .await
        }
        Operation::PutSnapshotBlock { .. } => Err(ApiError::internal("unreachable route")),
    }
}

/// Read a small body whole, within the size limit and the stall timeout.
async fn read_small_body(state: &AppState, body: Body) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_SMALL_BODY);
    match tokio::time::timeout(state.body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) => Err(ApiError::invalid_parameter(format!(
            "The request body could not be read (at most {MAX_SMALL_BODY} bytes): {error}"
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
