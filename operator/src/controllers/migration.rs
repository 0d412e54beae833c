//! The MigrationWorkload shell: reads the workload and the ResourceRequest it owns, asks the
//! pure [`crate::lifecycle::migration::settle`] where the workload is, creates or retires the
//! target request, and writes the status (phase, message, history) with server-side apply.
//!
//! The target request is created by the operator, so the API server records the operator's
//! ServiceAccount as its `yunzhang.io/requester`. On whose behalf it asks is the workload's own
//! recorded requester, copied into `yunzhang.io/on-behalf-of` (only the operator may set it:
//! ValidatingAdmissionPolicy `yunzhang-on-behalf-of`); approvals judge four eyes against that
//! user. A workload without a recorded requester gets no request.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::{api::batch::v1::Job, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;
use tracing::info;

use super::{
    Error, FIELD_MANAGER, SharedContext, measured, publish_event,
    status::{apply_status, status_differs},
};
use crate::{
    api::{
        CONDITION_READY, HookTemplate, MigrationWorkload, ResourceRequest, annotations,
        migration_workload::{
            Hook, HookPoint, HookRun, HookState, MigrationPhase, MigrationWorkloadStatus,
            PhaseEntry,
        },
        resource_request::{DesiredLifecycle, Project, ResourceRequestSpec},
    },
    conditions::{self, condition},
    lifecycle::migration::{
        Action as Step, HookView, Input, RequestView, ResolvedHook, hook_job_name, resolve_hook,
        settle,
    },
};

/// At most this many phase changes are kept in `status.history` (the oldest go first; a
/// workload has nine phases, so this only trims after repeated trouble).
const HISTORY_LIMIT: usize = 32;

pub async fn reconcile_workload(
    mw: Arc<MigrationWorkload>,
    ctx: SharedContext,
) -> Result<Action, Error> {
    measured::<MigrationWorkload>(&ctx.clone(), reconcile(mw, ctx)).await
}

/// The name of the workload's target request: the workload's own name, so that approvers find
/// it (`kubectl yunzhang approve NAME`).
pub fn request_name(mw: &MigrationWorkload) -> String {
    mw.name_any()
}

/// The ResourceRequest the operator creates for the workload's target.
pub fn target_request(mw: &MigrationWorkload) -> Option<ResourceRequest> {
    let target = mw.spec.target.as_ref()?;
    let ann = mw.annotations();
    let user = ann.get(annotations::REQUESTER)?;
    let groups = ann
        .get(annotations::REQUESTER_GROUPS)
        .cloned()
        .unwrap_or_default();
    let mut rr = ResourceRequest::new(
        &request_name(mw),
        ResourceRequestSpec {
            purpose: format!(
                "迁移上云: {} ({})",
                mw.spec.system.name, mw.spec.system.code
            ),
            project: Some(Project {
                code: mw.spec.system.code.clone(),
                name: Some(mw.spec.system.name.clone()),
            }),
            funding_source: None,
            classification: mw.spec.classification,
            lifecycle: DesiredLifecycle::Active,
            items: target.items.clone(),
        },
    );
    rr.metadata.namespace = mw.namespace();
    rr.metadata.owner_references = mw.controller_owner_ref(&()).map(|o| vec![o]);
    rr.metadata.labels = Some(
        [("yunzhang.io/migration-workload".to_owned(), mw.name_any())]
            .into_iter()
            .collect(),
    );
    rr.metadata.annotations = Some(
        [
            (annotations::ON_BEHALF_OF.to_owned(), user.clone()),
            (annotations::ON_BEHALF_OF_GROUPS.to_owned(), groups),
        ]
        .into_iter()
        .collect(),
    );
    Some(rr)
}

/// Create `obj` as the operator; `false` when it exists already (made by an earlier reconcile
/// the stores hadn't seen yet).
async fn create_once<K>(api: &Api<K>, obj: &K) -> Result<bool, Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The hook configured at `point`.
fn hook_at(mw: &MigrationWorkload, point: HookPoint) -> Option<&Hook> {
    let hooks = mw.spec.hooks.as_ref()?;
    match point {
        HookPoint::PreCutover => hooks.pre_cutover.as_ref(),
        HookPoint::PostCutover => hooks.post_cutover.as_ref(),
    }
}

/// The Job of a hook: one container of its template's image, non-root, no privileges, no API
/// token unless the template names a ServiceAccount, the parameters as `YZ_PARAM_<NAME>`; owned
/// by the workload, deadline the template's timeout.
pub fn hook_job(
    mw: &MigrationWorkload,
    point: HookPoint,
    hook: &ResolvedHook,
) -> Result<Job, Error> {
    let name = hook_job_name(&mw.name_any(), point, hook);
    let owner = mw.controller_owner_ref(&()).map(|o| vec![o]);
    let labels = json!({
        "yunzhang.io/migration-workload": mw.name_any(),
        "yunzhang.io/hook": point.label(),
        "yunzhang.io/hook-template": hook.template,
    });
    let mut env = vec![
        json!({"name": "YZ_WORKLOAD", "value": mw.name_any()}),
        json!({"name": "YZ_SYSTEM_CODE", "value": mw.spec.system.code}),
        json!({"name": "YZ_HOOK", "value": point.label()}),
    ];
    env.extend(hook.env.iter().map(|(k, v)| json!({"name": k, "value": v})));
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": mw.namespace(),
            "labels": labels,
            "ownerReferences": owner,
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": hook.timeout_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": hook.service_account_name,
                    "automountServiceAccountToken": hook.service_account_name.is_some(),
                    "enableServiceLinks": false,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": "hook",
                        "image": hook.image,
                        "command": (!hook.command.is_empty()).then_some(&hook.command),
                        "args": (!hook.args.is_empty()).then_some(&hook.args),
                        "env": env,
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
                },
            },
        },
    });
    Ok(serde_json::from_value(job)?)
}

/// A configured hook as the shell found it: what it is doing for the current spec, its Job as
/// status shows it, and the hook as it would run (when it can).
struct HookSeen {
    view: HookView,
    run: Option<HookRun>,
    resolved: Option<ResolvedHook>,
}

/// The hook at `point` (`None` when none is configured): its template filled in, and its Job.
async fn hook_view(
    ctx: &SharedContext,
    mw: &MigrationWorkload,
    point: HookPoint,
) -> Result<Option<HookSeen>, Error> {
    let Some(hook) = hook_at(mw, point) else {
        return Ok(None);
    };
    let template = Api::<HookTemplate>::all(ctx.client.clone())
        .get_opt(&hook.template)
        .await?;
    let hook = match resolve_hook(
        hook,
        template.as_ref().map(|t| &t.spec),
        &ctx.hook_image_prefixes,
    ) {
        Ok(resolved) => resolved,
        Err(why) => {
            return Ok(Some(HookSeen {
                view: HookView::Refused(why),
                run: None,
                resolved: None,
            }));
        }
    };
    let name = hook_job_name(&mw.name_any(), point, &hook);
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &mw.namespace().unwrap_or_default());
    let seen = |view, run| {
        Ok(Some(HookSeen {
            view,
            run,
            resolved: Some(hook.clone()),
        }))
    };
    let Some(job) = jobs.get_opt(&name).await? else {
        return seen(HookView::NotStarted, None);
    };
    let condition = |type_: &str| {
        job.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == "True"))
    };
    let run = |state, message| HookRun {
        hook: point,
        job: name.clone(),
        state,
        message,
    };
    if condition("Complete").is_some() {
        seen(HookView::Succeeded, Some(run(HookState::Succeeded, None)))
    } else if let Some(failed) = condition("Failed") {
        let why = [failed.reason.as_deref(), failed.message.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        seen(
            HookView::Failed {
                job: name.clone(),
                why: why.clone(),
            },
            Some(run(HookState::Failed, Some(why))),
        )
    } else {
        seen(
            HookView::Running { job: name.clone() },
            Some(run(HookState::Running, None)),
        )
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse(t: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

async fn reconcile(mw: Arc<MigrationWorkload>, ctx: SharedContext) -> Result<Action, Error> {
    let ns = mw.namespace().unwrap_or_default();
    let name = mw.name_any();
    let old = mw.status.clone().unwrap_or_default();
    let now = crate::clock::now();
    let rr_name = request_name(&mw);
    let owned = |r: &ResourceRequest| {
        r.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == mw.uid().as_ref())
    };
    let existing = ctx
        .tenancy
        .requests
        .state()
        .into_iter()
        .find(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.name_any() == rr_name);
    let mut problem = None;
    if let Some(r) = &existing
        && !owned(r)
    {
        problem = Some(format!(
            "a ResourceRequest named {rr_name} already exists in {ns} and does not belong to this workload: rename one of them"
        ));
    }
    let requester = mw.annotations().get(annotations::REQUESTER).cloned();
    if requester.is_none() && mw.spec.target.is_some() {
        problem = Some(format!(
            "no requester was recorded for this workload ({}): the target ResourceRequest can't be requested on anyone's behalf; create the workload again",
            annotations::REQUESTER
        ));
    }
    // Hooks matter up to cutover (a workload may pass through Migrating in this reconcile);
    // their Jobs are looked up only then, and only for the hooks configured.
    let (mut pre, mut post) = (None, None);
    if old.phase.unwrap_or_default() <= MigrationPhase::CutOver {
        pre = hook_view(&ctx, &mw, HookPoint::PreCutover).await?;
        post = hook_view(&ctx, &mw, HookPoint::PostCutover).await?;
    }
    let hook_runs: Vec<HookRun> = [&pre, &post]
        .into_iter()
        .filter_map(|h| h.as_ref().and_then(|h| h.run.clone()))
        .collect();
    let resolved = |seen: &Option<HookSeen>| seen.as_ref().and_then(|h| h.resolved.clone());
    let (pre_hook, post_hook) = (resolved(&pre), resolved(&post));
    let input = Input {
        phase: old.phase.unwrap_or_default(),
        has_target: mw.spec.target.is_some(),
        request: existing.as_ref().filter(|r| owned(r)).map(|r| RequestView {
            name: r.name_any(),
            phase: r.status.as_ref().and_then(|s| s.phase),
            lifecycle: r.spec.lifecycle,
            matches_target: mw
                .spec
                .target
                .as_ref()
                .is_none_or(|t| t.items == r.spec.items)
                && r.spec.classification == mw.spec.classification,
        }),
        advance_to: mw.spec.advance_to,
        cutover: mw
            .spec
            .cutover
            .as_ref()
            .and_then(|c| Some((parse(&c.not_before)?, parse(&c.not_after)?))),
        pre_cutover: pre.map(|h| h.view),
        post_cutover: post.map(|h| h.view),
        now,
    };
    let settled = settle(&input);
    let mut decision = settled.decision;
    let rr_api: Api<ResourceRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let as_operator = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    if problem.is_none() {
        for step in &decision.actions {
            match step {
                Step::CreateRequest => {
                    if let Some(rr) = target_request(&mw)
                        && create_once(&rr_api, &rr).await?
                    {
                        info!(workload = %format!("{ns}/{name}"), request = %rr_name, "target request created");
                        publish_event(
                                    &ctx,
                                    mw.as_ref(),
                                    EventType::Normal,
                                    "RequestCreated",
                                    "Create",
                                    format!("created ResourceRequest {rr_name} for the target resources, on behalf of {}", requester.clone().unwrap_or_default()),
                                )
                                .await;
                    }
                }
                Step::UpdateRequest => {
                    let items = mw.spec.target.as_ref().map(|t| t.items.clone());
                    rr_api
                        .patch(
                            &rr_name,
                            &as_operator,
                            &Patch::Merge(json!({"spec": {
                                "items": items,
                                "classification": mw.spec.classification,
                            }})),
                        )
                        .await?;
                    info!(workload = %format!("{ns}/{name}"), request = %rr_name, "target request updated");
                }
                Step::RetireRequest => {
                    rr_api
                        .patch(
                            &rr_name,
                            &as_operator,
                            &Patch::Merge(json!({"spec": {"lifecycle": "Retired"}})),
                        )
                        .await?;
                }
                Step::RunHook(point) => {
                    let hook = match point {
                        HookPoint::PreCutover => &pre_hook,
                        HookPoint::PostCutover => &post_hook,
                    };
                    let Some(hook) = hook else {
                        continue;
                    };
                    let job = hook_job(&mw, *point, hook)?;
                    let job_name = job.name_any();
                    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
                    if create_once(&jobs, &job).await? {
                        info!(workload = %format!("{ns}/{name}"), job = %job_name, "hook started");
                        publish_event(
                            &ctx,
                            mw.as_ref(),
                            EventType::Normal,
                            "HookStarted",
                            "RunHook",
                            format!("{} hook Job {job_name} started", point.label()),
                        )
                        .await;
                    }
                }
            }
        }
    } else if let Some(p) = &problem {
        decision.message = format!("{}; {p}", decision.message);
    }

    let mut history = old.history.clone();
    for phase in &settled.entered {
        history.push(PhaseEntry {
            phase: *phase,
            at: rfc3339(now),
        });
    }
    if history.len() > HISTORY_LIMIT {
        history.drain(..history.len() - HISTORY_LIMIT);
    }
    let generation = mw.meta().generation;
    let ready = problem.is_none() && decision.phase != MigrationPhase::Rejected;
    let conds = conditions::merge(
        old.conditions.clone(),
        condition(
            CONDITION_READY,
            ready,
            if ready { "Reconciled" } else { "Blocked" },
            &decision.message,
            generation,
            Timestamp::now(),
        ),
    );
    let st = MigrationWorkloadStatus {
        observed_generation: generation,
        phase: Some(decision.phase),
        message: Some(decision.message.clone()),
        requester,
        resource_request: input
            .request
            .as_ref()
            .map(|r| r.name.clone())
            .or_else(|| {
                decision
                    .actions
                    .contains(&Step::CreateRequest)
                    .then(|| rr_name.clone())
                    .filter(|_| problem.is_none())
            })
            .or(old.resource_request.clone()),
        history,
        hooks: hook_runs,
        conditions: conds,
    };
    let value = serde_json::to_value(&st)?;
    if status_differs(mw.status.as_ref(), &value) {
        apply_status(&ctx, mw.as_ref(), value).await?;
    }
    for phase in &settled.entered {
        info!(workload = %format!("{ns}/{name}"), to = ?phase, "transition");
        publish_event(
            &ctx,
            mw.as_ref(),
            if *phase == MigrationPhase::RolledBack || *phase == MigrationPhase::Rejected {
                EventType::Warning
            } else {
                EventType::Normal
            },
            &format!("{phase:?}"),
            "Transition",
            decision.message.clone(),
        )
        .await;
    }
    let wait = decision
        .recheck_at
        .and_then(|t| (t - now).to_std().ok())
        .map(|d| d + Duration::from_secs(1))
        .unwrap_or(Duration::from_secs(60));
    Ok(Action::requeue(wait.min(Duration::from_secs(300))))
}
