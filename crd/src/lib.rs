//! The `FlaskMongoApp` custom resource: a web app and its MongoDB described by one object.
//!
//! Every default lives in the generated schema (so `kubectl get -o yaml` shows it) and every
//! rule the API server can check lives there too, as OpenAPI constraints or CEL rules whose
//! messages name the field, so a bad object is refused by `kubectl apply` itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of the resource.
pub const GROUP: &str = "flaskmongo.dev";

/// Image of the bundled webapp, tagged with this release's version.
pub const DEFAULT_WEB_IMAGE: &str = concat!("flaskmongo/webapp:", env!("CARGO_PKG_VERSION"));

/// Pinned MongoDB image.
pub const DEFAULT_MONGO_IMAGE: &str = "mongo:7.0.16";

/// Longest `metadata.name`: the StatefulSet `<name>-mongo` adds a revision hash of up to
/// eleven characters to its name in a label value, which may not exceed 63 characters.
pub const MAX_NAME_LEN: usize = 46;

/// Condition type: the app serves (web pods and MongoDB ready).
pub const CONDITION_READY: &str = "Ready";
/// Condition type: the operator or Kubernetes is still bringing children to the spec.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type: something prevents the spec from being met.
pub const CONDITION_DEGRADED: &str = "Degraded";

/// A web app backed by MongoDB: the web Deployment, its NodePort Service and autoscaler,
/// the MongoDB StatefulSet, its headless Service, volume and credentials.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "flaskmongo.dev",
    version = "v1alpha1",
    kind = "FlaskMongoApp",
    plural = "flaskmongoapps",
    shortname = "fma",
    namespaced,
    status = "FlaskMongoAppStatus",
    derive = "PartialEq",
    doc = "A Flask-style web app and its MongoDB, kept running by the flaskmongo operator.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Web", type_ = "string", json_path = ".status.web.ready", description = "ready/desired web pods"),
    printcolumn(name = "Mongo", type_ = "boolean", json_path = ".status.mongoReady"),
    printcolumn(name = "NodePort", type_ = "integer", json_path = ".status.nodePort"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 46 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be at most 46 characters of lowercase letters, digits and '-', starting with a letter and ending with a letter or digit")
)]
#[serde(rename_all = "camelCase")]
pub struct FlaskMongoAppSpec {
    /// The web tier: Deployment, NodePort Service.
    #[serde(default)]
    pub web: WebSpec,
    /// The HorizontalPodAutoscaler of the web Deployment.
    #[serde(default)]
    pub autoscaling: AutoscalingSpec,
    /// The MongoDB tier: StatefulSet, headless Service, storage, credentials.
    #[serde(default)]
    pub mongo: MongoSpec,
    /// The NetworkPolicy that lets only the web pods reach MongoDB.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// When true the operator changes nothing and reports so in the status.
    #[serde(default)]
    pub paused: bool,
}

/// The web tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebSpec {
    /// Container image of the webapp.
    #[serde(default = "default_web_image")]
    #[schemars(length(min = 1, max = 512), pattern(r"^\S+$"))]
    pub image: String,
    /// When the kubelet pulls the image.
    #[serde(default)]
    pub image_pull_policy: ImagePullPolicy,
    /// Number of pods while autoscaling is disabled (the autoscaler owns it otherwise).
    #[serde(default = "default_web_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// Port the webapp listens on inside its container (passed as `PORT`).
    #[serde(default = "default_web_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// The NodePort Service in front of the pods.
    #[serde(default)]
    pub service: WebServiceSpec,
    /// Compute resources of the web container. A CPU request is required: the autoscaler
    /// measures utilization against it.
    #[serde(default = "default_web_resources")]
    #[x_kube(validation = Rule::new("has(self.requests.cpu)").message("web.resources.requests.cpu is required: the autoscaler measures CPU utilization against it"))]
    pub resources: Resources,
    /// Extra environment variables of the web container.
    #[serde(default)]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(e, !(e.name in ['PORT', 'MONGODB_URI', 'MONGO_USERNAME', 'MONGO_PASSWORD']))").message("web.env must not set PORT, MONGODB_URI, MONGO_USERNAME or MONGO_PASSWORD: the operator sets them"))]
    pub env: Vec<EnvVar>,
}

impl Default for WebSpec {
    fn default() -> Self {
        Self {
            image: default_web_image(),
            image_pull_policy: ImagePullPolicy::default(),
            replicas: default_web_replicas(),
            port: default_web_port(),
            service: WebServiceSpec::default(),
            resources: default_web_resources(),
            env: Vec::new(),
        }
    }
}

/// When the kubelet pulls an image.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ImagePullPolicy {
    /// Pull on every container start.
    Always,
    /// Pull only when the node lacks the image.
    #[default]
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl ImagePullPolicy {
    /// The value Kubernetes expects in `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// The web NodePort Service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebServiceSpec {
    /// Port of the Service inside the cluster.
    #[serde(default = "default_service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Port on every node; when unset Kubernetes assigns one and the status reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

impl Default for WebServiceSpec {
    fn default() -> Self {
        Self {
            port: default_service_port(),
            node_port: None,
        }
    }
}

/// An environment variable with a literal value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Requests and limits of a container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[x_kube(validation = Rule::new("!has(self.requests.cpu) || !has(self.limits.cpu) || !quantity(self.requests.cpu).isGreaterThan(quantity(self.limits.cpu))").message("resources.requests.cpu must not exceed resources.limits.cpu"))]
#[x_kube(validation = Rule::new("!has(self.requests.memory) || !has(self.limits.memory) || !quantity(self.requests.memory).isGreaterThan(quantity(self.limits.memory))").message("resources.requests.memory must not exceed resources.limits.memory"))]
pub struct Resources {
    /// What the scheduler reserves.
    #[serde(default)]
    pub requests: ResourceAmounts,
    /// The most the container may use.
    #[serde(default)]
    pub limits: ResourceAmounts,
}

/// CPU and memory quantities, such as `250m` or `64Mi`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ResourceAmounts {
    /// CPU, in cores (`500m` is half a core).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && !quantity(self).isLessThan(quantity('0'))").message("cpu must be a non-negative quantity such as 250m or 1"))]
    pub cpu: Option<String>,
    /// Memory, in bytes (`64Mi`, `1Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && !quantity(self).isLessThan(quantity('0'))").message("memory must be a non-negative quantity such as 64Mi or 1Gi"))]
    pub memory: Option<String>,
}

impl ResourceAmounts {
    /// Amounts with both quantities set.
    pub fn new(cpu: &str, memory: &str) -> Self {
        Self {
            cpu: Some(cpu.to_owned()),
            memory: Some(memory.to_owned()),
        }
    }
}

/// The HorizontalPodAutoscaler of the web Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas"))]
pub struct AutoscalingSpec {
    /// Whether the autoscaler exists; without it `web.replicas` holds.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fewest web pods.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Most web pods.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Average CPU utilization, in percent of the request, the autoscaler aims at.
    #[serde(
        rename = "targetCPUUtilizationPercentage",
        default = "default_target_cpu"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
    /// Seconds of lower recommendations the autoscaler waits for before it removes pods;
    /// unset, Kubernetes' default of 300 holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub scale_down_stabilization_window_seconds: Option<i32>,
}

impl Default for AutoscalingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            min_replicas: default_min_replicas(),
            max_replicas: default_max_replicas(),
            target_cpu_utilization_percentage: default_target_cpu(),
            scale_down_stabilization_window_seconds: None,
        }
    }
}

/// The NetworkPolicy `<name>-network`: MongoDB's port open only to the web pods, the web
/// port to anyone. It takes effect only where the cluster's network plugin enforces
/// NetworkPolicies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Whether the NetworkPolicy exists.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// The MongoDB tier.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MongoSpec {
    /// Container image of MongoDB.
    #[serde(default = "default_mongo_image")]
    #[schemars(length(min = 1, max = 512), pattern(r"^\S+$"))]
    pub image: String,
    /// Compute resources of the MongoDB container.
    #[serde(default = "default_mongo_resources")]
    pub resources: Resources,
    /// Where the data lives.
    #[serde(default)]
    pub storage: StorageSpec,
    /// How the web pods prove the credentials; unset, the driver negotiates (MongoDB offers
    /// SCRAM). `PLAIN` is for MongoDB-wire servers that take only it, such as FerretDB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mechanism: Option<AuthMechanism>,
}

impl Default for MongoSpec {
    fn default() -> Self {
        Self {
            image: default_mongo_image(),
            resources: default_mongo_resources(),
            storage: StorageSpec::default(),
            auth_mechanism: None,
        }
    }
}

/// An authentication mechanism of the MongoDB connection string.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMechanism {
    /// SCRAM with SHA-256 (MongoDB 4.0 and later).
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-1.
    #[serde(rename = "SCRAM-SHA-1")]
    ScramSha1,
    /// User name and password in clear, as the server takes them.
    #[serde(rename = "PLAIN")]
    Plain,
}

impl AuthMechanism {
    /// The value of `authMechanism` in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha1 => "SCRAM-SHA-1",
            Self::Plain => "PLAIN",
        }
    }
}

/// The MongoDB volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Capacity of the volume. Immutable: a StatefulSet cannot change its claims.
    #[serde(default = "default_storage_size")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("mongo.storage.size must be a positive quantity such as 1Gi"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("mongo.storage.size is immutable"))]
    pub size: String,
    /// StorageClass of the claim (and of the static volume, when one is created). Immutable.
    #[serde(default = "default_storage_class")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("mongo.storage.storageClassName is immutable"))]
    pub storage_class_name: String,
    /// The static hostPath PersistentVolume.
    #[serde(default)]
    pub persistent_volume: PersistentVolumeSpec,
    /// What happens to the data (volume, claim, credentials) when the object is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: default_storage_class(),
            persistent_volume: PersistentVolumeSpec::default(),
            deletion_policy: DeletionPolicy::default(),
        }
    }
}

/// The static hostPath PersistentVolume, as on Minikube. Its directory is not part of the
/// spec: the operator's administrator sets the root every volume lives under, and the
/// operator names one directory per volume, so no user chooses a path on the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.create == oldSelf.create").message("mongo.storage.persistentVolume.create is immutable"))]
pub struct PersistentVolumeSpec {
    /// True: the operator creates a hostPath PersistentVolume bound to the claim.
    /// False: the claim is left to dynamic provisioning.
    #[serde(default = "default_true")]
    pub create: bool,
}

impl Default for PersistentVolumeSpec {
    fn default() -> Self {
        Self { create: true }
    }
}

/// What happens to the data when the `FlaskMongoApp` is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep the volume, its claim and the credentials Secret, so that an object created
    /// again with the same name finds its data and the password that opens it.
    #[default]
    Retain,
    /// Remove the claim, the volume and the credentials Secret.
    Delete,
}

/// What the operator observed, written only by the operator.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FlaskMongoAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, in the standard condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The web Deployment's pods.
    #[serde(default)]
    pub web: WebStatus,
    /// Whether the MongoDB pod is ready.
    #[serde(default)]
    pub mongo_ready: bool,
    /// The node port of the web Service, as assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_port: Option<i32>,
    /// A sentence on the state of the app.
    #[serde(default)]
    pub message: String,
    /// The credentials Secret, once the operator has created it or found it there. The
    /// operator may not read Secrets, so this record is how it knows that one exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// Pods of the web Deployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebStatus {
    /// Pods wanted now (the autoscaler's choice when it is enabled).
    #[serde(default)]
    pub replicas: i32,
    /// Pods ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// `ready/wanted`, for `kubectl get`.
    #[serde(default)]
    pub ready: String,
}

impl FlaskMongoApp {
    /// The condition of the given type, if the status has it.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
    }
}

fn default_true() -> bool {
    true
}
fn default_web_image() -> String {
    DEFAULT_WEB_IMAGE.to_owned()
}
fn default_web_replicas() -> i32 {
    2
}
fn default_web_port() -> i32 {
    5000
}
fn default_service_port() -> i32 {
    80
}
fn default_web_resources() -> Resources {
    Resources {
        requests: ResourceAmounts::new("250m", "64Mi"),
        limits: ResourceAmounts::new("500m", "128Mi"),
    }
}
fn default_min_replicas() -> i32 {
    2
}
fn default_max_replicas() -> i32 {
    5
}
fn default_target_cpu() -> i32 {
    70
}
fn default_mongo_image() -> String {
    DEFAULT_MONGO_IMAGE.to_owned()
}
fn default_mongo_resources() -> Resources {
    Resources {
        requests: ResourceAmounts::new("250m", "256Mi"),
        limits: ResourceAmounts::new("1", "1Gi"),
    }
}
fn default_storage_size() -> String {
    "1Gi".to_owned()
}
fn default_storage_class() -> String {
    "manual".to_owned()
}

#[cfg(test)]
mod tests;
