//! P1: N auto-approved requests (no-op executor) from the first create until all are Active,
//! against the same API writes done directly by a minimal client.
//!
//! The operator runs first: its writes are counted from the API server's
//! `apiserver_request_total` (before/after, the driver's own creates taken out). The baseline then
//! replays exactly those writes — the same kinds, the same totals, real bodies copied from the
//! operator's run — as the operator's ServiceAccount, with the operator stopped.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt, stream};
use kube::{
    Api, Client, ResourceExt,
    api::{DynamicObject, ListParams, Patch, PatchParams, PostParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use yunzhang::api::{Phase, ResourceRequest};
use yunzhang_integration::{admin, client_as, kubeconfig_for, unique, with_own_identity};

use crate::common::*;
use crate::watch::PhaseWatch;

const OPERATOR_MANAGER: &str = "yunzhang-operator";

pub struct Args {
    pub sizes: Vec<usize>,
    pub runs: usize,
    /// Runs at every size after the first (the larger ones take longest).
    pub large_runs: usize,
    pub concurrency: usize,
    pub out: std::path::PathBuf,
}

/// Bodies copied from the operator's run, for the baseline to write.
#[derive(Clone, Default)]
struct Templates {
    status: Value,
    plan_data: Value,
    event: Value,
    quota_status: Value,
    department_status: Value,
}

struct OperatorRun {
    seconds: f64,
    writes: BTreeMap<RequestKind, u64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let admin = admin().await;
    shared_fixtures(&admin).await?;
    let member = client_as(MEMBER, &[]).await;
    let log = args.out.join("operator-p1.log");
    let mut sizes_md = String::new();
    let mut summary = Vec::new();
    for (size, &n) in args.sizes.iter().enumerate() {
        let runs_here = if size == 0 {
            args.runs
        } else {
            args.large_runs
        };
        // The operator's runs, then (operator stopped) the baseline's.
        let op = Operator::start(&log).await?;
        let mut runs = Vec::new();
        let mut templates = Templates::default();
        for r in 0..runs_here {
            let (run, t) = operator_run(&admin, &member, n, args.concurrency).await?;
            say(format_args!(
                "P1 n={n} operator run {}: {:.1}s, {} writes",
                r + 1,
                run.seconds,
                run.writes
                    .iter()
                    .filter(|(k, _)| k.is_write())
                    .map(|(_, v)| v)
                    .sum::<u64>()
            ));
            if r == 0 {
                templates = t;
            }
            runs.push(run);
        }
        let reconciles = op.metrics();
        op.stop()?;
        // What the baseline replays: the median count of each write kind over the runs.
        let mut kinds: BTreeMap<RequestKind, Vec<f64>> = BTreeMap::new();
        for run in &runs {
            for (k, v) in &run.writes {
                kinds.entry(k.clone()).or_default().push(*v as f64);
            }
        }
        let counts: BTreeMap<RequestKind, u64> = kinds
            .iter()
            .map(|(k, v)| {
                let mut v = v.clone();
                v.resize(runs.len(), 0.0);
                (k.clone(), median(&v).round() as u64)
            })
            .collect();
        let mut baseline = Vec::new();
        for r in 0..runs_here {
            let secs = baseline_run(&admin, n, args.concurrency, &counts, &templates).await?;
            say(format_args!("P1 n={n} baseline run {}: {secs:.1}s", r + 1));
            baseline.push(secs);
        }
        let op_secs: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
        let (m_op, m_base) = (median(&op_secs), median(&baseline));
        let ratio = m_op / m_base;
        summary.push(json!({"requests": n, "operator_s": op_secs, "baseline_s": baseline,
                            "median_operator_s": m_op, "median_baseline_s": m_base, "ratio": ratio}));
        sizes_md.push_str(&size_section(
            n,
            &op_secs,
            &baseline,
            &counts,
            &reconciles,
            args.concurrency,
        ));
    }
    let worst = summary
        .iter()
        .map(|s| s["ratio"].as_f64().unwrap_or(f64::NAN))
        .fold(f64::NAN, f64::max);
    let met = worst <= 1.5;
    let result = summary
        .iter()
        .map(|s| {
            format!(
                "{}: {:.1} s vs {:.1} s: {:.2}×",
                s["requests"],
                s["median_operator_s"].as_f64().unwrap_or(0.0),
                s["median_baseline_s"].as_f64().unwrap_or(0.0),
                s["ratio"].as_f64().unwrap_or(0.0)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let doc = format!(
        "## P1 — requests to Active\n\n**Goal:** the time from the first create until every request is `Active` is at most 1.5× the time a minimal client takes to do the same API writes. **Result: {result} — goal {}.**\n\n{sizes_md}",
        if met { "met" } else { "not met" }
    );
    write_report(
        &args.out,
        "p1",
        &json!({"row": "P1", "sizes": summary, "met": met, "result": result, "worst_ratio": worst}),
        &doc,
    )
}

fn size_section(
    n: usize,
    op: &[f64],
    base: &[f64],
    counts: &BTreeMap<RequestKind, u64>,
    operator_metrics: &str,
    concurrency: usize,
) -> String {
    let mut s = format!(
        "### {n} requests\n\n| what | median (s) | runs (s) | requests/s |\n| --- | ---: | --- | ---: |\n\
         | operator: create → all `Active` | {:.2} | {} | {:.0} |\n\
         | **baseline:** the same creates and writes by a minimal client | {:.2} | {} | {:.0} |\n\n\
         Ratio operator ÷ baseline: **{:.2}×** (goal ≤ 1.5×). Creates: {concurrency} at a time, as a department member, in both.\n\n",
        median(op),
        list(op, 2),
        n as f64 / median(op),
        median(base),
        list(base, 2),
        n as f64 / median(base),
        median(op) / median(base),
    );
    s.push_str("API requests the API server counted during one operator run (median over the runs; the baseline replays the writes marked ✓):\n\n| request | total | per request | replayed |\n| --- | ---: | ---: | :---: |\n");
    for (k, v) in counts {
        let replayed = if replayable(k) {
            "✓"
        } else if k.is_write() {
            "—"
        } else {
            "read"
        };
        s.push_str(&format!(
            "| `{k}` | {v} | {:.2} | {replayed} |\n",
            *v as f64 / n as f64
        ));
    }
    // The reconcile histogram of the requests' controller, for where the time goes.
    let hist: Vec<&str> = operator_metrics
        .lines()
        .filter(|l| {
            l.starts_with("yunzhang_reconcile_duration_seconds")
                && l.contains("ResourceRequest")
                && !l.contains("_bucket")
        })
        .collect();
    if !hist.is_empty() {
        s.push_str(&format!(
            "\nThe operator's reconcile time for ResourceRequests over these runs (`/metrics`):\n\n```text\n{}\n```\n",
            hist.join("\n")
        ));
    }
    s.push('\n');
    s
}

/// One measured run with the operator running: a fresh department, N creates, until all Active.
async fn operator_run(
    admin: &Client,
    member: &Client,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<(OperatorRun, Templates)> {
    let ns = unique("p1");
    department_with_quota(admin, &ns, AUTO_POLICY, n).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let watch = PhaseWatch::start(admin, &ns).await;
    let before = apiserver_requests(admin).await?;
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let body = request(&ns, &format!("r{i:05}"));
            async move { create_value(member, &body).await.map(|_| ()) }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    watch
        .until(Duration::from_secs(1800), |s| {
            s.first_in
                .keys()
                .filter(|(_, p)| *p == Phase::Active)
                .count()
                >= n
        })
        .await
        .with_context(|| format!("{} of {n} Active", watch.count_in(Phase::Active)))?;
    let seconds = started.elapsed().as_secs_f64();
    // Trailing writes (the last events, quota status) land within a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = apiserver_requests(admin).await?;
    let mut writes = delta(&before, &after);
    // The driver's own creates and the watch are not the operator's.
    for (verb, sub) in [("POST", ""), ("WATCH", "")] {
        let k = RequestKind {
            verb: verb.into(),
            group: "yunzhang.io".into(),
            resource: "resourcerequests".into(),
            subresource: sub.into(),
        };
        if let Some(v) = writes.get_mut(&k) {
            *v = v.saturating_sub(if verb == "POST" { n as u64 } else { 1 });
        }
    }
    writes.retain(|k, v| *v > 0 && k.resource != "leases");
    let templates = templates(admin, &ns).await?;
    Ok((OperatorRun { seconds, writes }, templates))
}

async fn templates(admin: &Client, ns: &str) -> anyhow::Result<Templates> {
    use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
    let rr: ResourceRequest = Api::namespaced(admin.clone(), ns).get("r00000").await?;
    let plan: ConfigMap = Api::namespaced(admin.clone(), ns)
        .get("r00000-plan")
        .await?;
    let events = Api::<Event>::namespaced(admin.clone(), ns)
        .list(&ListParams::default().limit(1))
        .await?;
    let event = events
        .items
        .first()
        .map(|e| {
            json!({"type": e.type_, "reason": e.reason, "action": e.action, "note": e.note,
                   "reportingController": e.reporting_controller, "reportingInstance": e.reporting_instance})
        })
        .unwrap_or_else(|| json!({"type": "Normal", "reason": "Bench", "action": "Reconcile", "note": "bench",
                                   "reportingController": "yunzhang-operator", "reportingInstance": "bench"}));
    let quota: DynamicObject =
        Api::namespaced_with(admin.clone(), ns, &ar("CloudQuota", "cloudquotas"))
            .get("base")
            .await?;
    let dept: DynamicObject = Api::all_with(admin.clone(), &ar("Department", "departments"))
        .get(ns)
        .await?;
    Ok(Templates {
        status: serde_json::to_value(rr.status)?,
        plan_data: serde_json::to_value(plan.data)?,
        event,
        quota_status: quota.data["status"].clone(),
        department_status: dept.data["status"].clone(),
    })
}

fn ar(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "yunzhang.io".into(),
        version: "v1alpha1".into(),
        api_version: "yunzhang.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The write kinds the baseline knows how to replay.
fn replayable(k: &RequestKind) -> bool {
    matches!(
        (
            k.verb.as_str(),
            k.group.as_str(),
            k.resource.as_str(),
            k.subresource.as_str()
        ),
        (
            "APPLY" | "PATCH",
            "yunzhang.io",
            "resourcerequests",
            "" | "status"
        ) | (
            "APPLY" | "PATCH",
            "yunzhang.io",
            "cloudquotas" | "departments",
            "status"
        ) | ("POST" | "PATCH", "events.k8s.io" | "", "events", "")
            | ("APPLY" | "PATCH" | "PUT" | "POST", "", "configmaps", "")
    )
}

/// How many of `total` writes request `i` of `n` does (spread evenly).
fn share(total: u64, i: usize, n: usize) -> u64 {
    let (i, n) = (i as u64, n as u64);
    (i + 1) * total / n - i * total / n
}

/// One baseline run: the same creates, then per request its share of every replayed write, as the
/// operator's ServiceAccount, `concurrency` requests at a time. Returns the seconds taken.
async fn baseline_run(
    admin: &Client,
    n: usize,
    concurrency: usize,
    counts: &BTreeMap<RequestKind, u64>,
    t: &Templates,
) -> anyhow::Result<f64> {
    // A namespace no Department owns, with the objects the replayed status writes go to; the
    // operator is stopped, so nothing else writes there.
    let ns = unique("p1-base");
    yunzhang_integration::create_namespace(&ns).await?;
    let dept = unique("p1-base");
    apply(admin, &department(&dept, AUTO_POLICY)).await?;
    apply(
        admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "base", "namespace": ns},
                "spec": {"hard": {"vcpu": 4}}}),
    )
    .await?;
    let operator = tokio::task::spawn_blocking(|| {
        kubeconfig_for(
            yunzhang_integration::OPERATOR_USER,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:yunzhang-system",
            ],
        )
    })
    .await?;
    let operator = {
        let kc = kube::config::Kubeconfig::read_from(&operator)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Client::try_from(cfg)?
    };
    // The requests carry the identity the webhook would record (it isn't running).
    let member_like = with_own_identity(admin, &request(&ns, "x")).await;
    let identity = member_like["metadata"]["annotations"].clone();
    let filing_rv: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let counts: Vec<(RequestKind, u64)> = counts
        .iter()
        .filter(|(k, _)| replayable(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let started = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let (admin, operator, ns, dept, t, counts, identity, filing_rv) = (
                admin.clone(),
                operator.clone(),
                ns.clone(),
                dept.clone(),
                t.clone(),
                counts.clone(),
                identity.clone(),
                filing_rv.clone(),
            );
            async move {
                let name = format!("r{i:05}");
                let mut body = request(&ns, &name);
                body["metadata"]["annotations"] = identity;
                let created = create_value(&admin, &body).await?;
                replay_one(
                    &operator, &ns, &dept, &name, created, &counts, &t, &filing_rv, i, n,
                )
                .await
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// Request `i`'s share of the writes, in the operator's order: finalizer, status, plan, events,
/// filing number, status again, quota and department status.
#[allow(clippy::too_many_arguments)]
async fn replay_one(
    operator: &Client,
    ns: &str,
    dept: &str,
    name: &str,
    created: DynamicObject,
    counts: &[(RequestKind, u64)],
    t: &Templates,
    filing_rv: &Mutex<Option<String>>,
    i: usize,
    n: usize,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let rr_ar = ar("ResourceRequest", "resourcerequests");
    let requests: Api<DynamicObject> = Api::namespaced_with(operator.clone(), ns, &rr_ar);
    let apply = PatchParams::apply(OPERATOR_MANAGER).force();
    let mut rv = created.resource_version();
    let uid = created.uid().unwrap_or_default();
    let mut last_event: Option<String> = None;
    for (k, total) in counts {
        let times = share(*total, i, n);
        for _ in 0..times {
            match (k.resource.as_str(), k.subresource.as_str(), k.verb.as_str()) {
                ("resourcerequests", "", _) => {
                    let patch = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                                       "metadata": {"name": name, "finalizers": ["yunzhang.io/lifecycle"]}});
                    rv = requests
                        .patch(name, &apply, &Patch::Apply(patch))
                        .await?
                        .resource_version();
                }
                ("resourcerequests", "status", _) => {
                    let patch = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                                       "metadata": {"name": name, "resourceVersion": rv}, "status": t.status});
                    rv = requests
                        .patch_status(name, &apply, &Patch::Apply(patch))
                        .await?
                        .resource_version();
                }
                ("events", _, "POST") => {
                    let e = &t.event;
                    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                        "metadata": {"generateName": format!("{name}-"), "namespace": ns},
                        "eventTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                        "type": e["type"], "reason": e["reason"], "action": e["action"], "note": e["note"],
                        "reportingController": e["reportingController"], "reportingInstance": e["reportingInstance"],
                        "regarding": {"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                                      "namespace": ns, "name": name, "uid": uid}});
                    last_event = create_value(operator, &event).await?.metadata.name;
                }
                ("events", _, _) => {
                    if let Some(ev) = &last_event {
                        let api: Api<DynamicObject> = Api::namespaced_with(
                            operator.clone(),
                            ns,
                            &ApiResource::erase::<k8s_openapi::api::events::v1::Event>(&()),
                        );
                        let patch = json!({"series": {"count": 2, "lastObservedTime":
                            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
                        api.patch(ev, &PatchParams::default(), &Patch::Merge(patch))
                            .await?;
                    }
                }
                ("configmaps", _, "APPLY" | "PATCH") => {
                    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": format!("{name}-plan"), "namespace": ns,
                                     "labels": {"app.kubernetes.io/managed-by": "yunzhang", "yunzhang.io/request": name},
                                     "ownerReferences": [{"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                                                          "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": false}]},
                        "data": t.plan_data});
                    Api::<ConfigMap>::namespaced(operator.clone(), ns)
                        .patch(&format!("{name}-plan"), &apply, &Patch::Apply(cm))
                        .await?;
                }
                ("configmaps", _, "PUT" | "POST") => {
                    // The filing number: one writer at a time, each write conditional on the last.
                    let api = Api::<ConfigMap>::namespaced(operator.clone(), ns);
                    let mut last = filing_rv.lock().await;
                    let mut cm = ConfigMap {
                        metadata: kube::api::ObjectMeta {
                            name: Some("bench-filing".into()),
                            resource_version: last.clone(),
                            ..Default::default()
                        },
                        data: Some(
                            [
                                ("2026".to_owned(), i.to_string()),
                                ("last-2026".to_owned(), uid.clone()),
                            ]
                            .into(),
                        ),
                        ..Default::default()
                    };
                    let written = match last.as_ref() {
                        Some(_) => {
                            api.replace("bench-filing", &PostParams::default(), &cm)
                                .await?
                        }
                        None => {
                            cm.metadata.resource_version = None;
                            api.create(&PostParams::default(), &cm).await?
                        }
                    };
                    *last = written.metadata.resource_version;
                }
                ("cloudquotas", "status", _) => {
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        operator.clone(),
                        ns,
                        &ar("CloudQuota", "cloudquotas"),
                    );
                    let patch = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota",
                                       "metadata": {"name": "base"}, "status": t.quota_status});
                    api.patch_status("base", &apply, &Patch::Apply(patch))
                        .await?;
                }
                ("departments", "status", _) => {
                    let api: Api<DynamicObject> =
                        Api::all_with(operator.clone(), &ar("Department", "departments"));
                    let patch = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department",
                                       "metadata": {"name": dept}, "status": t.department_status});
                    api.patch_status(dept, &apply, &Patch::Apply(patch)).await?;
                }
                _ => {}
            }
        }
    }
    Ok(())
}
