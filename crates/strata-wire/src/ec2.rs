//! The EC2 Query protocol subset (API version 2016-11-15) served on `POST /`:
//! DescribeSnapshots, DeleteSnapshot, CreateTags and DeleteTags, as
//! `shared/spec/ec2-snapshots-subset.json` defines them.
//!
//! Requests are form-encoded parameters with flattened, 1-based lists
//! (`SnapshotId.1`, `Filter.1.Value.2`, `Tag.1.Key`); responses are XML documents whose root
//! element is `<Action>Response` in the EC2 namespace; errors use the
//! `<Response><Errors><Error>` envelope.

use std::fmt::Write;

/// The XML namespace of every EC2 response.
pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Decoded form parameters of one EC2 request, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parse an `application/x-www-form-urlencoded` body (`+` is a space here).
    pub fn parse_form(body: &[u8]) -> Self {
        Self(crate::query::decode_pairs(
            &String::from_utf8_lossy(body),
            true,
        ))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The members of a flattened list `prefix.1`, `prefix.2`, … in index order (gaps end
    /// nothing: every index present is returned).
    pub fn list(&self, prefix: &str) -> Vec<String> {
        let mut items: Vec<(u32, String)> = self
            .0
            .iter()
            .filter_map(|(key, value)| {
                let index = key.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((index.parse().ok()?, value.clone()))
            })
            .collect();
        items.sort_by_key(|(index, _)| *index);
        items.into_iter().map(|(_, value)| value).collect()
    }

    /// The structures of a flattened list: for `Filter`, every distinct `N` of
    /// `Filter.N.*`, with the parameters under it (keys without the `Filter.N.` prefix).
    ///
    /// O(n log n) in the number of parameters, whatever their indexes: a form may carry
    /// tens of thousands of them.
    pub fn structs(&self, prefix: &str) -> Vec<Params> {
        let mut groups: std::collections::BTreeMap<u32, Params> = std::collections::BTreeMap::new();
        for (key, value) in &self.0 {
            let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((index, member)) = rest.split_once('.') else {
                continue;
            };
            let Ok(index) = index.parse::<u32>() else {
                continue;
            };
            groups
                .entry(index)
                .or_default()
                .0
                .push((member.to_owned(), value.clone()));
        }
        groups.into_values().collect()
    }

    /// A boolean parameter (`true`/`false`, any case); absent is false.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// EC2 error codes Strata sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ec2ErrorCode {
    /// 400: a snapshot id does not exist (for this caller).
    InvalidSnapshotNotFound,
    /// 400: a snapshot id is malformed.
    InvalidSnapshotIdMalformed,
    /// 400: a resource id is not a snapshot id.
    InvalidId,
    /// 400: a parameter value is wrong.
    InvalidParameterValue,
    /// 400: parameters that cannot be combined.
    InvalidParameterCombination,
    /// 400: a required parameter is missing.
    MissingParameter,
    /// 400: unknown or missing `Action`.
    InvalidAction,
    /// 400: more than 50 tags on a resource.
    TagLimitExceeded,
    /// 400: too many filters or filter values in one request.
    FilterLimitExceeded,
    /// 503: the server is busy; retry with backoff (SDKs retry it as throttling).
    RequestLimitExceeded,
    /// 412: `DryRun` was set and the request would have succeeded.
    DryRunOperation,
    /// 401: unknown access key, or no authentication.
    AuthFailure,
    /// 403: the access key may not call this action (its allow list).
    UnauthorizedOperation,
    /// 403: the signature does not match.
    SignatureDoesNotMatch,
    /// 400: the signature is too old or from the future.
    RequestExpired,
    /// 400: the authorization header is malformed.
    IncompleteSignature,
    /// 500: the server failed.
    InternalError,
}

impl Ec2ErrorCode {
    /// The code as sent in `<Code>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ec2ErrorCode::InvalidSnapshotNotFound => "InvalidSnapshot.NotFound",
            Ec2ErrorCode::InvalidSnapshotIdMalformed => "InvalidSnapshotID.Malformed",
            Ec2ErrorCode::InvalidId => "InvalidID",
            Ec2ErrorCode::InvalidParameterValue => "InvalidParameterValue",
            Ec2ErrorCode::InvalidParameterCombination => "InvalidParameterCombination",
            Ec2ErrorCode::MissingParameter => "MissingParameter",
            Ec2ErrorCode::InvalidAction => "InvalidAction",
            Ec2ErrorCode::TagLimitExceeded => "TagLimitExceeded",
            Ec2ErrorCode::FilterLimitExceeded => "FilterLimitExceeded",
            Ec2ErrorCode::RequestLimitExceeded => "RequestLimitExceeded",
            Ec2ErrorCode::DryRunOperation => "DryRunOperation",
            Ec2ErrorCode::AuthFailure => "AuthFailure",
            Ec2ErrorCode::UnauthorizedOperation => "UnauthorizedOperation",
            Ec2ErrorCode::SignatureDoesNotMatch => "SignatureDoesNotMatch",
            Ec2ErrorCode::RequestExpired => "RequestExpired",
            Ec2ErrorCode::IncompleteSignature => "IncompleteSignature",
            Ec2ErrorCode::InternalError => "InternalError",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            Ec2ErrorCode::DryRunOperation => 412,
            Ec2ErrorCode::AuthFailure => 401,
            Ec2ErrorCode::SignatureDoesNotMatch | Ec2ErrorCode::UnauthorizedOperation => 403,
            Ec2ErrorCode::InternalError => 500,
            Ec2ErrorCode::RequestLimitExceeded => 503,
            _ => 400,
        }
    }
}

/// An EC2 error ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Error {
    /// The code.
    pub code: Ec2ErrorCode,
    /// The message.
    pub message: String,
}

impl Ec2Error {
    /// A new error.
    pub fn new(code: Ec2ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The XML error envelope.
    pub fn body(&self, request_id: &str) -> String {
        let mut xml = Xml::document();
        xml.open("Response");
        xml.open("Errors");
        xml.open("Error");
        xml.leaf("Code", self.code.as_str());
        xml.leaf("Message", &self.message);
        xml.close("Error");
        xml.close("Errors");
        xml.leaf("RequestID", request_id);
        xml.close("Response");
        xml.finish()
    }
}

/// A minimal XML writer: elements and escaped text, nothing else is needed.
#[derive(Debug, Default)]
pub struct Xml(String);

impl Xml {
    /// A document with the XML declaration.
    pub fn document() -> Self {
        Self(String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"))
    }

    /// `<Action>Response xmlns=…>` with its `requestId`.
    pub fn response(action: &str, request_id: &str) -> Self {
        let mut xml = Self::document();
        let _ = write!(xml.0, "<{action}Response xmlns=\"{NAMESPACE}\">");
        xml.leaf("requestId", request_id);
        xml
    }

    /// Open an element.
    pub fn open(&mut self, name: &str) {
        let _ = write!(self.0, "<{name}>");
    }

    /// Close an element.
    pub fn close(&mut self, name: &str) {
        let _ = write!(self.0, "</{name}>");
    }

    /// An element with text content.
    pub fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        escape_into(&mut self.0, text);
        self.close(name);
    }

    /// The document text.
    pub fn finish(self) -> String {
        self.0
    }
}

/// Escape `text` as XML character data that every parser reads back as `text`, except
/// for characters XML 1.0 cannot carry at all (C0 controls other than tab, line feed and
/// carriage return, U+FFFE and U+FFFF; not even as `&#…;` references), which become U+FFFD.
///
/// Descriptions and tags may hold any character (the model's pattern is `[\S\s]*`, and the
/// EBS JSON view carries them all), so the EC2 view must not trust them to be XML-safe.
fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A literal CR would be read back as LF (end-of-line normalisation).
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            _ => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
}

/// XML 1.0's `Char` production (surrogates cannot occur in a `char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FFFD}' | '\u{10000}'..)
}

/// EC2 timestamps: ISO 8601 UTC with milliseconds, e.g. `2024-01-02T03:04:05.678Z`.
pub fn iso8601_ms(epoch_ms: i64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(epoch_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_lists_and_structures() {
        let params = Params::parse_form(
            b"Action=DescribeSnapshots&Version=2016-11-15&SnapshotId.2=snap-2&SnapshotId.1=snap-1\
              &Filter.1.Name=tag%3Ateam&Filter.1.Value.1=a+b&Filter.1.Value.2=c&Filter.2.Name=status\
              &Filter.2.Value.1=pending&DryRun=true",
        );
        assert_eq!(params.get("Action"), Some("DescribeSnapshots"));
        assert_eq!(params.list("SnapshotId"), vec!["snap-1", "snap-2"]);
        let filters = params.structs("Filter");
        assert_eq!(filters.len(), 2);
        assert_eq!(filters[0].get("Name"), Some("tag:team"));
        assert_eq!(filters[0].list("Value"), vec!["a b", "c"]);
        assert_eq!(filters[1].list("Value"), vec!["pending"]);
        assert!(params.flag("DryRun"));
        assert!(!params.flag("Missing"));
    }

    #[test]
    fn grouping_many_structures_is_not_quadratic() {
        // 100,000 structures, in reverse order: grouping them one by one against a list
        // took minutes; now it takes milliseconds.
        let form: Vec<String> = (1..=100_000)
            .rev()
            .map(|n| format!("Filter.{n}.Name=status&Filter.{n}.Value.1=v{n}"))
            .collect();
        let params = Params::parse_form(form.join("&").as_bytes());
        let started = std::time::Instant::now();
        let filters = params.structs("Filter");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(filters.len(), 100_000);
        assert_eq!(filters[0].list("Value"), vec!["v1"]);
        assert_eq!(filters[99_999].get("Name"), Some("status"));
    }

    #[test]
    fn errors_use_the_ec2_envelope_and_escape_text() {
        let body =
            Ec2Error::new(Ec2ErrorCode::InvalidSnapshotNotFound, "a <b> & 'c'").body("req-1");
        assert!(body.contains(
            "<Response><Errors><Error><Code>InvalidSnapshot.NotFound</Code><Message>a &lt;b&gt; &amp; &apos;c&apos;</Message></Error></Errors><RequestID>req-1</RequestID></Response>"
        ));
    }

    #[test]
    fn text_xml_cannot_carry_becomes_the_replacement_character() {
        let mut xml = Xml::default();
        xml.leaf(
            "d",
            "a\u{0}b\u{1b}c\rd\te\nf\u{fffe}\u{ffff}\u{7f}\u{10000}",
        );
        assert_eq!(
            xml.finish(),
            "<d>a\u{fffd}b\u{fffd}c&#xD;d\te\nf\u{fffd}\u{fffd}\u{7f}\u{10000}</d>"
        );
    }

    proptest::proptest! {
        /// Whatever the text, the document parses and reads back as the text with only
        /// the characters XML cannot carry replaced.
        #[test]
        fn any_text_makes_a_well_formed_document(text in "\\PC*|[\\x00-\\x20\\u{fffe}\\u{ffff}a<&>]*") {
            let mut xml = Xml::document();
            xml.leaf("d", &text);
            let document = xml.finish();
            let expected: String = text
                .chars()
                .map(|c| if is_xml_char(c) { c } else { char::REPLACEMENT_CHARACTER })
                .collect();
            proptest::prop_assert_eq!(parse_leaf(&document), Some(expected));
        }
    }

    /// The text of a one-element document, decoding the five entities and `&#xD;`
    /// (roxmltree is not a dependency of this crate; the server's tests parse with it).
    fn parse_leaf(document: &str) -> Option<String> {
        let body = document.split_once("?>\n")?.1;
        let inner = body.strip_prefix("<d>")?.strip_suffix("</d>")?;
        if inner
            .chars()
            .any(|c| !is_xml_char(c) || c == '<' || c == '\r')
        {
            return None;
        }
        Some(
            inner
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&#xD;", "\r")
                .replace("&amp;", "&"),
        )
    }

    #[test]
    fn timestamps_are_iso8601_with_milliseconds() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_704_164_645_678), "2024-01-02T03:04:05.678Z");
        assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
