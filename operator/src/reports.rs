//! Settlement figures from the cluster, for the command line (`yunzhang report settlement`) and
//! the HTTP endpoint (`GET /reports/settlement/{name}`): a finalized report's stored lines, or a
//! settlement computed now from the requests' metering and the PriceBooks, rendered as CSV, JSON
//! or XLSX (`billing::export`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{Api, Client, ResourceExt, api::ListParams};
use rust_decimal::Decimal;

use crate::api::settlement_report::{ChecksumAlgorithm, ReportPhase, Scope};
use crate::api::{Department, PriceBook, ResourceRequest, SettlementReport};
use crate::billing::{
    self, BillingConfig, Period, SettlementLine, SystemClock, archive, checksum_like,
    checksum_with,
    export::{self, SettlementDocument},
};
use crate::controllers::{list_all, settlement::LINES_KEY};

/// Export formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
    Xlsx,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "xlsx" => Some(Format::Xlsx),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }
}

/// Why figures can't be produced.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("SettlementReport {0} does not exist")]
    NotFound(String),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Billing(#[from] billing::BillingError),
    #[error("SettlementReport {report}: {error}")]
    Stored {
        report: String,
        error: archive::ArchiveError,
    },
    #[error("SettlementReport {0} is finalized but its stored lines are not recorded yet")]
    NotStoredYet(String),
    #[error("writing XLSX: {0}")]
    Xlsx(#[from] rust_xlsxwriter::XlsxError),
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// How long the endpoint serves a draft report's figures again before settling anew: a draft is
/// settled from the whole cluster's metering, so at most once a minute per report version (the
/// document's `source` says when its figures were computed).
pub const DRAFT_FRESH_FOR: Duration = Duration::from_secs(60);

/// Draft figures the endpoint computed lately, by report name.
#[derive(Default)]
pub struct DraftCache(Mutex<HashMap<String, CachedDraft>>);

struct CachedDraft {
    /// The report's resourceVersion the figures are for (a changed spec settles again).
    version: Option<String>,
    at: Instant,
    doc: SettlementDocument,
}

impl DraftCache {
    /// The figures of `name` at `version`, if computed within [`DRAFT_FRESH_FOR`].
    fn fresh(&self, name: &str, version: &Option<String>) -> Option<SettlementDocument> {
        let drafts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        drafts
            .get(name)
            .filter(|d| &d.version == version && d.at.elapsed() < DRAFT_FRESH_FOR)
            .map(|d| d.doc.clone())
    }

    /// Keep `doc` as the figures of `name` at `version`, forgetting any that are stale.
    fn keep(&self, name: &str, version: Option<String>, doc: &SettlementDocument) {
        let mut drafts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        drafts.retain(|_, d| d.at.elapsed() < DRAFT_FRESH_FOR);
        drafts.insert(
            name.to_owned(),
            CachedDraft {
                version,
                at: Instant::now(),
                doc: doc.clone(),
            },
        );
    }
}

/// The figures of report `name`: its stored lines when finalized, else settled for its spec
/// (now, or within [`DRAFT_FRESH_FOR`] when `drafts` holds them).
pub async fn of_report(
    client: &Client,
    name: &str,
    drafts: Option<&DraftCache>,
) -> Result<SettlementDocument, ReportError> {
    let report = Api::<SettlementReport>::all(client.clone())
        .get_opt(name)
        .await?
        .ok_or_else(|| ReportError::NotFound(name.to_owned()))?;
    let version = report.resource_version();
    let period = Period::from_spec(&report.spec.period)?;
    match report.status.as_ref() {
        Some(st) if st.phase == Some(ReportPhase::Finalized) => {
            let stored = st
                .stored_lines
                .as_ref()
                .ok_or_else(|| ReportError::NotStoredYet(name.to_owned()))?;
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), &stored.namespace);
            let mut chunks = Vec::with_capacity(stored.config_maps.len());
            for cm in &stored.config_maps {
                let data = api.get(cm).await?.data.unwrap_or_default();
                chunks.push(data.get(LINES_KEY).cloned().unwrap_or_default());
            }
            let lines = archive::decode(&chunks, st.checksum.as_deref()).map_err(|error| {
                ReportError::Stored {
                    report: name.to_owned(),
                    error,
                }
            })?;
            Ok(document(
                &period,
                &report.spec.scope,
                lines,
                format!("finalized report {name}"),
                report.spec.checksum_algorithm,
            ))
        }
        _ => {
            if let Some(doc) = drafts.and_then(|d| d.fresh(name, &version)) {
                return Ok(doc);
            }
            let doc = compute(
                client,
                &period,
                &report.spec.scope,
                report.spec.checksum_algorithm,
            )
            .await?;
            if let Some(d) = drafts {
                d.keep(name, version, &doc);
            }
            Ok(doc)
        }
    }
}

/// Settle `period` for `scope` now, from every request's metering and the PriceBooks.
pub async fn compute(
    client: &Client,
    period: &Period,
    scope: &Scope,
    algorithm: ChecksumAlgorithm,
) -> Result<SettlementDocument, ReportError> {
    let lp = ListParams::default();
    let requests = list_all::<ResourceRequest>(client, &lp).await?;
    let books = list_all::<PriceBook>(client, &lp).await?;
    let settlement = billing::settle_requests(
        &requests,
        &books,
        period,
        scope,
        &BillingConfig::default(),
        &SystemClock,
    )?;
    Ok(SettlementDocument {
        unpriced: settlement.unpriced,
        ..document(
            period,
            scope,
            settlement.lines,
            format!(
                "computed {}",
                Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
            ),
            algorithm,
        )
    })
}

/// A finalized report of exactly `period` over all departments and providers, if there is one.
pub async fn finalized_for(
    client: &Client,
    period: &Period,
) -> Result<Option<String>, ReportError> {
    let reports = Api::<SettlementReport>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(reports
        .items
        .iter()
        .filter(|r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(ReportPhase::Finalized))
                && r.spec.scope == Scope::default()
                && Period::from_spec(&r.spec.period).ok().as_ref() == Some(period)
        })
        .map(|r| r.name_any())
        .min())
}

/// A document over `lines` (canonical order): total and checksum are the lines'.
pub fn document(
    period: &Period,
    scope: &Scope,
    lines: Vec<SettlementLine>,
    source: String,
    algorithm: ChecksumAlgorithm,
) -> SettlementDocument {
    let total: Decimal = lines.iter().map(|l| l.amount).sum();
    SettlementDocument {
        period: period.to_string(),
        departments: scope.departments.clone(),
        providers: scope.providers.clone(),
        total: format!("{total:.2}"),
        currency: "CNY",
        line_count: lines.len(),
        checksum: checksum_with(&lines, algorithm),
        source,
        lines,
        unpriced: Vec::new(),
    }
}

/// Only `department`'s lines (total and checksum recomputed over them).
pub fn for_department(doc: SettlementDocument, department: &str) -> SettlementDocument {
    let lines: Vec<SettlementLine> = doc
        .lines
        .into_iter()
        .filter(|l| *l.department == *department)
        .collect();
    let total: Decimal = lines.iter().map(|l| l.amount).sum();
    let unpriced = doc
        .unpriced
        .into_iter()
        .filter(|u| u.department == department)
        .collect();
    SettlementDocument {
        departments: vec![department.to_owned()],
        unpriced,
        total: format!("{total:.2}"),
        line_count: lines.len(),
        checksum: checksum_like(&lines, &doc.checksum),
        lines,
        ..doc
    }
}

/// Department name → display name (e.g. 自治区财政厅), for the exports.
pub async fn display_names(client: &Client) -> Result<BTreeMap<String, String>, ReportError> {
    let departments = Api::<Department>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(departments
        .items
        .into_iter()
        .map(|d| (d.name_any(), d.spec.display_name))
        .collect())
}

/// The document in `format`.
pub fn render(
    doc: &SettlementDocument,
    format: Format,
    names: &BTreeMap<String, String>,
) -> Result<Vec<u8>, ReportError> {
    Ok(match format {
        Format::Csv => export::to_csv(&doc.lines, names).into_bytes(),
        Format::Json => {
            let mut out = serde_json::to_vec_pretty(doc)?;
            out.push(b'\n');
            out
        }
        Format::Xlsx => export::to_xlsx(&doc.lines, names)?,
    })
}

/// What `GET /reports/settlement/{name}` answers: status code, content type, body.
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl HttpAnswer {
    fn text(status: u16, message: impl Into<String>) -> HttpAnswer {
        let mut body = message.into().into_bytes();
        body.push(b'\n');
        HttpAnswer {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }
}

/// `a=1&b=x%20y` as a map (the last value of a repeated key wins; `+` is a space).
pub fn parse_query(query: &str) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The audience a token must be for to be accepted by the report endpoint (TokenReview): a token
/// made for the API server (or anything else) is not one for yunzhang's reports.
pub const REPORTS_AUDIENCE: &str = "yunzhang";

/// How many exports the endpoint settles at once; more wait their turn (429, try again).
pub const EXPORTS_AT_ONCE: usize = 4;

/// Why `name` can't be a SettlementReport's name (a DNS subdomain), if it can't.
pub fn report_name_refusal(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!(
            "{name:?} is not a SettlementReport name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253"
        )
    })
}

/// `GET /reports/settlement/{name}?format=csv|json|xlsx[&department=X]`, answered as the caller:
///
/// - the report name must be one (400);
/// - the bearer token is authenticated with a TokenReview for the audience [`REPORTS_AUDIENCE`]
///   (none, not authenticated, or for another audience: 401);
/// - the caller may read the whole report when a SubjectAccessReview allows `get` on
///   `settlementreports` `{name}` (finance);
/// - otherwise, with `department=X`, the caller may read X's lines when SubjectAccessReviews
///   allow `list` on `resourcerequests` in every namespace of Department X (its members);
/// - anything else is 403, naming what was missing;
/// - at most [`EXPORTS_AT_ONCE`] are settled at a time (`exports`); beyond, 429;
/// - a draft's figures are settled at most once per [`DRAFT_FRESH_FOR`] (`drafts`).
pub async fn answer_http(
    client: &Client,
    exports: &tokio::sync::Semaphore,
    drafts: &DraftCache,
    name: &str,
    query: &BTreeMap<String, String>,
    authorization: Option<&str>,
) -> HttpAnswer {
    if let Some(refusal) = report_name_refusal(name) {
        return HttpAnswer::text(400, refusal);
    }
    let Some(token) = bearer_token(authorization) else {
        return HttpAnswer::text(
            401,
            "send the caller's Kubernetes token: Authorization: Bearer <token>",
        );
    };
    let format = match query.get("format").map(String::as_str) {
        None => Format::Csv,
        Some(f) => match Format::parse(f) {
            Some(f) => f,
            None => {
                return HttpAnswer::text(400, format!("format={f}: expected csv, json or xlsx"));
            }
        },
    };
    let user = match authenticate(client, token).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            return HttpAnswer::text(
                401,
                format!(
                    "the token is not valid for audience {REPORTS_AUDIENCE} (TokenReview): make one with `kubectl create token SERVICEACCOUNT --audience {REPORTS_AUDIENCE}`"
                ),
            );
        }
        Err(e) => return HttpAnswer::text(503, format!("TokenReview failed: {e}")),
    };
    let department = query.get("department").cloned();
    let whole = access(client, &user, "get", "settlementreports", None, Some(name)).await;
    let allowed = match (whole, &department) {
        (Ok(true), _) => Ok(()),
        (Ok(false), None) => Err(format!(
            "{} may not get settlementreports {name}; department members ask with ?department=<their department>",
            user.username.as_deref().unwrap_or("")
        )),
        (Ok(false), Some(d)) => department_access(client, &user, d).await,
        (Err(e), _) => return HttpAnswer::text(503, format!("SubjectAccessReview failed: {e}")),
    };
    if let Err(why) = allowed {
        return HttpAnswer::text(403, why);
    }
    let Ok(_turn) = exports.try_acquire() else {
        return HttpAnswer::text(
            429,
            format!("{EXPORTS_AT_ONCE} exports are being settled: try again in a moment"),
        );
    };
    let doc = match of_report(client, name, Some(drafts)).await {
        Ok(doc) => doc,
        Err(ReportError::NotFound(n)) => {
            return HttpAnswer::text(404, format!("SettlementReport {n} does not exist"));
        }
        Err(e) => return HttpAnswer::text(500, e.to_string()),
    };
    let doc = match &department {
        Some(d) => for_department(doc, d),
        None => doc,
    };
    let names = display_names(client).await.unwrap_or_default();
    match render(&doc, format, &names) {
        Ok(body) => HttpAnswer {
            status: 200,
            content_type: format.content_type(),
            body,
        },
        Err(e) => HttpAnswer::text(500, e.to_string()),
    }
}

async fn authenticate(
    client: &Client,
    token: &str,
) -> Result<Option<k8s_openapi::api::authentication::v1::UserInfo>, kube::Error> {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: Some(vec![REPORTS_AUDIENCE.to_owned()]),
        },
        ..Default::default()
    };
    let answer = Api::<TokenReview>::all(client.clone())
        .create(&Default::default(), &review)
        .await?;
    Ok(answer
        .status
        .filter(|s| {
            s.authenticated == Some(true)
                && s.audiences
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|a| a == REPORTS_AUDIENCE))
        })
        .and_then(|s| s.user))
}

async fn access(
    client: &Client,
    user: &k8s_openapi::api::authentication::v1::UserInfo,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Result<bool, kube::Error> {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some("yunzhang.io".into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: namespace.map(Into::into),
                name: name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&Default::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Whether `user` may list requests in every namespace of Department `department`.
async fn department_access(
    client: &Client,
    user: &k8s_openapi::api::authentication::v1::UserInfo,
    department: &str,
) -> Result<(), String> {
    let who = user.username.clone().unwrap_or_default();
    let dept = Api::<Department>::all(client.clone())
        .get_opt(department)
        .await
        .map_err(|e| format!("reading Department {department}: {e}"))?
        .ok_or_else(|| format!("Department {department} does not exist"))?;
    let namespaces = dept.owned_namespaces();
    if namespaces.is_empty() {
        return Err(format!("Department {department} has no namespaces"));
    }
    for ns in namespaces {
        match access(client, user, "list", "resourcerequests", Some(&ns), None).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "{who} may not list resourcerequests in namespace {ns} of Department {department}, so may not read its settlement lines"
                ));
            }
            Err(e) => return Err(format!("SubjectAccessReview failed: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(Some("Basic abc")), None);
        assert_eq!(bearer_token(Some("Bearer ")), None);
        assert_eq!(bearer_token(None), None);
    }

    #[test]
    fn report_names_are_checked_before_anything_is_asked() {
        for ok in ["2026-10", "gx.q4", "a"] {
            assert_eq!(report_name_refusal(ok), None, "{ok}");
        }
        for bad in ["", "Report", "-x", "x-", "a/b", "..%2f", &"a".repeat(254)] {
            assert!(report_name_refusal(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn queries() {
        let q = parse_query("format=json&department=gx%2Dfinance&x");
        assert_eq!(q["format"], "json");
        assert_eq!(q["department"], "gx-finance");
        assert_eq!(q["x"], "");
    }
}
