//! Settlement against the real API server: SettlementReports computed and finalized by the
//! operator, the `yunzhang report settlement` exports, and the HTTP endpoint with real bearer
//! tokens (TokenRequest → TokenReview → SubjectAccessReview).
//!
//! # Why the metering is written by hand, and where
//!
//! The lifecycle stamps metering intervals with the real clock, so figures from a live request
//! flow can't be compared with a table computed on paper. The fixture intervals are therefore
//! written straight into `status.billing` of ResourceRequests through the status subresource, as
//! admin, while no operator runs (the requests are created with the admin's own identity, which
//! the identity policy accepts without the webhook). They live in a namespace that belongs to no
//! Department: for such a request the lifecycle only writes `phase: Pending` and a message and
//! keeps the rest of the status as it is (`controllers/lifecycle.rs`, the `observe() == None`
//! branch), so the operator never rewrites the intervals; the test asserts they are intact.
//! Settlement charges an interval to the `department` and `provider` recorded in it, not to the
//! namespace, so the figures are those of a department's real requests. The Departments exist
//! (with namespaces of their own) for the display names in the exports and for the endpoint's
//! department rule.
//!
//! # The fixture table (period Y-10, Asia/Shanghai)
//!
//! The table is written for Y = 2026 and shifted to the fixture's year: the last year that ended
//! before the scenario's today (`YZ_TEST_TODAY`, e.g. `2031-06-30`, else the system date), so its
//! October is always history. The operator's business clock is started at Y-11-20 12:00 (+08:00)
//! (`yunzhang run --clock`), the instant the budget checks need: whatever the date, they run.
//!
//! PriceBook `<p>-old` from Y-01-01 until Y-10-16 00:00: ecs.c2.large 0.80/hour; `<p>-new`
//! from Y-10-16 00:00: ecs.c2.large 1.00/hour. Both: rds.mysql.4c16g 1800.00/month and a 10 %
//! discount for department A.
//!
//! | request | item | interval (+08:00) | line(s) in October | amount |
//! |---|---|---|---|---|
//! | r1 (A) | web ×2 | 10-15 00:00 → 10-17 00:00 | 24 h × 2 × 0.80 × 0.9; 24 h × 2 × 1.00 × 0.9 (price change) | 34.56; 43.20 |
//! | r2 (A) | db ×1 | 10-25 00:00 → 11-05 00:00 | 1800 × 7/31 × 0.9 = 365.806… (November is outside) | 365.81 |
//! | r3 (B) | web ×1 | 09-30 20:00 → 10-01 10:00 | 10 h × 0.80 (September is outside) | 8.00 |
//! | r4 (B) | web ×3 | 10-31 23:30 → open | 0.5 h × 3 × 1.00 (charged to the period's end) | 1.50 |
//!
//! Total 453.07; A 443.57, B 9.50; ecs 87.26, rds 365.81; 5 lines.
//!
//! Budget of A in Y (the operator's clock, at Y-11-20, decides the year): r1 77.76, r2 365.81 in October
//! and 1800 × 4/30 × 0.9 = 216.00 in November: spent 659.57. Against 800.00 that is 82.45 %
//! (the 80 % alert); against 600.00, 109.93 % (the 100 % alert too).

use std::{process::Command, time::Duration};

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use yunzhang::api::{ResourceRequest, SettlementReport, settlement_report::ReportPhase};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);

struct Fixture {
    provider: String,
    dept_a: String,
    dept_b: String,
    /// Where the metered requests live: no Department's namespace.
    meter_ns: String,
    /// The year of the fixture's October (see the module's doc).
    year: i32,
}

async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    apply_value(client, v, "yunzhang-tests").await.map(|_| ())
}

fn interval(
    (item, ty, sku): (&str, &str, &str),
    qty: &str,
    from: &str,
    to: Option<&str>,
    (dept, provider): (&str, &str),
) -> Value {
    let mut v = json!({"item": item, "type": ty, "sku": sku, "quantity": qty, "from": from,
                       "department": dept, "provider": provider});
    if let Some(to) = to {
        v["to"] = to.into();
    }
    v
}

/// The scenario's today: `YZ_TEST_TODAY` (a date, `YYYY-MM-DD`), else the system date.
fn today() -> chrono::NaiveDate {
    std::env::var("YZ_TEST_TODAY")
        .ok()
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse()
                .expect("YZ_TEST_TODAY is a date such as 2031-06-30")
        })
        .unwrap_or_else(|| chrono::Utc::now().date_naive())
}

impl Fixture {
    /// `text`, written for the reference year 2026, in the fixture's year.
    fn dated(&self, text: &str) -> String {
        text.replace("2026-", &format!("{}-", self.year))
    }

    /// The period of the fixture's October, e.g. `2030-10`.
    fn period(&self) -> String {
        format!("{}-10", self.year)
    }

    /// The instant the operator's business clock starts at: 20 November of the fixture's year.
    fn clock(&self) -> String {
        format!("{}-11-20T12:00:00+08:00", self.year)
    }
}

async fn fixture(admin: &Client) -> anyhow::Result<Fixture> {
    use chrono::Datelike;
    let base = unique("st");
    let f = Fixture {
        provider: format!("{base}-cloud"),
        dept_a: format!("{base}-a"),
        dept_b: format!("{base}-b"),
        meter_ns: format!("{base}-meter"),
        year: today().year() - 1,
    };
    let p = &f.provider;
    let discount = json!([{"department": f.dept_a, "percent": "10"}]);
    for v in [
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": format!("{p}-old")},
               "spec": {"provider": p, "currency": "CNY", "effectiveFrom": f.dated("2026-01-01T00:00:00+08:00"),
                        "effectiveUntil": f.dated("2026-10-16T00:00:00+08:00"), "discounts": discount,
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "0.80"},
                                  {"sku": "rds.mysql.4c16g", "unit": "month", "price": "1800.00"}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "PriceBook", "metadata": {"name": format!("{p}-new")},
               "spec": {"provider": p, "currency": "CNY", "effectiveFrom": f.dated("2026-10-16T00:00:00+08:00"),
                        "discounts": discount,
                        "items": [{"sku": "ecs.c2.large", "unit": "hour", "price": "1.00"},
                                  {"sku": "rds.mysql.4c16g", "unit": "month", "price": "1800.00"}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": f.dept_a},
               "spec": {"displayName": "自治区财政厅", "code": "11450000MB0000001X",
                        "budget": {"annual": "800.00"},
                        "namespaces": [format!("{}-ns", f.dept_a)],
                        "members": [{"kind": "User", "name": format!("system:serviceaccount:{}:member", f.meter_ns)}]}}),
        json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": f.dept_b},
               "spec": {"displayName": "南宁市大数据发展局", "code": "11450100MB0000002X",
                        "namespaces": [format!("{}-ns", f.dept_b)]}}),
    ] {
        apply(admin, &v).await?;
    }
    create_namespace(&f.meter_ns).await?;

    let (a, b) = (&f.dept_a, &f.dept_b);
    const WEB: (&str, &str, &str) = ("web", "ecs", "ecs.c2.large");
    const DB: (&str, &str, &str) = ("db", "rds", "rds.mysql.4c16g");
    let (a, b) = ((a.as_str(), p.as_str()), (b.as_str(), p.as_str()));
    let requests = [
        (
            "r1",
            interval(
                WEB,
                "2",
                &f.dated("2026-10-15T00:00:00+08:00"),
                Some(&f.dated("2026-10-17T00:00:00+08:00")),
                a,
            ),
        ),
        (
            "r2",
            interval(
                DB,
                "1",
                &f.dated("2026-10-25T00:00:00+08:00"),
                Some(&f.dated("2026-11-05T00:00:00+08:00")),
                a,
            ),
        ),
        (
            "r3",
            interval(
                WEB,
                "1",
                &f.dated("2026-09-30T20:00:00+08:00"),
                Some(&f.dated("2026-10-01T10:00:00+08:00")),
                b,
            ),
        ),
        (
            "r4",
            interval(WEB, "3", &f.dated("2026-10-31T23:30:00+08:00"), None, b),
        ),
    ];
    let api: Api<ResourceRequest> = Api::namespaced(admin.clone(), &f.meter_ns);
    for (name, billing) in requests {
        let rr = with_own_identity(admin, &json!({
            "apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
            "metadata": {"name": name, "namespace": f.meter_ns},
            "spec": {"purpose": "结算测试", "items": [
                {"name": "web", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 4, "memoryGiB": 8}]}})).await;
        api.create(&PostParams::default(), &serde_json::from_value(rr)?)
            .await?;
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"billing": [billing]}})),
        )
        .await
        .with_context(|| format!("writing status.billing of {name}"))?;
    }
    Ok(f)
}

/// The five canonical lines of the fixture table, in canonical order (see `billing::settlement`).
fn expected_canonical(f: &Fixture) -> String {
    let (a, b, p, ns) = (&f.dept_a, &f.dept_b, &f.provider, &f.meter_ns);
    let lines = [
        format!("{a}|{p}|{ns}/r1|web|ecs.c2.large|ecs|2026-10-14T16:00:00Z|2026-10-15T16:00:00Z|2.00|0.80|hour|10.00|34.56\n"),
        format!("{a}|{p}|{ns}/r1|web|ecs.c2.large|ecs|2026-10-15T16:00:00Z|2026-10-16T16:00:00Z|2.00|1.00|hour|10.00|43.20\n"),
        format!("{a}|{p}|{ns}/r2|db|rds.mysql.4c16g|rds|2026-10-24T16:00:00Z|2026-10-31T16:00:00Z|1.00|1800.00|month|10.00|365.81\n"),
        format!("{b}|{p}|{ns}/r3|web|ecs.c2.large|ecs|2026-09-30T16:00:00Z|2026-10-01T02:00:00Z|1.00|0.80|hour|0.00|8.00\n"),
        format!("{b}|{p}|{ns}/r4|web|ecs.c2.large|ecs|2026-10-31T15:30:00Z|2026-10-31T16:00:00Z|3.00|1.00|hour|0.00|1.50\n"),
    ]
    .concat();
    f.dated(&lines)
}

fn subtotals(v: &[yunzhang::api::settlement_report::Subtotal]) -> Vec<(String, String)> {
    v.iter()
        .map(|s| (s.key.clone(), s.amount.0.clone()))
        .collect()
}

fn report(name: &str, f: &Fixture, finalize: bool) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "SettlementReport", "metadata": {"name": name},
           "spec": {"period": {"month": f.period()}, "scope": {"providers": [f.provider]}, "finalize": finalize}})
}

/// Create report `name` and wait until its status says `phase`.
async fn create_report(
    admin: &Client,
    reports: &Api<SettlementReport>,
    (name, f): (&str, &Fixture),
    phase: ReportPhase,
) -> anyhow::Result<SettlementReport> {
    apply(admin, &report(name, f, phase == ReportPhase::Finalized)).await?;
    wait_for(reports, name, WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.phase == Some(phase))
    })
    .await
}

/// `yunzhang report settlement ARGS` with `kubeconfig`, on the fixture's clock (as the
/// operator's: an open interval is charged up to the same instant); stdout.
fn cli(f: &Fixture, kubeconfig: &std::path::Path, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = Command::new(operator_binary())
        .args(["report", "settlement"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("YZ_CLOCK", f.clock())
        .output()?;
    ensure!(
        out.status.success(),
        "yunzhang report settlement {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

/// The SM3 digest of `data` in hex, by OpenSSL (an implementation independent of ours).
fn openssl_sm3(data: &[u8]) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sm3", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("openssl (for SM3)")?;
    child.stdin.take().context("stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "openssl dgst -sm3 failed");
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// The report endpoint: served over TLS beside the admission webhooks, trusted through the
/// operator's own CA (the Secret `yunzhang-webhook-tls`).
#[derive(Clone)]
struct Endpoint {
    base: String,
    ca: std::path::PathBuf,
}

async fn report_endpoint(admin: &Client) -> anyhow::Result<Endpoint> {
    let secret =
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), "yunzhang-system")
            .get("yunzhang-webhook-tls")
            .await?;
    let ca = secret
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .context("ca.crt in yunzhang-webhook-tls")?;
    let path = std::env::temp_dir().join(unique("yunzhang-ca"));
    std::fs::write(&path, ca.0)?;
    Ok(Endpoint {
        base: format!("https://127.0.0.1:{}", webhook_port()),
        ca: path,
    })
}

/// GET `path` from the report endpoint (curl, verifying the server against the operator's CA)
/// with an optional bearer token: (status, body).
fn http_get(
    endpoint: &Endpoint,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let body = std::env::temp_dir().join(unique("yunzhang-body"));
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&endpoint.ca)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"]);
    if let Some(t) = token {
        curl.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = curl.arg(format!("{}{path}", endpoint.base)).output()?;
    ensure!(
        out.status.success(),
        "curl {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = String::from_utf8(out.stdout)?.trim().parse()?;
    let bytes = std::fs::read(&body).unwrap_or_default();
    let _ = std::fs::remove_file(&body);
    Ok((code, bytes))
}

/// GET until the answer is 200 (RBAC bindings and the Department's RoleBinding take a moment),
/// or WAIT passes; the last answer.
async fn get_until_ok(
    endpoint: &Endpoint,
    path: String,
    token: &str,
) -> anyhow::Result<(u16, Vec<u8>)> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (endpoint, path2, token) = (endpoint.clone(), path.clone(), token.to_owned());
        let got = tokio::task::spawn_blocking(move || http_get(&endpoint, &path2, Some(&token)))
            .await??;
        if got.0 == 200 || std::time::Instant::now() > deadline {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn token_for(admin: &Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}}))?,
    )
    .await?;
    let tr = sas
        .create_token_request(
            name,
            &PostParams::default(),
            &serde_json::from_value(
                json!({"spec": {"audiences": [yunzhang::reports::REPORTS_AUDIENCE]}}),
            )?,
        )
        .await?;
    tr.status
        .map(|s| s.token)
        .context("TokenRequest without a token")
}

fn as_json(body: &[u8]) -> anyhow::Result<Value> {
    serde_json::from_slice(body).with_context(|| String::from_utf8_lossy(body).to_string())
}

/// Everything that needs the operator runs in this one test (one operator at a time).
#[tokio::test]
async fn settlement_reports_exports_and_the_endpoint() -> anyhow::Result<()> {
    let admin = admin().await;
    let f = fixture(&admin).await?;
    let expected_checksum = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(expected_canonical(&f).as_bytes()))
    );

    let operator = OperatorProcess::start_with(&["--clock", &f.clock()])?;
    operator.wait_ready(WAIT).await?;
    let reports: Api<SettlementReport> = Api::all(admin.clone());

    // --- Computed: figures equal the hand-computed table. ---
    let open = format!("{}-open", f.provider);
    let computed = create_report(&admin, &reports, (&open, &f), ReportPhase::Computed).await?;
    let st = computed.status.clone().unwrap_or_default();
    assert_eq!(st.total.as_ref().map(|m| m.0.as_str()), Some("453.07"));
    assert_eq!(st.lines, Some(5));
    assert_eq!(
        subtotals(&st.by_department),
        vec![
            (f.dept_a.clone(), "443.57".into()),
            (f.dept_b.clone(), "9.50".into())
        ]
    );
    assert_eq!(
        subtotals(&st.by_provider),
        vec![(f.provider.clone(), "453.07".into())]
    );
    assert_eq!(
        subtotals(&st.by_type),
        vec![
            ("ecs".into(), "87.26".into()),
            ("rds".into(), "365.81".into())
        ]
    );
    assert_eq!(
        st.checksum.as_deref(),
        Some(expected_checksum.as_str()),
        "checksum over the hand-written canonical lines"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // The lifecycle kept the hand-written intervals (it only marks the requests Pending).
    let rrs: Api<ResourceRequest> = Api::namespaced(admin.clone(), &f.meter_ns);
    let r4 = wait_for(&rrs, "r4", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.phase.is_some())
    })
    .await?;
    let billing = r4.status.unwrap_or_default().billing;
    assert_eq!(billing.len(), 1);
    assert_eq!(billing[0].from, f.dated("2026-10-31T23:30:00+08:00"));

    // Recomputing yields the same checksum: a second report of the same spec, and the first
    // one after a request changes (which re-triggers it).
    let again = format!("{}-again", f.provider);
    let second = create_report(&admin, &reports, (&again, &f), ReportPhase::Computed).await?;
    assert_eq!(
        second.status.and_then(|s| s.checksum),
        Some(expected_checksum.clone())
    );
    rrs.patch(
        "r1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first = reports.get(&open).await?;
    assert_eq!(
        first.status.and_then(|s| s.checksum),
        Some(expected_checksum.clone())
    );

    // --- Budgets: A's spend this year against its annual budget, each alert once. ---
    {
        let depts: Api<yunzhang::api::Department> = Api::all(admin.clone());
        let alerted = |want: Vec<u32>| {
            move |d: &yunzhang::api::Department| {
                d.status
                    .as_ref()
                    .and_then(|s| s.budget.as_ref())
                    .is_some_and(|b| b.alerted == want)
            }
        };
        let d = wait_for(&depts, &f.dept_a, WAIT, alerted(vec![80])).await?;
        let b = d.status.and_then(|s| s.budget).context("budget")?;
        assert_eq!(
            (b.year, b.spent.0.as_str(), b.percent.as_str()),
            (f.year, "659.57", "82.45")
        );
        depts
            .patch(
                &f.dept_a,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"budget": {"annual": "600.00"}}})),
            )
            .await?;
        let d = wait_for(&depts, &f.dept_a, WAIT, alerted(vec![80, 100])).await?;
        assert_eq!(
            d.status.and_then(|s| s.budget).map(|b| b.percent),
            Some("109.93".into())
        );
        // Exactly one Event per threshold, whatever the reconciles in between.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let events = Api::<k8s_openapi::api::events::v1::Event>::all(admin.clone())
            .list(&ListParams::default())
            .await?;
        let mut notes: Vec<String> = events
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("BudgetThreshold"))
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(f.dept_a.as_str())
            })
            .filter_map(|e| e.note.clone())
            .collect();
        notes.sort();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0].contains("reached 100%") && notes[1].contains("reached 80%"),
            "{notes:?}"
        );
    }

    // --- Exports from the cluster, as finance (the persona's ClusterRole, and its Role in the
    // operator's namespace for the stored lines), through a client certificate. ---
    let finance_user = format!("{}-finance", f.provider);
    let finance_subjects = json!([
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": finance_user},
        {"kind": "ServiceAccount", "name": "finance", "namespace": f.meter_ns}]);
    apply(&admin, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{}-finance", f.provider)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "yunzhang-finance-viewer"},
        "subjects": finance_subjects})).await?;
    apply(&admin, &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{}-finance", f.provider), "namespace": OPERATOR_NAMESPACE},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "yunzhang-finance-viewer"},
        "subjects": finance_subjects})).await?;
    let finance_kubeconfig = kubeconfig_for(&finance_user, &[]);
    let csv = cli(
        &f,
        &finance_kubeconfig,
        &[
            "--period",
            &f.period(),
            "--provider",
            &f.provider,
            "--format",
            "csv",
        ],
    )?;
    assert!(
        csv.starts_with("\u{feff}".as_bytes()),
        "CSV starts with a BOM"
    );
    let csv = String::from_utf8(csv)?;
    let rows: Vec<&str> = csv.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(rows[0], yunzhang::billing::export::COLUMNS.join(","));
    assert_eq!(rows.len(), 6, "{csv}");
    assert!(
        rows[1].starts_with(&format!(
            "{},自治区财政厅,{},{}/r1,web,",
            f.dept_a, f.provider, f.meter_ns
        )),
        "{}",
        rows[1]
    );
    let amounts: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.rsplit(',').next().unwrap_or(""))
        .collect();
    assert_eq!(amounts, ["34.56", "43.20", "365.81", "8.00", "1.50"]);

    let json_out = as_json(&cli(
        &f,
        &finance_kubeconfig,
        &[
            "--period",
            &f.period(),
            "--provider",
            &f.provider,
            "--format",
            "json",
            "--department",
            &f.dept_b,
        ],
    )?)?;
    assert_eq!(json_out["total"], "9.50");
    assert_eq!(json_out["lineCount"], 2);

    let xlsx_path = std::env::temp_dir().join(format!("{}.xlsx", f.provider));
    cli(
        &f,
        &finance_kubeconfig,
        &[
            "--period",
            &f.period(),
            "--provider",
            &f.provider,
            "--format",
            "xlsx",
            "--output",
            xlsx_path.to_str().context("path")?,
        ],
    )?;
    {
        use calamine::{Data, Reader, Xlsx, open_workbook};
        let mut book: Xlsx<_> = open_workbook(&xlsx_path)?;
        let sheet = book.worksheet_range("Settlement")?;
        let rows: Vec<Vec<Data>> = sheet.rows().map(|r| r.to_vec()).collect();
        assert_eq!(rows.len(), 7, "header, 5 lines, total");
        assert_eq!(rows[1][1], Data::String("自治区财政厅".into()));
        assert_eq!(rows[3][13], Data::Float(365.81));
        assert_eq!(rows[6][0], Data::String("total".into()));
        assert_eq!(rows[6][13], Data::Float(453.07));
    }
    let _ = std::fs::remove_file(&xlsx_path);

    // --- Finalize: lines kept in owned ConfigMaps; the spec is frozen. ---
    let fin = format!("{}-final", f.provider);
    let finalized = create_report(&admin, &reports, (&fin, &f), ReportPhase::Finalized).await?;
    let st = finalized.status.clone().unwrap_or_default();
    assert_eq!(st.checksum.as_deref(), Some(expected_checksum.as_str()));
    let stored = st.stored_lines.clone().context("storedLines")?;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &stored.namespace);
    for name in &stored.config_maps {
        let cm = cms.get(name).await?;
        let owners = cm.metadata.owner_references.unwrap_or_default();
        ensure!(
            owners
                .iter()
                .any(|o| o.kind == "SettlementReport" && o.name == fin),
            "{name} owned by the report"
        );
    }
    let refused = reports
        .patch(
            &fin,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"period": {"month": format!("{}-09", f.year)}}})),
        )
        .await;
    match refused {
        Err(kube::Error::Api(s))
            if s.code == 422
                && s.message
                    .contains("a finalized SettlementReport can't be changed") => {}
        other => bail!("changing a finalized report: expected a CEL refusal, got {other:?}"),
    }

    // --- SM3 (国密) as the checksum: checked against OpenSSL's SM3 of the same canonical lines,
    // and the export of the finalized report carries it. ---
    let sm3_name = format!("{}-sm3", f.provider);
    let mut sm3_report = report(&sm3_name, &f, true);
    sm3_report["spec"]["checksumAlgorithm"] = json!("sm3");
    apply(&admin, &sm3_report).await?;
    let sm3_report = wait_for(&reports, &sm3_name, WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(ReportPhase::Finalized))
    })
    .await?;
    let expected_sm3 = format!("sm3:{}", openssl_sm3(expected_canonical(&f).as_bytes())?);
    assert_eq!(
        sm3_report.status.and_then(|s| s.checksum),
        Some(expected_sm3.clone())
    );
    let doc = as_json(&cli(
        &f,
        &finance_kubeconfig,
        &["--report", &sm3_name, "--format", "json"],
    )?)?;
    assert_eq!(
        doc["checksum"], expected_sm3,
        "read back and verified with SM3"
    );

    // --- The HTTP endpoint with real tokens. ---
    let finance = token_for(&admin, &f.meter_ns, "finance").await?;
    let member = token_for(&admin, &f.meter_ns, "member").await?;
    let addr = report_endpoint(&admin).await?;
    let path = format!("/reports/settlement/{fin}");
    let get = |path: String, token: Option<String>| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || http_get(&addr, &path, token.as_deref()))
    };
    let (code, _) = get(path.clone(), None).await??;
    assert_eq!(code, 401, "no token");
    let (code, _) = get(path.clone(), Some("not-a-token".into())).await??;
    assert_eq!(code, 401, "a token the API server doesn't know");
    // finance's own account, but a token made for the API server, not for yunzhang's reports.
    let for_the_api_server = Api::<ServiceAccount>::namespaced(admin.clone(), &f.meter_ns)
        .create_token_request(
            "finance",
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"audiences": []}}))?,
        )
        .await?
        .status
        .map(|s| s.token)
        .context("TokenRequest without a token")?;
    let (code, body) = get(path.clone(), Some(for_the_api_server)).await??;
    assert_eq!(code, 401, "a token for another audience");
    assert!(
        String::from_utf8_lossy(&body).contains("--audience yunzhang"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (code, _) = get("/reports/settlement/..%2Fetc".into(), Some(finance.clone())).await??;
    assert_eq!(code, 400, "a name that can't be a report's");
    // RBAC bindings take effect at once, the member's RoleBinding once the Department
    // controller made it: poll.
    let (code, body) = get_until_ok(&addr, format!("{path}?format=json"), &finance).await?;
    assert_eq!(code, 200, "finance: {}", String::from_utf8_lossy(&body));
    let doc = as_json(&body)?;
    assert_eq!(doc["total"], "453.07");
    assert_eq!(doc["checksum"], expected_checksum);
    assert_eq!(doc["source"], format!("finalized report {fin}"));
    let (code, body) = get(format!("{path}?format=csv"), Some(finance.clone())).await??;
    assert_eq!(code, 200);
    assert!(body.starts_with("\u{feff}".as_bytes()));

    let (code, body) = get(
        format!("{path}?format=json&department={}", f.dept_b),
        Some(member.clone()),
    )
    .await??;
    assert_eq!(
        code,
        403,
        "a member of A asking for B: {}",
        String::from_utf8_lossy(&body)
    );
    let (code, _) = get(format!("{path}?format=json"), Some(member.clone())).await??;
    assert_eq!(code, 403, "a member asking for the whole report");
    let (code, body) = get_until_ok(
        &addr,
        format!("{path}?format=json&department={}", f.dept_a),
        &member,
    )
    .await?;
    assert_eq!(
        code,
        200,
        "a member of A asking for A: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(as_json(&body)?["total"], "443.57");

    // --- The finalized lines survive the deletion of the requests. ---
    for name in ["r1", "r2", "r3", "r4"] {
        rrs.delete(name, &DeleteParams::default()).await?;
    }
    let deadline = std::time::Instant::now() + WAIT;
    while !rrs.list(&ListParams::default()).await?.items.is_empty() {
        ensure!(std::time::Instant::now() < deadline, "requests not deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let kept = as_json(&cli(
        &f,
        &finance_kubeconfig,
        &["--report", &fin, "--format", "json"],
    )?)?;
    assert_eq!(kept["total"], "453.07");
    assert_eq!(kept["lineCount"], 5);
    assert_eq!(kept["checksum"], expected_checksum);
    // An open report follows the requests: now there is nothing to charge.
    wait_for(&reports, &open, WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.lines == Some(0))
    })
    .await?;
    assert!(operator_terminated(operator)?);
    Ok(())
}

fn operator_terminated(mut operator: OperatorProcess) -> anyhow::Result<bool> {
    operator.terminate()
}
