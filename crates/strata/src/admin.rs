//! `strata snapshots …` and `strata gc`: a small client of the running server's admin API
//! (`strata_wire::admin`), signed with SigV4 like every other request.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata_wire::admin::{AdminSnapshot, GcSummary, PREFIX, SERVICE, SnapshotList};

/// Where the server is and who we are.
#[derive(Debug, clap::Args)]
pub struct Connection {
    /// The server's URL.
    #[arg(
        long,
        global = true,
        env = "STRATA_ENDPOINT",
        default_value = "http://127.0.0.1:9555"
    )]
    endpoint: String,
    /// Access key id (else the data directory's root credentials).
    #[arg(long, global = true, env = "AWS_ACCESS_KEY_ID")]
    access_key_id: Option<String>,
    /// Secret access key.
    #[arg(
        long,
        global = true,
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    secret_access_key: Option<String>,
    /// Read the root credentials from this data directory when no keys are given.
    #[arg(long, global = true, default_value = "./strata-data")]
    data_dir: PathBuf,
}

/// `strata snapshots …`.
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotsCommand {
    /// Table of your snapshots: id, status, size, parent, written blocks, start time, tags.
    List,
    /// Everything about one snapshot, as JSON.
    Show {
        /// The snapshot id.
        id: String,
    },
    /// Delete a snapshot in any state (a pending one is cancelled); GC frees its data.
    Delete {
        /// The snapshot id.
        id: String,
    },
}

impl Connection {
    fn keys(&self) -> anyhow::Result<(String, String)> {
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            return Ok((id.clone(), secret.clone()));
        }
        let path = self.data_dir.join("root-credentials");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY given and {} is not readable",
                path.display()
            )
        })?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.trim().to_owned())
                .with_context(|| format!("{} has no {name}", path.display()))
        };
        Ok((field("aws_access_key_id")?, field("aws_secret_access_key")?))
    }

    /// Send a signed admin request; the response body on success.
    async fn call(&self, method: &str, path: &str) -> anyhow::Result<bytes::Bytes> {
        let url = format!("{}{PREFIX}{path}", self.endpoint.trim_end_matches('/'));
        let (key, secret) = self.keys()?;
        let identity: Identity = Credentials::new(key, secret, None, None, "strata").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
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
        let response = client
            .request(request)
            .await
            .with_context(|| format!("cannot reach the server at {}", self.endpoint))?;
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

/// Run `strata snapshots …`.
pub async fn snapshots(connection: &Connection, command: SnapshotsCommand) -> anyhow::Result<()> {
    match command {
        SnapshotsCommand::List => {
            let body = connection.call("GET", "/snapshots").await?;
            let list: SnapshotList = serde_json::from_slice(&body).context("unexpected answer")?;
            print!("{}", table(&list.snapshots));
        }
        SnapshotsCommand::Show { id } => {
            let body = connection.call("GET", &format!("/snapshots/{id}")).await?;
            let snapshot: AdminSnapshot =
                serde_json::from_slice(&body).context("unexpected answer")?;
            println!("{}", serde_json::to_string_pretty(&snapshot)?);
        }
        SnapshotsCommand::Delete { id } => {
            connection
                .call("DELETE", &format!("/snapshots/{id}"))
                .await?;
            println!("deleted {id}");
        }
    }
    Ok(())
}

/// Run `strata gc`.
pub async fn gc(connection: &Connection, dry_run: bool) -> anyhow::Result<()> {
    let body = connection
        .call("POST", &format!("/gc?dryRun={dry_run}"))
        .await?;
    let summary: GcSummary = serde_json::from_slice(&body).context("unexpected answer")?;
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
            strata_wire::ec2::iso8601_ms(s.start_time_ms)
                .get(..19)
                .unwrap_or("")
                .replace('T', " "),
            tags.join(","),
        ]);
    }
    let widths: Vec<usize> = (0..7)
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
    }
}
