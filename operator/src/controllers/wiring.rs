//! How the tenancy, lifecycle and settlement controllers are wired: which watches re-trigger which reconciles.

use std::{future::Future, sync::Arc};

use futures::{StreamExt, channel::mpsc::UnboundedReceiver};
use k8s_openapi::api::{core::v1::Namespace, networking::v1::NetworkPolicy, rbac::v1::RoleBinding};
use kube::{
    Api, Client, ResourceExt,
    runtime::{Controller, reflector::ObjectRef, watcher},
};
use tracing::debug;

use super::{
    SharedContext,
    department::reconcile_department,
    lifecycle, migration, settlement,
    status::{error_policy, reconcile_ready},
    tenancy::{self, Stores},
};
use crate::api::{
    Approval, ApprovalPolicy, CloudProvider, CloudQuota, Department, MigrationWorkload, PriceBook,
    ResourceRequest, SettlementReport,
};

/// The tenancy and lifecycle controllers, built before they run so their stores can be shared.
pub struct TenancyControllers {
    pub departments: Controller<Department>,
    pub quotas: Controller<CloudQuota>,
    pub requests: Controller<ResourceRequest>,
    pub price_books: Controller<PriceBook>,
    pub approvals: Controller<Approval>,
    pub policies: Controller<ApprovalPolicy>,
    pub providers: Controller<CloudProvider>,
    pub reports: Controller<SettlementReport>,
    pub migrations: Controller<MigrationWorkload>,
}

pub fn tenancy_controllers(client: &Client) -> TenancyControllers {
    let cfg = || watcher::Config::default().any_semantic();
    TenancyControllers {
        departments: Controller::new(Api::<Department>::all(client.clone()), cfg()),
        quotas: Controller::new(Api::<CloudQuota>::all(client.clone()), cfg()),
        requests: Controller::new(Api::<ResourceRequest>::all(client.clone()), cfg()),
        price_books: Controller::new(Api::<PriceBook>::all(client.clone()), cfg()),
        approvals: Controller::new(Api::<Approval>::all(client.clone()), cfg()),
        policies: Controller::new(Api::<ApprovalPolicy>::all(client.clone()), cfg()),
        providers: Controller::new(Api::<CloudProvider>::all(client.clone()), cfg()),
        reports: Controller::new(Api::<SettlementReport>::all(client.clone()), cfg()),
        migrations: Controller::new(Api::<MigrationWorkload>::all(client.clone()), cfg()),
    }
}

impl TenancyControllers {
    /// The stores the reconcilers read.
    pub fn stores(&self) -> Stores {
        Stores {
            departments: self.departments.store(),
            quotas: self.quotas.store(),
            requests: self.requests.store(),
            price_books: self.price_books.store(),
            approvals: self.approvals.store(),
            policies: self.policies.store(),
            providers: self.providers.store(),
            reports: self.reports.store(),
            migrations: self.migrations.store(),
        }
    }

    /// Run them all until `stop` fires. `triggers` are requests to reconcile because another
    /// request's quota pass changed their decision.
    pub async fn run<S, F>(
        self,
        ctx: SharedContext,
        stop: &S,
        triggers: UnboundedReceiver<ObjectRef<ResourceRequest>>,
    ) where
        S: Fn() -> F,
        F: Future<Output = ()> + Send + Sync + 'static,
    {
        let client = ctx.client.clone();
        let cfg = || watcher::Config::default().any_semantic();
        let t = ctx.tenancy.clone();

        // A Department re-reconciles when its namespaces, bindings or policies change, when
        // requests or quotas in its namespaces (or below it) change its usage figures, and when a
        // department below it changes (its budget counts in the subtree's spend).
        let (t1, t2, t5, t6) = (t.clone(), t.clone(), t.clone(), t.clone());
        let departments = self
            .departments
            .owns(Api::<Namespace>::all(client.clone()), cfg())
            .owns(Api::<RoleBinding>::all(client.clone()), cfg())
            .owns(Api::<NetworkPolicy>::all(client.clone()), cfg())
            .watches(
                Api::<ResourceRequest>::all(client.clone()),
                cfg(),
                move |rr| departments_above(&t1, rr.namespace()),
            )
            .watches(Api::<CloudQuota>::all(client.clone()), cfg(), move |q| {
                departments_above(&t2, q.namespace())
            })
            .watches(
                Api::<MigrationWorkload>::all(client.clone()),
                cfg(),
                move |mw| departments_above(&t5, mw.namespace()),
            )
            .watches(Api::<Department>::all(client.clone()), cfg(), move |d| {
                ancestors(&t6, d.spec.parent.clone(), vec![])
            })
            .graceful_shutdown_on(stop())
            .run(
                reconcile_department,
                error_policy::<Department>,
                ctx.clone(),
            )
            .for_each(log_result);

        // A quota's figures change with the requests and Departments of its department.
        let (t3, t4) = (t.clone(), t.clone());
        let quotas = self
            .quotas
            .watches(
                Api::<ResourceRequest>::all(client.clone()),
                cfg(),
                move |rr| quotas_of_namespace(&t3, rr.namespace()),
            )
            .watches(Api::<Department>::all(client.clone()), cfg(), move |d| {
                d.owned_namespaces()
                    .into_iter()
                    .flat_map(|ns| quotas_of_namespace(&t4, Some(ns)))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(stop())
            .run(
                tenancy::reconcile_quota,
                error_policy::<CloudQuota>,
                ctx.clone(),
            )
            .for_each(log_result);

        // A request re-reconciles when an Approval names it, when another request's quota
        // pass changed its decision, and — while it is being deleted — when a settlement report
        // changes (it goes once its billed periods are settled).
        let t5 = t.clone();
        let requests = self
            .requests
            .watches(Api::<Approval>::all(client.clone()), cfg(), |a| {
                a.namespace()
                    .map(|ns| ObjectRef::new(&a.spec.request.name).within(&ns))
            })
            .watches(
                Api::<SettlementReport>::all(client.clone()),
                cfg(),
                move |_| {
                    t5.requests
                        .state()
                        .iter()
                        .filter(|r| r.metadata.deletion_timestamp.is_some())
                        .map(|r| ObjectRef::from_obj(r.as_ref()))
                        .collect::<Vec<_>>()
                },
            )
            .reconcile_on(triggers)
            .graceful_shutdown_on(stop())
            .run(
                lifecycle::reconcile_request,
                error_policy::<ResourceRequest>,
                ctx.clone(),
            )
            .for_each(log_result);

        let approvals = self
            .approvals
            .graceful_shutdown_on(stop())
            .run(
                lifecycle::reconcile_approval,
                error_policy::<Approval>,
                ctx.clone(),
            )
            .for_each(log_result);
        let policies = self
            .policies
            .graceful_shutdown_on(stop())
            .run(reconcile_ready, error_policy::<ApprovalPolicy>, ctx.clone())
            .for_each(log_result);
        let providers = self
            .providers
            .graceful_shutdown_on(stop())
            .run(reconcile_ready, error_policy::<CloudProvider>, ctx.clone())
            .for_each(log_result);

        let price_books = self
            .price_books
            .graceful_shutdown_on(stop())
            .run(reconcile_ready, error_policy::<PriceBook>, ctx.clone())
            .for_each(log_result);

        let reports = settlement::run(self.reports, ctx.clone(), stop());

        // A workload follows the ResourceRequest it owns.
        let migrations = self
            .migrations
            .owns(Api::<ResourceRequest>::all(client.clone()), cfg())
            .graceful_shutdown_on(stop())
            .run(
                migration::reconcile_workload,
                error_policy::<MigrationWorkload>,
                ctx.clone(),
            )
            .for_each(log_result);

        futures::join!(
            reports,
            migrations,
            departments,
            quotas,
            requests,
            price_books,
            approvals,
            policies,
            providers
        );
    }
}

async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(result: Result<T, E>) {
    if let Err(e) = result {
        debug!(error = %e, "controller event");
    }
}

/// The department owning `ns` and all its ancestors (their subtree usage includes it).
fn departments_above(t: &Arc<tenancy::Tenancy>, ns: Option<String>) -> Vec<ObjectRef<Department>> {
    let Some(dept) = ns.and_then(|ns| t.department_of(&ns)) else {
        return vec![];
    };
    ancestors(
        t,
        dept.spec.parent.clone(),
        vec![ObjectRef::new(&dept.name_any())],
    )
}

/// `refs` followed by the department `parent` and every one above it (a cycle ends the walk).
fn ancestors(
    t: &Arc<tenancy::Tenancy>,
    parent: Option<String>,
    mut refs: Vec<ObjectRef<Department>>,
) -> Vec<ObjectRef<Department>> {
    let parents = t.parents();
    let mut at = parent;
    while let Some(p) = at.filter(|p| refs.iter().all(|r| &r.name != p)) {
        refs.push(ObjectRef::new(&p));
        at = parents.get(&p).cloned().flatten();
    }
    refs
}

/// Every CloudQuota of the department owning `ns`.
fn quotas_of_namespace(
    t: &Arc<tenancy::Tenancy>,
    ns: Option<String>,
) -> Vec<ObjectRef<CloudQuota>> {
    let Some(dept) = ns.and_then(|ns| t.department_of(&ns)) else {
        return vec![];
    };
    let namespaces = dept.owned_namespaces();
    t.quotas
        .state()
        .iter()
        .filter(|q| q.namespace().is_some_and(|ns| namespaces.contains(&ns)))
        .map(|q| ObjectRef::new(&q.name_any()).within(&q.namespace().unwrap_or_default()))
        .collect()
}
