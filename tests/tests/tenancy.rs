//! Tenancy against the real API server with real users: departments own namespaces and grant
//! access, quotas nest in the hierarchy, reservations show in status, deletion waits for requests.
//!
//! One operator serves every scenario (only one can hold the Lease), so the scenarios run
//! concurrently inside one test and report their failures together.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use k8s_openapi::api::{core::v1::Namespace, rbac::v1::ClusterRoleBinding};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};
use yunzhang::api::{CloudQuota, Department, Phase, ResourceRequest};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);

fn department(name: &str, parent: Option<&str>, members: &[&str]) -> Value {
    let members: Vec<Value> = members
        .iter()
        .map(|m| json!({"kind": "User", "name": m}))
        .collect();
    let mut spec = json!({"displayName": format!("单位 {name}"), "code": "11450000MB0000000X", "namespaces": [name], "members": members});
    if let Some(p) = parent {
        spec["parent"] = json!(p);
    }
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": name}, "spec": spec})
}

fn quota(ns: &str, name: &str, vcpu: u64) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": name, "namespace": ns},
           "spec": {"hard": {"vcpu": vcpu}}})
}

fn request(ns: &str, name: &str, vcpu: u32) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest", "metadata": {"name": name, "namespace": ns},
           "spec": {"purpose": "测试", "items": [{"name": "app", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": vcpu}]}})
}

/// Server-side apply as `client`. Requests carry the applier's own identity, typed: the webhook
/// would record the same, and the example request is also applied (typed, no operator running)
/// by the foundation tests under this field manager, so leaving it out here would remove it.
async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    let v = with_own_identity(client, v).await;
    apply_value(client, &v, "yunzhang-tests").await.map(|_| ())
}

async fn quota_verdict(client: &Client, ns: &str, name: &str) -> anyhow::Result<(String, String)> {
    let api: Api<CloudQuota> = Api::namespaced(client.clone(), ns);
    let q = wait_for(&api, name, WAIT, |q| {
        q.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.reason != "Pending")
        })
    })
    .await?;
    let c = q
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .context("Ready condition")?;
    Ok((c.reason, c.message))
}

#[tokio::test]
async fn tenancy() {
    let operator = OperatorProcess::start().unwrap();
    operator.wait_ready(WAIT).await.unwrap();
    let client = admin().await;
    let (a, b, c, d, f) = futures::join!(
        hierarchy_refuses_a_child_quota_larger_than_the_parent_leaves(&client),
        members_are_isolated_and_lose_access_when_removed(&client),
        reservations_show_in_status_and_are_released(&client),
        deletion_waits_until_requests_are_gone(&client),
        a_request_waits_for_a_department_to_claim_its_namespace(&client),
    );
    let e = examples_hierarchy_is_effective(&client).await;
    let failures: Vec<String> = [
        ("hierarchy", a),
        ("isolation", b),
        ("reservations", c),
        ("deletion", d),
        ("examples", e),
        ("claimed later", f),
    ]
    .into_iter()
    .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e:#}")))
    .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

async fn hierarchy_refuses_a_child_quota_larger_than_the_parent_leaves(
    client: &Client,
) -> anyhow::Result<()> {
    let (p, c1, c2) = (unique("region"), unique("city"), unique("county"));
    apply(client, &department(&p, None, &[])).await?;
    apply(client, &department(&c1, Some(&p), &[])).await?;
    apply(client, &department(&c2, Some(&p), &[])).await?;
    for dept in [&p, &c1, &c2] {
        ready_department(client, dept).await?;
    }
    apply(client, &quota(&p, "base", 100)).await?;
    ensure!(quota_verdict(client, &p, "base").await?.0 == "Effective");
    apply(client, &quota(&c1, "base", 60)).await?;
    ensure!(quota_verdict(client, &c1, "base").await?.0 == "Effective");
    apply(client, &quota(&c2, "base", 50)).await?;
    let (reason, message) = quota_verdict(client, &c2, "base").await?;
    ensure!(reason == "ExceedsParent", "{reason}: {message}");
    let expected =
        format!("quota {c2}/base: vcpu 50 exceeds what parent {p}'s quotas leave: 40 of 100");
    ensure!(
        message == expected,
        "message {message:?}, expected {expected:?}"
    );
    // A request in the refused child's namespace has no capacity to draw on.
    apply(client, &request(&c2, "r", 1)).await?;
    let rr = wait_for(
        &Api::<ResourceRequest>::namespaced(client.clone(), &c2),
        "r",
        WAIT,
        |r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == Some(Phase::QuotaExceeded))
        },
    )
    .await?;
    ensure!(
        rr.status
            .unwrap()
            .message
            .unwrap_or_default()
            .contains("no valid CloudQuota")
    );
    Ok(())
}

async fn members_are_isolated_and_lose_access_when_removed(client: &Client) -> anyhow::Result<()> {
    let (da, db) = (unique("dept-a"), unique("dept-b"));
    let (ua, ub, padmin) = (unique("user-a"), unique("user-b"), unique("platform"));
    apply(client, &department(&da, None, &[&ua])).await?;
    apply(client, &department(&db, None, &[&ub])).await?;
    ready_department(client, &da).await?;
    ready_department(client, &db).await?;
    apply(client, &quota(&da, "q", 8)).await?;
    apply(client, &request(&db, "secret-project", 1)).await?;
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": padmin},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "yunzhang-platform-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": padmin}],
    }))?;
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &crb)
        .await?;

    let member = client_as(&ua, &[]).await;
    let own: Api<ResourceRequest> = Api::namespaced(member.clone(), &da);
    let other: Api<ResourceRequest> = Api::namespaced(member.clone(), &db);
    eventually(|| async { own.list(&Default::default()).await.map(|_| ()) })
        .await
        .context("member lists requests in own namespace")?;
    ensure!(
        forbidden(other.list(&Default::default()).await),
        "member must not list requests of another department"
    );
    ensure!(
        forbidden(other.get("secret-project").await),
        "member must not get a request of another department"
    );

    let admin_user = client_as(&padmin, &[]).await;
    let seen = eventually(|| async {
        Api::<ResourceRequest>::namespaced(admin_user.clone(), &db)
            .get("secret-project")
            .await
    })
    .await?;
    ensure!(seen.metadata.name.as_deref() == Some("secret-project"));

    let quotas: Api<CloudQuota> = Api::namespaced(member.clone(), &da);
    eventually(|| async { quotas.get("q").await })
        .await
        .context("member reads own quota")?;
    let change = quotas
        .patch(
            "q",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hard": {"vcpu": 9999}}})),
        )
        .await;
    ensure!(forbidden(change), "member must not change own quota");

    // Removing the member revokes access.
    apply(client, &department(&da, None, &[])).await?;
    eventually(|| async {
        match own.list(&Default::default()).await {
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
            other => bail!("still allowed: {:?}", other.map(|l| l.items.len())),
        }
    })
    .await
    .context("removed member loses access")
}

async fn reservations_show_in_status_and_are_released(client: &Client) -> anyhow::Result<()> {
    let dept = unique("dept-r");
    apply(client, &department(&dept, None, &[])).await?;
    ready_department(client, &dept).await?;
    apply(client, &quota(&dept, "q", 10)).await?;
    apply(client, &request(&dept, "small", 1)).await?;
    let rrs: Api<ResourceRequest> = Api::namespaced(client.clone(), &dept);
    let small = wait_for(&rrs, "small", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.quota.is_some())
    })
    .await?;
    ensure!(small.status.unwrap().quota.unwrap().amounts.vcpu == Some(1));

    apply(client, &request(&dept, "big", 16)).await?;
    let big = wait_for(&rrs, "big", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::QuotaExceeded))
    })
    .await?;
    let message = big.status.unwrap().message.unwrap_or_default();
    ensure!(
        message.starts_with(&format!(
            "quota {dept}/q: vcpu requested 16, available 9 of 10"
        )),
        "{message}"
    );

    let quotas: Api<CloudQuota> = Api::namespaced(client.clone(), &dept);
    wait_for(&quotas, "q", WAIT, |q| {
        q.status.as_ref().is_some_and(|s| {
            s.reserved.as_ref().and_then(|r| r.vcpu) == Some(1)
                && s.available.as_ref().and_then(|a| a.vcpu) == Some(9)
        })
    })
    .await
    .context("quota status shows the reservation")?;
    let depts: Api<Department> = Api::all(client.clone());
    wait_for(&depts, &dept, WAIT, |d| {
        d.status
            .as_ref()
            .and_then(|s| s.quota.as_ref())
            .is_some_and(|q| q.reserved.vcpu == Some(1))
    })
    .await
    .context("department status rolls up the reservation")?;

    // The spec shrinks: the waiting request now fits.
    rrs.patch("big", &PatchParams::default(), &Patch::Merge(json!({"spec": {"items": [{"name": "app", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 9}]}}))).await?;
    wait_for(&rrs, "big", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.quota.as_ref().is_some_and(|q| q.amounts.vcpu == Some(9)))
    })
    .await
    .context("shrunk request admitted")?;

    // Deleting releases.
    rrs.delete("small", &DeleteParams::default()).await?;
    rrs.delete("big", &DeleteParams::default()).await?;
    wait_for(&quotas, "q", WAIT, |q| {
        q.status.as_ref().is_some_and(|s| {
            s.reserved.as_ref().and_then(|r| r.vcpu) == Some(0)
                && s.available.as_ref().and_then(|a| a.vcpu) == Some(10)
        })
    })
    .await
    .context("quota released after deletion")?;
    Ok(())
}

async fn deletion_waits_until_requests_are_gone(client: &Client) -> anyhow::Result<()> {
    let dept = unique("dept-d");
    apply(client, &department(&dept, None, &[])).await?;
    ready_department(client, &dept).await?;
    apply(client, &quota(&dept, "q", 4)).await?;
    apply(client, &request(&dept, "live", 1)).await?;
    let rrs: Api<ResourceRequest> = Api::namespaced(client.clone(), &dept);
    wait_for(&rrs, "live", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.quota.is_some())
    })
    .await?;

    let depts: Api<Department> = Api::all(client.clone());
    // The API server refuses the deletion, naming the request, once the Department's status
    // counts it.
    wait_for(&depts, &dept, WAIT, |d| {
        d.status.as_ref().is_some_and(|s| s.live_request_count == 1)
    })
    .await?;
    match depts.delete(&dept, &DeleteParams::default()).await {
        Err(kube::Error::Api(s)) => {
            let expected = format!(
                "can't delete Department {dept}: 1 live request(s) must exit first (set spec.lifecycle: Retired, or delete them): {dept}/live"
            );
            ensure!(
                s.message.contains(&expected),
                "refusal {:?} lacks {expected:?}",
                s.message
            );
        }
        other => bail!(
            "deleting a Department with a live request was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    ensure!(
        depts
            .get_opt(&dept)
            .await?
            .is_some_and(|d| d.metadata.deletion_timestamp.is_none()),
        "department untouched"
    );

    rrs.delete("live", &DeleteParams::default()).await?;
    wait_for(&depts, &dept, WAIT, |d| {
        d.status.as_ref().is_some_and(|s| s.live_request_count == 0)
    })
    .await?;
    depts.delete(&dept, &DeleteParams::default()).await?;
    eventually(|| async {
        match depts.get_opt(&dept).await? {
            None => Ok(()),
            Some(_) => bail!("department still there"),
        }
    })
    .await
    .context("department goes once its requests are gone")?;
    let nss: Api<Namespace> = Api::all(client.clone());
    eventually(|| async {
        match nss.get_opt(&dept).await? {
            None => Ok(()),
            Some(ns) if ns.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => bail!("namespace not being deleted"),
        }
    })
    .await
    .context("its namespace is garbage collected")
}

async fn examples_hierarchy_is_effective(client: &Client) -> anyhow::Result<()> {
    let run = unique("ex");
    let gx = |name: &str| format!("{run}-{name}");
    for file in ["departments.yaml", "quotas.yaml"] {
        for doc in example_documents(&format!("examples/platform/{file}"), &run)? {
            if doc["kind"] == "CloudQuota" {
                ready_department(
                    client,
                    doc["metadata"]["namespace"].as_str().unwrap_or_default(),
                )
                .await?;
            }
            apply(client, &doc).await?;
        }
    }
    for ns in ["gx", "gx-nanning", "gx-finance"].map(gx) {
        let (reason, message) = quota_verdict(client, &ns, "base").await?;
        ensure!(reason == "Effective", "{ns}/base: {reason}: {message}");
    }
    // The example request is priced from the example price book and reserves its monthly cost:
    // web 2 × ¥0.80/h × 730 h = 1168.00, db ¥1800.00/month; 2968.00 less gx-finance's 10% = 2671.20.
    for doc in example_documents("examples/platform/provider.yaml", &run)?
        .iter()
        .chain(&example_documents(
            "examples/department/resource-request.yaml",
            &run,
        )?)
    {
        apply(client, doc).await?;
    }
    let rrs: Api<ResourceRequest> = Api::namespaced(client.clone(), &gx("gx-finance"));
    let rr = wait_for(&rrs, "tax-portal", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.quota.is_some() && s.estimate.is_some())
    })
    .await?;
    let status = rr.status.unwrap();
    ensure!(
        status.estimate.as_ref().map(|e| e.monthly.0.as_str()) == Some("2671.20"),
        "estimate {:?}",
        status.estimate
    );
    ensure!(
        status
            .quota
            .as_ref()
            .and_then(|q| q.amounts.monthly_cost.as_ref())
            .map(|m| m.0.as_str())
            == Some("2671.20"),
        "held {:?}",
        status.quota
    );
    Ok(())
}

/// A request made where no Department owns the namespace says so and waits (nothing polls it);
/// a Department that then lists the namespace takes it on.
async fn a_request_waits_for_a_department_to_claim_its_namespace(
    client: &Client,
) -> anyhow::Result<()> {
    let ns = unique("claimed-later");
    create_namespace(&ns).await?;
    apply(client, &request(&ns, "early", 1)).await?;
    let rrs: Api<ResourceRequest> = Api::namespaced(client.clone(), &ns);
    let unowned = |r: &ResourceRequest| {
        r.status.as_ref().is_some_and(|s| {
            s.message
                .as_deref()
                .is_some_and(|m| m.contains("belongs to no Department"))
        })
    };
    wait_for(&rrs, "early", WAIT, unowned)
        .await
        .context("the request says its namespace belongs to no Department")?;
    // The namespace is handed over (it existed before the Department), then claimed.
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"yunzhang.io/department": ns}}})),
        )
        .await?;
    apply(client, &department(&ns, None, &[])).await?;
    ready_department(client, &ns).await?;
    wait_for(&rrs, "early", WAIT, |r| {
        !unowned(r) && r.status.as_ref().is_some_and(|s| s.phase.is_some())
    })
    .await
    .context("the Department claiming the namespace takes the request on")?;
    Ok(())
}

fn forbidden<T>(r: Result<T, kube::Error>) -> bool {
    matches!(r, Err(kube::Error::Api(s)) if s.code == 403)
}

/// Retry `f` for up to a minute (RBAC and caches converge within moments).
async fn eventually<T, F, Fut, E>(f: F) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}
