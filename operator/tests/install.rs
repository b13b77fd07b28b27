//! Installing the operator the way users do: `config/` is accepted by the API server, its
//! RBAC is enough to reconcile the sample and no more, and the pods it makes pass the Pod
//! Security Standards as the API server's own PodSecurity admission judges them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::InProcess;
use flaskmongo_crd::FlaskMongoApp;
use flaskmongo_operator::children::{self, Instance};
use flaskmongo_operator::{Config, LeaseConfig};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, Pod, PodTemplateSpec, Volume};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use serde_json::json;

const SERVICE_ACCOUNT: &str = "system:serviceaccount:flaskmongo-system:flaskmongo-operator";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the pinned kubectl from the workspace root; panics with its output when it fails.
fn kubectl(args: &[&str]) -> String {
    let output = kubectl_output(args);
    assert!(
        output.status.success(),
        "kubectl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn kubectl_output(args: &[&str]) -> Output {
    testenv::stack()
        .kubectl()
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("kubectl runs (built by hack/tools.sh; start the stack with `make local-up`)")
}

/// The operator's namespace, CRD and RBAC from `config/`, applied for real (idempotent).
fn install_crd_and_rbac() {
    kubectl(&[
        "apply",
        "--server-side",
        "-f",
        "config/manager/namespace.yaml",
        "-f",
        "config/manager/volume_preparation_namespace.yaml",
    ]);
    kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        "config/crd",
    ]);
    kubectl(&["apply", "--server-side", "-k", "config/rbac"]);
    kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/flaskmongoapps.flaskmongo.dev",
        "--timeout=30s",
    ]);
}

fn sample() -> FlaskMongoApp {
    let text = std::fs::read_to_string(workspace_root().join("config/samples/flaskmongoapp.yaml"))
        .expect("config/samples/flaskmongoapp.yaml");
    serde_yaml::from_str(&text).expect("the sample is a FlaskMongoApp")
}

#[tokio::test]
async fn config_default_and_the_sample_pass_server_side_dry_run() {
    install_crd_and_rbac();
    kubectl(&["apply", "--dry-run=server", "-k", "config/default"]);
    let client = common::client().await;
    let namespace = testenv::TestNamespace::create(&client, "install-dry-run").await;
    let out = kubectl(&[
        "apply",
        "--dry-run=server",
        "-n",
        &namespace.name,
        "-f",
        "config/samples/flaskmongoapp.yaml",
    ]);
    assert!(
        out.contains("flaskmongoapp.flaskmongo.dev/flask-app created (server dry run)"),
        "{out}"
    );
    namespace.delete().await;
}

/// A client that authenticates with a token of the ServiceAccount `name` of `namespace`,
/// so it has exactly what RBAC grants that account.
async fn service_account_client(name: &str, namespace: &str) -> kube::Client {
    let token = kubectl(&["create", "token", name, "-n", namespace, "--duration=1h"]);
    let stack = testenv::stack();
    let mut kubeconfig = Kubeconfig::read_from(&stack.kubeconfig).expect("stack kubeconfig");
    for user in &mut kubeconfig.auth_infos {
        user.auth_info = Some(AuthInfo {
            token: Some(token.trim().to_owned().into()),
            ..AuthInfo::default()
        });
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("token kubeconfig");
    kube::Client::try_from(config).expect("client")
}

#[tokio::test]
async fn operator_reconciles_the_sample_with_only_its_own_permissions() {
    install_crd_and_rbac();
    let admin = common::client().await;
    let namespace = testenv::TestNamespace::create(&admin, "install-rbac").await;

    let mut config = Config::new(Some(namespace.name.clone()));
    config.leader_election = Some(LeaseConfig::new(
        format!("{}-leader", namespace.name),
        "flaskmongo-system".to_owned(),
        config.identity.clone(),
    ));
    let mut operator = InProcess::start(
        service_account_client("flaskmongo-operator", "flaskmongo-system").await,
        config,
    );

    kubectl(&[
        "apply",
        "-n",
        &namespace.name,
        "-f",
        "config/samples/flaskmongoapp.yaml",
    ]);
    let apps: Api<FlaskMongoApp> = Api::namespaced(admin.clone(), &namespace.name);
    let app = common::wait_for(
        "the sample to be Ready",
        Duration::from_secs(90),
        || async {
            let app = apps.get("flask-app").await.ok()?;
            let ready = app.condition("Ready")?;
            (ready.status == "True").then_some(app.clone())
        },
    )
    .await;
    assert_eq!(app.status.as_ref().and_then(|s| s.node_port), Some(30080));
    operator.assert_running().await;

    for (verb, resource, allowed) in [
        ("patch", "deployments.apps", true),
        ("patch", "statefulsets.apps", true),
        ("delete", "statefulsets.apps", true),
        ("create", "secrets", true),
        ("delete", "persistentvolumes", true),
        ("patch", "flaskmongoapps.flaskmongo.dev/status", true),
        ("watch", "nodes", true),
        ("patch", "nodes", false),
        ("delete", "namespaces", false),
        ("create", "pods", false),
        ("delete", "pods", false),
        ("update", "secrets", false),
        ("patch", "secrets", false),
        // Every child is read from a watch cache, never one by one.
        ("get", "deployments.apps", false),
        ("get", "persistentvolumes", false),
        ("update", "flaskmongoapps.flaskmongo.dev", false),
        (
            "create",
            "clusterrolebindings.rbac.authorization.k8s.io",
            false,
        ),
        ("delete", "deployments.apps", false),
        (
            "create",
            "customresourcedefinitions.apiextensions.k8s.io",
            false,
        ),
    ] {
        assert_eq!(
            can_i(verb, resource, "-A"),
            allowed,
            "can the operator {verb} {resource}?"
        );
    }
    // Pods and DaemonSets only where the volumes' preparation runs, not in a user's
    // namespace.
    let preparation = format!(
        "--namespace={}",
        flaskmongo_operator::DEFAULT_PREPARATION_NAMESPACE
    );
    let users = format!("--namespace={}", namespace.name);
    for (verb, resource, allowed_there) in [
        ("create", "pods", true),
        ("delete", "pods", true),
        ("get", "pods", false),
        ("patch", "daemonsets.apps", true),
        ("watch", "daemonsets.apps", true),
        ("delete", "daemonsets.apps", false),
    ] {
        assert_eq!(
            can_i(verb, resource, &preparation),
            allowed_there,
            "{verb} {resource} there"
        );
        assert!(
            !can_i(verb, resource, &users),
            "{verb} {resource} in a user's namespace"
        );
    }

    the_volume_preparer_is_put_back_when_deleted_or_changed(&admin).await;

    // Under the Delete policy, deleting the object removes the claim, the volume and the
    // Secret too: the role must allow that clean-up (and setting the finalizer first).
    common::switch_to_delete(&apps, "flask-app").await;
    apps.delete("flask-app", &Default::default())
        .await
        .expect("delete the sample");
    let volume = format!("{}.flask-app.mongo", namespace.name);
    let volumes: Api<PersistentVolume> = Api::all(admin.clone());
    common::wait_for(
        "the sample and its volume to be gone",
        Duration::from_secs(90),
        || async {
            let app_gone = matches!(apps.get_opt("flask-app").await, Ok(None));
            let volume_gone = matches!(volumes.get_opt(&volume).await, Ok(None));
            (app_gone && volume_gone).then_some(())
        },
    )
    .await;

    operator.stop_within(Duration::from_secs(15)).await;
    namespace.delete().await;
}

/// With only its own rights, the operator puts its volume preparer back when someone
/// deletes it or changes what it runs, and its pods come back Ready.
async fn the_volume_preparer_is_put_back_when_deleted_or_changed(admin: &kube::Client) {
    let daemon_sets = Api::<DaemonSet>::namespaced(
        admin.clone(),
        flaskmongo_operator::DEFAULT_PREPARATION_NAMESPACE,
    );
    let name = children::volume_preparer::NAME;
    let first = daemon_sets
        .get(name)
        .await
        .expect("the operator applied its volume preparer");
    daemon_sets
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete the volume preparer");
    let second = common::wait_for(
        "the volume preparer back after its deletion",
        Duration::from_secs(30),
        || async {
            let back = daemon_sets.get_opt(name).await.ok()??;
            (back.metadata.uid != first.metadata.uid).then_some(back)
        },
    )
    .await;

    let image = |daemon_set: &DaemonSet| {
        let pod = daemon_set.spec.template.spec.as_ref()?;
        pod.containers.first().and_then(|c| c.image.clone())
    };
    let container = &second.spec.template.spec.as_ref().unwrap().containers[0];
    let patch = json!({ "spec": { "template": { "spec": { "containers": [
        { "name": container.name, "image": "registry.invalid/other:1" }
    ] } } } });
    let changed = daemon_sets
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("change the volume preparer's image");
    // Otherwise the wait below would pass with nothing put back.
    assert_ne!(
        image(&changed),
        image(&first),
        "the patch changed the image"
    );
    common::wait_for(
        "the volume preparer's image put back",
        Duration::from_secs(30),
        || async {
            let now = daemon_sets.get(name).await.ok()?;
            (image(&now) == image(&first)).then_some(())
        },
    )
    .await;

    // The tests after this one create volumes: they need its pods Ready again.
    common::wait_for(
        "the volume preparer's pods Ready on every node",
        Duration::from_secs(60),
        || async {
            let now = daemon_sets.get(name).await.ok()?;
            let status = now.status?;
            let settled = status.observed_generation == now.metadata.generation
                && status.updated_number_scheduled == Some(status.desired_number_scheduled)
                && status.number_ready == status.desired_number_scheduled
                && status.desired_number_scheduled > 0;
            settled.then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_operator_that_cannot_list_its_objects_stops_when_told() {
    // As when it starts before its CRD or its RBAC is installed: its caches never fill.
    let admin = common::client().await;
    let namespace = testenv::TestNamespace::create(&admin, "install-norights").await;
    kubectl(&[
        "create",
        "serviceaccount",
        "no-rights",
        "-n",
        &namespace.name,
    ]);
    let client = service_account_client("no-rights", &namespace.name).await;
    let mut operator = InProcess::start(client, Config::new(Some(namespace.name.clone())));
    // Long enough for every watch to be refused at least once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    operator.assert_running().await;

    operator.stop_within(Duration::from_secs(10)).await;
    namespace.delete().await;
}

#[tokio::test]
async fn the_operator_cannot_read_any_secret() {
    install_crd_and_rbac();
    for namespace in ["kube-system", "flaskmongo-system", "default"] {
        for verb in ["get", "list", "watch"] {
            assert!(
                !can_i(verb, "secrets", &format!("--namespace={namespace}")),
                "the operator may {verb} the Secrets of {namespace}"
            );
        }
    }
    assert!(!can_i("list", "secrets", "-A"));
    // Its Lease: read and renewed, never listed.
    for (verb, allowed) in [
        ("get", true),
        ("update", true),
        ("list", false),
        ("watch", false),
    ] {
        assert_eq!(
            can_i(
                verb,
                "leases.coordination.k8s.io",
                "--namespace=flaskmongo-system"
            ),
            allowed,
            "can the operator {verb} leases?"
        );
    }
}

/// Whether the operator's ServiceAccount may `verb` `resource` in `scope` (`-A` or
/// `--namespace=NAME`), as `kubectl auth can-i` answers.
fn can_i(verb: &str, resource: &str, scope: &str) -> bool {
    let output = kubectl_output(&[
        "auth",
        "can-i",
        verb,
        resource,
        scope,
        "--as",
        SERVICE_ACCOUNT,
    ]);
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb} {resource}: {other} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A namespace whose PodSecurity admission enforces `level`.
async fn namespace_enforcing(client: &kube::Client, level: &str) -> String {
    let name = testenv::unique_name(&format!("pss-{level}"));
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [(
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    level.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("flaskmongo-tests"),
            &Patch::Apply(&namespace),
        )
        .await
        .expect("create namespace");
    name
}

/// Asks the API server (dry run) to admit a pod made from `template` in `namespace`.
async fn admit(
    client: &kube::Client,
    namespace: &str,
    template: PodTemplateSpec,
    extra_volumes: Vec<Volume>,
) -> kube::Result<Pod> {
    let mut spec = template.spec.expect("pod template spec");
    spec.volumes
        .get_or_insert_with(Vec::new)
        .extend(extra_volumes);
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("admission-check".to_owned()),
            ..template.metadata.unwrap_or_default()
        },
        spec: Some(spec),
        ..Pod::default()
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &pod,
        )
        .await
}

#[tokio::test]
async fn pods_pass_the_pod_security_standards() {
    let client = common::client().await;
    let restricted = namespace_enforcing(&client, "restricted").await;
    let baseline = namespace_enforcing(&client, "baseline").await;

    let mut app = sample();
    app.metadata.namespace = Some(restricted.clone());
    // Owner references need a uid; the pods checked here are never stored.
    app.metadata.uid = Some("00000000-0000-0000-0000-000000000000".to_owned());
    let instance = Instance::new(&app).expect("the sample is valid");
    let web = children::deployment::build(&instance).spec.template;
    admit(&client, &restricted, web, Vec::new())
        .await
        .expect("web pod admitted under restricted");

    let manager: Deployment = serde_yaml::from_str(
        &std::fs::read_to_string(workspace_root().join("config/manager/manager.yaml"))
            .expect("manager.yaml"),
    )
    .expect("manager.yaml is a Deployment");
    // The operator's own namespace (config/manager/namespace.yaml) enforces `restricted`.
    install_crd_and_rbac();
    let system = Api::<Namespace>::all(client.clone())
        .get("flaskmongo-system")
        .await
        .expect("flaskmongo-system");
    let enforced = system
        .metadata
        .labels
        .unwrap_or_default()
        .remove("pod-security.kubernetes.io/enforce");
    assert_eq!(enforced.as_deref(), Some("restricted"));
    admit(
        &client,
        "flaskmongo-system",
        manager.spec.template,
        Vec::new(),
    )
    .await
    .expect("operator pod admitted in flaskmongo-system");

    // The claim from the volumeClaimTemplate becomes a volume of the same name in each pod.
    let statefulset =
        children::statefulset::build(&instance, &flaskmongo_operator::Volumes::default()).spec;
    let claim_volume = Volume {
        name: children::CLAIM_TEMPLATE.to_owned(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    };
    admit(
        &client,
        &restricted,
        statefulset.template,
        vec![claim_volume],
    )
    .await
    .expect("mongo pod admitted under restricted: no root, no capability");

    // The volume preparer and the one-shot preparation pod need root and a directory of the
    // node: refused wherever a user's pods are judged, admitted only in the operator's
    // namespace for them.
    let volumes = flaskmongo_operator::Volumes::default();
    let preparation = children::volume_preparation::build(
        &instance,
        &children::persistent_volume::Placement::new(&instance, &volumes.root),
        &volumes,
    );
    let one_shot = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            namespace: None,
            ..preparation.metadata
        }),
        spec: preparation.spec,
    };
    let preparer = children::volume_preparer::build(&volumes).spec.template;
    let preparation_namespace = Api::<Namespace>::all(client.clone())
        .get(&volumes.preparation_namespace)
        .await
        .expect("the preparation namespace of config/manager");
    assert_eq!(
        preparation_namespace
            .metadata
            .labels
            .unwrap_or_default()
            .remove("pod-security.kubernetes.io/enforce")
            .as_deref(),
        Some("privileged")
    );
    for (what, template) in [("preparation pod", one_shot), ("volume preparer", preparer)] {
        let refused = admit(&client, &baseline, template.clone(), Vec::new()).await;
        assert!(
            matches!(&refused, Err(kube::Error::Api(status)) if status.message.contains("violates PodSecurity \"baseline")
                && status.message.contains("hostPath")),
            "{what}: {refused:?}"
        );
        admit(
            &client,
            &volumes.preparation_namespace,
            template,
            Vec::new(),
        )
        .await
        .unwrap_or_else(|error| panic!("{what} not admitted in its own namespace: {error}"));
    }

    let namespaces = Api::<Namespace>::all(client);
    for name in [restricted, baseline] {
        namespaces
            .delete(&name, &Default::default())
            .await
            .expect("delete namespace");
    }
}
