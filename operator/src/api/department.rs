//! `Department` (云长单位): a tenant of the government cloud.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Conditions, Currency, DNS_LABEL, DNS_SUBDOMAIN, Money, Subject};

/// A department (云长单位) that uses the government cloud: who runs it, which namespaces it owns,
/// which provider serves it, its annual budget and the approval policy for its requests.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "Department",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name: at most 63 characters (it labels the RoleBinding and NetworkPolicy in its namespaces, and label values are at most 63)"),
    doc = "A department (云长单位) using the government cloud: its people, namespaces, provider, budget and approval policy.",
    shortname = "dept",
    category = "yunzhang",
    status = "DepartmentStatus",
    printcolumn(
        name = "Display Name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Parent", type_ = "string", json_path = ".spec.parent"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.parent) || self.parent != ''").message("spec.parent must name another Department, or be left out").field_path(".parent"))]
#[serde(rename_all = "camelCase")]
pub struct DepartmentSpec {
    /// Official name of the department, e.g. 广西壮族自治区财政厅.
    #[schemars(length(min = 1, max = 128))]
    pub display_name: String,
    /// Unified social credit code (统一社会信用代码): 18 characters of digits and capital letters
    /// (excluding I, O, S, V, Z).
    #[schemars(regex(pattern = r"^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$"))]
    pub code: String,
    /// Name of the parent Department (region → city → county → unit). Leave out for a root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(max = 253))]
    pub parent: Option<String>,
    /// The department's cloud chief (云长): the head accountable for its cloud use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_chief: Option<CloudChief>,
    /// Users and groups who administer the department's requests and quotas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub admins: Vec<Subject>,
    /// Users and groups who may request cloud resources for the department.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub members: Vec<Subject>,
    /// Namespaces the department owns; defaults to one named like the Department.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = DNS_LABEL), length(max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub namespaces: Vec<String>,
    /// The CloudProvider that serves this department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(max = 253))]
    pub provider: Option<String>,
    /// Annual budget for cloud spending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The ApprovalPolicy for the department's requests; `default` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(max = 253))]
    pub approval_policy: Option<String>,
}

impl Department {
    /// The namespaces this department owns: `spec.namespaces`, or its own name.
    pub fn owned_namespaces(&self) -> Vec<String> {
        if self.spec.namespaces.is_empty() {
            vec![kube::ResourceExt::name_any(self)]
        } else {
            self.spec.namespaces.clone()
        }
    }

    /// The Department that owns namespace `ns`. Two departments claiming one namespace: the
    /// older claim wins (then the name decides), as the Department controller tells the other.
    pub fn owner_of<'a>(
        departments: impl IntoIterator<Item = &'a Department>,
        ns: &str,
    ) -> Option<&'a Department> {
        departments
            .into_iter()
            .filter(|d| d.owned_namespaces().iter().any(|n| n == ns))
            .min_by_key(|d| {
                (
                    d.metadata.creation_timestamp.clone(),
                    kube::ResourceExt::name_any(*d),
                )
            })
    }

    /// Whether `user` (with `groups`) is one of the department's admins or members.
    pub fn includes(&self, user: &str, groups: &[String]) -> bool {
        self.spec
            .admins
            .iter()
            .chain(&self.spec.members)
            .any(|s| s.matches(user, groups))
    }

    /// The name of the ApprovalPolicy for the department's requests: `spec.approvalPolicy`, or
    /// `default`.
    pub fn approval_policy_name(&self) -> &str {
        self.spec.approval_policy.as_deref().unwrap_or("default")
    }
}

/// The department's cloud chief (云长).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct CloudChief {
    /// Name, e.g. 张三.
    #[schemars(length(min = 1, max = 64))]
    pub name: String,
    /// Title, e.g. 厅长.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub title: Option<String>,
    /// Phone or e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub contact: Option<String>,
}

/// An annual budget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct Budget {
    /// Budget per calendar year, e.g. "1200000.00".
    pub annual: Money,
    /// Currency of the budget (CNY).
    #[serde(default)]
    pub currency: Currency,
    /// When true, new requests that would exceed the budget wait instead of proceeding.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enforce: bool,
}

/// Spend against the annual budget in the current calendar year (Asia/Shanghai).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// The calendar year the figures are for.
    pub year: i32,
    /// `spec.budget.annual`.
    pub annual: Money,
    /// What the department's requests were charged this year so far (settled as a report would).
    pub spent: Money,
    /// `spent` as a percentage of `annual`, two decimals.
    pub percent: String,
    /// Thresholds (80, 100) already announced this year by an Event and a notification; each
    /// is announced once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerted: Vec<u32>,
}

/// A department's own quota figures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentQuota {
    /// Limits its own requests may use; empty (absent) without a valid CloudQuota.
    #[serde(default)]
    pub hard: crate::api::QuotaLimits,
    /// Held by its requests that are not yet Active.
    pub reserved: crate::api::QuotaLimits,
    /// Held by its Active requests.
    pub used: crate::api::QuotaLimits,
}

/// Usage summed over a department and its descendants.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubtreeUsage {
    /// Reserved across the subtree.
    pub reserved: crate::api::QuotaLimits,
    /// Used across the subtree.
    pub used: crate::api::QuotaLimits,
    /// This year's spend across the subtree against the budgets in it; absent when no
    /// department in it has a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend: Option<SubtreeSpend>,
}

/// Spend of a department and every department below it, this calendar year (Asia/Shanghai).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
pub struct SubtreeSpend {
    pub year: i32,
    /// Charged to the subtree's requests this year so far.
    pub spent: Money,
    /// The annual budgets in the subtree, summed.
    pub budget: Money,
    /// `spent` as a percentage of `budget`, two decimals.
    pub percent: String,
}

/// Observed state of a Department, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DepartmentStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Namespaces the operator created and keeps for the department.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// How many requests in its namespaces have not exited. While this is above zero the API
    /// server refuses to delete the Department (ValidatingAdmissionPolicy
    /// `yunzhang-department-deletion`).
    #[serde(default)]
    pub live_request_count: u32,
    /// The first of those requests (`namespace/name`, at most 10), named in the refusal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live_requests: Vec<String>,
    /// The department's own quota: its effective CloudQuotas (less what its children's quotas
    /// take), and what its own requests hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<DepartmentQuota>,
    /// What the requests of this department and all departments below it hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtree: Option<SubtreeUsage>,
    /// Spend against `spec.budget` this year; absent without a budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetStatus>,
    /// Migration figures (上云率, 整合率) of this department and all departments below it, from
    /// their MigrationWorkloads. See `docs/guides/migration.md` for how each figure is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationFigures>,
    /// Standard conditions; `Ready` is true when the department is fully set up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}

/// Migration figures of a department's subtree (云长制 scorecard).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationFigures {
    /// Registered systems (MigrationWorkloads not rejected).
    pub systems: u32,
    /// Systems moved onto the cloud (rehost, replatform, refactor; Verified or Decommissioned).
    pub migrated: u32,
    /// Systems merged into another (integrate; Verified or Decommissioned).
    pub integrated: u32,
    /// Systems retired (retire; Verified or Decommissioned). They leave the denominators.
    pub retired: u32,
    /// 上云率: (migrated + integrated) / (systems - retired), in percent with two decimals.
    pub migration_rate: String,
    /// 整合率: integrated / (systems - retired), in percent with two decimals.
    pub integration_rate: String,
}
