//! Settlement periods: a calendar month, a calendar quarter, or a range, resolved to
//! `[start, end)` instants in the billing time zone.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

use super::BillingError;
use super::calendar::{YearMonth, parse_instant};
use crate::api::settlement_report;

const MONTH_FORM: &str = "a calendar month YYYY-MM, e.g. 2026-10";
const QUARTER_FORM: &str = "a calendar quarter YYYY-Qn with n from 1 to 4, e.g. 2026-Q4";
const INSTANT_FORM: &str = "an RFC 3339 instant, e.g. 2026-10-01T00:00:00+08:00";
const ONE_OF_FORM: &str =
    "exactly one of month (e.g. 2026-10), quarter (e.g. 2026-Q4), or from and to (RFC 3339)";

/// A settlement period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    /// A calendar month in the billing zone, e.g. 2026-10.
    Month(YearMonth),
    /// A calendar quarter in the billing zone: `quarter` 1 to 4.
    Quarter { year: i32, quarter: u32 },
    /// `[from, to)`, given as instants.
    Range {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

/// A half-open range of instants `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimeRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl TimeRange {
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

impl Period {
    /// Parses `YYYY-MM` (the `spec.period.month` form).
    pub fn parse_month(value: &str) -> Result<Period, BillingError> {
        let invalid = || invalid("spec.period.month", value, MONTH_FORM);
        let (year, month) = value.split_once('-').ok_or_else(invalid)?;
        let year = four_digit_year(year).ok_or_else(invalid)?;
        if month.len() != 2 || !month.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        let month: u32 = month.parse().map_err(|_| invalid())?;
        if !(1..=12).contains(&month) {
            return Err(invalid());
        }
        Ok(Period::Month(YearMonth { year, month }))
    }

    /// Parses `YYYY-Qn` (the `spec.period.quarter` form).
    pub fn parse_quarter(value: &str) -> Result<Period, BillingError> {
        let invalid = || invalid("spec.period.quarter", value, QUARTER_FORM);
        let (year, quarter) = value.split_once("-Q").ok_or_else(invalid)?;
        let year = four_digit_year(year).ok_or_else(invalid)?;
        let quarter = match quarter {
            "1" => 1,
            "2" => 2,
            "3" => 3,
            "4" => 4,
            _ => return Err(invalid()),
        };
        Ok(Period::Quarter { year, quarter })
    }

    /// Parses a range from two RFC 3339 instants (`spec.period.from`, `spec.period.to`);
    /// `to` must be later than `from`.
    pub fn parse_range(from: &str, to: &str) -> Result<Period, BillingError> {
        let start = parse_instant("spec.period.from", from)
            .map_err(|_| invalid("spec.period.from", from, INSTANT_FORM))?;
        let end = parse_instant("spec.period.to", to)
            .map_err(|_| invalid("spec.period.to", to, INSTANT_FORM))?;
        if end <= start {
            return Err(invalid(
                "spec.period.to",
                to,
                "an instant later than spec.period.from",
            ));
        }
        Ok(Period::Range {
            from: start,
            to: end,
        })
    }

    /// The period a `SettlementReport` asks for: exactly one of `month`, `quarter`, or
    /// `from` + `to`.
    pub fn from_spec(spec: &settlement_report::Period) -> Result<Period, BillingError> {
        match (&spec.month, &spec.quarter, &spec.from, &spec.to) {
            (Some(month), None, None, None) => Period::parse_month(month),
            (None, Some(quarter), None, None) => Period::parse_quarter(quarter),
            (None, None, Some(from), Some(to)) => Period::parse_range(from, to),
            _ => Err(invalid("spec.period", &describe(spec), ONE_OF_FORM)),
        }
    }

    /// The instants `[start, end)` the period covers in `zone`: months and quarters run from
    /// local midnight of their first day to local midnight of the next one's.
    pub fn bounds(&self, zone: Tz) -> Result<TimeRange, BillingError> {
        let (first, months) = match *self {
            Period::Range { from, to } => {
                return Ok(TimeRange {
                    start: from,
                    end: to,
                });
            }
            Period::Month(month) => (month, 1),
            Period::Quarter { year, quarter } => (
                YearMonth {
                    year,
                    month: 3 * quarter - 2,
                },
                3,
            ),
        };
        Ok(TimeRange {
            start: first.start(zone)?,
            end: first.plus(months).start(zone)?,
        })
    }
}

/// The forms of `spec.period`, one string: `2026-10`, `2026-Q4`, or `<from>..<to>` with two
/// RFC 3339 instants. For the command line; errors name the form that was tried.
impl FromStr for Period {
    type Err = BillingError;

    fn from_str(s: &str) -> Result<Period, BillingError> {
        if let Some((from, to)) = s.split_once("..") {
            Period::parse_range(from, to)
        } else if s.contains("-Q") {
            Period::parse_quarter(s)
        } else {
            Period::parse_month(s)
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Period::Month(month) => write!(f, "{month}"),
            Period::Quarter { year, quarter } => write!(f, "{year:04}-Q{quarter}"),
            Period::Range { from, to } => write!(
                f,
                "{}..{}",
                from.to_rfc3339_opts(SecondsFormat::Secs, true),
                to.to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
        }
    }
}

fn four_digit_year(s: &str) -> Option<i32> {
    if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

fn invalid(field: &'static str, value: &str, expected: &'static str) -> BillingError {
    BillingError::InvalidPeriod {
        field,
        value: value.to_owned(),
        expected,
    }
}

fn describe(spec: &settlement_report::Period) -> String {
    let given: Vec<String> = [
        ("month", &spec.month),
        ("quarter", &spec.quarter),
        ("from", &spec.from),
        ("to", &spec.to),
    ]
    .iter()
    .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name}={v}")))
    .collect();
    if given.is_empty() {
        "nothing".to_owned()
    } else {
        given.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant("t", s).unwrap()
    }

    const SH: Tz = Tz::Asia__Shanghai;

    #[test]
    fn a_month_runs_from_local_midnight_to_local_midnight() {
        let b = Period::parse_month("2026-10").unwrap().bounds(SH).unwrap();
        assert_eq!(b.start, t("2026-10-01T00:00:00+08:00"));
        assert_eq!(b.end, t("2026-11-01T00:00:00+08:00"));
        let dec = Period::parse_month("2026-12").unwrap().bounds(SH).unwrap();
        assert_eq!(dec.end, t("2027-01-01T00:00:00+08:00"));
    }

    #[test]
    fn quarter_four_is_october_to_january() {
        let b = Period::parse_quarter("2026-Q4")
            .unwrap()
            .bounds(SH)
            .unwrap();
        assert_eq!(b.start, t("2026-10-01T00:00:00+08:00"));
        assert_eq!(b.end, t("2027-01-01T00:00:00+08:00"));
        let q1 = Period::parse_quarter("2026-Q1")
            .unwrap()
            .bounds(SH)
            .unwrap();
        assert_eq!(q1.start, t("2026-01-01T00:00:00+08:00"));
        assert_eq!(q1.end, t("2026-04-01T00:00:00+08:00"));
    }

    #[test]
    fn a_range_is_taken_as_given() {
        let p = Period::parse_range("2026-10-10T12:00:00+08:00", "2026-10-20T00:00:00Z").unwrap();
        let b = p.bounds(SH).unwrap();
        assert_eq!(b.start, t("2026-10-10T04:00:00Z"));
        assert_eq!(b.end, t("2026-10-20T00:00:00Z"));
        assert_eq!(p.to_string(), "2026-10-10T04:00:00Z..2026-10-20T00:00:00Z");
        assert_eq!(p, p.to_string().parse().unwrap());
    }

    #[test]
    fn the_zone_is_configurable() {
        let b = Period::parse_month("2026-10")
            .unwrap()
            .bounds(Tz::UTC)
            .unwrap();
        assert_eq!(b.start, t("2026-10-01T00:00:00Z"));
    }

    #[test]
    fn errors_name_the_field_and_the_allowed_form() {
        let cases = [
            (
                Period::parse_month("2026-13"),
                "spec.period.month: \"2026-13\" is not valid; expected a calendar month YYYY-MM, e.g. 2026-10",
            ),
            (
                Period::parse_month("2026-1"),
                "spec.period.month: \"2026-1\" is not valid; expected a calendar month YYYY-MM, e.g. 2026-10",
            ),
            (
                Period::parse_quarter("2026-Q5"),
                "spec.period.quarter: \"2026-Q5\" is not valid; expected a calendar quarter YYYY-Qn with n from 1 to 4, e.g. 2026-Q4",
            ),
            (
                Period::parse_range("yesterday", "2026-10-01T00:00:00Z"),
                "spec.period.from: \"yesterday\" is not valid; expected an RFC 3339 instant, e.g. 2026-10-01T00:00:00+08:00",
            ),
            (
                Period::parse_range("2026-10-01T00:00:00Z", "2026-10-01T00:00:00Z"),
                "spec.period.to: \"2026-10-01T00:00:00Z\" is not valid; expected an instant later than spec.period.from",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.unwrap_err().to_string(), message);
        }
        let both = settlement_report::Period {
            month: Some("2026-10".into()),
            quarter: Some("2026-Q4".into()),
            ..Default::default()
        };
        assert_eq!(
            Period::from_spec(&both).unwrap_err().to_string(),
            "spec.period: \"month=2026-10, quarter=2026-Q4\" is not valid; expected exactly one of month (e.g. 2026-10), quarter (e.g. 2026-Q4), or from and to (RFC 3339)"
        );
        let month = settlement_report::Period {
            month: Some("2026-10".into()),
            ..Default::default()
        };
        assert_eq!(Period::from_spec(&month).unwrap().to_string(), "2026-10");
    }
}
