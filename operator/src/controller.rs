//! The controller: watches, `reconcile` and `error_policy`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flaskmongo_crd::{DeletionPolicy, FlaskMongoApp};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::apply;
use crate::cache::{self, Cache};
use crate::children::{self, Instance, describe, secret};
use crate::error::{Error, Result};
use crate::events;
use crate::labels::{self, MANAGER};
use crate::metrics::Metrics;
use crate::status::{self, Failure, Observed};

/// Finalizer that lets the operator remove the data under `deletionPolicy: Delete`.
pub const FINALIZER: &str = "flaskmongo.dev/cleanup";
/// Field manager that keeps `spec.replicas` while the autoscaler takes it over.
const REPLICAS_HANDOFF_MANAGER: &str = "flaskmongo-operator-replicas-handoff";
/// Longest wait between attempts for an object whose reconcile keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Pause while the finalizer waits for the claim to go.
const CLEANUP_POLL: Duration = Duration::from_secs(2);

/// The watch caches of the children.
#[derive(Clone)]
pub struct Stores {
    deployments: Cache<Deployment>,
    services: Cache<Service>,
    hpas: Cache<HorizontalPodAutoscaler>,
    statefulsets: Cache<StatefulSet>,
    volumes: Cache<PersistentVolume>,
    secrets: Cache<PartialObjectMeta<Secret>>,
}

impl Stores {
    /// Waits until every cache holds its first complete list.
    async fn wait_until_ready(&self) {
        futures::join!(
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.hpas.wait_until_ready(),
            self.statefulsets.wait_until_ready(),
            self.volumes.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }
}

/// The children one reconcile created, updated or deleted, told in one Event at its end:
/// one write instead of one per child.
#[derive(Default)]
pub struct Changes(Mutex<Vec<(Verb, String)>>);

/// What happened to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    /// It did not exist and was made.
    Created,
    /// It existed and was changed.
    Updated,
    /// It was removed.
    Deleted,
}

impl Verb {
    /// The reason of an Event about this change.
    fn reason(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Updated => "Updated",
            Self::Deleted => "Deleted",
        }
    }

    /// The word for this change in a sentence.
    fn word(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

impl Changes {
    fn record(&self, verb: Verb, child: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((verb, child));
    }

    /// The Event's reason (the first of Created, Updated, Deleted that happened) and note
    /// (`created Secret a, Service a-mongo; deleted HorizontalPodAutoscaler a-web`), or
    /// `None` when nothing changed.
    pub fn summary(self) -> Option<(String, String)> {
        let mut changes = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        changes.sort_by_key(|(verb, _)| *verb);
        let reason = changes.first()?.0.reason().to_owned();
        let note = changes
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| {
                let children: Vec<&str> = group.iter().map(|(_, child)| child.as_str()).collect();
                format!("{} {}", group[0].0.word(), children.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        Some((reason, note))
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    events: events::Publisher,
    metrics: Metrics,
    stores: Stores,
    requeue: Duration,
    failures: Mutex<HashMap<ObjectRef<FlaskMongoApp>, u32>>,
}

impl Context {
    /// Queues a Warning about `app`.
    fn warn(&self, app: &FlaskMongoApp, reason: &str, note: String) {
        self.publish(app, EventType::Warning, reason.to_owned(), note);
    }

    /// Queues one Event telling what a reconcile of `app` changed, if anything.
    fn report(&self, app: &FlaskMongoApp, changes: Changes) {
        if let Some((reason, note)) = changes.summary() {
            self.publish(app, EventType::Normal, reason, note);
        }
    }

    fn publish(&self, app: &FlaskMongoApp, type_: EventType, reason: String, note: String) {
        let event = Event {
            type_,
            reason,
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        self.events.publish(event, app.object_ref(&()));
    }

    /// An API of one kind of child in `namespace`.
    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn reset_backoff(&self, app: &FlaskMongoApp) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ObjectRef::from(app));
    }
}

/// The cache key of the namespaced child `name` of `instance`.
fn here<K: Resource<DynamicType = ()>>(name: String, namespace: &str) -> ObjectRef<K> {
    ObjectRef::new(&name).within(namespace)
}

/// The scope of the watches.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// A cache of one kind of child and the stream that fills it and triggers reconciles.
fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    prune: fn(&mut K),
) -> (
    Cache<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (cache, mut writer) = cache::cache();
    let stream = relisting_watcher(api, config)
        .default_backoff()
        .modify(prune)
        .map_ok(move |event| futures::stream::iter(writer.apply(event)).map(Ok))
        .try_flatten();
    (cache, without_errors(stream))
}

/// Drops the managed fields of a cached object: they are most of its size, and unread.
fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// Keeps of a Deployment's managed fields only what [`owns_replicas`] reads: whether the
/// operator's own applies own `spec.replicas`. The full entry describes every field the
/// operator sets, most of a cached Deployment's memory.
fn keep_replicas_ownership(deployment: &mut Deployment) {
    let owned = owns_replicas(deployment);
    let entries = deployment.managed_fields_mut();
    entries.clear();
    if owned {
        entries.push(ManagedFieldsEntry {
            manager: Some(MANAGER.to_owned()),
            operation: Some("Apply".to_owned()),
            fields_v1: Some(FieldsV1(json!({ "f:spec": { "f:replicas": {} } }))),
            ..ManagedFieldsEntry::default()
        });
    }
}

/// The objects of a watch stream that backs off on its own, its errors logged and dropped.
/// The controller would back off its merged trigger stream after each error (up to 30 s,
/// reset only after 2 quiet minutes), and while it waits no watch is read, so every cache
/// would go stale long after the API server is back.
fn without_errors<K: Send + 'static>(
    stream: impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    stream.filter_map(|item| {
        std::future::ready(match item {
            Ok(object) => Some(Ok(object)),
            Err(error) => {
                tracing::warn!(%error, "watch failed; retrying");
                None
            }
        })
    })
}

/// `watcher(api, config)`, started afresh with a new list whenever the API server refuses
/// to resume a watch with 410 Gone. After an API server restart the resource version a
/// watcher resumes from is too old, and kube-runtime's watcher retries that same version
/// forever, so the caches would never see another change.
///
/// Each list is a streaming list (the API server's WatchList feature, beta and on by default
/// in v1.37): the existing objects arrive one watch event at a time, each pruned as it
/// arrives, instead of in pages of 500 whole objects, managed fields and all. On a restart
/// over 1,000 objects the pages added 30 MB to the operator's peak memory.
pub fn relisting_watcher<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let config = config.streaming_lists();
    futures::stream::repeat(()).flat_map(move |()| {
        watcher(api.clone(), config.clone()).scan(false, |gone, event| {
            if *gone {
                return std::future::ready(None);
            }
            *gone = is_gone(&event);
            std::future::ready(Some(event))
        })
    })
}

/// Whether `event` is a watch the API server refused with 410 Gone.
fn is_gone<K>(event: &watcher::Result<watcher::Event<K>>) -> bool {
    matches!(event, Err(watcher::Error::WatchStartFailed(kube::Error::Api(status))) if status.code == 410)
}

/// The `FlaskMongoApp` an object labelled by the operator belongs to.
fn owner_ref<K: Resource>(object: &K) -> Option<ObjectRef<FlaskMongoApp>> {
    let (namespace, name) = labels::owner(object.meta().labels.as_ref()?)?;
    Some(ObjectRef::new(name).within(namespace))
}

/// Runs the controller until `shutdown` resolves; `on_ready` is called once the caches
/// are filled.
pub async fn run(
    client: Client,
    settings: &crate::Config,
    identity: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let namespace = settings.namespace.as_deref();
    let selector = labels::managed_selector();
    let children = watcher::Config::default().labels(&selector);
    let (deployments, deployment_events) = cached(
        scoped::<Deployment>(&client, namespace),
        children.clone(),
        keep_replicas_ownership,
    );
    let (services, service_events) = cached(
        scoped::<Service>(&client, namespace),
        children.clone(),
        drop_managed_fields,
    );
    let (hpas, hpa_events) = cached(
        scoped::<HorizontalPodAutoscaler>(&client, namespace),
        children.clone(),
        drop_managed_fields,
    );
    let (statefulsets, statefulset_events) = cached(
        scoped::<StatefulSet>(&client, namespace),
        children.clone(),
        drop_managed_fields,
    );
    let volume_selector = match namespace {
        Some(namespace) => format!("{selector},{}={namespace}", labels::OWNER_NAMESPACE),
        None => selector.clone(),
    };
    let (volumes, volume_events) = cached(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default().labels(&volume_selector),
        drop_managed_fields,
    );
    // Only the Secret's existence matters, so its data is never cached.
    let (secrets, secret_events) = cached(
        scoped::<PartialObjectMeta<Secret>>(&client, namespace),
        children.clone(),
        drop_managed_fields,
    );

    let stores = Stores {
        deployments,
        services,
        hpas,
        statefulsets,
        volumes,
        secrets,
    };
    let ready_stores = stores.clone();
    tokio::spawn(async move {
        ready_stores.wait_until_ready().await;
        on_ready();
    });
    let events = events::Publisher::start(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(identity),
        },
    );
    let context = Arc::new(Context {
        events,
        client: client.clone(),
        metrics: settings.metrics.clone(),
        stores,
        requeue: settings.requeue,
        failures: Mutex::default(),
    });
    let (apps, mut app_writer) = reflector::store();
    let app_events = without_errors(
        relisting_watcher(
            scoped::<FlaskMongoApp>(&client, namespace),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(drop_managed_fields)
        .inspect_ok(move |event| {
            // kube-runtime's store shows the objects of a list only once it is complete, so
            // a reconcile one of them triggers would read the spec from before a relist.
            if let watcher::Event::InitApply(app) = event {
                app_writer.apply_watcher_event(&watcher::Event::Apply(app.clone()));
            }
            app_writer.apply_watcher_event(event);
        })
        .applied_objects(),
    );
    Controller::for_stream(app_events, apps)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(hpa_events)
        .owns_stream(statefulset_events)
        .watches_stream(volume_events, |volume| owner_ref(&volume))
        .watches_stream(secret_events, |secret| owner_ref(&secret))
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        })
        .await;
}

/// Brings the children of `app` to its spec and reports what it sees in the status.
pub async fn reconcile(app: Arc<FlaskMongoApp>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    tracing::debug!(object = %ObjectRef::from(app.as_ref()), "reconcile starts");
    ctx.stores.wait_until_ready().await;
    let instance = Instance::new(&app)?;
    let changes = Changes::default();
    if app.metadata.deletion_timestamp.is_some() {
        let result = finalize(&app, &instance, &ctx, &changes).await;
        ctx.report(&app, changes);
        return result;
    }
    let result = if app.spec.paused {
        Ok(())
    } else {
        converge(&app, &instance, &ctx, &changes).await
    };
    ctx.report(&app, changes);
    // The object changed while it was being read: the retry soon after sees the new
    // version, so this is not worth reporting.
    if let Some(error) = result.as_ref().err().filter(|e| e.is_conflict()) {
        tracing::debug!(%error, "the object changed meanwhile; retrying");
        return result.map(|()| Action::requeue(ctx.requeue));
    }
    let failure = result.as_ref().err().map(|error| Failure {
        reason: error.reason().to_owned(),
        message: error.to_string(),
    });
    if let Some(failure) = &failure {
        ctx.warn(&app, &failure.reason, failure.message.clone());
    }
    update_status(&app, &instance, &ctx, failure).await?;
    result?;
    ctx.reset_backoff(&app);
    Ok(Action::requeue(ctx.requeue))
}

/// Waits longer after each failure of the same object: 1 s, 2 s, 4 s … up to 5 minutes.
pub fn error_policy(app: Arc<FlaskMongoApp>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed(error.reason());
    let attempt = {
        let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(ObjectRef::from(app.as_ref())).or_default();
        *count = count.saturating_add(1);
        *count
    };
    let delay = backoff_delay(attempt);
    tracing::warn!(object = %ObjectRef::from(app.as_ref()), %error, attempt, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Delay before retry number `attempt` (counted from 1).
pub fn backoff_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_BACKOFF)
}

async fn converge(
    app: &FlaskMongoApp,
    instance: &Instance<'_>,
    ctx: &Context,
    changes: &Changes,
) -> Result<()> {
    // The check for retained data only reads, so it overlaps the finalizer patch; the
    // Secret itself is created once the finalizer is there to clean it up.
    let (finalizer, secret_missing) =
        futures::join!(ensure_finalizer(app, ctx), secret_missing(instance, ctx));
    finalizer?;
    if secret_missing? {
        create_secret(instance, ctx, changes).await?;
    }
    let desired = children::desired(instance);
    let stores = &ctx.stores;
    let services: Api<Service> = ctx.api(instance.namespace);
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let statefulsets: Api<StatefulSet> = ctx.api(instance.namespace);
    let deployments: Api<Deployment> = ctx.api(instance.namespace);
    let hpas: Api<HorizontalPodAutoscaler> = ctx.api(instance.namespace);
    // The children do not depend on one another, so they are applied concurrently. Every
    // child is tried even when one fails, so one refused object (say, a taken node port)
    // does not hold the others back; the first failure is reported.
    let (mongo_service, volume, statefulset, web_service, deployment, hpa) = futures::join!(
        sync(changes, &services, desired.mongo_service, &stores.services),
        async {
            match desired.persistent_volume {
                Some(volume) => sync(changes, &volumes, volume, &stores.volumes).await,
                None => Ok(()),
            }
        },
        sync(
            changes,
            &statefulsets,
            desired.statefulset,
            &stores.statefulsets
        ),
        sync(changes, &services, desired.web_service, &stores.services),
        sync_deployment(
            ctx,
            changes,
            &deployments,
            desired.deployment,
            instance.spec.autoscaling.min_replicas,
        ),
        async {
            match desired.hpa {
                Some(hpa) => sync(changes, &hpas, hpa, &stores.hpas).await,
                None => {
                    let name = instance.web_name();
                    if stores
                        .hpas
                        .contains(&here(name.clone(), instance.namespace))
                    {
                        delete(changes, &hpas, &name).await
                    } else {
                        Ok(())
                    }
                }
            }
        },
    );
    [
        mongo_service,
        volume,
        statefulset,
        web_service,
        deployment,
        hpa,
    ]
    .into_iter()
    .collect()
}

/// `desired` stamped with its hash, and its cached live version unless that already
/// matches it (then there is nothing to apply).
fn stale<K>(desired: K, cache: &Cache<K>) -> Result<Option<(K, Option<K>)>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned,
{
    let desired = apply::with_hash(desired)?;
    let live = cache.get(&cache::key(&desired))?;
    Ok((!apply::is_current(&desired, live.as_ref())?).then_some((desired, live)))
}

/// Applies `desired` unless its cached live version already matches it.
async fn sync<K>(changes: &Changes, api: &Api<K>, desired: K, cache: &Cache<K>) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    match stale(desired, cache)? {
        Some((desired, live)) => apply_child(changes, api, &desired, live.is_some()).await,
        None => Ok(()),
    }
}

async fn apply_child<K>(changes: &Changes, api: &Api<K>, desired: &K, existed: bool) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    tracing::debug!(child = %describe(desired), "applying");
    apply::apply(api, desired).await?;
    let verb = if existed {
        Verb::Updated
    } else {
        Verb::Created
    };
    tracing::info!(child = %describe(desired), "{}", verb.word());
    changes.record(verb, describe(desired));
    Ok(())
}

/// The Deployment, handing `spec.replicas` over to the autoscaler when it is turned on.
///
/// A field dropped from an apply is removed if no other manager owns it, and a Deployment
/// without `replicas` falls back to one pod. So before the first apply without `replicas`,
/// a second field manager applies the current count; it keeps the field until the
/// autoscaler's first change takes it over.
async fn sync_deployment(
    ctx: &Context,
    changes: &Changes,
    api: &Api<Deployment>,
    desired: Deployment,
    min_replicas: i32,
) -> Result<()> {
    let Some((mut desired, live)) = stale(desired, &ctx.stores.deployments)? else {
        return Ok(());
    };
    if live.is_none() && desired.spec.replicas.is_none() {
        // Created without `replicas`, it would run one pod until the autoscaler's first pass.
        // It starts at the autoscaler's minimum instead; the hash stays that of the spec
        // without `replicas`, so the count is handed over like any other.
        desired.spec.replicas = Some(min_replicas);
    }
    if let Some(live) = live
        .as_ref()
        .filter(|live| desired.spec.replicas.is_none() && owns_replicas(live))
    {
        let handoff = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": live.name_any(), "namespace": live.namespace() },
            "spec": { "replicas": live.spec.replicas },
        });
        apply::apply_as::<Deployment, _>(api, &handoff, REPLICAS_HANDOFF_MANAGER).await?;
    }
    apply_child(changes, api, &desired, live.is_some()).await
}

/// Whether the operator's own applies own the live Deployment's `spec.replicas`.
fn owns_replicas(deployment: &Deployment) -> bool {
    deployment.managed_fields().iter().any(|entry| {
        entry.manager.as_deref() == Some(MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0["f:spec"].get("f:replicas").is_some())
    })
}

async fn delete<K>(changes: &Changes, api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let what = format!("{} {name}", K::kind(&()));
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            tracing::info!(child = %what, "deleted");
            changes.record(Verb::Deleted, what);
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::kube(format!("delete {what}"), source)),
    }
}

async fn ensure_finalizer(app: &FlaskMongoApp, ctx: &Context) -> Result<()> {
    if app.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers = app.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    set_finalizers(app, ctx, finalizers).await
}

/// Replaces the finalizers, failing if the object changed since it was read.
async fn set_finalizers(app: &FlaskMongoApp, ctx: &Context, finalizers: Vec<String>) -> Result<()> {
    let api: Api<FlaskMongoApp> = Api::namespaced(
        ctx.client.clone(),
        app.namespace().as_deref().unwrap_or_default(),
    );
    let patch = json!({ "metadata": { "finalizers": finalizers, "resourceVersion": app.resource_version() } });
    api.patch(
        &app.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| {
        Error::kube(
            format!("set the finalizers of FlaskMongoApp {}", app.name_any()),
            source,
        )
    })
}

/// Whether the credentials Secret must be created. An existing one is never changed, and
/// none is created over data retained from an earlier object of this name: only the old
/// Secret holds its password.
async fn secret_missing(instance: &Instance<'_>, ctx: &Context) -> Result<bool> {
    let name = instance.secret_name();
    if ctx
        .stores
        .secrets
        .contains(&ObjectRef::new(&name).within(instance.namespace))
    {
        return Ok(false);
    }
    let Some(volume) = retained_volume(instance, ctx).await? else {
        return Ok(true);
    };
    // The cache holds only labelled Secrets; one restored by hand may lack the labels.
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), instance.namespace);
    let existing = api
        .get_metadata_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("get Secret {name}"), e))?;
    match existing {
        Some(_) => Ok(false),
        None => Err(Error::CredentialsMissing {
            volume,
            secret: name,
        }),
    }
}

/// Creates the credentials Secret with a new password.
async fn create_secret(instance: &Instance<'_>, ctx: &Context, changes: &Changes) -> Result<()> {
    let name = instance.secret_name();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), instance.namespace);
    let secret = secret::build(instance, &secret::generate_password());
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api.create(&params, &secret).await {
        Ok(_) => {
            changes.record(Verb::Created, format!("Secret {name}"));
            Ok(())
        }
        // Restored by hand without the labels the cache selects on.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::kube(format!("create Secret {name}"), source)),
    }
}

/// The volume or claim holding data from an earlier object of this name, if any.
async fn retained_volume(instance: &Instance<'_>, ctx: &Context) -> Result<Option<String>> {
    let volume = instance.volume_name();
    if ctx.stores.volumes.contains(&ObjectRef::new(&volume)) {
        return Ok(Some(format!("PersistentVolume {volume}")));
    }
    let claim = instance.claim_name();
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), instance.namespace);
    let existing = claims
        .get_metadata_opt(&claim)
        .await
        .map_err(|e| Error::kube(format!("get PersistentVolumeClaim {claim}"), e))?;
    Ok(existing.map(|_| format!("PersistentVolumeClaim {claim}")))
}

/// On deletion: under `Delete`, removes the StatefulSet (so no pod holds the claim), the
/// claim, then the volume and the Secret; under `Retain`, keeps them all.
async fn finalize(
    app: &FlaskMongoApp,
    instance: &Instance<'_>,
    ctx: &Context,
    changes: &Changes,
) -> Result<Action> {
    if !app.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    if app.spec.mongo.storage.deletion_policy == DeletionPolicy::Delete {
        let namespace = instance.namespace;
        let client = ctx.client.clone();
        delete(
            changes,
            &Api::<StatefulSet>::namespaced(client.clone(), namespace),
            &instance.mongo_name(),
        )
        .await?;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        let claim = instance.claim_name();
        delete(changes, &claims, &claim).await?;
        let still_there = claims
            .get_metadata_opt(&claim)
            .await
            .map_err(|e| Error::kube(format!("get PersistentVolumeClaim {claim}"), e))?;
        if still_there.is_some() {
            return Ok(Action::requeue(CLEANUP_POLL));
        }
        if instance.spec.mongo.storage.persistent_volume.create {
            delete(
                changes,
                &Api::<PersistentVolume>::all(client.clone()),
                &instance.volume_name(),
            )
            .await?;
        }
        delete(
            changes,
            &Api::<Secret>::namespaced(client, namespace),
            &instance.secret_name(),
        )
        .await?;
    }
    let finalizers = app
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    set_finalizers(app, ctx, finalizers).await?;
    Ok(Action::await_change())
}

/// Patches the status when what the children report differs from it.
async fn update_status(
    app: &FlaskMongoApp,
    instance: &Instance<'_>,
    ctx: &Context,
    failure: Option<Failure>,
) -> Result<()> {
    let namespace = instance.namespace;
    let deployment = ctx
        .stores
        .deployments
        .get(&here(instance.web_name(), namespace))?;
    let web_service = ctx
        .stores
        .services
        .get(&here(instance.web_name(), namespace))?;
    let statefulset = ctx
        .stores
        .statefulsets
        .get(&here(instance.mongo_name(), namespace))?;
    let observed = Observed {
        deployment: deployment.as_ref(),
        web_service: web_service.as_ref(),
        statefulset: statefulset.as_ref(),
        failure,
    };
    let now =
        Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
    let status = status::compute(app, &observed, &Time(now));
    if app.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<FlaskMongoApp> = Api::namespaced(ctx.client.clone(), instance.namespace);
    let patch = json!({
        "apiVersion": FlaskMongoApp::api_version(&()),
        "kind": FlaskMongoApp::kind(&()),
        "status": status,
    });
    api.patch_status(
        instance.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| {
        Error::kube(
            format!("update the status of FlaskMongoApp {}", instance.name),
            source,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment_managed_by(entries: Vec<(&str, &str, serde_json::Value)>) -> Deployment {
        let mut deployment = Deployment::default();
        *deployment.managed_fields_mut() = entries
            .into_iter()
            .map(|(manager, operation, fields)| ManagedFieldsEntry {
                manager: Some(manager.to_owned()),
                operation: Some(operation.to_owned()),
                fields_v1: Some(FieldsV1(fields)),
                ..ManagedFieldsEntry::default()
            })
            .collect();
        deployment
    }

    #[test]
    fn the_cached_deployment_keeps_only_whether_the_operator_owns_replicas() {
        let template = json!({ "f:template": { "f:spec": { "f:containers": {} } } });
        let mut owned = deployment_managed_by(vec![
            (
                MANAGER,
                "Apply",
                json!({ "f:spec": { "f:replicas": {}, "f:template": template["f:template"] } }),
            ),
            (
                "kube-controller-manager",
                "Update",
                json!({ "f:status": {} }),
            ),
        ]);
        keep_replicas_ownership(&mut owned);
        assert!(owns_replicas(&owned));
        assert_eq!(owned.managed_fields().len(), 1);
        assert_eq!(
            owned.managed_fields()[0].fields_v1.as_ref().unwrap().0,
            json!({ "f:spec": { "f:replicas": {} } })
        );

        let mut handed_over = deployment_managed_by(vec![
            (MANAGER, "Apply", json!({ "f:spec": template.clone() })),
            (
                REPLICAS_HANDOFF_MANAGER,
                "Apply",
                json!({ "f:spec": { "f:replicas": {} } }),
            ),
        ]);
        keep_replicas_ownership(&mut handed_over);
        assert!(!owns_replicas(&handed_over));
        assert!(handed_over.managed_fields().is_empty());
    }

    #[test]
    fn one_event_tells_every_change_of_a_reconcile() {
        let changes = Changes::default();
        changes.record(Verb::Deleted, "HorizontalPodAutoscaler a-web".to_owned());
        changes.record(Verb::Created, "Secret a".to_owned());
        changes.record(Verb::Updated, "Deployment a-web".to_owned());
        changes.record(Verb::Created, "Service a-mongo".to_owned());
        let (reason, note) = changes.summary().expect("something changed");
        assert_eq!(reason, "Created");
        assert_eq!(
            note,
            "created Secret a, Service a-mongo; updated Deployment a-web; \
             deleted HorizontalPodAutoscaler a-web"
        );
        assert_eq!(Changes::default().summary(), None);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX), MAX_BACKOFF);
    }
}
