//! The status every kind gets: `observedGeneration` and a `Ready` condition, written with
//! server-side apply to the status subresource. Kind-specific controllers build on it.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
    runtime::controller::Action,
};
use serde_json::json;
use tracing::{debug, warn};

use super::{Error, FIELD_MANAGER, SharedContext, measured};
use crate::{
    api::CONDITION_READY,
    conditions::{self, condition},
    metrics::ErrorLabels,
};

/// An `Api` for writing the status of `obj`, namespaced or cluster-scoped alike.
pub fn dynamic_api<K: Resource<DynamicType = ()>>(
    client: kube::Client,
    obj: &K,
) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<K>(&());
    match obj.namespace() {
        Some(ns) => Api::namespaced_with(client, &ns, &ar),
        None => Api::all_with(client, &ar),
    }
}

/// The conditions an object's status holds now.
pub fn current_conditions<K: serde::Serialize>(obj: &K) -> Vec<Condition> {
    serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.pointer("/status/conditions").cloned())
        .and_then(|c| serde_json::from_value(c).ok())
        .unwrap_or_default()
}

/// Whether writing `status` over `current` would change anything; condition transition times
/// are ignored (they only move when a condition's status does). Used to skip no-op writes.
pub fn status_differs<S: serde::Serialize>(
    current: Option<&S>,
    status: &serde_json::Value,
) -> bool {
    let Some(current) = current.and_then(|s| serde_json::to_value(s).ok()) else {
        return true;
    };
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(conds) = v
            .get_mut("conditions")
            .and_then(serde_json::Value::as_array_mut)
        {
            for c in conds
                .iter_mut()
                .filter_map(serde_json::Value::as_object_mut)
            {
                c.remove("lastTransitionTime");
            }
        }
        v
    };
    strip(&current) != strip(status)
}

/// Apply `status` (a JSON object) to the status subresource with the operator's field manager.
pub async fn apply_status<K>(
    ctx: &SharedContext,
    obj: &K,
    status: serde_json::Value,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>,
{
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    dynamic_api(ctx.client.clone(), obj)
        .patch_status(
            &obj.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// Reconcile: mark the current generation as observed and Ready.
pub async fn reconcile_ready<K>(obj: Arc<K>, ctx: SharedContext) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + serde::Serialize,
{
    measured::<K>(&ctx.clone(), async move {
        let generation = obj.meta().generation;
        let existing = current_conditions(obj.as_ref());
        if !conditions::is_true_for(&existing, CONDITION_READY, generation) {
            let ready = condition(
                CONDITION_READY,
                true,
                "Reconciled",
                "observed by yunzhang",
                generation,
                Timestamp::now(),
            );
            let merged = conditions::merge(existing, ready);
            apply_status(
                &ctx,
                obj.as_ref(),
                json!({"observedGeneration": generation, "conditions": merged}),
            )
            .await?;
            debug!(kind = %K::kind(&()), name = %obj.name_any(), ?generation, "status written");
        }
        Ok(Action::requeue(Duration::from_secs(3600)))
    })
    .await
}

/// Requeue failed reconciles with a pause, and count them.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: SharedContext,
) -> Action {
    let kind = K::kind(&()).to_string();
    warn!(kind, name = %obj.name_any(), error = %error, "reconcile failed");
    ctx.metrics
        .failures
        .get_or_create(&ErrorLabels {
            kind,
            error: error.metric_label().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(5))
}
