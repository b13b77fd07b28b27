//! The static hostPath PersistentVolume `<namespace>.<name>.mongo`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;

use super::Instance;
use super::statefulset::MONGO_USER;
use crate::labels::Component;

/// Annotation of a volume whose directory was handed to MongoDB's user, with that
/// `uid:gid`: until it is there, MongoDB (which runs without root) cannot write the data.
pub const DATA_OWNER_ANNOTATION: &str = "flaskmongo.dev/data-owner";
/// The node label a volume's node affinity names its node by.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The value of [`DATA_OWNER_ANNOTATION`] on a prepared volume.
pub fn data_owner() -> String {
    format!("{MONGO_USER}:{MONGO_USER}")
}

/// Where a volume's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The PersistentVolume's name.
    pub name: String,
    /// Its directory on the node.
    pub path: String,
    /// The node its directory is on (by its hostname label), when known: MongoDB is
    /// scheduled there.
    pub node: Option<String>,
    /// Whether the directory belongs to MongoDB's user.
    pub prepared: bool,
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
            node: None,
            prepared: false,
        }
    }

    /// Where an existing hostPath volume is: its path and node never change.
    pub fn of(volume: &PersistentVolume) -> Option<Self> {
        let spec = volume.spec.as_ref()?;
        let node = spec
            .node_affinity
            .as_ref()
            .and_then(|affinity| affinity.required.as_ref()?.node_selector_terms.first())
            .and_then(|term| term.match_expressions.as_ref()?.first())
            .filter(|requirement| requirement.key == HOSTNAME_LABEL)
            .and_then(|requirement| requirement.values.as_ref()?.first().cloned());
        let prepared = volume
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(DATA_OWNER_ANNOTATION))
            .is_some_and(|owner| *owner == data_owner());
        Some(Self {
            name: volume.metadata.name.clone()?,
            path: spec.host_path.as_ref()?.path.clone(),
            node,
            prepared,
        })
    }
}

/// A hostPath volume pre-bound to the StatefulSet's first claim, so no other claim takes
/// it, and bound to the node its directory is on. Cluster-scoped, so it cannot have an
/// owner reference: its labels lead back to the object, and its reclaim policy is always
/// `Retain` (the data stays on the node).
pub fn build(instance: &Instance<'_>, placement: &Placement) -> PersistentVolume {
    let storage = &instance.spec.mongo.storage;
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(placement.name.clone()),
            labels: Some(instance.labels(Component::Mongo)),
            annotations: placement
                .prepared
                .then(|| BTreeMap::from([(DATA_OWNER_ANNOTATION.to_owned(), data_owner())])),
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
            node_affinity: placement.node.as_ref().map(|node| VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.to_owned(),
                            operator: "In".to_owned(),
                            values: Some(vec![node.clone()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    }
}
