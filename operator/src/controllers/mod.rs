//! Controllers: thin shells that read, call the pure core, and write with server-side apply.

pub mod department;
pub mod lifecycle;
pub mod migration;
pub mod price_book;
pub mod settlement;
pub mod status;
pub mod tenancy;
pub mod wiring;

use std::sync::Arc;

use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder},
};
use serde_json::json;
use tracing::warn;

use crate::metrics::Metrics;

/// The one field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "yunzhang-operator";

/// What every reconcile gets: the client, the event recorder, the metrics, the tenancy
/// state (stores and quota ledger) and the notifier. No globals.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub tenancy: Arc<tenancy::Tenancy>,
    pub lifecycle: Arc<lifecycle::Lifecycle>,
    /// Lifecycle webhooks: `ctx.notifier.send(Notification::for_request(..))` never blocks.
    pub notifier: crate::notify::Notifier,
    /// Image prefixes MigrationWorkload hook Jobs may use (`--hook-image-prefixes`).
    pub hook_image_prefixes: Vec<String>,
    /// The ServiceAccount (namespace, name) the operator runs as, as the API server says
    /// (SelfSubjectReview): bound to its namespaced role in each department namespace.
    pub service_account: Option<(String, String)>,
}

pub type SharedContext = Arc<Context>;

/// Every `K`, listed in pages of 500: a kind with tens of thousands of objects never arrives as
/// one response held whole in memory.
pub async fn list_all<K>(client: &Client, lp: &ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut items = Vec::new();
    for_each_listed(client, lp, |k| items.push(k)).await?;
    Ok(items)
}

/// Hand every `K` to `each`, listed in pages of 500 (one consistent snapshot): each page is
/// dropped before the next is read.
pub async fn for_each_listed<K>(
    client: &Client,
    lp: &ListParams,
    mut each: impl FnMut(K),
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let api = Api::<K>::all(client.clone());
    let mut lp = lp.clone().limit(500);
    loop {
        let page = api.list(&lp).await?;
        page.items.into_iter().for_each(&mut each);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => {
                // A continued list reads the snapshot of its first page: no version of its own.
                lp = lp.continue_token(&token);
                (lp.resource_version, lp.version_match) = (None, None);
            }
            _ => return Ok(()),
        }
    }
}

/// Errors of a reconcile, each with a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("{0}")]
    Conflict(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
            Error::Conflict(_) => "conflict",
        }
    }
}

/// Run one reconcile of kind `K` once every store has synced, counting it and timing it in the
/// metrics.
pub async fn measured<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    reconcile: impl std::future::Future<Output = Result<kube::runtime::controller::Action, Error>>,
) -> Result<kube::runtime::controller::Action, Error> {
    let labels = crate::metrics::KindLabels {
        kind: K::kind(&()).to_string(),
    };
    ctx.tenancy.synced().await;
    ctx.metrics.reconciliations.get_or_create(&labels).inc();
    let started = std::time::Instant::now();
    let result = reconcile.await;
    ctx.metrics
        .reconcile_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Whether `obj` carries `finalizer`.
pub fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.finalizers().iter().any(|f| f == finalizer)
}

/// Add or remove the operator's finalizer with server-side apply (finalizers are a set, so other
/// controllers' finalizers are untouched).
pub async fn apply_finalizer<K>(api: &Api<K>, obj: &K, finalizer: Option<&str>) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<&str> = finalizer.into_iter().collect();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": obj.name_any(), "finalizers": finalizers},
    });
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to hold.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Publish an Event about `obj`; failures are logged, never fatal.
pub async fn publish_event<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, reason, "could not publish event");
    }
}
