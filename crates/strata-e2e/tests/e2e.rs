//! End-to-end tests: a real Strata server on a free port and a temporary data directory,
//! driven by the strata client library, `qemu-img`, the `strata` binary, `coldsnap` and a
//! loop device (as root). A test whose tool is missing fails and names it (`bash ci/test`
//! installs everything).

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
