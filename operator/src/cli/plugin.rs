//! The kubectl plugin verbs: `approve`, `reject`, `retire`, `force-exit`, `status`, `migration
//! advance`. Available as
//! `yunzhang VERB …`, and as `kubectl yunzhang VERB …` when the binary is installed (or
//! symlinked) as `kubectl-yunzhang` on the PATH.
//!
//! The pure part turns what was read into what is created and printed ([`approval_for`],
//! [`decided_text`], [`status_text`], [`retire_text`]); [`main`] does the I/O as the user of the
//! kubeconfig, so RBAC and admission apply to them, not to the operator.

use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Event;
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};

use crate::api::{
    Approval, ApprovalSpec, Decision, MigrationWorkload, Phase, RequestBinding, ResourceRequest,
    annotations,
    migration_workload::{MigrationGate, MigrationPhase},
    resource_request::{DesiredLifecycle, RunPhase},
};

/// Arguments naming one request.
#[derive(clap::Args, Debug, Clone)]
pub struct TargetArgs {
    /// The ResourceRequest's name.
    pub request: String,
    /// Namespace of the request; default: the kubeconfig context's namespace, else `default`.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// Arguments of `approve` and `reject`.
#[derive(clap::Args, Debug, Clone)]
pub struct DecideArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// A comment kept on the Approval, e.g. 预算已核.
    #[arg(long)]
    pub comment: Option<String>,
    /// The approval stage decided on; default: the stage the request waits in (`status.stage`).
    #[arg(long)]
    pub stage: Option<String>,
}

/// Arguments of `force-exit`.
#[derive(clap::Args, Debug, Clone)]
pub struct ForceExitArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Why the request is let go without its destroy, e.g. "provider decommissioned".
    #[arg(long)]
    pub reason: String,
}

/// The plugin verbs.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum PluginCommand {
    /// Approve a request's current plan and cost, as you see them now.
    Approve(DecideArgs),
    /// Reject a request's current plan.
    Reject(DecideArgs),
    /// Retire a request: its resources are destroyed, billing closes, quota is released.
    Retire(TargetArgs),
    /// End an exit stuck on a failing destroy (platform admins): billing closes and quota is
    /// released without the destroy; who and why are recorded.
    ForceExit(ForceExitArgs),
    /// Show where a request stands: phase, stage, approvals, plan, cost, history.
    Status(TargetArgs),
    /// Migration workloads (迁移上云): move one through its manual gates.
    #[command(subcommand)]
    Migration(MigrationCommand),
}

/// `migration …` verbs.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum MigrationCommand {
    /// Let a MigrationWorkload go on to PHASE (CutOver, Verified, Decommissioned) or roll it
    /// back (RolledBack). The operator moves it once each phase's conditions hold; CutOver
    /// waits for the cutover window.
    Advance(AdvanceArgs),
}

/// Arguments of `migration advance`.
#[derive(clap::Args, Debug, Clone)]
pub struct AdvanceArgs {
    /// The MigrationWorkload's name.
    pub workload: String,
    /// The phase to go on to: CutOver, Verified, Decommissioned or RolledBack.
    #[arg(long = "to", value_parser = parse_gate)]
    pub to: MigrationGate,
    /// Namespace of the workload; default: the kubeconfig context's namespace, else `default`.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

fn parse_gate(value: &str) -> Result<MigrationGate, String> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).map_err(|_| {
        format!("{value} is not a phase you can advance to: CutOver, Verified, Decommissioned or RolledBack")
    })
}

/// Whether `gate` moves `mw` on from where it is; the message says why not.
pub fn advance_refusal(mw: &MigrationWorkload, gate: MigrationGate) -> Option<String> {
    let phase = mw.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
    let name = mw.name_any();
    match phase {
        MigrationPhase::Decommissioned | MigrationPhase::RolledBack | MigrationPhase::Rejected => {
            Some(format!("{name} is {phase:?}, which is final"))
        }
        _ if gate == MigrationGate::RolledBack => None,
        _ if gate.phase() <= phase => Some(format!(
            "{name} is already {phase:?}: advance to a later phase, or to RolledBack"
        )),
        _ => None,
    }
}

/// `kubectl yunzhang …`: the plugin verbs alone, under kubectl's name.
#[derive(clap::Parser, Debug)]
#[command(
    name = "kubectl yunzhang",
    bin_name = "kubectl yunzhang",
    version,
    about = "yunzhang (云长) kubectl plugin"
)]
pub struct PluginCli {
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Whether this process was started as the kubectl plugin (`kubectl-yunzhang`).
pub fn invoked_as_plugin(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_stem()
        .is_some_and(|s| s == "kubectl-yunzhang")
}

/// Why a decision can't be made on the request as it stands.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// What each phase waits for, in words an approver or requester acts on.
pub fn phase_explained(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "the operator has not checked quota and planned it yet",
        Phase::QuotaExceeded => {
            "it waits for quota to free up (or a smaller spec); nothing to approve yet"
        }
        Phase::AwaitingApproval => "it waits for approvals",
        Phase::Rejected => "it was rejected; the requester may change the spec to ask again",
        Phase::Provisioning => "it is approved and being provisioned",
        Phase::Active => "it is online; a spec change would ask for approval again",
        Phase::Changing => "a spec change is being checked, approved and applied",
        Phase::Failed => "provisioning failed and is retried; see its message",
        Phase::Exiting => "its resources are being destroyed",
        Phase::Exited => "its resources are destroyed and billing is closed",
    }
}

/// The Approval to create for a decision on `rr`, binding exactly what is shown now: uid,
/// generation, plan hash, stage. Refused when there is nothing to decide on.
pub fn approval_for(
    rr: &ResourceRequest,
    decision: Decision,
    stage: Option<&str>,
    comment: Option<&str>,
) -> Result<ApprovalSpec, Refusal> {
    let name = rr.name_any();
    let status = rr.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_default();
    if !matches!(phase, Phase::AwaitingApproval | Phase::Changing) {
        return Err(Refusal(format!(
            "{name} is {phase}, not AwaitingApproval: {}",
            phase_explained(phase)
        )));
    }
    let generation = rr.metadata.generation.unwrap_or_default();
    let Some(plan) = status.plan.as_ref().filter(|p| !p.hash.is_empty()) else {
        return Err(Refusal(format!(
            "{name} has no plan yet (status.plan.hash is empty): wait until the operator has \
             planned generation {generation}, then look at it with `kubectl yunzhang status {name}`"
        )));
    };
    if status.observed_generation != Some(generation) {
        return Err(Refusal(format!(
            "{name} was changed (generation {generation}) after its plan was made (for generation {}): \
             wait for the new plan and look at it again",
            status
                .observed_generation
                .map_or_else(|| "none".to_owned(), |g| g.to_string())
        )));
    }
    let stage = match (stage, &status.stage) {
        (Some(s), _) => s.to_owned(),
        (None, Some(s)) => s.name.clone(),
        (None, None) => {
            return Err(Refusal(format!(
                "{name} names no approval stage (status.stage): pass --stage NAME"
            )));
        }
    };
    let uid = rr
        .metadata
        .uid
        .clone()
        .ok_or_else(|| Refusal(format!("{name} has no uid (not read from the API server?)")))?;
    Ok(ApprovalSpec {
        request: RequestBinding {
            name,
            uid,
            generation,
            plan_hash: plan.hash.clone(),
        },
        stage,
        decision,
        comment: comment.map(str::to_owned),
    })
}

fn estimate_text(rr: &ResourceRequest) -> Option<String> {
    let e = rr.status.as_ref()?.estimate.as_ref()?;
    let mut text = format!("¥{}/month", e.monthly.0);
    if let Some(delta) = e.monthly_delta.as_deref() {
        match delta.strip_prefix('-') {
            Some(d) => write!(text, " (-¥{d} vs running)"),
            None => write!(text, " (+¥{} vs running)", delta.trim_start_matches('+')),
        }
        .ok();
    }
    Some(text)
}

fn stage_text(rr: &ResourceRequest, stage: &str) -> String {
    match rr.status.as_ref().and_then(|s| s.stage.as_ref()) {
        Some(s) if s.name == stage => format!("{stage} ({} of {})", s.index, s.of),
        _ => stage.to_owned(),
    }
}

/// What `approve` / `reject` prints after creating `created` (the Approval's name).
pub fn decided_text(rr: &ResourceRequest, spec: &ApprovalSpec, created: &str) -> String {
    let verb = match spec.decision {
        Decision::Approved => "Approved",
        Decision::Rejected => "Rejected",
    };
    let ns = rr.namespace().unwrap_or_default();
    let mut out = format!("{verb} {ns}/{}, as shown:\n", spec.request.name);
    let _ = writeln!(out, "  generation: {}", spec.request.generation);
    let _ = writeln!(out, "  plan:       {}", spec.request.plan_hash);
    if let Some(p) = rr.status.as_ref().and_then(|s| s.plan.as_ref()) {
        let _ = writeln!(
            out,
            "              {} to add, {} to change, {} to destroy",
            p.add, p.change, p.destroy
        );
    }
    let _ = writeln!(out, "  stage:      {}", stage_text(rr, &spec.stage));
    if let Some(e) = estimate_text(rr) {
        let _ = writeln!(out, "  estimate:   {e}");
    }
    if let Some(c) = &spec.comment {
        let _ = writeln!(out, "  comment:    {c}");
    }
    let _ = writeln!(
        out,
        "Approval {created} created. It counts only while the request keeps this generation and plan."
    );
    out
}

/// Why `force-exit` can't end `rr`'s exit, if it can't: only an exit whose destroy failed is
/// stuck; anything else goes on by itself (or must be retired first).
pub fn force_exit_refusal(rr: &ResourceRequest, reason: &str) -> Option<String> {
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let status = rr.status.clone().unwrap_or_default();
    if reason.trim().is_empty() {
        return Some("--reason must say why the request is let go without its destroy".into());
    }
    let destroy_failed = status
        .destroy
        .as_ref()
        .is_some_and(|d| d.state == RunPhase::Failed);
    match status.phase {
        Some(Phase::Exiting) if destroy_failed => None,
        Some(Phase::Exiting) => Some(format!(
            "{ns}/{name} is Exiting and its destroy has not failed: it ends by itself; force-exit only ends a destroy that keeps failing"
        )),
        phase => Some(format!(
            "{ns}/{name} is {}, not Exiting with a failed destroy: retire or delete it first (force-exit only ends a destroy that keeps failing)",
            phase.map_or_else(|| "new".to_owned(), |p| p.to_string())
        )),
    }
}

/// What `force-exit` prints.
pub fn force_exit_text(rr: &ResourceRequest, by: &str, already: bool) -> String {
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let head = if already {
        format!("{ns}/{name} was already forced out by {by}.")
    } else {
        format!("{ns}/{name}: force-exit recorded as {by}.")
    };
    format!(
        "{head}\nNext: the operator closes billing and releases its quota without the destroy \
         (phase Exited, Events ForcedExit on the request and its Department). Its resources may \
         still exist at the provider: clean them up there.\n"
    )
}

/// What `retire` prints.
pub fn retire_text(rr: &ResourceRequest, already: bool) -> String {
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let head = if already {
        format!("{ns}/{name} is already retiring (spec.lifecycle: Retired).")
    } else {
        format!("{ns}/{name}: spec.lifecycle set to Retired.")
    };
    format!(
        "{head}\nNext: the operator destroys its resources (phase Exiting), closes billing and \
         releases its quota (phase Exited). Follow it with `kubectl yunzhang status {name} -n {ns}`.\n"
    )
}

fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y-%m-%d %H:%M:%S%:z")
        .to_string()
}

/// When an Event happened, whichever API wrote it.
fn event_time(e: &Event) -> Option<DateTime<Utc>> {
    let ts = e
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref())
        .map(|t| t.0)
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
    DateTime::from_timestamp(ts.as_second(), ts.subsec_nanosecond().unsigned_abs())
}

/// One `Label:      value` line of `status`; an empty label continues the previous one.
fn field(out: &mut String, label: &str, value: &str) {
    let label = if label.is_empty() {
        String::new()
    } else {
        format!("{label}:")
    };
    let _ = writeln!(out, "{label:<12}{value}");
}

/// What `status` prints. `events` is `Err(why)` when they could not be read.
pub fn status_text(rr: &ResourceRequest, events: Result<&[Event], &str>) -> String {
    let ns = rr.namespace().unwrap_or_default();
    let name = rr.name_any();
    let status = rr.status.clone().unwrap_or_default();
    let generation = rr.metadata.generation.unwrap_or_default();
    let out = &mut String::new();
    field(
        out,
        "Request",
        &format!("{ns}/{name} (generation {generation})"),
    );
    let phase = status.phase.unwrap_or_default();
    field(
        out,
        "Phase",
        &format!("{phase}: {}", phase_explained(phase)),
    );
    if status.observed_generation != Some(generation) {
        let seen = status
            .observed_generation
            .map_or_else(|| "none".to_owned(), |g| g.to_string());
        field(
            out,
            "Observed",
            &format!("status describes generation {seen}; the operator has not caught up"),
        );
    }
    if let Some(m) = &status.message {
        field(out, "Message", m);
    }
    if rr.spec.lifecycle == DesiredLifecycle::Retired {
        field(out, "Lifecycle", "Retired (exit requested)");
    }
    if let Some(s) = &status.stage {
        field(
            out,
            "Stage",
            &format!("{} ({} of {})", s.name, s.index, s.of),
        );
    }
    if status.approvals.is_empty() {
        field(out, "Approvals", "none that count");
    }
    for (i, a) in status.approvals.iter().enumerate() {
        let label = if i == 0 { "Approvals" } else { "" };
        field(
            out,
            label,
            &format!("{} by {} ({})", a.stage, a.approver, a.approval),
        );
    }
    match &status.plan {
        Some(p) => {
            let mut text = format!(
                "{} to add, {} to change, {} to destroy; {}",
                p.add, p.change, p.destroy, p.hash
            );
            if let Some(cm) = &p.config_map {
                let _ = write!(text, " (ConfigMap {cm})");
            }
            field(out, "Plan", &text);
        }
        None => field(out, "Plan", "not planned yet"),
    }
    if let Some(e) = estimate_text(rr) {
        field(out, "Estimate", &e);
    }
    if let Some(f) = &status.filing_number {
        field(out, "Filing", f);
    }
    if let Some(r) = &status.requester {
        field(out, "Requester", r);
    }
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "Conditions:");
        for c in &status.conditions {
            let message = if c.message.is_empty() {
                String::new()
            } else {
                format!(": {}", c.message)
            };
            let _ = writeln!(
                out,
                "  {:<12} {:<6} {}{message}",
                c.type_, c.status, c.reason
            );
        }
    }
    let _ = writeln!(out, "History:");
    match events {
        Err(why) => {
            let _ = writeln!(out, "  ({why})");
        }
        Ok([]) => {
            let _ = writeln!(out, "  (no events)");
        }
        Ok(events) => {
            let mut events: Vec<&Event> = events.iter().collect();
            // Oldest first; the sort is stable, so events of the same second keep their order.
            events.sort_by_key(|e| event_time(e));
            for e in events {
                let when = event_time(e).map(local_time).unwrap_or_default();
                let count = e
                    .series
                    .as_ref()
                    .and_then(|s| s.count)
                    .or(e.count)
                    .filter(|c| *c > 1)
                    .map(|c| format!(" (x{c})"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {when}  {:<7} {}: {}{count}",
                    e.type_.as_deref().unwrap_or("Normal"),
                    e.reason.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("").trim_end(),
                );
            }
        }
    }
    std::mem::take(out)
}

/// Run one plugin verb, printing its result to stdout, or `error: …` (what went wrong and what
/// to do) to stderr. Returns the process exit code.
pub fn main(command: PluginCommand) -> i32 {
    super::exit_code(async move {
        print!("{}", run(command).await?);
        Ok(())
    })
}

/// A client as the kubeconfig's user, and the namespace to use.
async fn connect(namespace: Option<&str>) -> anyhow::Result<(Client, String)> {
    let config = Config::infer()
        .await
        .context("no Kubernetes configuration: set KUBECONFIG or the current context")?;
    let namespace = namespace
        .map(str::to_owned)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).context("building the Kubernetes client")?;
    Ok((client, namespace))
}

/// Who the API server says we are, for error messages.
async fn whoami(client: &Client) -> Option<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .ok()?;
    review.status?.user_info?.username
}

/// Turn an API error into what the user should do about it.
async fn explain(
    client: &Client,
    e: kube::Error,
    doing: &str,
    namespace: &str,
    role: &str,
) -> anyhow::Error {
    match &e {
        // Admission (four eyes, a stale generation, …) refuses with 403 too: its message says
        // what is wrong, so show it rather than blame the role.
        kube::Error::Api(s) if s.code == 403 && s.message.contains("denied") => anyhow::anyhow!(
            "the API server refused to {doing} in namespace {namespace}: {}",
            s.message
        ),
        kube::Error::Api(s) if s.code == 403 => {
            let who = whoami(client)
                .await
                .map_or_else(|| "you".to_owned(), |u| format!("you (user {u})"));
            anyhow::anyhow!(
                "{who} may not {doing} in namespace {namespace}: ask for the {role} role"
            )
        }
        kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "the API server did not accept your credentials ({}): log in again or check KUBECONFIG",
            s.message
        ),
        kube::Error::Api(s) => anyhow::anyhow!(
            "the API server refused to {doing} in namespace {namespace}: {}",
            s.message
        ),
        _ => anyhow::Error::new(e).context(format!(
            "could not {doing} in namespace {namespace} (is the API server reachable? check KUBECONFIG)"
        )),
    }
}

async fn read_request(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<ResourceRequest> {
    let api: Api<ResourceRequest> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await {
        Ok(Some(rr)) => Ok(rr),
        Ok(None) => anyhow::bail!(
            "no ResourceRequest {name} in namespace {namespace} (list them: kubectl get resourcerequests -n {namespace})"
        ),
        Err(e) => Err(explain(
            client,
            e,
            "read resourcerequests",
            namespace,
            "department member or approver",
        )
        .await),
    }
}

async fn run(command: PluginCommand) -> anyhow::Result<String> {
    match command {
        PluginCommand::Approve(args) => decide(args, Decision::Approved).await,
        PluginCommand::Reject(args) => decide(args, Decision::Rejected).await,
        PluginCommand::Retire(args) => retire(args).await,
        PluginCommand::ForceExit(args) => force_exit(args).await,
        PluginCommand::Status(args) => status(args).await,
        PluginCommand::Migration(MigrationCommand::Advance(args)) => advance(args).await,
    }
}

async fn advance(args: AdvanceArgs) -> anyhow::Result<String> {
    let (client, ns) = connect(args.namespace.as_deref()).await?;
    let api = Api::<MigrationWorkload>::namespaced(client.clone(), &ns);
    let mw = match api.get(&args.workload).await {
        Ok(mw) => mw,
        Err(e) => {
            return Err(explain(
                &client,
                e,
                "get migrationworkloads",
                &ns,
                "department member (ClusterRole yunzhang-department-member)",
            )
            .await);
        }
    };
    if let Some(refusal) = advance_refusal(&mw, args.to) {
        anyhow::bail!("{refusal}");
    }
    let patch = serde_json::json!({"spec": {"advanceTo": args.to}});
    match api
        .patch(
            &args.workload,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(mw) => {
            let phase = mw.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
            let window = mw
                .spec
                .cutover
                .as_ref()
                .map(|c| format!(" (cutover window {} – {})", c.not_before, c.not_after))
                .unwrap_or_default();
            Ok(format!(
                "migrationworkload {ns}/{} may now go on to {:?}{window}; it is {phase:?}. Watch it: kubectl get mw {} -n {ns} -w\n",
                mw.name_any(),
                args.to,
                mw.name_any()
            ))
        }
        Err(e) => Err(explain(
            &client,
            e,
            "patch migrationworkloads",
            &ns,
            "department member (ClusterRole yunzhang-department-member)",
        )
        .await),
    }
}

async fn decide(args: DecideArgs, decision: Decision) -> anyhow::Result<String> {
    let (client, ns) = connect(args.target.namespace.as_deref()).await?;
    let rr = read_request(&client, &ns, &args.target.request).await?;
    let spec = approval_for(
        &rr,
        decision,
        args.stage.as_deref(),
        args.comment.as_deref(),
    )?;
    let approval = Approval {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", spec.request.name)),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        spec: spec.clone(),
        status: None,
    };
    let created = Api::<Approval>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &approval)
        .await;
    match created {
        Ok(a) => Ok(decided_text(&rr, &spec, &a.name_any())),
        Err(e) => Err(explain(
            &client,
            e,
            "create approvals",
            &ns,
            "approver (ClusterRole yunzhang-approver)",
        )
        .await),
    }
}

async fn retire(args: TargetArgs) -> anyhow::Result<String> {
    let (client, ns) = connect(args.namespace.as_deref()).await?;
    let rr = read_request(&client, &ns, &args.request).await?;
    if rr.spec.lifecycle == DesiredLifecycle::Retired {
        return Ok(retire_text(&rr, true));
    }
    // Retiring changes the spec: you are recorded among its editors (policy yunzhang-editors),
    // here as well as by the admission webhook, so it works while no operator answers.
    let mut patch = serde_json::json!({"spec": {"lifecycle": "Retired"}});
    if let Some(me) = whoami(&client).await
        && let Some(editors) = annotations::with_editor(rr.metadata.annotations.as_ref(), &me)
    {
        patch["metadata"] = serde_json::json!({"annotations": {annotations::EDITORS: editors}});
    }
    match Api::<ResourceRequest>::namespaced(client.clone(), &ns)
        .patch(
            &args.request,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(rr) => Ok(retire_text(&rr, false)),
        Err(e) => Err(explain(
            &client,
            e,
            "patch resourcerequests",
            &ns,
            "department member (ClusterRole yunzhang-department-member)",
        )
        .await),
    }
}

async fn force_exit(args: ForceExitArgs) -> anyhow::Result<String> {
    let (client, ns) = connect(args.target.namespace.as_deref()).await?;
    let name = &args.target.request;
    let rr = read_request(&client, &ns, name).await?;
    if let Some(by) = rr.annotations().get(annotations::FORCE_EXIT_BY) {
        return Ok(force_exit_text(&rr, by, true));
    }
    if let Some(refusal) = force_exit_refusal(&rr, &args.reason) {
        anyhow::bail!(refusal);
    }
    let me = whoami(&client)
        .await
        .context("could not tell who you are (SelfSubjectReview): check KUBECONFIG")?;
    let patch = serde_json::json!({"metadata": {"annotations": {
        annotations::FORCE_EXIT_BY: me,
        annotations::FORCE_EXIT_REASON: args.reason,
    }}});
    match Api::<ResourceRequest>::namespaced(client.clone(), &ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(rr) => Ok(force_exit_text(&rr, &me, false)),
        Err(e) => Err(explain(
            &client,
            e,
            "force-exit resourcerequests",
            &ns,
            "platform admin (ClusterRole yunzhang-platform-admin)",
        )
        .await),
    }
}

async fn status(args: TargetArgs) -> anyhow::Result<String> {
    let (client, ns) = connect(args.namespace.as_deref()).await?;
    let rr = read_request(&client, &ns, &args.request).await?;
    let uid = rr.metadata.uid.clone().unwrap_or_default();
    let events = Api::<Event>::namespaced(client.clone(), &ns)
        .list(&ListParams::default().fields(&format!("involvedObject.uid={uid}")))
        .await;
    Ok(match events {
        Ok(list) => status_text(&rr, Ok(&list.items)),
        Err(kube::Error::Api(s)) if s.code == 403 => status_text(
            &rr,
            Err(&format!("you may not list events in namespace {ns}")),
        ),
        Err(e) => status_text(&rr, Err(&format!("events could not be read: {e}"))),
    })
}

#[cfg(test)]
mod tests;
