//! The storage-port test kit: what every adapter of `strata_core::ports` is tested with.
//!
//! - [`memory`]: in-memory adapters of both ports, so the service's behaviour is tested in
//!   `strata-core` itself, in milliseconds and without files;
//! - [`conformance`]: the conformance suite, one case per sentence of the ports' rustdoc,
//!   instantiated for an adapter by [`metadata_store_conformance!`] and
//!   [`chunk_store_conformance!`] (each case becomes one `#[tokio::test]`);
//! - [`faults`]: wrappers around any adapter that fail the Nth call of an operation, fail
//!   *after* the inner call took effect, count calls, or hold a call at a gate until the
//!   test opens it. Gates are the interleaving harness: a test parks one operation at a
//!   chosen point, runs others to completion, then lets it go, so a race happens in exactly
//!   the order the test names, every run;
//! - [`races`]: the races found in the ports, as scenarios driven through those gates,
//!   instantiated for a pair of adapters by [`race_scenarios!`];
//! - [`clock`]: a clock the test moves by hand.
//!
//! A dev-dependency only: nothing here is fit for production (everything is held in memory
//! behind one lock).

pub mod clock;
pub mod conformance;
pub mod faults;
pub mod memory;
pub mod races;

pub use clock::ManualClock;
pub use faults::{Faults, FaultyChunks, FaultyMetadata, Gate, Op};
pub use memory::{MemoryChunkStore, MemoryMetadataStore};
