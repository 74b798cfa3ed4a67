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
    patterns: Vec<Pattern>,
}

impl Filter {
    /// Whether `record` has a field value matching one of the filter's patterns.
    pub fn matches(&self, record: &SnapshotRecord) -> bool {
        let fields = fields(&self.name, record);
        self.patterns
            .iter()
            .any(|pattern| fields.iter().any(|field| pattern.matches(field)))
    }
}

/// One token of a compiled wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters.
    Any,
    /// `?`: any one character.
    One,
    /// A literal character (including an escaped `*`, `?` or `\\`).
    Char(char),
}

/// A filter value compiled once per request, not once per snapshot compared.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern(Vec<Token>);

impl Pattern {
    /// `*` any run, `?` one character, `\\` escapes the next one (a trailing `\\` is literal).
    fn new(pattern: &str) -> Self {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '\\' => chars.next().map_or(Token::Char('\\'), Token::Char),
                '*' => Token::Any,
                '?' => Token::One,
                c => Token::Char(c),
            });
        }
        Self(tokens)
    }

    /// Whether the pattern matches all of `text`: O(pattern × text), two rows of state.
    fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // matches[j]: the pattern so far matches text[..j].
        let mut matches = vec![false; text.len() + 1];
        let mut next = vec![false; text.len() + 1];
        matches[0] = true;
        for token in &self.0 {
            match token {
                Token::Any => {
                    let mut any = false;
                    for j in 0..=text.len() {
                        any |= matches[j];
                        next[j] = any;
                    }
                }
                Token::One | Token::Char(_) => {
                    next[0] = false;
                    for j in 0..text.len() {
                        next[j + 1] =
                            matches[j] && (*token == Token::One || *token == Token::Char(text[j]));
                    }
                }
            }
            std::mem::swap(&mut matches, &mut next);
        }
        matches[text.len()]
    }
}

/// Filters one request may carry (Strata's bound; AWS documents none).
pub const MAX_FILTERS: usize = 50;
/// Values one filter may carry.
pub const MAX_VALUES_PER_FILTER: usize = 200;
/// Characters of one filter value: longer than any field it can be compared with
/// (descriptions and tag values hold at most 255), with room for wildcards.
pub const MAX_VALUE_CHARS: usize = 1024;

/// Parse and validate every `Filter.N`, within [`MAX_FILTERS`], [`MAX_VALUES_PER_FILTER`]
/// and [`MAX_VALUE_CHARS`]: the matching work per snapshot is bounded by their product.
pub fn parse(params: &Params) -> Result<Vec<Filter>, Ec2Error> {
    let filters = params.structs("Filter");
    if filters.len() > MAX_FILTERS {
        return Err(Ec2Error::new(
            Ec2ErrorCode::FilterLimitExceeded,
            format!(
                "The request has {} filters; at most {MAX_FILTERS} are allowed.",
                filters.len()
            ),
        ));
    }
    filters
        .iter()
        .map(|filter| {
            let name = filter.get("Name").unwrap_or("").to_owned();
            if !(NAMES.contains(&name.as_str()) || name.starts_with("tag:")) {
                return Err(Ec2Error::new(
                    Ec2ErrorCode::InvalidParameterValue,
                    format!("The filter '{name}' is invalid"),
                ));
            }
            let values = filter.list("Value");
            if values.len() > MAX_VALUES_PER_FILTER {
                return Err(Ec2Error::new(
                    Ec2ErrorCode::FilterLimitExceeded,
                    format!(
                        "The filter '{name}' has {} values; at most {MAX_VALUES_PER_FILTER} are allowed.",
                        values.len()
                    ),
                ));
            }
            if values.iter().any(|v| v.chars().count() > MAX_VALUE_CHARS) {
                return Err(Ec2Error::new(
                    Ec2ErrorCode::InvalidParameterValue,
                    format!(
                        "A value of the filter '{name}' is longer than {MAX_VALUE_CHARS} characters."
                    ),
                ));
            }
            Ok(Filter {
                patterns: values.iter().map(|v| Pattern::new(v)).collect(),
                name,
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

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn glob(pattern: &str, text: &str) -> bool {
        Pattern::new(pattern).matches(text)
    }

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
        assert!(glob("a\\\\b", "a\\b"), "an escaped backslash");
        assert!(glob("end\\", "end\\"), "a trailing backslash is literal");
        assert!(!glob("?", ""));
        assert!(glob("**", ""));
    }
}
