//! Errors of the charge engine. Each names what is wrong and where, so that a controller can put
//! it in a condition message as is.

use chrono::{DateTime, SecondsFormat, Utc};

use super::prices::Overlap;

/// Why a charge, an estimate or a settlement could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    /// An amount string that is not a valid `Money` (`^(0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?$`).
    #[error(
        "{field}: {value:?} is not an amount in yuan; expected digits with at most two decimals, e.g. \"1234.56\""
    )]
    InvalidMoney { field: String, value: String },
    /// A percentage string outside `0`..=`100` or with more than two decimals.
    #[error(
        "{field}: {value:?} is not a percentage; expected 0 to 100 with at most two decimals, e.g. \"12.5\""
    )]
    InvalidPercent { field: String, value: String },
    /// An amount too large (or negative where it can't be) to be written as `Money`.
    #[error("{field}: {value} can't be written as an amount in yuan (0 to 9999999999999.99)")]
    AmountOutOfRange { field: String, value: String },
    /// Arithmetic left the range of `Decimal` (about 7.9 × 10²⁸).
    #[error("amount overflow while charging {what}")]
    Overflow { what: String },
    /// A timestamp that is not RFC 3339.
    #[error(
        "{field}: {value:?} is not an RFC 3339 instant; expected e.g. \"2026-10-01T00:00:00+08:00\""
    )]
    InvalidTimestamp { field: String, value: String },
    /// A settlement period that is malformed; `expected` says the allowed form.
    #[error("{field}: {value:?} is not valid; expected {expected}")]
    InvalidPeriod {
        field: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A PriceBook whose own fields don't make sense (e.g. until before from).
    #[error("PriceBook {book}: {field}: {reason}")]
    InvalidPriceBook {
        book: String,
        field: String,
        reason: String,
    },
    /// Books for the same provider and SKU overlap in time, so the price in force is ambiguous.
    #[error("{}", overlaps_message(.0))]
    OverlappingPriceBooks(Vec<Overlap>),
    /// No PriceBook gives a price for this provider and SKU at this instant.
    #[error("no PriceBook of provider {provider} prices SKU {sku} at {}", .at.to_rfc3339_opts(SecondsFormat::Secs, true))]
    NoPrice {
        provider: String,
        sku: String,
        at: DateTime<Utc>,
    },
    /// A metered interval that can't be charged as given.
    #[error("interval of {request} item {item}: {reason}")]
    InvalidInterval {
        request: String,
        item: String,
        reason: String,
    },
    /// A resource item priced per GiB that gives no size.
    #[error("item {item}: SKU {sku} is priced per GiB but the item gives no size in GiB")]
    MissingSize { item: String, sku: String },
    /// An item asks a size its SKU doesn't have (the book says what one resource of it is).
    #[error(
        "item {item} asks {field} {asked}, but SKU {sku} has {has} (PriceBook {book}): ask a SKU of that size, or leave {field} out"
    )]
    SizeMismatch {
        item: String,
        sku: String,
        book: String,
        field: &'static str,
        asked: u32,
        has: u32,
    },
    /// A local calendar instant that the time zone never shows (a gap of many hours).
    #[error("the time zone {zone} has no instant at or after {local} within a day")]
    NoLocalTime { zone: String, local: String },
}

impl BillingError {
    /// Short, stable label for metrics and condition reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            BillingError::InvalidMoney { .. } => "invalid_money",
            BillingError::InvalidPercent { .. } => "invalid_percent",
            BillingError::AmountOutOfRange { .. } => "amount_out_of_range",
            BillingError::Overflow { .. } => "overflow",
            BillingError::InvalidTimestamp { .. } => "invalid_timestamp",
            BillingError::InvalidPeriod { .. } => "invalid_period",
            BillingError::InvalidPriceBook { .. } => "invalid_price_book",
            BillingError::OverlappingPriceBooks(_) => "overlapping_price_books",
            BillingError::NoPrice { .. } => "no_price",
            BillingError::InvalidInterval { .. } => "invalid_interval",
            BillingError::MissingSize { .. } => "missing_size",
            BillingError::SizeMismatch { .. } => "size_mismatch",
            BillingError::NoLocalTime { .. } => "no_local_time",
        }
    }
}

fn overlaps_message(overlaps: &[Overlap]) -> String {
    let parts: Vec<String> = overlaps.iter().map(ToString::to_string).collect();
    format!("PriceBooks overlap: {}", parts.join("; "))
}
