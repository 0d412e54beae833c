//! The I/O shell of the webhooks: the HTTPS server, the two handlers, and the keeper of the
//! webhook configurations' `caBundle`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{Json, Router, extract::State, routing::post};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use kube::{
    Api, Client, Resource,
    api::{DynamicObject, Patch, PatchParams},
    core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use super::{
    approval::{Approver, Observed, judge_new_approval},
    identity::{RecordedKind, editor_patch, identity_patch},
    migration_workload::{judge_hooks, templates_named},
};
use crate::{
    api::{
        Approval, ApprovalPolicy, Department, HookTemplate, MigrationWorkload, PriceBook,
        ResourceRequest, migration_workload::Hooks,
    },
    controllers::FIELD_MANAGER,
};

/// Name of the MutatingWebhookConfiguration (chart) whose `caBundle` the operator keeps.
pub const MUTATING_CONFIG: &str = "yunzhang-identity";
/// Name of the ValidatingWebhookConfiguration (chart) whose `caBundle` the operator keeps.
pub const VALIDATING_CONFIG: &str = "yunzhang-approvals";
/// Path of the mutating webhook that records identity.
pub const IDENTITY_PATH: &str = "/mutate/identity";
/// Path of the validating webhook that judges new Approvals.
pub const APPROVAL_PATH: &str = "/validate/approval";
/// Path of the validating webhook that refuses overlapping PriceBooks.
pub const PRICE_BOOK_PATH: &str = "/validate/pricebook";
/// Path of the validating webhook that judges a MigrationWorkload's hooks.
pub const MIGRATION_WORKLOAD_PATH: &str = "/validate/migrationworkload";

/// The webhook routes; with `api_server_only`, they answer only a caller that proved with its
/// client certificate that it is the API server.
pub fn router(client: Client, api_server_only: bool) -> Router {
    let routes = Router::new()
        .route(IDENTITY_PATH, post(record_identity))
        .route(APPROVAL_PATH, post(judge_approval))
        .route(PRICE_BOOK_PATH, post(judge_price_book))
        .route(MIGRATION_WORKLOAD_PATH, post(judge_workload))
        .with_state(client);
    if api_server_only {
        routes.route_layer(axum::middleware::from_fn(only_the_api_server))
    } else {
        routes
    }
}

/// Whether the connection's client presented a certificate the server verified (against the
/// webhook client CA), set on every request of the connection by [`serve_tls`].
#[derive(Clone, Copy, Debug)]
pub struct ClientCertified(pub bool);

/// Refuse (403) a webhook call from anyone but the API server.
async fn only_the_api_server(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match request.extensions().get::<ClientCertified>() {
        Some(ClientCertified(true)) => next.run(request).await,
        _ => (
            axum::http::StatusCode::FORBIDDEN,
            "the admission webhooks answer only the API server (a client certificate from the webhook client CA)\n",
        )
            .into_response(),
    }
}

/// Serve `router` over TLS on `listener` until `shutdown` resolves. Every connection is handled
/// in its own task; a client that stalls its handshake is dropped after 10 s.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return debug!(%peer, error = %e, "webhook TLS handshake failed"),
                    Err(_) => return debug!(%peer, "webhook TLS handshake timed out"),
                };
            let certified = ClientCertified(stream.get_ref().1.peer_certificates().is_some());
            let service = hyper_util::service::TowerToHyperService::new(
                router.layer(axum::Extension(certified)),
            );
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

type Review = AdmissionReview<DynamicObject>;

fn user_of(req: &AdmissionRequest<DynamicObject>) -> (String, Vec<String>) {
    (
        req.user_info.username.clone().unwrap_or_default(),
        req.user_info.groups.clone().unwrap_or_default(),
    )
}

/// Mutating: on CREATE of a ResourceRequest, Approval or MigrationWorkload, record who creates
/// it; on an UPDATE that changes a ResourceRequest's spec, record who changed it.
async fn record_identity(Json(review): Json<Review>) -> Json<Review> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e).into_review()),
    };
    let response = AdmissionResponse::from(&req);
    let kind = RecordedKind::from_resource(&req.resource.resource);
    let (Some(kind), Some(object)) = (kind, &req.object) else {
        return Json(response.into_review());
    };
    let (user, groups) = user_of(&req);
    let annotations = object.metadata.annotations.as_ref();
    let ops = match (&req.operation, kind, &req.old_object) {
        (Operation::Create, ..) => identity_patch(kind, annotations, &user, &groups),
        (Operation::Update, RecordedKind::ResourceRequest, Some(old)) => editor_patch(
            old.data.get("spec") != object.data.get("spec"),
            annotations,
            &user,
        ),
        _ => Vec::new(),
    };
    if ops.is_empty() {
        return Json(response.into_review());
    }
    let response = serde_json::from_value(Value::Array(ops))
        .map_err(|e| e.to_string())
        .and_then(|patch| response.with_patch(patch).map_err(|e| e.to_string()));
    Json(match response {
        Ok(r) => {
            debug!(user, resource = req.resource.resource, "recorded identity");
            r.into_review()
        }
        Err(e) => AdmissionResponse::invalid(e).into_review(),
    })
}

/// Validating: judge a new Approval against the request as it is now in the API server.
async fn judge_approval(State(client): State<Client>, Json(review): Json<Review>) -> Json<Review> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e).into_review()),
    };
    let response = AdmissionResponse::from(&req);
    let (Operation::Create, Some(object)) = (&req.operation, &req.object) else {
        return Json(response.into_review());
    };
    let verdict = match object.clone().try_parse::<Approval>() {
        Ok(approval) => judge_live(&client, &req, &approval).await,
        Err(e) => Err(format!("not an Approval: {e}")),
    };
    if let Err(message) = &verdict {
        info!(
            user = req.user_info.username,
            approval = req.name,
            message,
            "refused an Approval"
        );
    }
    Json(answer(response, verdict, 403, "Forbidden"))
}

/// The review of a validating webhook: allowed, or denied with the verdict's message as
/// `code` / `reason`.
fn answer(
    response: AdmissionResponse,
    verdict: Result<(), String>,
    code: u16,
    reason: &str,
) -> Review {
    match verdict {
        Ok(()) => response.into_review(),
        Err(message) => {
            let mut denied = response.deny(message);
            denied.result.code = code;
            denied.result.reason = reason.to_owned();
            denied.into_review()
        }
    }
}

/// Validating: refuse a PriceBook (created or changed) that would overlap another of its
/// provider's books, judged against the books in the API server now (a LIST, not a cache).
async fn judge_price_book(
    State(client): State<Client>,
    Json(review): Json<Review>,
) -> Json<Review> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e).into_review()),
    };
    let response = AdmissionResponse::from(&req);
    let (Operation::Create | Operation::Update, Some(object)) = (&req.operation, &req.object)
    else {
        return Json(response.into_review());
    };
    let verdict = match object.clone().try_parse::<PriceBook>() {
        Ok(book) => match Api::<PriceBook>::all(client.clone())
            .list(&Default::default())
            .await
        {
            Ok(list) => super::price_book::judge_price_book(&book, &list.items),
            Err(e) => Err(format!(
                "the PriceBooks could not be read to check for overlaps ({e}): try again"
            )),
        },
        Err(e) => Err(format!("not a PriceBook: {e}")),
    };
    if let Err(message) = &verdict {
        info!(
            user = req.user_info.username,
            book = req.name,
            message,
            "refused a PriceBook"
        );
    }
    Json(answer(response, verdict, 422, "Invalid"))
}

/// Validating: refuse a MigrationWorkload (created or changed) whose hooks name a HookTemplate
/// that doesn't exist or pass parameters it doesn't take, judged against the templates in the
/// API server now.
async fn judge_workload(State(client): State<Client>, Json(review): Json<Review>) -> Json<Review> {
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return Json(AdmissionResponse::invalid(e).into_review()),
    };
    let response = AdmissionResponse::from(&req);
    let (Operation::Create | Operation::Update, Some(object)) = (&req.operation, &req.object)
    else {
        return Json(response.into_review());
    };
    let verdict = match object.clone().try_parse::<MigrationWorkload>() {
        Ok(mw) => judge_hooks_live(&client, mw.spec.hooks.unwrap_or_default()).await,
        Err(e) => Err(format!("not a MigrationWorkload: {e}")),
    };
    if let Err(message) = &verdict {
        info!(
            user = req.user_info.username,
            workload = req.name,
            message,
            "refused a MigrationWorkload"
        );
    }
    Json(answer(response, verdict, 422, "Invalid"))
}

/// Read the templates `hooks` names (no cache) and judge the hooks against them.
async fn judge_hooks_live(client: &Client, hooks: Hooks) -> Result<(), String> {
    let api = Api::<HookTemplate>::all(client.clone());
    let mut templates = BTreeMap::new();
    for name in templates_named(&hooks) {
        let found = api.get_opt(name).await.map_err(|e| {
            format!("the HookTemplate {name} could not be read to check the hooks ({e}): try again")
        })?;
        if let Some(t) = found {
            templates.insert(name.to_owned(), t.spec);
        }
    }
    judge_hooks(&hooks, &templates)
}

/// Read what the judgement needs straight from the API server (no cache) and judge.
async fn judge_live(
    client: &Client,
    req: &AdmissionRequest<DynamicObject>,
    approval: &Approval,
) -> Result<(), String> {
    let namespace = req.namespace.clone().unwrap_or_default();
    let unreadable = |what: &str, e: kube::Error| {
        format!("the approval can't be judged now, {what} could not be read ({e}): try again")
    };
    let request = Api::<ResourceRequest>::namespaced(client.clone(), &namespace)
        .get_opt(&approval.spec.request.name)
        .await
        .map_err(|e| unreadable("the request", e))?;
    let departments = Api::<Department>::all(client.clone())
        .list(&Default::default())
        .await
        .map_err(|e| unreadable("the Departments", e))?
        .items;
    let policy = match Department::owner_of(&departments, &namespace) {
        Some(d) => Api::<ApprovalPolicy>::all(client.clone())
            .get_opt(d.approval_policy_name())
            .await
            .map_err(|e| unreadable("the ApprovalPolicy", e))?,
        None => None,
    };
    let (user, groups) = user_of(req);
    judge_new_approval(
        approval,
        &namespace,
        &Approver { user, groups },
        Observed {
            request: request.as_ref(),
            departments: &departments,
            policy: policy.as_ref(),
        },
    )
}

/// Make every webhook of the two configurations trust `ca_pem`; returns whether both were
/// already current or are now. Reads each configuration and patches (server-side apply of only
/// `webhooks[*].clientConfig.caBundle`) the ones that differ, so replicas agree without writing.
pub async fn keep_ca_bundle(client: &Client, ca_pem: &str) -> Result<(), kube::Error> {
    // ByteString serializes as the base64 the API expects.
    let bundle = serde_json::to_value(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()))
        .unwrap_or_default();
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let live = mutating.get(MUTATING_CONFIG).await?;
    let names = live.webhooks.iter().flatten().map(|w| {
        (
            w.name.clone(),
            w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
        )
    });
    apply_bundle(&mutating, MUTATING_CONFIG, names.collect(), ca_pem, &bundle).await?;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let live = validating.get(VALIDATING_CONFIG).await?;
    let names = live.webhooks.iter().flatten().map(|w| {
        (
            w.name.clone(),
            w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
        )
    });
    apply_bundle(
        &validating,
        VALIDATING_CONFIG,
        names.collect(),
        ca_pem,
        &bundle,
    )
    .await
}

async fn apply_bundle<K>(
    api: &Api<K>,
    name: &str,
    webhooks: Vec<(String, Option<Vec<u8>>)>,
    ca_pem: &str,
    bundle: &Value,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    if webhooks
        .iter()
        .all(|(_, current)| current.as_deref() == Some(ca_pem.as_bytes()))
    {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name},
        "webhooks": webhooks
            .iter()
            .map(|(webhook, _)| json!({"name": webhook, "clientConfig": {"caBundle": bundle}}))
            .collect::<Vec<_>>(),
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    info!(configuration = name, "webhook caBundle updated");
    Ok(())
}
