//! The `X-Amz-Date` timestamp format, `YYYYMMDDTHHMMSSZ` (ISO 8601 basic format, UTC).

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::AuthError;

const AMZ_DATE_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year][month][day]T[hour][minute][second]Z");

/// Parses an `X-Amz-Date` value.
///
/// The shape is checked byte by byte first: the string goes verbatim into the string to sign,
/// so only the one canonical spelling may be accepted (no signs, no extra digits).
pub(crate) fn parse_amz_date(value: &str) -> Result<OffsetDateTime, AuthError> {
    let malformed = || {
        AuthError::Malformed(format!(
            "X-Amz-Date must be of the form YYYYMMDD'T'HHMMSS'Z', got '{value}'."
        ))
    };
    let bytes = value.as_bytes();
    let shape_ok = bytes.len() == 16
        && bytes[8] == b'T'
        && bytes[15] == b'Z'
        && bytes[..8].iter().all(u8::is_ascii_digit)
        && bytes[9..15].iter().all(u8::is_ascii_digit);
    if !shape_ok {
        return Err(malformed());
    }
    PrimitiveDateTime::parse(value, AMZ_DATE_FORMAT)
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| malformed())
}

/// Formats a timestamp as `YYYYMMDDTHHMMSSZ` in UTC, for error messages.
pub(crate) fn format_amz_date(at: OffsetDateTime) -> String {
    let utc = at.to_offset(UtcOffset::UTC);
    // Only years outside 0..=9999 fail to format; fall back to the RFC-ish Display form.
    utc.format(AMZ_DATE_FORMAT)
        .unwrap_or_else(|_| utc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn parses_the_canonical_form() {
        assert_eq!(
            parse_amz_date("20150830T123600Z"),
            Ok(datetime!(2015-08-30 12:36:00 UTC))
        );
    }

    #[test]
    fn rejects_other_spellings() {
        for bad in [
            "",
            "20150830T123600",
            "2015-08-30T12:36:00Z",
            "20150830T123600z",
            "20151330T123600Z",
            "20150830T250000Z",
            "+2015830T123600Z",
            "Sun, 30 Aug 2015 12:36:00 GMT",
        ] {
            assert!(
                matches!(parse_amz_date(bad), Err(AuthError::Malformed(_))),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn formats_in_utc() {
        assert_eq!(
            format_amz_date(datetime!(2015-08-30 14:36:00 +02:00)),
            "20150830T123600Z"
        );
    }
}
