//! Observe: one snapshot of everything a reconcile decides from, read from the watch
//! caches alone, without a request to the API server.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Service};
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;

use crate::children::Instance;
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
    /// The static volume: labelled by the operator, so made for this object or for an
    /// earlier one of the same name.
    pub persistent_volume: Option<PersistentVolume>,
    /// The MongoDB claim's metadata: it exists from the StatefulSet's first pod on, and
    /// after the object under `Retain`.
    pub claim: Option<PartialObjectMeta<PersistentVolumeClaim>>,
    /// Whether the credentials Secret is cached. The cache holds only Secrets with the
    /// operator's labels, and never their data.
    pub secret: bool,
}

/// The snapshot of `instance`'s children.
pub fn observe(stores: &Stores, instance: &Instance<'_>) -> Result<Snapshot> {
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
        persistent_volume: stores
            .volumes
            .get(&ObjectRef::new(&instance.volume_name()))?,
        claim: stores.claims.get(&here(instance.claim_name(), namespace))?,
        secret: stores
            .secrets
            .contains(&here(instance.secret_name(), namespace)),
    })
}

/// The cache key of the namespaced object `name`.
fn here<K: Resource<DynamicType = ()>>(name: String, namespace: &str) -> ObjectRef<K> {
    ObjectRef::new(&name).within(namespace)
}
