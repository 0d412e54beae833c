//! Figures follow what exists: a request that vanishes without its exit (its finalizers removed
//! and deleted; admission lets only the operator's ServiceAccount remove them, so the removal
//! here uses that identity, as a stray script with its credentials would) gives its quota back, its department's waiting request gets the
//! room, and the operator says in an Event on the Department what it found missing.
//!
//! The vanishing happens while the operator is frozen (SIGSTOP), so it can't run the request's
//! exit first: it only learns of the deletion from its watch when it resumes, as it would after
//! a removal it had no part in.

use std::time::Duration;

use anyhow::{Context, ensure};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use yunzhang::api::{CloudQuota, Department, Phase, ResourceRequest};
use yunzhang_integration::*;

const WAIT: Duration = Duration::from_secs(60);

async fn apply(client: &Client, v: &Value) -> anyhow::Result<()> {
    let v = with_own_identity(client, v).await;
    apply_value(client, &v, "yunzhang-tests").await.map(|_| ())
}

fn request(ns: &str, name: &str, vcpu: u32) -> Value {
    json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest", "metadata": {"name": name, "namespace": ns},
           "spec": {"purpose": "测试", "items": [{"name": "app", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": vcpu}]}})
}

fn reserved_vcpu(q: &CloudQuota) -> Option<u64> {
    q.status
        .as_ref()
        .and_then(|s| s.reserved.as_ref())
        .and_then(|r| r.vcpu)
}

#[tokio::test]
async fn a_vanished_request_gives_its_quota_back() -> anyhow::Result<()> {
    let operator = OperatorProcess::start_with(&["--lease-seconds", "30"])?;
    operator.wait_ready(WAIT).await?;
    let admin = admin().await;
    let dept = unique("vanish");
    apply(&admin, &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": dept},
        "spec": {"displayName": "测试单位", "code": "11450000MB0000000X", "namespaces": [dept]}}))
    .await?;
    let depts: Api<Department> = Api::all(admin.clone());
    ready_department(&admin, &dept).await?;
    apply(&admin, &json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "q", "namespace": dept},
        "spec": {"hard": {"vcpu": 4}}}))
    .await?;
    let rrs: Api<ResourceRequest> = Api::namespaced(admin.clone(), &dept);
    let quotas: Api<CloudQuota> = Api::namespaced(admin.clone(), &dept);
    apply(&admin, &request(&dept, "first", 3)).await?;
    wait_for(&rrs, "first", WAIT, |r| {
        r.status.as_ref().is_some_and(|s| s.quota.is_some())
    })
    .await
    .context("first holds 3 vCPU")?;
    apply(&admin, &request(&dept, "second", 2)).await?;
    wait_for(&rrs, "second", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::QuotaExceeded))
    })
    .await
    .context("second waits: 2 vCPU don't fit beside first's 3 of 4")?;
    wait_for(&quotas, "q", WAIT, |q| reserved_vcpu(q) == Some(3)).await?;

    // first vanishes: finalizers removed by hand and deleted, while the operator can't react.
    let as_operator = client_as(
        OPERATOR_USER,
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:yunzhang-system",
        ],
    )
    .await;
    let by_hand: Api<ResourceRequest> = Api::namespaced(as_operator, &dept);
    operator.pause()?;
    let vanished = async {
        by_hand
            .patch(
                "first",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await?;
        rrs.delete("first", &DeleteParams::default()).await?;
        ensure!(rrs.get_opt("first").await?.is_none(), "first is gone");
        anyhow::Ok(())
    }
    .await;
    operator.resume()?;
    vanished?;

    // Its 3 vCPU come back: second gets them, and every figure follows.
    wait_for(&rrs, "second", WAIT, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.quota.as_ref().is_some_and(|q| q.amounts.vcpu == Some(2)))
    })
    .await
    .context("the waiting request gets the room the vanished one held")?;
    wait_for(&quotas, "q", WAIT, |q| reserved_vcpu(q) == Some(2))
        .await
        .context("the CloudQuota no longer counts the vanished request")?;
    wait_for(&depts, &dept, WAIT, |d| {
        d.status
            .as_ref()
            .and_then(|s| s.quota.as_ref())
            .is_some_and(|q| q.reserved.vcpu == Some(2))
    })
    .await
    .context("the Department no longer counts it")?;
    // The Event follows the release: wait for it.
    let events = Api::<k8s_openapi::api::events::v1::Event>::all(admin.clone());
    let mut notes: Vec<String> = Vec::new();
    for _ in 0..100 {
        notes = events
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("RequestVanished"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(dept.as_str()))
            .filter_map(|e| e.note)
            .collect();
        if !notes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        notes.len() == 1
            && notes[0].contains(&format!("request {dept}/first"))
            && notes[0].contains("vcpu 3"),
        "one RequestVanished Event on the Department naming first and its 3 vCPU: {notes:?}"
    );
    Ok(())
}
