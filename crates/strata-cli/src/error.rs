//! Error types, one enum per operation family.
//!
//! Rules for this file:
//! - An operation returns only the errors it can raise, so a caller matches on what matters.
//! - Every message says what was being done and to what (call, snapshot, block, path), in one
//!   line, so the CLI can print `error: {err}` and nothing else.
//! - Errors from the remote side carry whether retrying later may help
//!   ([`ApiError::is_retryable`]); the retry loop has already used its attempts by then.
//! - No foreign error is wrapped without context, and nothing here knows about printing.
//! - A cause is either part of the message or exposed through `source()`, never both (so a
//!   printed chain does not repeat itself): causes are part of the message here, and kept in
//!   a public `cause` field for callers that want to inspect them.

use std::path::{Path, PathBuf};

use strata_types::{BlockIndex, SnapshotId};

/// The connection settings are unusable: a configuration error, found before any request.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The endpoint is not an http(s) URL.
    #[error("the endpoint '{endpoint}' is not usable: {hint}")]
    InvalidEndpoint {
        /// As given.
        endpoint: String,
        /// What is wrong and what to write instead.
        hint: String,
    },
    /// The endpoint's host name does not resolve.
    #[error("cannot resolve the endpoint's host '{host}' ({cause}); check the --endpoint URL")]
    UnknownHost {
        /// The host name.
        host: String,
        /// The resolver's answer.
        cause: String,
    },
    /// No region in flags, environment or profile, and no endpoint to imply one.
    #[error(
        "no AWS region is configured: pass --region or set AWS_REGION (or give --endpoint for a Strata server)"
    )]
    NoRegion,
    /// The credential chain found nothing usable.
    #[error(
        "no usable credentials ({0}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, pass --profile, or --data-dir of the Strata server"
    )]
    Credentials(String),
}

/// A call to the EBS direct APIs failed for good (after its retries, when it was retryable).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{call} failed{}: {message}", attempts_suffix(*.attempts))]
pub struct ApiError {
    /// The operation and its subject, e.g. `GetSnapshotBlock (snap-0abc, block 7)`.
    pub call: String,
    /// The service's error code (`ValidationException`, ...), when the service answered.
    pub code: Option<String>,
    /// What went wrong, in one line.
    pub message: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// Whether the last failure was of a transient kind (so a later run may succeed).
    pub retryable: bool,
}

fn attempts_suffix(attempts: u32) -> String {
    if attempts > 1 {
        format!(" after {attempts} attempts")
    } else {
        String::new()
    }
}

impl ApiError {
    /// Whether a later attempt may succeed (network, timeouts, throttling, 5xx).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether the service said the snapshot does not exist (or is not readable yet).
    pub fn is_not_found(&self) -> bool {
        self.code.as_deref() == Some("ResourceNotFoundException")
    }
}

/// Reading or writing a local image, block device or state file failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {cause}", path.display())]
pub struct ImageError {
    /// What was being done, e.g. `read block 7 of`.
    pub action: String,
    /// The file.
    pub path: PathBuf,
    /// The operating system's answer.
    pub cause: std::io::Error,
}

impl ImageError {
    pub(crate) fn new(action: impl Into<String>, path: &Path, cause: std::io::Error) -> Self {
        Self {
            action: action.into(),
            path: path.to_owned(),
            cause,
        }
    }
}

/// A manifest could not be read, parsed or written.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file system refused.
    #[error(transparent)]
    Io(#[from] ImageError),
    /// The content is not a manifest of this version.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// `strata upload` failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The image (or the base image) could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A manifest could not be read or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A call failed before the snapshot existed, or while completing it.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The options contradict each other or the parent.
    #[error("{0}")]
    Invalid(String),
    /// A worker task panicked or was cancelled (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// The upload stopped after the snapshot was started; it stays `pending` (and expires
    /// unless a resumed run completes it).
    #[error("upload to {snapshot} stopped: {cause} ({})", upload_hint(*resumable))]
    Interrupted {
        /// The pending snapshot.
        snapshot: SnapshotId,
        /// Whether acknowledged blocks were recorded, so the next run resumes.
        resumable: bool,
        /// Whether this run itself was resuming an earlier one.
        resumed: bool,
        /// Why.
        cause: Box<UploadError>,
    },
    /// The pending snapshot a resume log names no longer accepts writes (deleted or
    /// expired), and the log recorded blocks: the user decides whether to start over.
    #[error(
        "cannot resume the upload into {snapshot} that {} records ({saved} blocks sent): the snapshot no longer accepts writes, it was deleted or expired ({}); run again with --restart to upload into a new snapshot",
        log.display(),
        lost_cause(cause)
    )]
    ResumeLost {
        /// The snapshot the log names.
        snapshot: SnapshotId,
        /// The resume log.
        log: PathBuf,
        /// Blocks it records.
        saved: u64,
        /// The service's answer.
        cause: Box<UploadError>,
    },
}

/// Why a resume log's snapshot cannot be continued (see [`UploadError::ResumeLost`]).
fn lost_cause(cause: &UploadError) -> String {
    match cause {
        UploadError::Api(api) => format!("{}: {}", api.call, api.message),
        other => other.to_string(),
    }
}

fn upload_hint(resumable: bool) -> &'static str {
    if resumable {
        "run the same command again to resume"
    } else {
        "the snapshot stays pending and expires; run the upload again"
    }
}

/// `strata download` failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// A call to the service failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The output or its state file could not be written.
    #[error(transparent)]
    Output(#[from] ImageError),
    /// A manifest could not be read or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The options cannot be honoured (output exists, size, manifest of another snapshot).
    #[error("{0}")]
    Invalid(String),
    /// A worker task panicked or was cancelled (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// A block's content differs from the expected manifest.
    #[error(
        "block {index} of {snapshot} differs from the manifest (expected {expected}, got {actual})"
    )]
    Mismatch {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The block.
        index: BlockIndex,
        /// Hex digest the manifest gives.
        expected: String,
        /// Hex digest of what the service sent (and verified).
        actual: String,
    },
    /// The output names a directory.
    #[error(
        "{} is a directory; name the file to write, e.g. {}",
        .0.display(),
        .0.join("disk.img").display()
    )]
    OutputIsDirectory(PathBuf),
    /// An explicit size would cut off blocks the snapshot has.
    #[error(
        "--size {size} would cut off data: {snapshot} has blocks up to byte {data_end}; give a larger --size, or --truncate to cut it anyway"
    )]
    Truncates {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The size asked for.
        size: u64,
        /// The end of the snapshot's last block.
        data_end: u64,
    },
    /// Stopped on request ([`crate::progress::StopSignal`]).
    #[error("interrupted")]
    Stopped,
    /// The download stopped; finished blocks are recorded and the next run resumes.
    #[error(
        "download stopped with {saved} of {total} blocks saved: {cause} (run the same command again to resume)"
    )]
    Interrupted {
        /// Blocks recorded as done (including earlier runs).
        saved: u64,
        /// Blocks to fetch in all.
        total: u64,
        /// Why.
        cause: Box<DownloadError>,
    },
}

/// `strata verify` could not finish (a finished check with differences is not an error: see
/// [`crate::VerifyReport`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A call to the service failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The image could not be read.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A worker task panicked or was cancelled (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The NBD export failed.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// Listing the snapshot failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The listener could not be opened.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        cause: std::io::Error,
    },
}

/// `strata copy` / `strata sync` failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A call to the source or the target failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The state file could not be read or written.
    #[error(transparent)]
    State(#[from] ImageError),
    /// The block log could not be read or written.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The options or the state file cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// A worker task panicked or was cancelled (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// Stopped on request ([`crate::progress::StopSignal`]).
    #[error("interrupted")]
    Stopped,
    /// The pending copy an earlier run left is gone (handled inside the syncer, which
    /// starts that copy again).
    #[error("the pending copy an earlier run left no longer exists")]
    LostPending,
    /// Copying one snapshot stopped after its copy was started.
    #[error("copying {snapshot} to {target} stopped: {cause} ({})", sync_hint(*resumable))]
    Interrupted {
        /// The source snapshot.
        snapshot: SnapshotId,
        /// Its pending copy.
        target: SnapshotId,
        /// Whether the written blocks are recorded, so the next run resumes.
        resumable: bool,
        /// Why.
        cause: Box<SyncError>,
    },
}

fn sync_hint(resumable: bool) -> &'static str {
    if resumable {
        "run the same command again to resume"
    } else {
        "the copy stays pending and expires; run the command again"
    }
}
