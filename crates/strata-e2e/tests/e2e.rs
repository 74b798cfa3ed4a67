//! End-to-end tests: a real Strata server on a free port and a temporary data directory,
//! driven by the strata client library (and by `qemu-img`, the `strata` binary and
//! `coldsnap` when they are available, and a loop device when run as root; those tests
//! print "skipped" otherwise, visible with `--nocapture`).

#[path = "shared/nodes.rs"]
mod nodes;

mod e2e {
    pub mod binary;
    pub mod block_device;
    pub mod cli;
    pub mod cluster;
    pub mod coldsnap;
    pub mod faults;
    pub mod harness;
    pub mod images;
    pub mod incremental;
    pub mod migrate;
    pub mod nbd;
    pub mod round_trip;
    pub mod sync;
}
