//! How the tenancy, lifecycle and settlement controllers are wired: which watches re-trigger which reconciles.

use std::{collections::HashMap, future::Future, sync::Arc};

use futures::{
    Stream, StreamExt, TryStreamExt,
    channel::mpsc::{UnboundedReceiver, UnboundedSender},
};
use k8s_openapi::api::{core::v1::Namespace, networking::v1::NetworkPolicy, rbac::v1::RoleBinding};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::PartialObjectMeta,
    runtime::{Controller, WatchStreamExt, controller, reflector, reflector::ObjectRef, watcher},
};
use serde::de::DeserializeOwned;
use tracing::{debug, info};

use super::{
    SharedContext,
    department::reconcile_department,
    lifecycle, migration, price_book, settlement,
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
    /// How many of their stores have not had their first full list yet.
    pub unsynced: tokio::sync::watch::Receiver<usize>,
    /// Requests the API server deleted (from the requests' store stream), to check for quota
    /// they took with them.
    pub deleted_requests: UnboundedReceiver<ResourceRequest>,
}

/// `trigger` reconciles a request: the reports' store uses it (see below), as the quota passes do.
pub fn tenancy_controllers(
    client: &Client,
    trigger: &UnboundedSender<ObjectRef<ResourceRequest>>,
) -> TenancyControllers {
    let (synced, unsynced) = tokio::sync::watch::channel(0);
    let synced = Arc::new(synced);
    // A request that vanishes without its exit (its finalizers removed by hand) is seen only
    // here, as it leaves the store: what it held is released from that stream.
    let (deleted, deleted_requests) = futures::channel::mpsc::unbounded();
    let requests = controller_with(
        client,
        &synced,
        |_: &ResourceRequest| {},
        move |rr: &ResourceRequest| {
            let _ = deleted.unbounded_send(rr.clone());
        },
    );
    // A request being deleted goes once its billed periods are settled, which it reads from the
    // reports' store: so every report change re-triggers them from that store's own stream,
    // after the store holds it (a separate watch could trigger them before it does).
    let (deleting, to_reconcile) = (requests.store(), trigger.clone());
    let reports = controller_with_stored(client, &synced, move |_: &SettlementReport| {
        for r in deleting.state() {
            if r.metadata.deletion_timestamp.is_some() {
                let _ = to_reconcile.unbounded_send(ObjectRef::from_obj(r.as_ref()));
            }
        }
    });
    // A request in a namespace no Department owns waits for one to claim it: a Department that
    // newly lists a namespace (or is new) re-triggers the requests there, from the Departments'
    // store stream, so they find it in the store.
    let (in_namespace, to_reconcile) = (requests.store(), trigger.clone());
    let mut listed: HashMap<String, Vec<String>> = HashMap::new();
    let departments = controller_with_stored(client, &synced, move |d: &Department| {
        let namespaces = d.owned_namespaces();
        let before = listed
            .insert(d.uid().unwrap_or_default(), namespaces.clone())
            .unwrap_or_default();
        let claimed: Vec<&String> = namespaces
            .iter()
            .filter(|ns| !before.contains(ns))
            .collect();
        if claimed.is_empty() {
            return;
        }
        for r in in_namespace.state() {
            if r.metadata
                .namespace
                .as_ref()
                .is_some_and(|ns| claimed.contains(&ns))
            {
                let _ = to_reconcile.unbounded_send(ObjectRef::from_obj(r.as_ref()));
            }
        }
    });
    TenancyControllers {
        departments,
        quotas: controller_of(client, &synced),
        requests,
        price_books: controller_of(client, &synced),
        approvals: controller_of(client, &synced),
        policies: controller_of(client, &synced),
        providers: controller_of(client, &synced),
        reports,
        migrations: controller_of(client, &synced),
        unsynced,
        deleted_requests,
    }
}

/// How every watch lists: in pages (the default 500) read from the API server, so a kind with
/// tens of thousands of objects never arrives as one response held whole in memory.
fn watch_config() -> watcher::Config {
    watcher::Config::default()
}

/// What kubectl keeps of the last `kubectl apply`: a copy of the whole applied object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Nothing the operator does reads `managedFields` or kubectl's copy of the last applied object,
/// often the largest parts of an object: dropped as each object arrives, before any store or
/// mapper holds it. (The operator never writes a kept object back whole: status goes by
/// server-side apply of its own fields.)
fn without_unread_fields<K: Resource>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    if let Some(annotations) = obj.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// A kind the operator keeps a store of.
trait Kept:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}
impl<K> Kept for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A controller of every `K`, whose store (the one copy of each object the operator keeps) holds
/// the objects without the fields nobody reads. It counts itself into `synced`, and out again the
/// first time its store holds a full list.
fn controller_of<K: Kept>(
    client: &Client,
    synced: &Arc<tokio::sync::watch::Sender<usize>>,
) -> Controller<K> {
    controller_with(client, synced, |_: &K| {}, |_: &K| {})
}

/// [`controller_with`] without a deletion hook.
fn controller_with_stored<K: Kept>(
    client: &Client,
    synced: &Arc<tokio::sync::watch::Sender<usize>>,
    stored: impl FnMut(&K) + Send + 'static,
) -> Controller<K> {
    controller_with(client, synced, stored, |_: &K| {})
}

/// [`controller_of`], calling `stored` with each object that changed once its store holds it,
/// and `deleted` with each object deleted from the API server once its store let it go.
fn controller_with<K: Kept>(
    client: &Client,
    synced: &Arc<tokio::sync::watch::Sender<usize>>,
    mut stored: impl FnMut(&K) + Send + 'static,
    mut deleted: impl FnMut(&K) + Send + 'static,
) -> Controller<K> {
    let (reader, writer) = reflector::store();
    synced.send_modify(|n| *n += 1);
    let (synced, mut counted) = (synced.clone(), false);
    let objects = reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watch_config()).modify(without_unread_fields),
    )
    // The reflector passes an event on after the store has taken it in.
    .inspect(move |event| {
        if let Ok(watcher::Event::Delete(obj)) = event {
            deleted(obj);
        }
        if !counted && matches!(event, Ok(watcher::Event::InitDone)) {
            counted = true;
            synced.send_modify(|n| *n -= 1);
            if *synced.borrow() == 0 {
                info!("every store has synced");
            }
        }
    })
    .applied_objects()
    .inspect_ok(move |obj| stored(obj));
    Controller::for_stream(objects, reader)
}

/// Every `K` that changes, whole (for triggers that read its spec); kept by nobody.
pub fn changes_of<K>(
    client: &Client,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(Api::<K>::all(client.clone()), watch_config())
        .modify(without_unread_fields)
        .touched_objects()
}

/// The metadata of every `K` that changes: all a trigger needs that looks only at names,
/// namespaces and owners (the API server sends no spec or status, so a large kind such as
/// ResourceRequest costs little to follow more than once).
pub fn metadata_changes_of<K>(
    client: &Client,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(
        Api::<PartialObjectMeta<K>>::all(client.clone()),
        watch_config(),
    )
    .modify(without_unread_fields)
    .touched_objects()
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

    /// Run them all until `stop` fires. `triggers` are requests to reconcile: `trigger`'s other
    /// end (another request's quota pass changed their decision, or a report changed).
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
        let t = ctx.tenancy.clone();

        // Quota a vanished request took with it is released; then its department's figures
        // (and its quotas') are recomputed, as the watches of its deletion may have come first.
        let (recount_departments, departments_to_recount) = futures::channel::mpsc::unbounded();
        let (recount_quotas, quotas_to_recount) = futures::channel::mpsc::unbounded();
        let vanished = release_vanished_requests(
            ctx.clone(),
            self.deleted_requests,
            recount_departments,
            recount_quotas,
        );

        // A Department re-reconciles when its namespaces, bindings or policies change, when
        // requests or quotas in its namespaces (or below it) change its usage figures, and when a
        // department below it changes (its budget counts in the subtree's spend).
        let (t1, t2, t5, t6, t7) = (t.clone(), t.clone(), t.clone(), t.clone(), t.clone());
        let departments = self
            .departments
            .owns_stream(metadata_changes_of::<Namespace>(&client))
            .owns_stream(metadata_changes_of::<RoleBinding>(&client))
            .owns_stream(metadata_changes_of::<NetworkPolicy>(&client))
            .watches_stream(metadata_changes_of::<ResourceRequest>(&client), move |rr| {
                departments_above(&t1, rr.namespace())
            })
            .watches_stream(metadata_changes_of::<CloudQuota>(&client), move |q| {
                departments_above(&t2, q.namespace())
            })
            .watches_stream(
                metadata_changes_of::<MigrationWorkload>(&client),
                move |mw| departments_above(&t5, mw.namespace()),
            )
            .watches_stream(changes_of::<Department>(&client), move |d| {
                ancestors(&t6, d.spec.parent.clone(), vec![])
            })
            .watches_stream(metadata_changes_of::<ApprovalPolicy>(&client), move |p| {
                departments_under_policy(&t7, &p.name_any())
            })
            .reconcile_on(departments_to_recount)
            .with_config(bounded())
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
            .watches_stream(metadata_changes_of::<ResourceRequest>(&client), move |rr| {
                quotas_of_namespace(&t3, rr.namespace())
            })
            .watches_stream(changes_of::<Department>(&client), move |d| {
                d.owned_namespaces()
                    .into_iter()
                    .flat_map(|ns| quotas_of_namespace(&t4, Some(ns)))
                    .collect::<Vec<_>>()
            })
            .reconcile_on(quotas_to_recount)
            .with_config(bounded())
            .graceful_shutdown_on(stop())
            .run(
                tenancy::reconcile_quota,
                error_policy::<CloudQuota>,
                ctx.clone(),
            )
            .for_each(log_result);

        // A request re-reconciles when an Approval names it, and on `triggers`: when another
        // request's quota pass changed its decision, and — while it is being deleted — when a
        // settlement report changes (it goes once its billed periods are settled).
        let requests = self
            .requests
            .watches_stream(changes_of::<Approval>(&client), |a| {
                a.namespace()
                    .map(|ns| ObjectRef::new(&a.spec.request.name).within(&ns))
            })
            .reconcile_on(triggers)
            .with_config(bounded())
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

        // A book's overlaps depend on its provider's other books: a change to one re-checks them.
        let t7 = t.clone();
        let price_books = self
            .price_books
            .watches_stream(changes_of::<PriceBook>(&client), move |changed| {
                t7.price_books
                    .state()
                    .iter()
                    .filter(|b| b.spec.provider == changed.spec.provider)
                    .map(|b| ObjectRef::from_obj(b.as_ref()))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(stop())
            .run(
                price_book::reconcile_price_book,
                error_policy::<PriceBook>,
                ctx.clone(),
            )
            .for_each(log_result);

        let reports = settlement::run(self.reports, ctx.clone(), stop());

        // A workload follows the ResourceRequest it owns.
        let migrations = self
            .migrations
            .owns_stream(metadata_changes_of::<ResourceRequest>(&client))
            .graceful_shutdown_on(stop())
            .run(
                migration::reconcile_workload,
                error_policy::<MigrationWorkload>,
                ctx.clone(),
            )
            .for_each(log_result);

        futures::join!(
            vanished,
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

/// Release what each deleted request still held in the ledger (it went without its exit), and
/// have the figures of its department, the departments above, and its quotas recomputed.
async fn release_vanished_requests(
    ctx: SharedContext,
    mut deleted: UnboundedReceiver<ResourceRequest>,
    departments: UnboundedSender<ObjectRef<Department>>,
    quotas: UnboundedSender<ObjectRef<CloudQuota>>,
) {
    while let Some(rr) = deleted.next().await {
        match tenancy::release_vanished(&ctx, &rr).await {
            Ok(Some(_)) => {
                for d in departments_above(&ctx.tenancy, rr.namespace()) {
                    let _ = departments.unbounded_send(d);
                }
                for q in quotas_of_namespace(&ctx.tenancy, rr.namespace()) {
                    let _ = quotas.unbounded_send(q);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "releasing a vanished request's quota"),
        }
    }
}

/// At most this many reconciles of one controller at a time. Unbounded, a start with tens of
/// thousands of objects sends a write for each at once: the API server times out, and the
/// leader lease, renewed through the same client, is lost.
const CONCURRENT_RECONCILES: u16 = 32;

fn bounded() -> controller::Config {
    controller::Config::default().concurrency(CONCURRENT_RECONCILES)
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

/// The departments whose approvals follow the ApprovalPolicy `policy` (their approvers binding
/// names its stages' approvers).
fn departments_under_policy(t: &Arc<tenancy::Tenancy>, policy: &str) -> Vec<ObjectRef<Department>> {
    t.departments
        .state()
        .iter()
        .filter(|d| d.approval_policy_name() == policy)
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
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
