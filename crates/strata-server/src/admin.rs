//! Strata's admin API (`strata_wire::admin`): list, show and delete snapshots, and run
//! garbage collection. JSON over SigV4 (service `strata`); GC is for the root account only.

use axum::response::Response;
use http::request::Parts;
use http::{Method, StatusCode};
use strata_core::ServiceError;
use strata_core::snapshot::SnapshotRecord;
use strata_types::SnapshotId;
use strata_wire::admin::{AdminSnapshot, AdminTag, GcSummary, PREFIX, SnapshotList};
use strata_wire::query::Query;
use strata_wire::{ErrorCode, Reason, WireError};

use crate::app::AppState;
use crate::auth::Caller;
use crate::dispatch::json_response;
use crate::error::ApiError;
use crate::metrics::GcOutcome;

/// The path's segments after the admin prefix.
fn segments(path: &str) -> Vec<&str> {
    let path = path.strip_prefix(PREFIX).unwrap_or("");
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// The name of the admin operation `method` and `path` ask for, for logs and metrics
/// (one of a closed set, whatever the path holds).
pub fn operation_name(method: &Method, path: &str) -> &'static str {
    match (method, segments(path).as_slice()) {
        (&Method::GET, ["snapshots"]) => "AdminListSnapshots",
        (&Method::GET, ["snapshots", _]) => "AdminDescribeSnapshot",
        (&Method::DELETE, ["snapshots", _]) => "AdminDeleteSnapshot",
        (&Method::POST, ["gc"]) => "AdminCollectGarbage",
        _ => "AdminUnknown",
    }
}

/// Route and run an admin request.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    parts: &Parts,
) -> Result<Response, ApiError> {
    let segments = segments(parts.uri.path());
    match (&parts.method, segments.as_slice()) {
        (&Method::GET, ["snapshots"]) => {
            let records = state.service.list_snapshots(&caller.account).await?;
            json_response(
                200,
                &SnapshotList {
                    snapshots: records.iter().map(admin_snapshot).collect(),
                },
            )
        }
        (&Method::GET, ["snapshots", id]) => {
            let record = state
                .service
                .describe_snapshot(&caller.account, &snapshot_id(id)?)
                .await?;
            json_response(200, &admin_snapshot(&record))
        }
        (&Method::DELETE, ["snapshots", id]) => {
            state
                .service
                .delete_snapshot(&caller.account, &snapshot_id(id)?)
                .await?;
            let mut response = Response::default();
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        (&Method::POST, ["gc"]) => {
            if caller.account != state.root_account {
                return Err(ApiError(WireError::new(
                    ErrorCode::AccessDeniedException,
                    Some(Reason::UnauthorizedAccount),
                    "Only the root account may run garbage collection.",
                )));
            }
            let dry_run = Query::parse(parts.uri.query())
                .get("dryRun")
                .is_some_and(|v| v == "true");
            json_response(200, &run_gc(state, dry_run).await?)
        }
        _ => Err(ApiError(WireError::new(
            ErrorCode::UnknownOperationException,
            None,
            format!(
                "No admin operation matches {} {}.",
                parts.method,
                parts.uri.path()
            ),
        ))),
    }
}

/// Plan a collection and, unless `dry_run`, execute it; counted in the metrics.
pub async fn run_gc(state: &AppState, dry_run: bool) -> Result<GcSummary, ServiceError> {
    let started = std::time::Instant::now();
    let result = state
        .service
        .collect_garbage(&state.node_id, state.gc_options, dry_run)
        .await;
    let outcome = match &result {
        Ok(Some((_, report))) => GcOutcome::Done {
            chunks_deleted: report.as_ref().map_or(0, |r| r.chunks_deleted as u64),
            bytes_freed: report.as_ref().map_or(0, |r| r.bytes_freed),
        },
        Ok(None) => GcOutcome::Busy,
        Err(_) => GcOutcome::Failed,
    };
    state
        .metrics
        .observe_gc(dry_run, started.elapsed(), outcome);
    let Some((plan, report)) = result? else {
        return Err(ServiceError::InvalidParameter(
            "A garbage collection is running already (on this or another node); try again when it is done."
                .into(),
        ));
    };
    let mut summary = GcSummary {
        dry_run,
        live_nodes: plan.live_nodes,
        live_chunks: plan.live_chunks,
        garbage_nodes: plan.garbage_nodes.len(),
        garbage_chunks: plan.garbage_chunks.len(),
        garbage_bytes: plan.chunk_bytes(),
        young_chunks: plan.young_chunks,
        expired_snapshots: plan.expired_snapshots.len(),
        ..GcSummary::default()
    };
    if let Some(report) = report {
        summary.nodes_deleted = report.nodes_deleted;
        summary.chunks_deleted = report.chunks_deleted;
        summary.bytes_freed = report.bytes_freed;
        summary.chunks_kept = report.chunks_kept;
        summary.pending_writes_dropped = report.pending_writes_dropped;
    }
    Ok(summary)
}

fn snapshot_id(text: &str) -> Result<SnapshotId, ApiError> {
    SnapshotId::parse(text).map_err(|e| ApiError::validation(Reason::InvalidSnapshotId, e.0))
}

fn admin_snapshot(record: &SnapshotRecord) -> AdminSnapshot {
    AdminSnapshot {
        id: record.id.to_string(),
        owner: record.owner.to_string(),
        status: record.status.as_str().to_owned(),
        status_message: record.status_message.clone(),
        volume_size_gib: record.volume_size.gib(),
        parent: record.parent.as_ref().map(ToString::to_string),
        lineage: record.lineage.to_string(),
        description: record.description.clone(),
        tags: record
            .tags
            .iter()
            .map(|t| AdminTag {
                key: t.key.clone(),
                value: t.value.clone(),
            })
            .collect(),
        encrypted: record.encrypted,
        start_time_ms: record.start_time_ms,
        completion_time_ms: record.completion_time_ms,
        written_blocks: record.changed_blocks,
        progress: record.progress,
    }
}
