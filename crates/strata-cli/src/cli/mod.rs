//! The command-line front end of the client: `strata upload | download | diff | verify | nbd
//! | wait`.
//!
//! This is the only module that prints, draws progress bars and picks exit codes (it is the
//! "binary" half of the crate; `crates/strata` only dispatches to [`run`]). Results go to
//! stdout (a snapshot id, a diff, a verdict, or JSON with `--json`), everything else to
//! stderr, errors as one line `error: …` that says what to do.
//!
//! Exit codes: 0 success; 1 error; 2 bad usage or configuration (found before any
//! transfer); 3 a difference was found (verify, diff); 4 a transient failure outlasted the
//! retries (run again later; transfers resume); 130 interrupted.

mod args;
mod ui;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_types::{SnapshotId, VolumeSize};

pub use args::{
    ClientCommand, ConnectionArgs, CopyArgs, DiffArgs, DownloadArgs, NbdArgs, SyncArgs, TargetArgs,
    TransferArgs, UploadArgs, VerifyArgs, WaitArgs,
};

use crate::api::{CompletionStatus, SnapshotClient};
use crate::connect::{ConnectOptions, client_for, http_client, resolve};
use crate::diff::Differ;
use crate::download::{DownloadOptions, Downloader};
use crate::error::{
    ApiError, ConnectError, DownloadError, NbdError, SyncError, UploadError, VerifyError,
};
use crate::manifest::Manifest;
use crate::nbd::{NbdOptions, NbdServer};
use crate::progress::StopSignal;
use crate::retry::RetryPolicy;
use crate::sync::{SyncOptions, Syncer, default_state_path};
use crate::upload::{Baseline, UploadOptions, Uploader, resume_state_for};
use crate::verify::{Verifier, VerifyOptions, finding_ranges};
use ui::{Ui, bytes, count, rate, retry_printer};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: bad usage or configuration, found before any transfer.
pub const EXIT_USAGE: i32 = 2;
/// Exit code: verification or a diff found a difference.
pub const EXIT_MISMATCH: i32 = 3;
/// Exit code: a transient failure outlasted the retries; running again may succeed.
pub const EXIT_TRANSIENT: i32 = 4;
/// Exit code: interrupted by Ctrl-C.
pub const EXIT_INTERRUPTED: i32 = 130;

/// How long a command that saves its state on Ctrl-C may take to do so.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Run a client command: prints results and errors, returns the process exit code.
///
/// On Ctrl-C a download or an NBD export is asked to stop (a download saves what it has
/// written, a second Ctrl-C does not wait); other commands stop at once.
pub async fn run(command: ClientCommand) -> i32 {
    let stop = StopSignal::new();
    let graceful = matches!(
        command,
        ClientCommand::Download(_)
            | ClientCommand::Nbd(_)
            | ClientCommand::Copy(_)
            | ClientCommand::Sync(_)
    );
    let interrupted = interrupt_message(&command);
    let work = dispatch(command, stop.clone());
    tokio::pin!(work);
    let code = tokio::select! {
        code = &mut work => code,
        _ = tokio::signal::ctrl_c() => {
            if graceful {
                stop.stop();
                tokio::select! {
                    code = &mut work => code,
                    _ = tokio::signal::ctrl_c() => {
                        eprintln!("interrupted again: stopped without waiting");
                        EXIT_INTERRUPTED
                    }
                    () = tokio::time::sleep(STOP_GRACE) => {
                        eprintln!("interrupted: the command did not stop within {} s", STOP_GRACE.as_secs());
                        EXIT_INTERRUPTED
                    }
                }
            } else {
                eprintln!("{interrupted}");
                EXIT_INTERRUPTED
            }
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    code
}

/// What to tell the user when Ctrl-C stops a command at once.
fn interrupt_message(command: &ClientCommand) -> String {
    match command {
        ClientCommand::Upload(args) if args.image.is_file() => format!(
            "interrupted: the snapshot stays pending; run the same command again to resume the upload ({} records the blocks sent)",
            resume_state_for(&args.image).display()
        ),
        ClientCommand::Upload(_) => {
            "interrupted: the snapshot stays pending and expires; run the upload again".to_owned()
        }
        _ => "interrupted".to_owned(),
    }
}

async fn dispatch(command: ClientCommand, stop: StopSignal) -> i32 {
    let outcome = match command {
        ClientCommand::Upload(args) => upload(args).await,
        ClientCommand::Download(args) => download(args, stop).await,
        ClientCommand::Diff(args) => diff(args).await,
        ClientCommand::Verify(args) => verify(args).await,
        ClientCommand::Nbd(args) => nbd(args, stop).await,
        ClientCommand::Wait(args) => wait(args).await,
        ClientCommand::Copy(args) => {
            let chain = vec![args.snapshot];
            sync(chain, args.target, args.transfer, stop, true).await
        }
        ClientCommand::Sync(args) => {
            sync(args.snapshots, args.target, args.transfer, stop, false).await
        }
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            failure.code
        }
    }
}

/// An error and the exit code it deserves.
struct Failed {
    error: anyhow::Error,
    code: i32,
}

impl<E: Into<anyhow::Error>> From<E> for Failed {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            code: EXIT_ERROR,
        }
    }
}

fn failed(error: impl Into<anyhow::Error>, code: i32) -> Failed {
    Failed {
        error: error.into(),
        code,
    }
}

fn api_code(error: &ApiError) -> i32 {
    if error.is_retryable() {
        EXIT_TRANSIENT
    } else {
        EXIT_ERROR
    }
}

/// The exit code of a connection error: always a configuration problem.
pub fn connect_code(_: &ConnectError) -> i32 {
    EXIT_USAGE
}

async fn client(args: &TransferArgs) -> Result<SnapshotClient, Failed> {
    client_to(args, args.connection.options(None)).await
}

async fn client_to(args: &TransferArgs, options: ConnectOptions) -> Result<SnapshotClient, Failed> {
    let resolved = resolve(&options).await.map_err(|e| {
        let code = connect_code(&e);
        failed(e, code)
    })?;
    let sdk = client_for(&resolved, None, http_client());
    let retry = RetryPolicy {
        max_attempts: args.max_attempts.max(1),
        attempt_timeout: Duration::from_secs(args.request_timeout.max(1)),
        ..RetryPolicy::default()
    };
    Ok(SnapshotClient::new(sdk, retry))
}

fn snapshot_id(text: &str) -> Result<SnapshotId, Failed> {
    SnapshotId::parse(text).map_err(|e| failed(anyhow::anyhow!(e), EXIT_USAGE))
}

fn upload_code(error: &UploadError) -> i32 {
    match error {
        UploadError::Api(api) => api_code(api),
        UploadError::Invalid(_) => EXIT_USAGE,
        UploadError::Interrupted { cause, .. } => match cause.as_ref() {
            UploadError::Api(api) => api_code(api),
            _ => EXIT_ERROR,
        },
        _ => EXIT_ERROR,
    }
}

async fn upload(args: UploadArgs) -> Result<i32, Failed> {
    let parent = args.parent.as_deref().map(snapshot_id).transpose()?;
    let volume_size = args
        .volume_size
        .map(VolumeSize::from_gib)
        .transpose()
        .map_err(|e| failed(anyhow::anyhow!(e), EXIT_USAGE))?;
    if !args.image.exists() {
        return Err(failed(
            anyhow::anyhow!("{} does not exist", args.image.display()),
            EXIT_USAGE,
        ));
    }
    let client = client(&args.transfer).await?;
    let quiet = args.transfer.quiet;
    let is_file = std::fs::metadata(&args.image).is_ok_and(|m| m.is_file());
    let manifest_out = match (&args.manifest, args.no_manifest) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        // Next to a regular file; never next to a block device (that would be in /dev).
        (None, false) => is_file.then(|| Manifest::path_for(&args.image)),
    };
    let mut options = UploadOptions::new(&args.image);
    options.parent = parent;
    options.base.clone_from(&args.base);
    options.parent_manifest.clone_from(&args.parent_manifest);
    options.manifest_out = manifest_out;
    options.volume_size = volume_size;
    options.description.clone_from(&args.description);
    options.tags.clone_from(&args.tags);
    options.concurrency = args.concurrency;
    options.timeout_minutes = args.snapshot_timeout;
    options.wait = (!args.no_wait).then_some(Duration::from_secs(600));
    // Next to a regular file only, like the manifest.
    options.resume_state = is_file.then(|| resume_state_for(&args.image));
    options.restart = args.restart;
    options.cache_manifest = !args.no_manifest;
    options.encrypted = args.encrypted;
    options.kms_key_arn.clone_from(&args.kms_key_id);
    let ui = Ui::new(quiet || args.json, "uploading");
    let result = Uploader::new(&client, ui.reporter()).upload(&options).await;
    ui.finish();
    let summary = result.map_err(|error| {
        let code = upload_code(&error);
        failed(error, code)
    })?;
    if let Some(lost) = &summary.abandoned {
        eprintln!(
            "note: {lost}, left pending by an interrupted upload that had sent nothing, no longer exists; uploaded into a new snapshot"
        );
    }
    let baseline = match summary.baseline {
        Baseline::Empty => "none",
        Baseline::BaseImage => "base-image",
        Baseline::Manifest => "parent-manifest",
        Baseline::Fetched => "parent-blocks",
    };
    let status = match summary.status {
        CompletionStatus::Completed => "completed",
        CompletionStatus::Pending => "pending",
        CompletionStatus::Error => "error",
    };
    if args.json {
        let json = serde_json::json!({
            "snapshot": summary.snapshot.to_string(),
            "status": status,
            "volume_size_gib": summary.volume_size.gib(),
            "image": args.image,
            "image_size": summary.image_size,
            "parent": options.parent.as_ref().map(ToString::to_string),
            "baseline": baseline,
            "blocks_scanned": summary.blocks_scanned,
            "blocks_sent": summary.blocks_sent,
            "blocks_sent_earlier": summary.blocks_resumed,
            "zero_blocks_skipped": summary.zero_blocks_skipped,
            "unchanged_blocks_skipped": summary.unchanged_blocks_skipped,
            "parent_blocks_fetched": summary.parent_blocks_fetched,
            "manifest": summary.manifest,
            "abandoned_snapshot": summary.abandoned.as_ref().map(ToString::to_string),
            "elapsed_seconds": summary.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        println!("{}", summary.snapshot);
    }
    if !quiet && !args.json {
        let how = match summary.baseline {
            Baseline::Empty => "",
            Baseline::BaseImage => " (compared with the base image)",
            Baseline::Manifest => " (compared with the parent's manifest)",
            Baseline::Fetched => " (compared with the parent's blocks)",
        };
        let earlier = if summary.blocks_resumed > 0 {
            format!(", {} by an earlier run", summary.blocks_resumed)
        } else {
            String::new()
        };
        eprintln!(
            "uploaded {} ({}) to {} in {}: {} sent{earlier}, {} zero and {} unchanged skipped{how}{}",
            args.image.display(),
            bytes(summary.image_size),
            summary.snapshot,
            rate(
                summary.blocks_sent * crate::image::BLOCK_BYTES,
                summary.elapsed
            ),
            count(summary.blocks_sent, "block", "blocks"),
            summary.zero_blocks_skipped,
            summary.unchanged_blocks_skipped,
            match summary.status {
                CompletionStatus::Completed => String::new(),
                _ => format!(
                    "; status {status} (still sealing; strata wait {})",
                    summary.snapshot
                ),
            }
        );
        if let Some(path) = &summary.manifest {
            eprintln!("manifest: {}", path.display());
        }
    }
    if let Some(warning) = &summary.manifest_warning {
        eprintln!("warning: the manifest was not written: {warning}");
    }
    Ok(EXIT_OK)
}

/// The manifest a command should use for `snapshot`, and where it is: the one named, else
/// one found next to `near` or in the cache.
fn manifest_for(
    snapshot: &SnapshotId,
    named: Option<&Path>,
    near: Option<&Path>,
) -> Result<Option<(Manifest, PathBuf)>, Failed> {
    if let Some(path) = named {
        let manifest = Manifest::read(path).map_err(|e| failed(e, EXIT_USAGE))?;
        return Ok(Some((manifest, path.to_owned())));
    }
    let candidates: Vec<_> = near.map(Manifest::path_for).into_iter().collect();
    Ok(Manifest::find(snapshot, &candidates))
}

async fn download(args: DownloadArgs, stop: StopSignal) -> Result<i32, Failed> {
    let snapshot = snapshot_id(&args.snapshot)?;
    let quiet = args.transfer.quiet || args.json;
    let found = if args.size.is_some() && args.manifest.is_none() {
        None
    } else {
        manifest_for(&snapshot, args.manifest.as_deref(), Some(&args.output))?
    };
    let (expected, manifest_used) = found.unzip();
    let client = client(&args.transfer).await?;
    let mut options = DownloadOptions::new(snapshot, &args.output);
    options.size = args.size;
    options.expected = expected;
    options.concurrency = args.concurrency;
    options.force = args.force;
    options.write_manifest = !args.no_manifest;
    options.cache_manifest = !args.no_manifest;
    options.truncate = args.truncate;
    options.stop = Some(stop);
    let ui = Ui::new(quiet, "downloading");
    let result = Downloader::new(&client, ui.reporter())
        .download(&options)
        .await;
    ui.finish();
    let summary = result.map_err(|error| {
        let code = download_code(&error);
        failed(error, code)
    })?;
    if args.json {
        let json = serde_json::json!({
            "snapshot": summary.snapshot.to_string(),
            "output": summary.output,
            "size": summary.size,
            "blocks": summary.blocks_total,
            "blocks_fetched": summary.blocks_fetched,
            "blocks_saved_earlier": summary.blocks_resumed,
            "zero_blocks": summary.zero_blocks,
            "manifest": summary.manifest,
            "manifest_used": manifest_used,
            "elapsed_seconds": summary.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if !args.transfer.quiet {
        let earlier = if summary.blocks_resumed > 0 {
            format!(", {} saved by an earlier run", summary.blocks_resumed)
        } else {
            String::new()
        };
        let length = manifest_used
            .as_ref()
            .map(|path| format!(", the length of {}", path.display()))
            .unwrap_or_default();
        eprintln!(
            "downloaded {} to {} ({}{length}) in {}: {} fetched ({} zero){earlier}",
            summary.snapshot,
            summary.output.display(),
            bytes(summary.size),
            rate(summary.bytes_fetched, summary.elapsed),
            count(summary.blocks_fetched, "block", "blocks"),
            summary.zero_blocks,
        );
    }
    if let Some(warning) = &summary.manifest_warning {
        eprintln!("warning: the manifest was not written: {warning}");
    }
    Ok(EXIT_OK)
}

fn download_code(error: &DownloadError) -> i32 {
    match error {
        DownloadError::Api(api) => api_code(api),
        DownloadError::Mismatch { .. } => EXIT_MISMATCH,
        DownloadError::Invalid(_)
        | DownloadError::OutputIsDirectory(_)
        | DownloadError::Truncates { .. } => EXIT_USAGE,
        DownloadError::Stopped => EXIT_INTERRUPTED,
        DownloadError::Interrupted { cause, .. } => download_code(cause),
        _ => EXIT_ERROR,
    }
}

async fn diff(args: DiffArgs) -> Result<i32, Failed> {
    let first = snapshot_id(&args.first)?;
    let second = snapshot_id(&args.second)?;
    let client = client(&args.transfer).await?;
    let ui = Ui::new(args.transfer.quiet || args.json, "diffing");
    let result = Differ::new(&client, ui.reporter())
        .diff(&first, &second)
        .await;
    ui.finish();
    let report = result.map_err(|error| {
        let code = api_code(&error);
        failed(error, code)
    })?;
    let code = if report.ranges.is_empty() {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    println!("{:>14}  {:>14}  {:>8}  kind", "offset", "length", "blocks");
    for range in &report.ranges {
        let kind = match range.kind {
            crate::diff::ChangeKind::Changed => "changed",
            crate::diff::ChangeKind::OnlyInFirst => "only in first",
            crate::diff::ChangeKind::OnlyInSecond => "only in second",
        };
        println!(
            "{:>14}  {:>14}  {:>8}  {kind}",
            range.offset, range.length, range.blocks
        );
    }
    println!(
        "{} ({}) differ in {}",
        count(report.changed_blocks, "block", "blocks"),
        bytes(report.changed_bytes),
        count(report.ranges.len() as u64, "range", "ranges")
    );
    Ok(code)
}

async fn verify(args: VerifyArgs) -> Result<i32, Failed> {
    // `--all` is the server's scrub, run through the admin API by the `strata` binary.
    let Some(snapshot) = &args.snapshot else {
        return Err(failed(
            anyhow::anyhow!("verify --all is run by the strata binary (strata verify --all)"),
            EXIT_USAGE,
        ));
    };
    let snapshot = snapshot_id(snapshot)?;
    if let Some(image) = &args.image
        && !image.exists()
    {
        return Err(failed(
            anyhow::anyhow!("{} does not exist", image.display()),
            EXIT_USAGE,
        ));
    }
    let client = client(&args.transfer).await?;
    let mut options = VerifyOptions::new(snapshot);
    options.image.clone_from(&args.image);
    options.concurrency = args.concurrency;
    let ui = Ui::new(args.transfer.quiet || args.json, "verifying");
    let result = Verifier::new(&client, ui.reporter()).verify(&options).await;
    ui.finish();
    let report = result.map_err(|error| {
        let code = match &error {
            VerifyError::Api(api) => api_code(api),
            VerifyError::Image(_) | VerifyError::Internal(_) => EXIT_ERROR,
        };
        failed(error, code)
    })?;
    let ranges = finding_ranges(&report.findings);
    // Shorter: the image ends before the snapshot's last block begins.
    let shorter = report
        .image_size
        .filter(|&size| size + crate::image::BLOCK_BYTES <= report.data_end);
    let code = if report.is_ok() {
        EXIT_OK
    } else {
        EXIT_MISMATCH
    };
    if args.json {
        let json = serde_json::json!({
            "snapshot": report.snapshot.to_string(),
            "ok": report.is_ok(),
            "image": args.image,
            "image_size": report.image_size,
            "snapshot_data_end": report.data_end,
            "image_is_shorter": shorter.is_some(),
            "blocks_checked": report.blocks_checked,
            "image_blocks_compared": report.image_blocks_compared,
            "blocks_with_problems": report.findings.len(),
            "problems": ranges,
            "elapsed_seconds": report.elapsed.as_secs_f64(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(code);
    }
    for range in &ranges {
        let blocks = if range.first_block == range.last_block {
            format!("block {}", range.first_block)
        } else {
            format!(
                "blocks {}-{} ({})",
                range.first_block,
                range.last_block,
                count(range.blocks(), "block", "blocks")
            )
        };
        match &range.error {
            Some(error) => println!("{blocks}: {}: {error}", range.problem),
            None => println!("{blocks}: {}", range.problem),
        }
    }
    if let (Some(size), Some(image)) = (shorter, &args.image) {
        println!(
            "note: {} ({size} bytes) is shorter than the snapshot's data ({} bytes)",
            image.display(),
            report.data_end
        );
    }
    let against = args
        .image
        .as_ref()
        .map(|p| format!(" against {}", p.display()))
        .unwrap_or_default();
    if report.is_ok() {
        println!(
            "ok: {} of {} verified{against}",
            count(report.blocks_checked, "block", "blocks"),
            report.snapshot
        );
    } else {
        println!(
            "FAILED: {} of {} checked of {} have problems{against}",
            report.findings.len(),
            count(report.blocks_checked, "block", "blocks"),
            report.snapshot
        );
    }
    Ok(code)
}

async fn nbd(args: NbdArgs, stop: StopSignal) -> Result<i32, Failed> {
    let snapshot = snapshot_id(&args.snapshot)?;
    let changed_since = args.changed_since.as_deref().map(snapshot_id).transpose()?;
    let quiet = args.transfer.quiet;
    let manifest = if args.size.is_some() {
        None
    } else {
        manifest_for(&snapshot, args.manifest.as_deref(), None)?
    };
    let client = client(&args.transfer).await?;
    let mut options = NbdOptions::new(snapshot.clone(), args.listen);
    options.size = args.size.or(manifest.as_ref().map(|(m, _)| m.image_size));
    options.cache_blocks = usize::try_from(args.cache_mib.saturating_mul(2)).unwrap_or(usize::MAX);
    options.readahead_blocks = args.readahead;
    options.changed_since.clone_from(&changed_since);
    let reporter = retry_printer(quiet);
    let server = NbdServer::bind(&client, &options, reporter)
        .await
        .map_err(|error| {
            let code = match &error {
                NbdError::Api(api) => api_code(api),
                NbdError::Listen { .. } => EXIT_ERROR,
            };
            failed(error, code)
        })?;
    let addr = server.local_addr()?;
    println!("nbd://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if !quiet {
        let length = manifest
            .as_ref()
            .map(|(_, path)| format!(", the length of {}", path.display()))
            .unwrap_or_default();
        eprintln!(
            "serving {snapshot} ({}{length}) read-only on nbd://{addr}; Ctrl-C to stop",
            bytes(server.size())
        );
        if let Some(base) = &changed_since {
            eprintln!("blocks changed since {base}: metadata context qemu:dirty-bitmap:{base}");
        }
    }
    let stopping = stop.clone();
    server
        .serve_until(async move { stopping.stopped().await })
        .await?;
    if !quiet {
        eprintln!("stopped serving {snapshot}");
    }
    Ok(if stop.is_stopped() {
        EXIT_INTERRUPTED
    } else {
        EXIT_OK
    })
}

async fn wait(args: WaitArgs) -> Result<i32, Failed> {
    let snapshot = snapshot_id(&args.snapshot)?;
    let client = client(&args.transfer).await?;
    let client = client.with_reporter(retry_printer(args.transfer.quiet));
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let readable = client.is_readable(&snapshot).await.map_err(|error| {
            let code = api_code(&error);
            failed(error, code)
        })?;
        if readable {
            if !args.transfer.quiet {
                eprintln!("{snapshot} is completed");
            }
            return Ok(EXIT_OK);
        }
        if Instant::now() >= deadline {
            return Err(failed(
                anyhow::anyhow!(
                    "{snapshot} is not readable after {} s: it is still pending, or it does not exist (run again to keep waiting)",
                    args.timeout
                ),
                EXIT_TRANSIENT,
            ));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn sync_code(error: &SyncError) -> i32 {
    match error {
        SyncError::Api(api) => api_code(api),
        SyncError::Invalid(_) => EXIT_USAGE,
        SyncError::Stopped => EXIT_INTERRUPTED,
        SyncError::Interrupted { cause, .. } => sync_code(cause),
        _ => EXIT_ERROR,
    }
}

/// `strata copy` (one snapshot) and `strata sync` (a lineage).
async fn sync(
    chain: Vec<String>,
    target_args: TargetArgs,
    transfer: TransferArgs,
    stop: StopSignal,
    copy: bool,
) -> Result<i32, Failed> {
    let chain = chain
        .iter()
        .map(|id| snapshot_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    let source = client(&transfer).await?;
    let target_options = target_args.options(transfer.connection.region.as_deref());
    let target_label = target_options
        .endpoint
        .clone()
        .unwrap_or_else(|| "aws".to_owned());
    let target = client_to(&transfer, target_options).await?;
    let mut options = SyncOptions::new(chain.clone());
    options.state = target_args.state.clone().or_else(|| {
        chain
            .first()
            .and_then(|first| default_state_path(first, &target_label))
    });
    if let Some(dir) = options.state.as_deref().and_then(Path::parent)
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    options.concurrency = target_args.concurrency;
    options.tags.clone_from(&target_args.tags);
    options.stop = Some(stop);
    let quiet = transfer.quiet || target_args.json;
    let ui = Ui::new(quiet, "copying");
    let result = Syncer::new(&source, &target, ui.reporter())
        .sync(&options)
        .await;
    ui.finish();
    let summary = result.map_err(|error| {
        let code = sync_code(&error);
        failed(error, code)
    })?;
    if target_args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        for copied in &summary.snapshots {
            if copy {
                println!("{}", copied.target);
            } else {
                println!("{} {}", copied.source, copied.target);
            }
        }
    }
    if !quiet {
        let fresh = summary
            .snapshots
            .iter()
            .filter(|s| !s.already_copied)
            .count() as u64;
        let blocks: u64 = summary.snapshots.iter().map(|s| s.blocks_written).sum();
        eprintln!(
            "copied {} to {target_label} in {}: {} written{}",
            count(fresh, "snapshot", "snapshots"),
            rate(summary.bytes_written, summary.elapsed),
            count(blocks, "block", "blocks"),
            match summary.snapshots.len() as u64 - fresh {
                0 => String::new(),
                n => format!(
                    ", {} copied by an earlier run",
                    count(n, "snapshot", "snapshots")
                ),
            }
        );
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn command(args: &[&str]) -> ClientCommand {
        Cli::try_parse_from(args).expect("parses").command
    }

    #[test]
    fn ctrl_c_says_what_the_interrupted_command_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("disk.img");
        std::fs::write(&image, b"x").expect("write");
        let image = image.to_str().expect("utf-8");
        let upload = interrupt_message(&command(&["strata", "upload", image]));
        assert!(
            upload.contains("resume the upload") && upload.contains("disk.img.strata-upload"),
            "{upload}"
        );
        assert!(!upload.contains("download"), "{upload}");
        let device = interrupt_message(&command(&["strata", "upload", "/dev/null"]));
        assert!(device.contains("expires"), "{device}");
        let verify = interrupt_message(&command(&["strata", "verify", "snap-01"]));
        assert_eq!(verify, "interrupted");
    }
}
