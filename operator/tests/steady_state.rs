//! At steady state the operator reconciles without writing anything.

mod common;

use std::time::{Duration, Instant};

use common::{Env, wait_for};
use flaskmongo_crd::FlaskMongoApp;
use kube::api::{Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn thirty_seconds_of_steady_state_make_no_writes() {
    // A short re-check interval, so that reconciles do happen during the window.
    let env = Env::start_with("fma-steady", Duration::from_secs(5)).await;
    env.apply(
        "shop",
        json!({ "web": { "env": [{ "name": "GREETING", "value": "hi" }] } }),
    )
    .await
    .unwrap();
    env.wait_ready("shop").await;
    // Settled: no write for 5 s (status transitions and Events come right after Ready).
    let mut last = (env.metrics.writes_excluding_leases(), Instant::now());
    wait_for("the operator to settle", Duration::from_secs(60), || {
        let writes = env.metrics.writes_excluding_leases();
        if writes != last.0 {
            last = (writes, Instant::now());
        }
        std::future::ready((last.1.elapsed() >= Duration::from_secs(5)).then_some(()))
    })
    .await;

    let writes = env.metrics.writes_excluding_leases();
    let reconciles = env.metrics.reconciles();
    let started = Instant::now();
    let apps = env.api::<FlaskMongoApp>();
    for round in 0..3 {
        // A change that is not a spec change still triggers a reconcile.
        let touch =
            json!({ "metadata": { "annotations": { "example.com/touched": round.to_string() } } });
        apps.patch("shop", &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(30));
    let reconciled = env.metrics.reconciles() - reconciles;
    assert!(
        reconciled >= 6,
        "reconciles ran during the window ({reconciled})"
    );
    assert_eq!(
        env.metrics.writes_excluding_leases(),
        writes,
        "writes at steady state; requests so far:\n{}",
        env.metrics.render()
    );
    env.teardown().await;
}
