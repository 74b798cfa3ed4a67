//! What this build is: the version and the git commit it was built from (see `build.rs`).

/// The release version (the workspace's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit (12 hex digits), or `unknown` for a build without git.
pub const COMMIT: &str = env!("STRATA_GIT_COMMIT");

/// What `strata --version` prints after the name: `0.1.0 (commit 0123456789ab)`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("STRATA_GIT_COMMIT"),
    ")"
);
