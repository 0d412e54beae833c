//! The foundation against the real API server: the nine kinds, their schema and CEL rules,
//! the operator writing status, RBAC with real users, and the chart.

use std::{process::Command, time::Duration};

use k8s_openapi::api::{core::v1::Namespace, rbac::v1::RoleBinding};
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams},
    discovery,
};
use serde_json::{Value, json};
use yunzhang::api::{Department, ResourceRequest};
use yunzhang_integration::*;

/// Create `value` as `client`; return the API server's refusal message, or None if accepted.
async fn refusal(client: &Client, value: &Value) -> Option<String> {
    let obj: DynamicObject = serde_json::from_value(value.clone()).expect("object");
    let gvk = GroupVersionKind::try_from(obj.types.as_ref().expect("types")).expect("gvk");
    let (ar, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .expect("kind known to the API server");
    let api: Api<DynamicObject> = match caps.scope {
        discovery::Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj.metadata.namespace.as_deref().unwrap_or("default"),
            &ar,
        ),
        discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
    };
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected 422 Invalid, got {status:?}");
            Some(status.message)
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn department(name: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": name},
        "spec": {"displayName": "测试厅", "code": "11450000MB0000000X", "namespaces": [name],
                 "budget": {"annual": "1000.00"}, "admins": [{"kind": "User", "name": "alice"}]}})
}

/// `now` moved by `days` (negative: earlier), in RFC 3339: fixtures' windows are relative to
/// today, so none of them expires.
fn days_from_now(days: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn quota(ns: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": unique("q"), "namespace": ns},
        "spec": {"hard": {"vcpu": 8, "monthlyCost": "100.00"},
                 "validFrom": days_from_now(-1), "validUntil": days_from_now(365)}})
}

fn request(ns: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest", "metadata": {"name": unique("rr"), "namespace": ns},
        "spec": {"purpose": "测试", "classification": "internal",
                 "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 2, "vcpu": 4, "memoryGiB": 8}]}})
}

fn approval(ns: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Approval", "metadata": {"name": unique("ap"), "namespace": ns},
        "spec": {"request": {"name": "x", "uid": "0b6f1c3e-1111-4222-8333-944455556666", "generation": 1,
                             "planHash": format!("sha256:{}", "ab".repeat(32))},
                 "stage": "finance", "decision": "Approved"}})
}

fn policy() -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": unique("ap")},
        "spec": {"stages": [{"name": "head", "approvers": [{"kind": "Group", "name": "heads"}], "required": 1}]}})
}

fn provider() -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": unique("cp")},
        "spec": {"displayName": "服务商", "region": "nanning-1", "executor": {"type": "local"},
                 "modules": {"ecs": {"source": "./modules/ecs"}}}})
}

fn price_book() -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": unique("pb")},
        "spec": {"provider": unique("p"), "effectiveFrom": "2026-01-01T00:00:00+08:00",
                 "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"}]}})
}

fn migration(ns: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "MigrationWorkload", "metadata": {"name": unique("mw"), "namespace": ns},
        "spec": {"system": {"name": "系统", "code": "SYS-1"}, "classification": "internal", "strategy": "rehost",
                 "cutover": {"notBefore": days_from_now(7), "notAfter": days_from_now(8)}}})
}

/// A HookTemplate whose pods run as ServiceAccount `account`.
fn hook_template(account: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "HookTemplate", "metadata": {"name": unique("ht")},
        "spec": {"image": "registry.example.gov.cn/migration/sync:1.4", "serviceAccountName": account}})
}

fn report() -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "SettlementReport", "metadata": {"name": unique("sr")},
        "spec": {"period": {"month": "2026-10"}}})
}

fn with(mut base: Value, pointer: &str, new: Value) -> Value {
    *base
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} in base object")) = new;
    base
}

#[tokio::test]
async fn each_kind_accepts_a_valid_object() {
    let client = admin().await;
    let ns = unique("valid");
    create_namespace(&ns).await.unwrap();
    // A valid Approval is also judged against a real request by the operator's webhook when it
    // is created: tests/tests/admission.rs creates one. The request carries its creator's
    // identity, typed here as the webhook would record it (no operator need be running).
    for valid in [
        department(&unique("dept")),
        quota(&ns),
        with_own_identity(&client, &request(&ns)).await,
        policy(),
        provider(),
        price_book(),
        with_own_identity(&client, &migration(&ns)).await,
        report(),
    ] {
        assert_eq!(
            refusal(&client, &valid).await,
            None,
            "valid object refused: {valid}"
        );
    }
}

#[tokio::test]
async fn malformed_objects_are_refused_naming_the_field() {
    let client = admin().await;
    let ns = unique("invalid");
    create_namespace(&ns).await.unwrap();
    let d = || department(&unique("dept"));
    // (what is wrong, the object, text the refusal must contain)
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "credit code",
            with(d(), "/spec/code", json!("12345")),
            &["spec.code"],
        ),
        (
            "empty display name",
            with(d(), "/spec/displayName", json!("")),
            &["spec.displayName"],
        ),
        (
            "namespace not a DNS label",
            with(d(), "/spec/namespaces", json!(["Finance_Dept"])),
            &["spec.namespaces[0]"],
        ),
        (
            "money with three decimals",
            with(d(), "/spec/budget/annual", json!("12.345")),
            &["spec.budget.annual"],
        ),
        (
            "subject kind",
            with(d(), "/spec/admins/0/kind", json!("Robot")),
            &["spec.admins[0].kind", "User", "Group"],
        ),
        (
            "quota window reversed",
            with(quota(&ns), "/spec/validUntil", json!(days_from_now(-2))),
            &["spec.validUntil", "later than"],
        ),
        (
            "negative quota",
            with(quota(&ns), "/spec/hard/vcpu", json!(-1)),
            &["spec.hard.vcpu"],
        ),
        (
            "classified request",
            with(request(&ns), "/spec/classification", json!("classified")),
            &["spec.classification", "涉密"],
        ),
        (
            "no items",
            with(request(&ns), "/spec/items", json!([])),
            &["spec.items"],
        ),
        (
            "duplicate item names",
            with(
                request(&ns),
                "/spec/items",
                json!([
            {"name": "web", "type": "ecs", "sku": "a", "count": 1}, {"name": "web", "type": "rds", "sku": "b", "count": 1}]),
            ),
            &["spec.items[1]", "Duplicate"],
        ),
        (
            "zero count",
            with(request(&ns), "/spec/items/0/count", json!(0)),
            &["spec.items[0].count"],
        ),
        (
            "unknown item type",
            with(request(&ns), "/spec/items/0/type", json!("gpu")),
            &["spec.items[0].type", "ecs"],
        ),
        (
            "plan hash",
            with(approval(&ns), "/spec/request/planHash", json!("md5:abc")),
            &["spec.request.planHash"],
        ),
        (
            "decision",
            with(approval(&ns), "/spec/decision", json!("Maybe")),
            &["spec.decision", "Approved"],
        ),
        (
            "item name that can't name a module",
            with(request(&ns), "/spec/items/0/name", json!("1web")),
            &["spec.items[0].name"],
        ),
        (
            "a size the item's type doesn't take",
            with(
                request(&ns),
                "/spec/items/0",
                json!({"name": "files", "type": "oss", "sku": "oss.standard", "count": 1, "vcpu": 4}),
            ),
            &[
                "spec.items[0].vcpu",
                "ecs takes vcpu, memoryGiB and storageGiB",
            ],
        ),
        (
            "request name too long for a label",
            with(request(&ns), "/metadata/name", json!("r".repeat(64))),
            &["metadata.name: at most 63 characters"],
        ),
        (
            "department name too long for a label",
            with(d(), "/metadata/name", json!("d".repeat(64))),
            &["metadata.name: at most 63 characters"],
        ),
        (
            "policy that approves everything by nobody",
            with(policy(), "/spec/stages", json!([])),
            &["spec.stages", "spec.autoApprove"],
        ),
        (
            "stage that can never be approved",
            with(
                policy(),
                "/spec/stages/0",
                json!({"name": "pair", "required": 2, "approvers": [{"kind": "User", "name": "alice"}]}),
            ),
            &[
                "spec.stages[0].required",
                "lower required, or add approvers",
            ],
        ),
        (
            "hook template ServiceAccount that isn't a name",
            hook_template("Not_A_Name"),
            &["spec.serviceAccountName"],
        ),
        (
            "stage needs an approver count of at least 1",
            with(policy(), "/spec/stages/0/required", json!(0)),
            &["spec.stages[0].required"],
        ),
        (
            "job executor without image",
            with(provider(), "/spec/executor", json!({"type": "job"})),
            &["spec.executor.image"],
        ),
        (
            "module for unknown type",
            with(
                provider(),
                "/spec/modules",
                json!({"gpu": {"source": "./x"}}),
            ),
            &["spec.modules", "ecs"],
        ),
        (
            "price",
            with(price_book(), "/spec/items/0/price", json!("0.8.0")),
            &["spec.items[0].price"],
        ),
        (
            "price unit",
            with(price_book(), "/spec/items/0/unit", json!("day")),
            &["spec.items[0].unit", "hour"],
        ),
        (
            "classified system",
            with(migration(&ns), "/spec/classification", json!("classified")),
            &["spec.classification", "涉密"],
        ),
        (
            "integrate without target system",
            with(migration(&ns), "/spec/strategy", json!("integrate")),
            &["spec.integratesInto"],
        ),
        (
            "cutover window reversed",
            with(
                migration(&ns),
                "/spec/cutover/notAfter",
                json!(days_from_now(6)),
            ),
            &["spec.cutover.notAfter"],
        ),
        (
            "month and quarter",
            with(
                report(),
                "/spec/period",
                json!({"month": "2026-10", "quarter": "2026-Q4"}),
            ),
            &["spec.period", "exactly one"],
        ),
        (
            "month format",
            with(report(), "/spec/period", json!({"month": "2026-13"})),
            &["spec.period.month"],
        ),
    ];
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for (what, object, expected) in &cases {
        match refusal(&client, object).await {
            None => failures.push(format!("{what}: accepted")),
            Some(message) => {
                for text in *expected {
                    if !message.contains(text) {
                        failures.push(format!("{what}: message lacks {text:?}: {message}"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn finalized_reports_cannot_change() {
    // (That an Approval can't change is checked in tests/tests/admission.rs, where one can be
    // created: it must name a real request and be made by an eligible approver.)
    let client = admin().await;
    let pp = PatchParams::default();

    let sr = report();
    let name = sr["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(refusal(&client, &sr).await, None);
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<yunzhang::api::SettlementReport>(&()),
    );
    // Not finalized: may change, and may be finalized.
    api.patch(
        &name,
        &pp,
        &Patch::Merge(json!({"spec": {"scope": {"departments": ["gx"]}}})),
    )
    .await
    .unwrap();
    api.patch(
        &name,
        &pp,
        &Patch::Merge(json!({"spec": {"finalize": true}})),
    )
    .await
    .unwrap();
    for change in [
        json!({"spec": {"finalize": false}}),
        json!({"spec": {"period": {"month": "2026-11"}}}),
    ] {
        let err = api
            .patch(&name, &pp, &Patch::Merge(change))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("finalized SettlementReport can't be changed"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn examples_apply_to_the_api_server() {
    let client = admin().await;
    let root = repo_root();
    // The platform's first (a workload names a hook template), each directory in name order.
    let files: Vec<_> = ["platform", "department", "approver", "finance"]
        .iter()
        .flat_map(|dir| {
            let mut files: Vec<_> = std::fs::read_dir(root.join("examples").join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
                .collect();
            files.sort();
            files
        })
        .collect();
    // Under a name of this run's own: a cluster that already holds the examples (an earlier run,
    // the demo) takes them again.
    let run = unique("ex");
    let docs: Vec<Value> = files
        .iter()
        .flat_map(|f| example_documents(f, &run).unwrap())
        .collect();
    // Namespaces the examples use, handed to their Departments by label (the operator, when it
    // runs, adopts them instead of refusing to take over a namespace it didn't create).
    let nss: Api<Namespace> = Api::all(client.clone());
    for dept in docs.iter().filter(|d| d["kind"] == "Department") {
        let name = dept["metadata"]["name"].as_str().unwrap();
        for ns in dept["spec"]["namespaces"].as_array().unwrap() {
            let ns = ns.as_str().unwrap();
            let ns_obj = json!({"apiVersion": "v1", "kind": "Namespace",
                                "metadata": {"name": ns, "labels": {"yunzhang.io/department": name}}});
            nss.patch(
                ns,
                &PatchParams::apply("yunzhang-tests"),
                &Patch::Apply(ns_obj),
            )
            .await
            .unwrap();
        }
    }
    let mut kinds = std::collections::BTreeSet::new();
    for doc in &docs {
        // Requests carry their creator's identity (typed as the webhook records it: no operator
        // runs here). The example Approval names a made-up uid: admission refuses it, either
        // because it is judged (spec.request.uid) or because no operator is there to judge it.
        let doc = with_own_identity(&client, doc).await;
        let applied = apply_value(&client, &doc, "yunzhang-tests").await;
        if doc["kind"] == "Approval" {
            let err = applied.expect_err("the example Approval names no real request");
            assert!(
                err.to_string().contains("approvals.yunzhang.io"),
                "refused by the approval webhook: {err}"
            );
        } else {
            applied.unwrap_or_else(|e| panic!("{e}: {doc}"));
        }
        kinds.insert(doc["kind"].as_str().unwrap().to_owned());
    }
    for kind in yunzhang::api::crds()
        .iter()
        .map(|(_, crd)| crd.spec.names.kind.clone())
    {
        assert!(kinds.contains(&kind), "no example of {kind}: {kinds:?}");
    }
}

#[tokio::test]
async fn operator_writes_observed_generation_and_ready() {
    let client = admin().await;
    let name = unique("dept-status");
    let mut operator = OperatorProcess::start().unwrap();
    let api: Api<Department> = Api::all(client.clone());
    apply_value(&client, &department(&name), "yunzhang-tests")
        .await
        .unwrap();

    let ready = |d: &Department| {
        let status = d.status.as_ref();
        let observed = status.and_then(|s| s.observed_generation);
        observed.is_some()
            && observed == d.metadata.generation
            && status.is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Ready" && c.status == "True" && c.observed_generation == observed
                })
            })
    };
    let first = wait_for(&api, &name, Duration::from_secs(60), ready)
        .await
        .unwrap();
    assert_eq!(first.metadata.generation, Some(1));

    // A spec change bumps the generation; the operator catches up.
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"displayName": "改名后的厅"}})),
    )
    .await
    .unwrap();
    let second = wait_for(&api, &name, Duration::from_secs(30), ready)
        .await
        .unwrap();
    assert_eq!(second.metadata.generation, Some(2));

    // The admin server answers while it runs.
    let (code, body) = operator.admin_get("/readyz").expect("readyz answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("leader"), "{body}");
    let (code, metrics) = operator.admin_get("/metrics").expect("metrics answers");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("yunzhang_reconciliations_total{kind=\"Department\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("yunzhang_leader 1"), "{metrics}");

    // SIGTERM stops it cleanly.
    assert!(operator.terminate().unwrap(), "operator exits 0 on SIGTERM");
}

#[tokio::test]
async fn department_member_rbac_with_real_users() {
    let admin = admin().await;
    let (ns_a, ns_b) = (unique("dept-a"), unique("dept-b"));
    create_namespace(&ns_a).await.unwrap();
    create_namespace(&ns_b).await.unwrap();
    let user = unique("member");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "members", "namespace": ns_a},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "yunzhang-department-member"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })).unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns_a)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let member = client_as(&user, &["some-staff"]).await;
    // RBAC caches converge within a moment of the binding's creation.
    let mut created = None;
    for _ in 0..50 {
        match refusal_or_forbidden(&member, &with_own_identity(&member, &request(&ns_a)).await)
            .await
        {
            Outcome::Created => {
                created = Some(());
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(
        created.is_some(),
        "member can create a ResourceRequest in its own namespace"
    );
    assert_eq!(
        refusal_or_forbidden(&member, &request(&ns_b)).await,
        Outcome::Forbidden,
        "not in another department's namespace"
    );
    assert_eq!(
        refusal_or_forbidden(&member, &approval(&ns_a)).await,
        Outcome::Forbidden,
        "members can't approve"
    );
    let in_b: Api<ResourceRequest> = Api::namespaced(member.clone(), &ns_b);
    assert!(
        matches!(in_b.list(&Default::default()).await, Err(kube::Error::Api(s)) if s.code == 403)
    );
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Created,
    Forbidden,
    Other(String),
}

async fn refusal_or_forbidden(client: &Client, value: &Value) -> Outcome {
    match apply_value(client, value, "yunzhang-tests").await {
        Ok(_) => Outcome::Created,
        Err(e) => match e.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(s)) if s.code == 403 => Outcome::Forbidden,
            _ => Outcome::Other(e.to_string()),
        },
    }
}

#[tokio::test]
async fn chart_lints_and_the_api_server_accepts_it() {
    let root = repo_root();
    let helm = String::from_utf8(
        Command::new(root.join("hack/tool"))
            .arg("helm")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let helm = helm.trim();
    let lint = Command::new(helm)
        .args(["lint", "--strict"])
        .arg(root.join("charts/yunzhang"))
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "helm lint: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let rendered = Command::new(helm)
        .args(["template", "yunzhang", "--namespace", OPERATOR_NAMESPACE])
        .arg(root.join("charts/yunzhang"))
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let dir = std::env::temp_dir().join(unique("chart"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, &rendered.stdout).unwrap();
    let docs = read_yaml_documents(&file).unwrap();
    let kinds: std::collections::BTreeSet<_> =
        docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "Deployment",
        "Service",
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
    ] {
        assert!(kinds.contains(kind), "chart renders a {kind}: {kinds:?}");
    }
    let dry_run = Command::new("kubectl")
        .env("KUBECONFIG", &cluster().admin_kubeconfig)
        // Server-side, as hack/install's field manager: the cluster has the chart installed for
        // a local operator (webhook clientConfig.url), and this in-cluster rendering replaces
        // that url with a service, as an upgrade by the same installer would.
        .args([
            "apply",
            "--dry-run=server",
            "--server-side",
            "--force-conflicts",
            "--field-manager=yunzhang-install",
            "-n",
            OPERATOR_NAMESPACE,
            "-f",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        dry_run.status.success(),
        "server dry run: {}",
        String::from_utf8_lossy(&dry_run.stderr)
    );
    // The chart's CRDs are the generated ones.
    for entry in std::fs::read_dir(root.join("crds")).unwrap() {
        let path = entry.unwrap().path();
        let chart_copy = root
            .join("charts/yunzhang/crds")
            .join(path.file_name().unwrap());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&chart_copy).unwrap(),
            "{} differs in the chart",
            path.display()
        );
    }
}
