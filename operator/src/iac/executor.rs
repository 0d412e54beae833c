//! Executors run OpenTofu for a rendered workspace: plan, apply a saved plan, destroy.
//!
//! The lifecycle controller records every apply and destroy in the request's status *before*
//! it starts (`status.apply` / `status.destroy`), awaits the run, and records the result; a
//! run found `Running` by a later reconcile was interrupted by a restart, and the executor is
//! asked to apply again — which must not apply twice (OpenTofu refuses a saved plan whose
//! state has moved on; the no-op executor has nothing to apply).

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use super::RenderedWorkspace;

/// What a plan would do, for the approvers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOutcome {
    /// `sha256:<hex>`: identifies exactly what an apply of this plan runs; approvals bind to it.
    pub hash: String,
    pub add: u32,
    pub change: u32,
    pub destroy: u32,
    /// The plan as a person reads it.
    pub readable: String,
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

/// Runs OpenTofu (or pretends to). Object safe, so the controller picks one per provider.
pub trait Executor: Send + Sync {
    /// Plan the workspace; the saved plan is kept so that [`Executor::apply`] runs exactly it.
    fn plan(
        &self,
        workspace: RenderedWorkspace,
    ) -> BoxFuture<'static, Result<PlanOutcome, ExecError>>;
    /// Apply the saved plan with `plan_hash`.
    fn apply(
        &self,
        workspace: RenderedWorkspace,
        plan_hash: String,
    ) -> BoxFuture<'static, Result<ApplyOutcome, ExecError>>;
    /// Destroy everything of the workspace.
    fn destroy(&self, workspace: RenderedWorkspace) -> BoxFuture<'static, Result<(), ExecError>>;
}

/// Runs nothing: every module block of the workspace is one resource to add; applies and
/// destroys succeed at once. The plan hash is the workspace hash.
pub struct NoopExecutor;

impl Executor for NoopExecutor {
    fn plan(
        &self,
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
            readable: format!(
                "Plan: {} to add, 0 to change, 0 to destroy.\n{readable}",
                modules.len()
            ),
        };
        Box::pin(async move { Ok(outcome) })
    }

    fn apply(
        &self,
        _workspace: RenderedWorkspace,
        _plan_hash: String,
    ) -> BoxFuture<'static, Result<ApplyOutcome, ExecError>> {
        Box::pin(async { Ok(ApplyOutcome::default()) })
    }

    fn destroy(&self, _workspace: RenderedWorkspace) -> BoxFuture<'static, Result<(), ExecError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let plan = NoopExecutor.plan(ws).await.expect("plan");
        assert_eq!(plan.hash, "sha256:abc");
        assert_eq!((plan.add, plan.change, plan.destroy), (2, 0, 0));
        assert!(plan.readable.contains("module.web"), "{}", plan.readable);
    }
}
