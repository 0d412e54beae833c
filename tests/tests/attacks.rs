//! Ways around the rules, tried by real users (client certificates) against the real API server
//! and the running operator; each is refused with a message that says what is not allowed, and
//! nothing is lost.
//!
//! Finalizers are the operator's alone: a member, and even the cluster admin, who removes
//! `yunzhang.io/lifecycle` from a request whose destroy keeps failing is refused, and the request
//! keeps its quota and its open billing. The way out of a stuck deletion is `kubectl yunzhang
//! force-exit`: refused to a member, refused with a forged `force-exit-by`, and done by a
//! platform admin, it closes billing and releases quota without the destroy, recorded with who
//! and why (the request's annotations and status, and ForcedExit Events on the request and its
//! Department), and the record can't be changed afterwards.
//!
//! Four eyes against every editor: a department admin who is also an approver changes a
//! colleague's request, and then can't approve it; nobody can erase the record of who changed
//! it; another approver can.
//!
//! Apply exactly what was approved: the workspace kept in the plan ConfigMap is changed after
//! planning (its recorded hash left as it was); once approved, the apply refuses it, nothing runs.
//!
//! The estimate prices what will be provisioned: the cheap SKU (2 vCPU, as its PriceBook says)
//! asked with 16 vCPU is not priced as the cheap SKU, so it is not approved automatically.
//!
//! Groups can't be spliced: a member in a group named `x,<dept>-office` is recorded as in that
//! one group (a JSON array), never as in `<dept>-office`; typing the comma-joined form is refused.
//!
//! The destroy fails for real: the operator's tofu is the pinned tofu behind a wrapper that
//! answers `destroy` in this test's namespace with an error, as a provider that is gone would.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use yunzhang::api::{
    CloudQuota, Phase, ResourceRequest,
    annotations::{EDITORS, FORCE_EXIT_BY, FORCE_EXIT_REASON, REQUESTER_GROUPS, parse_groups},
    resource_request::RunPhase,
};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(90);

async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    apply_value(client, v, "yunzhang-tests").await.map(|_| ())
}

/// The pinned tofu, except that `destroy` fails in namespace `ns`'s workspaces.
fn tofu_whose_destroy_fails_in(ns: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(unique("yz-failing-tofu"));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("tofu");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$1:$PWD\" in\n  destroy:*/{ns}.*) echo 'Error: the cloud API of this provider does not answer (decommissioned)' >&2; exit 1;;\nesac\nexec {} \"$@\"\n",
            tofu_binary().display()
        ),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// A department `dept` (namespace `dept`) with `member` and the admin `{dept}-head`, a
/// local-executor provider with prices, a policy that lets up to ¥5,000 a month through and
/// sends the rest to the approvers in group `{dept}-office` (the department's own admin
/// included), and a quota of 64 vCPU.
async fn department(admin: &Client, dept: &str, member: &str) -> anyhow::Result<()> {
    for v in [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": dept},
               "spec": {"displayName": "测试云", "region": "nanning-1", "executor": {"type": "local"},
                        "modules": {"ecs": {"source": "./modules/ecs"}}}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": dept},
               "spec": {"provider": dept, "currency": "CNY", "effectiveFrom": "2026-01-01T00:00:00+08:00",
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80", "vcpu": 2, "memoryGiB": 4}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": dept},
               "spec": {"autoApprove": {"maxMonthlyCost": "5000.00"},
                        "stages": [{"name": "office", "allowSameDepartment": true,
                                    "approvers": [{"kind": "Group", "name": format!("{dept}-office")}]}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": dept},
               "spec": {"displayName": "测试单位", "code": "11450000MB0000000X", "provider": dept, "approvalPolicy": dept,
                        "members": [{"kind": "User", "name": member}],
                        "admins": [{"kind": "User", "name": format!("{dept}-head")}]}}),
    ] {
        apply(admin, &v).await?;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    wait_for(&namespaces, dept, WAIT, |_| true).await?;
    apply(
        admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "base", "namespace": dept},
                "spec": {"hard": {"vcpu": 64}}}),
    )
    .await?;
    bind_approver_group(admin, &format!("{dept}-office")).await
}

/// The vCPU the department's quota shows as used now.
async fn used_vcpu(admin: &Client, ns: &str) -> anyhow::Result<u64> {
    let quota = Api::<CloudQuota>::namespaced(admin.clone(), ns)
        .get("base")
        .await?;
    Ok(quota
        .status
        .and_then(|s| s.used)
        .and_then(|u| u.vcpu)
        .unwrap_or(0))
}

/// The vCPU the department's quota shows as used, once it equals `vcpu`.
async fn used_vcpu_is(admin: &Client, ns: &str, vcpu: u64) -> anyhow::Result<()> {
    let quotas: Api<CloudQuota> = Api::namespaced(admin.clone(), ns);
    let used = |q: &CloudQuota| {
        q.status
            .as_ref()
            .and_then(|s| s.used.as_ref())
            .and_then(|u| u.vcpu)
            .unwrap_or(0)
    };
    wait_for(&quotas, "base", WAIT, |q| used(q) == vcpu)
        .await
        .map(|_| ())
        .with_context(|| format!("the quota of {ns} shows {vcpu} vCPU used"))
}

/// `yunzhang ARGS` as `user` in `groups`: (success, stdout and stderr together).
async fn cli_as(user: &str, groups: &[&str], args: &[&str]) -> anyhow::Result<(bool, String)> {
    let (ok, out, err) = yunzhang_as(user, groups, args).await?;
    Ok((ok, format!("{out}{err}")))
}

/// `result` is a refusal whose message holds every one of `needed`.
fn refused<T: std::fmt::Debug>(
    what: &str,
    result: Result<T, kube::Error>,
    needed: &[&str],
) -> anyhow::Result<()> {
    match result {
        Ok(v) => bail!("{what} was allowed: {v:?}"),
        Err(e) => {
            let message = e.to_string();
            for n in needed {
                ensure!(
                    message.contains(n),
                    "{what}: the refusal names {n:?}: {message}"
                );
            }
            Ok(())
        }
    }
}

#[tokio::test]
async fn ways_around_the_rules_are_refused() -> anyhow::Result<()> {
    let admin = admin().await;
    let dept = unique("atk");
    let tofu = tofu_whose_destroy_fails_in(&dept)?;
    let operator = OperatorProcess::start_with_env(&[], &[("YZ_TOFU", &tofu)])?;
    operator.wait_ready(WAIT).await?;
    let member = format!("{dept}-member");
    department(&admin, &dept, &member).await?;
    finalizers_are_the_operators_and_a_stuck_deletion_is_forced_out_on_the_record(
        &admin, &dept, &member,
    )
    .await
    .context("finalizers and force-exit")?;
    whoever_changed_the_spec_cannot_approve_it(&admin, &dept, &member)
        .await
        .context("four eyes against every editor")?;
    a_cheap_sku_is_not_priced_for_more_than_it_is(&admin, &dept, &member)
        .await
        .context("the estimate prices what will be provisioned")?;
    what_runs_is_what_was_approved(&admin, &dept, &member)
        .await
        .context("apply exactly what was approved")?;
    groups_cannot_be_spliced(&dept, &member)
        .await
        .context("groups")?;
    hooks_run_only_the_platforms_templates(&admin, &dept, &member)
        .await
        .context("hooks")?;
    what_cant_be_right_is_refused_at_apply(&admin, &dept, &member)
        .await
        .context("refused by kubectl apply")?;
    a_quota_window_counts_only_while_it_is_open(&admin, &dept, &member)
        .await
        .context("quota windows relative to now")?;
    only_the_api_server_is_answered_by_the_webhooks().context("webhook client authentication")?;
    the_operator_binds_only_in_department_namespaces(&admin)
        .await
        .context("the operator's RoleBindings")?;
    let _ = std::fs::remove_dir_all(tofu.parent().context("tofu's dir")?);
    Ok(())
}

async fn finalizers_are_the_operators_and_a_stuck_deletion_is_forced_out_on_the_record(
    admin: &Client,
    dept: &str,
    member: &str,
) -> anyhow::Result<()> {
    let (admin, dept, member) = (admin.clone(), dept.to_owned(), member.to_owned());
    let platform = format!("{dept}-platform-admin");
    let platform_group = format!("{dept}-platform");
    apply(
        &admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": platform_group},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "yunzhang-platform-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": platform_group}]}),
    )
    .await?;

    // The member's request runs, then is deleted: its destroy keeps failing.
    let as_member = client_as(&member, &[]).await;
    let mine: Api<ResourceRequest> = Api::namespaced(as_member.clone(), &dept);
    apply(
        &as_member,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                "metadata": {"name": "stuck", "namespace": dept},
                "spec": {"purpose": "上云测试", "items": [
                    {"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 2, "memoryGiB": 4}]}}),
    )
    .await?;
    wait_for(&mine, "stuck", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Active))
    })
    .await
    .context("the request runs")?;
    used_vcpu_is(&admin, &dept, 2).await?;
    // Billed for a couple of seconds at least (metering has whole seconds; a zero-second
    // interval bills nothing, and a request with nothing billed goes as soon as it exits).
    tokio::time::sleep(Duration::from_secs(2)).await;
    mine.delete("stuck", &DeleteParams::default()).await?;
    wait_for(&mine, "stuck", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| {
            s.destroy
                .as_ref()
                .is_some_and(|d| d.state == RunPhase::Failed)
        })
    })
    .await
    .context("the destroy fails")?;

    // Nobody but the operator removes its finalizer: not the member, not the cluster admin.
    let drop_finalizers = json!({"metadata": {"finalizers": null}});
    refused(
        "the member removing the finalizer",
        mine.patch(
            "stuck",
            &PatchParams::default(),
            &Patch::Merge(&drop_finalizers),
        )
        .await,
        &[
            "metadata.finalizers: yunzhang.io/lifecycle is removed only by the yunzhang operator",
            &member,
            "kubectl yunzhang force-exit stuck",
        ],
    )?;
    let as_admin: Api<ResourceRequest> = Api::namespaced(admin.clone(), &dept);
    refused(
        "the cluster admin removing the finalizer",
        as_admin
            .patch(
                "stuck",
                &PatchParams::default(),
                &Patch::Merge(&drop_finalizers),
            )
            .await,
        &["metadata.finalizers: yunzhang.io/lifecycle is removed only by the yunzhang operator"],
    )?;
    // Nothing was lost: the request is there, holding its quota, billing still open.
    let still = as_admin.get("stuck").await?;
    let billing_open = |r: &ResourceRequest| {
        r.status
            .as_ref()
            .is_some_and(|s| s.billing.iter().any(|i| i.to.is_none()))
    };
    ensure!(
        billing_open(&still),
        "billing still runs: {:?}",
        still.status
    );
    used_vcpu_is(&admin, &dept, 2).await?;

    // force-exit: not for a member, not under someone else's name.
    let (ok, out) = cli_as(
        &member,
        &[],
        &["force-exit", "stuck", "-n", &dept, "--reason", "想删就删"],
    )
    .await?;
    ensure!(
        !ok && out.contains("may not force-exit requests")
            && out.contains("yunzhang-platform-admin"),
        "a member's force-exit is refused: {out}"
    );
    let as_platform = client_as(&platform, &[&platform_group]).await;
    let forged = json!({"metadata": {"annotations": {FORCE_EXIT_BY: "someone-else", FORCE_EXIT_REASON: "provider decommissioned"}}});
    refused(
        "a force-exit recorded under another name",
        Api::<ResourceRequest>::namespaced(as_platform.clone(), &dept)
            .patch("stuck", &PatchParams::default(), &Patch::Merge(&forged))
            .await,
        &[
            "metadata.annotations[yunzhang.io/force-exit-by] is recorded from the authenticated user",
            &platform,
        ],
    )?;
    ensure!(
        billing_open(&as_admin.get("stuck").await?),
        "still running after the refusals"
    );

    // The platform admin forces it out: billing closed, quota released, who and why recorded.
    let (ok, out) = cli_as(
        &platform,
        &[&platform_group],
        &[
            "force-exit",
            "stuck",
            "-n",
            &dept,
            "--reason",
            "provider decommissioned",
        ],
    )
    .await?;
    ensure!(ok, "the platform admin's force-exit: {out}");
    ensure!(
        out.contains(&format!("force-exit recorded as {platform}")),
        "{out}"
    );
    let exited = wait_for(&as_admin, "stuck", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Exited))
    })
    .await
    .context("forced out")?;
    let st = exited.status.clone().unwrap_or_default();
    ensure!(
        !billing_open(&exited) && !st.billing.is_empty(),
        "billing closed: {:?}",
        st.billing
    );
    ensure!(st.quota.is_none(), "no quota held: {:?}", st.quota);
    let message = st.message.unwrap_or_default();
    ensure!(
        message.contains(&format!(
            "forced out by {platform} (provider decommissioned)"
        )),
        "the status says who and why: {message}"
    );
    used_vcpu_is(&admin, &dept, 0).await?;
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(admin.clone())
        .list(&Default::default())
        .await?;
    let forced_on = |kind: &str, name: &str| {
        events.items.iter().any(|e| {
            e.reason.as_deref() == Some("ForcedExit")
                && e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains(&platform) && n.contains("provider decommissioned"))
        })
    };
    ensure!(
        forced_on("Department", &dept),
        "a ForcedExit Event on the Department names who and why"
    );

    // The record stays as it was written.
    refused(
        "rewriting the force-exit record",
        as_admin
            .patch(
                "stuck",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {FORCE_EXIT_REASON: "never mind"}}}),
                ),
            )
            .await,
        &["are the record of a force-exit and can't be changed or removed"],
    )?;
    Ok(())
}

async fn whoever_changed_the_spec_cannot_approve_it(
    admin: &Client,
    dept: &str,
    member: &str,
) -> anyhow::Result<()> {
    let (head, office) = (format!("{dept}-head"), format!("{dept}-office"));
    let other = format!("{dept}-other-approver");
    let as_member = client_as(member, &[]).await;
    // ¥5,840 a month: above what passes on its own, so the office approves.
    let web = |count: u32| json!([{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": count, "vcpu": 2, "memoryGiB": 4}]);
    apply(
        &as_member,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                "metadata": {"name": "edited", "namespace": dept},
                "spec": {"purpose": "上云测试", "items": web(10)}}),
    )
    .await?;
    let as_head: Api<ResourceRequest> = Api::namespaced(client_as(&head, &[&office]).await, dept);
    // The head (a department admin, and an approver) changes the colleague's request.
    as_head
        .patch(
            "edited",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"items": web(11)}})),
        )
        .await?;
    let requests: Api<ResourceRequest> = Api::namespaced(admin.clone(), dept);
    let waiting = wait_for(&requests, "edited", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::AwaitingApproval)
                && s.observed_generation == r.metadata.generation
                && s.plan.is_some()
        })
    })
    .await
    .context("waits for the office")?;
    ensure!(
        waiting
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EDITORS))
            == Some(&head),
        "the head is recorded as an editor: {:?}",
        waiting.metadata.annotations
    );
    // ... and can't approve it; nor can the member erase the record.
    let (ok, out) = cli_as(
        &head,
        &[&office],
        &["approve", "edited", "-n", dept, "--stage", "office"],
    )
    .await?;
    ensure!(
        !ok && out.contains(&format!("{head} changed this request's spec"))
            && out.contains("four eyes"),
        "the editor's approval is refused: {out}"
    );
    refused(
        "erasing who changed the spec",
        Api::<ResourceRequest>::namespaced(as_member.clone(), dept)
            .patch(
                "edited",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {EDITORS: ""}}})),
            )
            .await,
        &[&format!(
            "metadata.annotations[yunzhang.io/editors] records who changed the spec ({head})"
        )],
    )?;
    // Another approver may.
    let (ok, out) = cli_as(
        &other,
        &[&office],
        &["approve", "edited", "-n", dept, "--stage", "office"],
    )
    .await?;
    ensure!(ok, "another approver approves: {out}");
    wait_for(&requests, "edited", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Active))
    })
    .await
    .context("approved by someone who didn't change it, it runs")?;
    Ok(())
}

async fn groups_cannot_be_spliced(dept: &str, member: &str) -> anyhow::Result<()> {
    let spliced = format!("x,{dept}-office");
    let as_member = client_as(member, &[&spliced]).await;
    let requests: Api<ResourceRequest> = Api::namespaced(as_member.clone(), dept);
    // 48 vCPU: more than is left, so it waits and nothing is provisioned.
    let request = |name: &str| {
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
               "metadata": {"name": name, "namespace": dept},
               "spec": {"purpose": "上云测试", "items": [
                   {"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 24, "vcpu": 2}]}})
    };
    apply(&as_member, &request("spliced")).await?;
    let recorded = requests
        .get("spliced")
        .await?
        .metadata
        .annotations
        .unwrap_or_default()
        .get(REQUESTER_GROUPS)
        .cloned()
        .unwrap_or_default();
    let groups = parse_groups(&recorded);
    ensure!(
        groups.contains(&spliced) && !groups.contains(&format!("{dept}-office")),
        "recorded as the one group it is: {recorded}"
    );
    // Status is the operator's: the member can't write it, not even on their own request.
    let status_write = requests
        .patch_status(
            "spliced",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Active"}})),
        )
        .await;
    ensure!(
        matches!(&status_write, Err(kube::Error::Api(s)) if s.code == 403),
        "a member writing status: {status_write:?}"
    );
    let mut forged = request("forged");
    forged["metadata"]["annotations"] = json!({
        "yunzhang.io/requester": member,
        REQUESTER_GROUPS: format!("{spliced},system:authenticated"),
    });
    refused(
        "a comma-joined groups annotation",
        requests
            .create(&Default::default(), &serde_json::from_value(forged)?)
            .await,
        &[
            "metadata.annotations[yunzhang.io/requester-groups] is recorded from the authenticated user's groups",
        ],
    )
}

async fn what_runs_is_what_was_approved(
    admin: &Client,
    dept: &str,
    member: &str,
) -> anyhow::Result<()> {
    let office = format!("{dept}-office");
    let approver = format!("{dept}-other-approver");
    let as_member = client_as(member, &[]).await;
    apply(
        &as_member,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                "metadata": {"name": "tampered", "namespace": dept},
                "spec": {"purpose": "上云测试", "items": [
                    {"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 10, "vcpu": 2}]}}),
    )
    .await?;
    let requests: Api<ResourceRequest> = Api::namespaced(admin.clone(), dept);
    wait_for(&requests, "tampered", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::AwaitingApproval) && s.plan.is_some())
    })
    .await
    .context("planned, waiting for the office")?;
    // Someone with write access to ConfigMaps changes the planned workspace, keeping its hash.
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(admin.clone(), dept);
    let mut plan = configmaps.get("tampered-plan").await?;
    let data = plan.data.get_or_insert_with(Default::default);
    let file = data
        .keys()
        .find(|k| k.ends_with(".tf"))
        .cloned()
        .context("a .tf file in the plan ConfigMap")?;
    data.entry(file)
        .and_modify(|content| content.push_str("\n# changed after it was planned\n"));
    configmaps
        .replace("tampered-plan", &Default::default(), &plan)
        .await?;
    let (ok, out) = cli_as(
        &approver,
        &[&office],
        &["approve", "tampered", "-n", dept, "--stage", "office"],
    )
    .await?;
    ensure!(ok, "approved: {out}");
    let failed = wait_for(&requests, "tampered", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Failed))
    })
    .await
    .context("the apply refuses the changed workspace")?;
    let apply = failed
        .status
        .and_then(|s| s.apply)
        .context("the apply run")?;
    let message = apply.message.unwrap_or_default();
    ensure!(
        apply.state == RunPhase::Failed
            && message.contains(&format!(
                "the workspace in ConfigMap {dept}/tampered-plan was changed after it was planned"
            ))
            && message.contains("nothing was applied"),
        "{message}"
    );
    Ok(())
}

async fn a_cheap_sku_is_not_priced_for_more_than_it_is(
    admin: &Client,
    dept: &str,
    member: &str,
) -> anyhow::Result<()> {
    let as_member = client_as(member, &[]).await;
    // One ecs.c2.large (¥584 a month, below what passes on its own) but with 16 vCPU.
    apply(
        &as_member,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                "metadata": {"name": "oversized", "namespace": dept},
                "spec": {"purpose": "上云测试", "items": [
                    {"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 16}]}}),
    )
    .await?;
    let requests: Api<ResourceRequest> = Api::namespaced(admin.clone(), dept);
    let waiting = wait_for(&requests, "oversized", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::AwaitingApproval) && s.plan.is_some())
    })
    .await
    .context("not approved automatically: it waits for the office")?;
    let status = serde_json::to_string(&waiting.status)?;
    ensure!(
        status.contains("item web asks vcpu 16, but SKU ecs.c2.large has 2"),
        "the request says why it has no price: {status}"
    );
    requests.delete("oversized", &Default::default()).await?;
    Ok(())
}

/// Hooks can't exceed what the platform allows: a member can't define a HookTemplate, can't put
/// an image, a command or a ServiceAccount in the workload, and can't pass a parameter the
/// template doesn't take; no Job is made for any of it.
async fn hooks_run_only_the_platforms_templates(
    admin: &Client,
    dept: &str,
    member: &str,
) -> anyhow::Result<()> {
    let as_member = client_as(member, &[]).await;
    let template = unique("sync");
    let spec = json!({"image": "registry.example.gov.cn/migration/sync:1.4", "command": ["/sync"],
                      "parameters": [{"name": "SOURCE", "required": true}]});
    let templates: Api<yunzhang::api::HookTemplate> = Api::all(as_member.clone());
    refused(
        "a member defines a HookTemplate",
        templates
            .patch(
                &template,
                &PatchParams::apply("yunzhang-tests"),
                &Patch::Apply(
                    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "HookTemplate",
                                      "metadata": {"name": template}, "spec": spec}),
                ),
            )
            .await,
        &["forbidden", "hooktemplates"],
    )?;
    apply(
        admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "HookTemplate",
                "metadata": {"name": template}, "spec": spec}),
    )
    .await?;
    let workload = |hook: Value| {
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "MigrationWorkload",
               "metadata": {"name": "hooked", "namespace": dept},
               "spec": {"system": {"name": "旧系统", "code": "ATK-SYS-1"}, "strategy": "retire",
                        "hooks": {"preCutover": hook}}})
    };
    let workloads: Api<yunzhang::api::MigrationWorkload> = Api::namespaced(as_member.clone(), dept);
    let strict = PatchParams::apply("yunzhang-tests").validation_strict();
    let put = |w: Value| {
        let workloads = workloads.clone();
        let strict = strict.clone();
        async move { workloads.patch("hooked", &strict, &Patch::Apply(w)).await }
    };
    refused(
        "a hook with its own image, command and ServiceAccount",
        put(workload(
            json!({"template": template, "parameters": {"SOURCE": "db"},
                            "image": "docker.io/someone/tool:latest", "command": ["sh", "-c", "id"],
                            "serviceAccountName": "default"}),
        ))
        .await,
        &["field not declared in schema", ".spec.hooks.preCutover."],
    )?;
    refused(
        "a parameter the template doesn't take",
        put(workload(json!({"template": template, "parameters": {"SOURCE": "db", "LD_PRELOAD": "/tmp/x.so"}}))).await,
        &["spec.hooks.preCutover.parameters", "LD_PRELOAD is not one of", "(SOURCE)"],
    )?;
    refused(
        "a template that doesn't exist",
        put(workload(json!({"template": "shell"}))).await,
        &[
            "spec.hooks.preCutover.template",
            "HookTemplate shell does not exist",
        ],
    )?;
    refused(
        "leaving out a required parameter",
        put(workload(json!({"template": template}))).await,
        &["parameter SOURCE is required"],
    )?;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(admin.clone(), dept);
    let made = jobs
        .list(&kube::api::ListParams::default().labels("yunzhang.io/migration-workload=hooked"))
        .await?;
    ensure!(made.items.is_empty(), "no hook Job: {:?}", made.items);
    ensure!(
        Api::<yunzhang::api::MigrationWorkload>::namespaced(admin.clone(), dept)
            .get_opt("hooked")
            .await?
            .is_none(),
        "no workload was stored"
    );
    Ok(())
}

/// What a member writes wrong is refused by the API server at apply, naming the field, and
/// nothing of it is stored or held.
async fn what_cant_be_right_is_refused_at_apply(
    admin: &Client,
    dept: &str,
    member: &str,
) -> anyhow::Result<()> {
    let as_member = client_as(member, &[]).await;
    let before = used_vcpu(admin, dept).await?;
    let requests: Api<ResourceRequest> = Api::namespaced(as_member.clone(), dept);
    let request = |name: &str, item: Value| {
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
               "metadata": {"name": name, "namespace": dept},
               "spec": {"purpose": "上云测试", "items": [item]}})
    };
    let long = "r".repeat(64);
    let cases = [
        (
            "wrong-name",
            request(
                "wrong-name",
                json!({"name": "1web", "type": "ecs", "sku": "ecs.c2.large", "count": 1}),
            ),
            &["spec.items[0].name"][..],
        ),
        (
            "vcpu-on-oss",
            request(
                "vcpu-on-oss",
                json!({"name": "files", "type": "oss", "sku": "oss.standard", "vcpu": 4}),
            ),
            &["spec.items[0]", "vcpu"][..],
        ),
        (
            long.as_str(),
            request(
                &long,
                json!({"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1}),
            ),
            &["metadata.name", "63"][..],
        ),
    ];
    for (name, body, needed) in &cases {
        refused(
            name,
            requests
                .patch(
                    name,
                    &PatchParams::apply("yunzhang-tests"),
                    &Patch::Apply(body),
                )
                .await,
            needed,
        )?;
        ensure!(
            requests.get_opt(name).await?.is_none(),
            "{name}: nothing stored"
        );
    }
    used_vcpu_is(admin, dept, before).await
}

/// A quota window counts only while it is open, whatever the year: a window that ended
/// yesterday admits nothing, one that runs until next year does (windows relative to now).
async fn a_quota_window_counts_only_while_it_is_open(
    admin: &Client,
    dept: &str,
    member: &str,
) -> anyhow::Result<()> {
    let before = used_vcpu(admin, dept).await?;
    let now = chrono::Utc::now();
    let window = |name: &str,
                  from: chrono::DateTime<chrono::Utc>,
                  until: chrono::DateTime<chrono::Utc>| {
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": name, "namespace": dept},
               "spec": {"hard": {"vcpu": 1000}, "validFrom": from.to_rfc3339(), "validUntil": until.to_rfc3339()}})
    };
    apply(
        admin,
        &window(
            "ended",
            now - chrono::Days::new(400),
            now - chrono::Days::new(1),
        ),
    )
    .await?;
    let as_member = client_as(member, &[]).await;
    // 50 × ecs.c2.large = 100 vCPU: more than the open-ended 64 on its own.
    apply(
        &as_member,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                "metadata": {"name": "big", "namespace": dept},
                "spec": {"purpose": "扩容", "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 50, "vcpu": 2}]}}),
    )
    .await?;
    let requests: Api<ResourceRequest> = Api::namespaced(admin.clone(), dept);
    wait_for(&requests, "big", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::QuotaExceeded))
    })
    .await
    .context("the window that ended yesterday adds nothing")?;
    used_vcpu_is(admin, dept, before).await?;
    apply(
        admin,
        &window(
            "this-year",
            now - chrono::Days::new(1),
            now + chrono::Days::new(365),
        ),
    )
    .await?;
    wait_for(&requests, "big", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase != Some(Phase::QuotaExceeded) && s.quota.is_some())
    })
    .await
    .context("an open window admits it")?;
    requests.delete("big", &Default::default()).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while requests.get_opt("big").await?.is_some() {
        ensure!(tokio::time::Instant::now() < deadline, "the request exits");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let quotas: Api<CloudQuota> = Api::namespaced(admin.clone(), dept);
    for q in ["ended", "this-year"] {
        quotas.delete(q, &Default::default()).await?;
    }
    used_vcpu_is(admin, dept, before).await
}

/// The admission webhooks answer only the API server: a caller without a client certificate is
/// refused (403, saying so), and one with a user's certificate (from the cluster's client CA, not
/// the webhook client CA) doesn't get through the handshake. (Every judged Approval in the suite
/// shows that the API server itself is answered.)
fn only_the_api_server_is_answered_by_the_webhooks() -> anyhow::Result<()> {
    use base64::Engine;
    let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"00000000-0000-0000-0000-000000000001","kind":{"group":"yunzhang.io","version":"v1alpha1","kind":"Approval"},"resource":{"group":"yunzhang.io","version":"v1alpha1","resource":"approvals"},"operation":"CREATE","userInfo":{"username":"someone"},"object":{}}}"#;
    // The server is the operator's (its CA is checked elsewhere); what is tried here is the client.
    let post = |extra: &[&str]| {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "-k",
                "--max-time",
                "20",
                "-w",
                "\n%{http_code}",
                "-H",
                "Content-Type: application/json",
                "-d",
                review,
            ])
            .args(extra)
            .arg(format!(
                "https://127.0.0.1:{}/validate/approval",
                webhook_port()
            ))
            .output()
    };
    let anonymous = post(&[])?;
    let out = String::from_utf8_lossy(&anonymous.stdout);
    ensure!(
        out.ends_with("403") && out.contains("answer only the API server"),
        "a caller without a client certificate is refused: {out}"
    );
    // A user's certificate, from the user's kubeconfig.
    let kubeconfig: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig_for(
        "an-outsider",
        &[],
    ))?)?;
    let dir = std::env::temp_dir().join(unique("yz-user-cert"));
    std::fs::create_dir_all(&dir)?;
    for (field, file) in [
        ("client-certificate-data", "crt.pem"),
        ("client-key-data", "key.pem"),
    ] {
        let data = kubeconfig["users"][0]["user"][field]
            .as_str()
            .with_context(|| format!("{field} in the user's kubeconfig"))?;
        std::fs::write(
            dir.join(file),
            base64::engine::general_purpose::STANDARD.decode(data)?,
        )?;
    }
    let with_user_cert = post(&[
        "--cert",
        &dir.join("crt.pem").display().to_string(),
        "--key",
        &dir.join("key.pem").display().to_string(),
    ])?;
    let _ = std::fs::remove_dir_all(&dir);
    let out = String::from_utf8_lossy(&with_user_cert.stdout);
    ensure!(
        !with_user_cert.status.success() || out.ends_with("403"),
        "a user's certificate is not the API server's: {out}"
    );
    Ok(())
}

/// The operator's own identity can't bind anything outside department namespaces (policy
/// yunzhang-operator-bindings): a compromised operator can't hand its roles out elsewhere.
async fn the_operator_binds_only_in_department_namespaces(admin: &Client) -> anyhow::Result<()> {
    let elsewhere = unique("not-a-department");
    create_namespace(&elsewhere).await?;
    let operator = client_as(
        OPERATOR_USER,
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:yunzhang-system",
        ],
    )
    .await;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(operator, &elsewhere);
    refused(
        "the operator binds itself in a namespace no department owns",
        bindings
            .patch(
                "yunzhang-operator",
                &PatchParams::apply("yunzhang"),
                &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": "yunzhang-operator", "namespace": elsewhere},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "yunzhang-operator-namespace"},
                    "subjects": [{"kind": "ServiceAccount", "name": "yunzhang", "namespace": "yunzhang-system"}]})),
            )
            .await,
        &["only in department namespaces", &elsewhere],
    )?;
    ensure!(
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &elsewhere)
            .get_opt("yunzhang-operator")
            .await?
            .is_none(),
        "no binding was made"
    );
    Ok(())
}
