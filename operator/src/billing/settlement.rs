//! Settling a period: charge every interval in scope, sort the lines canonically, total them,
//! and fingerprint them.
//!
//! # Canonical lines
//!
//! The checksum is `sha256:` followed by the lower-case hex SHA-256 of the canonical lines,
//! concatenated in canonical order. One canonical line per [`SettlementLine`], UTF-8, thirteen
//! fields separated by `|` and terminated by `\n`:
//!
//! ```text
//! department|provider|request|item|sku|type|from|to|quantity|unitPrice|unit|discountPercent|amount\n
//! ```
//!
//! - `type`: `ecs`, `rds`, `oss`, `slb` or `eip`;
//! - `from`, `to`: RFC 3339 in UTC with whole seconds and `Z`, e.g. `2026-10-15T16:00:00Z`;
//! - `quantity`, `unitPrice`, `discountPercent`, `amount`: decimals with exactly two places and
//!   `.` as separator, no sign, no grouping, e.g. `2.00`, `0.80`, `10.00`, `57.60`;
//! - `unit`: `hour`, `month`, `GiB-hour` or `GiB-month`.
//!
//! Text fields can't contain `|` or control characters (intervals with them are refused), so
//! the form is unambiguous. Example:
//!
//! ```text
//! gx-finance|aliyun-gov|gx-finance-prod/web|web|ecs.c2.large|ecs|2026-10-01T00:00:00Z|2026-10-02T12:00:00Z|2.00|0.80|hour|0.00|57.60
//! ```
//!
//! Canonical order sorts by department, provider, request, item, SKU, from, to (strings by
//! bytes, instants by time), then by the whole canonical line; it doesn't depend on the order
//! the intervals came in. No lines gives the SHA-256 of the empty string.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use sm3::Sm3;

use super::charge::{SettlementLine, charge_interval};
use super::money::{format_money, round_fen};
use super::period::{Period, TimeRange};
use super::prices::Prices;
use super::{BillingConfig, BillingError, Clock, Interval};
use crate::api::Currency;
use crate::api::settlement_report::{ChecksumAlgorithm, Scope, SettlementReportStatus, Subtotal};

/// A settled period: its lines in canonical order and their totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The instants the period covers.
    pub period: TimeRange,
    /// Lines in canonical order.
    pub lines: Vec<SettlementLine>,
    /// Sum of the lines' amounts.
    pub total: Decimal,
    /// Sums by department, provider and resource type (`ecs`, …); only keys with lines appear.
    pub by_department: BTreeMap<String, Decimal>,
    pub by_provider: BTreeMap<String, Decimal>,
    pub by_type: BTreeMap<String, Decimal>,
    /// `sha256:<hex>` over the canonical lines.
    pub checksum: String,
}

impl Settlement {
    /// Number of lines.
    pub fn line_count(&self) -> usize {
        self.lines.len()
    }

    /// Writes the figures into a report's status: total, currency, subtotals, line count and
    /// checksum. Phase, conditions and generation are the controller's.
    pub fn write_status(&self, status: &mut SettlementReportStatus) -> Result<(), BillingError> {
        status.total = Some(format_money("status.total", self.total)?);
        status.currency = Some(Currency::CNY);
        status.by_department = subtotals("status.byDepartment", &self.by_department)?;
        status.by_provider = subtotals("status.byProvider", &self.by_provider)?;
        status.by_type = subtotals("status.byType", &self.by_type)?;
        status.lines = Some(self.lines.len() as u64);
        status.checksum = Some(self.checksum.clone());
        Ok(())
    }
}

/// Settles `period` for `scope` (empty lists mean all departments / providers): charges the part
/// of each interval in scope that lies in the period — an open interval up to the earlier of the
/// period's end and `clock.now()`, a closed one up to its recorded end — sorts the lines
/// canonically and totals them. Fails when any interval in scope can't be charged (no price in
/// force, malformed interval): a settlement is complete or it is not computed.
pub fn settle(
    intervals: &[Interval],
    prices: &Prices,
    period: &Period,
    scope: &Scope,
    config: &BillingConfig,
    clock: &dyn Clock,
) -> Result<Settlement, BillingError> {
    let window = period.bounds(config.zone)?;
    let now = clock.now();
    let in_scope = |i: &&Interval| {
        (scope.departments.is_empty() || scope.departments.contains(&i.department))
            && (scope.providers.is_empty() || scope.providers.contains(&i.provider))
    };
    let mut lines = Vec::new();
    for interval in intervals.iter().filter(in_scope) {
        let charges = charge_interval(interval, window, now, prices, config)?;
        lines.extend(charges.into_iter().map(|c| c.line));
    }
    sort_canonically(&mut lines);

    let overflow = || BillingError::Overflow {
        what: "the settlement totals".to_owned(),
    };
    let mut total = Decimal::ZERO;
    let mut by_department = BTreeMap::new();
    let mut by_provider = BTreeMap::new();
    let mut by_type = BTreeMap::new();
    for line in &lines {
        total = total.checked_add(line.amount).ok_or_else(overflow)?;
        for (map, key) in [
            (&mut by_department, line.department.as_str()),
            (&mut by_provider, line.provider.as_str()),
            (&mut by_type, line.resource_type.as_str()),
        ] {
            let sum: &mut Decimal = map.entry(key.to_owned()).or_default();
            *sum = sum.checked_add(line.amount).ok_or_else(overflow)?;
        }
    }
    let checksum = checksum(&lines);
    Ok(Settlement {
        period: window,
        lines,
        total,
        by_department,
        by_provider,
        by_type,
        checksum,
    })
}

/// Sorts lines in canonical order (see the module docs).
pub fn sort_canonically(lines: &mut [SettlementLine]) {
    // A total order (ties broken by the whole line), so the unstable sort is deterministic and
    // moves the large lines less.
    lines.sort_unstable_by(|a, b| {
        sort_key(a)
            .cmp(&sort_key(b))
            .then_with(|| canonical_line(a).cmp(&canonical_line(b)))
    });
}

type SortKey<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    DateTime<Utc>,
    DateTime<Utc>,
);

fn sort_key(l: &SettlementLine) -> SortKey<'_> {
    (
        &l.department,
        &l.provider,
        &l.request,
        &l.item,
        &l.sku,
        l.from,
        l.to,
    )
}

/// The canonical form of one line, `\n` included (see the module docs).
pub fn canonical_line(line: &SettlementLine) -> String {
    let mut out = String::with_capacity(160);
    write_canonical_line(&mut out, line);
    out
}

/// Append the canonical form of `line` to `out`, without allocating per field (the checksum of a
/// million lines reuses one buffer).
fn write_canonical_line(out: &mut String, line: &SettlementLine) {
    use std::fmt::Write;
    // Writing into a String can't fail.
    let _ = writeln!(
        out,
        "{}|{}|{}|{}|{}|{}|{}|{}|{:.2}|{:.2}|{}|{:.2}|{:.2}",
        line.department,
        line.provider,
        line.request,
        line.item,
        line.sku,
        line.resource_type.as_str(),
        line.from.format("%Y-%m-%dT%H:%M:%SZ"),
        line.to.format("%Y-%m-%dT%H:%M:%SZ"),
        round_fen(line.quantity),
        round_fen(line.unit_price),
        line.unit_label(),
        round_fen(line.discount_percent),
        round_fen(line.amount),
    );
}

/// `sha256:<hex>` over the canonical lines of `lines`, in the order given (sort them first with
/// [`sort_canonically`]; [`settle`] does).
pub fn checksum(lines: &[SettlementLine]) -> String {
    checksum_with(lines, ChecksumAlgorithm::Sha256)
}

/// `sha256:<hex>` or `sm3:<hex>` (GB/T 32905, the national standard digest) over the canonical
/// lines of `lines`, in the order given.
pub fn checksum_with(lines: &[SettlementLine], algorithm: ChecksumAlgorithm) -> String {
    fn digest<D: Digest>(lines: &[SettlementLine]) -> String {
        let mut hasher = D::new();
        let mut buffer = String::with_capacity(256);
        for line in lines {
            buffer.clear();
            write_canonical_line(&mut buffer, line);
            hasher.update(buffer.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
    match algorithm {
        ChecksumAlgorithm::Sha256 => format!("sha256:{}", digest::<Sha256>(lines)),
        ChecksumAlgorithm::Sm3 => format!("sm3:{}", digest::<Sm3>(lines)),
    }
}

/// The checksum of `lines` with the algorithm `recorded` (a checksum) was made with.
pub fn checksum_like(lines: &[SettlementLine], recorded: &str) -> String {
    let algorithm = if recorded.starts_with("sm3:") {
        ChecksumAlgorithm::Sm3
    } else {
        ChecksumAlgorithm::Sha256
    };
    checksum_with(lines, algorithm)
}

fn subtotals(field: &str, sums: &BTreeMap<String, Decimal>) -> Result<Vec<Subtotal>, BillingError> {
    sums.iter()
        .map(|(key, amount)| {
            Ok(Subtotal {
                key: key.clone(),
                amount: format_money(field, *amount)?,
            })
        })
        .collect()
}
