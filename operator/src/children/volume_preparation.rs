//! The one-shot pod `prepare-volume-<object uid>` that hands a static volume's directory to
//! MongoDB's user (`operator prepare-volume`), so that MongoDB runs without root. It lives
//! in the operator's own namespace for such pods, never in the user's: it runs as root and
//! mounts a directory of the node, which no user of a `FlaskMongoApp` may do.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::api::ObjectMeta;

use super::persistent_volume::{HOSTNAME_LABEL, Placement};
use super::{Instance, RootHelper};
use crate::Volumes;
use crate::labels::{self, Component};

/// Where the pod mounts the volume's directory.
const MOUNT: &str = "/data";
/// Capabilities the preparation needs as root: changing owners (CHOWN), entering and
/// changing what MongoDB's user already owns (DAC_OVERRIDE, FOWNER). Nothing else.
const PREPARATION_CAPABILITIES: [&str; 3] = ["CHOWN", "DAC_OVERRIDE", "FOWNER"];
/// Longest a preparation may run; a huge retained database takes a while to walk.
const DEADLINE_SECONDS: i64 = 600;

/// What every preparation pod's name starts with, before its object's uid.
const NAME_PREFIX: &str = "prepare-volume-";

/// The pod's name: one per object, and a new object of the same name has a new uid.
pub fn name(instance: &Instance<'_>) -> String {
    format!("{NAME_PREFIX}{}", instance.uid())
}

/// The uid of the object a preparation pod named `name` is for.
pub fn uid_of(name: &str) -> Option<&str> {
    name.strip_prefix(NAME_PREFIX).filter(|uid| !uid.is_empty())
}

/// The pod that prepares the directory of `placement` on its node (any node for a new
/// volume: the volume then follows the pod to its node).
pub fn build(instance: &Instance<'_>, placement: &Placement, volumes: &Volumes) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name(instance)),
            namespace: Some(volumes.preparation_namespace.clone()),
            labels: Some(instance.labels(Component::VolumePreparation)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            active_deadline_seconds: Some(DEADLINE_SECONDS),
            node_selector: placement
                .node
                .as_ref()
                .map(|node| BTreeMap::from([(HOSTNAME_LABEL.to_owned(), node.clone())])),
            ..RootHelper {
                command: "prepare-volume",
                host_path: &placement.path,
                mount: MOUNT,
                capabilities: &PREPARATION_CAPABILITIES,
                memory: "16Mi",
                memory_limit: "64Mi",
            }
            .pod_spec(&volumes.preparation_image)
        }),
        ..Pod::default()
    }
}

/// Where a preparation pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not done yet (or going away).
    Running,
    /// Done.
    Succeeded,
    /// Failed: why, in the pod's or its container's words.
    Failed(String),
}

/// Where `pod` stands.
pub fn progress(pod: &Pod) -> Progress {
    let status = pod.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => Progress::Succeeded,
        Some("Failed") => {
            let terminated = status.and_then(|s| {
                s.container_statuses
                    .as_ref()?
                    .first()?
                    .state
                    .as_ref()?
                    .terminated
                    .as_ref()
            });
            let words = [
                terminated.and_then(|t| t.message.clone()),
                status.and_then(|s| s.message.clone()),
                terminated.and_then(|t| t.reason.clone()),
                status.and_then(|s| s.reason.clone()),
            ];
            let why = words
                .into_iter()
                .flatten()
                .map(|text| text.trim().to_owned())
                .find(|text| !text.is_empty())
                .unwrap_or_else(|| "no reason given".to_owned());
            Progress::Failed(why)
        }
        _ => Progress::Running,
    }
}

/// The label selector of the preparation pods.
pub fn selector() -> String {
    format!(
        "{},{}={}",
        labels::managed_selector(),
        labels::COMPONENT,
        Component::VolumePreparation.as_str()
    )
}
