//! The tenancy shell: the quota ledger, and the reconciler of CloudQuota status. Decisions
//! come from the pure [`crate::tenancy`] core; the request lifecycle
//! ([`super::lifecycle`]) asks the ledger to reserve, convert and release, and writes what
//! each request holds to its `status.quota`.
//!
//! Why a ledger: the reflector stores lag behind our own writes, so deciding from them alone
//! could count a fresh reservation twice or not at all. The ledger is loaded once from a fresh
//! LIST (each request's `status.quota` is the truth), counts a reservation *before* it is
//! written, gives quota back only *after* the write that gives it back has landed, and is
//! reloaded from the API server after any write that may or may not have landed. A crash
//! loses nothing: what was written is in the next LIST, what wasn't was never promised.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Datelike, Utc};
use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        controller::Action,
        events::EventType,
        reflector::{ObjectRef, Store},
    },
};
use rust_decimal::Decimal;
use serde_json::json;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::{
    Error, SharedContext, for_each_listed, measured, publish_event,
    status::{apply_status, status_differs},
};
use crate::{
    api::{
        Approval, ApprovalPolicy, CloudProvider, CloudQuota, Department, HoldingState,
        MigrationWorkload, Phase, PriceBook, QuotaHolding, ResourceRequest, SettlementReport,
        resource_request::QuotaChange,
    },
    billing::{self, BillingConfig, BillingError, Prices, estimate_monthly, money::parse_money},
    conditions::{self, condition},
    lifecycle::machine::QuotaState,
    tenancy::{
        hierarchy::{self, QuotaInput, QuotaVerdict},
        quota::{self, Admission, Amounts, BudgetLimit, Candidate, Capacity, Limits, Usage},
    },
};

/// Stores of the kinds tenancy reads, and the quota ledger.
pub struct Tenancy {
    pub departments: Store<Department>,
    pub quotas: Store<CloudQuota>,
    pub requests: Store<ResourceRequest>,
    pub price_books: Store<PriceBook>,
    pub approvals: Store<Approval>,
    pub policies: Store<ApprovalPolicy>,
    pub providers: Store<CloudProvider>,
    /// SettlementReports: finalized ones say which periods are settled.
    pub reports: Store<SettlementReport>,
    pub migrations: Store<MigrationWorkload>,
    ledger: Mutex<Ledger>,
    /// Reconciles requests whose quota decision changed in another request's pass.
    trigger: UnboundedSender<ObjectRef<ResourceRequest>>,
    /// How many stores have not had their first full list yet.
    unsynced: tokio::sync::watch::Receiver<usize>,
}

/// The stores the operator reads from.
pub struct Stores {
    pub departments: Store<Department>,
    pub quotas: Store<CloudQuota>,
    pub requests: Store<ResourceRequest>,
    pub price_books: Store<PriceBook>,
    pub approvals: Store<Approval>,
    pub policies: Store<ApprovalPolicy>,
    pub providers: Store<CloudProvider>,
    pub reports: Store<SettlementReport>,
    pub migrations: Store<MigrationWorkload>,
}

#[derive(Default)]
struct Ledger {
    loaded: bool,
    /// What each request holds, by uid: written to its `status.quota`, or promised and about
    /// to be written.
    holdings: HashMap<String, Holding>,
    /// Requests that asked for quota for their current spec and don't hold it yet.
    wants: HashMap<String, ObjectRef<ResourceRequest>>,
    /// Why a request waits, and for which generation.
    waits: HashMap<String, (i64, String)>,
}

/// What one request holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Holding {
    pub department: String,
    pub state: HoldingState,
    pub amounts: Amounts,
    pub generation: Option<i64>,
    /// Reserved for a change of running resources.
    pub change: Option<Change>,
}

/// Quota reserved for a change, on top of the use.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub generation: i64,
    pub amounts: Amounts,
    pub target: Amounts,
}

impl Tenancy {
    /// `unsynced` counts the stores that have not had their first full list yet.
    pub fn new(
        stores: Stores,
        unsynced: tokio::sync::watch::Receiver<usize>,
        trigger: UnboundedSender<ObjectRef<ResourceRequest>>,
    ) -> Self {
        Tenancy {
            unsynced,
            departments: stores.departments,
            quotas: stores.quotas,
            requests: stores.requests,
            price_books: stores.price_books,
            approvals: stores.approvals,
            policies: stores.policies,
            migrations: stores.migrations,
            providers: stores.providers,
            reports: stores.reports,
            ledger: Mutex::default(),
            trigger,
        }
    }

    /// Once every store has had its first full list. A reconcile reads other kinds' stores (the
    /// request's Department, its quotas and policies): right after a start, before they have
    /// synced, an empty store would read as "no Department" and that would be written.
    pub async fn synced(&self) {
        let _ = self.unsynced.clone().wait_for(|n| *n == 0).await;
    }

    /// The department's provider and its price books, or why there are none to price with.
    pub fn prices_for(&self, dept: &Department) -> Result<(String, Prices), String> {
        let provider = dept.spec.provider.clone().ok_or_else(|| {
            format!(
                "Department {} names no spec.provider to price it",
                dept.name_any()
            )
        })?;
        let books = self.price_books.state();
        let prices = Prices::from_books(
            books
                .iter()
                .filter(|b| b.spec.provider == provider)
                .map(|b| (b.metadata.name.as_deref().unwrap_or_default(), &b.spec)),
        )
        .map_err(|e| e.to_string())?;
        Ok((provider, prices))
    }

    /// The Department that owns namespace `ns`.
    pub fn department_of(&self, ns: &str) -> Option<Arc<Department>> {
        let departments = self.departments.state();
        Department::owner_of(departments.iter().map(|d| d.as_ref()), ns)
            .and_then(|owner| departments.iter().find(|d| std::ptr::eq(d.as_ref(), owner)))
            .cloned()
    }

    /// Department name → parent name.
    pub fn parents(&self) -> BTreeMap<String, Option<String>> {
        self.departments
            .state()
            .iter()
            .map(|d| (d.name_any(), d.spec.parent.clone()))
            .collect()
    }

    fn quota_inputs(&self, now: DateTime<Utc>) -> Vec<QuotaInput> {
        let mut quotas: Vec<_> = self
            .quotas
            .state()
            .into_iter()
            .filter(|q| q.meta().deletion_timestamp.is_none())
            .collect();
        quotas.sort_by_key(|q| (q.creation_timestamp(), q.namespace(), q.name_any()));
        quotas
            .iter()
            .filter_map(|q| {
                let ns = q.namespace()?;
                let department = self.department_of(&ns)?.name_any();
                Some(QuotaInput {
                    key: format!("{ns}/{}", q.name_any()),
                    department,
                    hard: Limits::from_api(&q.spec.hard),
                    in_window: in_window(q, now),
                })
            })
            .collect()
    }

    /// What each department's own requests hold.
    async fn usage(&self, ctx: &SharedContext) -> Result<BTreeMap<String, Usage>, Error> {
        let mut ledger = self.ledger.lock().await;
        ensure_loaded(ctx, &mut ledger).await?;
        Ok(usage_of(&ledger))
    }

    /// Quota figures: verdict per quota, own capacity and usage per department.
    pub async fn snapshot(&self, ctx: &SharedContext) -> Result<QuotaSnapshot, Error> {
        let usage = self.usage(ctx).await?;
        Ok(self.snapshot_with(&usage))
    }

    fn snapshot_with(&self, usage: &BTreeMap<String, Usage>) -> QuotaSnapshot {
        let parents = self.parents();
        let inputs = self.quota_inputs(crate::clock::now());
        let held: BTreeMap<String, Amounts> =
            usage.iter().map(|(d, u)| (d.clone(), u.held())).collect();
        let verdicts = hierarchy::judge_quotas(&parents, &inputs, &held);
        QuotaSnapshot {
            parents,
            inputs,
            verdicts,
            usage: usage.clone(),
        }
    }
}

/// A consistent view of quotas and usage.
pub struct QuotaSnapshot {
    pub parents: BTreeMap<String, Option<String>>,
    pub inputs: Vec<QuotaInput>,
    pub verdicts: BTreeMap<String, QuotaVerdict>,
    pub usage: BTreeMap<String, Usage>,
}

impl QuotaSnapshot {
    /// What the department's own requests may use, and which quotas make it up.
    pub fn capacity(&self, department: &str) -> Capacity {
        match hierarchy::own_capacity(department, &self.parents, &self.inputs, &self.verdicts) {
            Some((quotas, hard)) => Capacity {
                quotas,
                hard,
                budget: None,
            },
            None => Capacity::default(),
        }
    }
}

fn in_window(q: &CloudQuota, now: DateTime<Utc>) -> bool {
    let parse = |s: &Option<String>| {
        s.as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    parse(&q.spec.valid_from).is_none_or(|from| from <= now)
        && parse(&q.spec.valid_until).is_none_or(|until| now <= until)
}

fn usage_of(ledger: &Ledger) -> BTreeMap<String, Usage> {
    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    for h in ledger.holdings.values() {
        let u = usage.entry(h.department.clone()).or_default();
        match h.state {
            HoldingState::Reserved => u.reserved = u.reserved.plus(&h.total()),
            HoldingState::Used => {
                u.used = u.used.plus(&h.amounts);
                if let Some(c) = &h.change {
                    u.reserved = u.reserved.plus(&c.amounts);
                }
            }
        }
    }
    usage
}

/// Load the ledger from a fresh LIST of every request's `status.quota` (not the store, which may
/// lag behind a write of unknown outcome), read a page at a time: the whole list is never held.
async fn ensure_loaded(ctx: &SharedContext, ledger: &mut Ledger) -> Result<(), Error> {
    if ledger.loaded {
        return Ok(());
    }
    ledger.holdings.clear();
    ledger.waits.clear();
    ledger.wants.clear();
    let mut requests = 0;
    // Whether a Department owns each namespace seen (requests share a few namespaces).
    let mut owned: HashMap<String, bool> = HashMap::new();
    for_each_listed::<ResourceRequest>(&ctx.client, &ListParams::default(), |rr| {
        requests += 1;
        let Some(uid) = rr.uid() else { return };
        let status = rr.status.as_ref();
        if let Some(q) = status.and_then(|s| s.quota.as_ref()) {
            ledger.holdings.insert(uid.clone(), Holding::from_api(q));
        }
        // Requests that were waiting for quota keep their place in the queue: their
        // department's. A request in a namespace no Department owns has no queue to wait in
        // (a Department claiming the namespace re-triggers it, and it queues then).
        let phase = status.and_then(|s| s.phase);
        if rr.meta().deletion_timestamp.is_none()
            && matches!(phase, None | Some(Phase::Pending | Phase::QuotaExceeded))
            && *owned
                .entry(rr.namespace().unwrap_or_default())
                .or_insert_with_key(|ns| ctx.tenancy.department_of(ns).is_some())
        {
            ledger.wants.insert(uid, want_of(&rr));
        }
    })
    .await?;
    ledger.loaded = true;
    info!(
        requests,
        holdings = ledger.holdings.len(),
        "quota ledger loaded"
    );
    Ok(())
}

fn want_of(rr: &ResourceRequest) -> ObjectRef<ResourceRequest> {
    ObjectRef::new(&rr.name_any()).within(&rr.namespace().unwrap_or_default())
}

impl Holding {
    fn from_api(q: &QuotaHolding) -> Holding {
        Holding {
            department: q.department.clone(),
            state: q.state,
            amounts: Amounts::from_api(&q.amounts),
            generation: q.generation,
            change: q.change.as_ref().map(|c| Change {
                generation: c.generation,
                amounts: Amounts::from_api(&c.amounts),
                target: Amounts::from_api(&c.target),
            }),
        }
    }

    /// As written to `status.quota`.
    pub fn to_api(&self) -> QuotaHolding {
        QuotaHolding {
            department: self.department.clone(),
            state: self.state,
            amounts: self.amounts.to_api(),
            generation: self.generation,
            change: self.change.as_ref().map(|c| QuotaChange {
                generation: c.generation,
                amounts: c.amounts.to_api(),
                target: c.target.to_api(),
            }),
        }
    }

    /// Everything it holds: the use or reservation, plus a change's reservation.
    pub fn total(&self) -> Amounts {
        match &self.change {
            Some(c) => self.amounts.plus(&c.amounts),
            None => self.amounts.clone(),
        }
    }

    /// The holding once the reservation is in use: a new request's reservation, or a change's
    /// target.
    pub fn converted(&self) -> Holding {
        match &self.change {
            Some(c) => Holding {
                state: HoldingState::Used,
                amounts: c.target.clone(),
                generation: Some(c.generation),
                change: None,
                department: self.department.clone(),
            },
            None => Holding {
                state: HoldingState::Used,
                ..self.clone()
            },
        }
    }

    /// The holding without a change's reservation.
    pub fn without_change(&self) -> Holding {
        Holding {
            change: None,
            ..self.clone()
        }
    }
}

impl Tenancy {
    /// What the ledger says `rr` holds for its current spec, for the lifecycle's decision.
    pub async fn quota_of(
        &self,
        ctx: &SharedContext,
        rr: &ResourceRequest,
    ) -> Result<(QuotaState, Option<Holding>), Error> {
        let mut ledger = self.ledger.lock().await;
        ensure_loaded(ctx, &mut ledger).await?;
        let uid = rr.uid().unwrap_or_default();
        let generation = rr.meta().generation.unwrap_or_default();
        let holding = ledger.holdings.get(&uid).cloned();
        let waiting = ledger
            .waits
            .get(&uid)
            .filter(|(g, _)| *g == generation)
            .map(|(_, m)| QuotaState::Exceeded(m.clone()));
        let state = match &holding {
            None => waiting.unwrap_or(QuotaState::None),
            Some(h) if h.state == HoldingState::Reserved => {
                if h.generation == Some(generation) {
                    QuotaState::Reserved
                } else {
                    waiting.unwrap_or(QuotaState::None)
                }
            }
            Some(h) => match &h.change {
                Some(c) if c.generation == generation => QuotaState::ChangeReserved,
                _ => waiting.unwrap_or(QuotaState::Used),
            },
        };
        Ok((state, holding))
    }

    /// Ask for `rr`'s current spec to be held (a new request's reservation, or a change's
    /// reservation on top of what its resources use), then admit its department's waiting
    /// requests in submission order. Counted in the ledger before anyone writes it; the
    /// requests whose decision changed are reconciled to write theirs.
    pub async fn reserve(&self, ctx: &SharedContext, rr: &ResourceRequest) -> Result<(), Error> {
        {
            let mut ledger = self.ledger.lock().await;
            ensure_loaded(ctx, &mut ledger).await?;
            ledger
                .wants
                .insert(rr.uid().unwrap_or_default(), want_of(rr));
        }
        match self.department_of(&rr.namespace().unwrap_or_default()) {
            Some(dept) => self.admit_department(ctx, &dept.name_any(), rr.uid()).await,
            None => Ok(()),
        }
    }

    /// Record what `uid` holds after its status said so: call only once the status write that
    /// gives quota back has landed (giving back before that could let another request take
    /// room that this one still shows). Admits whoever now fits.
    pub async fn settle(
        &self,
        ctx: &SharedContext,
        uid: &str,
        holding: Option<Holding>,
    ) -> Result<(), Error> {
        let department = {
            let mut ledger = self.ledger.lock().await;
            if holding.is_none() {
                ledger.wants.remove(uid);
                ledger.waits.remove(uid);
            }
            let before = match holding {
                Some(h) => ledger.holdings.insert(uid.to_owned(), h),
                None => ledger.holdings.remove(uid),
            };
            before.map(|h| h.department)
        };
        match department {
            Some(d) => self.admit_department(ctx, &d, None).await,
            None => Ok(()),
        }
    }

    /// A status write of unknown outcome: re-read the truth before the next decision.
    pub async fn invalidate(&self) {
        self.ledger.lock().await.loaded = false;
    }

    /// A request that is gone for good (its finalizer removed): forget it.
    pub async fn forget(&self, uid: &str) {
        let mut ledger = self.ledger.lock().await;
        ledger.wants.remove(uid);
        ledger.waits.remove(uid);
        ledger.holdings.remove(uid);
    }

    /// A request the API server deleted while the ledger still counts a holding for it: it went
    /// without its exit (its finalizers were removed by hand), so nothing else will give its
    /// quota back. Drops the holding and admits its department's waiting requests; returns what
    /// it held. (A request that exits gives its quota back before its finalizer goes, so a
    /// holding here means it vanished.) A ledger invalidated since it was loaded still has its
    /// last holdings: the vanished one is found there too, and the next load, from a LIST that
    /// no longer has it, agrees. A ledger never loaded has none.
    pub async fn vanished(&self, ctx: &SharedContext, uid: &str) -> Result<Option<Holding>, Error> {
        let held = {
            let mut ledger = self.ledger.lock().await;
            ledger.wants.remove(uid);
            ledger.waits.remove(uid);
            ledger.holdings.remove(uid)
        };
        if let Some(h) = &held {
            self.admit_department(ctx, &h.department, None).await?;
        }
        Ok(held)
    }

    /// Admit the department's waiting requests in submission order (creation time, then
    /// name), in the ledger. Requests whose decision changed, other than `caller`, are
    /// triggered to reconcile and write it.
    pub async fn admit_department(
        &self,
        ctx: &SharedContext,
        department: &str,
        caller: Option<String>,
    ) -> Result<(), Error> {
        let mut ledger = self.ledger.lock().await;
        ensure_loaded(ctx, &mut ledger).await?;
        let Some(dept) = self
            .departments
            .state()
            .into_iter()
            .find(|d| d.name_any() == department)
        else {
            return Ok(());
        };
        let wanted: Vec<(String, Arc<ResourceRequest>)> = ledger
            .wants
            .iter()
            .filter_map(|(uid, key)| Some((uid.clone(), self.requests.get(key)?)))
            .filter(|(uid, r)| {
                r.uid().as_deref() == Some(uid.as_str())
                    && r.meta().deletion_timestamp.is_none()
                    && self
                        .department_of(&r.namespace().unwrap_or_default())
                        .is_some_and(|d| d.name_any() == department)
            })
            .collect();
        // Price every candidate once per pass, from one index of the price books.
        let now = crate::clock::now();
        let prices = self.prices_for(&dept);
        let mut candidates = Vec::new();
        let mut waiting: Vec<(String, Arc<ResourceRequest>, Amounts, Amounts)> = Vec::new();
        for (uid, r) in wanted {
            let generation = r.meta().generation.unwrap_or_default();
            let estimate = prices
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|(provider, prices)| {
                    estimate_monthly(&r.spec.items, prices, provider, department, now)
                        .map_err(|e| e.to_string())
                });
            let full = quota::demand(&r.spec.items, estimate.as_ref().ok().map(|e| e.total));
            // What it asks on top of what it holds, for the current spec.
            let asked = match ledger.holdings.get(&uid).cloned() {
                Some(h) if h.state == HoldingState::Reserved => {
                    if h.amounts == full {
                        // Same amounts for the new spec: it keeps its place.
                        if let Some(h) = ledger.holdings.get_mut(&uid) {
                            h.generation = Some(generation);
                        }
                        ledger.wants.remove(&uid);
                        continue;
                    }
                    // A reservation for an older spec is given back; it queues again.
                    ledger.holdings.remove(&uid);
                    full.clone()
                }
                Some(h) => {
                    if h.change
                        .as_ref()
                        .is_some_and(|c| c.generation == generation)
                    {
                        ledger.wants.remove(&uid);
                        continue;
                    }
                    if let Some(h) = ledger.holdings.get_mut(&uid) {
                        h.change = None;
                    }
                    full.exceeding(&h.amounts)
                }
                None => full.clone(),
            };
            candidates.push(Candidate {
                key: format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()),
                asked: asked.clone(),
                unpriced: estimate.err(),
            });
            waiting.push((uid, r, asked, full));
        }
        let mut order: Vec<usize> = (0..waiting.len()).collect();
        order.sort_by_key(|&i| (waiting[i].1.creation_timestamp(), waiting[i].1.name_any()));
        let candidates: Vec<Candidate> = order.iter().map(|&i| candidates[i].clone()).collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let snapshot = self.snapshot_with(&usage_of(&ledger));
        let mut capacity = snapshot.capacity(department);
        capacity.budget = budget_limit(&dept, now);
        let held = snapshot
            .usage
            .get(department)
            .map(Usage::held)
            .unwrap_or_default();
        let decisions = quota::admit(&candidates, &capacity, &held);
        let mut changed = Vec::new();
        for (&i, (_, decision)) in order.iter().zip(decisions) {
            let (uid, r, asked, full) = &waiting[i];
            let generation = r.meta().generation.unwrap_or_default();
            match decision {
                Admission::Reserve => {
                    let holding = match ledger.holdings.get(uid) {
                        Some(h) => Holding {
                            change: Some(Change {
                                generation,
                                amounts: asked.clone(),
                                target: full.clone(),
                            }),
                            ..h.clone()
                        },
                        None => Holding {
                            department: department.to_owned(),
                            state: HoldingState::Reserved,
                            amounts: asked.clone(),
                            generation: Some(generation),
                            change: None,
                        },
                    };
                    ledger.holdings.insert(uid.clone(), holding);
                    ledger.waits.remove(uid);
                    ledger.wants.remove(uid);
                    changed.push((uid.clone(), want_of(r)));
                }
                Admission::Wait(message) => {
                    let before = ledger
                        .waits
                        .insert(uid.clone(), (generation, message.clone()));
                    if before != Some((generation, message)) {
                        changed.push((uid.clone(), want_of(r)));
                    }
                }
            }
        }
        drop(ledger);
        for (uid, key) in changed {
            if caller.as_deref() != Some(uid.as_str()) {
                let _ = self.trigger.unbounded_send(key);
            }
        }
        Ok(())
    }
}

/// The Department's annual budget as an admission limit, when it enforces one. This year's spend
/// is the one its status shows (the Department controller keeps it current; a new year starts
/// at zero).
fn budget_limit(dept: &Department, now: DateTime<Utc>) -> Option<BudgetLimit> {
    let budget = dept.spec.budget.as_ref().filter(|b| b.enforce)?;
    let config = BillingConfig::default();
    let year = now.with_timezone(&config.zone).year();
    let limit = (|| {
        let spent = match dept.status.as_ref().and_then(|s| s.budget.as_ref()) {
            Some(b) if b.year == year => parse_money("status.budget.spent", &b.spent)?,
            _ => Decimal::ZERO,
        };
        Ok::<_, BillingError>(BudgetLimit {
            year,
            annual: parse_money("spec.budget.annual", &budget.annual)?,
            spent,
            months_left: billing::budget::months_left(now, &config)?,
        })
    })();
    limit
        .inspect_err(|e| warn!(department = %dept.name_any(), error = %e, "budget not enforced"))
        .ok()
}

/// Reconcile a CloudQuota: write whether it counts (in window, fits its parent) and the
/// department's reserved / used / available; then admit requests that may now fit.
/// What the operator says when a request vanished holding quota.
pub fn vanished_note(rr: &ResourceRequest, held: &Holding) -> String {
    format!(
        "request {}/{} (uid {}) was deleted without its exit (its finalizers were removed): released the {} it held",
        rr.namespace().unwrap_or_default(),
        rr.name_any(),
        rr.uid().unwrap_or_default(),
        held.total()
    )
}

/// `rr` was deleted from the API server: if the ledger still counted a holding for it, release
/// it and say so in a Warning Event on its Department. Returns the department, if it released.
pub async fn release_vanished(
    ctx: &SharedContext,
    rr: &ResourceRequest,
) -> Result<Option<String>, Error> {
    let uid = rr.uid().unwrap_or_default();
    ctx.lifecycle.forget(&uid);
    let Some(held) = ctx.tenancy.vanished(ctx, &uid).await? else {
        return Ok(None);
    };
    let note = vanished_note(rr, &held);
    warn!(department = %held.department, "{note}");
    if let Some(dept) = ctx
        .tenancy
        .departments
        .get(&ObjectRef::new(&held.department))
    {
        publish_event(
            ctx,
            dept.as_ref(),
            EventType::Warning,
            "RequestVanished",
            "ReleaseQuota",
            note,
        )
        .await;
    }
    Ok(Some(held.department))
}

pub async fn reconcile_quota(q: Arc<CloudQuota>, ctx: SharedContext) -> Result<Action, Error> {
    measured::<CloudQuota>(&ctx.clone(), reconcile_quota_inner(q, ctx)).await
}

async fn reconcile_quota_inner(q: Arc<CloudQuota>, ctx: SharedContext) -> Result<Action, Error> {
    let ns = q.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", q.name_any());
    let generation = q.meta().generation;
    let existing = q
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = Timestamp::now();
    let Some(dept) = ctx.tenancy.department_of(&ns) else {
        // The Department store may lag behind a Department made moments ago (the trigger that
        // brought this reconcile comes from another watch): ask the API server before saying
        // no one owns it. (Right after a start no reconcile runs before the stores have synced.)
        let departments = Api::<Department>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await?;
        if Department::owner_of(&departments.items, &ns).is_some() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        let message =
            format!("namespace {ns} belongs to no Department, so this quota limits nobody");
        let ready = conditions::merge(
            existing,
            condition("Ready", false, "NoDepartment", &message, generation, now),
        );
        apply_status(
            &ctx,
            q.as_ref(),
            json!({"observedGeneration": generation, "conditions": ready}),
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    };
    let department = dept.name_any();
    let snapshot = ctx.tenancy.snapshot(&ctx).await?;
    let (ready, reason, message) = match snapshot.verdicts.get(&key) {
        Some(QuotaVerdict::Effective) => (
            true,
            "Effective",
            format!("counts toward department {department}"),
        ),
        Some(QuotaVerdict::OutOfWindow) => (
            false,
            "OutOfWindow",
            "outside spec.validFrom … spec.validUntil".to_owned(),
        ),
        Some(QuotaVerdict::ExceedsParent(m)) => (false, "ExceedsParent", m.clone()),
        None => (false, "Pending", "not yet evaluated".to_owned()),
    };
    let usage = snapshot.usage.get(&department).cloned().unwrap_or_default();
    let capacity = snapshot.capacity(&department);
    let available = capacity.hard.remaining(&usage.held());
    let status = json!({
        "observedGeneration": generation,
        "reserved": usage.reserved.to_api(),
        "used": usage.used.to_api(),
        // Negative remainders (quota shrunk below what is held) show as zero.
        "available": available.to_api(),
        "conditions": conditions::merge(existing, condition("Ready", ready, reason, &message, generation, now)),
    });
    if status_differs(q.status.as_ref(), &status) {
        apply_status(&ctx, q.as_ref(), status).await?;
    }
    ctx.tenancy
        .admit_department(&ctx, &department, None)
        .await?;
    Ok(Action::requeue(Duration::from_secs(60)))
}
