//! One bad or conflicting cluster-wide object never stops other departments' work. Beside a good
//! department G, each kind of cluster-wide input is got wrong once: a Department claiming G's
//! namespace, a Department naming an ApprovalPolicy that doesn't exist, a CloudProvider whose
//! module isn't there, a CloudQuota in a namespace no Department owns. Each says what is wrong,
//! where it is wrong; G's request still runs, and the settlement and the scorecard still cover G.

use std::time::Duration;

use anyhow::{Context, ensure};
use kube::{Api, Client};
use serde_json::{Value, json};
use yunzhang::api::{
    CloudQuota, Department, Phase, ResourceRequest, SettlementReport,
    settlement_report::ReportPhase,
};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);

async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    apply_value(client, v, "yunzhang-tests").await.map(|_| ())
}

fn ready(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(bool, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
}

/// Provider `name` (`executor`; `module` for ecs) with its PriceBook.
fn provider(name: &str, executor: &str, module: &str) -> [Value; 2] {
    [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": name},
               "spec": {"displayName": "测试云", "region": "nanning-1", "executor": {"type": executor},
                        "modules": {"ecs": {"source": module}}}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": name},
               "spec": {"provider": name, "currency": "CNY", "effectiveFrom": "2026-01-01T00:00:00+08:00",
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"}]}}),
    ]
}

fn department(name: &str, namespace: &str, provider: &str, policy: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": name},
           "spec": {"displayName": "测试单位", "code": "11450000MB0000000X", "namespaces": [namespace],
                    "provider": provider, "approvalPolicy": policy, "budget": {"annual": "100000.00"}}})
}

fn quota(ns: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "base", "namespace": ns},
           "spec": {"hard": {"vcpu": 8}}})
}

fn request(ns: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest", "metadata": {"name": "app", "namespace": ns},
           "spec": {"purpose": "测试", "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 2}]}})
}

#[tokio::test]
async fn one_bad_cluster_wide_object_stops_no_other_department() -> anyhow::Result<()> {
    let operator = OperatorProcess::start()?;
    operator.wait_ready(WAIT).await?;
    let admin = admin().await;
    let b = unique("iso");
    let (good, thief, nopolicy, broke) = (
        format!("{b}-g"),
        format!("{b}-thief"),
        format!("{b}-nopolicy"),
        format!("{b}-broke"),
    );
    let (good_provider, broken_provider, policy) = (
        format!("{b}-good"),
        format!("{b}-broken"),
        format!("{b}-auto"),
    );
    let orphan = format!("{b}-orphan");

    let [p, pb] = provider(&good_provider, "noop", "./modules/ecs");
    // OpenTofu itself (the local executor) finds the module missing.
    let [bp, bpb] = provider(&broken_provider, "local", "./modules/not-there");
    let objects = [
        p,
        pb,
        bp,
        bpb,
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": policy},
               "spec": {"autoApprove": {"maxMonthlyCost": "100000.00"},
                        "stages": [{"name": "office", "approvers": [{"kind": "Group", "name": format!("{b}-office")}]}]}}),
        department(&good, &good, &good_provider, &policy),
    ];
    for v in &objects {
        apply(&admin, v).await?;
    }
    ready_department(&admin, &good)
        .await
        .context("G is ready")?;

    // The bad ones, each of a different kind.
    for v in [
        department(&thief, &good, &good_provider, &policy),
        department(
            &nopolicy,
            &nopolicy,
            &good_provider,
            &format!("{b}-missing"),
        ),
        department(&broke, &broke, &broken_provider, &policy),
    ] {
        apply(&admin, &v).await?;
    }
    create_namespace(&orphan).await?;
    apply(&admin, &quota(&orphan)).await?;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    for ns in [&good, &nopolicy, &broke] {
        wait_for(&namespaces, ns, WAIT, |_| true).await?;
        apply(&admin, &quota(ns)).await?;
    }
    for ns in [&nopolicy, &broke] {
        apply(&admin, &with_own_identity(&admin, &request(ns)).await).await?;
    }

    // G's request runs as if nothing were wrong elsewhere.
    apply(&admin, &with_own_identity(&admin, &request(&good)).await).await?;
    let in_ns = |ns: &str| Api::<ResourceRequest>::namespaced(admin.clone(), ns);
    wait_for(&in_ns(&good), "app", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Active))
    })
    .await
    .context("G's request runs")?;

    // Each bad object says what is wrong, where it is wrong.
    let departments: Api<Department> = Api::all(admin.clone());
    let d = wait_for(&departments, &thief, WAIT, |d| {
        d.status
            .as_ref()
            .and_then(|s| ready(&s.conditions))
            .is_some_and(|(ok, reason, _)| !ok && reason == "Conflict")
    })
    .await
    .context("the thief department says it conflicts")?;
    let (_, _, message) = ready(&d.status.unwrap_or_default().conditions).unwrap_or_default();
    ensure!(message.contains(&good), "names the namespace: {message}");
    let waiting = wait_for(&in_ns(&nopolicy), "app", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains(&format!("ApprovalPolicy {b}-missing")))
        })
    })
    .await
    .context("the request under a missing policy says so")?;
    ensure!(
        waiting.status.and_then(|s| s.phase) != Some(Phase::Active),
        "nothing approves it"
    );
    let failed = wait_for(&in_ns(&broke), "app", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.plan_failure.is_some())
    })
    .await
    .context("the request on a broken provider fails to plan")?;
    let why = failed
        .status
        .and_then(|s| s.plan_failure)
        .map(|f| f.message)
        .unwrap_or_default();
    ensure!(why.contains("not-there"), "names the missing module: {why}");
    let quotas: Api<CloudQuota> = Api::namespaced(admin.clone(), &orphan);
    wait_for(&quotas, "base", WAIT, |q| {
        q.status
            .as_ref()
            .and_then(|s| ready(&s.conditions))
            .is_some_and(|(ok, reason, _)| !ok && reason == "NoDepartment")
    })
    .await
    .context("the orphan quota says no one owns its namespace")?;
    ready_department(&admin, &good)
        .await
        .context("G stays ready")?;

    // The settlement of everyone and the scorecard still cover G.
    let month = (chrono::Utc::now() + chrono::Duration::hours(8))
        .format("%Y-%m")
        .to_string();
    let reports: Api<SettlementReport> = Api::all(admin.clone());
    apply(
        &admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "SettlementReport", "metadata": {"name": format!("{b}-all")},
                "spec": {"period": {"month": month}}}),
    )
    .await?;
    wait_for(&reports, &format!("{b}-all"), WAIT, |r| {
        r.status.as_ref().is_some_and(|s| {
            s.phase == Some(ReportPhase::Computed) && s.by_department.iter().any(|d| d.key == good)
        })
    })
    .await
    .context("the settlement of everyone has G's line")?;
    let (ok, csv, err) = yunzhang_as(
        "platform-admin",
        &["system:masters"],
        &[
            "report",
            "scorecard",
            "--quarter",
            &this_quarter(),
            "--format",
            "csv",
        ],
    )
    .await?;
    ensure!(
        ok && csv.contains(&good),
        "the scorecard covers G: {csv}{err}"
    );
    Ok(())
}
