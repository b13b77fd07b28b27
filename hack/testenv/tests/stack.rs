//! The local stack is real: a Kubernetes 1.37 control plane whose controllers, scheduler
//! and simulated nodes do their jobs, and a MongoDB-wire server.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::{Condition, await_condition};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

async fn wait_for<K, C>(api: Api<K>, name: &str, what: &str, condition: C) -> Option<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: Condition<K>,
{
    tokio::time::timeout(WAIT, await_condition(api, name, condition))
        .await
        .unwrap_or_else(|_| panic!("{name}: not {what} within {WAIT:?}"))
        .unwrap_or_else(|err| panic!("{name}: watch failed: {err}"))
}

#[tokio::test]
async fn api_server_reports_the_pinned_version() {
    let client = testenv::stack().client().await;
    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(version.git_version, "v1.37.2");
}

#[tokio::test]
async fn at_least_two_nodes_are_ready() {
    let client = testenv::stack().client().await;
    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .expect("list nodes");
    let ready = nodes
        .items
        .iter()
        .filter(|node| {
            let conditions = node
                .status
                .as_ref()
                .and_then(|status| status.conditions.as_ref());
            conditions.is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count();
    assert!(ready >= 2, "{ready} Ready nodes of {}", nodes.items.len());
}

#[tokio::test]
async fn deployment_pods_become_ready() {
    let client = testenv::stack().client().await;
    let namespace = testenv::TestNamespace::create(&client, "stack-deploy").await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &namespace.name);
    let deployment: Deployment = from_json(json!({
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                "spec": {"containers": [{"name": "hello", "image": "registry.invalid/hello:1"}]}
            }
        }
    }));
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create deployment");
    let ready_replicas = |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };
    wait_for(
        deployments,
        "hello",
        "3/3 ready",
        move |d: Option<&Deployment>| ready_replicas(d) == 3,
    )
    .await;
    let pods = Api::<Pod>::namespaced(client, &namespace.name)
        .list(&ListParams::default().labels("app=hello"))
        .await
        .expect("list pods");
    assert_eq!(pods.items.len(), 3);
    for pod in &pods.items {
        let status = pod.status.as_ref().expect("pod status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some(),
            "pod scheduled"
        );
    }
    namespace.delete().await;
}

#[tokio::test]
async fn garbage_collector_removes_dependents_of_a_deleted_owner() {
    let client = testenv::stack().client().await;
    let namespace = testenv::TestNamespace::create(&client, "stack-gc").await;
    let config_maps = Api::<ConfigMap>::namespaced(client, &namespace.name);
    let owner = config_maps
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .expect("create owner");
    let dependent: ConfigMap = from_json(json!({
        "metadata": {
            "name": "dependent",
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                "uid": owner.metadata.uid.expect("owner uid")
            }]
        }
    }));
    config_maps
        .create(&PostParams::default(), &dependent)
        .await
        .expect("create dependent");
    config_maps
        .delete("owner", &DeleteParams::background())
        .await
        .expect("delete owner");
    wait_for(
        config_maps,
        "dependent",
        "garbage-collected",
        |cm: Option<&ConfigMap>| cm.is_none(),
    )
    .await;
    namespace.delete().await;
}

#[tokio::test]
async fn claim_binds_to_a_matching_volume() {
    let client = testenv::stack().client().await;
    let namespace = testenv::TestNamespace::create(&client, "stack-pv").await;
    let volume_name = format!("{}-data", namespace.name);
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let volume: PersistentVolume = from_json(json!({
        "metadata": {"name": volume_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "persistentVolumeReclaimPolicy": "Delete",
            "hostPath": {"path": format!("/tmp/{volume_name}")}
        }
    }));
    volumes
        .create(&PostParams::default(), &volume)
        .await
        .expect("create volume");
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace.name);
    let claim: PersistentVolumeClaim = from_json(json!({
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "volumeName": volume_name,
            "resources": {"requests": {"storage": "1Gi"}}
        }
    }));
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("create claim");
    let bound = wait_for(
        claims,
        "data",
        "Bound",
        |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Bound")
        },
    )
    .await
    .expect("claim exists");
    assert_eq!(
        bound.spec.and_then(|s| s.volume_name).as_deref(),
        Some(volume_name.as_str())
    );
    namespace.delete().await;
    volumes
        .delete(&volume_name, &DeleteParams::default())
        .await
        .expect("delete volume");
}

#[tokio::test]
async fn mongodb_driver_round_trip_through_ferretdb() {
    let stack = testenv::stack();
    let database = testenv::unique_name("stack").replace('-', "_");
    let client = mongodb::Client::with_uri_str(stack.mongodb_uri_for(&database))
        .await
        .expect("client");
    let collection = client
        .database(&database)
        .collection::<mongodb::bson::Document>("data");
    collection
        .insert_one(mongodb::bson::doc! {"sampleKey": "sampleValue", "n": 42})
        .await
        .expect("insert through FerretDB");
    let documents: Vec<_> = collection
        .find(mongodb::bson::doc! {})
        .await
        .expect("find")
        .try_collect()
        .await
        .expect("read");
    assert_eq!(documents.len(), 1);
    assert_eq!(
        documents[0].get_str("sampleKey").expect("sampleKey"),
        "sampleValue"
    );
    assert_eq!(documents[0].get_i32("n").expect("n"), 42);
    client
        .database(&database)
        .drop()
        .await
        .expect("drop database");
}
