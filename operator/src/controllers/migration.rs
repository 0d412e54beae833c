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
use k8s_openapi::jiff::Timestamp;
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
        CONDITION_READY, MigrationWorkload, ResourceRequest, annotations,
        migration_workload::{MigrationPhase, MigrationWorkloadStatus, PhaseEntry},
        resource_request::{DesiredLifecycle, Project, ResourceRequestSpec},
    },
    conditions::{self, condition},
    lifecycle::migration::{Action as Step, Input, RequestView, settle},
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
    let now = Utc::now();
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
                    if let Some(rr) = target_request(&mw) {
                        match rr_api
                            .create(
                                &PostParams {
                                    field_manager: Some(FIELD_MANAGER.into()),
                                    ..PostParams::default()
                                },
                                &rr,
                            )
                            .await
                        {
                            Ok(_) => {
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
                            // Created already; the store hadn't seen it yet.
                            Err(kube::Error::Api(s)) if s.code == 409 => {}
                            Err(e) => return Err(e.into()),
                        }
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
