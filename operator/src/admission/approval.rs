//! Judging a new Approval at admission (the validating webhook `approvals.yunzhang.io`). Pure:
//! the shell reads the request (from the API server, not a cache: a stale generation must not
//! slip through), the Departments and the ApprovalPolicy, and passes them in; this module decides
//! with the ApprovalPolicy rules of [`crate::lifecycle::policy`] and words the refusal for the
//! person creating the Approval, naming the field they have to change.

use std::collections::BTreeSet;

use kube::ResourceExt;

use crate::{
    api::{
        Approval, ApprovalPolicy, Department, ResourceRequest,
        annotations::{REQUESTER, editors, effective_requester},
    },
    lifecycle::policy::{
        ApprovalFacts, ApproverFacts, CurrentBinding, Refusal, RequestFacts, judge_approval,
        judge_approver,
    },
};

/// What the shell observed for one Approval CREATE.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// The ResourceRequest `spec.request.name` in the Approval's namespace, if it exists.
    pub request: Option<&'a ResourceRequest>,
    /// Every Department (to find the one owning the namespace).
    pub departments: &'a [Department],
    /// The ApprovalPolicy the owning Department names (or `default`), if it exists.
    pub policy: Option<&'a ApprovalPolicy>,
}

/// The authenticated user creating the Approval (`request.userInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    pub user: String,
    pub groups: Vec<String>,
}

/// Whether `approver` may create `approval` in `namespace`; `Err` is the message for them.
///
/// In order: the request exists, `spec.request.uid` and `spec.request.generation` are the
/// request's own, the approver is not the requester (four eyes) and not from the requesting
/// department (unless the policy allows it). Once the request has a plan (`status.plan.hash`),
/// also: `spec.request.planHash` is that plan, `spec.stage` is the stage the request waits in
/// (`status.stage.name`, when set) and the approver is one of that stage's approvers.
pub fn judge_new_approval(
    approval: &Approval,
    namespace: &str,
    approver: &Approver,
    observed: Observed<'_>,
) -> Result<(), String> {
    let binding = &approval.spec.request;
    let Some(request) = observed.request else {
        return Err(format!(
            "spec.request.name: there is no ResourceRequest {} in namespace {namespace}: approve an existing request",
            binding.name
        ));
    };
    let Some(department) = Department::owner_of(observed.departments, namespace) else {
        return Err(format!(
            "spec.request.name: namespace {namespace} belongs to no Department, so ResourceRequest {} can't be approved",
            binding.name
        ));
    };
    let policy_name = department.approval_policy_name();
    let Some(policy) = observed.policy else {
        return Err(format!(
            "spec.stage: ApprovalPolicy {policy_name} of Department {} does not exist: ask a platform engineer to create it",
            department.name_any()
        ));
    };
    // The workload creator, for a request the operator made on their behalf.
    let Some((requester, requester_groups)) = effective_requester(request.annotations()) else {
        return Err(format!(
            "spec.request.name: ResourceRequest {} has no recorded requester ({REQUESTER}), so four eyes can't be checked: it can't be approved",
            binding.name
        ));
    };
    let facts = RequestFacts {
        requester,
        requester_groups,
        editors: editors(request.annotations()),
        department: department.name_any(),
        types: request
            .spec
            .items
            .iter()
            .map(|i| i.type_)
            .collect::<BTreeSet<_>>(),
        ..RequestFacts::default()
    };
    let departments = if department.includes(&approver.user, &approver.groups) {
        vec![department.name_any()]
    } else {
        Vec::new()
    };
    let facts_of_approval = ApprovalFacts {
        name: approval.name_any(),
        stage: approval.spec.stage.clone(),
        decision: approval.spec.decision,
        comment: approval.spec.comment.clone(),
        approver: ApproverFacts {
            user: approver.user.clone(),
            groups: approver.groups.clone(),
            departments,
        },
        bound_uid: binding.uid.clone(),
        bound_generation: binding.generation,
        bound_plan_hash: binding.plan_hash.clone(),
    };
    let uid = request.metadata.uid.clone().unwrap_or_default();
    let generation = request.metadata.generation.unwrap_or_default();
    let sod = &policy.spec.separation_of_duties;
    let status = request.status.as_ref();
    let Some(plan_hash) = status.and_then(|s| s.plan.as_ref()).map(|p| p.hash.clone()) else {
        let named = policy
            .spec
            .stages
            .iter()
            .find(|s| s.name == approval.spec.stage);
        return judge_approver(&facts_of_approval, &facts, &uid, generation, named, sod)
            .map_err(|r| refusal_message(&r, &binding.name));
    };
    // With a plan, everything is judged, as the lifecycle will judge it: the stage the request
    // waits in (or, before the lifecycle has said, the stage the approval names).
    let waiting_in = status
        .and_then(|s| s.stage.as_ref())
        .map_or(approval.spec.stage.as_str(), |s| s.name.as_str());
    let Some(stage) = policy.spec.stages.iter().find(|s| s.name == waiting_in) else {
        let stages: Vec<&str> = policy.spec.stages.iter().map(|s| s.name.as_str()).collect();
        return Err(format!(
            "spec.stage: ApprovalPolicy {policy_name} has no stage {waiting_in} (its stages: {}): approve one of those",
            if stages.is_empty() {
                "none".to_owned()
            } else {
                stages.join(", ")
            }
        ));
    };
    let current = CurrentBinding {
        uid,
        generation,
        plan_hash,
    };
    // Four eyes and the department come before the stage's approvers at admission too: the
    // same order as without a plan, so a person sees the same refusal either way.
    judge_approver(
        &facts_of_approval,
        &facts,
        &current.uid,
        current.generation,
        Some(stage),
        sod,
    )
    .and_then(|()| judge_approval(stage, &facts_of_approval, &facts, &current, sod))
    .map_err(|r| refusal_message(&r, &binding.name))
}

/// The refusal of an Approval at admission, for the person creating it: the field, what is
/// wrong, and what to do.
pub fn refusal_message(refusal: &Refusal, request: &str) -> String {
    let field = refusal.field();
    match refusal {
        Refusal::WrongRequest { approved, current } => format!(
            "{field} is {approved}, but ResourceRequest {request} has uid {current} (it was deleted and created again): look again and approve what you see"
        ),
        Refusal::StaleGeneration { approved, current } => format!(
            "{field} {approved} is stale: the request is at generation {current}; look again and approve what you see"
        ),
        Refusal::StalePlan { approved, current } => format!(
            "{field} {approved} is stale: the request's plan is now {current}; look again and approve what you see"
        ),
        other => format!("{field}: {other}"),
    }
}

#[cfg(test)]
mod tests;
