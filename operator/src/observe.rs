//! Observe: one snapshot of everything a reconcile decides from, read from the watch
//! caches alone, without a request to the API server.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

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
