//! Times on the command line (`legal-hold`, `export`): RFC 3339, or a whole day in UTC.

use chrono::{DateTime, NaiveDate, Utc};

/// The start of a period: RFC 3339, or a date (its first instant, UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_instant(text, false)
}

/// The end of a period: RFC 3339, or a date (its last instant, UTC: 23:59:59.999999999, so that
/// every `msg_ts` of the day, whatever its digits, is in it).
pub fn parse_end(text: &str) -> Result<DateTime<Utc>, String> {
    parse_instant(text, true)
}

fn parse_instant(text: &str, end_of_day: bool) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time (2026-11-01T09:30:00Z) nor a date (2026-11-01)"))?;
    let time = if end_of_day {
        date.and_hms_nano_opt(23, 59, 59, 999_999_999)
    } else {
        date.and_hms_opt(0, 0, 0)
    };
    time.map(|t| t.and_utc())
        .ok_or_else(|| format!("{text:?} is not a valid date"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_whole_days_and_anything_else_is_refused_clearly() {
        assert_eq!(
            parse_time("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_end("2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T23:59:59.999999999+00:00"
        );
        assert_eq!(
            parse_time("2026-11-01T10:00:00+02:00").unwrap().to_rfc3339(),
            "2026-11-01T08:00:00+00:00"
        );
        let e = parse_time("last tuesday").unwrap_err();
        assert!(e.contains("neither an RFC 3339 time"), "{e}");
        assert!(parse_time("2026-02-30").is_err());
    }
}
