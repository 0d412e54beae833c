//! The request lifecycle against the real API server with real users: apply, approve in
//! stages, edit after approval, change with and without re-approval, retire, delete — with the
//! quota figures checked exactly at each step. The provider uses the no-op executor (the
//! OpenTofu executors have their own tests); everything else is the real operator.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use yunzhang::api::{
    CloudQuota, Phase, ResourceRequest,
    resource_request::{HoldingState, RunPhase},
};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);

/// One department with its own policy, provider, prices, quota and people.
struct Fixture {
    dept: String,
    member: String,
    head: String,
    head_group: String,
    finance: String,
    finance_group: String,
    outsider: String,
}

async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    apply_value(client, v, "yunzhang-tests").await.map(|_| ())
}

async fn fixture(admin: &Client, executor: &str) -> anyhow::Result<Fixture> {
    let dept = unique("lc");
    let f = Fixture {
        member: format!("{dept}-member"),
        head: format!("{dept}-head"),
        head_group: format!("{dept}-heads"),
        finance: format!("{dept}-finance"),
        finance_group: format!("{dept}-finance-office"),
        outsider: format!("{dept}-outsider"),
        dept,
    };
    let d = &f.dept;
    for v in [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": d},
               "spec": {"displayName": "测试云", "region": "nanning-1", "executor": {"type": executor},
                        "modules": {"ecs": {"source": "./modules/ecs"}, "rds": {"source": "./modules/rds"}}}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": d},
               "spec": {"provider": d, "currency": "CNY", "effectiveFrom": "2026-01-01T00:00:00+08:00",
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"},
                                  {"sku": "rds.mysql.4c16g", "unit": "month", "price": "1800.00"}]}}),
        // Small requests pass on their own; the department head approves the rest, and finance
        // too from ¥1,000 a month.
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": d},
               "spec": {"autoApprove": {"maxMonthlyCost": "600.00"},
                        "separationOfDuties": {"allowSameDepartment": false},
                        "stages": [
                          {"name": "department", "allowSameDepartment": true,
                           "approvers": [{"kind": "Group", "name": f.head_group}]},
                          {"name": "finance", "when": {"minMonthlyCost": "1000.00"},
                           "approvers": [{"kind": "Group", "name": f.finance_group}]}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": d},
               "spec": {"displayName": "测试单位", "code": "11450000MB0000000X", "provider": d, "approvalPolicy": d,
                        "admins": [{"kind": "User", "name": f.head}],
                        "members": [{"kind": "User", "name": f.member}]}}),
    ] {
        apply(admin, &v).await?;
    }
    // Approvers may create Approvals: the head for their department, finance everywhere.
    for group in [&f.head_group, &f.finance_group] {
        bind_approver_group(admin, group).await?;
    }
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    wait_for(&ns_api, d, WAIT, |_| true).await?;
    apply(
        admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "base", "namespace": d},
                "spec": {"hard": {"vcpu": 64, "instances": 20, "databases": 2, "monthlyCost": "50000.00"}}}),
    )
    .await?;
    Ok(f)
}

fn request(f: &Fixture, name: &str, items: Value) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
           // Who asks is recorded by the admission webhook, never typed.
           "metadata": {"name": name, "namespace": f.dept},
           "spec": {"purpose": "非税收入管理系统上云", "project": {"code": "GX-2026-017"}, "items": items}})
}

fn web(count: u32) -> Value {
    json!([{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": count, "vcpu": 4, "memoryGiB": 8}])
}

fn web_and_db(count: u32) -> Value {
    json!([{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": count, "vcpu": 4, "memoryGiB": 8},
           {"name": "db", "type": "rds", "sku": "rds.mysql.4c16g", "count": 1, "storageGiB": 500}])
}

fn requests(client: &Client, ns: &str) -> Api<ResourceRequest> {
    Api::namespaced(client.clone(), ns)
}

async fn wait_phase(
    client: &Client,
    ns: &str,
    name: &str,
    phase: Phase,
    also: impl Fn(&ResourceRequest) -> bool,
) -> anyhow::Result<ResourceRequest> {
    wait_for(&requests(client, ns), name, WAIT, |r| {
        r.status.as_ref().is_some_and(|s| {
            s.phase == Some(phase) && s.observed_generation == r.metadata.generation
        }) && also(r)
    })
    .await
    .with_context(|| format!("waiting for {ns}/{name} to be {phase}"))
}

/// Approve (or reject) what the request shows now, as `user` in `groups`, through the kubectl
/// plugin (`yunzhang approve|reject`), which binds the Approval to the request's uid,
/// generation and plan hash as it shows them.
async fn decide(
    user: &str,
    groups: &[&str],
    rr: &ResourceRequest,
    stage: &str,
    decision: &str,
) -> anyhow::Result<String> {
    let verb = match decision {
        "Approved" => "approve",
        _ => "reject",
    };
    let ns = rr.metadata.namespace.clone().unwrap_or_default();
    let name = rr.metadata.name.clone().unwrap_or_default();
    let out = tokio::process::Command::new(operator_binary())
        .args([
            verb,
            &name,
            "-n",
            &ns,
            "--stage",
            stage,
            "--comment",
            "已审核",
        ])
        .env("KUBECONFIG", kubeconfig_for(user, groups))
        .output()
        .await?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    ensure!(
        out.status.success(),
        "yunzhang {verb} {name} as {user} failed: {stderr}"
    );
    // The plugin shows what the decision binds to: the generation and the plan hash.
    let plan = rr
        .status
        .as_ref()
        .and_then(|s| s.plan.clone())
        .context("plan")?;
    let generation = format!("generation: {}", rr.metadata.generation.unwrap_or_default());
    for shown in [generation.as_str(), plan.hash.as_str()] {
        ensure!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }
    Ok(stdout)
}

/// (reserved, used) of the department's quota, as its CloudQuota status shows them, once they
/// equal what is expected (status follows the requests).
async fn quota_is(client: &Client, ns: &str, vcpu: (i64, i64)) -> anyhow::Result<()> {
    let api: Api<CloudQuota> = Api::namespaced(client.clone(), ns);
    let got = |q: &CloudQuota| -> (i64, i64) {
        let s = q.status.clone().unwrap_or_default();
        let v = |l: Option<yunzhang::api::QuotaLimits>| l.and_then(|l| l.vcpu).unwrap_or(0) as i64;
        (v(s.reserved), v(s.used))
    };
    match wait_for(&api, "base", WAIT, |q| got(q) == vcpu).await {
        Ok(_) => Ok(()),
        Err(e) => {
            let q = api.get("base").await?;
            bail!(
                "quota vcpu (reserved, used) is {:?}, expected {vcpu:?}: {e}",
                got(&q)
            )
        }
    }
}

/// What a local webhook receiver got: (timestamp header, signature header, body).
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

const HOOK_KEY: &str = "test-hmac-key";

/// A local receiver for the generic format, and the notifications Secret pointing at it and at
/// an endpoint where nothing listens.
async fn notifications() -> anyhow::Result<Received> {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let sink = sink.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                sink.lock().unwrap().push((
                    h("x-yunzhang-timestamp"),
                    h("x-yunzhang-signature"),
                    body,
                ));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = format!(
        "endpoints:\n- {{name: receiver, format: generic, url: 'http://127.0.0.1:{port}/hook', secret: {HOOK_KEY}}}\n- {{name: dead, format: generic, url: 'http://127.0.0.1:{dead}/hook', secret: {HOOK_KEY}}}\n"
    );
    let secrets: Api<Secret> = Api::namespaced(admin().await, OPERATOR_NAMESPACE);
    let _ = secrets
        .delete("yunzhang-notifications", &DeleteParams::default())
        .await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "yunzhang-notifications"},
        "stringData": {"config.yaml": config},
    }))?;
    secrets.create(&PostParams::default(), &secret).await?;
    Ok(received)
}

/// Must-show 6: the receiver got correctly signed messages about `name`, among them `events`.
fn check_notifications(received: &Received, name: &str, events: &[&str]) -> anyhow::Result<()> {
    use hmac::{Hmac, Mac};
    let got = received.lock().unwrap().clone();
    let mut seen = Vec::new();
    for (ts, signature, body) in &got {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_KEY.as_bytes())?;
        mac.update(format!("{ts}.{body}").as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        ensure!(
            signature == &expected,
            "bad signature {signature} for {body}"
        );
        let v: Value = serde_json::from_str(body)?;
        if v["name"] == name {
            seen.push(v["event"].as_str().unwrap_or_default().to_owned());
        }
    }
    for e in events {
        ensure!(
            seen.iter().any(|s| s == e),
            "no {e} notification for {name}: {seen:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn lifecycle() {
    let received = notifications().await.expect("notifications");
    // Drift checks every 2 s instead of the providers' hour, so the test sees one.
    let mut operator = OperatorProcess::start_with(&["--drift-check-seconds", "2"]).unwrap();
    operator.wait_ready(WAIT).await.expect("operator ready");
    let client = admin().await;
    // One department per scenario: each checks its quota figures exactly.
    let (f1, f2, f3, f4) = futures::join!(
        fixture(&client, "noop"),
        fixture(&client, "noop"),
        fixture(&client, "local"),
        fixture(&client, "noop")
    );
    let (f1, f2, f3, f4) = (
        f1.expect("fixture"),
        f2.expect("fixture"),
        f3.expect("fixture"),
        f4.expect("fixture"),
    );
    let (a, b, d, e, h) = futures::join!(
        staged_approval_edit_and_delete(&client, &f1),
        change_with_and_without_reapproval_then_retire(&client, &f2),
        opentofu_state_and_outputs_then_destroy(&client, &f3),
        drift_is_detected(&client, &f3),
        enforced_budget_parks_what_would_exceed_it(&client, &f4),
    );
    // Last, alone (it restarts the operator): a kill during an apply.
    let g = restart_during_apply(&client, &f3, &mut operator).await;
    // The dead endpoint never held anything up (both scenarios reached Active above).
    let c = check_notifications(
        &received,
        "portal",
        &["awaiting-approval", "approved", "exited"],
    );
    let _ = Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .delete("yunzhang-notifications", &DeleteParams::default())
        .await;
    let failures: Vec<String> = [
        ("staged", a),
        ("change", b),
        ("notifications", c),
        ("opentofu", d),
        ("drift", e),
        ("restart during apply", g),
        ("enforced budget", h),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e:#}")))
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Must-show 1, 3 and 5: a member requests; the head approves; the member edits the spec, so
/// the approval no longer counts; head and finance approve the new generation; Active with a
/// filing number; `kubectl delete` retires it and the object goes only once Exited.
async fn staged_approval_edit_and_delete(client: &Client, f: &Fixture) -> anyhow::Result<()> {
    let ns = &f.dept;
    let member = client_as(&f.member, &[]).await;
    apply(&member, &request(f, "portal", web_and_db(2))).await?;
    let rr = wait_phase(client, ns, "portal", Phase::AwaitingApproval, |r| {
        r.status.as_ref().and_then(|s| s.stage.as_ref()).is_some()
    })
    .await?;
    let st = rr.status.clone().unwrap();
    let stage = st.stage.clone().unwrap();
    ensure!(
        (stage.name.as_str(), stage.index, stage.of) == ("department", 1, 2),
        "stage {stage:?}"
    );
    // 2 × 0.80 × 730 + 1800 = 2968.00 a month: above finance's ¥1,000.
    ensure!(
        st.estimate.as_ref().map(|e| e.monthly.0.as_str()) == Some("2968.00"),
        "estimate {:?}",
        st.estimate
    );
    ensure!(
        st.requester.as_deref() == Some(f.member.as_str()),
        "requester {:?}",
        st.requester
    );
    ensure!(st.filing_number.is_none());
    let plan = st.plan.clone().context("plan")?;
    ensure!(
        plan.add == 2 && plan.hash.starts_with("sha256:"),
        "plan {plan:?}"
    );
    quota_is(client, ns, (8, 0)).await?;

    decide(&f.head, &[&f.head_group], &rr, "department", "Approved").await?;
    let rr = wait_phase(client, ns, "portal", Phase::AwaitingApproval, |r| {
        r.status
            .as_ref()
            .and_then(|s| s.stage.as_ref())
            .is_some_and(|s| s.name == "finance")
    })
    .await?;
    ensure!(rr.status.as_ref().unwrap().approvals.len() == 1);

    // Edited after the head's approval, before provisioning: back to the first stage.
    requests(&member, ns)
        .patch(
            "portal",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"purpose": "非税收入管理系统上云（二期）"}})),
        )
        .await?;
    let rr = wait_phase(client, ns, "portal", Phase::AwaitingApproval, |r| {
        r.metadata.generation == Some(2)
            && r.status.as_ref().is_some_and(|s| {
                s.stage.as_ref().is_some_and(|st| st.name == "department")
                    && s.plan.as_ref().is_some_and(|p| p.generation == 2)
            })
    })
    .await?;
    ensure!(rr.status.as_ref().unwrap().approvals.is_empty());

    decide(&f.head, &[&f.head_group], &rr, "department", "Approved").await?;
    let rr = wait_phase(client, ns, "portal", Phase::AwaitingApproval, |r| {
        r.status
            .as_ref()
            .and_then(|s| s.stage.as_ref())
            .is_some_and(|s| s.name == "finance")
    })
    .await?;
    decide(&f.finance, &[&f.finance_group], &rr, "finance", "Approved").await?;
    let rr = wait_phase(client, ns, "portal", Phase::Active, |_| true).await?;
    let st = rr.status.clone().unwrap();
    let filing = st.filing_number.clone().context("filing number")?;
    ensure!(
        filing
            .parse::<yunzhang::lifecycle::filing::FilingNumber>()
            .is_ok(),
        "filing number {filing}"
    );
    ensure!(
        st.applied_generation == Some(2) && st.approvals.len() == 2,
        "{st:?}"
    );
    let quota = st.quota.clone().context("quota")?;
    ensure!(
        quota.state == HoldingState::Used && quota.amounts.vcpu == Some(8),
        "{quota:?}"
    );
    ensure!(
        st.billing.len() == 2 && st.billing.iter().all(|i| i.to.is_none()),
        "billing {:?}",
        st.billing
    );
    ensure!(
        st.apply
            .as_ref()
            .is_some_and(|a| a.state == RunPhase::Succeeded)
    );

    // Must-show 5: delete means retire, and the object stays until the periods it was billed
    // in are settled. (It runs for a couple of seconds first: metering has whole seconds, and
    // an interval of zero seconds bills nothing, so there would be nothing to settle.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    requests(&member, ns)
        .delete("portal", &DeleteParams::default())
        .await?;
    let rr = wait_for(&requests(client, ns), "portal", WAIT, |r| {
        let s = r.status.clone().unwrap_or_default();
        s.phase == Some(Phase::Exited)
            && s.message.as_deref().unwrap_or_default().contains("settled")
    })
    .await
    .context("Exited, waiting for settlement")?;
    let s = rr.status.clone().unwrap();
    ensure!(
        s.quota.is_none(),
        "quota still held when Exited: {:?}",
        s.quota
    );
    ensure!(
        !s.billing.is_empty() && s.billing.iter().all(|i| i.to.is_some()),
        "billing: {:?}",
        s.billing
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        requests(client, ns).get_opt("portal").await?.is_some(),
        "deleted before its billed period was settled"
    );
    // Finance settles the department up to now (a month is finalized only once it is over; a
    // range that has ended may be): finalized, the request may go.
    let now = chrono::Utc::now();
    let range =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    apply(
        client,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "SettlementReport", "metadata": {"name": format!("{ns}-to-date")},
                "spec": {"period": {"from": range(now - chrono::Duration::hours(1)), "to": range(now)},
                         "scope": {"departments": [ns]}, "finalize": true}}),
    )
    .await?;
    let mut gone = false;
    for _ in 0..600 {
        if requests(client, ns).get_opt("portal").await?.is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(gone, "never went away after the settlement was finalized");
    let events = events_of(client, ns, "portal").await?;
    for reason in [
        "Approved",
        "Provisioned",
        "Destroying",
        "AwaitingSettlement",
    ] {
        ensure!(
            events.iter().any(|e| e == reason),
            "no {reason} event in {events:?}"
        );
    }
    Ok(())
}

/// Must-show 4: a small request is auto-approved; a small change passes without approval;
/// a change above the threshold waits for approval with the delta reserved; rejected, the
/// request stays as it was; retired, everything is given back.
async fn change_with_and_without_reapproval_then_retire(
    client: &Client,
    f: &Fixture,
) -> anyhow::Result<()> {
    let ns = &f.dept;
    let member = client_as(&f.member, &[]).await;
    // 1 × 0.80 × 730 = 584.00: auto-approved.
    apply(&member, &request(f, "small", web(1))).await?;
    let rr = wait_phase(client, ns, "small", Phase::Active, |_| true).await?;
    ensure!(rr.status.as_ref().unwrap().filing_number.is_some());

    // A change that stays below ¥600 (vCPU 4 → 2, same price): no approval needed.
    let resize = |vcpu: u32, count: u32| json!({"spec": {"items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": count, "vcpu": vcpu, "memoryGiB": 8}]}});
    requests(&member, ns)
        .patch(
            "small",
            &PatchParams::default(),
            &Patch::Merge(resize(2, 1)),
        )
        .await?;
    let rr = wait_phase(client, ns, "small", Phase::Active, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.applied_generation == Some(2))
    })
    .await?;
    let quota = rr.status.as_ref().unwrap().quota.clone().context("quota")?;
    ensure!(
        quota.amounts.vcpu == Some(2) && quota.change.is_none(),
        "{quota:?}"
    );

    // Three instances: 1752.00 a month, so head and finance must approve; the delta is
    // reserved while it waits.
    requests(&member, ns)
        .patch(
            "small",
            &PatchParams::default(),
            &Patch::Merge(resize(2, 3)),
        )
        .await?;
    let rr = wait_phase(client, ns, "small", Phase::Changing, |r| {
        r.status.as_ref().and_then(|s| s.stage.as_ref()).is_some()
    })
    .await?;
    let st = rr.status.clone().unwrap();
    let quota = st.quota.clone().context("quota")?;
    ensure!(
        quota.state == HoldingState::Used && quota.amounts.vcpu == Some(2),
        "{quota:?}"
    );
    ensure!(
        quota.change.as_ref().and_then(|c| c.amounts.vcpu) == Some(4),
        "{quota:?}"
    );
    ensure!(
        st.estimate
            .as_ref()
            .and_then(|e| e.monthly_delta.as_deref())
            == Some("1168.00"),
        "estimate {:?}",
        st.estimate
    );
    decide(&f.head, &[&f.head_group], &rr, "department", "Rejected").await?;
    let rr = wait_phase(client, ns, "small", Phase::Active, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.quota.as_ref().is_some_and(|q| q.change.is_none()))
    })
    .await?;
    let st = rr.status.clone().unwrap();
    ensure!(st.applied_generation == Some(2), "{st:?}");
    ensure!(st.quota.as_ref().unwrap().amounts.vcpu == Some(2));
    ensure!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .contains("rejected"),
        "message {:?}",
        st.message
    );

    // Retire: Exited, nothing held, billing closed; the object stays (it wasn't deleted).
    requests(&member, ns)
        .patch(
            "small",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecycle": "Retired"}})),
        )
        .await?;
    let rr = wait_phase(client, ns, "small", Phase::Exited, |_| true).await?;
    let st = rr.status.unwrap();
    ensure!(st.quota.is_none(), "{:?}", st.quota);
    ensure!(!st.billing.is_empty() && st.billing.iter().all(|i| i.to.is_some()));
    let _ = &f.outsider;
    Ok(())
}

/// Issue #6: with `spec.budget.enforce`, a request whose monthly cost, with what the department
/// already holds, would take this year's spend over the annual budget by the year end waits in
/// QuotaExceeded, saying so; raising the budget lets it in.
async fn enforced_budget_parks_what_would_exceed_it(
    client: &Client,
    f: &Fixture,
) -> anyhow::Result<()> {
    let ns = &f.dept;
    let member = client_as(&f.member, &[]).await;
    let departments: Api<yunzhang::api::Department> = Api::all(client.clone());
    let set_budget = |annual: String| {
        let departments = departments.clone();
        async move {
            departments
                .patch(
                    ns,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"budget": {"annual": annual, "enforce": true}}})),
                )
                .await
        }
    };
    set_budget("1000000.00".to_owned()).await?;
    apply(&member, &request(f, "first", web(1))).await?;
    let rr = wait_phase(client, ns, "first", Phase::Active, |_| true).await?;
    let monthly: Decimal = rr
        .status
        .and_then(|s| s.estimate)
        .context("estimate")?
        .monthly
        .0
        .parse()?;
    // Room for one such request to the year end and a half, not two (the months left only
    // shrink while the test runs, and the spend so far is a few fen).
    let months_left = yunzhang::billing::budget::months_left(
        chrono::Utc::now(),
        &yunzhang::billing::BillingConfig::default(),
    )?;
    let budget_for = |n: Decimal| format!("{:.2}", (monthly * months_left * n).round_dp(2));
    set_budget(budget_for(Decimal::new(15, 1))).await?;
    apply(&member, &request(f, "second", web(1))).await?;
    let rr = wait_phase(client, ns, "second", Phase::QuotaExceeded, |_| true).await?;
    let message = rr.status.and_then(|s| s.message).unwrap_or_default();
    ensure!(
        message.starts_with("annual budget ")
            && message.contains("raise the Department's spec.budget.annual"),
        "{message}"
    );
    set_budget(budget_for(Decimal::new(3, 0))).await?;
    wait_phase(client, ns, "second", Phase::Active, |_| true).await?;
    Ok(())
}

/// Issue #5 must-show 3, through the operator with the `local` executor and the real tofu: an
/// approved request leaves its state in a Secret in the cluster and its outputs in status; a
/// resize shows in the plan summary before it is approved; retired, its state holds no
/// resources (checked independently with `tofu state list` on the workspace the operator kept
/// in the plan ConfigMap).
async fn opentofu_state_and_outputs_then_destroy(
    client: &Client,
    f: &Fixture,
) -> anyhow::Result<()> {
    let ns = &f.dept;
    let member = client_as(&f.member, &[]).await;
    apply(&member, &request(f, "tofu", web(1))).await?;
    let rr = wait_phase(client, ns, "tofu", Phase::Active, |_| true).await?;
    let uid = rr.metadata.uid.clone().context("uid")?;
    let st = rr.status.clone().unwrap();
    ensure!(!st.outputs.is_empty(), "no outputs in status: {st:?}");
    // The ecs module's generated password is sensitive: in the Secret the request owns, never
    // in status.
    ensure!(
        !st.outputs["web"].contains("initial_password"),
        "{:?}",
        st.outputs
    );
    let outputs = Api::<Secret>::namespaced(client.clone(), ns)
        .get("tofu-outputs")
        .await
        .context("Secret tofu-outputs")?;
    let password = outputs
        .data
        .as_ref()
        .and_then(|d| d.get("web.initial_password"))
        .with_context(|| {
            format!(
                "web.initial_password in {:?}",
                outputs.data.as_ref().map(|d| d.keys().collect::<Vec<_>>())
            )
        })?;
    ensure!(
        password.0.len() == 24,
        "password of {} bytes",
        password.0.len()
    );
    ensure!(
        outputs
            .metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o.uid == uid)),
        "the request owns its outputs Secret: {:?}",
        outputs.metadata.owner_references
    );
    let plan = st.plan.clone().context("plan")?;
    ensure!(
        (plan.add, plan.change, plan.destroy) == (1, 0, 0),
        "plan {plan:?}"
    );
    ensure!(
        plan.resources
            .iter()
            .any(|r| r.address.starts_with("module.web.") && r.action == "create"),
        "per-address summary {:?}",
        plan.resources
    );
    let state = format!("tfstate-default-{uid}");
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get(&state)
        .await
        .with_context(|| format!("state Secret {state}"))?;

    // Must-show 4 of #5: a resize shows in the plan summary before it is approved (two bigger
    // instances cost more than the auto-approval allows); turned down, nothing changes.
    requests(&member, ns)
        .patch(
            "tofu",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 2, "vcpu": 8, "memoryGiB": 16}]}})),
        )
        .await?;
    let rr = wait_phase(client, ns, "tofu", Phase::Changing, |r| {
        r.status.as_ref().and_then(|s| s.stage.as_ref()).is_some()
    })
    .await?;
    let plan = rr
        .status
        .as_ref()
        .and_then(|s| s.plan.clone())
        .context("plan")?;
    ensure!(
        plan.generation == 2 && plan.change >= 1 && plan.add == 1,
        "resize plan {plan:?}"
    );
    decide(&f.head, &[&f.head_group], &rr, "department", "Rejected").await?;
    wait_phase(client, ns, "tofu", Phase::Active, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.applied_generation == Some(1))
    })
    .await?;

    requests(&member, ns)
        .patch(
            "tofu",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecycle": "Retired"}})),
        )
        .await?;
    let rr = wait_phase(client, ns, "tofu", Phase::Exited, |_| true).await?;
    let st = rr.status.unwrap();
    ensure!(
        st.destroy
            .as_ref()
            .is_some_and(|d| d.state == RunPhase::Succeeded),
        "{:?}",
        st.destroy
    );
    ensure!(
        st.outputs.is_empty(),
        "outputs after destroy: {:?}",
        st.outputs
    );

    // Independent check: the workspace the operator kept, with the cluster's state.
    let listed =
        tofu_on_kept_workspace(client, ns, "tofu", &["state", "list", "-no-color"]).await?;
    ensure!(
        listed.is_empty(),
        "resources left in state after exit: {listed}"
    );
    Ok(())
}

/// Must-show 6 of #5: the operator is killed (SIGKILL) while OpenTofu applies; restarted, the
/// request reaches Active and the apply took effect once. The ecs module of this run has a
/// provisioner that appends a line to a marker file and then sleeps, so the kill lands in the
/// middle of the apply, and the marker counts how often it ran.
async fn restart_during_apply(
    client: &Client,
    f: &Fixture,
    operator: &mut OperatorProcess,
) -> anyhow::Result<()> {
    let ns = &f.dept;
    let root = std::env::temp_dir().join(unique("yz-slow-modules"));
    let modules = root.join("modules");
    let marker = root.join("applied.txt");
    copy_dir(&repo_root().join("examples/modules"), &modules)?;
    let mut ecs = std::fs::read_to_string(modules.join("ecs/main.tf"))?;
    ecs.push_str(&format!(
        "\nresource \"terraform_data\" \"apply_marker\" {{\n  provisioner \"local-exec\" {{\n    command = \"echo applied >> {} && sleep 4\"\n  }}\n}}\n",
        marker.display()
    ));
    std::fs::write(modules.join("ecs/main.tf"), ecs)?;
    // One working directory across the restart, as an emptyDir survives a container restart.
    let work_dir = root.join("work");
    let env = [
        ("YZ_TOFU_MODULES_DIR", modules.as_path()),
        ("YZ_TOFU_WORK_DIR", work_dir.as_path()),
    ];
    let args = ["--drift-check-seconds", "2"];
    operator.terminate()?;
    *operator = OperatorProcess::start_with_env(&args, &env)?;
    operator.wait_ready(WAIT).await?;

    let member = client_as(&f.member, &[]).await;
    apply(&member, &request(f, "restarted", web(1))).await?;
    wait_for(&requests(client, ns), "restarted", WAIT, |r| {
        r.status
            .as_ref()
            .and_then(|s| s.apply.as_ref())
            .is_some_and(|a| a.state == RunPhase::Running)
    })
    .await
    .context("the apply starts")?;
    // Into the provisioner's sleep.
    for _ in 0..100 {
        if marker.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(marker.exists(), "the apply never reached the provisioner");
    operator.kill_hard()?;
    *operator = OperatorProcess::start_with_env(&args, &env)?;
    operator.wait_ready(WAIT).await?;
    let rr = wait_phase(client, ns, "restarted", Phase::Active, |_| true).await?;
    let applies = std::fs::read_to_string(&marker)?.lines().count();
    ensure!(applies == 1, "the apply ran {applies} times");
    let run = rr.status.and_then(|s| s.apply).context("apply record")?;
    ensure!(
        run.attempts >= 2 && run.state == RunPhase::Succeeded,
        "apply record {run:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Must-show 5 of #5: state altered outside the operator raises `Drifted` (and an Event).
async fn drift_is_detected(client: &Client, f: &Fixture) -> anyhow::Result<()> {
    let ns = &f.dept;
    let member = client_as(&f.member, &[]).await;
    apply(&member, &request(f, "drifting", web(1))).await?;
    wait_phase(client, ns, "drifting", Phase::Active, |_| true).await?;
    let drifted = |r: &ResourceRequest, status: &str| {
        r.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Drifted" && c.status == status)
        })
    };
    wait_for(&requests(client, ns), "drifting", WAIT, |r| {
        drifted(r, "False")
    })
    .await
    .context("a first drift check finds nothing")?;
    let removed = tofu_on_kept_workspace(
        client,
        ns,
        "drifting",
        &[
            "state",
            "rm",
            "-no-color",
            "module.web.terraform_data.instance[0]",
        ],
    )
    .await?;
    ensure!(removed.contains("Removed"), "tofu state rm: {removed}");
    let rr = wait_for(&requests(client, ns), "drifting", WAIT, |r| {
        drifted(r, "True")
    })
    .await
    .context("Drifted after the state was altered")?;
    let message = rr
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Drifted")
        .map(|c| c.message)
        .unwrap_or_default();
    ensure!(message.contains("1 to add"), "Drifted message: {message}");
    let events = events_of(client, ns, "drifting").await?;
    ensure!(
        events.iter().any(|e| e == "Drifted"),
        "no Drifted event in {events:?}"
    );
    Ok(())
}

/// Run `tofu ARGS` on the workspace the operator kept in the request's plan ConfigMap, with the
/// state in the cluster (as admin): what a platform engineer would do by hand.
async fn tofu_on_kept_workspace(
    client: &Client,
    ns: &str,
    request: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), ns)
        .get(&format!("{request}-plan"))
        .await?;
    let dir = std::env::temp_dir().join(unique("yz-kept-workspace"));
    std::fs::create_dir_all(&dir)?;
    for (name, content) in cm.data.unwrap_or_default() {
        if name.ends_with(".tf") {
            std::fs::write(dir.join(name), content)?;
        }
    }
    std::os::unix::fs::symlink(repo_root().join("examples/modules"), dir.join("modules"))?;
    let tofu = |args: &[&str]| {
        std::process::Command::new(tofu_binary())
            .args(args)
            .current_dir(&dir)
            .env("KUBE_CONFIG_PATH", &cluster().admin_kubeconfig)
            .env("TF_IN_AUTOMATION", "1")
            .output()
    };
    let init = tofu(&["init", "-input=false", "-no-color"])?;
    ensure!(
        init.status.success(),
        "tofu init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let out = tofu(args)?;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(
        out.status.success(),
        "tofu {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Event reasons about a request, oldest first.
async fn events_of(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&Default::default()).await?;
    let mut events: Vec<_> = list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone());
    Ok(events.into_iter().filter_map(|e| e.reason).collect())
}
