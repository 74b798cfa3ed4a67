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
    ///
    /// Example: strata serve --listen 127.0.0.1:9555 --data-dir ./strata-data
    Serve(ServeArgs),
    /// Measure throughput and latency against a sink, the disk and optionally moto.
    ///
    /// Example: strata bench --repeat 3 (or --smoke for a few seconds of everything)
    Bench(strata_bench::BenchArgs),
    /// Client commands (upload, download, diff, verify, nbd), in strata-cli.
    #[command(flatten)]
    Client(strata_cli::ClientCommand),
    /// List, show or delete snapshots on a running server.
    ///
    /// Examples: strata snapshots list; strata snapshots show snap-0123…; strata snapshots delete snap-0123…
    Snapshots {
        #[command(subcommand)]
        command: admin::SnapshotsCommand,
        #[command(flatten)]
        connection: admin::Connection,
    },
    /// Collect garbage on a running server now (it also runs in the background).
    ///
    /// Example: strata gc --dry-run
    Gc {
        /// Only print what would be freed.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        connection: admin::Connection,
    },
}

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
            // One line with the whole cause chain; no backtrace for users.
            eprintln!("strata: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

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
        Command::Snapshots {
            command,
            connection,
        } => runtime.block_on(admin::snapshots(&connection, command)),
        Command::Gc {
            dry_run,
            connection,
        } => runtime.block_on(admin::gc(&connection, dry_run)),
    }
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let mut settings = Settings::new(args.data_dir)?;
    settings.listen = args.listen;
    settings.gc_interval =
        (args.gc_interval_secs > 0).then(|| std::time::Duration::from_secs(args.gc_interval_secs));
    settings.root_account = AccountId::parse(&args.root_account_id).map_err(anyhow::Error::msg)?;
    settings.root_key_from_env = args.root_access_key_id.zip(args.root_secret_access_key);
    if let Some(path) = args.config {
        settings = settings.with_config_file(&ConfigFile::load(&path)?)?;
    }
    Ok(settings)
}
