//! Observe: one snapshot of everything a reconcile decides from, read from the watch
//! caches alone, without a request to the API server, and completed by this process's
//! own writes that the caches do not show yet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::cache::Packed;
use crate::children::{Instance, volume_preparation, volume_preparer};
use crate::error::Result;
use crate::execute::Applied;
use crate::watches::{Cached, Stores};

/// What the caches hold of one object's children. Default: nothing exists.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// The web Deployment (of its managed fields, only whether the operator owns
    /// `spec.replicas`).
    pub deployment: Option<Deployment>,
    /// The web Service.
    pub web_service: Option<Service>,
    /// The web autoscaler.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The MongoDB StatefulSet.
    pub statefulset: Option<StatefulSet>,
    /// The MongoDB headless Service.
    pub mongo_service: Option<Service>,
    /// The NetworkPolicy around MongoDB.
    pub network_policy: Option<NetworkPolicy>,
    /// The operator's volumes cached under this object's name and under its name before
    /// 0.2 (which another object may share): the plan decides which one is this object's.
    pub volumes: Vec<PersistentVolume>,
    /// The MongoDB claim's metadata: it exists from the StatefulSet's first pod on, and
    /// after the object under `Retain`.
    pub claim: Option<PartialObjectMeta<PersistentVolumeClaim>>,
    /// The pod that prepares the volume's directory, in the operator's namespace for it.
    pub volume_preparation: Option<Pod>,
    /// The nodes that take new pods and where the volume preparer is Ready, by name: where a
    /// new volume may go. Looked up only while the object awaits a new volume
    /// ([`awaits_new_volume`]).
    #[serde(default)]
    pub preparer_nodes: Vec<String>,
}

impl Snapshot {
    /// How many objects it holds.
    fn count(&self) -> usize {
        let Self {
            deployment,
            web_service,
            hpa,
            statefulset,
            mongo_service,
            network_policy,
            volumes,
            claim,
            volume_preparation,
            preparer_nodes: _,
        } = self;
        [
            deployment.is_some(),
            web_service.is_some(),
            hpa.is_some(),
            statefulset.is_some(),
            mongo_service.is_some(),
            network_policy.is_some(),
            claim.is_some(),
            volume_preparation.is_some(),
        ]
        .into_iter()
        .filter(|held| *held)
        .count()
            + volumes.len()
    }

    /// Completes it with the objects of `other` it lacks (volumes by name); `other` keeps
    /// only those.
    fn fill(&mut self, other: &mut Self) {
        let Self {
            deployment,
            web_service,
            hpa,
            statefulset,
            mongo_service,
            network_policy,
            volumes,
            claim,
            volume_preparation,
            preparer_nodes: _,
        } = self;
        fill(deployment, &mut other.deployment);
        fill(web_service, &mut other.web_service);
        fill(hpa, &mut other.hpa);
        fill(statefulset, &mut other.statefulset);
        fill(mongo_service, &mut other.mongo_service);
        fill(network_policy, &mut other.network_policy);
        fill(claim, &mut other.claim);
        fill(volume_preparation, &mut other.volume_preparation);
        other.volumes.retain(|volume| {
            let held = volumes.iter().any(|v| v.name_any() == volume.name_any());
            if !held {
                volumes.push(volume.clone());
            }
            !held
        });
    }

    /// The children `applied` returned, as the caches keep them.
    fn returned(applied: &Applied) -> Self {
        let Applied {
            mongo_service,
            persistent_volume,
            statefulset,
            web_service,
            deployment,
            hpa,
            network_policy,
            volume_preparation,
            secret: _,
        } = applied;
        Self {
            deployment: deployment.as_ref().map(as_cached),
            web_service: web_service.as_ref().map(as_cached),
            hpa: hpa.as_ref().map(as_cached),
            statefulset: statefulset.as_ref().map(as_cached),
            mongo_service: mongo_service.as_ref().map(as_cached),
            network_policy: network_policy.as_ref().map(as_cached),
            volumes: persistent_volume.iter().map(as_cached).collect(),
            claim: None,
            volume_preparation: volume_preparation.as_ref().map(as_cached),
            preparer_nodes: Vec::new(),
        }
    }
}

/// The snapshot of `instance`'s children; its volume's preparation pod is looked for in
/// `preparation_namespace`.
pub fn observe(
    stores: &Stores,
    instance: &Instance<'_>,
    preparation_namespace: &str,
) -> Result<Snapshot> {
    let namespace = instance.namespace;
    let preparer_nodes = if awaits_new_volume(stores, instance) {
        volume_preparer::ready_nodes(&stores.volume_preparers.all()?, &stores.nodes.all()?)
    } else {
        Vec::new()
    };
    Ok(Snapshot {
        deployment: stores
            .deployments
            .get(&here(instance.web_name(), namespace))?,
        web_service: stores.services.get(&here(instance.web_name(), namespace))?,
        hpa: stores.hpas.get(&here(instance.web_name(), namespace))?,
        statefulset: stores
            .statefulsets
            .get(&here(instance.mongo_name(), namespace))?,
        mongo_service: stores
            .services
            .get(&here(instance.mongo_name(), namespace))?,
        network_policy: stores
            .network_policies
            .get(&here(instance.network_policy_name(), namespace))?,
        volumes: volume_names(instance)
            .iter()
            .filter_map(|name| stores.volumes.get(&ObjectRef::new(name)).transpose())
            .collect::<Result<_>>()?,
        claim: stores.claims.get(&here(instance.claim_name(), namespace))?,
        volume_preparation: stores.volume_preparations.get(&here(
            volume_preparation::name(instance),
            preparation_namespace,
        ))?,
        preparer_nodes,
    })
}

/// Whether `instance` is to get a new volume: its spec has the operator create one and the
/// caches hold none of it. Only then does its reconcile look for a node, and only then
/// does a change of the volume preparers or of the nodes concern it.
pub fn awaits_new_volume(stores: &Stores, instance: &Instance<'_>) -> bool {
    instance.spec.mongo.storage.persistent_volume.create
        && volume_names(instance)
            .iter()
            .all(|name| !stores.volumes.contains(&ObjectRef::new(name)))
}

/// The names a volume of `instance` is cached under: its own, and its name before 0.2.
fn volume_names(instance: &Instance<'_>) -> [String; 2] {
    [instance.volume_name(), instance.legacy_volume_name()]
}

/// The cache key of the namespaced object `name`.
fn here<K: Resource<DynamicType = ()>>(name: String, namespace: &str) -> ObjectRef<K> {
    ObjectRef::new(&name).within(namespace)
}

/// How long a write may take to reach the caches before it is forgotten and the caches
/// alone decide again. A reconcile that relied on one looks again after this long: a
/// child someone deleted before any reconcile saw it cached is then created again.
pub const UNSEEN_AT_MOST: Duration = Duration::from_secs(10);

/// This process's writes, by their object's uid, that the caches did not show when a
/// reconcile last looked. A write reaches the caches some milliseconds after its response,
/// and its own watch event and those of the writes before it start the next reconciles:
/// one that started meanwhile would create a child again (and report it created twice) or
/// delete a finished preparation pod again.
#[derive(Debug, Default)]
pub struct Unseen(HashMap<String, Written>);

/// The writes of one object that its caches do not show yet.
#[derive(Debug)]
struct Written {
    /// When the last of them was made.
    at: Instant,
    /// The children as the API server returned them from their applies, while the caches
    /// do not hold them; compressed as the caches keep objects (alone, with no dictionary),
    /// since many objects can be waiting for their next reconcile at once.
    applied: Packed<Snapshot>,
    /// The preparation pod deleted (its uid) and when, while the cache still holds it.
    deleted_preparation: Option<(String, Time)>,
}

impl Unseen {
    /// `snapshot` completed with `owner_uid`'s writes that the caches do not show yet: a
    /// child applied and not cached is there, a preparation pod deleted and still cached
    /// is being deleted. What the caches show now is forgotten, and so is everything
    /// after [`UNSEEN_AT_MOST`]. Returns whether the snapshot now shows such a write.
    pub fn complete(&mut self, owner_uid: &str, snapshot: &mut Snapshot, now: Instant) -> bool {
        let Some(written) = self.0.get_mut(owner_uid) else {
            return false;
        };
        if now.saturating_duration_since(written.at) > UNSEEN_AT_MOST {
            self.0.remove(owner_uid);
            return false;
        }
        let Ok(mut applied) = written.applied.unpack() else {
            self.0.remove(owner_uid);
            return false;
        };
        let before = applied.count();
        snapshot.fill(&mut applied);
        let left = applied.count();
        written.deleted_preparation = written.deleted_preparation.take().filter(|(uid, at)| {
            let Some(pod) = &mut snapshot.volume_preparation else {
                return false;
            };
            let still_cached = pod.uid().as_ref() == Some(uid);
            if still_cached {
                pod.metadata
                    .deletion_timestamp
                    .get_or_insert_with(|| at.clone());
            }
            still_cached
        });
        let shown = left > 0 || written.deleted_preparation.is_some();
        let repacked = if left == before {
            Ok(())
        } else {
            Packed::pack(&applied).map(|packed| written.applied = packed)
        };
        if !shown || repacked.is_err() {
            self.0.remove(owner_uid);
        }
        shown
    }

    /// Remembers the writes of one reconcile of the object `owner_uid`, made at `now`:
    /// the children its applies returned, and the preparation pod it deleted, with the
    /// time of the deletion.
    pub fn record(
        &mut self,
        owner_uid: &str,
        applied: &Applied,
        deleted_preparation: Option<(&Pod, Time)>,
        now: Instant,
    ) {
        let mut returned = Snapshot::returned(applied);
        let deleted_preparation = deleted_preparation.and_then(|(pod, at)| Some((pod.uid()?, at)));
        if returned.count() == 0 && deleted_preparation.is_none() {
            return;
        }
        let deleted_before = match self.0.remove(owner_uid) {
            Some(written) => {
                if let Ok(mut earlier) = written.applied.unpack() {
                    returned.fill(&mut earlier);
                }
                written.deleted_preparation
            }
            None => None,
        };
        // Unpackable, the writes are left to the caches alone, as an uncacheable object is.
        if let Ok(applied) = Packed::pack(&returned) {
            let written = Written {
                at: now,
                applied,
                deleted_preparation: deleted_preparation.or(deleted_before),
            };
            self.0.insert(owner_uid.to_owned(), written);
        }
    }

    /// Forgets the writes of the object `owner_uid`.
    pub fn forget(&mut self, owner_uid: &str) {
        self.0.remove(owner_uid);
    }
}

/// `held`, or `other`'s object while `held` lacks one; `other`'s is dropped once `held`
/// has its own.
fn fill<K: Clone>(held: &mut Option<K>, other: &mut Option<K>) {
    match held {
        Some(_) => *other = None,
        None => held.clone_from(other),
    }
}

/// `object` as the caches keep it.
fn as_cached<K: Cached + Clone>(object: &K) -> K {
    let mut object = object.clone();
    object.prune();
    object
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn named<K: Resource + Default>(name: &str) -> K {
        let mut object = K::default();
        object.meta_mut().name = Some(name.to_owned());
        object.meta_mut().uid = Some(format!("{name}-uid"));
        object.meta_mut().managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        object
    }

    #[test]
    fn an_applied_child_is_shown_until_its_cache_holds_it_and_no_longer_than_the_limit() {
        let start = Instant::now();
        let mut unseen = Unseen::default();
        let applied = Applied {
            statefulset: Some(named("shop-mongo")),
            persistent_volume: Some(named("shop-volume")),
            ..Applied::default()
        };
        unseen.record("app", &applied, None, start);
        // Another object's snapshot is not touched.
        let mut other = Snapshot::default();
        assert!(!unseen.complete("other-app", &mut other, start));
        assert!(other.statefulset.is_none() && other.volumes.is_empty());
        let mut snapshot = Snapshot::default();
        assert!(unseen.complete("app", &mut snapshot, start));
        let statefulset = snapshot.statefulset.clone().unwrap();
        assert_eq!(statefulset.name_any(), "shop-mongo");
        assert!(
            statefulset.managed_fields().is_empty(),
            "kept as the cache keeps it"
        );
        assert_eq!(snapshot.volumes.len(), 1);
        // The volume reached its cache: only the StatefulSet is still shown.
        let mut snapshot = Snapshot {
            volumes: vec![named("shop-volume")],
            ..Snapshot::default()
        };
        assert!(unseen.complete("app", &mut snapshot, start));
        assert_eq!(snapshot.volumes.len(), 1);
        assert!(snapshot.statefulset.is_some());
        // Past the limit the caches alone decide.
        let late = start + UNSEEN_AT_MOST + Duration::from_millis(1);
        let mut snapshot = Snapshot::default();
        assert!(!unseen.complete("app", &mut snapshot, late));
        assert!(snapshot.statefulset.is_none());
        assert!(unseen.0.is_empty());
    }

    #[test]
    fn a_later_write_adds_to_the_record_and_replaces_its_own_child() {
        let start = Instant::now();
        let mut unseen = Unseen::default();
        let first = Applied {
            statefulset: Some(named("shop-mongo")),
            persistent_volume: Some(named("shop-volume")),
            ..Applied::default()
        };
        unseen.record("app", &first, None, start);
        let mut newer: StatefulSet = named("shop-mongo");
        newer.metadata.generation = Some(2);
        let second = Applied {
            statefulset: Some(newer),
            deployment: Some(named("shop-web")),
            ..Applied::default()
        };
        unseen.record("app", &second, None, start);
        let mut snapshot = Snapshot::default();
        assert!(unseen.complete("app", &mut snapshot, start));
        assert_eq!(snapshot.count(), 3, "{snapshot:?}");
        assert_eq!(snapshot.statefulset.unwrap().metadata.generation, Some(2));
        assert!(snapshot.deployment.is_some());
    }

    #[test]
    fn a_deleted_pod_shows_as_deleting_until_the_cache_drops_it() {
        let start = Instant::now();
        let at = Time(Timestamp::from_second(7).unwrap());
        let deleting = |unseen: &mut Unseen, live: Option<Pod>| {
            let mut snapshot = Snapshot {
                volume_preparation: live,
                ..Snapshot::default()
            };
            unseen.complete("app", &mut snapshot, start);
            snapshot
                .volume_preparation
                .map(|pod| pod.metadata.deletion_timestamp.is_some())
        };
        let mut unseen = Unseen::default();
        let pod: Pod = named("prepare");
        unseen.record("app", &Applied::default(), Some((&pod, at.clone())), start);
        assert_eq!(deleting(&mut unseen, Some(pod.clone())), Some(true));
        // The cache dropped it: forgotten, and a new pod of the same name is the new one.
        assert_eq!(deleting(&mut unseen, None), None);
        assert!(unseen.0.is_empty());
        unseen.record("app", &Applied::default(), Some((&pod, at)), start);
        let mut again = pod;
        again.metadata.uid = Some("another-uid".to_owned());
        assert_eq!(deleting(&mut unseen, Some(again)), Some(false));
        assert!(unseen.0.is_empty(), "a pod of another uid ends the record");
        // A reconcile that wrote nothing records nothing.
        unseen.record("app", &Applied::default(), None, start);
        assert!(unseen.0.is_empty());
    }
}
