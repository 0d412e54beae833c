//! The notifications Secret read as the operator's ServiceAccount against the real API server:
//! absent means off, a mistake names the field, a good one starts the endpoints. (Delivery,
//! formats and signatures are tested in the operator's unit tests with local receivers.)

use anyhow::ensure;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use yunzhang::{
    metrics::Metrics,
    notify::{Notifier, NotifyError},
};
use yunzhang_integration::*;

async fn secret(name: &str, config: &str) -> anyhow::Result<()> {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
        "stringData": {"config.yaml": config}
    }))?;
    Api::<Secret>::namespaced(admin().await, OPERATOR_NAMESPACE)
        .create(&PostParams::default(), &s)
        .await?;
    Ok(())
}

#[tokio::test]
async fn notifications_secret_as_the_operator_reads_it() -> anyhow::Result<()> {
    let operator = client_as(
        OPERATOR_USER,
        &[
            "system:serviceaccounts",
            "system:serviceaccounts:yunzhang-system",
        ],
    )
    .await;
    let metrics = Metrics::default();

    let absent = unique("notifications");
    let n = Notifier::from_secret(operator.clone(), OPERATOR_NAMESPACE, &absent, &metrics).await?;
    ensure!(!n.is_enabled(), "no Secret: notifications off");

    let broken = unique("notifications");
    secret(
        &broken,
        "endpoints:\n- {name: ops, format: wecom, url: 'https://qyapi.example/send?key=SECRETKEY', secret: x}\n",
    )
    .await?;
    match Notifier::from_secret(operator.clone(), OPERATOR_NAMESPACE, &broken, &metrics).await {
        Err(e @ NotifyError::Config { .. }) => {
            let text = e.to_string();
            ensure!(
                text.contains(&broken) && text.contains("endpoints[0].secret"),
                "{text}"
            );
            ensure!(!text.contains("SECRETKEY"), "never shows the URL: {text}");
        }
        Err(e) => anyhow::bail!("expected a configuration error, got {e}"),
        Ok(_) => anyhow::bail!("a broken configuration was accepted"),
    }

    let good = unique("notifications");
    secret(
        &good,
        "endpoints:\n- {name: audit, format: generic, url: 'http://127.0.0.1:9/hook', secret: k}\n",
    )
    .await?;
    let n = Notifier::from_secret(operator, OPERATOR_NAMESPACE, &good, &metrics).await?;
    ensure!(n.is_enabled());

    let secrets = Api::<Secret>::namespaced(admin().await, OPERATOR_NAMESPACE);
    for name in [broken, good] {
        secrets.delete(&name, &DeleteParams::default()).await?;
    }
    Ok(())
}
