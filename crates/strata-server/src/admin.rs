//! Strata's admin API (`strata_wire::admin`): list, show and delete snapshots, run
//! garbage collection, scrub, back up an embedded data directory (`crate::backup`), and
//! manage the encryption keys. JSON over SigV4 (service `strata`); GC, scrub and backup
//! are for the root account only.

use axum::response::Response;
use http::request::Parts;
use http::{Method, StatusCode};
use strata_core::ServiceError;
use strata_core::encryption::KeyRecord;
use strata_core::service::{ChunkFault, ScrubOptions, ScrubReport};
use strata_core::snapshot::SnapshotRecord;
use strata_types::{AccountId, SnapshotId};
use strata_wire::admin::{
    AdminKey, AdminSnapshot, AdminTag, ChunkFindingView, GcSummary, KeyList, NodeFindingView,
    PREFIX, ScrubSummary, SnapshotBlocks, SnapshotList,
};
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
        (&Method::POST, ["scrub"]) => "AdminScrub",
        (&Method::POST, ["backup"]) => "AdminBackup",
        (&Method::POST, ["keys"]) => "AdminCreateKey",
        (&Method::GET, ["keys"]) => "AdminListKeys",
        (&Method::POST, ["keys", _, "disable"]) => "AdminDisableKey",
        (&Method::POST, ["keys", _, "enable"]) => "AdminEnableKey",
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
        (&Method::POST, ["scrub"]) => {
            if caller.account != state.root_account {
                return Err(root_only("run a scrub"));
            }
            let rate = match Query::parse(parts.uri.query()).get("rateMiB") {
                None => state.scrub_rate,
                Some(text) => match text.parse::<u64>() {
                    Ok(0) => None,
                    Ok(mib) => Some(mib.saturating_mul(1 << 20)),
                    Err(_) => {
                        return Err(ApiError(WireError::validation(
                            Reason::InvalidParameterValue,
                            format!(
                                "rateMiB must be a whole number of MiB/s (0: unlimited), not '{text}'."
                            ),
                        )));
                    }
                },
            };
            json_response(200, &run_scrub(state, rate).await?)
        }
        (&Method::POST, ["backup"]) => {
            if caller.account != state.root_account {
                return Err(root_only("take a backup"));
            }
            let query = Query::parse(parts.uri.query());
            let Some(dir) = query.get("dir") else {
                return Err(ApiError::invalid_parameter(
                    "dir (an absolute path on the server's machine) is required",
                ));
            };
            json_response(200, &crate::backup::run_backup(state, dir).await?)
        }
        (&Method::POST, ["keys"]) => {
            let query = Query::parse(parts.uri.query());
            let owner = match query.get("account") {
                Some(id) => {
                    let id = AccountId::parse(id).map_err(|e| {
                        ApiError(WireError::validation(
                            Reason::InvalidParameterValue,
                            format!("account: {e}"),
                        ))
                    })?;
                    if id != caller.account && caller.account != state.root_account {
                        return Err(root_only("create keys for another account"));
                    }
                    id
                }
                None => caller.account.clone(),
            };
            let description = query.get("description").map(str::to_owned);
            let key = state.service.create_key(&owner, description).await?;
            tracing::info!(key = %key.arn, account = %owner, "created an encryption key");
            json_response(201, &admin_key(&key))
        }
        (&Method::GET, ["keys"]) => {
            let root = caller.account == state.root_account;
            let keys = state
                .service
                .list_keys((!root).then_some(&caller.account))
                .await?;
            json_response(
                200,
                &KeyList {
                    keys: keys.iter().map(admin_key).collect(),
                },
            )
        }
        (&Method::POST, ["keys", key, verb @ ("disable" | "enable")]) => {
            let key = percent_decoded(key);
            let owned = state
                .service
                .list_keys((caller.account != state.root_account).then_some(&caller.account))
                .await?
                .into_iter()
                .any(|k| k.id == key || k.arn == key);
            if !owned {
                return Err(ServiceError::InvalidCustomerKey(format!(
                    "The KMS key '{key}' does not exist."
                ))
                .into());
            }
            let enabled = *verb == "enable";
            let stored = state.service.set_key_enabled(&key, enabled).await?;
            tracing::info!(key = %stored.arn, enabled, "changed an encryption key");
            json_response(200, &admin_key(&stored))
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

/// Scrub at up to `rate` bytes per second (`None`: unpaced); counted in the metrics.
pub async fn run_scrub(state: &AppState, rate: Option<u64>) -> Result<ScrubSummary, ServiceError> {
    use crate::metrics::ScrubOutcome;
    let options = ScrubOptions {
        bytes_per_second: rate,
    };
    let result = state.service.scrub(&state.node_id, options).await;
    match &result {
        Ok(Some(report)) => state.metrics.observe_scrub(ScrubOutcome::Done(report)),
        Ok(None) => state.metrics.observe_scrub(ScrubOutcome::Busy),
        Err(_) => state.metrics.observe_scrub(ScrubOutcome::Failed),
    }
    let Some(report) = result? else {
        return Err(ServiceError::InvalidParameter(
            "A scrub is running already (on this or another node); try again when it is done."
                .into(),
        ));
    };
    Ok(scrub_summary(&report))
}

fn scrub_summary(report: &ScrubReport) -> ScrubSummary {
    ScrubSummary {
        chunks_checked: report.chunks_checked,
        bytes_checked: report.bytes_checked,
        nodes_checked: report.nodes_checked,
        duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
        chunk_findings: report
            .chunks
            .iter()
            .map(|finding| {
                let (fault, detail) = match &finding.fault {
                    ChunkFault::Damaged(why) => ("damaged", Some(why.clone())),
                    ChunkFault::Missing => ("missing", None),
                };
                ChunkFindingView {
                    chunk: finding.digest.to_hex(),
                    fault: fault.to_owned(),
                    detail,
                    snapshots: finding
                        .referenced_by
                        .iter()
                        .map(|(id, blocks)| SnapshotBlocks {
                            snapshot: id.to_string(),
                            blocks: blocks.iter().map(|b| b.get()).collect(),
                        })
                        .collect(),
                }
            })
            .collect(),
        node_findings: report
            .nodes
            .iter()
            .map(|(hash, why)| NodeFindingView {
                node: hex::encode(hash.0),
                detail: why.clone(),
            })
            .collect(),
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

fn admin_key(key: &KeyRecord) -> AdminKey {
    AdminKey {
        key_id: key.id.clone(),
        arn: key.arn.clone(),
        account: key.owner.to_string(),
        description: key.description.clone(),
        enabled: key.enabled,
        account_default: key.account_default,
        created_ms: key.created_ms,
    }
}

fn root_only(what: &str) -> ApiError {
    ApiError(WireError::new(
        ErrorCode::AccessDeniedException,
        Some(Reason::UnauthorizedAccount),
        format!("Only the root account may {what}."),
    ))
}

/// A path segment with its percent-escapes decoded (an ARN's `:` and `/` arrive escaped).
fn percent_decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
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
