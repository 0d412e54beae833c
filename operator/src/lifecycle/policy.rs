//! ApprovalPolicy evaluation: which stages apply to a request, whether the policy approves it
//! without any stage, whether one Approval counts, and how far the stages have got.
//!
//! Everything here is judged against the request *as it is now* ([`CurrentBinding`]): an
//! approval counts only for the uid, generation and plan hash it names ("approve what you saw").

use std::{collections::BTreeSet, fmt};

use rust_decimal::Decimal;

use crate::{
    api::{
        ApprovalPolicySpec, ApprovalStage, Classification, Decision, Money, ResourceType,
        SubjectKind, approval_policy::SeparationOfDuties,
    },
    billing::money::parse_money,
};

/// What the policy looks at in a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// The estimated monthly cost (from `status.estimate`), `None` when it can't be estimated
    /// (no PriceBook, unpriced SKU).
    pub monthly_cost: Option<Decimal>,
    /// The types of the request's items.
    pub types: BTreeSet<ResourceType>,
    pub classification: Classification,
    /// The authenticated user who created the request (`status.requester`).
    pub requester: String,
    pub requester_groups: Vec<String>,
    /// Users who changed the request's spec after it was created (`yunzhang.io/editors`): they
    /// count as requesters for four eyes.
    pub editors: Vec<String>,
    /// The Department the request belongs to.
    pub department: String,
}

/// Who made an approval, as the API server authenticated them, and where they belong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApproverFacts {
    pub user: String,
    pub groups: Vec<String>,
    /// Departments the approver belongs to (as an admin or member, directly or by group).
    pub departments: Vec<String>,
}

/// One Approval object, as far as the policy is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApprovalFacts {
    /// `metadata.name` of the Approval, to name it in status ("approval X doesn't count: …").
    pub name: String,
    /// `spec.stage`.
    pub stage: String,
    pub decision: Decision,
    pub comment: Option<String>,
    /// From `status.approver`, recorded at admission; never typed by the approver.
    pub approver: ApproverFacts,
    /// `spec.request.uid`, `.generation`, `.planHash`: what the approver saw.
    pub bound_uid: String,
    pub bound_generation: i64,
    pub bound_plan_hash: String,
}

/// The request as it is now: approvals count only if they name exactly this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentBinding {
    pub uid: String,
    pub generation: i64,
    /// `status.plan.hash` of the current plan.
    pub plan_hash: String,
}

/// Why an approval does not count. `Display` is the message for a person: what is wrong, and
/// what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "approved request uid {approved} but this request has uid {current} (it was deleted and created again): approve the current request"
    )]
    WrongRequest { approved: String, current: String },
    #[error(
        "approved generation {approved} but the request is now at generation {current}: review the new spec and approve again"
    )]
    StaleGeneration { approved: i64, current: i64 },
    #[error(
        "approved plan {approved} but the plan is now {current}: review the new plan and approve again"
    )]
    StalePlan { approved: String, current: String },
    #[error("the approval is for stage {approved}, not stage {stage}")]
    WrongStage { approved: String, stage: String },
    #[error(
        "stage {stage} does not apply to this request (its stages: {applicable}): approve one of those stages"
    )]
    StageNotApplicable { stage: String, applicable: String },
    #[error(
        "{user} is the requester and can't decide on their own request (four eyes): ask another approver of stage {stage}"
    )]
    OwnRequest { user: String, stage: String },
    #[error(
        "{user} changed this request's spec (metadata.annotations[yunzhang.io/editors]) and can't decide on it (four eyes): ask another approver of stage {stage}"
    )]
    EditedRequest { user: String, stage: String },
    #[error(
        "{user} is not an approver of stage {stage} (approvers: {approvers}): ask one of them to decide"
    )]
    NotAnApprover {
        user: String,
        stage: String,
        approvers: String,
    },
    #[error(
        "{user} belongs to {department}, the requesting department, and the policy does not allow same-department approval: ask an approver from another department"
    )]
    SameDepartment { user: String, department: String },
    #[error(
        "{user} already approved stage {stage}: each approver counts once, the stage needs {required} different approvers"
    )]
    AlreadyCounted {
        user: String,
        stage: String,
        required: u32,
    },
}

/// Whether `stage` applies to the request: all of its `when` conditions hold.
///
/// Fail safe: an unknown monthly cost satisfies `minMonthlyCost` (a request that can't be
/// priced gets the extra scrutiny rather than escaping it), and so does a threshold that
/// doesn't parse (the API server's pattern should have refused it).
pub fn stage_applies(stage: &ApprovalStage, facts: &RequestFacts) -> bool {
    let Some(when) = &stage.when else {
        return true;
    };
    let cost_holds = match (&when.min_monthly_cost, facts.monthly_cost) {
        (None, _) => true,
        (Some(_), None) => true,
        (Some(min), Some(cost)) => money(min).is_none_or(|min| cost >= min),
    };
    let types_hold = when.types.is_empty() || when.types.iter().any(|t| facts.types.contains(t));
    let classification_holds =
        when.classification.is_empty() || when.classification.contains(&facts.classification);
    cost_holds && types_hold && classification_holds
}

/// The stages of `policy` that apply to the request, in policy order.
pub fn applicable_stages<'p>(
    policy: &'p ApprovalPolicySpec,
    facts: &RequestFacts,
) -> Vec<&'p ApprovalStage> {
    policy
        .stages
        .iter()
        .filter(|s| stage_applies(s, facts))
        .collect()
}

/// Whether the policy approves the request without any stage: the cost is known and at most
/// `autoApprove.maxMonthlyCost`.
///
/// Safety choice: a `sensitive` request is never approved automatically, however cheap — its
/// data classification, not its price, is what the security stage is there for. An unknown cost
/// or a threshold that doesn't parse never auto-approves either.
pub fn auto_approved(policy: &ApprovalPolicySpec, facts: &RequestFacts) -> bool {
    let Some(rule) = &policy.auto_approve else {
        return false;
    };
    let (Some(cost), Some(max)) = (facts.monthly_cost, money(&rule.max_monthly_cost)) else {
        return false;
    };
    facts.classification != Classification::Sensitive && cost <= max
}

/// Whether one approval counts for `stage` of the request as it is now.
///
/// Checked in this order, and the first failure is the refusal: the binding (uid, generation,
/// plan hash), the stage, four eyes (the requester can never decide on their own request,
/// whatever the policy says), the stage's approvers (a `User` subject matches the name, a
/// `Group` subject any of the approver's groups), and separation of departments (unless the
/// policy's `allowSameDepartment`).
///
/// Rejections are judged by the same rules as approvals: a rejection that doesn't count can't
/// reject.
pub fn judge_approval(
    stage: &ApprovalStage,
    approval: &ApprovalFacts,
    request: &RequestFacts,
    binding: &CurrentBinding,
    sod: &SeparationOfDuties,
) -> Result<(), Refusal> {
    if let Some(refusal) = binding_refusal(approval, binding) {
        return Err(refusal);
    }
    if approval.stage != stage.name {
        return Err(Refusal::WrongStage {
            approved: approval.stage.clone(),
            stage: stage.name.clone(),
        });
    }
    if let Some(refusal) = own_request_refusal(approval, request, &stage.name) {
        return Err(refusal);
    }
    let approver = &approval.approver;
    let may_approve = stage
        .approvers
        .iter()
        .any(|s| s.matches(&approver.user, &approver.groups));
    if !may_approve {
        let approvers = stage
            .approvers
            .iter()
            .map(|s| match s.kind {
                SubjectKind::User => format!("user {}", s.name),
                SubjectKind::Group => format!("group {}", s.name),
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Refusal::NotAnApprover {
            user: approver.user.clone(),
            stage: stage.name.clone(),
            approvers,
        });
    }
    match same_department_refusal(approval, request, same_department_allowed(Some(stage), sod)) {
        Some(refusal) => Err(refusal),
        None => Ok(()),
    }
}

/// The checks of [`judge_approval`] that need neither a stage nor a plan: the request's uid and
/// generation, four eyes, and separation of departments, in that order. For judging an Approval
/// at admission while the request has no plan yet (then there is no plan hash to bind to and no
/// stage to wait in; once there is, [`judge_approval`] judges all of it).
pub fn judge_approver(
    approval: &ApprovalFacts,
    request: &RequestFacts,
    uid: &str,
    generation: i64,
    stage: Option<&ApprovalStage>,
    sod: &SeparationOfDuties,
) -> Result<(), Refusal> {
    let binding = CurrentBinding {
        uid: uid.to_owned(),
        generation,
        plan_hash: approval.bound_plan_hash.clone(),
    };
    if let Some(refusal) = binding_refusal(approval, &binding)
        .or_else(|| own_request_refusal(approval, request, &approval.stage))
        .or_else(|| same_department_refusal(approval, request, same_department_allowed(stage, sod)))
    {
        return Err(refusal);
    }
    Ok(())
}

impl Refusal {
    /// The field of the Approval the refusal is about, as a person finds it in the YAML:
    /// `spec.request.uid`, `spec.request.generation`, `spec.request.planHash`, `spec.stage`, or
    /// the approver annotation (who approves is recorded, not typed).
    pub fn field(&self) -> &'static str {
        match self {
            Self::WrongRequest { .. } => "spec.request.uid",
            Self::StaleGeneration { .. } => "spec.request.generation",
            Self::StalePlan { .. } => "spec.request.planHash",
            Self::WrongStage { .. }
            | Self::StageNotApplicable { .. }
            | Self::NotAnApprover { .. }
            | Self::AlreadyCounted { .. } => "spec.stage",
            Self::OwnRequest { .. } | Self::EditedRequest { .. } | Self::SameDepartment { .. } => {
                "metadata.annotations[yunzhang.io/approver]"
            }
        }
    }
}

/// Four eyes: the requester, and whoever changed the spec, can never decide on the request,
/// whatever the policy says.
fn own_request_refusal(
    approval: &ApprovalFacts,
    request: &RequestFacts,
    stage: &str,
) -> Option<Refusal> {
    let user = approval.approver.user.clone();
    let stage = stage.to_owned();
    if user == request.requester {
        Some(Refusal::OwnRequest { user, stage })
    } else if request.editors.contains(&user) {
        Some(Refusal::EditedRequest { user, stage })
    } else {
        None
    }
}

/// Separation of departments, unless the policy allows same-department approval.
/// Whether an approver of the request's own department may approve: the stage's override, else
/// the policy's rule.
fn same_department_allowed(stage: Option<&ApprovalStage>, sod: &SeparationOfDuties) -> bool {
    stage
        .and_then(|s| s.allow_same_department)
        .unwrap_or(sod.allow_same_department)
}

fn same_department_refusal(
    approval: &ApprovalFacts,
    request: &RequestFacts,
    allowed: bool,
) -> Option<Refusal> {
    let approver = &approval.approver;
    (!allowed && approver.departments.contains(&request.department)).then(|| {
        Refusal::SameDepartment {
            user: approver.user.clone(),
            department: request.department.clone(),
        }
    })
}

/// How far a request has got through its stages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every applicable stage has its required approvals (or no stage applies).
    Approved,
    /// A valid rejection in the stage the request waits in.
    Rejected {
        stage: String,
        by: String,
        comment: Option<String>,
    },
    /// Waiting in stage `index` (1-based) of `of`, with `have` of `need` approvals.
    Waiting {
        stage_name: String,
        index: u32,
        of: u32,
        have: u32,
        need: u32,
    },
}

/// An approval that counts (the shape of `status.approvals`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub stage: String,
    pub approver: String,
    /// The Approval's name.
    pub approval: String,
}

/// An approval that doesn't count, and why: for status ("approval X doesn't count: …").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// The Approval's name.
    pub approval: String,
    pub refusal: Refusal,
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "approval {} doesn't count: {}",
            self.approval, self.refusal
        )
    }
}

/// The progress, the approvals that count and the ones that don't.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    pub progress: Progress,
    /// Valid approvals (decision `Approved`), one per approver and stage, in input order —
    /// including those for stages the request hasn't reached yet: they will count.
    pub counted: Vec<Counted>,
    /// Approvals that don't count, with their refusal, in input order.
    pub ignored: Vec<Ignored>,
}

/// Walk the applicable `stages` in order with the `approvals` made so far.
///
/// - Each stage needs `required` *different* approvers; the same approver twice counts once
///   (the second is reported as [`Refusal::AlreadyCounted`]).
/// - Stages are sequential, but decisions made early for a later stage are kept: they take
///   effect as soon as the stages before it are complete. Approvers don't have to watch for
///   their turn, and nothing is skipped — a later stage still can't complete an earlier one.
/// - A single valid `Rejected` in the stage the request waits in rejects the request, even if
///   the stage also has enough approvals. A rejection for a later stage takes effect when that
///   stage is reached.
/// - The same person may decide in several stages if they are an approver of each.
/// - No applicable stage: approved (the policy asks for none).
pub fn stage_progress(
    stages: &[&ApprovalStage],
    approvals: &[ApprovalFacts],
    request: &RequestFacts,
    binding: &CurrentBinding,
    sod: &SeparationOfDuties,
) -> Tally {
    let mut counted = Vec::new();
    let mut ignored = Vec::new();
    // Per stage: distinct approving users, and the first valid rejection.
    let mut approvers: Vec<Vec<&str>> = vec![Vec::new(); stages.len()];
    let mut rejections: Vec<Option<&ApprovalFacts>> = vec![None; stages.len()];
    for approval in approvals {
        let Some(index) = stages.iter().position(|s| s.name == approval.stage) else {
            ignored.push(Ignored {
                approval: approval.name.clone(),
                refusal: binding_refusal(approval, binding).unwrap_or_else(|| {
                    Refusal::StageNotApplicable {
                        stage: approval.stage.clone(),
                        applicable: if stages.is_empty() {
                            "none".to_owned()
                        } else {
                            stages
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        },
                    }
                }),
            });
            continue;
        };
        let stage = stages[index];
        if let Err(refusal) = judge_approval(stage, approval, request, binding, sod) {
            ignored.push(Ignored {
                approval: approval.name.clone(),
                refusal,
            });
            continue;
        }
        match approval.decision {
            Decision::Rejected => {
                rejections[index].get_or_insert(approval);
            }
            Decision::Approved => {
                let user = approval.approver.user.as_str();
                if approvers[index].contains(&user) {
                    ignored.push(Ignored {
                        approval: approval.name.clone(),
                        refusal: Refusal::AlreadyCounted {
                            user: user.to_owned(),
                            stage: stage.name.clone(),
                            required: stage.required,
                        },
                    });
                } else {
                    approvers[index].push(user);
                    counted.push(Counted {
                        stage: stage.name.clone(),
                        approver: user.to_owned(),
                        approval: approval.name.clone(),
                    });
                }
            }
        }
    }
    let of = u32::try_from(stages.len()).unwrap_or(u32::MAX);
    let mut progress = Progress::Approved;
    for (index, stage) in stages.iter().enumerate() {
        if let Some(rejection) = rejections[index] {
            progress = Progress::Rejected {
                stage: stage.name.clone(),
                by: rejection.approver.user.clone(),
                comment: rejection.comment.clone(),
            };
            break;
        }
        let have = u32::try_from(approvers[index].len()).unwrap_or(u32::MAX);
        // `required` is at least 1 by schema; a 0 that slipped through still asks for one.
        let need = stage.required.max(1);
        if have < need {
            progress = Progress::Waiting {
                stage_name: stage.name.clone(),
                index: u32::try_from(index + 1).unwrap_or(u32::MAX),
                of,
                have,
                need,
            };
            break;
        }
    }
    Tally {
        progress,
        counted,
        ignored,
    }
}

/// The outcome of the policy for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Approved by `autoApprove`, without any stage.
    AutoApproved,
    /// Approved, rejected or waiting, stage by stage.
    Staged(Progress),
}

impl ApprovalOutcome {
    /// Whether the request may go ahead.
    pub fn is_approved(&self) -> bool {
        matches!(self, Self::AutoApproved | Self::Staged(Progress::Approved))
    }
}

/// Everything the controller needs from the policy for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    pub outcome: ApprovalOutcome,
    /// Names of the applicable stages, in order (empty when auto-approved).
    pub stages: Vec<String>,
    pub counted: Vec<Counted>,
    pub ignored: Vec<Ignored>,
}

/// Evaluate `policy` for the request as it is now: auto-approval first, else the stages.
pub fn evaluate(
    policy: &ApprovalPolicySpec,
    request: &RequestFacts,
    binding: &CurrentBinding,
    approvals: &[ApprovalFacts],
) -> Evaluation {
    if auto_approved(policy, request) {
        return Evaluation {
            outcome: ApprovalOutcome::AutoApproved,
            stages: Vec::new(),
            counted: Vec::new(),
            ignored: Vec::new(),
        };
    }
    let stages = applicable_stages(policy, request);
    let tally = stage_progress(
        &stages,
        approvals,
        request,
        binding,
        &policy.separation_of_duties,
    );
    Evaluation {
        outcome: ApprovalOutcome::Staged(tally.progress),
        stages: stages.iter().map(|s| s.name.clone()).collect(),
        counted: tally.counted,
        ignored: tally.ignored,
    }
}

/// The binding part of [`judge_approval`], for approvals whose stage doesn't apply: a stale
/// approval is reported as stale (the more useful message) rather than as misplaced.
fn binding_refusal(approval: &ApprovalFacts, binding: &CurrentBinding) -> Option<Refusal> {
    if approval.bound_uid != binding.uid {
        Some(Refusal::WrongRequest {
            approved: approval.bound_uid.clone(),
            current: binding.uid.clone(),
        })
    } else if approval.bound_generation != binding.generation {
        Some(Refusal::StaleGeneration {
            approved: approval.bound_generation,
            current: binding.generation,
        })
    } else if approval.bound_plan_hash != binding.plan_hash {
        Some(Refusal::StalePlan {
            approved: approval.bound_plan_hash.clone(),
            current: binding.plan_hash.clone(),
        })
    } else {
        None
    }
}

fn money(m: &Money) -> Option<Decimal> {
    parse_money("", m).ok()
}

#[cfg(test)]
mod tests;
