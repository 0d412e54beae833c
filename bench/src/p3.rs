//! P3: the operator's memory with many departments and requests watched, against the JSON size
//! of those objects.
//!
//! The objects are created as admin with the operator stopped (requests with the identity the
//! webhook would record), cumulatively from one size to the next; at each size the operator is
//! started `runs` times and its RSS read from /proc once its stores are synced and its reconciles
//! have settled (see [`settled`]).

use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{StreamExt, TryStreamExt, stream};
use kube::{Client, discovery::ApiResource};
use serde_json::json;
use yunzhang_integration::{admin, with_own_identity};

use crate::common::*;

/// The namespace the requests live in: no Department owns it (see the doc).
pub const LOAD_NAMESPACE: &str = "bench-p3-load";

pub struct Args {
    /// (departments, requests), ascending.
    pub sizes: Vec<(usize, usize)>,
    pub runs: usize,
    pub out: std::path::PathBuf,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let admin = admin().await;
    shared_fixtures(&admin).await?;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(admin.clone());
    if namespaces.get_opt(LOAD_NAMESPACE).await?.is_none() {
        yunzhang_integration::create_namespace(LOAD_NAMESPACE).await?;
    }
    let identity =
        with_own_identity(&admin, &request(LOAD_NAMESPACE, "x")).await["metadata"]["annotations"]
            .clone();
    let log = args.out.join("operator-p3.log");
    let (mut have_depts, mut have_requests) = (0, 0);
    let mut rows = Vec::new();
    for &(depts, requests) in &args.sizes {
        let started = Instant::now();
        stream::iter(have_depts..depts)
            .map(|i| {
                let admin = admin.clone();
                async move { apply(&admin, &department(&format!("p3-d{i:05}"), AUTO_POLICY)).await }
            })
            .buffer_unordered(32)
            .try_collect::<()>()
            .await?;
        stream::iter(have_requests..requests)
            .map(|i| {
                let mut body = request(LOAD_NAMESPACE, &format!("r{i:06}"));
                body["metadata"]["annotations"] = identity.clone();
                let admin = admin.clone();
                async move { create_value(&admin, &body).await.map(|_| ()) }
            })
            .buffer_unordered(64)
            .try_collect::<()>()
            .await?;
        (have_depts, have_requests) = (depts, requests);
        say(format_args!(
            "P3 created up to {depts} departments, {requests} requests in {:.0}s",
            started.elapsed().as_secs_f64()
        ));
        let mut rss = Vec::new();
        let mut hwm = Vec::new();
        let mut settle = Vec::new();
        for r in 0..args.runs {
            let started = Instant::now();
            let op = Operator::start(&log).await?;
            settled(&op, depts, requests, Duration::from_secs(1800)).await?;
            let settle_s = started.elapsed().as_secs_f64();
            let (now, peak) = op.memory_kib()?;
            op.stop()?;
            say(format_args!(
                "P3 {depts}/{requests} run {}: RSS {:.1} MiB (peak {:.1} MiB), settled in {settle_s:.0}s",
                r + 1,
                now as f64 / 1024.0,
                peak as f64 / 1024.0
            ));
            rss.push(now as f64 * 1024.0);
            hwm.push(peak as f64 * 1024.0);
            settle.push(settle_s);
        }
        let sizes = object_sizes(&admin).await?;
        rows.push(
            json!({"departments": depts, "requests": requests, "rss": rss, "hwm": hwm,
                         "settle_s": settle, "objects": sizes}),
        );
    }
    report(&args, &rows)
}

/// Until the operator has settled: every Department and request had its first reconcile (the
/// counters by kind reach the object counts), and then nothing was reconciled for 10 s. A
/// request in a namespace no Department owns waits, unscheduled, for a Department to claim it,
/// so once each has had its finalizer and its first status written the operator idles; the
/// counters alone would not say so (a request's second pass may come before another's first).
async fn settled(
    op: &Operator,
    departments: usize,
    requests: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = f64::NAN;
    let mut still = 0;
    let mut first_pass = false;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let of = |kind: &str| {
            op.counter(&format!(
                "yunzhang_reconciliations_total{{kind=\"{kind}\"}}"
            ))
        };
        first_pass = first_pass
            || (of("ResourceRequest") >= requests as f64 && of("Department") >= departments as f64);
        let now = op.counter("yunzhang_reconciliations_total");
        if now == last && now > 0.0 {
            still += 1;
        } else {
            still = 0;
        }
        last = now;
        if first_pass && still >= 5 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("reconciles did not settle within {timeout:?}");
        }
    }
}

fn yz(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "yunzhang.io".into(),
        version: "v1alpha1".into(),
        api_version: "yunzhang.io/v1alpha1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// JSON bytes and counts of what the operator watches, by kind.
async fn object_sizes(admin: &Client) -> anyhow::Result<serde_json::Value> {
    use k8s_openapi::api::{
        core::v1::Namespace, networking::v1::NetworkPolicy, rbac::v1::RoleBinding,
    };
    let kinds = [
        ("Department", yz("Department", "departments")),
        ("ResourceRequest", yz("ResourceRequest", "resourcerequests")),
        ("CloudQuota", yz("CloudQuota", "cloudquotas")),
        ("Approval", yz("Approval", "approvals")),
        ("ApprovalPolicy", yz("ApprovalPolicy", "approvalpolicies")),
        ("CloudProvider", yz("CloudProvider", "cloudproviders")),
        ("PriceBook", yz("PriceBook", "pricebooks")),
        ("Namespace", ApiResource::erase::<Namespace>(&())),
        ("RoleBinding", ApiResource::erase::<RoleBinding>(&())),
        ("NetworkPolicy", ApiResource::erase::<NetworkPolicy>(&())),
    ];
    let mut out = serde_json::Map::new();
    for (name, ar) in kinds {
        let (bytes, count) = json_bytes(admin, &ar).await?;
        out.insert(name.into(), json!({"bytes": bytes, "count": count}));
    }
    Ok(out.into())
}

fn mib(b: f64) -> f64 {
    b / 1048576.0
}

fn report(args: &Args, rows: &[serde_json::Value]) -> anyhow::Result<()> {
    let bytes = |row: &serde_json::Value, kinds: &[&str]| -> f64 {
        kinds
            .iter()
            .map(|k| row["objects"][k]["bytes"].as_f64().unwrap_or(0.0))
            .sum()
    };
    let all = |row: &serde_json::Value| -> f64 {
        row["objects"]
            .as_object()
            .map(|o| o.values().map(|v| v["bytes"].as_f64().unwrap_or(0.0)).sum())
            .unwrap_or(0.0)
    };
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
            .unwrap_or_default()
    };
    let mut table = String::from(
        "| departments | requests | operator RSS, median (MiB) | runs (MiB) | peak RSS, median (MiB) | JSON of departments + requests (MiB) | RSS ÷ that | JSON of everything it watches (MiB) | RSS ÷ that | settled after (s) |\n\
         | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    let mut ratios = Vec::new();
    for row in rows {
        let rss = floats(&row["rss"]);
        let hwm = floats(&row["hwm"]);
        let objects = bytes(row, &["Department", "ResourceRequest"]);
        let ratio = median(&rss) / objects;
        ratios.push(ratio);
        table.push_str(&format!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.1} | **{:.2}×** | {:.1} | {:.2}× | {} |\n",
            row["departments"],
            row["requests"],
            mib(median(&rss)),
            list(&rss.iter().map(|b| mib(*b)).collect::<Vec<_>>(), 1),
            mib(median(&hwm)),
            mib(objects),
            ratio,
            mib(all(row)),
            median(&rss) / all(row),
            list(&floats(&row["settle_s"]), 0),
        ));
    }
    // The marginal cost: what the operator holds per byte of JSON added from one size to the next.
    let mut marginal = String::new();
    if let [a, .., b] = rows {
        let d_rss = median(&floats(&b["rss"])) - median(&floats(&a["rss"]));
        let d_json = bytes(b, &["Department", "ResourceRequest"])
            - bytes(a, &["Department", "ResourceRequest"]);
        let per_request =
            d_rss / (b["requests"].as_f64().unwrap_or(0.0) - a["requests"].as_f64().unwrap_or(0.0));
        marginal = format!(
            "From the smaller size to the larger, RSS grew by {:.1} MiB for {:.1} MiB more JSON: **{:.2}×** at the margin, about {:.1} KiB per request (the fixed cost of the process — runtime, TLS, client, allocator — is in the totals above, not in this).\n\n",
            mib(d_rss),
            mib(d_json),
            d_rss / d_json,
            per_request / 1024.0
        );
    }
    let last = rows.last().cloned().unwrap_or_default();
    let ratio = ratios.last().copied().unwrap_or(f64::NAN);
    let met = ratio <= 2.0;
    let result = format!(
        "{} departments / {} requests: {:.1} MiB RSS for {:.1} MiB of JSON: {ratio:.2}×",
        last["departments"],
        last["requests"],
        mib(median(&floats(&last["rss"]))),
        mib(bytes(&last, &["Department", "ResourceRequest"]))
    );
    let doc = format!(
        "## P3 — operator memory\n\n\
         **Goal:** the operator's resident memory, once its stores are synced and its reconciles have settled, is at most 2× the JSON size of the departments and requests it watches. **Result: {result} — goal {}.**\n\n\
         {table}\n{marginal}Each size is measured {} times, restarting the operator each time (the first start at a size also writes the new objects' first status).\n\n",
        if met { "met" } else { "not met" },
        args.runs
    );
    write_report(
        &args.out,
        "p3",
        &json!({"row": "P3", "sizes": rows, "ratio": ratio, "met": met, "result": result}),
        &doc,
    )
}
