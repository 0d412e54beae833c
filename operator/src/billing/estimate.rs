//! The cost estimate shown before approval: what a request's items cost in a full average month.
//!
//! An average month is a twelfth of a 365-day year: 730 hours. Per item, with the prices and the
//! department's discount in force at the instant `at`:
//!
//! - `hour` prices: `quantity × price × 730`;
//! - `month` prices: `quantity × price × 1`;
//! - the quantity is the count, or count × size in GiB for per-GiB prices
//!   ([`metered_quantity`]);
//! - the discount applies before rounding, and each item's amount is rounded half-up to 0.01
//!   once; the monthly total is the sum of the rounded items, as in a settlement.
//!
//! For a change, [`monthly_delta`] is `new − old` (negative when the change saves money).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::BillingError;
use super::charge::{metered_quantity, unit_label};
use super::money::{apply_discount, format_money, format_signed, round_fen};
use super::prices::{PricePoint, Prices};
use crate::api::price_book::{PricePer, PriceUnit};
use crate::api::resource_request::Estimate;
use crate::api::{Currency, ResourceItem, ResourceType};

/// Hours in an average month: 365 × 24 / 12.
pub const HOURS_PER_MONTH: i64 = 730;

/// The estimate of one item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EstimateLine {
    pub item: String,
    pub sku: String,
    #[serde(rename = "type")]
    pub resource_type: ResourceType,
    pub quantity: Decimal,
    pub unit_price: Decimal,
    pub unit: PriceUnit,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<PricePer>,
    pub discount_percent: Decimal,
    /// Cost of a full average month, rounded half-up to 0.01 yuan.
    pub amount: Decimal,
}

impl EstimateLine {
    /// `hour`, `month`, `GiB-hour` or `GiB-month`.
    pub fn unit_label(&self) -> &'static str {
        unit_label(self.unit, self.per)
    }
}

/// The monthly estimate of a set of items.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthlyEstimate {
    /// One line per item, in the items' order.
    pub lines: Vec<EstimateLine>,
    /// Sum of the lines.
    pub total: Decimal,
}

impl MonthlyEstimate {
    /// The request status form: `monthly`, and `monthlyDelta` against `running` for a change.
    pub fn to_status(&self, running: Option<&MonthlyEstimate>) -> Result<Estimate, BillingError> {
        Ok(Estimate {
            monthly: format_money("status.estimate.monthly", self.total)?,
            monthly_delta: running.map(|old| format_signed(monthly_delta(self, old))),
            currency: Currency::CNY,
        })
    }
}

/// What `items` of a request of `department` on `provider` cost in a full average month, at the
/// prices in force at `at` (see the module docs).
pub fn estimate_monthly(
    items: &[ResourceItem],
    prices: &Prices,
    provider: &str,
    department: &str,
    at: DateTime<Utc>,
) -> Result<MonthlyEstimate, BillingError> {
    let mut estimate = MonthlyEstimate::default();
    for item in items {
        let overflow = || BillingError::Overflow {
            what: format!("the estimate of item {}", item.name),
        };
        let price = prices.resolve(provider, &item.sku, at)?;
        sizes_agree(item, price)?;
        let quantity = metered_quantity(item, price.per)?;
        let months = match price.unit {
            PriceUnit::Hour => Decimal::from(HOURS_PER_MONTH),
            PriceUnit::Month => Decimal::ONE,
        };
        let discount = price.discount_for(department);
        let gross = quantity
            .checked_mul(price.price)
            .and_then(|x| x.checked_mul(months))
            .ok_or_else(overflow)?;
        let amount = round_fen(apply_discount(gross, discount).ok_or_else(overflow)?);
        estimate.total = estimate.total.checked_add(amount).ok_or_else(overflow)?;
        estimate.lines.push(EstimateLine {
            item: item.name.clone(),
            sku: item.sku.clone(),
            resource_type: item.type_,
            quantity,
            unit_price: price.price,
            unit: price.unit,
            per: price.per,
            discount_percent: discount,
            amount,
        });
    }
    Ok(estimate)
}

/// An item of a SKU whose book says its size asks that size (or leaves it out): a cheap SKU
/// can't be asked for with 512 vCPU and priced as the cheap SKU.
fn sizes_agree(item: &ResourceItem, price: &PricePoint) -> Result<(), BillingError> {
    for (field, asked, has) in [
        ("vcpu", item.vcpu, price.vcpu),
        ("memoryGiB", item.memory_gi_b, price.memory_gi_b),
    ] {
        if let (Some(asked), Some(has)) = (asked, has)
            && asked != has
        {
            return Err(BillingError::SizeMismatch {
                item: item.name.clone(),
                sku: item.sku.clone(),
                book: price.book.to_string(),
                field,
                asked,
                has,
            });
        }
    }
    Ok(())
}

/// The change in monthly cost, `new − old`; negative when the change costs less.
pub fn monthly_delta(new: &MonthlyEstimate, old: &MonthlyEstimate) -> Decimal {
    // Both totals are sums of non-negative amounts that fit in a Decimal, so their difference
    // does too: the subtraction can't overflow.
    new.total - old.total
}
