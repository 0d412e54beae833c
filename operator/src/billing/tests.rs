//! Hand-computed examples and properties of the charge engine.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::calendar::{month_containing, parse_instant};
use super::prices::tests::book;
use super::settlement::split_unpriced;
use super::*;
use crate::api::price_book::{PriceBookSpec, PriceUnit};
use crate::api::settlement_report::{Scope, SettlementReportStatus};
use crate::api::{ResourceItem, ResourceType};

const H: PriceUnit = PriceUnit::Hour;
const M: PriceUnit = PriceUnit::Month;

fn t(s: &str) -> DateTime<Utc> {
    parse_instant("t", s).unwrap()
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn interval(sku: &str, quantity: &str, from: &str, to: Option<&str>) -> Interval {
    Interval {
        item: "web".into(),
        sku: sku.into(),
        resource_type: ResourceType::Ecs,
        quantity: d(quantity),
        from: t(from),
        to: to.map(t),
        department: "gx-finance".into(),
        provider: "aliyun-gov".into(),
        request: "gx-finance-prod/portal".into(),
    }
}

/// One open-ended book from 2026-01-01 with the given items and discounts.
fn prices(items: &[(&str, PriceUnit, &str, bool)], discounts: &[(&str, &str)]) -> Prices {
    let b = book(
        "aliyun-gov",
        "2026-01-01T00:00:00+08:00",
        None,
        items,
        discounts,
    );
    Prices::from_books([("aliyun-2026", &b)]).unwrap()
}

fn settle_all(intervals: &[Interval], prices: &Prices, period: &str, now: &str) -> Settlement {
    settle(
        intervals,
        prices,
        &period.parse().unwrap(),
        &Scope::default(),
        &BillingConfig::default(),
        &FixedClock(t(now)),
    )
    .unwrap()
}

fn amounts(s: &Settlement) -> Vec<Decimal> {
    s.lines.iter().map(|l| l.amount).collect()
}

const LATER: &str = "2030-01-01T00:00:00Z";

#[test]
fn hourly_two_instances_for_36_hours() {
    // 0.80 × 2 × 36 = 57.60
    let p = prices(&[("ecs.c2.large", H, "0.80", false)], &[]);
    let i = interval(
        "ecs.c2.large",
        "2",
        "2026-10-01T00:00:00+08:00",
        Some("2026-10-02T12:00:00+08:00"),
    );
    let s = settle_all(&[i], &p, "2026-10", LATER);
    assert_eq!(amounts(&s), [d("57.60")]);
    assert_eq!(s.total, d("57.60"));
    assert_eq!(
        canonical_line(&s.lines[0]),
        "gx-finance|aliyun-gov|gx-finance-prod/portal|web|ecs.c2.large|ecs|\
         2026-09-30T16:00:00Z|2026-10-02T04:00:00Z|2.00|0.80|hour|0.00|57.60\n"
    );
}

#[test]
fn monthly_price_prorated_by_seconds_of_october() {
    // 1800 × 16/31 = 929.0322… → 929.03
    let p = prices(&[("rds.ha.large", M, "1800", false)], &[]);
    let i = interval(
        "rds.ha.large",
        "1",
        "2026-10-16T00:00:00+08:00",
        Some("2026-11-01T00:00:00+08:00"),
    );
    let s = settle_all(&[i], &p, "2026-Q4", LATER);
    assert_eq!(amounts(&s), [d("929.03")]);
}

#[test]
fn an_interval_crossing_october_into_november_splits_into_two_lines() {
    let p = prices(
        &[
            ("ecs.c2.large", H, "0.80", false),
            ("rds.ha.large", M, "1800", false),
        ],
        &[],
    );
    let hourly = interval(
        "ecs.c2.large",
        "1",
        "2026-10-31T12:00:00+08:00",
        Some("2026-11-01T12:00:00+08:00"),
    );
    let s = settle_all(&[hourly], &p, "2026-Q4", LATER);
    assert_eq!(amounts(&s), [d("9.60"), d("9.60")]);
    assert_eq!(s.lines[0].to, t("2026-11-01T00:00:00+08:00"));
    assert_eq!(s.lines[1].from, t("2026-11-01T00:00:00+08:00"));

    // 1800 × 16/31 in October, 1800 × 15/30 in November.
    let monthly = interval(
        "rds.ha.large",
        "1",
        "2026-10-16T00:00:00+08:00",
        Some("2026-11-16T00:00:00+08:00"),
    );
    let s = settle_all(&[monthly], &p, "2026-Q4", LATER);
    assert_eq!(amounts(&s), [d("929.03"), d("900.00")]);
    assert_eq!(s.total, d("1829.03"));
}

#[test]
fn a_price_change_mid_month_splits_at_it() {
    let before = book(
        "aliyun-gov",
        "2026-01-01T00:00:00+08:00",
        Some("2026-10-15T00:00:00+08:00"),
        &[("ecs.c2.large", H, "0.80", false)],
        &[],
    );
    let after = book(
        "aliyun-gov",
        "2026-10-15T00:00:00+08:00",
        None,
        &[("ecs.c2.large", H, "0.60", false)],
        &[],
    );
    let p = Prices::from_books([("h1", &before), ("h2", &after)]).unwrap();
    let i = interval(
        "ecs.c2.large",
        "1",
        "2026-10-10T00:00:00+08:00",
        Some("2026-10-20T00:00:00+08:00"),
    );
    let s = settle_all(&[i], &p, "2026-10", LATER);
    // 5 days at 0.80 and 5 days at 0.60.
    assert_eq!(amounts(&s), [d("96.00"), d("72.00")]);
    assert_eq!(s.lines[0].unit_price, d("0.80"));
    assert_eq!(s.lines[1].from, t("2026-10-15T00:00:00+08:00"));
}

#[test]
fn per_gib_storage() {
    // 2 disks × 500 GiB × 0.35 per GiB-month, all of October.
    let p = prices(&[("storage.ssd", M, "0.35", true)], &[]);
    let item: ResourceItem = serde_json::from_value(serde_json::json!({
        "name": "data", "type": "ecs", "sku": "storage.ssd", "count": 2, "storageGiB": 500
    }))
    .unwrap();
    let per = p
        .resolve("aliyun-gov", "storage.ssd", t("2026-10-01T00:00:00Z"))
        .unwrap()
        .per;
    let quantity = metered_quantity(&item, per).unwrap();
    assert_eq!(quantity, d("1000"));
    let mut i = interval("storage.ssd", "1000", "2026-10-01T00:00:00+08:00", None);
    i.quantity = quantity;
    let s = settle_all(&[i], &p, "2026-10", LATER);
    assert_eq!(amounts(&s), [d("350.00")]);
    assert!(canonical_line(&s.lines[0]).contains("|1000.00|0.35|GiB-month|0.00|350.00\n"));

    let no_size: ResourceItem = serde_json::from_value(serde_json::json!({
        "name": "bucket", "type": "oss", "sku": "oss.std", "count": 1, "storageGiB": 10
    }))
    .unwrap();
    assert_eq!(
        metered_quantity(&no_size, per).unwrap_err().to_string(),
        "item bucket: SKU oss.std is priced per GiB but the item gives no size in GiB"
    );
}

#[test]
fn department_discount_of_ten_percent() {
    // 57.60 × 0.9 = 51.84; another department pays the list price.
    let p = prices(
        &[("ecs.c2.large", H, "0.80", false)],
        &[("gx-finance", "10")],
    );
    let i = interval(
        "ecs.c2.large",
        "2",
        "2026-10-01T00:00:00+08:00",
        Some("2026-10-02T12:00:00+08:00"),
    );
    let mut other = i.clone();
    other.department = "gx-health".into();
    let s = settle_all(&[i, other], &p, "2026-10", LATER);
    assert_eq!(amounts(&s), [d("51.84"), d("57.60")]);
    assert_eq!(s.lines[0].discount_percent, d("10"));
    assert!(canonical_line(&s.lines[0]).ends_with("|0.80|hour|10.00|51.84\n"));
}

#[test]
fn discount_applies_to_the_unrounded_amount_and_rounds_once() {
    // 0.67 × 1.5 h = 1.005; 50% off: 0.5025 → 0.50. Rounding first would give 1.01 → 0.505 → 0.51.
    let p = prices(&[("ecs.t", H, "0.67", false)], &[("gx-finance", "50")]);
    let i = interval(
        "ecs.t",
        "1",
        "2026-10-01T00:00:00Z",
        Some("2026-10-01T01:30:00Z"),
    );
    let s = settle_all(&[i], &p, "2026-10", LATER);
    assert_eq!(amounts(&s), [d("0.50")]);
}

#[test]
fn rounds_half_up() {
    // 0.25 × 0.5 h = 0.125 → 0.13 (banker's rounding would give 0.12).
    let p = prices(&[("eip.bw", H, "0.25", false)], &[]);
    let i = interval(
        "eip.bw",
        "1",
        "2026-10-01T00:00:00Z",
        Some("2026-10-01T00:30:00Z"),
    );
    let s = settle_all(&[i], &p, "2026-10", LATER);
    assert_eq!(amounts(&s), [d("0.13")]);
}

#[test]
fn february_has_28_days() {
    // 1800 × 10/28 = 642.857… → 642.86; a whole February is the whole price.
    let p = prices(&[("rds.ha.large", M, "1800", false)], &[]);
    let part = interval(
        "rds.ha.large",
        "1",
        "2026-02-19T00:00:00+08:00",
        Some("2026-03-01T00:00:00+08:00"),
    );
    let s = settle_all(&[part], &p, "2026-02", LATER);
    assert_eq!(amounts(&s), [d("642.86")]);
    let whole = interval("rds.ha.large", "1", "2026-02-01T00:00:00+08:00", None);
    let s = settle_all(&[whole], &p, "2026-02", LATER);
    assert_eq!(amounts(&s), [d("1800.00")]);
}

#[test]
fn months_follow_the_configured_zone() {
    let p = prices(&[("rds.ha.large", M, "1800", false)], &[]);
    let i = [interval(
        "rds.ha.large",
        "1",
        "2026-10-16T00:00:00Z",
        Some("2026-11-01T00:00:00Z"),
    )];
    let period = |zone| {
        Period::parse_quarter("2026-Q4")
            .unwrap()
            .bounds(zone)
            .unwrap()
    };
    let run = |zone| {
        let config = BillingConfig { zone };
        let window = period(zone);
        let charges = charge_interval(&i[0], window, t(LATER), &p, &config).unwrap();
        charges.iter().map(|c| c.line.amount).collect::<Vec<_>>()
    };
    // In UTC the interval is 16 of October's 31 days.
    assert_eq!(run(chrono_tz::Tz::UTC), [d("929.03")]);
    // In Shanghai it is 376 of October's 744 hours, then 8 of November's 720.
    assert_eq!(run(DEFAULT_ZONE), [d("909.68"), d("20.00")]);
}

#[test]
fn a_range_period_charges_only_what_lies_in_it() {
    let p = prices(&[("ecs.c2.large", H, "1.00", false)], &[]);
    let i = interval("ecs.c2.large", "1", "2026-09-01T00:00:00+08:00", None);
    let s = settle_all(
        &[i],
        &p,
        "2026-10-10T12:00:00+08:00..2026-10-11T00:00:00+08:00",
        LATER,
    );
    assert_eq!(amounts(&s), [d("12.00")]);
    assert_eq!(s.period.start, t("2026-10-10T12:00:00+08:00"));
}

#[test]
fn a_quarter_is_october_first_to_january_first_in_shanghai() {
    let p = prices(&[("rds.ha.large", M, "1800", false)], &[]);
    let i = interval("rds.ha.large", "1", "2026-06-01T00:00:00+08:00", None);
    let s = settle_all(&[i], &p, "2026-Q4", LATER);
    assert_eq!(s.period.start, t("2026-10-01T00:00:00+08:00"));
    assert_eq!(s.period.end, t("2027-01-01T00:00:00+08:00"));
    assert_eq!(amounts(&s), [d("1800.00"), d("1800.00"), d("1800.00")]);
    assert_eq!(s.total, d("5400.00"));
}

#[test]
fn an_open_interval_is_charged_until_now() {
    let p = prices(&[("ecs.c2.large", H, "0.80", false)], &[]);
    let open = [interval(
        "ecs.c2.large",
        "1",
        "2026-10-01T00:00:00+08:00",
        None,
    )];
    // Four days in: 96 h × 0.80.
    let s = settle_all(&open, &p, "2026-10", "2026-10-05T00:00:00+08:00");
    assert_eq!(amounts(&s), [d("76.80")]);
    // Now after the period: up to its end (31 days).
    let s = settle_all(&open, &p, "2026-10", "2026-12-05T00:00:00+08:00");
    assert_eq!(amounts(&s), [d("595.20")]);
    // Now before the period: nothing.
    let s = settle_all(&open, &p, "2026-11", "2026-10-05T00:00:00+08:00");
    assert!(s.lines.is_empty());
    assert_eq!(
        s.checksum,
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}

#[test]
fn totals_by_department_provider_and_type_and_the_status() {
    let p = prices(
        &[
            ("ecs.c2.large", H, "0.80", false),
            ("rds.ha.large", M, "1800", false),
        ],
        &[],
    );
    let mut a = interval(
        "ecs.c2.large",
        "2",
        "2026-10-01T00:00:00+08:00",
        Some("2026-10-02T12:00:00+08:00"),
    );
    a.department = "gx-health".into();
    let mut b = interval("rds.ha.large", "1", "2026-10-16T00:00:00+08:00", None);
    b.resource_type = ResourceType::Rds;
    b.item = "db".into();
    let s = settle_all(&[a.clone(), b.clone()], &p, "2026-10", LATER);
    assert_eq!(s.total, d("986.63"));
    assert_eq!(s.by_department["gx-finance"], d("929.03"));
    assert_eq!(s.by_department["gx-health"], d("57.60"));
    assert_eq!(s.by_provider["aliyun-gov"], d("986.63"));
    assert_eq!(s.by_type["ecs"], d("57.60"));
    assert_eq!(s.by_type["rds"], d("929.03"));
    assert_eq!(s.line_count(), 2);
    // Department order comes before anything else.
    assert_eq!(&*s.lines[0].department, "gx-finance");

    let mut status = SettlementReportStatus::default();
    s.write_status(&mut status).unwrap();
    assert_eq!(status.total.as_ref().unwrap().0, "986.63");
    assert_eq!(status.lines, Some(2));
    assert_eq!(status.by_type[1].key, "rds");
    assert_eq!(status.by_type[1].amount.0, "929.03");
    assert!(status.checksum.as_ref().unwrap().starts_with("sha256:"));
    assert_eq!(
        status.checksum.as_ref().unwrap().len(),
        "sha256:".len() + 64
    );

    // Scope: one department only.
    let scoped = settle(
        &[a, b],
        &p,
        &"2026-10".parse().unwrap(),
        &Scope {
            departments: vec!["gx-health".into()],
            providers: vec![],
        },
        &BillingConfig::default(),
        &FixedClock(t(LATER)),
    )
    .unwrap();
    assert_eq!(scoped.total, d("57.60"));
}

#[test]
fn what_no_book_prices_is_set_apart_with_why() {
    let p = prices(&[("ecs.c2.large", H, "0.80", false)], &[]);
    let priced = interval("ecs.c2.large", "1", "2026-10-01T00:00:00Z", None);
    let mut stray = interval("ecs.g7.xlarge", "1", "2026-10-01T00:00:00Z", None);
    stray.request = "gx-finance-prod/stray".into();
    let early = interval("ecs.c2.large", "1", "2025-12-30T00:00:00Z", None);
    let intervals = [priced, stray, early];
    let window = TimeRange {
        start: t("2026-10-01T00:00:00+08:00"),
        end: t("2026-11-01T00:00:00+08:00"),
    };
    let (chargeable, unpriced) = split_unpriced(&intervals, &p, window, t(LATER));
    // The early interval is charged only inside October, where the book is in force.
    assert_eq!(chargeable.len(), 2);
    assert_eq!(unpriced.len(), 1);
    assert_eq!(unpriced[0].request, "gx-finance-prod/stray");
    assert_eq!(
        unpriced[0].reason,
        "no price: no PriceBook prices provider aliyun-gov SKU ecs.g7.xlarge at \
         2026-10-01T00:00:00Z; add a book that does (or extend one's spec.effectiveUntil)"
    );
}

#[test]
fn unpriced_and_malformed_intervals_are_errors() {
    let p = prices(&[("ecs.c2.large", H, "0.80", false)], &[]);
    let early = interval("ecs.c2.large", "1", "2025-12-31T00:00:00+08:00", None);
    let err = settle(
        &[early],
        &p,
        &Period::parse_range("2025-12-01T00:00:00+08:00", "2026-02-01T00:00:00+08:00").unwrap(),
        &Scope::default(),
        &BillingConfig::default(),
        &FixedClock(t(LATER)),
    )
    .unwrap_err();
    assert_eq!(err.metric_label(), "no_price");

    let mut bad = interval(
        "ecs.c2.large",
        "1",
        "2026-10-02T00:00:00Z",
        Some("2026-10-01T00:00:00Z"),
    );
    let window = TimeRange {
        start: t("2026-10-01T00:00:00Z"),
        end: t("2026-11-01T00:00:00Z"),
    };
    let cfg = BillingConfig::default();
    let err = charge_interval(&bad, window, t(LATER), &p, &cfg).unwrap_err();
    assert!(err.to_string().contains("before it starts"), "{err}");
    bad.to = None;
    bad.item = "a|b".into();
    assert_eq!(
        charge_interval(&bad, window, t(LATER), &p, &cfg)
            .unwrap_err()
            .metric_label(),
        "invalid_interval"
    );
    bad.item = "web".into();
    bad.quantity = d("0.001");
    assert!(charge_interval(&bad, window, t(LATER), &p, &cfg).is_err());
    bad.quantity = d("-1");
    assert!(charge_interval(&bad, window, t(LATER), &p, &cfg).is_err());
}

#[test]
fn monthly_estimate_and_delta() {
    let p = prices(
        &[
            ("ecs.c2.large", H, "0.80", false),
            ("storage.ssd", M, "0.35", true),
            ("rds.ha.large", M, "1800", false),
        ],
        &[("gx-finance", "10")],
    );
    let items: Vec<ResourceItem> = serde_json::from_value(serde_json::json!([
        { "name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 2 },
        { "name": "data", "type": "ecs", "sku": "storage.ssd", "count": 2, "storageGiB": 500 },
        { "name": "db", "type": "rds", "sku": "rds.ha.large" },
    ]))
    .unwrap();
    let at = t("2026-10-01T00:00:00Z");
    let list = estimate_monthly(&items, &p, "aliyun-gov", "gx-health", at).unwrap();
    // 0.80 × 730 × 2 = 1168; 0.35 × 1000 = 350; 1800.
    let amounts: Vec<Decimal> = list.lines.iter().map(|l| l.amount).collect();
    assert_eq!(amounts, [d("1168.00"), d("350.00"), d("1800.00")]);
    assert_eq!(list.total, d("3318.00"));
    assert_eq!(list.lines[1].unit_label(), "GiB-month");
    let discounted = estimate_monthly(&items, &p, "aliyun-gov", "gx-finance", at).unwrap();
    assert_eq!(discounted.total, d("2986.20"));

    let smaller = estimate_monthly(&items[..1], &p, "aliyun-gov", "gx-health", at).unwrap();
    assert_eq!(monthly_delta(&smaller, &list), d("-2150.00"));
    let status = smaller.to_status(Some(&list)).unwrap();
    assert_eq!(status.monthly.0, "1168.00");
    assert_eq!(status.monthly_delta.as_deref(), Some("-2150.00"));
    assert_eq!(list.to_status(None).unwrap().monthly_delta, None);
}

#[test]
fn an_item_asking_more_than_its_sku_is_not_priced_as_that_sku() {
    let mut spec = book(
        "aliyun-gov",
        "2026-01-01T00:00:00+08:00",
        None,
        &[("ecs.c2.large", H, "0.80", false)],
        &[],
    );
    spec.items[0].vcpu = Some(2);
    spec.items[0].memory_gi_b = Some(4);
    let p = Prices::from_books([("aliyun-2026", &spec)]).unwrap();
    let item = |extra: serde_json::Value| -> Vec<ResourceItem> {
        let mut v =
            serde_json::json!({"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        vec![serde_json::from_value(v).unwrap()]
    };
    let at = t("2026-10-01T00:00:00Z");
    let err = estimate_monthly(
        &item(serde_json::json!({"vcpu": 512})),
        &p,
        "aliyun-gov",
        "d",
        at,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "item web asks vcpu 512, but SKU ecs.c2.large has 2 (PriceBook aliyun-2026): ask a SKU \
         of that size, or leave vcpu out"
    );
    assert_eq!(err.metric_label(), "size_mismatch");
    for fits in [
        serde_json::json!({"vcpu": 2, "memoryGiB": 4}),
        serde_json::json!({}),
    ] {
        let priced = estimate_monthly(&item(fits), &p, "aliyun-gov", "d", at).unwrap();
        assert_eq!(priced.total, d("584.00"));
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

const PROVIDER: &str = "aliyun-gov";
const SKUS: [(&str, PriceUnit, bool); 3] = [("h", H, false), ("m", M, false), ("g", M, true)];

/// Instants are drawn from 2026-01-01T00:00:00Z plus up to ~500 days, in seconds.
fn base() -> DateTime<Utc> {
    t("2026-01-01T00:00:00Z")
}

fn at(offset: i64) -> DateTime<Utc> {
    base() + Duration::seconds(offset)
}

const SPAN: i64 = 500 * 86_400;

/// Consecutive books with price changes at random instants; the first starts before all intervals
/// and the last is open-ended.
fn books_strategy() -> impl Strategy<Value = Vec<(String, PriceBookSpec)>> {
    (
        proptest::collection::btree_set(1..SPAN, 0..4),
        proptest::collection::vec((1u32..100_000, 1u32..100_000, 1u32..1_000, 0u32..=100), 5),
    )
        .prop_map(|(cuts, price_sets)| {
            let mut starts = vec![t("2025-01-01T00:00:00Z")];
            starts.extend(cuts.into_iter().map(at));
            let fmt = |cents: u32| format!("{}.{:02}", cents / 100, cents % 100);
            starts
                .iter()
                .enumerate()
                .map(|(i, from)| {
                    let until = starts.get(i + 1).map(|u| u.to_rfc3339());
                    let (ph, pm, pg, discount) = price_sets[i];
                    let spec = book(
                        PROVIDER,
                        &from.to_rfc3339(),
                        until.as_deref(),
                        &[
                            ("h", H, &fmt(ph), false),
                            ("m", M, &fmt(pm), false),
                            ("g", M, &fmt(pg), true),
                        ],
                        &[("d1", &discount.to_string())],
                    );
                    (format!("book-{i}"), spec)
                })
                .collect()
        })
}

fn interval_strategy() -> impl Strategy<Value = Interval> {
    (
        0..SPAN,
        0i64..(120 * 86_400),
        any::<bool>(),
        0usize..3,
        0u32..100_000,
        prop_oneof![Just("d1"), Just("d2")],
        prop_oneof![Just("r1"), Just("r2"), Just("r3")],
    )
        .prop_map(|(from, len, open, sku, hundredths, department, item)| {
            let (sku, _, _) = SKUS[sku];
            Interval {
                item: item.into(),
                sku: sku.into(),
                resource_type: ResourceType::ALL[item.len() % 5],
                quantity: Decimal::new(i64::from(hundredths), 2),
                from: at(from),
                to: (!open).then(|| at(from + len)),
                department: department.into(),
                provider: PROVIDER.into(),
                request: format!("ns-{department}/req"),
            }
        })
}

fn period_strategy() -> impl Strategy<Value = Period> {
    prop_oneof![
        (1u32..=12).prop_map(|m| format!("2026-{m:02}").parse().unwrap()),
        (1u32..=4).prop_map(|q| format!("2026-Q{q}").parse().unwrap()),
        (0..SPAN, 1i64..(100 * 86_400)).prop_map(|(from, len)| Period::Range {
            from: at(from),
            to: at(from + len),
        }),
    ]
}

fn prices_of(books: &[(String, PriceBookSpec)]) -> Prices {
    Prices::from_books(books.iter().map(|(n, s)| (n.as_str(), s))).unwrap()
}

fn settle_with(
    intervals: &[Interval],
    prices: &Prices,
    period: &Period,
    now: DateTime<Utc>,
) -> Settlement {
    settle(
        intervals,
        prices,
        period,
        &Scope::default(),
        &BillingConfig::default(),
        &FixedClock(now),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The total is the sum of the lines, and so is each breakdown.
    #[test]
    fn total_is_the_sum_of_the_lines(
        books in books_strategy(),
        intervals in proptest::collection::vec(interval_strategy(), 0..12),
        period in period_strategy(),
        now in 0..SPAN,
    ) {
        let s = settle_with(&intervals, &prices_of(&books), &period, at(now));
        let sum: Decimal = s.lines.iter().map(|l| l.amount).sum();
        prop_assert_eq!(s.total, sum);
        for breakdown in [&s.by_department, &s.by_provider, &s.by_type] {
            prop_assert_eq!(breakdown.values().copied().sum::<Decimal>(), sum);
        }
        for line in &s.lines {
            prop_assert_eq!(line.amount, line.amount.round_dp(2));
        }
    }

    /// Splitting an interval at any instant charges the same unrounded amount (to within
    /// Decimal's 28-digit division: 10⁻¹⁸ yuan), and the rounded lines differ by at most 0.01 per piece.
    #[test]
    fn splitting_an_interval_keeps_the_unrounded_amount(
        books in books_strategy(),
        interval in interval_strategy(),
        cut in any::<proptest::sample::Index>(),
    ) {
        let prices = prices_of(&books);
        let cfg = BillingConfig::default();
        let window = TimeRange { start: at(-86_400), end: at(SPAN + 200 * 86_400) };
        let now = at(SPAN);
        let end = interval.to.unwrap_or(now);
        let seconds = (end - interval.from).num_seconds();
        // A cut at any whole second of the interval, ends included.
        let split = interval.from + Duration::seconds(cut.index(seconds as usize + 1) as i64);
        let (mut first, mut second) = (interval.clone(), interval.clone());
        first.to = Some(split);
        second.from = split;

        let whole = charge_interval(&interval, window, now, &prices, &cfg).unwrap();
        let mut parts = charge_interval(&first, window, now, &prices, &cfg).unwrap();
        parts.extend(charge_interval(&second, window, now, &prices, &cfg).unwrap());

        let exact = |c: &[Charge]| c.iter().map(|c| c.exact).sum::<Decimal>();
        let rounded = |c: &[Charge]| c.iter().map(|c| c.line.amount).sum::<Decimal>();
        let secs = |c: &[Charge]| c.iter().map(|c| (c.line.to - c.line.from).num_seconds()).sum::<i64>();
        prop_assert_eq!(secs(&whole), secs(&parts));
        prop_assert!((exact(&whole) - exact(&parts)).abs() <= d("0.000000000000000001"),
            "whole {} parts {}", exact(&whole), exact(&parts));
        let pieces = Decimal::from(parts.len().max(whole.len()) as u64);
        prop_assert!((rounded(&whole) - rounded(&parts)).abs() <= d("0.01") * pieces);
    }

    /// Every line lies in the period, in one calendar month and in one price period.
    #[test]
    fn lines_lie_in_the_period_one_month_and_one_price(
        books in books_strategy(),
        intervals in proptest::collection::vec(interval_strategy(), 0..12),
        period in period_strategy(),
        now in 0..SPAN,
    ) {
        let prices = prices_of(&books);
        let cfg = BillingConfig::default();
        let s = settle_with(&intervals, &prices, &period, at(now));
        let bounds = period.bounds(cfg.zone).unwrap();
        prop_assert_eq!(s.period, bounds);
        for line in &s.lines {
            prop_assert!(line.from < line.to);
            prop_assert!(bounds.start <= line.from && line.to <= bounds.end);
            let (_, month_start, month_end) = month_containing(cfg.zone, line.from).unwrap();
            prop_assert!(month_start <= line.from && line.to <= month_end);
            let price = prices.resolve(&line.provider, &line.sku, line.from).unwrap();
            prop_assert!(price.in_force_at(line.to - Duration::seconds(1)));
            prop_assert_eq!(price.price, line.unit_price);
        }
    }

    /// The same input gives the same checksum, whatever the order of the intervals.
    #[test]
    fn the_checksum_is_deterministic_and_order_independent(
        books in books_strategy(),
        (intervals, shuffled) in proptest::collection::vec(interval_strategy(), 0..12)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        period in period_strategy(),
        now in 0..SPAN,
    ) {
        let prices = prices_of(&books);
        let a = settle_with(&intervals, &prices, &period, at(now));
        let b = settle_with(&intervals, &prices, &period, at(now));
        let c = settle_with(&shuffled, &prices, &period, at(now));
        prop_assert_eq!(&a.checksum, &b.checksum);
        prop_assert_eq!(&a.checksum, &c.checksum);
        prop_assert_eq!(&a, &c);
        prop_assert_eq!(&a.checksum, &checksum(&a.lines));
    }
}
