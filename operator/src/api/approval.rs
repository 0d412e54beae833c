//! `Approval`: one approver's decision on one stage of one request. Immutable.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Conditions, DNS_SUBDOMAIN};

/// One decision (Approved / Rejected) by one approver on one stage of a ResourceRequest, bound to
/// the request's uid, generation and plan hash. Who approved is recorded from the authenticated
/// user at admission, never typed. Immutable once created.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "Approval",
    doc = "One approver's immutable decision on one stage of a ResourceRequest, bound to its uid, generation and plan hash.",
    namespaced,
    shortname = "appr",
    category = "yunzhang",
    status = "ApprovalStatus",
    printcolumn(name = "Request", type_ = "string", json_path = ".spec.request.name"),
    printcolumn(name = "Stage", type_ = "string", json_path = ".spec.stage"),
    printcolumn(name = "Decision", type_ = "string", json_path = ".spec.decision"),
    printcolumn(name = "Approver", type_ = "string", json_path = ".status.approver"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("an Approval is immutable: create a new Approval instead of changing this one"))]
#[serde(rename_all = "camelCase")]
pub struct ApprovalSpec {
    /// The request decided on, exactly as the approver saw it.
    pub request: RequestBinding,
    /// The ApprovalPolicy stage this decision is for, e.g. `finance`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub stage: String,
    /// `Approved` or `Rejected`.
    pub decision: Decision,
    /// Free-text comment, e.g. 预算已核.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub comment: Option<String>,
}

/// Binds an approval to what the approver saw: the request's uid, generation and plan hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestBinding {
    /// Name of the ResourceRequest in the same namespace.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub name: String,
    /// The request's metadata.uid.
    #[schemars(regex(
        pattern = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    ))]
    pub uid: String,
    /// The request's metadata.generation the approver saw.
    #[schemars(range(min = 1))]
    pub generation: i64,
    /// The plan hash the approver saw (`sha256:` and 64 hex digits).
    #[schemars(regex(pattern = r"^sha256:[0-9a-f]{64}$"))]
    pub plan_hash: String,
}

/// An approver's decision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Decision {
    Approved,
    Rejected,
}

/// Observed state of an Approval, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The authenticated user who created the Approval, recorded at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// Whether the approval counts (it stops counting when the request or plan changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}
