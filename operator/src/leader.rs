//! Leader election on a `coordination.k8s.io/v1` Lease: only the holder runs controllers and
//! writes. A replica that can't renew in time stops, as client-go's elector does, so two
//! replicas never write at once for longer than the renew deadline.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

/// Lease timing, as in client-go's defaults.
#[derive(Clone, Debug)]
pub struct LeaseTiming {
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
    /// How often the holder renews, and a standby retries.
    pub retry: Duration,
    /// The holder gives up when it could not renew for this long.
    pub renew_deadline: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self::for_duration(Duration::from_secs(15))
    }
}

impl LeaseTiming {
    /// Timing for a lease of `duration`: renew every 2/15 of it, give up after 2/3 of it
    /// (client-go's 15 s / 2 s / 10 s, scaled).
    pub fn for_duration(duration: Duration) -> Self {
        LeaseTiming {
            duration,
            retry: duration * 2 / 15,
            renew_deadline: duration * 2 / 3,
        }
    }
}

/// Whether `me` may take or keep the lease at `now`: it is ours, unheld, or expired.
pub fn may_hold(spec: &LeaseSpec, me: &str, now: Timestamp) -> bool {
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(holder) if holder == me => true,
        Some(_) => {
            let Some(MicroTime(renewed)) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())
            else {
                return true;
            };
            let secs = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            *renewed + SignedDuration::from_secs(secs) < now
        }
    }
}

/// The spec to write when `me` takes or renews the lease.
pub fn held_by(current: &LeaseSpec, me: &str, timing: &LeaseTiming, now: Timestamp) -> LeaseSpec {
    let renewing = current.holder_identity.as_deref() == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(i32::try_from(timing.duration.as_secs()).unwrap_or(15)),
        acquire_time: if renewing {
            current.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(current.lease_transitions.unwrap_or(0) + i32::from(!renewing)),
        ..current.clone()
    }
}

/// Contend for the lease until `shutdown` fires. `leading` turns true when this replica holds the
/// lease. Returns `Err` when leadership was lost (the caller should exit), `Ok` on shutdown, after
/// releasing the lease so that a standby takes over at once.
pub async fn contend(
    client: Client,
    namespace: &str,
    name: &str,
    me: &str,
    timing: LeaseTiming,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        let was_leading = *leading.borrow();
        match try_hold(&api, name, me, &timing).await {
            Ok(true) => {
                last_renewal = tokio::time::Instant::now();
                if !was_leading {
                    info!(lease = %format!("{namespace}/{name}"), identity = me, "became leader");
                    leading.send_replace(true);
                }
            }
            Ok(false) => {
                if was_leading {
                    anyhow::bail!("leader lease {namespace}/{name} was taken by another replica");
                }
            }
            Err(e) => {
                warn!(error = %e, "could not renew or acquire the leader lease");
                if was_leading && last_renewal.elapsed() > timing.renew_deadline {
                    anyhow::bail!(
                        "could not renew leader lease {namespace}/{name} within {:?}: {e}",
                        timing.renew_deadline
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(timing.retry) => {}
            _ = shutdown.changed() => {
                if *leading.borrow() {
                    release(&api, name, me).await;
                }
                return Ok(());
            }
        }
    }
}

async fn try_hold(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    timing: &LeaseTiming,
) -> kube::Result<bool> {
    let now = Timestamp::now();
    match api.get_opt(name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                spec: Some(held_by(&LeaseSpec::default(), me, timing, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            if !may_hold(&spec, me, now) {
                return Ok(false);
            }
            lease.spec = Some(held_by(&spec, me, timing, now));
            // replace carries the resourceVersion we read: a concurrent writer makes this a 409.
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

async fn release(api: &Api<Lease>, name: &str, me: &str) {
    let Ok(Some(mut lease)) = api.get_opt(name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(me) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    spec.acquire_time = None;
    match api.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => info!(identity = me, "released leader lease"),
        Err(e) => warn!(error = %e, "could not release leader lease; it expires on its own"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    fn held(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..Default::default()
        }
    }

    #[test]
    fn unheld_lease_may_be_taken() {
        assert!(may_hold(&LeaseSpec::default(), "a", at(0)));
    }

    #[test]
    fn live_lease_of_another_may_not() {
        assert!(!may_hold(&held("b", 100), "a", at(110)));
    }

    #[test]
    fn expired_lease_of_another_may_be_taken() {
        assert!(may_hold(&held("b", 100), "a", at(116)));
    }

    #[test]
    fn own_lease_is_renewed_without_a_transition() {
        let timing = LeaseTiming::default();
        let taken = held_by(&held("b", 100), "a", &timing, at(200));
        assert_eq!(taken.lease_transitions, Some(1));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(200))));
        let renewed = held_by(&taken, "a", &timing, at(205));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(200))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(205))));
    }
}
