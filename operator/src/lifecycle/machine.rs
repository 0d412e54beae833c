//! The lifecycle of a ResourceRequest as one total, pure function: [`decide`] takes what the
//! controller observed ([`Input`]) and returns the phase, a message for a person, and the
//! [`Action`]s to perform.
//!
//! ```text
//! Pending ─▶ QuotaExceeded ─▶ (quota frees / spec shrinks) ─▶ Pending
//!    │ quota reserved
//!    ▼
//! AwaitingApproval ─▶ Rejected ─(spec edited: resubmitted)─▶ Pending
//!    │ all stages approved / auto-approved: Apply, AssignFilingNumber
//!    ▼
//! Provisioning ─▶ Failed (Apply again, reason kept) ─▶ Provisioning
//!    │ spec edited before the apply started ─▶ AwaitingApproval (the approvals no longer count)
//!    ▼ ConvertReservationToUse, StartBilling
//! Active ──spec edited──▶ Changing (ReserveQuota, Plan, approvals, Apply) ─▶ Active
//!    │                        └─ rejected ─▶ Active as it was (ReleaseChangeReservation)
//!    │ lifecycle: Retired, or deleted
//!    ▼
//! Exiting (Destroy) ─▶ Exited (ReleaseQuota, CloseBilling) ─(deleted and settled)─▶ RemoveFinalizer
//! ```
//!
//! A request that never got as far as an apply (Pending, QuotaExceeded, AwaitingApproval,
//! Rejected) exits straight away: ReleaseQuota, nothing to destroy.
//!
//! # Rules the decisions keep
//!
//! - `Apply` only for the plan of the current generation, with an approval evaluated for exactly
//!   that generation and plan hash that says approved (staged or automatic).
//! - Nothing is applied or destroyed while an apply runs; a destroy, once started, is never
//!   cancelled (Exiting can't be undone).
//! - `RemoveFinalizer` only when Exited, deleting, settled and billing closed.
//! - `ReleaseQuota` (everything) only when Exited, or Rejected before anything was applied.
//! - A rejection is final for the generation it rejected: the request stays Rejected (or, for a
//!   change, Active as it was) until the spec is edited. `observedGeneration` is how the machine
//!   remembers which generation its phase was decided for.
//! - Impossible combinations (e.g. a lost status write) give the safe decision: run results
//!   outrank a phase that doesn't know about them, and resources that may exist are destroyed,
//!   never forgotten.
//!
//! # What the controller does with a decision
//!
//! Perform the actions in order, then write `phase`, `message`, `observedGeneration =
//! spec_generation` and the conditions. Every action is idempotent: a decision is recomputed
//! and its actions repeated until its status write lands. Backoff for retries (`Plan` after a
//! failed plan, `Apply` in Failed, `Destroy` after a failed destroy) is the controller's, by the
//! number of failures it recorded.

use std::fmt;

use super::policy::{ApprovalOutcome, CurrentBinding, Progress};
use crate::api::{Phase, resource_request::DesiredLifecycle};

/// What the request holds of its department's quota, *for the current spec*.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QuotaState {
    /// Nothing held for the current spec (not yet admitted, or released).
    None,
    /// The current spec is reserved; nothing is in use.
    Reserved,
    /// The running resources' use is held; nothing is reserved beyond it (steady state; or
    /// a change that hasn't been reserved yet).
    Used,
    /// The running resources' use is held, and the change to the current spec is reserved too.
    ChangeReserved,
    /// The current spec (or the change to it) doesn't fit: the ledger's message.
    Exceeded(String),
}

impl QuotaState {
    fn held(&self) -> bool {
        matches!(self, Self::Reserved | Self::Used | Self::ChangeReserved)
    }
}

/// The request's latest plan (`status.plan`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanState {
    NotPlanned,
    /// A plan of `generation`'s spec with this hash.
    Planned {
        generation: i64,
        hash: String,
    },
    /// Planning `generation`'s spec failed.
    Failed {
        generation: i64,
        message: String,
    },
}

/// The state of an OpenTofu run as the executor records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    NotStarted,
    Running,
    Succeeded,
    Failed(String),
}

/// The policy's outcome, and what it was evaluated against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalState {
    /// The generation and plan hash of the [`CurrentBinding`]
    /// the approvals were judged against.
    pub generation: i64,
    pub plan_hash: String,
    pub outcome: ApprovalOutcome,
}

impl ApprovalState {
    /// The outcome of [`evaluate`](super::policy::evaluate) for `binding`.
    pub fn new(binding: &CurrentBinding, outcome: ApprovalOutcome) -> Self {
        ApprovalState {
            generation: binding.generation,
            plan_hash: binding.plan_hash.clone(),
            outcome,
        }
    }
}

/// What the controller observed, for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    /// `status.phase`; `None` for a new request.
    pub phase: Option<Phase>,
    /// `status.observedGeneration`: the generation `phase` was decided for.
    pub observed_generation: Option<i64>,
    /// `metadata.generation`.
    pub spec_generation: i64,
    /// `spec.lifecycle`.
    pub desired: DesiredLifecycle,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    pub quota: QuotaState,
    pub plan: PlanState,
    /// The policy's outcome for the current plan; `None` when not evaluated (no plan yet).
    pub approval: Option<ApprovalState>,
    /// The apply run of the last plan handed to [`Action::Apply`] (the approved plan).
    /// Runs are recorded by the executor, keyed by plan hash; this must come from that record,
    /// not from a cache that can miss a started run.
    pub provisioning: RunState,
    /// The destroy run.
    pub destroy: RunState,
    /// The generation of the last plan handed to `Apply` (recorded from [`Action::Apply`]).
    pub approved_generation: Option<i64>,
    /// The generation the running resources match (recorded from [`Action::RecordApplied`]).
    pub applied_generation: Option<i64>,
    /// `status.filingNumber` is set.
    pub filed: bool,
    /// Billing has open intervals for this request.
    pub billing_open: bool,
    /// Every period this request was billed in is settled (true when it was never billed).
    pub settled: bool,
    /// A platform admin let the request go without its destroy (recorded at admission).
    pub force_exit: Option<ForceExit>,
}

/// Who forced a request out of a stuck exit, and why (`kubectl yunzhang force-exit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForceExit {
    pub by: String,
    pub reason: String,
}

/// Something for the controller to do. All idempotent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the quota ledger to hold what the current spec asks (for running resources: the
    /// change over what they use).
    ReserveQuota,
    /// The reservation becomes use: the resources now match the reserved spec.
    ConvertReservationToUse,
    /// Give back the reservation made for a change, keeping the running resources' use.
    ReleaseChangeReservation,
    /// Give back everything held.
    ReleaseQuota,
    /// Render and plan the current spec; record the summary, estimate and hash in `status.plan`.
    Plan,
    /// Allocate a filing number (备案号) and record it in `status.filingNumber`. Comes after
    /// the first `Apply` has written `Provisioning` (the number is recorded with the run's
    /// outcome), and on any pass of an approved request that still lacks one; it never changes
    /// the approved plan.
    AssignFilingNumber,
    /// Apply exactly the plan with this hash, made for this generation; record
    /// `approved_generation = generation`.
    Apply { plan_hash: String, generation: i64 },
    /// Record that the running resources now match `generation` (`applied_generation`).
    RecordApplied { generation: i64 },
    /// Write the plan of the running resources back to `status.plan` (after a rejected change).
    RestoreAppliedPlan,
    /// Destroy everything of the request's workspace.
    Destroy,
    /// Open billing intervals for the applied spec.
    StartBilling,
    /// Bring billing in line with the newly applied spec: close the intervals of what changed,
    /// open intervals for what now runs.
    UpdateBilling,
    /// Close every open billing interval.
    CloseBilling,
    /// Let the request be deleted.
    RemoveFinalizer,
    /// Emit a Kubernetes Event (and an audit record) for a phase transition; its note is the
    /// decision's message.
    Notify(Transition),
}

/// A phase transition, for the Event and the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Option<Phase>,
    pub to: Phase,
    pub reason: Reason,
}

/// Why the request is in its phase: the Event and condition reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    ReservingQuota,
    QuotaExceeded,
    Planning,
    PlanFailed,
    AwaitingApproval,
    Approved,
    Rejected,
    Applying,
    Provisioned,
    ProvisioningFailed,
    Online,
    ChangeRequested,
    ChangeQuotaExceeded,
    ChangeApproved,
    ChangeApplied,
    ChangeRejected,
    WaitingForApply,
    Destroying,
    DestroyFailed,
    ForcedExit,
    Exited,
    AwaitingSettlement,
    Deleted,
    Inconsistent,
}

impl Reason {
    /// CamelCase, as Kubernetes reasons are.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReservingQuota => "ReservingQuota",
            Self::QuotaExceeded => "QuotaExceeded",
            Self::Planning => "Planning",
            Self::PlanFailed => "PlanFailed",
            Self::AwaitingApproval => "AwaitingApproval",
            Self::Approved => "Approved",
            Self::Rejected => "Rejected",
            Self::Applying => "Applying",
            Self::Provisioned => "Provisioned",
            Self::ProvisioningFailed => "ProvisioningFailed",
            Self::Online => "Online",
            Self::ChangeRequested => "ChangeRequested",
            Self::ChangeQuotaExceeded => "ChangeQuotaExceeded",
            Self::ChangeApproved => "ChangeApproved",
            Self::ChangeApplied => "ChangeApplied",
            Self::ChangeRejected => "ChangeRejected",
            Self::WaitingForApply => "WaitingForApply",
            Self::Destroying => "Destroying",
            Self::DestroyFailed => "DestroyFailed",
            Self::ForcedExit => "ForcedExit",
            Self::Exited => "Exited",
            Self::AwaitingSettlement => "AwaitingSettlement",
            Self::Deleted => "Deleted",
            Self::Inconsistent => "Inconsistent",
        }
    }

    /// Whether the Event is a Warning (someone may need to act) rather than Normal.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Self::QuotaExceeded
                | Self::PlanFailed
                | Self::Rejected
                | Self::ProvisioningFailed
                | Self::ChangeQuotaExceeded
                | Self::ChangeRejected
                | Self::DestroyFailed
                | Self::ForcedExit
                | Self::Inconsistent
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub phase: Phase,
    pub reason: Reason,
    /// For `status.message`: where the request stands and what it waits for.
    pub message: String,
    /// In the order to perform them.
    pub actions: Vec<Action>,
}

/// Decide the request's phase and the actions to take. Total: every input gets a decision.
pub fn decide(input: &Input) -> Decision {
    let mut decision = route(input);
    // Every approved request has a filing number: given right after its first apply starts,
    // and on any later pass that finds it missing (the write after the apply was lost).
    let approved = input.approved_generation.is_some()
        || decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::Apply { .. }));
    if approved && !input.filed {
        decision.actions.push(Action::AssignFilingNumber);
    }
    if input.phase != Some(decision.phase) {
        decision.actions.push(Action::Notify(Transition {
            from: input.phase,
            to: decision.phase,
            reason: decision.reason,
        }));
    }
    decision
}

fn decision(phase: Phase, reason: Reason, message: String, actions: Vec<Action>) -> Decision {
    Decision {
        phase,
        reason,
        message,
        actions,
    }
}

fn route(i: &Input) -> Decision {
    // Irreversible states first: an exited request stays exited, a started destroy finishes.
    if i.phase == Some(Phase::Exited) {
        return exited(i);
    }
    if i.phase == Some(Phase::Exiting) || i.destroy != RunState::NotStarted {
        return exiting(i);
    }
    let exit_wanted = i.deleting || i.desired == DesiredLifecycle::Retired;
    if i.provisioning == RunState::Running {
        return apply_running(i, exit_wanted);
    }
    if exit_wanted {
        return begin_exit(i);
    }
    match i.phase {
        None | Some(Phase::Pending | Phase::QuotaExceeded | Phase::AwaitingApproval)
            if never_applied(i) =>
        {
            initial(i, None)
        }
        Some(Phase::Rejected) if never_applied(i) => rejected(i),
        // A phase from before any apply, yet something ran: a status write was lost. The run
        // decides, as it would in Provisioning.
        None
        | Some(
            Phase::Pending
            | Phase::QuotaExceeded
            | Phase::AwaitingApproval
            | Phase::Rejected
            | Phase::Provisioning,
        ) => provisioning(i),
        Some(Phase::Failed) => failed(i),
        Some(Phase::Active) => active(i),
        Some(Phase::Changing) => changing(i),
        Some(Phase::Exiting) => exiting(i),
        Some(Phase::Exited) => exited(i),
    }
}

/// No apply ever ran for this request: nothing to destroy.
fn never_applied(i: &Input) -> bool {
    i.applied_generation.is_none() && i.provisioning == RunState::NotStarted
}

/// Before any apply, the request exits without destroying anything.
fn nothing_provisioned(i: &Input) -> bool {
    matches!(
        i.phase,
        None | Some(
            Phase::Pending | Phase::QuotaExceeded | Phase::AwaitingApproval | Phase::Rejected
        )
    ) && never_applied(i)
}

// ---- exit -------------------------------------------------------------------------------

fn begin_exit(i: &Input) -> Decision {
    let why = if i.deleting { "deleted" } else { "retired" };
    if nothing_provisioned(i) {
        let mut actions = Vec::new();
        if i.quota.held() {
            actions.push(Action::ReleaseQuota);
        }
        if i.billing_open {
            actions.push(Action::CloseBilling);
        }
        return exited_with(
            i,
            actions,
            format!("{why} before anything was provisioned: quota released"),
        );
    }
    decision(
        Phase::Exiting,
        Reason::Destroying,
        format!("{why}: destroying the resources; billing runs until they are destroyed"),
        vec![Action::Destroy],
    )
}

fn exiting(i: &Input) -> Decision {
    if i.provisioning == RunState::Running {
        return decision(
            Phase::Exiting,
            Reason::WaitingForApply,
            "exiting: the destroy waits for the running apply to finish".to_owned(),
            Vec::new(),
        );
    }
    if let (Some(forced), RunState::Failed(failure)) = (&i.force_exit, &i.destroy) {
        return forced_exit(i, forced, failure);
    }
    match &i.destroy {
        RunState::NotStarted => decision(
            Phase::Exiting,
            Reason::Destroying,
            "exiting: destroying the resources (an exit can't be undone)".to_owned(),
            vec![Action::Destroy],
        ),
        RunState::Running => decision(
            Phase::Exiting,
            Reason::Destroying,
            "exiting: destroying the resources".to_owned(),
            Vec::new(),
        ),
        RunState::Failed(reason) => decision(
            Phase::Exiting,
            Reason::DestroyFailed,
            format!(
                "destroy failed: {reason}; retrying with backoff (the resources are billed until destroyed)"
            ),
            vec![Action::Destroy],
        ),
        RunState::Succeeded => {
            let mut actions = Vec::new();
            if i.billing_open {
                actions.push(Action::CloseBilling);
            }
            if i.quota.held() {
                actions.push(Action::ReleaseQuota);
            }
            exited_with(
                i,
                actions,
                "resources destroyed, billing closed, quota released".to_owned(),
            )
        }
    }
}

/// A destroy that failed, and a platform admin's force-exit: billing closes and quota goes back
/// without the destroy; what may still run at the provider is theirs to clean up.
fn forced_exit(i: &Input, forced: &ForceExit, failure: &str) -> Decision {
    let mut actions = Vec::new();
    if i.billing_open {
        actions.push(Action::CloseBilling);
    }
    if i.quota.held() {
        actions.push(Action::ReleaseQuota);
    }
    let message = format!(
        "forced out by {} ({}) after the destroy failed ({failure}): billing closed, quota released; its resources may still exist at the provider",
        forced.by, forced.reason
    );
    let mut d = exited_with(i, actions, message);
    if d.reason == Reason::Exited {
        d.reason = Reason::ForcedExit;
    }
    d
}

fn exited(i: &Input) -> Decision {
    if let (Some(forced), RunState::Failed(failure)) = (&i.force_exit, &i.destroy) {
        return forced_exit(i, forced, failure);
    }
    let mut actions = Vec::new();
    if i.billing_open {
        actions.push(Action::CloseBilling);
    }
    if i.quota.held() {
        actions.push(Action::ReleaseQuota);
    }
    let message = if !i.deleting && i.desired == DesiredLifecycle::Active {
        "exited: an exited request can't be brought back; create a new ResourceRequest".to_owned()
    } else {
        "exited: resources destroyed, billing closed, quota released".to_owned()
    };
    exited_with(i, actions, message)
}

/// Exited, and on deletion the finalizer goes once the billed periods are settled.
fn exited_with(i: &Input, mut actions: Vec<Action>, message: String) -> Decision {
    if !i.deleting {
        return decision(Phase::Exited, Reason::Exited, message, actions);
    }
    // Billing closing in this very decision counts as closed: the status write that records
    // it lands before the finalizer goes.
    let billing_closed = !i.billing_open || actions.contains(&Action::CloseBilling);
    if i.settled && billing_closed {
        actions.push(Action::RemoveFinalizer);
        decision(
            Phase::Exited,
            Reason::Deleted,
            format!("{message}; deleting"),
            actions,
        )
    } else {
        decision(
            Phase::Exited,
            Reason::AwaitingSettlement,
            format!(
                "{message}; deletion waits until the periods this request was billed in are settled"
            ),
            actions,
        )
    }
}

// ---- applying ---------------------------------------------------------------------------

fn apply_running(i: &Input, exit_wanted: bool) -> Decision {
    let phase = if i.applied_generation.is_some()
        || matches!(i.phase, Some(Phase::Active | Phase::Changing))
    {
        Phase::Changing
    } else {
        Phase::Provisioning
    };
    let applying = match i.approved_generation {
        Some(g) => format!("applying the approved plan of generation {g}"),
        None => "an apply is running".to_owned(),
    };
    if exit_wanted {
        decision(
            phase,
            Reason::WaitingForApply,
            format!("{applying}; the exit starts when it finishes"),
            Vec::new(),
        )
    } else {
        decision(phase, Reason::Applying, applying, Vec::new())
    }
}

/// Phase Provisioning (or an earlier phase that missed a run): the run decides.
fn provisioning(i: &Input) -> Decision {
    match &i.provisioning {
        RunState::Succeeded => online(i),
        RunState::Failed(reason) => apply_failed(i, reason),
        RunState::Running => apply_running(i, false),
        RunState::NotStarted if i.applied_generation.is_some() => active(i),
        RunState::NotStarted => match i.approved_generation {
            Some(g) if g != i.spec_generation => initial(
                i,
                Some(format!(
                    "the spec changed after approval (approved generation {g}, now {}): the approvals no longer count",
                    i.spec_generation
                )),
            ),
            _ => initial(i, None),
        },
    }
}

/// The approved plan was applied: online, at `approved_generation`.
fn online(i: &Input) -> Decision {
    let Some(generation) = i.approved_generation else {
        // Something was applied, but we don't know which plan: treat it as a change, so that the
        // current spec is planned, approved and applied.
        return change_route(
            i,
            Some("an apply succeeded but its generation is not recorded".to_owned()),
            Reason::Inconsistent,
        );
    };
    let first = i.applied_generation.is_none();
    let mut actions = Vec::new();
    if i.applied_generation != Some(generation) {
        actions.push(Action::RecordApplied { generation });
    }
    if matches!(i.quota, QuotaState::Reserved | QuotaState::ChangeReserved) {
        actions.push(Action::ConvertReservationToUse);
    }
    if !i.billing_open {
        actions.push(Action::StartBilling);
    } else if i.applied_generation != Some(generation) {
        actions.push(Action::UpdateBilling);
    }
    if generation == i.spec_generation {
        let (reason, message) = if first {
            (
                Reason::Provisioned,
                format!("online: generation {generation} provisioned"),
            )
        } else {
            (
                Reason::ChangeApplied,
                format!("online: the change to generation {generation} is applied"),
            )
        };
        decision(Phase::Active, reason, message, actions)
    } else {
        decision(
            Phase::Changing,
            Reason::ChangeRequested,
            format!(
                "online at generation {generation}; the spec changed since (generation {}): the change follows",
                i.spec_generation
            ),
            actions,
        )
    }
}

/// The apply of the approved plan failed.
fn apply_failed(i: &Input, reason: &str) -> Decision {
    if i.approved_generation == Some(i.spec_generation) {
        approval_path(i, Route::Retry(reason), None)
    } else {
        // The spec moved on while it ran: the next apply is of the new spec, as a change.
        let applied = i
            .approved_generation
            .map(|g| format!("the apply of generation {g} failed: {reason}"))
            .unwrap_or_else(|| format!("the apply failed: {reason}"));
        change_route(i, Some(applied), Reason::ProvisioningFailed)
    }
}

fn failed(i: &Input) -> Decision {
    let reason = match &i.provisioning {
        RunState::Succeeded => return online(i),
        RunState::Running => return apply_running(i, false),
        RunState::Failed(reason) => reason.as_str(),
        RunState::NotStarted => "the last apply failed",
    };
    if i.approved_generation == Some(i.spec_generation) {
        approval_path(i, Route::Retry(reason), None)
    } else if i.observed_generation == Some(i.spec_generation) {
        // A change of a failed request was rejected: stays as it is until the spec is edited.
        decision(
            Phase::Failed,
            Reason::ChangeRejected,
            format!(
                "{}; provisioning failed before: {reason}. Edit the request, or retire it to destroy what was created",
                rejection_note(i)
            ),
            Vec::new(),
        )
    } else {
        change_route(i, None, Reason::ChangeRequested)
    }
}

// ---- before the first apply -------------------------------------------------------------

/// Quota, plan and approval before anything was applied. `note` explains a step back.
fn initial(i: &Input, note: Option<String>) -> Decision {
    let prefix = |m: String| match &note {
        Some(n) => format!("{n}; {m}"),
        None => m,
    };
    match &i.quota {
        QuotaState::Exceeded(why) => decision(
            Phase::QuotaExceeded,
            Reason::QuotaExceeded,
            prefix(format!(
                "{why} (waits until quota frees up or the request asks for less)"
            )),
            Vec::new(),
        ),
        QuotaState::None => decision(
            Phase::Pending,
            Reason::ReservingQuota,
            prefix("waiting for quota to be reserved".to_owned()),
            vec![Action::ReserveQuota],
        ),
        QuotaState::Reserved | QuotaState::Used | QuotaState::ChangeReserved => {
            approval_path(i, Route::Initial, note)
        }
    }
}

fn rejected(i: &Input) -> Decision {
    if i.observed_generation == Some(i.spec_generation) {
        let actions = if i.quota.held() {
            vec![Action::ReleaseQuota]
        } else {
            Vec::new()
        };
        decision(
            Phase::Rejected,
            Reason::Rejected,
            format!(
                "{}: edit the spec to submit it again, or delete the request",
                rejection_note(i)
            ),
            actions,
        )
    } else {
        initial(
            i,
            Some(format!(
                "the spec changed after the rejection: generation {} is submitted again",
                i.spec_generation
            )),
        )
    }
}

// ---- running resources ------------------------------------------------------------------

fn active(i: &Input) -> Decision {
    if i.applied_generation == Some(i.spec_generation) {
        return steady(i);
    }
    let declined = i.phase == Some(Phase::Active)
        && i.observed_generation == Some(i.spec_generation)
        && i.applied_generation.is_some()
        && i.approved_generation != Some(i.spec_generation);
    if declined {
        let applied = i.applied_generation.unwrap_or_default();
        let actions = if matches!(i.quota, QuotaState::ChangeReserved) {
            vec![Action::ReleaseChangeReservation]
        } else {
            Vec::new()
        };
        return decision(
            Phase::Active,
            Reason::ChangeRejected,
            format!(
                "{}; the resources keep running as applied at generation {applied}. Edit the request to propose another change",
                rejection_note(i)
            ),
            actions,
        );
    }
    changing(i)
}

/// Online and matching the spec: keep quota and billing in line.
fn steady(i: &Input) -> Decision {
    let mut actions = Vec::new();
    let mut message = format!("online: generation {} applied", i.spec_generation);
    match &i.quota {
        QuotaState::Used => {}
        QuotaState::Reserved => actions.push(Action::ConvertReservationToUse),
        QuotaState::ChangeReserved => actions.push(Action::ReleaseChangeReservation),
        QuotaState::None => {
            actions.push(Action::ReserveQuota);
            message.push_str("; no quota is held for the running resources: reserving it");
        }
        QuotaState::Exceeded(why) => {
            message.push_str(&format!("; the running resources exceed quota: {why}"));
        }
    }
    if !i.billing_open {
        actions.push(Action::StartBilling);
    }
    decision(Phase::Active, Reason::Online, message, actions)
}

fn changing(i: &Input) -> Decision {
    if i.approved_generation == Some(i.spec_generation) {
        match &i.provisioning {
            RunState::Succeeded => return online(i),
            RunState::Failed(reason) => return apply_failed(i, reason),
            RunState::Running => return apply_running(i, false),
            RunState::NotStarted => {}
        }
    } else if i.applied_generation == Some(i.spec_generation) {
        // Generations only grow, so this can't happen; the resources match the spec anyway.
        return steady(i);
    }
    change_route(i, None, Reason::ChangeRequested)
}

/// Quota, plan and approval of a change of (possibly partly) provisioned resources.
fn change_route(i: &Input, note: Option<String>, reason: Reason) -> Decision {
    let prefix = |m: String| match &note {
        Some(n) => format!("{n}; {m}"),
        None => m,
    };
    match &i.quota {
        QuotaState::Exceeded(why) => decision(
            Phase::Changing,
            Reason::ChangeQuotaExceeded,
            prefix(format!(
                "the change to generation {} waits for quota: {why}; the running resources are unchanged",
                i.spec_generation
            )),
            Vec::new(),
        ),
        QuotaState::None | QuotaState::Used => decision(
            Phase::Changing,
            reason,
            prefix(format!(
                "reserving quota for the change to generation {}",
                i.spec_generation
            )),
            vec![Action::ReserveQuota],
        ),
        QuotaState::Reserved | QuotaState::ChangeReserved => approval_path(i, Route::Change, note),
    }
}

// ---- plan and approval ------------------------------------------------------------------

/// Where a plan-and-approve step happens, and what approval and rejection lead to.
#[derive(Clone, Copy)]
enum Route<'a> {
    /// Before the first apply: approval → Provisioning, rejection → Rejected.
    Initial,
    /// A change: approval → apply the change, rejection → back as it was.
    Change,
    /// Retrying a failed apply of the current generation.
    Retry(&'a str),
}

impl Route<'_> {
    fn working_phase(self) -> Phase {
        match self {
            Route::Initial => Phase::AwaitingApproval,
            Route::Change => Phase::Changing,
            Route::Retry(_) => Phase::Failed,
        }
    }
}

fn approval_path(i: &Input, route: Route<'_>, note: Option<String>) -> Decision {
    let generation = i.spec_generation;
    let working = route.working_phase();
    let prefix = |m: String| {
        let m = match route {
            Route::Retry(reason) => format!("provisioning failed: {reason}; {m}"),
            _ => m,
        };
        match &note {
            Some(n) => format!("{n}; {m}"),
            None => m,
        }
    };
    let hash = match &i.plan {
        PlanState::Planned {
            generation: g,
            hash,
        } if *g == generation => hash,
        PlanState::Failed {
            generation: g,
            message,
        } if *g == generation => {
            return decision(
                working,
                Reason::PlanFailed,
                prefix(format!(
                    "planning generation {generation} failed: {message}; retrying with backoff (check the spec and the CloudProvider)"
                )),
                vec![Action::Plan],
            );
        }
        _ => {
            return decision(
                working,
                Reason::Planning,
                prefix(format!("planning generation {generation}")),
                vec![Action::Plan],
            );
        }
    };
    let outcome = match &i.approval {
        Some(a) if a.generation == generation && a.plan_hash == *hash => &a.outcome,
        Some(a) => {
            return decision(
                working,
                Reason::AwaitingApproval,
                prefix(format!(
                    "approvals were evaluated for generation {} and plan {}, not the current generation {generation} and plan {hash}: evaluating again",
                    a.generation, a.plan_hash
                )),
                Vec::new(),
            );
        }
        None => {
            return decision(
                working,
                Reason::AwaitingApproval,
                prefix(format!(
                    "evaluating approvals for generation {generation} and plan {hash}"
                )),
                Vec::new(),
            );
        }
    };
    match outcome {
        ApprovalOutcome::Staged(Progress::Waiting {
            stage_name,
            index,
            of,
            have,
            need,
        }) => decision(
            working,
            Reason::AwaitingApproval,
            prefix(format!(
                "waiting for approval: stage {index} of {of} ({stage_name}), {have} of {need} approvals for generation {generation}, plan {hash}"
            )),
            Vec::new(),
        ),
        ApprovalOutcome::Staged(Progress::Rejected { stage, by, comment }) => {
            let rejected = rejection_text(generation, stage, by, comment.as_deref());
            match route {
                Route::Initial => decision(
                    Phase::Rejected,
                    Reason::Rejected,
                    prefix(format!(
                        "{rejected}: edit the spec to submit it again, or delete the request"
                    )),
                    if i.quota.held() {
                        vec![Action::ReleaseQuota]
                    } else {
                        Vec::new()
                    },
                ),
                Route::Change => {
                    let mut actions = Vec::new();
                    if matches!(i.quota, QuotaState::ChangeReserved) {
                        actions.push(Action::ReleaseChangeReservation);
                    }
                    match i.applied_generation {
                        Some(applied) => {
                            actions.push(Action::RestoreAppliedPlan);
                            decision(
                                Phase::Active,
                                Reason::ChangeRejected,
                                prefix(format!(
                                    "{rejected}; the resources keep running as applied at generation {applied}"
                                )),
                                actions,
                            )
                        }
                        // Nothing ever applied completely: back to the failure it came from.
                        None => decision(
                            Phase::Failed,
                            Reason::ChangeRejected,
                            prefix(format!(
                                "{rejected}; the earlier apply had failed: edit the request, or retire it to destroy what was created"
                            )),
                            actions,
                        ),
                    }
                }
                Route::Retry(_) => decision(
                    Phase::Failed,
                    Reason::Rejected,
                    prefix(format!(
                        "{rejected}: edit the request, or retire it to destroy what was created"
                    )),
                    Vec::new(),
                ),
            }
        }
        ApprovalOutcome::AutoApproved | ApprovalOutcome::Staged(Progress::Approved) => {
            let how = if matches!(outcome, ApprovalOutcome::AutoApproved) {
                "approved automatically by the policy"
            } else {
                "approved in every stage"
            };
            // The apply first: its status write is what shows the approval took effect. The
            // filing number follows (see `decide`).
            let actions = vec![Action::Apply {
                plan_hash: hash.clone(),
                generation,
            }];
            let (phase, reason, message) = match route {
                Route::Initial => (
                    Phase::Provisioning,
                    Reason::Approved,
                    format!("generation {generation} {how}; applying plan {hash}"),
                ),
                Route::Change => (
                    Phase::Changing,
                    Reason::ChangeApproved,
                    format!("the change to generation {generation} is {how}; applying plan {hash}"),
                ),
                Route::Retry(_) => (
                    Phase::Failed,
                    Reason::ProvisioningFailed,
                    format!("retrying the approved plan {hash} with backoff"),
                ),
            };
            decision(phase, reason, prefix(message), actions)
        }
    }
}

fn rejection_text(generation: i64, stage: &str, by: &str, comment: Option<&str>) -> String {
    match comment {
        Some(c) if !c.is_empty() => {
            format!("generation {generation} was rejected in stage {stage} by {by}: {c}")
        }
        _ => format!("generation {generation} was rejected in stage {stage} by {by}"),
    }
}

/// The rejection of the current generation, as far as the approvals still say.
fn rejection_note(i: &Input) -> String {
    match &i.approval {
        Some(ApprovalState {
            generation,
            outcome: ApprovalOutcome::Staged(Progress::Rejected { stage, by, comment }),
            ..
        }) if *generation == i.spec_generation => {
            rejection_text(*generation, stage, by, comment.as_deref())
        }
        _ => format!("generation {} was rejected", i.spec_generation),
    }
}

#[cfg(test)]
mod tests;
