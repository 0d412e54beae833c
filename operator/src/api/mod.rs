//! The `yunzhang.io/v1alpha1` API: one file per kind, shared types in [`common`].

// Several `printcolumn(type_ = ...)` in one `#[kube(...)]` are distinct columns, not duplicates.
#![allow(clippy::duplicated_attributes)]

pub mod annotations;
pub mod approval;
pub mod approval_policy;
pub mod cloud_provider;
pub mod cloud_quota;
pub mod common;
pub mod department;
pub mod hook_template;
pub mod migration_workload;
pub mod price_book;
pub mod resource_request;
pub mod settlement_report;

pub use approval::{Approval, ApprovalSpec, ApprovalStatus, Decision, RequestBinding};
pub use approval_policy::{ApprovalPolicy, ApprovalPolicySpec, ApprovalStage};
pub use cloud_provider::{CloudProvider, CloudProviderSpec};
pub use cloud_quota::{CloudQuota, CloudQuotaSpec, QuotaLimits};
pub use common::*;
pub use department::{Department, DepartmentSpec, DepartmentStatus};
pub use hook_template::{HookTemplate, HookTemplateSpec};
pub use migration_workload::{MigrationWorkload, MigrationWorkloadSpec};
pub use price_book::{PriceBook, PriceBookSpec};
pub use resource_request::{
    HoldingState, Phase, QuotaHolding, ResourceRequest, ResourceRequestSpec, ResourceRequestStatus,
};
pub use settlement_report::{SettlementReport, SettlementReportSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs of all ten kinds, with the file name each is written to.
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("approvalpolicies.yaml", ApprovalPolicy::crd()),
        ("approvals.yaml", Approval::crd()),
        ("cloudproviders.yaml", CloudProvider::crd()),
        ("cloudquotas.yaml", CloudQuota::crd()),
        ("departments.yaml", Department::crd()),
        ("hooktemplates.yaml", HookTemplate::crd()),
        ("migrationworkloads.yaml", MigrationWorkload::crd()),
        ("pricebooks.yaml", PriceBook::crd()),
        ("resourcerequests.yaml", ResourceRequest::crd()),
        ("settlementreports.yaml", SettlementReport::crd()),
    ]
}
