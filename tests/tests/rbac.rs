//! Least privilege, as the API server's authorizer sees it: `kubectl auth can-i --list` for the
//! operator's ServiceAccount and the five personas (member, approver, finance, platform admin,
//! outsider), in the operator's namespace, a department namespace and a namespace nobody
//! manages. The test prints the matrix and fails on any permission beyond the allow-lists checked
//! in under `tests/rbac/` (one file per identity and kind of namespace). `YZ_RBAC_WRITE=1`
//! rewrites them from what the cluster grants, for a reviewed change of the chart.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use anyhow::{Context, ensure};
use serde_json::json;
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);

/// A row of `kubectl auth can-i --list`, whitespace collapsed and its verbs (the last bracket)
/// sorted: kubectl merges the rules of several roles in no fixed order.
fn normalized(row: &str) -> String {
    let row = row.split_whitespace().collect::<Vec<_>>().join(" ");
    match row.rfind('[') {
        Some(i) if row.ends_with(']') => {
            let mut verbs: Vec<&str> = row[i + 1..row.len() - 1].split(' ').collect();
            verbs.sort_unstable();
            verbs.dedup();
            format!("{}[{}]", &row[..i], verbs.join(" "))
        }
        _ => row,
    }
}

/// What `identity` may do in `ns`: the rows of `kubectl auth can-i --list`, normalized, sorted.
fn can_i(user: &str, groups: &[&str], ns: &str) -> anyhow::Result<BTreeSet<String>> {
    let mut cmd = std::process::Command::new("kubectl");
    cmd.args(["auth", "can-i", "--list", "-n", ns, "--as", user])
        .env("KUBECONFIG", &cluster().admin_kubeconfig);
    for g in groups {
        cmd.args(["--as-group", g]);
    }
    let out = cmd.output()?;
    ensure!(
        out.status.success(),
        "kubectl auth can-i --list as {user}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(normalized)
        .collect())
}

fn allow_list(name: &str) -> PathBuf {
    repo_root().join("tests/rbac").join(format!("{name}.txt"))
}

#[tokio::test]
async fn every_identity_has_at_most_its_allow_list() -> anyhow::Result<()> {
    let operator = OperatorProcess::start()?;
    operator.wait_ready(WAIT).await?;
    let admin = admin().await;
    let dept = unique("rbac");
    let member = format!("{dept}-member");
    let (approvers, finance, platform) = (
        format!("{dept}-approvers"),
        format!("{dept}-finance"),
        format!("{dept}-platform"),
    );
    // The approvers read plans where the department's policy names them, and nowhere else.
    apply_value(
        &admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": dept},
                "spec": {"stages": [{"name": "office", "approvers": [{"kind": "Group", "name": approvers}]}]}}),
        "yunzhang-tests",
    )
    .await?;
    apply_value(
        &admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": dept},
                "spec": {"displayName": "权限测试", "code": "11450000MB0000000X", "namespaces": [dept],
                         "approvalPolicy": dept,
                         "members": [{"kind": "User", "name": member}]}}),
        "yunzhang-tests",
    )
    .await?;
    for (group, role) in [
        (&approvers, "yunzhang-approver"),
        (&finance, "yunzhang-finance-viewer"),
        (&platform, "yunzhang-platform-admin"),
    ] {
        apply_value(
            &admin,
            &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": group},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]}),
            "yunzhang-tests",
        )
        .await?;
    }
    // The department's namespace is ready once its bindings are made.
    ready_department(&admin, &dept).await?;
    let elsewhere = unique("rbac-other");
    create_namespace(&elsewhere).await?;

    let sa_groups = [
        "system:serviceaccounts",
        "system:serviceaccounts:yunzhang-system",
    ];
    let identities: [(&str, &str, Vec<&str>); 6] = [
        ("operator", OPERATOR_USER, sa_groups.to_vec()),
        ("member", &member, vec![]),
        ("approver", "an-approver", vec![approvers.as_str()]),
        ("finance", "a-finance-officer", vec![finance.as_str()]),
        (
            "platform-admin",
            "a-platform-engineer",
            vec![platform.as_str()],
        ),
        ("outsider", "an-outsider", vec![]),
    ];
    let namespaces = [
        ("operator-namespace", "yunzhang-system"),
        ("department-namespace", dept.as_str()),
        ("other-namespace", elsewhere.as_str()),
    ];
    let write = std::env::var("YZ_RBAC_WRITE").is_ok_and(|v| v == "1");
    let mut beyond = Vec::new();
    for (who, user, groups) in &identities {
        for (kind, ns) in &namespaces {
            let name = format!("{who}.{kind}");
            let granted = can_i(user, groups, ns)?;
            println!(
                "== {name}\n{}",
                granted.iter().cloned().collect::<Vec<_>>().join("\n")
            );
            let path = allow_list(&name);
            if write {
                std::fs::create_dir_all(path.parent().context("tests/rbac")?)?;
                std::fs::write(
                    &path,
                    granted.iter().map(|l| format!("{l}\n")).collect::<String>(),
                )?;
                continue;
            }
            let allowed: BTreeSet<String> = std::fs::read_to_string(&path)
                .with_context(|| format!("{}", path.display()))?
                .lines()
                .map(str::to_owned)
                .collect();
            beyond.extend(granted.difference(&allowed).map(|l| format!("{name}: {l}")));
        }
    }
    ensure!(
        beyond.is_empty(),
        "permissions beyond the allow-lists in tests/rbac/ (narrow the chart, or review and \
         rewrite them with YZ_RBAC_WRITE=1):\n{}",
        beyond.join("\n")
    );
    Ok(())
}
