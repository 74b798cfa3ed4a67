//! PutSnapshotBlock: `PUT /snapshots/{snapshotId}/blocks/{blockIndex}` → 201, only once
//! the block is durable.

use axum::body::Body;
use axum::response::Response;
use http::HeaderValue;
use http::request::Parts;
use http_body_util::BodyExt;
use strata_core::body::BlockHasher;
use strata_core::checksum::{from_base64, to_base64};
use strata_sigv4::PayloadHash;
use strata_types::BLOCK_SIZE;
use strata_wire::headers::{CHECKSUM, CHECKSUM_ALGORITHM, DATA_LENGTH, PROGRESS, SHA256};
use strata_wire::types::PutSnapshotBlockResponse;

use super::{block_index, header, integer, required_header, snapshot_id};
use crate::app::AppState;
use crate::auth::Caller;
use crate::dispatch::json_response;
use crate::error::ApiError;

/// Handle PutSnapshotBlock: validate everything that can be checked before the body, then
/// stream the body into the hasher, then store.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    snapshot_label: &str,
    index_label: &str,
    parts: &Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let id = snapshot_id(snapshot_label)?;
    let index = block_index(index_label)?;
    let headers = &parts.headers;
    let data_length = integer("x-amz-Data-Length", required_header(headers, DATA_LENGTH)?)?;
    if data_length != BLOCK_SIZE as i64 {
        return Err(ApiError::invalid_parameter(format!(
            "x-amz-Data-Length is {data_length}; every block must be exactly {BLOCK_SIZE} bytes."
        )));
    }
    let claimed = from_base64(required_header(headers, CHECKSUM)?).ok_or_else(|| {
        ApiError::invalid_parameter("x-amz-Checksum is not a base64 SHA-256 digest.")
    })?;
    let algorithm = required_header(headers, CHECKSUM_ALGORITHM)?;
    if algorithm != SHA256 {
        return Err(ApiError::invalid_parameter(format!(
            "x-amz-Checksum-Algorithm is '{algorithm}'; only SHA256 is supported."
        )));
    }
    let progress = header(headers, PROGRESS)?
        .map(|p| {
            integer("x-amz-Progress", p).and_then(|n| {
                u8::try_from(n).ok().filter(|n| *n <= 100).ok_or_else(|| {
                    ApiError::invalid_parameter("x-amz-Progress must be between 0 and 100.")
                })
            })
        })
        .transpose()?;
    // The block's memory is reserved before anything is announced or read: when slow
    // bodies hold the budget, this Put is throttled at once instead of queueing.
    let _reservation = state.limits.try_reserve_block()?;
    let permit = state
        .service
        .begin_put(&caller.account, &id, index, claimed)
        .await?;

    let block = read_block(state, body, permit.block_hasher()).await?;
    if let PayloadHash::Sha256Hex(signed) = &caller.payload_hash
        && *signed != block.digest.to_hex()
    {
        return Err(ApiError::from(
            strata_sigv4::AuthError::ContentSha256Mismatch,
        ));
    }
    let digest = state.service.put_block(permit, block, progress).await?;
    let mut response = json_response(201, &PutSnapshotBlockResponse {})?;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&to_base64(&digest)) {
        headers.insert(CHECKSUM, value);
    }
    headers.insert(CHECKSUM_ALGORITHM, HeaderValue::from_static(SHA256));
    Ok(response)
}

/// Stream the body into `hasher`, giving up if it exceeds one block, stalls for longer
/// than the body timeout, or is not complete within the body deadline (however steadily
/// it trickles: the stall timer alone let one byte every 19 s keep a Put alive for months).
///
/// The stall timer is armed once and only re-armed when it fires after progress: a body
/// arrives in dozens of frames, and a timer registered and cancelled around each one was a
/// visible share of the request's cost. The deadline timer is armed once.
async fn read_block(
    state: &AppState,
    mut body: Body,
    mut hasher: BlockHasher,
) -> Result<strata_core::body::HashedBlock, ApiError> {
    let stall = tokio::time::sleep(state.body_timeout);
    tokio::pin!(stall);
    let deadline = tokio::time::sleep(state.limits.body_deadline);
    tokio::pin!(deadline);
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut deadline => {
                return Err(ApiError::invalid_parameter(format!(
                    "Failed to read block data: the body was not complete within {} s ({} bytes \
                     received).",
                    state.limits.body_deadline.as_secs_f64(),
                    hasher.len()
                )));
            }
            () = &mut stall => {
                if last_progress.elapsed() < state.body_timeout {
                    // Frames arrived meanwhile: the body has not stalled that long yet.
                    stall.as_mut().reset(last_progress + state.body_timeout);
                    continue;
                }
                return Err(ApiError::invalid_parameter(format!(
                    "Failed to read block data: the body stalled for {} s after {} bytes.",
                    state.body_timeout.as_secs_f64(),
                    hasher.len()
                )));
            }
        };
        let frame = match frame {
            None => break,
            Some(Err(error)) => {
                return Err(ApiError::invalid_parameter(format!(
                    "Failed to read block data: {error}"
                )));
            }
            Some(Ok(frame)) => frame,
        };
        last_progress = tokio::time::Instant::now();
        if let Ok(data) = frame.into_data()
            && !hasher.update_frame(data)
        {
            return Err(ApiError::invalid_parameter(format!(
                "The block data is longer than {BLOCK_SIZE} bytes."
            )));
        }
    }
    Ok(hasher.finish())
}
