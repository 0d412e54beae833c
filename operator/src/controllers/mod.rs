//! Controllers: thin shells that read, call the pure core, and write with server-side apply.

pub mod status;

use std::sync::Arc;

use kube::{Client, runtime::events::Recorder};

use crate::metrics::Metrics;

/// The one field manager for everything the operator writes.
pub const FIELD_MANAGER: &str = "yunzhang-operator";

/// What every reconcile gets: the client, the event recorder and the metrics. No globals.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
}

pub type SharedContext = Arc<Context>;

/// Errors of a reconcile, each with a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serializing status: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize(_) => "serialize",
        }
    }
}
