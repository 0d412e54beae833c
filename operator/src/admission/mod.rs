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
//! - [`tls`]: the CA and serving certificate, shared by all replicas through a Secret.
//! - [`server`]: the HTTPS server, the handlers, and the keeper of the configurations' `caBundle`.
//!
//! Every replica serves the webhooks, leader or not: admission must not wait for an election.

pub mod approval;
pub mod identity;
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
}

/// How often every replica checks that the webhook configurations trust its CA.
const CA_BUNDLE_INTERVAL: Duration = Duration::from_secs(30);
/// Pause before retrying a failed step of the start.
const RETRY: Duration = Duration::from_secs(2);

/// Bind the webhook address (an error here stops the operator: the port is wrong or taken).
pub async fn bind(args: &WebhookArgs) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(args.webhook_addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the webhook server to {}: {e}", args.webhook_addr))?;
    info!(addr = %listener.local_addr()?, "webhook server bound");
    Ok(listener)
}

/// Run the webhooks until `shutdown`: obtain the TLS material from the Secret `tls::SECRET_NAME`
/// in `namespace` (creating it once), serve them and the routes of `beside` on `listener`, and
/// keep the configurations' `caBundle` current. `ready` turns true once the server serves and the API server trusts it.
/// Failures talking to the API server are retried (and logged); they never stop the operator.
pub async fn run_webhooks(
    client: Client,
    args: WebhookArgs,
    namespace: String,
    listener: TcpListener,
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
    let config = match material.server_config() {
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
        listener,
        config,
        server::router(client.clone()).merge(beside),
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
