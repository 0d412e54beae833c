//! `yunzhang run`: the operator process. Wires the client, the admin HTTP server (`/metrics`,
//! `/healthz`, `/readyz`), leader election and one controller per kind, and shuts all of it down
//! cleanly on SIGTERM.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use kube::{
    Client,
    runtime::events::{Recorder, Reporter},
};
use tokio::sync::watch;
use tracing::{error, info};

use crate::{
    admission::{WebhookArgs, run_webhooks},
    controllers::{
        Context, FIELD_MANAGER, lifecycle::Lifecycle, tenancy::Tenancy, wiring::tenancy_controllers,
    },
    iac::{LocalExecutor, LocalExecutorArgs},
    leader::{self, LeaseTiming},
    metrics::Metrics,
    notify::Notifier,
};

/// Options of `yunzhang run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Address of the admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "YZ_ADMIN_ADDR", default_value = "127.0.0.1:8080")]
    pub admin_addr: SocketAddr,
    /// The operator's namespace: of the leader-election Lease and the webhook TLS Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "yunzhang-system")]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "yunzhang-operator")]
    pub lease_name: String,
    /// How long the leader Lease lasts without renewal, in seconds; the leader renews well before.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_seconds: u64,
    /// Identity in the Lease; defaults to host name and process id.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Secret in the operator's namespace (--lease-namespace) whose key `config.yaml` lists the
    /// notification webhooks. Absent: notifications are off.
    #[arg(long, env = "YZ_NOTIFICATIONS_SECRET", default_value = crate::notify::DEFAULT_SECRET)]
    pub notifications_secret: String,
    /// Log format.
    #[arg(long, env = "YZ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    /// Compare running resources with the world every this many seconds, instead of each
    /// CloudProvider's `driftCheckMinutes` (providers with 0 stay off). For development.
    #[arg(long, env = "YZ_DRIFT_CHECK_SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub drift_check_seconds: Option<u64>,
    /// How the `local` executor runs OpenTofu.
    #[command(flatten)]
    pub tofu: LocalExecutorArgs,
    /// Registries (image name prefixes, comma-separated) that MigrationWorkload hook Jobs may
    /// use, e.g. `registry.example.gov.cn/migration/`. Empty: hooks are refused.
    #[arg(long, env = "YZ_HOOK_IMAGE_PREFIXES", value_delimiter = ',')]
    pub hook_image_prefixes: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the one rustls crypto provider shared by kube and reqwest. Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,tower=warn,hyper=warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Entry point of `yunzhang run`.
pub fn main(args: RunArgs) -> anyhow::Result<()> {
    one_malloc_arena();
    install_crypto_provider();
    init_logging(args.log_format);
    if let Some(at) = crate::clock::started_at() {
        tracing::warn!(clock = %at, "the business clock started at --clock, not the system time");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

/// glibc gives each thread that allocates an arena of its own, and memory freed into one is
/// reused only by it: the runtime's worker threads each held about 12 MB for 2 MB in use after
/// a start with 12,500 requests (`malloc_stats`), a fifth of the resident memory. One arena for
/// all: the workers are few, and each thread's cache still serves small allocations without
/// the lock. Called before any thread starts.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    /// The admission webhooks serve and the API server trusts their certificate.
    webhooks_ready: Arc<AtomicBool>,
    leading: watch::Receiver<bool>,
}

/// The report endpoint's state: it reads as the operator after authorizing the caller, and
/// settles at most [`crate::reports::EXPORTS_AT_ONCE`] exports at a time.
#[derive(Clone)]
struct ReportsState {
    client: Client,
    exports: Arc<tokio::sync::Semaphore>,
    drafts: Arc<crate::reports::DraftCache>,
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API server (is KUBECONFIG set?)")?;
    let metrics = Metrics::default();
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (leading_tx, leading_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let webhooks_ready = Arc::new(AtomicBool::new(false));

    let shutdown_for_signals = shutdown_tx.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        shutdown_for_signals.send_replace(true);
    });

    let admin = AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
        webhooks_ready: webhooks_ready.clone(),
        leading: leading_rx.clone(),
    };
    let webhook_listener = crate::admission::bind(&args.webhook).await?;
    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin server to {}", args.admin_addr))?;
    info!(addr = %listener.local_addr()?, "admin server listening");
    let admin_server = tokio::spawn(
        axum::serve(listener, admin_router(admin))
            .with_graceful_shutdown(signalled(shutdown_rx.clone()))
            .into_future(),
    );

    let version = client
        .apiserver_version()
        .await
        .context("reaching the Kubernetes API server")?;
    info!(server = %version.git_version, identity, "connected");
    ready.store(true, Ordering::SeqCst);
    // Every replica serves admission, leader or not, and the report endpoint beside it over the
    // same TLS (the operator's own CA, in the Secret yunzhang-webhook-tls).
    let webhooks = tokio::spawn(run_webhooks(
        client.clone(),
        args.webhook.clone(),
        args.lease_namespace.clone(),
        webhook_listener,
        webhooks_ready,
        reports_router(client.clone()),
        shutdown_rx.clone(),
    ));

    let mut elector = tokio::spawn({
        let (client, ns, name, me) = (
            client.clone(),
            args.lease_namespace.clone(),
            args.lease_name.clone(),
            identity.clone(),
        );
        let shutdown = shutdown_rx.clone();
        let timing = LeaseTiming::for_duration(Duration::from_secs(args.lease_seconds));
        async move { leader::contend(client, &ns, &name, &me, timing, leading_tx, shutdown).await }
    });

    let mut leading = leading_rx.clone();
    let mut shutdown = shutdown_rx.clone();
    tokio::select! {
        _ = leading.wait_for(|l| *l) => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }

    let result = if *leading_rx.borrow() && !*shutdown_rx.borrow() {
        metrics.leader.set(1);
        let (trigger, triggers) = futures::channel::mpsc::unbounded();
        let ctx_controllers = tenancy_controllers(&client, &trigger);
        let tenancy = Arc::new(Tenancy::new(
            ctx_controllers.stores(),
            ctx_controllers.unsynced.clone(),
            trigger,
        ));
        let notifier = notifier(&client, &args, &metrics).await;
        let local = LocalExecutor::new(args.tofu.config())
            .map_err(|e| anyhow::anyhow!("the local OpenTofu executor: {e}"))?;
        let ctx = Arc::new(Context {
            client: client.clone(),
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: FIELD_MANAGER.into(),
                    instance: Some(identity.clone()),
                },
            ),
            metrics: metrics.clone(),
            tenancy: tenancy.clone(),
            lifecycle: Arc::new(Lifecycle::new(
                args.lease_namespace.clone(),
                local,
                args.drift_check_seconds.map(Duration::from_secs),
            )),
            notifier,
            hook_image_prefixes: args.hook_image_prefixes.clone(),
            service_account: own_service_account(&client).await,
        });
        let stop = || signalled(shutdown_rx.clone());
        let controllers = ctx_controllers.run(ctx.clone(), &stop, triggers);
        info!("controllers started");
        tokio::select! {
            _ = controllers => Ok(()),
            lost = &mut elector => lost.map_err(anyhow::Error::from).and_then(|r| r),
        }
    } else {
        Ok(())
    };
    shutdown_tx.send_replace(true);
    metrics.leader.set(0);
    // Let the elector release the Lease, so that a standby takes over at once.
    if !elector.is_finished() {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut elector).await;
    }
    let _ = admin_server.await;
    let _ = webhooks.await;
    if let Err(e) = &result {
        error!(error = %e, "stopped");
    } else {
        info!("stopped");
    }
    result
}

/// The notifier configured by the notifications Secret. A broken configuration is logged and
/// leaves notifications off rather than stopping the lifecycle.
async fn notifier(client: &Client, args: &RunArgs, metrics: &Metrics) -> Notifier {
    match Notifier::from_secret(
        client.clone(),
        &args.lease_namespace,
        &args.notifications_secret,
        metrics,
    )
    .await
    {
        Ok(n) => n,
        Err(e) => {
            error!(error = %e, "notifications disabled");
            Notifier::disabled()
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
fn signalled(
    mut shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + Sync + 'static {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        let _ = tx.send(());
    });
    async move {
        let _ = rx.await;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "yunzhang".into());
    format!("{host}-{}", std::process::id())
}

/// `GET /reports/settlement/{name}`: see [`crate::reports::answer_http`] for who may read what.
async fn settlement_report(
    State(s): State<ReportsState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> impl IntoResponse {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query = crate::reports::parse_query(query.as_deref().unwrap_or_default());
    let answer = crate::reports::answer_http(
        &s.client,
        &s.exports,
        &s.drafts,
        &name,
        &query,
        authorization,
    )
    .await;
    (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
}

fn reports_router(client: Client) -> Router {
    Router::new()
        .route("/reports/settlement/{name}", get(settlement_report))
        .with_state(ReportsState {
            client,
            exports: Arc::new(tokio::sync::Semaphore::new(crate::reports::EXPORTS_AT_ONCE)),
            drafts: Arc::default(),
        })
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<AdminState>| async move { s.metrics.encode() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<AdminState>| async move {
                if !s.ready.load(Ordering::SeqCst) {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not connected to the API server".to_owned(),
                    )
                } else if !s.webhooks_ready.load(Ordering::SeqCst) {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "admission webhooks not serving yet".to_owned(),
                    )
                } else {
                    let role = if *s.leading.borrow() {
                        "leader"
                    } else {
                        "standby"
                    };
                    (StatusCode::OK, format!("ok ({role})"))
                }
            }),
        )
        .with_state(state)
}

/// The ServiceAccount the operator runs as, from the API server (SelfSubjectReview). `None`
/// (with a warning) when it runs as anything else: department namespaces then get no binding for
/// it, and what it does there needs the permissions it was given otherwise.
async fn own_service_account(client: &kube::Client) -> Option<(String, String)> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let review = kube::Api::<SelfSubjectReview>::all(client.clone())
        .create(&Default::default(), &SelfSubjectReview::default())
        .await;
    let user = review
        .ok()
        .and_then(|r| r.status?.user_info?.username)
        .unwrap_or_default();
    let account = crate::controllers::department::service_account_of(&user);
    if account.is_none() {
        tracing::warn!(
            user,
            "not running as a ServiceAccount: department namespaces get no operator RoleBinding"
        );
    }
    account
}

#[cfg(test)]
mod tests {
    /// kube and reqwest share the one installed provider (ring): building a reqwest client panics
    /// when no provider, or an ambiguous pair, is installed.
    #[test]
    fn one_crypto_provider_serves_reqwest() {
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        reqwest::Client::builder()
            .build()
            .expect("reqwest client with the installed rustls provider");
    }
}
