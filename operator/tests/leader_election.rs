//! Two operator processes with leader election: only the leader writes, and the standby
//! takes over within 15 s of the leader being killed.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, wait_for};
use flaskmongo_crd::FlaskMongoApp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::DeleteParams;
use serde_json::json;

const LEASE: &str = "flaskmongo-test-leader";

/// An operator process; killed when dropped, so a failed test leaves none behind.
struct Operator {
    child: Child,
    port: u16,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(namespace: &str, identity: &str) -> Operator {
    let port = free_port();
    let log =
        std::fs::File::create(std::env::temp_dir().join(format!("{namespace}-{identity}.log")))
            .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_operator"))
        .args([
            "run",
            "--namespace",
            namespace,
            "--leader-election",
            "--lease-name",
            LEASE,
        ])
        .args(["--lease-namespace", namespace, "--identity", identity])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("KUBECONFIG", testenv::stack().kubeconfig)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Operator { child, port }
}

/// A counter of the process's `/metrics`.
async fn metric(operator: &Operator, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", operator.port))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
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
    let mut first = start(&ns, "first");
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
        || async { metric(&second, "flaskmongo_reconciles_total").await },
    )
    .await;

    env.apply("shop", json!({})).await.unwrap();
    env.wait_ready("shop").await;
    assert!(metric(&first, "flaskmongo_reconciles_total").await.unwrap() > 0.0);
    assert_eq!(
        metric(&second, "flaskmongo_reconciles_total").await,
        Some(0.0),
        "the standby does not reconcile"
    );
    assert_eq!(
        metric(&second, "flaskmongo_api_writes_total").await,
        Some(0.0),
        "the standby does not write"
    );

    // Kill the leader without warning: it cannot give the Lease up.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
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
            let reconciled = metric(&second, "flaskmongo_reconciles_total").await? > 0.0;
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
        || async { metric(&third, "flaskmongo_reconciles_total").await },
    )
    .await;
    let status = Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
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
