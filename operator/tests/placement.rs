//! Where new volumes go: only to nodes that take new pods. It cordons nodes of the shared
//! stack, so it runs in a test program of its own (cargo runs them one after the other).

mod common;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use common::{Env, wait_for};
use flaskmongo_operator::children::persistent_volume::Placement;
use flaskmongo_operator::children::volume_preparer;
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Most objects created until one of them would go to a given node (of two, each goes
/// there with a chance of one half).
const MOST_OBJECTS: usize = 16;

#[tokio::test(flavor = "multi_thread")]
async fn a_cordoned_node_gets_no_new_volume_and_gets_them_again_once_uncordoned() {
    let env = Env::start("fma-placement").await;
    let nodes = preparer_nodes(&env.client).await;
    let cordoned = nodes[0].clone();
    cordon(&env.client, &cordoned, true).await;
    // Whatever the outcome, the node takes pods again for the tests after this one.
    let outcome = AssertUnwindSafe(until_one_would_go_to(&env, "cordoned", &nodes, &cordoned))
        .catch_unwind()
        .await;
    cordon(&env.client, &cordoned, false).await;
    let placed = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    for (name, node) in &placed {
        assert_ne!(
            node, &cordoned,
            "{name}'s volume, while {cordoned} was cordoned"
        );
    }

    // Uncordoned, it is chosen again.
    let placed = until_one_would_go_to(&env, "uncordoned", &nodes, &cordoned).await;
    let (name, node) = placed.last().unwrap();
    assert_eq!(
        node, &cordoned,
        "{name}'s volume, once {cordoned} was uncordoned"
    );
    env.teardown().await;
}

/// Creates objects `PREFIX-N` until one whose volume would go to `node` among `nodes` by
/// its uid alone (at most [`MOST_OBJECTS`]), and returns where each one's volume went.
async fn until_one_would_go_to(
    env: &Env,
    prefix: &str,
    nodes: &[String],
    node: &str,
) -> Vec<(String, String)> {
    let mut placed = Vec::new();
    for index in 0..MOST_OBJECTS {
        let name = format!("{prefix}-{index}");
        let app = env.apply(&name, json!({})).await.unwrap();
        placed.push((name.clone(), volume_node(env, &name).await));
        if volume_preparer::choose(nodes, &app.uid().unwrap()) == Some(node) {
            return placed;
        }
    }
    panic!("none of {MOST_OBJECTS} objects would have gone to {node}: {placed:?}");
}

/// The nodes where the volume preparer is Ready, at least two, by name.
async fn preparer_nodes(client: &Client) -> Vec<String> {
    let pods = Api::<Pod>::namespaced(
        client.clone(),
        flaskmongo_operator::DEFAULT_PREPARATION_NAMESPACE,
    );
    wait_for(
        "the volume preparer Ready on two nodes or more (LOCAL_STACK_NODES=2 at least)",
        Duration::from_secs(60),
        || async {
            let listed = pods
                .list(&ListParams::default().labels(&volume_preparer::selector()))
                .await
                .ok()?;
            let nodes: Vec<Node> = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .ok()?
                .items;
            let ready = volume_preparer::ready_nodes(&listed.items, &nodes);
            (ready.len() >= 2).then_some(ready)
        },
    )
    .await
}

/// Marks `node` unschedulable (`kubectl cordon`) or schedulable again, and waits until the
/// API server's watch cache shows the node taking new pods or not.
async fn cordon(client: &Client, node: &str, unschedulable: bool) {
    let nodes = Api::<Node>::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "unschedulable": unschedulable } })),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot set {node} unschedulable={unschedulable}: {e}"));
    // Uncordoned, a node still has the taint the node lifecycle controller gave it until
    // that controller takes it off. And the operator's node watch is fed from the watch
    // cache, which may lag behind the patch's answer; a list at any version is answered
    // from that cache.
    let from_the_cache = ListParams::default()
        .match_any()
        .fields(&format!("metadata.name={node}"));
    wait_for(
        &format!(
            "{node} unschedulable={unschedulable} and its taints to follow, in the watch cache"
        ),
        Duration::from_secs(30),
        || async {
            let listed = nodes.list(&from_the_cache).await.ok()?;
            let takes_new_pods = volume_preparer::takes_new_pods(listed.items.first()?);
            (takes_new_pods != unschedulable).then_some(())
        },
    )
    .await;
}

/// The node the volume of `app` is bound to, once it exists.
async fn volume_node(env: &Env, app: &str) -> String {
    let volumes = env.volumes();
    let name = env.volume_name(app);
    wait_for(
        &format!("the volume of {app}"),
        Duration::from_secs(60),
        || async {
            let volume = volumes.get_opt(&name).await.ok()??;
            Placement::of(&volume)?.node
        },
    )
    .await
}
