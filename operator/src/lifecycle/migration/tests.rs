use chrono::TimeZone;

use super::*;
use crate::api::hook_template::HookParameter;
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
        pre_cutover: None,
        post_cutover: None,
        now: at(10),
    }
}

#[test]
fn hooks_gate_cutover_and_verification_and_a_failed_one_holds() {
    let job = |p| format!("nontax-legacy-{p:?}");
    let mut i = input(P::Migrating, Some(Phase::Active));
    i.advance_to = Some(MigrationGate::Decommissioned);
    i.now = at(15);
    i.pre_cutover = Some(HookView::NotStarted);
    i.post_cutover = Some(HookView::NotStarted);
    // The window is open: the pre-cutover Job starts, and the workload stays until it succeeds.
    let s = settle(&i);
    assert_eq!(s.decision.phase, P::Migrating);
    assert_eq!(
        s.decision.actions,
        vec![Action::RunHook(HookPoint::PreCutover)]
    );
    assert!(s.decision.recheck_at.is_some());
    i.pre_cutover = Some(HookView::Running {
        job: job(HookPoint::PreCutover),
    });
    let s = settle(&i);
    assert!(s.decision.actions.is_empty() && s.decision.phase == P::Migrating);
    assert!(
        s.decision.message.contains("nontax-legacy-PreCutover"),
        "{}",
        s.decision.message
    );
    i.pre_cutover = Some(HookView::Failed {
        job: job(HookPoint::PreCutover),
        why: "BackoffLimitExceeded".into(),
    });
    let s = settle(&i);
    assert_eq!(s.decision.phase, P::Migrating);
    assert!(
        s.decision
            .message
            .contains("failed: BackoffLimitExceeded; fix the hook")
    );
    assert_eq!(
        s.decision.recheck_at, None,
        "a failed hook waits for a change"
    );
    // Succeeded: cut over, and the post-cutover Job starts at once; Verified waits for it.
    i.pre_cutover = Some(HookView::Succeeded);
    let s = settle(&i);
    assert_eq!(s.entered, vec![P::CutOver]);
    assert_eq!(
        s.decision.actions,
        vec![Action::RunHook(HookPoint::PostCutover)]
    );
    i.phase = P::CutOver;
    i.post_cutover = Some(HookView::Running {
        job: job(HookPoint::PostCutover),
    });
    assert_eq!(settle(&i).decision.phase, P::CutOver);
    i.post_cutover = Some(HookView::Succeeded);
    assert_eq!(settle(&i).entered, vec![P::Verified, P::Decommissioned]);
    // A refused hook (image not allowed) holds it too, saying why.
    i.phase = P::Migrating;
    i.pre_cutover = Some(HookView::Refused("image x is not allowed".into()));
    let s = settle(&i);
    assert!(s.decision.phase == P::Migrating && s.decision.actions.is_empty());
    assert!(
        s.decision
            .message
            .ends_with("can't run: image x is not allowed")
    );
    // Rolling back is always possible.
    i.advance_to = Some(MigrationGate::RolledBack);
    assert_eq!(settle(&i).decision.phase, P::RolledBack);
}

fn sync_template() -> HookTemplateSpec {
    HookTemplateSpec {
        description: None,
        image: "registry.example.gov.cn/migration/sync:1.4".into(),
        command: vec!["/sync".into()],
        args: vec![],
        service_account_name: None,
        timeout_seconds: 600,
        parameters: vec![
            HookParameter {
                name: "SOURCE".into(),
                description: None,
                required: true,
            },
            HookParameter {
                name: "MODE".into(),
                description: None,
                required: false,
            },
        ],
    }
}

fn sync_hook(parameters: &[(&str, &str)]) -> Hook {
    Hook {
        template: "sync".into(),
        parameters: parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[test]
fn hook_job_names_fit_a_label_and_change_with_what_runs() {
    let prefixes = vec!["registry.example.gov.cn/migration/".to_owned()];
    let resolve = |hook: &Hook, t: &HookTemplateSpec| resolve_hook(hook, Some(t), &prefixes);
    let hook = resolve(&sync_hook(&[("SOURCE", "db1")]), &sync_template()).unwrap();
    let long = "a".repeat(62) + "-b";
    let name = hook_job_name(&long, HookPoint::PostCutover, &hook);
    assert!(
        name.len() <= 63 && name.contains("-post-cutover-"),
        "{name}"
    );
    let trimmed = hook_job_name(&("a".repeat(44) + "-zz"), HookPoint::PreCutover, &hook);
    assert!(!trimmed.contains("--") && trimmed.len() <= 63, "{trimmed}");
    let same = hook_job_name("w", HookPoint::PreCutover, &hook);
    assert_eq!(
        same,
        hook_job_name("w", HookPoint::PreCutover, &hook.clone())
    );
    let other_value = resolve(&sync_hook(&[("SOURCE", "db2")]), &sync_template()).unwrap();
    assert_ne!(
        same,
        hook_job_name("w", HookPoint::PreCutover, &other_value),
        "changed parameters run again"
    );
    let retrying = HookTemplateSpec {
        args: vec!["--retry".into()],
        ..sync_template()
    };
    let changed_template = resolve(&sync_hook(&[("SOURCE", "db1")]), &retrying).unwrap();
    assert_ne!(
        same,
        hook_job_name("w", HookPoint::PreCutover, &changed_template),
        "a changed template runs again"
    );
}

#[test]
fn a_hook_runs_its_template_with_parameters_as_data() {
    let prefixes = vec!["registry.example.gov.cn/migration/".to_owned()];
    let hook = resolve_hook(
        &sync_hook(&[("SOURCE", "db1; rm -rf /")]),
        Some(&sync_template()),
        &prefixes,
    )
    .unwrap();
    assert_eq!(
        hook.command,
        vec!["/sync".to_owned()],
        "the template's command"
    );
    assert!(hook.args.is_empty(), "no argument from the workload");
    assert_eq!(
        hook.env.get("YZ_PARAM_SOURCE").map(String::as_str),
        Some("db1; rm -rf /"),
        "the value is an environment variable, never a command line"
    );
    let refused = |hook: Hook, t: Option<&HookTemplateSpec>| {
        resolve_hook(&hook, t, &prefixes).expect_err("refused")
    };
    assert!(
        refused(sync_hook(&[("SOURCE", "x")]), None).contains("HookTemplate sync does not exist")
    );
    assert!(
        refused(
            sync_hook(&[("SOURCE", "x"), ("LD_PRELOAD", "/x")]),
            Some(&sync_template())
        )
        .contains("parameter LD_PRELOAD is not one of HookTemplate sync's (SOURCE, MODE)")
    );
    assert!(
        refused(sync_hook(&[("MODE", "full")]), Some(&sync_template()))
            .contains("parameter SOURCE is required by HookTemplate sync")
    );
    let elsewhere = HookTemplateSpec {
        image: "docker.io/evil/sync:1".into(),
        ..sync_template()
    };
    assert!(
        refused(sync_hook(&[("SOURCE", "x")]), Some(&elsewhere))
            .contains("not from a registry the platform allows")
    );
}

#[test]
fn image_prefixes_match_on_a_path_boundary() {
    let allowed = vec![
        "registry.example.gov.cn/migration/".to_owned(),
        "registry.example.gov.cn".to_owned(),
        String::new(),
    ];
    assert!(hook_image_allowed(
        "registry.example.gov.cn/migration/sync:1.4",
        &allowed
    ));
    assert!(hook_image_allowed(
        "registry.example.gov.cn/other/x:1",
        &allowed
    ));
    assert!(!hook_image_allowed("docker.io/evil/sync:1", &allowed));
    assert!(
        !hook_image_allowed("registry.example.gov.cn.evil.io/migration/sync:1", &allowed),
        "a prefix without a slash ends at a path boundary"
    );
    assert!(
        !hook_image_allowed(
            "registry.example.gov.cn/migration-evil/sync:1",
            &["registry.example.gov.cn/migration".to_owned()]
        ),
        "a path prefix ends at a path boundary too"
    );
    assert!(
        !hook_image_allowed("anything", &[String::new()]),
        "an empty prefix allows nothing"
    );
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
