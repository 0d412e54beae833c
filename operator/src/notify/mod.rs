//! Webhook notifications on lifecycle events of a ResourceRequest (awaiting approval, approved,
//! rejected, failed, exited), to generic signed JSON receivers, WeCom (企业微信) and DingTalk
//! (钉钉) group robots.
//!
//! - [`message`] (pure): the notification, its formats and signatures;
//! - [`config`] (pure): the endpoints, parsed from the notifications Secret;
//! - this module (I/O): [`Notifier`], whose [`send`](Notifier::send) never blocks. Each endpoint
//!   has a bounded queue and a background worker that delivers with retries (exponential
//!   backoff with jitter); a full queue drops the notification with a warning and a metric, so a
//!   dead endpoint slows neither the caller nor the other endpoints.
//!
//! Logs and metrics name the endpoint, never its URL (robot URLs carry keys) or secret.

pub mod config;
pub mod message;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use config::{ConfigError, Endpoint, Format, NotificationsConfig};
pub use message::{Notification, NotifyEvent, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use crate::metrics::{EndpointLabels, Metrics};

/// Default name of the Secret (in the operator's namespace) holding the configuration.
pub const DEFAULT_SECRET: &str = "yunzhang-notifications";
/// The Secret's key holding the configuration YAML (see [`config::parse`]).
pub const CONFIG_KEY: &str = "config.yaml";

/// How hard the workers try.
#[derive(Clone, Debug)]
pub struct DeliveryPolicy {
    /// Attempts per notification and endpoint, the first included.
    pub attempts: usize,
    /// Delay before the first retry; it doubles up to `max_delay`, plus random jitter.
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Time limit of one attempt (connect and answer).
    pub timeout: Duration,
    /// Notifications waiting per endpoint; beyond this, new ones are dropped.
    pub queue: usize,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            attempts: 5,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            queue: 256,
        }
    }
}

/// Sends notifications to the configured endpoints in the background. Cheap to clone; every
/// clone feeds the same workers, which stop when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Notifier {
    queues: Arc<[Queue]>,
}

struct Queue {
    endpoint: String,
    events: std::collections::BTreeSet<NotifyEvent>,
    tx: mpsc::Sender<Notification>,
    dropped: prometheus_client::metrics::counter::Counter,
}

/// Why the notifications Secret could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name}: no key {CONFIG_KEY}")]
    MissingKey { namespace: String, name: String },
    #[error("Secret {namespace}/{name}, key {CONFIG_KEY}: {source}")]
    Config {
        namespace: String,
        name: String,
        source: ConfigError,
    },
    #[error("building the HTTP client: {0}")]
    Http(String),
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Self {
        Notifier::default()
    }

    /// Whether any endpoint is configured.
    pub fn is_enabled(&self) -> bool {
        !self.queues.is_empty()
    }

    /// Read the configuration from the Secret `namespace/name` (key `config.yaml`) and start one
    /// worker per endpoint. An absent Secret means notifications are off (one info log). Must be
    /// called inside a Tokio runtime.
    pub async fn from_secret(
        client: Client,
        namespace: &str,
        name: &str,
        metrics: &Metrics,
    ) -> Result<Self, NotifyError> {
        let secret = Api::<Secret>::namespaced(client, namespace)
            .get_opt(name)
            .await
            .map_err(|source| NotifyError::Read {
                namespace: namespace.into(),
                name: name.into(),
                source,
            })?;
        let Some(secret) = secret else {
            info!(
                secret = %format!("{namespace}/{name}"),
                "notifications disabled: no such Secret"
            );
            return Ok(Notifier::disabled());
        };
        let yaml = secret
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_KEY))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| NotifyError::MissingKey {
                namespace: namespace.into(),
                name: name.into(),
            })?;
        let config = config::parse(&yaml).map_err(|source| NotifyError::Config {
            namespace: namespace.into(),
            name: name.into(),
            source,
        })?;
        let notifier = Notifier::start(config, DeliveryPolicy::default(), metrics)?;
        info!(
            secret = %format!("{namespace}/{name}"),
            endpoints = notifier.queues.len(),
            "notifications enabled"
        );
        Ok(notifier)
    }

    /// Start one delivery worker per endpoint. Must be called inside a Tokio runtime.
    pub fn start(
        config: NotificationsConfig,
        policy: DeliveryPolicy,
        metrics: &Metrics,
    ) -> Result<Self, NotifyError> {
        crate::run::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(policy.timeout)
            // A webhook that redirects is misconfigured; don't carry signatures elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("yunzhang/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| NotifyError::Http(e.without_url().to_string()))?;
        let mut queues = Vec::with_capacity(config.endpoints.len());
        for endpoint in config.endpoints {
            if endpoint.format == Format::Generic && endpoint.secret.is_none() {
                warn!(endpoint = %endpoint.name, "generic endpoint without secret: messages are not signed");
            }
            let labels = EndpointLabels {
                endpoint: endpoint.name.clone(),
            };
            let (tx, rx) = mpsc::channel(policy.queue.max(1));
            queues.push(Queue {
                endpoint: endpoint.name.clone(),
                events: endpoint.events.clone(),
                tx,
                dropped: metrics.notifications_dropped.get_or_create(&labels).clone(),
            });
            let worker = Worker {
                sent: metrics.notifications_sent.get_or_create(&labels).clone(),
                failed: metrics.notifications_failed.get_or_create(&labels).clone(),
                endpoint,
                http: http.clone(),
                policy: policy.clone(),
            };
            tokio::spawn(worker.run(rx));
        }
        Ok(Notifier {
            queues: queues.into(),
        })
    }

    /// Queue `n` for every endpoint that subscribes to its event, and return at once. When an
    /// endpoint's queue is full the notification is dropped for that endpoint (warning log,
    /// `yunzhang_notifications_dropped_total`).
    pub fn send(&self, n: Notification) {
        for q in self.queues.iter().filter(|q| q.events.contains(&n.event)) {
            if let Err(e) = q.tx.try_send(n.clone()) {
                let reason = match e {
                    mpsc::error::TrySendError::Full(_) => "queue full",
                    mpsc::error::TrySendError::Closed(_) => "worker stopped",
                };
                q.dropped.inc();
                warn!(
                    endpoint = %q.endpoint,
                    event = %n.event,
                    request = %format!("{}/{}", n.namespace, n.name),
                    id = %n.id(),
                    reason,
                    "notification dropped"
                );
            }
        }
    }
}

/// Why one delivery attempt failed. Messages never contain the URL.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Transport(String),
    #[error("robot refused: {0}")]
    Robot(String),
}

impl AttemptError {
    /// Client errors other than timeouts and rate limits won't go away by retrying.
    fn retryable(&self) -> bool {
        match self {
            AttemptError::Status(code) => !(400..500).contains(code) || matches!(code, 408 | 429),
            AttemptError::Transport(_) | AttemptError::Robot(_) => true,
        }
    }
}

struct Worker {
    endpoint: Endpoint,
    http: reqwest::Client,
    policy: DeliveryPolicy,
    sent: prometheus_client::metrics::counter::Counter,
    failed: prometheus_client::metrics::counter::Counter,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Notification>) {
        while let Some(n) = rx.recv().await {
            self.deliver(&n).await;
        }
    }

    async fn deliver(&self, n: &Notification) {
        let body = match self.endpoint.format {
            Format::Generic => message::generic_body(n),
            Format::Wecom => message::wecom_body(n),
            Format::Dingtalk => message::dingtalk_body(n),
        };
        let attempts = AtomicUsize::new(0);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.policy.min_delay)
            .with_max_delay(self.policy.max_delay)
            .with_max_times(self.policy.attempts.saturating_sub(1))
            .with_jitter();
        let result = (|| {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.attempt(&body)
        })
        .retry(backoff)
        .when(AttemptError::retryable)
        .notify(|e, delay| {
            debug!(endpoint = %self.endpoint.name, id = %n.id(), error = %e, ?delay, "notification attempt failed; retrying");
        })
        .await;
        let attempts = attempts.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.sent.inc();
                debug!(endpoint = %self.endpoint.name, event = %n.event, id = %n.id(), attempts, "notification sent");
            }
            Err(e) => {
                self.failed.inc();
                warn!(
                    endpoint = %self.endpoint.name,
                    event = %n.event,
                    request = %format!("{}/{}", n.namespace, n.name),
                    id = %n.id(),
                    attempts,
                    error = %e,
                    "notification given up"
                );
            }
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<(), AttemptError> {
        let now = chrono::Utc::now();
        let url = match (&self.endpoint.format, &self.endpoint.secret) {
            (Format::Dingtalk, Some(secret)) => {
                message::dingtalk_signed_url(&self.endpoint.url, secret, now.timestamp_millis())
            }
            _ => self.endpoint.url.clone(),
        };
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if self.endpoint.format == Format::Generic {
            let ts = now.timestamp();
            request = request.header(TIMESTAMP_HEADER, ts.to_string());
            if let Some(key) = &self.endpoint.secret {
                request = request.header(
                    SIGNATURE_HEADER,
                    message::generic_signature(key.as_bytes(), ts, body),
                );
            }
        }
        let response = request
            .send()
            .await
            .map_err(|e| AttemptError::Transport(error_chain(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(AttemptError::Status(status.as_u16()));
        }
        if self.endpoint.format != Format::Generic {
            let answer = response
                .bytes()
                .await
                .map_err(|e| AttemptError::Transport(error_chain(e)))?;
            if let Some(problem) = message::robot_error(&answer) {
                return Err(AttemptError::Robot(problem));
            }
        }
        Ok(())
    }
}

/// The error and its causes, without the URL (which may carry a key).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
