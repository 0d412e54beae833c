//! Delivery against real local HTTP receivers (axum on 127.0.0.1), with short backoff.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};

use super::*;

fn policy() -> DeliveryPolicy {
    DeliveryPolicy {
        attempts: 4,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        timeout: Duration::from_secs(2),
        queue: 8,
    }
}

fn notification(event: NotifyEvent) -> Notification {
    Notification {
        event,
        ..message::tests::sample()
    }
}

fn endpoint(name: &str, format: Format, url: String, secret: Option<&str>) -> Endpoint {
    Endpoint {
        name: name.into(),
        format,
        url,
        secret: secret.map(str::to_owned),
        events: NotifyEvent::ALL.into_iter().collect(),
    }
}

/// What a receiver saw: (headers, body, query) per request.
type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes, Option<String>)>>>;

#[derive(Clone)]
struct Receiver {
    seen: Seen,
    /// Answer 503 to this many requests before succeeding.
    failures_left: Arc<Mutex<u32>>,
    /// What a successful answer says (robots answer `{"errcode":0}`).
    ok_body: &'static str,
}

/// Serve a receiver on a free loopback port; returns its URL.
async fn serve(receiver: Receiver) -> String {
    async fn hook(
        State(r): State<Receiver>,
        uri: axum::http::Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, &'static str) {
        r.seen
            .lock()
            .unwrap()
            .push((headers, body, uri.query().map(str::to_owned)));
        let mut left = r.failures_left.lock().unwrap();
        if *left > 0 {
            *left -= 1;
            return (StatusCode::SERVICE_UNAVAILABLE, "down");
        }
        (StatusCode::OK, r.ok_body)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

fn receiver(failures: u32, ok_body: &'static str) -> Receiver {
    Receiver {
        seen: Arc::default(),
        failures_left: Arc::new(Mutex::new(failures)),
        ok_body,
    }
}

/// A notifier for `endpoints` with its own metrics.
fn start(endpoints: Vec<Endpoint>, policy: DeliveryPolicy) -> (Notifier, Metrics) {
    let metrics = Metrics::default();
    let notifier = Notifier::start(NotificationsConfig { endpoints }, policy, &metrics).unwrap();
    (notifier, metrics)
}

fn labels(name: &str) -> EndpointLabels {
    EndpointLabels {
        endpoint: name.into(),
    }
}

/// Wait (bounded) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn generic_message_arrives_signed_and_verifies() {
    let r = receiver(0, "");
    let url = serve(r.clone()).await;
    let (notifier, metrics) = start(
        vec![endpoint("audit", Format::Generic, url, Some("s3cret"))],
        policy(),
    );
    let n = notification(NotifyEvent::AwaitingApproval);
    notifier.send(n.clone());
    let sent = metrics.notifications_sent.get_or_create(&labels("audit"));
    eventually("delivery", || sent.get() == 1).await;

    let seen = r.seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (headers, body, _) = &seen[0];
    let ts = headers[TIMESTAMP_HEADER].to_str().unwrap();
    let sig = headers[SIGNATURE_HEADER].to_str().unwrap();
    assert!(message::verify_generic_signature(b"s3cret", ts, body, sig));
    assert!(!message::verify_generic_signature(b"wrong", ts, body, sig));
    assert_eq!(headers["content-type"], "application/json");
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["id"], n.id());
    assert_eq!(json["event"], "awaiting-approval");
    assert_eq!(json["monthlyEstimate"], "12345.60");
}

#[tokio::test]
async fn a_receiver_failing_twice_gets_it_on_the_third_attempt() {
    let r = receiver(2, "");
    let url = serve(r.clone()).await;
    let (notifier, metrics) = start(
        vec![endpoint("flaky", Format::Generic, url, Some("k"))],
        policy(),
    );
    let n = notification(NotifyEvent::Approved);
    notifier.send(n.clone());
    let sent = metrics.notifications_sent.get_or_create(&labels("flaky"));
    eventually("delivery after retries", || sent.get() == 1).await;
    let seen = r.seen.lock().unwrap();
    assert_eq!(seen.len(), 3, "two failures, then success");
    let ids: Vec<serde_json::Value> = seen
        .iter()
        .map(|(_, b, _)| serde_json::from_slice::<serde_json::Value>(b).unwrap()["id"].clone())
        .collect();
    assert!(
        ids.iter().all(|id| *id == n.id()),
        "retries carry the same id"
    );
    assert_eq!(
        metrics
            .notifications_failed
            .get_or_create(&labels("flaky"))
            .get(),
        0
    );
}

#[tokio::test]
async fn a_dead_endpoint_never_blocks_the_caller() {
    // A port nobody listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut p = policy();
    p.queue = 2;
    let dead = endpoint(
        "dead",
        Format::Generic,
        format!("http://127.0.0.1:{port}/hook"),
        None,
    );
    let (notifier, metrics) = start(vec![dead], p);
    // `send` is not async: it returns without waiting for any delivery. Far more than the queue
    // holds are accepted or dropped, never waited for.
    for _ in 0..20 {
        notifier.send(notification(NotifyEvent::Failed));
    }
    let dropped = metrics
        .notifications_dropped
        .get_or_create(&labels("dead"))
        .get();
    assert!(
        dropped >= 17,
        "only the queue (2) and the one in flight are kept: {dropped}"
    );
    let failed = metrics.notifications_failed.get_or_create(&labels("dead"));
    eventually("the worker to give up on every queued one", || {
        failed.get() + dropped == 20
    })
    .await;
    assert_eq!(
        metrics
            .notifications_sent
            .get_or_create(&labels("dead"))
            .get(),
        0
    );
}

#[tokio::test]
async fn robots_get_markdown_and_their_errors_are_retried() {
    let wecom = receiver(0, r#"{"errcode":0,"errmsg":"ok"}"#);
    let ding = receiver(0, r#"{"errcode":310000,"errmsg":"sign not match"}"#);
    let wecom_url = serve(wecom.clone()).await;
    let ding_url = serve(ding.clone()).await;
    let mut only_rejected = endpoint(
        "ding",
        Format::Dingtalk,
        format!("{ding_url}?access_token=t"),
        Some("SECx"),
    );
    only_rejected.events = [NotifyEvent::Rejected].into();
    let wecom_endpoint = endpoint("wecom", Format::Wecom, format!("{wecom_url}?key=k"), None);
    let (notifier, metrics) = start(vec![wecom_endpoint, only_rejected], policy());
    notifier.send(notification(NotifyEvent::AwaitingApproval));
    notifier.send(notification(NotifyEvent::Rejected));
    let wecom_sent = metrics.notifications_sent.get_or_create(&labels("wecom"));
    let ding_failed = metrics.notifications_failed.get_or_create(&labels("ding"));
    eventually("wecom deliveries", || wecom_sent.get() == 2).await;
    eventually("dingtalk giving up", || ding_failed.get() == 1).await;

    let seen = wecom.seen.lock().unwrap();
    let first: serde_json::Value = serde_json::from_slice(&seen[0].1).unwrap();
    assert_eq!(first["msgtype"], "markdown");
    assert!(seen[0].0.get(SIGNATURE_HEADER).is_none());

    let seen = ding.seen.lock().unwrap();
    assert_eq!(seen.len(), 4, "only the rejected one, every attempt used");
    let query = seen[0].2.clone().unwrap();
    let ts: i64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("timestamp="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(query.starts_with("access_token=t&timestamp="));
    assert!(query.ends_with(&format!("&sign={}", message::dingtalk_sign("SECx", ts))));
}

#[tokio::test]
async fn disabled_notifier_accepts_and_drops_silently() {
    let n = Notifier::disabled();
    assert!(!n.is_enabled());
    n.send(notification(NotifyEvent::Exited));
}
