//! The reservation engine. Quota is reserved when a request is admitted, never over-committed,
//! and always derivable from the set of requests: each request's status records what it holds
//! (`Reserved` until Active, `Used` while Active), so the totals are sums over requests.

use std::{collections::BTreeMap, fmt};

use rust_decimal::Decimal;

use crate::api::{ResourceItem, ResourceType, cloud_quota::QuotaLimits as ApiLimits};

/// One quota dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Vcpu,
    MemoryGiB,
    StorageGiB,
    Instances,
    PublicIPs,
    BandwidthMbps,
    Databases,
    ObjectStorageGiB,
    MonthlyCost,
}

impl Dimension {
    pub const ALL: [Dimension; 9] = [
        Self::Vcpu,
        Self::MemoryGiB,
        Self::StorageGiB,
        Self::Instances,
        Self::PublicIPs,
        Self::BandwidthMbps,
        Self::Databases,
        Self::ObjectStorageGiB,
        Self::MonthlyCost,
    ];

    /// The field name in `spec.hard`.
    pub fn field(self) -> &'static str {
        match self {
            Self::Vcpu => "vcpu",
            Self::MemoryGiB => "memoryGiB",
            Self::StorageGiB => "storageGiB",
            Self::Instances => "instances",
            Self::PublicIPs => "publicIPs",
            Self::BandwidthMbps => "bandwidthMbps",
            Self::Databases => "databases",
            Self::ObjectStorageGiB => "objectStorageGiB",
            Self::MonthlyCost => "monthlyCost",
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// Amounts per dimension; a dimension not present is zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Amounts(BTreeMap<Dimension, Decimal>);

/// Limits per dimension; a dimension not present is not limited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits(BTreeMap<Dimension, Decimal>);

/// `vcpu 2, memoryGiB 4, monthlyCost 584.00`: the dimensions present, in their order; `nothing`
/// when none is.
impl fmt::Display for Amounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("nothing");
        }
        let parts: Vec<String> = self.0.iter().map(|(d, v)| format!("{d} {v}")).collect();
        f.write_str(&parts.join(", "))
    }
}

impl std::ops::Add for Amounts {
    type Output = Amounts;
    fn add(self, other: Amounts) -> Amounts {
        self.plus(&other)
    }
}

impl Amounts {
    pub fn get(&self, d: Dimension) -> Decimal {
        self.0.get(&d).copied().unwrap_or_default()
    }

    pub fn add(&mut self, d: Dimension, v: Decimal) {
        if !v.is_zero() {
            *self.0.entry(d).or_default() += v;
            if self.0.get(&d).is_some_and(|x| x.is_zero()) {
                self.0.remove(&d);
            }
        }
    }

    pub fn plus(&self, other: &Amounts) -> Amounts {
        let mut sum = self.clone();
        for (d, v) in &other.0 {
            sum.add(*d, *v);
        }
        sum
    }

    pub fn minus(&self, other: &Amounts) -> Amounts {
        let mut diff = self.clone();
        for (d, v) in &other.0 {
            diff.add(*d, -*v);
        }
        diff
    }

    pub fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    /// What `self` asks beyond `base`, per dimension; never negative.
    pub fn exceeding(&self, base: &Amounts) -> Amounts {
        let mut beyond = Amounts::default();
        for (d, v) in &self.0 {
            beyond.add(*d, (*v - base.get(*d)).max(Decimal::ZERO));
        }
        beyond
    }

    /// As the API's quota amounts (counts as integers, money with two decimals).
    pub fn to_api(&self) -> ApiLimits {
        to_api(&self.0, true)
    }

    /// From the API's amounts; zero entries are dropped, so that amounts read back from a
    /// status compare equal to the same amounts computed from a spec.
    pub fn from_api(limits: &ApiLimits) -> Amounts {
        let mut a = Amounts::default();
        for (d, v) in from_api(limits) {
            a.add(d, v);
        }
        a
    }
}

impl Limits {
    pub fn get(&self, d: Dimension) -> Option<Decimal> {
        self.0.get(&d).copied()
    }

    pub fn from_api(limits: &ApiLimits) -> Limits {
        Limits(from_api(limits))
    }

    pub fn to_api(&self) -> ApiLimits {
        to_api(&self.0, false)
    }

    /// Several valid quotas add up: a dimension is limited if any quota limits it, to the sum of
    /// the limits given.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Limits>) -> Limits {
        let mut total = BTreeMap::new();
        for limits in all {
            for (d, v) in &limits.0 {
                *total.entry(*d).or_insert(Decimal::ZERO) += *v;
            }
        }
        Limits(total)
    }

    /// What is left after `held`: limited dimensions only, may be negative when over-held.
    pub fn remaining(&self, held: &Amounts) -> Limits {
        Limits(
            self.0
                .iter()
                .map(|(d, v)| (*d, *v - held.get(*d)))
                .collect(),
        )
    }

    /// The limited dimensions.
    pub fn dimensions(&self) -> impl Iterator<Item = (Dimension, Decimal)> + '_ {
        self.0.iter().map(|(d, v)| (*d, *v))
    }
}

fn from_api(l: &ApiLimits) -> BTreeMap<Dimension, Decimal> {
    let counts = [
        (Dimension::Vcpu, l.vcpu),
        (Dimension::MemoryGiB, l.memory_gi_b),
        (Dimension::StorageGiB, l.storage_gi_b),
        (Dimension::Instances, l.instances),
        (Dimension::PublicIPs, l.public_i_ps),
        (Dimension::BandwidthMbps, l.bandwidth_mbps),
        (Dimension::Databases, l.databases),
        (Dimension::ObjectStorageGiB, l.object_storage_gi_b),
    ];
    let mut map: BTreeMap<_, _> = counts
        .into_iter()
        .filter_map(|(d, v)| v.map(|v| (d, Decimal::from(v))))
        .collect();
    if let Some(cost) = l
        .monthly_cost
        .as_ref()
        .and_then(|m| m.0.parse::<Decimal>().ok())
    {
        map.insert(Dimension::MonthlyCost, cost);
    }
    map
}

fn to_api(map: &BTreeMap<Dimension, Decimal>, zeros: bool) -> ApiLimits {
    let count = |d: Dimension| -> Option<u64> {
        match map.get(&d) {
            Some(v) => Some(u64::try_from(v.max(&Decimal::ZERO).trunc()).unwrap_or(u64::MAX)),
            None if zeros => Some(0),
            None => None,
        }
    };
    let cost = match map.get(&Dimension::MonthlyCost) {
        Some(v) => Some(crate::api::Money(
            v.max(&Decimal::ZERO).round_dp(2).to_string(),
        )),
        None if zeros => Some(crate::api::Money("0".into())),
        None => None,
    };
    ApiLimits {
        vcpu: count(Dimension::Vcpu),
        memory_gi_b: count(Dimension::MemoryGiB),
        storage_gi_b: count(Dimension::StorageGiB),
        instances: count(Dimension::Instances),
        public_i_ps: count(Dimension::PublicIPs),
        bandwidth_mbps: count(Dimension::BandwidthMbps),
        databases: count(Dimension::Databases),
        object_storage_gi_b: count(Dimension::ObjectStorageGiB),
        monthly_cost: cost,
    }
}

/// What a request's items take from quota. `monthly_cost` comes from the cost estimate, when
/// there is one.
pub fn demand(items: &[ResourceItem], monthly_cost: Option<Decimal>) -> Amounts {
    let mut a = Amounts::default();
    for item in items {
        let n = Decimal::from(item.count);
        let each = |v: Option<u32>| n * Decimal::from(v.unwrap_or(0));
        a.add(Dimension::Vcpu, each(item.vcpu));
        a.add(Dimension::MemoryGiB, each(item.memory_gi_b));
        a.add(Dimension::StorageGiB, each(item.storage_gi_b));
        a.add(Dimension::ObjectStorageGiB, each(item.object_storage_gi_b));
        a.add(Dimension::BandwidthMbps, each(item.bandwidth_mbps));
        match item.type_ {
            ResourceType::Ecs => a.add(Dimension::Instances, n),
            ResourceType::Rds => {
                a.add(Dimension::Instances, n);
                a.add(Dimension::Databases, n);
            }
            ResourceType::Eip => a.add(Dimension::PublicIPs, n),
            ResourceType::Oss | ResourceType::Slb => {}
        }
    }
    if let Some(cost) = monthly_cost {
        // Held amounts are written with two decimals; rounding here keeps a holding read back
        // from status equal to the demand computed from the spec.
        a.add(Dimension::MonthlyCost, cost.round_dp(2));
    }
    a
}

/// The first dimension in which `asked` does not fit into `remaining`, if any.
pub fn shortfall(asked: &Amounts, remaining: &Limits) -> Option<Shortfall> {
    Dimension::ALL.into_iter().find_map(|d| {
        let available = remaining.get(d)?;
        let requested = asked.get(d);
        (requested > available).then_some(Shortfall {
            dimension: d,
            requested,
            available,
        })
    })
}

/// A dimension that does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub dimension: Dimension,
    pub requested: Decimal,
    pub available: Decimal,
}

/// A request waiting to be admitted, in submission order.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// `namespace/name`.
    pub key: String,
    pub asked: Amounts,
    /// Why the monthly cost is unknown, when it is (no provider, no price for a SKU, …).
    pub unpriced: Option<String>,
}

/// The department's capacity: its combined valid quotas and, when enforced, its budget.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Names of the quotas that make it up, `namespace/name`.
    pub quotas: Vec<String>,
    pub hard: Limits,
    /// The annual budget, when the Department enforces it (`spec.budget.enforce`).
    pub budget: Option<BudgetLimit>,
}

/// An enforced annual budget: a request is admitted only if this year's spend plus the monthly
/// cost of everything the department holds (its own included), prorated over the months left in
/// the year, stays within the budget.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetLimit {
    pub year: i32,
    pub annual: Decimal,
    /// Charged this year so far (the Department's `status.budget.spent`).
    pub spent: Decimal,
    /// Months left in the year (see `billing::budget::months_left`).
    pub months_left: Decimal,
}

impl BudgetLimit {
    /// Why holding `monthly` a month in all, on top of what was spent, would exceed the budget;
    /// `None` when it fits. `asked` is the candidate's part of `monthly`.
    fn refuses(&self, monthly: Decimal, asked: Decimal) -> Option<String> {
        let projected = self.spent + monthly * self.months_left;
        (projected > self.annual).then(|| {
            let round = |d: Decimal| format!("{:.2}", d.round_dp(2));
            format!(
                "annual budget {year} of ¥{annual}: spent ¥{spent}, and ¥{monthly} a month held \
                 with this request's ¥{asked} adds ¥{rest} by the year end, ¥{projected} in all; \
                 raise the Department's spec.budget.annual or retire requests",
                year = self.year,
                spent = round(self.spent),
                asked = round(asked),
                monthly = round(monthly),
                rest = round(monthly * self.months_left),
                projected = round(projected),
                annual = round(self.annual),
            )
        })
    }
}

/// The decision for one candidate.
#[derive(Clone, Debug, PartialEq)]
pub enum Admission {
    /// Reserve `asked`.
    Reserve,
    /// Wait, with a message that says why and what would let it proceed.
    Wait(String),
}

/// Admit candidates in submission order against `capacity` minus what is already `held`.
/// Strictly first come, first served: once one candidate has to wait, the ones after it wait
/// too (a stream of small requests can't starve a large one), each told why. A candidate that
/// asks more than the quotas allow in all can't be served by any amount of waiting: it waits
/// without holding up the ones after it.
pub fn admit(
    candidates: &[Candidate],
    capacity: &Capacity,
    held: &Amounts,
) -> Vec<(String, Admission)> {
    let mut held = held.clone();
    let mut blocked_by: Option<&str> = None;
    let quota_name = if capacity.quotas.len() == 1 {
        format!("quota {}", capacity.quotas[0])
    } else {
        format!("quotas {}", capacity.quotas.join(", "))
    };
    candidates
        .iter()
        .map(|c| {
            let decision = if capacity.quotas.is_empty() {
                Admission::Wait("no valid CloudQuota for this department: ask the platform team for one".to_owned())
            } else {
                let remaining = capacity.hard.remaining(&held);
                let limits_cost = capacity.hard.get(Dimension::MonthlyCost).is_some();
                let cost_unknown = c.unpriced.as_ref().filter(|_| limits_cost || capacity.budget.is_some());
                let monthly = held.get(Dimension::MonthlyCost) + c.asked.get(Dimension::MonthlyCost);
                let over_budget = capacity.budget.as_ref().and_then(|b| b.refuses(monthly, c.asked.get(Dimension::MonthlyCost)));
                match (shortfall(&c.asked, &remaining), blocked_by) {
                    _ if cost_unknown.is_some() => Admission::Wait(format!(
                        "{}, but this request has no cost estimate: {}",
                        if limits_cost { format!("{quota_name} limits monthlyCost") } else { "the annual budget is enforced".to_owned() },
                        cost_unknown.map(String::as_str).unwrap_or_default()
                    )),
                    (Some(s), _) => Admission::Wait(format!(
                        "{quota_name}: {} requested {}, available {} of {}",
                        s.dimension,
                        s.requested.normalize(),
                        s.available.max(Decimal::ZERO).normalize(),
                        capacity.hard.get(s.dimension).unwrap_or_default().normalize()
                    )),
                    (None, Some(head)) => Admission::Wait(format!("{quota_name}: fits, but waits for the earlier request {head} (submission order)")),
                    (None, None) => match over_budget {
                        Some(message) => Admission::Wait(message),
                        None => Admission::Reserve,
                    },
                }
            };
            let never_fits = shortfall(&c.asked, &capacity.hard).is_some();
            match &decision {
                Admission::Reserve => held = held.plus(&c.asked),
                Admission::Wait(_) if never_fits => {}
                Admission::Wait(_) => {
                    blocked_by.get_or_insert(c.key.as_str());
                }
            }
            (c.key.clone(), decision)
        })
        .collect()
}

/// Totals of what requests hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub reserved: Amounts,
    pub used: Amounts,
}

impl Usage {
    pub fn held(&self) -> Amounts {
        self.reserved.plus(&self.used)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal_macros_free::dec;

    use super::*;

    /// `dec!` without the macro crate: parse a literal.
    mod rust_decimal_macros_free {
        macro_rules! dec {
            ($e:expr) => {
                rust_decimal::Decimal::from_str_exact(stringify!($e)).expect("decimal literal")
            };
        }
        pub(crate) use dec;
    }

    fn item(
        name: &str,
        t: ResourceType,
        count: u32,
        vcpu: Option<u32>,
        mem: Option<u32>,
    ) -> ResourceItem {
        ResourceItem {
            name: name.into(),
            type_: t,
            sku: "sku".into(),
            count,
            vcpu,
            memory_gi_b: mem,
            storage_gi_b: Some(100),
            object_storage_gi_b: None,
            bandwidth_mbps: None,
        }
    }

    fn vcpu(n: u32) -> Amounts {
        let mut a = Amounts::default();
        a.add(Dimension::Vcpu, Decimal::from(n));
        a
    }

    fn capacity(vcpus: u32) -> Capacity {
        let mut hard = BTreeMap::new();
        hard.insert(Dimension::Vcpu, Decimal::from(vcpus));
        Capacity {
            quotas: vec!["gx-finance/base".into()],
            hard: Limits(hard),
            budget: None,
        }
    }

    #[test]
    fn demand_counts_every_dimension_per_type() {
        let items = [
            item("web", ResourceType::Ecs, 2, Some(4), Some(8)),
            item("db", ResourceType::Rds, 1, None, None),
            ResourceItem {
                bandwidth_mbps: Some(50),
                storage_gi_b: None,
                ..item("ip", ResourceType::Eip, 2, None, None)
            },
        ];
        let d = demand(&items, Some(dec!(1234.50)));
        assert_eq!(d.get(Dimension::Vcpu), dec!(8));
        assert_eq!(d.get(Dimension::MemoryGiB), dec!(16));
        assert_eq!(d.get(Dimension::StorageGiB), dec!(300));
        assert_eq!(d.get(Dimension::Instances), dec!(3));
        assert_eq!(d.get(Dimension::Databases), dec!(1));
        assert_eq!(d.get(Dimension::PublicIPs), dec!(2));
        assert_eq!(d.get(Dimension::BandwidthMbps), dec!(100));
        assert_eq!(d.get(Dimension::MonthlyCost), dec!(1234.50));
    }

    #[test]
    fn message_names_quota_dimension_request_and_availability() {
        let out = admit(
            &[Candidate {
                key: "gx-finance/big".into(),
                asked: vcpu(16),
                unpriced: None,
            }],
            &capacity(64),
            &vcpu(56),
        );
        assert_eq!(
            out[0].1,
            Admission::Wait("quota gx-finance/base: vcpu requested 16, available 8 of 64".into())
        );
    }

    #[test]
    fn first_come_first_served() {
        let c = |k: &str, n| Candidate {
            key: k.into(),
            asked: vcpu(n),
            unpriced: None,
        };
        let out = admit(
            &[c("a", 30), c("b", 40), c("c", 10)],
            &capacity(50),
            &Amounts::default(),
        );
        assert_eq!(out[0].1, Admission::Reserve);
        assert!(
            matches!(&out[1].1, Admission::Wait(m) if m.contains("vcpu requested 40, available 20 of 50"))
        );
        // c would fit on its own, but b came first.
        assert!(
            matches!(&out[2].1, Admission::Wait(m) if m.contains("waits for the earlier request b"))
        );
        // One asking more than the quota allows in all never holds up the ones after it.
        let out = admit(
            &[c("huge", 51), c("d", 10)],
            &capacity(50),
            &Amounts::default(),
        );
        assert!(
            matches!(&out[0].1, Admission::Wait(m) if m.contains("vcpu requested 51, available 50 of 50"))
        );
        assert_eq!(out[1].1, Admission::Reserve);
    }

    #[test]
    fn no_quota_means_no_capacity() {
        let out = admit(
            &[Candidate {
                key: "a".into(),
                asked: vcpu(1),
                unpriced: None,
            }],
            &Capacity::default(),
            &Amounts::default(),
        );
        assert!(matches!(&out[0].1, Admission::Wait(m) if m.contains("no valid CloudQuota")));
    }

    #[test]
    fn unlimited_dimensions_never_block() {
        let mut asked = vcpu(1);
        asked.add(Dimension::MemoryGiB, dec!(1000000));
        let out = admit(
            &[Candidate {
                key: "a".into(),
                asked,
                unpriced: None,
            }],
            &capacity(1),
            &Amounts::default(),
        );
        assert_eq!(out[0].1, Admission::Reserve);
    }

    #[test]
    fn an_enforced_budget_parks_what_would_exceed_it_by_the_year_end() {
        let cost = |key: &str, monthly: Decimal| {
            let mut asked = vcpu(1);
            asked.add(Dimension::MonthlyCost, monthly);
            Candidate {
                key: key.into(),
                asked,
                unpriced: None,
            }
        };
        // ¥10,000 a year, ¥4,000 spent, two months left: ¥3,000 a month may be held in all.
        let mut cap = capacity(100);
        cap.budget = Some(BudgetLimit {
            year: 2026,
            annual: dec!(10000),
            spent: dec!(4000),
            months_left: dec!(2),
        });
        let mut held = vcpu(1);
        held.add(Dimension::MonthlyCost, dec!(1000));
        let out = admit(
            &[
                cost("a", dec!(2000)),
                cost("b", dec!(0.01)),
                cost("c", dec!(0)),
            ],
            &cap,
            &held,
        );
        assert_eq!(out[0].1, Admission::Reserve, "exactly at the budget fits");
        let Admission::Wait(message) = &out[1].1 else {
            panic!("one fen over waits: {:?}", out[1].1)
        };
        assert!(
            message.starts_with("annual budget 2026 of ¥10000.00: spent ¥4000.00")
                && message.contains("¥10000.02 in all")
                && message.contains("spec.budget.annual"),
            "{message}"
        );
        assert!(
            matches!(&out[2].1, Admission::Wait(m) if m.contains("waits for the earlier request b")),
            "submission order holds for the budget too: {:?}",
            out[2].1
        );
        // Without a cost estimate an enforced budget can't be checked: it waits, saying why.
        let unpriced = Candidate {
            unpriced: Some("no price for sku x".into()),
            ..cost("d", dec!(0))
        };
        assert!(matches!(
            &admit(&[unpriced], &cap, &held)[0].1,
            Admission::Wait(m) if m.starts_with("the annual budget is enforced, but") && m.ends_with("no price for sku x")
        ));
        cap.budget = None;
        assert_eq!(
            admit(&[cost("b", dec!(99999))], &cap, &held)[0].1,
            Admission::Reserve
        );
    }

    #[test]
    fn quotas_add_up_per_dimension() {
        let a = Limits::from_api(&ApiLimits {
            vcpu: Some(10),
            ..Default::default()
        });
        let b = Limits::from_api(&ApiLimits {
            vcpu: Some(5),
            memory_gi_b: Some(20),
            ..Default::default()
        });
        let total = Limits::sum([&a, &b]);
        assert_eq!(total.get(Dimension::Vcpu), Some(dec!(15)));
        assert_eq!(total.get(Dimension::MemoryGiB), Some(dec!(20)));
        assert_eq!(total.get(Dimension::Databases), None);
    }

    #[test]
    fn amounts_read_back_from_status_equal_the_demand() {
        let asked = demand(&[item("web", ResourceType::Ecs, 2, Some(4), Some(8))], None);
        assert_eq!(Amounts::from_api(&asked.to_api()), asked);
    }

    #[test]
    fn monthly_cost_is_held_to_the_fen() {
        let asked = demand(&[], Some(dec!(929.0322)));
        assert_eq!(asked.get(Dimension::MonthlyCost), dec!(929.03));
        assert_eq!(Amounts::from_api(&asked.to_api()), asked);
    }

    #[test]
    fn unpriced_requests_wait_only_where_a_quota_limits_cost() {
        let unpriced = Candidate {
            key: "a".into(),
            asked: vcpu(1),
            unpriced: Some("no price for sku x".into()),
        };
        assert_eq!(
            admit(
                std::slice::from_ref(&unpriced),
                &capacity(10),
                &Amounts::default()
            )[0]
            .1,
            Admission::Reserve
        );
        let mut cap = capacity(10);
        cap.hard.0.insert(Dimension::MonthlyCost, dec!(100));
        assert_eq!(
            admit(&[unpriced], &cap, &Amounts::default())[0].1,
            Admission::Wait("quota gx-finance/base limits monthlyCost, but this request has no cost estimate: no price for sku x".into())
        );
    }

    #[test]
    fn api_round_trip() {
        let api = ApiLimits {
            vcpu: Some(64),
            monthly_cost: Some(crate::api::Money("50000.00".into())),
            ..Default::default()
        };
        assert_eq!(Limits::from_api(&api).to_api(), api);
    }

    proptest! {
        /// Whatever arrives, in whatever sizes, admitted requests never exceed the quota, and
        /// every request that waits either doesn't fit or comes after one that doesn't but could.
        #[test]
        fn never_over_commits(sizes in prop::collection::vec(0u32..20, 0..200), hard in 0u32..100, already in 0u32..50) {
            let candidates: Vec<_> = sizes.iter().enumerate().map(|(i, n)| Candidate { key: format!("r{i}"), asked: vcpu(*n), unpriced: None }).collect();
            let out = admit(&candidates, &capacity(hard), &vcpu(already));
            let admitted: u32 = out.iter().zip(&sizes).filter(|((_, a), _)| *a == Admission::Reserve).map(|(_, n)| *n).sum();
            prop_assert!(admitted + already <= hard.max(already));
            if already > hard { prop_assert!(sizes.iter().zip(&out).all(|(n, (_, a))| *n == 0 || *a != Admission::Reserve)); }
            // FIFO: after the first wait of a request that could fit some day (no more than
            // the quota in all), nothing is reserved.
            let first_wait = out.iter().zip(&sizes).position(|((_, a), n)| *a != Admission::Reserve && *n <= hard).unwrap_or(out.len());
            prop_assert!(out[first_wait..].iter().all(|(_, a)| *a != Admission::Reserve));
            // Those that could never fit are never reserved.
            prop_assert!(out.iter().zip(&sizes).all(|((_, a), n)| *n <= hard || *a != Admission::Reserve));
        }
    }

    #[test]
    fn amounts_say_what_they_hold() {
        let mut a = Amounts::default();
        assert_eq!(a.to_string(), "nothing");
        a.add(Dimension::MonthlyCost, Decimal::new(58400, 2));
        a.add(Dimension::Vcpu, Decimal::from(2));
        assert_eq!(a.to_string(), "vcpu 2, monthlyCost 584.00");
    }
}
