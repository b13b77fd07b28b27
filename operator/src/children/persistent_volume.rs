//! The static hostPath PersistentVolume `<namespace>-<name>-mongo`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use super::Instance;
use crate::labels::Component;

/// A hostPath volume pre-bound to the StatefulSet's first claim, so no other claim takes
/// it. Cluster-scoped, so it cannot have an owner reference: its labels lead back to the
/// object, and its reclaim policy is always `Retain` (the data stays on the node).
pub fn build(instance: &Instance<'_>) -> PersistentVolume {
    let storage = &instance.spec.mongo.storage;
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(instance.volume_name()),
            labels: Some(instance.labels(Component::Mongo)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(BTreeMap::from([(
                "storage".to_owned(),
                Quantity(storage.size.clone()),
            )])),
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            persistent_volume_reclaim_policy: Some("Retain".to_owned()),
            storage_class_name: Some(storage.storage_class_name.clone()),
            volume_mode: Some("Filesystem".to_owned()),
            host_path: Some(HostPathVolumeSource {
                path: instance.host_path(),
                type_: Some("DirectoryOrCreate".to_owned()),
            }),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("PersistentVolumeClaim".to_owned()),
                namespace: Some(instance.namespace.to_owned()),
                name: Some(instance.claim_name()),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    }
}
