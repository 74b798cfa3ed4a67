//! `strata snapshots …`, `strata gc` and `strata store backup`: a small client of the running server's admin API
//! (`strata_wire::admin`), signed with SigV4 like every other request.

use std::time::SystemTime;

use anyhow::{Context, bail};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_cli::cli::ConnectionArgs;
use strata_cli::connect::{LOCAL_ENDPOINT, Resolved, resolve};
use strata_cli::error::ConnectError;
use strata_wire::admin::{
    AdminKey, AdminSnapshot, BackupSummary, GcSummary, KeyList, PREFIX, SERVICE, ScrubSummary,
    SnapshotList,
};

/// Flags of `strata snapshots` and `strata gc`: the client's connection flags (the same rule
/// for endpoint, region and credentials as every other subcommand; see `strata_cli::connect`).
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `strata snapshots …`.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotsCommand {
    /// Your snapshots, newest first: id, status, size, parent, written blocks, start time, tags, description.
    #[command(after_help = LIST_EXAMPLES)]
    List {
        /// Only snapshots in this state.
        #[arg(long, value_parser = ["pending", "completed", "error"])]
        status: Option<String>,
        /// Only snapshots with this tag KEY=VALUE (repeatable: all must match).
        #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
        tags: Vec<(String, String)>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Everything about one snapshot, as JSON (times in RFC 3339).
    #[command(after_help = SHOW_EXAMPLES)]
    Show {
        /// The snapshot id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a snapshot in any state (a pending one is cancelled); GC frees its data.
    #[command(after_help = DELETE_EXAMPLES)]
    Delete {
        /// The snapshot id.
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// `strata store …`.
#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Back up a running server's embedded data directory, online and consistent, into DIR
    /// on the server's machine (restore: start `strata serve --data-dir DIR`).
    #[command(after_help = BACKUP_EXAMPLES)]
    Backup {
        /// A new or empty directory ON THE SERVER'S MACHINE, written by the server (mode
        /// 0700). A relative DIR is resolved here, so give an absolute one for a remote
        /// server.
        dir: std::path::PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

const BACKUP_EXAMPLES: &str = concat!(
    "Examples:
  strata store backup /var/backups/strata-$(date +%F)
  strata store backup /var/backups/strata-new --json | jq .bytes

The server copies its metadata, chunk index and the chunk data they name (sparse), plus
root-credentials and master.key, while it keeps serving; garbage collection waits until
the copy is done. Root account only; embedded stores only (PostgreSQL and S3 have their
own backups). To restore, stop the server and start it with --data-dir on the copy.",
    "\n\n",
    strata_cli::connection_help!()
);

/// `strata keys …`.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an encryption key and print its ARN (for StartSnapshot's KmsKeyArn, or
    /// coldsnap's --kms-key-id).
    #[command(after_help = KEYS_CREATE_EXAMPLES)]
    Create {
        /// The account that owns it (another account than yours: root only).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Free text kept with the key.
        #[arg(long)]
        description: Option<String>,
        /// Print the key as JSON instead of its ARN.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Your keys (root: every account's): ARN, state, default, creation time, description.
    #[command(after_help = KEYS_LIST_EXAMPLES)]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Disable a key: the snapshots it encrypts can be neither written nor read until it is
    /// enabled again.
    #[command(after_help = KEYS_DISABLE_EXAMPLES)]
    Disable {
        /// The key's ARN or id.
        key: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Enable a disabled key again.
    #[command(after_help = KEYS_DISABLE_EXAMPLES)]
    Enable {
        /// The key's ARN or id.
        key: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

const KEYS_CREATE_EXAMPLES: &str = concat!(
    "Examples:
  strata keys create --description backups
  strata keys create --account 111122223333
  coldsnap --endpoint-url http://127.0.0.1:9555 upload --kms-key-id \"$(strata keys create)\" disk.img",
    "\n\n",
    strata_cli::connection_help!()
);
const KEYS_LIST_EXAMPLES: &str = concat!(
    "Examples:
  strata keys list
  strata keys list --json | jq -r '.[] | select(.enabled) | .arn'",
    "\n\n",
    strata_cli::connection_help!()
);
const KEYS_DISABLE_EXAMPLES: &str = concat!(
    "Examples:
  strata keys disable arn:aws:kms:us-east-1:000000000000:key/1b4e28ba-2fa1-41d2-883f-0016d3cca427
  strata keys enable 1b4e28ba-2fa1-41d2-883f-0016d3cca427",
    "\n\n",
    strata_cli::connection_help!()
);

const LIST_EXAMPLES: &str = concat!(
    "Examples:
  strata snapshots list
  strata snapshots list --status completed --tag team=storage
  strata snapshots list --json | jq -r '.[].id'",
    "\n\n",
    strata_cli::connection_help!()
);
const SHOW_EXAMPLES: &str = concat!(
    "Examples:
  strata snapshots show snap-0123456789abcdef0 | jq .status",
    "\n\n",
    strata_cli::connection_help!()
);
const DELETE_EXAMPLES: &str = concat!(
    "Examples:
  strata snapshots delete snap-0123456789abcdef0",
    "\n\n",
    strata_cli::connection_help!()
);
/// Help of `strata gc`.
pub const GC_EXAMPLES: &str = concat!(
    "Examples:
  strata gc --dry-run
  strata gc --json | jq .bytes_freed",
    "\n\n",
    strata_cli::connection_help!()
);

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// A configuration error found before any request (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub ConnectError);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for UsageError {}

/// A resolved admin connection.
struct Admin {
    endpoint: String,
    resolved: Resolved,
}

impl Admin {
    async fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let options = args.connection.options(Some(LOCAL_ENDPOINT));
        let resolved = resolve(&options).await.map_err(UsageError)?;
        let endpoint = resolved
            .endpoint
            .clone()
            .unwrap_or_else(|| LOCAL_ENDPOINT.to_owned());
        Ok(Self { endpoint, resolved })
    }

    /// Send a signed admin request; the response body on success.
    async fn call(&self, method: &str, path: &str) -> anyhow::Result<bytes::Bytes> {
        self.call_within(method, path, CALL_TIMEOUT).await
    }

    /// [`Self::call`] with another deadline.
    async fn call_within(
        &self,
        method: &str,
        path: &str,
        deadline: std::time::Duration,
    ) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}{PREFIX}{path}", self.endpoint.trim_end_matches('/'));
        let credentials = self.resolved.credentials().await.map_err(UsageError)?;
        let identity: Identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(self.resolved.region.as_ref())
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .context("cannot sign the request")?
            .into();
        let signable =
            SignableRequest::new(method, &url, std::iter::empty(), SignableBody::Bytes(&[]))
                .context("cannot sign the request")?;
        let (instructions, _) = sign(signable, &params)
            .context("cannot sign the request")?
            .into_parts();
        let mut request = http::Request::builder()
            .method(method)
            .uri(&url)
            .body(Full::new(bytes::Bytes::new()))
            .context("invalid endpoint")?;
        instructions.apply_to_request_http1x(&mut request);
        let client = Client::builder(TokioExecutor::new()).build_http();
        let response = tokio::time::timeout(deadline, client.request(request))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the server at {} did not answer within {} s",
                    self.endpoint,
                    deadline.as_secs()
                )
            })?
            .map_err(|error| {
                let refused = is_refused(&error);
                if refused {
                    anyhow::anyhow!(
                        "cannot reach the server at {}: connection refused (is `strata serve` running, on this address and port?)",
                        self.endpoint
                    )
                } else {
                    anyhow::anyhow!("cannot reach the server at {}: {error}", self.endpoint)
                }
            })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("the server's answer was cut off")?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["Message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("the server answered {status}: {message}");
        }
        Ok(body)
    }
}

/// Deadline of `strata verify --all`.
const SCRUB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// Deadline of one admin call (a collection on a large store takes a while).
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

fn is_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        current = error.source();
    }
    false
}

/// A snapshot as `strata snapshots` prints it: the admin record with RFC 3339 times and
/// tags as an object.
pub fn view(s: &AdminSnapshot) -> serde_json::Value {
    let tags: serde_json::Map<String, serde_json::Value> = s
        .tags
        .iter()
        .map(|t| (t.key.clone(), serde_json::Value::from(t.value.clone())))
        .collect();
    serde_json::json!({
        "id": s.id,
        "owner": s.owner,
        "status": s.status,
        "status_message": s.status_message,
        "volume_size_gib": s.volume_size_gib,
        "parent": s.parent,
        "lineage": s.lineage,
        "description": s.description,
        "tags": tags,
        "encrypted": s.encrypted,
        "start_time": rfc3339(s.start_time_ms),
        "completion_time": s.completion_time_ms.map(rfc3339),
        "written_blocks": s.written_blocks,
        "progress": s.progress,
    })
}

/// Epoch milliseconds as RFC 3339 in UTC, e.g. `2024-01-02T03:04:05.678Z`.
fn rfc3339(epoch_ms: i64) -> String {
    strata_wire::ec2::iso8601_ms(epoch_ms)
}

/// Snapshots in `status` with every tag of `tags`, newest first.
pub fn select(
    snapshots: &[AdminSnapshot],
    status: Option<&str>,
    tags: &[(String, String)],
) -> Vec<AdminSnapshot> {
    let mut chosen: Vec<AdminSnapshot> = snapshots
        .iter()
        .filter(|s| status.is_none_or(|wanted| s.status == wanted))
        .filter(|s| {
            tags.iter()
                .all(|(key, value)| s.tags.iter().any(|t| &t.key == key && &t.value == value))
        })
        .cloned()
        .collect();
    chosen.sort_by(|a, b| {
        b.start_time_ms
            .cmp(&a.start_time_ms)
            .then_with(|| a.id.cmp(&b.id))
    });
    chosen
}

/// Run `strata snapshots …`.
pub async fn snapshots(command: SnapshotsCommand) -> anyhow::Result<()> {
    match command {
        SnapshotsCommand::List {
            status,
            tags,
            json,
            admin,
        } => {
            let body = Admin::new(&admin).await?.call("GET", "/snapshots").await?;
            let list: SnapshotList = serde_json::from_slice(&body).context("unexpected answer")?;
            let chosen = select(&list.snapshots, status.as_deref(), &tags);
            if json {
                let views: Vec<serde_json::Value> = chosen.iter().map(view).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", table(&chosen));
            }
        }
        SnapshotsCommand::Show { id, admin } => {
            let body = Admin::new(&admin)
                .await?
                .call("GET", &format!("/snapshots/{id}"))
                .await?;
            let snapshot: AdminSnapshot =
                serde_json::from_slice(&body).context("unexpected answer")?;
            println!("{}", serde_json::to_string_pretty(&view(&snapshot))?);
        }
        SnapshotsCommand::Delete { id, admin } => {
            Admin::new(&admin)
                .await?
                .call("DELETE", &format!("/snapshots/{id}"))
                .await?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

/// A key as `strata keys` prints it as JSON: RFC 3339 times.
fn key_view(key: &AdminKey) -> serde_json::Value {
    serde_json::json!({
        "arn": key.arn,
        "key_id": key.key_id,
        "account": key.account,
        "description": key.description,
        "enabled": key.enabled,
        "account_default": key.account_default,
        "created": rfc3339(key.created_ms),
    })
}

/// Query-string escaping of a value.
fn escaped(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Run `strata keys …`.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            account,
            description,
            json,
            admin,
        } => {
            let mut query = Vec::new();
            if let Some(account) = &account {
                query.push(format!("account={}", escaped(account)));
            }
            if let Some(description) = &description {
                query.push(format!("description={}", escaped(description)));
            }
            let path = if query.is_empty() {
                "/keys".to_owned()
            } else {
                format!("/keys?{}", query.join("&"))
            };
            let body = Admin::new(&admin).await?.call("POST", &path).await?;
            let key: AdminKey = serde_json::from_slice(&body).context("unexpected answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&key_view(&key))?);
            } else {
                println!("{}", key.arn);
            }
        }
        KeysCommand::List { json, admin } => {
            let body = Admin::new(&admin).await?.call("GET", "/keys").await?;
            let list: KeyList = serde_json::from_slice(&body).context("unexpected answer")?;
            if json {
                let views: Vec<serde_json::Value> = list.keys.iter().map(key_view).collect();
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                print!("{}", key_table(&list.keys));
            }
        }
        KeysCommand::Disable { key, admin } => set_key_state(&admin, &key, "disable").await?,
        KeysCommand::Enable { key, admin } => set_key_state(&admin, &key, "enable").await?,
    }
    Ok(())
}

async fn set_key_state(admin: &AdminArgs, key: &str, verb: &str) -> anyhow::Result<()> {
    let path = format!("/keys/{}/{verb}", escaped(key));
    let body = Admin::new(admin).await?.call("POST", &path).await?;
    let key: AdminKey = serde_json::from_slice(&body).context("unexpected answer")?;
    let state = if key.enabled { "enabled" } else { "disabled" };
    println!("{} is {state}", key.arn);
    Ok(())
}

/// The keys as a table, one per line.
fn key_table(keys: &[AdminKey]) -> String {
    let mut out = String::new();
    if keys.is_empty() {
        out.push_str("no keys (one is created for an account when it first encrypts)\n");
        return out;
    }
    let width = keys.iter().map(|k| k.arn.len()).max().unwrap_or(3).max(3);
    out.push_str(&format!(
        "{:<width$}  {:<8}  {:<7}  {:<24}  DESCRIPTION\n",
        "ARN", "STATE", "DEFAULT", "CREATED"
    ));
    for key in keys {
        out.push_str(&format!(
            "{:<width$}  {:<8}  {:<7}  {:<24}  {}\n",
            key.arn,
            if key.enabled { "enabled" } else { "disabled" },
            if key.account_default { "yes" } else { "" },
            rfc3339(key.created_ms),
            key.description.as_deref().unwrap_or("")
        ));
    }
    out
}

/// Run `strata verify --all`: the server's scrub. Returns whether everything was intact.
pub async fn scrub(args: &strata_cli::cli::VerifyArgs) -> anyhow::Result<bool> {
    let admin = AdminArgs {
        connection: args.transfer.connection.clone(),
    };
    let path = match args.rate_mib {
        Some(mib) => format!("/scrub?rateMiB={mib}"),
        None => "/scrub".to_owned(),
    };
    if !args.transfer.quiet && !args.json {
        eprintln!("scrubbing every stored chunk and node (this reads the whole store)…");
    }
    // A scrub reads the whole store: at 64 MiB/s, a terabyte takes four and a half hours.
    let body = Admin::new(&admin)
        .await?
        .call_within("POST", &path, SCRUB_TIMEOUT)
        .await?;
    let summary: ScrubSummary = serde_json::from_slice(&body).context("unexpected answer")?;
    let clean = summary.chunk_findings.is_empty() && summary.node_findings.is_empty();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(clean);
    }
    println!(
        "checked {} chunks ({:.1} MiB) and {} nodes in {:.1} s",
        summary.chunks_checked,
        summary.bytes_checked as f64 / 1_048_576.0,
        summary.nodes_checked,
        summary.duration_ms as f64 / 1000.0
    );
    for finding in &summary.chunk_findings {
        let used: Vec<String> = finding
            .snapshots
            .iter()
            .map(|s| format!("{} ({} blocks)", s.snapshot, s.blocks.len()))
            .collect();
        println!(
            "{} chunk {}{}; used by {}",
            finding.fault,
            finding.chunk,
            finding
                .detail
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default(),
            if used.is_empty() {
                "no completed snapshot".to_owned()
            } else {
                used.join(", ")
            }
        );
    }
    for finding in &summary.node_findings {
        println!("damaged node {}: {}", finding.node, finding.detail);
    }
    if clean {
        println!("everything is intact");
    } else {
        println!(
            "{} chunks and {} nodes are damaged or missing; the chunks are quarantined: upload their content again (e.g. the snapshot's image) to repair them",
            summary.chunk_findings.len(),
            summary.node_findings.len()
        );
    }
    Ok(clean)
}

/// Deadline of `strata store backup`: the server copies the whole store.
const BACKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

/// DIR as the server must get it: absolute, its parent resolved here when it exists here
/// (a relative DIR must; an absolute one may name a directory on another machine).
fn backup_dir(dir: &std::path::Path) -> anyhow::Result<String> {
    let Some(name) = dir.file_name() else {
        bail!("DIR must name a new directory, not {}", dir.display());
    };
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    let resolved = match parent.canonicalize() {
        Ok(parent) => parent.join(name),
        Err(_) if dir.is_absolute() => dir.to_path_buf(),
        Err(e) => bail!(
            "cannot resolve {} ({e}): give DIR as an absolute path on the server's machine",
            parent.display()
        ),
    };
    resolved
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("DIR must be valid UTF-8: {}", resolved.display()))
}

/// Run `strata store …`.
pub async fn store(command: StoreCommand) -> anyhow::Result<()> {
    let StoreCommand::Backup { dir, json, admin } = command;
    let dir = backup_dir(&dir)?;
    let body = Admin::new(&admin)
        .await?
        .call_within(
            "POST",
            &format!("/backup?dir={}", escaped(&dir)),
            BACKUP_TIMEOUT,
        )
        .await?;
    let summary: BackupSummary = serde_json::from_slice(&body).context("unexpected answer")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "backed up {} snapshots ({} completed), {} chunks ({:.1} MiB written) into {} in {:.1} s",
        summary.snapshots,
        summary.completed_snapshots,
        summary.chunks,
        summary.bytes as f64 / 1_048_576.0,
        summary.dir,
        summary.duration_ms as f64 / 1000.0
    );
    Ok(())
}

/// Run `strata gc`.
pub async fn gc(admin: &AdminArgs, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let body = Admin::new(admin)
        .await?
        .call("POST", &format!("/gc?dryRun={dry_run}"))
        .await?;
    let summary: GcSummary = serde_json::from_slice(&body).context("unexpected answer")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / 1_048_576.0;
    println!(
        "live: {} nodes, {} chunks; garbage: {} nodes, {} chunks ({:.1} MiB); kept for the grace period: {} chunks; timed-out snapshots: {}",
        summary.live_nodes,
        summary.live_chunks,
        summary.garbage_nodes,
        summary.garbage_chunks,
        mib(summary.garbage_bytes),
        summary.young_chunks,
        summary.expired_snapshots
    );
    if summary.dry_run {
        println!("dry run: nothing was deleted");
    } else {
        println!(
            "deleted: {} nodes, {} chunks ({:.1} MiB freed), {} pending writes; {} chunks kept (re-uploaded meanwhile)",
            summary.nodes_deleted,
            summary.chunks_deleted,
            mib(summary.bytes_freed),
            summary.pending_writes_dropped,
            summary.chunks_kept
        );
    }
    Ok(())
}

/// The `snapshots list` table.
pub fn table(snapshots: &[AdminSnapshot]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "STATUS".to_owned(),
        "SIZE".to_owned(),
        "PARENT".to_owned(),
        "BLOCKS".to_owned(),
        "STARTED (UTC)".to_owned(),
        "TAGS".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    for s in snapshots {
        let tags: Vec<String> = s
            .tags
            .iter()
            .map(|t| format!("{}={}", t.key, t.value))
            .collect();
        rows.push([
            s.id.clone(),
            s.status.clone(),
            format!("{} GiB", s.volume_size_gib),
            s.parent.clone().unwrap_or_else(|| "-".to_owned()),
            s.written_blocks.to_string(),
            rfc3339(s.start_time_ms)
                .get(..19)
                .unwrap_or("")
                .replace('T', " "),
            if tags.is_empty() {
                "-".to_owned()
            } else {
                tags.join(",")
            },
            s.description.clone().unwrap_or_default(),
        ]);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_wire::admin::AdminTag;

    fn snapshot(id: &str, status: &str, start_time_ms: i64, team: &str) -> AdminSnapshot {
        AdminSnapshot {
            id: id.into(),
            owner: "000000000000".into(),
            status: status.into(),
            status_message: None,
            volume_size_gib: 1,
            parent: None,
            lineage: id.into(),
            description: Some("nightly".into()),
            tags: vec![AdminTag {
                key: "team".into(),
                value: team.into(),
            }],
            encrypted: false,
            start_time_ms,
            completion_time_ms: Some(start_time_ms + 1000),
            written_blocks: 0,
            progress: None,
        }
    }

    #[test]
    fn lists_are_newest_first_and_filtered() {
        let all = [
            snapshot("snap-a", "completed", 1_000, "storage"),
            snapshot("snap-b", "pending", 3_000, "storage"),
            snapshot("snap-c", "completed", 2_000, "web"),
        ];
        let ids = |chosen: Vec<AdminSnapshot>| chosen.into_iter().map(|s| s.id).collect::<Vec<_>>();
        assert_eq!(ids(select(&all, None, &[])), ["snap-b", "snap-c", "snap-a"]);
        assert_eq!(
            ids(select(&all, Some("completed"), &[])),
            ["snap-c", "snap-a"]
        );
        let storage = [("team".to_owned(), "storage".to_owned())];
        assert_eq!(ids(select(&all, None, &storage)), ["snap-b", "snap-a"]);
        assert_eq!(ids(select(&all, Some("completed"), &storage)), ["snap-a"]);
    }

    #[test]
    fn times_are_rfc_3339() {
        let shown = view(&snapshot("snap-a", "completed", 1_704_164_645_678, "x"));
        assert_eq!(shown["start_time"], "2024-01-02T03:04:05.678Z");
        assert_eq!(shown["completion_time"], "2024-01-02T03:04:06.678Z");
        assert_eq!(shown["tags"]["team"], "x");
        assert!(shown.get("start_time_ms").is_none());
    }

    #[test]
    fn the_table_lines_up() {
        let snapshot = AdminSnapshot {
            id: "snap-0123456789abcdef0".into(),
            owner: "000000000000".into(),
            status: "completed".into(),
            status_message: None,
            volume_size_gib: 8,
            parent: None,
            lineage: "snap-0123456789abcdef0".into(),
            description: None,
            tags: vec![AdminTag {
                key: "team".into(),
                value: "storage".into(),
            }],
            encrypted: false,
            start_time_ms: 1_704_164_645_678,
            completion_time_ms: None,
            written_blocks: 42,
            progress: None,
        };
        let text = table(&[snapshot]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with(&format!("{:<22}  STATUS", "ID")),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("snap-0123456789abcdef0  completed  8 GiB  -       42      2024-01-02 03:04:05  team=storage"), "{}", lines[1]);
        assert!(
            lines[0].ends_with("TAGS          DESCRIPTION"),
            "{}",
            lines[0]
        );
    }
}
