//! Strata's client: moves disk images in and out of snapshots through the EBS direct APIs.
//!
//! Everything goes through the official `aws-sdk-ebs` client, so the same code works against
//! a Strata server and against AWS, and keeps proving that Strata speaks the real wire
//! protocol. The crate knows nothing of the server (its only Strata dependency is the
//! vocabulary crate `strata-types`).
//!
//! # Pieces
//! | module | owns |
//! |---|---|
//! | [`connect`] | the one rule for endpoint, region and credentials; building the SDK client |
//! | [`api`] | [`SnapshotClient`]: one method per EBS operation, in domain types, with retries, per-attempt timeouts and block verification |
//! | [`retry`] | [`RetryPolicy`]: attempts, jittered backoff, what counts as transient |
//! | [`image`] | raw images and block devices: block reads with hole detection, sparse writes |
//! | [`manifest`] | `IMAGE.strata-manifest`: the content digest of every block of a snapshot |
//! | [`upload`], [`download`], [`diff`], [`verify`] | the four transfer operations |
//! | [`nbd`] | a read-only NBD export of a snapshot, fetched lazily, with block status |
//! | [`sync`] | [`Syncer`]: copy a snapshot, or a lineage incrementally, to another endpoint |
//! | [`cli`] | the `strata upload/download/diff/verify/nbd/wait` front end: flags, progress bars, exit codes |
//!
//! The operations report progress through a [`progress::Reporter`] callback and return typed
//! errors; only [`cli`] prints.
//!
//! # Rules the operations keep
//! - Every request has a deadline and a bounded number of attempts, so nothing hangs. A
//!   malformed or unresolvable endpoint is refused before any request, and a server that
//!   refuses the first connection fails at once; an outage after the server has answered is
//!   retried (a clear error after about a minute).
//! - Every block read from a snapshot is checked against its SHA-256 before it is used.
//! - An upload skips an all-zero block only where the snapshot would read zeros anyway (no
//!   parent, or the parent holds zeros there); see [`upload`].
//! - A download never leaves a half-written file under the final name: it writes
//!   `OUTPUT.strata-partial`, records finished blocks in `OUTPUT.strata-resume`, and renames
//!   at the end; see [`download`].
//! - An interrupted upload resumes: acknowledged blocks are recorded in
//!   `IMAGE.strata-upload`, and the next run continues the same pending snapshot; see
//!   [`upload`].

pub mod api;
pub mod cli;
pub mod connect;
pub mod diff;
pub mod download;
pub mod error;
pub mod image;
pub mod manifest;
pub mod nbd;
pub mod progress;
pub mod retry;
pub mod sync;
pub mod upload;
pub mod verify;

pub use api::SnapshotClient;
pub use cli::{ClientCommand, run};
pub use diff::{DiffReport, Differ};
pub use download::{DownloadOptions, DownloadSummary, Downloader};
pub use error::{
    ApiError, ConnectError, DownloadError, ImageError, ManifestError, NbdError, SyncError,
    UploadError, VerifyError,
};
pub use manifest::Manifest;
pub use progress::{ProgressEvent, Reporter, StopSignal};
pub use retry::RetryPolicy;
pub use sync::{SyncOptions, SyncSummary, Syncer};
pub use upload::{UploadOptions, UploadSummary, Uploader};
pub use verify::{Verifier, VerifyOptions, VerifyReport};
