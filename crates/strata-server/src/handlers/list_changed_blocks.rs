//! ListChangedBlocks: `GET /snapshots/{secondSnapshotId}/changedblocks` → 200.

use axum::response::Response;
use http::request::Parts;
use strata_wire::query;
use strata_wire::types::{ChangedBlock, ListChangedBlocksResponse, epoch_seconds};

use super::{page_request, snapshot_id};
use crate::app::AppState;
use crate::auth::Caller;
use crate::dispatch::json_response;
use crate::error::ApiError;

/// Handle ListChangedBlocks.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    second_label: &str,
    parts: &Parts,
) -> Result<Response, ApiError> {
    let second = snapshot_id(second_label)?;
    let (query, page) = page_request(parts)?;
    let first = query
        .get(query::FIRST_SNAPSHOT_ID)
        .map(snapshot_id)
        .transpose()?;
    let result = state
        .service
        .list_changed_blocks(&caller.account, first.as_ref(), &second, page)
        .await?;
    json_response(
        200,
        &ListChangedBlocksResponse {
            changed_blocks: result
                .blocks
                .into_iter()
                .map(|b| ChangedBlock {
                    block_index: b.index.get(),
                    first_block_token: b.first_token,
                    second_block_token: b.second_token,
                })
                .collect(),
            expiry_time: epoch_seconds(result.expiry_ms),
            volume_size: result.volume_size.gib(),
            block_size: strata_wire::BLOCK_SIZE,
            next_token: result.next_token,
        },
    )
}
