//! The tenancy shell: the quota ledger, and the reconcilers of ResourceRequest admission and
//! CloudQuota status. Decisions come from the pure [`crate::tenancy`] core; this file reads the
//! world, serializes decisions per operator (one ledger lock) and writes the results.
//!
//! Why a ledger: the reflector stores lag behind our own writes, so deciding from them alone
//! could count a fresh reservation twice or not at all. The ledger is loaded once from a fresh
//! LIST (each request's `status.quota` is the truth), updated *before* each reservation is
//! written, and reloaded from the API server after any write that may or may not have landed.
//! A crash loses nothing: what was written is in the next LIST, what wasn't was never promised.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use k8s_openapi::jiff::Timestamp;
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    runtime::{
        controller::Action,
        reflector::{ObjectRef, Store},
    },
};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tracing::info;

use super::{
    Error, SharedContext, apply_finalizer, has_finalizer, measured,
    status::{apply_status, status_differs},
};
use crate::{
    api::{
        CloudQuota, Department, HoldingState, Phase, PriceBook, QuotaHolding, ResourceRequest,
        resource_request::Estimate,
    },
    billing::{MonthlyEstimate, Prices, estimate_monthly},
    conditions::{self, condition},
    tenancy::{
        hierarchy::{self, QuotaInput, QuotaVerdict},
        quota::{self, Admission, Amounts, Candidate, Capacity, Limits, Usage},
    },
};

/// Holds a request's quota until its release is recorded.
pub const REQUEST_FINALIZER: &str = "yunzhang.io/quota";
/// Condition type on a ResourceRequest: quota is reserved for it.
pub const CONDITION_QUOTA_RESERVED: &str = "QuotaReserved";

/// Stores of the kinds tenancy reads, and the quota ledger.
pub struct Tenancy {
    pub departments: Store<Department>,
    pub quotas: Store<CloudQuota>,
    pub requests: Store<ResourceRequest>,
    pub price_books: Store<PriceBook>,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    loaded: bool,
    /// By request uid.
    holdings: HashMap<String, Holding>,
    /// The last status written per request uid, to skip writes that change nothing.
    written: HashMap<String, Value>,
    /// Requests by namespace, so a pass looks at its department's requests only. Seeded from
    /// the LIST that loads the ledger, kept current by every request reconcile.
    by_namespace: HashMap<String, BTreeSet<String>>,
}

#[derive(Clone, Debug)]
struct Holding {
    department: String,
    state: HoldingState,
    amounts: Amounts,
}

impl Tenancy {
    pub fn new(
        departments: Store<Department>,
        quotas: Store<CloudQuota>,
        requests: Store<ResourceRequest>,
        price_books: Store<PriceBook>,
    ) -> Self {
        Tenancy {
            departments,
            quotas,
            requests,
            price_books,
            ledger: Mutex::default(),
        }
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
        let inputs = self.quota_inputs(Utc::now());
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
            Some((quotas, hard)) => Capacity { quotas, hard },
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
            HoldingState::Reserved => u.reserved = u.reserved.plus(&h.amounts),
            HoldingState::Used => u.used = u.used.plus(&h.amounts),
        }
    }
    usage
}

/// Load the ledger from a fresh LIST of every request's `status.quota`.
async fn ensure_loaded(ctx: &SharedContext, ledger: &mut Ledger) -> Result<(), Error> {
    if ledger.loaded {
        return Ok(());
    }
    let all = Api::<ResourceRequest>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?;
    ledger.holdings.clear();
    ledger.written.clear();
    ledger.by_namespace.clear();
    for rr in &all.items {
        if rr.meta().deletion_timestamp.is_none() || has_finalizer(rr, REQUEST_FINALIZER) {
            ledger
                .by_namespace
                .entry(rr.namespace().unwrap_or_default())
                .or_default()
                .insert(rr.name_any());
        }
        if let (Some(uid), Some(q)) = (rr.uid(), rr.status.as_ref().and_then(|s| s.quota.as_ref()))
        {
            ledger.holdings.insert(
                uid,
                Holding {
                    department: q.department.clone(),
                    state: q.state,
                    amounts: Amounts::from_api(&q.amounts),
                },
            );
        }
    }
    ledger.loaded = true;
    info!(
        requests = all.items.len(),
        holdings = ledger.holdings.len(),
        "quota ledger loaded"
    );
    Ok(())
}

/// Reconcile a ResourceRequest: hold it with a finalizer, then admit its department's waiting
/// requests in submission order; on deletion, release its quota and admit whoever now fits.
pub async fn reconcile_request(
    rr: Arc<ResourceRequest>,
    ctx: SharedContext,
) -> Result<Action, Error> {
    measured::<ResourceRequest>(&ctx.clone(), reconcile_request_inner(rr, ctx)).await
}

async fn reconcile_request_inner(
    rr: Arc<ResourceRequest>,
    ctx: SharedContext,
) -> Result<Action, Error> {
    let ns = rr.namespace().unwrap_or_default();
    let api: Api<ResourceRequest> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = rr.uid().unwrap_or_default();
    if rr.meta().deletion_timestamp.is_some() {
        if has_finalizer(rr.as_ref(), REQUEST_FINALIZER) {
            // The holding stays counted until the object is really gone: releasing it first
            // and then failing to drop the finalizer would let another request take the room
            // while this one still shows it.
            apply_finalizer(&api, rr.as_ref(), None).await?;
            let released = {
                let mut ledger = ctx.tenancy.ledger.lock().await;
                ledger.written.remove(&uid);
                if let Some(names) = ledger.by_namespace.get_mut(&ns) {
                    names.remove(&rr.name_any());
                }
                ledger.holdings.remove(&uid)
            };
            if let Some(h) = released {
                info!(request = %format!("{ns}/{}", rr.name_any()), department = h.department, "quota released");
                admit_department(&ctx, &h.department).await?;
            }
        }
        return Ok(Action::await_change());
    }
    if !has_finalizer(rr.as_ref(), REQUEST_FINALIZER) {
        apply_finalizer(&api, rr.as_ref(), Some(REQUEST_FINALIZER)).await?;
        return Ok(Action::await_change());
    }
    {
        let mut ledger = ctx.tenancy.ledger.lock().await;
        ensure_loaded(&ctx, &mut ledger).await?;
        ledger
            .by_namespace
            .entry(ns.clone())
            .or_default()
            .insert(rr.name_any());
        // Decided for this spec already: reserved, or waiting for room. Room freeing up (a
        // release, a quota change) starts a pass by itself, so there is nothing to do here —
        // and n requests don't cost n passes over their department.
        let current = rr
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation == rr.meta().generation);
        let waiting = rr
            .status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::QuotaExceeded));
        if current && (ledger.holdings.contains_key(&uid) || waiting) {
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    }
    match ctx.tenancy.department_of(&ns) {
        Some(dept) => admit_department(&ctx, &dept.name_any()).await?,
        None => {
            let message = format!(
                "namespace {ns} belongs to no Department: a platform engineer must list it in a Department's spec.namespaces"
            );
            let mut ledger = ctx.tenancy.ledger.lock().await;
            write_request_status(&ctx, &mut ledger, &rr, Phase::Pending, &message, None, None)
                .await?;
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Admit the department's waiting requests in submission order (creation time, then name).
pub async fn admit_department(ctx: &SharedContext, department: &str) -> Result<(), Error> {
    let tenancy = &ctx.tenancy;
    let mut ledger = tenancy.ledger.lock().await;
    ensure_loaded(ctx, &mut ledger).await?;
    let Some(dept) = tenancy
        .departments
        .state()
        .into_iter()
        .find(|d| d.name_any() == department)
    else {
        return Ok(());
    };
    // The department's namespaces (a namespace claimed by two departments is the older one's).
    let namespaces: Vec<String> = dept
        .owned_namespaces()
        .into_iter()
        .filter(|ns| {
            tenancy
                .department_of(ns)
                .is_some_and(|d| d.name_any() == department)
        })
        .collect();
    let mut waiting: Vec<Arc<ResourceRequest>> = namespaces
        .iter()
        .flat_map(|ns| {
            ledger
                .by_namespace
                .get(ns)
                .into_iter()
                .flatten()
                .map(move |name| ObjectRef::new(name).within(ns))
        })
        .filter_map(|key| tenancy.requests.get(&key))
        .filter(|r| {
            r.meta().deletion_timestamp.is_none() && has_finalizer(r.as_ref(), REQUEST_FINALIZER)
        })
        .collect();
    // Price every waiting or reserved request once per pass, from one index of the price books.
    let now = Utc::now();
    let prices = tenancy.prices_for(&dept);
    let estimates: HashMap<String, Result<MonthlyEstimate, String>> = waiting
        .iter()
        .map(|r| {
            let estimate = prices
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|(provider, prices)| {
                    estimate_monthly(&r.spec.items, prices, provider, department, now)
                        .map_err(|e| e.to_string())
                });
            (r.uid().unwrap_or_default(), estimate)
        })
        .collect();
    let asked_of = |r: &ResourceRequest| {
        let cost = estimates
            .get(&r.uid().unwrap_or_default())
            .and_then(|e| e.as_ref().ok())
            .map(|e| e.total);
        quota::demand(&r.spec.items, cost)
    };
    // A reservation made for an older spec (or price) is given back and the request queues again.
    for r in &waiting {
        let uid = r.uid().unwrap_or_default();
        let asked = asked_of(r);
        if ledger
            .holdings
            .get(&uid)
            .is_some_and(|h| h.state == HoldingState::Reserved && h.amounts != asked)
        {
            ledger.holdings.remove(&uid);
        }
    }
    waiting.retain(|r| !ledger.holdings.contains_key(&r.uid().unwrap_or_default()));
    waiting.sort_by_key(|r| (r.creation_timestamp(), r.name_any()));
    if waiting.is_empty() {
        return Ok(());
    }
    let snapshot = tenancy.snapshot_with(&usage_of(&ledger));
    let capacity = snapshot.capacity(department);
    let held = snapshot
        .usage
        .get(department)
        .map(Usage::held)
        .unwrap_or_default();
    let candidates: Vec<Candidate> = waiting
        .iter()
        .map(|r| Candidate {
            key: format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()),
            asked: asked_of(r),
            unpriced: estimates
                .get(&r.uid().unwrap_or_default())
                .and_then(|e| e.as_ref().err())
                .cloned(),
        })
        .collect();
    let decisions = quota::admit(&candidates, &capacity, &held);
    for ((r, candidate), (_, decision)) in waiting.iter().zip(&candidates).zip(decisions) {
        let uid = r.uid().unwrap_or_default();
        let estimate = estimates
            .get(&uid)
            .and_then(|e| e.as_ref().ok())
            .and_then(|e| e.to_status(None).ok());
        match decision {
            Admission::Reserve => {
                // Counted before it is written: a write that fails after landing can't let
                // another request take the same room.
                ledger.holdings.insert(
                    uid.clone(),
                    Holding {
                        department: department.to_owned(),
                        state: HoldingState::Reserved,
                        amounts: candidate.asked.clone(),
                    },
                );
                let holding = QuotaHolding {
                    department: department.to_owned(),
                    state: HoldingState::Reserved,
                    amounts: candidate.asked.to_api(),
                };
                if let Err(e) = write_request_status(
                    ctx,
                    &mut ledger,
                    r,
                    Phase::Pending,
                    "quota reserved",
                    Some(holding),
                    estimate,
                )
                .await
                {
                    // Whether it landed is unknown: re-read the truth before the next decision.
                    ledger.loaded = false;
                    return Err(e);
                }
                info!(request = candidate.key, department, "quota reserved");
            }
            Admission::Wait(message) => {
                write_request_status(
                    ctx,
                    &mut ledger,
                    r,
                    Phase::QuotaExceeded,
                    &message,
                    None,
                    estimate,
                )
                .await?;
            }
        }
    }
    Ok(())
}

async fn write_request_status(
    ctx: &SharedContext,
    ledger: &mut Ledger,
    rr: &ResourceRequest,
    phase: Phase,
    message: &str,
    holding: Option<QuotaHolding>,
    estimate: Option<Estimate>,
) -> Result<(), Error> {
    let uid = rr.uid().unwrap_or_default();
    let generation = rr.meta().generation;
    let reserved = holding.is_some() || ledger.holdings.contains_key(&uid);
    let holding = holding.or_else(|| {
        rr.status
            .as_ref()
            .and_then(|s| s.quota.clone())
            .filter(|_| reserved)
    });
    let reason = match phase {
        Phase::QuotaExceeded => "QuotaExceeded",
        _ if reserved => "Reserved",
        _ => "NoDepartment",
    };
    let existing = rr
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let cond = conditions::merge(
        existing,
        condition(
            CONDITION_QUOTA_RESERVED,
            reserved,
            reason,
            message,
            generation,
            Timestamp::now(),
        ),
    );
    let status = json!({
        "observedGeneration": generation,
        "phase": phase,
        "message": message,
        "quota": holding,
        "estimate": estimate,
        "conditions": cond,
    });
    // Compare without transition times, which only move with the status.
    let fingerprint = json!([generation, phase, message, holding, estimate]);
    if ledger.written.get(&uid) == Some(&fingerprint)
        || same_as_stored(rr, phase, message, &holding, &estimate)
    {
        return Ok(());
    }
    match apply_status(ctx, rr, status).await {
        Ok(()) => {
            ledger.written.insert(uid, fingerprint);
            Ok(())
        }
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => Ok(()),
        Err(e) => {
            ledger.written.remove(&uid);
            Err(e)
        }
    }
}

fn same_as_stored(
    rr: &ResourceRequest,
    phase: Phase,
    message: &str,
    holding: &Option<QuotaHolding>,
    estimate: &Option<Estimate>,
) -> bool {
    rr.status.as_ref().is_some_and(|s| {
        s.phase == Some(phase)
            && s.message.as_deref() == Some(message)
            && &s.quota == holding
            && &s.estimate == estimate
            && s.observed_generation == rr.meta().generation
    })
}

/// Reconcile a CloudQuota: write whether it counts (in window, fits its parent) and the
/// department's reserved / used / available; then admit requests that may now fit.
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
    admit_department(&ctx, &department).await?;
    Ok(Action::requeue(Duration::from_secs(60)))
}
