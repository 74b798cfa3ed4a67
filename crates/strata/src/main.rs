//! `strata`: the Strata server and tools in one binary.

mod admin;
mod logging;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_server::config::{ConfigFile, LogFormat};
use strata_server::{Settings, serve};
use strata_types::AccountId;

/// Strata: a self-hosted implementation of the Amazon EBS direct APIs.
#[derive(Debug, Parser)]
#[command(version = strata_server::build::VERSION_LINE, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (EBS direct APIs over HTTP, SigV4-authenticated).
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Measure throughput and latency against a sink, the disk and optionally moto.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(strata_bench::BenchArgs),
    /// Client commands (upload, download, diff, verify, nbd), in strata-cli.
    #[command(flatten)]
    Client(strata_cli::ClientCommand),
    /// List, show or delete snapshots on a running Strata server.
    Snapshots {
        #[command(subcommand)]
        command: admin::SnapshotsCommand,
    },
    /// Create, list, disable or enable the encryption keys of a running Strata server.
    Keys {
        #[command(subcommand)]
        command: admin::KeysCommand,
    },
    /// Back up a running Strata server's embedded data directory.
    Store {
        #[command(subcommand)]
        command: admin::StoreCommand,
    },
    /// Copy an embedded data directory into PostgreSQL and an S3 bucket (or any other
    /// stores `serve` takes): resumable, verified, and idempotent when run again.
    #[command(after_help = MIGRATE_EXAMPLES)]
    Migrate(MigrateArgs),
    /// Collect garbage on a running Strata server now (it also runs in the background).
    #[command(after_help = admin::GC_EXAMPLES)]
    Gc {
        /// Only print what would be freed.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: admin::AdminArgs,
    },
}

const SERVE_EXAMPLES: &str = "Examples:
  strata serve
  strata serve --listen 0.0.0.0:9555 --data-dir /var/lib/strata --config strata.toml
  strata serve --config /etc/strata/strata.toml --log-format json --metrics-listen 127.0.0.1:9556
  strata serve --tls-cert /etc/strata/tls.crt --tls-key /etc/strata/tls.key   # kill -HUP reloads them

Every flag also has a key in the config file (packaging/strata.toml documents them all);
a flag given here wins over the file. On its first start the server generates the root
account's keys, saves them in DATA_DIR/root-credentials (mode 0600) and prints them once.";

const MIGRATE_EXAMPLES: &str = "Examples:
  export STRATA_S3_ACCESS_KEY_ID=... STRATA_S3_SECRET_ACCESS_KEY=...
  strata migrate --from-data-dir /var/lib/strata --metadata postgres://strata@db/strata \\
      --chunks s3://backups/strata --s3-endpoint http://rgw.internal:7480

Stop the server of the data directory first. Every snapshot is copied with its tags,
client token, times and lineage; the token key and root keys come along unless the
target cluster has its own. Run it again after an interruption: what is copied is
skipped, an unfinished snapshot is started over, chunks in the target are not sent again.";

const BENCH_EXAMPLES: &str = "Examples:
  strata bench --repeat 3
  strata bench --smoke            # a few seconds of everything";

/// Where the S3 bucket is and its keys: flags of `serve` (each also a config-file key of
/// the same name) and `migrate`.
#[derive(Debug, clap::Args)]
struct S3Args {
    /// The S3 endpoint, e.g. http://127.0.0.1:7480 (unset: AWS S3) [config: s3_endpoint].
    #[arg(long, env = "STRATA_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The S3 signing region (default us-east-1) [config: s3_region].
    #[arg(long, env = "STRATA_S3_REGION")]
    s3_region: Option<String>,
    /// The bucket's access key id [config: s3_access_key_id].
    #[arg(long, env = "STRATA_S3_ACCESS_KEY_ID")]
    s3_access_key_id: Option<String>,
    /// The bucket's secret access key; prefer the environment [config: s3_secret_access_key].
    #[arg(long, env = "STRATA_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
}

/// `strata migrate`'s flags.
#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// The embedded data directory to copy.
    #[arg(long)]
    from_data_dir: PathBuf,
    /// The target's metadata store: postgres://USER[:PASSWORD]@HOST[:PORT]/DB (or
    /// `embedded`, with --data-dir).
    #[arg(long, env = "STRATA_METADATA", hide_env_values = true)]
    metadata: String,
    /// The target's chunk store: s3://BUCKET[/PREFIX] (or `embedded`, with --data-dir).
    #[arg(long, env = "STRATA_CHUNKS")]
    chunks: String,
    #[command(flatten)]
    s3: S3Args,
    /// The target's own data directory, when its metadata or chunks are embedded.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Blocks copied at once.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
}

/// `strata serve`'s flags. None has a clap default: an unset flag leaves the config
/// file's key, or the built-in default, in force.
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:9555; config: listen].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Seconds between background garbage collections, 0: only `strata gc`
    /// [default: 900; config: gc_interval_secs].
    #[arg(long)]
    gc_interval_secs: Option<u64>,
    /// Directory holding all data, created if missing [default: ./strata-data; config:
    /// data_dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// TOML file with settings, accounts and limits (see packaging/strata.toml).
    #[arg(long, env = "STRATA_CONFIG")]
    config: Option<PathBuf>,
    /// Also serve /metrics, without authentication, on this address [config:
    /// metrics_listen]. Without it, /metrics on --listen requires a root key's signature.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Log lines as text or as JSON objects, on stderr [default: text; config: log_format].
    #[arg(long)]
    log_format: Option<LogFormat>,
    /// The root account's id [default: 000000000000; config: root_account_id].
    #[arg(long, env = "STRATA_ROOT_ACCOUNT_ID")]
    root_account_id: Option<String>,
    /// The root account's access key id, generated on first start when unset [config:
    /// root_access_key_id].
    #[arg(
        long,
        env = "STRATA_ROOT_ACCESS_KEY_ID",
        requires = "root_secret_access_key"
    )]
    root_access_key_id: Option<String>,
    /// The root account's secret access key [config: root_secret_access_key].
    #[arg(
        long,
        env = "STRATA_ROOT_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "root_access_key_id"
    )]
    root_secret_access_key: Option<String>,
    /// Where snapshot metadata lives: `embedded` (metadata.redb in the data directory) or
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DB, shared by several nodes.
    #[arg(long, env = "STRATA_METADATA", hide_env_values = true)]
    metadata: Option<String>,
    /// Where chunk bytes live: `embedded` (chunks/ in the data directory) or
    /// s3://BUCKET[/PREFIX], a bucket that exists, shared by several nodes [config: chunks].
    #[arg(long, env = "STRATA_CHUNKS")]
    chunks: Option<String>,
    #[command(flatten)]
    s3: S3Args,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); reloaded on SIGHUP
    /// [config: tls_cert].
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert, readable by the server's user only [config:
    /// tls_key].
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// File holding the master key (64 hex digits or base64 of 32 bytes), private to the
    /// server's user, that wraps the encryption keys. Else STRATA_MASTER_KEY, else an
    /// embedded store's generated DATA_DIR/master.key [config: master_key_file].
    #[arg(long, env = "STRATA_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Encrypt every new snapshot at rest, asked or not [config: encrypt_by_default].
    #[arg(long)]
    encrypt_by_default: bool,
    /// The region named in encryption key ARNs [default: us-east-1; config: region].
    #[arg(long, env = "STRATA_REGION")]
    region: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        command => {
            // Client commands and `bench` print results on stdout; logs go to stderr,
            // warnings only.
            let client = matches!(command, Command::Client(_) | Command::Bench(_));
            let filter = if client {
                "warn,aws_config=error"
            } else {
                "info"
            };
            logging::init(filter, LogFormat::Text);
            run(command)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// `strata serve`: the config file first (it may choose the log format), then logging,
/// then the settings and the server.
fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let input = ServeInput::load(args)?;
    logging::init("info", input.log_format());
    let settings = input.settings()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(settings))
}

/// Print the error chain on one line, as the client commands do; exit 2 for a usage or
/// configuration mistake, else 1.
fn fail(error: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("error: {error:#}");
    let usage = error.downcast_ref::<admin::UsageError>().is_some()
        || error.downcast_ref::<UsageError>().is_some();
    std::process::ExitCode::from(if usage { 2 } else { 1 })
}

/// A mistake in the flags found before anything was done (exit code 2, as clap's own).
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn run(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match command {
        Command::Serve(args) => run_serve(args),
        Command::Bench(args) => {
            strata_bench::run(&args.into_options()?, &mut |line| println!("{line}")).map(drop)
        }
        Command::Client(strata_cli::ClientCommand::Verify(args)) if args.all => {
            // Exit 3 when damage was found, as `verify` does for a difference.
            let clean = runtime.block_on(admin::scrub(&args))?;
            if !clean {
                drop(runtime);
                std::process::exit(3);
            }
            Ok(())
        }
        Command::Client(command) => {
            // The client has its own exit codes (see `strata_cli`).
            let code = runtime.block_on(strata_cli::run(command));
            drop(runtime);
            std::process::exit(code)
        }
        Command::Migrate(args) => runtime.block_on(run_migrate(args)),
        Command::Snapshots { command } => runtime.block_on(admin::snapshots(command)),
        Command::Keys { command } => runtime.block_on(admin::keys(command)),
        Command::Store { command } => runtime.block_on(admin::store(command)),
        Command::Gc {
            dry_run,
            json,
            admin,
        } => runtime.block_on(admin::gc(&admin, dry_run, json)),
    }
}

/// `strata serve`'s flags with its config file, read but not yet applied.
#[derive(Debug)]
struct ServeInput {
    args: ServeArgs,
    file: ConfigFile,
}

impl ServeInput {
    /// Read the config file, if any. A file that cannot be read or parsed is a
    /// configuration mistake (exit 2).
    fn load(args: ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => ConfigFile::load(path).map_err(|e| UsageError(format!("{e:#}")))?,
            None => ConfigFile::default(),
        };
        Ok(Self { args, file })
    }

    fn log_format(&self) -> LogFormat {
        self.args
            .log_format
            .or(self.file.log_format)
            .unwrap_or_default()
    }

    /// The settings: the defaults, then the config file, then the flags (and their
    /// environment variables), each overriding the one before.
    fn settings(&self) -> anyhow::Result<Settings> {
        let args = &self.args;
        let mut settings =
            Settings::from_config_file(&self.file).map_err(|e| UsageError(format!("{e:#}")))?;
        if let Some(listen) = args.listen {
            settings.listen = listen;
        }
        if let Some(data_dir) = &args.data_dir {
            settings.data_dir = data_dir.clone();
        }
        if let Some(metrics_listen) = args.metrics_listen {
            settings.metrics_listen = Some(metrics_listen);
        }
        if let Some(secs) = args.gc_interval_secs {
            settings.gc_interval = (secs > 0).then(|| std::time::Duration::from_secs(secs));
        }
        if let Some(id) = &args.root_account_id {
            settings.root_account =
                AccountId::parse(id).map_err(|e| UsageError(format!("--root-account-id: {e}")))?;
        }
        if let Some(key) = args
            .root_access_key_id
            .clone()
            .zip(args.root_secret_access_key.clone())
        {
            settings.root_key_from_env = Some(key);
        }
        if let Some(metadata) = &args.metadata {
            settings.metadata = strata_server::stores::MetadataBackend::parse(metadata)
                .map_err(|e| UsageError(format!("--metadata: {e:#}")))?;
        }
        let chunks = &mut settings.chunks;
        for (setting, flag) in [
            (&mut chunks.chunks, &args.chunks),
            (&mut chunks.s3_endpoint, &args.s3.s3_endpoint),
            (&mut chunks.s3_region, &args.s3.s3_region),
            (&mut chunks.s3_access_key_id, &args.s3.s3_access_key_id),
            (
                &mut chunks.s3_secret_access_key,
                &args.s3.s3_secret_access_key,
            ),
        ] {
            if flag.is_some() {
                setting.clone_from(flag);
            }
        }
        // A mistake in the chunk settings is a usage error, found before anything starts.
        settings
            .chunks
            .resolve()
            .map_err(|e| UsageError(format!("{e:#}")))?;
        if let Some((cert, key)) = args.tls_cert.clone().zip(args.tls_key.clone()) {
            settings.tls = Some(strata_server::tls::TlsFiles { cert, key });
        }
        if let Some(path) = &args.master_key_file {
            settings.encryption.master_key_file = Some(path.clone());
        }
        if let Ok(text) = std::env::var("STRATA_MASTER_KEY") {
            settings.encryption.master_key = Some(text);
        }
        if args.encrypt_by_default {
            settings.encryption.by_default = true;
        }
        if let Some(region) = &args.region {
            settings.encryption.region = Some(region.clone());
        }
        settings.config_file.clone_from(&args.config);
        check_serve_settings(&settings)?;
        Ok(settings)
    }
}

/// Refuse what would fail later, before the server creates its data directory or keys: a
/// data directory that is a file, and a listen address already in use. (The address is
/// bound once here and released; the server binds it again a moment later. Passing the
/// bound listener on would need a `strata-server` entry point that takes one.)
fn check_serve_settings(settings: &Settings) -> anyhow::Result<()> {
    let data_dir = &settings.data_dir;
    if data_dir.exists() && !data_dir.is_dir() {
        return Err(UsageError(format!(
            "--data-dir {} is a file, not a directory; give a directory (it is created if missing)",
            data_dir.display()
        ))
        .into());
    }
    let addresses = std::iter::once(("--listen", settings.listen)).chain(
        settings
            .metrics_listen
            .map(|addr| ("--metrics-listen", addr)),
    );
    // Bound together, so the two cannot be the same address either.
    let mut bound = Vec::new();
    for (flag, addr) in addresses {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => bound.push(listener),
            Err(error) => {
                let hint = if error.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "another process listens there (another strata serve?); choose another {flag} address"
                    )
                } else {
                    format!("check the {flag} address")
                };
                return Err(UsageError(format!("cannot listen on {addr}: {error}; {hint}")).into());
            }
        }
    }
    Ok(())
}

/// `strata migrate`: one line per snapshot as it is done, then a summary.
async fn run_migrate(args: MigrateArgs) -> anyhow::Result<()> {
    use strata_server::migrate::{MigrateSettings, Outcome, SecretOutcome, migrate};
    use strata_server::stores::{ChunkOptions, MetadataBackend};

    let usage = |flag: &str, e: anyhow::Error| UsageError(format!("{flag}: {e:#}"));
    let metadata = MetadataBackend::parse(&args.metadata).map_err(|e| usage("--metadata", e))?;
    let chunks = ChunkOptions {
        chunks: Some(args.chunks.clone()),
        s3_endpoint: args.s3.s3_endpoint.clone(),
        s3_region: args.s3.s3_region.clone(),
        s3_access_key_id: args.s3.s3_access_key_id.clone(),
        s3_secret_access_key: args.s3.s3_secret_access_key.clone(),
    }
    .resolve()
    .map_err(|e| UsageError(format!("{e:#}")))?;
    if !args.from_data_dir.is_dir() {
        return Err(UsageError(format!(
            "--from-data-dir {} is not a directory",
            args.from_data_dir.display()
        ))
        .into());
    }
    let settings = MigrateSettings {
        from_data_dir: args.from_data_dir.clone(),
        metadata,
        chunks,
        data_dir: args.data_dir.clone(),
        concurrency: usize::from(args.concurrency),
    };
    println!(
        "Copying {} into {} and {}",
        settings.from_data_dir.display(),
        settings.metadata.describe(),
        settings.chunks.describe()
    );
    let started = std::time::Instant::now();
    let migrated = migrate(&settings, |snapshot| {
        let what = match &snapshot.outcome {
            Outcome::Copied if snapshot.blocks == 0 => "copied (no blocks)".to_owned(),
            Outcome::Copied => format!(
                "copied: {}, {} stored ({}), {} already stored, {} zero",
                count(snapshot.blocks, "block"),
                count(snapshot.chunks_stored, "chunk"),
                mib(snapshot.bytes_stored),
                snapshot.chunks_present,
                snapshot.zero_blocks
            ),
            Outcome::AlreadyPresent => "already in the target".to_owned(),
            Outcome::Skipped(why) => format!("skipped: {why}"),
            Outcome::Failed(why) => format!("FAILED: {why}"),
        };
        println!("{}  {:<9}  {what}", snapshot.id, snapshot.status.as_str());
    })
    .await?;
    let report = &migrated.report;
    let (chunks_stored, bytes_stored) = report.stored();
    println!(
        "{}: {} copied, {} already in the target, {} skipped, {} failed; \
         {} stored ({}), each read back verified; in {:.1} s",
        count(report.snapshots.len() as u64, "snapshot"),
        report.count(|o| matches!(o, Outcome::Copied)),
        report.count(|o| matches!(o, Outcome::AlreadyPresent)),
        report.count(|o| matches!(o, Outcome::Skipped(_))),
        report.count(|o| matches!(o, Outcome::Failed(_))),
        count(chunks_stored, "chunk"),
        mib(bytes_stored),
        started.elapsed().as_secs_f64()
    );
    for (name, outcome) in [
        ("token key", migrated.token_key),
        ("root credentials", migrated.root_credentials),
    ] {
        let line = match outcome {
            SecretOutcome::Copied => "the target uses the data directory's",
            SecretOutcome::TargetKeepsItsOwn => {
                "the target keeps its own (the data directory's do not work there)"
            }
            SecretOutcome::Absent => "none in the data directory",
        };
        println!("{name}: {line}");
    }
    anyhow::ensure!(
        !report.failed(),
        "some snapshots were not copied (see above); run the same command again to resume"
    );
    Ok(())
}

/// "1 block", "2 blocks".
fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
