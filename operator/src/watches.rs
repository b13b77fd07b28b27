//! Watches: the caches a reconcile observes from, and the streams that fill them and
//! trigger reconciles. Children are watched by the operator's labels, the claims by their
//! metadata only. Secrets are not watched: the operator may not read them.

use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use flaskmongo_crd::FlaskMongoApp;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
use kube::api::Api;
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::Notify;

use crate::cache::{self, Cache};
use crate::children::{Instance, volume_preparation, volume_preparer};
use crate::error::Refusal;
use crate::labels::{self, MANAGER};
use crate::observe;
use crate::plan::owns_replicas;

/// The watch caches: the children, and what decides whether a Secret may be generated.
#[derive(Clone)]
pub struct Stores {
    /// Web Deployments; of their managed fields, only whether the operator owns
    /// `spec.replicas` is kept.
    pub deployments: Cache<Deployment>,
    /// Web and MongoDB Services.
    pub services: Cache<Service>,
    /// Web autoscalers.
    pub hpas: Cache<HorizontalPodAutoscaler>,
    /// MongoDB StatefulSets.
    pub statefulsets: Cache<StatefulSet>,
    /// NetworkPolicies around MongoDB.
    pub network_policies: Cache<NetworkPolicy>,
    /// Static volumes (cluster-scoped), selected by the namespace label when the operator
    /// watches one namespace.
    pub volumes: Cache<PersistentVolume>,
    /// MongoDB claims, metadata only: whether one exists (data retained from an earlier
    /// object of the same name) and whether it is being deleted.
    pub claims: Cache<PartialObjectMeta<PersistentVolumeClaim>>,
    /// The pods that prepare volumes' directories, in the operator's namespace for them.
    pub volume_preparations: Cache<Pod>,
    /// The volume preparer's pods, one per node, in the same namespace: where they are
    /// Ready, a new volume may go.
    pub volume_preparers: Cache<Pod>,
    /// The nodes, without their status: a cordoned or tainted one takes no new volume.
    pub nodes: Cache<Node>,
}

impl Stores {
    /// Waits until every cache holds its first complete list.
    pub async fn wait_until_ready(&self) {
        futures::join!(
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.hpas.wait_until_ready(),
            self.statefulsets.wait_until_ready(),
            self.network_policies.wait_until_ready(),
            self.volumes.wait_until_ready(),
            self.claims.wait_until_ready(),
            self.volume_preparations.wait_until_ready(),
            self.volume_preparers.wait_until_ready(),
            self.nodes.wait_until_ready(),
        );
    }
}

/// The controller of the `FlaskMongoApp`s in `namespace` (all when `None`), triggered by
/// every watch, and the caches those watches fill; the volumes' preparation pods are
/// watched in `preparation_namespace`. `orphans` is notified when an object is deleted, a
/// list of the objects is complete or a preparation pod changes. Concurrency, shutdown and
/// the reconcile itself are the caller's.
pub fn controller(
    client: &Client,
    namespace: Option<&str>,
    preparation_namespace: &str,
    orphans: &Arc<Notify>,
) -> (Controller<FlaskMongoApp>, Stores) {
    let selector = labels::managed_selector();
    let children = watcher::Config::default().labels(&selector);
    let (deployments, deployment_events) =
        cached(scoped::<Deployment>(client, namespace), children.clone());
    let (services, service_events) = cached(scoped::<Service>(client, namespace), children.clone());
    let (hpas, hpa_events) = cached(
        scoped::<HorizontalPodAutoscaler>(client, namespace),
        children.clone(),
    );
    let (statefulsets, statefulset_events) =
        cached(scoped::<StatefulSet>(client, namespace), children.clone());
    let (network_policies, network_policy_events) =
        cached(scoped::<NetworkPolicy>(client, namespace), children);
    // Cluster-scoped volumes and the preparation pods of every namespace's objects: only
    // those of the watched namespace's objects, when the operator watches one.
    let of_watched = |selector: String| match namespace {
        Some(namespace) => format!("{selector},{}={namespace}", labels::OWNER_NAMESPACE),
        None => selector,
    };
    let volume_selector = of_watched(selector.clone());
    let (volumes, volume_events) = cached(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default().labels(&volume_selector),
    );
    let (volume_preparations, volume_preparation_events) = cached(
        Api::<Pod>::namespaced(client.clone(), preparation_namespace),
        watcher::Config::default().labels(&of_watched(volume_preparation::selector())),
    );
    let (volume_preparers, volume_preparer_events) = cached(
        Api::<Pod>::namespaced(client.clone(), preparation_namespace),
        watcher::Config::default().labels(&volume_preparer::selector()),
    );
    let (nodes, node_events) = cached(Api::<Node>::all(client.clone()), watcher::Config::default());
    let preparation_changed = Arc::clone(orphans);
    let volume_preparation_events =
        volume_preparation_events.inspect(move |_| preparation_changed.notify_one());
    let (claims, claim_events) = cached(
        scoped::<PartialObjectMeta<PersistentVolumeClaim>>(client, namespace),
        watcher::Config::default().labels(&labels::claim_selector()),
    );
    // A claim matters to its owner when it goes (the clean-up under `Delete` waits for
    // that); its binding and status changes would only add reconciles that find nothing to do.
    let remaining = claims.clone();
    let claims_gone = claim_events.filter(move |claim| {
        std::future::ready(
            claim
                .as_ref()
                .map_or(true, |claim| !remaining.contains(&cache::key(claim))),
        )
    });

    let (apps, mut app_writer) = reflector::store();
    let objects_gone = Arc::clone(orphans);
    let app_events = without_errors(
        relisting_watcher(
            scoped::<FlaskMongoApp>(client, namespace),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(FlaskMongoApp::prune)
        .inspect_ok(move |event| {
            // kube-runtime's store shows the objects of a list only once it is complete, so
            // a reconcile one of them triggers would read the spec from before a relist.
            if let watcher::Event::InitApply(app) = event {
                app_writer.apply_watcher_event(&watcher::Event::Apply(app.clone()));
            }
            app_writer.apply_watcher_event(event);
            // Once the store no longer holds them: objects deleted, or gone while the watch
            // was down (a relist drops them without a Delete).
            if matches!(event, watcher::Event::Delete(_) | watcher::Event::InitDone) {
                objects_gone.notify_one();
            }
        })
        .applied_objects()
        .predicate_filter(reconcile_trigger, PredicateConfig::default()),
    );
    let stores = Stores {
        deployments,
        services,
        hpas,
        statefulsets,
        network_policies,
        volumes,
        claims,
        volume_preparations,
        volume_preparers,
        nodes,
    };
    // A preparer pod that comes to serve its node, or a node that comes to take new pods
    // (`Node`'s trigger), may let an object awaiting a new volume have one now. The pods'
    // kind triggers on every change, as the preparation pods' progress is read, so the
    // preparers' other changes are filtered here.
    let volume_preparer_events = volume_preparer_events.predicate_filter(
        |pod: &Pod| Some(u64::from(volume_preparer::serves(pod))),
        PredicateConfig::default(),
    );
    let (all_apps, caches) = (apps.clone(), stores.clone());
    let awaiting_a_node = move || {
        all_apps
            .state()
            .into_iter()
            .filter(|app| {
                Instance::new(app)
                    .is_ok_and(|instance| observe::awaits_new_volume(&caches, &instance))
            })
            .map(|app| ObjectRef::from(app.as_ref()))
            .collect::<Vec<_>>()
    };
    let controller = Controller::for_stream(app_events, apps)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(hpa_events)
        .owns_stream(statefulset_events)
        .owns_stream(network_policy_events)
        .watches_stream(volume_events, |volume| owner_ref(&volume))
        .watches_stream(volume_preparation_events, |pod| owner_ref(&pod))
        .watches_stream(volume_preparer_events, {
            let awaiting_a_node = awaiting_a_node.clone();
            move |_: Pod| awaiting_a_node()
        })
        .watches_stream(node_events, move |_: Node| awaiting_a_node())
        .watches_stream(claims_gone, |claim| claim_owner(&claim));
    (controller, stores)
}

/// What of an object a reconcile acts on: its spec (by its generation), labels,
/// annotations, finalizers and deletion. A change of its status alone, mostly the
/// operator's own status write coming back through the watch, triggers no reconcile.
fn reconcile_trigger(app: &FlaskMongoApp) -> Option<u64> {
    let deleting = |app: &FlaskMongoApp| Some(u64::from(app.meta().deletion_timestamp.is_some()));
    predicates::generation
        .combine(predicates::labels)
        .combine(predicates::annotations)
        .combine(predicates::finalizers)
        .combine(deleting)
        .hash_property(app)
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

/// A cache of one kind and the stream that fills it and triggers reconciles.
fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Cache<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Cached
        + Resource<DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (cache, writer) = cache::cache();
    let mut writer = writer.triggered_by(K::trigger);
    let stream = relisting_watcher(api, config)
        .default_backoff()
        .modify(K::prune)
        .map_ok(move |event| futures::stream::iter(writer.apply(event)).map(Ok))
        .try_flatten();
    (cache, without_errors(stream))
}

/// What the caches keep of an object of each kind, and which of its changes start a
/// reconcile of its owner. The managed fields are most of an object's size and unread, but
/// for what [`owns_replicas`] reads of a Deployment.
pub trait Cached: Resource + Sized {
    /// Drops what the cache does not keep.
    fn prune(&mut self) {
        self.managed_fields_mut().clear();
    }

    /// What of the object its owner's reconcile reads, hashed: a change that leaves it
    /// alone (a status field nothing reads, a heartbeat) starts no reconcile. `None`: every
    /// change does.
    fn trigger(&self) -> Option<u64> {
        None
    }
}

impl Cached for FlaskMongoApp {}
impl Cached for Service {}
impl Cached for Pod {}

impl Cached for HorizontalPodAutoscaler {
    /// Its spec (by its generation) and metadata; its status is not read.
    fn trigger(&self) -> Option<u64> {
        Some(metadata_hash(self.meta()).finish())
    }
}

impl Cached for NetworkPolicy {
    /// Its spec (by its generation) and metadata.
    fn trigger(&self) -> Option<u64> {
        Some(metadata_hash(self.meta()).finish())
    }
}

impl Cached for StatefulSet {
    /// Its spec (by its generation), metadata, and the status fields MongoDB's readiness
    /// and its stop are read from.
    fn trigger(&self) -> Option<u64> {
        let mut hash = metadata_hash(self.meta());
        if let Some(status) = &self.status {
            status.observed_generation.hash(&mut hash);
            status.replicas.hash(&mut hash);
            status.ready_replicas.hash(&mut hash);
            status.current_revision.hash(&mut hash);
            status.update_revision.hash(&mut hash);
        }
        Some(hash.finish())
    }
}

impl Cached for PersistentVolume {
    /// Its spec and metadata; its phase is not read. A volume has no generation, so its
    /// spec is hashed as JSON.
    fn trigger(&self) -> Option<u64> {
        let mut hash = metadata_hash(self.meta());
        serde_json::to_vec(&self.spec).ok()?.hash(&mut hash);
        Some(hash.finish())
    }
}

impl Cached for Node {
    /// Of a node only its name and spec are read; its status (images, addresses,
    /// conditions) is most of its size.
    fn prune(&mut self) {
        self.managed_fields_mut().clear();
        self.status = None;
    }

    /// Whether it takes new pods, all a new volume's placement reads of it: its other
    /// changes (heartbeats, mostly) concern no object.
    fn trigger(&self) -> Option<u64> {
        Some(u64::from(volume_preparer::takes_new_pods(self)))
    }
}
impl Cached for PartialObjectMeta<PersistentVolumeClaim> {}

impl Cached for Deployment {
    /// Its spec (by its generation), metadata, who owns its replicas, and the status fields
    /// the web tier's progress is read from.
    fn trigger(&self) -> Option<u64> {
        let mut hash = metadata_hash(self.meta());
        owns_replicas(self).hash(&mut hash);
        if let Some(status) = &self.status {
            status.observed_generation.hash(&mut hash);
            status.replicas.hash(&mut hash);
            status.updated_replicas.hash(&mut hash);
            status.ready_replicas.hash(&mut hash);
        }
        Some(hash.finish())
    }

    /// Keeps of the managed fields only whether the operator's own applies own
    /// `spec.replicas`.
    fn prune(&mut self) {
        let owned = owns_replicas(self);
        let entries = self.managed_fields_mut();
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
}

/// A hasher fed with what a reconcile reads of any child's metadata: its generation (which
/// every change of its spec raises, for the kinds that have one), labels, annotations,
/// owners and whether it is being deleted.
fn metadata_hash(meta: &ObjectMeta) -> DefaultHasher {
    let mut hash = DefaultHasher::new();
    meta.generation.hash(&mut hash);
    meta.labels.hash(&mut hash);
    meta.annotations.hash(&mut hash);
    for owner in meta.owner_references.iter().flatten() {
        (&owner.uid, owner.controller).hash(&mut hash);
    }
    meta.deletion_timestamp.is_some().hash(&mut hash);
    hash
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
    matches!(event, Err(watcher::Error::WatchStartFailed(error)) if Refusal::of(error) == Some(Refusal::Gone))
}

/// The `FlaskMongoApp` an object labelled by the operator belongs to.
fn owner_ref<K: Resource>(object: &K) -> Option<ObjectRef<FlaskMongoApp>> {
    let (namespace, name) = labels::owner(object.meta().labels.as_ref()?)?;
    Some(ObjectRef::new(name).within(namespace))
}

/// The `FlaskMongoApp` a MongoDB claim belongs to: the claim lives in its namespace and
/// carries its name in the pod selector's `instance` label.
fn claim_owner(
    claim: &PartialObjectMeta<PersistentVolumeClaim>,
) -> Option<ObjectRef<FlaskMongoApp>> {
    let name = claim.labels().get(labels::INSTANCE)?;
    Some(ObjectRef::new(name).within(&claim.namespace()?))
}

#[cfg(test)]
mod tests {
    use flaskmongo_crd::{FlaskMongoAppSpec, FlaskMongoAppStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::plan::REPLICAS_HANDOFF_MANAGER;

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
        owned.prune();
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
        handed_over.prune();
        assert!(!owns_replicas(&handed_over));
        assert!(handed_over.managed_fields().is_empty());
    }

    #[test]
    fn only_a_change_a_reconcile_acts_on_triggers_one() {
        let app = crate::children::tests::app("shop", "team-a", FlaskMongoAppSpec::default());
        let before = reconcile_trigger(&app);
        let mut reported = app.clone();
        reported.status = Some(FlaskMongoAppStatus {
            observed_generation: Some(1),
            message: "Ready".into(),
            ..FlaskMongoAppStatus::default()
        });
        reported.metadata.resource_version = Some("42".into());
        assert_eq!(reconcile_trigger(&reported), before, "a status write alone");

        let changed: [fn(&mut FlaskMongoApp); 5] = [
            |app| app.metadata.generation = Some(2),
            |app| _ = app.labels_mut().insert("team".into(), "a".into()),
            |app| _ = app.annotations_mut().insert("note".into(), "x".into()),
            |app| app.finalizers_mut().push("example.com/hold".into()),
            |app| {
                app.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
            },
        ];
        for (index, change) in changed.into_iter().enumerate() {
            let mut app = app.clone();
            change(&mut app);
            assert_ne!(reconcile_trigger(&app), before, "change {index}");
        }
    }

    /// Whether `change` made to `object` changes its trigger.
    fn triggers<K: Cached + Clone>(object: &K, change: impl FnOnce(&mut K)) -> bool {
        let mut changed = object.clone();
        change(&mut changed);
        changed.trigger() != object.trigger()
    }

    #[test]
    fn a_child_starts_its_owners_reconcile_only_with_a_change_the_reconcile_reads() {
        let app = crate::children::tests::app("shop", "team-a", Default::default());
        let instance = Instance::new(&app).unwrap();
        let children = crate::children::desired(&instance, &crate::Volumes::default());
        let deployment = Deployment {
            status: Some(Default::default()),
            ..children.deployment
        };
        fn web(d: &mut Deployment) -> &mut k8s_openapi::api::apps::v1::DeploymentStatus {
            d.status.as_mut().unwrap()
        }
        assert!(!triggers(&deployment, |d| web(d).available_replicas = Some(2)));
        assert!(!triggers(&deployment, |d| {
            web(d).conditions = Some(vec![Default::default()]);
        }));
        assert!(triggers(&deployment, |d| web(d).ready_replicas = Some(1)));
        assert!(triggers(&deployment, |d| web(d).updated_replicas = Some(1)));
        assert!(triggers(&deployment, |d| web(d).observed_generation = Some(2)));
        assert!(triggers(&deployment, |d| d.metadata.generation = Some(2)));
        assert!(triggers(&deployment, |d| {
            d.labels_mut().insert("k".to_owned(), "v".to_owned());
        }));
        assert!(triggers(&deployment, |d| {
            d.annotations_mut().clear();
        }));
        assert!(triggers(&deployment, |d| d.metadata.owner_references = None));
        assert!(triggers(&deployment, |d| {
            d.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        }));

        let statefulset = StatefulSet {
            status: Some(Default::default()),
            ..children.statefulset
        };
        fn mongo(s: &mut StatefulSet) -> &mut k8s_openapi::api::apps::v1::StatefulSetStatus {
            s.status.as_mut().unwrap()
        }
        assert!(!triggers(&statefulset, |s| mongo(s).available_replicas = Some(1)));
        assert!(triggers(&statefulset, |s| mongo(s).ready_replicas = Some(1)));
        assert!(triggers(&statefulset, |s| mongo(s).replicas = 1));
        assert!(triggers(&statefulset, |s| {
            mongo(s).update_revision = Some("mongo-2".to_owned());
        }));

        let hpa = children.hpa.unwrap();
        assert!(!triggers(&hpa, |h| h.status = Some(Default::default())));
        assert!(triggers(&hpa, |h| h.metadata.generation = Some(2)));

        let volume = PersistentVolume {
            metadata: ObjectMeta {
                name: Some("team-a.shop.mongo".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(Default::default()),
            ..PersistentVolume::default()
        };
        assert!(!triggers(&volume, |v| {
            v.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
                phase: Some("Bound".to_owned()),
                ..Default::default()
            });
        }));
        assert!(triggers(&volume, |v| {
            v.spec.as_mut().unwrap().claim_ref = Some(Default::default());
        }));

        let node = Node::default();
        assert!(!triggers(&node, |n| {
            n.labels_mut().insert("k".to_owned(), "v".to_owned());
        }));
        assert!(triggers(&node, |n| {
            n.spec.get_or_insert_default().unschedulable = Some(true);
        }));
    }

    #[test]
    fn a_claim_leads_to_its_object_by_namespace_and_instance() {
        let claim = |labels: &[(&str, &str)]| PartialObjectMeta::<PersistentVolumeClaim> {
            metadata: ObjectMeta {
                name: Some("data-shop-mongo-0".into()),
                namespace: Some("team-a".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..PartialObjectMeta::default()
        };
        let selected = claim(&[
            (labels::NAME, labels::APP_NAME),
            (labels::INSTANCE, "shop"),
            (labels::COMPONENT, "mongo"),
        ]);
        assert_eq!(
            claim_owner(&selected),
            Some(ObjectRef::new("shop").within("team-a"))
        );
        assert_eq!(claim_owner(&claim(&[])), None);
        assert_eq!(
            labels::claim_selector(),
            "app.kubernetes.io/name=flaskmongo,app.kubernetes.io/component=mongo"
        );
    }
}
