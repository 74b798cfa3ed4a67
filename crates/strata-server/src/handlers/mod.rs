//! One module per EBS operation: wire request → domain call → wire response. Handlers
//! make no domain decisions; they only parse, convert and format.

pub mod complete_snapshot;
pub mod get_snapshot_block;
pub mod list_changed_blocks;
pub mod list_snapshot_blocks;
pub mod put_snapshot_block;
pub mod start_snapshot;

use http::HeaderMap;
use http::request::Parts;
use strata_core::service::PageRequest;
use strata_types::{BlockIndex, SnapshotId};
use strata_wire::Reason;
use strata_wire::query::{self, Query};

use crate::error::ApiError;

/// Parse a snapshot id label or parameter (INVALID_SNAPSHOT_ID when malformed).
fn snapshot_id(text: &str) -> Result<SnapshotId, ApiError> {
    SnapshotId::parse(text).map_err(|e| ApiError::validation(Reason::InvalidSnapshotId, e.0))
}

/// Parse a block index label (INVALID_BLOCK when not a non-negative integer).
fn block_index(text: &str) -> Result<BlockIndex, ApiError> {
    BlockIndex::parse(text).map_err(|e| ApiError::validation(Reason::InvalidBlock, e.0))
}

/// A header's value as text, if present.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| ApiError::invalid_parameter(format!("The header {name} is not text.")))
        })
        .transpose()
}

/// A required header.
fn required_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, ApiError> {
    header(headers, name)?
        .ok_or_else(|| ApiError::invalid_parameter(format!("The header {name} is required.")))
}

/// An integer parameter.
fn integer(name: &str, text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid_parameter(format!("{name} must be an integer, not '{text}'."))
    })
}

/// The paging parameters of both List operations.
fn page_request(parts: &Parts) -> Result<(Query, PageRequest), ApiError> {
    let query = Query::parse(parts.uri.query());
    let max_results = query
        .get(query::MAX_RESULTS)
        .map(|v| integer("maxResults", v))
        .transpose()?;
    let starting_block_index = query
        .get(query::STARTING_BLOCK_INDEX)
        .map(|v| {
            BlockIndex::parse(v).map_err(|_| {
                ApiError::invalid_parameter(format!(
                    "startingBlockIndex must be a non-negative integer, not '{v}'."
                ))
            })
        })
        .transpose()?;
    let page_token = query
        .get(query::PAGE_TOKEN)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    Ok((
        query,
        PageRequest {
            max_results,
            starting_block_index,
            page_token,
        },
    ))
}
