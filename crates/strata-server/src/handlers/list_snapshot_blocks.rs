//! ListSnapshotBlocks: `GET /snapshots/{snapshotId}/blocks` → 200.

use axum::response::Response;
use http::request::Parts;
use strata_wire::types::{Block, ListSnapshotBlocksResponse, epoch_seconds};

use super::{page_request, snapshot_id};
use crate::app::AppState;
use crate::auth::Caller;
use crate::dispatch::json_response;
use crate::error::ApiError;

/// Handle ListSnapshotBlocks.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    snapshot_label: &str,
    parts: &Parts,
) -> Result<Response, ApiError> {
    let id = snapshot_id(snapshot_label)?;
    let (_, page) = page_request(parts)?;
    let result = state
        .service
        .list_blocks(&caller.account, &id, page)
        .await?;
    json_response(
        200,
        &ListSnapshotBlocksResponse {
            blocks: result
                .blocks
                .into_iter()
                .map(|(index, token)| Block {
                    block_index: index.get(),
                    block_token: token,
                })
                .collect(),
            expiry_time: epoch_seconds(result.expiry_ms),
            volume_size: result.volume_size.gib(),
            block_size: strata_wire::BLOCK_SIZE,
            next_token: result.next_token,
        },
    )
}
