//! The web Deployment `<name>-web`.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;

use super::{
    Instance, PASSWORD_KEY, USERNAME_KEY, capabilities, literal_env, resource_requirements,
    runtime_default_seccomp, secret_env,
};
use crate::labels::Component;

/// Numeric user and group of the web pods (the distroless `nonroot` user).
pub const WEB_USER: i64 = 65532;
/// Name of the web container and of its port.
pub const CONTAINER: &str = "web";
const PORT_NAME: &str = "http";

/// The web Deployment. With autoscaling enabled `replicas` is left out: the autoscaler
/// owns that field, and applying it would fight the autoscaler.
pub fn build(instance: &Instance<'_>) -> Deployment {
    let spec = instance.spec;
    Deployment {
        metadata: instance.owned_meta(instance.web_name(), Component::Web),
        spec: DeploymentSpec {
            replicas: (!spec.autoscaling.enabled).then_some(spec.web.replicas),
            selector: LabelSelector {
                match_labels: Some(instance.selector(Component::Web)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(instance.labels(Component::Web)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(instance)),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn pod_spec(instance: &Instance<'_>) -> PodSpec {
    let web = &instance.spec.web;
    let secret = instance.secret_name();
    // `$(VAR)` is expanded by the kubelet from the variables before it, so the password
    // reaches the URI without being written into the Deployment.
    let mut uri = format!(
        "mongodb://$(MONGO_USERNAME):$(MONGO_PASSWORD)@{}:{}/{}?authSource=admin",
        instance.mongo_host(),
        super::MONGO_PORT,
        super::DATABASE
    );
    if let Some(mechanism) = instance.spec.mongo.auth_mechanism {
        uri.push_str("&authMechanism=");
        uri.push_str(mechanism.as_str());
    }
    let mut env = vec![
        literal_env("PORT", web.port.to_string()),
        secret_env("MONGO_USERNAME", &secret, USERNAME_KEY),
        secret_env("MONGO_PASSWORD", &secret, PASSWORD_KEY),
        literal_env("MONGODB_URI", uri),
    ];
    env.extend(
        web.env
            .iter()
            .map(|var| literal_env(&var.name, var.value.clone())),
    );
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String(PORT_NAME.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(WEB_USER),
            run_as_group: Some(WEB_USER),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        }),
        containers: vec![Container {
            name: CONTAINER.to_owned(),
            image: Some(web.image.clone()),
            image_pull_policy: Some(web.image_pull_policy.as_str().to_owned()),
            ports: Some(vec![ContainerPort {
                name: Some(PORT_NAME.to_owned()),
                container_port: web.port,
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]),
            env: Some(env),
            resources: Some(resource_requirements(&web.resources)),
            liveness_probe: Some(probe("/healthz", 10, 3)),
            readiness_probe: Some(probe("/readyz", 5, 2)),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                capabilities: Some(capabilities(&[])),
                read_only_root_filesystem: Some(true),
                run_as_non_root: Some(true),
                run_as_user: Some(WEB_USER),
                run_as_group: Some(WEB_USER),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }],
        ..PodSpec::default()
    }
}
