use proptest::prelude::*;

use super::*;
use crate::lifecycle::policy::{ApprovalOutcome, Progress};

const H1: &str = "sha256:1111";
const H2: &str = "sha256:2222";

use Action::*;
use Phase::*;

/// A new request at generation 1 with nothing done yet.
fn rr() -> Input {
    Input {
        phase: None,
        observed_generation: None,
        spec_generation: 1,
        desired: DesiredLifecycle::Active,
        deleting: false,
        quota: QuotaState::None,
        plan: PlanState::NotPlanned,
        approval: None,
        provisioning: RunState::NotStarted,
        destroy: RunState::NotStarted,
        approved_generation: None,
        applied_generation: None,
        filed: false,
        billing_open: false,
        settled: true,
        force_exit: None,
    }
}

fn forced() -> Option<ForceExit> {
    Some(ForceExit {
        by: "platform-admin".into(),
        reason: "provider decommissioned".into(),
    })
}

fn planned(generation: i64, hash: &str) -> PlanState {
    PlanState::Planned {
        generation,
        hash: hash.into(),
    }
}

fn judged(generation: i64, hash: &str, outcome: ApprovalOutcome) -> Option<ApprovalState> {
    Some(ApprovalState {
        generation,
        plan_hash: hash.into(),
        outcome,
    })
}

fn approved(generation: i64, hash: &str) -> Option<ApprovalState> {
    judged(
        generation,
        hash,
        ApprovalOutcome::Staged(Progress::Approved),
    )
}

fn auto(generation: i64, hash: &str) -> Option<ApprovalState> {
    judged(generation, hash, ApprovalOutcome::AutoApproved)
}

fn waiting(generation: i64, hash: &str) -> Option<ApprovalState> {
    judged(
        generation,
        hash,
        ApprovalOutcome::Staged(Progress::Waiting {
            stage_name: "finance".into(),
            index: 2,
            of: 3,
            have: 0,
            need: 1,
        }),
    )
}

fn rejected(generation: i64, hash: &str) -> Option<ApprovalState> {
    judged(
        generation,
        hash,
        ApprovalOutcome::Staged(Progress::Rejected {
            stage: "finance".into(),
            by: "fay".into(),
            comment: Some("超出年度预算".into()),
        }),
    )
}

fn apply(hash: &str, generation: i64) -> Action {
    Apply {
        plan_hash: hash.into(),
        generation,
    }
}

/// Waiting for approval of generation 1, quota reserved, plan H1.
fn awaiting() -> Input {
    Input {
        phase: Some(AwaitingApproval),
        observed_generation: Some(1),
        quota: QuotaState::Reserved,
        plan: planned(1, H1),
        approval: waiting(1, H1),
        ..rr()
    }
}

/// Approved generation 1, apply handed over.
fn provisioning() -> Input {
    Input {
        phase: Some(Provisioning),
        approval: approved(1, H1),
        approved_generation: Some(1),
        filed: true,
        ..awaiting()
    }
}

/// Online at generation 1.
fn active() -> Input {
    Input {
        phase: Some(Active),
        quota: QuotaState::Used,
        provisioning: RunState::Succeeded,
        applied_generation: Some(1),
        billing_open: true,
        ..provisioning()
    }
}

/// Online at generation 1, spec edited to generation 2, change quota reserved and planned (H2).
fn changing() -> Input {
    Input {
        phase: Some(Changing),
        observed_generation: Some(2),
        spec_generation: 2,
        quota: QuotaState::ChangeReserved,
        plan: planned(2, H2),
        approval: waiting(2, H2),
        ..active()
    }
}

/// Change to generation 2 approved and handed to apply.
fn applying_change() -> Input {
    Input {
        approval: approved(2, H2),
        approved_generation: Some(2),
        provisioning: RunState::Running,
        ..changing()
    }
}

fn exiting() -> Input {
    Input {
        phase: Some(Exiting),
        desired: DesiredLifecycle::Retired,
        ..active()
    }
}

fn exited() -> Input {
    Input {
        phase: Some(Exited),
        quota: QuotaState::None,
        destroy: RunState::Succeeded,
        billing_open: false,
        ..exiting()
    }
}

struct Row {
    transition: &'static str,
    input: Input,
    phase: Phase,
    /// Without `Notify`, which is checked separately.
    actions: Vec<Action>,
}

fn row(transition: &'static str, input: Input, phase: Phase, actions: Vec<Action>) -> Row {
    Row {
        transition,
        input,
        phase,
        actions,
    }
}

fn transitions() -> Vec<Row> {
    vec![
        // ---- Pending, quota ----
        row(
            "new request → Pending, reserve quota",
            rr(),
            Pending,
            vec![ReserveQuota],
        ),
        row(
            "Pending → QuotaExceeded",
            Input {
                phase: Some(Pending),
                quota: QuotaState::Exceeded("vcpu requested 16, available 8 of 64".into()),
                ..rr()
            },
            QuotaExceeded,
            vec![],
        ),
        row(
            "QuotaExceeded stays while it doesn't fit",
            Input {
                phase: Some(QuotaExceeded),
                quota: QuotaState::Exceeded("vcpu requested 16, available 8 of 64".into()),
                ..rr()
            },
            QuotaExceeded,
            vec![],
        ),
        row(
            "QuotaExceeded → AwaitingApproval when quota frees up, plan",
            Input {
                phase: Some(QuotaExceeded),
                quota: QuotaState::Reserved,
                ..rr()
            },
            AwaitingApproval,
            vec![Plan],
        ),
        row(
            "Pending → AwaitingApproval once reserved, plan",
            Input {
                phase: Some(Pending),
                quota: QuotaState::Reserved,
                ..rr()
            },
            AwaitingApproval,
            vec![Plan],
        ),
        // ---- AwaitingApproval ----
        row(
            "AwaitingApproval: failed plan is retried",
            Input {
                plan: PlanState::Failed {
                    generation: 1,
                    message: "module ecs not found".into(),
                },
                approval: None,
                ..awaiting()
            },
            AwaitingApproval,
            vec![Plan],
        ),
        row(
            "AwaitingApproval: approvals not evaluated yet",
            Input {
                approval: None,
                ..awaiting()
            },
            AwaitingApproval,
            vec![],
        ),
        row(
            "AwaitingApproval: approval evaluated for another plan doesn't count",
            Input {
                approval: approved(1, H2),
                ..awaiting()
            },
            AwaitingApproval,
            vec![],
        ),
        row(
            "AwaitingApproval waits for a stage",
            awaiting(),
            AwaitingApproval,
            vec![],
        ),
        row(
            "AwaitingApproval → Provisioning when all stages approve: apply, file",
            Input {
                approval: approved(1, H1),
                ..awaiting()
            },
            Provisioning,
            vec![apply(H1, 1), AssignFilingNumber],
        ),
        row(
            "AwaitingApproval → Provisioning when auto-approved: apply, file",
            Input {
                approval: auto(1, H1),
                ..awaiting()
            },
            Provisioning,
            vec![apply(H1, 1), AssignFilingNumber],
        ),
        row(
            "AwaitingApproval → Rejected, quota released",
            Input {
                approval: rejected(1, H1),
                ..awaiting()
            },
            Rejected,
            vec![ReleaseQuota],
        ),
        row(
            "Rejected stays for the generation it rejected",
            Input {
                phase: Some(Rejected),
                quota: QuotaState::None,
                approval: rejected(1, H1),
                ..awaiting()
            },
            Rejected,
            vec![],
        ),
        row(
            "Rejected → Pending when the spec is edited (resubmitted)",
            Input {
                phase: Some(Rejected),
                spec_generation: 2,
                quota: QuotaState::None,
                approval: rejected(1, H1),
                ..awaiting()
            },
            Pending,
            vec![ReserveQuota],
        ),
        row(
            "AwaitingApproval: spec edited while waiting → re-plan, old approvals don't count",
            Input {
                spec_generation: 2,
                approval: approved(1, H1),
                ..awaiting()
            },
            AwaitingApproval,
            vec![Plan],
        ),
        // ---- Provisioning ----
        row(
            "Provisioning → AwaitingApproval when the spec changed after approval",
            Input {
                spec_generation: 2,
                ..provisioning()
            },
            AwaitingApproval,
            vec![Plan],
        ),
        row(
            "Provisioning → Pending when the edited spec must queue for quota again",
            Input {
                spec_generation: 2,
                quota: QuotaState::None,
                ..provisioning()
            },
            Pending,
            vec![ReserveQuota],
        ),
        row(
            "Provisioning: apply handed over but not started yet → apply again (idempotent)",
            provisioning(),
            Provisioning,
            vec![apply(H1, 1)],
        ),
        row(
            "Provisioning: apply running",
            Input {
                provisioning: RunState::Running,
                ..provisioning()
            },
            Provisioning,
            vec![],
        ),
        row(
            "Provisioning → Active: reservation to use, billing starts",
            Input {
                provisioning: RunState::Succeeded,
                ..provisioning()
            },
            Active,
            vec![
                RecordApplied { generation: 1 },
                ConvertReservationToUse,
                StartBilling,
            ],
        ),
        row(
            "Provisioning → Changing when it succeeded but the spec changed meanwhile",
            Input {
                spec_generation: 2,
                provisioning: RunState::Succeeded,
                ..provisioning()
            },
            Changing,
            vec![
                RecordApplied { generation: 1 },
                ConvertReservationToUse,
                StartBilling,
            ],
        ),
        row(
            "Provisioning → Failed, retried",
            Input {
                provisioning: RunState::Failed("quota of provider exceeded".into()),
                ..provisioning()
            },
            Failed,
            vec![apply(H1, 1)],
        ),
        row(
            "Failed → Provisioning while the retry runs",
            Input {
                phase: Some(Failed),
                provisioning: RunState::Running,
                ..provisioning()
            },
            Provisioning,
            vec![],
        ),
        row(
            "Failed → Active when the retry succeeds",
            Input {
                phase: Some(Failed),
                provisioning: RunState::Succeeded,
                ..provisioning()
            },
            Active,
            vec![
                RecordApplied { generation: 1 },
                ConvertReservationToUse,
                StartBilling,
            ],
        ),
        row(
            "Failed: retry waits when the plan changed and needs approval again",
            Input {
                phase: Some(Failed),
                provisioning: RunState::Failed("timeout".into()),
                plan: planned(1, H2),
                approval: waiting(1, H2),
                ..provisioning()
            },
            Failed,
            vec![],
        ),
        row(
            "Failed → Changing when the spec is edited after the failure",
            Input {
                phase: Some(Failed),
                spec_generation: 2,
                quota: QuotaState::None,
                provisioning: RunState::Failed("timeout".into()),
                ..provisioning()
            },
            Changing,
            vec![ReserveQuota],
        ),
        // ---- Active ----
        row("Active stays", active(), Active, vec![]),
        row(
            "Active restarts billing that isn't open",
            Input {
                billing_open: false,
                ..active()
            },
            Active,
            vec![StartBilling],
        ),
        row(
            "Active converts a reservation left over",
            Input {
                quota: QuotaState::Reserved,
                ..active()
            },
            Active,
            vec![ConvertReservationToUse],
        ),
        row(
            "Active → Changing on a spec change: reserve the delta",
            Input {
                spec_generation: 2,
                ..active()
            },
            Changing,
            vec![ReserveQuota],
        ),
        // ---- Changing ----
        row(
            "Changing waits for quota, resources unchanged",
            Input {
                quota: QuotaState::Exceeded("vcpu requested 8, available 2 of 64".into()),
                ..changing()
            },
            Changing,
            vec![],
        ),
        row(
            "Changing: re-plan",
            Input {
                plan: planned(1, H1),
                approval: approved(1, H1),
                ..changing()
            },
            Changing,
            vec![Plan],
        ),
        row("Changing: re-approval waits", changing(), Changing, vec![]),
        row(
            "Changing: approved change is applied",
            Input {
                approval: approved(2, H2),
                ..changing()
            },
            Changing,
            vec![apply(H2, 2)],
        ),
        row(
            "Changing: auto-approved change is applied",
            Input {
                approval: auto(2, H2),
                ..changing()
            },
            Changing,
            vec![apply(H2, 2)],
        ),
        row(
            "Changing → Active when the change is rejected: resources as they were",
            Input {
                approval: rejected(2, H2),
                ..changing()
            },
            Active,
            vec![ReleaseChangeReservation, RestoreAppliedPlan],
        ),
        row(
            "Active after a rejected change stays until the spec is edited",
            Input {
                phase: Some(Active),
                quota: QuotaState::Used,
                plan: planned(1, H1),
                approval: rejected(2, H2),
                ..changing()
            },
            Active,
            vec![],
        ),
        row(
            "Changing: the change applies",
            applying_change(),
            Changing,
            vec![],
        ),
        row(
            "Changing → Active when the change applied",
            Input {
                provisioning: RunState::Succeeded,
                ..applying_change()
            },
            Active,
            vec![
                RecordApplied { generation: 2 },
                ConvertReservationToUse,
                UpdateBilling,
            ],
        ),
        row(
            "Changing → Failed when the change fails, retried",
            Input {
                provisioning: RunState::Failed("timeout".into()),
                ..applying_change()
            },
            Failed,
            vec![apply(H2, 2)],
        ),
        row(
            "Changing of a never-provisioned request rejected → back to Failed",
            Input {
                applied_generation: None,
                quota: QuotaState::Reserved,
                approval: rejected(2, H2),
                provisioning: RunState::Failed("timeout".into()),
                ..changing()
            },
            Failed,
            vec![],
        ),
        row(
            "Failed after a rejected change stays until the spec is edited",
            Input {
                phase: Some(Failed),
                applied_generation: None,
                quota: QuotaState::Reserved,
                approval: rejected(2, H2),
                provisioning: RunState::Failed("timeout".into()),
                ..changing()
            },
            Failed,
            vec![],
        ),
        // ---- exit ----
        row(
            "Active → Exiting when retired",
            Input {
                desired: DesiredLifecycle::Retired,
                ..active()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "Active → Exiting when deleted",
            Input {
                deleting: true,
                ..active()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "Changing → Exiting when retired",
            Input {
                desired: DesiredLifecycle::Retired,
                ..changing()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "retire while an apply runs waits for it",
            Input {
                desired: DesiredLifecycle::Retired,
                provisioning: RunState::Running,
                ..provisioning()
            },
            Provisioning,
            vec![],
        ),
        row(
            "retire in Provisioning destroys whatever may have been created",
            Input {
                desired: DesiredLifecycle::Retired,
                ..provisioning()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "retire a Failed request destroys what was created",
            Input {
                phase: Some(Failed),
                desired: DesiredLifecycle::Retired,
                provisioning: RunState::Failed("timeout".into()),
                ..provisioning()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "Exiting: destroy running",
            Input {
                destroy: RunState::Running,
                ..exiting()
            },
            Exiting,
            vec![],
        ),
        row(
            "Exiting: failed destroy is retried",
            Input {
                destroy: RunState::Failed("resource busy".into()),
                ..exiting()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "Exiting: a force-exit waits while the destroy runs",
            Input {
                destroy: RunState::Running,
                force_exit: forced(),
                ..exiting()
            },
            Exiting,
            vec![],
        ),
        row(
            "Exiting: a failed destroy, force-exited: billing closed, quota released",
            Input {
                destroy: RunState::Failed("provider gone".into()),
                force_exit: forced(),
                ..exiting()
            },
            Exited,
            vec![CloseBilling, ReleaseQuota],
        ),
        row(
            "Exiting: a deleted request force-exited goes once settled",
            Input {
                deleting: true,
                destroy: RunState::Failed("provider gone".into()),
                force_exit: forced(),
                ..exiting()
            },
            Exited,
            vec![CloseBilling, ReleaseQuota, RemoveFinalizer],
        ),
        row(
            "Exiting can't be undone by lifecycle: Active",
            Input {
                desired: DesiredLifecycle::Active,
                ..exiting()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "Exiting → Exited: billing closed, quota released",
            Input {
                destroy: RunState::Succeeded,
                ..exiting()
            },
            Exited,
            vec![CloseBilling, ReleaseQuota],
        ),
        row(
            "Exiting → Exited on deletion keeps the finalizer until settled",
            Input {
                deleting: true,
                settled: false,
                destroy: RunState::Succeeded,
                ..exiting()
            },
            Exited,
            vec![CloseBilling, ReleaseQuota],
        ),
        row("Exited stays", exited(), Exited, vec![]),
        row(
            "Exited ignores a spec edited back to Active",
            Input {
                desired: DesiredLifecycle::Active,
                spec_generation: 5,
                ..exited()
            },
            Exited,
            vec![],
        ),
        row(
            "Exited + deleting waits for settlement",
            Input {
                deleting: true,
                settled: false,
                ..exited()
            },
            Exited,
            vec![],
        ),
        row(
            "Exited + deleting + settled → finalizer removed",
            Input {
                deleting: true,
                settled: true,
                ..exited()
            },
            Exited,
            vec![RemoveFinalizer],
        ),
        // ---- deleting / retiring before anything was provisioned ----
        row(
            "delete a new request → Exited, finalizer removed",
            Input {
                deleting: true,
                ..rr()
            },
            Exited,
            vec![RemoveFinalizer],
        ),
        row(
            "delete Pending with a reservation → Exited, quota released",
            Input {
                phase: Some(Pending),
                deleting: true,
                quota: QuotaState::Reserved,
                ..rr()
            },
            Exited,
            vec![ReleaseQuota, RemoveFinalizer],
        ),
        row(
            "delete QuotaExceeded → Exited",
            Input {
                phase: Some(QuotaExceeded),
                deleting: true,
                quota: QuotaState::Exceeded("no room".into()),
                ..rr()
            },
            Exited,
            vec![RemoveFinalizer],
        ),
        row(
            "delete AwaitingApproval → Exited, quota released",
            Input {
                deleting: true,
                ..awaiting()
            },
            Exited,
            vec![ReleaseQuota, RemoveFinalizer],
        ),
        row(
            "delete Rejected → Exited",
            Input {
                phase: Some(Rejected),
                deleting: true,
                quota: QuotaState::None,
                approval: rejected(1, H1),
                ..awaiting()
            },
            Exited,
            vec![RemoveFinalizer],
        ),
        row(
            "retire AwaitingApproval → Exited, quota released, finalizer kept",
            Input {
                desired: DesiredLifecycle::Retired,
                ..awaiting()
            },
            Exited,
            vec![ReleaseQuota],
        ),
        row(
            "Provisioning: the spec changed after approval, then deleted → Exited (nothing ran)",
            Input {
                phase: Some(AwaitingApproval),
                spec_generation: 2,
                deleting: true,
                ..provisioning()
            },
            Exited,
            vec![ReleaseQuota, RemoveFinalizer],
        ),
        // ---- impossible combinations: the safe decision ----
        row(
            "AwaitingApproval but an apply succeeded (lost status write) → Active",
            Input {
                provisioning: RunState::Succeeded,
                approved_generation: Some(1),
                approval: approved(1, H1),
                ..awaiting()
            },
            Active,
            vec![
                RecordApplied { generation: 1 },
                ConvertReservationToUse,
                StartBilling,
                // The write that lost the status lost the filing number too.
                AssignFilingNumber,
            ],
        ),
        row(
            "Rejected but resources exist → deleting destroys them",
            Input {
                phase: Some(Rejected),
                deleting: true,
                applied_generation: Some(1),
                ..awaiting()
            },
            Exiting,
            vec![Destroy],
        ),
        row(
            "Active with a destroy already started → Exiting",
            Input {
                destroy: RunState::Running,
                ..active()
            },
            Exiting,
            vec![],
        ),
        row(
            "an apply succeeded with no approved generation → re-plan and approve as a change",
            Input {
                approved_generation: None,
                provisioning: RunState::Succeeded,
                quota: QuotaState::Reserved,
                approval: None,
                ..provisioning()
            },
            Changing,
            vec![],
        ),
    ]
}

#[test]
fn every_transition() {
    let mut failures = Vec::new();
    for r in transitions() {
        let d = decide(&r.input);
        let actions: Vec<Action> = d
            .actions
            .iter()
            .filter(|a| !matches!(a, Notify(_)))
            .cloned()
            .collect();
        if d.phase != r.phase || actions != r.actions {
            failures.push(format!(
                "{}:\n  expected {:?} {:?}\n  got      {:?} {:?} ({}: {})",
                r.transition, r.phase, r.actions, d.phase, actions, d.reason, d.message
            ));
        }
        assert!(!d.message.is_empty(), "{}: empty message", r.transition);
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn phase_changes_notify_once_and_only_then() {
    for r in transitions() {
        let d = decide(&r.input);
        let notes: Vec<&Transition> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Notify(t) => Some(t),
                _ => None,
            })
            .collect();
        if r.input.phase == Some(d.phase) {
            assert!(notes.is_empty(), "{}: {notes:?}", r.transition);
        } else {
            assert_eq!(
                notes,
                [&Transition {
                    from: r.input.phase,
                    to: d.phase,
                    reason: d.reason
                }],
                "{}",
                r.transition
            );
        }
    }
}

#[test]
fn messages_say_what_happens() {
    let d = decide(&Input {
        spec_generation: 2,
        ..provisioning()
    });
    assert_eq!(
        d.message,
        "the spec changed after approval (approved generation 1, now 2): the approvals no longer count; planning generation 2"
    );

    let d = decide(&Input {
        provisioning: RunState::Failed("quota of provider exceeded".into()),
        ..provisioning()
    });
    assert_eq!(d.reason, Reason::ProvisioningFailed);
    assert_eq!(
        d.message,
        "provisioning failed: quota of provider exceeded; retrying the approved plan sha256:1111 with backoff"
    );

    let d = decide(&Input {
        approval: rejected(1, H1),
        ..awaiting()
    });
    assert_eq!(
        d.message,
        "generation 1 was rejected in stage finance by fay: 超出年度预算: edit the spec to submit it again, or delete the request"
    );
    assert!(d.reason.is_warning());

    let d = decide(&awaiting());
    assert_eq!(
        d.message,
        "waiting for approval: stage 2 of 3 (finance), 0 of 1 approvals for generation 1, plan sha256:1111"
    );

    let d = decide(&Input {
        approval: rejected(2, H2),
        ..changing()
    });
    assert_eq!(
        d.message,
        "generation 2 was rejected in stage finance by fay: 超出年度预算; the resources keep running as applied at generation 1"
    );

    let d = decide(&Input {
        deleting: true,
        settled: false,
        ..exited()
    });
    assert_eq!(d.reason, Reason::AwaitingSettlement);
    assert!(d.message.contains("deletion waits until the periods"));
}

#[test]
fn filing_number_is_assigned_once() {
    let first = decide(&Input {
        approval: approved(1, H1),
        ..awaiting()
    });
    assert!(matches!(first.actions[0], Apply { .. }));
    assert_eq!(first.actions[1], AssignFilingNumber);
    let change = decide(&Input {
        approval: approved(2, H2),
        ..changing()
    });
    assert!(!change.actions.contains(&AssignFilingNumber));
}

#[test]
fn an_approved_request_missing_its_filing_number_gets_one() {
    // The Provisioning write landed, the one after the filing was lost: the next pass files.
    let running = decide(&Input {
        provisioning: RunState::Running,
        filed: false,
        ..provisioning()
    });
    assert_eq!(running.phase, Provisioning);
    assert_eq!(running.actions, vec![AssignFilingNumber]);
    // Never for a request nobody approved.
    assert!(!decide(&awaiting()).actions.contains(&AssignFilingNumber));
}

// ---- properties -----------------------------------------------------------------------------

fn any_phase() -> impl Strategy<Value = Option<Phase>> {
    prop_oneof![
        Just(None),
        prop::sample::select(Phase::ALL.to_vec()).prop_map(Some),
    ]
}

fn any_generation() -> impl Strategy<Value = i64> {
    1i64..4
}

fn any_hash() -> impl Strategy<Value = String> {
    prop::sample::select(vec![H1.to_owned(), H2.to_owned()])
}

fn any_run() -> impl Strategy<Value = RunState> {
    prop_oneof![
        Just(RunState::NotStarted),
        Just(RunState::Running),
        Just(RunState::Succeeded),
        Just(RunState::Failed("boom".into())),
    ]
}

fn any_quota() -> impl Strategy<Value = QuotaState> {
    prop_oneof![
        Just(QuotaState::None),
        Just(QuotaState::Reserved),
        Just(QuotaState::Used),
        Just(QuotaState::ChangeReserved),
        Just(QuotaState::Exceeded("no room".into())),
    ]
}

fn any_plan() -> impl Strategy<Value = PlanState> {
    prop_oneof![
        Just(PlanState::NotPlanned),
        (any_generation(), any_hash())
            .prop_map(|(generation, hash)| PlanState::Planned { generation, hash }),
        any_generation().prop_map(|generation| PlanState::Failed {
            generation,
            message: "plan error".into()
        }),
    ]
}

fn any_progress() -> impl Strategy<Value = Progress> {
    prop_oneof![
        Just(Progress::Approved),
        Just(Progress::Rejected {
            stage: "finance".into(),
            by: "fay".into(),
            comment: None
        }),
        (0u32..3, 1u32..3).prop_map(|(have, need)| Progress::Waiting {
            stage_name: "department".into(),
            index: 1,
            of: 2,
            have,
            need
        }),
    ]
}

fn any_approval() -> impl Strategy<Value = Option<ApprovalState>> {
    prop::option::of(
        (
            any_generation(),
            any_hash(),
            prop_oneof![
                Just(ApprovalOutcome::AutoApproved),
                any_progress().prop_map(ApprovalOutcome::Staged),
            ],
        )
            .prop_map(|(generation, plan_hash, outcome)| ApprovalState {
                generation,
                plan_hash,
                outcome,
            }),
    )
}

fn any_input() -> impl Strategy<Value = Input> {
    (
        (
            any_phase(),
            prop::option::of(any_generation()),
            any_generation(),
            prop::bool::ANY.prop_map(|r| {
                if r {
                    DesiredLifecycle::Retired
                } else {
                    DesiredLifecycle::Active
                }
            }),
            prop::bool::ANY,
            any_quota(),
            any_plan(),
            any_approval(),
        ),
        (
            any_run(),
            any_run(),
            prop::option::of(any_generation()),
            prop::option::of(any_generation()),
            prop::bool::ANY,
            prop::bool::ANY,
            prop::bool::ANY,
            prop::bool::ANY,
        ),
    )
        .prop_map(
            |(
                (
                    phase,
                    observed_generation,
                    spec_generation,
                    desired,
                    deleting,
                    quota,
                    plan,
                    approval,
                ),
                (
                    provisioning,
                    destroy,
                    approved_generation,
                    applied_generation,
                    filed,
                    billing_open,
                    settled,
                    force,
                ),
            )| Input {
                phase,
                observed_generation,
                spec_generation,
                desired,
                deleting,
                quota,
                plan,
                approval,
                provisioning,
                destroy,
                approved_generation,
                applied_generation,
                filed,
                billing_open,
                settled,
                force_exit: if force { forced() } else { None },
            },
        )
}

/// The approval is complete for exactly the current generation and plan hash.
fn approved_for(i: &Input, hash: &str) -> bool {
    let planned = matches!(&i.plan, PlanState::Planned { generation, hash: h }
        if *generation == i.spec_generation && h == hash);
    let approved = i.approval.as_ref().is_some_and(|a| {
        a.generation == i.spec_generation && a.plan_hash == hash && a.outcome.is_approved()
    });
    planned && approved
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn decide_keeps_its_promises(i in any_input()) {
        let d = decide(&i);
        prop_assert!(!d.message.is_empty());
        for a in &d.actions {
            match a {
                RemoveFinalizer => {
                    prop_assert_eq!(d.phase, Exited);
                    // Billing is closed, or closes in this same decision (before the
                    // finalizer goes).
                    let closes = d.actions.contains(&CloseBilling);
                    prop_assert!(i.settled && i.deleting && (!i.billing_open || closes), "{:?}", i);
                }
                Apply { plan_hash, generation } => {
                    prop_assert_eq!(*generation, i.spec_generation);
                    prop_assert!(approved_for(&i, plan_hash), "Apply without approval: {:?} → {:?}", i, d);
                    prop_assert!(!i.deleting && i.desired == DesiredLifecycle::Active);
                    prop_assert!(i.provisioning != RunState::Running && i.destroy == RunState::NotStarted);
                    prop_assert!(!matches!(i.phase, Some(Exiting | Exited)));
                }
                Destroy => {
                    prop_assert_eq!(d.phase, Exiting);
                    prop_assert!(i.provisioning != RunState::Running);
                }
                ReleaseQuota => {
                    prop_assert!(matches!(d.phase, Exited | Rejected), "{:?} → {:?}", i, d);
                }
                _ => {}
            }
        }
        let notes = d.actions.iter().filter(|a| matches!(a, Notify(_))).count();
        prop_assert_eq!(notes, usize::from(i.phase != Some(d.phase)));
        // A filing number exactly for the approved that lack one, never before the apply that
        // shows the approval.
        let applies = d.actions.iter().position(|a| matches!(a, Apply { .. }));
        let files = d.actions.iter().position(|a| a == &AssignFilingNumber);
        prop_assert_eq!(files.is_some(), !i.filed && (i.approved_generation.is_some() || applies.is_some()));
        if let (Some(apply), Some(file)) = (applies, files) {
            prop_assert!(apply < file);
        }
        // A force-exit acts only on a failed destroy: anywhere else it changes nothing.
        if !matches!(i.destroy, RunState::Failed(_)) {
            let without = Input { force_exit: None, ..i.clone() };
            prop_assert_eq!(&d, &decide(&without));
        }
        // Once exited, always exited; once a destroy started, never back to running resources.
        if i.phase == Some(Exited) {
            prop_assert_eq!(d.phase, Exited);
        }
        if i.phase == Some(Exiting) || i.destroy != RunState::NotStarted {
            prop_assert!(matches!(d.phase, Exiting | Exited));
        }
        // Resources that may exist are never forgotten: skipping the destroy needs a request
        // that never got to an apply, or a platform admin's force-exit after a failed destroy.
        let forced = i.force_exit.is_some() && matches!(i.destroy, RunState::Failed(_));
        if d.phase == Exited && !matches!(i.phase, Some(Exiting | Exited)) && i.destroy != RunState::Succeeded && !forced {
            prop_assert!(i.applied_generation.is_none() && i.provisioning == RunState::NotStarted);
            prop_assert!(matches!(i.phase, None | Some(Pending | QuotaExceeded | AwaitingApproval | Rejected)));
        }
    }
}
