//! The operator against the local control plane: children, spec changes, repairs,
//! deletion, errors and pausing. Each test has its own namespace and its own in-process
//! operator scoped to it.

mod common;

use std::time::{Duration, Instant};

use common::{Env, InProcess, TEST_MANAGER, wait_for};
use flaskmongo_crd::FlaskMongoApp;
use flaskmongo_operator::children::persistent_volume::Placement;
use flaskmongo_operator::children::{self, Instance};
use futures::future;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn web_image(deployment: &Deployment) -> String {
    deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

fn password(secret: &Secret) -> Vec<u8> {
    secret.data.as_ref().unwrap()["password"].0.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_makes_every_child_and_becomes_ready() {
    let env = Env::start("fma-create").await;
    let ns = env.namespace.clone();
    env.apply("shop", json!({}))
        .await
        .expect("a default object is accepted");
    let app = env.wait_ready("shop").await;

    // Defaults are stored in the object itself.
    let stored = serde_json::to_value(&app.spec).unwrap();
    assert_eq!(stored["web"]["replicas"], 2);
    assert_eq!(stored["autoscaling"]["targetCPUUtilizationPercentage"], 70);
    assert_eq!(stored["mongo"]["storage"]["deletionPolicy"], "Retain");

    let status = app.status.clone().unwrap();
    let node_port = status
        .node_port
        .expect("the assigned node port is reported");
    assert!((30000..=32767).contains(&node_port));
    assert!(status.mongo_ready);
    assert_eq!(status.web.ready, "2/2");
    assert!(
        app.finalizers().is_empty(),
        "under Retain nothing holds the object at deletion: {:?}",
        app.finalizers()
    );

    let deployment = env.api::<Deployment>().get("shop-web").await.unwrap();
    let pod = deployment.spec.template.spec.clone().unwrap();
    let env_names: Vec<String> = pod.containers[0]
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(
        env_names,
        ["PORT", "MONGO_USERNAME", "MONGO_PASSWORD", "MONGODB_URI"]
    );
    assert_eq!(
        deployment.labels()["app.kubernetes.io/managed-by"],
        "flaskmongo-operator"
    );
    assert_eq!(deployment.owner_references()[0].name, "shop");
    let service = env.api::<Service>().get("shop-web").await.unwrap();
    assert_eq!(service.spec.unwrap().type_.as_deref(), Some("NodePort"));
    let hpa = env
        .api::<HorizontalPodAutoscaler>()
        .get("shop-web")
        .await
        .unwrap();
    assert_eq!(hpa.spec.max_replicas, 5);
    let statefulset = env.api::<StatefulSet>().get("shop-mongo").await.unwrap();
    assert_eq!(statefulset.spec.service_name.as_deref(), Some("shop-mongo"));
    let headless = env.api::<Service>().get("shop-mongo").await.unwrap();
    assert_eq!(headless.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let volume = env.volumes().get(&env.volume_name("shop")).await.unwrap();
    assert_eq!(
        Placement::of(&volume).unwrap().path,
        format!("/var/lib/flaskmongo/{ns}/shop-{}", app.uid().unwrap()),
        "a directory of its own under the default volume root"
    );
    let claim_ref = volume.spec.clone().unwrap().claim_ref.unwrap();
    assert_eq!(claim_ref.name.as_deref(), Some("data-shop-mongo-0"));
    // It is bound from the start to a node whose volume preparer hands its directory to
    // MongoDB's user, MongoDB runs there, and no pod of its own prepares it.
    assert_eq!(volume.annotations()["flaskmongo.dev/data-owner"], "999:999");
    let node = Placement::of(&volume)
        .and_then(|placement| placement.node)
        .expect("the volume is bound to a node");
    let preparations = Api::<Pod>::namespaced(
        env.client.clone(),
        flaskmongo_operator::DEFAULT_PREPARATION_NAMESPACE,
    );
    let preparer_nodes: Vec<String> = preparations
        .list(&ListParams::default().labels(&children::volume_preparer::selector()))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|pod| pod.spec?.node_name)
        .collect();
    assert!(
        preparer_nodes.contains(&node),
        "{node} runs a volume preparer: {preparer_nodes:?}"
    );
    let mongo_pod = env.api::<Pod>().get("shop-mongo-0").await.unwrap();
    assert_eq!(
        mongo_pod.spec.unwrap().node_name.as_deref(),
        Some(node.as_str())
    );
    let preparation = format!("prepare-volume-{}", app.uid().unwrap());
    assert!(
        preparations.get_opt(&preparation).await.unwrap().is_none(),
        "a new volume needs no preparation pod"
    );
    let claim = env
        .api::<PersistentVolumeClaim>()
        .get("data-shop-mongo-0")
        .await
        .unwrap();
    assert_eq!(
        claim.spec.unwrap().volume_name.as_deref(),
        Some(volume.name_any().as_str()),
        "the claim bound the static volume"
    );
    let secret = env
        .api::<Secret>()
        .get("shop-mongo-credentials")
        .await
        .unwrap();
    let password = String::from_utf8(password(&secret)).unwrap();
    assert_eq!(password.len(), 32);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert!(secret.owner_references().is_empty());
    let deployment_json = serde_json::to_string(&deployment).unwrap();
    assert!(
        !deployment_json.contains(&password),
        "the password is not written into the Deployment"
    );

    // `kubectl describe` names each child created once: a reconcile that starts before a
    // creation reaches the operator's caches does not create that child again.
    let mongo = "StatefulSet shop-mongo".to_owned();
    let created = wait_for(
        "an Event naming MongoDB's StatefulSet created",
        Duration::from_secs(30),
        || async {
            let created = created_children(&env, "shop").await;
            created.contains(&mongo).then_some(created)
        },
    )
    .await;
    let mut once = created.clone();
    once.sort();
    once.dedup();
    assert_eq!(
        once.len(),
        created.len(),
        "created more than once: {created:?}"
    );
    for child in [
        "Secret shop-mongo-credentials",
        "Deployment shop-web",
        "Service shop-web",
        "Service shop-mongo",
    ] {
        assert!(created.iter().any(|c| c == child), "{child} in {created:?}");
    }
    env.teardown().await;
}

/// The children that `object`'s Events report created (notes such as `created Secret a,
/// Service a-mongo; deleted Pod b`), in the order of the Events.
async fn created_children(env: &Env, object: &str) -> Vec<String> {
    let events = env.events(object).await.unwrap();
    events
        .iter()
        .filter_map(|event| event.message.as_deref())
        .flat_map(|note| note.split("; "))
        .filter_map(|group| group.strip_prefix("created "))
        .flat_map(|children| children.split(", "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_changes_are_followed() {
    let env = Env::start("fma-change").await;
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    let deployments = env.api::<Deployment>();

    env.patch_spec(
        "shop",
        json!({ "web": { "image": "flaskmongo/webapp:next" } }),
    )
    .await;
    env.wait_child::<Deployment>("shop-web", "the new image", |d| {
        web_image(d) == "flaskmongo/webapp:next"
    })
    .await;

    env.patch_spec("shop", json!({ "web": { "resources": { "requests": { "cpu": "300m", "memory": "80Mi" }, "limits": { "cpu": "600m", "memory": "160Mi" } } } })).await;
    env.wait_child::<Deployment>("shop-web", "the new resources", |d| {
        let resources = d.spec.template.spec.as_ref().unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        resources.requests.unwrap()["cpu"].0 == "300m"
            && resources.limits.unwrap()["memory"].0 == "160Mi"
    })
    .await;

    // Autoscaling off: the HPA goes and the Deployment holds `web.replicas`.
    env.patch_spec(
        "shop",
        json!({ "autoscaling": { "enabled": false }, "web": { "replicas": 3 } }),
    )
    .await;
    env.wait_gone::<HorizontalPodAutoscaler>("shop-web").await;
    env.wait_child::<Deployment>("shop-web", "3 replicas", |d| d.spec.replicas == Some(3))
        .await;
    env.wait_ready("shop").await;

    // Autoscaling on again: the HPA comes back and the count is handed over, not reset.
    env.patch_spec("shop", json!({ "autoscaling": { "enabled": true } }))
        .await;
    env.wait_child::<HorizontalPodAutoscaler>("shop-web", "the HPA back", |_| true)
        .await;
    for _ in 0..15 {
        let replicas = deployments.get("shop-web").await.unwrap().spec.replicas;
        assert_eq!(
            replicas,
            Some(3),
            "turning autoscaling on must not reset the replicas"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deployment = deployments.get("shop-web").await.unwrap();
    let ours = deployment
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("flaskmongo-operator"))
        .unwrap();
    assert!(
        ours.fields_v1.as_ref().unwrap().0["f:spec"]
            .get("f:replicas")
            .is_none(),
        "the operator no longer owns replicas"
    );
    env.wait_ready("shop").await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_scaled_by_the_autoscaler_are_held() {
    let env = Env::start("fma-hpa").await;
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    let deployments = env.api::<Deployment>();
    // Scale as the HPA does: through the scale subresource.
    deployments
        .patch_scale(
            "shop-web",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 4 } })),
        )
        .await
        .unwrap();
    // A spec change makes the operator apply the Deployment again.
    env.patch_spec(
        "shop",
        json!({ "web": { "image": "flaskmongo/webapp:other" } }),
    )
    .await;
    env.wait_child::<Deployment>("shop-web", "the new image", |d| {
        web_image(d) == "flaskmongo/webapp:other"
    })
    .await;
    env.wait_ready("shop").await;
    for _ in 0..15 {
        assert_eq!(
            deployments.get("shop-web").await.unwrap().spec.replicas,
            Some(4)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(env.get("shop").await.status.unwrap().web.replicas, 4);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_or_edited_children_are_restored() {
    let env = Env::start("fma-repair").await;
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;

    let old_uid = env.api::<Service>().get("shop-web").await.unwrap().uid();
    env.api::<Service>()
        .delete("shop-web", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_child::<Service>("shop-web", "the Service re-created", |s| s.uid() != old_uid)
        .await;

    env.api::<HorizontalPodAutoscaler>()
        .delete("shop-web", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_child::<HorizontalPodAutoscaler>("shop-web", "the HPA re-created", |h| {
        h.metadata.deletion_timestamp.is_none()
    })
    .await;

    let old_uid = env
        .api::<StatefulSet>()
        .get("shop-mongo")
        .await
        .unwrap()
        .uid();
    env.api::<StatefulSet>()
        .delete("shop-mongo", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_child::<StatefulSet>("shop-mongo", "the StatefulSet re-created", |s| {
        s.uid() != old_uid
    })
    .await;

    // A hand edit by another manager is undone.
    let edit = json!({ "spec": { "template": { "spec": { "containers": [{ "name": "web", "image": "evil:1" }] } } } });
    env.api::<Deployment>()
        .patch(
            "shop-web",
            &PatchParams::default(),
            &Patch::Strategic(&edit),
        )
        .await
        .unwrap();
    env.wait_child::<Deployment>("shop-web", "the image restored", |d| {
        web_image(d) == flaskmongo_crd::DEFAULT_WEB_IMAGE
    })
    .await;

    env.wait_ready("shop").await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_retains_or_removes_the_data() {
    let env = Env::start("fma-delete").await;
    let volumes = env.volumes();
    let volume = env.volume_name("shop");
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    let first_password = password(
        &env.api::<Secret>()
            .get("shop-mongo-credentials")
            .await
            .unwrap(),
    );

    // Retain: namespaced children are collected, the data and its password stay.
    env.api::<FlaskMongoApp>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone::<FlaskMongoApp>("shop").await;
    env.wait_gone::<Deployment>("shop-web").await;
    env.wait_gone::<Service>("shop-web").await;
    env.wait_gone::<HorizontalPodAutoscaler>("shop-web").await;
    env.wait_gone::<StatefulSet>("shop-mongo").await;
    env.wait_gone::<Service>("shop-mongo").await;
    assert!(
        volumes.get_opt(&volume).await.unwrap().is_some(),
        "Retain keeps the volume"
    );
    assert!(
        env.api::<PersistentVolumeClaim>()
            .get_opt("data-shop-mongo-0")
            .await
            .unwrap()
            .is_some()
    );

    // Created again, it finds its data and the same password.
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    let again = password(
        &env.api::<Secret>()
            .get("shop-mongo-credentials")
            .await
            .unwrap(),
    );
    assert_eq!(
        again, first_password,
        "the password that opens the retained data is kept"
    );

    // Delete: claim, volume and Secret go with the object.
    common::switch_to_delete(&env.api(), "shop").await;
    env.api::<FlaskMongoApp>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone::<FlaskMongoApp>("shop").await;
    env.wait_gone::<PersistentVolumeClaim>("data-shop-mongo-0")
        .await;
    env.wait_gone::<Secret>("shop-mongo-credentials").await;
    wait_for(
        "the volume to be deleted",
        Duration::from_secs(60),
        || async { matches!(volumes.get_opt(&volume).await, Ok(None)).then_some(()) },
    )
    .await;
    env.teardown().await;
}

/// MongoDB's claim is made by the StatefulSet's controller, from a copy of the StatefulSet
/// it read before: one deleted while that copy still asks for a pod could get its claim
/// after the clean-up confirmed it gone. Under `Delete`, objects deleted as soon as their
/// StatefulSet appears have it stopped, as its controller reports, before it goes, and
/// leave no claim behind.
#[tokio::test(flavor = "multi_thread")]
async fn objects_deleted_as_soon_as_mongodb_appears_stop_it_first_and_leave_no_claim() {
    use futures::StreamExt;
    use kube::runtime::watcher;

    let env = Env::start("fma-quick").await;
    let delete = json!({ "mongo": { "storage": { "deletionPolicy": "Delete" } } });
    let names: Vec<String> = (0..4).map(|n| format!("quick-{n}")).collect();
    let (shared, delete, apps) = (&env, &delete, &env.api::<FlaskMongoApp>());
    future::join_all(names.iter().map(|name| async move {
        let mongo = format!("{name}-mongo");
        let mut events = watcher(
            shared.api::<StatefulSet>(),
            watcher::Config::default().fields(&format!("metadata.name={mongo}")),
        )
        .boxed();
        shared.apply(name, delete.clone()).await.unwrap();
        let last = tokio::time::timeout(Duration::from_secs(90), async {
            let mut deleted = false;
            while let Some(event) = events.next().await {
                match event {
                    Ok(watcher::Event::Apply(_) | watcher::Event::InitApply(_)) if !deleted => {
                        apps.delete(name, &DeleteParams::default()).await.unwrap();
                        deleted = true;
                    }
                    Ok(watcher::Event::Delete(last)) => return last,
                    _ => {}
                }
            }
            panic!("the watch of {mongo} ended");
        })
        .await
        .unwrap_or_else(|_| panic!("timed out after 90 s waiting for {mongo} to come and go"));
        let status = last.status.unwrap_or_default();
        assert_eq!(
            (
                last.spec.replicas,
                status.replicas,
                status.observed_generation
            ),
            (Some(0), 0, last.metadata.generation),
            "{mongo} was deleted before its controller had stopped it"
        );
    }))
    .await;
    for name in &names {
        env.wait_gone::<FlaskMongoApp>(name).await;
    }
    // A claim made late appears within moments of the StatefulSet's last sync.
    let claims = env.api::<PersistentVolumeClaim>();
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(5) {
        let left = claims.list(&ListParams::default()).await.unwrap();
        let left: Vec<String> = left.iter().map(ResourceExt::name_any).collect();
        assert!(left.is_empty(), "claims left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.teardown().await;
}

/// Leaves in `preparations` a preparation pod as one stays behind when its object, `name`
/// in `namespace` with the uid `uid`, is deleted before the pod is removed; returns its name.
async fn leave_preparation(
    preparations: &Api<Pod>,
    namespace: &str,
    name: &str,
    uid: String,
) -> String {
    let mut gone = FlaskMongoApp::new(name, serde_json::from_value(json!({})).unwrap());
    gone.metadata.namespace = Some(namespace.to_owned());
    gone.metadata.uid = Some(uid);
    let instance = Instance::new(&gone).unwrap();
    let pod = children::volume_preparation::build(
        &instance,
        &Placement::new(&instance, flaskmongo_operator::DEFAULT_VOLUME_ROOT),
        &flaskmongo_operator::Volumes::default(),
    );
    preparations
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
        .name_any()
}

#[tokio::test(flavor = "multi_thread")]
async fn under_retain_an_object_goes_without_the_operator_and_leftover_preparations_are_removed() {
    let mut env = Env::start("fma-leftover").await;
    let ns = env.namespace.clone();
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;

    // No finalizer waits for an operator that is not there.
    env.stop_operator().await;
    env.api::<FlaskMongoApp>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone::<FlaskMongoApp>("shop").await;

    // A preparation pod left while no operator ran, and one left while it runs: both go.
    let preparations = Api::<Pod>::namespaced(
        env.client.clone(),
        flaskmongo_operator::DEFAULT_PREPARATION_NAMESPACE,
    );
    let left_before = leave_preparation(&preparations, &ns, "shop", format!("{ns}-1")).await;
    env.start_operator(Duration::from_secs(300));
    let left_after = leave_preparation(&preparations, &ns, "gone", format!("{ns}-2")).await;
    for name in [left_before, left_after] {
        wait_for(
            &format!("the leftover preparation pod {name} to be removed"),
            Duration::from_secs(30),
            || async { matches!(preparations.get_opt(&name).await, Ok(None)).then_some(()) },
        )
        .await;
    }
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retained_volume_without_its_secret_is_degraded() {
    let env = Env::start("fma-nosecret").await;
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    env.api::<FlaskMongoApp>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone::<FlaskMongoApp>("shop").await;
    env.api::<Secret>()
        .delete("shop-mongo-credentials", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone::<Secret>("shop-mongo-credentials").await;

    env.apply("shop", json!({})).await.unwrap();
    let app = env
        .wait_condition("shop", "Degraded", "True", Duration::from_secs(60))
        .await;
    let degraded = app.condition("Degraded").unwrap();
    assert_eq!(degraded.reason, "CredentialsMissing");
    assert!(
        degraded.message.contains("shop-mongo-credentials"),
        "{}",
        degraded.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        env.api::<Secret>()
            .get_opt("shop-mongo-credentials")
            .await
            .unwrap()
            .is_none(),
        "no new password for old data"
    );

    // Under Delete the data goes with the object, so teardown leaves nothing behind.
    common::switch_to_delete(&env.api(), "shop").await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_node_port_is_degraded_then_recovers() {
    let env = Env::start("fma-nodeport").await;
    // The range's lowest 86 ports are the band the server hands out last (KEP-3668), so a
    // port taken from it does not collide with another test's Service that got one assigned.
    // 30080 is left to the install test and the end-to-end test.
    let port = 30000 + i32::from(rand_suffix() % 80);
    let blocker: Service = serde_json::from_value(json!({
        "metadata": { "name": "blocker" },
        "spec": { "type": "NodePort", "selector": { "x": "y" }, "ports": [{ "port": 80, "nodePort": port }] },
    }))
    .unwrap();
    env.api::<Service>()
        .create(&PostParams::default(), &blocker)
        .await
        .unwrap();

    env.apply(
        "shop",
        json!({ "web": { "service": { "nodePort": port } } }),
    )
    .await
    .unwrap();
    let app = env
        .wait_condition("shop", "Degraded", "True", Duration::from_secs(60))
        .await;
    let degraded = app.condition("Degraded").unwrap();
    assert!(
        degraded.message.contains("already allocated"),
        "the server's message: {}",
        degraded.message
    );
    env.wait_event(
        "shop",
        "a Warning Event naming the taken node port",
        |event| {
            event.type_.as_deref() == Some("Warning")
                && event
                    .message
                    .as_deref()
                    .is_some_and(|m| m.contains("already allocated"))
        },
    )
    .await;
    // Other children are not held back by the refused Service.
    env.wait_child::<Deployment>("shop-web", "the Deployment", |_| true)
        .await;

    env.api::<Service>()
        .delete("blocker", &DeleteParams::default())
        .await
        .unwrap();
    let app = env
        .wait_condition("shop", "Degraded", "False", Duration::from_secs(90))
        .await;
    assert_eq!(app.status.unwrap().node_port, Some(port));
    env.wait_ready("shop").await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_secret_holds_back_what_needs_it_until_it_is_allowed() {
    let env = Env::start("fma-quota").await;
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "no-secrets" },
        "spec": { "hard": { "secrets": "0" } },
    }))
    .unwrap();
    let quotas = env.api::<ResourceQuota>();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The API server enforces a quota only once the quota controller has filled its status.
    wait_for("the quota in force", Duration::from_secs(30), || async {
        let quota = quotas.get("no-secrets").await.ok()?;
        quota.status?.hard?.contains_key("secrets").then_some(())
    })
    .await;

    env.apply("shop", json!({})).await.unwrap();
    let app = env
        .wait_condition("shop", "Degraded", "True", Duration::from_secs(60))
        .await;
    let degraded = app.condition("Degraded").unwrap();
    assert!(
        degraded.message.contains("shop-mongo-credentials") && degraded.message.contains("quota"),
        "names the Secret and the server's refusal: {}",
        degraded.message
    );
    // What does not read the Secret is written all the same.
    env.wait_child::<Service>("shop-web", "the web Service", |_| true)
        .await;
    env.wait_child::<Service>("shop-mongo", "the MongoDB Service", |_| true)
        .await;
    env.wait_child::<HorizontalPodAutoscaler>("shop-web", "the autoscaler", |_| true)
        .await;
    // Had they not waited for the Secret, these would be written in the same pass as the
    // children above or, for the volume, at the latest in the retries of the next seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let volume = env
        .volumes()
        .get_opt(&env.volume_name("shop"))
        .await
        .unwrap();
    let deployment = env.api::<Deployment>().get_opt("shop-web").await.unwrap();
    let statefulset = env
        .api::<StatefulSet>()
        .get_opt("shop-mongo")
        .await
        .unwrap();
    assert!(
        volume.is_none() && deployment.is_none() && statefulset.is_none(),
        "no workload runs, and no volume exists, before the credentials do: volume {:?}, \
         Deployment {:?}, StatefulSet {:?}",
        volume.map(|v| v.name_any()),
        deployment.map(|d| d.name_any()),
        statefulset.map(|s| s.name_any()),
    );

    // A volume without its Secret would be taken for an earlier object's data; with none,
    // the object recovers once the Secret is allowed.
    quotas
        .delete("no-secrets", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_ready("shop").await;

    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn paused_changes_nothing() {
    let env = Env::start("fma-paused").await;
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    env.patch_spec("shop", json!({ "paused": true })).await;
    let app = env
        .wait_condition("shop", "Progressing", "False", Duration::from_secs(30))
        .await;
    assert_eq!(app.condition("Progressing").unwrap().reason, "Paused");

    env.patch_spec(
        "shop",
        json!({ "web": { "image": "flaskmongo/webapp:paused" } }),
    )
    .await;
    env.api::<Service>()
        .delete("shop-mongo", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        web_image(&env.api::<Deployment>().get("shop-web").await.unwrap()),
        flaskmongo_crd::DEFAULT_WEB_IMAGE
    );
    assert!(
        env.api::<Service>()
            .get_opt("shop-mongo")
            .await
            .unwrap()
            .is_none(),
        "nothing is restored while paused"
    );
    assert!(
        env.get("shop")
            .await
            .status
            .unwrap()
            .message
            .contains("paused")
    );

    env.patch_spec("shop", json!({ "paused": false })).await;
    env.wait_child::<Deployment>("shop-web", "the image after unpausing", |d| {
        web_image(d) == "flaskmongo/webapp:paused"
    })
    .await;
    env.wait_child::<Service>("shop-mongo", "the Service after unpausing", |_| true)
        .await;
    env.wait_ready("shop").await;
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn created_without_autoscaling_holds_its_replicas() {
    let env = Env::start("fma-fixed").await;
    env.apply(
        "shop",
        json!({ "autoscaling": { "enabled": false }, "web": { "replicas": 1 } }),
    )
    .await
    .unwrap();
    env.wait_ready("shop").await;
    let deployment = env.api::<Deployment>().get("shop-web").await.unwrap();
    assert_eq!(deployment.spec.replicas, Some(1));
    // Only the operator's field manager owns the children, not whoever applied the object.
    let managers: Vec<String> = deployment
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(managers.iter().any(|m| m == "flaskmongo-operator"));
    assert!(!managers.iter().any(|m| m == TEST_MANAGER));
    assert!(
        env.api::<HorizontalPodAutoscaler>()
            .get_opt("shop-web")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.get("shop").await.status.unwrap().web.ready, "1/1");
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_network_policy_is_created_kept_and_removed_when_turned_off() {
    let env = Env::start("fma-netpol").await;
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    let policies = env.api::<NetworkPolicy>();
    let policy = policies.get("shop-network").await.expect("on by default");
    assert_eq!(
        policy.owner_references()[0].name,
        "shop",
        "goes with the object"
    );
    // Edited by hand: put back.
    policies
        .patch(
            "shop-network",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "ingress": [{}] } })),
        )
        .await
        .unwrap();
    env.wait_child::<NetworkPolicy>("shop-network", "the policy restored", |policy| {
        policy
            .spec
            .as_ref()
            .and_then(|spec| spec.ingress.as_ref())
            .is_some_and(|rules| rules.len() == 2 && rules[0].from.is_some())
    })
    .await;

    env.patch_spec("shop", json!({ "networkPolicy": { "enabled": false } }))
        .await;
    env.wait_gone::<NetworkPolicy>("shop-network").await;
    env.wait_ready("shop").await;
    env.patch_spec("shop", json!({ "networkPolicy": { "enabled": true } }))
        .await;
    env.wait_child::<NetworkPolicy>("shop-network", "the policy back", |_| true)
        .await;
    env.teardown().await;
}

fn rand_suffix() -> u16 {
    let name = testenv::unique_name("x");
    name.bytes().fold(0u16, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u16::from(b))
    })
}

/// Under `Delete` the files stay on the node, so an object
/// created again with the same name (and a new password) must get a new, empty directory;
/// under `Retain` it keeps both its directory and its password.
#[tokio::test(flavor = "multi_thread")]
async fn an_object_created_again_meets_a_new_directory_unless_its_data_was_retained() {
    let env = Env::start("fma-again").await;
    let volume_name = env.volume_name("shop");
    let volumes = env.volumes();
    let delete = json!({ "mongo": { "storage": { "deletionPolicy": "Delete" } } });
    let ready_path = || async {
        env.wait_ready("shop").await;
        Placement::of(&volumes.get(&volume_name).await.unwrap())
            .unwrap()
            .path
    };
    let remove = || async {
        env.api::<FlaskMongoApp>()
            .delete("shop", &DeleteParams::default())
            .await
            .unwrap();
        env.wait_gone::<FlaskMongoApp>("shop").await;
    };

    env.apply("shop", json!({})).await.unwrap();
    let first = ready_path().await;
    remove().await;
    env.apply("shop", delete.clone()).await.unwrap();
    assert_eq!(ready_path().await, first, "Retain: the data is found again");
    remove().await;
    wait_for(
        "the volume to be deleted",
        Duration::from_secs(60),
        || async { matches!(volumes.get_opt(&volume_name).await, Ok(None)).then_some(()) },
    )
    .await;
    env.apply("shop", delete).await.unwrap();
    let again = ready_path().await;
    assert_ne!(again, first, "a new password meets a new directory");
    assert!(
        again.ends_with(&env.get("shop").await.uid().unwrap()),
        "{again}"
    );
    env.teardown().await;
}

/// `<namespace>-<name>-mongo` was the same volume for namespace
/// `N-b`, object `c` and namespace `N`, object `b-c`.
#[tokio::test(flavor = "multi_thread")]
async fn look_alike_names_in_two_namespaces_get_volumes_of_their_own() {
    let env = Env::start("fma-alike").await;
    let other = format!("{}-b", env.namespace);
    let namespaces = Api::<Namespace>::all(env.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": other } })).unwrap(),
        )
        .await
        .unwrap();
    let mut config = flaskmongo_operator::Config::new(Some(other.clone()));
    config.identity = "look-alike".to_owned();
    let operator = InProcess::start(env.client.clone(), config);
    let apps = Api::<FlaskMongoApp>::namespaced(env.client.clone(), &other);
    let delete = json!({ "mongo": { "storage": { "deletionPolicy": "Delete" } } });
    let app = |name: &str| {
        json!({ "apiVersion": "flaskmongo.dev/v1alpha1", "kind": "FlaskMongoApp",
                "metadata": { "name": name }, "spec": delete })
    };
    apps.patch(
        "c",
        &PatchParams::apply(TEST_MANAGER),
        &Patch::Apply(app("c")),
    )
    .await
    .unwrap();
    env.apply("b-c", delete.clone()).await.unwrap();
    env.wait_ready("b-c").await;
    wait_for(
        "c in the other namespace to be Ready",
        Duration::from_secs(90),
        || async {
            let c = apps.get("c").await.ok()?;
            let ready = c.condition("Ready")?.status == "True";
            ready.then_some(())
        },
    )
    .await;
    let volumes = env.volumes();
    let claim_of = |name: String| {
        let volumes = volumes.clone();
        async move {
            let volume = volumes.get(&name).await.unwrap();
            let claim = volume.spec.unwrap().claim_ref.unwrap();
            (claim.namespace.unwrap(), claim.name.unwrap())
        }
    };
    assert_eq!(
        claim_of(env.volume_name("b-c")).await,
        (env.namespace.clone(), "data-b-c-mongo-0".to_owned())
    );
    assert_eq!(
        claim_of(format!("{other}.c.mongo")).await,
        (other.clone(), "data-c-mongo-0".to_owned())
    );

    apps.delete("c", &DeleteParams::default()).await.unwrap();
    wait_for("c to be deleted", Duration::from_secs(60), || async {
        matches!(apps.get_opt("c").await, Ok(None)).then_some(())
    })
    .await;
    operator.stop_within(Duration::from_secs(30)).await;
    let _ = namespaces.delete(&other, &DeleteParams::default()).await;
    env.teardown().await;
}

/// A volume from before MongoDB ran without root carries no record that its directory was
/// handed to MongoDB's user: MongoDB is stopped, the directory prepared in place, and
/// MongoDB started again on the same volume and node.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_from_before_is_prepared_in_place_and_mongodb_restarted() {
    use futures::StreamExt;
    use kube::runtime::watcher;

    let env = Env::start("fma-upgrade").await;
    env.apply("shop", json!({})).await.unwrap();
    let app = env.wait_ready("shop").await;
    let volumes = env.volumes();
    let volume_name = env.volume_name("shop");
    let before = volumes.get(&volume_name).await.unwrap();
    let mongo_pod = env.api::<Pod>().get("shop-mongo-0").await.unwrap();

    // What MongoDB's StatefulSet is asked to run, and the preparation pods' directories, as
    // they happen.
    let replicas = watcher(
        env.api::<StatefulSet>(),
        watcher::Config::default().fields("metadata.name=shop-mongo"),
    )
    .filter_map(|event| async move {
        match event {
            Ok(watcher::Event::Apply(statefulset)) => statefulset.spec.replicas,
            _ => None,
        }
    });
    let preparation = format!("prepare-volume-{}", app.uid().unwrap());
    let prepared = watcher(
        Api::<Pod>::namespaced(
            env.client.clone(),
            flaskmongo_operator::DEFAULT_PREPARATION_NAMESPACE,
        ),
        watcher::Config::default().fields(&format!("metadata.name={preparation}")),
    )
    .filter_map(|event| async move {
        match event {
            Ok(watcher::Event::Apply(pod)) => {
                Some(pod.spec?.volumes?.first()?.host_path.as_ref()?.path.clone())
            }
            _ => None,
        }
    });
    let (stop_replicas, replicas_stopped) = tokio::sync::oneshot::channel::<()>();
    let (stop_prepared, prepared_stopped) = tokio::sync::oneshot::channel::<()>();
    let replicas = tokio::spawn(replicas.take_until(replicas_stopped).collect::<Vec<_>>());
    let prepared = tokio::spawn(prepared.take_until(prepared_stopped).collect::<Vec<_>>());
    // Both watches are established before anything changes.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // As a version that ran MongoDB as root left it.
    volumes
        .patch(
            &volume_name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": { "annotations": { "flaskmongo.dev/data-owner": null } }
            })),
        )
        .await
        .unwrap();
    wait_for(
        "the volume to be prepared again and MongoDB back",
        Duration::from_secs(60),
        || async {
            let volume = volumes.get(&volume_name).await.ok()?;
            let recorded = volume
                .annotations()
                .contains_key("flaskmongo.dev/data-owner");
            let pod = env.api::<Pod>().get_opt("shop-mongo-0").await.ok()??;
            (recorded && pod.uid() != mongo_pod.uid()).then_some(())
        },
    )
    .await;
    let app = env.wait_ready("shop").await;
    assert!(app.status.unwrap().mongo_ready);

    let (before, after) = (
        Placement::of(&before).unwrap(),
        Placement::of(&volumes.get(&volume_name).await.unwrap()).unwrap(),
    );
    assert_eq!(after.path, before.path, "the same directory");
    assert_eq!(after.node, before.node, "the same node");
    let _ = (stop_replicas.send(()), stop_prepared.send(()));
    let replicas = replicas.await.unwrap();
    assert!(replicas.contains(&0), "MongoDB was stopped: {replicas:?}");
    assert_eq!(replicas.last(), Some(&1), "and runs again: {replicas:?}");
    let prepared = prepared.await.unwrap();
    assert!(
        prepared.iter().all(|path| *path == before.path) && !prepared.is_empty(),
        "one preparation, of the volume's own directory: {prepared:?}"
    );
    env.teardown().await;
}
