//! P5: an Approval created → the request `Active`, with the `local` OpenTofu executor applying
//! the reference modules (`examples/modules/`, OpenTofu's built-in `terraform_data`: offline),
//! against `tofu init`, `tofu plan -out` and `tofu apply` run by hand on the same workspace.
//!
//! Each repetition: a request waits in `AwaitingApproval` with its plan made (the operator ran
//! init, plan and show); the approval's create response starts the clock, the watch event
//! showing `Active` stops it (the operator wrote `Provisioning`, ran init and applied the saved
//! plan, read the outputs, wrote `Active`). Then, the operator still running and idle, the
//! workspace the operator kept in the request's plan ConfigMap is written to a fresh directory
//! with the state Secret's suffix changed (a fresh state, as the request had) and the same
//! `tofu` binary runs init, plan -out and apply on it, with the same `kubernetes` backend.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use yunzhang::api::Phase;
use yunzhang_integration::{admin, client_as, cluster, repo_root, tofu_binary, unique};

use crate::common::*;
use crate::watch::PhaseWatch;

/// The provider of P5: the `local` executor.
const TOFU_PROVIDER: &str = "bench-tofu";

pub struct Args {
    pub runs: usize,
    pub out: PathBuf,
}

struct Run {
    /// Create → `AwaitingApproval` with the plan (init, plan, show by the operator), s.
    planned: f64,
    /// Approval create response → `Active` seen, s.
    operator: f64,
    /// By hand: init, plan -out, apply (each, s).
    by_hand: [f64; 3],
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let admin = admin().await;
    shared_fixtures(&admin).await?;
    tofu_fixtures(&admin).await?;
    let member = client_as(MEMBER, &[]).await;
    let head = client_as(HEAD, &[HEADS]).await;
    let work = std::path::absolute(args.out.join("p5-work"))?;
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let modules = repo_root().join("examples/modules");
    let op = Operator::start_with_env(
        &args.out.join("operator-p5.log"),
        &[
            ("YZ_TOFU", tofu_binary()),
            ("YZ_TOFU_MODULES_DIR", &modules),
            ("YZ_TOFU_WORK_DIR", &work.join("operator")),
        ],
    )
    .await?;
    let ns = unique("p5");
    let mut dept = department(&ns, STAGED_POLICY);
    dept["spec"]["provider"] = TOFU_PROVIDER.into();
    apply(&admin, &dept).await?;
    quota_room(&admin, &ns, args.runs).await?;
    let watch = PhaseWatch::start(&admin, &ns).await;
    let mut runs = Vec::new();
    for r in 0..args.runs {
        let name = format!("r{r:03}");
        let run = one_run(&admin, &member, &head, &watch, &ns, &name, &work).await?;
        say(format_args!(
            "P5 run {}: approval → Active {:.2} s; by hand {:.2} s (init {:.2}, plan {:.2}, apply {:.2})",
            r + 1,
            run.operator,
            run.by_hand.iter().sum::<f64>(),
            run.by_hand[0],
            run.by_hand[1],
            run.by_hand[2]
        ));
        runs.push(run);
    }
    op.stop()?;
    report(&args, &runs)
}

/// The `local` provider and its prices; `ecs` from the reference modules.
async fn tofu_fixtures(admin: &Client) -> anyhow::Result<()> {
    for v in [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": TOFU_PROVIDER},
               "spec": {"displayName": "基准云（OpenTofu）", "region": "nanning-1", "executor": {"type": "local"},
                        "modules": {"ecs": {"source": "./modules/ecs"}}}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": TOFU_PROVIDER},
               "spec": {"provider": TOFU_PROVIDER, "currency": "CNY", "effectiveFrom": "2026-01-01T00:00:00+08:00",
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"}]}}),
    ] {
        apply(admin, &v).await?;
    }
    Ok(())
}

async fn one_run(
    admin: &Client,
    member: &Client,
    head: &Client,
    watch: &PhaseWatch,
    ns: &str,
    name: &str,
    work: &Path,
) -> anyhow::Result<Run> {
    let created = Instant::now();
    create_value(member, &request(ns, name)).await?;
    let awaiting = |s: &crate::watch::Seen| {
        s.latest.get(name).is_some_and(|r| {
            r.status.as_ref().is_some_and(|st| {
                st.phase == Some(Phase::AwaitingApproval)
                    && st.plan.is_some()
                    && st.observed_generation == r.metadata.generation
            })
        })
    };
    watch
        .until(Duration::from_secs(300), awaiting)
        .await
        .with_context(|| format!("{name}: not awaiting approval with a plan"))?;
    let planned = created.elapsed().as_secs_f64();
    // Let the operator's trailing writes (events, quota) land before the clock starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rr = watch.seen.lock().expect("not poisoned").latest[name].clone();
    let approval = approval_for(&rr)?;
    create_value(head, &approval).await?;
    let responded = Instant::now();
    let settled = |s: &crate::watch::Seen| {
        [Phase::Active, Phase::Failed, Phase::Rejected]
            .into_iter()
            .find(|p| s.first_in.contains_key(&(name.to_owned(), *p)))
    };
    watch
        .until(Duration::from_secs(600), |s| settled(s).is_some())
        .await
        .with_context(|| format!("{name}: neither Active nor Failed after its approval"))?;
    let (phase, at) = {
        let seen = watch.seen.lock().expect("not poisoned");
        let phase = settled(&seen).context("settled")?;
        (phase, seen.first_in[&(name.to_owned(), phase)])
    };
    if phase != Phase::Active {
        bail!("{name} went {phase:?} instead of Active; see operator-p5.log");
    }
    let operator = at.saturating_duration_since(responded).as_secs_f64();
    let uid = rr.uid().context("uid")?;
    let by_hand = by_hand(admin, ns, name, &uid, &work.join(format!("by-hand-{name}"))).await?;
    Ok(Run {
        planned,
        operator,
        by_hand,
    })
}

/// The workspace of request `name` as the operator kept it (its plan ConfigMap), run by hand
/// in `dir`: init, plan -out, apply of that plan, each timed. The state Secret's suffix (the
/// request's uid) is replaced, so the state starts empty as the request's did.
async fn by_hand(
    admin: &Client,
    ns: &str,
    name: &str,
    uid: &str,
    dir: &Path,
) -> anyhow::Result<[f64; 3]> {
    let cm: ConfigMap = Api::namespaced(admin.clone(), ns)
        .get(&format!("{name}-plan"))
        .await?;
    std::fs::create_dir_all(dir)?;
    let mut replaced = false;
    for (file, content) in cm.data.unwrap_or_default() {
        if file.ends_with(".tf") {
            replaced |= content.contains(uid);
            std::fs::write(
                dir.join(&file),
                content.replace(uid, &format!("{uid}-by-hand")),
            )?;
        }
    }
    ensure!(
        replaced,
        "the kept workspace of {name} names no state Secret suffix {uid}"
    );
    std::os::unix::fs::symlink(repo_root().join("examples/modules"), dir.join("modules"))?;
    let kubeconfig = cluster().admin_kubeconfig.clone();
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<[f64; 3]> {
        let mut times = [0.0; 3];
        let steps: [&[&str]; 3] = [
            &["init", "-input=false", "-no-color"],
            &["plan", "-out=plan.tfplan", "-input=false", "-no-color"],
            &["apply", "-input=false", "-no-color", "plan.tfplan"],
        ];
        for (k, args) in steps.iter().enumerate() {
            let t = Instant::now();
            let out = Command::new(tofu_binary())
                .args(*args)
                .current_dir(&dir)
                .env("KUBE_CONFIG_PATH", &kubeconfig)
                .env("TF_IN_AUTOMATION", "1")
                .env("TF_INPUT", "0")
                .env("CHECKPOINT_DISABLE", "1")
                .output()?;
            times[k] = t.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!(
                    "tofu {args:?} in {}: {}",
                    dir.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(times)
    })
    .await?
}

fn report(args: &Args, runs: &[Run]) -> anyhow::Result<()> {
    let op: Vec<f64> = runs.iter().map(|r| r.operator).collect();
    let hand: Vec<f64> = runs.iter().map(|r| r.by_hand.iter().sum()).collect();
    let step = |k: usize| -> Vec<f64> { runs.iter().map(|r| r.by_hand[k]).collect() };
    let planned: Vec<f64> = runs.iter().map(|r| r.planned).collect();
    // What the operator runs after an approval: init and the apply of a saved plan.
    let init_apply: Vec<f64> = runs.iter().map(|r| r.by_hand[0] + r.by_hand[2]).collect();
    let (m_op, m_hand) = (median(&op), median(&hand));
    let ratio = m_op / m_hand;
    let met = ratio <= 1.15;
    let result = format!("{m_op:.2} s vs {m_hand:.2} s: {ratio:.2}×");
    let row =
        |what: &str, xs: &[f64]| format!("| {what} | {:.2} | {} |\n", median(xs), list(xs, 2));
    let doc = format!(
        "## P5 — approval to Active with OpenTofu\n\n\
         **Goal:** from an Approval's create response to the watch event showing the request \
         `Active`, with the `local` executor, at most 1.15× running `tofu init`, `tofu plan -out` \
         and `tofu apply` by hand on the same workspace. **Result: {result} — goal {}.**\n\n\
         {} repetitions, one request each (one `ecs` item, one instance: the reference module's \
         `terraform_data`), state in the cluster (`kubernetes` backend) for both:\n\n\
         | what | median (s) | runs (s) |\n| --- | ---: | --- |\n{}{}{}{}{}{}{}\n\
         Ratio operator ÷ by hand: **{ratio:.2}×** (goal ≤ 1.15×); against by hand's init + apply \
         alone, the commands the operator runs after an approval: {:.2}×. After the approval the operator \
         writes `Provisioning`, runs `tofu init` on the request's working directory and applies \
         the plan it saved when it planned (it never plans again after the approval unless the \
         saved plan is gone), reads `tofu output -json`, and writes `Active`; by hand the plan \
         is made too. Planning happens before the approval in the operator (the row \"created → \
         awaiting approval\"), so it is not in the operator's figure.\n\n",
        if met { "met" } else { "not met" },
        runs.len(),
        row("operator: approval created → `Active` seen", &op),
        row("**baseline:** by hand, init + plan -out + apply", &hand),
        row("by hand: `tofu init`", &step(0)),
        row("by hand: `tofu plan -out`", &step(1)),
        row("by hand: `tofu apply` of the plan", &step(2)),
        row("by hand: init + apply (without the plan)", &init_apply),
        row(
            "(not timed against the goal) operator: request created → awaiting approval with its plan",
            &planned
        ),
        m_op / median(&init_apply),
    );
    write_report(
        &args.out,
        "p5",
        &json!({"row": "P5", "operator_s": op, "by_hand_s": hand, "median_operator_s": m_op,
                "median_by_hand_s": m_hand, "ratio": ratio, "met": met, "result": result}),
        &doc,
    )
}
