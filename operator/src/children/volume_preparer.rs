//! The DaemonSet `flaskmongo-volume-preparer`: not a child of any object but the
//! operator's own, in its namespace for such pods. On every node it hands each new volume
//! directory under the volume root to MongoDB's user (`operator prepare-volumes`), so that
//! a new volume needs no pod of its own. It runs as root with CHOWN alone, sees nothing of
//! the node but the volume root, and has no token for the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{Node, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;

use super::RootHelper;
use crate::Volumes;
use crate::labels::{self, Component};

/// The DaemonSet's name.
pub const NAME: &str = "flaskmongo-volume-preparer";
/// Where its pods mount the volume root.
const MOUNT: &str = "/volumes";

/// The labels its pods are selected by.
fn selector_labels() -> BTreeMap<String, String> {
    labels::selector(NAME, Component::VolumePreparer)
}

/// The label selector of its pods, as the watch of them asks.
pub fn selector() -> String {
    selector_labels()
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The DaemonSet, from the administrator's choices.
pub fn build(volumes: &Volumes) -> DaemonSet {
    let mut labels = selector_labels();
    labels.insert(labels::PART_OF.to_owned(), labels::APP_NAME.to_owned());
    labels.insert(labels::MANAGED_BY.to_owned(), labels::MANAGER.to_owned());
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(volumes.preparation_namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(selector_labels()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(
                    RootHelper {
                        command: "prepare-volumes",
                        host_path: &volumes.root,
                        mount: MOUNT,
                        capabilities: &["CHOWN"],
                        memory: "8Mi",
                        memory_limit: "32Mi",
                    }
                    .pod_spec(&volumes.preparation_image),
                ),
            },
            ..DaemonSetSpec::default()
        },
        status: None,
    }
}

/// The nodes a new volume may go to: those where a preparer pod is Ready (it hands the
/// volume's directory over once the kubelet makes it) and that take new pods (of `nodes`,
/// neither cordoned nor tainted against them, since MongoDB's pod tolerates nothing), by
/// name, each once.
pub fn ready_nodes<'a>(pods: impl IntoIterator<Item = &'a Pod>, nodes: &[Node]) -> Vec<String> {
    let mut ready: Vec<String> = pods
        .into_iter()
        .filter(|pod| serves(pod))
        .filter_map(|pod| pod.spec.as_ref()?.node_name.clone())
        .filter(|name| {
            nodes
                .iter()
                .any(|node| node.metadata.name.as_ref() == Some(name) && takes_new_pods(node))
        })
        .collect();
    ready.sort();
    ready.dedup();
    ready
}

/// Whether the scheduler would place a pod without tolerations on `node`.
pub fn takes_new_pods(node: &Node) -> bool {
    let Some(spec) = &node.spec else {
        return true;
    };
    spec.unschedulable != Some(true)
        && spec
            .taints
            .iter()
            .flatten()
            .all(|taint| taint.effect != "NoSchedule" && taint.effect != "NoExecute")
}

/// Whether the preparer's `pod` serves its node: Ready, and not being deleted.
pub fn serves(pod: &Pod) -> bool {
    let ready = pod
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
    ready && pod.metadata.deletion_timestamp.is_none()
}

/// The node of `nodes` a new volume of the object with `uid` goes to: the one whose hash
/// with the uid is highest. New volumes spread evenly without counting those there are,
/// and a node that comes or goes moves no other volume's choice.
pub fn choose<'a>(nodes: &'a [String], uid: &str) -> Option<&'a str> {
    nodes
        .iter()
        .max_by_key(|node| spread_hash(&[uid.as_bytes(), b"/", node.as_bytes()]))
        .map(String::as_str)
}

/// 64-bit FNV-1a over `parts`, its bits then mixed (splitmix64's finalizer) so that
/// inputs alike but for their last bytes spread over the whole range; the same in every
/// build.
fn spread_hash(parts: &[&[u8]]) -> u64 {
    let hash = parts
        .iter()
        .flat_map(|part| part.iter())
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}
