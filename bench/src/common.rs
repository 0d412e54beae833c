//! What every benchmark shares: the operator process (release build), the API server's request
//! counters, fixtures, statistics and the report files.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, PostParams},
    discovery::ApiResource,
};
use serde_json::{Value, json};
use yunzhang_integration::{OPERATOR_NAMESPACE, OPERATOR_USER, apply_value, kubeconfig_for};

pub const FIELD_MANAGER: &str = "yunzhang-bench";
/// The shared provider (no-op executor), its price book and the two policies.
pub const PROVIDER: &str = "bench";
pub const AUTO_POLICY: &str = "bench-auto";
pub const STAGED_POLICY: &str = "bench-staged";
/// Every benchmark department lists this user as a member; requests are created as them.
pub const MEMBER: &str = "bench-member";
/// The group approving the staged policy's one stage.
pub const HEADS: &str = "bench-heads";
pub const HEAD: &str = "bench-head";

/// `yunzhang run` from the release build, as the operator's ServiceAccount (the chart's RBAC),
/// its log in `log`. Stopped with SIGTERM when dropped.
pub struct Operator {
    child: Child,
    pub admin_addr: String,
}

pub fn operator_binary() -> PathBuf {
    std::env::var_os("YZ_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| yunzhang_integration::repo_root().join("target/release/yunzhang"))
}

impl Operator {
    pub async fn start(log: &Path) -> anyhow::Result<Self> {
        Self::start_with_env(log, &[]).await
    }

    /// [`Operator::start`] with extra environment variables (e.g. the local executor's `YZ_TOFU`).
    pub async fn start_with_env(log: &Path, env: &[(&str, &Path)]) -> anyhow::Result<Self> {
        let kubeconfig = tokio::task::spawn_blocking(|| {
            kubeconfig_for(
                OPERATOR_USER,
                &[
                    "system:serviceaccounts",
                    "system:serviceaccounts:yunzhang-system",
                ],
            )
        })
        .await?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let admin_addr = format!("127.0.0.1:{port}");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(operator_binary())
            .args([
                "run",
                "--admin-addr",
                &admin_addr,
                "--lease-namespace",
                OPERATOR_NAMESPACE,
                "--webhook-addr",
                &format!("127.0.0.1:{}", yunzhang_integration::webhook_port()),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", operator_binary().display()))?;
        let op = Operator { child, admin_addr };
        let deadline = Instant::now() + Duration::from_secs(120);
        // Ready: connected, leading, webhooks served and trusted.
        while op.get("/readyz").map(|(c, _)| c) != Some(200) {
            if Instant::now() > deadline {
                bail!("operator not ready after 120s; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(op)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&self.admin_addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let code = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
        Some((code, body.unwrap_or_default()))
    }

    /// The sum of a counter family in the operator's /metrics (e.g. reconciliations).
    pub fn counter(&self, name: &str) -> f64 {
        let Some((200, body)) = self.get("/metrics") else {
            return f64::NAN;
        };
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The operator's /metrics, verbatim.
    pub fn metrics(&self) -> String {
        self.get("/metrics").map(|(_, b)| b).unwrap_or_default()
    }

    /// (VmRSS, VmHWM) in KiB, from /proc.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} in /proc/pid/status"))?;
            Ok(line.split_whitespace().nth(1).context("value")?.parse()?)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// SIGTERM (releases the Lease), then wait.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// One kind of API request as the API server counts it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKind {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {}/{}", self.verb, group, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        Ok(())
    }
}

impl RequestKind {
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
        )
    }
}

/// `apiserver_request_total` summed over response codes, by verb, group, resource, subresource.
pub async fn apiserver_requests(client: &Client) -> anyhow::Result<BTreeMap<RequestKind, u64>> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let mut kind = RequestKind {
            verb: String::new(),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
        };
        for pair in labels.split("\",") {
            let Some((k, v)) = pair.split_once("=\"") else {
                continue;
            };
            let v = v.trim_end_matches('"').to_owned();
            match k {
                "verb" => kind.verb = v,
                "group" => kind.group = v,
                "resource" => kind.resource = v,
                "subresource" => kind.subresource = v,
                _ => {}
            }
        }
        let n = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        *out.entry(kind).or_default() += n;
    }
    Ok(out)
}

/// `after - before`, only the kinds that changed.
pub fn delta(
    before: &BTreeMap<RequestKind, u64>,
    after: &BTreeMap<RequestKind, u64>,
) -> BTreeMap<RequestKind, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

pub async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    apply_value(client, v, FIELD_MANAGER).await.map(|_| ())
}

/// The provider (no-op executor), its prices and the two policies every benchmark uses.
pub async fn shared_fixtures(admin: &Client) -> anyhow::Result<()> {
    for v in [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudProvider", "metadata": {"name": PROVIDER},
               "spec": {"displayName": "基准云", "region": "nanning-1", "executor": {"type": "noop"},
                        "modules": {"ecs": {"source": "./modules/ecs"}}}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": PROVIDER},
               "spec": {"provider": PROVIDER, "currency": "CNY", "effectiveFrom": "2026-01-01T00:00:00+08:00",
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"}]}}),
        // Every request (¥584.00 a month) passes on its own.
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": AUTO_POLICY},
               "spec": {"autoApprove": {"maxMonthlyCost": "100000.00"},
                        "stages": [{"name": "department", "allowSameDepartment": true,
                                    "approvers": [{"kind": "Group", "name": HEADS}]}]}}),
        // Every request needs the one approval of the head.
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": STAGED_POLICY},
               "spec": {"autoApprove": {"maxMonthlyCost": "1.00"},
                        "stages": [{"name": "department", "allowSameDepartment": true,
                                    "approvers": [{"kind": "Group", "name": HEADS}]}]}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": HEADS},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "yunzhang-approver"},
               "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": HEADS}]}),
    ] {
        apply(admin, &v).await?;
    }
    Ok(())
}

pub fn department(name: &str, policy: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": name},
           "spec": {"displayName": "基准单位", "code": "11450000MB0000000X", "provider": PROVIDER, "approvalPolicy": policy,
                    "admins": [{"kind": "User", "name": HEAD}],
                    "members": [{"kind": "User", "name": MEMBER}]}})
}

/// A department with its namespace (created by the operator, which must run) and a quota room
/// for `requests` requests.
pub async fn department_with_quota(
    admin: &Client,
    name: &str,
    policy: &str,
    requests: usize,
) -> anyhow::Result<()> {
    apply(admin, &department(name, policy)).await?;
    quota_room(admin, name, requests).await
}

/// Once the operator has made the namespace of Department `name`, a quota there with room for
/// `requests` requests.
pub async fn quota_room(admin: &Client, name: &str, requests: usize) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let ns: Api<Namespace> = Api::all(admin.clone());
    yunzhang_integration::wait_for(&ns, name, Duration::from_secs(60), |_| true).await?;
    let n = requests as i64 * 2;
    apply(
        admin,
        &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "base", "namespace": name},
                "spec": {"hard": {"vcpu": n * 4, "instances": n, "monthlyCost": format!("{}.00", n * 1000)}}}),
    )
    .await
}

/// An Approval of `rr` as it is now (its uid, generation, plan hash and stage), as
/// `kubectl yunzhang approve` makes it.
pub fn approval_for(rr: &yunzhang::api::ResourceRequest) -> anyhow::Result<Value> {
    use kube::ResourceExt;
    let name = rr.name_any();
    let st = rr.status.clone().context("status")?;
    Ok(
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Approval",
        "metadata": {"generateName": format!("{name}-"), "namespace": rr.namespace()},
        "spec": {"request": {"name": name, "uid": rr.uid(), "generation": rr.metadata.generation,
                             "planHash": st.plan.as_ref().map(|p| p.hash.clone())},
                 "stage": st.stage.as_ref().map(|s| s.name.clone()).unwrap_or_else(|| "department".into()),
                 "decision": "Approved", "comment": "基准"}}),
    )
}

/// One small request: a 4-vCPU instance at ¥0.80 an hour (¥584.00 a month).
pub fn request(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"purpose": "基准测试", "project": {"code": "GX-2026-017"},
                    "items": [{"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 4, "memoryGiB": 8}]}})
}

pub async fn create_value(client: &Client, v: &Value) -> anyhow::Result<DynamicObject> {
    let obj: DynamicObject = serde_json::from_value(v.clone())?;
    let types = obj.types.clone().context("apiVersion/kind")?;
    let ar = ApiResource::from_gvk(&kube::api::GroupVersionKind::try_from(&types)?);
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let api: Api<DynamicObject> = if ns.is_empty() {
        Api::all_with(client.clone(), &ar)
    } else {
        Api::namespaced_with(client.clone(), &ns, &ar)
    };
    Ok(api.create(&PostParams::default(), &obj).await?)
}

/// Sum of the JSON bytes of every object of `ar` (a paged LIST), and how many there are.
pub async fn json_bytes(client: &Client, ar: &ApiResource) -> anyhow::Result<(u64, u64)> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    let (mut bytes, mut count) = (0u64, 0u64);
    let mut lp = ListParams::default().limit(2000);
    loop {
        let page = api.list(&lp).await?;
        for item in &page.items {
            let mut v = serde_json::to_value(item)?;
            v["apiVersion"] = ar.api_version.clone().into();
            v["kind"] = ar.kind.clone().into();
            bytes += serde_json::to_vec(&v)?.len() as u64;
            count += 1;
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    Ok((bytes, count))
}

/// Median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q`-quantile (nearest rank) of `xs`.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn list(xs: &[f64], digits: usize) -> String {
    xs.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Write `<out>/<name>.json` (the summary row and figures) and `<out>/<name>.md` (its section).
pub fn write_report(out: &Path, name: &str, summary: &Value, section: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_vec_pretty(summary)?,
    )?;
    std::fs::write(out.join(format!("{name}.md")), section)?;
    Ok(())
}

/// Log a progress line to stderr with the time.
pub fn say(msg: impl std::fmt::Display) {
    eprintln!("bench [{}] {msg}", chrono::Utc::now().format("%H:%M:%S"));
}
