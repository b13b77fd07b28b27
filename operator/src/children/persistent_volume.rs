//! The static hostPath PersistentVolume `<namespace>.<name>.mongo`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use super::Instance;
use crate::labels::Component;

/// Where a volume's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The PersistentVolume's name.
    pub name: String,
    /// Its directory on the node.
    pub path: String,
}

impl Placement {
    /// A new volume: `<root>/<namespace>/<name>-<object uid>`. An object created again
    /// with the same name has a new uid and a new password, so its password always meets
    /// a directory no earlier data is in.
    pub fn new(instance: &Instance<'_>, root: &str) -> Self {
        Self {
            name: instance.volume_name(),
            path: format!(
                "{root}/{}/{}-{}",
                instance.namespace,
                instance.name,
                instance.uid()
            ),
        }
    }

    /// Where an existing hostPath volume is: its path never changes.
    pub fn of(volume: &PersistentVolume) -> Option<Self> {
        Some(Self {
            name: volume.metadata.name.clone()?,
            path: volume.spec.as_ref()?.host_path.as_ref()?.path.clone(),
        })
    }
}

/// A hostPath volume pre-bound to the StatefulSet's first claim, so no other claim takes
/// it. Cluster-scoped, so it cannot have an owner reference: its labels lead back to the
/// object, and its reclaim policy is always `Retain` (the data stays on the node).
pub fn build(instance: &Instance<'_>, placement: &Placement) -> PersistentVolume {
    let storage = &instance.spec.mongo.storage;
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(placement.name.clone()),
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
                path: placement.path.clone(),
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
