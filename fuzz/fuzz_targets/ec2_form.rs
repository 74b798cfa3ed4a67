//! The EC2 Query form decoder on arbitrary bodies, with the accessors the handlers use,
//! and the EC2 XML writer on whatever text came out of it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode, Params, Xml};

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
});
