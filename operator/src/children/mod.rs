//! The desired children of a `FlaskMongoApp`, each built by a pure function of the object.

pub mod deployment;
pub mod hpa;
pub mod mongo_service;
pub mod network_policy;
pub mod persistent_volume;
pub mod secret;
pub mod statefulset;
pub mod volume_preparation;
pub mod volume_preparer;
pub mod web_service;

use std::collections::BTreeMap;

use flaskmongo_crd::{FlaskMongoApp, FlaskMongoAppSpec};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Capabilities, EnvVar, EnvVarSource, SeccompProfile, SecretKeySelector, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::error::{Error, Result};
use crate::labels::{self, Component};

/// Port MongoDB listens on.
pub const MONGO_PORT: i32 = 27017;
/// Database the webapp uses.
pub const DATABASE: &str = "flask_db";
/// Key of the user name in the credentials Secret.
pub const USERNAME_KEY: &str = "username";
/// Key of the password in the credentials Secret.
pub const PASSWORD_KEY: &str = "password";
/// Name of the StatefulSet's volume claim template.
pub const CLAIM_TEMPLATE: &str = "data";

/// A `FlaskMongoApp` with the metadata the API server always sets, checked once, and the
/// names of its children.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    /// The spec.
    pub spec: &'a FlaskMongoAppSpec,
    /// `metadata.name`.
    pub name: &'a str,
    /// `metadata.namespace`.
    pub namespace: &'a str,
    owner: OwnerReference,
}

impl<'a> Instance<'a> {
    /// Checks that the object has a name, a namespace and a uid.
    pub fn new(app: &'a FlaskMongoApp) -> Result<Self> {
        let name = app
            .metadata
            .name
            .as_deref()
            .ok_or(Error::MissingMetadata("name"))?;
        let namespace = app
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingMetadata("namespace"))?;
        let owner = app
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("uid"))?;
        Ok(Self {
            spec: &app.spec,
            name,
            namespace,
            owner,
        })
    }

    /// Deployment, NodePort Service and HorizontalPodAutoscaler: `<name>-web`.
    pub fn web_name(&self) -> String {
        format!("{}-web", self.name)
    }

    /// StatefulSet and headless Service: `<name>-mongo`.
    pub fn mongo_name(&self) -> String {
        format!("{}-mongo", self.name)
    }

    /// NetworkPolicy: `<name>-network`.
    pub fn network_policy_name(&self) -> String {
        format!("{}-network", self.name)
    }

    /// Credentials Secret: `<name>-mongo-credentials`.
    pub fn secret_name(&self) -> String {
        format!("{}-mongo-credentials", self.name)
    }

    /// PersistentVolume: `<namespace>.<name>.mongo`. Neither a namespace nor a
    /// `FlaskMongoApp`'s name may hold a dot, so no two objects share it.
    pub fn volume_name(&self) -> String {
        format!("{}.{}.mongo", self.namespace, self.name)
    }

    /// The volume's name before 0.2, `<namespace>-<name>-mongo`: ambiguous (namespace
    /// `a-b`, object `c` and namespace `a`, object `b-c`), so a volume of that name is
    /// this object's only if its labels and claim say so.
    pub fn legacy_volume_name(&self) -> String {
        format!("{}-{}-mongo", self.namespace, self.name)
    }

    /// The claim the StatefulSet makes for its only pod: `data-<name>-mongo-0`.
    pub fn claim_name(&self) -> String {
        format!("{CLAIM_TEMPLATE}-{}-0", self.mongo_name())
    }

    /// `metadata.uid`.
    pub fn uid(&self) -> &str {
        &self.owner.uid
    }

    /// Stable DNS name of the MongoDB pod, through the headless Service.
    pub fn mongo_host(&self) -> String {
        let mongo = self.mongo_name();
        format!("{mongo}-0.{mongo}.{}.svc.cluster.local", self.namespace)
    }

    /// Labels of a child of the given tier.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let image = match component {
            Component::Web => self.spec.web.image.as_str(),
            Component::Mongo => self.spec.mongo.image.as_str(),
            // Runs the operator's image, not the app's: no app version to label it with.
            Component::VolumePreparation | Component::VolumePreparer => "",
        };
        labels::labels(self.name, self.namespace, component, image)
    }

    /// Pod selector of a tier.
    pub fn selector(&self, component: Component) -> BTreeMap<String, String> {
        labels::selector(self.name, component)
    }

    /// Metadata of a namespaced child that the garbage collector removes with the object.
    pub fn owned_meta(&self, name: String, component: Component) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Every child the operator applies from the spec alone (the Secret is created once, and
/// the static volume is placed by the plan, which knows the Secret's uid).
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// Web Deployment.
    pub deployment: Deployment,
    /// Web NodePort Service.
    pub web_service: Service,
    /// Web autoscaler, absent when autoscaling is disabled.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// MongoDB StatefulSet.
    pub statefulset: StatefulSet,
    /// MongoDB headless Service.
    pub mongo_service: Service,
    /// The NetworkPolicy that lets only the web pods reach MongoDB, absent when disabled.
    pub network_policy: Option<NetworkPolicy>,
}

/// Builds every child of the instance; `volumes` names the image MongoDB's pod waits for
/// its volume with.
pub fn desired(instance: &Instance<'_>, volumes: &crate::Volumes) -> Children {
    Children {
        deployment: deployment::build(instance),
        web_service: web_service::build(instance),
        hpa: instance
            .spec
            .autoscaling
            .enabled
            .then(|| hpa::build(instance)),
        statefulset: statefulset::build(instance, volumes),
        mongo_service: mongo_service::build(instance),
        network_policy: instance
            .spec
            .network_policy
            .enabled
            .then(|| network_policy::build(instance)),
    }
}

/// An environment variable taken from the credentials Secret.
fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// An environment variable with a literal value.
fn literal_env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The container runtime's default seccomp profile.
fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// Drops every capability and adds back `add`.
fn capabilities(add: &[&str]) -> Capabilities {
    Capabilities {
        drop: Some(vec!["ALL".to_owned()]),
        add: (!add.is_empty()).then(|| add.iter().map(|c| (*c).to_owned()).collect()),
    }
}

/// Kubernetes resource requirements from the spec's amounts.
fn resource_requirements(
    resources: &flaskmongo_crd::Resources,
) -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let list = |amounts: &flaskmongo_crd::ResourceAmounts| {
        let map: BTreeMap<String, Quantity> = [("cpu", &amounts.cpu), ("memory", &amounts.memory)]
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), Quantity(value.clone()?))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: list(&resources.requests),
        limits: list(&resources.limits),
        ..Default::default()
    }
}

/// What one of the operator's small helper containers asks for: a hundredth of a core, and
/// `memory` requested with `memory_limit` at most.
fn helper_resources(
    memory: &str,
    memory_limit: &str,
) -> k8s_openapi::api::core::v1::ResourceRequirements {
    let amounts = |memory: &str| flaskmongo_crd::ResourceAmounts {
        cpu: Some("10m".to_owned()),
        memory: Some(memory.to_owned()),
    };
    resource_requirements(&flaskmongo_crd::Resources {
        requests: amounts(memory),
        limits: amounts(memory_limit),
    })
}

/// A pod of the operator's own image (`image`) that hands directories of a node to
/// MongoDB's user: `operator COMMAND MOUNT --owner=999:999` as root with only
/// `capabilities`, a read-only root file system, no token for the API server, and one
/// directory of the node, `host_path`, mounted at `mount`. Its error, if any, becomes the
/// pod's termination message.
struct RootHelper<'a> {
    command: &'a str,
    host_path: &'a str,
    mount: &'a str,
    capabilities: &'a [&'a str],
    memory: &'a str,
    memory_limit: &'a str,
}

impl RootHelper<'_> {
    fn pod_spec(&self, image: &str) -> k8s_openapi::api::core::v1::PodSpec {
        use k8s_openapi::api::core::v1::{
            Container, HostPathVolumeSource, PodSecurityContext, PodSpec, SecurityContext, Volume,
            VolumeMount,
        };
        PodSpec {
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(5),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(0),
                run_as_group: Some(0),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            containers: vec![Container {
                name: "prepare".to_owned(),
                image: Some(image.to_owned()),
                image_pull_policy: Some("IfNotPresent".to_owned()),
                args: Some(vec![
                    self.command.to_owned(),
                    self.mount.to_owned(),
                    format!("--owner={}", persistent_volume::data_owner()),
                ]),
                termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
                resources: Some(helper_resources(self.memory, self.memory_limit)),
                volume_mounts: Some(vec![VolumeMount {
                    name: NODE_DIRECTORY.to_owned(),
                    mount_path: self.mount.to_owned(),
                    ..VolumeMount::default()
                }]),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    capabilities: Some(capabilities(self.capabilities)),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            volumes: Some(vec![Volume {
                name: NODE_DIRECTORY.to_owned(),
                host_path: Some(HostPathVolumeSource {
                    path: self.host_path.to_owned(),
                    type_: Some("DirectoryOrCreate".to_owned()),
                }),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        }
    }
}

/// The name of a [`RootHelper`]'s one volume.
const NODE_DIRECTORY: &str = "node-directory";

/// The kind and name of a child, for messages and Events.
pub fn describe<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{} {}", K::kind(&()), object.name_any())
}

#[cfg(test)]
pub(crate) mod tests;
