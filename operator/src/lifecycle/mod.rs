//! The lifecycle of a ResourceRequest: apply → approve (and file, 备案) → provision → online →
//! change → exit → settle. Pure logic only — no I/O, no clock, no Kubernetes client.
//!
//! The split ("functional core, imperative shell"):
//! - [`policy`] evaluates an ApprovalPolicy: which stages apply, auto-approval, whether one
//!   Approval counts (bound to uid, generation and plan hash; four eyes; separation of
//!   departments) and how far the stages have got, with a reason for every approval that
//!   doesn't count.
//! - [`filing`] formats, parses and computes filing numbers (备案号), `YZ-2026-000123`.
//! - [`machine`] is the state machine: [`machine::decide`] maps what was observed to a phase,
//!   a message and the actions to take.
//!
//! The controller (in `crate::controllers`) is the shell: it reads the world (the request, its
//! Approvals, the ApprovalPolicy, the quota ledger, the executor's runs, billing), evaluates the
//! policy against the request as it is now, calls [`machine::decide`], performs the actions in
//! order, and writes the status (phase, message, `observedGeneration`, conditions) with
//! server-side apply. Reconciles are level-triggered: the same observations give the same
//! decision, and every action is idempotent.

pub mod filing;
pub mod machine;
pub mod migration;
pub mod policy;
