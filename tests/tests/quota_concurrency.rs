//! 200 requests arrive at once for a quota with room for exactly 50, while the operator is
//! killed (SIGKILL) and restarted several times. Exactly 50 hold reservations, 150 wait in
//! QuotaExceeded, and no observer ever sees more than 50 reserved; freed room goes to the
//! earliest waiting requests.

use std::{collections::HashMap, time::Duration};

use futures::{StreamExt, TryStreamExt};
use kube::{
    Api, Client, ResourceExt,
    api::DeleteParams,
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;
use tokio::sync::watch;
use yunzhang::api::{CloudQuota, Department, Phase, ResourceRequest};
use yunzhang_integration::*;

const REQUESTS: usize = 200;
const ROOM: u64 = 50;
const OPERATOR_ARGS: &[&str] = &["--lease-seconds", "3"];

fn held_vcpu(rr: &ResourceRequest) -> u64 {
    rr.status
        .as_ref()
        .and_then(|s| s.quota.as_ref())
        .and_then(|q| q.amounts.vcpu)
        .unwrap_or(0)
}

/// Watch requests and the quota until told to stop; return the largest total reserved seen
/// across requests, and the largest `reserved + used` the quota's status ever showed.
async fn observe(client: Client, ns: String, mut stop: watch::Receiver<bool>) -> (u64, u64) {
    let requests = watcher(
        Api::<ResourceRequest>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
    )
    .default_backoff();
    let quotas = watcher(
        Api::<CloudQuota>::namespaced(client, &ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects();
    futures::pin_mut!(requests, quotas);
    let (mut held, mut max_requests, mut max_quota) = (HashMap::new(), 0, 0);
    loop {
        tokio::select! {
            _ = stop.changed() => return (max_requests, max_quota),
            Some(Ok(event)) = requests.next() => {
                match event {
                    watcher::Event::Apply(rr) | watcher::Event::InitApply(rr) => { held.insert(rr.name_any(), held_vcpu(&rr)); }
                    watcher::Event::Delete(rr) => { held.remove(&rr.name_any()); }
                    _ => {}
                }
                max_requests = max_requests.max(held.values().sum());
            }
            Some(Ok(q)) = quotas.next() => {
                let s = q.status.unwrap_or_default();
                let total = s.reserved.and_then(|r| r.vcpu).unwrap_or(0) + s.used.and_then(|u| u.vcpu).unwrap_or(0);
                max_quota = max_quota.max(total);
            }
        }
    }
}

#[tokio::test]
async fn two_hundred_requests_fifty_fit_through_operator_restarts() {
    let client = admin().await;
    let ns = unique("crowd");
    let mut operator = OperatorProcess::start_with(OPERATOR_ARGS).unwrap();
    let dept = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "Department", "metadata": {"name": ns},
                      "spec": {"displayName": "并发测试单位", "code": "11450000MB0000000X", "namespaces": [ns]}});
    apply_value(&client, &dept, "yunzhang-tests").await.unwrap();
    wait_for(
        &Api::<Department>::all(client.clone()),
        &ns,
        Duration::from_secs(60),
        |d| {
            d.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await
    .unwrap();
    let quota = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "CloudQuota", "metadata": {"name": "room-for-50", "namespace": ns},
                       "spec": {"hard": {"vcpu": ROOM}}});
    apply_value(&client, &quota, "yunzhang-tests")
        .await
        .unwrap();

    let (stop_tx, stop_rx) = watch::channel(false);
    let observer = tokio::spawn(observe(client.clone(), ns.clone(), stop_rx));

    // Everyone at once, 50 in flight at a time. The operator (and with it the identity webhook,
    // failurePolicy Ignore) is SIGKILLed meanwhile, so the creator types its own identity in
    // the requests, as a user would while the operator is down; the identity policy accepts
    // exactly that and nothing else.
    let own_identity = with_own_identity(
        &client,
        &json!({"kind": "ResourceRequest", "metadata": {}}),
    )
    .await["metadata"]["annotations"]
        .clone();
    let creator = {
        let (client, ns) = (client.clone(), ns.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..REQUESTS)
                .map(|i| {
                    let (client, ns, annotations) = (client.clone(), ns.clone(), own_identity.clone());
                    async move {
                        let rr = json!({"apiVersion": "yunzhang.io/v1alpha1", "kind": "ResourceRequest",
                            "metadata": {"name": format!("r{i:03}"), "namespace": ns, "annotations": annotations},
                            "spec": {"purpose": "并发", "items": [{"name": "app", "type": "ecs", "sku": "ecs.c2.large", "count": 1, "vcpu": 1}]}});
                        apply_value(&client, &rr, "yunzhang-tests").await.map(|_| ())
                    }
                })
                .buffer_unordered(50)
                .try_collect::<Vec<_>>()
                .await
        })
    };
    // Kill the operator mid-way, three times, and bring it back.
    for pause in [700, 1500, 2500] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        operator.kill_hard().unwrap();
        operator = OperatorProcess::start_with(OPERATOR_ARGS).unwrap();
    }
    creator.await.unwrap().unwrap();

    let api: Api<ResourceRequest> = Api::namespaced(client.clone(), &ns);
    let decided = |list: &[ResourceRequest]| {
        let holding = list.iter().filter(|r| held_vcpu(r) > 0).count();
        let waiting = list
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::QuotaExceeded))
            .count();
        (holding, waiting)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let list = loop {
        let list = api.list(&Default::default()).await.unwrap().items;
        let (holding, waiting) = decided(&list);
        if holding + waiting == REQUESTS || std::time::Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (holding, waiting) = decided(&list);
    assert_eq!(
        (holding, waiting),
        (ROOM as usize, REQUESTS - ROOM as usize),
        "50 reserved, 150 waiting"
    );
    let message = list
        .iter()
        .find(|r| r.status.as_ref().and_then(|s| s.phase) == Some(Phase::QuotaExceeded))
        .and_then(|r| r.status.clone())
        .and_then(|s| s.message)
        .unwrap();
    assert_eq!(
        message,
        format!(
            "quota {ns}/room-for-50: vcpu requested 1, available 0 of 50 (waits until quota frees up or the request asks for less)"
        )
    );

    // Room frees up: the earliest waiting requests (submission order) take it.
    let mut waiting: Vec<&ResourceRequest> = list.iter().filter(|r| held_vcpu(r) == 0).collect();
    waiting.sort_by_key(|r| (r.creation_timestamp(), r.name_any()));
    let next: Vec<String> = waiting.iter().take(5).map(|r| r.name_any()).collect();
    let freed: Vec<String> = list
        .iter()
        .filter(|r| held_vcpu(r) > 0)
        .take(5)
        .map(|r| r.name_any())
        .collect();
    for name in &freed {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for name in &next {
        wait_for(&api, name, Duration::from_secs(60), |r| held_vcpu(r) > 0)
            .await
            .unwrap();
    }
    let after = api.list(&Default::default()).await.unwrap().items;
    assert_eq!(
        after.iter().filter(|r| held_vcpu(r) > 0).count(),
        ROOM as usize,
        "still exactly 50 after the release"
    );

    stop_tx.send_replace(true);
    let (max_requests, max_quota) = observer.await.unwrap();
    assert!(
        max_requests <= ROOM,
        "an observer saw {max_requests} vCPU reserved across requests (hard {ROOM})"
    );
    assert!(
        max_quota <= ROOM,
        "the quota's status showed {max_quota} vCPU held (hard {ROOM})"
    );
    assert!(
        max_requests == ROOM,
        "the observer saw the quota fill up (saw {max_requests})"
    );
    operator.terminate().unwrap();
}
