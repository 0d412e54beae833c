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
    annotations::{FORCE_EXIT_BY, FORCE_EXIT_REASON},
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

/// A department `dept` (namespace `dept`) with `member`, a local-executor provider with prices,
/// an auto-approving policy and a quota of 8 vCPU.
async fn department(admin: &Client, dept: &str, member: &str) -> anyhow::Result<()> {
    for v in [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": dept},
               "spec": {"displayName": "测试云", "region": "nanning-1", "executor": {"type": "local"},
                        "modules": {"ecs": {"source": "./modules/ecs"}}}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": dept},
               "spec": {"provider": dept, "currency": "CNY", "effectiveFrom": "2026-01-01T00:00:00+08:00",
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": dept},
               "spec": {"autoApprove": {"maxMonthlyCost": "5000.00"},
                        "stages": [{"name": "office", "approvers": [{"kind": "Group", "name": format!("{dept}-office")}]}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": dept},
               "spec": {"displayName": "测试单位", "code": "11450000MB0000000X", "provider": dept, "approvalPolicy": dept,
                        "members": [{"kind": "User", "name": member}]}}),
    ] {
        apply(admin, &v).await?;
    }
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    wait_for(&namespaces, dept, WAIT, |_| true).await?;
    apply(
        admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "base", "namespace": dept},
                "spec": {"hard": {"vcpu": 8}}}),
    )
    .await
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

/// Runs `yunzhang ARGS` as `user` in `groups`: (success, stdout + stderr).
async fn cli_as(user: &str, groups: &[&str], args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = tokio::process::Command::new(operator_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig_for(user, groups))
        .output()
        .await?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
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
async fn finalizers_are_the_operators_and_a_stuck_deletion_is_forced_out_on_the_record()
-> anyhow::Result<()> {
    let admin = admin().await;
    let dept = unique("atk");
    let member = format!("{dept}-member");
    let platform = format!("{dept}-platform-admin");
    let platform_group = format!("{dept}-platform");
    let tofu = tofu_whose_destroy_fails_in(&dept)?;
    let operator = OperatorProcess::start_with_env(&[], &[("YZ_TOFU", &tofu)])?;
    operator.wait_ready(WAIT).await?;
    department(&admin, &dept, &member).await?;
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
    let _ = std::fs::remove_dir_all(tofu.parent().context("tofu's dir")?);
    Ok(())
}
