//! Types shared by several kinds: subjects, money, conditions, resource items.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The API group of every yunzhang kind.
pub const GROUP: &str = "yunzhang.io";
/// The API version of every yunzhang kind.
pub const VERSION: &str = "v1alpha1";
/// Label put on every namespace a Department owns.
pub const DEPARTMENT_LABEL: &str = "yunzhang.io/department";

/// Pattern of a DNS-1123 label (namespace names, item names).
/// A request item's name: it names an OpenTofu module, which can't start with a digit.
pub const ITEM_NAME: &str = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$";

/// What the API server says when an item carries a size its type doesn't take.
const SIZES_BY_TYPE: &str = "this size does not apply to the item's type: ecs takes vcpu, memoryGiB and storageGiB; rds storageGiB; oss objectStorageGiB; slb and eip bandwidthMbps";

pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
/// Pattern of a DNS-1123 subdomain (names of cluster-scoped objects).
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// An amount of money in yuan, as a decimal string with at most two decimals (fen), e.g. `"1234.56"`.
/// Never a float.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[serde(transparent)]
pub struct Money(pub String);

impl Money {
    /// Pattern checked by the API server.
    pub const PATTERN: &'static str = r"^(0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?$";
}

impl JsonSchema for Money {
    fn schema_name() -> Cow<'static, str> {
        "Money".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": Self::PATTERN,
            "maxLength": 16,
            "description": "Amount in yuan as a decimal string with at most two decimals, e.g. \"1234.56\"."
        })
    }
}

impl From<&str> for Money {
    fn from(s: &str) -> Self {
        Money(s.to_owned())
    }
}

/// A percentage as a decimal string from 0 to 100 with at most two decimals, e.g. `"12.5"`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Percent(pub String);

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$",
            "description": "Percentage from 0 to 100 as a decimal string, e.g. \"10\" or \"12.5\"."
        })
    }
}

/// Currency of an amount. Only CNY (人民币) for now.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Currency {
    #[default]
    #[allow(clippy::upper_case_acronyms)]
    CNY,
}

/// Whether a subject names one user or a group of users, as the API server authenticates them.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum SubjectKind {
    User,
    Group,
}

/// A user or group as the Kubernetes API server authenticates them
/// (the client certificate's CN / O, or the token's user and groups).
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub struct Subject {
    /// `User` or `Group`.
    pub kind: SubjectKind,
    /// The user or group name exactly as the API server sees it, e.g. `alice` or `gx-finance-staff`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl Subject {
    pub fn user(name: &str) -> Self {
        Subject {
            kind: SubjectKind::User,
            name: name.to_owned(),
        }
    }
    pub fn group(name: &str) -> Self {
        Subject {
            kind: SubjectKind::Group,
            name: name.to_owned(),
        }
    }

    /// Whether this subject names `user`, or one of `groups`.
    pub fn matches(&self, user: &str, groups: &[String]) -> bool {
        match self.kind {
            SubjectKind::User => self.name == user,
            SubjectKind::Group => groups.contains(&self.name),
        }
    }
}

/// Reference to a namespaced object, e.g. a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct NamespacedRef {
    /// Name of the object.
    #[schemars(regex(pattern = DNS_SUBDOMAIN), length(max = 253))]
    pub name: String,
    /// Namespace of the object.
    #[schemars(regex(pattern = DNS_LABEL))]
    pub namespace: String,
}

/// How sensitive the data a system or request handles is (数据分级).
/// `classified` (涉密) systems may not be placed on the government cloud and are refused.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Classification {
    /// Data that may be published.
    Public,
    /// Internal government data (the default).
    #[default]
    Internal,
    /// Sensitive data: adds a security approval stage.
    Sensitive,
}

/// The kind of cloud resource an item asks for.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ResourceType {
    /// Elastic compute instance (云服务器).
    Ecs,
    /// Managed relational database (云数据库).
    Rds,
    /// Object storage bucket (对象存储).
    Oss,
    /// Server load balancer (负载均衡).
    Slb,
    /// Elastic public IP (弹性公网IP).
    Eip,
}

impl ResourceType {
    pub const ALL: [ResourceType; 5] = [Self::Ecs, Self::Rds, Self::Oss, Self::Slb, Self::Eip];

    /// The lower-case name used in YAML, HCL and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ecs => "ecs",
            Self::Rds => "rds",
            Self::Oss => "oss",
            Self::Slb => "slb",
            Self::Eip => "eip",
        }
    }
}

/// One line of a request: a number of identical resources of one type and SKU. Each size field
/// applies to the types whose module takes it (`iac::render::module_size_variables`): ecs vcpu,
/// memoryGiB, storageGiB; rds storageGiB; oss objectStorageGiB; slb and eip bandwidthMbps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, kube::KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.vcpu) || self.type == 'ecs'").message(SIZES_BY_TYPE).field_path(".vcpu"))]
#[x_kube(validation = Rule::new("!has(self.memoryGiB) || self.type == 'ecs'").message(SIZES_BY_TYPE).field_path(".memoryGiB"))]
#[x_kube(validation = Rule::new("!has(self.storageGiB) || self.type in ['ecs', 'rds']").message(SIZES_BY_TYPE).field_path(".storageGiB"))]
#[x_kube(validation = Rule::new("!has(self.objectStorageGiB) || self.type == 'oss'").message(SIZES_BY_TYPE).field_path(".objectStorageGiB"))]
#[x_kube(validation = Rule::new("!has(self.bandwidthMbps) || self.type in ['slb', 'eip']").message(SIZES_BY_TYPE).field_path(".bandwidthMbps"))]
#[serde(rename_all = "camelCase")]
pub struct ResourceItem {
    /// Name of the item, unique within the request: a lowercase letter, then lowercase letters,
    /// digits and `-` (it names the item's OpenTofu module), e.g. `web`.
    #[schemars(regex(pattern = ITEM_NAME), length(min = 1, max = 63))]
    pub name: String,
    /// Resource type: ecs, rds, oss, slb or eip.
    #[serde(rename = "type")]
    pub type_: ResourceType,
    /// The provider's SKU / instance class, priced in the provider's PriceBook, e.g. `ecs.c2.large`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"))]
    pub sku: String,
    /// How many identical resources (1 to 1000).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub count: u32,
    /// vCPUs per resource (ecs), 1 to 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 512))]
    pub vcpu: Option<u32>,
    /// Memory per resource in GiB (ecs), 1 to 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub memory_gi_b: Option<u32>,
    /// Disk / database storage per resource in GiB, 1 to 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub storage_gi_b: Option<u32>,
    /// Object storage capacity in GiB (oss), 1 to 1048576.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub object_storage_gi_b: Option<u32>,
    /// Bandwidth in Mbps (eip, slb), 1 to 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub bandwidth_mbps: Option<u32>,
}

fn one() -> u32 {
    1
}

/// Standard conditions list (metav1.Condition), keyed by type.
pub type Conditions = Vec<Condition>;

/// Condition type every kind carries: the object has been reconciled and is usable.
pub const CONDITION_READY: &str = "Ready";
