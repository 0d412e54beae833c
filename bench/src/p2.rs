//! P2: an Approval created → the request's next phase written, one approval at a time.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use yunzhang::api::Phase;
use yunzhang_integration::{admin, client_as, unique};

use crate::common::*;
use crate::watch::PhaseWatch;

pub struct Args {
    pub approvals: usize,
    pub runs: usize,
    pub out: std::path::PathBuf,
}

struct Run {
    /// Create response → the watch event showing the next phase, ms.
    latency: Vec<f64>,
    /// The create call itself (the approval webhook judges it), ms.
    create: Vec<f64>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let admin = admin().await;
    shared_fixtures(&admin).await?;
    let member = client_as(MEMBER, &[]).await;
    let head = client_as(HEAD, &[HEADS]).await;
    let op = Operator::start(&args.out.join("operator-p2.log")).await?;
    let mut runs = Vec::new();
    for r in 0..args.runs {
        let run = one_run(&admin, &member, &head, args.approvals).await?;
        say(format_args!(
            "P2 run {}: p50 {:.1} ms, p99 {:.1} ms",
            r + 1,
            quantile(&run.latency, 0.5),
            quantile(&run.latency, 0.99)
        ));
        runs.push(run);
    }
    op.stop()?;
    let p50s: Vec<f64> = runs.iter().map(|r| quantile(&r.latency, 0.5)).collect();
    let p99s: Vec<f64> = runs.iter().map(|r| quantile(&r.latency, 0.99)).collect();
    let maxs: Vec<f64> = runs.iter().map(|r| quantile(&r.latency, 1.0)).collect();
    let c50: Vec<f64> = runs.iter().map(|r| quantile(&r.create, 0.5)).collect();
    let c99: Vec<f64> = runs.iter().map(|r| quantile(&r.create, 0.99)).collect();
    let (p50, p99) = (median(&p50s), median(&p99s));
    let met = p99 <= 100.0;
    let result = format!("p50 {p50:.1} ms, p99 {p99:.1} ms");
    let doc = format!(
        "## P2 — approval latency\n\n\
         **Goal:** p99 ≤ 100 ms from an Approval's create response to the watch event showing the request's next phase. **Result: {result} — goal {}.**\n\n\
         {} approvals per run, one at a time, {} runs; each run's p50 and p99, then the median of the runs:\n\n\
         | what | median (ms) | runs (ms) |\n| --- | ---: | --- |\n\
         | create response → next phase seen, p50 | {p50:.1} | {} |\n\
         | create response → next phase seen, p99 | {p99:.1} | {} |\n\
         | create response → next phase seen, max | {:.1} | {} |\n\
         | the create call (the approval webhook judges it), p50 | {:.1} | {} |\n\
         | the create call, p99 | {:.1} | {} |\n\n",
        if met { "met" } else { "not met" },
        args.approvals,
        args.runs,
        list(&p50s, 1),
        list(&p99s, 1),
        median(&maxs),
        list(&maxs, 1),
        median(&c50),
        list(&c50, 1),
        median(&c99),
        list(&c99, 1),
    );
    write_report(
        &args.out,
        "p2",
        &json!({"row": "P2", "p50_ms": p50, "p99_ms": p99, "p50s": p50s, "p99s": p99s, "met": met, "result": result}),
        &doc,
    )
}

async fn one_run(
    admin: &kube::Client,
    member: &kube::Client,
    head: &kube::Client,
    n: usize,
) -> anyhow::Result<Run> {
    let ns = unique("p2");
    department_with_quota(admin, &ns, STAGED_POLICY, n).await?;
    let watch = PhaseWatch::start(admin, &ns).await;
    stream::iter(0..n)
        .map(|i| {
            let body = request(&ns, &format!("r{i:05}"));
            async move { create_value(member, &body).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await?;
    // Every request waits for its approval, with its plan.
    watch
        .until(Duration::from_secs(600), |s| {
            s.latest
                .values()
                .filter(|r| {
                    r.status.as_ref().is_some_and(|st| {
                        st.phase == Some(Phase::AwaitingApproval)
                            && st.plan.is_some()
                            && st.observed_generation == r.metadata.generation
                    })
                })
                .count()
                >= n
        })
        .await
        .context("requests awaiting approval")?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut run = Run {
        latency: Vec::new(),
        create: Vec::new(),
    };
    for i in 0..n {
        let name = format!("r{i:05}");
        let rr = watch.seen.lock().expect("not poisoned").latest[&name].clone();
        let approval = approval_for(&rr)?;
        let sent = Instant::now();
        create_value(head, &approval).await?;
        let responded = Instant::now();
        let next = |s: &crate::watch::Seen| {
            [
                Phase::Provisioning,
                Phase::Active,
                Phase::Rejected,
                Phase::Failed,
            ]
            .iter()
            .filter_map(|p| s.first_in.get(&(name.clone(), *p)).copied())
            .min()
        };
        watch
            .until(Duration::from_secs(60), |s| next(s).is_some())
            .await
            .with_context(|| format!("{name}: no phase after its approval"))?;
        let seen = next(&watch.seen.lock().expect("not poisoned")).context("seen")?;
        if watch
            .seen
            .lock()
            .expect("not poisoned")
            .first_in
            .contains_key(&(name.clone(), Phase::Rejected))
        {
            bail!("{name} was rejected");
        }
        // The phase can be seen before our create call returns (the operator and the watch are
        // that fast): that counts as 0.
        run.latency
            .push(seen.saturating_duration_since(responded).as_secs_f64() * 1e3);
        run.create
            .push(responded.duration_since(sent).as_secs_f64() * 1e3);
    }
    Ok(run)
}
