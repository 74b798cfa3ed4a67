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
    use proptest::prelude::*;
    use strata_wire::ec2::{Ec2ErrorCode, Params};

    use super::{MAX_FILTERS, MAX_VALUES_PER_FILTER, Pattern, Token, parse};

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

    /// The wildcard semantics written the obvious (exponential) way, to hold the two-row
    /// matcher to.
    fn reference(pattern: &[Token], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((Token::Any, rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
            Some((Token::One, rest)) => !text.is_empty() && reference(rest, &text[1..]),
            Some((Token::Char(c), rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
        }
    }

    /// A form key or value drawn towards what the filter parser splits on.
    fn form_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Filter.1.Name".to_owned()),
            Just("Filter.1.Value.1".to_owned()),
            "Filter\\.[0-9]{1,3}\\.(Name|Value\\.[0-9]{1,3}|Other)",
            "Filter\\.\\PC{0,6}",
            Just("status".to_owned()),
            Just("tag:team".to_owned()),
            "[a-z:-]{0,12}",
            "[*?\\\\a]{0,8}",
            "\\PC{0,20}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn patterns_match_like_the_reference(
            pattern in "[ab*?\\\\]{0,10}",
            text in "[ab*?\\\\]{0,12}",
        ) {
            let compiled = Pattern::new(&pattern);
            let chars: Vec<char> = text.chars().collect();
            prop_assert_eq!(compiled.matches(&text), reference(&compiled.0, &chars));
        }

        #[test]
        fn an_escaped_value_matches_only_itself(value in "\\PC{0,16}", other in "\\PC{0,16}") {
            let escaped: String = value
                .chars()
                .flat_map(|c| match c {
                    '*' | '?' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            let pattern = Pattern::new(&escaped);
            prop_assert!(pattern.matches(&value));
            prop_assert_eq!(pattern.matches(&other), other == value);
        }

        /// Whatever the form, parsing answers filters within the bounds or an EC2 error,
        /// never a panic.
        #[test]
        fn any_form_parses_within_the_bounds(
            pairs in proptest::collection::vec((form_text(), form_text()), 0..40),
        ) {
            let body: Vec<String> = pairs
                .iter()
                .map(|(k, v)| {
                    let k = percent_encoding::utf8_percent_encode(k, percent_encoding::NON_ALPHANUMERIC);
                    let v = percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC);
                    format!("{k}={v}")
                })
                .collect();
            let params = Params::parse_form(body.join("&").as_bytes());
            match parse(&params) {
                Ok(filters) => {
                    prop_assert_eq!(filters.len(), params.structs("Filter").len());
                    prop_assert!(filters.len() <= MAX_FILTERS);
                    for filter in &filters {
                        prop_assert!(filter.patterns.len() <= MAX_VALUES_PER_FILTER);
                    }
                }
                Err(error) => prop_assert!(matches!(
                    error.code,
                    Ec2ErrorCode::InvalidParameterValue | Ec2ErrorCode::FilterLimitExceeded
                )),
            }
        }
    }
}
