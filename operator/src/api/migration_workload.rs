//! `MigrationWorkload`: a legacy information system moving onto the cloud (迁移上云).

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Classification, Conditions, DNS_SUBDOMAIN, ResourceItem};

/// A legacy information system being moved onto the government cloud (迁移上云), merged into
/// another (整合) or retired. It owns the ResourceRequest for its target resources.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "MigrationWorkload",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters (it labels the hook Jobs, and label values are at most 63)"),
    doc = "A legacy information system moving onto the government cloud (迁移上云), merging (整合) or retiring.",
    namespaced,
    shortname = "mw",
    category = "yunzhang",
    status = "MigrationWorkloadStatus",
    printcolumn(name = "System", type_ = "string", json_path = ".spec.system.name"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Request",
        type_ = "string",
        json_path = ".status.resourceRequest"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.strategy != 'integrate' || (has(self.integratesInto) && self.integratesInto != '')").message("spec.integratesInto must name the system this one merges into when spec.strategy is integrate").field_path(".integratesInto"))]
#[serde(rename_all = "camelCase")]
pub struct MigrationWorkloadSpec {
    /// The legacy system.
    pub system: SystemRef,
    /// Data classification. Classified (涉密) systems may not move to the government cloud.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self != 'classified'").message("spec.classification: classified (涉密) systems may not be placed on the government cloud; allowed: public, internal, sensitive"))]
    #[schemars(with = "super::resource_request::ClassificationSchema")]
    pub classification: Classification,
    /// rehost, replatform, refactor, integrate (merge into another system) or retire.
    pub strategy: Strategy,
    /// For `integrate`: the code of the system this one merges into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub integrates_into: Option<String>,
    /// Where the system runs today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSite>,
    /// The cloud resources the system moves onto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The cutover window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover: Option<CutoverWindow>,
    /// Jobs run before and after cutover (e.g. a final data sync, a smoke test). Cutover waits
    /// for the pre-cutover Job to succeed, Verified for the post-cutover one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// The manual gate: how far the department says the migration may go. The operator moves
    /// the workload one phase at a time up to this phase once each phase's conditions hold
    /// (CutOver waits for `spec.cutover`'s window). `RolledBack` abandons the migration before
    /// it is decommissioned: the target ResourceRequest is retired. Set it with
    /// `kubectl yunzhang migration advance NAME --to PHASE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advance_to: Option<MigrationGate>,
}

/// The phases a person moves a workload to (the others follow from its ResourceRequest).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum MigrationGate {
    /// Cut over to the cloud (within the cutover window).
    CutOver,
    /// The system was checked on the cloud.
    Verified,
    /// The legacy system is switched off (迁移完成).
    Decommissioned,
    /// Abandon the migration; the target resources are retired.
    RolledBack,
}

impl MigrationGate {
    /// The phase this gate names.
    pub fn phase(self) -> MigrationPhase {
        match self {
            MigrationGate::CutOver => MigrationPhase::CutOver,
            MigrationGate::Verified => MigrationPhase::Verified,
            MigrationGate::Decommissioned => MigrationPhase::Decommissioned,
            MigrationGate::RolledBack => MigrationPhase::RolledBack,
        }
    }
}

/// Identifies a legacy system.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct SystemRef {
    /// System name, e.g. 非税收入管理系统.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// System code in the department's inventory, e.g. GXCZ-SYS-004.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"))]
    pub code: String,
}

/// Migration strategy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    Rehost,
    Replatform,
    Refactor,
    Integrate,
    Retire,
}

/// The legacy site.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSite {
    /// Data center (机房) the system runs in.
    #[schemars(length(max = 128))]
    pub data_center: String,
    /// Number of hosts.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100000))]
    pub hosts: u32,
    /// Storage in GiB.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100000000))]
    pub storage_gi_b: u64,
}

/// Target resources: the items of the ResourceRequest the workload owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct Target {
    /// Items as in a ResourceRequest.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub items: Vec<ResourceItem>,
}

/// The cutover window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("timestamp(self.notAfter) > timestamp(self.notBefore)").message("spec.cutover.notAfter must be later than spec.cutover.notBefore").field_path(".notAfter"))]
pub struct CutoverWindow {
    /// Cutover may start at this instant (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub not_before: String,
    /// Cutover must end by this instant (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub not_after: String,
}

/// Jobs around cutover.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    /// Runs when cutover is requested and its window is open; cutover follows its success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_cutover: Option<Hook>,
    /// Runs once cut over; Verified waits for its success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_cutover: Option<Hook>,
}

/// One hook: a [`HookTemplate`](super::HookTemplate) the platform defines (image, command,
/// ServiceAccount), run as a Job in the workload's namespace with these parameter values as
/// environment variables `YZ_PARAM_<NAME>`. The pod runs as non-root with no privileges. A failed
/// hook runs again when its parameters (or its template) change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    /// The HookTemplate to run (`kubectl get hooktemplates`).
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub template: String,
    /// A value for each parameter of the template (its required ones at least).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Z][A-Z0-9_]{0,62}$'))").message("parameter names are upper case like SOURCE_DB (letters, digits, _; at most 63)"))]
    #[x_kube(validation = Rule::new("self.all(k, size(self[k]) <= 1024)").message("a parameter value is at most 1024 characters"))]
    pub parameters: BTreeMap<String, String>,
}

/// Where a hook runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HookPoint {
    PreCutover,
    PostCutover,
}

impl HookPoint {
    /// As in Job names and labels: `pre-cutover`, `post-cutover`.
    pub fn label(self) -> &'static str {
        match self {
            HookPoint::PreCutover => "pre-cutover",
            HookPoint::PostCutover => "post-cutover",
        }
    }
}

/// A hook's Job as last seen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRun {
    pub hook: HookPoint,
    /// The Job's name.
    pub job: String,
    /// Running, Succeeded or Failed (from the Job's status).
    pub state: HookState,
    /// Why it failed, from the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The state of a hook's Job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum HookState {
    Running,
    Succeeded,
    Failed,
}

/// Migration phases.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    schemars::JsonSchema,
)]
pub enum MigrationPhase {
    #[default]
    Planned,
    Approved,
    Provisioning,
    Migrating,
    CutOver,
    Verified,
    Decommissioned,
    RolledBack,
    Rejected,
}

/// Observed state of a MigrationWorkload.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationWorkloadStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Migration phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,
    /// Why the workload is where it is, and what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The user who registered the workload (recorded by the API server at admission); the
    /// target ResourceRequest is requested on their behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// The ResourceRequest the workload owns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_request: Option<String>,
    /// When the workload entered each phase, oldest first. The scorecard reads it to count a
    /// system as migrated in the quarter it was verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub history: Vec<PhaseEntry>,
    /// The hook Jobs of the current spec, as last seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub hooks: Vec<HookRun>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}

/// One phase change of a MigrationWorkload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct PhaseEntry {
    /// The phase entered.
    pub phase: MigrationPhase,
    /// When (RFC 3339).
    pub at: String,
}
