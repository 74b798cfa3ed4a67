//! The route table and the URL query decoder on arbitrary request lines: the input is
//! `METHOD TARGET` (the target split at its first `?`). Besides never panicking: an
//! operation that routes comes back unchanged from its labels percent-encoded again, `get`
//! answers the first value of a key, and decoding is idempotent (decoded pairs re-encoded
//! as an SDK encodes them decode to the same pairs, in URL and in form mode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use strata_wire::Operation;
use strata_wire::query::{self, Query, decode_pairs};

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// The path a client sends for `operation`.
fn path_of(operation: &Operation) -> String {
    match operation {
        Operation::StartSnapshot => "/snapshots".to_owned(),
        Operation::PutSnapshotBlock {
            snapshot_id,
            block_index,
        }
        | Operation::GetSnapshotBlock {
            snapshot_id,
            block_index,
        } => format!(
            "/snapshots/{}/blocks/{}",
            encode(snapshot_id),
            encode(block_index)
        ),
        Operation::CompleteSnapshot { snapshot_id } => {
            format!("/snapshots/completion/{}", encode(snapshot_id))
        }
        Operation::ListSnapshotBlocks { snapshot_id } => {
            format!("/snapshots/{}/blocks", encode(snapshot_id))
        }
        Operation::ListChangedBlocks { second_snapshot_id } => {
            format!("/snapshots/{}/changedblocks", encode(second_snapshot_id))
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (method, target) = text.split_once(' ').unwrap_or((&text, ""));
    let (path, raw_query) = match target.split_once('?') {
        Some((path, raw_query)) => (path, Some(raw_query)),
        None => (target, None),
    };
    if let Some(operation) = strata_wire::route(method, path) {
        let _ = (operation.name(), operation.snapshot_label());
        assert!(path.starts_with("/snapshots"), "{path}");
        assert!((200..=202).contains(&operation.success_status()));
        let again = path_of(&operation);
        assert_eq!(
            strata_wire::route(method, &again),
            Some(operation),
            "{again}"
        );
    }
    let query = Query::parse(raw_query);
    for name in [
        query::MAX_RESULTS,
        query::PAGE_TOKEN,
        query::STARTING_BLOCK_INDEX,
        query::FIRST_SNAPSHOT_ID,
        query::BLOCK_TOKEN,
    ] {
        let _ = query.get(name);
    }
    let raw = raw_query.unwrap_or("");
    for plus_is_space in [false, true] {
        let pairs = decode_pairs(raw, plus_is_space);
        if !plus_is_space {
            for (key, _) in &pairs {
                let first = pairs
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str());
                assert_eq!(query.get(key), first);
            }
        }
        // NON_ALPHANUMERIC encodes both `+` and space, so either mode reads them back.
        let again: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        assert_eq!(decode_pairs(&again.join("&"), plus_is_space), pairs);
    }
});
