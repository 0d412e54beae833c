//! The lifecycle of a MigrationWorkload: Planned → Approved → Provisioning → Migrating → CutOver
//! → Verified → Decommissioned, with RolledBack and Rejected. Pure: no I/O, no clock (the time
//! is an input).
//!
//! Approval and provisioning are the target ResourceRequest's: the workload owns one request
//! for `spec.target`, which goes through the request lifecycle (quota, plan, the department's
//! ApprovalPolicy — a `sensitive` workload gives a `sensitive` request, so the policy's stages
//! with `when.classification: [sensitive]` apply and it is never auto-approved — filing,
//! provisioning). The workload follows it: approved once the request is past approval,
//! Migrating once it is Active. From there the department moves it on by hand
//! (`spec.advanceTo`): CutOver (only inside the cutover window), Verified, Decommissioned; or
//! RolledBack, which retires the target request.
//!
//! Hooks (`spec.hooks`) are Jobs the shell runs and watches: the pre-cutover hook when cutover
//! is asked for inside its window (CutOver follows its success), the post-cutover hook on
//! entering CutOver (Verified waits for its success). A failed hook holds the workload where it
//! is, saying why; changing the hook runs it again (its Job is named by a hash of the hook as it
//! will run, so moving the gates doesn't). A hook is a platform engineer's HookTemplate (image,
//! command, ServiceAccount) with the workload's parameter values ([`resolve_hook`]).
//!
//! A workload without `spec.target` (typically `retire`, or `integrate` into a system that is
//! already on the cloud) asks for no resources, so there is nothing to approve or provision:
//! it goes straight to Migrating and waits for its gates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::api::{
    HookTemplateSpec, Phase,
    migration_workload::{Hook, HookPoint, MigrationGate, MigrationPhase},
    resource_request::DesiredLifecycle,
};

/// A configured hook as the shell found it, for the current spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookView {
    /// No Job for the current spec yet.
    NotStarted,
    Running {
        job: String,
    },
    Succeeded,
    Failed {
        job: String,
        why: String,
    },
    /// Not run, and why (its template is missing, its image not allowed, its parameters wrong).
    Refused(String),
}

/// A hook as it will run: its template filled in with the workload's parameter values.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedHook {
    pub template: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub service_account_name: Option<String>,
    pub timeout_seconds: u32,
    /// The container's parameter variables: `YZ_PARAM_<NAME>` and its value.
    pub env: BTreeMap<String, String>,
}

/// The hook `hook` names, filled in from its `template` (`None`: it doesn't exist), or why it
/// can't run.
pub fn resolve_hook(
    hook: &Hook,
    template: Option<&HookTemplateSpec>,
    image_prefixes: &[String],
) -> Result<ResolvedHook, String> {
    let Some(t) = template else {
        return Err(format!(
            "HookTemplate {} does not exist: pick one of kubectl get hooktemplates",
            hook.template
        ));
    };
    if !hook_image_allowed(&t.image, image_prefixes) {
        let allowed = if image_prefixes.is_empty() {
            "none are: the operator's --hook-image-prefixes is empty".to_owned()
        } else {
            image_prefixes.join(", ")
        };
        return Err(format!(
            "HookTemplate {}'s image {} is not from a registry the platform allows for hooks ({allowed}): a platform engineer must change the template",
            hook.template, t.image
        ));
    }
    check_parameters(hook, t)?;
    Ok(ResolvedHook {
        template: hook.template.clone(),
        image: t.image.clone(),
        command: t.command.clone(),
        args: t.args.clone(),
        service_account_name: t.service_account_name.clone(),
        timeout_seconds: t.timeout_seconds,
        env: hook
            .parameters
            .iter()
            .map(|(name, value)| (format!("YZ_PARAM_{name}"), value.clone()))
            .collect(),
    })
}

/// Whether `hook` passes exactly what `template` takes: no parameter it doesn't declare, every
/// one it requires.
pub fn check_parameters(hook: &Hook, template: &HookTemplateSpec) -> Result<(), String> {
    let declared: Vec<&str> = template
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    if let Some(unknown) = hook
        .parameters
        .keys()
        .find(|k| !declared.contains(&k.as_str()))
    {
        return Err(format!(
            "parameter {unknown} is not one of HookTemplate {}'s ({})",
            hook.template,
            if declared.is_empty() {
                "it takes none".to_owned()
            } else {
                declared.join(", ")
            }
        ));
    }
    match template
        .parameters
        .iter()
        .find(|p| p.required && !hook.parameters.contains_key(&p.name))
    {
        Some(missing) => Err(format!(
            "parameter {} is required by HookTemplate {}",
            missing.name, hook.template
        )),
        None => Ok(()),
    }
}

/// The name of the Job of `hook`: at most 63 characters (it labels the pods), ending in a hash
/// of the hook as it will run, so the same hook is run once and a changed one (its parameters
/// or its template) again.
pub fn hook_job_name(workload: &str, point: HookPoint, hook: &ResolvedHook) -> String {
    use sha2::{Digest, Sha256};
    let spec = serde_json::to_vec(hook).unwrap_or_default();
    let hash = hex::encode(&Sha256::digest(&spec)[..4]);
    let suffix = format!("-{}-{hash}", point.label());
    let room = 63usize.saturating_sub(suffix.len());
    let mut base: String = workload.chars().take(room).collect();
    while base.ends_with(['-', '.']) {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// Whether `image` comes from one of the registries (or paths) the platform allows for hooks:
/// the prefix must end where a path segment does, so `registry.example.gov.cn` admits
/// `registry.example.gov.cn/x` but not `registry.example.gov.cn.evil.io/x`.
pub fn hook_image_allowed(image: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        !p.is_empty()
            && image
                .strip_prefix(p.as_str())
                .is_some_and(|rest| p.ends_with('/') || rest.starts_with('/'))
    })
}

/// What the shell observed of the owned ResourceRequest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestView {
    pub name: String,
    /// `status.phase`; `None` before the operator first reconciled it.
    pub phase: Option<Phase>,
    pub lifecycle: DesiredLifecycle,
    /// Whether its items and classification are the workload's `spec.target` and
    /// `spec.classification`.
    pub matches_target: bool,
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub phase: MigrationPhase,
    /// Whether `spec.target` names resources.
    pub has_target: bool,
    /// The owned request, if it exists.
    pub request: Option<RequestView>,
    pub advance_to: Option<MigrationGate>,
    /// `spec.cutover` (notBefore, notAfter), parsed.
    pub cutover: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// `spec.hooks.preCutover`, when configured.
    pub pre_cutover: Option<HookView>,
    /// `spec.hooks.postCutover`, when configured.
    pub post_cutover: Option<HookView>,
    pub now: DateTime<Utc>,
}

/// What the shell does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the target ResourceRequest (owned by the workload, on behalf of its requester).
    CreateRequest,
    /// Bring the target request's items and classification in line with the workload's (a
    /// change: the request re-plans and is re-approved when its policy says so).
    UpdateRequest,
    /// Set the target request's `spec.lifecycle: Retired` (it exits through the request
    /// lifecycle: destroy, quota released, billing closed).
    RetireRequest,
    /// Create the hook's Job for the current spec.
    RunHook(HookPoint),
}

/// The outcome of one step.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub phase: MigrationPhase,
    pub message: String,
    pub actions: Vec<Action>,
    /// Look again at this time (the cutover window opens).
    pub recheck_at: Option<DateTime<Utc>>,
}

impl Decision {
    fn stay(input: &Input, message: impl Into<String>) -> Self {
        Decision {
            phase: input.phase,
            message: message.into(),
            actions: Vec::new(),
            recheck_at: None,
        }
    }
    fn to(phase: MigrationPhase, message: impl Into<String>) -> Self {
        Decision {
            phase,
            message: message.into(),
            actions: Vec::new(),
            recheck_at: None,
        }
    }
}

/// How often a running hook is looked at.
const HOOK_POLL: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// `None` when the hook at `point` lets the workload on (not configured, or succeeded); else
/// the decision to stay, running or waiting for it.
fn hook_gate(input: &Input, point: HookPoint) -> Option<Decision> {
    let hook = match point {
        HookPoint::PreCutover => input.pre_cutover.as_ref(),
        HookPoint::PostCutover => input.post_cutover.as_ref(),
    }?;
    let label = point.label();
    Some(match hook {
        HookView::Succeeded => return None,
        HookView::NotStarted => Decision {
            actions: vec![Action::RunHook(point)],
            recheck_at: Some(input.now + HOOK_POLL),
            ..Decision::stay(input, format!("starting the {label} hook Job"))
        },
        HookView::Running { job } => Decision {
            recheck_at: Some(input.now + HOOK_POLL),
            ..Decision::stay(input, format!("waiting for the {label} hook Job {job}"))
        },
        HookView::Failed { job, why } => Decision::stay(
            input,
            format!(
                "the {label} hook Job {job} failed: {why}; fix the hook in spec.hooks (a changed hook runs again) or roll back"
            ),
        ),
        HookView::Refused(why) => {
            Decision::stay(input, format!("the {label} hook can't run: {why}"))
        }
    })
}

/// Whether the request is past approval (approved, then provisioning or further).
fn past_approval(phase: Option<Phase>) -> bool {
    matches!(
        phase,
        Some(Phase::Provisioning | Phase::Active | Phase::Changing | Phase::Failed)
    )
}

/// One step: the phase the workload is in after what was observed, and what to do. The shell
/// repeats it (see [`settle`]) until the phase stops moving.
pub fn decide(input: &Input) -> Decision {
    use MigrationPhase as P;
    let rr = input.request.as_ref();
    let retire_request = || {
        rr.filter(|r| r.lifecycle == DesiredLifecycle::Active)
            .map(|_| vec![Action::RetireRequest])
            .unwrap_or_default()
    };
    match input.phase {
        P::Decommissioned => {
            return Decision::stay(
                input,
                "migration complete: the legacy system is decommissioned",
            );
        }
        P::Rejected => {
            return Decision::stay(
                input,
                format!(
                    "the target ResourceRequest {} was rejected; register the system again to retry",
                    rr.map_or("", |r| r.name.as_str())
                ),
            );
        }
        P::RolledBack => {
            return Decision {
                actions: retire_request(),
                ..Decision::stay(
                    input,
                    "rolled back: the legacy system stays in service and the target resources are retired",
                )
            };
        }
        _ => {}
    }
    if input.advance_to == Some(MigrationGate::RolledBack) {
        return Decision {
            actions: retire_request(),
            ..Decision::to(
                P::RolledBack,
                "rolled back: the legacy system stays in service and the target resources are retired",
            )
        };
    }
    if input.has_target && input.phase < P::Migrating {
        let Some(r) = rr else {
            return Decision {
                actions: vec![Action::CreateRequest],
                ..Decision::stay(input, "creating the target ResourceRequest")
            };
        };
        if r.phase == Some(Phase::Rejected) {
            return Decision::to(
                P::Rejected,
                format!("the target ResourceRequest {} was rejected", r.name),
            );
        }
        return match input.phase {
            P::Planned if past_approval(r.phase) => Decision::to(
                P::Approved,
                format!("the target ResourceRequest {} was approved", r.name),
            ),
            P::Planned => Decision::stay(
                input,
                format!(
                    "waiting for the target ResourceRequest {} to be approved (it is {}); approvers: kubectl yunzhang approve {} --stage STAGE",
                    r.name,
                    r.phase
                        .map_or("not yet reconciled".to_owned(), |p| p.to_string()),
                    r.name
                ),
            ),
            P::Approved if past_approval(r.phase) => Decision::to(
                P::Provisioning,
                format!("the target ResourceRequest {} is being provisioned", r.name),
            ),
            P::Provisioning if r.phase == Some(Phase::Active) => Decision::to(
                P::Migrating,
                format!(
                    "the target resources ({}) are Active: migrate the data, then advance to CutOver",
                    r.name
                ),
            ),
            _ => Decision::stay(
                input,
                format!(
                    "the target ResourceRequest {} is {}",
                    r.name,
                    r.phase
                        .map_or("not yet reconciled".to_owned(), |p| p.to_string())
                ),
            ),
        };
    }
    if input.phase < P::Migrating {
        return Decision::to(
            P::Migrating,
            "no target resources to approve or provision: migrate, then advance to CutOver",
        );
    }
    let wanted = input.advance_to.map(MigrationGate::phase);
    match input.phase {
        P::Migrating if wanted >= Some(P::CutOver) => match input.cutover {
            Some((not_before, _)) if input.now < not_before => Decision {
                recheck_at: Some(not_before),
                ..Decision::stay(
                    input,
                    format!(
                        "cutover requested: waiting for the cutover window, which opens at {}",
                        not_before.to_rfc3339()
                    ),
                )
            },
            Some((_, not_after)) if input.now > not_after => Decision::stay(
                input,
                format!(
                    "cutover requested, but the cutover window closed at {}: set a new spec.cutover window",
                    not_after.to_rfc3339()
                ),
            ),
            _ => hook_gate(input, HookPoint::PreCutover).unwrap_or_else(|| {
                Decision::to(
                    P::CutOver,
                    "cut over to the cloud: verify the system, then advance to Verified",
                )
            }),
        },
        P::Migrating => Decision::stay(
            input,
            "migrating: advance to CutOver when the data is moved (kubectl yunzhang migration advance NAME --to CutOver)",
        ),
        P::CutOver => match hook_gate(input, HookPoint::PostCutover) {
            Some(wait) => wait,
            None if wanted >= Some(P::Verified) => Decision::to(
                P::Verified,
                "verified on the cloud: advance to Decommissioned once the legacy system is switched off",
            ),
            None => Decision::stay(
                input,
                "cut over: advance to Verified once the system is checked on the cloud",
            ),
        },
        P::Verified if wanted == Some(P::Decommissioned) => Decision::to(
            P::Decommissioned,
            "migration complete: the legacy system is decommissioned",
        ),
        _ => Decision::stay(
            input,
            "verified on the cloud: advance to Decommissioned once the legacy system is switched off",
        ),
    }
}

/// The outcome of [`settle`]: the phases entered in order (for `status.history`), and the last
/// step's decision with every action taken on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    pub entered: Vec<MigrationPhase>,
    pub decision: Decision,
}

/// Step until the phase stops moving (a workload whose request is already Active goes from
/// Planned to Migrating in one reconcile, entering each phase on the way). A changed
/// `spec.target` is carried to the request while it is wanted (not rolled back or rejected).
pub fn settle(input: &Input) -> Settled {
    let mut settled = settle_phase(input);
    let d = &mut settled.decision;
    let outdated = input.request.as_ref().is_some_and(|r| {
        !r.matches_target && r.lifecycle == DesiredLifecycle::Active && input.has_target
    });
    if outdated
        && !matches!(
            d.phase,
            MigrationPhase::RolledBack | MigrationPhase::Rejected
        )
        && !d.actions.contains(&Action::RetireRequest)
    {
        d.actions.push(Action::UpdateRequest);
    }
    settled
}

fn settle_phase(input: &Input) -> Settled {
    let mut input = input.clone();
    let mut entered = Vec::new();
    let mut actions = Vec::new();
    // Each step moves forward or stops; there are fewer phases than this bound.
    for _ in 0..16 {
        let mut d = decide(&input);
        for a in d.actions.drain(..) {
            if !actions.contains(&a) {
                actions.push(a);
            }
        }
        if d.phase == input.phase {
            d.actions = actions;
            return Settled {
                entered,
                decision: d,
            };
        }
        entered.push(d.phase);
        input.phase = d.phase;
    }
    let mut d = decide(&input);
    d.actions = actions;
    Settled {
        entered,
        decision: d,
    }
}

#[cfg(test)]
mod tests;
