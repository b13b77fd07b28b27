//! Observe: one snapshot of everything a reconcile decides from, read from the watch
//! caches alone, without a request to the API server, and corrected by what this process
//! deleted that the caches do not show yet.

use std::collections::HashMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::children::{Instance, volume_preparation};
use crate::error::Result;
use crate::watches::Stores;

/// What the caches hold of one object's children. Default: nothing exists.
#[derive(Debug, Clone, Default)]
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
}

/// The snapshot of `instance`'s children; its volume's preparation pod is looked for in
/// `preparation_namespace`.
pub fn observe(
    stores: &Stores,
    instance: &Instance<'_>,
    preparation_namespace: &str,
) -> Result<Snapshot> {
    let namespace = instance.namespace;
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
        volumes: [instance.volume_name(), instance.legacy_volume_name()]
            .iter()
            .filter_map(|name| stores.volumes.get(&ObjectRef::new(name)).transpose())
            .collect::<Result<_>>()?,
        claim: stores.claims.get(&here(instance.claim_name(), namespace))?,
        volume_preparation: stores.volume_preparations.get(&here(
            volume_preparation::name(instance),
            preparation_namespace,
        ))?,
    })
}

/// The cache key of the namespaced object `name`.
fn here<K: Resource<DynamicType = ()>>(name: String, namespace: &str) -> ObjectRef<K> {
    ObjectRef::new(&name).within(namespace)
}

/// The preparation pods this process deleted, by their object's uid, each with the time
/// of its deletion, kept until the cache no longer shows the pod. A finished pod goes at
/// once, but its removal can reach the cache after the writes of the same reconcile have
/// started the next ones, and each of those would delete it again.
#[derive(Debug, Default)]
pub struct DeletedPreparations(HashMap<String, (String, Time)>);

impl DeletedPreparations {
    /// Shows `snapshot`'s preparation pod as being deleted when this process deleted it;
    /// forgets the deletion once the cache no longer holds that pod.
    pub fn complete(&mut self, owner_uid: &str, snapshot: &mut Snapshot) {
        let Some((pod_uid, deleted_at)) = self.0.get(owner_uid) else {
            return;
        };
        match &mut snapshot.volume_preparation {
            Some(pod) if pod.uid().as_ref() == Some(pod_uid) => {
                pod.metadata
                    .deletion_timestamp
                    .get_or_insert_with(|| deleted_at.clone());
            }
            _ => {
                self.0.remove(owner_uid);
            }
        }
    }

    /// Remembers that `pod`, the preparation pod of the object `owner_uid`, was deleted
    /// at `at`.
    pub fn record(&mut self, owner_uid: String, pod: &Pod, at: Time) {
        if let Some(pod_uid) = pod.uid() {
            self.0.insert(owner_uid, (pod_uid, at));
        }
    }

    /// Forgets the deletion of the object `owner_uid`'s pod.
    pub fn forget(&mut self, owner_uid: &str) {
        self.0.remove(owner_uid);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn pod(uid: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.uid = Some(uid.to_owned());
        pod
    }

    fn shown(deleted: &mut DeletedPreparations, live: Option<Pod>) -> Option<Pod> {
        let mut snapshot = Snapshot {
            volume_preparation: live,
            ..Snapshot::default()
        };
        deleted.complete("app", &mut snapshot);
        snapshot.volume_preparation
    }

    #[test]
    fn a_deleted_pod_shows_as_deleting_until_the_cache_drops_it() {
        let at = Time(Timestamp::from_second(7).unwrap());
        let mut deleted = DeletedPreparations::default();
        assert_eq!(shown(&mut deleted, Some(pod("p1"))), Some(pod("p1")));
        deleted.record("app".to_owned(), &pod("p1"), at.clone());
        let deleting = shown(&mut deleted, Some(pod("p1"))).unwrap();
        assert_eq!(deleting.metadata.deletion_timestamp, Some(at.clone()));
        // Another object's pod is not touched.
        let mut other = Snapshot {
            volume_preparation: Some(pod("p1")),
            ..Snapshot::default()
        };
        deleted.complete("other-app", &mut other);
        assert_eq!(other.volume_preparation, Some(pod("p1")));
        // The cache dropped it: forgotten, and a new pod of the same name is the new one.
        assert_eq!(shown(&mut deleted, None), None);
        assert!(deleted.0.is_empty());
        deleted.record("app".to_owned(), &pod("p1"), at);
        assert_eq!(shown(&mut deleted, Some(pod("p2"))), Some(pod("p2")));
        assert!(deleted.0.is_empty(), "a pod of another uid ends the record");
    }
}
