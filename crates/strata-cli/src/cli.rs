//! The command-line front end of the client: `strata upload | download | diff | verify | nbd`.
//!
//! This is the only module that prints, draws progress bars and picks exit codes (it is the
//! "binary" half of the crate; `crates/strata` only dispatches to [`run`]). Results go to
//! stdout (a snapshot id, a diff, a verdict), everything else to stderr.
//!
//! Exit codes: 0 success; 1 error; 2 bad usage; 3 verification found a difference; 4 a
//! transient failure outlasted the retries (run again later; a download resumes); 130
//! interrupted.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_types::{SnapshotId, VolumeSize};

use crate::api::{CompletionStatus, SnapshotClient};
use crate::connect::{ConnectOptions, connect};
use crate::diff::Differ;
use crate::download::{DownloadOptions, Downloader};
use crate::error::{ApiError, DownloadError, NbdError, UploadError, VerifyError};
use crate::manifest::Manifest;
use crate::nbd::{NbdOptions, NbdServer};
use crate::progress::{ProgressEvent, Reporter};
use crate::retry::RetryPolicy;
use crate::upload::{Baseline, DEFAULT_CONCURRENCY, UploadOptions, Uploader, resume_state_for};
use crate::verify::{Finding, Verifier, VerifyOptions};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: an error.
pub const EXIT_ERROR: i32 = 1;
/// Exit code: verification found a difference or a corrupt block.
pub const EXIT_MISMATCH: i32 = 3;
/// Exit code: a transient failure outlasted the retries; running again may succeed.
pub const EXIT_TRANSIENT: i32 = 4;
/// Exit code: interrupted by Ctrl-C.
pub const EXIT_INTERRUPTED: i32 = 130;

/// The client subcommands of `strata`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Upload a raw disk image or block device as a new snapshot; prints its id.
    #[command(after_help = UPLOAD_EXAMPLES)]
    Upload(UploadArgs),
    /// Download a snapshot to a sparse file or a block device (verified, resumable).
    #[command(after_help = DOWNLOAD_EXAMPLES)]
    Download(DownloadArgs),
    /// Show the block ranges that differ between two snapshots of one lineage.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(DiffArgs),
    /// Read every block of a snapshot and check its checksum, optionally against an image.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Serve a snapshot as a read-only NBD export, fetching blocks on demand.
    #[command(after_help = NBD_EXAMPLES)]
    Nbd(NbdArgs),
}

macro_rules! connection_help {
    () => {
        "Endpoint, region and credentials come from the usual AWS sources \
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/config, AWS_REGION, \
AWS_ENDPOINT_URL_EBS) unless given as flags.\n\nExit codes: 0 ok, 1 error, 2 usage, \
3 verification found a difference, 4 transient failure outlasted the retries (run again), \
130 interrupted."
    };
}

const UPLOAD_EXAMPLES: &str = concat!("Examples:
  strata upload disk.img --endpoint http://127.0.0.1:9555
  strata upload disk.img --parent snap-0123456789abcdef0        # incremental, via disk.img.strata-manifest
  strata upload new.img --parent snap-0123456789abcdef0 --base old.img
  strata upload /dev/sdb --volume-size 100 --tag team=storage --description 'nightly'

Zero blocks are skipped only where the snapshot reads zeros anyway. A manifest of block
digests is written to IMAGE.strata-manifest (for a later incremental upload). Acknowledged
blocks are recorded in IMAGE.strata-upload until the snapshot is complete: after an
interruption, run the same command again to resume.", "\n\n", connection_help!());

const DOWNLOAD_EXAMPLES: &str = concat!(
    "Examples:
  strata download snap-0123456789abcdef0 disk.img
  strata download snap-0123456789abcdef0 disk.img --manifest original.img.strata-manifest
  strata download snap-0123456789abcdef0 /dev/sdc --force

The output is written to OUTPUT.strata-partial and renamed when complete; after an
interruption, run the same command again to resume. A snapshot does not record the length
of the original image: the output has the volume size unless --size or --manifest says otherwise.",
    "\n\n",
    connection_help!()
);

const DIFF_EXAMPLES: &str = concat!(
    "Examples:
  strata diff snap-0123456789abcdef0 snap-0fedcba9876543210
  strata diff snap-0123456789abcdef0 snap-0fedcba9876543210 --json | jq .changed_bytes",
    "\n\n",
    connection_help!()
);

const VERIFY_EXAMPLES: &str = concat!(
    "Examples:
  strata verify snap-0123456789abcdef0
  strata verify snap-0123456789abcdef0 disk.img",
    "\n\n",
    connection_help!()
);

const NBD_EXAMPLES: &str = concat!(
    "Examples:
  strata nbd snap-0123456789abcdef0 --listen 127.0.0.1:10809
  qemu-img convert -f raw -O qcow2 nbd://127.0.0.1:10809 restored.qcow2
  nbd-client 127.0.0.1 10809 /dev/nbd0 -readonly && mount -o ro /dev/nbd0p1 /mnt",
    "\n\n",
    connection_help!()
);

/// Flags shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Endpoint URL of the EBS direct APIs, e.g. http://127.0.0.1:9555 (default: AWS, or AWS_ENDPOINT_URL_EBS).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// AWS region (default: AWS_REGION or the profile's; us-east-1 with --endpoint).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config and ~/.aws/credentials.
    #[arg(long)]
    pub profile: Option<String>,
    /// Deadline of one request attempt, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub request_timeout: u64,
    /// Attempts per request before giving up (transient failures only).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_attempts: u32,
    /// No progress bar, no summary: only results and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `strata upload`.
#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Raw image file or block device.
    pub image: PathBuf,
    /// Make the snapshot incremental on this completed snapshot.
    #[arg(long, value_name = "SNAP")]
    pub parent: Option<String>,
    /// The image the parent was made from: only blocks that differ from it are sent.
    #[arg(long, value_name = "OLD_IMAGE", requires = "parent")]
    pub base: Option<PathBuf>,
    /// The parent's manifest (default: IMAGE.strata-manifest when it describes the parent).
    #[arg(long, value_name = "FILE", requires = "parent")]
    pub parent_manifest: Option<PathBuf>,
    /// Where to write the new snapshot's manifest (default: IMAGE.strata-manifest).
    #[arg(long, value_name = "FILE", conflicts_with = "no_manifest")]
    pub manifest: Option<PathBuf>,
    /// Do not write a manifest.
    #[arg(long)]
    pub no_manifest: bool,
    /// Volume size in GiB (default: the image size rounded up).
    #[arg(long, value_name = "GiB")]
    pub volume_size: Option<i64>,
    /// Snapshot description (default: the image's file name).
    #[arg(long)]
    pub description: Option<String>,
    /// A tag KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Blocks in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_name = "N")]
    pub concurrency: usize,
    /// Minutes without progress after which the service abandons the snapshot.
    #[arg(long, value_name = "MINUTES")]
    pub snapshot_timeout: Option<u32>,
    /// Do not wait for a snapshot the service is still sealing.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `strata download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The snapshot.
    pub snapshot: String,
    /// Output file or block device.
    pub output: PathBuf,
    /// Output length, e.g. 268435456, 256MiB, 10G (default: from --manifest, else the volume size).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<u64>,
    /// A manifest of the snapshot (e.g. IMAGE.strata-manifest from the upload): gives the
    /// length and every block is checked against it.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Overwrite an existing output (required for a block device).
    #[arg(long)]
    pub force: bool,
    /// Do not write OUTPUT.strata-manifest.
    #[arg(long)]
    pub no_manifest: bool,
    /// Blocks in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_name = "N")]
    pub concurrency: usize,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `strata diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier snapshot.
    pub first: String,
    /// The later snapshot.
    pub second: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `strata verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The snapshot.
    pub snapshot: String,
    /// An image the snapshot should equal.
    pub image: Option<PathBuf>,
    /// Blocks in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_name = "N")]
    pub concurrency: usize,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `strata nbd`.
#[derive(Debug, Args)]
pub struct NbdArgs {
    /// The snapshot.
    pub snapshot: String,
    /// Address to listen on (port 0: any free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:10809")]
    pub listen: SocketAddr,
    /// Export size (default: the volume size).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Memory for cached blocks, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MiB")]
    pub cache_mib: usize,
    /// Blocks (512 KiB) fetched ahead of a sequential reader.
    #[arg(long, default_value_t = 8, value_name = "BLOCKS")]
    pub readahead: u32,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Run a client command: prints results and errors, returns the process exit code.
pub async fn run(command: ClientCommand) -> i32 {
    let code = tokio::select! {
        code = dispatch(command) => code,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted (a download resumes when run again)");
            EXIT_INTERRUPTED
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();
    code
}

async fn dispatch(command: ClientCommand) -> i32 {
    let outcome = match command {
        ClientCommand::Upload(args) => upload(args).await,
        ClientCommand::Download(args) => download(args).await,
        ClientCommand::Diff(args) => diff(args).await,
        ClientCommand::Verify(args) => verify(args).await,
        ClientCommand::Nbd(args) => nbd(args).await,
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

async fn client(args: &ConnectionArgs) -> Result<SnapshotClient, Failed> {
    let sdk = connect(&ConnectOptions {
        endpoint: args.endpoint.clone(),
        profile: args.profile.clone(),
        region: args.region.clone(),
        connect_timeout: None,
    })
    .await?;
    let retry = RetryPolicy {
        max_attempts: args.max_attempts.max(1),
        attempt_timeout: Duration::from_secs(args.request_timeout.max(1)),
        ..RetryPolicy::default()
    };
    Ok(SnapshotClient::new(sdk, retry))
}

fn snapshot_id(text: &str) -> Result<SnapshotId, Failed> {
    SnapshotId::parse(text).map_err(|e| failed(anyhow::anyhow!(e), EXIT_ERROR))
}

async fn upload(args: UploadArgs) -> Result<i32, Failed> {
    let client = client(&args.connection).await?;
    let is_file = std::fs::metadata(&args.image).is_ok_and(|m| m.is_file());
    let manifest_out = match (&args.manifest, args.no_manifest) {
        (_, true) => None,
        (Some(path), false) => Some(path.clone()),
        // Next to a regular file; never next to a block device (that would be in /dev).
        (None, false) => is_file.then(|| Manifest::path_for(&args.image)),
    };
    let volume_size = args
        .volume_size
        .map(VolumeSize::from_gib)
        .transpose()
        .map_err(|e| failed(anyhow::anyhow!(e), EXIT_ERROR))?;
    let options = UploadOptions {
        image: args.image.clone(),
        parent: args.parent.as_deref().map(snapshot_id).transpose()?,
        base: args.base.clone(),
        parent_manifest: args.parent_manifest.clone(),
        manifest_out,
        volume_size,
        description: args.description.clone(),
        tags: args.tags.clone(),
        concurrency: args.concurrency,
        timeout_minutes: args.snapshot_timeout,
        wait: (!args.no_wait).then_some(Duration::from_secs(600)),
        // Next to a regular file only, like the manifest.
        resume_state: is_file.then(|| resume_state_for(&args.image)),
    };
    let ui = Ui::new(args.connection.quiet, "uploading");
    let result = Uploader::new(&client, ui.reporter()).upload(&options).await;
    ui.finish();
    let summary = result.map_err(|error| {
        let code = match &error {
            UploadError::Api(api) => api_code(api),
            UploadError::Interrupted { cause, .. } => match cause.as_ref() {
                UploadError::Api(api) => api_code(api),
                _ => EXIT_ERROR,
            },
            _ => EXIT_ERROR,
        };
        failed(error, code)
    })?;
    println!("{}", summary.snapshot);
    if !args.connection.quiet {
        let how = match summary.baseline {
            Baseline::Empty => "",
            Baseline::BaseImage => " (compared with the base image)",
            Baseline::Manifest => " (compared with the parent's manifest)",
            Baseline::Fetched => " (compared with the parent's blocks)",
        };
        let resumed = if summary.blocks_resumed > 0 {
            format!(" (and {} by an earlier run)", summary.blocks_resumed)
        } else {
            String::new()
        };
        eprintln!(
            "uploaded {} ({}) to {} in {}: {} blocks sent{resumed}, {} zero and {} unchanged blocks skipped{how}{}",
            args.image.display(),
            bytes(summary.image_size),
            summary.snapshot,
            rate(summary.image_size, summary.elapsed),
            summary.blocks_sent,
            summary.zero_blocks_skipped,
            summary.unchanged_blocks_skipped,
            match summary.status {
                CompletionStatus::Completed => String::new(),
                other => format!("; status {other:?} (still sealing)"),
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

async fn download(args: DownloadArgs) -> Result<i32, Failed> {
    let snapshot = snapshot_id(&args.snapshot)?;
    let expected = args
        .manifest
        .as_deref()
        .map(Manifest::read)
        .transpose()
        .context("cannot use --manifest")?;
    let client = client(&args.connection).await?;
    let mut options = DownloadOptions::new(snapshot, &args.output);
    options.size = args.size;
    options.expected = expected;
    options.concurrency = args.concurrency;
    options.force = args.force;
    options.write_manifest = !args.no_manifest;
    let ui = Ui::new(args.connection.quiet, "downloading");
    let result = Downloader::new(&client, ui.reporter())
        .download(&options)
        .await;
    ui.finish();
    let summary = result.map_err(|error| {
        let code = download_code(&error);
        failed(error, code)
    })?;
    if !args.connection.quiet {
        eprintln!(
            "downloaded {} to {} ({}) in {}: {} blocks fetched{}, {} of them zero",
            summary.snapshot,
            summary.output.display(),
            bytes(summary.size),
            rate(
                summary.blocks_fetched * crate::image::BLOCK_BYTES,
                summary.elapsed
            ),
            summary.blocks_fetched,
            if summary.blocks_resumed > 0 {
                format!(" ({} resumed from an earlier run)", summary.blocks_resumed)
            } else {
                String::new()
            },
            summary.zero_blocks
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
        DownloadError::Interrupted { cause, .. } => download_code(cause),
        _ => EXIT_ERROR,
    }
}

async fn diff(args: DiffArgs) -> Result<i32, Failed> {
    let first = snapshot_id(&args.first)?;
    let second = snapshot_id(&args.second)?;
    let client = client(&args.connection).await?;
    let ui = Ui::new(args.connection.quiet, "diffing");
    let result = Differ::new(&client, ui.reporter())
        .diff(&first, &second)
        .await;
    ui.finish();
    let report = result.map_err(|error| {
        let code = api_code(&error);
        failed(error, code)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(EXIT_OK);
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
        "{} blocks ({}) differ in {} ranges",
        report.changed_blocks,
        bytes(report.changed_bytes),
        report.ranges.len()
    );
    Ok(EXIT_OK)
}

async fn verify(args: VerifyArgs) -> Result<i32, Failed> {
    let snapshot = snapshot_id(&args.snapshot)?;
    let client = client(&args.connection).await?;
    let mut options = VerifyOptions::new(snapshot);
    options.image = args.image.clone();
    options.concurrency = args.concurrency;
    let ui = Ui::new(args.connection.quiet, "verifying");
    let result = Verifier::new(&client, ui.reporter()).verify(&options).await;
    ui.finish();
    let report = result.map_err(|error| {
        let code = match &error {
            VerifyError::Api(api) => api_code(api),
            VerifyError::Image(_) | VerifyError::Internal(_) => EXIT_ERROR,
        };
        failed(error, code)
    })?;
    for finding in &report.findings {
        match finding {
            Finding::Unreadable { index, error } => println!("block {index}: unreadable: {error}"),
            Finding::DiffersFromImage { index } => {
                println!("block {index}: differs from the image")
            }
        }
    }
    let against = args
        .image
        .as_ref()
        .map(|p| format!(" against {}", p.display()))
        .unwrap_or_default();
    if report.is_ok() {
        println!(
            "ok: {} blocks of {} verified{against}",
            report.blocks_checked, report.snapshot
        );
        Ok(EXIT_OK)
    } else {
        println!(
            "FAILED: {} of {} blocks of {} have problems{against}",
            report.findings.len(),
            report.blocks_checked,
            report.snapshot
        );
        Ok(EXIT_MISMATCH)
    }
}

async fn nbd(args: NbdArgs) -> Result<i32, Failed> {
    let snapshot = snapshot_id(&args.snapshot)?;
    let client = client(&args.connection).await?;
    let mut options = NbdOptions::new(snapshot.clone(), args.listen);
    options.size = args.size;
    options.cache_blocks = (args.cache_mib * 2).max(1);
    options.readahead_blocks = args.readahead;
    let reporter = retry_printer(args.connection.quiet);
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
    if !args.connection.quiet {
        eprintln!(
            "serving {snapshot} ({}) read-only on nbd://{addr}; Ctrl-C to stop",
            bytes(server.size())
        );
    }
    server.serve_until(std::future::pending()).await?;
    Ok(EXIT_OK)
}

/// Progress for one command: a bar on an interactive stderr, otherwise only retry notices
/// (at most one a second, since 64 workers fail together when a server restarts).
struct Ui {
    bar: Option<ProgressBar>,
    quiet: bool,
    verb: &'static str,
}

impl Ui {
    fn new(quiet: bool, verb: &'static str) -> Self {
        let interactive = !quiet && std::io::stderr().is_terminal();
        let bar = interactive.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {msg:30!} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(verb);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self { bar, quiet, verb }
    }

    fn reporter(&self) -> Reporter {
        let Some(bar) = self.bar.clone() else {
            return retry_printer(self.quiet);
        };
        let last_notice = Arc::new(Mutex::new(None::<Instant>));
        let verb = self.verb;
        Reporter::new(move |event| match event {
            ProgressEvent::Step(step) => bar.set_message(step.to_string()),
            ProgressEvent::Started {
                total_bytes,
                already_done,
            } => {
                bar.set_message(verb);
                bar.set_length(*total_bytes);
                bar.set_position(*already_done);
                bar.reset_eta();
            }
            ProgressEvent::Advanced { bytes } => bar.inc(*bytes),
            ProgressEvent::Retrying(notice) => {
                if due(&last_notice) {
                    bar.println(format!(
                        "retrying {} (attempt {} failed: {})",
                        notice.call, notice.attempt, notice.error
                    ));
                }
            }
        })
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A reporter that only prints retry notices to stderr (rate-limited), unless quiet.
fn retry_printer(quiet: bool) -> Reporter {
    if quiet {
        return Reporter::silent();
    }
    let last_notice = Arc::new(Mutex::new(None::<Instant>));
    Reporter::new(move |event| {
        if let ProgressEvent::Retrying(notice) = event
            && due(&last_notice)
        {
            eprintln!(
                "retrying {} (attempt {} failed: {})",
                notice.call, notice.attempt, notice.error
            );
        }
    })
}

fn due(last: &Mutex<Option<Instant>>) -> bool {
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    if last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
        return false;
    }
    *last = Some(now);
    true
}

fn bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}

fn rate(n: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    // Display only: precision loss in the conversion does not matter.
    #[allow(clippy::cast_precision_loss)]
    let mib = n as f64 / (1024.0 * 1024.0) / seconds;
    format!("{seconds:.1} s ({mib:.0} MiB/s)")
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

/// Bytes with an optional binary suffix: `4096`, `512K`, `256MiB`, `10G`, `1T`.
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        other => return Err(format!("unknown size suffix '{other}' (use K, M, G or T)")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert!(parse_size("10X").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn tags_parse() {
        assert_eq!(parse_tag("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_tag("k="), Ok(("k".into(), String::new())));
        assert!(parse_tag("=v").is_err());
        assert!(parse_tag("novalue").is_err());
    }

    #[test]
    fn the_commands_parse() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            command: ClientCommand,
        }
        let cli = Cli::try_parse_from([
            "strata",
            "upload",
            "disk.img",
            "--parent",
            "snap-01",
            "--base",
            "old.img",
            "--tag",
            "a=b",
            "--endpoint",
            "http://x",
        ])
        .expect("parses");
        let ClientCommand::Upload(args) = cli.command else {
            panic!("not an upload");
        };
        assert_eq!(args.connection.endpoint.as_deref(), Some("http://x"));
        assert_eq!(args.tags, vec![("a".to_owned(), "b".to_owned())]);
        assert!(
            Cli::try_parse_from(["strata", "upload", "disk.img", "--base", "old.img"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["strata", "download", "snap-01", "out", "--size", "1G"]).is_ok()
        );
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
