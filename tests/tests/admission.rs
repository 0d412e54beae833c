//! Identity from the API server, against the real control plane with real users: the operator's
//! webhooks record who creates a ResourceRequest or an Approval, the ValidatingAdmissionPolicies
//! refuse a forged or changed identity, and a new Approval is judged against the request as it
//! is now (uid, generation, four eyes, separation of departments).
//!
//! One operator serves every scenario (only one can hold the Lease and serve the webhook port),
//! so they run in one test and report their failures together.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use yunzhang::api::{
    Approval, Department, ResourceRequest,
    annotations::{APPROVER, APPROVER_GROUPS, REQUESTER, REQUESTER_GROUPS, groups_value},
};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);

fn request(ns: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"purpose": "身份测试", "items": [{"name": "app", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 1}]}})
}

fn approval(ns: &str, rr: &ResourceRequest, generation: i64, annotations: Value) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Approval",
           "metadata": {"name": unique("appr"), "namespace": ns, "annotations": annotations},
           "spec": {"request": {"name": rr.metadata.name, "uid": rr.metadata.uid, "generation": generation,
                                "planHash": format!("sha256:{}", "ab".repeat(32))},
                    "stage": "cloud-office", "decision": "Approved"}})
}

/// Create `value` as `client` (POST, so the operation is CREATE); the refusal message, or the
/// created object.
async fn create(client: &Client, value: Value) -> Result<Value, (u16, String)> {
    let obj: kube::api::DynamicObject = serde_json::from_value(value.clone()).expect("object");
    let ns = obj.metadata.namespace.clone().expect("namespaced");
    let ar = match value["kind"].as_str() {
        Some("Approval") => kube::api::ApiResource::erase::<Approval>(&()),
        _ => kube::api::ApiResource::erase::<ResourceRequest>(&()),
    };
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
    match api.create(&PostParams::default(), &obj).await {
        Ok(created) => Ok(serde_json::to_value(created).expect("json")),
        Err(kube::Error::Api(s)) => Err((s.code, s.message)),
        Err(e) => Err((0, e.to_string())),
    }
}

/// Expect a refusal whose message contains every one of `texts`.
fn refused(
    what: &str,
    outcome: Result<Value, (u16, String)>,
    texts: &[&str],
) -> anyhow::Result<()> {
    match outcome {
        Ok(v) => bail!("{what}: accepted, expected a refusal: {v}"),
        Err((code, message)) => {
            for text in texts {
                ensure!(
                    message.contains(text),
                    "{what}: refusal ({code}) lacks {text:?}: {message}"
                );
            }
            Ok(())
        }
    }
}

/// Retry `f` for up to a minute while RBAC (the RoleBindings the operator makes) converges.
async fn eventually<T, F, Fut>(f: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, (u16, String)>>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err((403, m))
                if std::time::Instant::now() < deadline && m.contains("cannot create") =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err((code, m)) => bail!("({code}) {m}"),
        }
    }
}

#[tokio::test]
async fn identity_is_recorded_and_approvals_are_judged_at_admission() {
    let admin = admin().await;
    let operator = OperatorProcess::start().unwrap();
    operator.wait_ready(WAIT).await.unwrap();

    // A department with a requester and an insider (a member who is also an approver), a policy
    // that keeps approvals out of the requesting department, and an outside approver.
    let dept = unique("identity");
    let policy = unique("identity-policy");
    let approvers = unique("cloud-office");
    let (requester, insider, outsider) =
        (unique("requester"), unique("insider"), unique("outsider"));
    let setup = async {
        apply_value(&admin, &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ApprovalPolicy", "metadata": {"name": policy},
            "spec": {"separationOfDuties": {"allowSameDepartment": false},
                     "stages": [{"name": "cloud-office", "approvers": [{"kind": "Group", "name": approvers}]}]}}), "yunzhang-tests").await?;
        apply_value(&admin, &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": dept},
            "spec": {"displayName": "身份测试厅", "code": "11450000MB0000000X", "namespaces": [dept], "approvalPolicy": policy,
                     "members": [{"kind": "User", "name": requester}, {"kind": "User", "name": insider}]}}), "yunzhang-tests").await?;
        bind_approver_group(&admin, &approvers).await?;
        wait_for(&Api::<Department>::all(admin.clone()), &dept, WAIT, |d| {
            d.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await?;
        anyhow::Ok(())
    };
    setup.await.unwrap();

    let as_requester = client_as(&requester, &["identity-staff", &approvers]).await;
    let as_insider = client_as(&insider, &[&approvers]).await;
    let as_outsider = client_as(&outsider, &[&approvers]).await;
    let results = [
        (
            "requester recorded",
            requester_is_recorded(&as_requester, &dept, &requester).await,
        ),
        (
            "typed identity",
            typed_identity_of_someone_else_is_refused(&as_requester, &dept).await,
        ),
        (
            "changed identity",
            identity_cannot_change(&as_requester, &admin, &dept).await,
        ),
        (
            "approvals",
            approvals_are_judged(
                &as_requester,
                &as_insider,
                &as_outsider,
                &admin,
                &dept,
                &outsider,
            )
            .await,
        ),
    ];
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    drop(operator);
}

async fn requester_is_recorded(client: &Client, ns: &str, user: &str) -> anyhow::Result<()> {
    let name = unique("rr");
    let created = eventually(|| create(client, request(ns, &name, json!({})))).await?;
    let (_, groups) = whoami(client).await?;
    let annotations = &created["metadata"]["annotations"];
    ensure!(
        annotations[REQUESTER] == user,
        "requester recorded as {annotations}"
    );
    ensure!(
        annotations[REQUESTER_GROUPS] == groups_value(&groups),
        "groups recorded as {annotations}, API server says {groups:?}"
    );
    Ok(())
}

async fn typed_identity_of_someone_else_is_refused(
    client: &Client,
    ns: &str,
) -> anyhow::Result<()> {
    let forged = request(ns, &unique("rr"), json!({REQUESTER: "someone-else"}));
    refused(
        "another requester typed",
        eventually(|| async {
            match create(client, forged.clone()).await {
                // RBAC not converged yet looks the same as success would: retry those only.
                Err((403, m)) if m.contains("cannot create") => Err((403, m)),
                other => Ok(other),
            }
        })
        .await?,
        &[
            "metadata.annotations[yunzhang.io/requester]",
            "can't be set to someone-else",
        ],
    )?;
    // Typing your own identity is accepted (how a user creates requests while the operator is down).
    let (me, groups) = whoami(client).await?;
    let own = request(
        ns,
        &unique("rr"),
        json!({REQUESTER: me, REQUESTER_GROUPS: groups_value(&groups)}),
    );
    create(client, own)
        .await
        .map_err(|e| anyhow::anyhow!("own identity typed: {e:?}"))?;
    Ok(())
}

async fn identity_cannot_change(client: &Client, admin: &Client, ns: &str) -> anyhow::Result<()> {
    let name = unique("rr");
    eventually(|| create(client, request(ns, &name, json!({})))).await?;
    for (who, c) in [("the requester", client), ("the cluster admin", admin)] {
        let api: Api<ResourceRequest> = Api::namespaced(c.clone(), ns);
        let change = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {REQUESTER: "someone-else"}}})),
            )
            .await;
        match change {
            Ok(_) => bail!("{who} changed the requester"),
            Err(kube::Error::Api(s)) => ensure!(
                s.message.contains(
                    "metadata.annotations[yunzhang.io/requester] is recorded at creation"
                ) && s.message.contains("can't be changed to someone-else"),
                "{who}: {}",
                s.message
            ),
            Err(e) => bail!("{who}: {e}"),
        }
    }
    // Other changes still go through, and so does the operator's own work on the request
    // (finalizer and status, server-side applied, leave the annotations as they are).
    let api: Api<ResourceRequest> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"purpose": "改了用途"}})),
    )
    .await
    .context("requester changes the purpose")?;
    wait_for(
        &Api::<ResourceRequest>::namespaced(admin.clone(), ns),
        &name,
        WAIT,
        |r| {
            r.metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| !f.is_empty())
                && r.status
                    .as_ref()
                    .is_some_and(|s| s.quota.is_some() || !s.conditions.is_empty())
        },
    )
    .await
    .context("the operator's finalizer and status writes pass the identity policy")?;
    Ok(())
}

async fn approvals_are_judged(
    requester: &Client,
    insider: &Client,
    outsider: &Client,
    admin: &Client,
    ns: &str,
    outsider_name: &str,
) -> anyhow::Result<()> {
    let name = unique("rr");
    eventually(|| create(requester, request(ns, &name, json!({})))).await?;
    let requests: Api<ResourceRequest> = Api::namespaced(admin.clone(), ns);
    // Generation 2: what an approver who looked before the change saw is stale.
    requests
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"purpose": "第二版"}})),
        )
        .await?;
    let rr = requests.get(&name).await?;
    ensure!(
        rr.metadata.generation == Some(2),
        "generation {:?}",
        rr.metadata.generation
    );

    refused(
        "an approval claiming another approver",
        create(
            outsider,
            approval(ns, &rr, 2, json!({APPROVER: "someone-else"})),
        )
        .await,
        &[
            "metadata.annotations[yunzhang.io/approver]",
            "can't be set to someone-else",
        ],
    )?;
    refused(
        "a stale generation",
        create(outsider, approval(ns, &rr, 1, json!({}))).await,
        &[
            "spec.request.generation 1 is stale: the request is at generation 2",
            "look again and approve what you see",
        ],
    )?;
    let mut other_uid = approval(ns, &rr, 2, json!({}));
    other_uid["spec"]["request"]["uid"] = json!("0b6f1c3e-1111-4222-8333-944455556666");
    refused(
        "another uid",
        create(outsider, other_uid).await,
        &["spec.request.uid is 0b6f1c3e-1111-4222-8333-944455556666"],
    )?;
    refused(
        "the requester approving",
        eventually(|| async {
            match create(requester, approval(ns, &rr, 2, json!({}))).await {
                Err((403, m)) if m.contains("cannot create") => Err((403, m)),
                other => Ok(other),
            }
        })
        .await?,
        &[
            "metadata.annotations[yunzhang.io/approver]",
            "is the requester",
            "four eyes",
        ],
    )?;
    refused(
        "an approver from the requesting department",
        eventually(|| async {
            match create(insider, approval(ns, &rr, 2, json!({}))).await {
                Err((403, m)) if m.contains("cannot create") => Err((403, m)),
                other => Ok(other),
            }
        })
        .await?,
        &[
            "metadata.annotations[yunzhang.io/approver]",
            &format!("belongs to {ns}, the requesting department"),
        ],
    )?;

    // An outside approver who saw the current generation may approve; who approved is recorded.
    let approved = eventually(|| create(outsider, approval(ns, &rr, 2, json!({})))).await?;
    let (_, groups) = whoami(outsider).await?;
    ensure!(
        approved["metadata"]["annotations"][APPROVER] == outsider_name,
        "{approved}"
    );
    ensure!(
        approved["metadata"]["annotations"][APPROVER_GROUPS] == groups_value(&groups),
        "{approved}"
    );
    // An Approval is immutable, and so is who made it.
    let approvals: Api<Approval> = Api::namespaced(admin.clone(), ns);
    let approval_name = approved["metadata"]["name"].as_str().context("name")?;
    let err = approvals
        .patch(
            approval_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"decision": "Rejected"}})),
        )
        .await
        .err()
        .context("decision changed")?;
    ensure!(err.to_string().contains("immutable"), "{err}");
    let err = approvals
        .patch(
            approval_name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {APPROVER: "someone-else"}}})),
        )
        .await
        .err()
        .context("approver changed")?;
    ensure!(
        err.to_string()
            .contains("metadata.annotations[yunzhang.io/approver] is recorded at creation"),
        "{err}"
    );
    Ok(())
}
