//! Charging one metered interval: split it into pieces that each lie in one calendar month and
//! one price period, and price each piece.
//!
//! For a piece of `s` seconds with quantity `q`, unit price `p` and department discount `d` %:
//!
//! - `hour` prices: `gross = q × p × s / 3600` (by the second);
//! - `month` prices: `gross = q × p × s / S`, where `S` is the number of seconds of the
//!   calendar month (in the billing zone) the piece lies in;
//! - `exact = gross × (1 − d / 100)`, and the line's `amount` is `exact` rounded half-up to
//!   0.01 — the only rounding. With the inputs the API allows (two decimals each) the amount is
//!   computed in integers, exactly; otherwise `q × p × s` is exact in `Decimal` and the single
//!   division keeps 28 significant digits. Both give the same amount, scale included (see
//!   [`discounted_amount`](super::money::discounted_amount)).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::calendar::{MonthBounds, whole_seconds};
use super::money::{discounted_amount, discounted_share};
use super::period::TimeRange;
use super::prices::Prices;
use super::{BillingConfig, BillingError};
use crate::api::ResourceItem;
use crate::api::ResourceType;
use crate::api::price_book::{PricePer, PriceUnit};

const SECONDS_PER_HOUR: i64 = 3600;

/// One metered interval of one request item: the item ran with `quantity` from `from` until `to`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interval {
    /// Name of the item within the request.
    pub item: String,
    /// SKU, priced in the provider's PriceBooks.
    pub sku: String,
    pub resource_type: ResourceType,
    /// What the price multiplies: the count of resources, or count × GiB for per-GiB prices
    /// (see [`metered_quantity`]). At most two decimals.
    pub quantity: Decimal,
    /// Start (inclusive). Fractions of a second are dropped.
    pub from: DateTime<Utc>,
    /// End (exclusive); `None` while the item is still active.
    pub to: Option<DateTime<Utc>>,
    pub department: String,
    pub provider: String,
    /// The request, as `namespace/name`.
    pub request: String,
}

/// One charged piece: a part of an interval within one calendar month and one price period.
///
/// The names are shared (`Arc<str>`): a settlement's lines repeat a few departments, providers,
/// items and SKUs, and a request's lines its request, so each distinct name is kept once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementLine {
    pub department: Arc<str>,
    pub provider: Arc<str>,
    /// `namespace/name` of the request.
    pub request: Arc<str>,
    pub item: Arc<str>,
    pub sku: Arc<str>,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    /// Start of the piece (inclusive).
    pub from: DateTime<Utc>,
    /// End of the piece (exclusive).
    pub to: DateTime<Utc>,
    pub quantity: Decimal,
    /// Unit price in yuan, from the PriceBook in force.
    pub unit_price: Decimal,
    pub unit: PriceUnit,
    /// `GiB` when the unit price is per GiB (the quantity then counts GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<PricePer>,
    /// The department's discount in percent, from the same PriceBook.
    pub discount_percent: Decimal,
    /// The charge, rounded half-up to 0.01 yuan.
    pub amount: Decimal,
}

impl SettlementLine {
    /// The unit as written in reports: `hour`, `month`, `GiB-hour` or `GiB-month`.
    pub fn unit_label(&self) -> &'static str {
        unit_label(self.unit, self.per)
    }
}

/// `hour`, `month`, `GiB-hour` or `GiB-month`.
pub fn unit_label(unit: PriceUnit, per: Option<PricePer>) -> &'static str {
    match (per, unit) {
        (None, PriceUnit::Hour) => "hour",
        (None, PriceUnit::Month) => "month",
        (Some(PricePer::GiB), PriceUnit::Hour) => "GiB-hour",
        (Some(PricePer::GiB), PriceUnit::Month) => "GiB-month",
    }
}

/// What charging prices of one piece of an interval: its line but for the interval's names,
/// quantity and type, and the unrounded amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Piece {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub unit_price: Decimal,
    pub unit: PriceUnit,
    pub per: Option<PricePer>,
    pub discount_percent: Decimal,
    /// The charge, rounded half-up to 0.01 yuan.
    pub amount: Decimal,
    /// The seconds `unit_price` is for: an hour's, or those of the month the piece lies in.
    pub unit_seconds: i64,
}

impl Piece {
    /// `gross × (1 − discount / 100)` for `quantity`, before rounding.
    fn exact(&self, quantity: Decimal) -> Option<Decimal> {
        let seconds = (self.to - self.from).num_seconds();
        discounted_share(
            quantity,
            self.unit_price,
            seconds,
            self.unit_seconds,
            self.discount_percent,
        )
    }
}

/// A line with the unrounded amount it was rounded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub line: SettlementLine,
    /// `gross × (1 − discount / 100)` before rounding.
    pub exact: Decimal,
}

/// Charges the part of `interval` that lies in `window`; an open interval runs until `now`.
/// Returns one [`Charge`] per piece, in time order; none when nothing of it lies in the window.
/// Fails on a malformed interval, or when no PriceBook prices the SKU at some instant of it.
pub fn charge_interval(
    interval: &Interval,
    window: TimeRange,
    now: DateTime<Utc>,
    prices: &Prices,
    config: &BillingConfig,
) -> Result<Vec<Charge>, BillingError> {
    let mut pieces = Vec::new();
    charge_pieces(
        interval,
        window,
        now,
        prices,
        &mut MonthBounds::new(config.zone),
        |piece| pieces.push(piece),
    )?;
    let names = [
        &interval.department,
        &interval.provider,
        &interval.request,
        &interval.item,
        &interval.sku,
    ]
    .map(|name| Arc::<str>::from(name.as_str()));
    pieces
        .into_iter()
        .map(|piece| {
            let exact = piece
                .exact(interval.quantity)
                .ok_or_else(|| overflow(interval))?;
            let [department, provider, request, item, sku] = names.clone();
            Ok(Charge {
                line: SettlementLine {
                    department,
                    provider,
                    request,
                    item,
                    sku,
                    resource_type: interval.resource_type,
                    from: piece.from,
                    to: piece.to,
                    quantity: interval.quantity,
                    unit_price: piece.unit_price,
                    unit: piece.unit,
                    per: piece.per,
                    discount_percent: piece.discount_percent,
                    amount: piece.amount,
                },
                exact,
            })
        })
        .collect()
}

/// [`charge_interval`] without the names: hands each [`Piece`] to `each` in time order, with
/// month boundaries remembered in `months` (a settlement charges a million intervals in the same
/// few months).
pub(crate) fn charge_pieces(
    interval: &Interval,
    window: TimeRange,
    now: DateTime<Utc>,
    prices: &Prices,
    months: &mut MonthBounds,
    mut each: impl FnMut(Piece),
) -> Result<(), BillingError> {
    check(interval)?;
    let start = whole_seconds(interval.from).max(window.start);
    let end = whole_seconds(interval.to.unwrap_or(now)).min(window.end);
    let mut cursor = start;
    while cursor < end {
        let price = prices.resolve(&interval.provider, &interval.sku, cursor)?;
        let month = months.containing(cursor)?;
        let mut piece_end = end.min(month.1);
        if let Some(until) = price.until {
            piece_end = piece_end.min(until);
        }
        each(charge_piece(interval, cursor, piece_end, month, price)?);
        cursor = piece_end;
    }
    Ok(())
}

/// Prices `[from, to)`, which lies in `month` (its start and end) and in `price`'s period.
fn charge_piece(
    interval: &Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    month: (DateTime<Utc>, DateTime<Utc>),
    price: &super::prices::PricePoint,
) -> Result<Piece, BillingError> {
    let seconds = (to - from).num_seconds();
    let unit_seconds = match price.unit {
        PriceUnit::Hour => SECONDS_PER_HOUR,
        PriceUnit::Month => (month.1 - month.0).num_seconds(),
    };
    let discount = price.discount_for(&interval.department);
    let amount = discounted_amount(
        interval.quantity,
        price.price,
        seconds,
        unit_seconds,
        discount,
    )
    .ok_or_else(|| overflow(interval))?;
    Ok(Piece {
        from,
        to,
        unit_price: price.price,
        unit: price.unit,
        per: price.per,
        discount_percent: discount,
        amount,
        unit_seconds,
    })
}

fn overflow(interval: &Interval) -> BillingError {
    BillingError::Overflow {
        what: format!("{} item {}", interval.request, interval.item),
    }
}

/// Refuses what can't be charged or written canonically: text with `|` or control characters,
/// a negative quantity or one with more than two decimals, an end before the start.
fn check(interval: &Interval) -> Result<(), BillingError> {
    let invalid = |reason: String| BillingError::InvalidInterval {
        request: interval.request.clone(),
        item: interval.item.clone(),
        reason,
    };
    for (field, value) in [
        ("department", &interval.department),
        ("provider", &interval.provider),
        ("request", &interval.request),
        ("item", &interval.item),
        ("sku", &interval.sku),
    ] {
        if value.is_empty() || !plain_text(value) {
            return Err(invalid(format!(
                "{field} {value:?} must be non-empty, without '|' or control characters"
            )));
        }
    }
    if interval.quantity.is_sign_negative() && !interval.quantity.is_zero() {
        return Err(invalid(format!(
            "quantity {} is negative",
            interval.quantity
        )));
    }
    if interval.quantity.scale() > 2 && interval.quantity.normalize().scale() > 2 {
        return Err(invalid(format!(
            "quantity {} has more than two decimals",
            interval.quantity
        )));
    }
    if let Some(to) = interval.to
        && whole_seconds(to) < whole_seconds(interval.from)
    {
        return Err(invalid(format!(
            "ends at {} before it starts at {}",
            to.to_rfc3339_opts(SecondsFormat::Secs, true),
            interval.from.to_rfc3339_opts(SecondsFormat::Secs, true)
        )));
    }
    Ok(())
}

/// Without `|` and control characters. Printable ASCII (every name in practice) is told by its
/// bytes, in one pass without branches; anything else by its characters (C1 controls are two
/// bytes in UTF-8).
fn plain_text(value: &str) -> bool {
    let printable_ascii = value
        .bytes()
        .fold(true, |ok, b| ok & (b' '..=b'~').contains(&b) & (b != b'|'));
    printable_ascii || !value.chars().any(|c| c == '|' || c.is_control())
}

/// What a price multiplies for `item`: its count, or for a per-GiB price its count × size in GiB
/// (`objectStorageGiB` for oss, `storageGiB` for the other types).
pub fn metered_quantity(
    item: &ResourceItem,
    per: Option<PricePer>,
) -> Result<Decimal, BillingError> {
    let count = Decimal::from(item.count);
    match per {
        None => Ok(count),
        Some(PricePer::GiB) => {
            let size = match item.type_ {
                ResourceType::Oss => item.object_storage_gi_b,
                _ => item.storage_gi_b,
            };
            let size = size.ok_or_else(|| BillingError::MissingSize {
                item: item.name.clone(),
                sku: item.sku.clone(),
            })?;
            Ok(count * Decimal::from(size))
        }
    }
}
