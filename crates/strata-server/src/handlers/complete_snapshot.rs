//! CompleteSnapshot: `POST /snapshots/completion/{snapshotId}` → 202.

use axum::response::Response;
use http::request::Parts;
use strata_core::checksum::from_base64;
use strata_core::service::AggregateChecksum;
use strata_wire::headers::{
    CHANGED_BLOCKS_COUNT, CHECKSUM, CHECKSUM_AGGREGATION_METHOD, CHECKSUM_ALGORITHM, LINEAR, SHA256,
};
use strata_wire::types::CompleteSnapshotResponse;

use super::{header, integer, required_header, snapshot_id};
use crate::app::AppState;
use crate::auth::Caller;
use crate::dispatch::json_response;
use crate::error::ApiError;

/// Handle CompleteSnapshot.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    snapshot_label: &str,
    parts: &Parts,
) -> Result<Response, ApiError> {
    let id = snapshot_id(snapshot_label)?;
    let headers = &parts.headers;
    let count = integer(
        "x-amz-ChangedBlocksCount",
        required_header(headers, CHANGED_BLOCKS_COUNT)?,
    )?;
    if count < 0 {
        return Err(ApiError::invalid_parameter(
            "x-amz-ChangedBlocksCount must not be negative.",
        ));
    }
    if let Some(algorithm) = header(headers, CHECKSUM_ALGORITHM)?
        && algorithm != SHA256
    {
        return Err(ApiError::invalid_parameter(format!(
            "x-amz-Checksum-Algorithm is '{algorithm}'; only SHA256 is supported."
        )));
    }
    if let Some(method) = header(headers, CHECKSUM_AGGREGATION_METHOD)?
        && method != LINEAR
    {
        return Err(ApiError::invalid_parameter(format!(
            "x-amz-Checksum-Aggregation-Method is '{method}'; only LINEAR is supported."
        )));
    }
    let aggregate = header(headers, CHECKSUM)?
        .map(|text| {
            from_base64(text)
                .map(|digest| AggregateChecksum { digest })
                .ok_or_else(|| {
                    ApiError::invalid_parameter("x-amz-Checksum is not a base64 SHA-256 digest.")
                })
        })
        .transpose()?;
    let status = state
        .service
        .complete_snapshot(&caller.account, &id, count, aggregate)
        .await?;
    json_response(
        202,
        &CompleteSnapshotResponse {
            status: status.as_str().to_owned(),
        },
    )
}
