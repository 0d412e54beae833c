use std::str::FromStr;

use super::*;
use crate::api::{
    Subject,
    approval_policy::{AutoApprove, StageCondition},
};

const UID: &str = "0b6f3c9e-1111-4222-8333-444455556666";
const PLAN: &str = "sha256:aaaa";

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal literal")
}

fn stage(name: &str, approvers: Vec<Subject>, when: Option<StageCondition>) -> ApprovalStage {
    ApprovalStage {
        name: name.into(),
        approvers,
        required: 1,
        when,
        allow_same_department: None,
    }
}

/// The policy of DESIGN.md: department → cloud office → finance (≥ ¥10,000) → security
/// (sensitive), auto-approval up to ¥500.
fn default_policy() -> ApprovalPolicySpec {
    ApprovalPolicySpec {
        auto_approve: Some(AutoApprove {
            max_monthly_cost: Money("500.00".into()),
        }),
        separation_of_duties: SeparationOfDuties::default(),
        stages: vec![
            stage("department", vec![Subject::group("dept-heads")], None),
            stage("cloud-office", vec![Subject::group("cloud-office")], None),
            stage(
                "finance",
                vec![Subject::group("finance")],
                Some(StageCondition {
                    min_monthly_cost: Some(Money("10000.00".into())),
                    ..Default::default()
                }),
            ),
            stage(
                "security",
                vec![Subject::group("security-office")],
                Some(StageCondition {
                    classification: vec![Classification::Sensitive],
                    ..Default::default()
                }),
            ),
        ],
    }
}

fn request(cost: Option<&str>, classification: Classification) -> RequestFacts {
    RequestFacts {
        monthly_cost: cost.map(dec),
        types: [ResourceType::Ecs].into(),
        classification,
        requester: "alice".into(),
        requester_groups: vec!["gx-finance-staff".into()],
        editors: Vec::new(),
        department: "gx-finance".into(),
    }
}

fn binding() -> CurrentBinding {
    CurrentBinding {
        uid: UID.into(),
        generation: 3,
        plan_hash: PLAN.into(),
    }
}

fn approver(user: &str, groups: &[&str], departments: &[&str]) -> ApproverFacts {
    ApproverFacts {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        departments: departments.iter().map(|d| d.to_string()).collect(),
    }
}

/// A valid approval of `stage` by `user` (in `group`, from another department).
fn approval(name: &str, stage: &str, user: &str, group: &str) -> ApprovalFacts {
    ApprovalFacts {
        name: name.into(),
        stage: stage.into(),
        decision: Decision::Approved,
        comment: None,
        approver: approver(user, &[group], &["gx-bigdata"]),
        bound_uid: UID.into(),
        bound_generation: 3,
        bound_plan_hash: PLAN.into(),
    }
}

fn names(stages: &[&ApprovalStage]) -> Vec<String> {
    stages.iter().map(|s| s.name.clone()).collect()
}

fn tally(policy: &ApprovalPolicySpec, req: &RequestFacts, approvals: &[ApprovalFacts]) -> Tally {
    let stages = applicable_stages(policy, req);
    stage_progress(
        &stages,
        approvals,
        req,
        &binding(),
        &policy.separation_of_duties,
    )
}

// ---- stage conditions ---------------------------------------------------------------------

#[test]
fn cost_threshold_applies_at_and_above_the_minimum() {
    let p = default_policy();
    let below = applicable_stages(&p, &request(Some("9999.99"), Classification::Internal));
    let equal = applicable_stages(&p, &request(Some("10000"), Classification::Internal));
    let above = applicable_stages(&p, &request(Some("10000.01"), Classification::Internal));
    assert_eq!(names(&below), ["department", "cloud-office"]);
    assert_eq!(names(&equal), ["department", "cloud-office", "finance"]);
    assert_eq!(names(&above), ["department", "cloud-office", "finance"]);
}

#[test]
fn unknown_cost_applies_cost_stages() {
    let p = default_policy();
    let stages = applicable_stages(&p, &request(None, Classification::Internal));
    assert_eq!(names(&stages), ["department", "cloud-office", "finance"]);
}

#[test]
fn unparseable_minimum_applies() {
    let s = stage(
        "finance",
        vec![Subject::group("finance")],
        Some(StageCondition {
            min_monthly_cost: Some(Money("lots".into())),
            ..Default::default()
        }),
    );
    assert!(stage_applies(
        &s,
        &request(Some("1"), Classification::Internal)
    ));
}

#[test]
fn classification_condition() {
    let p = default_policy();
    let sensitive = applicable_stages(&p, &request(Some("100"), Classification::Sensitive));
    let public = applicable_stages(&p, &request(Some("100"), Classification::Public));
    assert_eq!(
        names(&sensitive),
        ["department", "cloud-office", "security"]
    );
    assert_eq!(names(&public), ["department", "cloud-office"]);
}

#[test]
fn types_condition_matches_any_item_type() {
    let s = stage(
        "dba",
        vec![Subject::group("dba")],
        Some(StageCondition {
            types: vec![ResourceType::Rds, ResourceType::Oss],
            ..Default::default()
        }),
    );
    let mut req = request(Some("100"), Classification::Internal);
    assert!(!stage_applies(&s, &req));
    req.types.insert(ResourceType::Rds);
    assert!(stage_applies(&s, &req));
}

#[test]
fn all_conditions_of_a_stage_must_hold() {
    let s = stage(
        "big-sensitive-db",
        vec![Subject::group("x")],
        Some(StageCondition {
            min_monthly_cost: Some(Money("1000".into())),
            types: vec![ResourceType::Rds],
            classification: vec![Classification::Sensitive],
        }),
    );
    let mut req = request(Some("5000"), Classification::Sensitive);
    req.types = [ResourceType::Rds].into();
    assert!(stage_applies(&s, &req));
    req.monthly_cost = Some(dec("999.99"));
    assert!(!stage_applies(&s, &req));
    req.monthly_cost = Some(dec("5000"));
    req.classification = Classification::Internal;
    assert!(!stage_applies(&s, &req));
    req.classification = Classification::Sensitive;
    req.types = [ResourceType::Ecs].into();
    assert!(!stage_applies(&s, &req));
}

// ---- auto-approval ------------------------------------------------------------------------

#[test]
fn auto_approval_up_to_and_including_the_threshold() {
    let p = default_policy();
    assert!(auto_approved(
        &p,
        &request(Some("499.99"), Classification::Internal)
    ));
    assert!(auto_approved(
        &p,
        &request(Some("500"), Classification::Internal)
    ));
    assert!(!auto_approved(
        &p,
        &request(Some("500.01"), Classification::Internal)
    ));
}

#[test]
fn no_auto_approval_for_unknown_cost_sensitive_data_or_no_rule() {
    let p = default_policy();
    assert!(!auto_approved(&p, &request(None, Classification::Internal)));
    assert!(!auto_approved(
        &p,
        &request(Some("1"), Classification::Sensitive)
    ));
    let no_rule = ApprovalPolicySpec {
        auto_approve: None,
        ..default_policy()
    };
    assert!(!auto_approved(
        &no_rule,
        &request(Some("0"), Classification::Public)
    ));
}

#[test]
fn evaluate_auto_approves_without_stages() {
    let p = default_policy();
    let e = evaluate(
        &p,
        &request(Some("120"), Classification::Internal),
        &binding(),
        &[],
    );
    assert_eq!(e.outcome, ApprovalOutcome::AutoApproved);
    assert!(e.outcome.is_approved());
    assert!(e.stages.is_empty());
}

#[test]
fn evaluate_names_the_applicable_stages() {
    let p = default_policy();
    let e = evaluate(
        &p,
        &request(Some("12000"), Classification::Sensitive),
        &binding(),
        &[],
    );
    assert_eq!(
        e.stages,
        ["department", "cloud-office", "finance", "security"]
    );
    assert_eq!(
        e.outcome,
        ApprovalOutcome::Staged(Progress::Waiting {
            stage_name: "department".into(),
            index: 1,
            of: 4,
            have: 0,
            need: 1
        })
    );
    assert!(!e.outcome.is_approved());
}

// ---- judging one approval -----------------------------------------------------------------

fn judge(a: &ApprovalFacts) -> Result<(), Refusal> {
    let p = default_policy();
    let stage = p
        .stages
        .iter()
        .find(|s| s.name == a.stage)
        .expect("stage of the policy");
    judge_approval(
        stage,
        a,
        &request(Some("12000"), Classification::Internal),
        &binding(),
        &p.separation_of_duties,
    )
}

#[test]
fn a_valid_approval_counts() {
    assert_eq!(judge(&approval("a1", "finance", "fay", "finance")), Ok(()));
}

#[test]
fn user_subjects_match_by_name() {
    let s = stage("cto", vec![Subject::user("carol")], None);
    let req = request(Some("1"), Classification::Internal);
    let sod = SeparationOfDuties::default();
    let mut a = approval("a1", "cto", "carol", "nobody");
    assert_eq!(judge_approval(&s, &a, &req, &binding(), &sod), Ok(()));
    a.approver.user = "mallory".into();
    assert!(matches!(
        judge_approval(&s, &a, &req, &binding(), &sod),
        Err(Refusal::NotAnApprover { .. })
    ));
}

/// Each refusal, with the exact message a person reads in status.
#[test]
fn refusals_and_their_messages() {
    let base = approval("a1", "finance", "fay", "finance");
    let cases: Vec<(&str, ApprovalFacts, &str)> = vec![
        (
            "wrong request uid",
            ApprovalFacts {
                bound_uid: "99999999-1111-4222-8333-444455556666".into(),
                ..base.clone()
            },
            "approved request uid 99999999-1111-4222-8333-444455556666 but this request has uid 0b6f3c9e-1111-4222-8333-444455556666 (it was deleted and created again): approve the current request",
        ),
        (
            "stale generation",
            ApprovalFacts {
                bound_generation: 2,
                ..base.clone()
            },
            "approved generation 2 but the request is now at generation 3: review the new spec and approve again",
        ),
        (
            "stale plan",
            ApprovalFacts {
                bound_plan_hash: "sha256:bbbb".into(),
                ..base.clone()
            },
            "approved plan sha256:bbbb but the plan is now sha256:aaaa: review the new plan and approve again",
        ),
        (
            "not an approver",
            ApprovalFacts {
                approver: approver("mallory", &["gx-bigdata-staff"], &["gx-bigdata"]),
                ..base.clone()
            },
            "mallory is not an approver of stage finance (approvers: group finance): ask one of them to decide",
        ),
        (
            "own request",
            ApprovalFacts {
                approver: approver("alice", &["finance"], &[]),
                ..base.clone()
            },
            "alice is the requester and can't decide on their own request (four eyes): ask another approver of stage finance",
        ),
        (
            "same department",
            ApprovalFacts {
                approver: approver("fay", &["finance"], &["gx-finance"]),
                ..base.clone()
            },
            "fay belongs to gx-finance, the requesting department, and the policy does not allow same-department approval: ask an approver from another department",
        ),
    ];
    for (what, a, message) in cases {
        let refusal = judge(&a).expect_err(what);
        assert_eq!(refusal.to_string(), message, "{what}");
    }
}

#[test]
fn wrong_stage_is_refused() {
    let p = default_policy();
    let refusal = judge_approval(
        &p.stages[0],
        &approval("a1", "finance", "fay", "finance"),
        &request(Some("12000"), Classification::Internal),
        &binding(),
        &p.separation_of_duties,
    )
    .expect_err("wrong stage");
    assert_eq!(
        refusal.to_string(),
        "the approval is for stage finance, not stage department"
    );
}

#[test]
fn same_department_allowed_when_the_policy_says_so() {
    let mut p = default_policy();
    p.separation_of_duties.allow_same_department = true;
    let a = ApprovalFacts {
        approver: approver("fay", &["finance"], &["gx-finance"]),
        ..approval("a1", "finance", "fay", "finance")
    };
    let req = request(Some("12000"), Classification::Internal);
    assert_eq!(
        judge_approval(&p.stages[2], &a, &req, &binding(), &p.separation_of_duties),
        Ok(())
    );
}

#[test]
fn four_eyes_holds_whatever_the_policy() {
    let mut p = default_policy();
    p.separation_of_duties.allow_same_department = true;
    // The requester is even named as an approver.
    p.stages[2].approvers.push(Subject::user("alice"));
    let a = ApprovalFacts {
        approver: approver("alice", &["finance"], &["gx-finance"]),
        ..approval("a1", "finance", "alice", "finance")
    };
    let req = request(Some("12000"), Classification::Internal);
    assert!(matches!(
        judge_approval(&p.stages[2], &a, &req, &binding(), &p.separation_of_duties),
        Err(Refusal::OwnRequest { .. })
    ));
}

#[test]
fn whoever_changed_the_spec_counts_as_a_requester() {
    let p = default_policy();
    let a = ApprovalFacts {
        approver: approver("wang", &["dept-heads"], &[]),
        ..approval("a1", "department", "wang", "department")
    };
    let mut req = request(Some("12000"), Classification::Internal);
    req.editors = vec!["wang".into()];
    let refused = judge_approval(&p.stages[0], &a, &req, &binding(), &p.separation_of_duties);
    assert!(
        matches!(&refused, Err(Refusal::EditedRequest { user, .. }) if user == "wang"),
        "{refused:?}"
    );
    req.editors = vec!["li".into()];
    assert!(judge_approval(&p.stages[0], &a, &req, &binding(), &p.separation_of_duties).is_ok());
}

// ---- progress -----------------------------------------------------------------------------

fn waiting(stage: &str, index: u32, of: u32, have: u32, need: u32) -> Progress {
    Progress::Waiting {
        stage_name: stage.into(),
        index,
        of,
        have,
        need,
    }
}

#[test]
fn multi_stage_progression_department_finance_security() {
    let p = default_policy();
    let req = request(Some("12000"), Classification::Sensitive);
    let mut approvals = vec![];
    assert_eq!(
        tally(&p, &req, &approvals).progress,
        waiting("department", 1, 4, 0, 1)
    );
    approvals.push(approval("a1", "department", "dan", "dept-heads"));
    assert_eq!(
        tally(&p, &req, &approvals).progress,
        waiting("cloud-office", 2, 4, 0, 1)
    );
    approvals.push(approval("a2", "cloud-office", "olga", "cloud-office"));
    assert_eq!(
        tally(&p, &req, &approvals).progress,
        waiting("finance", 3, 4, 0, 1)
    );
    approvals.push(approval("a3", "finance", "fay", "finance"));
    assert_eq!(
        tally(&p, &req, &approvals).progress,
        waiting("security", 4, 4, 0, 1)
    );
    approvals.push(approval("a4", "security", "sam", "security-office"));
    let t = tally(&p, &req, &approvals);
    assert_eq!(t.progress, Progress::Approved);
    assert_eq!(t.counted.len(), 4);
    assert!(t.ignored.is_empty());
    assert_eq!(
        t.counted[2],
        Counted {
            stage: "finance".into(),
            approver: "fay".into(),
            approval: "a3".into()
        }
    );
}

#[test]
fn later_stage_approvals_made_early_count_once_earlier_stages_complete() {
    let p = default_policy();
    let req = request(Some("12000"), Classification::Internal);
    let early = vec![
        approval("a3", "finance", "fay", "finance"),
        approval("a2", "cloud-office", "olga", "cloud-office"),
    ];
    // The department stage still waits: nothing is skipped.
    assert_eq!(
        tally(&p, &req, &early).progress,
        waiting("department", 1, 3, 0, 1)
    );
    let mut all = early;
    all.push(approval("a1", "department", "dan", "dept-heads"));
    assert_eq!(tally(&p, &req, &all).progress, Progress::Approved);
}

#[test]
fn required_two_needs_two_distinct_approvers() {
    let mut p = default_policy();
    p.stages[0].required = 2;
    let req = request(Some("1000"), Classification::Internal);
    let twice = vec![
        approval("a1", "department", "dan", "dept-heads"),
        approval("a2", "department", "dan", "dept-heads"),
    ];
    let t = tally(&p, &req, &twice);
    assert_eq!(t.progress, waiting("department", 1, 2, 1, 2));
    assert_eq!(t.counted.len(), 1);
    assert_eq!(
        t.ignored[0].to_string(),
        "approval a2 doesn't count: dan already approved stage department: each approver counts once, the stage needs 2 different approvers"
    );
    let mut two = twice;
    two.push(approval("a3", "department", "dora", "dept-heads"));
    assert_eq!(
        tally(&p, &req, &two).progress,
        waiting("cloud-office", 2, 2, 0, 1)
    );
}

#[test]
fn a_rejection_in_the_current_stage_rejects() {
    let p = default_policy();
    let req = request(Some("12000"), Classification::Internal);
    let approvals = vec![
        approval("a1", "department", "dan", "dept-heads"),
        approval("a2", "cloud-office", "olga", "cloud-office"),
        ApprovalFacts {
            decision: Decision::Rejected,
            comment: Some("超出年度预算".into()),
            ..approval("a3", "finance", "fay", "finance")
        },
        // Another finance approver approving doesn't outweigh the rejection.
        approval("a4", "finance", "fred", "finance"),
    ];
    assert_eq!(
        tally(&p, &req, &approvals).progress,
        Progress::Rejected {
            stage: "finance".into(),
            by: "fay".into(),
            comment: Some("超出年度预算".into())
        }
    );
}

#[test]
fn a_rejection_for_a_later_stage_waits_for_its_stage() {
    let p = default_policy();
    let req = request(Some("12000"), Classification::Internal);
    let mut approvals = vec![ApprovalFacts {
        decision: Decision::Rejected,
        ..approval("r1", "finance", "fay", "finance")
    }];
    assert_eq!(
        tally(&p, &req, &approvals).progress,
        waiting("department", 1, 3, 0, 1)
    );
    approvals.push(approval("a1", "department", "dan", "dept-heads"));
    approvals.push(approval("a2", "cloud-office", "olga", "cloud-office"));
    assert!(matches!(
        tally(&p, &req, &approvals).progress,
        Progress::Rejected { ref stage, .. } if stage == "finance"
    ));
}

#[test]
fn an_invalid_rejection_does_not_reject() {
    let p = default_policy();
    let req = request(Some("1000"), Classification::Internal);
    let approvals = vec![
        // The requester can't reject their own request either; retiring it is how they withdraw.
        ApprovalFacts {
            decision: Decision::Rejected,
            approver: approver("alice", &["dept-heads"], &[]),
            ..approval("r1", "department", "alice", "dept-heads")
        },
        // A stale rejection no longer counts.
        ApprovalFacts {
            decision: Decision::Rejected,
            bound_generation: 2,
            ..approval("r2", "department", "dan", "dept-heads")
        },
    ];
    let t = tally(&p, &req, &approvals);
    assert_eq!(t.progress, waiting("department", 1, 2, 0, 1));
    assert_eq!(t.ignored.len(), 2);
}

#[test]
fn invalid_approvals_are_ignored_and_reported() {
    let p = default_policy();
    let req = request(Some("1000"), Classification::Internal);
    let approvals = vec![
        ApprovalFacts {
            bound_generation: 2,
            ..approval("old", "department", "dan", "dept-heads")
        },
        approval("misplaced", "security", "sam", "security-office"),
        ApprovalFacts {
            bound_plan_hash: "sha256:bbbb".into(),
            ..approval("stale-elsewhere", "finance", "fay", "finance")
        },
        approval("ok", "department", "dora", "dept-heads"),
    ];
    let t = tally(&p, &req, &approvals);
    assert_eq!(t.progress, waiting("cloud-office", 2, 2, 0, 1));
    let messages: Vec<String> = t.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "approval old doesn't count: approved generation 2 but the request is now at generation 3: review the new spec and approve again",
            "approval misplaced doesn't count: stage security does not apply to this request (its stages: department, cloud-office): approve one of those stages",
            "approval stale-elsewhere doesn't count: approved plan sha256:bbbb but the plan is now sha256:aaaa: review the new plan and approve again",
        ]
    );
    assert_eq!(t.counted.len(), 1);
}

#[test]
fn no_applicable_stage_is_approved() {
    let p = ApprovalPolicySpec {
        auto_approve: None,
        separation_of_duties: SeparationOfDuties::default(),
        stages: vec![stage(
            "security",
            vec![Subject::group("security-office")],
            Some(StageCondition {
                classification: vec![Classification::Sensitive],
                ..Default::default()
            }),
        )],
    };
    let t = tally(&p, &request(Some("1"), Classification::Public), &[]);
    assert_eq!(t.progress, Progress::Approved);
}

#[test]
fn a_stage_may_allow_its_own_department_while_the_policy_does_not() {
    let mut head_stage = stage("department", vec![Subject::group("dept-heads")], None);
    let approval = ApprovalFacts {
        name: "a".into(),
        stage: "department".into(),
        decision: Decision::Approved,
        comment: None,
        approver: ApproverFacts {
            user: "head".into(),
            groups: vec!["dept-heads".into()],
            departments: vec!["gx-finance".into()],
        },
        bound_uid: "uid".into(),
        bound_generation: 1,
        bound_plan_hash: PLAN.into(),
    };
    let request = RequestFacts {
        requester: "member".into(),
        department: "gx-finance".into(),
        ..RequestFacts::default()
    };
    let binding = CurrentBinding {
        uid: "uid".into(),
        generation: 1,
        plan_hash: PLAN.into(),
    };
    let strict = SeparationOfDuties {
        allow_same_department: false,
    };
    assert!(matches!(
        judge_approval(&head_stage, &approval, &request, &binding, &strict),
        Err(Refusal::SameDepartment { .. })
    ));
    head_stage.allow_same_department = Some(true);
    assert_eq!(
        judge_approval(&head_stage, &approval, &request, &binding, &strict),
        Ok(())
    );
    // And the other way round: a stage can be stricter than its policy.
    head_stage.allow_same_department = Some(false);
    let lenient = SeparationOfDuties {
        allow_same_department: true,
    };
    assert!(judge_approval(&head_stage, &approval, &request, &binding, &lenient).is_err());
}
