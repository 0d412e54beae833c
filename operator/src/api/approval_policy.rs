//! `ApprovalPolicy`: who approves what, in which order.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Classification, Conditions, Money, ResourceType, Subject};

/// Ordered approval stages, the conditions under which each applies, auto-approval and
/// separation of duties. Departments name their policy in `spec.approvalPolicy`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "ApprovalPolicy",
    doc = "Who approves which requests, in which order, and which requests are approved automatically.",
    shortname = "ap",
    category = "yunzhang",
    status = "ApprovalPolicyStatus",
    printcolumn(name = "Stages", type_ = "string", json_path = ".spec.stages[*].name"),
    printcolumn(
        name = "Auto Below",
        type_ = "string",
        json_path = ".spec.autoApprove.maxMonthlyCost"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("size(self.stages) > 0 || has(self.autoApprove)").message("spec.stages: a policy with no stages and no spec.autoApprove would let every request through approved by nobody; add a stage, or set spec.autoApprove.maxMonthlyCost to say what passes on its own").field_path(".stages"))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicySpec {
    /// Requests that fit these limits are approved without any stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve: Option<AutoApprove>,
    /// Separation of duties (四眼原则). Approvers can never approve their own requests.
    #[serde(default)]
    pub separation_of_duties: SeparationOfDuties,
    /// Stages in order; a stage whose `when` does not match the request is skipped.
    #[serde(default)]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub stages: Vec<ApprovalStage>,
}

/// Auto-approval rule.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoApprove {
    /// Requests whose estimated monthly cost is at most this are approved automatically.
    pub max_monthly_cost: Money,
}

/// Separation of duties.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeparationOfDuties {
    /// Allow an approver to approve a request from their own department (default false).
    #[serde(default)]
    pub allow_same_department: bool,
}

/// One approval stage.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.approvers.exists(a, a.kind == 'Group') || self.required <= size(self.approvers)").message("required is more than the users listed in approvers (and no Group is listed), so the stage could never be approved: lower required, or add approvers").field_path(".required"))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStage {
    /// Stage name, unique in the policy, e.g. `finance`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub name: String,
    /// Who may approve in this stage.
    #[schemars(length(min = 1, max = 64))]
    pub approvers: Vec<Subject>,
    /// How many distinct approvers must approve (default 1).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub required: u32,
    /// When the stage applies; always when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<StageCondition>,
    /// Overrides the policy's `separationOfDuties.allowSameDepartment` for this stage, e.g.
    /// `true` for a stage where the requesting department's own head approves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_same_department: Option<bool>,
}

fn one() -> u32 {
    1
}

/// When a stage applies. All given conditions must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageCondition {
    /// The estimated monthly cost is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_monthly_cost: Option<Money>,
    /// The request has an item of one of these types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<ResourceType>,
    /// The request's classification is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classification: Vec<Classification>,
}

/// Observed state of an ApprovalPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalPolicyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}
