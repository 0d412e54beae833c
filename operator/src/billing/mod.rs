//! Billing: the pure charge engine. No I/O and no cluster: PriceBooks, metered intervals, a
//! period and a clock go in; settlement lines, totals, a checksum and estimates come out.
//!
//! # Rules
//!
//! - Money is [`rust_decimal::Decimal`], never a float. Amounts are parsed from and written to
//!   the API's decimal strings by [`money`].
//! - A metered [`Interval`] is charged `quantity × unit price × time`:
//!   - `hour` prices by the second: `price × seconds / 3600`;
//!   - `month` prices prorated by the seconds of the calendar month in the billing zone
//!     ([`BillingConfig::zone`], `Asia/Shanghai` by default):
//!     `price × seconds in the month / seconds of that month`.
//! - Intervals are split at calendar-month boundaries (local midnight of the 1st in the zone)
//!   and at price changes (PriceBook `effectiveFrom` / `effectiveUntil`); each piece is one
//!   [`SettlementLine`].
//! - Per line: compute the unrounded gross, apply the department discount of the PriceBook in
//!   force (`gross × (1 − percent / 100)`), then round half-up to 0.01 yuan — once. Totals are
//!   sums of rounded lines.
//! - Instants are whole seconds: fractions are dropped where instants come in.
//! - An open interval (still active) is charged up to the earlier of the period's end and
//!   [`Clock::now`].
//!
//! [`settlement`] documents the canonical line form the checksum is computed over;
//! [`estimate`] the monthly estimate shown before approval.

pub mod archive;
pub mod budget;
pub mod calendar;
pub mod charge;
mod error;
pub mod estimate;
pub mod export;
pub mod metering;
pub mod money;
pub mod period;
pub mod prices;
pub mod settlement;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use charge::{Charge, Interval, SettlementLine, charge_interval, metered_quantity};
pub use error::BillingError;
pub use estimate::{
    EstimateLine, HOURS_PER_MONTH, MonthlyEstimate, estimate_monthly, monthly_delta,
};
pub use metering::{FinalizedCoverage, coverage_of, intervals_of, settle_requests, settled};
pub use period::{Period, TimeRange};
pub use prices::{Overlap, PricePoint, Prices, find_overlaps};
pub use settlement::{
    Settlement, canonical_line, checksum, checksum_like, checksum_with, settle, sort_canonically,
};

/// The billing time zone when none is configured.
pub const DEFAULT_ZONE: Tz = Tz::Asia__Shanghai;

/// Settings of the charge engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BillingConfig {
    /// The zone whose calendar months and quarters periods and monthly prices follow.
    pub zone: Tz,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig { zone: DEFAULT_ZONE }
    }
}

/// Where "now" comes from, so that charging open intervals is testable.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The operator's business clock ([`crate::clock`]): the system's, unless `--clock` started it elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        crate::clock::now()
    }
}

/// A clock stopped at one instant, for tests and for recomputing a report as of a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}
