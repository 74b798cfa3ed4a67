//! The EC2 Query form decoder on arbitrary bodies, with the accessors the handlers use,
//! and the EC2 XML writer on whatever text came out of it. Besides never panicking:
//! flattened lists and structures hold exactly the members their keys name, in index
//! order, and a decoded form re-encoded (spaces as `%20` or `+`, pluses as `%2B`) parses the
//! same.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode, Params, Xml, iso8601_ms};
use strata_wire::query::decode_pairs;

/// The list and structure prefixes the EC2 handlers read.
const PREFIXES: [&str; 5] = ["SnapshotId", "Owner", "ResourceId", "Filter", "Tag"];

fuzz_target!(|data: &[u8]| {
    let params = Params::parse_form(data);
    let _ = params.get("Action");
    let _ = params.flag("DryRun");
    let _ = params.list("SnapshotId");
    let mut xml = Xml::response("DescribeSnapshots", "fuzz");
    for filter in params.structs("Filter") {
        xml.leaf("name", filter.get("Name").unwrap_or(""));
        for value in filter.list("Value") {
            xml.leaf("value", &value);
        }
    }
    for tag in params.structs("Tag") {
        xml.leaf("key", tag.get("Key").unwrap_or(""));
    }
    let _ = xml.finish();
    let message = params.get("Message").unwrap_or("");
    let _ = Ec2Error::new(Ec2ErrorCode::InvalidParameterValue, message).body("fuzz");

    let pairs = decode_pairs(&String::from_utf8_lossy(data), true);
    for prefix in PREFIXES {
        // `list`: one member per key `prefix.N` (N a u32), sorted by N, ties in form order.
        let mut expected: Vec<(u32, &str)> = pairs
            .iter()
            .filter_map(|(key, value)| {
                let n = key.strip_prefix(prefix)?.strip_prefix('.')?.parse().ok()?;
                Some((n, value.as_str()))
            })
            .collect();
        expected.sort_by_key(|(n, _)| *n);
        let expected: Vec<&str> = expected.into_iter().map(|(_, v)| v).collect();
        assert_eq!(params.list(prefix), expected, "{prefix}");
        // `structs`: one group per distinct N of `prefix.N.member`.
        let indexes: BTreeSet<u32> = pairs
            .iter()
            .filter_map(|(key, _)| {
                let rest = key.strip_prefix(prefix)?.strip_prefix('.')?;
                rest.split_once('.')?.0.parse().ok()
            })
            .collect();
        assert_eq!(params.structs(prefix).len(), indexes.len(), "{prefix}");
    }
    let again: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let k = utf8_percent_encode(k, NON_ALPHANUMERIC);
            let v = utf8_percent_encode(v, NON_ALPHANUMERIC);
            format!("{k}={v}")
        })
        .collect();
    assert_eq!(Params::parse_form(again.join("&").as_bytes()), params);
    // And as HTML forms and boto3 encode them: a space as `+`, a `+` as `%2B`.
    let plus = again.join("&").replace("%20", "+");
    assert_eq!(Params::parse_form(plus.as_bytes()), params);

    // Timestamps of any value (the first 8 bytes) format without a panic.
    let mut epoch = [0u8; 8];
    let n = data.len().min(8);
    epoch[..n].copy_from_slice(&data[..n]);
    assert!(iso8601_ms(i64::from_le_bytes(epoch)).ends_with('Z'));
});
