//! The JSON request body (StartSnapshot) from arbitrary bytes, and the error body built
//! from arbitrary text, which must always be JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wire::types::StartSnapshotRequest;
use strata_wire::{Reason, WireError};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<StartSnapshotRequest>(data);
    let message = String::from_utf8_lossy(data);
    let body = WireError::validation(Reason::InvalidParameterValue, message).body();
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
});
