//! Query-string parsing and the query parameter names of the List and Get operations.

use percent_encoding::percent_decode_str;

/// `maxResults`.
pub const MAX_RESULTS: &str = "maxResults";
/// `pageToken` (the model's `NextToken`).
pub const PAGE_TOKEN: &str = "pageToken";
/// `startingBlockIndex`.
pub const STARTING_BLOCK_INDEX: &str = "startingBlockIndex";
/// `firstSnapshotId` (ListChangedBlocks).
pub const FIRST_SNAPSHOT_ID: &str = "firstSnapshotId";
/// `blockToken` (GetSnapshotBlock).
pub const BLOCK_TOKEN: &str = "blockToken";

/// Decoded query parameters, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Parse a raw query string. Keys and values are percent-decoded; a `+` stays a `+`
    /// (SDKs always encode spaces as `%20`, and tokens may contain a literal `+`).
    pub fn parse(raw: Option<&str>) -> Self {
        Self(decode_pairs(raw.unwrap_or(""), false))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Split `key=value&…` and percent-decode both sides. In form bodies
/// (`plus_is_space`), a `+` stands for a space; in URL queries it is a literal `+`.
pub fn decode_pairs(raw: &str, plus_is_space: bool) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let text = if plus_is_space {
            std::borrow::Cow::Owned(s.replace('+', " "))
        } else {
            std::borrow::Cow::Borrowed(s)
        };
        percent_decode_str(&text).decode_utf8_lossy().into_owned()
    };
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_plus_slash_and_equals() {
        let query = Query::parse(Some("pageToken=AAUB%2Babc%2F%3D&maxResults=100&flag"));
        assert_eq!(query.get(PAGE_TOKEN), Some("AAUB+abc/="));
        assert_eq!(query.get(MAX_RESULTS), Some("100"));
        assert_eq!(query.get("flag"), Some(""));
        assert_eq!(query.get("missing"), None);
        assert_eq!(Query::parse(Some("a=1+2")).get("a"), Some("1+2"));
        assert_eq!(Query::parse(None), Query::default());
    }
}
