//! What the integration tests share: the CRD, a namespace of their own with the operator
//! running in-process for it, and bounded waits.
#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::future::Future;
use std::time::{Duration, Instant};

use flaskmongo_crd::FlaskMongoApp;
use flaskmongo_operator::{Config, Metrics};
use k8s_openapi::api::core::v1::{Event as CoreEvent, PersistentVolume};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Field manager of what the tests themselves apply.
pub const TEST_MANAGER: &str = "flaskmongo-tests";

/// The admin client of the local stack.
pub async fn client() -> Client {
    testenv::stack().client().await
}

/// Installs (or updates) the CRD and waits until it is served.
pub async fn install_crd(client: &Client) {
    testenv::install_crd(client, &FlaskMongoApp::crd(), TEST_MANAGER)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Switches the object `name` to `deletionPolicy: Delete` and waits for the operator's
/// finalizer, as a user does before deleting it: deleted before the finalizer is there, an
/// object keeps its data as under `Retain`.
pub async fn switch_to_delete(apps: &Api<FlaskMongoApp>, name: &str) {
    patch_spec(
        apps,
        name,
        json!({ "mongo": { "storage": { "deletionPolicy": "Delete" } } }),
    )
    .await;
    wait_for(
        "the finalizer that removes the data",
        Duration::from_secs(30),
        || async {
            let app = apps.get(name).await.ok()?;
            (app.finalizers() == [flaskmongo_operator::plan::FINALIZER]).then_some(())
        },
    )
    .await;
}

/// Merges `patch` into the spec of the object `name`.
pub async fn patch_spec(apps: &Api<FlaskMongoApp>, name: &str, patch: Value) -> FlaskMongoApp {
    apps.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": patch })),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot patch FlaskMongoApp {name}: {e}"))
}

/// A namespaced kind the tests read.
pub trait Namespaced:
    kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
}

impl<K> Namespaced for K where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
{
}

/// A namespace of the test's own with the operator running in-process for it.
pub struct Env {
    /// Admin client.
    pub client: Client,
    /// The test's namespace.
    pub namespace: String,
    /// The in-process operator's counters.
    pub metrics: Metrics,
    namespace_handle: Option<testenv::TestNamespace>,
    operator: Option<InProcess>,
}

/// The operator running in-process (`flaskmongo_operator::run`) until told to stop.
pub struct InProcess {
    stop: oneshot::Sender<()>,
    task: JoinHandle<flaskmongo_operator::Result<()>>,
}

impl InProcess {
    /// Starts the operator with `client` and `config`.
    pub fn start(client: Client, config: Config) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(flaskmongo_operator::run(client, config, async move {
            let _ = stopped.await;
        }));
        Self { stop, task }
    }

    /// Panics, with how the operator ended, if it has already stopped.
    pub async fn assert_running(&mut self) {
        if self.task.is_finished() {
            panic!(
                "the operator stopped on its own: {:?}",
                (&mut self.task).await
            );
        }
    }

    /// Tells the operator to stop; panics unless it ends without error within `timeout`.
    pub async fn stop_within(self, timeout: Duration) {
        let _ = self.stop.send(());
        tokio::time::timeout(timeout, self.task)
            .await
            .unwrap_or_else(|_| panic!("the operator stops within {timeout:?} of being told"))
            .expect("the operator task does not panic")
            .expect("the operator stops without error");
    }
}

impl Env {
    /// CRD installed, namespace created, operator started (re-checking every `requeue`).
    pub async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, Duration::from_secs(300)).await
    }

    /// As [`Env::start`], with the given periodic re-check interval.
    pub async fn start_with(prefix: &str, requeue: Duration) -> Self {
        let mut env = Self::without_operator(prefix).await;
        env.start_operator(requeue);
        env
    }

    /// Starts an operator scoped to the test's namespace, re-checking every `requeue`.
    pub fn start_operator(&mut self, requeue: Duration) {
        let mut config = Config::new(Some(self.namespace.clone()));
        config.requeue = requeue;
        config.metrics = self.metrics.clone();
        self.operator = Some(InProcess::start(self.client.clone(), config));
    }

    /// CRD installed and namespace created, no operator.
    pub async fn without_operator(prefix: &str) -> Self {
        let client = client().await;
        install_crd(&client).await;
        let namespace = testenv::TestNamespace::create(&client, prefix).await;
        Self {
            client,
            namespace: namespace.name.clone(),
            metrics: Metrics::new(),
            namespace_handle: Some(namespace),
            operator: None,
        }
    }

    /// An API of the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The static volumes (cluster-wide).
    pub fn volumes(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    /// The name of the static volume of the object `app` of the test's namespace.
    pub fn volume_name(&self, app: &str) -> String {
        format!("{}.{app}.mongo", self.namespace)
    }

    /// Applies a `FlaskMongoApp` given as JSON (as `kubectl apply --server-side` would,
    /// with strict field validation).
    pub async fn apply(&self, name: &str, spec: Value) -> kube::Result<FlaskMongoApp> {
        let object = json!({
            "apiVersion": "flaskmongo.dev/v1alpha1",
            "kind": "FlaskMongoApp",
            "metadata": { "name": name },
            "spec": spec,
        });
        self.api::<FlaskMongoApp>()
            .patch(
                name,
                &PatchParams::apply(TEST_MANAGER).force().validation_strict(),
                &Patch::Apply(&object),
            )
            .await
    }

    /// Merges `patch` into the object's spec.
    pub async fn patch_spec(&self, name: &str, patch: Value) -> FlaskMongoApp {
        patch_spec(&self.api(), name, patch).await
    }

    /// The object, as stored.
    pub async fn get(&self, name: &str) -> FlaskMongoApp {
        self.api::<FlaskMongoApp>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("cannot get FlaskMongoApp {name}: {e}"))
    }

    /// Waits until the condition `type_` has `status` for the current generation.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> FlaskMongoApp {
        let api = self.api::<FlaskMongoApp>();
        let started = Instant::now();
        loop {
            let app = api.get_opt(name).await.ok().flatten();
            if let Some(app) = &app {
                let matches = app.condition(type_).is_some_and(|c| {
                    c.status == status && c.observed_generation == app.metadata.generation
                });
                if matches {
                    return app.clone();
                }
            }
            // Say what was seen, so a timeout can be understood from the log alone.
            let seen = app.and_then(|a| a.status).map(|s| format!("{s:?}"));
            assert!(
                started.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {type_}={status} on {name}; status: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits for `Ready=True`.
    pub async fn wait_ready(&self, name: &str) -> FlaskMongoApp {
        self.wait_condition(name, "Ready", "True", Duration::from_secs(90))
            .await
    }

    /// Waits until the object `name` of kind `K` satisfies `check`.
    pub async fn wait_child<K: Namespaced>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&K) -> bool,
    ) -> K {
        self.wait_object(name, what, |object: Option<K>| object.filter(|o| check(o)))
            .await
    }

    /// Waits until the object `name` of kind `K` is gone.
    pub async fn wait_gone<K: Namespaced>(&self, name: &str) {
        self.wait_object(name, &format!("{name} to be gone"), |object: Option<K>| {
            object.is_none().then_some(())
        })
        .await
    }

    async fn wait_object<K: Namespaced, T>(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(Option<K>) -> Option<T>,
    ) -> T {
        let api = self.api::<K>();
        wait_for(what, Duration::from_secs(90), || async {
            let object = api.get_opt(name).await.ok()?;
            check(object)
        })
        .await
    }

    /// Waits until an Event about `object` (core/v1 view, as `kubectl describe` shows them)
    /// matches `matches`, and returns it. The operator sends Events shortly after the change
    /// they report, so this waits up to 30 s.
    pub async fn wait_event(
        &self,
        object: &str,
        what: &str,
        matches: impl Fn(&CoreEvent) -> bool,
    ) -> CoreEvent {
        wait_for(what, Duration::from_secs(30), || async {
            let events = self.events(object).await.ok()?;
            events.into_iter().find(|event| matches(event))
        })
        .await
    }

    /// The Events about `object` in the test's namespace.
    pub async fn events(&self, object: &str) -> kube::Result<Vec<CoreEvent>> {
        let params = ListParams::default().fields(&format!("involvedObject.name={object}"));
        Ok(self.api::<CoreEvent>().list(&params).await?.items)
    }

    /// Deletes every `FlaskMongoApp` (letting the operator finish), stops the operator and
    /// deletes the namespace.
    pub async fn teardown(mut self) {
        let apps = self.api::<FlaskMongoApp>();
        if let Ok(list) = apps.list(&ListParams::default()).await {
            for app in list.items {
                let _ = apps.delete(&app.name_any(), &DeleteParams::default()).await;
            }
            if self.operator.is_some() {
                wait_for(
                    "the FlaskMongoApps to be deleted",
                    Duration::from_secs(60),
                    || async {
                        apps.list(&ListParams::default())
                            .await
                            .ok()
                            .filter(|l| l.items.is_empty())
                            .map(drop)
                    },
                )
                .await;
            }
        }
        self.stop_operator().await;
        // Volumes retained by design would otherwise pile up in the shared cluster.
        let volumes = self.volumes();
        let retained =
            ListParams::default().labels(&format!("flaskmongo.dev/namespace={}", self.namespace));
        let _ = volumes
            .delete_collection(&DeleteParams::default(), &retained)
            .await;
        if let Some(namespace) = self.namespace_handle.take() {
            namespace.delete().await;
        }
    }

    /// Stops the in-process operator and waits for it to return.
    pub async fn stop_operator(&mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop_within(Duration::from_secs(30)).await;
        }
    }
}
