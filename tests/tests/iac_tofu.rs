//! Rendered workspaces against the real OpenTofu (`hack/tool tofu`), offline: the example
//! workspaces validate with the reference modules in `examples/modules`, user strings reach
//! OpenTofu as exactly the literals they were, a change of size shows in the plan, and the
//! modules refuse sizes out of range. These need no control plane: state is local
//! (`StateBackend::Local`) where a test needs state. One test keeps state where the operator
//! will: in a Secret, through the `kubernetes` backend against the local control plane.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestSpec},
        batch::v1::Job,
        core::v1::{ConfigMap, Secret, ServiceAccount},
        rbac::v1::{Role, RoleBinding},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
    config::Kubeconfig,
};
use serde_json::{Value, json};
use yunzhang::{
    api::{CloudProvider, ResourceItem, ResourceRequest, ResourceType},
    iac::{
        Executor, JobConfig, JobExecutor, KubeAccess, LocalConfig, LocalExecutor, ProviderConfig,
        RenderedWorkspace, RunContext, StateBackend, WorkspaceInput,
        job::{REQUEST_UID_LABEL, RUN_LABEL, SCRIPT},
        render_workspace,
    },
};
use yunzhang_integration::{
    admin, cluster, create_namespace, repo_root, tofu_binary, unique, wait_for, with_own_identity,
};

/// A rendered workspace written to a fresh directory, with the reference modules next to it
/// (`./modules/<type>` sources resolve there). Removed on drop.
struct Workdir {
    dir: PathBuf,
    env: Vec<(&'static str, PathBuf)>,
}

impl Workdir {
    fn new(ws: &RenderedWorkspace) -> Self {
        let dir = std::env::temp_dir().join(unique("yz-iac"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::os::unix::fs::symlink(repo_root().join("examples/modules"), dir.join("modules"))
            .expect("symlink modules");
        // An empty CLI configuration: no plugin mirrors or credentials from the environment.
        std::fs::write(dir.join("tofu.rc"), "").expect("cli config");
        let workdir = Workdir {
            dir,
            env: Vec::new(),
        };
        workdir.write(ws);
        workdir
    }

    /// Sets `name` in the environment of every `tofu` run.
    fn with_env(mut self, name: &'static str, value: &Path) -> Self {
        self.env.push((name, value.to_owned()));
        self
    }

    fn write(&self, ws: &RenderedWorkspace) {
        for (name, content) in &ws.files {
            std::fs::write(self.dir.join(name), content).expect("write rendered file");
        }
    }

    /// Runs `tofu args…` in the workspace.
    fn run(&self, args: &[&str]) -> Output {
        Command::new(tofu_binary())
            .args(args)
            .current_dir(&self.dir)
            .env("TF_CLI_CONFIG_FILE", self.dir.join("tofu.rc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("CHECKPOINT_DISABLE", "1")
            .env_remove("TF_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running tofu")
    }

    /// Runs `tofu args…` and returns its stdout; panics with tofu's output if it fails.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tofu {args:?} failed in {}:\n{}\n{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn init(&self) {
        self.ok(&["init", "-backend=false", "-input=false", "-no-color"]);
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).expect("tofu prints JSON")
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_example(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).expect("example file")
}

/// The CloudProvider of `examples/platform/provider.yaml` (its first document).
fn example_provider() -> ProviderConfig {
    let yaml = read_example("examples/platform/provider.yaml");
    let doc = serde_yaml::Deserializer::from_str(&yaml)
        .next()
        .expect("a YAML document");
    let provider: CloudProvider = serde::Deserialize::deserialize(doc).expect("a CloudProvider");
    ProviderConfig::from_spec("gx-gov-cloud", &provider.spec).expect("valid provider")
}

/// The request of `examples/department/resource-request.yaml` (web ecs ×2, db rds).
fn example_request() -> ResourceRequest {
    let mut request: ResourceRequest =
        serde_yaml::from_str(&read_example("examples/department/resource-request.yaml"))
            .expect("a request");
    request.metadata.uid = Some("6f1c2a7e-3b9d-4c1e-9a57-0d2b8e4f6a10".to_owned());
    request
}

fn example_input(state: StateBackend) -> WorkspaceInput {
    WorkspaceInput::for_request(&example_request(), "gx-finance", example_provider(), state)
}

fn kubernetes_state() -> StateBackend {
    StateBackend::Kubernetes {
        namespace: "yunzhang-system".to_owned(),
        secret_suffix: "6f1c2a7e-3b9d-4c1e-9a57-0d2b8e4f6a10".to_owned(),
        config_path: None,
    }
}

/// One item of each type, with every size its module takes.
fn one_of_each() -> Vec<ResourceItem> {
    ResourceType::ALL
        .into_iter()
        .map(|type_| {
            let size = |takes: bool, v: u32| takes.then_some(v);
            ResourceItem {
                name: format!("my-{}", type_.as_str()),
                type_,
                sku: format!("{}.standard", type_.as_str()),
                count: 2,
                vcpu: size(type_ == ResourceType::Ecs, 4),
                memory_gi_b: size(type_ == ResourceType::Ecs, 8),
                storage_gi_b: size(matches!(type_, ResourceType::Ecs | ResourceType::Rds), 100),
                object_storage_gi_b: size(type_ == ResourceType::Oss, 1024),
                bandwidth_mbps: size(matches!(type_, ResourceType::Slb | ResourceType::Eip), 50),
            }
        })
        .collect()
}

fn assert_valid(workdir: &Workdir) {
    let report = workdir.json(&["validate", "-json", "-no-color"]);
    assert_eq!(report["valid"], json!(true), "{report:#}");
    assert_eq!(report["error_count"], json!(0), "{report:#}");
    assert_eq!(report["warning_count"], json!(0), "{report:#}");
}

/// The example request, and one item of every type, validate as rendered for the cluster
/// (kubernetes backend; `init -backend=false` leaves the backend unconfigured).
#[test]
fn example_workspaces_validate() {
    let tax_portal = render_workspace(&example_input(kubernetes_state())).expect("renders");
    let every_type = render_workspace(&WorkspaceInput {
        items: one_of_each(),
        ..example_input(kubernetes_state())
    })
    .expect("renders");
    for ws in [tax_portal, every_type] {
        let workdir = Workdir::new(&ws);
        workdir.init();
        assert_valid(&workdir);
    }
}

/// Strings that would be HCL syntax or templates if they were not escaped: interpolations,
/// directives, the positions where hcl-rs's own escaping fails, quotes, backslashes, newlines.
const DEPARTMENT: &str = "财政厅 ${path.cwd} %{ if true }yes%{ endif } \"quoted\" back\\slash";
const PROJECT: &str = "GX-${}%${path.cwd}$%{ if true }x%{ endif }$${kept}%%{kept}";
const FILING: &str = "YZ-2026-000001\n\t}\nresource \"terraform_data\" \"x\" {\n#\\n$";
const SKU: &str = "ecs.c2.large\"} ${jsonencode({a = 1})} \\${x} \\\\";

fn escaping_input() -> WorkspaceInput {
    let mut input = example_input(StateBackend::Local);
    input.department = DEPARTMENT.to_owned();
    input.project_code = Some(PROJECT.to_owned());
    input.filing_number = Some(FILING.to_owned());
    input.request.uid = "uid-${uuid()}".to_owned();
    for item in &mut input.items {
        item.sku = SKU.to_owned();
    }
    input
}

/// `tofu output -json`'s value of output `name`.
fn output(workdir: &Workdir, name: &str) -> Value {
    let outputs = workdir.json(&["output", "-json", "-no-color"]);
    outputs[name]["value"].clone()
}

/// User strings reach OpenTofu unchanged: applied (local state, `terraform_data` only), the
/// modules' `tags` outputs and the resources' inputs hold exactly the strings rendered. Then a
/// larger size re-rendered into the same workspace plans as an in-place update.
#[test]
fn user_strings_reach_tofu_literally_and_size_changes_show_in_plan() {
    let input = escaping_input();
    let workdir = Workdir::new(&render_workspace(&input).expect("renders"));
    workdir.init();
    assert_valid(&workdir);
    workdir.ok(&["apply", "-auto-approve", "-input=false", "-no-color"]);

    let want_tags = json!({
        "yunzhang.io/department": DEPARTMENT,
        "yunzhang.io/filing-number": FILING,
        "yunzhang.io/project": PROJECT,
        "yunzhang.io/request": "gx-finance/tax-portal",
        "yunzhang.io/request-uid": "uid-${uuid()}",
    });
    for item in ["web", "db"] {
        let out = output(&workdir, item);
        assert_eq!(out["tags"], want_tags, "module {item}");
    }
    let web = output(&workdir, "web");
    assert_eq!(
        web["names"],
        json!(["gx-finance-tax-portal-web-0", "gx-finance-tax-portal-web-1"])
    );
    assert_eq!(
        output(&workdir, "db")["endpoint"],
        json!("gx-finance-tax-portal-db.rds.nanning-1.internal:3306")
    );

    let state = workdir.json(&["show", "-json", "-no-color"]);
    let mut inputs = 0;
    for module in state["values"]["root_module"]["child_modules"]
        .as_array()
        .expect("child modules")
    {
        for resource in module["resources"].as_array().expect("resources") {
            let values = &resource["values"]["input"];
            assert_eq!(values["sku"], json!(SKU), "{resource:#}");
            assert_eq!(values["tags"], want_tags, "{resource:#}");
            inputs += 1;
        }
    }
    assert_eq!(inputs, 3, "web ×2 and db ×1");

    // A larger disk for web: both instances update in place, nothing else changes.
    let mut bigger = input.clone();
    for item in &mut bigger.items {
        if item.name == "web" {
            item.storage_gi_b = Some(200);
        }
    }
    workdir.write(&render_workspace(&bigger).expect("renders"));
    workdir.ok(&["plan", "-input=false", "-no-color", "-out=change.tfplan"]);
    let plan = workdir.json(&["show", "-json", "-no-color", "change.tfplan"]);
    let mut changes: Vec<(String, Value)> = plan["resource_changes"]
        .as_array()
        .expect("resource changes")
        .iter()
        .map(|c| {
            (
                c["address"].as_str().expect("address").to_owned(),
                c["change"]["actions"].clone(),
            )
        })
        .collect();
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        changes,
        vec![
            (
                "module.db.terraform_data.instance[0]".to_owned(),
                json!(["no-op"])
            ),
            (
                "module.web.terraform_data.instance[0]".to_owned(),
                json!(["update"])
            ),
            (
                "module.web.terraform_data.instance[1]".to_owned(),
                json!(["update"])
            ),
        ]
    );
}

/// The reference modules refuse what the API would refuse, with their own message, should a
/// bad value ever get past admission.
#[test]
fn modules_refuse_out_of_range_sizes() {
    let mut input = example_input(StateBackend::Local);
    input.items.retain(|i| i.name == "web");
    input.items[0].count = 0;
    input.items[0].vcpu = Some(1024);
    let workdir = Workdir::new(&render_workspace(&input).expect("renders"));
    workdir.init();
    let out = workdir.run(&["plan", "-input=false", "-no-color"]);
    assert!(!out.status.success(), "plan must fail");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("instance_count must be a whole number from 1 to 1000."),
        "{stderr}"
    );
    assert!(
        stderr.contains("vcpu must be a whole number from 1 to 512."),
        "{stderr}"
    );
}

/// With the `kubernetes` backend as rendered for the operator, state lands in the Secret
/// `tfstate-default-<secret_suffix>` of the state namespace, and a fresh checkout of the same
/// workspace reads it back: planning again changes nothing. The backend reaches the API server
/// through `KUBE_CONFIG_PATH`, as the local executor will.
#[tokio::test]
async fn state_lives_in_a_secret_in_the_cluster() {
    let kubeconfig = cluster().admin_kubeconfig.clone();
    let namespace = unique("iac-state");
    create_namespace(&namespace).await.expect("state namespace");
    let suffix = unique("tax-portal");
    let mut input = example_input(StateBackend::Kubernetes {
        namespace: namespace.clone(),
        secret_suffix: suffix.clone(),
        config_path: None,
    });
    input.items.retain(|i| i.name == "db");
    let ws = render_workspace(&input).expect("renders");

    let first = Workdir::new(&ws).with_env("KUBE_CONFIG_PATH", &kubeconfig);
    first.ok(&["init", "-input=false", "-no-color"]);
    first.ok(&["apply", "-auto-approve", "-input=false", "-no-color"]);

    let secrets: Api<Secret> = Api::namespaced(admin().await, &namespace);
    let secret = secrets
        .get(&format!("tfstate-default-{suffix}"))
        .await
        .expect("state Secret");
    let labels = secret.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("tfstate").map(String::as_str), Some("true"));
    assert!(
        !first.dir.join("terraform.tfstate").exists(),
        "no local state"
    );

    let second = Workdir::new(&ws).with_env("KUBE_CONFIG_PATH", &kubeconfig);
    second.ok(&["init", "-input=false", "-no-color"]);
    let plan = second.run(&["plan", "-input=false", "-no-color", "-detailed-exitcode"]);
    assert_eq!(
        plan.status.code(),
        Some(0),
        "expected no changes:\n{}\n{}",
        String::from_utf8_lossy(&plan.stdout),
        String::from_utf8_lossy(&plan.stderr)
    );
}

/// The local executor against the local control plane, through one request's life: two plans
/// of the same workspace have the same hash; apply runs the saved plan, keeps state in the
/// cluster and returns the modules' outputs; applying the same hash again applies nothing; a
/// resize plans as in-place updates; an approved plan whose saved file is lost is re-made and
/// applied only because it is the same plan; state altered outside shows as drift, and a plan
/// made before that is refused rather than applied; destroy leaves no resources in state.
#[tokio::test]
async fn local_executor_runs_a_request_through_plan_apply_resize_drift_and_destroy() {
    let kubeconfig = cluster().admin_kubeconfig.clone();
    let namespace = unique("iac-local");
    create_namespace(&namespace).await.expect("state namespace");
    let uid = unique("uid");
    let mut input = example_input(StateBackend::Kubernetes {
        namespace: namespace.clone(),
        secret_suffix: uid.clone(),
        config_path: None,
    });
    input.request.uid = uid.clone();
    let ws = render_workspace(&input).expect("renders");
    let resized = |vcpu: u32| {
        let mut input = input.clone();
        for item in &mut input.items {
            if item.name == "web" {
                item.vcpu = Some(vcpu);
            }
        }
        render_workspace(&input).expect("renders")
    };

    let work_dir = std::env::temp_dir().join(unique("yz-local-executor"));
    let mut config = LocalConfig::new(tofu_binary());
    config.work_dir = work_dir.clone();
    config.modules_dir = Some(repo_root().join("examples/modules"));
    config.kube = KubeAccess::ConfigPath(kubeconfig.clone());
    let executor = LocalExecutor::new(config).expect("local executor");
    let ctx = RunContext::new(input.request.clone());

    // Plan: web ×2 and db ×1 to add; the same workspace plans to the same hash.
    let first = executor.plan(ctx.clone(), ws.clone()).await.expect("plan");
    assert_eq!((first.add, first.change, first.destroy), (3, 0, 0));
    assert_eq!(first.resources.len(), 3, "{:?}", first.resources);
    assert!(first.readable.contains("3 to add"), "{}", first.readable);
    let again = executor.plan(ctx.clone(), ws.clone()).await.expect("plan");
    assert_eq!(
        again.hash, first.hash,
        "same workspace, same state: same plan"
    );

    // Apply: state in the Secret, the modules' outputs returned.
    let applied = executor
        .apply(ctx.clone(), ws.clone(), first.hash.clone())
        .await
        .expect("apply");
    let secrets: Api<Secret> = Api::namespaced(admin().await, &namespace);
    let state_secret = format!("tfstate-default-{uid}");
    let version = |s: Secret| s.metadata.resource_version.expect("resourceVersion");
    let state_version = version(secrets.get(&state_secret).await.expect("state Secret"));
    let db: Value = serde_json::from_str(&applied.outputs["db"]).expect("db output is JSON");
    assert_eq!(
        db["endpoint"],
        json!("gx-finance-tax-portal-db.rds.nanning-1.internal:3306")
    );
    let web: Value = serde_json::from_str(&applied.outputs["web"]).expect("web output is JSON");
    assert_eq!(web["ids"].as_array().map(Vec::len), Some(2), "{web:#}");
    // The modules' generated passwords are sensitive: only in secret_outputs, under
    // `<item>.<output>`, and not in the items' shown outputs.
    let secret_keys: Vec<&str> = applied.secret_outputs.keys().map(String::as_str).collect();
    assert_eq!(secret_keys, ["db.admin_password", "web.initial_password"]);
    for (key, password) in &applied.secret_outputs {
        assert!(
            password.len() == 24 && password.chars().all(|c| c.is_ascii_hexdigit()),
            "{key}: {password:?}"
        );
    }
    assert!(db.get("admin_password").is_none() && web.get("initial_password").is_none());

    // The same hash again (as after a restart mid-run): success, and state untouched.
    let twice = executor
        .apply(ctx.clone(), ws.clone(), first.hash.clone())
        .await
        .expect("second apply of the same plan succeeds");
    assert_eq!(twice, applied);
    assert_eq!(
        version(secrets.get(&state_secret).await.expect("state Secret")),
        state_version,
        "the second apply must not write state"
    );
    assert_eq!(executor.drift(ctx.clone(), ws.clone()).await, Ok(None));

    // Resize web to 8 vCPUs: both instances update in place, before anything is applied.
    let eight = resized(8);
    let resize = executor
        .plan(ctx.clone(), eight.clone())
        .await
        .expect("plan");
    assert_eq!((resize.add, resize.change, resize.destroy), (0, 2, 0));
    assert!(
        resize
            .resources
            .iter()
            .all(|r| r.address.starts_with("module.web.") && r.actions == ["update"]),
        "{:?}",
        resize.resources
    );
    // The saved plan is lost (a new pod, say): the re-made plan has the approved hash, so it
    // is exactly what was approved and is applied.
    std::fs::remove_dir_all(executor.workspace_dir(&ctx)).expect("remove the work dir");
    executor
        .apply(ctx.clone(), eight.clone(), resize.hash.clone())
        .await
        .expect("apply of the re-made plan");
    assert_eq!(executor.drift(ctx.clone(), eight.clone()).await, Ok(None));

    // A plan to 16 vCPUs is made; then state is altered outside (db forgotten).
    let sixteen = resized(16);
    let stale = executor
        .plan(ctx.clone(), sixteen.clone())
        .await
        .expect("plan");
    assert_eq!((stale.add, stale.change, stale.destroy), (0, 2, 0));
    let outside = Workdir::new(&eight).with_env("KUBE_CONFIG_PATH", &kubeconfig);
    outside.ok(&["init", "-input=false", "-no-color"]);
    outside.ok(&["state", "rm", "-no-color", "module.db"]);
    let drift = executor
        .drift(ctx.clone(), eight.clone())
        .await
        .expect("drift plan")
        .expect("drift is found");
    assert_eq!((drift.add, drift.change, drift.destroy), (1, 0, 0));
    assert!(drift.resources[0].address.starts_with("module.db."));
    // The plan made before the change is stale: refused, nothing applied.
    let refused = executor
        .apply(ctx.clone(), sixteen.clone(), stale.hash.clone())
        .await
        .expect_err("a stale plan that differs must not be applied");
    assert!(refused.0.contains("Make a new plan"), "{refused}");
    assert!(refused.0.contains("Nothing was applied"), "{refused}");
    let still = executor
        .drift(ctx.clone(), eight.clone())
        .await
        .expect("drift plan")
        .expect("still drifted");
    assert_eq!((still.add, still.change), (1, 0), "nothing was applied");

    // Destroy: no resources left in state.
    executor
        .destroy(ctx.clone(), eight.clone())
        .await
        .expect("destroy");
    let check = Workdir::new(&eight).with_env("KUBE_CONFIG_PATH", &kubeconfig);
    check.ok(&["init", "-input=false", "-no-color"]);
    assert_eq!(check.ok(&["state", "list", "-no-color"]).trim(), "");
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// Where a test plays the kubelet for the job executor's pods.
struct PodPlayer {
    namespace: String,
    uid: String,
    root: PathBuf,
    sa_dir: PathBuf,
    server: String,
    token: String,
    played: std::sync::Mutex<Vec<String>>,
}

impl PodPlayer {
    /// Waits for the next Job of `kind` for the request, then does what its pod would: the
    /// workspace volume from the ConfigMap, the Job's script and environment with the real
    /// `tofu`, paths moved out of the pod's file system, and the service account's token for
    /// both the report and the kubernetes state backend (instead of the in-cluster config).
    async fn play(&self, kind: &str) -> Job {
        let client = admin().await;
        let jobs: Api<Job> = Api::namespaced(client.clone(), &self.namespace);
        let selector = ListParams::default().labels(&format!(
            "{REQUEST_UID_LABEL}={},{RUN_LABEL}={kind}",
            self.uid
        ));
        let job = loop {
            let played = self.played.lock().expect("lock").clone();
            if let Some(job) = jobs
                .list(&selector)
                .await
                .expect("jobs")
                .items
                .into_iter()
                .find(|j| !played.contains(j.metadata.name.as_ref().expect("name")))
            {
                break job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let name = job.metadata.name.clone().expect("name");
        self.played.lock().expect("lock").push(name.clone());
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod");
        let container = &pod.containers[0];
        let config_maps: Api<ConfigMap> = Api::namespaced(client, &self.namespace);
        let workspace = wait_for(
            &config_maps,
            &format!("{name}-workspace"),
            std::time::Duration::from_secs(30),
            |_| true,
        )
        .await
        .expect("workspace ConfigMap");
        let (workspace_dir, work) = (
            self.root.join(&name).join("workspace"),
            self.root.join(&name).join("work"),
        );
        for dir in [&workspace_dir, &work] {
            std::fs::create_dir_all(dir).expect("dir");
        }
        for (file, content) in workspace.data.iter().flatten() {
            std::fs::write(workspace_dir.join(file), content).expect("workspace file");
        }
        let path = format!(
            "{}:{}",
            tofu_binary().parent().expect("tofu dir").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut sh = tokio::process::Command::new("/bin/sh");
        sh.arg("-c")
            .arg(container.command.as_ref().expect("command")[2].as_str())
            .env_clear();
        for env in container.env.iter().flatten() {
            if env.name != "KUBE_IN_CLUSTER_CONFIG" {
                sh.env(&env.name, env.value.clone().unwrap_or_default());
            }
        }
        // In the pod the backend uses the in-cluster config; here a kubeconfig with the same
        // identity (tofu's backend reads no KUBE_TOKEN without a config file to start from).
        let kubeconfig = work.join("sa.kubeconfig");
        std::fs::write(
            &kubeconfig,
            serde_json::to_string(&json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {
                    "server": self.server,
                    "certificate-authority": self.sa_dir.join("ca.crt"),
                }}],
                "users": [{"name": "u", "user": {"token": self.token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }))
            .expect("kubeconfig"),
        )
        .expect("write kubeconfig");
        let out = sh
            .env("PATH", path)
            .env("HOME", &work)
            .env("TMPDIR", &work)
            .env("TF_CLI_CONFIG_FILE", work.join("tofu.rc"))
            .env("YZ_WORK", &work)
            .env("YZ_WORKSPACE", &workspace_dir)
            .env("YZ_SA_DIR", &self.sa_dir)
            .env("YZ_API", &self.server)
            .env("YZ_MODULES", repo_root().join("examples/modules"))
            .env("KUBE_CONFIG_PATH", &kubeconfig)
            .kill_on_drop(true)
            .output();
        // The pod's activeDeadlineSeconds, here.
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
            .await
            .unwrap_or_else(|_| panic!("the {kind} Job's script did not finish in 120s"))
            .expect("running the Job's script");
        assert!(
            out.status.success(),
            "the {kind} Job's script failed ({}):\n{}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(work.join("log")).unwrap_or_default()
        );
        job
    }
}

/// The job executor on the real API server. There is no kubelet here, so the test checks the
/// Job object (image, service account, limits, deadline, mounts, owner), then does what the
/// pod would ([`PodPlayer`]) with a token of the Job's service account bound only to the Role
/// `docs/iac.md` documents. Plan agrees with the local executor to the hash; apply applies it
/// and returns the outputs; the same apply again applies nothing; destroy empties the state.
#[tokio::test]
async fn job_executor_runs_plan_apply_and_destroy_as_jobs() {
    let client = admin().await;
    let namespace = unique("iac-job");
    create_namespace(&namespace).await.expect("namespace");

    // The request owning the run's objects (a missing owner would be garbage-collected).
    let mut request = example_request();
    request.metadata.namespace = Some(namespace.clone());
    request.metadata.uid = None;
    request.metadata.resource_version = None;
    // No operator runs here, so no webhook records the creator: the creator states it, and
    // the API server's policy checks it is the truth.
    let request: ResourceRequest = serde_json::from_value(
        with_own_identity(&client, &serde_json::to_value(&request).expect("json")).await,
    )
    .expect("request");
    let request = Api::<ResourceRequest>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &request)
        .await
        .expect("request");
    let uid = request.metadata.uid.clone().expect("uid");
    // State in the run namespace, to keep the test's RBAC to one Role.
    let mut input = example_input(StateBackend::Kubernetes {
        namespace: namespace.clone(),
        secret_suffix: uid.clone(),
        config_path: None,
    });
    input.request.namespace = namespace.clone();
    input.request.uid = uid.clone();
    let ws = render_workspace(&input).expect("renders");

    // The pod's service account, with the Role docs/iac.md documents.
    let account = "yunzhang-tofu";
    let pp = PostParams::default();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": account}})).expect("sa");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    accounts.create(&pp, &sa).await.expect("service account");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "yunzhang-tofu"},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets"],
             "verbs": ["get", "list", "create", "update", "patch", "delete"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "list", "create", "update", "delete"]},
        ],
    }))
    .expect("role");
    Api::<Role>::namespaced(client.clone(), &namespace)
        .create(&pp, &role)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "yunzhang-tofu"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "yunzhang-tofu"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }))
    .expect("binding");
    Api::<RoleBinding>::namespaced(client.clone(), &namespace)
        .create(&pp, &binding)
        .await
        .expect("binding");
    let token = accounts
        .create_token_request(
            account,
            &pp,
            &TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![],
                    ..TokenRequestSpec::default()
                },
                ..TokenRequest::default()
            },
        )
        .await
        .expect("token")
        .status
        .expect("token status")
        .token;
    let root = std::env::temp_dir().join(unique("yz-job-pod"));
    let sa_dir = root.join("sa");
    std::fs::create_dir_all(&sa_dir).expect("dir");
    std::fs::write(sa_dir.join("token"), &token).expect("token file");
    std::fs::write(sa_dir.join("namespace"), &namespace).expect("namespace file");
    // The cluster's CA, next to its admin kubeconfig (in YZ_DEV_DIR, `.dev` by default).
    let ca = cluster()
        .admin_kubeconfig
        .with_file_name("pki")
        .join("ca.crt");
    std::fs::copy(ca, sa_dir.join("ca.crt")).expect("ca");
    let kubeconfig = Kubeconfig::read_from(&cluster().admin_kubeconfig).expect("kubeconfig");
    let server = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("server");
    let player = PodPlayer {
        namespace: namespace.clone(),
        uid: uid.clone(),
        root: root.clone(),
        sa_dir,
        server,
        token,
        played: Default::default(),
    };

    let image = "registry.example.gov.cn/yunzhang/tofu:1.10.10";
    let config = JobConfig {
        service_account: Some(account.to_owned()),
        timeout: std::time::Duration::from_secs(120),
        modules_path: Some("/opt/yunzhang/modules".to_owned()),
        poll_interval: std::time::Duration::from_millis(300),
        ..JobConfig::new(image)
    };
    let executor = JobExecutor::new(client.clone(), config);
    let ctx = RunContext::new(input.request.clone());

    // Plan: the Job as created, then its pod played.
    let planning = tokio::spawn(executor.plan(ctx.clone(), ws.clone()));
    let job = player.play("plan").await;
    let name = job.metadata.name.clone().expect("name");
    let owner = &job.metadata.owner_references.as_ref().expect("owned")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ResourceRequest", "tax-portal", uid.as_str())
    );
    let spec = job.spec.as_ref().expect("spec");
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(120));
    let pod = spec.template.spec.as_ref().expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some(account));
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(image));
    assert_eq!(
        container.command.as_ref().map(|c| c[2].as_str()),
        Some(SCRIPT)
    );
    let resources = container.resources.as_ref().expect("resources");
    let quantity = |m: &Option<std::collections::BTreeMap<String, Quantity>>, k: &str| {
        m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    assert_eq!(quantity(&resources.limits, "cpu").as_deref(), Some("1"));
    assert_eq!(
        quantity(&resources.limits, "memory").as_deref(),
        Some("1Gi")
    );
    assert_eq!(
        quantity(&resources.requests, "memory").as_deref(),
        Some("256Mi")
    );
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path == "/workspace")
        .expect("workspace mount");
    assert_eq!(mount.read_only, Some(true));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .expect("workspace volume");
    let workspace_cm = volume
        .config_map
        .as_ref()
        .expect("from a ConfigMap")
        .name
        .clone();
    assert_eq!(workspace_cm, format!("{name}-workspace"));
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let workspace_cm = config_maps
        .get(&workspace_cm)
        .await
        .expect("workspace ConfigMap");
    assert_eq!(workspace_cm.data.as_ref(), Some(&ws.files));
    assert!(workspace_cm.metadata.owner_references.is_some());

    let plan = planning
        .await
        .expect("task")
        .expect("the job executor's plan");
    assert_eq!((plan.add, plan.change, plan.destroy), (3, 0, 0));
    assert!(plan.readable.contains("3 to add"), "{}", plan.readable);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let result = secrets
        .get(&format!("{name}-result"))
        .await
        .expect("result Secret");
    assert!(
        result.metadata.owner_references.is_some(),
        "removed with the request"
    );

    // The local executor plans the same workspace to the same hash.
    let mut local = LocalConfig::new(tofu_binary());
    local.work_dir = root.join("local");
    local.modules_dir = Some(repo_root().join("examples/modules"));
    local.kube = KubeAccess::ConfigPath(cluster().admin_kubeconfig.clone());
    let local_plan = LocalExecutor::new(local)
        .expect("local executor")
        .plan(ctx.clone(), ws.clone())
        .await
        .expect("local plan");
    assert_eq!(local_plan.hash, plan.hash);

    // Apply: the Job re-plans, the executor recognizes the approved plan, the Job applies it.
    let applying = tokio::spawn(executor.apply(ctx.clone(), ws.clone(), plan.hash.clone()));
    player.play("apply").await;
    let applied = applying.await.expect("task").expect("apply");
    let db: Value = serde_json::from_str(&applied.outputs["db"]).expect("db output is JSON");
    assert_eq!(
        db["endpoint"],
        json!(format!(
            "{namespace}-tax-portal-db.rds.nanning-1.internal:3306"
        ))
    );
    let state_secret = format!("tfstate-default-{uid}");
    let state_version = secrets
        .get(&state_secret)
        .await
        .expect("state Secret")
        .metadata
        .resource_version;

    // The same apply again: nothing applied, success, the same outputs.
    let again = tokio::spawn(executor.apply(ctx.clone(), ws.clone(), plan.hash.clone()));
    player.play("apply").await;
    assert_eq!(again.await.expect("task").expect("second apply"), applied);
    assert_eq!(
        secrets
            .get(&state_secret)
            .await
            .expect("state Secret")
            .metadata
            .resource_version,
        state_version,
        "the second apply must not write state"
    );

    // Destroy.
    let destroying = tokio::spawn(executor.destroy(ctx.clone(), ws.clone()));
    player.play("destroy").await;
    destroying.await.expect("task").expect("destroy");
    let check = Workdir::new(&ws).with_env("KUBE_CONFIG_PATH", &cluster().admin_kubeconfig);
    check.ok(&["init", "-input=false", "-no-color"]);
    assert_eq!(check.ok(&["state", "list", "-no-color"]).trim(), "");
    let _ = std::fs::remove_dir_all(&root);
}
