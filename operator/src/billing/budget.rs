//! Budgets: a department's spend in a calendar year against its annual budget, and the alert
//! thresholds (80 % and 100 %) it has crossed. Each threshold is announced once per year: the
//! ones announced are recorded in the Department's `status.budget.alerted`, and only thresholds
//! crossed and not yet recorded are returned as new.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::calendar::{YearMonth, month_containing};
use super::money::{format_money, round_fen};
use super::{BillingConfig, BillingError, Period};
use crate::api::department::BudgetStatus;

/// Alert thresholds in percent of the annual budget, in increasing order.
pub const THRESHOLDS: [u32; 2] = [80, 100];

/// The period of calendar `year` in the billing zone: local midnight of 1 January to the next.
pub fn year_period(year: i32, config: &BillingConfig) -> Result<Period, BillingError> {
    let from = YearMonth { year, month: 1 }.start(config.zone)?;
    let to = YearMonth {
        year: year + 1,
        month: 1,
    }
    .start(config.zone)?;
    Ok(Period::Range { from, to })
}

/// Months left in the calendar year from `now`, as monthly prices are prorated: what is left of
/// the current month by its seconds, plus the whole months after it. At local midnight of
/// 1 January it is 12; a second before the year ends it is about 0.
pub fn months_left(now: DateTime<Utc>, config: &BillingConfig) -> Result<Decimal, BillingError> {
    let (month, start, end) = month_containing(config.zone, now)?;
    let part =
        Decimal::from((end - now).num_seconds()) / Decimal::from((end - start).num_seconds());
    Ok(part + Decimal::from(12 - month.month))
}

/// The budget status for `year` given the spend so far, and the thresholds newly crossed (to
/// announce, then keep recorded). A new year starts with nothing announced.
pub fn assess(
    year: i32,
    annual: Decimal,
    spent: Decimal,
    previous: Option<&BudgetStatus>,
) -> Result<(BudgetStatus, Vec<u32>), BillingError> {
    let mut alerted: Vec<u32> = previous
        .filter(|p| p.year == year)
        .map(|p| p.alerted.clone())
        .unwrap_or_default();
    let percent = if annual.is_zero() {
        // A zero budget is used up by any spend.
        if spent.is_zero() {
            Decimal::ZERO
        } else {
            Decimal::ONE_HUNDRED
        }
    } else {
        round_fen(spent * Decimal::ONE_HUNDRED / annual)
    };
    let mut new = Vec::new();
    for t in THRESHOLDS {
        if percent >= Decimal::from(t) && !alerted.contains(&t) {
            alerted.push(t);
            new.push(t);
        }
    }
    alerted.sort_unstable();
    Ok((
        BudgetStatus {
            year,
            annual: format_money("status.budget.annual", annual)?,
            spent: format_money("status.budget.spent", round_fen(spent))?,
            percent: format!("{percent:.2}"),
            alerted,
        },
        new,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn each_threshold_is_announced_once_a_year() {
        let (s, new) = assess(2026, d("1000"), d("799.99"), None).unwrap();
        assert_eq!(
            (s.percent.as_str(), new.as_slice()),
            ("80.00", &[80][..]),
            "79.999 rounds to 80.00"
        );
        let (s, new) = assess(2026, d("1000"), d("790"), None).unwrap();
        assert!(new.is_empty() && s.alerted.is_empty());
        let (s, new) = assess(2026, d("1000"), d("850"), Some(&s)).unwrap();
        assert_eq!((new, s.alerted.clone()), (vec![80], vec![80]));
        let (s, new) = assess(2026, d("1000"), d("900"), Some(&s)).unwrap();
        assert!(new.is_empty(), "80 % was announced already");
        let (s, new) = assess(2026, d("1000"), d("1200"), Some(&s)).unwrap();
        assert_eq!((new, s.alerted.clone()), (vec![100], vec![80, 100]));
        assert_eq!(
            (s.spent.0.as_str(), s.percent.as_str()),
            ("1200.00", "120.00")
        );
        let (s, new) = assess(2027, d("1000"), d("10"), Some(&s)).unwrap();
        assert!(
            new.is_empty() && s.alerted.is_empty(),
            "a new year starts afresh"
        );
        let (_, new) = assess(2027, d("0"), d("0.01"), None).unwrap();
        assert_eq!(new, vec![80, 100]);
    }

    #[test]
    fn months_left_prorate_the_current_month_by_its_seconds() {
        let config = BillingConfig::default();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // Local midnight of 1 January (Asia/Shanghai): the whole year.
        assert_eq!(
            months_left(at("2025-12-31T16:00:00Z"), &config).unwrap(),
            d("12")
        );
        // Local midnight of 16 November: half of November (30 days), and December.
        assert_eq!(
            months_left(at("2026-11-15T16:00:00Z"), &config).unwrap(),
            d("1.5")
        );
        // The last second of the year.
        let last = months_left(at("2026-12-31T15:59:59Z"), &config).unwrap();
        assert_eq!(last, Decimal::ONE / Decimal::from(31 * 86_400));
    }

    #[test]
    fn a_year_is_local() {
        let Period::Range { from, to } = year_period(2026, &BillingConfig::default()).unwrap()
        else {
            panic!("a range")
        };
        assert_eq!(from.to_rfc3339(), "2025-12-31T16:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-12-31T16:00:00+00:00");
    }
}
