use std::collections::BTreeMap;

use flaskmongo_crd::{
    DeletionPolicy, EnvVar as SpecEnvVar, FlaskMongoApp, FlaskMongoAppSpec, ImagePullPolicy,
};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use proptest::prelude::*;

use super::persistent_volume::Placement;
use super::*;
use crate::labels::{INSTANCE, MANAGED_BY, MANAGER};

/// The node the preparation pods of the tests run on.
pub(crate) const NODE: &str = "node-7";

/// `pod` as the kubelet leaves it, in `phase`, on [`NODE`].
pub(crate) fn finished(mut pod: Pod, phase: &str) -> Pod {
    pod.spec.get_or_insert_default().node_name = Some(NODE.to_owned());
    pod.status.get_or_insert_default().phase = Some(phase.to_owned());
    pod
}

/// An object as the API server would return it: with a namespace and a uid.
pub(crate) fn app(name: &str, namespace: &str, spec: FlaskMongoAppSpec) -> FlaskMongoApp {
    let mut app = FlaskMongoApp::new(name, spec);
    app.metadata.namespace = Some(namespace.to_owned());
    app.metadata.uid = Some("0b5e2a8e-5c1f-4c3e-9d0a-7f6b1c2d3e4f".to_owned());
    app.metadata.generation = Some(1);
    app
}

fn build(spec: FlaskMongoAppSpec) -> Children {
    desired(
        &Instance::new(&app("shop", "team-a", spec)).unwrap(),
        &crate::Volumes::default(),
    )
}

fn pod(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> &PodSpec {
    template.spec.as_ref().unwrap()
}

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.as_ref()?.iter().find(|e| e.name == name)
}

#[test]
fn instance_needs_server_metadata() {
    let mut unsaved = FlaskMongoApp::new("shop", FlaskMongoAppSpec::default());
    assert_eq!(
        Instance::new(&unsaved).unwrap_err().to_string(),
        "FlaskMongoApp has no metadata.namespace"
    );
    unsaved.metadata.namespace = Some("ns".into());
    assert_eq!(
        Instance::new(&unsaved).unwrap_err().to_string(),
        "FlaskMongoApp has no metadata.uid"
    );
}

#[test]
fn children_have_the_agreed_names_labels_and_owner() {
    let children = build(FlaskMongoAppSpec::default());
    let namespaced = [
        (children.deployment.metadata.clone(), "shop-web"),
        (children.web_service.metadata.clone(), "shop-web"),
        (children.hpa.clone().unwrap().metadata, "shop-web"),
        (children.statefulset.metadata.clone(), "shop-mongo"),
        (children.mongo_service.metadata.clone(), "shop-mongo"),
    ];
    for (meta, name) in namespaced {
        assert_eq!(meta.name.as_deref(), Some(name));
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("FlaskMongoApp", "shop", Some(true))
        );
        let labels = meta.labels.unwrap();
        for key in [
            "name",
            "instance",
            "component",
            "part-of",
            "managed-by",
            "version",
        ] {
            assert!(
                labels.contains_key(&format!("app.kubernetes.io/{key}")),
                "{name} lacks {key}"
            );
        }
        assert_eq!(labels[MANAGED_BY], MANAGER);
        assert_eq!(labels[INSTANCE], "shop");
    }
    let app = app("shop", "team-a", FlaskMongoAppSpec::default());
    let instance = Instance::new(&app).unwrap();
    let volume = persistent_volume::build(&instance, &Placement::new(&instance, "/v"));
    assert_eq!(volume.name_any(), "team-a.shop.mongo");
    assert!(
        volume.metadata.owner_references.is_none(),
        "a cluster-scoped object cannot be owned"
    );
    assert_eq!(
        crate::labels::owner(volume.labels()),
        Some(("team-a", "shop"))
    );
}

#[test]
fn deployment_runs_the_webapp_without_clear_credentials() {
    let children = build(FlaskMongoAppSpec::default());
    let spec = &children.deployment.spec;
    assert_eq!(spec.replicas, None, "the autoscaler owns replicas");
    assert_eq!(spec.selector.match_labels.as_ref().unwrap().len(), 3);
    let pod = pod(&spec.template);
    let web = &pod.containers[0];
    assert_eq!(
        web.image.as_deref(),
        Some(flaskmongo_crd::DEFAULT_WEB_IMAGE)
    );
    assert_eq!(web.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(web.ports.as_ref().unwrap()[0].container_port, 5000);
    assert_eq!(env(web, "PORT").unwrap().value.as_deref(), Some("5000"));
    let uri = env(web, "MONGODB_URI").unwrap().value.clone().unwrap();
    assert_eq!(
        uri,
        "mongodb://$(MONGO_USERNAME):$(MONGO_PASSWORD)@shop-mongo-0.shop-mongo.team-a.svc.cluster.local:27017/flask_db?authSource=admin"
    );
    let password = env(web, "MONGO_PASSWORD")
        .unwrap()
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (password.name.as_str(), password.key.as_str()),
        ("shop-mongo-credentials", "password")
    );
    let names: Vec<&str> = web
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        names.iter().position(|n| *n == "MONGO_PASSWORD")
            < names.iter().position(|n| *n == "MONGODB_URI")
    );
    let path = |probe: &Option<k8s_openapi::api::core::v1::Probe>| {
        probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .clone()
    };
    assert_eq!(path(&web.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&web.readiness_probe).as_deref(), Some("/readyz"));
    let requests = web.resources.as_ref().unwrap().requests.as_ref().unwrap();
    assert_eq!(requests["cpu"].0, "250m");
    assert_eq!(
        web.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "128Mi"
    );
}

#[test]
fn web_pods_meet_the_restricted_pod_security_standard() {
    let children = build(FlaskMongoAppSpec::default());
    let pod = pod(&children.deployment.spec.template);
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(pod_security.run_as_user, Some(65532));
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let security = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    assert_eq!(security.capabilities.as_ref().unwrap().add, None);
    assert!(
        pod.volumes.is_none(),
        "no hostPath or other volume in the web pods"
    );
}

#[test]
fn autoscaling_off_sets_replicas_and_drops_the_hpa() {
    let mut spec = FlaskMongoAppSpec::default();
    spec.autoscaling.enabled = false;
    spec.web.replicas = 3;
    let children = build(spec);
    assert_eq!(children.deployment.spec.replicas, Some(3));
    assert!(children.hpa.is_none());
}

#[test]
fn hpa_scales_the_deployment_on_cpu() {
    let mut spec = FlaskMongoAppSpec::default();
    spec.autoscaling.min_replicas = 3;
    spec.autoscaling.max_replicas = 9;
    spec.autoscaling.target_cpu_utilization_percentage = 55;
    let hpa = build(spec).hpa.unwrap().spec;
    assert_eq!(
        (
            hpa.scale_target_ref.kind.as_str(),
            hpa.scale_target_ref.name.as_str()
        ),
        ("Deployment", "shop-web")
    );
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(3), 9));
    let metric = hpa.metrics.unwrap()[0].resource.clone().unwrap();
    assert_eq!(
        (metric.name.as_str(), metric.target.average_utilization),
        ("cpu", Some(55))
    );
}

#[test]
fn auth_mechanism_joins_the_connection_string_when_set() {
    let mut spec = FlaskMongoAppSpec::default();
    spec.mongo.auth_mechanism = Some(flaskmongo_crd::AuthMechanism::Plain);
    let deployment = build(spec).deployment;
    let uri = env(&pod(&deployment.spec.template).containers[0], "MONGODB_URI")
        .unwrap()
        .value
        .clone()
        .unwrap();
    assert!(
        uri.ends_with("/flask_db?authSource=admin&authMechanism=PLAIN"),
        "{uri}"
    );
}

#[test]
fn hpa_scale_down_window_is_kubernetes_default_unless_set() {
    let mut spec = FlaskMongoAppSpec::default();
    assert_eq!(build(spec.clone()).hpa.unwrap().spec.behavior, None);
    spec.autoscaling.scale_down_stabilization_window_seconds = Some(20);
    let behavior = build(spec).hpa.unwrap().spec.behavior.unwrap();
    assert_eq!(behavior.scale_up, None);
    assert_eq!(
        behavior.scale_down.unwrap().stabilization_window_seconds,
        Some(20)
    );
}

#[test]
fn web_service_is_a_node_port_to_the_container() {
    let mut spec = FlaskMongoAppSpec::default();
    spec.web.port = 8000;
    let assigned = build(spec.clone()).web_service.spec.unwrap();
    assert_eq!(assigned.type_.as_deref(), Some("NodePort"));
    let port = &assigned.ports.unwrap()[0];
    assert_eq!((port.port, port.node_port), (80, None));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8000))
    );
    spec.web.service.node_port = Some(30080);
    assert_eq!(
        build(spec).web_service.spec.unwrap().ports.unwrap()[0].node_port,
        Some(30080)
    );
}

#[test]
fn mongo_statefulset_keeps_its_claim_and_reads_the_secret() {
    let children = build(FlaskMongoAppSpec::default());
    let spec = &children.statefulset.spec;
    assert_eq!(
        (spec.replicas, spec.service_name.as_deref()),
        (Some(1), Some("shop-mongo"))
    );
    let retention = spec
        .persistent_volume_claim_retention_policy
        .as_ref()
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Retain"));
    let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    let claim_spec = claim.spec.as_ref().unwrap();
    assert_eq!(claim_spec.storage_class_name.as_deref(), Some("manual"));
    assert_eq!(
        claim_spec
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap()["storage"]
            .0,
        "1Gi"
    );
    let pod = pod(&spec.template);
    let mongo = &pod.containers[0];
    assert!(mongo.image.as_deref().unwrap().starts_with("mongo:7.0."));
    let user = env(mongo, "MONGO_INITDB_ROOT_PASSWORD")
        .unwrap()
        .value_from
        .as_ref()
        .unwrap();
    assert_eq!(
        user.secret_key_ref.as_ref().unwrap().name,
        "shop-mongo-credentials"
    );
    // Probes need no tool in the image: the stand-in has none, the official one has mongosh.
    for probe in [&mongo.readiness_probe, &mongo.liveness_probe] {
        let probe = probe.as_ref().unwrap();
        assert!(probe.exec.is_none());
        assert_eq!(
            probe.tcp_socket.as_ref().unwrap().port,
            IntOrString::Int(27017)
        );
    }
    assert_eq!(
        mongo.volume_mounts.as_ref().unwrap()[0].mount_path,
        "/data/db"
    );
    assert_eq!(
        pod.security_context
            .as_ref()
            .unwrap()
            .seccomp_profile
            .as_ref()
            .unwrap()
            .type_,
        "RuntimeDefault"
    );
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(
        (
            pod_security.run_as_user,
            pod_security.run_as_group,
            pod_security.run_as_non_root,
            pod_security.fs_group
        ),
        (Some(999), Some(999), Some(true), Some(999)),
        "the official image's mongodb user, so its entrypoint switches nothing"
    );
    let security = mongo.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let capabilities = security.capabilities.as_ref().unwrap();
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(capabilities.add, None, "no capability at all");
    // First, as the same user and just as unprivileged, it waits until the data directory
    // is writable.
    let init = pod.init_containers.as_ref().unwrap();
    assert_eq!(init.len(), 1);
    let wait = &init[0];
    assert_eq!(
        wait.args.as_deref().unwrap(),
        ["await-volume", "/data/db", "--timeout-seconds=300"]
    );
    assert_eq!(wait.image.as_deref(), Some(operator_image().as_str()));
    assert_eq!(wait.volume_mounts, mongo.volume_mounts);
    let security = wait.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_user, None, "the pod's user, 999");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.capabilities.as_ref().unwrap().add, None);
}

#[test]
fn the_volume_preparer_is_root_on_every_node_but_can_only_change_owners_under_the_volume_root() {
    use super::volume_preparer;
    let volumes = crate::Volumes {
        root: "/srv/flaskmongo".to_owned(),
        ..crate::Volumes::default()
    };
    let daemon_set = volume_preparer::build(&volumes);
    assert_eq!(
        daemon_set.metadata.namespace.as_deref(),
        Some("flaskmongo-volumes")
    );
    assert_eq!(
        crate::labels::owner(daemon_set.metadata.labels.as_ref().unwrap()),
        None,
        "no object's child"
    );
    let template = &daemon_set.spec.template;
    let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
    let selected = volume_preparer::selector();
    for pair in selected.split(',') {
        let (key, value) = pair.split_once('=').unwrap();
        assert_eq!(labels[key], value, "its pods are what the operator watches");
    }
    assert_root_helper(
        template.spec.as_ref().unwrap(),
        "/srv/flaskmongo",
        ["prepare-volumes", "/volumes", "--owner=999:999"],
        &["CHOWN"],
    );
}

/// The operator's released image, which its helper containers run by default.
fn operator_image() -> String {
    format!("flaskmongo/operator:{}", env!("CARGO_PKG_VERSION"))
}

/// `spec` runs the operator's image as root with `args`, the capabilities `added` alone
/// and no way to gain more, and sees nothing of the node but `host_path`.
fn assert_root_helper(spec: &PodSpec, host_path: &str, args: [&str; 3], added: &[&str]) {
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!((spec.host_network, spec.host_pid), (None, None));
    let mounted = spec.volumes.as_ref().unwrap();
    assert_eq!(mounted.len(), 1, "nothing of the node but {host_path}");
    assert_eq!(mounted[0].host_path.as_ref().unwrap().path, host_path);
    let container = &spec.containers[0];
    assert_eq!(container.image.as_deref(), Some(operator_image().as_str()));
    assert_eq!(container.args.as_deref().unwrap(), args);
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.privileged, None);
    let capabilities = security.capabilities.as_ref().unwrap();
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(capabilities.add.as_deref().unwrap(), added);
}

#[test]
fn new_volumes_go_only_where_a_preparer_is_ready_on_a_node_taking_pods_and_spread_over_those() {
    use super::volume_preparer::{choose, ready_nodes};
    use k8s_openapi::api::core::v1::{Node, NodeSpec, PodCondition, PodStatus, Taint};
    let preparer = |node: &str, ready: &str| Pod {
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: ready.to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
        ..Pod::default()
    };
    let mut going = preparer("node-4", "True");
    going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1).unwrap(),
    ));
    let pending = Pod {
        status: None,
        ..preparer("node-5", "True")
    };
    let pods = [
        preparer("node-2", "True"),
        preparer("node-1", "True"),
        preparer("node-3", "False"),
        going,
        pending,
        preparer("node-1", "True"),
    ];
    let node = |name: &str, unschedulable: Option<bool>, taint: Option<&str>| Node {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(NodeSpec {
            unschedulable,
            taints: taint.map(|effect| {
                vec![Taint {
                    key: "example.com/dedicated".to_owned(),
                    effect: effect.to_owned(),
                    ..Taint::default()
                }]
            }),
            ..NodeSpec::default()
        }),
        status: None,
    };
    let taking_pods =
        |names: &[&str]| -> Vec<Node> { names.iter().map(|name| node(name, None, None)).collect() };
    let all = taking_pods(&["node-1", "node-2", "node-3", "node-4", "node-5"]);
    assert_eq!(ready_nodes(&pods, &all), ["node-1", "node-2"]);
    // Cordoned, or tainted against pods without tolerations: no new volume there.
    for (unschedulable, taint, takes) in [
        (Some(true), None, false),
        (Some(false), None, true),
        (None, Some("NoSchedule"), false),
        (None, Some("NoExecute"), false),
        (None, Some("PreferNoSchedule"), true),
    ] {
        let nodes = [
            node("node-1", unschedulable, taint),
            node("node-2", None, None),
        ];
        let expected: &[&str] = if takes {
            &["node-1", "node-2"]
        } else {
            &["node-2"]
        };
        assert_eq!(
            ready_nodes(&pods, &nodes),
            expected,
            "unschedulable {unschedulable:?}, taint {taint:?}"
        );
    }
    assert_eq!(
        ready_nodes(&pods, &taking_pods(&["node-2"])),
        ["node-2"],
        "a node not known (yet) takes none"
    );
    assert_eq!(choose(&[], "uid"), None);

    let nodes: Vec<String> = (1..=10).map(|n| format!("node-{n}")).collect();
    let uids: Vec<String> = (0..2_000)
        .map(|n| format!("7c0ffee0-0000-4000-8000-{n:012}"))
        .collect();
    let mut per_node = BTreeMap::<&str, usize>::new();
    for uid in &uids {
        let node = choose(&nodes, uid).unwrap();
        assert_eq!(choose(&nodes, uid), Some(node), "the same node each time");
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 10, "{per_node:?}");
    assert!(
        per_node.values().all(|count| (140..=260).contains(count)),
        "about 200 each: {per_node:?}"
    );
    // A node going away moves only the volumes that would have gone to it.
    let fewer: Vec<String> = nodes.iter().filter(|n| *n != "node-3").cloned().collect();
    for uid in &uids {
        let before = choose(&nodes, uid).unwrap();
        if before != "node-3" {
            assert_eq!(choose(&fewer, uid), Some(before));
        }
    }
}

#[test]
fn a_volume_is_prepared_by_a_root_pod_that_can_only_change_owners_in_its_directory() {
    use super::volume_preparation::{self, Progress};
    let app = app("shop", "team-a", FlaskMongoAppSpec::default());
    let instance = Instance::new(&app).unwrap();
    let placement = Placement::new(&instance, "/var/lib/flaskmongo");
    let volumes = crate::Volumes::default();
    let pod = volume_preparation::build(&instance, &placement, &volumes);
    assert_eq!(
        pod.metadata.namespace.as_deref(),
        Some("flaskmongo-volumes")
    );
    assert_eq!(
        crate::labels::owner(pod.metadata.labels.as_ref().unwrap()),
        Some(("team-a", "shop")),
        "its watch leads back to the object"
    );
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        spec.node_selector, None,
        "a volume whose node is unknown: any node"
    );
    assert_root_helper(
        spec,
        &placement.path,
        ["prepare-volume", "/data", "--owner=999:999"],
        &["CHOWN", "DAC_OVERRIDE", "FOWNER"],
    );
    assert_eq!(volume_preparation::progress(&pod), Progress::Running);

    // A volume whose node is known is prepared there.
    let on_node = Placement {
        node: Some("node-3".to_owned()),
        ..placement
    };
    let pod = volume_preparation::build(&instance, &on_node, &volumes);
    assert_eq!(
        pod.spec.unwrap().node_selector.unwrap()["kubernetes.io/hostname"],
        "node-3"
    );
}

#[test]
fn a_prepared_volume_records_its_owner_and_is_bound_to_its_node() {
    let app = app("shop", "team-a", FlaskMongoAppSpec::default());
    let instance = Instance::new(&app).unwrap();
    let placement = Placement {
        node: Some("node-3".to_owned()),
        prepared: true,
        ..Placement::new(&instance, "/var/lib/flaskmongo")
    };
    let volume = persistent_volume::build(&instance, &placement);
    assert_eq!(
        volume.metadata.annotations.as_ref().unwrap()["flaskmongo.dev/data-owner"],
        "999:999"
    );
    let affinity = volume
        .spec
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap();
    let term = &affinity.required.as_ref().unwrap().node_selector_terms[0];
    let requirement = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (requirement.key.as_str(), requirement.operator.as_str()),
        ("kubernetes.io/hostname", "In")
    );
    assert_eq!(requirement.values.as_deref().unwrap(), ["node-3"]);
    assert_eq!(Placement::of(&volume), Some(placement));
}

#[test]
fn mongo_service_is_headless() {
    let service = build(FlaskMongoAppSpec::default())
        .mongo_service
        .spec
        .unwrap();
    assert_eq!(service.cluster_ip.as_deref(), Some("None"));
    assert_eq!(service.ports.unwrap()[0].port, 27017);
}

#[test]
fn volume_is_retained_and_bound_to_the_first_claim() {
    let app = app("shop", "team-a", FlaskMongoAppSpec::default());
    let instance = Instance::new(&app).unwrap();
    let placement = Placement::new(&instance, "/var/lib/flaskmongo");
    let volume = persistent_volume::build(&instance, &placement);
    assert_eq!(Placement::of(&volume), Some(placement));
    let spec = volume.spec.unwrap();
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain"),
        "the finalizer deletes, not the binder"
    );
    let claim = spec.claim_ref.unwrap();
    assert_eq!(
        (claim.namespace.as_deref(), claim.name.as_deref()),
        (Some("team-a"), Some("data-shop-mongo-0"))
    );
    assert_eq!(spec.capacity.unwrap()["storage"].0, "1Gi");
}

#[test]
fn each_volume_lives_in_a_directory_of_its_own_under_the_volume_root() {
    let placement = |namespace: &str, name: &str, uid: &str| {
        let mut app = app(name, namespace, FlaskMongoAppSpec::default());
        app.metadata.uid = Some(uid.to_owned());
        Placement::new(&Instance::new(&app).unwrap(), "/var/lib/flaskmongo")
    };
    let shop = placement("team-a", "shop", "u1");
    assert_eq!(shop.path, "/var/lib/flaskmongo/team-a/shop-u1");
    assert_ne!(
        placement("team-a", "shop", "u2").path,
        shop.path,
        "an object created again gets a new directory"
    );
}

#[test]
fn volume_names_differ_for_every_namespace_and_name() {
    let name = |namespace: &str, name: &str| {
        let app = app(name, namespace, FlaskMongoAppSpec::default());
        Instance::new(&app).unwrap().volume_name()
    };
    assert_eq!(name("team-a", "shop"), "team-a.shop.mongo");
    assert_ne!(name("a-b", "c"), name("a", "b-c"));
    let legacy = |namespace: &str, n: &str| {
        let app = app(n, namespace, FlaskMongoAppSpec::default());
        Instance::new(&app).unwrap().legacy_volume_name()
    };
    assert_eq!(
        legacy("a-b", "c"),
        legacy("a", "b-c"),
        "why the name changed"
    );
}

#[test]
fn secret_has_a_url_safe_password_and_no_owner() {
    let app = app("shop", "team-a", FlaskMongoAppSpec::default());
    let instance = Instance::new(&app).unwrap();
    let password = secret::generate_password();
    assert_eq!(password.len(), secret::PASSWORD_LEN);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_ne!(password, secret::generate_password());
    let built = secret::build(&instance, &password);
    assert_eq!(built.name_any(), "shop-mongo-credentials");
    assert!(
        built.metadata.owner_references.is_none(),
        "under Retain the Secret outlives the object"
    );
    let data = built.string_data.unwrap();
    assert_eq!(
        (data["username"].as_str(), data["password"].as_str()),
        ("root", password.as_str())
    );
}

#[test]
fn extra_env_comes_after_the_operators() {
    let mut spec = FlaskMongoAppSpec::default();
    spec.web.env = vec![SpecEnvVar {
        name: "GREETING".into(),
        value: "hello".into(),
    }];
    spec.web.image_pull_policy = ImagePullPolicy::Always;
    let children = build(spec);
    let web = &pod(&children.deployment.spec.template).containers[0];
    assert_eq!(web.env.as_ref().unwrap().last().unwrap().name, "GREETING");
    assert_eq!(web.image_pull_policy.as_deref(), Some("Always"));
}

// ---- property test: any valid spec yields objects the API server accepts ----

fn dns_label(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

fn label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

fn labels_valid(labels: &BTreeMap<String, String>) -> bool {
    labels.iter().all(|(key, value)| {
        let name = key.rsplit('/').next().unwrap_or(key);
        label_value(name) && !name.is_empty() && label_value(value)
    })
}

/// A valid `FlaskMongoApp` as the schema allows it.
pub(crate) fn valid_app() -> impl Strategy<Value = FlaskMongoApp> {
    let name = "[a-z]([a-z0-9-]{0,44}[a-z0-9])?";
    let namespace = "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";
    let image = "[a-z0-9]{1,20}(/[a-z0-9._-]{1,30}){0,2}(:[A-Za-z0-9_][A-Za-z0-9_.+-]{0,60})?";
    (
        name,
        namespace,
        (
            image,
            image,
            0..=1000i32,
            1..=65535i32,
            1..=65535i32,
            proptest::option::of(30000..=32767i32),
        ),
        (
            any::<bool>(),
            1..=1000i32,
            1..=1000i32,
            1..=100i32,
            any::<bool>(),
        ),
        ("[0-9]{1,3}(Mi|Gi)", any::<bool>(), any::<bool>()),
        proptest::collection::btree_map("[A-Z_][A-Z0-9_]{0,20}", ".{0,30}", 0..4),
    )
        .prop_map(|(name, namespace, web, scaling, storage, env)| {
            let mut spec = FlaskMongoAppSpec::default();
            (
                spec.web.image,
                spec.mongo.image,
                spec.web.replicas,
                spec.web.port,
                spec.web.service.port,
                spec.web.service.node_port,
            ) = web;
            let (enabled, a, b, target, paused) = scaling;
            spec.autoscaling.enabled = enabled;
            (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) = (a.min(b), a.max(b));
            spec.autoscaling.target_cpu_utilization_percentage = target;
            spec.paused = paused;
            let (size, create, delete) = storage;
            spec.mongo.storage.persistent_volume.create = create;
            spec.mongo.storage.size = size;
            if delete {
                spec.mongo.storage.deletion_policy = DeletionPolicy::Delete;
            }
            spec.web.env = env
                .into_iter()
                .filter(|(name, _)| {
                    !["PORT", "MONGODB_URI", "MONGO_USERNAME", "MONGO_PASSWORD"]
                        .contains(&name.as_str())
                })
                .map(|(name, value)| SpecEnvVar { name, value })
                .collect();
            app(&name, &namespace, spec)
        })
}

proptest! {
    #[test]
    fn any_valid_spec_yields_acceptable_objects(app in valid_app()) {
        let instance = Instance::new(&app).unwrap();
        let children = desired(&instance, &crate::Volumes::default());
        // Service names are DNS-1035 labels; the StatefulSet's name must leave room for
        // the revision hash in its pods' labels.
        for service in [&children.web_service, &children.mongo_service] {
            prop_assert!(dns_label(&service.name_any(), 63) && service.name_any().starts_with(|c: char| c.is_ascii_lowercase()));
        }
        prop_assert!(dns_label(&children.statefulset.name_any(), 52));
        prop_assert!(dns_label(&children.deployment.name_any(), 63));
        prop_assert!(instance.secret_name().len() <= 253 && instance.claim_name().len() <= 253);
        let volume = persistent_volume::build(&instance, &Placement::new(&instance, "/var/lib/flaskmongo"));
        prop_assert!(volume.name_any().len() <= 253);
        prop_assert!(volume.name_any().split('.').all(|label| dns_label(label, 63)));
        let template_labels = children.deployment.spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        prop_assert!(labels_valid(template_labels));
        prop_assert!(labels_valid(children.statefulset.labels()));
        prop_assert!(labels_valid(children.web_service.labels()));
        let port = &children.web_service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
        prop_assert!((1..=65535).contains(&port.port));
        prop_assert!(port.node_port.is_none_or(|p| (30000..=32767).contains(&p)));
        let web = &children.deployment.spec.template.spec.as_ref().unwrap().containers[0];
        let names: Vec<&str> = web.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        prop_assert_eq!(unique.len(), names.len(), "duplicate environment variables");
        prop_assert_eq!(children.hpa.is_some(), app.spec.autoscaling.enabled);
        prop_assert_eq!(children.deployment.spec.replicas.is_some(), !app.spec.autoscaling.enabled);
        for json in [
            serde_json::to_value(&children.deployment),
            serde_json::to_value(&children.statefulset),
            serde_json::to_value(&children.web_service),
            serde_json::to_value(&volume),
        ] {
            prop_assert!(json.is_ok());
        }
    }
}

#[test]
fn the_network_policy_admits_only_the_web_pods_to_mongodb() {
    let children = build(FlaskMongoAppSpec::default());
    let policy = children.network_policy.expect("on by default");
    assert_eq!(policy.metadata.name.as_deref(), Some("shop-network"));
    assert_eq!(policy.owner_references().len(), 1);
    let spec = policy.spec.unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    let selects =
        |selector: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
         template: &k8s_openapi::api::core::v1::PodTemplateSpec| {
            let labels = template.metadata.as_ref().unwrap().labels.clone().unwrap();
            let wanted = selector.as_ref().unwrap().match_labels.clone().unwrap();
            wanted
                .iter()
                .all(|(key, value)| labels.get(key) == Some(value))
        };
    let web = &children.deployment.spec.template;
    let mongo = &children.statefulset.spec.template;
    assert!(selects(&spec.pod_selector, web) && selects(&spec.pod_selector, mongo));

    let rules = spec.ingress.unwrap();
    let port = |rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
        let ports = rule.ports.clone().unwrap();
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].protocol.as_deref(), Some("TCP"));
        ports[0].port.clone()
    };
    assert_eq!(rules.len(), 2);
    assert_eq!(port(&rules[0]), Some(IntOrString::Int(MONGO_PORT)));
    let peers = rules[0].from.clone().unwrap();
    assert_eq!(peers.len(), 1);
    assert!(selects(&peers[0].pod_selector, web), "from the web pods");
    assert!(
        !selects(&peers[0].pod_selector, mongo),
        "and from nothing else"
    );
    assert_eq!(peers[0].namespace_selector, None, "of this namespace");
    assert_eq!(port(&rules[1]), Some(IntOrString::Int(5000)));
    assert_eq!(rules[1].from, None, "the web port from anywhere");
}

#[test]
fn the_network_policy_can_be_turned_off() {
    let mut spec = FlaskMongoAppSpec::default();
    spec.network_policy.enabled = false;
    assert_eq!(build(spec).network_policy, None);
}
