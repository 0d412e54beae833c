//! A watch on the requests of a namespace that records when each one was first seen in a phase.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::Notify;
use yunzhang::api::{Phase, ResourceRequest};

/// The latest object and when a phase was first seen, by request name.
#[derive(Default)]
pub struct Seen {
    pub latest: HashMap<String, ResourceRequest>,
    pub first_in: HashMap<(String, Phase), Instant>,
}

pub struct PhaseWatch {
    pub seen: Arc<Mutex<Seen>>,
    pub changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl PhaseWatch {
    /// Start watching, and return once the initial list is in.
    pub async fn start(client: &Client, ns: &str) -> Self {
        let api: Api<ResourceRequest> = Api::namespaced(client.clone(), ns);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let ready = Arc::new(Notify::new());
        let (s, c, r) = (seen.clone(), changed.clone(), ready.clone());
        let task = tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let now = Instant::now();
                let obj = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    Ok(watcher::Event::InitDone) => {
                        r.notify_one();
                        continue;
                    }
                    _ => continue,
                };
                let name = obj.name_any();
                let phase = obj.status.as_ref().and_then(|s| s.phase);
                let mut seen = s.lock().expect("not poisoned");
                if let Some(p) = phase {
                    seen.first_in.entry((name.clone(), p)).or_insert(now);
                }
                seen.latest.insert(name, obj);
                drop(seen);
                c.notify_waiters();
            }
        });
        ready.notified().await;
        PhaseWatch {
            seen,
            changed,
            task,
        }
    }

    /// Wait until `done` holds for what was seen, or `timeout`.
    pub async fn until(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(&Seen) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if done(&self.seen.lock().expect("not poisoned")) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                // One last look: a notification may have raced the check.
                if done(&self.seen.lock().expect("not poisoned")) {
                    return Ok(());
                }
                anyhow::bail!("timed out after {timeout:?}");
            }
        }
    }

    /// How many requests have been seen in `phase`.
    pub fn count_in(&self, phase: Phase) -> usize {
        let seen = self.seen.lock().expect("not poisoned");
        seen.first_in.keys().filter(|(_, p)| *p == phase).count()
    }
}

impl Drop for PhaseWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
