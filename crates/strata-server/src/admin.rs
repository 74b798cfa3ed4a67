//! Strata's admin API (`strata_wire::admin`): list, show and delete snapshots, run
//! garbage collection, scrub, back up an embedded data directory (`crate::backup`), and
//! manage the encryption keys; and what the web console reads (`crate::console`): filtered
//! pages of snapshots, a snapshot's lineage tree, the storage figures and the activity.
//! JSON over SigV4 (service `strata`) or the console's session cookie; GC, scrub, backup,
//! storage and activity are for the root account only.

use axum::response::Response;
use http::request::Parts;
use http::{Method, StatusCode};
use strata_core::ServiceError;
use strata_core::encryption::KeyRecord;
use strata_core::service::{ChunkFault, ScrubOptions, ScrubReport};
use strata_core::snapshot::SnapshotRecord;
use strata_types::{AccountId, SnapshotId};
use strata_wire::admin::{
    Activity, AdminKey, AdminSnapshot, AdminTag, ChunkFindingView, GcSummary, GrowthPoint, KeyList,
    LastRun, Lineage, LineageNode, NodeFindingView, PREFIX, ScrubSummary, SnapshotBlocks,
    SnapshotList, StorageSummary,
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
        (&Method::GET, ["snapshots", _, "lineage"]) => "AdminSnapshotLineage",
        (&Method::GET, ["storage"]) => "AdminStorage",
        (&Method::GET, ["activity"]) => "AdminActivity",
        (&Method::POST, ["session"]) => "AdminStartSession",
        (&Method::POST, ["session", "end"]) => "AdminEndSession",
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
            let query = Query::parse(parts.uri.query());
            let filter = ListFilter::parse(&query)?;
            let owner = owner(state, caller, &query)?;
            let records = state.service.list_snapshots(&owner).await?;
            json_response(200, &filter.page(&records))
        }
        (&Method::GET, ["snapshots", id]) => {
            let owner = owner(state, caller, &Query::parse(parts.uri.query()))?;
            let record = state
                .service
                .describe_snapshot(&owner, &snapshot_id(id)?)
                .await?;
            json_response(200, &admin_snapshot(&record))
        }
        (&Method::GET, ["snapshots", id, "lineage"]) => {
            let owner = owner(state, caller, &Query::parse(parts.uri.query()))?;
            json_response(200, &lineage(state, &owner, &snapshot_id(id)?).await?)
        }
        (&Method::GET, ["storage"]) => {
            if caller.account != state.root_account {
                return Err(root_only("read the storage figures"));
            }
            json_response(200, &storage(state).await?)
        }
        (&Method::GET, ["activity"]) => {
            if caller.account != state.root_account {
                return Err(root_only("read the activity"));
            }
            let totals = state.metrics.totals();
            json_response(
                200,
                &Activity {
                    now_ms: state.clock.now_ms(),
                    requests: totals.requests,
                    bytes_in: totals.bytes_in,
                    bytes_out: totals.bytes_out,
                    blocks_written: state.service.stats().snapshot().blocks_written,
                    last_gc: state.metrics.last_gc(),
                    last_scrub: state.metrics.last_scrub(),
                },
            )
        }
        (&Method::POST, ["session"]) => crate::console::start_session(state, caller),
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
    state.metrics.set_last_scrub(last_run(
        state,
        &result,
        scrub_summary,
        "a scrub was running already",
    ));
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
    let summary =
        result.map(|found| found.map(|(plan, report)| gc_summary(dry_run, &plan, report.as_ref())));
    state.metrics.set_last_gc(last_run(
        state,
        &summary,
        Clone::clone,
        "a garbage collection was running already",
    ));
    let Some(summary) = summary? else {
        return Err(ServiceError::InvalidParameter(
            "A garbage collection is running already (on this or another node); try again when it is done."
                .into(),
        ));
    };
    Ok(summary)
}

/// What the console shows of a run's end: `ok` with its summary, `busy`, or `failed`.
fn last_run<R, T>(
    state: &AppState,
    result: &Result<Option<R>, ServiceError>,
    summarize: impl FnOnce(&R) -> T,
    busy: &str,
) -> LastRun<T> {
    let (result, summary, error) = match result {
        Ok(Some(report)) => ("ok", Some(summarize(report)), None),
        Ok(None) => ("busy", None, Some(busy.to_owned())),
        Err(error) => ("failed", None, Some(error.to_string())),
    };
    LastRun {
        finished_ms: state.clock.now_ms(),
        result: result.to_owned(),
        summary,
        error,
    }
}

fn gc_summary(
    dry_run: bool,
    plan: &strata_core::gc::GcPlan,
    report: Option<&strata_core::gc::GcReport>,
) -> GcSummary {
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
    summary
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

/// Largest page of `GET /snapshots?maxResults=`.
const MAX_LIST_PAGE: usize = 1000;

/// The filters and page of `GET /snapshots` (all optional; without `maxResults` every
/// matching snapshot comes back, as before the console).
struct ListFilter {
    status: Option<String>,
    tag: Option<(String, Option<String>)>,
    description: Option<String>,
    max_results: Option<usize>,
    after: Option<String>,
}

impl ListFilter {
    fn parse(query: &Query) -> Result<Self, ApiError> {
        let status = match query.get("status") {
            None | Some("") => None,
            Some(status @ ("pending" | "completed" | "error")) => Some(status.to_owned()),
            Some(other) => {
                return Err(ApiError::invalid_parameter(format!(
                    "status must be pending, completed or error, not '{other}'"
                )));
            }
        };
        let tag = query
            .get("tag")
            .filter(|t| !t.is_empty())
            .map(|tag| match tag.split_once('=') {
                Some((key, value)) => (key.to_owned(), Some(value.to_owned())),
                None => (tag.to_owned(), None),
            });
        let description = query
            .get("description")
            .filter(|d| !d.is_empty())
            .map(str::to_lowercase);
        let max_results = match query.get("maxResults") {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(n @ 1..=MAX_LIST_PAGE) => Some(n),
                _ => {
                    return Err(ApiError::invalid_parameter(format!(
                        "maxResults must be a whole number from 1 to {MAX_LIST_PAGE}, not '{text}'"
                    )));
                }
            },
        };
        // The token is the last id of the previous page: the listing is in id order.
        let after = match query.get("nextToken") {
            None => None,
            Some(text) => Some(
                SnapshotId::parse(text)
                    .map_err(|_| {
                        ApiError::invalid_parameter(format!(
                            "nextToken '{text}' is not a token this listing issued"
                        ))
                    })?
                    .to_string(),
            ),
        };
        Ok(Self {
            status,
            tag,
            description,
            max_results,
            after,
        })
    }

    fn matches(&self, record: &SnapshotRecord) -> bool {
        self.status
            .as_deref()
            .is_none_or(|s| record.status.as_str() == s)
            && self.tag.as_ref().is_none_or(|(key, value)| {
                record
                    .tags
                    .iter()
                    .any(|t| t.key == *key && value.as_ref().is_none_or(|value| t.value == *value))
            })
            && self.description.as_ref().is_none_or(|wanted| {
                record
                    .description
                    .as_ref()
                    .is_some_and(|d| d.to_lowercase().contains(wanted))
            })
    }

    fn page(&self, records: &[SnapshotRecord]) -> SnapshotList {
        let mut matching: Vec<&SnapshotRecord> =
            records.iter().filter(|r| self.matches(r)).collect();
        matching.sort_by_key(|r| r.id.to_string());
        if let Some(after) = &self.after {
            matching.retain(|r| r.id.to_string() > *after);
        }
        let mut next_token = None;
        if let Some(limit) = self.max_results
            && matching.len() > limit
        {
            matching.truncate(limit);
            next_token = matching.last().map(|r| r.id.to_string());
        }
        SnapshotList {
            snapshots: matching.into_iter().map(admin_snapshot).collect(),
            next_token,
        }
    }
}

/// The account whose snapshots a read is about: `owner=ACCOUNT` (root only), else the
/// caller's.
fn owner(state: &AppState, caller: &Caller, query: &Query) -> Result<AccountId, ApiError> {
    match query.get("owner").filter(|o| !o.is_empty()) {
        None => Ok(caller.account.clone()),
        Some(text) => {
            let id = AccountId::parse(text).map_err(|e| {
                ApiError(WireError::validation(
                    Reason::InvalidParameterValue,
                    format!("owner: {e}"),
                ))
            })?;
            if id != caller.account && caller.account != state.root_account {
                return Err(root_only("read another account's snapshots"));
            }
            Ok(id)
        }
    }
}

/// Every snapshot of `id`'s tree, parents first, with the blocks each changed.
async fn lineage(
    state: &AppState,
    owner: &AccountId,
    id: &SnapshotId,
) -> Result<Lineage, ApiError> {
    use strata_core::snapshot::SnapshotStatus;
    let record = state.service.describe_snapshot(owner, id).await?;
    let mut tree: Vec<SnapshotRecord> = state
        .service
        .list_snapshots(owner)
        .await?
        .into_iter()
        .filter(|r| r.lineage == record.lineage)
        .collect();
    tree.sort_by(|a, b| {
        (a.start_time_ms, a.id.to_string()).cmp(&(b.start_time_ms, b.id.to_string()))
    });
    let tree = parents_first(tree);
    let completed = |id: &SnapshotId| {
        tree.iter()
            .any(|r| r.id == *id && r.status == SnapshotStatus::Completed)
    };
    let mut nodes = Vec::with_capacity(tree.len());
    for node in &tree {
        let comparable =
            node.status == SnapshotStatus::Completed && node.parent.as_ref().is_none_or(completed);
        let changed_blocks = if comparable {
            Some(changed_blocks(state, owner, node.parent.as_ref(), &node.id).await?)
        } else {
            None
        };
        nodes.push(LineageNode {
            snapshot: admin_snapshot(node),
            changed_blocks,
        });
    }
    Ok(Lineage {
        snapshot: id.to_string(),
        root: record.lineage.to_string(),
        nodes,
    })
}

/// How many blocks differ between `parent` and `child` (every allocated block of a root),
/// by the same diff ListChangedBlocks pages through.
async fn changed_blocks(
    state: &AppState,
    owner: &AccountId,
    parent: Option<&SnapshotId>,
    child: &SnapshotId,
) -> Result<u64, ApiError> {
    let mut count = 0u64;
    let mut page_token = None;
    loop {
        let page = state
            .service
            .list_changed_blocks(
                owner,
                parent,
                child,
                strata_core::service::PageRequest {
                    max_results: Some(10_000),
                    starting_block_index: None,
                    page_token,
                },
            )
            .await?;
        count += page.blocks.len() as u64;
        match page.next_token {
            Some(token) => page_token = Some(token),
            None => return Ok(count),
        }
    }
}

/// The storage figures of every account.
async fn storage(state: &AppState) -> Result<StorageSummary, ApiError> {
    use strata_core::ports::{ChunkStore, MetadataStore};
    use strata_core::snapshot::SnapshotStatus;
    let now = state.clock.now_ms();
    let records: Vec<SnapshotRecord> = state
        .service
        .metadata()
        .list_snapshots(None)
        .await
        .map_err(ServiceError::from)?
        .iter()
        .map(|r| r.as_of(now))
        .collect();
    let block = strata_types::BLOCK_SIZE as u64;
    let mut completed: Vec<&SnapshotRecord> = records
        .iter()
        .filter(|r| r.status == SnapshotStatus::Completed)
        .collect();
    completed.sort_by_key(|r| r.completion_time_ms.unwrap_or(r.start_time_ms));
    let mut summary = StorageSummary {
        completed_snapshots: completed.len() as u64,
        pending_snapshots: records
            .iter()
            .filter(|r| r.status == SnapshotStatus::Pending)
            .count() as u64,
        ..StorageSummary::default()
    };
    for record in &completed {
        summary.logical_bytes += record.changed_blocks * block;
        summary.growth.push(GrowthPoint {
            time_ms: record.completion_time_ms.unwrap_or(record.start_time_ms),
            written_bytes: summary.logical_bytes,
            snapshots: summary.growth.len() as u64 + 1,
        });
    }
    let mut after = None;
    loop {
        let page = state
            .chunks
            .list(after, 10_000)
            .await
            .map_err(ServiceError::from)?;
        let Some(last) = page.last() else { break };
        after = Some(last.digest);
        summary.chunks += page.len() as u64;
        summary.physical_bytes += page.iter().map(|c| c.size).sum::<u64>();
    }
    let stats = state.service.stats().snapshot();
    summary.blocks_written = stats.blocks_written;
    summary.blocks_deduplicated = stats.blocks_deduplicated;
    summary.zero_blocks = stats.zero_blocks;
    summary.dedup_saved_bytes = stats.blocks_deduplicated * block;
    summary.zero_saved_bytes = stats.zero_blocks * block;
    Ok(summary)
}

/// `tree` reordered so that every parent comes before its children (a depth-first walk
/// from the roots; siblings keep their order). Start times alone do not promise it: two
/// snapshots may start in the same millisecond.
fn parents_first(tree: Vec<SnapshotRecord>) -> Vec<SnapshotRecord> {
    use std::collections::HashMap;
    let ids: std::collections::HashSet<SnapshotId> = tree.iter().map(|r| r.id.clone()).collect();
    let mut children: HashMap<SnapshotId, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (index, record) in tree.iter().enumerate() {
        match &record.parent {
            Some(parent) if ids.contains(parent) => {
                children.entry(parent.clone()).or_default().push(index);
            }
            // A parent deleted (or another account's) leaves its children as roots.
            _ => roots.push(index),
        }
    }
    let mut order = Vec::with_capacity(tree.len());
    let mut stack: Vec<usize> = roots.into_iter().rev().collect();
    while let Some(index) = stack.pop() {
        order.push(index);
        if let Some(kids) = children.get(&tree[index].id) {
            stack.extend(kids.iter().rev());
        }
    }
    let mut slots: Vec<Option<SnapshotRecord>> = tree.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|index| slots[index].take())
        .collect()
}
