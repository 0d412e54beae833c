//! `HookTemplate`: a hook a platform engineer defines, which migration workloads pick by name.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::DNS_SUBDOMAIN;

/// What a parameter may be called: an environment variable's name, upper case. The container
/// sees it as `YZ_PARAM_<NAME>`.
pub const PARAMETER_NAME: &str = r"^[A-Z][A-Z0-9_]{0,62}$";

/// A hook around cutover (a final data sync, a smoke test), defined by a platform engineer: the
/// image, the command and the ServiceAccount it runs as. A MigrationWorkload names the template
/// in `spec.hooks` and passes values for its parameters, which the container receives as
/// environment variables `YZ_PARAM_<NAME>`: data, never a command line.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "HookTemplate",
    doc = "A hook around cutover defined by a platform engineer (image, command, ServiceAccount); migration workloads pick it by name and pass parameters as data.",
    shortname = "ht",
    category = "yunzhang",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(
        name = "Description",
        type_ = "string",
        json_path = ".spec.description"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct HookTemplateSpec {
    /// What the hook does, for the departments choosing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// Container image, e.g. registry.example.gov.cn/migration/sync:1.4. It must come from a
    /// registry the platform allows (the operator's `--hook-image-prefixes`).
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// The command (the image's entrypoint when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub command: Vec<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub args: Vec<String>,
    /// ServiceAccount of the pod, in the workload's namespace; without one the pod gets no API
    /// token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(max = 253))]
    pub service_account_name: Option<String>,
    /// The Job's deadline in seconds.
    #[serde(default = "default_hook_timeout")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: u32,
    /// The parameters a workload may pass, each name once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub parameters: Vec<HookParameter>,
}

fn default_hook_timeout() -> u32 {
    1800
}

/// A parameter of a hook template.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookParameter {
    /// Its name, upper case (`SOURCE_DB`); the container sees `YZ_PARAM_SOURCE_DB`.
    #[schemars(regex(pattern = PARAMETER_NAME), length(max = 63))]
    pub name: String,
    /// What to pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub description: Option<String>,
    /// Whether a workload must pass it.
    #[serde(default)]
    pub required: bool,
}
