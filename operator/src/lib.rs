//! yunzhang (云长): the government "one cloud" resource lifecycle as a Kubernetes operator.
//!
//! Layout: [`api`] holds the CRD types, [`conditions`] and [`leader`] pure helpers with their
//! shells, [`controllers`] the reconcilers, [`notify`] the lifecycle webhooks,
//! [`cli`] the command line, [`run`] the process wiring.

pub mod admission;
pub mod api;
pub mod billing;
pub mod cli;
pub mod clock;
pub mod conditions;
pub mod controllers;
pub mod iac;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod notify;
pub mod reports;
pub mod run;
pub mod scorecard;
pub mod tenancy;
