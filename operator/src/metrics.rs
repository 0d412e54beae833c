//! Prometheus metrics of the operator.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The notification endpoint's configured name (never its URL).
    pub endpoint: String,
}

/// The operator's metrics, registered once at start-up.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub reconciliations: Family<KindLabels, Counter>,
    pub failures: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<KindLabels, Histogram>,
    pub leader: Gauge,
    /// Notifications delivered, by endpoint.
    pub notifications_sent: Family<EndpointLabels, Counter>,
    /// Notifications given up on after every attempt failed, by endpoint.
    pub notifications_failed: Family<EndpointLabels, Counter>,
    /// Notifications dropped because the endpoint's queue was full, by endpoint.
    pub notifications_dropped: Family<EndpointLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("yunzhang");
        let reconciliations = Family::<KindLabels, Counter>::default();
        let failures = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0])
        });
        let leader = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations by kind",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciliations by kind and error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let notifications_sent = Family::<EndpointLabels, Counter>::default();
        let notifications_failed = Family::<EndpointLabels, Counter>::default();
        let notifications_dropped = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "notifications_sent",
            "Notifications delivered, by endpoint",
            notifications_sent.clone(),
        );
        registry.register(
            "notifications_failed",
            "Notifications given up on after every attempt failed, by endpoint",
            notifications_failed.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Notifications dropped because the endpoint's queue was full, by endpoint",
            notifications_dropped.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            reconciliations,
            failures,
            reconcile_duration,
            leader,
            notifications_sent,
            notifications_failed,
            notifications_dropped,
        }
    }
}

impl Metrics {
    /// Text exposition format for `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String can't fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
