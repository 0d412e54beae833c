//! Calendar arithmetic in the billing time zone: instants, months, and where they start.
//!
//! All instants are whole seconds (charges are by the second, and the canonical lines write
//! seconds), so everything that enters the engine is truncated to the second first.

use chrono::{DateTime, Datelike, Duration, NaiveDate, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;

use super::BillingError;

/// Parses an RFC 3339 instant (any offset) to UTC, truncated to the second.
/// `field` names it in the error, e.g. `spec.effectiveFrom`.
pub fn parse_instant(field: &str, value: &str) -> Result<DateTime<Utc>, BillingError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| whole_seconds(t.with_timezone(&Utc)))
        .map_err(|_| BillingError::InvalidTimestamp {
            field: field.to_owned(),
            value: value.to_owned(),
        })
}

/// Drops the fraction of a second (a floor: the fraction is never negative).
pub fn whole_seconds(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(0)
}

/// A calendar month, e.g. 2026-10.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YearMonth {
    pub year: i32,
    /// 1 to 12.
    pub month: u32,
}

impl YearMonth {
    pub fn next(self) -> YearMonth {
        if self.month == 12 {
            YearMonth {
                year: self.year + 1,
                month: 1,
            }
        } else {
            YearMonth {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn prev(self) -> YearMonth {
        if self.month == 1 {
            YearMonth {
                year: self.year - 1,
                month: 12,
            }
        } else {
            YearMonth {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The month plus `n` months.
    pub fn plus(self, n: u32) -> YearMonth {
        (0..n).fold(self, |m, _| m.next())
    }

    /// The instant the month starts in `zone`: local midnight of its first day (or, where the
    /// zone skips midnight, the first local instant after it).
    pub fn start(self, zone: Tz) -> Result<DateTime<Utc>, BillingError> {
        let first = NaiveDate::from_ymd_opt(self.year, self.month, 1).ok_or_else(|| {
            BillingError::NoLocalTime {
                zone: zone.name().to_owned(),
                local: format!("{:04}-{:02}-01T00:00:00", self.year, self.month),
            }
        })?;
        local_day_start(zone, first)
    }
}

impl std::fmt::Display for YearMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// The first instant of a local day in `zone`. Midnight when it exists; the earlier one when it
/// happens twice; when the zone skips it (a DST gap), the first local minute after the gap.
fn local_day_start(zone: Tz, day: NaiveDate) -> Result<DateTime<Utc>, BillingError> {
    let midnight = day.and_hms_opt(0, 0, 0);
    // Gaps in the tz database are at most a day long (Pacific/Apia, 2011-12-30); look a day ahead
    // minute by minute at most, which only runs in zones that skip midnight.
    let mut local = midnight;
    for _ in 0..=(24 * 60) {
        let Some(l) = local else { break };
        if let Some(t) = zone.from_local_datetime(&l).earliest() {
            return Ok(t.with_timezone(&Utc));
        }
        local = l.checked_add_signed(Duration::minutes(1));
    }
    Err(BillingError::NoLocalTime {
        zone: zone.name().to_owned(),
        local: format!("{day}T00:00:00"),
    })
}

/// The calendar month in `zone` containing `t`, with its start and end instants:
/// `start <= t < end`.
pub fn month_containing(
    zone: Tz,
    t: DateTime<Utc>,
) -> Result<(YearMonth, DateTime<Utc>, DateTime<Utc>), BillingError> {
    let local = t.with_timezone(&zone);
    let mut month = YearMonth {
        year: local.year(),
        month: local.month(),
    };
    // The local date's month is right in every real zone; the two loops make `start <= t < end`
    // hold even where a zone's clock jumps back across a month boundary.
    while month.start(zone)? > t {
        month = month.prev();
    }
    while month.next().start(zone)? <= t {
        month = month.next();
    }
    Ok((month, month.start(zone)?, month.next().start(zone)?))
}

/// Month boundaries in one zone, remembered once computed: a settlement asks for the same few
/// months for every piece it charges, and each answer costs several time-zone conversions.
pub struct MonthBounds {
    zone: Tz,
    /// Months met so far as `(start, end)`, sorted by start; months don't overlap.
    known: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

impl MonthBounds {
    pub fn new(zone: Tz) -> Self {
        MonthBounds {
            zone,
            known: Vec::new(),
        }
    }

    /// Start and end of the month containing `t`, as [`month_containing`] gives them.
    pub fn containing(
        &mut self,
        t: DateTime<Utc>,
    ) -> Result<(DateTime<Utc>, DateTime<Utc>), BillingError> {
        let i = self.known.partition_point(|(start, _)| *start <= t);
        if let Some(&(start, end)) = i.checked_sub(1).and_then(|j| self.known.get(j))
            && t < end
        {
            return Ok((start, end));
        }
        let (_, start, end) = month_containing(self.zone, t)?;
        // `start <= t` and the month before `i` ends by `t`: sorted order holds at `i`.
        self.known.insert(i, (start, end));
        Ok((start, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_at_local_midnight() {
        let zone = Tz::Asia__Shanghai;
        let oct = YearMonth {
            year: 2026,
            month: 10,
        };
        assert_eq!(
            oct.start(zone).unwrap(),
            parse_instant("t", "2026-09-30T16:00:00Z").unwrap()
        );
        let (m, start, end) =
            month_containing(zone, parse_instant("t", "2026-10-31T16:00:00Z").unwrap()).unwrap();
        assert_eq!(m.to_string(), "2026-11");
        assert_eq!(
            start,
            parse_instant("t", "2026-11-01T00:00:00+08:00").unwrap()
        );
        assert_eq!(
            end,
            parse_instant("t", "2026-12-01T00:00:00+08:00").unwrap()
        );
    }

    #[test]
    fn a_zone_that_skips_midnight_starts_the_day_after_the_gap() {
        // America/Sao_Paulo moved clocks from 00:00 to 01:00 on 2018-11-04.
        let zone = Tz::America__Sao_Paulo;
        let day = NaiveDate::from_ymd_opt(2018, 11, 4).unwrap();
        assert_eq!(
            local_day_start(zone, day).unwrap(),
            parse_instant("t", "2018-11-04T01:00:00-02:00").unwrap()
        );
    }

    #[test]
    fn remembered_months_are_the_computed_ones() {
        let zone = Tz::Asia__Shanghai;
        let mut months = MonthBounds::new(zone);
        for s in [
            "2026-10-15T00:00:00Z",
            "2026-09-30T15:59:59Z",
            "2026-09-30T16:00:00Z",
            "2026-12-31T16:00:00Z",
            "2026-10-31T15:59:59Z",
            "2026-10-31T16:00:00Z",
        ] {
            let t = parse_instant("t", s).unwrap();
            let (_, start, end) = month_containing(zone, t).unwrap();
            assert_eq!(months.containing(t).unwrap(), (start, end), "{s}");
            assert_eq!(months.containing(t).unwrap(), (start, end), "{s} again");
        }
    }

    #[test]
    fn instants_are_truncated_to_the_second() {
        assert_eq!(
            parse_instant("t", "2026-10-01T00:00:00.999+08:00").unwrap(),
            parse_instant("t", "2026-10-01T00:00:00+08:00").unwrap()
        );
        let err = parse_instant("spec.effectiveFrom", "2026-10-01").unwrap_err();
        assert!(err.to_string().starts_with("spec.effectiveFrom: "));
    }
}
