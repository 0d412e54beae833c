//! Rendering a request into an OpenTofu workspace: pure and deterministic.
//!
//! [`render_workspace`] builds `main.tf` and `outputs.tf` with hcl-rs's [`hcl::Body`] builder
//! (never by string formatting) and hashes them. Same [`WorkspaceInput`], same bytes, same hash.
//!
//! Strings that come from people (SKU, project code, department, filing number, names, module
//! sources) enter the HCL output only through `literal`, as quoted string literals with `"`,
//! `\`, control characters and the template markers `${` and `%{` escaped by `escape`. We
//! escape ourselves because hcl-rs's own escaping misses markers in some positions (see
//! `literal`); the tests check every string reads back unchanged, with hcl-rs and with
//! OpenTofu.

use std::collections::{BTreeMap, BTreeSet};

use hcl::{
    Attribute, Block, Body, Expression, ForExpr, FuncCall, Identifier, ObjectKey, TemplateExpr,
    Traversal, UnaryOp, UnaryOperator, Variable,
    format::{Format, Formatter},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{
    DEPARTMENT_LABEL, ResourceItem, ResourceRequest, ResourceType,
    cloud_provider::{CloudProviderSpec, ModuleSource, RequiredProvider},
};

/// File name of the root module's main file.
pub const MAIN_TF: &str = "main.tf";
/// File name of the root module's outputs.
pub const OUTPUTS_TF: &str = "outputs.tf";
/// The root output holding every item's sensitive module outputs, as `{item: {output: value}}`;
/// its leading `_` keeps it apart from item outputs (item names start with a letter).
pub const SENSITIVE_OUTPUT: &str = "_sensitive";

/// Tag: the department the resources belong to (the `Department` name).
pub const TAG_DEPARTMENT: &str = DEPARTMENT_LABEL;
/// Tag: the request, as `<namespace>/<name>`.
pub const TAG_REQUEST: &str = "yunzhang.io/request";
/// Tag: the request's uid (names can be reused after deletion, uids can't).
pub const TAG_REQUEST_UID: &str = "yunzhang.io/request-uid";
/// Tag: the filing number (备案号), once the request has one.
pub const TAG_FILING_NUMBER: &str = "yunzhang.io/filing-number";
/// Tag: the project code, when the request names a project.
pub const TAG_PROJECT: &str = "yunzhang.io/project";

/// First line of every rendered file. Constant: no input may reach a comment.
const HEADER: &str = "# Rendered by yunzhang. Do not edit: the operator overwrites this file.\n\n";

/// The request a workspace is rendered for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// What rendering needs to know about a `CloudProvider`.
#[derive(Clone, Debug, PartialEq)]
pub struct ProviderConfig {
    /// The `CloudProvider`'s name, for error messages.
    pub name: String,
    /// Region passed to every module.
    pub region: String,
    /// Module per resource type.
    pub modules: BTreeMap<ResourceType, ModuleSource>,
    /// Rendered into `terraform { required_providers { … } }`; keys are provider local names.
    pub required_providers: BTreeMap<String, RequiredProvider>,
}

impl ProviderConfig {
    /// The configuration of the `CloudProvider` named `name` with `spec`.
    pub fn from_spec(name: &str, spec: &CloudProviderSpec) -> Result<Self, RenderError> {
        let modules = spec
            .modules
            .iter()
            .map(|(key, source)| {
                let resource_type = ResourceType::ALL
                    .into_iter()
                    .find(|t| t.as_str() == key)
                    .ok_or_else(|| RenderError::UnknownResourceType {
                        provider: name.to_owned(),
                        key: key.clone(),
                    })?;
                Ok((resource_type, source.clone()))
            })
            .collect::<Result<_, RenderError>>()?;
        Ok(ProviderConfig {
            name: name.to_owned(),
            region: spec.region.clone(),
            modules,
            required_providers: spec.required_providers.clone(),
        })
    }
}

/// Where OpenTofu keeps the workspace's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateBackend {
    /// OpenTofu's `kubernetes` backend: state in the Secret `tfstate-default-<secret_suffix>`
    /// in `namespace`. How the backend reaches the API server is normally left to the
    /// environment of the `tofu` process (`KUBE_IN_CLUSTER_CONFIG=true` in a pod,
    /// `KUBE_CONFIG_PATH` elsewhere), which keeps it out of the rendered bytes and the hash;
    /// `config_path` is rendered only when given.
    Kubernetes {
        namespace: String,
        secret_suffix: String,
        config_path: Option<String>,
    },
    /// No backend block: state in `terraform.tfstate` in the working directory. For offline
    /// checks and tests; the operator always keeps state in the cluster.
    Local,
}

/// Everything a workspace is rendered from. Plain data: gathering it is the caller's job.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkspaceInput {
    pub request: RequestRef,
    /// The `Department` name.
    pub department: String,
    /// The filing number (备案号), once assigned.
    pub filing_number: Option<String>,
    /// The request's project code, if it names a project.
    pub project_code: Option<String>,
    pub provider: ProviderConfig,
    pub state: StateBackend,
    pub items: Vec<ResourceItem>,
}

impl WorkspaceInput {
    /// The input for `request` as read from the cluster: namespace, name and uid from its
    /// metadata, project code from its spec, filing number from its status (once approved).
    /// `department` is the `Department` owning the request's namespace.
    pub fn for_request(
        request: &ResourceRequest,
        department: &str,
        provider: ProviderConfig,
        state: StateBackend,
    ) -> Self {
        // Objects read from the API server always have namespace, name and uid.
        let meta = &request.metadata;
        WorkspaceInput {
            request: RequestRef {
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                uid: meta.uid.clone().unwrap_or_default(),
            },
            department: department.to_owned(),
            filing_number: request
                .status
                .as_ref()
                .and_then(|s| s.filing_number.clone()),
            project_code: request.spec.project.as_ref().map(|p| p.code.clone()),
            provider,
            state,
            items: request.spec.items.clone(),
        }
    }
}

/// The files of a rendered root module and their hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedWorkspace {
    /// File name → content (`main.tf`, `outputs.tf`).
    pub files: BTreeMap<String, String>,
    /// `sha256:<64 hex>` over the files, see [`workspace_hash`].
    pub hash: String,
}

/// Why a workspace can't be rendered. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "CloudProvider {provider} has no module for resource type {resource_type} (item {item}): \
         add spec.modules.{resource_type} to the CloudProvider, e.g. \
         `{resource_type}: {{source: ./modules/{resource_type}}}`"
    )]
    NoModule {
        provider: String,
        resource_type: &'static str,
        item: String,
    },
    #[error(
        "CloudProvider {provider}: spec.modules has key {key:?}, which is not a resource type; \
         use ecs, rds, oss, slb or eip"
    )]
    UnknownResourceType { provider: String, key: String },
    #[error(
        "CloudProvider {provider}: required provider name {name:?} is not a valid OpenTofu \
         provider name; use a letter followed by letters, digits, '-' or '_'"
    )]
    InvalidProviderName { provider: String, name: String },
    #[error(
        "item name {name:?} can't name an OpenTofu module: it must start with a letter and \
         contain only letters, digits, '-' and '_'; rename the item"
    )]
    InvalidItemName { name: String },
    #[error("two items are named {name:?}; item names must be unique within a request")]
    DuplicateItem { name: String },
    #[error(
        "item {item}: {field} does not apply to {resource_type} resources \
         ({resource_type} takes {takes}); remove it from the item"
    )]
    FieldNotApplicable {
        item: String,
        resource_type: &'static str,
        field: &'static str,
        takes: String,
    },
    #[error("formatting HCL: {0}")]
    Format(#[from] hcl::Error),
}

impl RenderError {
    /// Low-cardinality label for metrics and condition reasons.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RenderError::NoModule { .. } => "NoModule",
            RenderError::UnknownResourceType { .. } => "UnknownResourceType",
            RenderError::InvalidProviderName { .. } => "InvalidProviderName",
            RenderError::InvalidItemName { .. } => "InvalidItemName",
            RenderError::DuplicateItem { .. } => "DuplicateItem",
            RenderError::FieldNotApplicable { .. } => "FieldNotApplicable",
            RenderError::Format(_) => "Format",
        }
    }
}

/// One size of an item as a module input.
struct SizeInput {
    /// Module variable name.
    variable: &'static str,
    /// The item's field as written in YAML, for messages.
    field: &'static str,
    value: Option<u32>,
}

fn size_inputs(item: &ResourceItem) -> [SizeInput; 5] {
    let input = |variable, field, value| SizeInput {
        variable,
        field,
        value,
    };
    [
        input("vcpu", "vcpu", item.vcpu),
        input("memory_gib", "memoryGiB", item.memory_gi_b),
        input("storage_gib", "storageGiB", item.storage_gi_b),
        input(
            "object_storage_gib",
            "objectStorageGiB",
            item.object_storage_gi_b,
        ),
        input("bandwidth_mbps", "bandwidthMbps", item.bandwidth_mbps),
    ]
}

/// The size variables the module of each resource type takes (besides `instance_count`, `sku`,
/// `name_prefix`, `region` and `tags`, which every module takes). Matches `examples/modules`.
pub fn module_size_variables(resource_type: ResourceType) -> &'static [&'static str] {
    match resource_type {
        ResourceType::Ecs => &["vcpu", "memory_gib", "storage_gib"],
        ResourceType::Rds => &["storage_gib"],
        ResourceType::Oss => &["object_storage_gib"],
        ResourceType::Slb | ResourceType::Eip => &["bandwidth_mbps"],
    }
}

/// Renders the workspace for `input`.
pub fn render_workspace(input: &WorkspaceInput) -> Result<RenderedWorkspace, RenderError> {
    // Sorted by name, so that reordering items in the spec changes neither bytes nor hash.
    let mut items: Vec<&ResourceItem> = input.items.iter().collect();
    items.sort_by(|a, b| a.name.cmp(&b.name));
    let mut seen = BTreeSet::new();
    for item in &items {
        if !seen.insert(item.name.as_str()) {
            return Err(RenderError::DuplicateItem {
                name: item.name.clone(),
            });
        }
    }

    let tags = tags(input);
    let mut main = Body::builder();
    if let Some(terraform) = terraform_block(input)? {
        main = main.add_block(terraform);
    }
    let mut outputs = Body::builder();
    let mut sensitive = Vec::new();
    for item in items {
        let name = module_name(&item.name)?;
        main = main.add_block(module_block(input, item, &name, &tags)?);
        outputs = outputs.add_block(
            Block::builder("output")
                .add_label(name.as_str())
                .add_attribute(("value", module_outputs(&name, false)))
                .build(),
        );
        sensitive.push((ObjectKey::from(name.clone()), module_outputs(&name, true)));
    }
    outputs = outputs.add_block(
        Block::builder("output")
            .add_label(SENSITIVE_OUTPUT)
            .add_attribute(("value", Expression::Object(sensitive.into_iter().collect())))
            .add_attribute(("sensitive", true))
            .build(),
    );

    let files = BTreeMap::from([
        (MAIN_TF.to_owned(), format_file(&main.build())?),
        (OUTPUTS_TF.to_owned(), format_file(&outputs.build())?),
    ]);
    let hash = workspace_hash(&files);
    Ok(RenderedWorkspace { files, hash })
}

/// `sha256:<hex>` over the files in name order, each as
/// `u64be(len(name)) ‖ name ‖ u64be(len(content)) ‖ content`, so no two different sets of
/// files hash the same bytes.
pub fn workspace_hash(files: &BTreeMap<String, String>) -> String {
    let mut sha = Sha256::new();
    for (name, content) in files {
        for part in [name.as_bytes(), content.as_bytes()] {
            sha.update((part.len() as u64).to_be_bytes());
            sha.update(part);
        }
    }
    format!("sha256:{}", hex::encode(sha.finalize()))
}

/// The one place a string becomes HCL: a quoted string literal that OpenTofu reads back as
/// exactly `s` and never evaluates. Every user-supplied string goes through here.
///
/// The escaping is ours ([`escape`]), not hcl-rs's. hcl-rs 0.20 escapes the markers of an
/// [`Expression::String`], but once it has found one it skips the character after every `$`
/// or `%`, so a marker right behind another `$` or `%` stays live: `"${}%${x}"` is written
/// `"$${}%${x}"`, which OpenTofu evaluates. And it writes an [`hcl::Value::String`] that
/// contains `${` verbatim, as a template. A [`TemplateExpr::QuotedString`] it writes as
/// given, between quotes, so the escaping is all ours.
fn literal(s: &str) -> Expression {
    Expression::from(TemplateExpr::QuotedString(escape(s)))
}

/// The body of an HCL quoted string that reads back as `s`: `"` and `\` backslash-escaped,
/// newline, carriage return and tab as `\n`, `\r`, `\t`, other control characters as
/// `\uXXXX`, and the template markers `${` and `%{` written `$${` and `%%{` (a `$` or `%` is
/// doubled exactly when the next character is `{`, which also keeps `$${` in the input
/// literal: it becomes `$$${`).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            // Control characters are all below U+00A0: four hex digits suffice.
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A fixed attribute or object key name of ours.
fn key(name: &'static str) -> ObjectKey {
    // Only called with constant names that are plain identifiers.
    ObjectKey::Identifier(Identifier::unchecked(name))
}

/// Whether `s` is usable as an OpenTofu module, output or provider name.
fn is_tofu_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn module_name(item_name: &str) -> Result<Identifier, RenderError> {
    if !is_tofu_name(item_name) {
        return Err(RenderError::InvalidItemName {
            name: item_name.to_owned(),
        });
    }
    Identifier::new(item_name).map_err(|_| RenderError::InvalidItemName {
        name: item_name.to_owned(),
    })
}

/// `module.<name>`.
/// The outputs of module `name` that are (`sensitive`) or are not marked sensitive, as an object:
/// `{ for k, v in module.<name> : k => v if [!]issensitive(v) }`. A module output is marked as a
/// whole or not at all (OpenTofu refuses an unmarked output holding a sensitive value), so the
/// two halves split every module's outputs without the CloudProvider having to list them.
fn module_outputs(name: &Identifier, sensitive: bool) -> Expression {
    let module: Expression = Traversal::builder(Variable::unchecked("module"))
        .attr(name.clone())
        .build()
        .into();
    let (k, v) = (Identifier::unchecked("k"), Identifier::unchecked("v"));
    let is_sensitive: Expression = FuncCall::builder(Identifier::unchecked("issensitive"))
        .arg(Variable::from(v.clone()))
        .build()
        .into();
    let cond = if sensitive {
        is_sensitive
    } else {
        UnaryOp::new(UnaryOperator::Not, is_sensitive).into()
    };
    ForExpr::new(v.clone(), module, Variable::from(v))
        .with_key_var(k.clone())
        .with_key_expr(Variable::from(k))
        .with_cond_expr(cond)
        .into()
}

fn tags(input: &WorkspaceInput) -> BTreeMap<&'static str, String> {
    let mut tags = BTreeMap::from([
        (TAG_DEPARTMENT, input.department.clone()),
        (
            TAG_REQUEST,
            format!("{}/{}", input.request.namespace, input.request.name),
        ),
        (TAG_REQUEST_UID, input.request.uid.clone()),
    ]);
    if let Some(filing) = &input.filing_number {
        tags.insert(TAG_FILING_NUMBER, filing.clone());
    }
    if let Some(project) = &input.project_code {
        tags.insert(TAG_PROJECT, project.clone());
    }
    tags
}

fn terraform_block(input: &WorkspaceInput) -> Result<Option<Block>, RenderError> {
    let mut terraform = Block::builder("terraform");
    let mut empty = true;

    let provider = &input.provider;
    if !provider.required_providers.is_empty() {
        let mut required = Block::builder("required_providers");
        for (local_name, requirement) in &provider.required_providers {
            let ident = Identifier::new(local_name.as_str())
                .ok()
                .filter(|_| is_tofu_name(local_name))
                .ok_or_else(|| RenderError::InvalidProviderName {
                    provider: provider.name.clone(),
                    name: local_name.clone(),
                })?;
            let mut fields = vec![(key("source"), literal(&requirement.source))];
            if let Some(version) = &requirement.version {
                fields.push((key("version"), literal(version)));
            }
            let value = Expression::Object(fields.into_iter().collect());
            required = required.add_attribute(Attribute::new(ident, value));
        }
        terraform = terraform.add_block(required.build());
        empty = false;
    }

    if let StateBackend::Kubernetes {
        namespace,
        secret_suffix,
        config_path,
    } = &input.state
    {
        let mut backend = Block::builder("backend")
            .add_label("kubernetes")
            .add_attribute(("secret_suffix", literal(secret_suffix)))
            .add_attribute(("namespace", literal(namespace)));
        if let Some(path) = config_path {
            backend = backend.add_attribute(("config_path", literal(path)));
        }
        terraform = terraform.add_block(backend.build());
        empty = false;
    }

    Ok((!empty).then(|| terraform.build()))
}

fn module_block(
    input: &WorkspaceInput,
    item: &ResourceItem,
    name: &Identifier,
    tags: &BTreeMap<&'static str, String>,
) -> Result<Block, RenderError> {
    let provider = &input.provider;
    let module = provider
        .modules
        .get(&item.type_)
        .ok_or_else(|| RenderError::NoModule {
            provider: provider.name.clone(),
            resource_type: item.type_.as_str(),
            item: item.name.clone(),
        })?;

    let mut block = Block::builder("module")
        .add_label(name.as_str())
        .add_attribute(("source", literal(&module.source)));
    if let Some(version) = &module.version {
        block = block.add_attribute(("version", literal(version)));
    }
    // `count` is a meta-argument of module blocks (and a reserved variable name), hence
    // `instance_count`.
    block = block
        .add_attribute(("instance_count", Expression::from(item.count)))
        .add_attribute(("sku", literal(&item.sku)));

    let takes = module_size_variables(item.type_);
    for size in size_inputs(item) {
        let Some(value) = size.value else { continue };
        if !takes.contains(&size.variable) {
            return Err(RenderError::FieldNotApplicable {
                item: item.name.clone(),
                resource_type: item.type_.as_str(),
                field: size.field,
                takes: size_inputs(item)
                    .iter()
                    .filter(|s| takes.contains(&s.variable))
                    .map(|s| s.field)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        block = block.add_attribute((size.variable, Expression::from(value)));
    }

    let name_prefix = format!(
        "{}-{}-{}",
        input.request.namespace, input.request.name, item.name
    );
    let tags = Expression::Object(
        tags.iter()
            .map(|(k, v)| (ObjectKey::Expression(literal(k)), literal(v)))
            .collect(),
    );
    Ok(block
        .add_attribute(("name_prefix", literal(&name_prefix)))
        .add_attribute(("region", literal(&provider.region)))
        .add_attribute(("tags", tags))
        .build())
}

fn format_file(body: &Body) -> Result<String, RenderError> {
    let mut formatter = Formatter::builder().prefer_ident_keys(true).build_vec();
    let hcl = body.format_string(&mut formatter)?;
    Ok(format!("{HEADER}{hcl}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CloudProvider, ResourceRequestStatus};
    use hcl::Value;
    use hcl::eval::{Context, Evaluate};
    use proptest::prelude::*;

    const PROVIDER_YAML: &str = include_str!("../../../examples/platform/provider.yaml");
    const REQUEST_YAML: &str = include_str!("../../../examples/department/resource-request.yaml");
    const UID: &str = "6f1c2a7e-3b9d-4c1e-9a57-0d2b8e4f6a10";

    /// The CloudProvider of `examples/platform/provider.yaml` (its first document).
    fn example_provider() -> ProviderConfig {
        let doc = serde_yaml::Deserializer::from_str(PROVIDER_YAML)
            .next()
            .expect("a YAML document");
        let provider = CloudProvider::deserialize(doc).expect("a CloudProvider");
        let name = provider.metadata.name.as_deref().expect("named");
        ProviderConfig::from_spec(name, &provider.spec).expect("valid provider")
    }

    /// The request of `examples/department/resource-request.yaml`, approved and filed.
    fn example_input() -> WorkspaceInput {
        let mut request: ResourceRequest = serde_yaml::from_str(REQUEST_YAML).expect("a request");
        request.metadata.uid = Some(UID.to_owned());
        request.status = Some(ResourceRequestStatus {
            filing_number: Some("YZ-2026-000123".to_owned()),
            ..Default::default()
        });
        let state = StateBackend::Kubernetes {
            namespace: "yunzhang-system".to_owned(),
            secret_suffix: UID.to_owned(),
            config_path: None,
        };
        WorkspaceInput::for_request(&request, "gx-finance", example_provider(), state)
    }

    fn item(name: &str, type_: ResourceType, sku: &str) -> ResourceItem {
        ResourceItem {
            name: name.to_owned(),
            type_,
            sku: sku.to_owned(),
            count: 1,
            vcpu: None,
            memory_gi_b: None,
            storage_gi_b: None,
            object_storage_gi_b: None,
            bandwidth_mbps: None,
        }
    }

    /// One item of `type_` with every size its module takes.
    fn sized_item(type_: ResourceType) -> ResourceItem {
        let mut it = item(
            type_.as_str(),
            type_,
            &format!("{}.standard", type_.as_str()),
        );
        match type_ {
            ResourceType::Ecs => {
                it.count = 3;
                it.vcpu = Some(8);
                it.memory_gi_b = Some(32);
                it.storage_gi_b = Some(200);
            }
            ResourceType::Rds => it.storage_gi_b = Some(500),
            ResourceType::Oss => it.object_storage_gi_b = Some(10240),
            ResourceType::Slb => it.bandwidth_mbps = Some(100),
            ResourceType::Eip => {
                it.count = 2;
                it.bandwidth_mbps = Some(50);
            }
        }
        it
    }

    /// The workspace as one reviewable text: each file under a header, then the hash.
    fn snapshot_text(ws: &RenderedWorkspace) -> String {
        let mut out = String::new();
        for (name, content) in &ws.files {
            out.push_str(&format!("--- {name} ---\n{content}\n"));
        }
        out.push_str(&format!("--- hash ---\n{}\n", ws.hash));
        out
    }

    fn render(input: &WorkspaceInput) -> RenderedWorkspace {
        render_workspace(input).expect("renders")
    }

    #[test]
    fn snapshot_example_request() {
        insta::assert_snapshot!("tax_portal", snapshot_text(&render(&example_input())));
    }

    #[test]
    fn snapshot_one_item_of_each_type() {
        for type_ in ResourceType::ALL {
            let input = WorkspaceInput {
                items: vec![sized_item(type_)],
                ..example_input()
            };
            insta::assert_snapshot!(
                format!("type_{}", type_.as_str()),
                snapshot_text(&render(&input))
            );
        }
    }

    /// A real provider's shape: required_providers, a registry module with a version, an
    /// explicit kubeconfig for the backend, no filing number or project yet.
    #[test]
    fn snapshot_registry_modules_and_required_providers() {
        let mut input = example_input();
        input.filing_number = None;
        input.project_code = None;
        input.provider.modules.insert(
            ResourceType::Ecs,
            ModuleSource {
                source: "registry.example.gov.cn/yunzhang/ecs/openstack".to_owned(),
                version: Some("~> 1.2".to_owned()),
            },
        );
        input.provider.required_providers.insert(
            "openstack".to_owned(),
            RequiredProvider {
                source: "terraform-provider-openstack/openstack".to_owned(),
                version: Some("~> 3.0".to_owned()),
            },
        );
        input.provider.required_providers.insert(
            "null".to_owned(),
            RequiredProvider {
                source: "hashicorp/null".to_owned(),
                version: None,
            },
        );
        input.state = StateBackend::Kubernetes {
            namespace: "yunzhang-system".to_owned(),
            secret_suffix: UID.to_owned(),
            config_path: Some("/etc/yunzhang/kubeconfig".to_owned()),
        };
        insta::assert_snapshot!("registry_modules", snapshot_text(&render(&input)));
    }

    #[test]
    fn local_state_renders_no_terraform_block() {
        let input = WorkspaceInput {
            state: StateBackend::Local,
            ..example_input()
        };
        let main = &render(&input).files[MAIN_TF];
        assert!(!main.contains("terraform {"), "{main}");
        assert!(!main.contains("backend"), "{main}");
    }

    #[test]
    fn item_order_does_not_matter() {
        let input = example_input();
        let mut reversed = input.clone();
        reversed.items.reverse();
        assert_eq!(render(&input), render(&reversed));
    }

    #[test]
    fn hash_is_sha256_of_length_prefixed_files() {
        let ws = render(&example_input());
        let hex = ws.hash.strip_prefix("sha256:").expect("sha256: prefix");
        assert_eq!(hex.len(), 64);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(ws.hash, workspace_hash(&ws.files));
        // Moving bytes from one file to the next, or into a name, changes the hash.
        let a = BTreeMap::from([("a".to_owned(), "bc".to_owned())]);
        let b = BTreeMap::from([("ab".to_owned(), "c".to_owned())]);
        assert_ne!(workspace_hash(&a), workspace_hash(&b));
    }

    #[test]
    fn missing_module_names_provider_type_and_fix() {
        let mut input = example_input();
        input.provider.modules.remove(&ResourceType::Rds);
        let err = render_workspace(&input).expect_err("no rds module");
        assert_eq!(err.metric_label(), "NoModule");
        assert_eq!(
            err.to_string(),
            "CloudProvider gx-gov-cloud has no module for resource type rds (item db): add \
             spec.modules.rds to the CloudProvider, e.g. `rds: {source: ./modules/rds}`"
        );
    }

    #[test]
    fn sizes_a_type_does_not_take_are_refused() {
        let mut oss = item("files", ResourceType::Oss, "oss.standard");
        oss.vcpu = Some(4);
        let input = WorkspaceInput {
            items: vec![oss],
            ..example_input()
        };
        let err = render_workspace(&input).expect_err("vcpu on oss");
        assert_eq!(
            err.to_string(),
            "item files: vcpu does not apply to oss resources (oss takes objectStorageGiB); \
             remove it from the item"
        );
    }

    #[test]
    fn names_that_cannot_be_module_names_are_refused() {
        for name in ["1web", "", "we b", "web}", "模块"] {
            let input = WorkspaceInput {
                items: vec![item(name, ResourceType::Ecs, "ecs.c2.large")],
                ..example_input()
            };
            let err = render_workspace(&input).expect_err(name);
            assert_eq!(err.metric_label(), "InvalidItemName", "{name}");
        }
    }

    #[test]
    fn duplicate_items_are_refused() {
        let mut input = example_input();
        input.items.push(input.items[0].clone());
        let err = render_workspace(&input).expect_err("duplicate");
        assert_eq!(err.metric_label(), "DuplicateItem");
    }

    #[test]
    fn provider_names_must_be_identifiers() {
        let mut input = example_input();
        input.provider.required_providers.insert(
            "open stack".to_owned(),
            RequiredProvider {
                source: "x/y".to_owned(),
                version: None,
            },
        );
        let err = render_workspace(&input).expect_err("bad provider name");
        assert_eq!(err.metric_label(), "InvalidProviderName");
    }

    #[test]
    fn unknown_module_keys_are_refused() {
        let doc = serde_yaml::Deserializer::from_str(PROVIDER_YAML)
            .next()
            .expect("a YAML document");
        let mut provider = CloudProvider::deserialize(doc).expect("a CloudProvider");
        let ecs = provider.spec.modules["ecs"].clone();
        provider.spec.modules.insert("vpc".to_owned(), ecs);
        let err = ProviderConfig::from_spec("p", &provider.spec).expect_err("vpc");
        assert_eq!(err.metric_label(), "UnknownResourceType");
    }

    fn formatted(expr: &Expression) -> String {
        hcl::format::to_string(expr).expect("formats")
    }

    #[test]
    fn literal_escapes_quotes_backslashes_controls_and_template_markers() {
        let cases = [
            ("plain 广西", r#""plain 广西""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            (
                "l1\nl2\r\t\u{1}\u{7f}\u{85}",
                r#""l1\nl2\r\t\u0001\u007f\u0085""#,
            ),
            ("${x}", r#""$${x}""#),
            ("%{ if y }", r#""%%{ if y }""#),
            ("$${z}", r#""$$${z}""#),
            ("%%{w}", r#""%%%{w}""#),
            ("${}%${x}", r#""$${}%$${x}""#),
            ("${}$%{x}", r#""$${}$%%{x}""#),
            ("\\${x}", r#""\\$${x}""#),
            ("$ % { } $", r#""$ % { } $""#),
        ];
        for (input, want) in cases {
            assert_eq!(formatted(&literal(input)), want, "{input:?}");
        }
    }

    /// Why `literal` escapes by itself: hcl-rs's own escaping leaves these templates live.
    #[test]
    fn hcl_rs_escaping_is_not_enough() {
        let string = Expression::String("${}%${file(\"/etc/passwd\")}".into());
        assert_eq!(formatted(&string), r#""$${}%${file(\"/etc/passwd\")}""#);
        let value = Value::String("${file(\"/etc/passwd\")}".into());
        assert_eq!(
            hcl::format::to_string(&value).expect("formats"),
            r#""${file("/etc/passwd")}""#
        );
    }

    // ---- property tests --------------------------------------------------------------------

    /// Strings made to break quoting: template markers, quotes, backslashes, newlines,
    /// braces, HCL comment and heredoc starters, control characters and any unicode.
    fn nasty() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            3 => any::<char>().prop_map(String::from),
            3 => prop::sample::select(vec![
                "${", "%{", "$${", "%%{", "$$", "%%", "}", "{", "\"", "\\", "\\\"", "\n", "\r",
                "\t", "$", "%", "\\n", "\\u0041", "\u{0}", "\u{7f}", "\u{2028}", "\u{feff}",
                "广西", "${var.x}", "%{ if true }x%{ endif }", "<<EOF\n", "#", "//", "/*", "*/",
                "\"\n}\nresource \"x\" \"y\" {\n",
            ])
            .prop_map(String::from),
            1 => "[a-z0-9.-]{1,8}",
        ];
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    fn opt_nasty() -> impl Strategy<Value = Option<String>> {
        prop::option::of(nasty())
    }

    /// Item names as the API allows them (DNS labels) and OpenTofu can use (a letter first).
    fn item_name() -> impl Strategy<Value = String> {
        "[a-z]([-a-z0-9]{0,14}[a-z0-9])?"
    }

    fn resource_type() -> impl Strategy<Value = ResourceType> {
        prop::sample::select(ResourceType::ALL.to_vec())
    }

    /// An item with sizes only where its type takes them, and an arbitrary SKU.
    fn item_with(name: String) -> impl Strategy<Value = ResourceItem> {
        (
            resource_type(),
            nasty(),
            1u32..=1000,
            prop::array::uniform5(prop::option::of(1u32..=65536)),
        )
            .prop_map(move |(type_, sku, count, sizes)| {
                let mut it = item(&name, type_, &sku);
                it.count = count;
                let takes = module_size_variables(type_);
                let keep = |variable: &str, value: Option<u32>| {
                    value.filter(|_| takes.contains(&variable))
                };
                it.vcpu = keep("vcpu", sizes[0]);
                it.memory_gi_b = keep("memory_gib", sizes[1]);
                it.storage_gi_b = keep("storage_gib", sizes[2]);
                it.object_storage_gi_b = keep("object_storage_gib", sizes[3]);
                it.bandwidth_mbps = keep("bandwidth_mbps", sizes[4]);
                it
            })
    }

    fn items() -> impl Strategy<Value = Vec<ResourceItem>> {
        prop::collection::btree_set(item_name(), 1..4)
            .prop_flat_map(|names| names.into_iter().map(item_with).collect::<Vec<_>>())
    }

    fn module_source() -> impl Strategy<Value = ModuleSource> {
        (nasty(), opt_nasty()).prop_map(|(source, version)| ModuleSource { source, version })
    }

    fn provider() -> impl Strategy<Value = ProviderConfig> {
        (
            nasty(),
            nasty(),
            prop::array::uniform5(module_source()),
            prop::collection::btree_map(
                "[a-z][a-z0-9_-]{0,8}",
                (nasty(), opt_nasty())
                    .prop_map(|(source, version)| RequiredProvider { source, version }),
                0..3,
            ),
        )
            .prop_map(
                |(name, region, modules, required_providers)| ProviderConfig {
                    name,
                    region,
                    modules: ResourceType::ALL.into_iter().zip(modules).collect(),
                    required_providers,
                },
            )
    }

    fn state() -> impl Strategy<Value = StateBackend> {
        prop_oneof![
            (nasty(), nasty(), opt_nasty()).prop_map(|(namespace, secret_suffix, config_path)| {
                StateBackend::Kubernetes {
                    namespace,
                    secret_suffix,
                    config_path,
                }
            }),
            Just(StateBackend::Local),
        ]
    }

    fn input() -> impl Strategy<Value = WorkspaceInput> {
        let request = (nasty(), nasty(), nasty()).prop_map(|(namespace, name, uid)| RequestRef {
            namespace,
            name,
            uid,
        });
        let labels = (nasty(), opt_nasty(), opt_nasty());
        (request, labels, provider(), state(), items()).prop_map(
            |(request, (department, filing_number, project_code), provider, state, items)| {
                WorkspaceInput {
                    request,
                    department,
                    filing_number,
                    project_code,
                    provider,
                    state,
                    items,
                }
            },
        )
    }

    fn blocks<'a>(body: &'a Body, ident: &str) -> Vec<&'a Block> {
        body.blocks().filter(|b| b.identifier() == ident).collect()
    }

    fn label(block: &Block) -> &str {
        match block.labels() {
            [only] => only.as_str(),
            labels => panic!("expected one label, got {labels:?}"),
        }
    }

    /// The attributes of `body` evaluated with an empty context: a template or reference
    /// left in the output would fail to evaluate or change the value.
    fn evaluated(body: &Body) -> BTreeMap<String, Value> {
        body.attributes()
            .map(|a| {
                let value = a
                    .expr()
                    .evaluate(&Context::new())
                    .unwrap_or_else(|e| panic!("attribute {} does not evaluate: {e}", a.key()));
                (a.key().to_owned(), value)
            })
            .collect()
    }

    fn string(s: &str) -> Value {
        Value::String(s.to_owned())
    }

    /// What each module block must say, in hcl-rs values.
    fn expected_module(input: &WorkspaceInput, item: &ResourceItem) -> BTreeMap<String, Value> {
        let module = &input.provider.modules[&item.type_];
        let mut want = BTreeMap::from([
            ("source".to_owned(), string(&module.source)),
            ("instance_count".to_owned(), Value::from(item.count)),
            ("sku".to_owned(), string(&item.sku)),
            (
                "name_prefix".to_owned(),
                string(&format!(
                    "{}-{}-{}",
                    input.request.namespace, input.request.name, item.name
                )),
            ),
            ("region".to_owned(), string(&input.provider.region)),
        ]);
        if let Some(version) = &module.version {
            want.insert("version".to_owned(), string(version));
        }
        for size in size_inputs(item) {
            if let Some(v) = size.value {
                want.insert(size.variable.to_owned(), Value::from(v));
            }
        }
        let mut tags = hcl::Map::new();
        tags.insert(TAG_DEPARTMENT.to_owned(), string(&input.department));
        tags.insert(
            TAG_REQUEST.to_owned(),
            string(&format!(
                "{}/{}",
                input.request.namespace, input.request.name
            )),
        );
        tags.insert(TAG_REQUEST_UID.to_owned(), string(&input.request.uid));
        if let Some(f) = &input.filing_number {
            tags.insert(TAG_FILING_NUMBER.to_owned(), string(f));
        }
        if let Some(p) = &input.project_code {
            tags.insert(TAG_PROJECT.to_owned(), string(p));
        }
        want.insert("tags".to_owned(), Value::Object(tags));
        want
    }

    fn sorted_object(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k, sorted_object(v)))
                        .collect(),
                )
            }
            other => other,
        }
    }

    fn check_round_trip(input: &WorkspaceInput) {
        let ws = render(input);
        let main: Body = hcl::from_str(&ws.files[MAIN_TF]).expect("main.tf parses");

        // Nothing but the blocks we render, and no top-level attributes.
        assert_eq!(main.attributes().count(), 0);
        let modules = blocks(&main, "module");
        let terraform = blocks(&main, "terraform");
        assert_eq!(modules.len() + terraform.len(), main.iter().count());
        assert_eq!(modules.len(), input.items.len());

        for block in modules {
            let item = input
                .items
                .iter()
                .find(|i| i.name == label(block))
                .expect("module for an item");
            assert_eq!(block.body().blocks().count(), 0);
            let got: BTreeMap<_, _> = evaluated(block.body())
                .into_iter()
                .map(|(k, v)| (k, sorted_object(v)))
                .collect();
            let want: BTreeMap<_, _> = expected_module(input, item)
                .into_iter()
                .map(|(k, v)| (k, sorted_object(v)))
                .collect();
            assert_eq!(got, want);
        }

        let backend_expected = match &input.state {
            StateBackend::Kubernetes {
                namespace,
                secret_suffix,
                config_path,
            } => {
                let mut m = BTreeMap::from([
                    ("namespace".to_owned(), string(namespace)),
                    ("secret_suffix".to_owned(), string(secret_suffix)),
                ]);
                if let Some(p) = config_path {
                    m.insert("config_path".to_owned(), string(p));
                }
                Some(m)
            }
            StateBackend::Local => None,
        };
        let has_terraform =
            backend_expected.is_some() || !input.provider.required_providers.is_empty();
        assert_eq!(terraform.len(), usize::from(has_terraform));
        if let Some(terraform) = terraform.first() {
            let body = terraform.body();
            assert_eq!(body.attributes().count(), 0);
            let backends = blocks(body, "backend");
            match &backend_expected {
                Some(want) => {
                    assert_eq!(backends.len(), 1);
                    assert_eq!(label(backends[0]), "kubernetes");
                    assert_eq!(&evaluated(backends[0].body()), want);
                }
                None => assert!(backends.is_empty()),
            }
            let required = blocks(body, "required_providers");
            let got = required
                .first()
                .map(|b| evaluated(b.body()))
                .unwrap_or_default();
            let want: BTreeMap<_, _> = input
                .provider
                .required_providers
                .iter()
                .map(|(name, r)| {
                    let mut m = hcl::Map::new();
                    m.insert("source".to_owned(), string(&r.source));
                    if let Some(v) = &r.version {
                        m.insert("version".to_owned(), string(v));
                    }
                    (name.clone(), Value::Object(m))
                })
                .collect();
            assert_eq!(got, want);
        }

        let outputs: Body = hcl::from_str(&ws.files[OUTPUTS_TF]).expect("outputs.tf parses");
        let mut output_names: Vec<_> = blocks(&outputs, "output").into_iter().map(label).collect();
        output_names.sort_unstable();
        let mut item_names: Vec<_> = input.items.iter().map(|i| i.name.as_str()).collect();
        item_names.push(SENSITIVE_OUTPUT);
        item_names.sort_unstable();
        assert_eq!(output_names, item_names);
        assert_eq!(outputs.iter().count(), input.items.len() + 1);
    }

    /// Something that differs in exactly one field of one item.
    #[derive(Debug, Clone)]
    enum ItemChange {
        Name,
        Type,
        Sku,
        Count,
        Size(usize),
    }

    fn change(item: &ResourceItem, how: &ItemChange) -> ResourceItem {
        let mut it = item.clone();
        match how {
            ItemChange::Name => it.name.push('x'),
            ItemChange::Type => {
                let next = ResourceType::ALL
                    .into_iter()
                    .cycle()
                    .skip_while(|t| *t != it.type_)
                    .nth(1)
                    .expect("cycle");
                it.type_ = next;
                let takes = module_size_variables(next);
                for (variable, field) in [
                    ("vcpu", &mut it.vcpu),
                    ("memory_gib", &mut it.memory_gi_b),
                    ("storage_gib", &mut it.storage_gi_b),
                    ("object_storage_gib", &mut it.object_storage_gi_b),
                    ("bandwidth_mbps", &mut it.bandwidth_mbps),
                ] {
                    if !takes.contains(&variable) {
                        *field = None;
                    }
                }
            }
            ItemChange::Sku => it.sku.push('x'),
            ItemChange::Count => it.count = if it.count < 1000 { it.count + 1 } else { 1 },
            ItemChange::Size(n) => {
                let takes = module_size_variables(it.type_);
                let variable = takes[n % takes.len()];
                let field = match variable {
                    "vcpu" => &mut it.vcpu,
                    "memory_gib" => &mut it.memory_gi_b,
                    "storage_gib" => &mut it.storage_gi_b,
                    "object_storage_gib" => &mut it.object_storage_gi_b,
                    _ => &mut it.bandwidth_mbps,
                };
                *field = match *field {
                    None => Some(1),
                    Some(1) => None,
                    Some(v) => Some(v - 1),
                };
            }
        }
        it
    }

    fn item_change() -> impl Strategy<Value = ItemChange> {
        prop_oneof![
            Just(ItemChange::Name),
            Just(ItemChange::Type),
            Just(ItemChange::Sku),
            Just(ItemChange::Count),
            (0usize..3).prop_map(ItemChange::Size),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every user string reads back from the HCL as exactly itself, and nothing else
        /// appears in the files.
        #[test]
        fn user_strings_read_back_literally(input in input()) {
            check_round_trip(&input);
        }

        #[test]
        fn rendering_is_deterministic(input in input()) {
            let first = render(&input);
            let second = render(&input.clone());
            prop_assert_eq!(&first, &second);
            prop_assert_eq!(first.hash, workspace_hash(&second.files));
        }

        #[test]
        fn changing_any_item_field_changes_the_hash(
            input in input(),
            which in any::<prop::sample::Index>(),
            how in item_change(),
        ) {
            let n = which.index(input.items.len());
            let mut changed = input.clone();
            changed.items[n] = change(&input.items[n], &how);
            // A renamed item may now clash with another one: that input is refused, not hashed.
            let name = &changed.items[n].name;
            prop_assume!(changed.items.iter().filter(|i| &i.name == name).count() == 1);
            // A type shows in the workspace as its module: a change of type only shows where
            // the provider gives the two types different modules. (Assumed for type changes
            // only: assuming it for every change rejected most cases and made the test flaky.)
            let modules = &input.provider.modules;
            prop_assume!(
                !matches!(how, ItemChange::Type) || modules[&input.items[n].type_] != modules[&changed.items[n].type_]
            );
            prop_assert_ne!(render(&input).hash, render(&changed).hash);
        }
    }
}
