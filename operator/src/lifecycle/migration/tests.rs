use chrono::TimeZone;

use super::*;
use MigrationPhase as P;

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0)
        .single()
        .expect("time")
}

fn input(phase: P, rr: Option<Phase>) -> Input {
    Input {
        phase,
        has_target: true,
        request: rr.map(|p| RequestView {
            name: "nontax-legacy".into(),
            phase: Some(p),
            lifecycle: DesiredLifecycle::Active,
            matches_target: true,
        }),
        advance_to: None,
        cutover: Some((at(14), at(22))),
        now: at(10),
    }
}

#[test]
fn a_planned_workload_creates_its_request_and_waits_for_its_approval() {
    let mut i = input(P::Planned, None);
    i.request = None;
    let s = settle(&i);
    assert_eq!(s.decision.phase, P::Planned);
    assert_eq!(s.decision.actions, vec![Action::CreateRequest]);
    let s = settle(&input(P::Planned, Some(Phase::AwaitingApproval)));
    assert_eq!(s.decision.phase, P::Planned);
    assert!(s.decision.actions.is_empty());
    assert!(
        s.decision.message.contains("approve"),
        "{}",
        s.decision.message
    );
}

#[test]
fn the_workload_follows_its_request_through_approval_and_provisioning() {
    let s = settle(&input(P::Planned, Some(Phase::Provisioning)));
    assert_eq!(s.entered, vec![P::Approved, P::Provisioning]);
    let s = settle(&input(P::Planned, Some(Phase::Active)));
    assert_eq!(s.entered, vec![P::Approved, P::Provisioning, P::Migrating]);
    assert_eq!(s.decision.phase, P::Migrating);
    let s = settle(&input(P::Planned, Some(Phase::Rejected)));
    assert_eq!(s.decision.phase, P::Rejected);
    assert_eq!(
        settle(&input(P::Rejected, Some(Phase::Rejected))).entered,
        vec![]
    );
}

#[test]
fn cutover_waits_for_its_window_and_refuses_a_closed_one() {
    let mut i = input(P::Migrating, Some(Phase::Active));
    assert_eq!(
        settle(&i).decision.phase,
        P::Migrating,
        "no gate, no cutover"
    );
    i.advance_to = Some(MigrationGate::Decommissioned);
    let s = settle(&i);
    assert_eq!(s.decision.phase, P::Migrating);
    assert_eq!(s.decision.recheck_at, Some(at(14)));
    i.now = at(15);
    let s = settle(&i);
    assert_eq!(s.entered, vec![P::CutOver, P::Verified, P::Decommissioned]);
    i.now = at(23);
    let s = settle(&i);
    assert_eq!(s.decision.phase, P::Migrating);
    assert!(
        s.decision.message.contains("spec.cutover"),
        "{}",
        s.decision.message
    );
    i.cutover = None;
    assert_eq!(
        settle(&i).decision.phase,
        P::Decommissioned,
        "no window: any time"
    );
}

#[test]
fn each_gate_moves_only_as_far_as_it_names() {
    let mut i = input(P::Migrating, Some(Phase::Active));
    i.now = at(15);
    i.advance_to = Some(MigrationGate::CutOver);
    assert_eq!(settle(&i).entered, vec![P::CutOver]);
    i.phase = P::CutOver;
    i.advance_to = Some(MigrationGate::Verified);
    assert_eq!(settle(&i).entered, vec![P::Verified]);
    i.phase = P::Verified;
    assert_eq!(settle(&i).entered, vec![]);
}

#[test]
fn rollback_retires_the_target_request_once_and_is_final() {
    for phase in [
        P::Planned,
        P::Provisioning,
        P::Migrating,
        P::CutOver,
        P::Verified,
    ] {
        let mut i = input(phase, Some(Phase::Active));
        i.advance_to = Some(MigrationGate::RolledBack);
        let s = settle(&i);
        assert_eq!(s.decision.phase, P::RolledBack, "from {phase:?}");
        assert_eq!(s.decision.actions, vec![Action::RetireRequest]);
    }
    let mut i = input(P::RolledBack, Some(Phase::Exiting));
    i.request.as_mut().expect("rr").lifecycle = DesiredLifecycle::Retired;
    assert!(settle(&i).decision.actions.is_empty(), "already retired");
    // Decommissioned is final: no rollback after it.
    let mut i = input(P::Decommissioned, Some(Phase::Active));
    i.advance_to = Some(MigrationGate::RolledBack);
    assert_eq!(settle(&i).decision.phase, P::Decommissioned);
    assert!(settle(&i).decision.actions.is_empty());
}

#[test]
fn a_workload_without_target_resources_goes_straight_to_its_gates() {
    let mut i = input(P::Planned, None);
    i.has_target = false;
    i.request = None;
    let s = settle(&i);
    assert_eq!(s.entered, vec![P::Migrating]);
    assert!(s.decision.actions.is_empty());
}

#[test]
fn a_changed_target_is_carried_to_the_request_unless_it_is_given_up() {
    let mut i = input(P::Decommissioned, Some(Phase::Active));
    i.request.as_mut().expect("rr").matches_target = false;
    assert_eq!(settle(&i).decision.actions, vec![Action::UpdateRequest]);
    i.phase = P::Planned;
    i.request.as_mut().expect("rr").phase = Some(Phase::AwaitingApproval);
    assert_eq!(settle(&i).decision.actions, vec![Action::UpdateRequest]);
    i.advance_to = Some(MigrationGate::RolledBack);
    assert_eq!(settle(&i).decision.actions, vec![Action::RetireRequest]);
    i.advance_to = None;
    i.request.as_mut().expect("rr").phase = Some(Phase::Rejected);
    assert!(settle(&i).decision.actions.is_empty());
}
