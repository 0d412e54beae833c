//! From what the lifecycle records to what the engine charges, and back to the lifecycle:
//!
//! - [`intervals_of`] turns a request's `status.billing` ([`MeteredInterval`], strings as the API
//!   stores them) into engine [`Interval`]s;
//! - [`settled`] says whether every instant a request was billed for lies in a finalized
//!   SettlementReport that covers its department and provider, which is what lets a retired
//!   request go (its lines are then kept by the reports, not by the request).

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::calendar::parse_instant;
use super::settlement::{in_scope, split_unpriced};
use super::{
    BillingConfig, BillingError, Clock, Interval, Period, Prices, Settlement, TimeRange, settle,
};
use crate::api::SettlementReport;
use crate::api::resource_request::MeteredInterval;
use crate::api::settlement_report::{ReportPhase, Scope};
use crate::api::{PriceBook, ResourceRequest};

/// The engine's intervals for one request's `status.billing`; `request` is `namespace/name`.
/// Fails on the first interval whose quantity or instants don't parse, naming the field.
pub fn intervals_of(
    request: &str,
    billing: &[MeteredInterval],
) -> Result<Vec<Interval>, BillingError> {
    billing
        .iter()
        .enumerate()
        .map(|(n, m)| {
            let field = |f: &str| format!("{request} status.billing[{n}].{f}");
            let quantity =
                Decimal::from_str(&m.quantity).map_err(|_| BillingError::InvalidInterval {
                    request: request.to_owned(),
                    item: m.item.clone(),
                    reason: format!("{}: {:?} is not a decimal", field("quantity"), m.quantity),
                })?;
            Ok(Interval {
                item: m.item.clone(),
                sku: m.sku.clone(),
                resource_type: m.resource_type,
                quantity,
                from: parse_instant(&field("from"), &m.from)?,
                to: m
                    .to
                    .as_deref()
                    .map(|to| parse_instant(&field("to"), to))
                    .transpose()?,
                department: m.department.clone(),
                provider: m.provider.clone(),
                request: request.to_owned(),
            })
        })
        .collect()
}

/// Settles `period` for `scope` over the metered intervals of `requests`, priced with `books`
/// (all providers' books; each line is priced by its interval's provider). The same function
/// serves the controller, the command line and the HTTP endpoint, so they agree to the fen.
/// What no single price covers (books overlap, or none is in force) is listed in `unpriced` and
/// left out, so one bad book stops only the lines it touches.
pub fn settle_requests<'a>(
    requests: impl IntoIterator<Item = &'a ResourceRequest>,
    books: impl IntoIterator<Item = &'a PriceBook>,
    period: &Period,
    scope: &Scope,
    config: &BillingConfig,
    clock: &dyn Clock,
) -> Result<Settlement, BillingError> {
    let mut intervals = Vec::new();
    for rr in requests {
        let Some(status) = rr.status.as_ref().filter(|s| !s.billing.is_empty()) else {
            continue;
        };
        let name = format!(
            "{}/{}",
            rr.metadata.namespace.as_deref().unwrap_or_default(),
            rr.metadata.name.as_deref().unwrap_or_default()
        );
        intervals.extend(intervals_of(&name, &status.billing)?);
    }
    let prices = Prices::from_books(
        books
            .into_iter()
            .map(|b| (b.metadata.name.as_deref().unwrap_or_default(), &b.spec)),
    )?;
    if prices.overlaps().is_empty() {
        match settle(&intervals, &prices, period, scope, config, clock) {
            Err(BillingError::NoPrice { .. }) => {}
            settled => return settled,
        }
    }
    // Overlapping books, or a line no book prices: those are listed, everything else settled.
    intervals.retain(|i| in_scope(scope, i));
    let (chargeable, unpriced) = split_unpriced(
        &intervals,
        &prices,
        period.bounds(config.zone)?,
        clock.now(),
    );
    let chargeable: Vec<Interval> = chargeable.into_iter().cloned().collect();
    let mut settlement = settle(&chargeable, &prices, period, scope, config, clock)?;
    settlement.unpriced = unpriced;
    Ok(settlement)
}

/// A finalized report, as far as coverage goes: the instants of its period and its scope.
#[derive(Clone, Debug, PartialEq)]
pub struct FinalizedCoverage {
    pub period: TimeRange,
    pub scope: Scope,
}

/// The coverage of the finalized reports among `reports` (others, and any whose period can't
/// be resolved, cover nothing).
pub fn coverage_of<'a>(
    reports: impl IntoIterator<Item = &'a SettlementReport>,
    config: &BillingConfig,
) -> Vec<FinalizedCoverage> {
    reports
        .into_iter()
        .filter(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(ReportPhase::Finalized))
        })
        .filter_map(|r| {
            let period = Period::from_spec(&r.spec.period)
                .and_then(|p| p.bounds(config.zone))
                .ok()?;
            Some(FinalizedCoverage {
                period,
                scope: r.spec.scope.clone(),
            })
        })
        .collect()
}

/// Whether every interval is closed and each `[from, to)` lies in the union of the periods of
/// finalized reports whose scope includes the interval's department and provider. No intervals:
/// settled (nothing was billed). An open interval is never settled: it is still being billed.
pub fn settled(intervals: &[Interval], finalized: &[FinalizedCoverage]) -> bool {
    intervals.iter().all(|i| {
        let Some(to) = i.to else {
            return false;
        };
        let windows: Vec<TimeRange> = finalized
            .iter()
            .filter(|f| {
                (f.scope.departments.is_empty() || f.scope.departments.contains(&i.department))
                    && (f.scope.providers.is_empty() || f.scope.providers.contains(&i.provider))
            })
            .map(|f| f.period)
            .collect();
        covered(i.from, to, windows)
    })
}

/// Whether `[from, to)` lies in the union of `windows`.
fn covered(from: DateTime<Utc>, to: DateTime<Utc>, mut windows: Vec<TimeRange>) -> bool {
    windows.sort_by_key(|w| w.start);
    let mut reached = from;
    for w in windows {
        if reached >= to {
            break;
        }
        if w.start <= reached && w.end > reached {
            reached = w.end;
        }
    }
    reached >= to
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ResourceType;

    fn metered(from: &str, to: Option<&str>) -> MeteredInterval {
        MeteredInterval {
            item: "web".into(),
            sku: "ecs.c2.large".into(),
            resource_type: ResourceType::Ecs,
            quantity: "2".into(),
            from: from.into(),
            to: to.map(Into::into),
            department: "gx-finance".into(),
            provider: "aliyun-gov".into(),
        }
    }

    fn month(m: &str, departments: &[&str]) -> FinalizedCoverage {
        FinalizedCoverage {
            period: Period::parse_month(m)
                .unwrap()
                .bounds(BillingConfig::default().zone)
                .unwrap(),
            scope: Scope {
                departments: departments.iter().map(|d| d.to_string()).collect(),
                providers: vec![],
            },
        }
    }

    #[test]
    fn status_billing_converts_with_its_request() {
        let i = intervals_of(
            "ns/portal",
            &[metered(
                "2026-10-01T08:00:00+08:00",
                Some("2026-10-02T00:00:00Z"),
            )],
        )
        .unwrap();
        assert_eq!(i[0].request, "ns/portal");
        assert_eq!(i[0].quantity, Decimal::from(2));
        assert_eq!(i[0].from.to_rfc3339(), "2026-10-01T00:00:00+00:00");
        let bad = intervals_of("ns/portal", &[metered("yesterday", None)]).unwrap_err();
        assert!(
            bad.to_string()
                .contains("ns/portal status.billing[0].from: \"yesterday\""),
            "{bad}"
        );
    }

    #[test]
    fn settled_needs_finalized_reports_over_every_billed_instant() {
        // October 15 to November 10 (Shanghai).
        let i = intervals_of(
            "ns/portal",
            &[metered(
                "2026-10-15T00:00:00+08:00",
                Some("2026-11-10T00:00:00+08:00"),
            )],
        )
        .unwrap();
        assert!(!settled(&i, &[month("2026-10", &[])]), "November is open");
        assert!(settled(&i, &[month("2026-11", &[]), month("2026-10", &[])]));
        assert!(
            !settled(&i, &[month("2026-10", &[]), month("2026-11", &["other"])]),
            "November's report is for another department"
        );
        assert!(settled(
            &i,
            &[
                month("2026-10", &["gx-finance"]),
                month("2026-11", &["gx-finance"])
            ]
        ));
        let quarter = FinalizedCoverage {
            period: Period::parse_quarter("2026-Q4")
                .unwrap()
                .bounds(BillingConfig::default().zone)
                .unwrap(),
            scope: Scope::default(),
        };
        assert!(settled(&i, &[quarter]));
        assert!(settled(&[], &[]), "nothing billed, nothing to settle");
        let open = intervals_of("ns/portal", &[metered("2026-10-15T00:00:00Z", None)]).unwrap();
        assert!(!settled(&open, &[month("2026-10", &[])]));
    }

    #[test]
    fn only_finalized_reports_cover() {
        let report = |name: &str, phase: Option<ReportPhase>| {
            let mut r = SettlementReport::new(
                name,
                crate::api::SettlementReportSpec {
                    period: crate::api::settlement_report::Period {
                        month: Some("2026-10".into()),
                        ..Default::default()
                    },
                    scope: Scope::default(),
                    finalize: phase.is_some(),
                    checksum_algorithm: Default::default(),
                },
            );
            r.status = Some(crate::api::settlement_report::SettlementReportStatus {
                phase,
                ..Default::default()
            });
            r
        };
        let reports = [
            report("open", Some(ReportPhase::Computed)),
            report("final", Some(ReportPhase::Finalized)),
        ];
        let cov = coverage_of(&reports, &BillingConfig::default());
        assert_eq!(cov, vec![month("2026-10", &[])]);
    }
}
