//! One conflicting PriceBook degrades only what it touches. Two books of provider P1 price
//! `ecs.c2.large` at once (created while no operator could refuse them, as two books created at
//! the same instant would be): both say so in their status and an Event; the settlement leaves
//! P1's item unpriced, with the reason, and settles everything else; a finalize that would
//! include it is refused; provider P2's settlement, export, budget and the scorecard go on. With
//! the operator answering, a third overlapping book is refused at apply, naming the other book,
//! the provider, the SKU and the window. Deleting one book ends the conflict. A provider P3 no
//! book prices at all leaves its department Z's item unpriced in the same way, and stops no one.
//!
//! The period is October 2026 and the operator's business clock is started at 2026-11-20 12:00
//! (+08:00) (`--clock`), so nothing depends on today's date.

use std::{process::Command, time::Duration};

use anyhow::{Context, bail, ensure};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use yunzhang::api::{
    Department, PriceBook, ResourceRequest, SettlementReport, settlement_report::ReportPhase,
};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);
const CLOCK: &str = "2026-11-20T12:00:00+08:00";

async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    apply_value(client, v, "yunzhang-tests").await.map(|_| ())
}

fn book(name: &str, provider: &str, from: &str, price: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": name},
           "spec": {"provider": provider, "currency": "CNY", "effectiveFrom": from,
                    "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": price}]}})
}

fn report(name: &str, departments: &[&str], providers: &[&str], finalize: bool) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "SettlementReport", "metadata": {"name": name},
           "spec": {"period": {"month": "2026-10"}, "scope": {"departments": departments, "providers": providers},
                    "finalize": finalize}})
}

/// A request in `ns` (no Department's) whose metering says: `qty` × ecs.c2.large of `provider`
/// for `department`, 2026-10-10 00:00 to 10:00 (+08:00).
async fn metered(
    admin: &Client,
    ns: &str,
    name: &str,
    (department, provider): (&str, &str),
    qty: &str,
) -> anyhow::Result<()> {
    let api: Api<ResourceRequest> = Api::namespaced(admin.clone(), ns);
    let rr = with_own_identity(
        admin,
        &json!({
        "apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"purpose": "价格冲突测试", "items": [
            {"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 2}]}}),
    )
    .await;
    api.create(&PostParams::default(), &serde_json::from_value(rr)?)
        .await?;
    let billing = json!([{"item": "web", "type": "ecs", "sku": "ecs.c2.large", "quantity": qty,
        "from": "2026-10-10T00:00:00+08:00", "to": "2026-10-10T10:00:00+08:00",
        "department": department, "provider": provider}]);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"billing": billing}})),
    )
    .await?;
    Ok(())
}

fn ready_reason(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

/// Wait until PriceBook `name`'s Ready reason is `reason`; its Ready message.
async fn book_says(books: &Api<PriceBook>, name: &str, reason: &str) -> anyhow::Result<String> {
    let book = wait_for(books, name, WAIT, |bk| {
        bk.status
            .as_ref()
            .and_then(|s| ready_reason(&s.conditions))
            .is_some_and(|(r, _)| r == reason)
    })
    .await?;
    Ok(ready_reason(&book.status.unwrap_or_default().conditions)
        .unwrap_or_default()
        .1)
}

/// Wait (up to `timeout`) until report `name` is in `phase`; its status.
async fn report_in(
    reports: &Api<SettlementReport>,
    name: &str,
    phase: ReportPhase,
    timeout: Duration,
) -> anyhow::Result<yunzhang::api::settlement_report::SettlementReportStatus> {
    let report = wait_for(reports, name, timeout, |r| {
        r.status.as_ref().is_some_and(|s| s.phase == Some(phase))
    })
    .await?;
    Ok(report.status.unwrap_or_default())
}

fn cli(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(operator_binary())
        .args(args)
        .env("KUBECONFIG", &cluster().admin_kubeconfig)
        .env("YZ_CLOCK", CLOCK)
        .output()?;
    ensure!(
        out.status.success(),
        "yunzhang {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn a_conflicting_price_book_degrades_only_what_it_touches() -> anyhow::Result<()> {
    let admin = admin().await;
    let base = unique("pb");
    let (p1, p2) = (format!("{base}-p1"), format!("{base}-p2"));
    let (x, y, z) = (
        format!("{base}-x"),
        format!("{base}-y"),
        format!("{base}-z"),
    );
    let p3 = format!("{base}-p3");
    let (a1, a2, a3, b) = (
        format!("{base}-a1"),
        format!("{base}-a2"),
        format!("{base}-a3"),
        format!("{base}-b"),
    );
    let meter_ns = format!("{base}-meter");

    // While no operator answers the webhook: P1 gets two overlapping books.
    apply(&admin, &book(&a1, &p1, "2026-01-01T00:00:00+08:00", "1.00")).await?;
    apply(&admin, &book(&a2, &p1, "2026-09-01T00:00:00+08:00", "1.20")).await?;
    apply(&admin, &book(&b, &p2, "2026-01-01T00:00:00+08:00", "0.50")).await?;
    for (d, p, budget) in [
        (&x, &p1, "100.00"),
        (&y, &p2, "100.00"),
        (&z, &p3, "100.00"),
    ] {
        apply(&admin, &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": d},
            "spec": {"displayName": "测试单位", "code": "11450000MB0000000X", "namespaces": [d], "provider": p,
                     "budget": {"annual": budget}}}))
        .await?;
    }
    create_namespace(&meter_ns).await?;
    metered(&admin, &meter_ns, "r1", (&x, &p1), "1").await?;
    metered(&admin, &meter_ns, "r2", (&y, &p2), "2").await?;
    metered(&admin, &meter_ns, "r3", (&z, &p3), "1").await?;

    let operator = OperatorProcess::start_with(&["--clock", CLOCK])?;
    operator.wait_ready(WAIT).await?;

    // With the operator answering, a third overlapping book is refused at apply.
    match apply(&admin, &book(&a3, &p1, "2026-12-01T00:00:00+08:00", "0.90")).await {
        Ok(()) => bail!("an overlapping PriceBook was admitted"),
        Err(e) => {
            let e = format!("{e:#}");
            for needed in [
                a1.as_str(),
                &format!("provider {p1}"),
                "SKU ecs.c2.large",
                "from 2026-11-30T16:00:00Z to open end",
                "spec.effectiveUntil",
            ] {
                ensure!(e.contains(needed), "the refusal names {needed:?}: {e}");
            }
        }
    }

    // Both conflicting books say so; P2's book is fine.
    let books: Api<PriceBook> = Api::all(admin.clone());
    for (this, other) in [(&a1, &a2), (&a2, &a1)] {
        let message = book_says(&books, this, "Overlap").await?;
        ensure!(
            message.contains(other.as_str()),
            "{this} names {other}: {message}"
        );
    }
    book_says(&books, &b, "Consistent").await?;
    // The Events follow the status writes: wait for them.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(admin.clone());
    for name in [&a1, &a2] {
        let mut found = false;
        for _ in 0..100 {
            found = events
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Overlap")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                            == Some(name.as_str())
                });
            if found {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ensure!(found, "an Overlap Event on {name}");
    }

    // The settlement of both departments: P2's line settled, P1's item listed as unpriced.
    let reports: Api<SettlementReport> = Api::all(admin.clone());
    let open = format!("{base}-open");
    apply(&admin, &report(&open, &[&x, &y], &[], false)).await?;
    let st = report_in(&reports, &open, ReportPhase::Computed, WAIT).await?;
    // r2: 10 h × 2 × 0.50 = 10.00.
    ensure!(
        st.total.as_ref().map(|m| m.0.as_str()) == Some("10.00") && st.lines == Some(1),
        "only P2's line is in the figures: {st:?}"
    );
    ensure!(st.unpriced_count == Some(1), "{st:?}");
    let unpriced = st.unpriced.first().context("the unpriced item")?;
    ensure!(
        unpriced.request == format!("{meter_ns}/r1")
            && unpriced.provider == p1
            && unpriced.reason.contains(&a1)
            && unpriced.reason.contains(&a2),
        "{unpriced:?}"
    );

    // What no book prices at all is unpriced the same way, with its own reason.
    let z_report = format!("{base}-z");
    apply(&admin, &report(&z_report, &[&z], &[], false)).await?;
    let st = report_in(&reports, &z_report, ReportPhase::Computed, WAIT).await?;
    ensure!(
        st.unpriced_count == Some(1)
            && st
                .unpriced
                .first()
                .is_some_and(|u| u.request == format!("{meter_ns}/r3")
                    && u.reason.contains(&format!(
                        "no PriceBook prices provider {p3} SKU ecs.c2.large"
                    ))),
        "Z's item is unpriced for want of a book: {st:?}"
    );

    // A finalize that would include the unpriced item is refused; P2's alone finalizes.
    let held = format!("{base}-final");
    apply(&admin, &report(&held, &[&x, &y], &[], true)).await?;
    let refused = wait_for(&reports, &held, WAIT, |r| {
        r.status
            .as_ref()
            .and_then(|s| ready_reason(&s.conditions))
            .is_some_and(|(reason, _)| reason == "Unpriced")
    })
    .await?;
    let st = refused.status.unwrap_or_default();
    ensure!(
        st.phase == Some(ReportPhase::Computed),
        "not finalized: {st:?}"
    );
    let p2_only = format!("{base}-p2-final");
    apply(&admin, &report(&p2_only, &[], &[&p2], true)).await?;
    report_in(&reports, &p2_only, ReportPhase::Finalized, WAIT)
        .await
        .context("another provider's report finalizes")?;

    // Exports, the budget and the scorecard go on.
    let csv = cli(&[
        "report",
        "settlement",
        "--period",
        "2026-10",
        "--provider",
        &p2,
        "--format",
        "csv",
    ])?;
    ensure!(
        csv.lines().count() == 2 && csv.contains(&format!("{meter_ns}/r2")),
        "{csv}"
    );
    let json_doc: Value = serde_json::from_str(&cli(&[
        "report",
        "settlement",
        "--period",
        "2026-10",
        "--department",
        &x,
        "--format",
        "json",
    ])?)?;
    ensure!(
        json_doc["lineCount"] == 0
            && json_doc["unpriced"][0]["request"] == format!("{meter_ns}/r1"),
        "X's export says what it left out: {json_doc}"
    );
    let scorecard: Value = serde_json::from_str(&cli(&[
        "report",
        "scorecard",
        "--quarter",
        "2026-Q4",
        "--format",
        "json",
    ])?)?;
    ensure!(
        scorecard.to_string().contains(&y),
        "the scorecard covers Y: {scorecard}"
    );
    let everyone: Value = serde_json::from_str(&cli(&[
        "report",
        "settlement",
        "--period",
        "2026-10",
        "--format",
        "json",
    ])?)?;
    let unpriced: Vec<&str> = everyone["unpriced"]
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["request"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        unpriced.contains(&format!("{meter_ns}/r1").as_str())
            && unpriced.contains(&format!("{meter_ns}/r3").as_str()),
        "the whole settlement lists both unpriced items: {everyone}"
    );
    let depts: Api<Department> = Api::all(admin.clone());
    wait_for(&depts, &y, WAIT, |d| {
        d.status
            .as_ref()
            .and_then(|s| s.budget.as_ref())
            .is_some_and(|b| b.spent.0 == "10.00")
    })
    .await
    .context("Y's budget counts its spend")?;

    // One book gone: the conflict ends, and the held report finalizes.
    books.delete(&a2, &DeleteParams::default()).await?;
    book_says(&books, &a1, "Consistent").await?;
    let finalized = report_in(
        &reports,
        &held,
        ReportPhase::Finalized,
        Duration::from_secs(120),
    )
    .await
    .context("the held report finalizes once every item is priced")?;
    // r1: 10 h × 1.00 = 10.00; r2 10.00.
    ensure!(
        finalized.total.map(|m| m.0) == Some("20.00".into()),
        "both lines once priced"
    );
    Ok(())
}
