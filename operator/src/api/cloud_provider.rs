//! `CloudProvider`: a cloud service provider (云服务商) and how to provision on it.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Conditions, NamespacedRef};

/// A cloud service provider (云服务商): its region, the OpenTofu module for each resource type,
/// how OpenTofu runs (executor), its credentials and where state is kept.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "CloudProvider",
    doc = "A cloud service provider (云服务商): region, OpenTofu modules per resource type, executor, credentials and state.",
    shortname = "cp",
    category = "yunzhang",
    status = "CloudProviderStatus",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Region", type_ = "string", json_path = ".spec.region"),
    printcolumn(name = "Executor", type_ = "string", json_path = ".spec.executor.type"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.modules.all(t, t in ['ecs', 'rds', 'oss', 'slb', 'eip'])").message("spec.modules keys must be resource types: ecs, rds, oss, slb, eip").field_path(".modules"))]
#[serde(rename_all = "camelCase")]
pub struct CloudProviderSpec {
    /// Name shown to people, e.g. 广西政务云（服务商A）.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// Region, e.g. nanning-1.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))]
    pub region: String,
    /// How OpenTofu runs for this provider.
    #[serde(default)]
    pub executor: Executor,
    /// The OpenTofu module for each resource type (ecs, rds, oss, slb, eip).
    #[schemars(length(min = 1))]
    pub modules: BTreeMap<String, ModuleSource>,
    /// OpenTofu providers the modules need, rendered into `required_providers`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_providers: BTreeMap<String, RequiredProvider>,
    /// Secret holding the provider's credentials, passed to OpenTofu as environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<NamespacedRef>,
    /// Where OpenTofu state is kept: a Secret per request in this namespace (kubernetes backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_namespace: Option<String>,
    /// How often to re-plan Active requests to detect drift, in minutes (0 turns it off).
    #[serde(default = "default_drift_minutes")]
    #[schemars(range(min = 0, max = 10080))]
    pub drift_check_minutes: u32,
}

fn default_drift_minutes() -> u32 {
    60
}

/// Where a module comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct ModuleSource {
    /// Local path, git URL or registry address, e.g. `./modules/ecs`.
    #[schemars(length(min = 1, max = 512))]
    pub source: String,
    /// Version constraint (registry sources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
}

/// An OpenTofu provider requirement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct RequiredProvider {
    /// Provider source address, e.g. `terraform-provider-openstack/openstack`.
    #[schemars(length(min = 1, max = 256))]
    pub source: String,
    /// Version constraint, e.g. `~> 2.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
}

/// How OpenTofu runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'job' || has(self.image)").message("spec.executor.image is required when spec.executor.type is job").field_path(".image"))]
pub struct Executor {
    /// `local` (tofu as a child process of the operator) or `job` (a Kubernetes Job per run).
    #[serde(rename = "type", default)]
    pub type_: ExecutorType,
    /// OpenTofu image for the `job` executor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Service account the `job` executor's pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub service_account: Option<String>,
    /// Time limit of one OpenTofu run, in seconds (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 86400))]
    pub timeout_seconds: Option<u32>,
}

/// Executor kinds.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ExecutorType {
    /// `tofu` as a child process of the operator.
    #[default]
    Local,
    /// A Kubernetes Job per run.
    Job,
    /// Runs nothing: plans list the items, applies and destroys succeed at once. For trying
    /// the request lifecycle without OpenTofu, and for benchmarks of the operator itself.
    Noop,
}

/// Observed state of a CloudProvider.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudProviderStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}
