//! Two operator processes with leader election: only the leader writes, the standby
//! takes over within 15 s of the leader being killed, and a leader that cannot renew
//! stops writing before the standby starts.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use common::{Env, wait_for};
use flaskmongo_crd::FlaskMongoApp;
use flaskmongo_operator::{Config, Error, LeaseConfig};
use futures::future::BoxFuture;
use http::{Method, Request, Response};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;
use kube::client::Body;
use serde_json::json;
use testenv::process::{OperatorProcess, sum_metric};
use tokio::sync::oneshot;

const LEASE: &str = "flaskmongo-test-leader";

/// An operator process for `namespace` with leader election as `identity`; killed when
/// dropped, so a failed test leaves none behind. Returns once it serves `/readyz` (a
/// standby is ready too: it is waiting by design).
fn start(namespace: &str, identity: &str) -> OperatorProcess {
    OperatorProcess::start(
        Path::new(env!("CARGO_BIN_EXE_operator")),
        &testenv::stack().kubeconfig,
        namespace,
        &[
            "--leader-election",
            "--lease-name",
            LEASE,
            "--lease-namespace",
            namespace,
            "--identity",
            identity,
        ],
        std::env::temp_dir().join(format!("{namespace}-{identity}.log")),
    )
}

/// A counter of the process's `/metrics`, once it answers.
fn metric(operator: &OperatorProcess, name: &str) -> Option<f64> {
    let text = operator.metrics().ok()?;
    Some(sum_metric(&text, &format!("{name} ")))
}

async fn holder(env: &Env) -> Option<String> {
    env.api::<Lease>()
        .get_opt(LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let env = Env::without_operator("fma-leader").await;
    let ns = env.namespace.clone();
    let first = start(&ns, "first");
    wait_for(
        "the first process to lead",
        Duration::from_secs(30),
        || async { (holder(&env).await.as_deref() == Some("first")).then_some(()) },
    )
    .await;
    let second = start(&ns, "second");
    wait_for(
        "the standby to serve its metrics",
        Duration::from_secs(30),
        || async { metric(&second, "flaskmongo_reconciles_total") },
    )
    .await;

    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    assert!(metric(&first, "flaskmongo_reconciles_total").unwrap() > 0.0);
    assert_eq!(
        metric(&second, "flaskmongo_reconciles_total"),
        Some(0.0),
        "the standby does not reconcile"
    );
    assert_eq!(
        metric(&second, "flaskmongo_api_writes_total"),
        Some(0.0),
        "the standby does not write"
    );

    // Kill the leader without warning: it cannot give the Lease up.
    first.kill();
    let killed = Instant::now();
    env.patch_spec(
        "shop",
        json!({ "web": { "image": "flaskmongo/webapp:takeover" } }),
    )
    .await;
    // Taken over: the standby holds the Lease and has reconciled the change (judged by
    // its own counters, so that no other process's work can pass for its own).
    wait_for(
        "the standby to take over",
        Duration::from_secs(20),
        || async {
            let leads = holder(&env).await.as_deref() == Some("second");
            let reconciled = metric(&second, "flaskmongo_reconciles_total")? > 0.0;
            (leads && reconciled).then_some(())
        },
    )
    .await;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(15),
        "took over after {takeover:?}"
    );
    let deployments = env.api::<Deployment>();
    wait_for(
        "the change to be applied",
        Duration::from_secs(20),
        || async {
            let deployment = deployments.get("shop-web").await.ok()?;
            let image = deployment.spec.template.spec?.containers[0].image.clone()?;
            (image == "flaskmongo/webapp:takeover").then_some(())
        },
    )
    .await;

    // A graceful stop gives the Lease up at once.
    let third = start(&ns, "third");
    wait_for(
        "the third process to serve",
        Duration::from_secs(30),
        || async { metric(&third, "flaskmongo_reconciles_total") },
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &second.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = Instant::now();
    wait_for(
        "the third process to lead",
        Duration::from_secs(15),
        || async { (holder(&env).await.as_deref() == Some("third")).then_some(()) },
    )
    .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "a released Lease is taken at once ({:?})",
        stopped.elapsed()
    );
    drop(second);

    env.api::<FlaskMongoApp>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone::<FlaskMongoApp>("shop").await;
    drop(third);
    env.teardown().await;
}

/// The admin's client, as one operator process sees the API server: it notes when each
/// write is sent (those to Leases and Events aside), and once `stalled` is set, a request
/// for a Lease is never sent nor answered, as when the API server stops answering this
/// process's renewals.
#[derive(Clone)]
struct Stalling {
    client: kube::Client,
    stalled: Arc<AtomicBool>,
    writes: Arc<Mutex<Vec<Instant>>>,
}

impl Stalling {
    fn new(client: kube::Client) -> Self {
        Self {
            client,
            stalled: Arc::default(),
            writes: Arc::default(),
        }
    }

    fn client(&self) -> kube::Client {
        kube::Client::new(self.clone(), self.client.default_namespace().to_owned())
    }

    fn writes(&self) -> Vec<Instant> {
        self.writes.lock().unwrap().clone()
    }
}

impl tower::Service<Request<Body>> for Stalling {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path();
        let lease = path.contains("/leases");
        // Events tell what was done before; the reconcile's own writes are what counts.
        if !lease && !path.contains("/events") && request.method() != Method::GET {
            self.writes.lock().unwrap().push(Instant::now());
        }
        let stall = lease && self.stalled.load(Ordering::SeqCst);
        let client = self.client.clone();
        Box::pin(async move {
            if stall {
                futures::future::pending::<()>().await;
            }
            client.send(request).await
        })
    }
}

/// Runs the operator in-process as `identity` through `client`, with short lease timings;
/// the task returns how `run` ended and when.
fn run_in_process(
    namespace: &str,
    identity: &str,
    client: kube::Client,
) -> (
    oneshot::Sender<()>,
    tokio::task::JoinHandle<(flaskmongo_operator::Result<()>, Instant)>,
) {
    let mut lease = LeaseConfig::new(LEASE, namespace, identity);
    lease.lease_duration = Duration::from_secs(4);
    lease.renew_deadline = Duration::from_secs(3);
    lease.retry_period = Duration::from_secs(1);
    let mut config = Config::new(Some(namespace.to_owned()));
    config.identity = identity.to_owned();
    config.leader_election = Some(lease);
    let (stop, stopped) = oneshot::channel::<()>();
    let run = tokio::spawn(async move {
        let result = flaskmongo_operator::run(client, config, async move {
            let _ = stopped.await;
        })
        .await;
        (result, Instant::now())
    });
    (stop, run)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_whose_renewals_stall_stops_writing_before_a_standby_takes_over() {
    let env = Env::without_operator("fma-stall").await;
    let ns = env.namespace.clone();
    let old = Stalling::new(env.client.clone());
    let (_stop_old, old_run) = run_in_process(&ns, "old", old.client());
    wait_for(
        "the old process to lead",
        Duration::from_secs(30),
        || async { (holder(&env).await.as_deref() == Some("old")).then_some(()) },
    )
    .await;
    let new = Stalling::new(env.client.clone());
    let (stop_new, new_run) = run_in_process(&ns, "new", new.client());
    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    assert!(new.writes().is_empty(), "the standby does not write");

    old.stalled.store(true, Ordering::SeqCst);
    // A change of the spec every 300 ms gives whichever process leads something to write,
    // until the new leader has written for 2 s.
    let started = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        env.patch_spec(
            "shop",
            json!({ "web": { "env": [{ "name": "ROUND", "value": round.to_string() }] } }),
        )
        .await;
        if new
            .writes()
            .first()
            .is_some_and(|first| first.elapsed() > Duration::from_secs(2))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (result, stopped) = tokio::time::timeout(Duration::from_secs(5), old_run)
        .await
        .expect("the old leader stops once it cannot renew")
        .expect("operator task");
    assert!(
        matches!(result, Err(Error::LeadershipLost(_))),
        "{result:?}"
    );
    let took_over = new.writes()[0];
    assert!(
        stopped < took_over,
        "the old leader stopped only after the new one wrote"
    );
    let last_old = old.writes().last().copied();
    assert!(
        last_old.is_some_and(|last| last < took_over),
        "the old leader wrote after the new one started"
    );

    env.api::<FlaskMongoApp>()
        .delete("shop", &DeleteParams::default())
        .await
        .unwrap();
    env.wait_gone::<FlaskMongoApp>("shop").await;
    let _ = stop_new.send(());
    let (result, _) = tokio::time::timeout(Duration::from_secs(15), new_run)
        .await
        .expect("the new leader stops when told")
        .expect("operator task");
    result.expect("the new leader ends without error");
    env.teardown().await;
}
