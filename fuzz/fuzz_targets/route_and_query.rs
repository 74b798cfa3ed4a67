//! The route table and the URL query decoder on arbitrary request lines: the input is
//! `METHOD TARGET` (the target split at its first `?`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wire::query::{self, Query};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (method, target) = text.split_once(' ').unwrap_or((&text, ""));
    let (path, raw_query) = match target.split_once('?') {
        Some((path, raw_query)) => (path, Some(raw_query)),
        None => (target, None),
    };
    if let Some(operation) = strata_wire::route(method, path) {
        let _ = (operation.name(), operation.snapshot_label(), operation.success_status());
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
});
