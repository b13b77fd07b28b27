//! Where new volumes go: only to nodes that take new pods. It cordons nodes of the shared
//! stack, so it runs in a test program of its own (cargo runs them one after the other),
//! its tests one at a time.

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

/// Held by each test while it cordons nodes.
static CORDONING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn a_cordoned_node_gets_no_new_volume_and_gets_them_again_once_uncordoned() {
    let _cordoning = CORDONING.lock().await;
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

/// Failed reconciles of an object after which the operator's next retry of it is at least
/// 8 s away: its retries wait 1 s, 2 s, 4 s, 8 s, 16 s and so on, and one of the failures
/// may have come from a watch event instead.
const FAILURES_BEFORE_A_LONG_WAIT: u64 = 5;

#[tokio::test(flavor = "multi_thread")]
async fn an_object_created_while_no_node_takes_new_pods_gets_its_volume_once_one_does() {
    let _cordoning = CORDONING.lock().await;
    let env = Env::start("fma-awaiting").await;
    let nodes = preparer_nodes(&env.client).await;
    let uncordoned = &nodes[0];
    for node in &nodes {
        cordon(&env.client, node, true).await;
    }
    let outcome = AssertUnwindSafe(async {
        env.apply("waiting", json!({})).await.unwrap();
        let app = env
            .wait_condition("waiting", "Degraded", "True", Duration::from_secs(30))
            .await;
        let reason = app.condition("Degraded").map(|c| c.reason.clone());
        assert_eq!(
            reason.as_deref(),
            Some("NoVolumePreparer"),
            "{:?}",
            app.status
        );
        // Then the operator's own retries are far apart, so what brings the volume next
        // is the node's change.
        wait_for(
            &format!("{FAILURES_BEFORE_A_LONG_WAIT} failed attempts at placing the volume"),
            Duration::from_secs(40),
            || async {
                let failed = failures(&env, "NoVolumePreparer");
                (failed >= FAILURES_BEFORE_A_LONG_WAIT).then_some(())
            },
        )
        .await;
        let volume = env.volumes().get_opt(&env.volume_name("waiting")).await;
        assert!(
            volume.unwrap().is_none(),
            "a volume while no node took new pods"
        );
        cordon(&env.client, uncordoned, false).await;
        volume_node(&env, "waiting", Duration::from_secs(5)).await
    })
    .catch_unwind()
    .await;
    for node in &nodes {
        cordon(&env.client, node, false).await;
    }
    let placed = outcome.unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    assert_eq!(&placed, uncordoned, "the volume's node");
    env.wait_ready("waiting").await;
    env.teardown().await;
}

/// How many reconciles failed with `reason`, as the operator's `/metrics` says.
fn failures(env: &Env, reason: &str) -> u64 {
    let counter = format!("flaskmongo_reconcile_failures_total{{reason=\"{reason}\"}} ");
    env.metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(&counter)?.parse().ok())
        .unwrap_or(0)
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
        let volume_went_to = volume_node(env, &name, Duration::from_secs(60)).await;
        placed.push((name.clone(), volume_went_to));
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

/// The node the volume of `app` is bound to, once it exists (within `timeout`).
async fn volume_node(env: &Env, app: &str, timeout: Duration) -> String {
    let volumes = env.volumes();
    let name = env.volume_name(app);
    wait_for(&format!("the volume of {app}"), timeout, || async {
        let volume = volumes.get_opt(&name).await.ok()??;
        Placement::of(&volume)?.node
    })
    .await
}
