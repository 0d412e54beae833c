//! Migration workloads against the real API server with real users: a rehost goes all the way
//! to Decommissioned through its own ResourceRequest (approved by people, provisioned by the
//! noop executor); classified is refused by the API server and sensitive needs the security
//! stage; a rollback retires the target request; Department status rolls the figures up the
//! tree and `yunzhang report scorecard` prints them. One operator runs all scenarios (Lease).

use std::time::Duration;

use anyhow::{Context, ensure};
use chrono::{Duration as Days, SecondsFormat, Utc};
use kube::{Api, Client};
use serde_json::{Value, json};
use yunzhang::api::{
    Department, MigrationWorkload, Phase, ResourceRequest,
    annotations::{ON_BEHALF_OF, REQUESTER},
    migration_workload::MigrationPhase,
    resource_request::DesiredLifecycle,
};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(90);

struct Fixture {
    region: String,
    dept: String,
    member: String,
    head: String,
    head_group: String,
    security: String,
    security_group: String,
}

async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    apply_value(client, v, "yunzhang-tests").await.map(|_| ())
}

async fn fixture(admin: &Client) -> anyhow::Result<Fixture> {
    let dept = unique("mig");
    let f = Fixture {
        region: format!("{dept}-region"),
        member: format!("{dept}-member"),
        head: format!("{dept}-head"),
        head_group: format!("{dept}-heads"),
        security: format!("{dept}-sec"),
        security_group: format!("{dept}-security-office"),
        dept,
    };
    let d = &f.dept;
    for v in [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": d},
               "spec": {"displayName": "测试云", "region": "nanning-1", "executor": {"type": "noop"},
                        "modules": {"ecs": {"source": "./modules/ecs"}}}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": d},
               "spec": {"provider": d, "currency": "CNY", "effectiveFrom": "2026-01-01T00:00:00+08:00",
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"}]}}),
        // One small server passes on its own (unless sensitive); the department head approves
        // the rest, and the security office sensitive systems.
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": d},
               "spec": {"autoApprove": {"maxMonthlyCost": "600.00"},
                        "separationOfDuties": {"allowSameDepartment": false},
                        "stages": [
                          {"name": "department", "allowSameDepartment": true,
                           "approvers": [{"kind": "Group", "name": f.head_group}]},
                          {"name": "security", "when": {"classification": ["sensitive"]},
                           "approvers": [{"kind": "Group", "name": f.security_group}]}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": f.region},
               "spec": {"displayName": "测试区大数据局", "code": "11450000MB0000000X", "provider": d, "approvalPolicy": d}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": d},
               "spec": {"displayName": "测试单位", "code": "11450000MB0000000X", "provider": d, "approvalPolicy": d,
                        "parent": f.region,
                        "admins": [{"kind": "User", "name": f.head}],
                        "members": [{"kind": "User", "name": f.member}]}}),
    ] {
        apply(admin, &v).await?;
    }
    for group in [&f.head_group, &f.security_group] {
        bind_approver_group(admin, group).await?;
    }
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    for ns in [&f.region, &f.dept] {
        wait_for(&ns_api, ns, WAIT, |_| true).await?;
        apply(
            admin,
            &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "base", "namespace": ns},
                    "spec": {"hard": {"vcpu": 64, "instances": 20, "monthlyCost": "50000.00"}}}),
        )
        .await?;
    }
    Ok(f)
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A workload of `strategy` with `count` small servers (none: no target), cutover window
/// starting `opens_in` from now.
fn workload(
    f: &Fixture,
    name: &str,
    strategy: &str,
    classification: &str,
    count: u32,
    opens_in: Days,
) -> Value {
    let now = Utc::now();
    let mut v = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "MigrationWorkload",
        "metadata": {"name": name, "namespace": f.dept},
        "spec": {"system": {"name": "非税收入管理系统", "code": format!("SYS-{name}")},
                 "classification": classification, "strategy": strategy,
                 "source": {"dataCenter": "财政厅机房", "hosts": 2, "storageGiB": 200},
                 "cutover": {"notBefore": rfc3339(now + opens_in), "notAfter": rfc3339(now + opens_in + Days::hours(8))}}});
    if count > 0 {
        v["spec"]["target"] = json!({"items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": count, "vcpu": 4, "memoryGiB": 8}]});
    }
    if strategy == "integrate" {
        v["spec"]["integratesInto"] = json!("SYS-PLATFORM");
    }
    v
}

async fn wait_workload(
    client: &Client,
    ns: &str,
    name: &str,
    phase: MigrationPhase,
) -> anyhow::Result<MigrationWorkload> {
    let api: Api<MigrationWorkload> = Api::namespaced(client.clone(), ns);
    match wait_for(&api, name, WAIT, |w| {
        w.status.as_ref().and_then(|s| s.phase) == Some(phase)
    })
    .await
    {
        Ok(w) => Ok(w),
        Err(e) => {
            let w = api.get(name).await?;
            anyhow::bail!(
                "{ns}/{name} is not {phase:?}: {e}; status: {}",
                serde_json::to_string(&w.status)?
            )
        }
    }
}

async fn wait_request(
    client: &Client,
    ns: &str,
    name: &str,
    also: impl Fn(&ResourceRequest) -> bool,
) -> anyhow::Result<ResourceRequest> {
    let api: Api<ResourceRequest> = Api::namespaced(client.clone(), ns);
    match wait_for(&api, name, WAIT, also).await {
        Ok(r) => Ok(r),
        Err(e) => {
            let r = api.get(name).await?;
            anyhow::bail!(
                "{ns}/{name}: {e}; status: {}",
                serde_json::to_string(&r.status)?
            )
        }
    }
}

fn phase_is(p: Phase) -> impl Fn(&ResourceRequest) -> bool {
    move |r| r.status.as_ref().and_then(|s| s.phase) == Some(p)
}

fn waiting_in(stage: &'static str) -> impl Fn(&ResourceRequest) -> bool {
    move |r| {
        r.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::AwaitingApproval)
                && s.stage.as_ref().is_some_and(|st| st.name == stage)
        })
    }
}

/// Run `yunzhang ARGS` as `user` in `groups`: (success, stdout, stderr).
async fn yunzhang(
    user: &str,
    groups: &[&str],
    args: &[&str],
) -> anyhow::Result<(bool, String, String)> {
    let out = tokio::process::Command::new(operator_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig_for(user, groups))
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

async fn approve(user: &str, group: &str, ns: &str, name: &str, stage: &str) -> anyhow::Result<()> {
    let (ok, out, err) = yunzhang(
        user,
        &[group],
        &[
            "approve",
            name,
            "-n",
            ns,
            "--stage",
            stage,
            "--comment",
            "已审核",
        ],
    )
    .await?;
    ensure!(ok, "approve {name} at {stage} as {user}: {err}{out}");
    Ok(())
}

async fn advance(f: &Fixture, name: &str, to: &str) -> anyhow::Result<String> {
    let (ok, out, err) = yunzhang(
        &f.member,
        &[],
        &["migration", "advance", name, "-n", &f.dept, "--to", to],
    )
    .await?;
    ensure!(ok, "migration advance {name} --to {to}: {err}");
    Ok(out)
}

#[tokio::test]
async fn migration_workloads_lifecycle_and_scorecard() -> anyhow::Result<()> {
    let admin = admin().await;
    let operator = OperatorProcess::start()?;
    operator.wait_ready(Duration::from_secs(60)).await?;
    let f = fixture(&admin).await?;
    let member = client_as(&f.member, &[]).await;
    let ns = f.dept.clone();

    // 2a. Classified (涉密) systems are refused by the API server, naming the field.
    let err = apply(
        &member,
        &workload(&f, "secret", "rehost", "classified", 1, Days::zero()),
    )
    .await
    .expect_err("classified must be refused");
    ensure!(
        err.to_string().contains("spec.classification: classified"),
        "refusal names the field: {err}"
    );
    // Nobody but the operator may claim to ask on someone else's behalf.
    let forged = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
        "metadata": {"name": "forged", "namespace": ns, "annotations": {ON_BEHALF_OF: f.head}},
        "spec": {"purpose": "x", "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1}]}});
    let err = apply(&member, &forged)
        .await
        .expect_err("on-behalf-of must be refused");
    ensure!(
        err.to_string().contains("yunzhang.io/on-behalf-of"),
        "refusal names the annotation: {err}"
    );

    // 1. A rehost goes all the way to Decommissioned; its ResourceRequest is Active.
    apply(
        &member,
        &workload(&f, "nontax", "rehost", "internal", 2, Days::hours(-1)),
    )
    .await?;
    let rr = wait_request(&admin, &ns, "nontax", waiting_in("department")).await?;
    let ann = rr.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        ann.get(ON_BEHALF_OF) == Some(&f.member),
        "on behalf of the member: {ann:?}"
    );
    ensure!(
        ann.get(REQUESTER).map(String::as_str) == Some(OPERATOR_USER),
        "created by the operator: {ann:?}"
    );
    ensure!(
        rr.metadata.owner_references.as_ref().is_some_and(|o| o
            .iter()
            .any(|o| o.kind == "MigrationWorkload"
                && o.name == "nontax"
                && o.controller == Some(true))),
        "owned by the workload"
    );
    ensure!(
        rr.status.as_ref().and_then(|s| s.requester.clone()) == Some(f.member.clone()),
        "the request shows the workload's creator as requester"
    );
    let w = wait_workload(&admin, &ns, "nontax", MigrationPhase::Planned).await?;
    ensure!(w.status.as_ref().and_then(|s| s.requester.clone()) == Some(f.member.clone()));
    // Four eyes hold against the workload's creator, not the operator.
    let (ok, _, err) = yunzhang(
        &f.member,
        &[&f.head_group],
        &["approve", "nontax", "-n", &ns, "--stage", "department"],
    )
    .await?;
    ensure!(
        !ok && err.contains("four eyes"),
        "the creator can't approve: {err}"
    );
    approve(&f.head, &f.head_group, &ns, "nontax", "department").await?;
    wait_request(&admin, &ns, "nontax", phase_is(Phase::Active)).await?;
    wait_workload(&admin, &ns, "nontax", MigrationPhase::Migrating).await?;
    let out = advance(&f, "nontax", "Decommissioned").await?;
    ensure!(out.contains("Decommissioned"), "{out}");
    let w = wait_workload(&admin, &ns, "nontax", MigrationPhase::Decommissioned).await?;
    let history: Vec<MigrationPhase> = w
        .status
        .clone()
        .unwrap_or_default()
        .history
        .iter()
        .map(|h| h.phase)
        .collect();
    use MigrationPhase::*;
    ensure!(
        history
            == vec![
                Approved,
                Provisioning,
                Migrating,
                CutOver,
                Verified,
                Decommissioned
            ],
        "history: {history:?}"
    );
    let rr = wait_request(&admin, &ns, "nontax", phase_is(Phase::Active)).await?;
    ensure!(rr.spec.lifecycle == DesiredLifecycle::Active);
    let (ok, _, err) = yunzhang(
        &f.member,
        &[],
        &[
            "migration",
            "advance",
            "nontax",
            "-n",
            &ns,
            "--to",
            "RolledBack",
        ],
    )
    .await?;
    ensure!(
        !ok && err.contains("final"),
        "no rollback after decommissioning: {err}"
    );

    // 2b. A sensitive system needs the security stage after the department's, even when cheap.
    apply(
        &member,
        &workload(
            &f,
            "tax-sens",
            "replatform",
            "sensitive",
            1,
            Days::hours(-1),
        ),
    )
    .await?;
    wait_request(&admin, &ns, "tax-sens", waiting_in("department")).await?;
    approve(&f.head, &f.head_group, &ns, "tax-sens", "department").await?;
    let rr = wait_request(&admin, &ns, "tax-sens", waiting_in("security")).await?;
    ensure!(
        rr.status
            .as_ref()
            .and_then(|s| s.stage.as_ref())
            .is_some_and(|s| s.of == 2)
    );
    let w = wait_workload(&admin, &ns, "tax-sens", MigrationPhase::Planned).await?;
    ensure!(
        w.status
            .as_ref()
            .and_then(|s| s.message.clone())
            .is_some_and(|m| m.contains("AwaitingApproval")),
        "the workload says what it waits for"
    );
    approve(&f.security, &f.security_group, &ns, "tax-sens", "security").await?;
    wait_workload(&admin, &ns, "tax-sens", MigrationPhase::Migrating).await?;

    // 3. Rollback: a cheap internal system (auto-approved) whose window is tomorrow waits for
    // it, then is rolled back; its target request is retired and exits.
    apply(
        &member,
        &workload(&f, "oa", "refactor", "internal", 1, Days::days(1)),
    )
    .await?;
    wait_workload(&admin, &ns, "oa", MigrationPhase::Migrating).await?;
    advance(&f, "oa", "CutOver").await?;
    let api: Api<MigrationWorkload> = Api::namespaced(admin.clone(), &ns);
    wait_for(&api, "oa", WAIT, |w| {
        w.status
            .as_ref()
            .and_then(|s| s.message.clone())
            .is_some_and(|m| m.contains("waiting for the cutover window"))
    })
    .await
    .context("cutover waits for its window")?;
    ensure!(api.get("oa").await?.status.and_then(|s| s.phase) == Some(Migrating));
    advance(&f, "oa", "RolledBack").await?;
    wait_workload(&admin, &ns, "oa", MigrationPhase::RolledBack).await?;
    let rr = wait_request(&admin, &ns, "oa", phase_is(Phase::Exited)).await?;
    ensure!(rr.spec.lifecycle == DesiredLifecycle::Retired);

    // A retired system: nothing to provision, straight to its gates.
    apply(
        &member,
        &workload(&f, "old-gw", "retire", "internal", 0, Days::hours(-1)),
    )
    .await?;
    wait_workload(&admin, &ns, "old-gw", MigrationPhase::Migrating).await?;
    advance(&f, "old-gw", "Decommissioned").await?;
    wait_workload(&admin, &ns, "old-gw", MigrationPhase::Decommissioned).await?;

    // 4. Department status rolls the figures up: 4 systems, 1 migrated, 1 retired:
    // 1 / 3 = 33.33 %; the region above shows the same subtree.
    let depts: Api<Department> = Api::all(admin.clone());
    for d in [&f.dept, &f.region] {
        wait_for(&depts, d, WAIT, |d| {
            d.status
                .as_ref()
                .and_then(|s| s.migration.clone())
                .is_some_and(|m| {
                    (
                        m.systems,
                        m.migrated,
                        m.integrated,
                        m.retired,
                        m.migration_rate.as_str(),
                        m.integration_rate.as_str(),
                    ) == (4, 1, 0, 1, "33.33", "0.00")
                })
        })
        .await
        .with_context(|| format!("Department {d} status.migration"))?;
    }
    // The scorecard, as a platform admin: the department's own row and the region's.
    let quarter = {
        let now = Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
        use chrono::Datelike;
        format!("{}-Q{}", now.year(), (now.month() - 1) / 3 + 1)
    };
    let (ok, csv, err) = yunzhang(
        "platform-admin",
        &["system:masters"],
        &[
            "report",
            "scorecard",
            "--quarter",
            &quarter,
            "--format",
            "csv",
        ],
    )
    .await?;
    ensure!(ok, "report scorecard: {err}");
    for line in [
        format!(
            "{quarter},department,{},测试单位,{},4,1,0,1,33.33,75.00,false,0.00,50.00,false,75.00,false",
            f.dept, f.region
        ),
        format!(
            "{quarter},region,{},测试区大数据局,{},4,1,0,1,33.33,75.00,false,0.00,50.00,false,75.00,false",
            f.region, f.region
        ),
    ] {
        ensure!(csv.contains(&line), "{line} not in:\n{csv}");
    }
    let (ok, _, err) = yunzhang(
        "platform-admin",
        &["system:masters"],
        &[
            "report",
            "scorecard",
            "--quarter",
            &quarter,
            "--format",
            "xlsx",
        ],
    )
    .await?;
    ensure!(
        !ok && err.contains("--format csv"),
        "xlsx says what to use instead: {err}"
    );
    // A changed target reaches the request (a change, re-approved as the policy says).
    let mut changed = workload(&f, "nontax", "rehost", "internal", 3, Days::hours(-1));
    changed["spec"]["advanceTo"] = json!("Decommissioned");
    apply(&member, &changed).await?;
    wait_request(&admin, &ns, "nontax", |r| r.spec.items[0].count == 3)
        .await
        .context("the target change reaches the request")?;
    drop(operator);
    Ok(())
}
