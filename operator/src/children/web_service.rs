//! The web NodePort Service `<name>-web`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Instance;
use crate::labels::Component;

/// The NodePort Service: `service.port` → the container port. Without `service.nodePort`
/// the field is left out, so Kubernetes assigns a port and keeps it.
pub fn build(instance: &Instance<'_>) -> Service {
    let web = &instance.spec.web;
    Service {
        metadata: instance.owned_meta(instance.web_name(), Component::Web),
        spec: Some(ServiceSpec {
            type_: Some("NodePort".to_owned()),
            selector: Some(instance.selector(Component::Web)),
            ports: Some(vec![ServicePort {
                name: Some("http".to_owned()),
                protocol: Some("TCP".to_owned()),
                port: web.service.port,
                target_port: Some(IntOrString::Int(web.port)),
                node_port: web.service.node_port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
