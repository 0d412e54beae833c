//! Executors run OpenTofu for a rendered workspace: plan, apply a saved plan, destroy, and
//! re-plan to detect drift.
//!
//! The lifecycle controller records every apply and destroy in the request's status *before*
//! it starts (`status.apply` / `status.destroy`), awaits the run, and records the result; a
//! run found `Running` by a later reconcile was interrupted by a restart, and the executor is
//! asked to apply again with the same plan hash. An executor must never apply twice and never
//! apply anything but the approved plan: when the saved plan is gone or stale it checks
//! whether the workspace is already in effect (a fresh plan with no changes: success) and
//! otherwise fails, asking for a new plan and approval.
//!
//! Executors: [`NoopExecutor`] (runs nothing), [`LocalExecutor`](super::local::LocalExecutor)
//! (`tofu` as a child process) and [`JobExecutor`](super::job::JobExecutor) (a Kubernetes Job
//! per run).

use std::{collections::BTreeMap, fmt, time::Duration};

use futures::future::BoxFuture;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{RenderedWorkspace, RequestRef, render::SENSITIVE_OUTPUT};

/// What a plan would do, for the approvers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOutcome {
    /// `sha256:<hex>`: identifies exactly what an apply of this plan runs; approvals bind to it.
    pub hash: String,
    pub add: u32,
    pub change: u32,
    pub destroy: u32,
    /// Every resource the plan touches (no-ops and reads left out), by address.
    pub resources: Vec<PlannedChange>,
    /// The plan as a person reads it.
    pub readable: String,
}

impl PlanOutcome {
    /// The plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.add == 0 && self.change == 0 && self.destroy == 0
    }
}

/// One resource a plan touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedChange {
    /// e.g. `module.web.terraform_data.instance[0]`.
    pub address: String,
    /// OpenTofu's actions: `["create"]`, `["update"]`, `["delete"]`, `["delete", "create"]`
    /// (replace, destroy first) or `["create", "delete"]` (replace, create first).
    pub actions: Vec<String>,
}

/// What an apply produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Outputs that may be shown in status.
    pub outputs: BTreeMap<String, String>,
    /// Outputs marked sensitive: they go into a Secret owned by the request.
    pub secret_outputs: BTreeMap<String, String>,
}

/// A failed run: the message says what went wrong and, where possible, what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// Which request a run is for, and how it runs. One per call; cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunContext {
    /// The request: its uid names the working directory (local) or the Jobs (job), and the
    /// Jobs' objects are owned by it when they live in its namespace.
    pub request: RequestRef,
    /// Time limit of the whole run (`CloudProvider.spec.executor.timeoutSeconds`); `None`
    /// takes the executor's default.
    pub timeout: Option<Duration>,
    /// The provider's credentials (`CloudProvider.spec.credentialsSecretRef`).
    pub credentials: Credentials,
}

impl RunContext {
    /// A run for `request` with the executor's default timeout and no credentials.
    pub fn new(request: RequestRef) -> Self {
        RunContext {
            request,
            timeout: None,
            credentials: Credentials::default(),
        }
    }

    /// A run for `request` with the provider's timeout (`spec.executor.timeoutSeconds`) and
    /// credentials (read by the caller from `spec.credentialsSecretRef`).
    pub fn for_provider(
        request: RequestRef,
        provider: &crate::api::cloud_provider::CloudProviderSpec,
        credentials: Credentials,
    ) -> Self {
        RunContext {
            request,
            timeout: provider
                .executor
                .timeout_seconds
                .map(|s| Duration::from_secs(u64::from(s))),
            credentials,
        }
    }
}

/// The executor a `CloudProvider` asks for (`spec.executor.type`): the shared `local`
/// executor, a `job` executor with the provider's image and service account, or the no-op one.
pub fn executor_for_provider(
    executor: &crate::api::cloud_provider::Executor,
    local: &super::LocalExecutor,
    client: &kube::Client,
) -> Result<std::sync::Arc<dyn Executor>, ExecError> {
    use crate::api::cloud_provider::ExecutorType;
    Ok(match executor.type_ {
        ExecutorType::Local => std::sync::Arc::new(local.clone()),
        ExecutorType::Job => std::sync::Arc::new(super::JobExecutor::new(
            client.clone(),
            super::JobConfig::from_spec(executor)?,
        )),
        ExecutorType::Noop => std::sync::Arc::new(NoopExecutor),
    })
}

/// A provider's credentials. The local executor passes `env` to `tofu` as its environment;
/// the job executor references `secret` with `envFrom`, so values never enter the Job object.
/// `Debug` never shows the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// `(namespace, name)` of the Secret.
    pub secret: Option<(String, String)>,
    /// The Secret's data as environment variables (`OS_AUTH_URL=…`), for the local executor.
    pub env: BTreeMap<String, String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("secret", &self.secret)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// The provider's credentials Secret: referenced by name (job executor) and its data as
    /// environment variables (local executor). Keys that are not valid variable names and
    /// values that are not UTF-8 are left out.
    pub fn from_secret(secret: &k8s_openapi::api::core::v1::Secret) -> Self {
        let valid_name = |k: &str| {
            !k.is_empty()
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        Credentials {
            secret: secret
                .metadata
                .namespace
                .clone()
                .zip(secret.metadata.name.clone()),
            env: secret
                .data
                .iter()
                .flatten()
                .filter(|(k, _)| valid_name(k))
                .filter_map(|(k, v)| Some((k.clone(), String::from_utf8(v.0.clone()).ok()?)))
                .collect(),
        }
    }

    /// `text` with every credential value (of 4 characters or more) replaced by `***`, for
    /// error messages that quote OpenTofu's output.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for value in self.env.values().filter(|v| v.len() >= 4) {
            text = text.replace(value.as_str(), "***");
        }
        text
    }
}

/// Runs OpenTofu (or pretends to). Object safe, so the controller picks one per provider.
pub trait Executor: Send + Sync {
    /// Plan the workspace; the saved plan is kept so that [`Executor::apply`] runs exactly it.
    fn plan(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<PlanOutcome, ExecError>>;
    /// Apply the saved plan with `plan_hash`, at most once. `workspace` must be the one that
    /// was planned (and approved). Called again with the same hash (after a restart) it
    /// applies nothing and succeeds if the workspace is in effect; a plan that no longer
    /// matches the state is refused, never applied.
    fn apply(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
        plan_hash: String,
    ) -> BoxFuture<'static, Result<ApplyOutcome, ExecError>>;
    /// Destroy everything of the workspace. Idempotent.
    fn destroy(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<(), ExecError>>;
    /// Re-plan the applied workspace against the state and the cloud: `None` when nothing
    /// differs, else the plan that would bring things back (condition `Drifted`). Applies
    /// nothing; the returned hash may be approved and applied like any plan.
    fn drift(
        &self,
        ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<Option<PlanOutcome>, ExecError>>;
}

/// The plan hash and counts from `tofu show -json <planfile>`.
///
/// The hash is `sha256:<hex>` over `u64be(len) ‖ workspace hash ‖ u64be(len) ‖ changes`, where
/// `changes` is the compact JSON of the plan's `resource_changes` and `output_changes`. Those
/// say exactly what an apply does (each resource's before and after values, so they also pin
/// the state the plan was made against); the rest of the plan JSON (timestamp, prior state's
/// serial and lineage, OpenTofu version) is left out, so planning the same workspace against
/// the same state twice gives the same hash. The workspace hash is included because the plan
/// JSON does not carry everything the files say (e.g. the backend).
pub fn summarize_plan(workspace_hash: &str, plan: &Value) -> Result<PlanOutcome, ExecError> {
    let resource_changes = plan
        .get("resource_changes")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let output_changes = plan
        .get("output_changes")
        .cloned()
        .unwrap_or(Value::Object(Default::default()));
    if !resource_changes.is_array() {
        return Err(ExecError(
            "the plan JSON's resource_changes is not a list; is this OpenTofu's `show -json` \
             of a plan file?"
                .to_owned(),
        ));
    }
    let changes = serde_json::to_string(&serde_json::json!({
        "resource_changes": canonical(&resource_changes),
        "output_changes": canonical(&output_changes),
    }))
    .map_err(|e| ExecError(format!("serializing the plan's changes: {e}")))?;
    let mut sha = Sha256::new();
    for part in [workspace_hash.as_bytes(), changes.as_bytes()] {
        sha.update((part.len() as u64).to_be_bytes());
        sha.update(part);
    }
    let mut outcome = PlanOutcome {
        hash: format!("sha256:{}", hex::encode(sha.finalize())),
        ..PlanOutcome::default()
    };
    for change in resource_changes.as_array().into_iter().flatten() {
        let actions: Vec<String> = change["change"]["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        let has = |a: &str| actions.iter().any(|x| x == a);
        // A replace counts as one add and one destroy, as OpenTofu's own summary line does.
        if has("create") {
            outcome.add += 1;
        }
        if has("delete") {
            outcome.destroy += 1;
        }
        if has("update") {
            outcome.change += 1;
        }
        if has("create") || has("delete") || has("update") {
            outcome.resources.push(PlannedChange {
                address: change["address"].as_str().unwrap_or_default().to_owned(),
                actions,
            });
        }
    }
    outcome.resources.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(outcome)
}

/// The last `max` bytes of `s`, at a character boundary: the end of a tool's output, for an
/// error message.
pub(crate) fn tail_chars(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// `value` with object keys sorted at every level, whatever serde_json's map order is.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, Value> =
                map.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Outputs of `tofu output -json` split into shown and sensitive ones; values that are not
/// strings are written as compact JSON. The renderer's [`SENSITIVE_OUTPUT`] (`{item: {output:
/// value}}`) becomes one secret per module output, keyed `<item>.<output>`; any other output
/// marked sensitive is a secret under its own name.
pub fn split_outputs(outputs: &Value) -> ApplyOutcome {
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut outcome = ApplyOutcome::default();
    for (name, output) in outputs.as_object().into_iter().flatten() {
        let value = &output["value"];
        if name == SENSITIVE_OUTPUT {
            for (item, module_outputs) in value.as_object().into_iter().flatten() {
                for (key, value) in module_outputs.as_object().into_iter().flatten() {
                    outcome
                        .secret_outputs
                        .insert(format!("{item}.{key}"), text(value));
                }
            }
        } else if output["sensitive"].as_bool().unwrap_or(false) {
            outcome.secret_outputs.insert(name.clone(), text(value));
        } else {
            outcome.outputs.insert(name.clone(), text(value));
        }
    }
    outcome
}

/// Runs nothing: every module block of the workspace is one resource to add; applies and
/// destroys succeed at once and nothing ever drifts. The plan hash is the workspace hash.
pub struct NoopExecutor;

impl Executor for NoopExecutor {
    fn plan(
        &self,
        _ctx: RunContext,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<PlanOutcome, ExecError>> {
        let modules: Vec<String> = workspace
            .files
            .values()
            .flat_map(|f| f.lines())
            .filter_map(|l| l.strip_prefix("module \""))
            .filter_map(|l| l.split('"').next())
            .map(str::to_owned)
            .collect();
        let readable = modules
            .iter()
            .map(|m| format!("  + module.{m} (no-op executor: nothing is created)\n"))
            .collect::<String>();
        let outcome = PlanOutcome {
            hash: workspace.hash,
            add: modules.len() as u32,
            change: 0,
            destroy: 0,
            resources: modules
                .iter()
                .map(|m| PlannedChange {
                    address: format!("module.{m}"),
                    actions: vec!["create".to_owned()],
                })
                .collect(),
            readable: format!(
                "Plan: {} to add, 0 to change, 0 to destroy.\n{readable}",
                modules.len()
            ),
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn apply(
        &self,
        _ctx: RunContext,
        _workspace: RenderedWorkspace,
        _plan_hash: String,
    ) -> BoxFuture<'static, Result<ApplyOutcome, ExecError>> {
        Box::pin(async { Ok(ApplyOutcome::default()) })
    }

    fn destroy(
        &self,
        _ctx: RunContext,
        _workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<(), ExecError>> {
        Box::pin(async { Ok(()) })
    }

    fn drift(
        &self,
        _ctx: RunContext,
        _workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<Option<PlanOutcome>, ExecError>> {
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> RunContext {
        RunContext::new(RequestRef {
            namespace: "gx-finance".to_owned(),
            name: "tax-portal".to_owned(),
            uid: "6f1c2a7e".to_owned(),
        })
    }

    #[tokio::test]
    async fn the_noop_plan_counts_module_blocks_and_keeps_the_workspace_hash() {
        let ws = RenderedWorkspace {
            files: [(
                "main.tf".to_owned(),
                "terraform {}\nmodule \"web\" {\n}\nmodule \"db\" {\n}\n".to_owned(),
            )]
            .into(),
            hash: "sha256:abc".to_owned(),
        };
        let executor: Box<dyn Executor> = Box::new(NoopExecutor);
        let plan = executor.plan(ctx(), ws.clone()).await.expect("plan");
        assert_eq!(plan.hash, "sha256:abc");
        assert_eq!((plan.add, plan.change, plan.destroy), (2, 0, 0));
        assert!(plan.readable.contains("module.web"), "{}", plan.readable);
        assert_eq!(executor.drift(ctx(), ws).await, Ok(None));
    }

    fn plan_json(actions: &[(&str, &[&str])]) -> Value {
        json!({
            "format_version": "1.2",
            "timestamp": "2026-11-22T05:00:00Z",
            "prior_state": {"serial": 3},
            "resource_changes": actions.iter().map(|(address, actions)| json!({
                "address": address,
                "change": {"actions": actions, "before": null, "after": {"input": {"vcpu": 4}}},
            })).collect::<Vec<_>>(),
            "output_changes": {"web": {"actions": ["create"]}},
        })
    }

    #[test]
    fn plan_summary_counts_per_address_and_replace_as_add_and_destroy() {
        let plan = plan_json(&[
            ("module.web.terraform_data.instance[1]", &["update"]),
            (
                "module.web.terraform_data.instance[0]",
                &["delete", "create"],
            ),
            ("module.db.terraform_data.instance[0]", &["no-op"]),
            ("module.eip.terraform_data.instance[0]", &["create"]),
            ("module.oss.terraform_data.instance[0]", &["delete"]),
        ]);
        let outcome = summarize_plan("sha256:ws", &plan).expect("summary");
        assert_eq!((outcome.add, outcome.change, outcome.destroy), (2, 1, 2));
        let addresses: Vec<&str> = outcome
            .resources
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        assert_eq!(
            addresses,
            [
                "module.eip.terraform_data.instance[0]",
                "module.oss.terraform_data.instance[0]",
                "module.web.terraform_data.instance[0]",
                "module.web.terraform_data.instance[1]",
            ]
        );
        assert!(outcome.hash.starts_with("sha256:") && outcome.hash.len() == 71);
    }

    #[test]
    fn plan_hash_ignores_timestamps_and_binds_workspace_and_changes() {
        let plan = plan_json(&[("module.web.terraform_data.instance[0]", &["create"])]);
        let mut later = plan.clone();
        later["timestamp"] = json!("2026-11-23T00:00:00Z");
        later["prior_state"]["serial"] = json!(4);
        let hash = |ws: &str, p: &Value| summarize_plan(ws, p).expect("summary").hash;
        assert_eq!(hash("sha256:ws", &plan), hash("sha256:ws", &later));
        assert_ne!(hash("sha256:ws", &plan), hash("sha256:other", &plan));
        let mut bigger = plan.clone();
        bigger["resource_changes"][0]["change"]["after"]["input"]["vcpu"] = json!(8);
        assert_ne!(hash("sha256:ws", &plan), hash("sha256:ws", &bigger));
    }

    #[test]
    fn outputs_split_by_sensitivity_and_non_strings_become_json() {
        let outputs = json!({
            "db": {"sensitive": false, "type": "object", "value": {"endpoint": "db:3306", "port": 3306}},
            "name": {"sensitive": false, "type": "string", "value": "web"},
            "password": {"sensitive": true, "type": "string", "value": "s3cret"},
            "_sensitive": {"sensitive": true, "type": "object", "value": {
                "db": {"admin_password": "pw", "ca": {"pem": "x"}},
                "web": {},
            }},
        });
        let outcome = split_outputs(&outputs);
        assert_eq!(outcome.secret_outputs["db.admin_password"], "pw");
        assert_eq!(outcome.secret_outputs["db.ca"], r#"{"pem":"x"}"#);
        assert_eq!(
            outcome.secret_outputs.len(),
            3,
            "{:?}",
            outcome.secret_outputs
        );
        assert!(!outcome.outputs.contains_key("_sensitive"));
        assert_eq!(
            outcome.outputs["db"],
            r#"{"endpoint":"db:3306","port":3306}"#
        );
        assert_eq!(outcome.outputs["name"], "web");
        assert_eq!(outcome.secret_outputs["password"], "s3cret");
        assert!(!outcome.outputs.contains_key("password"));
    }

    #[test]
    fn credentials_come_from_the_secret_as_environment_variables() {
        use k8s_openapi::{ByteString, api::core::v1::Secret};
        let mut secret = Secret::default();
        secret.metadata.namespace = Some("yunzhang-system".to_owned());
        secret.metadata.name = Some("gx-openstack-creds".to_owned());
        secret.data = Some(BTreeMap::from([
            (
                "OS_AUTH_URL".to_owned(),
                ByteString(b"https://keystone".to_vec()),
            ),
            ("not-a-name".to_owned(), ByteString(b"x".to_vec())),
            ("BINARY".to_owned(), ByteString(vec![0xff, 0xfe])),
        ]));
        let credentials = Credentials::from_secret(&secret);
        assert_eq!(
            credentials.secret,
            Some((
                "yunzhang-system".to_owned(),
                "gx-openstack-creds".to_owned()
            ))
        );
        assert_eq!(
            credentials.env,
            BTreeMap::from([("OS_AUTH_URL".to_owned(), "https://keystone".to_owned())])
        );
    }

    #[test]
    fn credentials_never_show_in_debug_and_are_redacted_from_messages() {
        let credentials = Credentials {
            secret: Some(("yunzhang-system".to_owned(), "creds".to_owned())),
            env: [("OS_PASSWORD".to_owned(), "hunter2-long".to_owned())].into(),
        };
        let debug = format!("{credentials:?}");
        assert!(
            debug.contains("OS_PASSWORD") && !debug.contains("hunter2"),
            "{debug}"
        );
        assert_eq!(
            credentials.redact("auth failed for hunter2-long at keystone"),
            "auth failed for *** at keystone"
        );
    }
}
