//! Harness for integration tests against a real local control plane (etcd, kube-apiserver,
//! kube-controller-manager from `hack/cluster-up`). One control plane per test run, started
//! once and shared; every test uses unique names; clients act as real users through client
//! certificates signed by the cluster's CA, so RBAC and admission really apply.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use serde::de::DeserializeOwned;

/// The namespace the operator's ServiceAccount, Lease and Role live in.
pub const OPERATOR_NAMESPACE: &str = "yunzhang-system";
/// The user name of the operator's ServiceAccount, as RBAC sees it.
pub const OPERATOR_USER: &str = "system:serviceaccount:yunzhang-system:yunzhang";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The running control plane this test run shares.
pub struct Cluster {
    pub admin_kubeconfig: PathBuf,
}

/// Start (or reuse) the local control plane and install the CRDs and RBAC, once per process.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let root = repo_root();
        let out = run_script(&root.join("hack/cluster-up"), &[], None).expect("hack/cluster-up");
        let admin_kubeconfig = PathBuf::from(
            out.lines()
                .last()
                .expect("cluster-up prints the kubeconfig path")
                .trim(),
        );
        run_script(&root.join("hack/install"), &[], Some(&admin_kubeconfig)).expect("hack/install");
        Cluster { admin_kubeconfig }
    })
}

fn run_script(script: &Path, args: &[&str], kubeconfig: Option<&Path>) -> anyhow::Result<String> {
    let mut cmd = Command::new(script);
    cmd.args(args).stderr(Stdio::inherit());
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} {:?} failed with {}", script.display(), args, out.status);
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A kubeconfig for `user` in `groups`, with a client certificate signed by the cluster CA.
pub fn kubeconfig_for(user: &str, groups: &[&str]) -> PathBuf {
    cluster();
    let mut args = vec![user];
    args.extend_from_slice(groups);
    let out = run_script(&repo_root().join("hack/user-kubeconfig"), &args, None)
        .expect("hack/user-kubeconfig");
    PathBuf::from(
        out.lines()
            .last()
            .expect("prints the kubeconfig path")
            .trim(),
    )
}

async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("readable kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("valid kubeconfig");
    Client::try_from(config).expect("client")
}

/// A client acting as the cluster admin (system:masters).
pub async fn admin() -> Client {
    client_from(&cluster().admin_kubeconfig).await
}

/// A client acting as `user` in `groups`.
pub async fn client_as(user: &str, groups: &[&str]) -> Client {
    client_from(&kubeconfig_for(user, groups)).await
}

/// Who `client` is, as the API server authenticates it (SelfSubjectReview): the user name and
/// the groups in the API server's order.
pub async fn whoami(client: &Client) -> anyhow::Result<(String, Vec<String>)> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&Default::default(), &SelfSubjectReview::default())
        .await?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .context("SelfSubjectReview without userInfo")?;
    Ok((
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    ))
}

/// `value` (a ResourceRequest, MigrationWorkload or Approval) with the identity annotations set to `client`'s
/// own identity, exactly as the admission webhook would record it. The ValidatingAdmissionPolicies
/// accept a typed identity only when it is the caller's own; tests that create objects while no
/// operator (and so no webhook) runs type it themselves, as a user would.
pub async fn with_own_identity(client: &Client, value: &serde_json::Value) -> serde_json::Value {
    use yunzhang::api::annotations::{APPROVER, APPROVER_GROUPS, REQUESTER, REQUESTER_GROUPS};
    let (user_key, groups_key) = match value["kind"].as_str() {
        Some("ResourceRequest" | "MigrationWorkload") => (REQUESTER, REQUESTER_GROUPS),
        Some("Approval") => (APPROVER, APPROVER_GROUPS),
        _ => return value.clone(),
    };
    let (user, groups) = whoami(client).await.expect("SelfSubjectReview");
    let mut value = value.clone();
    let annotations = &mut value["metadata"]["annotations"];
    if annotations.is_null() {
        *annotations = serde_json::json!({});
    }
    annotations[user_key] = user.into();
    annotations[groups_key] = yunzhang::api::annotations::groups_value(&groups).into();
    value
}

/// A name no other test (or earlier run against the same cluster) uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}{:x}-{n}", std::process::id(), nanos % 0xffff)
}

/// Create a namespace (as admin).
pub async fn create_namespace(name: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
    Api::<Namespace>::all(admin().await)
        .create(&Default::default(), &ns)
        .await?;
    Ok(())
}

/// Wait (up to a minute) until Department `name` says it is Ready for its current generation.
pub async fn ready_department(
    client: &Client,
    name: &str,
) -> anyhow::Result<yunzhang::api::Department> {
    let api: Api<yunzhang::api::Department> = Api::all(client.clone());
    wait_for(&api, name, Duration::from_secs(60), |d| {
        d.status.as_ref().is_some_and(|s| {
            s.observed_generation == d.metadata.generation
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    })
    .await
}

/// Runs `yunzhang ARGS` (the CLI and the kubectl plugin) as `user` in `groups`: (success,
/// stdout, stderr).
pub async fn yunzhang_as(
    user: &str,
    groups: &[&str],
    args: &[&str],
) -> anyhow::Result<(bool, String, String)> {
    let out = tokio::process::Command::new(operator_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig_for(user, groups))
        .output()
        .await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// This quarter in Asia/Shanghai, as `yunzhang report scorecard --quarter` takes it (`2026-Q4`).
pub fn this_quarter() -> String {
    use chrono::Datelike;
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
    format!("{}-Q{}", now.year(), (now.month() - 1) / 3 + 1)
}

/// Poll `get` until `done` holds for the object, or fail after `timeout` showing the last value.
pub async fn wait_for<K, F>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    done: F,
) -> anyhow::Result<K>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match api.get_opt(name).await {
            Ok(Some(obj)) if done(&obj) => return Ok(obj),
            Ok(other) => other.map(|o| format!("{o:#?}")),
            Err(e) => Some(format!("error: {e}")),
        };
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} waiting for {name}; last seen: {}",
                last.unwrap_or_else(|| "nothing".into())
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `yunzhang` binary built by `cargo build` (the Makefile builds it before the tests).
pub fn operator_binary() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("debug/yunzhang");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p yunzhang` (make test does)",
        bin.display()
    );
    bin
}

/// A `yunzhang run` child process acting as the operator's ServiceAccount, so the chart's RBAC is
/// what it gets. Stopped with SIGTERM when dropped.
pub struct OperatorProcess {
    child: Child,
    pub admin_addr: String,
}

/// The loopback port the operator serves its admission webhooks on, where `hack/install` points
/// the webhook configurations: `YZ_WEBHOOK_PORT`, default 19443 (set both the same way).
/// The CA of the API server's webhook client certificate (hack/cluster-up).
pub fn webhook_client_ca() -> PathBuf {
    cluster()
        .admin_kubeconfig
        .parent()
        .expect("the kubeconfig is in the cluster's state dir")
        .join("pki/webhook-client-ca.crt")
}

pub fn webhook_port() -> u16 {
    std::env::var("YZ_WEBHOOK_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(19443)
}

/// The pinned `tofu` (`hack/tool tofu`, built from source into the tool cache on first use).
pub fn tofu_binary() -> &'static Path {
    static TOFU: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    TOFU.get_or_init(|| {
        let out = Command::new(repo_root().join("hack/tool"))
            .arg("tofu")
            .output()
            .expect("running hack/tool tofu");
        assert!(out.status.success(), "hack/tool tofu failed");
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8").trim())
    })
}

impl OperatorProcess {
    /// Start an operator. It contends for the chart's Lease (`yunzhang-operator`), the only one its
    /// Role may update, so one operator at a time leads; a cleanly stopped one releases it.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// Start an operator with extra `yunzhang run` arguments (e.g. a short `--lease-seconds`).
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_env(extra, &[])
    }

    /// Start an operator with extra arguments and environment variables (these override the
    /// harness's own, e.g. `YZ_TOFU_MODULES_DIR`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &Path)]) -> anyhow::Result<Self> {
        let kubeconfig = kubeconfig_for(
            OPERATOR_USER,
            &[
                "system:serviceaccounts",
                "system:serviceaccounts:yunzhang-system",
            ],
        );
        let admin_addr = format!("127.0.0.1:{}", free_port()?);
        let child = Command::new(operator_binary())
            .args([
                "run",
                "--admin-addr",
                &admin_addr,
                "--lease-namespace",
                OPERATOR_NAMESPACE,
                "--webhook-addr",
                &format!("127.0.0.1:{}", webhook_port()),
            ])
            // Admission answers only the API server (hack/cluster-up made its client CA).
            .arg("--webhook-client-ca")
            .arg(webhook_client_ca())
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            // The local OpenTofu executor: the pinned tofu, the reference modules, and a work
            // directory of its own per operator.
            .env("YZ_TOFU", tofu_binary())
            .env("YZ_TOFU_MODULES_DIR", repo_root().join("examples/modules"))
            .env(
                "YZ_TOFU_WORK_DIR",
                std::env::temp_dir().join(format!("yunzhang-tofu-{}", unique("op"))),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(OperatorProcess { child, admin_addr })
    }

    /// GET a path of the admin server; `None` until it answers.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        Self::get(&self.admin_addr, path)
    }

    fn get(addr: &str, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((code, body))
    }

    /// Wait until `/readyz` answers 200: connected, and its admission webhooks serve and are
    /// trusted by the API server (their caBundle is current).
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let addr = self.admin_addr.clone();
            let probe =
                tokio::task::spawn_blocking(move || OperatorProcess::get(&addr, "/readyz")).await?;
            match probe {
                Some((200, _)) => return Ok(()),
                last if Instant::now() > deadline => {
                    bail!("operator not ready after {timeout:?}: {last:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// SIGSTOP: the process is frozen (its watches stay open; what happens meanwhile reaches it
    /// when it is resumed), so a test can change the cluster without the operator reacting.
    /// Keep it short: the Lease runs out after `--lease-seconds`.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`OperatorProcess::pause`].
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    /// SIGKILL: the process dies mid-work, without releasing anything.
    pub fn kill_hard(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Send SIGTERM and wait for the process to exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> anyhow::Result<bool> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                bail!("operator did not stop within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Every object in a YAML file (multi-document), as JSON values.
pub fn read_yaml_documents(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    use serde::Deserialize;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::Value::deserialize(doc)
            .with_context(|| format!("parsing {}", path.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// The documents of an example file (`examples/...`, relative to the repository root) as one run
/// of the suite applies them: the example's tenancy (the `gx` department tree, its namespaces, its
/// provider and price book, every name that is `gx` or starts with `gx-`) renamed to `<run>-gx…`,
/// so a run never meets what an earlier run (or the demo) left under the examples' own names.
/// Everything else (structure, prices, quotas, the request) is applied exactly as written.
pub fn example_documents(path: &str, run: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    fn rename(value: &mut serde_json::Value, run: &str) {
        match value {
            serde_json::Value::String(s) if s == "gx" || s.starts_with("gx-") => {
                *s = format!("{run}-{s}");
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| rename(v, run)),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(|v| rename(v, run)),
            _ => {}
        }
    }
    let mut docs = read_yaml_documents(&repo_root().join(path))?;
    docs.iter_mut().for_each(|d| rename(d, run));
    Ok(docs)
}

/// Server-side apply one object (any kind the API server knows) with `client`.
pub async fn apply_value(
    client: &Client,
    value: &serde_json::Value,
    field_manager: &str,
) -> anyhow::Result<kube::api::DynamicObject> {
    use kube::{
        api::{DynamicObject, GroupVersionKind, Patch, PatchParams},
        discovery,
    };
    let obj: DynamicObject = serde_json::from_value(value.clone())?;
    let types = obj
        .types
        .clone()
        .context("object without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types)?;
    let (ar, caps) = discovery::pinned_kind(client, &gvk).await?;
    let name = obj.metadata.name.clone().context("object without a name")?;
    let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
        (discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        (discovery::Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &ar),
        (discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
    };
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(field_manager).force(),
            &Patch::Apply(value),
        )
        .await?)
}

/// Bind `group` to the approver persona (ClusterRole `yunzhang-approver`) cluster-wide, with a
/// ClusterRoleBinding named like the group: its members may create Approvals.
pub async fn bind_approver_group(admin: &Client, group: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let crb: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": group},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "yunzhang-approver"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
    }))?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&kube::api::PostParams::default(), &crb)
        .await?;
    Ok(())
}
