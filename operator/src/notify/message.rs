//! Pure: what a notification says, in each format, and how it is signed. No I/O here; the
//! delivery worker in [`super`] only sends what these functions return.

use std::fmt::Write as _;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{Phase, ResourceRequest};

/// A lifecycle event of a ResourceRequest that endpoints can subscribe to. Written in
/// kebab-case in the configuration (`events: [awaiting-approval, rejected]`) and in the generic
/// JSON body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyEvent {
    /// The request waits for an approver (a new stage began).
    AwaitingApproval,
    /// Every stage approved; provisioning starts.
    Approved,
    /// An approver rejected the request.
    Rejected,
    /// Provisioning (or a change, or exit) failed.
    Failed,
    /// Resources destroyed, quota released, billing closed.
    Exited,
    /// A Department's spend this year reached 80 % or 100 % of its annual budget (once each).
    BudgetThreshold,
}

impl NotifyEvent {
    /// Every event, in lifecycle order.
    pub const ALL: [NotifyEvent; 6] = [
        NotifyEvent::AwaitingApproval,
        NotifyEvent::Approved,
        NotifyEvent::Rejected,
        NotifyEvent::Failed,
        NotifyEvent::Exited,
        NotifyEvent::BudgetThreshold,
    ];

    /// The event a phase transition announces, if any: entering AwaitingApproval, Rejected,
    /// Failed or Exited announces that; AwaitingApproval → Provisioning announces Approved. A
    /// new stage within AwaitingApproval is not a transition: send `AwaitingApproval` for it.
    pub fn on_transition(from: Option<Phase>, to: Phase) -> Option<NotifyEvent> {
        match (from, to) {
            (Some(f), t) if f == t => None,
            (_, Phase::AwaitingApproval) => Some(NotifyEvent::AwaitingApproval),
            (Some(Phase::AwaitingApproval), Phase::Provisioning) => Some(NotifyEvent::Approved),
            (_, Phase::Rejected) => Some(NotifyEvent::Rejected),
            (_, Phase::Failed) => Some(NotifyEvent::Failed),
            (_, Phase::Exited) => Some(NotifyEvent::Exited),
            _ => None,
        }
    }

    /// The configuration / JSON spelling, e.g. `awaiting-approval`.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::AwaitingApproval => "awaiting-approval",
            NotifyEvent::Approved => "approved",
            NotifyEvent::Rejected => "rejected",
            NotifyEvent::Failed => "failed",
            NotifyEvent::Exited => "exited",
            NotifyEvent::BudgetThreshold => "budget-threshold",
        }
    }

    /// The headline a person reads in a chat group.
    fn title(self) -> &'static str {
        match self {
            NotifyEvent::AwaitingApproval => "待审批 Awaiting approval",
            NotifyEvent::Approved => "已批准 Approved",
            NotifyEvent::Rejected => "已驳回 Rejected",
            NotifyEvent::Failed => "失败 Failed",
            NotifyEvent::Exited => "已退出 Exited",
            NotifyEvent::BudgetThreshold => "预算预警 Budget threshold",
        }
    }

    /// WeCom markdown colours: `info` green, `warning` orange, `comment` grey.
    fn wecom_colour(self) -> &'static str {
        match self {
            NotifyEvent::Approved | NotifyEvent::Exited => "info",
            NotifyEvent::Rejected | NotifyEvent::Failed | NotifyEvent::BudgetThreshold => "warning",
            NotifyEvent::AwaitingApproval => "comment",
        }
    }
}

impl std::fmt::Display for NotifyEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification about one ResourceRequest. The generic JSON body is this struct in
/// camelCase plus an `id` (see [`Notification::id`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub event: NotifyEvent,
    pub namespace: String,
    pub name: String,
    /// The request's phase when the event happened, e.g. `AwaitingApproval`.
    pub phase: String,
    /// A human-readable explanation (the request's `status.message`, or what happened).
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filing_number: Option<String>,
    /// Estimated monthly cost in CNY, a decimal string such as `"1234.56"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monthly_estimate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// When the event happened. Pass the transition's own time (not the time of sending), so a
    /// notification sent again after a restart keeps its [`id`](Notification::id).
    pub at: DateTime<Utc>,
}

impl Notification {
    /// A notification about `request` built from its status (phase, message, filing number,
    /// estimate, requester).
    pub fn for_request(event: NotifyEvent, request: &ResourceRequest, at: DateTime<Utc>) -> Self {
        let status = request.status.clone().unwrap_or_default();
        Notification {
            event,
            namespace: request.metadata.namespace.clone().unwrap_or_default(),
            name: request.metadata.name.clone().unwrap_or_default(),
            phase: status.phase.unwrap_or_default().to_string(),
            message: status.message.unwrap_or_default(),
            filing_number: status.filing_number,
            monthly_estimate: status.estimate.map(|e| e.monthly.0),
            requester: status.requester,
            at,
        }
    }

    /// A Department reached `threshold` % of its annual budget: `name` is the Department,
    /// `namespace` is empty, `phase` is the threshold (e.g. `80%`), `at` when it was noticed.
    pub fn for_budget(
        department: &str,
        threshold: u32,
        budget: &crate::api::department::BudgetStatus,
        at: DateTime<Utc>,
    ) -> Self {
        Notification {
            event: NotifyEvent::BudgetThreshold,
            namespace: String::new(),
            name: department.to_owned(),
            phase: format!("{threshold}%"),
            message: format!(
                "{year} spend ¥{spent} is {percent}% of the annual budget ¥{annual}",
                year = budget.year,
                spent = budget.spent.0,
                percent = budget.percent,
                annual = budget.annual.0
            ),
            filing_number: None,
            monthly_estimate: None,
            requester: None,
            at,
        }
    }

    /// A stable id for receivers to de-duplicate retries: the first 32 hex digits of SHA-256
    /// over event, namespace, name, phase and `at`. Every attempt (and a re-send of the same
    /// transition) carries the same id.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.event.as_str(),
            &self.namespace,
            &self.name,
            &self.phase,
            &self.at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(&h.finalize()[..16])
    }

    /// The lines a person reads, shared by the WeCom and DingTalk formats.
    fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = if self.event == NotifyEvent::BudgetThreshold {
            vec![
                ("单位 Department", self.name.clone()),
                ("阈值 Threshold", self.phase.clone()),
            ]
        } else {
            vec![
                ("申请 Request", format!("{}/{}", self.namespace, self.name)),
                ("阶段 Phase", self.phase.clone()),
            ]
        };
        if !self.message.is_empty() {
            facts.push(("说明 Message", self.message.clone()));
        }
        if let Some(f) = &self.filing_number {
            facts.push(("备案号 Filing number", f.clone()));
        }
        if let Some(m) = &self.monthly_estimate {
            facts.push(("月度预估 Monthly estimate", format!("¥{m}")));
        }
        if let Some(r) = &self.requester {
            facts.push(("申请人 Requester", r.clone()));
        }
        let local = self.at.with_timezone(&chrono_tz::Asia::Shanghai);
        facts.push((
            "时间 Time",
            local.format("%Y-%m-%d %H:%M:%S (UTC+8)").to_string(),
        ));
        facts
    }
}

/// The generic JSON body: the notification in camelCase with its `id` first.
pub fn generic_body(n: &Notification) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        id: String,
        #[serde(flatten)]
        notification: &'a Notification,
    }
    // Serializing plain strings, enums and a timestamp to JSON can't fail.
    serde_json::to_vec(&Body {
        id: n.id(),
        notification: n,
    })
    .unwrap_or_default()
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so new_from_slice can't fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Header carrying the signature of a generic notification.
pub const SIGNATURE_HEADER: &str = "X-Yunzhang-Signature";
/// Header carrying the Unix time (seconds) the signature was made at.
pub const TIMESTAMP_HEADER: &str = "X-Yunzhang-Timestamp";

/// The `X-Yunzhang-Signature` value of a generic notification:
/// `sha256=<hex of HMAC-SHA256(key, timestamp + "." + body)>`. A receiver recomputes it over
/// the `X-Yunzhang-Timestamp` header and the raw body, compares in constant time, and refuses
/// timestamps too far from its clock (e.g. more than 5 minutes) to stop replays.
pub fn generic_signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut signed = Vec::with_capacity(body.len() + 24);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("sha256={}", hex::encode(hmac_sha256(key, &signed)))
}

/// Check a generic signature as a receiver does (constant-time comparison).
pub fn verify_generic_signature(key: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_mac) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn markdown_lines(n: &Notification, out: &mut String) {
    for (label, value) in n.facts() {
        // One fact per line; a newline inside a value would start markdown of its own.
        let value = value.replace(['\r', '\n'], " ");
        let _ = writeln!(out, "> {label}: {value}");
    }
}

/// A WeCom (企业微信) group robot markdown message.
pub fn wecom_body(n: &Notification) -> Vec<u8> {
    let mut content = format!(
        "**云长 yunzhang: <font color=\"{}\">{}</font>**\n",
        n.event.wecom_colour(),
        n.event.title()
    );
    markdown_lines(n, &mut content);
    serde_json::to_vec(&serde_json::json!({
        "msgtype": "markdown",
        "markdown": {"content": content.trim_end()},
    }))
    .unwrap_or_default()
}

/// A DingTalk (钉钉) robot markdown message.
pub fn dingtalk_body(n: &Notification) -> Vec<u8> {
    let title = format!("云长 yunzhang: {}", n.event.title());
    let mut text = format!("#### {title}\n\n");
    // DingTalk markdown needs a blank line between quoted lines to keep them apart.
    let mut lines = String::new();
    markdown_lines(n, &mut lines);
    text.push_str(&lines.lines().collect::<Vec<_>>().join("\n\n"));
    serde_json::to_vec(&serde_json::json!({
        "msgtype": "markdown",
        "markdown": {"title": title, "text": text},
    }))
    .unwrap_or_default()
}

/// DingTalk's `sign`: base64 of HMAC-SHA256(secret, timestamp + "\n" + secret), URL-encoded,
/// with `timestamp` in milliseconds.
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let string_to_sign = format!("{timestamp_ms}\n{secret}");
    let mac = hmac_sha256(secret.as_bytes(), string_to_sign.as_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(mac);
    percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The DingTalk robot URL with `timestamp` and `sign` appended (the URL already carries
/// `access_token`).
pub fn dingtalk_signed_url(url: &str, secret: &str, timestamp_ms: i64) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{sep}timestamp={timestamp_ms}&sign={}",
        dingtalk_sign(secret, timestamp_ms)
    )
}

/// WeCom and DingTalk answer HTTP 200 with `{"errcode": N, "errmsg": ...}`; only 0 is success.
pub fn robot_error(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Answer {
        errcode: i64,
        #[serde(default)]
        errmsg: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) if a.errcode == 0 => None,
        Ok(a) => Some(format!("errcode {}: {}", a.errcode, a.errmsg)),
        Err(_) => Some("answer is not the robot's {errcode, errmsg} JSON".into()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The notification the format tests (and the delivery tests) use.
    pub(in crate::notify) fn sample() -> Notification {
        Notification {
            event: NotifyEvent::AwaitingApproval,
            namespace: "gx-finance".into(),
            name: "tax-portal".into(),
            phase: "AwaitingApproval".into(),
            message: "stage finance (2 of 3)".into(),
            filing_number: None,
            monthly_estimate: Some("12345.60".into()),
            requester: Some("alice".into()),
            at: Utc.with_ymd_and_hms(2026, 3, 1, 2, 3, 4).unwrap(),
        }
    }

    /// RFC 4231 test cases 1 and 2.
    #[test]
    fn hmac_sha256_known_answers() {
        assert_eq!(
            hex::encode(hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// Expected value computed independently (Python's hmac module):
    /// `hmac.new(b"key", b"1700000000.{\"a\":1}", sha256).hexdigest()`.
    #[test]
    fn generic_signature_known_answer_and_verification() {
        let sig = generic_signature(b"key", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        assert!(verify_generic_signature(
            b"key",
            "1700000000",
            br#"{"a":1}"#,
            &sig
        ));
        assert!(!verify_generic_signature(
            b"key",
            "1700000001",
            br#"{"a":1}"#,
            &sig
        ));
        assert!(!verify_generic_signature(
            b"other",
            "1700000000",
            br#"{"a":1}"#,
            &sig
        ));
        assert!(!verify_generic_signature(
            b"key",
            "1700000000",
            br#"{"a":1}"#,
            "md5=00"
        ));
    }

    /// DingTalk's documented algorithm, computed independently (Python):
    /// `quote_plus(b64encode(hmac.new(b"SECtest", b"<timestamp>\nSECtest", sha256).digest()))`.
    #[test]
    fn dingtalk_sign_known_answer() {
        assert_eq!(
            dingtalk_sign("SECtest", 1_700_000_000_000),
            "aZLLrriXgn05YbwaGR7knYsLeJADjr9NwLaNNKpxh4g%3D"
        );
        // `+`, `/` and `=` of base64 are all escaped, as quote_plus does.
        assert_eq!(
            dingtalk_sign("SECtest", 1_700_000_000_001),
            "r4CWp%2FDz%2BNg0sbTjH1vB0Fr%2BuQ2fn831mssaN6%2FC05I%3D"
        );
        assert_eq!(
            dingtalk_signed_url(
                "https://oapi.dingtalk.com/robot/send?access_token=abc",
                "SECtest",
                1_700_000_000_000
            ),
            format!(
                "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1700000000000&sign={}",
                dingtalk_sign("SECtest", 1_700_000_000_000)
            )
        );
    }

    #[test]
    fn generic_body_is_camel_case_with_a_stable_id() {
        let n = sample();
        let body: serde_json::Value = serde_json::from_slice(&generic_body(&n)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "id": n.id(),
                "event": "awaiting-approval",
                "namespace": "gx-finance",
                "name": "tax-portal",
                "phase": "AwaitingApproval",
                "message": "stage finance (2 of 3)",
                "monthlyEstimate": "12345.60",
                "requester": "alice",
                "at": "2026-03-01T02:03:04Z",
            })
        );
        assert_eq!(n.id().len(), 32);
        assert_eq!(n.id(), sample().id(), "same transition, same id");
        let mut later = sample();
        later.event = NotifyEvent::Approved;
        assert_ne!(later.id(), n.id());
    }

    #[test]
    fn wecom_markdown() {
        let body: serde_json::Value = serde_json::from_slice(&wecom_body(&sample())).unwrap();
        assert_eq!(body["msgtype"], "markdown");
        assert_eq!(
            body["markdown"]["content"],
            "**云长 yunzhang: <font color=\"comment\">待审批 Awaiting approval</font>**\n\
             > 申请 Request: gx-finance/tax-portal\n\
             > 阶段 Phase: AwaitingApproval\n\
             > 说明 Message: stage finance (2 of 3)\n\
             > 月度预估 Monthly estimate: ¥12345.60\n\
             > 申请人 Requester: alice\n\
             > 时间 Time: 2026-03-01 10:03:04 (UTC+8)"
        );
    }

    #[test]
    fn dingtalk_markdown_keeps_values_on_their_line() {
        let mut n = sample();
        n.event = NotifyEvent::Failed;
        n.message = "apply failed\n# injected heading".into();
        n.filing_number = Some("YZ-2026-000123".into());
        let body: serde_json::Value = serde_json::from_slice(&dingtalk_body(&n)).unwrap();
        assert_eq!(body["msgtype"], "markdown");
        assert_eq!(body["markdown"]["title"], "云长 yunzhang: 失败 Failed");
        assert_eq!(
            body["markdown"]["text"],
            "#### 云长 yunzhang: 失败 Failed\n\n\
             > 申请 Request: gx-finance/tax-portal\n\n\
             > 阶段 Phase: AwaitingApproval\n\n\
             > 说明 Message: apply failed # injected heading\n\n\
             > 备案号 Filing number: YZ-2026-000123\n\n\
             > 月度预估 Monthly estimate: ¥12345.60\n\n\
             > 申请人 Requester: alice\n\n\
             > 时间 Time: 2026-03-01 10:03:04 (UTC+8)"
        );
    }

    #[test]
    fn transitions_that_notify() {
        use Phase::*;
        let ev = NotifyEvent::on_transition;
        assert_eq!(
            ev(Some(Pending), AwaitingApproval),
            Some(NotifyEvent::AwaitingApproval)
        );
        assert_eq!(
            ev(Some(Changing), AwaitingApproval),
            Some(NotifyEvent::AwaitingApproval)
        );
        assert_eq!(
            ev(Some(AwaitingApproval), Provisioning),
            Some(NotifyEvent::Approved)
        );
        assert_eq!(
            ev(Some(AwaitingApproval), Rejected),
            Some(NotifyEvent::Rejected)
        );
        assert_eq!(ev(Some(Provisioning), Failed), Some(NotifyEvent::Failed));
        assert_eq!(ev(Some(Exiting), Exited), Some(NotifyEvent::Exited));
        assert_eq!(ev(Some(Provisioning), Active), None);
        assert_eq!(ev(Some(Failed), Failed), None);
        assert_eq!(ev(None, Pending), None);
    }

    #[test]
    fn robot_answers() {
        assert_eq!(robot_error(br#"{"errcode":0,"errmsg":"ok"}"#), None);
        assert_eq!(
            robot_error(br#"{"errcode":310000,"errmsg":"sign not match"}"#).as_deref(),
            Some("errcode 310000: sign not match")
        );
        assert!(robot_error(b"<html>").is_some());
    }

    #[test]
    fn notification_from_a_request() {
        use crate::api::{ResourceRequestStatus, resource_request::Estimate};
        let mut rr: ResourceRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
            "metadata": {"name": "tax-portal", "namespace": "gx-finance"},
            "spec": {"purpose": "x", "classification": "internal", "items": []}
        }))
        .unwrap();
        rr.status = Some(ResourceRequestStatus {
            phase: Some(crate::api::Phase::Rejected),
            message: Some("rejected by bob".into()),
            requester: Some("alice".into()),
            estimate: Some(Estimate {
                monthly: "10.00".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let n = Notification::for_request(NotifyEvent::Rejected, &rr, sample().at);
        assert_eq!(n.phase, "Rejected");
        assert_eq!(n.namespace, "gx-finance");
        assert_eq!(n.monthly_estimate.as_deref(), Some("10.00"));
        assert_eq!(n.requester.as_deref(), Some("alice"));
        assert_eq!(n.message, "rejected by bob");
    }
}
