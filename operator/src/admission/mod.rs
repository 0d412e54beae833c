//! Admission: who created a ResourceRequest or an Approval comes from the API server, and an
//! Approval is judged when it is created.
//!
//! - [`identity`] (pure): the mutating webhook `identity.yunzhang.io` records the authenticated
//!   user of a CREATE in the identity annotations ([`crate::api::annotations`]). Its
//!   `failurePolicy` is `Ignore`: the security boundary is the chart's ValidatingAdmissionPolicy
//!   `yunzhang-identity`, enforced by the API server itself, which refuses any identity that is
//!   not the authenticated user's (or is missing) on CREATE, and any change on UPDATE. With the
//!   operator down, nobody can forge an identity; users wait, or type their own.
//! - [`approval`] (pure): the validating webhook `approvals.yunzhang.io` (`failurePolicy: Fail`)
//!   judges a new Approval against the request as it is now: uid, generation, four eyes,
//!   separation of departments, and once there is a plan, its hash, the stage and its approvers.
//! - [`price_book`] (pure): the validating webhook `pricebooks.yunzhang.io` (`failurePolicy:
//!   Ignore`) refuses a PriceBook that would overlap another book of its provider for one of its
//!   SKUs, naming the other book, the SKU and the window. A conflict that gets in anyway (books
//!   created at the same instant, no operator answering) is shown on both books and leaves only
//!   those SKUs unpriced over the common window (`controllers::price_book`, `billing::prices`).
//! - [`migration_workload`] (pure): the validating webhook `migrationworkloads.yunzhang.io`
//!   (`failurePolicy: Ignore`) refuses a workload whose hooks name a HookTemplate that doesn't
//!   exist or pass parameters it doesn't take (or leave out one it requires). The controller
//!   checks again when a hook is due, so a workload that got in without the webhook still runs
//!   only what a template allows.
//! - [`tls`]: the CA and serving certificate, shared by all replicas through a Secret.
//! - [`server`]: the HTTPS server, the handlers, and the keeper of the configurations' `caBundle`.
//!
//! Every replica serves the webhooks, leader or not: admission must not wait for an election.

pub mod approval;
pub mod identity;
pub mod migration_workload;
pub mod price_book;
pub mod server;
pub mod tls;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::Client;
use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

/// Options of the webhook server (flags of `yunzhang run`).
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Address of the HTTPS admission webhook server (every replica serves it).
    #[arg(long, env = "YZ_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,
    /// Name of the Service in front of the webhook, for the serving certificate's DNS names
    /// (`<service>.<namespace>.svc`, ...).
    #[arg(long, env = "YZ_WEBHOOK_SERVICE", default_value = "yunzhang")]
    pub webhook_service: String,
    /// PEM file of the CA that issued the API server's webhook client certificate (its
    /// AdmissionConfiguration's kubeconfig). Set, the admission webhooks answer only a client
    /// with a certificate from it; unset, anyone who reaches the port (a warning says so).
    #[arg(long, env = "YZ_WEBHOOK_CLIENT_CA")]
    pub webhook_client_ca: Option<std::path::PathBuf>,
}

/// The bound webhook port and the CA its admission callers must prove they come from.
pub struct BoundWebhooks {
    listener: TcpListener,
    client_ca: Option<String>,
}

/// How often every replica checks that the webhook configurations trust its CA.
const CA_BUNDLE_INTERVAL: Duration = Duration::from_secs(30);
/// Pause before retrying a failed step of the start.
const RETRY: Duration = Duration::from_secs(2);

/// Bind the webhook address and read the webhook client CA (an error here stops the operator:
/// the port is wrong or taken, the CA file unreadable).
pub async fn bind(args: &WebhookArgs) -> anyhow::Result<BoundWebhooks> {
    let client_ca = match &args.webhook_client_ca {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!("reading the webhook client CA {}: {e}", path.display())
        })?),
        None => {
            warn!(
                "no --webhook-client-ca: the admission webhooks answer any caller, not only the API server"
            );
            None
        }
    };
    let listener = TcpListener::bind(args.webhook_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the webhook server to {}: {e}", args.webhook_addr))?;
    info!(addr = %listener.local_addr()?, client_auth = client_ca.is_some(), "webhook server bound");
    Ok(BoundWebhooks {
        listener,
        client_ca,
    })
}

/// Run the webhooks until `shutdown`: obtain the TLS material from the Secret `tls::SECRET_NAME`
/// in `namespace` (creating it once), serve them and the routes of `beside` on `listener`, and
/// keep the configurations' `caBundle` current. `ready` turns true once the server serves and the API server trusts it.
/// Failures talking to the API server are retried (and logged); they never stop the operator.
pub async fn run_webhooks(
    client: Client,
    args: WebhookArgs,
    namespace: String,
    bound: BoundWebhooks,
    ready: Arc<AtomicBool>,
    beside: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let sans = tls::subject_alt_names(&args.webhook_service, &namespace);
    let material = loop {
        match tls::ensure_secret(&client, &namespace, &sans).await {
            Ok(m) => break m,
            Err(e) => warn!(error = %e, "webhook certificates not available yet"),
        }
        if tokio::time::timeout(RETRY, shutdown.wait_for(|s| *s))
            .await
            .is_ok()
        {
            return;
        }
    };
    let config = match material.server_config(bound.client_ca.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            // The Secret holds something we can't serve: say so and keep the webhooks down
            // (the mutating one is Ignore; approvals wait). Deleting the Secret regenerates it.
            warn!(error = %e, secret = tls::SECRET_NAME, "can't serve the webhook certificate; delete the Secret to regenerate it");
            return;
        }
    };
    let stop = {
        let mut shutdown = shutdown.clone();
        async move {
            let _ = shutdown.wait_for(|s| *s).await;
        }
    };
    let server = tokio::spawn(server::serve_tls(
        bound.listener,
        config,
        server::router(client.clone(), bound.client_ca.is_some()).merge(beside),
        stop,
    ));
    loop {
        match server::keep_ca_bundle(&client, &material.ca_pem).await {
            Ok(()) => {
                if !ready.swap(true, Ordering::SeqCst) {
                    info!("webhooks serving and trusted");
                }
            }
            Err(e) => warn!(error = %e, "keeping the webhook configurations' caBundle"),
        }
        let pause = if ready.load(Ordering::SeqCst) {
            CA_BUNDLE_INTERVAL
        } else {
            RETRY
        };
        if tokio::time::timeout(pause, shutdown.wait_for(|s| *s))
            .await
            .is_ok()
        {
            break;
        }
    }
    let _ = server.await;
}
