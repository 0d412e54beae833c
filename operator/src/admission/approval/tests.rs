use serde_json::{Value, json};

use super::*;

const UID: &str = "0b6f1c3e-1111-4222-8333-944455556666";

fn hash(c: &str) -> String {
    format!("sha256:{}", c.repeat(64))
}

fn request(generation: i64, status: Value) -> ResourceRequest {
    serde_json::from_value(json!({
        "apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
        "metadata": {"name": "tax-portal", "namespace": "gx-finance", "uid": UID, "generation": generation,
                     "annotations": {"yunzhang.io/requester": "alice", "yunzhang.io/requester-groups": "[\"gx-finance-staff\",\"system:authenticated\"]"}},
        "spec": {"purpose": "测试", "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 2}]},
        "status": status,
    }))
    .unwrap()
}

fn departments() -> Vec<Department> {
    vec![
        serde_json::from_value(json!({
            "apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": "gx-finance"},
            "spec": {"displayName": "财政厅", "code": "11450000MB0000000X",
                     "admins": [{"kind": "User", "name": "carol"}],
                     "members": [{"kind": "Group", "name": "gx-finance-staff"}]}})).unwrap(),
        serde_json::from_value(json!({
            "apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": "gx-office"},
            "spec": {"displayName": "云长办", "code": "11450000MB0000000X", "namespaces": ["gx-office"],
                     "members": [{"kind": "User", "name": "bob"}]}})).unwrap(),
    ]
}

fn policy(allow_same_department: bool) -> ApprovalPolicy {
    serde_json::from_value(json!({
        "apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": "default"},
        "spec": {"separationOfDuties": {"allowSameDepartment": allow_same_department},
                 "stages": [{"name": "department", "approvers": [{"kind": "User", "name": "carol"}, {"kind": "User", "name": "alice"}]},
                            {"name": "cloud-office", "approvers": [{"kind": "Group", "name": "cloud-office"}]}]}}))
    .unwrap()
}

fn approval(uid: &str, generation: i64, plan_hash: &str, stage: &str) -> Approval {
    serde_json::from_value(json!({
        "apiVersion": "yunzhang.io/v1alpha1", "kind": "Approval",
        "metadata": {"name": "ok", "namespace": "gx-finance"},
        "spec": {"request": {"name": "tax-portal", "uid": uid, "generation": generation, "planHash": plan_hash},
                 "stage": stage, "decision": "Approved"}}))
    .unwrap()
}

fn who(user: &str, groups: &[&str]) -> Approver {
    Approver {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    }
}

fn judge(
    approval: &Approval,
    approver: &Approver,
    request: Option<&ResourceRequest>,
    policy: Option<&ApprovalPolicy>,
) -> Result<(), String> {
    let departments = departments();
    judge_new_approval(
        approval,
        "gx-finance",
        approver,
        Observed {
            request,
            departments: &departments,
            policy,
        },
    )
}

#[test]
fn before_a_plan_an_approver_from_another_department_may_approve() {
    let rr = request(2, json!({}));
    let p = policy(false);
    let a = approval(UID, 2, &hash("a"), "cloud-office");
    assert_eq!(
        judge(&a, &who("bob", &["cloud-office"]), Some(&rr), Some(&p)),
        Ok(())
    );
}

#[test]
fn refusals_before_a_plan_name_the_field() {
    let rr = request(2, json!({}));
    let p = policy(false);
    let other_uid = "0b6f1c3e-1111-4222-8333-000000000000";
    let cases: Vec<(&str, Approval, Approver, Option<&ResourceRequest>, String)> = vec![
        (
            "no such request",
            approval(UID, 2, &hash("a"), "department"),
            who("bob", &[]),
            None,
            "spec.request.name: there is no ResourceRequest tax-portal in namespace gx-finance: approve an existing request".into(),
        ),
        (
            "another uid",
            approval(other_uid, 2, &hash("a"), "department"),
            who("bob", &[]),
            Some(&rr),
            format!("spec.request.uid is {other_uid}, but ResourceRequest tax-portal has uid {UID} (it was deleted and created again): look again and approve what you see"),
        ),
        (
            "stale generation",
            approval(UID, 1, &hash("a"), "department"),
            who("bob", &[]),
            Some(&rr),
            "spec.request.generation 1 is stale: the request is at generation 2; look again and approve what you see".into(),
        ),
        (
            "own request",
            approval(UID, 2, &hash("a"), "department"),
            who("alice", &["gx-finance-staff"]),
            Some(&rr),
            "metadata.annotations[yunzhang.io/approver]: alice is the requester and can't decide on their own request (four eyes): ask another approver of stage department".into(),
        ),
        (
            "same department, by group",
            approval(UID, 2, &hash("a"), "department"),
            who("dave", &["gx-finance-staff"]),
            Some(&rr),
            "metadata.annotations[yunzhang.io/approver]: dave belongs to gx-finance, the requesting department, and the policy does not allow same-department approval: ask an approver from another department".into(),
        ),
        (
            "same department, as admin",
            approval(UID, 2, &hash("a"), "department"),
            who("carol", &[]),
            Some(&rr),
            "metadata.annotations[yunzhang.io/approver]: carol belongs to gx-finance, the requesting department, and the policy does not allow same-department approval: ask an approver from another department".into(),
        ),
    ];
    for (what, a, approver, rr, message) in cases {
        assert_eq!(judge(&a, &approver, rr, Some(&p)), Err(message), "{what}");
    }
}

#[test]
fn the_policy_may_allow_same_department_but_never_the_requester() {
    let rr = request(2, json!({}));
    let p = policy(true);
    let a = approval(UID, 2, &hash("a"), "department");
    assert_eq!(judge(&a, &who("carol", &[]), Some(&rr), Some(&p)), Ok(()));
    assert!(
        judge(&a, &who("alice", &[]), Some(&rr), Some(&p))
            .unwrap_err()
            .contains("four eyes")
    );
}

#[test]
fn missing_policy_or_department_refuses() {
    let rr = request(2, json!({}));
    let a = approval(UID, 2, &hash("a"), "department");
    assert_eq!(
        judge(&a, &who("bob", &[]), Some(&rr), None),
        Err("spec.stage: ApprovalPolicy default of Department gx-finance does not exist: ask a platform engineer to create it".into())
    );
    let departments: Vec<Department> = Vec::new();
    let p = policy(false);
    let refused = judge_new_approval(
        &a,
        "gx-finance",
        &who("bob", &[]),
        Observed {
            request: Some(&rr),
            departments: &departments,
            policy: Some(&p),
        },
    );
    assert!(
        refused
            .unwrap_err()
            .starts_with("spec.request.name: namespace gx-finance belongs to no Department")
    );
}

#[test]
fn with_a_plan_the_hash_the_stage_and_its_approvers_are_judged() {
    let rr = request(
        3,
        json!({"plan": {"hash": hash("b"), "add": 1, "change": 0, "destroy": 0},
                               "stage": {"name": "cloud-office", "index": 2, "of": 2}}),
    );
    let p = policy(false);
    let ok = approval(UID, 3, &hash("b"), "cloud-office");
    assert_eq!(
        judge(&ok, &who("bob", &["cloud-office"]), Some(&rr), Some(&p)),
        Ok(())
    );
    assert_eq!(
        judge(
            &approval(UID, 3, &hash("a"), "cloud-office"),
            &who("bob", &["cloud-office"]),
            Some(&rr),
            Some(&p)
        ),
        Err(format!(
            "spec.request.planHash {} is stale: the request's plan is now {}; look again and approve what you see",
            hash("a"),
            hash("b")
        ))
    );
    assert_eq!(
        judge(
            &approval(UID, 3, &hash("b"), "department"),
            &who("bob", &["cloud-office"]),
            Some(&rr),
            Some(&p)
        ),
        Err("spec.stage: the approval is for stage department, not stage cloud-office".into())
    );
    assert_eq!(
        judge(&ok, &who("bob", &[]), Some(&rr), Some(&p)),
        Err("spec.stage: bob is not an approver of stage cloud-office (approvers: group cloud-office): ask one of them to decide".into())
    );
}

#[test]
fn with_a_plan_but_no_stage_yet_the_named_stage_must_exist() {
    let rr = request(
        3,
        json!({"plan": {"hash": hash("b"), "add": 1, "change": 0, "destroy": 0}}),
    );
    let p = policy(false);
    assert_eq!(
        judge(&approval(UID, 3, &hash("b"), "finance"), &who("bob", &[]), Some(&rr), Some(&p)),
        Err("spec.stage: ApprovalPolicy default has no stage finance (its stages: department, cloud-office): approve one of those".into())
    );
    assert_eq!(
        judge(
            &approval(UID, 3, &hash("b"), "cloud-office"),
            &who("bob", &["cloud-office"]),
            Some(&rr),
            Some(&p)
        ),
        Ok(())
    );
}
