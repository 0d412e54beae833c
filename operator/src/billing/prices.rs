//! Prices in force: the PriceBooks of all providers, parsed once, and the price of a SKU at an
//! instant.
//!
//! A book prices its SKUs over `[effectiveFrom, effectiveUntil)` (open-ended without
//! `effectiveUntil`). For one provider and SKU at most one book may be in force at any instant;
//! [`find_overlaps`] says which books break that. Admission refuses such a book, but one can
//! still arise (two books created at once, the webhook down): [`Prices::from_books`] then keeps
//! the books and their overlaps, and no price is in force for that provider and SKU over an
//! overlap's range ([`Prices::resolve`] says why), because an ambiguous price would make a
//! settlement depend on the order books were listed in. Everything else prices as usual, so one
//! conflict stops only what it touches.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::BillingError;
use super::calendar::parse_instant;
use super::money::{parse_money, parse_percent};
use crate::api::price_book::{PriceBookSpec, PricePer, PriceUnit};

/// The price of one SKU of one provider over one book's effective range.
#[derive(Clone, Debug, PartialEq)]
pub struct PricePoint {
    /// Name of the PriceBook it comes from.
    pub book: Arc<str>,
    pub provider: String,
    pub sku: String,
    /// `hour` (charged by the second) or `month` (prorated by the seconds of the month).
    pub unit: PriceUnit,
    /// `Some(GiB)` when the price is per GiB of the item's size.
    pub per: Option<PricePer>,
    /// Price per unit in yuan.
    pub price: Decimal,
    /// vCPUs and memory (GiB) of one resource of this SKU, where the book says.
    pub vcpu: Option<u32>,
    pub memory_gi_b: Option<u32>,
    /// In force from this instant (inclusive).
    pub from: DateTime<Utc>,
    /// In force until this instant (exclusive); `None` is open-ended.
    pub until: Option<DateTime<Utc>>,
    /// The book's discounts, department → percent. Hashed: a settlement looks one up for every
    /// piece, and a book may name a thousand departments.
    discounts: Arc<foldhash::HashMap<String, Decimal>>,
}

impl PricePoint {
    /// Whether this price is in force at `at`.
    pub fn in_force_at(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && self.until.is_none_or(|until| at < until)
    }

    /// The book's discount for `department` in percent; zero when the book gives none.
    pub fn discount_for(&self, department: &str) -> Decimal {
        self.discounts
            .get(department)
            .copied()
            .unwrap_or(Decimal::ZERO)
    }
}

/// Two books that price the same provider and SKU over a common time range.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Overlap {
    pub provider: String,
    pub sku: String,
    /// The book that starts first (by name when both start together).
    pub first: String,
    /// The other book; the same as `first` when one book lists a SKU twice.
    pub second: String,
    /// Start of the common range.
    pub from: DateTime<Utc>,
    /// End of the common range; `None` when both are open-ended.
    pub until: Option<DateTime<Utc>>,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let until = self.until.map_or_else(|| "open end".to_owned(), rfc3339);
        write!(
            f,
            "books {} and {} both price provider {} SKU {} from {} to {}",
            self.first,
            self.second,
            self.provider,
            self.sku,
            rfc3339(self.from),
            until
        )
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// All prices of all providers, indexed by (provider, SKU), and where books overlap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    /// provider → SKU → price points sorted by `from`. Nested so that a lookup borrows the names
    /// instead of allocating a key (a settlement looks up every piece).
    points: Index,
    /// Where two books price the same provider and SKU at once: no price is in force there.
    overlaps: Vec<Overlap>,
}

impl Prices {
    /// Parses and indexes books given as (name, spec). Fails on a malformed book (naming the book
    /// and field); overlapping books are kept with their overlaps (see the module's doc).
    pub fn from_books<'a>(
        books: impl IntoIterator<Item = (&'a str, &'a PriceBookSpec)>,
    ) -> Result<Prices, BillingError> {
        let points = index(books)?;
        let overlaps = overlaps_in(&points);
        Ok(Prices { points, overlaps })
    }

    /// Every overlap among the books, sorted (see [`find_overlaps`]).
    pub fn overlaps(&self) -> &[Overlap] {
        &self.overlaps
    }

    /// The overlap that leaves `provider`'s `sku` without a price somewhere in `[from, to)`.
    pub fn conflict_within(
        &self,
        provider: &str,
        sku: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<&Overlap> {
        self.overlaps.iter().find(|o| {
            o.provider == provider
                && o.sku == sku
                && o.from < to
                && o.until.is_none_or(|until| from < until)
        })
    }

    /// The first instant in `[from, to)` at which no book prices `provider`'s `sku` (overlaps
    /// aside: they are [`Prices::conflict_within`]'s).
    pub fn gap_within(
        &self,
        provider: &str,
        sku: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let points = self.points.get(provider).and_then(|skus| skus.get(sku));
        let mut covered_to = from;
        for p in points.into_iter().flatten() {
            if covered_to >= to {
                return None;
            }
            if p.from > covered_to {
                return Some(covered_to);
            }
            match p.until {
                None => return None,
                Some(until) => covered_to = covered_to.max(until),
            }
        }
        (covered_to < to).then_some(covered_to)
    }

    /// The price in force for `provider`'s `sku` at `at`; none where books overlap.
    pub fn resolve(
        &self,
        provider: &str,
        sku: &str,
        at: DateTime<Utc>,
    ) -> Result<&PricePoint, BillingError> {
        if !self.overlaps.is_empty()
            && let Some(o) =
                self.conflict_within(provider, sku, at, at + chrono::TimeDelta::seconds(1))
        {
            return Err(BillingError::OverlappingPriceBooks(vec![o.clone()]));
        }
        self.points
            .get(provider)
            .and_then(|skus| skus.get(sku))
            .and_then(|points| points.iter().find(|p| p.in_force_at(at)))
            .ok_or_else(|| BillingError::NoPrice {
                provider: provider.to_owned(),
                sku: sku.to_owned(),
                at,
            })
    }
}

/// Every pair of books (and every book listing a SKU twice) that prices the same provider and SKU
/// over a common range, sorted by provider, SKU, then book names. Empty when the books are
/// consistent. Fails only on a malformed book.
pub fn find_overlaps<'a>(
    books: impl IntoIterator<Item = (&'a str, &'a PriceBookSpec)>,
) -> Result<Vec<Overlap>, BillingError> {
    Ok(overlaps_in(&index(books)?))
}

type Index = BTreeMap<String, BTreeMap<String, Vec<PricePoint>>>;

fn index<'a>(
    books: impl IntoIterator<Item = (&'a str, &'a PriceBookSpec)>,
) -> Result<Index, BillingError> {
    let mut points: Index = BTreeMap::new();
    for (name, spec) in books {
        for point in parse_book(name, spec)? {
            points
                .entry(point.provider.clone())
                .or_default()
                .entry(point.sku.clone())
                .or_default()
                .push(point);
        }
    }
    for list in points.values_mut().flat_map(BTreeMap::values_mut) {
        list.sort_by(|a, b| a.from.cmp(&b.from).then_with(|| a.book.cmp(&b.book)));
    }
    Ok(points)
}

fn parse_book(name: &str, spec: &PriceBookSpec) -> Result<Vec<PricePoint>, BillingError> {
    let book: Arc<str> = Arc::from(name);
    let invalid = |field: String, reason: String| BillingError::InvalidPriceBook {
        book: name.to_owned(),
        field,
        reason,
    };
    let from = parse_instant("spec.effectiveFrom", &spec.effective_from)
        .map_err(|e| invalid("spec.effectiveFrom".into(), e.to_string()))?;
    let until = spec
        .effective_until
        .as_deref()
        .map(|u| parse_instant("spec.effectiveUntil", u))
        .transpose()
        .map_err(|e| invalid("spec.effectiveUntil".into(), e.to_string()))?;
    if until.is_some_and(|u| u <= from) {
        return Err(invalid(
            "spec.effectiveUntil".into(),
            "must be later than spec.effectiveFrom".into(),
        ));
    }
    let mut discounts = foldhash::HashMap::default();
    for (i, d) in spec.discounts.iter().enumerate() {
        let field = format!("spec.discounts[{i}].percent");
        let percent =
            parse_percent(&field, &d.percent).map_err(|e| invalid(field, e.to_string()))?;
        if discounts.insert(d.department.clone(), percent).is_some() {
            return Err(invalid(
                format!("spec.discounts[{i}].department"),
                format!("department {} has more than one discount", d.department),
            ));
        }
    }
    let discounts = Arc::new(discounts);
    spec.items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("spec.items[{i}].price");
            let price =
                parse_money(&field, &item.price).map_err(|e| invalid(field, e.to_string()))?;
            Ok(PricePoint {
                book: book.clone(),
                provider: spec.provider.clone(),
                sku: item.sku.clone(),
                unit: item.unit,
                per: item.per,
                price,
                vcpu: item.vcpu,
                memory_gi_b: item.memory_gi_b,
                from,
                until,
                discounts: discounts.clone(),
            })
        })
        .collect()
}

fn overlaps_in(points: &Index) -> Vec<Overlap> {
    let mut overlaps = Vec::new();
    for list in points.values().flat_map(BTreeMap::values) {
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                // Sorted by `from`, so `b` starts no earlier than `a`: they overlap when `b`
                // starts before `a` ends.
                if a.until.is_none_or(|until| b.from < until) {
                    let until = match (a.until, b.until) {
                        (Some(x), Some(y)) => Some(x.min(y)),
                        (x, None) | (None, x) => x,
                    };
                    overlaps.push(Overlap {
                        provider: a.provider.clone(),
                        sku: a.sku.clone(),
                        first: a.book.to_string(),
                        second: b.book.to_string(),
                        from: b.from,
                        until,
                    });
                }
            }
        }
    }
    overlaps.sort();
    overlaps
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::api::price_book::{Discount, PriceItem};
    use crate::api::{Currency, Money, Percent};

    /// A book for tests: `items` as (sku, unit, price, per GiB).
    pub(crate) fn book(
        provider: &str,
        from: &str,
        until: Option<&str>,
        items: &[(&str, PriceUnit, &str, bool)],
        discounts: &[(&str, &str)],
    ) -> PriceBookSpec {
        PriceBookSpec {
            provider: provider.into(),
            currency: Currency::CNY,
            effective_from: from.into(),
            effective_until: until.map(Into::into),
            items: items
                .iter()
                .map(|(sku, unit, price, per_gib)| PriceItem {
                    sku: (*sku).into(),
                    unit: *unit,
                    price: Money::from(*price),
                    per: per_gib.then_some(PricePer::GiB),
                    vcpu: None,
                    memory_gi_b: None,
                })
                .collect(),
            discounts: discounts
                .iter()
                .map(|(department, percent)| Discount {
                    department: (*department).into(),
                    percent: Percent((*percent).into()),
                })
                .collect(),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant("t", s).unwrap()
    }

    #[test]
    fn resolves_the_price_in_force_across_books() {
        let h = PriceUnit::Hour;
        let q3 = book(
            "aliyun-gov",
            "2026-07-01T00:00:00+08:00",
            Some("2026-10-15T00:00:00+08:00"),
            &[("ecs.c2.large", h, "0.80", false)],
            &[("gx-finance", "10")],
        );
        let q4 = book(
            "aliyun-gov",
            "2026-10-15T00:00:00+08:00",
            None,
            &[("ecs.c2.large", h, "0.70", false)],
            &[],
        );
        let other = book(
            "huawei-gov",
            "2026-01-01T00:00:00+08:00",
            None,
            &[("ecs.c2.large", h, "0.90", false)],
            &[],
        );
        let prices = Prices::from_books([("q3", &q3), ("q4", &q4), ("hw", &other)]).unwrap();
        let before = prices
            .resolve("aliyun-gov", "ecs.c2.large", t("2026-10-14T23:59:59+08:00"))
            .unwrap();
        assert_eq!((&*before.book, before.price), ("q3", Decimal::new(80, 2)));
        assert_eq!(before.discount_for("gx-finance"), Decimal::TEN);
        assert_eq!(before.discount_for("gx-health"), Decimal::ZERO);
        let after = prices
            .resolve("aliyun-gov", "ecs.c2.large", t("2026-10-15T00:00:00+08:00"))
            .unwrap();
        assert_eq!((&*after.book, after.price), ("q4", Decimal::new(70, 2)));
        let hw = prices
            .resolve("huawei-gov", "ecs.c2.large", t("2026-10-15T00:00:00+08:00"))
            .unwrap();
        assert_eq!(&*hw.book, "hw");
        let err = prices
            .resolve("aliyun-gov", "ecs.c2.large", t("2026-06-30T23:59:59+08:00"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no PriceBook of provider aliyun-gov prices SKU ecs.c2.large at 2026-06-30T15:59:59Z"
        );
        assert!(
            prices
                .resolve("aliyun-gov", "rds.x", t("2026-10-15T00:00:00Z"))
                .is_err()
        );
    }

    #[test]
    fn finds_overlapping_books_for_the_same_sku() {
        let h = PriceUnit::Hour;
        let a = book(
            "p",
            "2026-01-01T00:00:00Z",
            Some("2026-07-01T00:00:00Z"),
            &[("a", h, "1", false), ("b", h, "1", false)],
            &[],
        );
        let b = book(
            "p",
            "2026-06-01T00:00:00Z",
            None,
            &[("b", h, "2", false)],
            &[],
        );
        // Touching ranges don't overlap; another provider's book doesn't either.
        let c = book(
            "p",
            "2026-07-01T00:00:00Z",
            None,
            &[("a", h, "2", false)],
            &[],
        );
        let d = book(
            "q",
            "2026-01-01T00:00:00Z",
            None,
            &[("b", h, "2", false)],
            &[],
        );
        let books = [
            ("book-a", &a),
            ("book-b", &b),
            ("book-c", &c),
            ("book-d", &d),
        ];
        let overlaps = find_overlaps(books).unwrap();
        assert_eq!(
            overlaps,
            vec![Overlap {
                provider: "p".into(),
                sku: "b".into(),
                first: "book-a".into(),
                second: "book-b".into(),
                from: t("2026-06-01T00:00:00Z"),
                until: Some(t("2026-07-01T00:00:00Z")),
            }]
        );
        // Kept: the overlap leaves SKU b of p without a price over the common range only.
        let prices = Prices::from_books(books).unwrap();
        assert_eq!(prices.overlaps(), &overlaps[..]);
        let err = prices
            .resolve("p", "b", t("2026-06-15T00:00:00Z"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PriceBooks overlap: books book-a and book-b both price provider p SKU b \
             from 2026-06-01T00:00:00Z to 2026-07-01T00:00:00Z"
        );
        assert!(prices.resolve("p", "b", t("2026-05-31T23:59:59Z")).is_ok());
        assert!(prices.resolve("p", "b", t("2026-07-01T00:00:00Z")).is_ok());
        assert!(
            prices
                .conflict_within(
                    "p",
                    "b",
                    t("2026-05-01T00:00:00Z"),
                    t("2026-06-01T00:00:00Z")
                )
                .is_none(),
            "a range ending where the overlap starts is untouched"
        );
        assert_eq!(err.metric_label(), "overlapping_price_books");
    }

    #[test]
    fn finds_the_first_instant_no_book_prices() {
        let h = PriceUnit::Hour;
        let first = book(
            "p",
            "2026-01-01T00:00:00Z",
            Some("2026-03-01T00:00:00Z"),
            &[("a", h, "1", false)],
            &[],
        );
        let later = book(
            "p",
            "2026-04-01T00:00:00Z",
            None,
            &[("a", h, "2", false)],
            &[],
        );
        let prices = Prices::from_books([("first", &first), ("later", &later)]).unwrap();
        let gap = |sku: &str, from: &str, to: &str| prices.gap_within("p", sku, t(from), t(to));
        assert_eq!(
            gap("a", "2026-01-15T00:00:00Z", "2026-03-01T00:00:00Z"),
            None
        );
        assert_eq!(
            gap("a", "2026-02-15T00:00:00Z", "2026-05-01T00:00:00Z"),
            Some(t("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            gap("a", "2026-04-01T00:00:00Z", "2030-01-01T00:00:00Z"),
            None
        );
        assert_eq!(
            gap("a", "2025-12-01T00:00:00Z", "2026-02-01T00:00:00Z"),
            Some(t("2025-12-01T00:00:00Z"))
        );
        assert_eq!(
            gap("b", "2026-04-01T00:00:00Z", "2026-04-02T00:00:00Z"),
            Some(t("2026-04-01T00:00:00Z")),
            "a SKU no book prices"
        );
    }

    #[test]
    fn refuses_malformed_books_naming_the_field() {
        let h = PriceUnit::Hour;
        let bad_price = book(
            "p",
            "2026-01-01T00:00:00Z",
            None,
            &[("a", h, "0.805", false)],
            &[],
        );
        let err = Prices::from_books([("b1", &bad_price)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PriceBook b1: spec.items[0].price: "),
            "{err}"
        );
        let backwards = book(
            "p",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:00:00Z"),
            &[("a", h, "1", false)],
            &[],
        );
        let err = Prices::from_books([("b2", &backwards)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PriceBook b2: spec.effectiveUntil: must be later than spec.effectiveFrom"
        );
        let bad_discount = book(
            "p",
            "2026-01-01T00:00:00Z",
            None,
            &[("a", h, "1", false)],
            &[("d", "101")],
        );
        let err = Prices::from_books([("b3", &bad_discount)]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("PriceBook b3: spec.discounts[0].percent: ")
        );
    }
}
