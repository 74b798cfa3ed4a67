//! DescribeSnapshots filters: `Filter.N.Name` / `Filter.N.Value.M`. Values of one filter
//! are alternatives (OR), filters combine with AND, and values may use the EC2 wildcards
//! `*` (any run) and `?` (any one character), with `\` escaping them.

use strata_core::snapshot::SnapshotRecord;
use strata_wire::ec2::{Ec2Error, Ec2ErrorCode, Params, iso8601_ms};

use super::describe_snapshots::{VOLUME_ID, progress};

/// The filter names DescribeSnapshots documents, all supported.
const NAMES: [&str; 12] = [
    "description",
    "encrypted",
    "owner-alias",
    "owner-id",
    "progress",
    "snapshot-id",
    "start-time",
    "status",
    "storage-tier",
    "tag-key",
    "volume-id",
    "volume-size",
];

/// One parsed filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    name: String,
    values: Vec<String>,
}

impl Filter {
    /// Whether `record` has a field value matching one of the filter's patterns.
    pub fn matches(&self, record: &SnapshotRecord) -> bool {
        let fields = fields(&self.name, record);
        self.values
            .iter()
            .any(|pattern| fields.iter().any(|field| glob(pattern, field)))
    }
}

/// Parse and validate every `Filter.N`.
pub fn parse(params: &Params) -> Result<Vec<Filter>, Ec2Error> {
    params
        .structs("Filter")
        .iter()
        .map(|filter| {
            let name = filter.get("Name").unwrap_or("").to_owned();
            if !(NAMES.contains(&name.as_str()) || name.starts_with("tag:")) {
                return Err(Ec2Error::new(
                    Ec2ErrorCode::InvalidParameterValue,
                    format!("The filter '{name}' is invalid"),
                ));
            }
            Ok(Filter {
                name,
                values: filter.list("Value"),
            })
        })
        .collect()
}

/// The values of `record` a filter named `name` is compared with.
fn fields(name: &str, record: &SnapshotRecord) -> Vec<String> {
    let one = |value: String| vec![value];
    match name {
        "description" => record.description.clone().into_iter().collect(),
        "encrypted" => one(record.encrypted.to_string()),
        "owner-id" => one(record.owner.to_string()),
        "progress" => one(progress(record)),
        "snapshot-id" => one(record.id.to_string()),
        "start-time" => one(iso8601_ms(record.start_time_ms)),
        "status" => one(record.status.as_str().to_owned()),
        "storage-tier" => one("standard".to_owned()),
        "tag-key" => record.tags.iter().map(|t| t.key.clone()).collect(),
        "volume-id" => one(VOLUME_ID.to_owned()),
        "volume-size" => one(record.volume_size.gib().to_string()),
        _ => match name.strip_prefix("tag:") {
            Some(key) => record
                .tags
                .iter()
                .filter(|t| t.key == key)
                .map(|t| t.value.clone())
                .collect(),
            // owner-alias: self-hosted snapshots have no alias.
            None => Vec::new(),
        },
    }
}

/// EC2 wildcard matching: `*` any run, `?` one character, `\` escapes the next one.
fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // matches[j]: the pattern so far matches text[..j].
    let mut matches = vec![false; text.len() + 1];
    matches[0] = true;
    let mut i = 0;
    while i < pattern.len() {
        let (token, literal) = match pattern[i] {
            '\\' if i + 1 < pattern.len() => {
                i += 1;
                (pattern[i], true)
            }
            c => (c, false),
        };
        let mut next = vec![false; text.len() + 1];
        if token == '*' && !literal {
            let mut any = false;
            for j in 0..=text.len() {
                any |= matches[j];
                next[j] = any;
            }
        } else {
            for j in 0..text.len() {
                next[j + 1] = matches[j] && ((token == '?' && !literal) || text[j] == token);
            }
        }
        matches = next;
        i += 1;
    }
    matches[text.len()]
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn wildcards_follow_ec2() {
        assert!(glob("snap-*", "snap-0123"));
        assert!(glob("*", ""));
        assert!(glob("d?sk.img", "disk.img"));
        assert!(!glob("d?sk.img", "dsk.img"));
        assert!(glob("a\\*b", "a*b"));
        assert!(!glob("a\\*b", "axb"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(glob("*team*", "my-team-vol"));
    }
}
