//! `CloudQuota`: hard limits on what a department may use.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Conditions, Money};

/// Hard limits on the cloud resources a department may hold. Lives in one of the department's
/// namespaces; several valid quotas of one department add up.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "CloudQuota",
    doc = "Hard limits on the cloud resources a department may hold; several valid quotas of one department add up.",
    namespaced,
    shortname = "cq",
    category = "yunzhang",
    status = "CloudQuotaStatus",
    printcolumn(name = "vCPU", type_ = "integer", json_path = ".spec.hard.vcpu"),
    printcolumn(
        name = "vCPU Reserved",
        type_ = "integer",
        json_path = ".status.reserved.vcpu"
    ),
    printcolumn(name = "vCPU Used", type_ = "integer", json_path = ".status.used.vcpu"),
    printcolumn(
        name = "vCPU Available",
        type_ = "integer",
        json_path = ".status.available.vcpu"
    ),
    printcolumn(
        name = "Monthly Cost",
        type_ = "string",
        json_path = ".spec.hard.monthlyCost"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Valid Until",
        type_ = "string",
        json_path = ".spec.validUntil",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.validFrom) || !has(self.validUntil) || timestamp(self.validUntil) > timestamp(self.validFrom)").message("spec.validUntil must be later than spec.validFrom").field_path(".validUntil"))]
#[serde(rename_all = "camelCase")]
pub struct CloudQuotaSpec {
    /// The limits. A dimension left out is not limited.
    pub hard: QuotaLimits,
    /// Start of validity (RFC 3339, e.g. "2026-01-01T00:00:00+08:00"); valid at once when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub valid_from: Option<String>,
    /// End of validity (RFC 3339); valid forever when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub valid_until: Option<String>,
}

/// Amounts per quota dimension. Used for limits (`spec.hard`) and for usage (`status`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaLimits {
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000))]
    pub vcpu: Option<u64>,
    /// Memory in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000_000))]
    pub memory_gi_b: Option<u64>,
    /// Block storage in GiB (disks, database storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000_000u64))]
    pub storage_gi_b: Option<u64>,
    /// Number of instances (compute instances and databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000))]
    pub instances: Option<u64>,
    /// Number of public IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub public_i_ps: Option<u64>,
    /// Public bandwidth in Mbps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100_000_000))]
    pub bandwidth_mbps: Option<u64>,
    /// Number of managed databases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub databases: Option<u64>,
    /// Object storage in GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10_000_000_000u64))]
    pub object_storage_gi_b: Option<u64>,
    /// Estimated monthly cost in yuan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cost: Option<Money>,
}

/// Observed state of a CloudQuota, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudQuotaStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Held by requests that are not yet Active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved: Option<QuotaLimits>,
    /// Held by Active requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<QuotaLimits>,
    /// Hard minus reserved minus used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<QuotaLimits>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}
