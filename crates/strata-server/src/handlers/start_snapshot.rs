//! StartSnapshot: `POST /snapshots` → 201.

use axum::response::Response;
use strata_core::service::StartSnapshotInput;
use strata_core::snapshot::{SnapshotRecord, Tag};
use strata_wire::types::{self, StartSnapshotRequest, StartSnapshotResponse, epoch_seconds};

use super::snapshot_id;
use crate::app::AppState;
use crate::auth::Caller;
use crate::dispatch::json_response;
use crate::error::ApiError;

/// Handle StartSnapshot.
pub async fn handle(state: &AppState, caller: &Caller, body: &[u8]) -> Result<Response, ApiError> {
    let request: StartSnapshotRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid_parameter(format!("The request body is not valid: {e}")))?;
    let volume_size_gib = request
        .volume_size
        .ok_or_else(|| ApiError::invalid_parameter("VolumeSize is required."))?;
    let parent = request
        .parent_snapshot_id
        .as_deref()
        .map(snapshot_id)
        .transpose()?;
    let tags = request
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|tag| Tag {
            key: tag.key.unwrap_or_default(),
            value: tag.value.unwrap_or_default(),
        })
        .collect();
    let input = StartSnapshotInput {
        volume_size_gib,
        parent,
        tags,
        description: request.description,
        client_token: request.client_token,
        encrypted: request.encrypted,
        kms_key_arn: request.kms_key_arn,
        timeout_minutes: request.timeout,
    };
    let record = state.service.start_snapshot(&caller.account, input).await?;
    json_response(201, &start_response(&record))
}

fn start_response(record: &SnapshotRecord) -> StartSnapshotResponse {
    let sse_type = match (record.encrypted, record.kms_key_arn.is_some()) {
        (false, _) => "none",
        (true, true) => "sse-kms",
        (true, false) => "sse-ebs",
    };
    StartSnapshotResponse {
        description: record.description.clone(),
        snapshot_id: record.id.to_string(),
        owner_id: record.owner.to_string(),
        status: record.status.as_str().to_owned(),
        start_time: epoch_seconds(record.start_time_ms),
        volume_size: record.volume_size.gib(),
        block_size: strata_wire::BLOCK_SIZE,
        tags: (!record.tags.is_empty()).then(|| {
            record
                .tags
                .iter()
                .map(|t| types::Tag {
                    key: Some(t.key.clone()),
                    value: Some(t.value.clone()),
                })
                .collect()
        }),
        parent_snapshot_id: record.parent.as_ref().map(ToString::to_string),
        kms_key_arn: record.kms_key_arn.clone(),
        sse_type: sse_type.to_owned(),
    }
}
