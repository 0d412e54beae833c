//! `PriceBook`: what a provider's SKUs cost.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::common::{Conditions, Currency, DNS_SUBDOMAIN, Money, Percent};

/// Prices of a provider's SKUs for a period, with per-department discounts. Books for one
/// provider must not overlap in time for the same SKU.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "yunzhang.io",
    version = "v1alpha1",
    kind = "PriceBook",
    doc = "Prices of a provider's SKUs for a period, with per-department discounts.",
    shortname = "pb",
    category = "yunzhang",
    status = "PriceBookStatus",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "From", type_ = "string", json_path = ".spec.effectiveFrom"),
    printcolumn(name = "Until", type_ = "string", json_path = ".spec.effectiveUntil"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.effectiveUntil) || timestamp(self.effectiveUntil) > timestamp(self.effectiveFrom)").message("spec.effectiveUntil must be later than spec.effectiveFrom").field_path(".effectiveUntil"))]
#[serde(rename_all = "camelCase")]
pub struct PriceBookSpec {
    /// The CloudProvider these prices are for.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub provider: String,
    /// Currency of all prices (CNY).
    #[serde(default)]
    pub currency: Currency,
    /// Prices apply from this instant (RFC 3339, e.g. "2026-01-01T00:00:00+08:00").
    #[schemars(extend("format" = "date-time"))]
    pub effective_from: String,
    /// Prices apply until this instant (exclusive); open-ended when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub effective_until: Option<String>,
    /// One price per SKU.
    #[schemars(length(min = 1, max = 10000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["sku"]))]
    pub items: Vec<PriceItem>,
    /// Discounts for departments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["department"]))]
    pub discounts: Vec<Discount>,
}

/// The price of one SKU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct PriceItem {
    /// SKU as used in ResourceRequest items, e.g. `ecs.c2.large`; `storage.ssd` for disk per GiB.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"))]
    pub sku: String,
    /// `hour` (charged by the second) or `month` (prorated by the seconds of the calendar month).
    pub unit: PriceUnit,
    /// Price per unit in yuan, e.g. "0.80".
    pub price: Money,
    /// `GiB` when the price is per GiB of the item's size, rather than per resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<PricePer>,
    /// vCPUs of one resource of this SKU (ecs), 1 to 512: a request item of this SKU asks
    /// exactly this many or leaves `vcpu` out, so the price is that of what is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub vcpu: Option<u32>,
    /// Memory of one resource of this SKU in GiB (ecs), 1 to 4096; as `vcpu`.
    #[serde(default, rename = "memoryGiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_gi_b: Option<u32>,
}

/// Time unit of a price.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PriceUnit {
    Hour,
    Month,
}

/// What a price is per, besides time.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PricePer {
    GiB,
}

/// A discount for one department.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
pub struct Discount {
    /// Department name.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(min = 1, max = 253))]
    pub department: String,
    /// Discount in percent, e.g. "10".
    pub percent: Percent,
}

/// Observed state of a PriceBook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceBookStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions; `Ready` is false when the book overlaps another for the same SKU.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Conditions,
}
