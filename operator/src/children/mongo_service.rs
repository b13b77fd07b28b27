//! The headless Service `<name>-mongo` that gives the MongoDB pod a stable DNS name.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Instance, MONGO_PORT};
use crate::labels::Component;

/// The headless Service (`clusterIP: None`).
pub fn build(instance: &Instance<'_>) -> Service {
    Service {
        metadata: instance.owned_meta(instance.mongo_name(), Component::Mongo),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            selector: Some(instance.selector(Component::Mongo)),
            ports: Some(vec![ServicePort {
                name: Some("mongodb".to_owned()),
                protocol: Some("TCP".to_owned()),
                port: MONGO_PORT,
                target_port: Some(IntOrString::Int(MONGO_PORT)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
