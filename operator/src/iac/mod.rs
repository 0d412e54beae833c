//! Infrastructure as code: a request's resources as an OpenTofu workspace.
//!
//! [`render`] turns one request (its items, department, filing number and project code) and its
//! provider's configuration into the files of an OpenTofu root module. It is a pure function:
//! no I/O, no clock, no randomness, so the same input always gives the same bytes and the same
//! [`hash`](render::RenderedWorkspace::hash), which is what an approval binds to.
//!
//! What a rendered workspace contains (see `docs/iac.md` for the full picture):
//!
//! - `main.tf`: a `terraform` block with `required_providers` (from the `CloudProvider`, left
//!   out when it has none) and `backend "kubernetes"` (state in a Secret in the cluster), then one
//!   `module "<item name>"` block per item, whose `source` / `version` come from the
//!   `CloudProvider`'s module for the item's type and whose inputs are the item's sizes plus
//!   `name_prefix`, `region` and `tags`;
//! - `outputs.tf`: one `output "<item name>"` per item re-exporting all of the module's outputs.
//!
//! Module sources are used as given. Local sources such as `./modules/ecs` (the reference
//! modules of the examples) are relative to the workspace directory: whoever runs OpenTofu
//! places the modules directory (`examples/modules` in this repository) as `modules/` next to
//! `main.tf`, e.g. with a symlink; git and registry sources need nothing.
//!
//! User-supplied strings are only ever emitted as HCL string literals, through one function
//! (`render::literal`), so they can't become HCL syntax or `${…}` / `%{…}` templates.
//!
//! [`executor`] runs a rendered workspace: plan, apply a saved plan, destroy, drift. The
//! executors: [`executor::NoopExecutor`], [`local::LocalExecutor`] (`tofu` as a child process)
//! and [`job::JobExecutor`] (a Kubernetes Job per run).

pub mod executor;
pub mod job;
pub mod local;
pub mod render;

pub use executor::{
    ApplyOutcome, Credentials, ExecError, Executor, NoopExecutor, PlanOutcome, PlannedChange,
    RunContext, executor_for_provider,
};

pub use job::{JobConfig, JobExecutor};
pub use local::{KubeAccess, LocalConfig, LocalExecutor, LocalExecutorArgs};
pub use render::{
    ProviderConfig, RenderError, RenderedWorkspace, RequestRef, StateBackend, WorkspaceInput,
    render_workspace, workspace_hash,
};
