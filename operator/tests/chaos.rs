//! Fault tests: the operator killed with SIGKILL while objects converge, the API server
//! stopped under it, its leader killed during convergence, and a seeded churn of creates,
//! updates and deletes. Each ends on what a user would check: every object Ready, each
//! child exactly once and owned by a live object, nothing left of deleted objects but the
//! data they keep.
//!
//! `make test` runs them with small counts; `make chaos` (`hack/chaos.sh`) with the counts
//! of the issue, through these variables:
//! - `CHAOS_OBJECTS`: objects per scenario (default 20);
//! - `CHAOS_CHURN_SECONDS`: length of the churn (default 20);
//! - `CHAOS_SEED`: seed of the random moments and of the churn (default: drawn and printed,
//!   so a failure can be replayed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Env, install_crd, wait_for};
use flaskmongo_crd::FlaskMongoApp;
use flaskmongo_operator::labels;
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, Secret, Service};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::{Api, Client, Resource, ResourceExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use testenv::private::PrivateStack;
use testenv::process::OperatorProcess;

/// Field manager of what these tests apply.
const MANAGER: &str = "flaskmongo-chaos";

fn objects() -> usize {
    env_number("CHAOS_OBJECTS", 20)
}

fn env_number(name: &str, default: u64) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default) as usize
}

/// A seeded generator; the seed is printed so a failure can be replayed with `CHAOS_SEED`.
fn rng(test: &str) -> StdRng {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("{test}: CHAOS_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Time allowed for `count` objects to become Ready on this 2-core machine.
fn ready_timeout(count: usize) -> Duration {
    Duration::from_secs(90 + count as u64)
}

/// The operator binary as a process of its own for `namespace` of the cluster `kubeconfig`.
fn operator(
    kubeconfig: &std::path::Path,
    namespace: &str,
    identity: &str,
    args: &[&str],
) -> OperatorProcess {
    let log = log_dir().join(format!("{namespace}-{identity}.log"));
    OperatorProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_operator")),
        kubeconfig,
        namespace,
        &[args, &["--identity", identity]].concat(),
        log,
    )
}

/// Operator logs go under `target/chaos-logs/`, kept for a failed run.
fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chaos-logs");
    std::fs::create_dir_all(&dir).expect("the log folder can be created");
    dir
}

/// What the tests create: autoscaling on or off, a created volume, the given policy.
fn spec(autoscaling: bool, policy: &str) -> Value {
    json!({
        "web": { "replicas": 2 },
        "autoscaling": { "enabled": autoscaling },
        "mongo": { "storage": {
            "deletionPolicy": policy,
            "persistentVolume": { "create": true },
        } },
    })
}

/// Applies a `FlaskMongoApp` as a user's `kubectl apply --server-side` would.
async fn apply(api: &Api<FlaskMongoApp>, name: &str, spec: Value) {
    let object = json!({
        "apiVersion": "flaskmongo.dev/v1alpha1",
        "kind": "FlaskMongoApp",
        "metadata": { "name": name },
        "spec": spec,
    });
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot apply FlaskMongoApp {name}: {e}"));
}

/// Applies the `names` with eight requests in flight, as a script or a GitOps tool would.
async fn apply_all(api: &Api<FlaskMongoApp>, names: &[String], spec: &Value) {
    stream::iter(names)
        .for_each_concurrent(8, |name| apply(api, name, spec.clone()))
        .await;
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Waits until every object in `names` reports `Ready=True` and `Degraded=False` for its
/// current generation.
async fn wait_all_ready(api: &Api<FlaskMongoApp>, names: &[String]) {
    let expected: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut pending = Vec::new();
    let started = Instant::now();
    let timeout = ready_timeout(names.len());
    while started.elapsed() < timeout {
        let apps = api.list(&ListParams::default()).await.map(|l| l.items);
        pending = match apps {
            Ok(apps) => {
                let done: BTreeSet<String> = apps
                    .iter()
                    .filter(|app| is_settled(app))
                    .map(ResourceExt::name_any)
                    .collect();
                expected
                    .iter()
                    .filter(|name| !done.contains(**name))
                    .map(|name| (*name).to_owned())
                    .collect()
            }
            Err(e) => vec![format!("(cannot list: {e})")],
        };
        if pending.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let shown: Vec<String> =
        futures::future::join_all(pending.iter().take(5).map(|name| async move {
            // The Deployment's own count tells a stale status from pods that are not ready.
            let deployments: Api<Deployment> = Api::namespaced(
                api.clone().into_client(),
                api.namespace().unwrap_or_default(),
            );
            let web = deployments
                .get(&format!("{name}-web"))
                .await
                .ok()
                .and_then(|d| d.status);
            match api.get(name).await {
                Ok(app) => format!("{name}: {:?}; Deployment status {web:?}", app.status),
                Err(e) => format!("{name}: {e}"),
            }
        }))
        .await;
    panic!(
        "{} of {} objects not Ready after {timeout:?}; the first ones:\n{}",
        pending.len(),
        names.len(),
        shown.join("\n")
    );
}

fn is_settled(app: &FlaskMongoApp) -> bool {
    let generation = app.metadata.generation;
    let current = |type_: &str, status: &str| {
        app.condition(type_)
            .is_some_and(|c| c.status == status && c.observed_generation == generation)
    };
    current("Ready", "True") && current("Degraded", "False")
}

/// Names of the objects of kind `K` in the namespace.
async fn names_of<K>(client: &Client, namespace: &str) -> BTreeSet<String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    objects_of::<K>(client, namespace)
        .await
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

async fn objects_of<K>(client: &Client, namespace: &str) -> Vec<PartialObjectMeta<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", K::plural(&K::DynamicType::default())))
        .items
}

/// Names of the volumes the operator made for objects of `namespace`.
async fn volumes_of(client: &Client, namespace: &str) -> BTreeSet<String> {
    Api::<PersistentVolume>::all(client.clone())
        .list_metadata(
            &ListParams::default().labels(&format!("{}={namespace}", labels::OWNER_NAMESPACE)),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot list PersistentVolumes: {e}"))
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

/// The name of the credentials Secret of the object `name`.
fn secret_name(name: &str) -> String {
    format!("{name}-mongo-credentials")
}

/// The name of the volume of the object `name` in `namespace`.
fn volume_name(namespace: &str, name: &str) -> String {
    format!("{namespace}.{name}.mongo")
}

/// What a namespace must hold, and nothing more, once everything converged.
#[derive(Debug, Default)]
struct Expected {
    deployments: BTreeSet<String>,
    services: BTreeSet<String>,
    hpas: BTreeSet<String>,
    statefulsets: BTreeSet<String>,
    secrets: BTreeSet<String>,
    volumes: BTreeSet<String>,
    /// Secrets and volumes that may be there or not: of objects deleted under `Retain`
    /// before the test saw them made, which a reconcile under way may still have made.
    either: BTreeSet<String>,
}

impl Expected {
    /// The children of the live objects (with autoscaling on or off) and, of ones deleted
    /// under `Retain`, the Secret and volume kept, which must be there if `retained` names
    /// them among those seen before the deletion.
    fn new(
        namespace: &str,
        live: &BTreeMap<String, bool>,
        retained: &BTreeMap<String, BTreeSet<String>>,
    ) -> Self {
        let mut expected = Self::default();
        for (name, autoscaling) in live {
            expected.deployments.insert(format!("{name}-web"));
            expected.services.insert(format!("{name}-web"));
            expected.services.insert(format!("{name}-mongo"));
            if *autoscaling {
                expected.hpas.insert(format!("{name}-web"));
            }
            expected.statefulsets.insert(format!("{name}-mongo"));
        }
        for name in live.keys() {
            expected.secrets.insert(secret_name(name));
            expected.volumes.insert(volume_name(namespace, name));
        }
        for (name, seen) in retained {
            for (kept, must) in [
                (secret_name(name), &mut expected.secrets),
                (volume_name(namespace, name), &mut expected.volumes),
            ] {
                if seen.contains(&kept) {
                    must.insert(kept);
                } else {
                    expected.either.insert(kept);
                }
            }
        }
        expected
    }

    /// Whether `found` holds exactly these children, each of `either` or not.
    fn matches(&self, found: &Expected) -> bool {
        let kept = |must: &BTreeSet<String>, found: &BTreeSet<String>| {
            must.is_subset(found)
                && found
                    .difference(must)
                    .all(|name| self.either.contains(name))
        };
        (
            &self.deployments,
            &self.services,
            &self.hpas,
            &self.statefulsets,
        ) == (
            &found.deployments,
            &found.services,
            &found.hpas,
            &found.statefulsets,
        ) && kept(&self.secrets, &found.secrets)
            && kept(&self.volumes, &found.volumes)
    }

    async fn found(client: &Client, namespace: &str) -> Self {
        Self {
            deployments: names_of::<Deployment>(client, namespace).await,
            services: names_of::<Service>(client, namespace).await,
            hpas: names_of::<HorizontalPodAutoscaler>(client, namespace).await,
            statefulsets: names_of::<StatefulSet>(client, namespace).await,
            secrets: names_of::<Secret>(client, namespace).await,
            volumes: volumes_of(client, namespace).await,
            either: BTreeSet::new(),
        }
    }
}

/// [`check_children`] when every object in `names` is live, with autoscaling on or off,
/// and none was deleted.
async fn check_live_children(
    client: &Client,
    namespace: &str,
    names: &[String],
    autoscaling: bool,
) {
    let live = names
        .iter()
        .map(|name| (name.clone(), autoscaling))
        .collect();
    check_children(
        client,
        namespace,
        Expected::new(namespace, &live, &BTreeMap::new()),
    )
    .await;
}

/// Checks what a user would after convergence: the namespace holds exactly the expected
/// children (the garbage collector gets 60 s to remove those of deleted objects); each
/// namespaced child is controlled by the live object of its name; each Deployment has one
/// ReplicaSet, so no restart of the operator rolled the pods.
async fn check_children(client: &Client, namespace: &str, expected: Expected) {
    let mut found = Expected::default();
    let settled = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            found = Expected::found(client, namespace).await;
            if expected.matches(&found) {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "the namespace does not hold exactly the expected children:\nexpected {expected:#?}\nfound {found:#?}"
    );
    let apps: BTreeMap<String, String> =
        Api::<FlaskMongoApp>::namespaced(client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("the objects can be listed")
            .items
            .iter()
            .map(|app| (app.name_any(), app.uid().unwrap_or_default()))
            .collect();
    let owners = [
        objects_of::<Deployment>(client, namespace)
            .await
            .into_iter()
            .map(|o| o.metadata)
            .collect::<Vec<_>>(),
        objects_of::<Service>(client, namespace)
            .await
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
        objects_of::<HorizontalPodAutoscaler>(client, namespace)
            .await
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
        objects_of::<StatefulSet>(client, namespace)
            .await
            .into_iter()
            .map(|o| o.metadata)
            .collect(),
    ];
    for meta in owners.iter().flatten() {
        let child = meta.name.clone().unwrap_or_default();
        let app = child.trim_end_matches("-web").trim_end_matches("-mongo");
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.controller == Some(true));
        assert_eq!(
            controller.map(|owner| owner.uid.as_str()),
            apps.get(app).map(String::as_str),
            "{child} is not controlled by the live FlaskMongoApp {app}"
        );
    }
    let replica_sets = objects_of::<ReplicaSet>(client, namespace).await;
    for deployment in &expected.deployments {
        let count = replica_sets
            .iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| &o.name == deployment)
            })
            .count();
        assert_eq!(count, 1, "Deployment {deployment} has {count} ReplicaSets");
    }
}

/// Deletes every object while the operator still runs (its finalizer must let them go),
/// then the namespace.
async fn delete_all(client: &Client, namespace: &str) {
    let api: Api<FlaskMongoApp> = Api::namespaced(client.clone(), namespace);
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("the objects can be deleted");
    wait_for(
        "the objects to be deleted",
        Duration::from_secs(120),
        || async {
            api.list(&ListParams::default())
                .await
                .ok()
                .filter(|list| list.items.is_empty())
                .map(drop)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_convergence_leaves_every_object_ready_and_each_child_once() {
    let mut rng = rng("sigkill");
    let env = Env::without_operator("chaos-kill").await;
    let kubeconfig = testenv::stack().kubeconfig;
    let ns = env.namespace.clone();
    let api = env.api::<FlaskMongoApp>();
    let names = names("kill", objects());
    let args = ["--leader-election=false"];
    let mut process = operator(&kubeconfig, &ns, "first", &args);
    let creating = tokio::spawn({
        let api = api.clone();
        let names = names.clone();
        async move { apply_all(&api, &names, &spec(true, "Delete")).await }
    });
    for round in 1..=3 {
        // A random moment of convergence: while objects are still being created, children
        // applied and statuses written.
        let delay = Duration::from_millis(rng.random_range(300..2500));
        tokio::time::sleep(delay).await;
        process.kill();
        process = operator(&kubeconfig, &ns, &format!("restart-{round}"), &args);
    }
    creating.await.expect("the objects are created");
    wait_all_ready(&api, &names).await;
    check_live_children(&env.client, &ns, &names, true).await;
    assert_eq!(
        process.metric("flaskmongo_reconcile_failures_total"),
        0.0,
        "the last operator process reports reconcile failures; log {}",
        process.log.display()
    );
    delete_all(&env.client, &ns).await;
    drop(process);
    env.teardown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operator_rides_out_an_api_server_outage_without_restart() {
    // Stopping the shared API server would fail the tests running beside this one.
    let stack = PrivateStack::up("chaos-apiserver-stack");
    let client = stack.stack.client().await;
    install_crd(&client).await;
    let namespace = testenv::TestNamespace::create(&client, "chaos-outage").await;
    let ns = namespace.name.clone();
    let api: Api<FlaskMongoApp> = Api::namespaced(client.clone(), &ns);
    let names = names("outage", objects());
    let mut process = operator(
        &stack.stack.kubeconfig,
        &ns,
        "only",
        &["--leader-election=false"],
    );
    apply_all(&api, &names, &spec(true, "Delete")).await;
    wait_all_ready(&api, &names).await;

    // Changes in flight when the API server goes away: half the objects turn autoscaling
    // off (the HPA must go, the Deployment get 3 replicas) just before the stop, the other
    // half just after the restart.
    let (before, after) = names.split_at(names.len() / 2);
    let scaled = json!({
        "web": { "replicas": 3 },
        "autoscaling": { "enabled": false },
        "mongo": { "storage": { "deletionPolicy": "Delete", "persistentVolume": { "create": true } } },
    });
    apply_all(&api, before, &scaled).await;
    stack.stop("kube-apiserver");
    tokio::time::sleep(Duration::from_secs(10)).await;
    stack.start("kube-apiserver");
    apply_all(&api, after, &scaled).await;

    wait_all_ready(&api, &names).await;
    assert!(
        process.is_running(),
        "the operator exited during the outage; log {}",
        process.log.display()
    );
    check_live_children(&client, &ns, &names, false).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for name in &names {
        let replicas = deployments
            .get(&format!("{name}-web"))
            .await
            .expect("the Deployment exists")
            .spec
            .replicas;
        assert_eq!(replicas, Some(3), "{name}-web after the outage");
    }
    // The stack goes with the guard, so no clean-up of the namespace is needed.
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_finishes_the_work_of_a_leader_killed_during_convergence() {
    let mut rng = rng("leader");
    let env = Env::without_operator("chaos-leader").await;
    let kubeconfig = testenv::stack().kubeconfig;
    let ns = env.namespace.clone();
    let lease = "chaos-leader";
    let args = [
        "--leader-election",
        "--lease-name",
        lease,
        "--lease-namespace",
        &ns,
    ];
    let first = operator(&kubeconfig, &ns, "first", &args);
    let leases = env.api::<Lease>();
    let holder = || async { leases.get_opt(lease).await.ok()??.spec?.holder_identity };
    wait_for(
        "the first process to lead",
        Duration::from_secs(30),
        || async { (holder().await.as_deref() == Some("first")).then_some(()) },
    )
    .await;
    let second = operator(&kubeconfig, &ns, "second", &args);

    let api = env.api::<FlaskMongoApp>();
    let names = names("leader", objects());
    apply_all(&api, &names, &spec(true, "Delete")).await;
    tokio::time::sleep(Duration::from_millis(rng.random_range(200..2000))).await;
    let unfinished = api
        .list(&ListParams::default())
        .await
        .expect("the objects can be listed")
        .items
        .iter()
        .filter(|app| !is_settled(app))
        .count();
    // The counter only grows: zero now means the standby never wrote while the leader
    // lived, and once the leader is killed it cannot write any more.
    assert_eq!(
        second.metric("flaskmongo_api_writes_total"),
        0.0,
        "the standby wrote while the leader was alive"
    );
    first.kill();
    eprintln!(
        "leader killed with {unfinished} of {} objects not yet Ready",
        names.len()
    );
    wait_all_ready(&api, &names).await;
    assert_eq!(holder().await.as_deref(), Some("second"));
    if unfinished > 0 {
        assert!(
            second.metric("flaskmongo_api_writes_total") > 0.0,
            "the new leader finished {unfinished} objects without writing"
        );
    }
    check_live_children(&env.client, &ns, &names, true).await;
    delete_all(&env.client, &ns).await;
    drop(second);
    env.teardown().await;
}

/// The object `name`'s Secret and volume that exist now, a volume being deleted aside (that
/// of an earlier object of the name under `Delete`).
async fn kept_children(client: &Client, namespace: &str, name: &str) -> BTreeSet<String> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_metadata_opt(&secret_name(name))
        .await
        .expect("the Secret can be read")
        .map(|_| secret_name(name));
    let volume = Api::<PersistentVolume>::all(client.clone())
        .get_metadata_opt(&volume_name(namespace, name))
        .await
        .expect("the volume can be read")
        .filter(|volume| volume.metadata.deletion_timestamp.is_none())
        .map(|_| volume_name(namespace, name));
    secret.into_iter().chain(volume).collect()
}

/// One step of the churn.
#[derive(Debug, Clone, Copy)]
enum Step {
    Create { autoscaling: bool, retain: bool },
    Update { autoscaling: bool, replicas: i32 },
    Delete,
}

#[tokio::test(flavor = "multi_thread")]
async fn churn_leaves_live_objects_converged_and_only_retained_data_of_deleted_ones() {
    let mut rng = rng("churn");
    let env = Env::without_operator("chaos-churn").await;
    let kubeconfig = testenv::stack().kubeconfig;
    let ns = env.namespace.clone();
    let process = operator(&kubeconfig, &ns, "only", &["--leader-election=false"]);
    let api = env.api::<FlaskMongoApp>();
    // A small pool of names, so deleted objects are created again: over retained data
    // (which the new object must reuse) and over data still being removed.
    let pool = names("churn", (objects() / 2).max(4));
    let duration = Duration::from_secs(env_number("CHAOS_CHURN_SECONDS", 20) as u64);
    // name → (autoscaling, retain) of the live incarnation.
    let mut live: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    // name → its Secret and volume seen before it was deleted under `Retain`.
    let mut retained = BTreeMap::new();
    let mut steps = 0;
    let started = Instant::now();
    while started.elapsed() < duration {
        let name = &pool[rng.random_range(0..pool.len())];
        let step = match live.get(name) {
            None => Step::Create {
                autoscaling: rng.random_bool(0.5),
                retain: rng.random_bool(0.5),
            },
            Some(_) if rng.random_bool(0.6) => Step::Update {
                autoscaling: rng.random_bool(0.5),
                replicas: rng.random_range(1..=3),
            },
            Some(_) => Step::Delete,
        };
        match step {
            Step::Create {
                autoscaling,
                retain,
            } => {
                // A deleted object of this name may still be finishing: then this step
                // does nothing.
                if api
                    .get_opt(name)
                    .await
                    .expect("the object can be read")
                    .is_none()
                {
                    apply(
                        &api,
                        name,
                        spec(autoscaling, if retain { "Retain" } else { "Delete" }),
                    )
                    .await;
                    retained.remove(name);
                    live.insert(name.clone(), (autoscaling, retain));
                }
            }
            Step::Update {
                autoscaling,
                replicas,
            } => {
                let retain = live[name].1;
                let mut spec = spec(autoscaling, if retain { "Retain" } else { "Delete" });
                spec["web"]["replicas"] = json!(replicas);
                apply(&api, name, spec).await;
                live.insert(name.clone(), (autoscaling, retain));
            }
            Step::Delete => {
                // Only what was made can be kept: an object deleted at once may have no
                // Secret or volume yet.
                let seen = kept_children(&env.client, &ns, name).await;
                api.delete(name, &DeleteParams::default())
                    .await
                    .expect("the object can be deleted");
                if live.remove(name).is_some_and(|(_, retain)| retain) {
                    retained.insert(name.clone(), seen);
                }
            }
        }
        steps += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..300))).await;
    }
    eprintln!(
        "churn: {steps} steps, {} objects live, {} retained",
        live.len(),
        retained.len()
    );

    let live_names: Vec<String> = live.keys().cloned().collect();
    wait_all_ready(&api, &live_names).await;
    wait_for(
        "the deleted objects to be gone",
        Duration::from_secs(120),
        || async {
            let present = api.list(&ListParams::default()).await.ok()?.items.len();
            (present == live.len()).then_some(())
        },
    )
    .await;
    let autoscaling = live
        .iter()
        .map(|(name, (autoscaling, _))| (name.clone(), *autoscaling))
        .collect();
    check_children(
        &env.client,
        &ns,
        Expected::new(&ns, &autoscaling, &retained),
    )
    .await;
    delete_all(&env.client, &ns).await;
    drop(process);
    env.teardown().await;
}
