//! `ResourceRequest`: one department request for cloud resources, through its whole lifecycle.

use std::fmt;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Classification, Conditions, Currency, Money, ResourceItem};

/// A request for cloud resources: quota-checked, approved, provisioned through OpenTofu,
/// changed, retired and billed. Created by a department member in a department namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "ResourceRequest",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters (it labels the plan ConfigMap, and label values are at most 63)"),
    doc = "A request for cloud resources, from application through approval, provisioning, change and exit to settlement.",
    namespaced,
    shortname = "rr",
    category = "yunzhang",
    status = "ResourceRequestStatus",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Stage", type_ = "string", json_path = ".status.stage.name"),
    printcolumn(
        name = "Monthly",
        type_ = "string",
        json_path = ".status.estimate.monthly"
    ),
    printcolumn(name = "Filing", type_ = "string", json_path = ".status.filingNumber"),
    printcolumn(
        name = "Requester",
        type_ = "string",
        json_path = ".status.requester",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequestSpec {
    /// What the resources are for (用途), e.g. 非税收入管理系统上云.
    #[schemars(length(min = 1, max = 512))]
    pub purpose: String,
    /// The project the resources are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Project>,
    /// Where the money comes from (资金来源), e.g. 财政预算.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub funding_source: Option<String>,
    /// Data classification: public, internal or sensitive. Classified (涉密) systems may not
    /// use the government cloud.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self != 'classified'").message("spec.classification: classified (涉密) systems may not be placed on the government cloud; allowed: public, internal, sensitive"))]
    #[schemars(with = "ClassificationSchema")]
    pub classification: Classification,
    /// `Active` to have the resources, `Retired` to give them back (exit).
    #[serde(default)]
    pub lifecycle: DesiredLifecycle,
    /// The resources, one item per kind of resource. Item names are unique.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub items: Vec<ResourceItem>,
}

/// Classification as the API server sees it: the allowed values, plus `classified` so that
/// refusing it can carry a message that says why (the enum alone would just say "unsupported").
#[derive(schemars::JsonSchema)]
#[allow(dead_code)] // only its schema is used
#[serde(rename_all = "camelCase")]
pub(crate) enum ClassificationSchema {
    Public,
    Internal,
    Sensitive,
    Classified,
}

/// A project code and name (项目).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct Project {
    /// Project code, e.g. GX-2026-017.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$"))]
    pub code: String,
    /// Project name, e.g. 非税收入管理系统.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub name: Option<String>,
}

/// What the requester wants: resources running, or given back.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum DesiredLifecycle {
    /// Provision and keep the resources.
    #[default]
    Active,
    /// Destroy the resources and close billing (exit, 退出).
    Retired,
}

/// Where a request stands in its lifecycle.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, schemars::JsonSchema,
)]
pub enum Phase {
    /// Just created; not yet quota-checked.
    #[default]
    Pending,
    /// Waiting for quota to free up (or the spec to shrink).
    QuotaExceeded,
    /// Waiting for approvals; see `status.stage`.
    AwaitingApproval,
    /// Turned down by an approver.
    Rejected,
    /// Approved plan being applied.
    Provisioning,
    /// Resources online; billing runs.
    Active,
    /// A spec change is being quota-checked, approved and applied.
    Changing,
    /// Provisioning failed; retried with backoff.
    Failed,
    /// Resources being destroyed.
    Exiting,
    /// Resources destroyed, quota released, billing closed.
    Exited,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 10] = [
        Phase::Pending,
        Phase::QuotaExceeded,
        Phase::AwaitingApproval,
        Phase::Rejected,
        Phase::Provisioning,
        Phase::Active,
        Phase::Changing,
        Phase::Failed,
        Phase::Exiting,
        Phase::Exited,
    ];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

// The larger parts, which most requests lack in most phases, are boxed: every request is kept
// in memory, and an absent box costs a pointer where the part would cost its whole size.
/// Observed state of a ResourceRequest, written by the operator only.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequestStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The authenticated user who created the request, recorded at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// Filing number (备案号) given on final approval, e.g. YZ-2026-000123.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filing_number: Option<String>,
    /// Cost estimate shown before approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<Estimate>,
    /// Summary of the OpenTofu plan that approvers approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Box<PlanSummary>>,
    /// The quota this request holds: reserved from admission until Active, used while Active,
    /// released when Rejected or Exited. Quota totals are sums of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Box<QuotaHolding>>,
    /// The approval stage the request waits in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<StageStatus>,
    /// Approvals that count for the current generation and plan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<ApprovalRecord>,
    /// Non-secret outputs of the provisioned resources (ids, endpoints).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub outputs: std::collections::BTreeMap<String, String>,
    /// A human-readable explanation of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the latest plan failed, for the generation it was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_failure: Option<Box<PlanFailure>>,
    /// The generation whose plan was approved and handed to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_generation: Option<i64>,
    /// The generation the running resources match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// The latest apply run (of the approved plan). Recorded before the run starts, so a
    /// restart knows a run may have happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<Box<RunRecord>>,
    /// The destroy run at exit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destroy: Option<Box<RunRecord>>,
    /// Metering: the items' active intervals, kept until settled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub billing: Vec<MeteredInterval>,
    /// Standard conditions: Ready, QuotaReserved, Approved, Provisioned, Drifted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}

/// What a request holds of its department's quota.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaHolding {
    /// The Department whose quota is held.
    pub department: String,
    /// `Reserved` (not yet Active) or `Used` (Active).
    pub state: HoldingState,
    /// The amounts held.
    pub amounts: crate::api::QuotaLimits,
    /// The spec generation the amounts are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// A change of running resources: reserved on top of what they use, until it is applied
    /// (then `target` becomes the use) or turned down (then it is released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<QuotaChange>,
}

/// Quota reserved for a change of running resources.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaChange {
    /// The spec generation of the change.
    pub generation: i64,
    /// Reserved on top of the use: what the change asks beyond it (never negative).
    pub amounts: crate::api::QuotaLimits,
    /// The whole use once the change is applied.
    pub target: crate::api::QuotaLimits,
}

/// Why planning a generation failed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanFailure {
    /// The spec generation planned.
    pub generation: i64,
    /// What went wrong and what to do.
    pub message: String,
    /// Failed attempts so far (for backoff).
    pub attempts: u32,
    /// When the latest attempt failed (RFC 3339).
    pub failed_at: String,
}

/// One OpenTofu run (apply or destroy).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The spec generation the run is for.
    pub generation: i64,
    /// The plan applied (apply runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_hash: Option<String>,
    /// `Running`, `Succeeded` or `Failed`.
    pub state: RunPhase,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attempts so far, this one included.
    pub attempts: u32,
    /// When the latest attempt started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// What the applied spec runs, as metered for billing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metered: Vec<MeteredItem>,
}

/// One item of an applied spec, as billing meters it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeteredItem {
    /// The item's name.
    pub item: String,
    /// Its SKU.
    pub sku: String,
    /// Its type.
    #[serde(rename = "type")]
    pub resource_type: crate::api::ResourceType,
    /// What the price multiplies: the count, or count × GiB for per-GiB prices (decimal).
    pub quantity: String,
}

/// The state of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum RunPhase {
    Running,
    Succeeded,
    Failed,
}

/// One item's active interval: it ran with `quantity` from `from` until `to` (open while
/// running). Settlement prices it with the PriceBook prices in force.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeteredInterval {
    /// The item's name.
    pub item: String,
    /// The SKU it ran as.
    pub sku: String,
    /// The item's type.
    #[serde(rename = "type")]
    pub resource_type: crate::api::ResourceType,
    /// What the price multiplies: the count, or count × GiB for per-GiB prices (decimal).
    pub quantity: String,
    /// Start (RFC 3339, inclusive).
    pub from: String,
    /// End (RFC 3339, exclusive); absent while the item runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The Department billed.
    pub department: String,
    /// The CloudProvider it ran on.
    pub provider: String,
}

/// Whether held quota is reserved or in use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum HoldingState {
    Reserved,
    Used,
}

/// A cost estimate.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Estimated cost per month.
    pub monthly: Money,
    /// For a change: the difference to the running resources' monthly cost (may be negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_delta: Option<String>,
    /// Currency.
    #[serde(default)]
    pub currency: Currency,
}

/// What the plan would do.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// `sha256:<hex>` of the rendered workspace and plan; approvals name it.
    pub hash: String,
    /// The spec generation planned.
    #[serde(default)]
    pub generation: i64,
    /// Resources to add.
    pub add: u32,
    /// Resources to change.
    pub change: u32,
    /// Resources to destroy.
    pub destroy: u32,
    /// ConfigMap (owned by the request) holding the workspace and the readable plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
    /// What the plan does, per resource address (at most 100 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub resources: Vec<PlannedResource>,
}

/// One resource of a plan and what the plan does to it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
pub struct PlannedResource {
    /// e.g. `module.web.terraform_data.instance[0]`.
    pub address: String,
    /// `create`, `update`, `delete`, or both for a replacement (e.g. `delete+create`).
    pub action: String,
}

/// The approval stage a request waits in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
pub struct StageStatus {
    /// Stage name from the ApprovalPolicy.
    pub name: String,
    /// 1-based index of the stage.
    pub index: u32,
    /// Number of stages that apply to this request.
    pub of: u32,
}

/// One approval that counted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct ApprovalRecord {
    /// Stage approved.
    pub stage: String,
    /// Authenticated approver.
    pub approver: String,
    /// The Approval object.
    pub approval: String,
}
