//! GetSnapshotBlock: `GET /snapshots/{snapshotId}/blocks/{blockIndex}?blockToken=…` → 200,
//! the bytes verified against their digest just before sending.

use axum::response::Response;
use http::HeaderValue;
use http::request::Parts;
use strata_core::checksum::to_base64;
use strata_wire::headers::{CHECKSUM, CHECKSUM_ALGORITHM, DATA_LENGTH, SHA256};
use strata_wire::query::{self, Query};

use super::{block_index, snapshot_id};
use crate::app::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::limits::ReservedBody;

/// Handle GetSnapshotBlock.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    snapshot_label: &str,
    index_label: &str,
    parts: &Parts,
) -> Result<Response, ApiError> {
    let id = snapshot_id(snapshot_label)?;
    let index = block_index(index_label)?;
    let query = Query::parse(parts.uri.query());
    let token = query
        .get(query::BLOCK_TOKEN)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid_parameter("The blockToken parameter is required."))?;
    // The block's memory is reserved before it is read, and held until it has been sent.
    let reservation = state.limits.try_reserve_block()?;
    let block = state
        .service
        .get_block(&caller.account, &id, index, token)
        .await?;
    let length = block.data.len();
    let mut response = Response::new(ReservedBody::body(block.data, reservation));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(DATA_LENGTH, HeaderValue::from(length));
    if let Ok(value) = HeaderValue::from_str(&to_base64(&block.digest)) {
        headers.insert(CHECKSUM, value);
    }
    headers.insert(CHECKSUM_ALGORITHM, HeaderValue::from_static(SHA256));
    Ok(response)
}
