//! The flags of the client subcommands, and their parsers. Every subcommand that talks to a
//! server flattens [`ConnectionArgs`], so endpoint, region and credentials are spelled and
//! resolved the same way everywhere (the rule is in [`crate::connect`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::connect::{ConnectOptions, DEFAULT_DATA_DIR};
use crate::upload::DEFAULT_CONCURRENCY;

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
    /// Read every block of a snapshot and check its checksum, optionally against an image;
    /// with --all, scrub every chunk and node the server stores.
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Serve a snapshot as a read-only NBD export, fetching blocks on demand.
    #[command(after_help = NBD_EXAMPLES)]
    Nbd(NbdArgs),
    /// Wait until a snapshot is completed (readable), as after `upload --no-wait`.
    #[command(after_help = WAIT_EXAMPLES)]
    Wait(WaitArgs),
    /// Copy a snapshot to another EBS direct endpoint (verified, resumable); prints the copy's id.
    #[command(after_help = COPY_EXAMPLES)]
    Copy(CopyArgs),
    /// Copy a lineage to another endpoint incrementally, recreating the parent chain there.
    #[command(after_help = SYNC_EXAMPLES)]
    Sync(SyncArgs),
}

/// The paragraph every subcommand's help ends with: the connection rule and the exit codes.
#[macro_export]
#[doc(hidden)]
macro_rules! connection_help {
    () => {
        "Connection (the same for every subcommand): the endpoint is --endpoint, else \
STRATA_ENDPOINT, else AWS_ENDPOINT_URL_EBS or AWS_ENDPOINT_URL, else AWS (transfers) or \
http://127.0.0.1:9555 (snapshots, gc). The region is --region, else AWS_REGION or the \
profile's, else us-east-1 with an endpoint. Credentials are AWS_ACCESS_KEY_ID and \
AWS_SECRET_ACCESS_KEY, or --profile/AWS_PROFILE, else (not for AWS) the root keys in \
--data-dir, else the rest of the AWS chain.\n\nExit codes: 0 ok, 1 error, 2 usage or \
configuration error, 3 a difference was found, 4 transient failure outlasted the retries \
(run again), 130 interrupted."
    };
}

const UPLOAD_EXAMPLES: &str = concat!("Examples:
  strata upload disk.img --endpoint http://127.0.0.1:9555
  strata upload disk.img --parent snap-0123456789abcdef0        # incremental, via disk.img.strata-manifest
  strata upload new.img --parent snap-0123456789abcdef0 --base old.img
  strata upload /dev/sdb --volume-size 100 --tag team=storage --description 'nightly'
  strata upload disk.img --json | jq -r .snapshot
  strata upload disk.img --kms-key-id \"$(strata keys create)\"   # encrypted at rest

Zero blocks are skipped only where the snapshot reads zeros anyway. A manifest of block
digests is written to IMAGE.strata-manifest (for a later incremental upload) and kept in
the manifest cache (STRATA_CACHE_DIR, default ~/.cache/strata), so a download finds the
image's length. Acknowledged blocks are recorded in IMAGE.strata-upload until the snapshot
is complete: after an interruption, run the same command again to resume (--restart starts
a new snapshot instead).", "\n\n", connection_help!());

const DOWNLOAD_EXAMPLES: &str = concat!(
    "Examples:
  strata download snap-0123456789abcdef0 disk.img
  strata download snap-0123456789abcdef0 disk.img --manifest original.img.strata-manifest
  strata download snap-0123456789abcdef0 /dev/sdc --force

The output is written to OUTPUT.strata-partial and renamed when complete; after an
interruption (Ctrl-C saves what is done), run the same command again to resume. A snapshot
does not record the length of the original image: it comes from --size, else --manifest,
else the snapshot's manifest next to the output or in the manifest cache, else the volume
size. A --size that would cut off data is refused unless --truncate is given.",
    "\n\n",
    connection_help!()
);

const DIFF_EXAMPLES: &str = concat!(
    "Examples:
  strata diff snap-0123456789abcdef0 snap-0fedcba9876543210
  strata diff snap-0123456789abcdef0 snap-0fedcba9876543210 --json | jq .changed_bytes

Like diff(1), the exit code is 0 when the snapshots read the same and 3 when they differ.",
    "\n\n",
    connection_help!()
);

const VERIFY_EXAMPLES: &str = concat!(
    "Examples:
  strata verify snap-0123456789abcdef0
  strata verify snap-0123456789abcdef0 disk.img
  strata verify snap-0123456789abcdef0 disk.img --json | jq .ok
  strata verify --all --rate-mib 200          # scrub the whole server (root keys)",
    "\n\n",
    connection_help!()
);

const NBD_EXAMPLES: &str = concat!(
    "Examples:
  strata nbd snap-0123456789abcdef0 --listen 127.0.0.1:10809
  qemu-img convert -f raw -O qcow2 nbd://127.0.0.1:10809 restored.qcow2
  nbd-client 127.0.0.1 10809 /dev/nbd0 -readonly && mount -o ro /dev/nbd0p1 /mnt

The export size comes from --size, else the snapshot's manifest (--manifest, or found in
the manifest cache), else the volume size. Block status (NBD_CMD_BLOCK_STATUS) reports
the blocks the snapshot does not have as holes (base:allocation), so nbdcopy, nbdinfo
--map and qemu-img map/convert skip them; with --changed-since BASE it also reports the
blocks changed since BASE as dirty in qemu:dirty-bitmap:BASE.
  strata nbd snap-0fedcba9876543210 --changed-since snap-0123456789abcdef0 --listen 127.0.0.1:0
  nbdinfo --map=qemu:dirty-bitmap:snap-0123456789abcdef0 nbd://127.0.0.1:10809",
    "\n\n",
    connection_help!()
);

const COPY_EXAMPLES: &str = concat!(
    "Examples:
  strata copy snap-0123456789abcdef0 --endpoint https://ebs.eu-west-1.amazonaws.com --to-endpoint http://dr:9555 --to-data-dir /var/lib/strata
  strata copy snap-0123456789abcdef0 --to-endpoint http://dr:9555 --to-profile dr --json

The source is reached by the usual connection rule (below); the target by the --to-*
flags: --to-endpoint (else AWS), --to-region, --to-profile, and --to-data-dir, whose root
keys are used before the environment's. Each block is verified against the source's
checksum and sent with its own. After an interruption, run the same command again: the
state file (--state, default in the manifest cache) records what was written.",
    "\n\n",
    connection_help!()
);

const SYNC_EXAMPLES: &str = concat!(
    "Examples:
  strata sync snap-A snap-B snap-C --to-endpoint http://dr:9555 --to-data-dir /var/lib/strata
  strata sync snap-A snap-B snap-C snap-D --to-endpoint http://dr:9555   # later: copies only snap-D

Give the lineage oldest first (each snapshot an ancestor of the next: the EBS APIs do not
say which snapshot is whose parent). The first is copied whole, each next one as a child
of the previous copy holding only the blocks ListChangedBlocks reports, so the target's
own ListChangedBlocks gives the same answer. Prints SOURCE TARGET per snapshot. Running
the same sync again (or a longer chain with the same first snapshot) resumes where it
stopped and copies only what is missing.",
    "\n\n",
    connection_help!()
);

const WAIT_EXAMPLES: &str = concat!(
    "Examples:
  strata upload disk.img --no-wait && strata wait snap-0123456789abcdef0 --timeout 600",
    "\n\n",
    connection_help!()
);

/// Where the server is and who we are: the same flags on every subcommand that talks to a
/// server (see [`crate::connect`] for how each is resolved).
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Endpoint URL, e.g. http://127.0.0.1:9555 (else STRATA_ENDPOINT, AWS_ENDPOINT_URL_EBS, AWS_ENDPOINT_URL).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// AWS region (else AWS_REGION or the profile's; us-east-1 with an endpoint).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile from ~/.aws/config and ~/.aws/credentials.
    #[arg(long)]
    pub profile: Option<String>,
    /// A Strata data directory whose root keys are used when no other credentials are set.
    #[arg(long, value_name = "DIR", env = "STRATA_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl ConnectionArgs {
    /// The options [`crate::connect::resolve`] takes; `default_endpoint` applies when neither
    /// the flag nor the environment names one.
    pub fn options(&self, default_endpoint: Option<&str>) -> ConnectOptions {
        ConnectOptions {
            endpoint: crate::connect::resolve_endpoint(self.endpoint.as_deref())
                .or_else(|| default_endpoint.map(str::to_owned)),
            profile: self.profile.clone(),
            region: self.region.clone(),
            connect_timeout: None,
            data_dir: Some(self.data_dir.clone()),
            prefer_data_dir: false,
        }
    }
}

/// Flags of the transfer subcommands: retries and output.
#[derive(Debug, Clone, Args)]
pub struct TransferArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Deadline of one request attempt, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Attempts per request before giving up (transient failures only).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
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
    /// Do not write a manifest (nor keep one in the cache).
    #[arg(long)]
    pub no_manifest: bool,
    /// Volume size in GiB (default: the image size rounded up).
    #[arg(long, value_name = "GiB", value_parser = clap::value_parser!(i64).range(1..=65536))]
    pub volume_size: Option<i64>,
    /// Snapshot description (default: the image's file name).
    #[arg(long)]
    pub description: Option<String>,
    /// A tag KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Blocks in flight at once (1-1024).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_name = "N", value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// Minutes without progress after which the service abandons the snapshot.
    #[arg(long, value_name = "MINUTES", value_parser = clap::value_parser!(u32).range(1..))]
    pub snapshot_timeout: Option<u32>,
    /// Do not wait for a snapshot the service is still sealing.
    #[arg(long)]
    pub no_wait: bool,
    /// Start a new snapshot even if IMAGE.strata-upload records an interrupted upload.
    #[arg(long)]
    pub restart: bool,
    /// Encrypt the snapshot (the account's default key unless --kms-key-id); zero blocks
    /// are then sent too, since an encrypted snapshot's unwritten blocks do not read as
    /// zeros on AWS. Not with --parent: a child is encrypted like its parent.
    #[arg(long, conflicts_with = "parent")]
    pub encrypted: bool,
    /// Encrypt under this KMS key ARN (implies --encrypted; with --parent, it must be the
    /// parent's key on Strata).
    #[arg(long, value_name = "ARN")]
    pub kms_key_id: Option<String>,
    /// Print a JSON summary on stdout instead of the snapshot id.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// `strata download`.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// The snapshot.
    pub snapshot: String,
    /// Output file or block device.
    pub output: PathBuf,
    /// Output length, e.g. 268435456, 256MiB, 10G, 1MB (default: from the manifest, else the volume size).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Allow a --size that cuts off data the snapshot has.
    #[arg(long, requires = "size")]
    pub truncate: bool,
    /// A manifest of the snapshot (e.g. IMAGE.strata-manifest from the upload): gives the
    /// length and every block is checked against it (default: the snapshot's manifest next
    /// to the output or in the manifest cache, when there is one).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Overwrite an existing output (required for a block device).
    #[arg(long)]
    pub force: bool,
    /// Do not write OUTPUT.strata-manifest.
    #[arg(long)]
    pub no_manifest: bool,
    /// Blocks in flight at once (1-1024).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_name = "N", value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
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
    pub transfer: TransferArgs,
}

/// `strata verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The snapshot.
    #[arg(required_unless_present = "all")]
    pub snapshot: Option<String>,
    /// An image the snapshot should equal.
    pub image: Option<PathBuf>,
    /// Scrub the whole server instead (root keys): read every stored chunk and block-map
    /// node back, check it against its digest, report what is damaged or missing, and
    /// quarantine it so that the next upload of that content repairs it.
    #[arg(long, conflicts_with_all = ["snapshot", "image"])]
    pub all: bool,
    /// With --all: MiB per second the scrub reads at most (0: unpaced) [default: the
    /// server's scrub_rate_mib].
    #[arg(long, value_name = "MiB", requires = "all")]
    pub rate_mib: Option<u64>,
    /// Blocks in flight at once (1-1024).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_name = "N", value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// `strata nbd`.
#[derive(Debug, Args)]
pub struct NbdArgs {
    /// The snapshot.
    pub snapshot: String,
    /// Address to listen on (port 0: any free port; the URL is printed).
    #[arg(long, default_value = "127.0.0.1:10809")]
    pub listen: SocketAddr,
    /// Export size (default: from the manifest, else the volume size).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub size: Option<u64>,
    /// A manifest of the snapshot, for the export size (default: the cached one, if any).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Also report the blocks changed since this earlier snapshot of the lineage, as the
    /// metadata context qemu:dirty-bitmap:BASE_SNAP (for incremental-backup readers).
    #[arg(long, value_name = "BASE_SNAP")]
    pub changed_since: Option<String>,
    /// Memory for cached blocks, in MiB.
    #[arg(long, default_value_t = 64, value_name = "MiB", value_parser = clap::value_parser!(u64).range(1..))]
    pub cache_mib: u64,
    /// Blocks (512 KiB) fetched ahead of a sequential reader.
    #[arg(long, default_value_t = 8, value_name = "BLOCKS")]
    pub readahead: u32,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// `strata wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The snapshot.
    pub snapshot: String,
    /// Give up after this many seconds (exit 4).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// Where a copy goes: the target's connection flags.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// The target's endpoint URL (default: AWS's regional endpoint).
    #[arg(long, value_name = "URL")]
    pub to_endpoint: Option<String>,
    /// The target's region (default: as for the source).
    #[arg(long, value_name = "REGION")]
    pub to_region: Option<String>,
    /// The target's profile from ~/.aws/config and ~/.aws/credentials.
    #[arg(long, value_name = "PROFILE")]
    pub to_profile: Option<String>,
    /// A Strata data directory whose root keys sign the target's requests.
    #[arg(long, value_name = "DIR")]
    pub to_data_dir: Option<PathBuf>,
    /// Where the progress of the copy is recorded (default: in the manifest cache).
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// Blocks in flight at once (1-1024).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY, value_name = "N", value_parser = parse_concurrency)]
    pub concurrency: usize,
    /// A tag KEY=VALUE for every copy (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    pub json: bool,
}

impl TargetArgs {
    /// The target's connection options.
    pub fn options(&self, source_region: Option<&str>) -> ConnectOptions {
        ConnectOptions {
            endpoint: self.to_endpoint.clone(),
            profile: self.to_profile.clone(),
            region: self
                .to_region
                .clone()
                .or_else(|| source_region.map(str::to_owned)),
            connect_timeout: None,
            data_dir: self.to_data_dir.clone(),
            prefer_data_dir: self.to_data_dir.is_some(),
        }
    }
}

/// `strata copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The snapshot to copy.
    pub snapshot: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

/// `strata sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The lineage, oldest first.
    #[arg(required = true, num_args = 1..)]
    pub snapshots: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub transfer: TransferArgs,
}

pub(crate) fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got '{text}'")),
    }
}

fn parse_concurrency(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("'{text}' is not a number from 1 to 1024")),
    }
}

/// Bytes with an optional suffix: binary `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (powers
/// of 1024), decimal `kB`/`KB`, `MB`, `GB`, `TB` (powers of 1000, as dd and disk vendors
/// use them).
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 4096, 256MiB, 10G, 1MB)"))?;
    let factor: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "tb" => 1000 * 1000 * 1000 * 1000,
        other => {
            return Err(format!(
                "unknown size suffix '{other}' (use K, M, G, T, their -iB forms, or KB, MB, GB, TB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
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
    fn out_of_range_numbers_are_usage_errors() {
        for args in [
            &["strata", "upload", "d.img", "--concurrency", "0"][..],
            &["strata", "upload", "d.img", "--volume-size", "0"],
            &[
                "strata",
                "download",
                "snap-01",
                "o",
                "--concurrency",
                "5000",
            ],
            &["strata", "verify", "snap-01", "--max-attempts", "0"],
        ] {
            let error = Cli::try_parse_from(args).expect_err("refused");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
        assert!(Cli::try_parse_from(["strata", "upload", "d.img", "--concurrency", "1"]).is_ok());
    }

    #[test]
    fn the_commands_parse() {
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
        assert_eq!(
            args.transfer.connection.endpoint.as_deref(),
            Some("http://x")
        );
        assert_eq!(args.tags, vec![("a".to_owned(), "b".to_owned())]);
        assert!(
            Cli::try_parse_from(["strata", "upload", "disk.img", "--base", "old.img"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["strata", "download", "snap-01", "out", "--size", "1MB"]).is_ok()
        );
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
