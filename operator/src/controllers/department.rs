//! The Department controller: owns the department's namespaces (labelled
//! `yunzhang.io/department`), binds its admins and members to the member persona there, isolates
//! them with a NetworkPolicy, keeps all of it converged, rolls quota usage up the tree, and holds
//! deletion while the department still has live requests.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{core::v1::Namespace, networking::v1::NetworkPolicy, rbac::v1::RoleBinding},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::{Value, json};
use tracing::info;

use super::{
    Error, FIELD_MANAGER, SharedContext, apply_finalizer, has_finalizer, measured, publish_event,
    status::{apply_status, status_differs},
};
use chrono::Datelike;
use rust_decimal::Decimal;

use crate::{
    api::{
        DEPARTMENT_LABEL, Department, Phase, Subject, SubjectKind,
        department::{BudgetStatus, MigrationFigures, SubtreeSpend},
        settlement_report::Scope,
    },
    billing::{
        self, BillingConfig, FixedClock, budget,
        money::{format_money, parse_money, round_fen},
    },
    conditions::{self, condition},
    notify::Notification,
    scorecard::{self, SystemFacts},
    tenancy::hierarchy,
};

/// Holds a Department until it has no live requests.
pub const DEPARTMENT_FINALIZER: &str = "yunzhang.io/department-protection";
/// The RoleBinding, in each department namespace, of admins and members to the member persona.
pub const MEMBERS_BINDING: &str = "yunzhang-department-members";
/// The ClusterRole department people get in their namespaces.
pub const MEMBER_ROLE: &str = "yunzhang-department-member";
/// The RoleBinding, in each department namespace, of the operator's own ServiceAccount to
/// [`OPERATOR_NAMESPACE_ROLE`]: what it does there (plan ConfigMaps, secret outputs, hook and run
/// Jobs) it may do only in namespaces it manages, never cluster-wide.
pub const OPERATOR_BINDING: &str = "yunzhang-operator";
/// The ClusterRole the operator binds itself to in each department namespace (chart).
pub const OPERATOR_NAMESPACE_ROLE: &str = "yunzhang-operator-namespace";
/// The RoleBinding, in each department namespace, of the approvers its ApprovalPolicy names
/// to [`PLAN_READER_ROLE`]: they read the plans they approve there, and nowhere else.
pub const APPROVERS_BINDING: &str = "yunzhang-approvers";
/// The ClusterRole that reads plan ConfigMaps (chart), bound per department namespace.
pub const PLAN_READER_ROLE: &str = "yunzhang-plan-reader";
/// The NetworkPolicy isolating a department's namespaces from other departments.
pub const ISOLATION_POLICY: &str = "yunzhang-department-isolation";

pub async fn reconcile_department(
    dept: Arc<Department>,
    ctx: SharedContext,
) -> Result<Action, Error> {
    measured::<Department>(&ctx.clone(), reconcile(dept, ctx)).await
}

async fn reconcile(dept: Arc<Department>, ctx: SharedContext) -> Result<Action, Error> {
    let api: Api<Department> = Api::all(ctx.client.clone());
    let name = dept.name_any();
    let generation = dept.meta().generation;
    let existing = dept
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();

    if dept.meta().deletion_timestamp.is_some() {
        let live = live_requests(&ctx, &dept);
        if live.is_empty() {
            apply_finalizer(&api, dept.as_ref(), None).await?;
            info!(
                department = name,
                "deleted; its namespaces follow by garbage collection"
            );
            return Ok(Action::await_change());
        }
        let shown: Vec<&str> = live.iter().take(10).map(String::as_str).collect();
        let more = if live.len() > shown.len() {
            format!(" and {} more", live.len() - shown.len())
        } else {
            String::new()
        };
        let message = format!(
            "can't delete Department {name}: {} live request(s) must exit first (set spec.lifecycle: Retired, or delete them): {}{more}",
            live.len(),
            shown.join(", ")
        );
        let conds = conditions::merge(
            existing,
            condition(
                "DeletionBlocked",
                true,
                "LiveRequests",
                &message,
                generation,
                Timestamp::now(),
            ),
        );
        if dept.status.as_ref().is_none_or(|s| {
            !s.conditions
                .iter()
                .any(|c| c.type_ == "DeletionBlocked" && c.message == message)
        }) {
            publish_event(
                &ctx,
                dept.as_ref(),
                EventType::Warning,
                "DeletionBlocked",
                "Delete",
                message.clone(),
            )
            .await;
        }
        apply_status(
            &ctx,
            dept.as_ref(),
            json!({"observedGeneration": generation, "conditions": conds}),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(15)));
    }
    if !has_finalizer(dept.as_ref(), DEPARTMENT_FINALIZER) {
        apply_finalizer(&api, dept.as_ref(), Some(DEPARTMENT_FINALIZER)).await?;
        return Ok(Action::await_change());
    }

    let mut problems = Vec::new();
    let mut owned = Vec::new();
    for ns in dept.owned_namespaces() {
        match ensure_namespace(&ctx, &dept, &ns).await? {
            Ok(()) => {
                ensure_binding(
                    &ctx,
                    &dept,
                    &ns,
                    MEMBERS_BINDING,
                    MEMBER_ROLE,
                    people(&dept),
                )
                .await?;
                if let Some((sa_ns, sa)) = &ctx.service_account {
                    let operator =
                        json!({"kind": "ServiceAccount", "name": sa, "namespace": sa_ns});
                    ensure_binding(
                        &ctx,
                        &dept,
                        &ns,
                        OPERATOR_BINDING,
                        OPERATOR_NAMESPACE_ROLE,
                        vec![operator],
                    )
                    .await?;
                }
                ensure_binding(
                    &ctx,
                    &dept,
                    &ns,
                    APPROVERS_BINDING,
                    PLAN_READER_ROLE,
                    approvers(&ctx, &dept),
                )
                .await?;
                ensure_isolation(&ctx, &dept, &ns).await?;
                owned.push(ns);
            }
            Err(problem) => problems.push(problem),
        }
    }
    if let Some(parent) = &dept.spec.parent {
        let parents = ctx.tenancy.parents();
        if !parents.contains_key(parent) {
            problems.push(format!("spec.parent {parent} is not a Department"));
        } else if hierarchy::in_cycle(&parents, &name) {
            problems.push(format!(
                "spec.parent {parent} makes a cycle: a department can't be its own ancestor"
            ));
        }
    }

    let snapshot = ctx.tenancy.snapshot(&ctx).await?;
    let own = snapshot.usage.get(&name).cloned().unwrap_or_default();
    let capacity = snapshot.capacity(&name);
    let reserved = snapshot
        .usage
        .iter()
        .map(|(d, u)| (d.clone(), u.reserved.clone()))
        .collect();
    let used = snapshot
        .usage
        .iter()
        .map(|(d, u)| (d.clone(), u.used.clone()))
        .collect();
    let subtree_reserved = hierarchy::roll_up(&snapshot.parents, &reserved)
        .remove(&name)
        .unwrap_or_default();
    let subtree_used = hierarchy::roll_up(&snapshot.parents, &used)
        .remove(&name)
        .unwrap_or_default();

    let (ready, reason, message) = if problems.is_empty() {
        (
            true,
            "Reconciled",
            format!("namespaces {} ready", owned.join(", ")),
        )
    } else {
        (false, "Conflict", problems.join("; "))
    };
    let conds = conditions::merge(
        existing,
        condition(
            "Ready",
            ready,
            reason,
            &message,
            generation,
            Timestamp::now(),
        ),
    );
    let live = live_requests(&ctx, &dept);
    let now = crate::clock::now();
    let charges = subtree_charges(&ctx, &dept, now).and_then(|c| {
        c.inspect_err(|e| tracing::warn!(department = %name, error = %e, "spend not computed"))
            .ok()
    });
    let (budget, announce) = budget_of(&dept, charges.as_ref());
    let migration = migration_figures(&ctx, &name);
    let mut status = json!({
        "observedGeneration": generation,
        "namespaces": owned,
        "liveRequestCount": live.len(),
        "liveRequests": live.iter().take(10).collect::<Vec<_>>(),
        "quota": {"hard": capacity.hard.to_api(), "reserved": own.reserved.to_api(), "used": own.used.to_api()},
        "subtree": {"reserved": subtree_reserved.to_api(), "used": subtree_used.to_api(), "spend": subtree_spend(charges.as_ref())},
        "migration": migration,
        "conditions": conds,
    });
    if capacity.hard.to_api() == Default::default() {
        // No quota: no `hard` at all (server-side apply would make an empty object null).
        if let Some(quota) = status["quota"].as_object_mut() {
            quota.remove("hard");
        }
    }
    if let Some(b) = &budget {
        status["budget"] = serde_json::to_value(b)?;
    }
    if !announce.is_empty() {
        // Announce each threshold once: record it first, on condition that the status we
        // judged from is still current (a stale cache must not announce twice).
        if !apply_status_at(&ctx, dept.as_ref(), status).await? {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        if let Some(b) = &budget {
            for threshold in announce {
                let note = format!(
                    "{year} spend ¥{spent} reached {threshold}% of the annual budget ¥{annual} ({percent}%)",
                    year = b.year,
                    spent = b.spent.0,
                    annual = b.annual.0,
                    percent = b.percent
                );
                info!(department = %name, threshold, "budget threshold reached");
                // The action names the threshold: the recorder folds Events with the same
                // reason and action into one series.
                publish_event(
                    &ctx,
                    dept.as_ref(),
                    EventType::Warning,
                    "BudgetThreshold",
                    &format!("Budget{threshold}"),
                    note,
                )
                .await;
                ctx.notifier
                    .send(Notification::for_budget(&name, threshold, b, now));
            }
        }
    } else if status_differs(dept.status.as_ref(), &status) {
        apply_status(&ctx, dept.as_ref(), status).await?;
    }
    if dept.spec.budget.as_ref().is_some_and(|b| b.enforce) {
        // A budget raised (or a new year) may let parked requests in.
        ctx.tenancy.admit_department(&ctx, &name, None).await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// This year's charges of a department's subtree, settled once for both its own budget and
/// the subtree's spend.
struct SubtreeCharges {
    year: i32,
    /// The annual budgets in the subtree, summed.
    budget: Decimal,
    /// Charged this year so far, per department of the subtree (absent: nothing).
    by_department: BTreeMap<String, Decimal>,
}

/// `None` when no department in `dept`'s subtree has a budget (nothing is settled then).
fn subtree_charges(
    ctx: &SharedContext,
    dept: &Department,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Result<SubtreeCharges, billing::BillingError>> {
    let parents = ctx.tenancy.parents();
    let root = dept.name_any();
    let departments = ctx.tenancy.departments.state();
    let members: Vec<&Department> = departments
        .iter()
        .filter(|d| hierarchy::within(&parents, &d.name_any(), &root))
        .map(AsRef::as_ref)
        .collect();
    let budgets: Vec<Decimal> = members
        .iter()
        .filter_map(|d| d.spec.budget.as_ref())
        .filter_map(|b| parse_money("spec.budget.annual", &b.annual).ok())
        .collect();
    if budgets.is_empty() {
        return None;
    }
    let config = BillingConfig::default();
    let year = now.with_timezone(&config.zone).year();
    Some((|| {
        let scope = Scope {
            departments: members.iter().map(|d| d.name_any()).collect(),
            providers: vec![],
        };
        let requests = ctx.tenancy.requests.state();
        let books = ctx.tenancy.price_books.state();
        let settlement = billing::settle_requests(
            requests.iter().map(AsRef::as_ref),
            books.iter().map(AsRef::as_ref),
            &budget::year_period(year, &config)?,
            &scope,
            &config,
            &FixedClock(now),
        )?;
        Ok(SubtreeCharges {
            year,
            budget: budgets.iter().sum(),
            by_department: settlement.by_department,
        })
    })())
}

/// The subtree's spend against the budgets in it; `None` without a budget in the subtree or
/// when the spend couldn't be settled.
fn subtree_spend(charges: Option<&SubtreeCharges>) -> Option<SubtreeSpend> {
    let charges = charges?;
    let spend = scorecard::Spend {
        spent: charges.by_department.values().sum(),
        budget: charges.budget,
        budgeted: true,
    };
    Some(SubtreeSpend {
        year: charges.year,
        spent: format_money("status.subtree.spend.spent", round_fen(spend.spent)).ok()?,
        budget: format_money("status.subtree.spend.budget", spend.budget).ok()?,
        percent: spend.percent().unwrap_or_default().to_string(),
    })
}

/// This year's spend against `spec.budget` and the thresholds newly crossed; `None` without a
/// budget; what status said when the spend couldn't be settled (`charges` is `None` then).
fn budget_of(
    dept: &Department,
    charges: Option<&SubtreeCharges>,
) -> (Option<BudgetStatus>, Vec<u32>) {
    let previous = dept.status.as_ref().and_then(|s| s.budget.clone());
    let Some(spec) = &dept.spec.budget else {
        return (None, vec![]);
    };
    let Some(charges) = charges else {
        return (previous, vec![]);
    };
    let assessed = parse_money("spec.budget.annual", &spec.annual).and_then(|annual| {
        let spent = charges
            .by_department
            .get(&dept.name_any())
            .copied()
            .unwrap_or_default();
        budget::assess(charges.year, annual, spent, previous.as_ref())
    });
    match assessed {
        Ok((status, new)) => (Some(status), new),
        Err(e) => {
            tracing::warn!(department = %dept.name_any(), error = %e, "budget spend not computed");
            (previous, vec![])
        }
    }
}

/// Apply `status` on condition that the Department is still at the resourceVersion we read;
/// `false` when it moved on (nothing written).
async fn apply_status_at(
    ctx: &SharedContext,
    dept: &Department,
    status: Value,
) -> Result<bool, Error> {
    let patch = json!({
        "apiVersion": Department::api_version(&()),
        "kind": Department::kind(&()),
        "metadata": {"name": dept.name_any(), "resourceVersion": dept.resource_version()},
        "status": status,
    });
    match Api::<Department>::all(ctx.client.clone())
        .patch_status(
            &dept.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The migration figures (上云率, 整合率) of the department and every department below it, as
/// of now, from the MigrationWorkloads in their namespaces.
pub fn migration_figures(ctx: &SharedContext, name: &str) -> MigrationFigures {
    let t = &ctx.tenancy;
    let systems: Vec<SystemFacts> = t
        .migrations
        .state()
        .iter()
        .filter_map(|mw| {
            let dept = t.department_of(&mw.namespace()?)?;
            Some(SystemFacts::of(mw, &dept.name_any()))
        })
        .collect();
    let own = scorecard::own_counts(&systems, crate::clock::now());
    hierarchy::roll_up(&t.parents(), &own)
        .remove(name)
        .unwrap_or_default()
        .to_figures()
}

/// Requests in the department's namespaces that have not exited (or been rejected).
pub fn live_requests(ctx: &SharedContext, dept: &Department) -> Vec<String> {
    let namespaces = dept.owned_namespaces();
    let mut live: Vec<String> = ctx
        .tenancy
        .requests
        .state()
        .iter()
        .filter(|r| r.namespace().is_some_and(|ns| namespaces.contains(&ns)))
        .filter(|r| {
            !matches!(
                r.status.as_ref().and_then(|s| s.phase),
                Some(Phase::Exited | Phase::Rejected)
            )
        })
        .map(|r| format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()))
        .collect();
    live.sort();
    live
}

/// Create or adopt the namespace. Refuses (Ok(Err(reason))) to take a namespace that exists and
/// wasn't handed to this department by its label: deleting the Department deletes its
/// namespaces, so adopting `default` by a typo must be impossible.
async fn ensure_namespace(
    ctx: &SharedContext,
    dept: &Department,
    ns: &str,
) -> Result<Result<(), String>, Error> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let name = dept.name_any();
    if let Some(existing) = api.get_opt(ns).await? {
        let label = existing.labels().get(DEPARTMENT_LABEL).cloned();
        let owned_by_us = existing
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == dept.uid().as_ref());
        if !owned_by_us && label.as_deref() != Some(name.as_str()) {
            return Ok(Err(match label {
                Some(other) => format!("namespace {ns} belongs to Department {other}"),
                None => format!(
                    "namespace {ns} already exists and is not a department namespace; to hand it over, label it {DEPARTMENT_LABEL}={name}"
                ),
            }));
        }
    }
    let owner = dept
        .controller_owner_ref(&())
        .map(|o| serde_json::to_value(o).unwrap_or_default());
    let patch = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": ns, "labels": {DEPARTMENT_LABEL: name}, "ownerReferences": owner.into_iter().collect::<Vec<_>>()},
    });
    api.patch(
        ns,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(Ok(()))
}

/// The department's admins and members, as RBAC subjects (sorted, once each).
fn people(dept: &Department) -> Vec<Value> {
    rbac_subjects(dept.spec.admins.iter().chain(&dept.spec.members))
}

/// Everyone a stage of the department's ApprovalPolicy names, as RBAC subjects (none while
/// the policy doesn't exist).
fn approvers(ctx: &SharedContext, dept: &Department) -> Vec<Value> {
    let policy = ctx
        .tenancy
        .policies
        .get(&kube::runtime::reflector::ObjectRef::new(
            dept.approval_policy_name(),
        ));
    rbac_subjects(
        policy
            .iter()
            .flat_map(|p| &p.spec.stages)
            .flat_map(|stage| &stage.approvers),
    )
}

/// `subjects` as RBAC subjects, sorted, once each.
fn rbac_subjects<'a>(subjects: impl Iterator<Item = &'a Subject>) -> Vec<Value> {
    let mut subjects: Vec<Value> = subjects
        .map(|s| {
            let kind = match s.kind {
                SubjectKind::User => "User",
                SubjectKind::Group => "Group",
            };
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": s.name})
        })
        .collect();
    subjects.sort_by_key(|s| s.to_string());
    subjects.dedup();
    subjects
}

/// The RoleBinding `name` in `ns` of `subjects` to the ClusterRole `role`, owned by `dept`.
async fn ensure_binding(
    ctx: &SharedContext,
    dept: &Department,
    ns: &str,
    name: &str,
    role: &str,
    subjects: Vec<Value>,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": ns, "labels": {DEPARTMENT_LABEL: dept.name_any()}, "ownerReferences": owner_refs(dept)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    });
    Api::<RoleBinding>::namespaced(ctx.client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// The ServiceAccount (namespace, name) a user name stands for, if it is one
/// (`system:serviceaccount:NS:NAME`).
pub fn service_account_of(user: &str) -> Option<(String, String)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':'))
        .then(|| (ns.to_owned(), name.to_owned()))
}

async fn ensure_isolation(ctx: &SharedContext, dept: &Department, ns: &str) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": ISOLATION_POLICY, "namespace": ns, "labels": {DEPARTMENT_LABEL: dept.name_any()}, "ownerReferences": owner_refs(dept)},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {DEPARTMENT_LABEL: dept.name_any()}}}]}],
        },
    });
    Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns)
        .patch(
            ISOLATION_POLICY,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// The Department as controller owner of what it creates, so garbage collection removes them
/// with it and the controller sees changes to them.
fn owner_refs(dept: &Department) -> Vec<Value> {
    dept.controller_owner_ref(&())
        .and_then(|o| serde_json::to_value(o).ok())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::service_account_of;

    #[test]
    fn a_service_account_is_read_from_its_user_name() {
        assert_eq!(
            service_account_of("system:serviceaccount:yunzhang-system:yunzhang"),
            Some(("yunzhang-system".into(), "yunzhang".into()))
        );
        for other in [
            "yunzhang-admin",
            "system:serviceaccount:yunzhang-system",
            "system:serviceaccount::yunzhang",
            "system:serviceaccount:a:b:c",
        ] {
            assert_eq!(service_account_of(other), None, "{other}");
        }
    }
}
