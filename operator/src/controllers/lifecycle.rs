//! The ResourceRequest lifecycle shell. Each reconcile reads what it needs (quota from the
//! ledger, plan and runs from status, approvals and policy from the stores), asks the pure
//! [`crate::lifecycle::machine::decide`] what to do, performs the actions and writes the
//! whole status in one server-side apply, guarded by the `resourceVersion` it read (a stale
//! read fails instead of overwriting newer facts, such as a billing interval).
//!
//! Ordering rules that keep quota and runs honest:
//! - a reservation is counted in the ledger before it is written; quota given back is written
//!   first and only then returned to the ledger ([`super::tenancy::Tenancy::settle`]);
//! - an apply or destroy is recorded as `Running` before it starts, so that a restart in the
//!   middle knows it may have happened (the executor never applies a plan twice);
//! - the finalizer goes last, after the status that says Exited has landed.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::{
    api::core::v1::{ConfigMap, Secret},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{controller::Action, events::EventType, reflector::ObjectRef},
};
use serde_json::json;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::{
    Error, FIELD_MANAGER, SharedContext, apply_finalizer, has_finalizer, measured, publish_event,
    status::dynamic_api, tenancy::Holding,
};
use crate::{
    api::{
        Approval, CloudProvider, Department, Phase, ResourceRequest, ResourceRequestStatus,
        annotations,
        resource_request::{
            ApprovalRecord, Estimate, MeteredInterval, MeteredItem, PlanFailure, PlanSummary,
            PlannedResource, RunPhase, RunRecord, StageStatus,
        },
    },
    billing::{self, MonthlyEstimate, estimate_monthly, money::format_signed},
    conditions::{self, condition},
    iac::{
        LocalExecutor, ProviderConfig, RenderedWorkspace, RequestRef, StateBackend, WorkspaceInput,
        executor::{Credentials, Executor, RunContext, executor_for_provider},
        render_workspace, workspace_hash,
    },
    lifecycle::{
        filing::{FilingNumber, next_filing_number},
        machine::{self, Action as Step, ApprovalState, ForceExit, Input, PlanState, RunState},
        policy::{
            ApprovalFacts, ApproverFacts, CurrentBinding, Evaluation, Progress, RequestFacts,
            evaluate,
        },
    },
    notify::{Notification, NotifyEvent},
    tenancy::quota::Dimension,
};

/// Holds a request until it has exited (resources destroyed, quota released, billing closed).
pub const REQUEST_FINALIZER: &str = "yunzhang.io/lifecycle";
/// ConfigMap (in the operator's namespace) with the last filing number per year.
pub const FILING_CONFIG_MAP: &str = "yunzhang-filing-numbers";

/// What the lifecycle needs besides the tenancy stores.
pub struct Lifecycle {
    /// The operator's namespace: the filing-number ConfigMap lives there.
    pub namespace: String,
    /// One filing allocation at a time in this process (the ConfigMap's resourceVersion guards
    /// against other processes), and the filing ConfigMap as this process last wrote it: the
    /// next allocation writes over it without reading it first, unless the write conflicts.
    filing: Mutex<Option<ConfigMap>>,
    /// The `local` executor (its worker pool is shared by every provider that uses it).
    local: LocalExecutor,
    /// Drift checks every this often instead of each provider's `driftCheckMinutes`.
    pub drift_interval: Option<Duration>,
    /// When each request (by uid) was last compared with the world. In memory: a check after
    /// a restart comes early, and a check that finds nothing new writes nothing.
    drift_checked: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

impl Lifecycle {
    pub fn new(namespace: String, local: LocalExecutor, drift_interval: Option<Duration>) -> Self {
        Lifecycle {
            namespace,
            filing: Mutex::new(None),
            local,
            drift_interval,
            drift_checked: std::sync::Mutex::default(),
        }
    }

    /// A request that is gone for good.
    pub fn forget(&self, uid: &str) {
        self.drift_checked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    fn executor(
        &self,
        client: &kube::Client,
        provider: &CloudProvider,
    ) -> Result<Arc<dyn Executor>, String> {
        executor_for_provider(&provider.spec.executor, &self.local, client)
            .map_err(|e| format!("CloudProvider {}: spec.executor: {e}", provider.name_any()))
    }
}

pub async fn reconcile_request(
    rr: Arc<ResourceRequest>,
    ctx: SharedContext,
) -> Result<Action, Error> {
    measured::<ResourceRequest>(&ctx.clone(), reconcile(rr, ctx)).await
}

/// Everything observed for one request.
struct World {
    input: Input,
    department: Arc<Department>,
    holding: Option<Holding>,
    estimate: Result<MonthlyEstimate, String>,
    evaluation: Option<Evaluation>,
    /// Why approvals can't be evaluated (no policy).
    policy_problem: Option<String>,
    provider: Result<Arc<CloudProvider>, String>,
}

async fn reconcile(rr: Arc<ResourceRequest>, ctx: SharedContext) -> Result<Action, Error> {
    let ns = rr.namespace().unwrap_or_default();
    let uid = rr.uid().unwrap_or_default();
    let api: Api<ResourceRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = rr.meta().deletion_timestamp.is_some();
    if !has_finalizer(rr.as_ref(), REQUEST_FINALIZER) {
        if deleting {
            ctx.tenancy.forget(&uid).await;
            ctx.lifecycle.forget(&uid);
        } else {
            apply_finalizer(&api, rr.as_ref(), Some(REQUEST_FINALIZER)).await?;
        }
        return Ok(Action::await_change());
    }
    let old = rr.status.clone().unwrap_or_default();
    let Some(world) = observe(&ctx, &rr).await? else {
        let mut st = old.clone();
        st.phase = Some(Phase::Pending);
        st.observed_generation = rr.meta().generation;
        st.message = Some(format!(
            "namespace {ns} belongs to no Department: a platform engineer must list it in a Department's spec.namespaces"
        ));
        if deleting {
            // Nothing was ever held or run for it.
            write_status(&ctx, &rr, &old, &st).await?;
            apply_finalizer(&api, rr.as_ref(), None).await?;
            return Ok(Action::await_change());
        }
        write_status(&ctx, &rr, &old, &st).await?;
        // A Department that claims the namespace re-triggers it (`wiring`).
        return Ok(Action::await_change());
    };
    let decision = machine::decide(&world.input);
    let now = crate::clock::now();
    let (actions, retry_in) = gate_retries(&decision.actions, &old, now, jitter_of(&uid));

    let mut st = old.clone();
    st.quota = world.holding.as_ref().map(|h| Box::new(h.to_api()));
    let mut settle: Option<Option<Holding>> = None;
    let mut remove_finalizer = false;
    let mut transitions = Vec::new();
    let mut unfiled = None;
    let mut rv = rr.resource_version();
    for step in actions {
        match step {
            Step::ReserveQuota => {
                ctx.tenancy.reserve(&ctx, &rr).await?;
                let (_, holding) = ctx.tenancy.quota_of(&ctx, &rr).await?;
                st.quota = holding.as_ref().map(|h| Box::new(h.to_api()));
            }
            Step::ConvertReservationToUse => {
                let converted = world.holding.as_ref().map(Holding::converted);
                st.quota = converted.as_ref().map(|h| Box::new(h.to_api()));
                settle = Some(converted);
            }
            Step::ReleaseChangeReservation => {
                let kept = world.holding.as_ref().map(Holding::without_change);
                st.quota = kept.as_ref().map(|h| Box::new(h.to_api()));
                settle = Some(kept);
            }
            Step::ReleaseQuota => {
                st.quota = None;
                settle = Some(None);
            }
            Step::Plan => plan(&ctx, &rr, &world, &mut st, now).await,
            // After the apply's run: a failure here must not lose what ran. It is written
            // first, and the next pass (an approved request without a number) files again.
            Step::AssignFilingNumber => match allocate_filing_number(&ctx, &uid, now).await {
                Ok(number) => st.filing_number = Some(number.to_string()),
                Err(e) => unfiled = Some(e),
            },
            Step::Apply {
                plan_hash,
                generation,
            } => {
                let attempts = match &old.apply {
                    Some(r) if r.plan_hash.as_deref() == Some(plan_hash.as_str()) => r.attempts + 1,
                    _ => 1,
                };
                st.approved_generation = Some(generation);
                st.apply = Some(Box::new(RunRecord {
                    generation,
                    plan_hash: Some(plan_hash.clone()),
                    state: RunPhase::Running,
                    message: None,
                    attempts,
                    started_at: rfc3339(now),
                    finished_at: None,
                    metered: metered_items(&world.estimate),
                }));
                st.phase = Some(decision.phase);
                st.message = Some(decision.message.clone());
                rv = write_status_at(&ctx, &rr, &st, rv).await?;
                // Exactly the workspace that was planned and approved (kept in the plan
                // ConfigMap): the filing number given since then reaches the tags with the
                // next change, never by applying something nobody approved.
                let result = match prepare_run(&ctx, &rr, &world, &st).await {
                    Ok(run) => match planned_workspace(&ctx, &rr).await {
                        Ok(planned) => {
                            let workspace = planned
                                .filter(|(_, g)| *g == generation)
                                .map_or(run.workspace, |(ws, _)| ws);
                            run.executor
                                .apply(run.context, workspace, plan_hash)
                                .await
                                .map_err(|e| e.0)
                        }
                        Err(altered) => Err(altered),
                    },
                    Err(e) => Err(e),
                };
                let finished = Some(rfc3339(crate::clock::now()));
                if let Some(run) = st.apply.as_mut() {
                    run.finished_at = finished;
                    match result {
                        Ok(outcome) => {
                            run.state = RunPhase::Succeeded;
                            st.outputs = outcome.outputs;
                            if let Err(e) =
                                save_secret_outputs(&ctx, &rr, &outcome.secret_outputs).await
                            {
                                warn!(error = %e, "could not save the secret outputs");
                            }
                        }
                        Err(message) => {
                            run.state = RunPhase::Failed;
                            run.message = Some(message);
                        }
                    }
                }
            }
            Step::RecordApplied { generation } => st.applied_generation = Some(generation),
            Step::RestoreAppliedPlan => {
                if let (Some(run), Some(generation)) = (&old.apply, old.applied_generation) {
                    st.plan = Some(Box::new(PlanSummary {
                        hash: run.plan_hash.clone().unwrap_or_default(),
                        generation,
                        ..PlanSummary::default()
                    }));
                }
            }
            Step::Destroy => {
                let attempts = old.destroy.as_ref().map_or(0, |r| r.attempts) + 1;
                let generation = old.applied_generation.unwrap_or_default();
                st.destroy = Some(Box::new(RunRecord {
                    generation,
                    plan_hash: None,
                    state: RunPhase::Running,
                    message: None,
                    attempts,
                    started_at: rfc3339(now),
                    finished_at: None,
                    metered: Vec::new(),
                }));
                st.phase = Some(decision.phase);
                st.message = Some(decision.message.clone());
                rv = write_status_at(&ctx, &rr, &st, rv).await?;
                let result = match prepare_run(&ctx, &rr, &world, &st).await {
                    Ok(run) => run
                        .executor
                        .destroy(run.context, run.workspace)
                        .await
                        .map_err(|e| e.0),
                    Err(e) => Err(e),
                };
                if let Some(run) = st.destroy.as_mut() {
                    run.finished_at = Some(rfc3339(crate::clock::now()));
                    match result {
                        Ok(()) => {
                            run.state = RunPhase::Succeeded;
                            st.outputs.clear();
                        }
                        Err(message) => {
                            run.state = RunPhase::Failed;
                            run.message = Some(message);
                        }
                    }
                }
            }
            Step::StartBilling | Step::UpdateBilling => {
                let running = old
                    .apply
                    .as_ref()
                    .map(|r| r.metered.clone())
                    .unwrap_or_default();
                meter(&mut st.billing, &running, &world, now);
            }
            Step::CloseBilling => meter(&mut st.billing, &[], &world, now),
            Step::RemoveFinalizer => remove_finalizer = true,
            Step::Notify(t) => transitions.push(t),
        }
    }

    let drift_due = drift_due(&ctx, &rr, &world, &old, decision.phase);
    if drift_due.is_some() {
        check_drift(&ctx, &rr, &world, &mut st).await;
    }

    st.phase = Some(decision.phase);
    st.message = Some(status_message(&decision, &world));
    st.observed_generation = rr.meta().generation;
    st.requester = annotations::effective_requester(rr.annotations()).map(|(user, _)| user);
    st.estimate = estimate_status(&world);
    describe_approvals(&mut st, world.evaluation.as_ref());
    st.conditions = lifecycle_conditions(&st, &decision, &world, rr.meta().generation);

    write_status_at(&ctx, &rr, &st, rv).await?;
    if let Some(holding) = settle {
        ctx.tenancy.settle(&ctx, &uid, holding).await?;
    }
    let written = ResourceRequest {
        status: Some(st.clone()),
        ..rr.as_ref().clone()
    };
    // A new stage to approve (also within AwaitingApproval, and for a change): its approvers
    // are told, once per stage and generation.
    let stage_key = |s: &ResourceRequestStatus| {
        s.stage
            .as_ref()
            .map(|st| (st.name.clone(), s.plan.as_ref().map(|p| p.hash.clone())))
    };
    let announced = transitions
        .iter()
        .any(|t| NotifyEvent::on_transition(t.from, t.to) == Some(NotifyEvent::AwaitingApproval));
    if st.stage.is_some() && stage_key(&st) != stage_key(&old) && !announced {
        ctx.notifier.send(Notification::for_request(
            NotifyEvent::AwaitingApproval,
            &written,
            now,
        ));
        publish_event(
            &ctx,
            rr.as_ref(),
            EventType::Normal,
            "AwaitingApproval",
            "Stage",
            st.message.clone().unwrap_or_default(),
        )
        .await;
    }
    for t in transitions {
        if let Some(event) = NotifyEvent::on_transition(t.from, t.to) {
            ctx.notifier
                .send(Notification::for_request(event, &written, now));
        }
        let type_ = if t.reason.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        };
        info!(
            request = %format!("{ns}/{}", rr.name_any()),
            from = ?t.from, to = %t.to, reason = %t.reason, "transition"
        );
        publish_event(
            &ctx,
            rr.as_ref(),
            type_,
            t.reason.as_str(),
            "Transition",
            st.message.clone().unwrap_or_default(),
        )
        .await;
        if t.to == Phase::Exited && world.input.force_exit.is_some() {
            // The Department outlives the request: the record of who let it go stays there.
            publish_event(
                &ctx,
                world.department.as_ref(),
                EventType::Warning,
                "ForcedExit",
                "ForceExit",
                format!(
                    "request {ns}/{} (uid {uid}) {}",
                    rr.name_any(),
                    st.message.clone().unwrap_or_default()
                ),
            )
            .await;
        }
    }
    if let Some(e) = unfiled {
        return Err(e);
    }
    if remove_finalizer {
        apply_finalizer(&api, rr.as_ref(), None).await?;
        ctx.tenancy.forget(&uid).await;
        ctx.lifecycle.forget(&uid);
        return Ok(Action::await_change());
    }
    if decision.phase == Phase::Active
        && retry_in.is_none()
        && let Some(interval) = drift_due.or_else(|| drift_interval(&ctx, &world))
    {
        return Ok(Action::requeue(interval));
    }
    Ok(Action::requeue(retry_in.unwrap_or(Duration::from_secs(
        match decision.phase {
            Phase::Active | Phase::Exited | Phase::Rejected => 300,
            _ => 60,
        },
    ))))
}

/// Reconcile an Approval: record who made it (from the identity annotation written at
/// admission) in `status.approver`, for `kubectl get approvals`. Whether it counts is the
/// request's business: its status lists the approvals that count and why others don't.
pub async fn reconcile_approval(a: Arc<Approval>, ctx: SharedContext) -> Result<Action, Error> {
    measured::<Approval>(&ctx.clone(), async move {
        let approver = a.annotations().get(annotations::APPROVER).cloned();
        let generation = a.meta().generation;
        let current = a.status.clone().unwrap_or_default();
        let ready = conditions::merge(
            current.conditions.clone(),
            condition(
                crate::api::CONDITION_READY,
                approver.is_some(),
                if approver.is_some() {
                    "Recorded"
                } else {
                    "NoIdentity"
                },
                match &approver {
                    Some(_) => "the approver was recorded at admission",
                    None => "no approver was recorded at admission: this approval can't count",
                },
                generation,
                Timestamp::now(),
            ),
        );
        let status =
            json!({"observedGeneration": generation, "approver": approver, "conditions": ready});
        if super::status::status_differs(a.status.as_ref(), &status) {
            super::status::apply_status(&ctx, a.as_ref(), status).await?;
        }
        Ok(Action::requeue(Duration::from_secs(3600)))
    })
    .await
}

/// Read what the decision needs. `None` when the namespace belongs to no Department.
async fn observe(ctx: &SharedContext, rr: &ResourceRequest) -> Result<Option<World>, Error> {
    let ns = rr.namespace().unwrap_or_default();
    let t = &ctx.tenancy;
    let Some(department) = t.department_of(&ns) else {
        return Ok(None);
    };
    let dept_name = department.name_any();
    let status = rr.status.clone().unwrap_or_default();
    let generation = rr.meta().generation.unwrap_or_default();
    let (quota, holding) = t.quota_of(ctx, rr).await?;

    let now = crate::clock::now();
    let estimate = t.prices_for(&department).and_then(|(provider, prices)| {
        estimate_monthly(&rr.spec.items, &prices, &provider, &dept_name, now)
            .map_err(|e| e.to_string())
    });
    let provider = department
        .spec
        .provider
        .as_deref()
        .ok_or_else(|| format!("Department {dept_name} names no spec.provider"))
        .and_then(|p| {
            t.providers.get(&ObjectRef::new(p)).ok_or_else(|| {
                format!("CloudProvider {p} (Department {dept_name}'s spec.provider) does not exist")
            })
        });

    let plan = match (&status.plan_failure, &status.plan) {
        (Some(f), _) if f.generation == generation => PlanState::Failed {
            generation,
            message: f.message.clone(),
        },
        (_, Some(p)) => PlanState::Planned {
            generation: p.generation,
            hash: p.hash.clone(),
        },
        _ => PlanState::NotPlanned,
    };

    let policy_name = department.approval_policy_name().to_owned();
    let policy = t.policies.get(&ObjectRef::new(&policy_name));
    let mut policy_problem = None;
    let evaluation = match (&plan, &policy) {
        (
            PlanState::Planned {
                generation: g,
                hash,
            },
            Some(policy),
        ) if *g == generation => {
            let facts = request_facts(rr, &dept_name, &estimate);
            let binding = CurrentBinding {
                uid: rr.uid().unwrap_or_default(),
                generation,
                plan_hash: hash.clone(),
            };
            let approvals = approvals_of(ctx, rr);
            Some(evaluate(&policy.spec, &facts, &binding, &approvals))
        }
        (_, None) => {
            policy_problem = Some(format!(
                "ApprovalPolicy {policy_name} (Department {dept_name}'s spec.approvalPolicy, or `default`) does not exist: a platform engineer must create it"
            ));
            None
        }
        _ => None,
    };
    let approval = match (&plan, &evaluation) {
        (
            PlanState::Planned {
                generation: g,
                hash,
            },
            Some(e),
        ) => Some(ApprovalState {
            generation: *g,
            plan_hash: hash.clone(),
            outcome: e.outcome.clone(),
        }),
        _ => None,
    };
    let input = Input {
        phase: status.phase,
        observed_generation: status.observed_generation,
        spec_generation: generation,
        desired: rr.spec.lifecycle,
        deleting: rr.meta().deletion_timestamp.is_some(),
        quota,
        plan,
        approval,
        provisioning: run_state(status.apply.as_deref()),
        destroy: run_state(status.destroy.as_deref()),
        approved_generation: status.approved_generation,
        applied_generation: status.applied_generation,
        filed: status.filing_number.is_some(),
        billing_open: status.billing.iter().any(|i| i.to.is_none()),
        // Every period it was billed in is covered by a finalized SettlementReport (vacuously
        // true when it was never billed).
        settled: billing::intervals_of(&format!("{ns}/{}", rr.name_any()), &status.billing)
            .map(|intervals| {
                let finalized = billing::coverage_of(
                    t.reports.state().iter().map(AsRef::as_ref),
                    &billing::BillingConfig::default(),
                );
                billing::settled(&intervals, &finalized)
            })
            .unwrap_or(false),
        force_exit: force_exit_of(rr),
    };
    Ok(Some(World {
        input,
        department,
        holding,
        estimate,
        evaluation,
        policy_problem,
        provider,
    }))
}

/// `status.message`: the decision's, and while approvals are awaited, what stands in their way
/// (no policy) and why the request has no cost estimate (so it isn't approved automatically).
fn status_message(decision: &machine::Decision, world: &World) -> String {
    let mut message = decision.message.clone();
    if decision.phase == Phase::AwaitingApproval {
        if let Some(problem) = &world.policy_problem {
            message = format!("{message}; {problem}");
        }
        if let Err(e) = &world.estimate {
            message = format!("{message}; no cost estimate, so not approved automatically: {e}");
        }
    }
    message
}

/// The force-exit recorded on the request (admitted only as its platform admin, see
/// [`annotations::FORCE_EXIT_BY`]).
fn force_exit_of(rr: &ResourceRequest) -> Option<ForceExit> {
    let a = rr.annotations();
    Some(ForceExit {
        by: a.get(annotations::FORCE_EXIT_BY)?.clone(),
        reason: a.get(annotations::FORCE_EXIT_REASON)?.clone(),
    })
}

/// A run found `Running` was interrupted: runs are awaited within one reconcile, and one
/// request is never reconciled twice at once, so nobody is running it now.
fn run_state(run: Option<&RunRecord>) -> RunState {
    match run.map(|r| (r.state, r.message.clone())) {
        None => RunState::NotStarted,
        Some((RunPhase::Succeeded, _)) => RunState::Succeeded,
        Some((RunPhase::Failed, m)) => RunState::Failed(m.unwrap_or_default()),
        Some((RunPhase::Running, _)) => RunState::Failed(
            "interrupted by an operator restart; running it again (a plan is never applied twice)"
                .to_owned(),
        ),
    }
}

fn request_facts(
    rr: &ResourceRequest,
    department: &str,
    estimate: &Result<MonthlyEstimate, String>,
) -> RequestFacts {
    // The workload creator, for a request the operator made on their behalf.
    let (requester, requester_groups) =
        annotations::effective_requester(rr.annotations()).unwrap_or_default();
    RequestFacts {
        monthly_cost: estimate.as_ref().ok().map(|e| e.total),
        types: rr.spec.items.iter().map(|i| i.type_).collect(),
        classification: rr.spec.classification,
        requester,
        requester_groups,
        editors: annotations::editors(rr.annotations()),
        department: department.to_owned(),
    }
}

/// The Approvals naming this request, with who made them as recorded at admission.
fn approvals_of(ctx: &SharedContext, rr: &ResourceRequest) -> Vec<ApprovalFacts> {
    let ns = rr.namespace();
    let name = rr.name_any();
    let departments = ctx.tenancy.departments.state();
    ctx.tenancy
        .approvals
        .state()
        .iter()
        .filter(|a| a.namespace() == ns && a.spec.request.name == name)
        .map(|a| approval_facts(a, &departments))
        .collect()
}

fn approval_facts(a: &Approval, departments: &[Arc<Department>]) -> ApprovalFacts {
    let annotations = a.annotations();
    let user = annotations
        .get(annotations::APPROVER)
        .cloned()
        .unwrap_or_default();
    let groups = annotations
        .get(annotations::APPROVER_GROUPS)
        .map(|g| annotations::parse_groups(g))
        .unwrap_or_default();
    let departments = departments
        .iter()
        .filter(|d| d.includes(&user, &groups))
        .map(|d| d.name_any())
        .collect();
    ApprovalFacts {
        name: a.name_any(),
        stage: a.spec.stage.clone(),
        decision: a.spec.decision,
        comment: a.spec.comment.clone(),
        approver: ApproverFacts {
            user,
            groups,
            departments,
        },
        bound_uid: a.spec.request.uid.clone(),
        bound_generation: a.spec.request.generation,
        bound_plan_hash: a.spec.request.plan_hash.clone(),
    }
}

/// A request's backoff jitter, in [0, 0.5): fixed per request (from its uid), so a recomputed
/// decision waits as long as the one before it.
fn jitter_of(uid: &str) -> f64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(uid.as_bytes());
    f64::from(digest[0]) / 512.0
}

/// Plans, applies and destroys that failed wait before they are tried again: 2^n seconds
/// after the n-th failure, at most five minutes. Returns the actions to perform now, and when
/// to come back for the ones held back.
fn gate_retries(
    actions: &[Step],
    old: &ResourceRequestStatus,
    now: DateTime<Utc>,
    jitter: f64,
) -> (Vec<Step>, Option<Duration>) {
    let wait = |attempts: u32, at: Option<&str>| -> Option<Duration> {
        let at = DateTime::parse_from_rfc3339(at?).ok()?.with_timezone(&Utc);
        // Spread so that requests failing together don't retry together.
        let millis = (1000.0 * (1u64 << attempts.min(8)) as f64 * (1.0 + jitter)) as i64;
        let backoff = chrono::Duration::milliseconds(millis).min(chrono::Duration::minutes(5));
        let remaining = at + backoff - now;
        (remaining > chrono::Duration::zero()).then(|| remaining.to_std().unwrap_or_default())
    };
    let mut retry_in: Option<Duration> = None;
    let kept = actions
        .iter()
        .filter(|a| {
            let held = match a {
                Step::Plan => old
                    .plan_failure
                    .as_ref()
                    .and_then(|f| wait(f.attempts, Some(&f.failed_at))),
                Step::Apply { plan_hash, .. } => old
                    .apply
                    .as_ref()
                    .filter(|r| {
                        r.state == RunPhase::Failed && r.plan_hash.as_ref() == Some(plan_hash)
                    })
                    .and_then(|r| wait(r.attempts, r.finished_at.as_deref())),
                Step::Destroy => old
                    .destroy
                    .as_ref()
                    .filter(|r| r.state == RunPhase::Failed)
                    .and_then(|r| wait(r.attempts, r.finished_at.as_deref())),
                _ => None,
            };
            if let Some(w) = held {
                retry_in = Some(retry_in.map_or(w, |r| r.min(w)));
            }
            held.is_none()
        })
        .cloned()
        .collect();
    (kept, retry_in)
}

/// One run's inputs: the rendered workspace of the request as it is now, the executor of its
/// provider, and the run's context (timeout, credentials from the provider's Secret).
struct Run {
    workspace: RenderedWorkspace,
    executor: Arc<dyn Executor>,
    context: RunContext,
}

async fn prepare_run(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    world: &World,
    st: &ResourceRequestStatus,
) -> Result<Run, String> {
    let provider = world.provider.clone()?;
    let executor = ctx.lifecycle.executor(&ctx.client, &provider)?;
    let config = ProviderConfig::from_spec(&provider.name_any(), &provider.spec)
        .map_err(|e| e.to_string())?;
    let state = StateBackend::Kubernetes {
        namespace: provider
            .spec
            .state_namespace
            .clone()
            .unwrap_or_else(|| ctx.lifecycle.namespace.clone()),
        secret_suffix: rr.uid().unwrap_or_default(),
        config_path: None,
    };
    let mut input = WorkspaceInput::for_request(rr, &world.department.name_any(), config, state);
    input.filing_number = st.filing_number.clone();
    let workspace = render_workspace(&input).map_err(|e| e.to_string())?;
    let credentials = match &provider.spec.credentials_secret_ref {
        Some(r) => {
            let secret = Api::<Secret>::namespaced(ctx.client.clone(), &r.namespace)
                .get(&r.name)
                .await
                .map_err(|e| {
                    format!(
                        "CloudProvider {}: spec.credentialsSecretRef {}/{} can't be read: {e}",
                        provider.name_any(),
                        r.namespace,
                        r.name
                    )
                })?;
            Credentials::from_secret(&secret)
        }
        None => Credentials::default(),
    };
    let request = RequestRef {
        namespace: rr.namespace().unwrap_or_default(),
        name: rr.name_any(),
        uid: rr.uid().unwrap_or_default(),
    };
    Ok(Run {
        workspace,
        executor,
        context: RunContext::for_provider(request, &provider.spec, credentials),
    })
}

/// Plan the current spec: the summary and hash into status, the workspace and readable plan
/// into a ConfigMap owned by the request; or the failure, counted for backoff.
async fn plan(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    world: &World,
    st: &mut ResourceRequestStatus,
    now: DateTime<Utc>,
) {
    let generation = rr.meta().generation.unwrap_or_default();
    let planned = match prepare_run(ctx, rr, world, st).await {
        Ok(run) => match run.executor.plan(run.context, run.workspace.clone()).await {
            Ok(outcome) => Ok((run.workspace, outcome)),
            Err(e) => Err(e.0),
        },
        Err(e) => Err(e),
    };
    match planned {
        Ok((ws, outcome)) => {
            let config_map = match save_plan(ctx, rr, &ws, &outcome.readable).await {
                Ok(name) => Some(name),
                Err(e) => {
                    warn!(error = %e, "could not save the plan ConfigMap");
                    None
                }
            };
            st.plan = Some(Box::new(PlanSummary {
                resources: outcome
                    .resources
                    .iter()
                    .take(100)
                    .map(|r| PlannedResource {
                        address: r.address.clone(),
                        action: r.actions.join("+"),
                    })
                    .collect(),
                hash: outcome.hash,
                generation,
                add: outcome.add,
                change: outcome.change,
                destroy: outcome.destroy,
                config_map,
            }));
            st.plan_failure = None;
        }
        Err(message) => {
            let attempts = st
                .plan_failure
                .as_ref()
                .filter(|f| f.generation == generation)
                .map_or(0, |f| f.attempts)
                + 1;
            st.plan_failure = Some(Box::new(PlanFailure {
                generation,
                message,
                attempts,
                failed_at: rfc3339(now),
            }));
        }
    }
}

/// The workspace files and the readable plan, in the ConfigMap `<request>-plan` owned by the
/// request, so that `kubectl` shows exactly what will run.
async fn save_plan(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    ws: &RenderedWorkspace,
    readable: &str,
) -> Result<String, Error> {
    let name = format!("{}-plan", rr.name_any());
    let mut data: BTreeMap<String, String> = ws.files.clone();
    data.insert("plan.txt".to_owned(), readable.to_owned());
    data.insert("hash".to_owned(), ws.hash.clone());
    data.insert(
        "generation".to_owned(),
        rr.meta().generation.unwrap_or_default().to_string(),
    );
    let owner = rr.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(false);
        o
    });
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": rr.namespace(),
            "labels": {"app.kubernetes.io/managed-by": "yunzhang", "yunzhang.io/request": rr.name_any()},
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "data": data,
    });
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &rr.namespace().unwrap_or_default())
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(cm),
        )
        .await?;
    Ok(name)
}

/// How often the provider wants its running resources compared with the world; `None`: never.
fn drift_interval(ctx: &SharedContext, world: &World) -> Option<Duration> {
    let minutes = world.provider.as_ref().ok()?.spec.drift_check_minutes;
    match ctx.lifecycle.drift_interval {
        Some(every) if minutes > 0 => Some(every),
        _ => (minutes > 0).then(|| Duration::from_secs(u64::from(minutes) * 60)),
    }
}

/// The drift interval, when a steady Active request is due for a check.
fn drift_due(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    world: &World,
    old: &ResourceRequestStatus,
    phase: Phase,
) -> Option<Duration> {
    let steady = phase == Phase::Active
        && old.phase == Some(Phase::Active)
        && world.input.applied_generation == Some(world.input.spec_generation);
    let interval = drift_interval(ctx, world).filter(|_| steady)?;
    let checked = ctx
        .lifecycle
        .drift_checked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&rr.uid().unwrap_or_default())
        .copied();
    checked
        .is_none_or(|t| t.elapsed() >= interval)
        .then_some(interval)
}

/// Condition type: the running resources no longer match the applied plan.
pub const CONDITION_DRIFTED: &str = "Drifted";

/// Re-plan the applied workspace (as planned and kept in the plan ConfigMap) and record whether
/// the world still matches it: condition `Drifted`, and an Event when that changes.
async fn check_drift(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    world: &World,
    st: &mut ResourceRequestStatus,
) {
    ctx.lifecycle
        .drift_checked
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(rr.uid().unwrap_or_default(), std::time::Instant::now());
    let generation = rr.meta().generation;
    let applied = match planned_workspace(ctx, rr).await {
        Ok(Some((ws, g))) if Some(g) == st.applied_generation => ws,
        // The kept workspace is not the applied one (a change was turned down since).
        _ => return,
    };
    let result = match prepare_run(ctx, rr, world, st).await {
        Ok(run) => run
            .executor
            .drift(run.context, applied)
            .await
            .map_err(|e| e.0),
        Err(e) => Err(e),
    };
    let (drifted, reason, message) = match result {
        Ok(None) => (
            false,
            "InSync",
            "the resources match the applied plan".to_owned(),
        ),
        Ok(Some(plan)) => {
            let addresses: Vec<String> = plan
                .resources
                .iter()
                .map(|r| format!("{} ({})", r.address, r.actions.join("+")))
                .collect();
            (
                true,
                "Drifted",
                format!(
                    "the world no longer matches the applied plan: {} to add, {} to change, {} to destroy ({}); edit the request to have a plan made and approved that brings it back",
                    plan.add,
                    plan.change,
                    plan.destroy,
                    addresses.join(", ")
                ),
            )
        }
        Err(e) => {
            warn!(error = %e, "drift check failed");
            return;
        }
    };
    let was = st
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION_DRIFTED && c.status == "True");
    st.conditions = conditions::merge(
        st.conditions.clone(),
        condition(
            CONDITION_DRIFTED,
            drifted,
            reason,
            &message,
            generation,
            Timestamp::now(),
        ),
    );
    if drifted != was {
        let type_ = if drifted {
            EventType::Warning
        } else {
            EventType::Normal
        };
        publish_event(ctx, rr, type_, reason, "DriftCheck", message).await;
    }
}

/// Outputs marked sensitive, in the Secret `<request>-outputs` owned by the request (never in
/// status, events or logs). Replaced on every apply; empty when there are none.
async fn save_secret_outputs(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    outputs: &BTreeMap<String, String>,
) -> Result<(), Error> {
    let name = format!("{}-outputs", rr.name_any());
    let owner = rr.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(false);
        o
    });
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": rr.namespace(),
            "labels": {"app.kubernetes.io/managed-by": "yunzhang", "yunzhang.io/request": rr.name_any()},
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "type": "Opaque",
        "stringData": outputs,
    });
    Api::<Secret>::namespaced(ctx.client.clone(), &rr.namespace().unwrap_or_default())
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await?;
    Ok(())
}

/// The workspace last planned, as kept in the plan ConfigMap (see [`save_plan`]), if there is
/// one. Its hash is computed from the files that will run, never taken from the ConfigMap: files
/// changed after planning are refused (nothing unapproved is applied).
async fn planned_workspace(
    ctx: &SharedContext,
    rr: &ResourceRequest,
) -> Result<Option<(RenderedWorkspace, i64)>, String> {
    let ns = rr.namespace().unwrap_or_default();
    let name = format!("{}-plan", rr.name_any());
    let Ok(Some(cm)) = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&name)
        .await
    else {
        return Ok(None);
    };
    let data = cm.data.unwrap_or_default();
    let (Some(planned), Some(generation)) = (
        data.get("hash").cloned(),
        data.get("generation").and_then(|g| g.parse().ok()),
    ) else {
        return Ok(None);
    };
    let files: BTreeMap<String, String> = data
        .into_iter()
        .filter(|(file, _)| file.ends_with(".tf"))
        .collect();
    let hash = workspace_hash(&files);
    if hash != planned {
        return Err(format!(
            "the workspace in ConfigMap {ns}/{name} was changed after it was planned (its files hash to {hash}, the plan was made for {planned}): nothing was applied; edit the request to have a new plan made and approved"
        ));
    }
    Ok(Some((RenderedWorkspace { files, hash }, generation)))
}

/// The next filing number of the year in `Asia/Shanghai`, recorded in the filing ConfigMap
/// with optimistic concurrency before it is used: a conflict (another writer) retries, so no
/// number is handed out twice. The same request asking again (its status write was lost) gets
/// the number it was given.
async fn allocate_filing_number(
    ctx: &SharedContext,
    uid: &str,
    now: DateTime<Utc>,
) -> Result<FilingNumber, Error> {
    let mut last_written = ctx.lifecycle.filing.lock().await;
    let year = now
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .format("%Y")
        .to_string();
    let year_n: i32 = year.parse().unwrap_or_default();
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ctx.lifecycle.namespace);
    let last_key = format!("last-{year}");
    for _ in 0..10 {
        let existing = match last_written.take() {
            Some(cm) => Some(cm),
            None => api.get_opt(FILING_CONFIG_MAP).await?,
        };
        let data = existing
            .as_ref()
            .and_then(|cm| cm.data.clone())
            .unwrap_or_default();
        let last: Option<FilingNumber> = data.get(&year).and_then(|s| {
            s.parse::<u64>()
                .ok()
                .map(|seq| FilingNumber { year: year_n, seq })
        });
        if let (Some(last), Some(holder)) = (last, data.get(&last_key))
            && holder == uid
        {
            return Ok(last);
        }
        let next = next_filing_number(year_n, last.iter());
        let mut data = data;
        data.insert(year.clone(), next.seq.to_string());
        data.insert(last_key.clone(), uid.to_owned());
        let result = match existing {
            Some(mut cm) => {
                cm.data = Some(data);
                api.replace(FILING_CONFIG_MAP, &PostParams::default(), &cm)
                    .await
            }
            None => {
                let cm = ConfigMap {
                    metadata: kube::api::ObjectMeta {
                        name: Some(FILING_CONFIG_MAP.to_owned()),
                        ..Default::default()
                    },
                    data: Some(data),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &cm).await
            }
        };
        match result {
            Ok(written) => {
                *last_written = Some(written);
                info!(filing = %next, "filing number assigned");
                return Ok(next);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict(
        "could not record a filing number after 10 attempts (the ConfigMap keeps changing)"
            .to_owned(),
    ))
}

/// What the current spec meters as, from its estimate (which resolved each item's price).
fn metered_items(estimate: &Result<MonthlyEstimate, String>) -> Vec<MeteredItem> {
    estimate
        .as_ref()
        .map(|e| {
            e.lines
                .iter()
                .map(|l| MeteredItem {
                    item: l.item.clone(),
                    sku: l.sku.clone(),
                    resource_type: l.resource_type,
                    quantity: l.quantity.normalize().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bring the open intervals in line with what runs: close the intervals of items that no
/// longer run as they were, open intervals for what runs and has none. Closed intervals are
/// never touched.
fn meter(
    intervals: &mut Vec<MeteredInterval>,
    running: &[MeteredItem],
    world: &World,
    now: DateTime<Utc>,
) {
    let at = rfc3339(now);
    let same = |i: &MeteredInterval, m: &MeteredItem| {
        i.item == m.item && i.sku == m.sku && i.quantity == m.quantity
    };
    for open in intervals.iter_mut().filter(|i| i.to.is_none()) {
        if !running.iter().any(|m| same(open, m)) {
            open.to = Some(at.clone());
        }
    }
    let provider = world.department.spec.provider.clone().unwrap_or_default();
    for m in running {
        if !intervals.iter().any(|i| i.to.is_none() && same(i, m)) {
            intervals.push(MeteredInterval {
                item: m.item.clone(),
                sku: m.sku.clone(),
                resource_type: m.resource_type,
                quantity: m.quantity.clone(),
                from: at.clone(),
                to: None,
                department: world.department.name_any(),
                provider: provider.clone(),
            });
        }
    }
}

fn estimate_status(world: &World) -> Option<Estimate> {
    let estimate = world.estimate.as_ref().ok()?;
    let mut status = estimate.to_status(None).ok()?;
    // For a change: against what the running resources use.
    if let Some(h) = &world.holding
        && h.state == crate::api::HoldingState::Used
        && world.input.applied_generation != Some(world.input.spec_generation)
    {
        let running = h.amounts.get(Dimension::MonthlyCost);
        status.monthly_delta = Some(format_signed(estimate.total - running));
    }
    Some(status)
}

fn describe_approvals(st: &mut ResourceRequestStatus, evaluation: Option<&Evaluation>) {
    st.stage = None;
    st.approvals.clear();
    let Some(e) = evaluation else { return };
    if let crate::lifecycle::policy::ApprovalOutcome::Staged(Progress::Waiting {
        stage_name,
        index,
        of,
        ..
    }) = &e.outcome
    {
        st.stage = Some(StageStatus {
            name: stage_name.clone(),
            index: *index,
            of: *of,
        });
    }
    st.approvals = e
        .counted
        .iter()
        .map(|c| ApprovalRecord {
            stage: c.stage.clone(),
            approver: c.approver.clone(),
            approval: c.approval.clone(),
        })
        .collect();
}

fn lifecycle_conditions(
    st: &ResourceRequestStatus,
    decision: &machine::Decision,
    world: &World,
    generation: Option<i64>,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let now = Timestamp::now();
    let reason = decision.reason.as_str();
    let message = st.message.clone().unwrap_or_default();
    let quota_held = st.quota.is_some();
    let approved = world
        .evaluation
        .as_ref()
        .is_some_and(|e| e.outcome.is_approved());
    let ignored: Vec<String> = world
        .evaluation
        .iter()
        .flat_map(|e| &e.ignored)
        .map(|i| format!("approval {} doesn't count: {}", i.approval, i.refusal))
        .collect();
    let approval_message = if ignored.is_empty() {
        message.clone()
    } else {
        format!("{message}; {}", ignored.join("; "))
    };
    let mut all = st.conditions.clone();
    for c in [
        condition(
            "QuotaReserved",
            quota_held,
            reason,
            &message,
            generation,
            now,
        ),
        condition(
            "Approved",
            approved,
            reason,
            &approval_message,
            generation,
            now,
        ),
        condition(
            "Provisioned",
            st.applied_generation.is_some() && decision.phase != Phase::Exited,
            reason,
            &message,
            generation,
            now,
        ),
        condition(
            crate::api::CONDITION_READY,
            decision.phase == Phase::Active,
            reason,
            &message,
            generation,
            now,
        ),
    ] {
        all = conditions::merge(all, c);
    }
    all
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Write `st` unless it equals `old` (condition transition times aside).
async fn write_status(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    old: &ResourceRequestStatus,
    st: &ResourceRequestStatus,
) -> Result<(), Error> {
    if old != st {
        write_status_at(ctx, rr, st, rr.resource_version()).await?;
    }
    Ok(())
}

/// Apply the whole status, on condition that the object is still at `rv` (what this reconcile
/// read or last wrote). Returns the new resourceVersion. A conflict means our view was stale:
/// nothing was written, and the newer object gets its own reconcile.
async fn write_status_at(
    ctx: &SharedContext,
    rr: &ResourceRequest,
    st: &ResourceRequestStatus,
    rv: Option<String>,
) -> Result<Option<String>, Error> {
    let patch = json!({
        "apiVersion": ResourceRequest::api_version(&()),
        "kind": ResourceRequest::kind(&()),
        "metadata": {"name": rr.name_any(), "resourceVersion": rv},
        "status": st,
    });
    match dynamic_api(ctx.client.clone(), rr)
        .patch_status(
            &rr.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(obj) => Ok(obj.metadata.resource_version),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict(format!(
            "request {}/{} changed while it was reconciled; it is reconciled again",
            rr.namespace().unwrap_or_default(),
            rr.name_any()
        ))),
        Err(e) => {
            // Whether it landed is unknown: the ledger re-reads the truth.
            ctx.tenancy.invalidate().await;
            Err(e.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_run(attempts: u32, finished: &str) -> RunRecord {
        RunRecord {
            generation: 1,
            plan_hash: Some("sha256:a".into()),
            state: RunPhase::Failed,
            message: Some("boom".into()),
            attempts,
            started_at: finished.into(),
            finished_at: Some(finished.into()),
            metered: Vec::new(),
        }
    }

    #[test]
    fn a_failed_apply_waits_its_backoff_before_it_runs_again() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:00:03Z")
            .expect("time")
            .with_timezone(&Utc);
        let old = ResourceRequestStatus {
            apply: Some(Box::new(failed_run(3, "2026-11-22T10:00:00Z"))),
            ..Default::default()
        };
        let apply = Step::Apply {
            plan_hash: "sha256:a".into(),
            generation: 1,
        };
        // Third failure: 8 s backoff, 3 s gone.
        let (kept, retry) = gate_retries(&[apply.clone(), Step::StartBilling], &old, now, 0.0);
        assert_eq!(kept, vec![Step::StartBilling]);
        assert_eq!(retry, Some(Duration::from_secs(5)));
        // After the backoff it runs.
        let later = now + chrono::Duration::seconds(6);
        let (kept, retry) = gate_retries(std::slice::from_ref(&apply), &old, later, 0.0);
        assert_eq!(kept, vec![apply.clone()]);
        assert_eq!(retry, None);
        // A different plan is not held back by another plan's failures.
        let other = Step::Apply {
            plan_hash: "sha256:b".into(),
            generation: 2,
        };
        let (kept, _) = gate_retries(std::slice::from_ref(&other), &old, now, 0.0);
        assert_eq!(kept, vec![other]);
    }

    #[test]
    fn a_run_left_running_reads_as_interrupted() {
        let mut run = failed_run(1, "2026-11-22T10:00:00Z");
        run.state = RunPhase::Running;
        assert!(matches!(run_state(Some(&run)), RunState::Failed(m) if m.contains("interrupted")));
        assert_eq!(run_state(None), RunState::NotStarted);
    }
}
