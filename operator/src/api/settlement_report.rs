//! `SettlementReport`: settlement (结算) of a period.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Conditions, Currency, DNS_SUBDOMAIN, Money};

/// Settlement (结算) of cloud charges for a period and scope: totals by department, provider and
/// resource type, line by line. `finalize: true` freezes it: the spec can't change afterwards.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "SettlementReport",
    doc = "Settlement (结算) of cloud charges for a period and scope; finalize to freeze it.",
    shortname = "sr",
    category = "yunzhang",
    status = "SettlementReportStatus",
    printcolumn(name = "Month", type_ = "string", json_path = ".spec.period.month"),
    printcolumn(name = "Quarter", type_ = "string", json_path = ".spec.period.quarter"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Total", type_ = "string", json_path = ".status.total"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(oldSelf.finalize) || !oldSelf.finalize || self == oldSelf").message("a finalized SettlementReport can't be changed; create a new report instead"))]
#[serde(rename_all = "camelCase")]
pub struct SettlementReportSpec {
    /// The period: exactly one of `month`, `quarter`, or `from` + `to`.
    pub period: Period,
    /// Which departments and providers; empty lists mean all.
    #[serde(default)]
    pub scope: Scope,
    /// Freeze the report: its figures and lines can't change afterwards.
    #[serde(default)]
    pub finalize: bool,
    /// The digest of `status.checksum` over the canonical lines: sha256 (default) or sm3
    /// (GB/T 32905-2016, 国密 SM3).
    #[serde(default)]
    pub checksum_algorithm: ChecksumAlgorithm,
}

/// A digest for the settlement checksum.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    /// SHA-256.
    #[default]
    Sha256,
    /// SM3 (GB/T 32905-2016).
    Sm3,
}

/// A settlement period.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("[has(self.month), has(self.quarter), has(self.from)].filter(x, x).size() == 1").message("spec.period must give exactly one of month (e.g. 2026-10), quarter (e.g. 2026-Q4), or from and to"))]
#[x_kube(validation = Rule::new("has(self.from) == has(self.to)").message("spec.period.from and spec.period.to go together").field_path(".to"))]
#[x_kube(validation = Rule::new("!has(self.from) || !has(self.to) || timestamp(self.to) > timestamp(self.from)").message("spec.period.to must be later than spec.period.from").field_path(".to"))]
pub struct Period {
    /// A calendar month, e.g. "2026-10".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    pub month: Option<String>,
    /// A calendar quarter, e.g. "2026-Q4".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{4}-Q[1-4]$"))]
    pub quarter: Option<String>,
    /// Start of a range (RFC 3339, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub from: Option<String>,
    /// End of a range (RFC 3339, exclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub to: Option<String>,
}

/// Scope of a report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
pub struct Scope {
    /// Departments to include; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = DNS_SUBDOMAIN)))]
    pub departments: Vec<String>,
    /// Providers to include; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = DNS_SUBDOMAIN)))]
    pub providers: Vec<String>,
}

/// Report phases.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum ReportPhase {
    Computed,
    Finalized,
}

/// A total for one key (department, provider or type).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct Subtotal {
    /// Department, provider or resource type.
    pub key: String,
    /// Sum of its lines.
    pub amount: Money,
}

/// Observed state of a SettlementReport.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettlementReportStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Computed or Finalized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ReportPhase>,
    /// Sum of all lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Money>,
    /// Currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    /// Totals by department.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_department: Vec<Subtotal>,
    /// Totals by provider.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_provider: Vec<Subtotal>,
    /// Totals by resource type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_type: Vec<Subtotal>,
    /// Number of lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    /// `sha256:<hex>` over the canonical lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Metered items the report could not price (e.g. two PriceBooks price their SKU at the same
    /// time): left out of the figures, listed here (at most 20; `unpricedCount` counts them
    /// all). A report with unpriced items is not finalized until they can be priced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<UnpricedItem>,
    /// How many metered items the report could not price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_count: Option<u64>,
    /// Where a finalized report keeps its lines: ConfigMaps owned by the report, so the lines
    /// outlive the requests they charge. `yunzhang report settlement --report NAME` reads them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_lines: Option<StoredLines>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}

/// A metered item of a request the report could not price, and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnpricedItem {
    /// The request, as `namespace/name`.
    pub request: String,
    /// The item within the request.
    pub item: String,
    pub department: String,
    pub provider: String,
    pub sku: String,
    /// Why it has no price, and what to fix.
    pub reason: String,
}

/// The ConfigMaps holding a finalized report's lines: JSON Lines, gzip, base64, in key
/// `lines.jsonl.gz.b64` of each ConfigMap; join the chunks in the order listed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredLines {
    /// Namespace of the ConfigMaps (the operator's).
    pub namespace: String,
    /// ConfigMap names, in chunk order.
    pub config_maps: Vec<String>,
}
