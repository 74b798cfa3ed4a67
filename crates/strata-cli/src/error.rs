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

/// The SDK client could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No region in flags, environment or profile, and no endpoint to imply one.
    #[error("no AWS region is configured: pass --region or set AWS_REGION")]
    NoRegion,
    /// The credential chain found nothing usable.
    #[error(
        "no usable AWS credentials ({0}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass --profile"
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
