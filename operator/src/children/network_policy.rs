//! The NetworkPolicy `<name>-network`.

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Instance, MONGO_PORT};
use crate::labels::{self, Component};

/// Selects the pods of both tiers and admits to them only MongoDB's port from the web pods
/// and the web port from anywhere. Each tier listens on its own port alone, so MongoDB is
/// reachable from this object's web pods and nothing else. Egress stays open.
pub fn build(instance: &Instance<'_>) -> NetworkPolicy {
    let selecting = |labels| LabelSelector {
        match_labels: Some(labels),
        ..LabelSelector::default()
    };
    let tcp = |port| {
        Some(vec![NetworkPolicyPort {
            port: Some(IntOrString::Int(port)),
            protocol: Some("TCP".to_owned()),
            ..NetworkPolicyPort::default()
        }])
    };
    NetworkPolicy {
        metadata: instance.owned_meta(instance.network_policy_name(), Component::Mongo),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selecting(labels::instance_selector(instance.name))),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(selecting(instance.selector(Component::Web))),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: tcp(MONGO_PORT),
                },
                NetworkPolicyIngressRule {
                    from: None,
                    ports: tcp(instance.spec.web.port),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}
