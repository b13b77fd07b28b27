//! What the API server accepts: invalid objects are refused with messages naming the
//! field, and the children built from a range of specs pass a server-side dry run.

mod common;

use common::{Env, TEST_MANAGER};
use flaskmongo_crd::{DeletionPolicy, EnvVar, FlaskMongoApp, FlaskMongoAppSpec, ImagePullPolicy};
use flaskmongo_operator::apply;
use flaskmongo_operator::children::persistent_volume::{self, Placement};
use flaskmongo_operator::children::{self, Instance};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

/// Each spec and the text the refusal must contain.
fn invalid_specs() -> Vec<(&'static str, serde_json::Value, &'static str)> {
    vec![
        (
            "min above max",
            json!({ "autoscaling": { "minReplicas": 6, "maxReplicas": 5 } }),
            "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
        ),
        (
            "min zero",
            json!({ "autoscaling": { "minReplicas": 0 } }),
            "spec.autoscaling.minReplicas",
        ),
        (
            "max zero",
            json!({ "autoscaling": { "maxReplicas": 0, "minReplicas": 1 } }),
            "spec.autoscaling.maxReplicas",
        ),
        (
            "node port low",
            json!({ "web": { "service": { "nodePort": 80 } } }),
            "spec.web.service.nodePort",
        ),
        (
            "node port high",
            json!({ "web": { "service": { "nodePort": 40000 } } }),
            "spec.web.service.nodePort",
        ),
        (
            "empty web image",
            json!({ "web": { "image": "" } }),
            "spec.web.image",
        ),
        (
            "empty mongo image",
            json!({ "mongo": { "image": "" } }),
            "spec.mongo.image",
        ),
        (
            "bad cpu",
            json!({ "web": { "resources": { "requests": { "cpu": "lots" } } } }),
            "spec.web.resources.requests.cpu",
        ),
        (
            "bad memory",
            json!({ "mongo": { "resources": { "limits": { "memory": "1 GB" } } } }),
            "spec.mongo.resources.limits.memory",
        ),
        (
            "request above limit",
            json!({ "web": { "resources": { "requests": { "cpu": "2" }, "limits": { "cpu": "1" } } } }),
            "resources.requests.cpu must not exceed resources.limits.cpu",
        ),
        (
            "no cpu request",
            json!({ "web": { "resources": { "limits": { "cpu": "1" } } } }),
            "web.resources.requests.cpu is required",
        ),
        (
            "bad size",
            json!({ "mongo": { "storage": { "size": "big" } } }),
            "mongo.storage.size must be a positive quantity",
        ),
        (
            "zero target",
            json!({ "autoscaling": { "targetCPUUtilizationPercentage": 0 } }),
            "spec.autoscaling.targetCPUUtilizationPercentage",
        ),
        (
            "target above 100",
            json!({ "autoscaling": { "targetCPUUtilizationPercentage": 101 } }),
            "spec.autoscaling.targetCPUUtilizationPercentage",
        ),
        (
            "unknown field",
            json!({ "web": { "colour": "blue" } }),
            ".spec.web.colour: field not declared in schema",
        ),
        (
            "unknown policy",
            json!({ "mongo": { "storage": { "deletionPolicy": "Keep" } } }),
            "spec.mongo.storage.deletionPolicy",
        ),
        (
            "reserved env",
            json!({ "web": { "env": [{ "name": "MONGODB_URI", "value": "x" }] } }),
            "web.env must not set",
        ),
        (
            "bad pull policy",
            json!({ "web": { "imagePullPolicy": "Sometimes" } }),
            "spec.web.imagePullPolicy",
        ),
        (
            "port zero",
            json!({ "web": { "port": 0 } }),
            "spec.web.port",
        ),
    ]
}

/// A user who may create a FlaskMongoApp must not choose a
/// directory on the node (`/`, `/etc`, another tenant's data).
#[tokio::test(flavor = "multi_thread")]
async fn a_host_path_chosen_by_the_user_is_refused() {
    let env = Env::without_operator("fma-hostpath").await;
    for path in ["/.", "/etc", "/var/lib/flaskmongo/other-team/shop"] {
        let spec = json!({ "mongo": { "storage": { "persistentVolume": { "hostPath": path } } } });
        let error = env.apply("shop", spec).await.expect_err(path).to_string();
        assert!(
            error.contains("field not declared in schema") && error.contains("hostPath"),
            "{path}: {error}"
        );
    }
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_objects_are_refused_naming_the_field() {
    let env = Env::without_operator("fma-invalid").await;
    let mut refused = 0;
    for (case, spec, expected) in invalid_specs() {
        let error = env.apply("bad", spec).await.expect_err(case).to_string();
        assert!(
            error.contains(expected),
            "{case}: expected {expected:?} in {error}"
        );
        refused += 1;
    }
    let long_name = "a".repeat(47);
    let error = env
        .apply(&long_name, json!({}))
        .await
        .expect_err("long name")
        .to_string();
    assert!(
        error.contains("metadata.name must be at most 46 characters"),
        "{error}"
    );
    let error = env
        .apply("9lives", json!({}))
        .await
        .expect_err("name starting with a digit")
        .to_string();
    assert!(error.contains("metadata.name"), "{error}");
    refused += 2;

    // Immutable once set.
    env.apply("keep", json!({})).await.unwrap();
    let changes = [
        (
            json!({ "mongo": { "storage": { "size": "2Gi" } } }),
            "mongo.storage.size is immutable",
        ),
        (
            json!({ "mongo": { "storage": { "storageClassName": "fast" } } }),
            "mongo.storage.storageClassName is immutable",
        ),
        (
            json!({ "mongo": { "storage": { "persistentVolume": { "create": false } } } }),
            "mongo.storage.persistentVolume.create is immutable",
        ),
    ];
    for (change, expected) in changes {
        let error = env
            .api::<FlaskMongoApp>()
            .patch(
                "keep",
                &PatchParams::default(),
                &Patch::Merge(&json!({ "spec": change })),
            )
            .await
            .expect_err(expected)
            .to_string();
        assert!(error.contains(expected), "expected {expected:?} in {error}");
        refused += 1;
    }
    // An unknown field in a plain patch, as `kubectl apply` sends it (strict validation).
    let error = env
        .api::<FlaskMongoApp>()
        .patch(
            "keep",
            &PatchParams::default().validation_strict(),
            &Patch::Merge(&json!({ "spec": { "mongo": { "replicas": 3 } } })),
        )
        .await
        .expect_err("unknown field")
        .to_string();
    assert!(
        error.contains("unknown field \"spec.mongo.replicas\""),
        "{error}"
    );
    refused += 1;
    // A mutable field still changes.
    env.api::<FlaskMongoApp>()
        .patch(
            "keep",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "web": { "replicas": 4 } } })),
        )
        .await
        .expect("web.replicas is mutable");
    assert!(refused >= 12);
    env.teardown().await;
}

/// Specs spread over the allowed ranges, from a fixed seed so a failure replays.
fn generated_specs() -> Vec<(String, FlaskMongoAppSpec)> {
    let mut rng = StdRng::seed_from_u64(0x00f1_a5c0);
    (0..6)
        .map(|i| {
            let mut spec = FlaskMongoAppSpec::default();
            spec.web.image = format!(
                "registry.example:5000/team/web:v{}.{}",
                rng.random_range(0..100),
                i
            );
            spec.web.image_pull_policy = [
                ImagePullPolicy::Always,
                ImagePullPolicy::IfNotPresent,
                ImagePullPolicy::Never,
            ][i % 3];
            spec.web.replicas = rng.random_range(0..=10);
            spec.web.port = rng.random_range(1024..=65535);
            spec.web.service.port = rng.random_range(1..=65535);
            spec.autoscaling.enabled = i % 2 == 0;
            spec.autoscaling.min_replicas = rng.random_range(1..=3);
            spec.autoscaling.max_replicas = rng.random_range(3..=20);
            spec.autoscaling.target_cpu_utilization_percentage = rng.random_range(1..=100);
            spec.web.env = (0..i)
                .map(|n| EnvVar {
                    name: format!("EXTRA_{n}"),
                    value: format!("value {n}"),
                })
                .collect();
            spec.mongo.storage.size = format!("{}Mi", rng.random_range(1..=4096));
            spec.mongo.storage.persistent_volume.create = i != 3;
            if i == 4 {
                spec.mongo.storage.deletion_policy = DeletionPolicy::Delete;
            }
            // The longest name allowed.
            let name = if i == 5 {
                format!("a{}", "b".repeat(45))
            } else {
                format!("app-{i}")
            };
            (name, spec)
        })
        .collect()
}

async fn dry_run<K>(api: &Api<K>, object: K)
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let object = apply::with_hash(object).unwrap();
    let name = object.name_any();
    api.patch(
        &name,
        &PatchParams::apply("flaskmongo-operator").force().dry_run(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("{} {name} refused: {e}", K::kind(&())));
}

#[tokio::test(flavor = "multi_thread")]
async fn children_of_generated_specs_pass_a_server_side_dry_run() {
    let env = Env::without_operator("fma-dryrun").await;
    for (name, spec) in generated_specs() {
        // The spec itself is valid…
        let applied = env
            .api::<FlaskMongoApp>()
            .patch(
                &name,
                &PatchParams::apply(TEST_MANAGER)
                    .force()
                    .validation_strict()
                    .dry_run(),
                &Patch::Apply(&json!({
                    "apiVersion": "flaskmongo.dev/v1alpha1",
                    "kind": "FlaskMongoApp",
                    "metadata": { "name": name },
                    "spec": spec,
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("spec of {name} refused: {e}"));
        // …and so is every child built from it (a uid as the server would set it).
        let mut app = FlaskMongoApp::new(&name, applied.spec);
        app.metadata.namespace = Some(env.namespace.clone());
        app.metadata.uid = Some("6d7c2c2e-2a53-4f5b-9d8e-0a1b2c3d4e5f".into());
        let instance = Instance::new(&app).unwrap();
        let built = children::desired(&instance, &flaskmongo_operator::Volumes::default());
        dry_run(&env.api(), built.deployment).await;
        dry_run(&env.api(), built.web_service).await;
        dry_run(&env.api(), built.statefulset).await;
        dry_run(&env.api(), built.mongo_service).await;
        if let Some(hpa) = built.hpa {
            dry_run(&env.api(), hpa).await;
        }
        if app.spec.mongo.storage.persistent_volume.create {
            let placement = Placement::new(&instance, flaskmongo_operator::DEFAULT_VOLUME_ROOT);
            let volume = persistent_volume::build(&instance, &placement);
            dry_run(&Api::<PersistentVolume>::all(env.client.clone()), volume).await;
        }
        let secret = children::secret::build(&instance, &children::secret::generate_password());
        env.api::<k8s_openapi::api::core::v1::Secret>()
            .create(
                &kube::api::PostParams {
                    dry_run: true,
                    ..Default::default()
                },
                &secret,
            )
            .await
            .unwrap_or_else(|e| panic!("Secret of {name} refused: {e}"));
    }
    env.teardown().await;
}
