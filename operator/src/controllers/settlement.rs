//! The SettlementReport controller: settle the report's period and scope over the metered
//! intervals of every ResourceRequest (from the reflector store) with the PriceBooks, and write
//! the figures to status. `spec.finalize: true` freezes it: the lines go into ConfigMaps owned by
//! the report (gzip + base64, chunked, see `billing::archive`), then status says `Finalized`, and
//! a finalized report is never computed again.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt;
use k8s_openapi::{
    api::core::v1::ConfigMap, apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef},
};
use serde_json::json;
use tracing::info;

use super::{
    Error, FIELD_MANAGER, SharedContext, list_all, measured, publish_event,
    status::{apply_status, current_conditions, error_policy, status_differs},
    wiring::metadata_changes_of,
};
use crate::{
    api::{
        CONDITION_READY, PriceBook, ResourceRequest, SettlementReport,
        settlement_report::{ChecksumAlgorithm, ReportPhase, SettlementReportStatus, StoredLines},
    },
    billing::{self, BillingConfig, Period, Settlement, SystemClock, archive},
    conditions::{self, condition},
};

/// Label on the ConfigMaps that hold a finalized report's lines: the report's name.
pub const REPORT_LABEL: &str = "yunzhang.io/settlement-report";
/// The key of the chunk in each ConfigMap.
pub const LINES_KEY: &str = "lines.jsonl.gz.b64";
/// An unfinalized report is recomputed this often (open intervals grow with the clock), and
/// whenever a request or a PriceBook changes.
const RECOMPUTE: Duration = Duration::from_secs(60);

/// Run `controller` (built in `wiring`, whose store the lifecycle reads) until `shutdown`.
pub async fn run(
    controller: Controller<SettlementReport>,
    ctx: SharedContext,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (by_requests, by_books) = (controller.store(), controller.store());
    // Any request or price change may change any open report; finalized ones never change.
    let open_reports = |store: &kube::runtime::reflector::Store<SettlementReport>| {
        store
            .state()
            .iter()
            .filter(|r| !is_finalized(r))
            .map(|r| ObjectRef::from_obj(r.as_ref()))
            .collect::<Vec<_>>()
    };
    controller
        .watches_stream(metadata_changes_of::<ResourceRequest>(&client), move |_| {
            open_reports(&by_requests)
        })
        .watches_stream(metadata_changes_of::<PriceBook>(&client), move |_| {
            open_reports(&by_books)
        })
        // A burst of request changes recomputes each open report once.
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(2)))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy::<SettlementReport>, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

fn is_finalized(r: &SettlementReport) -> bool {
    r.status
        .as_ref()
        .is_some_and(|s| s.phase == Some(ReportPhase::Finalized))
}

async fn reconcile(report: Arc<SettlementReport>, ctx: SharedContext) -> Result<Action, Error> {
    measured::<SettlementReport>(&ctx.clone(), async move {
        if is_finalized(&report) {
            return Ok(Action::await_change());
        }
        let generation = report.meta().generation;
        let old = report.status.clone().unwrap_or_default();
        // Settle over a LIST, not the reflector stores: a store read before its first sync is
        // empty (and `Store::wait_until_ready` keeps one waker only, so concurrent reconciles
        // waiting on it can stall each other and the store's own controller). An open report
        // reads the API server's watch cache (resourceVersion=0); finalizing freezes the
        // figures for good, so it reads the most recent state.
        let lp = if report.spec.finalize {
            kube::api::ListParams::default()
        } else {
            kube::api::ListParams::default().match_any()
        };
        let requests = list_all::<ResourceRequest>(&ctx.client, &lp).await?;
        let books = list_all::<PriceBook>(&ctx.client, &lp).await?;
        let settlement = compute(&report, &requests, &books);
        let mut status = SettlementReportStatus {
            observed_generation: generation,
            conditions: old.conditions.clone(),
            ..Default::default()
        };
        let settlement = match settlement {
            Ok(s) => s,
            Err(e) => {
                // Keep the last figures: a broken PriceBook shouldn't blank a report.
                let mut failed = old.clone();
                failed.observed_generation = generation;
                failed.conditions = merged(&report, false, e.metric_label(), &e.to_string());
                write(&ctx, &report, &old, &failed).await?;
                return Ok(Action::requeue(RECOMPUTE));
            }
        };
        if let Err(e) = settlement.write_status(&mut status) {
            let mut failed = old.clone();
            failed.conditions = merged(&report, false, e.metric_label(), &e.to_string());
            write(&ctx, &report, &old, &failed).await?;
            return Ok(Action::requeue(RECOMPUTE));
        }
        let hold = report
            .spec
            .finalize
            .then(|| finalize_hold(settlement.period.end, crate::clock::now(), &settlement))
            .flatten();
        if let Some((reason, message)) = hold {
            status.phase = Some(ReportPhase::Computed);
            status.conditions = merged(&report, false, reason, &message);
            let newly = !old.conditions.iter().any(|c| c.reason == reason);
            write(&ctx, &report, &old, &status).await?;
            if newly {
                publish_event(
                    &ctx,
                    report.as_ref(),
                    kube::runtime::events::EventType::Warning,
                    reason,
                    "Finalize",
                    message,
                )
                .await;
            }
            return Ok(Action::requeue(RECOMPUTE));
        }
        if report.spec.finalize {
            let stored = store_lines(&ctx, &report, &settlement).await?;
            status.stored_lines = Some(stored);
            status.phase = Some(ReportPhase::Finalized);
            status.conditions = merged(
                &report,
                true,
                "Finalized",
                &format!(
                    "finalized with {} lines, total {} CNY, {}",
                    settlement.line_count(),
                    status.total.as_ref().map(|m| m.0.as_str()).unwrap_or("0"),
                    settlement.checksum
                ),
            );
            write(&ctx, &report, &old, &status).await?;
            publish_event(
                &ctx,
                report.as_ref(),
                kube::runtime::events::EventType::Normal,
                "Finalized",
                "Finalize",
                format!(
                    "{} lines kept in {} ConfigMap(s); checksum {}",
                    settlement.line_count(),
                    status.stored_lines.as_ref().map_or(0, |s| s.config_maps.len()),
                    settlement.checksum
                ),
            )
            .await;
            info!(report = %report.name_any(), checksum = %settlement.checksum, "settlement report finalized");
            return Ok(Action::await_change());
        }
        status.phase = Some(ReportPhase::Computed);
        status.conditions = match settlement.unpriced.first() {
            None => merged(
                &report,
                true,
                "Computed",
                &format!(
                    "{} lines; recomputed as requests and prices change until finalized",
                    settlement.line_count()
                ),
            ),
            Some(first) => merged(
                &report,
                false,
                "Unpriced",
                &format!(
                    "{} lines; {} metered item(s) left out, with no price ({})",
                    settlement.line_count(),
                    settlement.unpriced.len(),
                    first.reason
                ),
            ),
        };
        write(&ctx, &report, &old, &status).await?;
        Ok(Action::requeue(RECOMPUTE))
    })
    .await
}

/// Why a report asked to be finalized isn't, yet (reason, message): its period is not over
/// (usage can still be added to it), or something in it has no price (a finalized report is the
/// record: it can't leave out what it couldn't price). `None`: it may be finalized. Either way it
/// is finalized by itself once the hold ends (`spec.finalize` stays true).
pub fn finalize_hold(
    period_end: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
    settlement: &Settlement,
) -> Option<(&'static str, String)> {
    if now < period_end {
        return Some((
            "PeriodNotOver",
            format!(
                "not finalized: the period ends {}, and until then usage can still be added to it; the figures are kept current, and the report is finalized by itself once the period is over",
                period_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        ));
    }
    let first = settlement.unpriced.first()?;
    Some((
        "Unpriced",
        format!(
            "not finalized: {} metered item(s) have no price ({}); the figures cover everything else, and the report is finalized once they can be priced",
            settlement.unpriced.len(),
            first.reason
        ),
    ))
}

/// Settle the report's period and scope over the requests (pure).
pub fn compute(
    report: &SettlementReport,
    requests: &[ResourceRequest],
    books: &[PriceBook],
) -> Result<Settlement, billing::BillingError> {
    let period = Period::from_spec(&report.spec.period)?;
    let mut settlement = billing::settle_requests(
        requests,
        books,
        &period,
        &report.spec.scope,
        &BillingConfig::default(),
        &SystemClock,
    )?;
    if report.spec.checksum_algorithm != ChecksumAlgorithm::default() {
        settlement.checksum =
            billing::checksum_with(&settlement.lines, report.spec.checksum_algorithm);
    }
    Ok(settlement)
}

fn merged(report: &SettlementReport, ok: bool, reason: &str, message: &str) -> Vec<Condition> {
    let existing = current_conditions(report);
    let ready = condition(
        CONDITION_READY,
        ok,
        reason,
        message,
        report.meta().generation,
        Timestamp::now(),
    );
    conditions::merge(existing, ready)
}

async fn write(
    ctx: &SharedContext,
    report: &SettlementReport,
    old: &SettlementReportStatus,
    status: &SettlementReportStatus,
) -> Result<(), Error> {
    let value = serde_json::to_value(status)?;
    if status_differs(Some(old), &value) {
        apply_status(ctx, report, value).await?;
    }
    Ok(())
}

/// ConfigMap names for a report's chunks: `settlement-<report>-<n>`.
pub fn chunk_name(report: &str, n: usize) -> String {
    format!("settlement-{report}-{n}")
}

/// Apply the report's lines as ConfigMaps in the operator's namespace, owned by the report
/// (garbage-collected with it, not with the requests).
async fn store_lines(
    ctx: &SharedContext,
    report: &SettlementReport,
    settlement: &Settlement,
) -> Result<StoredLines, Error> {
    let ns = ctx.lifecycle.namespace.clone();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let name = report.name_any();
    let owner = json!({
        "apiVersion": SettlementReport::api_version(&()),
        "kind": SettlementReport::kind(&()),
        "name": name,
        "uid": report.uid().unwrap_or_default(),
        "controller": true,
    });
    let chunks = archive::encode(&settlement.lines, archive::CHUNK_CHARS);
    let mut names = Vec::with_capacity(chunks.len());
    for (n, chunk) in chunks.iter().enumerate() {
        let cm = chunk_name(&name, n);
        let patch = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": cm,
                "namespace": ns,
                "labels": {REPORT_LABEL: name},
                "annotations": BTreeMap::from([
                    ("yunzhang.io/chunk", format!("{}/{}", n + 1, chunks.len())),
                    ("yunzhang.io/checksum", settlement.checksum.clone()),
                ]),
                "ownerReferences": [owner],
            },
            "data": {LINES_KEY: chunk},
        });
        api.patch(
            &cm,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        names.push(cm);
    }
    Ok(StoredLines {
        namespace: ns,
        config_maps: names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::settlement_report::{Scope, UnpricedItem};
    use crate::billing::{FixedClock, Prices, calendar::parse_instant};

    fn t(s: &str) -> chrono::DateTime<chrono::Utc> {
        parse_instant("t", s).unwrap()
    }

    #[test]
    fn a_report_is_finalized_only_once_its_period_is_over_and_everything_is_priced() {
        let none: [(&str, &crate::api::price_book::PriceBookSpec); 0] = [];
        let mut settlement = billing::settle(
            &[],
            &Prices::from_books(none).unwrap(),
            &"2026-10".parse().unwrap(),
            &Scope::default(),
            &BillingConfig::default(),
            &FixedClock(t("2026-11-20T00:00:00Z")),
        )
        .unwrap();
        let end = settlement.period.end;
        let (reason, message) =
            finalize_hold(end, t("2026-10-31T15:59:59Z"), &settlement).expect("held");
        assert_eq!(reason, "PeriodNotOver");
        assert!(
            message.starts_with("not finalized: the period ends 2026-10-31T16:00:00Z"),
            "{message}"
        );
        assert_eq!(finalize_hold(end, end, &settlement), None);
        settlement.unpriced.push(UnpricedItem {
            request: "ns/r".into(),
            item: "web".into(),
            department: "d".into(),
            provider: "p".into(),
            sku: "s".into(),
            reason: "no price: …".into(),
        });
        assert_eq!(
            finalize_hold(end, end, &settlement).map(|(r, _)| r),
            Some("Unpriced")
        );
    }
}
