//! Migration workloads against the real API server with real users: a rehost goes all the way
//! to Decommissioned through its own ResourceRequest (approved by people, provisioned by the
//! noop executor); classified is refused by the API server and sensitive needs the security
//! stage; a rollback retires the target request; Department status rolls the figures up the
//! tree and `yunzhang report scorecard` prints them. One operator runs all scenarios (Lease).

use std::time::Duration;

use anyhow::{Context, ensure};
use chrono::{Duration as Days, SecondsFormat, Utc};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use yunzhang::api::{
    Department, MigrationWorkload, Phase, ResourceRequest,
    annotations::{ON_BEHALF_OF, REQUESTER},
    migration_workload::{HookState, MigrationPhase},
    resource_request::DesiredLifecycle,
};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(90);
/// The registry the operator allows hook images from in this test.
const HOOK_REGISTRY: &str = "registry.example.gov.cn/migration/";

/// Waits for the hook Job at `hook` of `workload` that was not seen before, then ends its pod
/// as the container would (exit 0, or 1), as a kubelet reports it; returns the Job.
async fn end_hook_pod(
    admin: &Client,
    ns: &str,
    workload: &str,
    hook: &str,
    succeed: bool,
) -> anyhow::Result<Job> {
    let jobs: Api<Job> = Api::namespaced(admin.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(admin.clone(), ns);
    let selector = format!("yunzhang.io/migration-workload={workload},yunzhang.io/hook={hook}");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no unfinished {hook} pod of {workload}"
        );
        let unfinished = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"));
        let Some(pod) = unfinished else {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let job_name = pod
            .labels()
            .get("job-name")
            .cloned()
            .context("job-name label")?;
        let now = rfc3339(Utc::now());
        let (phase, code, reason) = if succeed {
            ("Succeeded", 0, "Completed")
        } else {
            ("Failed", 1, "Error")
        };
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "containerStatuses": [{
                "name": "hook", "image": "hook", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now}}}]}})),
        )
        .await?;
        return Ok(jobs.get(&job_name).await?);
    }
}

/// The hook Job as made by the operator: the image asked for, no privileges, a deadline.
fn check_hook_job(job: &Job, image: &str) -> anyhow::Result<()> {
    let spec = job.spec.as_ref().context("spec")?;
    let pod = spec.template.spec.as_ref().context("pod")?;
    let c = &pod.containers[0];
    ensure!(c.image.as_deref() == Some(image), "image {:?}", c.image);
    ensure!(
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == "YZ_PARAM_SOURCE"
                && e.value.as_deref() == Some("oracle://legacy-gw/gw")),
        "the parameter is an environment variable: {:?}",
        c.env
    );
    let sc = c.security_context.as_ref().context("securityContext")?;
    ensure!(
        sc.allow_privilege_escalation == Some(false)
            && sc.capabilities.as_ref().and_then(|c| c.drop.clone()) == Some(vec!["ALL".into()]),
        "{sc:?}"
    );
    ensure!(
        pod.automount_service_account_token == Some(false),
        "no API token"
    );
    ensure!(spec.active_deadline_seconds == Some(1800) && spec.backoff_limit == Some(0));
    ensure!(
        job.metadata
            .owner_references
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o.kind == "MigrationWorkload")),
        "owned by the workload"
    );
    Ok(())
}

/// The HookTemplate `name` with `spec`, as a platform engineer defines it.
async fn hook_template(admin: &Client, name: &str, spec: Value) -> anyhow::Result<()> {
    apply(
        admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "HookTemplate", "metadata": {"name": name}, "spec": spec}),
    )
    .await
}

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

async fn approve(user: &str, group: &str, ns: &str, name: &str, stage: &str) -> anyhow::Result<()> {
    let (ok, out, err) = yunzhang_as(
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
    let (ok, out, err) = yunzhang_as(
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
    let operator = OperatorProcess::start_with(&["--hook-image-prefixes", HOOK_REGISTRY])?;
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
    let (ok, _, err) = yunzhang_as(
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
    let (ok, _, err) = yunzhang_as(
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

    // A retired system: nothing to provision, straight to its gates; with hook Jobs around
    // cutover (the test plays the kubelet: it ends each Job's pod as the container would, and
    // the real job controller marks the Job).
    // The hooks are the platform's templates; the workload passes parameters.
    let (sync, smoke) = (unique("sync"), unique("smoke"));
    hook_template(
        &admin,
        &sync,
        json!({"image": format!("{HOOK_REGISTRY}sync:1.4"), "command": ["/sync", "--final"],
        "parameters": [{"name": "SOURCE", "required": true}]}),
    )
    .await?;
    hook_template(
        &admin,
        &smoke,
        json!({"image": format!("{HOOK_REGISTRY}smoke:1.0"), "timeoutSeconds": 300,
        "parameters": [{"name": "URL", "required": true}]}),
    )
    .await?;
    let mut gw = workload(&f, "old-gw", "retire", "internal", 0, Days::hours(-1));
    gw["spec"]["hooks"] = json!({
        "preCutover": {"template": sync, "parameters": {"SOURCE": "oracle://legacy-gw/gw"}},
        "postCutover": {"template": smoke, "parameters": {"URL": "https://gw.example.gov.cn/health"}},
    });
    apply(&member, &gw).await?;
    wait_workload(&admin, &ns, "old-gw", MigrationPhase::Migrating).await?;
    advance(&f, "old-gw", "Decommissioned").await?;
    let pre = end_hook_pod(&admin, &ns, "old-gw", "pre-cutover", true).await?;
    check_hook_job(&pre, &format!("{HOOK_REGISTRY}sync:1.4"))?;
    wait_workload(&admin, &ns, "old-gw", MigrationPhase::CutOver).await?;
    // The post-cutover hook fails: the workload stays cut over, saying so.
    let post = end_hook_pod(&admin, &ns, "old-gw", "post-cutover", false).await?;
    let workloads: Api<MigrationWorkload> = Api::namespaced(admin.clone(), &ns);
    let held = wait_for(&workloads, "old-gw", WAIT, |w| {
        w.status.as_ref().is_some_and(|s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("hook Job") && m.contains("failed"))
                && s.hooks.iter().any(|h| h.state == HookState::Failed)
        })
    })
    .await
    .context("a failed post-cutover hook holds the workload")?;
    ensure!(
        held.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::CutOver),
        "{:?}",
        held.status
    );
    // Fixed (a changed hook is a new Job), it runs again and succeeds.
    gw["spec"]["hooks"]["postCutover"]["parameters"]["URL"] =
        json!("https://gw.example.gov.cn/healthz");
    apply(&member, &gw).await?;
    let again = end_hook_pod(&admin, &ns, "old-gw", "post-cutover", true).await?;
    ensure!(
        again.metadata.name != post.metadata.name,
        "a new Job for the changed hook"
    );
    wait_workload(&admin, &ns, "old-gw", MigrationPhase::Decommissioned).await?;
    // A hook from a registry the platform doesn't allow never runs.
    let mut rogue = workload(&f, "rogue", "retire", "internal", 0, Days::hours(-1));
    let elsewhere = unique("tool");
    hook_template(
        &admin,
        &elsewhere,
        json!({"image": "docker.io/someone/tool:latest"}),
    )
    .await?;
    rogue["spec"]["hooks"] = json!({"preCutover": {"template": elsewhere}});
    rogue["spec"]["advanceTo"] = json!("CutOver");
    apply(&member, &rogue).await?;
    wait_for(&workloads, "rogue", WAIT, |w| {
        w.status.as_ref().is_some_and(|s| {
            s.phase == Some(MigrationPhase::Migrating)
                && s.message
                    .as_deref()
                    .is_some_and(|m| m.contains("not from a registry the platform allows"))
        })
    })
    .await
    .context("a hook image outside the allowed registries is refused")?;
    let rogue_jobs = Api::<Job>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default().labels("yunzhang.io/migration-workload=rogue"))
        .await?;
    ensure!(rogue_jobs.items.is_empty(), "no Job for a refused hook");
    workloads.delete("rogue", &Default::default()).await?;

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
    let quarter = this_quarter();
    let (ok, csv, err) = yunzhang_as(
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
    // Then spend from 1 January: the department's requests have run a few minutes (a few fen);
    // the region's tree spends what the department does; neither has a budget.
    let mut spent = Vec::new();
    for prefix in [
        format!(
            "{quarter},department,{},测试单位,{},4,1,0,1,33.33,75.00,false,0.00,50.00,false,75.00,false,",
            f.dept, f.region
        ),
        format!(
            "{quarter},region,{},测试区大数据局,{},4,1,0,1,33.33,75.00,false,0.00,50.00,false,75.00,false,",
            f.region, f.region
        ),
    ] {
        let line = csv
            .lines()
            .find(|l| l.starts_with(&prefix))
            .with_context(|| format!("{prefix} not in:\n{csv}"))?;
        let rest: Vec<&str> = line[prefix.len()..].split(',').collect();
        ensure!(rest.len() == 3 && rest[1..] == ["", ""], "{line}");
        spent.push(rest[0].parse::<f64>().with_context(|| line.to_owned())?);
    }
    ensure!(
        spent[0] == spent[1],
        "region spend = department spend: {spent:?}"
    );
    // The same table as XLSX, read back by an independent reader.
    let xlsx = std::env::temp_dir().join(format!("{}-scorecard.xlsx", f.dept));
    let (ok, _, err) = yunzhang_as(
        "platform-admin",
        &["system:masters"],
        &[
            "report",
            "scorecard",
            "--quarter",
            &quarter,
            "--format",
            "xlsx",
            "--output",
            xlsx.to_str().context("path")?,
        ],
    )
    .await?;
    ensure!(ok, "report scorecard --format xlsx: {err}");
    {
        use calamine::{Data, Reader, Xlsx, open_workbook};
        let mut book: Xlsx<_> = open_workbook(&xlsx)?;
        let rows: Vec<Vec<Data>> = book
            .worksheet_range("Scorecard")?
            .rows()
            .map(|r| r.to_vec())
            .collect();
        ensure!(rows[0][0] == Data::String("quarter".into()) && rows[0].len() == 20);
        let row = rows
            .iter()
            .find(|r| {
                r[1] == Data::String("department".into()) && r[2] == Data::String(f.dept.clone())
            })
            .context("the department's row in the XLSX")?;
        ensure!(
            row[3] == Data::String("测试单位".into())
                && row[5] == Data::Float(4.0)
                && row[9] == Data::Float(33.33)
                && row[11] == Data::String("false".into())
                // Running requests charge by the second: a fen or two more since the CSV.
                && matches!(row[17], Data::Float(v) if (v - spent[0]).abs() < 0.05),
            "{row:?}"
        );
    }
    let _ = std::fs::remove_file(&xlsx);
    // Spend against budget rolls up the tree in Department status: the region's subtree has the
    // department's budget and spend.
    depts
        .patch(
            &f.dept,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"budget": {"annual": "100000.00"}}})),
        )
        .await?;
    let region = wait_for(&depts, &f.region, WAIT, |d| {
        d.status
            .as_ref()
            .and_then(|s| s.subtree.as_ref())
            .and_then(|s| s.spend.as_ref())
            .is_some_and(|s| s.budget.0 == "100000.00")
    })
    .await
    .context("the region's status.subtree.spend")?;
    let dept = depts.get(&f.dept).await?;
    let own = dept
        .status
        .and_then(|s| s.budget)
        .context("the department's status.budget")?;
    let up = region
        .status
        .and_then(|s| s.subtree)
        .and_then(|s| s.spend)
        .context("spend")?;
    let (a, b): (f64, f64) = (own.spent.0.parse()?, up.spent.0.parse()?);
    ensure!(
        (a - b).abs() < 0.05 && up.year == own.year,
        "region {up:?} vs department {own:?}"
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
