//! Times and periods. On the command line (`legal-hold`, `export`): RFC 3339, or a whole day in UTC.
//! Key periods (`WICKRIO_KMS_MSTRKEY_ARN=alias/retention-{yyyy}-{mm}`): the year or month, UTC, a
//! file belongs to by the time in its name, which picks the KMS key it is encrypted under, so that
//! one period can be crypto-shredded (`shred`) without touching another.

use std::fmt;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// The start of a period: RFC 3339, or a date (its first instant, UTC).
pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    parse_instant(text, false)
}

/// The end of a period: RFC 3339, or a date (its last instant, UTC: 23:59:59.999999999, so that
/// every `msg_ts` of the day, whatever its digits, is in it).
pub(crate) fn parse_end(text: &str) -> Result<DateTime<Utc>, String> {
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

/// How long a key period lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Year,
    Month,
}

/// A year (`2025`) or a month (`2025-03`), UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    year: i32,
    /// 1..=12; `None` for a whole year.
    month: Option<u32>,
}

/// The placeholders a key template may hold.
pub(crate) const YEAR_PLACEHOLDER: &str = "{yyyy}";
pub(crate) const MONTH_PLACEHOLDER: &str = "{mm}";

impl Granularity {
    /// The granularity a key template asks for: `None` when it holds no placeholder (one key for
    /// ever). A month without its year, or any other `{...}`, is refused.
    pub(crate) fn of_template(template: &str) -> Result<Option<Granularity>, String> {
        let rest = template.replace(YEAR_PLACEHOLDER, "").replace(MONTH_PLACEHOLDER, "");
        if rest.contains('{') || rest.contains('}') {
            return Err(format!(
                "{template:?} holds a placeholder other than {YEAR_PLACEHOLDER} and {MONTH_PLACEHOLDER}"
            ));
        }
        match (
            template.contains(YEAR_PLACEHOLDER),
            template.contains(MONTH_PLACEHOLDER),
        ) {
            (false, false) => Ok(None),
            (true, false) => Ok(Some(Granularity::Year)),
            (true, true) => Ok(Some(Granularity::Month)),
            (false, true) => Err(format!(
                "{template:?} has {MONTH_PLACEHOLDER} without {YEAR_PLACEHOLDER}: the same month of every year would share a key"
            )),
        }
    }

    pub fn period_of(self, t: DateTime<Utc>) -> Period {
        Period {
            year: t.year(),
            month: (self == Granularity::Month).then(|| t.month()),
        }
    }
}

impl Period {
    /// Whether the period is over at `now`.
    pub(crate) fn ended_by(self, now: DateTime<Utc>) -> bool {
        self.next().start() <= now
    }

    /// `2025` or `2025-03`, as `shred --period` takes it.
    pub fn parse(text: &str) -> Result<Period, String> {
        let bad = || format!("{text:?} is not a period: a year (2025) or a month (2025-03)");
        let (year, month) = match text.split_once('-') {
            Some((y, m)) if m.len() == 2 && m.bytes().all(|b| b.is_ascii_digit()) => {
                (y, Some(m.parse::<u32>().map_err(|_| bad())?))
            }
            Some(_) => return Err(bad()),
            None => (text, None),
        };
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) || month.is_some_and(|m| !(1..=12).contains(&m))
        {
            return Err(bad());
        }
        Ok(Period {
            year: year.parse().map_err(|_| bad())?,
            month,
        })
    }

    pub(crate) fn granularity(self) -> Granularity {
        if self.month.is_some() {
            Granularity::Month
        } else {
            Granularity::Year
        }
    }

    /// The period's first instant.
    pub fn start(self) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(self.year, self.month.unwrap_or(1), 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// The period after this one.
    pub fn next(self) -> Period {
        match self.month {
            Some(12) => Period {
                year: self.year + 1,
                month: Some(1),
            },
            Some(m) => Period {
                year: self.year,
                month: Some(m + 1),
            },
            None => Period {
                year: self.year + 1,
                month: None,
            },
        }
    }

    /// Whether `t` lies in this period.
    pub fn contains(self, t: DateTime<Utc>) -> bool {
        self.granularity().period_of(t) == self
    }

    /// The key template with this period's year (and month) filled in.
    pub fn fill(self, template: &str) -> String {
        let filled = template.replace(YEAR_PLACEHOLDER, &format!("{:04}", self.year));
        match self.month {
            Some(m) => filled.replace(MONTH_PLACEHOLDER, &format!("{m:02}")),
            None => filled,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.month {
            Some(m) => write!(f, "{:04}-{m:02}", self.year),
            None => write!(f, "{:04}", self.year),
        }
    }
}

/// The time a file of the bot's was opened, from its name: `attachment_<yyyyMMddHHmmssSSS>_...`, or
/// `<basename>_<yyyyMMdd>T<HHmmssSSS>Z_<instance>_<seq>.txt` (message files, manifests, and their
/// head records in `.json`), read from the right so that no basename can pass for a time. `None`
/// for a name the bot did not give.
pub(crate) fn name_time(name: &str) -> Option<DateTime<Utc>> {
    let attachment = name
        .strip_prefix("attachment_")
        .and_then(|rest| rest.get(..17))
        .and_then(|digits| parse_compact(digits, "%Y%m%d%H%M%S%3f"));
    if attachment.is_some() {
        return attachment;
    }
    let stem = [".txt.open", ".txt", ".json"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))?;
    let time = stem.rsplit('_').nth(2)?.strip_suffix('Z')?;
    (time.len() == 18 && time.as_bytes().get(8) == Some(&b'T'))
        .then(|| parse_compact(time, "%Y%m%dT%H%M%S%3f"))
        .flatten()
}

fn parse_compact(text: &str, format: &str) -> Option<DateTime<Utc>> {
    if !text.bytes().all(|b| b.is_ascii_digit() || b == b'T') {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(text, format)
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_print_and_follow_each_other() {
        let march = Period::parse("2025-03").unwrap();
        assert_eq!(march.to_string(), "2025-03");
        assert_eq!(march.start().to_rfc3339(), "2025-03-01T00:00:00+00:00");
        assert_eq!(Period::parse("2025-12").unwrap().next().to_string(), "2026-01");
        assert_eq!(
            Period::parse("2025").unwrap().next().start().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(march.fill("alias/r-{yyyy}-{mm}"), "alias/r-2025-03");
        assert_eq!(Period::parse("2025").unwrap().fill("alias/r-{yyyy}"), "alias/r-2025");
        for bad in [
            "2025-13",
            "2025-3",
            "25",
            "2025-00",
            "march",
            "2025-03-01",
            "",
            "2025-+3",
            "+025",
        ] {
            assert!(Period::parse(bad).unwrap_err().contains("is not a period"), "{bad}");
        }
        let last = Utc.with_ymd_and_hms(2025, 3, 31, 23, 59, 59).unwrap();
        assert!(march.contains(last));
        assert!(!march.contains(last + chrono::Duration::seconds(1)));
    }

    #[test]
    fn templates_name_their_granularity_and_odd_placeholders_are_refused() {
        assert_eq!(Granularity::of_template("alias/a").unwrap(), None);
        assert_eq!(
            Granularity::of_template("alias/a-{yyyy}").unwrap(),
            Some(Granularity::Year)
        );
        assert_eq!(
            Granularity::of_template("alias/a-{yyyy}-{mm}").unwrap(),
            Some(Granularity::Month)
        );
        assert!(
            Granularity::of_template("alias/a-{mm}")
                .unwrap_err()
                .contains("without")
        );
        assert!(
            Granularity::of_template("alias/a-{dd}")
                .unwrap_err()
                .contains("placeholder other")
        );
    }

    #[test]
    fn file_names_tell_their_time() {
        let t = |s: &str| name_time(s).map(|t| t.to_rfc3339());
        let want = Some("2025-03-31T23:59:58.123+00:00".to_owned());
        assert_eq!(t("msgs_20250331T235958123Z_0a1b2c3d4e5f_000001.txt"), want);
        assert_eq!(t("my_bot_20250331T235958123Z_0a1b2c3d4e5f_000001.txt.open"), want);
        assert_eq!(t("manifest_20250331T235958123Z_0a1b2c3d4e5f_000002.txt"), want);
        assert_eq!(
            t("chainhead_manifest_20250331T235958123Z_0a1b2c3d4e5f_000002.json"),
            want
        );
        assert_eq!(t("attachment_20250331235958123_a_b.pdf"), want);
        assert_eq!(t("attachment_20250331235958123_tag-0123456789abcdef_a.pdf"), want);
        assert_eq!(t("notes.txt"), None);
        assert_eq!(t("attachment_2025_x"), None);
        // A basename holding a time of its own is not read for the file's.
        assert_eq!(
            t("log_20200101T000000000Z_x_20250331T235958123Z_0a1b2c3d4e5f_000001.txt"),
            want
        );
        // An attachment's own name cannot move it to another period.
        assert_eq!(t("attachment_20250331235958123_x_20990101T000000000Z_a_1.txt"), want);
    }

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
