//! The kubectl plugin against the real API server, run as the built binary with the kubeconfig
//! of real users (an approver, a department member), so RBAC applies to them. No operator runs:
//! the request's status (plan hash, stage, phase) is written by the admin through the status
//! subresource, as the operator would.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, ensure};
use k8s_openapi::api::{core::v1::Event, rbac::v1::RoleBinding};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use yunzhang::api::{Approval, ResourceRequest, resource_request::DesiredLifecycle};
use yunzhang_integration::*;

fn plan_hash() -> String {
    format!("sha256:{}", "0123456789abcdef".repeat(4))
}

/// Run `yunzhang ARGS` (or the binary under another name) with `kubeconfig`.
fn run(program: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run the yunzhang binary")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A namespace where `approver` holds yunzhang-approver and `member` yunzhang-department-member.
async fn setup() -> anyhow::Result<(String, String, String)> {
    let ns = unique("plugin");
    create_namespace(&ns).await?;
    let approver = unique("approver");
    let member = unique("member");
    let bindings: Api<RoleBinding> = Api::namespaced(admin().await, &ns);
    for (user, role) in [
        (&approver, "yunzhang-approver"),
        (&member, "yunzhang-department-member"),
    ] {
        let rb: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{role}-{user}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        }))?;
        bindings.create(&PostParams::default(), &rb).await?;
    }
    Ok((ns, approver, member))
}

/// Create a request; with `status`, write it through the status subresource (as the operator).
async fn request(ns: &str, name: &str, status: Option<Value>) -> anyhow::Result<ResourceRequest> {
    let client = admin().await;
    let api: Api<ResourceRequest> = Api::namespaced(client.clone(), ns);
    // No operator runs here, so no webhook records the creator: the creator states it, and the
    // API server's policy checks it is the truth.
    let rr: ResourceRequest = serde_json::from_value(with_own_identity(&client, &json!({
        "apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"purpose": "非税收入管理系统上云",
                 "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 2, "vcpu": 4}]}
    })).await)?;
    let rr = api.create(&PostParams::default(), &rr).await?;
    let Some(mut status) = status else {
        return Ok(rr);
    };
    status["observedGeneration"] = json!(rr.metadata.generation);
    Ok(api
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await?)
}

fn awaiting_status() -> Value {
    json!({
        "phase": "AwaitingApproval",
        "message": "waiting for stage cloud-office (2 of 3)",
        "requester": "alice",
        "plan": {"hash": plan_hash(), "add": 2, "change": 0, "destroy": 0, "configMap": "tax-portal-plan"},
        "stage": {"name": "cloud-office", "index": 2, "of": 3},
        "estimate": {"monthly": "1168.00", "currency": "CNY"},
        "approvals": [{"stage": "department", "approver": "dept-head", "approval": "tax-portal-abcde"}]
    })
}

// Approving and rejecting through the plugin, bound to what it showed, runs against the real
// operator (whose admission webhook judges every Approval) in tests/tests/lifecycle.rs.

#[tokio::test]
async fn approve_refuses_clearly_when_there_is_nothing_to_approve() -> anyhow::Result<()> {
    let (ns, approver, member) = setup().await?;
    let approver_kc = kubeconfig_for(&approver, &[]);

    // Just created: the operator hasn't looked at it.
    request(&ns, "fresh", None).await?;
    let out = run(
        &operator_binary(),
        &approver_kc,
        &["approve", "fresh", "-n", &ns],
    );
    let (_, stderr) = text(&out);
    ensure!(!out.status.success());
    ensure!(
        stderr.contains("fresh is Pending, not AwaitingApproval"),
        "{stderr}"
    );

    // Awaiting approval, but no plan to approve.
    let mut status = awaiting_status();
    status.as_object_mut().unwrap().remove("plan");
    request(&ns, "unplanned", Some(status)).await?;
    let out = run(
        &operator_binary(),
        &approver_kc,
        &["approve", "unplanned", "-n", &ns],
    );
    let (_, stderr) = text(&out);
    ensure!(!out.status.success());
    ensure!(
        stderr.contains("unplanned has no plan yet (status.plan.hash is empty)"),
        "{stderr}"
    );

    // A department member may not approve: told who they are and what to ask for.
    request(&ns, "planned", Some(awaiting_status())).await?;
    let out = run(
        &operator_binary(),
        &kubeconfig_for(&member, &[]),
        &["approve", "planned", "-n", &ns],
    );
    let (_, stderr) = text(&out);
    ensure!(!out.status.success());
    ensure!(
        stderr.contains(&format!(
            "you (user {member}) may not create approvals in namespace {ns}: ask for the approver"
        )),
        "{stderr}"
    );

    let approvals = Api::<Approval>::namespaced(admin().await, &ns)
        .list(&ListParams::default())
        .await?;
    ensure!(approvals.items.is_empty(), "nothing was created");
    Ok(())
}

/// A copy of `kubeconfig` whose context's namespace is `ns`.
fn with_namespace(kubeconfig: &Path, ns: &str) -> anyhow::Result<PathBuf> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    for ctx in doc["contexts"]
        .as_sequence_mut()
        .context("kubeconfig contexts")?
    {
        ctx["context"]["namespace"] = ns.into();
    }
    let path = kubeconfig.with_extension(format!("{ns}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&doc)?)?;
    Ok(path)
}

#[tokio::test]
async fn retire_and_status_as_kubectl_plugin() -> anyhow::Result<()> {
    let (ns, _, member) = setup().await?;
    let rr = request(&ns, "tax-portal", Some(awaiting_status())).await?;
    // The history: one Event about the request, as the operator records them.
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "tax-portal.awaiting", "namespace": ns},
        "involvedObject": {"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                           "name": "tax-portal", "namespace": ns, "uid": rr.metadata.uid},
        "type": "Normal", "reason": "AwaitingApproval", "message": "waiting for stage cloud-office",
        "firstTimestamp": "2026-03-01T02:00:00Z", "lastTimestamp": "2026-03-01T02:00:00Z",
        "source": {"component": "yunzhang-operator"}
    }))?;
    Api::<Event>::namespaced(admin().await, &ns)
        .create(&PostParams::default(), &event)
        .await?;

    // Installed as kubectl-yunzhang; the namespace comes from the kubeconfig's context.
    let dir = std::env::temp_dir().join(unique("plugin-bin"));
    std::fs::create_dir_all(&dir)?;
    let plugin = dir.join("kubectl-yunzhang");
    std::os::unix::fs::symlink(operator_binary(), &plugin)?;
    let kubeconfig = with_namespace(&kubeconfig_for(&member, &[]), &ns)?;

    let out = run(&plugin, &kubeconfig, &["status", "tax-portal"]);
    let (stdout, stderr) = text(&out);
    ensure!(out.status.success(), "status failed: {stderr}");
    for shown in [
        &format!("Request:    {ns}/tax-portal (generation 1)"),
        "Phase:      AwaitingApproval: it waits for approvals",
        "Stage:      cloud-office (2 of 3)",
        "Approvals:  department by dept-head (tax-portal-abcde)",
        &format!("2 to add, 0 to change, 0 to destroy; {}", plan_hash()),
        "(ConfigMap tax-portal-plan)",
        "Estimate:   ¥1168.00/month",
        "Requester:  alice",
        "2026-03-01 10:00:00+08:00  Normal  AwaitingApproval: waiting for stage cloud-office",
    ] {
        ensure!(stdout.contains(shown), "{shown:?} not in:\n{stdout}");
    }

    let out = run(&plugin, &kubeconfig, &["retire", "tax-portal"]);
    let (stdout, stderr) = text(&out);
    ensure!(out.status.success(), "retire failed: {stderr}");
    ensure!(
        stdout.contains("spec.lifecycle set to Retired") && stdout.contains("Exiting"),
        "{stdout}"
    );
    let rr = Api::<ResourceRequest>::namespaced(admin().await, &ns)
        .get("tax-portal")
        .await?;
    ensure!(rr.spec.lifecycle == DesiredLifecycle::Retired);
    ensure!(rr.metadata.generation == Some(2), "a spec change");

    let out = run(&plugin, &kubeconfig, &["retire", "tax-portal"]);
    ensure!(text(&out).0.contains("already retiring"));
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
