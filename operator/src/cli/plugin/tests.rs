use super::*;

/// A request as an approver sees it in stage 2 of 3.
fn awaiting() -> ResourceRequest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "yunzhang.io/v1alpha1",
        "kind": "ResourceRequest",
        "metadata": {
            "name": "tax-portal", "namespace": "gx-finance", "generation": 3,
            "uid": "0b5e8a54-6f4e-4c55-9d0f-3c1f7a3e2b10"
        },
        "spec": {
            "purpose": "非税收入管理系统上云", "classification": "internal",
            "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 2}]
        },
        "status": {
            "observedGeneration": 3,
            "phase": "AwaitingApproval",
            "message": "waiting for stage finance (2 of 3)",
            "requester": "alice",
            "estimate": {"monthly": "12345.60", "monthlyDelta": "-100.00", "currency": "CNY"},
            "plan": {"hash": format!("sha256:{}", "ab".repeat(32)), "add": 3, "change": 0,
                     "destroy": 1, "configMap": "tax-portal-plan"},
            "stage": {"name": "finance", "index": 2, "of": 3},
            "approvals": [{"stage": "department", "approver": "bob", "approval": "tax-portal-x7k2p"}],
            "conditions": [{"type": "Ready", "status": "False", "reason": "AwaitingApproval",
                            "message": "stage finance", "lastTransitionTime": "2026-03-01T02:00:00Z"}]
        }
    }))
    .unwrap()
}

fn with_status(f: impl FnOnce(&mut crate::api::ResourceRequestStatus)) -> ResourceRequest {
    let mut rr = awaiting();
    f(rr.status.as_mut().unwrap());
    rr
}

#[test]
fn approval_binds_what_the_approver_sees() {
    let spec = approval_for(&awaiting(), Decision::Approved, None, Some("预算已核")).unwrap();
    assert_eq!(
        spec,
        ApprovalSpec {
            request: RequestBinding {
                name: "tax-portal".into(),
                uid: "0b5e8a54-6f4e-4c55-9d0f-3c1f7a3e2b10".into(),
                generation: 3,
                plan_hash: format!("sha256:{}", "ab".repeat(32)),
            },
            stage: "finance".into(),
            decision: Decision::Approved,
            comment: Some("预算已核".into()),
        }
    );
    let rejected = approval_for(&awaiting(), Decision::Rejected, Some("security"), None).unwrap();
    assert_eq!(rejected.stage, "security", "--stage wins");
    assert_eq!(rejected.decision, Decision::Rejected);
}

#[test]
fn refusals_say_the_phase_and_what_it_waits_for() {
    let active = with_status(|s| s.phase = Some(Phase::Active));
    assert_eq!(
        approval_for(&active, Decision::Approved, None, None)
            .unwrap_err()
            .to_string(),
        "tax-portal is Active, not AwaitingApproval: it is online; a spec change would ask for approval again"
    );
    let quota = with_status(|s| {
        s.phase = Some(Phase::QuotaExceeded);
        s.plan = None;
    });
    assert_eq!(
        approval_for(&quota, Decision::Approved, None, None)
            .unwrap_err()
            .to_string(),
        "tax-portal is QuotaExceeded, not AwaitingApproval: it waits for quota to free up (or a smaller spec); nothing to approve yet"
    );
    let unplanned = with_status(|s| s.plan = None);
    assert_eq!(
        approval_for(&unplanned, Decision::Approved, None, None)
            .unwrap_err()
            .to_string(),
        "tax-portal has no plan yet (status.plan.hash is empty): wait until the operator has planned generation 3, then look at it with `kubectl yunzhang status tax-portal`"
    );
    let stale = with_status(|s| s.observed_generation = Some(2));
    assert_eq!(
        approval_for(&stale, Decision::Approved, None, None)
            .unwrap_err()
            .to_string(),
        "tax-portal was changed (generation 3) after its plan was made (for generation 2): wait for the new plan and look at it again"
    );
    let no_stage = with_status(|s| s.stage = None);
    assert!(
        approval_for(&no_stage, Decision::Approved, None, None)
            .unwrap_err()
            .to_string()
            .contains("pass --stage NAME")
    );
    assert!(approval_for(&no_stage, Decision::Approved, Some("finance"), None).is_ok());
    let changing = with_status(|s| s.phase = Some(Phase::Changing));
    assert!(approval_for(&changing, Decision::Approved, None, None).is_ok());
}

#[test]
fn decided_text_shows_what_was_approved() {
    let rr = awaiting();
    let spec = approval_for(&rr, Decision::Approved, None, Some("预算已核")).unwrap();
    insta::assert_snapshot!(decided_text(&rr, &spec, "tax-portal-q8w2z"), @r"
    Approved gx-finance/tax-portal, as shown:
      generation: 3
      plan:       sha256:abababababababababababababababababababababababababababababababab
                  3 to add, 0 to change, 1 to destroy
      stage:      finance (2 of 3)
      estimate:   ¥12345.60/month (-¥100.00 vs running)
      comment:    预算已核
    Approval tax-portal-q8w2z created. It counts only while the request keeps this generation and plan.
    ");
}

fn event(reason: &str, message: &str, at: &str, count: Option<i32>) -> Event {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("tax-portal.{reason}"), "namespace": "gx-finance"},
        "involvedObject": {"kind": "ResourceRequest", "name": "tax-portal"},
        "type": "Normal", "reason": reason, "message": message,
        "lastTimestamp": at, "count": count
    }))
    .unwrap()
}

#[test]
fn status_text_shows_everything_an_approver_asks() {
    let events = [
        event(
            "AwaitingApproval",
            "stage finance",
            "2026-03-01T02:05:00Z",
            None,
        ),
        event(
            "QuotaReserved",
            "reserved 4 vcpu",
            "2026-03-01T02:00:00Z",
            Some(2),
        ),
    ];
    insta::assert_snapshot!(status_text(&awaiting(), Ok(&events)), @r"
    Request:    gx-finance/tax-portal (generation 3)
    Phase:      AwaitingApproval: it waits for approvals
    Message:    waiting for stage finance (2 of 3)
    Stage:      finance (2 of 3)
    Approvals:  department by bob (tax-portal-x7k2p)
    Plan:       3 to add, 0 to change, 1 to destroy; sha256:abababababababababababababababababababababababababababababababab (ConfigMap tax-portal-plan)
    Estimate:   ¥12345.60/month (-¥100.00 vs running)
    Requester:  alice
    Conditions:
      Ready        False  AwaitingApproval: stage finance
    History:
      2026-03-01 10:00:00+08:00  Normal  QuotaReserved: reserved 4 vcpu (x2)
      2026-03-01 10:05:00+08:00  Normal  AwaitingApproval: stage finance
    ");
}

#[test]
fn status_text_of_a_new_request_without_events_access() {
    let mut rr = awaiting();
    rr.status = None;
    rr.spec.lifecycle = DesiredLifecycle::Retired;
    insta::assert_snapshot!(status_text(&rr, Err("you may not list events in namespace gx-finance")), @r"
    Request:    gx-finance/tax-portal (generation 3)
    Phase:      Pending: the operator has not checked quota and planned it yet
    Observed:   status describes generation none; the operator has not caught up
    Lifecycle:  Retired (exit requested)
    Approvals:  none that count
    Plan:       not planned yet
    History:
      (you may not list events in namespace gx-finance)
    ");
}

#[test]
fn retire_text_says_what_happens_next() {
    assert_eq!(
        retire_text(&awaiting(), false),
        "gx-finance/tax-portal: spec.lifecycle set to Retired.\nNext: the operator destroys its \
         resources (phase Exiting), closes billing and releases its quota (phase Exited). Follow \
         it with `kubectl yunzhang status tax-portal -n gx-finance`.\n"
    );
    assert!(
        retire_text(&awaiting(), true).starts_with("gx-finance/tax-portal is already retiring")
    );
}

#[test]
fn plugin_mode_follows_the_program_name() {
    use std::ffi::OsStr;
    assert!(invoked_as_plugin(OsStr::new("kubectl-yunzhang")));
    assert!(invoked_as_plugin(OsStr::new(
        "/home/u/.local/bin/kubectl-yunzhang"
    )));
    assert!(!invoked_as_plugin(OsStr::new("/usr/bin/yunzhang")));
    assert!(!invoked_as_plugin(OsStr::new("kubectl")));
}

#[test]
fn plugin_arguments_parse() {
    use clap::Parser;
    let cli = PluginCli::try_parse_from([
        "kubectl-yunzhang",
        "approve",
        "tax-portal",
        "-n",
        "gx-finance",
        "--comment",
        "ok",
        "--stage",
        "finance",
    ])
    .unwrap();
    match cli.command {
        PluginCommand::Approve(a) => {
            assert_eq!(a.target.request, "tax-portal");
            assert_eq!(a.target.namespace.as_deref(), Some("gx-finance"));
            assert_eq!(a.comment.as_deref(), Some("ok"));
            assert_eq!(a.stage.as_deref(), Some("finance"));
        }
        other => panic!("parsed as {other:?}"),
    }
    assert!(PluginCli::try_parse_from(["kubectl-yunzhang", "crd"]).is_err());
}

#[test]
fn migration_advance_goes_forward_or_rolls_back_and_never_past_a_final_phase() {
    use crate::api::migration_workload::{MigrationGate as G, MigrationPhase as P};
    let mw = |phase: P| {
        let mut mw: MigrationWorkload = serde_json::from_value(serde_json::json!({
            "apiVersion": "yunzhang.io/v1alpha1", "kind": "MigrationWorkload",
            "metadata": {"name": "nontax-legacy", "namespace": "gx-finance"},
            "spec": {"system": {"name": "非税收入管理系统", "code": "GXCZ-SYS-004"}, "strategy": "rehost"},
        }))
        .expect("workload");
        mw.status = Some(crate::api::migration_workload::MigrationWorkloadStatus {
            phase: Some(phase),
            ..Default::default()
        });
        mw
    };
    assert_eq!(advance_refusal(&mw(P::Migrating), G::CutOver), None);
    assert_eq!(advance_refusal(&mw(P::Planned), G::Decommissioned), None);
    assert_eq!(advance_refusal(&mw(P::Verified), G::RolledBack), None);
    assert_eq!(
        advance_refusal(&mw(P::Verified), G::CutOver).as_deref(),
        Some("nontax-legacy is already Verified: advance to a later phase, or to RolledBack")
    );
    assert_eq!(
        advance_refusal(&mw(P::Decommissioned), G::RolledBack).as_deref(),
        Some("nontax-legacy is Decommissioned, which is final")
    );
    assert!(parse_gate("Migrating").is_err());
    assert_eq!(parse_gate("CutOver"), Ok(G::CutOver));
}

#[test]
fn force_exit_ends_only_a_destroy_that_failed() {
    use crate::api::resource_request::RunRecord;
    let destroy = |state: RunPhase| {
        with_status(|s| {
            s.phase = Some(Phase::Exiting);
            s.destroy = Some(Box::new(RunRecord {
                generation: 3,
                plan_hash: None,
                state,
                message: Some("provider gone".into()),
                attempts: 4,
                started_at: "2026-03-01T02:00:00Z".into(),
                finished_at: None,
                metered: Vec::new(),
            }));
        })
    };
    assert_eq!(
        force_exit_refusal(&destroy(RunPhase::Failed), "provider decommissioned"),
        None
    );
    assert_eq!(
        force_exit_refusal(&destroy(RunPhase::Running), "provider decommissioned").as_deref(),
        Some(
            "gx-finance/tax-portal is Exiting and its destroy has not failed: it ends by itself; \
             force-exit only ends a destroy that keeps failing"
        )
    );
    assert_eq!(
        force_exit_refusal(&awaiting(), "provider decommissioned").as_deref(),
        Some(
            "gx-finance/tax-portal is AwaitingApproval, not Exiting with a failed destroy: retire \
             or delete it first (force-exit only ends a destroy that keeps failing)"
        )
    );
    assert!(
        force_exit_refusal(&destroy(RunPhase::Failed), "  ")
            .is_some_and(|r| r.starts_with("--reason must say why"))
    );
    let text = force_exit_text(&destroy(RunPhase::Failed), "ops-lee", false);
    assert!(
        text.starts_with("gx-finance/tax-portal: force-exit recorded as ops-lee.\nNext: the operator closes billing"),
        "{text}"
    );
}
