//! The MongoDB StatefulSet `<name>-mongo`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SecurityContext, TCPSocketAction, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::{
    CLAIM_TEMPLATE, Instance, MONGO_PORT, PASSWORD_KEY, USERNAME_KEY, capabilities,
    helper_resources, resource_requirements, runtime_default_seccomp, secret_env,
};
use crate::Volumes;
use crate::labels::Component;

/// Name of the MongoDB container.
pub const CONTAINER: &str = "mongo";
/// Name of the container that waits for the data directory before MongoDB starts.
pub const AWAIT_VOLUME: &str = "await-volume";
/// Where MongoDB's data is mounted.
const DATA_DIRECTORY: &str = "/data/db";
/// User and group MongoDB runs as: the official image's `mongodb` (999:999). Started as
/// that user, its entrypoint neither changes owners nor switches users, so it needs no
/// capability; the volume's directory is handed to this user before MongoDB starts.
pub const MONGO_USER: i64 = 999;

/// One MongoDB pod with a claim from the template `data`. Claims are retained when the
/// StatefulSet goes, so the data outlives it; the finalizer removes them under `Delete`.
pub fn build(instance: &Instance<'_>, volumes: &Volumes) -> StatefulSet {
    let storage = &instance.spec.mongo.storage;
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(CLAIM_TEMPLATE.to_owned()),
            labels: Some(instance.selector(Component::Mongo)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: Some(storage.storage_class_name.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(storage.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: instance.owned_meta(instance.mongo_name(), Component::Mongo),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(instance.mongo_name()),
            selector: LabelSelector {
                match_labels: Some(instance.selector(Component::Mongo)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(instance.labels(Component::Mongo)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(instance, volumes)),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn pod_spec(instance: &Instance<'_>, volumes: &Volumes) -> PodSpec {
    let mongo = &instance.spec.mongo;
    let secret = instance.secret_name();
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_user: Some(MONGO_USER),
            run_as_group: Some(MONGO_USER),
            run_as_non_root: Some(true),
            // A provisioned volume (`persistentVolume.create: false`) is made writable
            // through the group; a static volume is prepared instead (hostPath has no fsGroup).
            fs_group: Some(MONGO_USER),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        }),
        termination_grace_period_seconds: Some(30),
        init_containers: Some(vec![await_volume(volumes)]),
        containers: vec![Container {
            name: CONTAINER.to_owned(),
            image: Some(mongo.image.clone()),
            image_pull_policy: Some("IfNotPresent".to_owned()),
            ports: Some(vec![ContainerPort {
                name: Some("mongodb".to_owned()),
                container_port: MONGO_PORT,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]),
            env: Some(vec![
                secret_env("MONGO_INITDB_ROOT_USERNAME", &secret, USERNAME_KEY),
                secret_env("MONGO_INITDB_ROOT_PASSWORD", &secret, PASSWORD_KEY),
            ]),
            resources: Some(resource_requirements(&mongo.resources)),
            // The kubelet's own TCP check: no client in the image (the official image's
            // mongosh is a Node.js process per probe), and the official entrypoint's first,
            // initialising mongod listens on 127.0.0.1 only, so the pod's address answers
            // once the real server is up.
            readiness_probe: Some(Probe {
                tcp_socket: Some(mongo_port()),
                initial_delay_seconds: Some(2),
                period_seconds: Some(5),
                timeout_seconds: Some(5),
                failure_threshold: Some(3),
                ..Probe::default()
            }),
            liveness_probe: Some(Probe {
                tcp_socket: Some(mongo_port()),
                initial_delay_seconds: Some(30),
                period_seconds: Some(20),
                timeout_seconds: Some(5),
                failure_threshold: Some(6),
                ..Probe::default()
            }),
            volume_mounts: Some(data_mount()),
            security_context: Some(unprivileged()),
            ..Container::default()
        }],
        ..PodSpec::default()
    }
}

/// What MongoDB's pod runs first, as MongoDB's user: it waits until the data directory is
/// writable, which a new volume's directory is once its node's volume preparer has handed
/// it over, so that MongoDB never starts, and fails, on one it cannot use.
fn await_volume(volumes: &Volumes) -> Container {
    Container {
        name: AWAIT_VOLUME.to_owned(),
        image: Some(volumes.preparation_image.clone()),
        image_pull_policy: Some("IfNotPresent".to_owned()),
        args: Some(vec![
            "await-volume".to_owned(),
            DATA_DIRECTORY.to_owned(),
            "--timeout-seconds=300".to_owned(),
        ]),
        // Its error, if it gives up, is what the pod's status says.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        resources: Some(helper_resources("8Mi", "32Mi")),
        volume_mounts: Some(data_mount()),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..unprivileged()
        }),
        ..Container::default()
    }
}

fn data_mount() -> Vec<VolumeMount> {
    vec![VolumeMount {
        name: CLAIM_TEMPLATE.to_owned(),
        mount_path: DATA_DIRECTORY.to_owned(),
        ..VolumeMount::default()
    }]
}

/// No capability, no way to gain one.
fn unprivileged() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(capabilities(&[])),
        seccomp_profile: Some(runtime_default_seccomp()),
        ..SecurityContext::default()
    }
}

fn mongo_port() -> TCPSocketAction {
    TCPSocketAction {
        port: IntOrString::Int(MONGO_PORT),
        ..TCPSocketAction::default()
    }
}
