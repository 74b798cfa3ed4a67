//! Property tests of the decoders that face the network: the route table, URL queries,
//! EC2 forms, JSON bodies (StartSnapshot's, and the admin API's the client reads) and error
//! bodies. Whatever the input, they return a value and
//! never panic; what a client encodes decodes back to what it meant.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use strata_wire::admin::{AdminKey, AdminSnapshot, GcSummary, KeyList, ScrubSummary, SnapshotList};
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode, Params};
use strata_wire::query::{Query, decode_pairs};
use strata_wire::types::StartSnapshotRequest;
use strata_wire::{ErrorCode, Operation, Reason, WireError, route};

/// Paths drawn towards the route table's shapes.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("snapshots".to_owned()),
        Just("blocks".to_owned()),
        Just("changedblocks".to_owned()),
        Just("completion".to_owned()),
        Just(String::new()),
        "snap-[0-9a-f]{1,17}",
        "%[0-9a-fA-F]{2}",
        "%[^0-9a-fA-F]?",
        "\\PC{0,6}",
    ];
    proptest::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/")))
}

/// XML 1.0's `Char`, less CR (which the writer sends as `&#xD;`).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn route_takes_any_request_line(
        method in prop_oneof![
            Just("GET".to_owned()),
            Just("PUT".to_owned()),
            Just("POST".to_owned()),
            "[A-Z]{0,7}",
            "\\PC{0,3}",
        ],
        path in prop_oneof![path(), "\\PC{0,40}", any::<String>()],
    ) {
        if let Some(op) = route(&method, &path) {
            prop_assert!(path.starts_with("/snapshots"));
            prop_assert!(!op.name().is_empty());
        }
    }

    #[test]
    fn encoded_labels_route_back_to_themselves(id in "[^/]{1,20}", index in "[^/]{1,12}") {
        let path = format!("/snapshots/{}/blocks/{}", encode(&id), encode(&index));
        prop_assert_eq!(
            route("PUT", &path),
            Some(Operation::PutSnapshotBlock { snapshot_id: id, block_index: index })
        );
    }

    #[test]
    fn queries_take_any_string(raw in prop_oneof!["[a-zA-Z0-9=&%+]{0,60}", any::<String>()]) {
        let query = Query::parse(Some(&raw));
        let _ = query.get("pageToken");
    }

    #[test]
    fn encoded_query_values_decode_to_themselves(
        pairs in proptest::collection::vec(("[a-zA-Z]{1,12}", any::<String>()), 0..8),
    ) {
        let raw: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let query = Query::parse(Some(&raw.join("&")));
        for (key, _) in &pairs {
            let first = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            prop_assert_eq!(query.get(key), first);
        }
    }

    #[test]
    fn forms_take_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..400), prefix in "[A-Za-z.]{0,8}") {
        let params = Params::parse_form(&body);
        let _ = params.get(&prefix);
        let _ = params.list(&prefix);
        let _ = params.flag(&prefix);
        for group in params.structs(&prefix) {
            let _ = group.list("Value");
        }
    }

    #[test]
    fn flattened_lists_come_back_in_index_order(
        values in proptest::collection::btree_map(1u32..10_000, any::<String>(), 0..20),
    ) {
        let mut form: Vec<String> = values
            .iter()
            .map(|(n, v)| format!("Filter.1.Value.{n}={}", encode(v)))
            .collect();
        form.reverse();
        form.push("Filter.1.Name=status".to_owned());
        let params = Params::parse_form(form.join("&").as_bytes());
        let filters = params.structs("Filter");
        prop_assert_eq!(filters.len(), 1);
        prop_assert_eq!(filters[0].get("Name"), Some("status"));
        let expected: Vec<String> = values.into_values().collect();
        prop_assert_eq!(filters[0].list("Value"), expected);
    }

    #[test]
    fn start_snapshot_bodies_take_any_bytes(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "\\{\"(VolumeSize|Tags|Description|Timeout|Encrypted|KmsKeyArn|ClientToken|ParentSnapshotId)\":(1|-1|1e400|\"x\"|null|\\[\\]|\\{\\}|true|9223372036854775808)\\}"
            .prop_map(String::into_bytes),
    ]) {
        let _ = serde_json::from_slice::<StartSnapshotRequest>(&body);
    }

    #[test]
    fn error_bodies_are_json_whatever_the_message(message in any::<String>()) {
        let body = WireError::validation(Reason::InvalidParameterValue, message.clone()).body();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let sent = json["Message"].as_str().unwrap_or_default();
        prop_assert!(message.starts_with(sent));
        prop_assert!(sent.chars().count() <= 256);
        let internal = WireError::new(ErrorCode::InternalServerException, None, message);
        prop_assert!(serde_json::from_slice::<serde_json::Value>(&internal.body()).is_ok());
    }

    #[test]
    fn ec2_error_bodies_carry_no_character_xml_forbids(message in any::<String>()) {
        let body = Ec2Error::new(Ec2ErrorCode::InvalidParameterValue, message).body("req");
        let text = body.split_once("?>\n").map_or("", |(_, rest)| rest);
        prop_assert!(text.chars().all(xml_char));
    }
}

/// The path a client sends for `op` (labels encoded as `encode` does).
fn path_of(op: &Operation) -> String {
    match op {
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

/// Decoded pairs as a client encodes them again.
fn reencode(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// An admin document that parses writes one that parses back equal.
fn admin_round_trip<T>(body: &[u8]) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(body) {
        let text = serde_json::to_vec(&value).expect("serializes");
        prop_assert_eq!(serde_json::from_slice::<T>(&text).ok(), Some(value));
    }
    Ok(())
}

// The same properties as the fuzz targets `route`, `query`, `ec2_form` and `json_bodies`
// (fuzz/), so the normal test run holds them too.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn routed_operations_route_back_from_their_labels(
        method in prop_oneof![Just("GET"), Just("PUT"), Just("POST")],
        path in prop_oneof![path(), "/\\PC{0,40}"],
    ) {
        if let Some(op) = route(method, &path) {
            let again = path_of(&op);
            prop_assert_eq!(route(method, &again), Some(op), "{}", again);
        }
    }

    #[test]
    fn decoding_is_idempotent(
        raw in prop_oneof!["[a-zA-Z0-9=&%+ ]{0,60}", "(%[0-9a-fA-F]{0,2}|[=&+]|\\PC){0,20}", any::<String>()],
    ) {
        for plus_is_space in [false, true] {
            let pairs = decode_pairs(&raw, plus_is_space);
            prop_assert_eq!(decode_pairs(&reencode(&pairs), plus_is_space), pairs);
        }
        let form = Params::parse_form(raw.as_bytes());
        let pairs = decode_pairs(&String::from_utf8_lossy(raw.as_bytes()), true);
        prop_assert_eq!(Params::parse_form(reencode(&pairs).as_bytes()), form);
    }

    #[test]
    fn encoded_forms_decode_to_themselves(
        pairs in proptest::collection::vec(("[a-zA-Z.0-9]{1,12}", any::<String>()), 0..8),
        plus_for_space in any::<bool>(),
    ) {
        // As an SDK encodes a form: `%20` or (boto3, HTML forms) `+` for a space.
        let mut body = reencode(&pairs);
        if plus_for_space {
            body = body.replace("%20", "+");
        }
        let params = Params::parse_form(body.as_bytes());
        for (key, _) in &pairs {
            let first = pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            prop_assert_eq!(params.get(key), first);
        }
    }

    #[test]
    fn admin_bodies_take_any_bytes_and_round_trip(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "\\{\"(dry_run|live_nodes|keys|snapshots|key_id|enabled|chunk_findings)\":(1|-1|true|\"x\"|null|\\[\\]|\\{\\})\\}"
            .prop_map(String::into_bytes),
    ]) {
        admin_round_trip::<AdminSnapshot>(&body)?;
        admin_round_trip::<SnapshotList>(&body)?;
        admin_round_trip::<GcSummary>(&body)?;
        admin_round_trip::<AdminKey>(&body)?;
        admin_round_trip::<KeyList>(&body)?;
        admin_round_trip::<ScrubSummary>(&body)?;
    }
}
