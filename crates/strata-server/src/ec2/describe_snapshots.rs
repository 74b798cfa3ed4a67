//! DescribeSnapshots: the EC2 view of the caller's snapshots.

use std::collections::HashSet;

use strata_core::snapshot::{SnapshotRecord, SnapshotStatus};
use strata_types::SnapshotId;
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode, Params, Xml, iso8601_ms};

use super::{filters, service_error, snapshot_id};
use crate::app::AppState;
use crate::auth::Caller;

/// What AWS shows for snapshots not taken from a live volume.
pub const VOLUME_ID: &str = "vol-ffffffff";
/// `MaxResults` bounds (EC2 API reference).
const MAX_RESULTS: std::ops::RangeInclusive<i64> = 5..=1000;
/// Members of the `SnapshotId.N` and `Owner.N` lists one request may carry (Strata's
/// bound, as for filters: AWS documents none).
pub const MAX_LIST_MEMBERS: usize = 1000;

/// The `progress` string: `100%` once completed, else the client's last `x-amz-Progress`.
pub fn progress(record: &SnapshotRecord) -> String {
    match record.status {
        SnapshotStatus::Completed => "100%".to_owned(),
        _ => format!("{}%", record.progress.unwrap_or(0)),
    }
}

/// Handle DescribeSnapshots.
pub async fn handle(
    state: &AppState,
    caller: &Caller,
    params: &Params,
    request_id: &str,
) -> Result<String, Ec2Error> {
    let ids = params.list("SnapshotId");
    let owners = params.list("Owner");
    for (name, count) in [("SnapshotId", ids.len()), ("Owner", owners.len())] {
        if count > MAX_LIST_MEMBERS {
            return Err(Ec2Error::new(
                Ec2ErrorCode::InvalidParameterValue,
                format!(
                    "The request has {count} {name} values; at most {MAX_LIST_MEMBERS} are allowed."
                ),
            ));
        }
    }
    let ids = ids
        .iter()
        .map(|id| snapshot_id(id))
        .collect::<Result<Vec<_>, _>>()?;
    let filters = filters::parse(params)?;
    let max_results = params
        .get("MaxResults")
        .map(|text| {
            text.parse::<i64>()
                .ok()
                .filter(|n| MAX_RESULTS.contains(n))
                .ok_or_else(|| {
                    Ec2Error::new(
                        Ec2ErrorCode::InvalidParameterValue,
                        format!("Value ( {text} ) for parameter maxResults is invalid. Expecting a value between 5 and 1000."),
                    )
                })
        })
        .transpose()?;
    if max_results.is_some() && !ids.is_empty() {
        return Err(Ec2Error::new(
            Ec2ErrorCode::InvalidParameterCombination,
            "The parameter snapshotSet cannot be used with the parameter maxResults",
        ));
    }
    let start_after = params
        .get("NextToken")
        .filter(|t| !t.is_empty())
        .map(|token| {
            strata_types::SnapshotId::parse(token).map_err(|_| {
                Ec2Error::new(
                    Ec2ErrorCode::InvalidParameterValue,
                    "The NextToken is not valid.",
                )
            })
        })
        .transpose()?;

    let mut records = state
        .service
        .list_snapshots(&caller.account)
        .await
        .map_err(service_error)?;
    if !ids.is_empty() {
        let found: HashSet<&SnapshotId> = records.iter().map(|r| &r.id).collect();
        if let Some(missing) = ids.iter().find(|id| !found.contains(id)) {
            return Err(Ec2Error::new(
                Ec2ErrorCode::InvalidSnapshotNotFound,
                format!("The snapshot '{missing}' does not exist."),
            ));
        }
        let wanted: HashSet<&SnapshotId> = ids.iter().collect();
        records.retain(|r| wanted.contains(&r.id));
    }
    if !owners.is_empty() {
        records.retain(|r| owners.iter().any(|o| o == "self" || o == r.owner.as_str()));
    }
    records.retain(|r| filters.iter().all(|f| f.matches(r)));
    if let Some(start) = &start_after {
        records.retain(|r| r.id >= *start);
    }
    let mut next_token = None;
    if let Some(limit) = max_results.and_then(|n| usize::try_from(n).ok())
        && records.len() > limit
    {
        next_token = Some(records[limit].id.to_string());
        records.truncate(limit);
    }

    let mut xml = Xml::response("DescribeSnapshots", request_id);
    xml.open("snapshotSet");
    for record in &records {
        snapshot_item(&mut xml, record);
    }
    xml.close("snapshotSet");
    if let Some(token) = next_token {
        xml.leaf("nextToken", &token);
    }
    xml.close("DescribeSnapshotsResponse");
    Ok(xml.finish())
}

fn snapshot_item(xml: &mut Xml, record: &SnapshotRecord) {
    xml.open("item");
    xml.leaf("snapshotId", record.id.as_str());
    xml.leaf("volumeId", VOLUME_ID);
    xml.leaf("status", record.status.as_str());
    if let Some(message) = &record.status_message {
        xml.leaf("statusMessage", message);
    }
    xml.leaf("startTime", &iso8601_ms(record.start_time_ms));
    xml.leaf("progress", &progress(record));
    xml.leaf("ownerId", record.owner.as_str());
    xml.leaf("volumeSize", &record.volume_size.gib().to_string());
    if let Some(description) = &record.description {
        xml.leaf("description", description);
    }
    xml.leaf("encrypted", &record.encrypted.to_string());
    if let Some(key) = &record.kms_key_arn {
        xml.leaf("kmsKeyId", key);
    }
    xml.open("tagSet");
    for tag in &record.tags {
        xml.open("item");
        xml.leaf("key", &tag.key);
        xml.leaf("value", &tag.value);
        xml.close("item");
    }
    xml.close("tagSet");
    xml.leaf("storageTier", "standard");
    if let Some(completed) = record.completion_time_ms {
        xml.leaf("completionTime", &iso8601_ms(completed));
    }
    xml.close("item");
}
