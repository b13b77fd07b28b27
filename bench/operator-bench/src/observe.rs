//! Watches a namespace and records when each child first appears, when each
//! `FlaskMongoApp` first reports a current status and `Ready=True`.
//!
//! Times are taken when the watch event arrives, as a user watching the cluster would see
//! them; the delivery delay of a watch on this machine is a few milliseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flaskmongo_crd::FlaskMongoApp;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

/// When an app first had a current status and first was Ready.
#[derive(Debug, Default, Clone, Copy)]
pub struct AppSeen {
    /// `status.observedGeneration == metadata.generation`.
    pub current: Option<Instant>,
    /// `Ready=True` for the current generation.
    pub ready: Option<Instant>,
}

#[derive(Default)]
struct Seen {
    /// `Kind/name` → first seen.
    children: HashMap<String, Instant>,
    apps: HashMap<String, AppSeen>,
}

/// The watches of one namespace; stopped when dropped.
pub struct Observer {
    namespace: String,
    seen: Arc<Mutex<Seen>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Watches that list before the clock starts: one per kind of child (six namespaced kinds and
/// the cluster-scoped volume) and the objects' own.
const WATCHES: usize = 8;

impl Observer {
    /// Starts the watches and returns once each has listed what exists.
    pub async fn start(client: &Client, namespace: &str) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let listed = Arc::new(AtomicUsize::new(0));
        let mut tasks = vec![
            children::<Deployment>(client, Some(namespace), "Deployment", &seen, &listed),
            children::<StatefulSet>(client, Some(namespace), "StatefulSet", &seen, &listed),
            children::<Service>(client, Some(namespace), "Service", &seen, &listed),
            children::<HorizontalPodAutoscaler>(
                client,
                Some(namespace),
                "HorizontalPodAutoscaler",
                &seen,
                &listed,
            ),
            children::<Secret>(client, Some(namespace), "Secret", &seen, &listed),
            children::<NetworkPolicy>(client, Some(namespace), "NetworkPolicy", &seen, &listed),
            children::<PersistentVolume>(client, None, "PersistentVolume", &seen, &listed),
        ];
        let apps_seen = seen.clone();
        tasks.push(watch(
            Api::<FlaskMongoApp>::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            &listed,
            move |app| record_app(&apps_seen, &app, Instant::now()),
        ));
        while listed.load(Ordering::SeqCst) < WATCHES {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Self {
            namespace: namespace.to_owned(),
            seen,
            tasks,
        }
    }

    /// When the last of the eight children of `app` appeared, if all have.
    pub fn children_done(&self, app: &str) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        child_keys(&self.namespace, app)
            .iter()
            .map(|key| seen.children.get(key).copied())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    }

    /// What was seen of `app`'s status.
    pub fn app(&self, app: &str) -> AppSeen {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.apps.get(app).copied().unwrap_or_default()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The watch-cache keys of the eight children of `app` in `namespace`.
fn child_keys(namespace: &str, app: &str) -> [String; 8] {
    [
        format!("Deployment/{app}-web"),
        format!("Service/{app}-web"),
        format!("HorizontalPodAutoscaler/{app}-web"),
        format!("StatefulSet/{app}-mongo"),
        format!("Service/{app}-mongo"),
        format!("Secret/{app}-mongo-credentials"),
        format!("NetworkPolicy/{app}-network"),
        format!("PersistentVolume/{namespace}.{app}.mongo"),
    ]
}

fn record_app(seen: &Mutex<Seen>, app: &FlaskMongoApp, at: Instant) {
    let generation = app.metadata.generation;
    let current = app.status.as_ref().is_some_and(|status| {
        status.observed_generation.is_some() && status.observed_generation == generation
    });
    let ready = app
        .condition("Ready")
        .is_some_and(|c| c.status == "True" && c.observed_generation == generation);
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let entry = seen.apps.entry(app.name_any()).or_default();
    if current && entry.current.is_none() {
        entry.current = Some(at);
    }
    if ready && entry.ready.is_none() {
        entry.ready = Some(at);
    }
}

/// Records the first sighting of each object of kind `K` in `namespace` (or the cluster);
/// metadata only, to stay small.
fn children<K>(
    client: &Client,
    namespace: Option<&str>,
    kind: &'static str,
    seen: &Arc<Mutex<Seen>>,
    listed: &Arc<AtomicUsize>,
) -> JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    // One code path for namespaced kinds and volumes: a cluster-wide watch, narrowed to
    // the namespace by a field selector where there is one.
    let api: Api<PartialObjectMeta<K>> = Api::all_with(client.clone(), &());
    let config = match namespace {
        Some(namespace) => {
            watcher::Config::default().fields(&format!("metadata.namespace={namespace}"))
        }
        None => watcher::Config::default(),
    };
    let seen = seen.clone();
    watch(api, config, listed, move |object| {
        let key = format!("{kind}/{}", object.name_any());
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.children.entry(key).or_insert_with(Instant::now);
    })
}

/// Runs a watch of `api`, counting each complete list in `listed` and handing every object
/// it sees to `record`.
fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    listed: &Arc<AtomicUsize>,
    mut record: impl FnMut(K) + Send + 'static,
) -> JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    let listed = listed.clone();
    tokio::spawn(async move {
        let events = watcher(api, config).default_backoff();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::InitDone) => {
                    listed.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Event::Apply(object) | Event::InitApply(object)) => record(object),
                _ => {}
            }
        }
    })
}
