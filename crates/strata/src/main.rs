//! `strata`: the Strata server and tools in one binary.

mod admin;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strata_server::config::{ConfigFile, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_ROOT_ACCOUNT};
use strata_server::{Settings, serve};
use strata_types::AccountId;

/// Strata: a self-hosted implementation of the Amazon EBS direct APIs.
#[derive(Debug, Parser)]
#[command(version, about)]
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

On its first start the server generates the root account's keys, saves them in
DATA_DIR/root-credentials (mode 0600) and prints them once.";

const BENCH_EXAMPLES: &str = "Examples:
  strata bench --repeat 3
  strata bench --smoke            # a few seconds of everything";

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Seconds between background garbage collections (0: only `strata gc`).
    #[arg(long, default_value_t = 900)]
    gc_interval_secs: u64,
    /// Directory holding all data (created if missing).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Optional TOML file declaring more accounts and keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The root account's id.
    #[arg(long, env = "STRATA_ROOT_ACCOUNT_ID", default_value = DEFAULT_ROOT_ACCOUNT)]
    root_account_id: String,
    /// The root account's access key id (generated on first start when unset).
    #[arg(
        long,
        env = "STRATA_ROOT_ACCESS_KEY_ID",
        requires = "root_secret_access_key"
    )]
    root_access_key_id: Option<String>,
    /// The root account's secret access key.
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Client commands and `bench` print results on stdout: logs go to stderr, warnings only.
    let client = matches!(cli.command, Command::Client(_) | Command::Bench(_));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if client {
            "warn,aws_config=error"
        } else {
            "info"
        })
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    if client {
        logs.with_writer(std::io::stderr).init();
    } else {
        logs.init();
    }
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line with the whole cause chain, as the client commands print it.
            eprintln!("error: {error:#}");
            let usage = error.downcast_ref::<admin::UsageError>().is_some()
                || error.downcast_ref::<UsageError>().is_some();
            std::process::ExitCode::from(if usage { 2 } else { 1 })
        }
    }
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

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(settings(args)?)),
        Command::Bench(args) => {
            strata_bench::run(&args.into_options()?, &mut |line| println!("{line}")).map(drop)
        }
        Command::Client(command) => {
            // The client has its own exit codes (see `strata_cli`).
            let code = runtime.block_on(strata_cli::run(command));
            drop(runtime);
            std::process::exit(code)
        }
        Command::Snapshots { command } => runtime.block_on(admin::snapshots(command)),
        Command::Gc {
            dry_run,
            json,
            admin,
        } => runtime.block_on(admin::gc(&admin, dry_run, json)),
    }
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    check_serve_args(&args)?;
    let mut settings = Settings::new(args.data_dir)?;
    settings.listen = args.listen;
    settings.gc_interval =
        (args.gc_interval_secs > 0).then(|| std::time::Duration::from_secs(args.gc_interval_secs));
    settings.root_account = AccountId::parse(&args.root_account_id).map_err(anyhow::Error::msg)?;
    settings.root_key_from_env = args.root_access_key_id.zip(args.root_secret_access_key);
    if let Some(path) = args.config {
        settings = settings.with_config_file(&ConfigFile::load(&path)?)?;
    }
    // The flag over the config file.
    if let Some(metadata) = &args.metadata {
        settings.metadata = strata_server::stores::MetadataBackend::parse(metadata)
            .map_err(|e| UsageError(format!("{e:#}")))?;
    }
    Ok(settings)
}

/// Refuse what would fail later, before the server creates its data directory or keys: a
/// data directory that is a file, and a listen address already in use. (The address is
/// bound once here and released; the server binds it again a moment later. Passing the
/// bound listener on would need a `strata-server` entry point that takes one.)
fn check_serve_args(args: &ServeArgs) -> anyhow::Result<()> {
    if args.data_dir.exists() && !args.data_dir.is_dir() {
        return Err(UsageError(format!(
            "--data-dir {} is a file, not a directory; give a directory (it is created if missing)",
            args.data_dir.display()
        ))
        .into());
    }
    if let Err(error) = std::net::TcpListener::bind(args.listen) {
        let hint = if error.kind() == std::io::ErrorKind::AddrInUse {
            "another process listens there (another strata serve?); choose another --listen address"
        } else {
            "check the --listen address"
        };
        return Err(
            UsageError(format!("cannot listen on {}: {error}; {hint}", args.listen)).into(),
        );
    }
    Ok(())
}
