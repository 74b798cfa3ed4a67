//! The JSON request body (StartSnapshot) from arbitrary bytes, the error body built from
//! arbitrary text, which must always be JSON, and the admin API's answers, which the
//! `strata` client reads: a document that parses serializes to one that parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use strata_wire::admin::{AdminKey, AdminSnapshot, GcSummary, KeyList, ScrubSummary, SnapshotList};
use strata_wire::types::{StartSnapshotRequest, Tag};
use strata_wire::{Reason, WireError};

fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let text = serde_json::to_vec(&value).expect("a parsed document serializes");
        let again: T = serde_json::from_slice(&text).expect("what we write we read");
        assert_eq!(again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<StartSnapshotRequest>(data)
        && let Some(tags) = &request.tags
    {
        // The tags are echoed in StartSnapshot's answer: they write and read back equal.
        let text = serde_json::to_vec(tags).expect("tags serialize");
        let again: Vec<Tag> = serde_json::from_slice(&text).expect("tags read back");
        assert_eq!(&again, tags);
    }
    let message = String::from_utf8_lossy(data);
    let body = WireError::validation(Reason::InvalidParameterValue, message).body();
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());
    round_trips::<AdminSnapshot>(data);
    round_trips::<SnapshotList>(data);
    round_trips::<GcSummary>(data);
    round_trips::<AdminKey>(data);
    round_trips::<KeyList>(data);
    round_trips::<ScrubSummary>(data);
});
