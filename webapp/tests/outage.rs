//! MongoDB going away and coming back: the service stays ready, requests that need MongoDB
//! answer 503 quickly meanwhile, the service recovers by itself, and no acknowledged write is
//! lost.

pub mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FerretDb, get_text, http, spawn_app, wait_for_status};
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

/// What the writer saw: the numbers of the documents acknowledged with 201, and how many
/// responses of each status it got.
#[derive(Default)]
struct Writes {
    acknowledged: Vec<u64>,
    statuses: BTreeMap<u16, usize>,
    stop: bool,
}

/// Posts `{"seq": n}` for n = 0, 1, ... until told to stop, as a steady client would.
async fn write_until_stopped(url: String, writes: Arc<Mutex<Writes>>) {
    let client = http();
    let started = Instant::now();
    for seq in 0u64.. {
        if writes.lock().unwrap().stop || started.elapsed() > Duration::from_secs(180) {
            break;
        }
        let response = client
            .post(format!("{url}/data"))
            .header(CONTENT_TYPE, "application/json")
            .body(json!({ "seq": seq }).to_string())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        // A transport error (no status) is recorded as 0.
        let status = response.map_or(0, |response| response.status().as_u16());
        {
            let mut writes = writes.lock().unwrap();
            *writes.statuses.entry(status).or_default() += 1;
            if status == 201 {
                writes.acknowledged.push(seq);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the writer has had `count` more documents acknowledged than `since`.
async fn wait_for_acknowledged(writes: &Mutex<Writes>, since: usize, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while writes.lock().unwrap().acknowledged.len() < since + count {
        assert!(
            Instant::now() < deadline,
            "the writer got fewer than {count} more 201s in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET `path`: its status, its body parsed as JSON, and how long it took.
async fn timed_get(url: &str, path: &str) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, text) = get_text(&format!("{url}{path}")).await;
    (
        status,
        serde_json::from_str(&text).unwrap(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_ferretdb_keeps_the_service_ready_and_loses_no_acknowledged_write() {
    let mut ferretdb = FerretDb::on_free_port();
    ferretdb.start();
    let url = spawn_app(
        &ferretdb.uri("outage"),
        &["--server-selection-timeout-ms", "1000"],
    )
    .await;
    assert!(wait_for_status(&format!("{url}/readyz"), 200, Duration::from_secs(10)).await);

    let writes = Arc::new(Mutex::new(Writes::default()));
    let writer = tokio::spawn(write_until_stopped(url.clone(), Arc::clone(&writes)));
    wait_for_acknowledged(&writes, 0, 20).await;

    ferretdb.stop();
    assert!(
        wait_for_status(&format!("{url}/data"), 503, Duration::from_secs(10)).await,
        "GET /data did not turn 503 with FerretDB down"
    );
    let (status, body, took) = timed_get(&url, "/data").await;
    assert_eq!(
        (status, body),
        (503, json!({ "error": "database unavailable" }))
    );
    assert!(took < Duration::from_secs(3), "GET /data took {took:?}");
    assert_eq!(
        timed_get(&url, "/healthz").await.0,
        200,
        "liveness does not depend on the database"
    );
    let (status, body, took) = timed_get(&url, "/readyz").await;
    assert_eq!(
        (status, body),
        (200, json!({ "status": "ready" })),
        "the replica stays in its Service: every replica shares the database"
    );
    assert!(took < Duration::from_secs(1), "/readyz took {took:?}");
    let failed_before = writes
        .lock()
        .unwrap()
        .statuses
        .get(&503)
        .copied()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while writes
        .lock()
        .unwrap()
        .statuses
        .get(&503)
        .copied()
        .unwrap_or(0)
        < failed_before + 3
    {
        assert!(
            Instant::now() < deadline,
            "the writer saw no 503s while FerretDB was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    ferretdb.start();
    let acknowledged_before = writes.lock().unwrap().acknowledged.len();
    wait_for_acknowledged(&writes, acknowledged_before, 20).await;
    writes.lock().unwrap().stop = true;
    writer.await.unwrap();

    let writes = Arc::into_inner(writes)
        .expect("the writer has ended")
        .into_inner()
        .unwrap();
    let unexpected: Vec<_> = writes
        .statuses
        .keys()
        .filter(|status| ![201, 503].contains(*status))
        .collect();
    assert!(
        unexpected.is_empty(),
        "statuses other than 201 and 503: {:?}",
        writes.statuses
    );
    let (status, stored, _) = timed_get(&url, "/data").await;
    assert_eq!(status, 200);
    let stored: BTreeSet<u64> = stored
        .as_array()
        .unwrap()
        .iter()
        .map(|doc| doc["seq"].as_u64().unwrap())
        .collect();
    let lost: Vec<_> = writes
        .acknowledged
        .iter()
        .filter(|seq| !stored.contains(seq))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");

    let (_, metrics) = get_text(&format!("{url}/metrics")).await;
    for operation in ["insert", "find"] {
        let prefix = format!("database_errors_total{{operation=\"{operation}\"}} ");
        let count: u64 = metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{metrics}"))
            .parse()
            .unwrap();
        assert!(count >= 1, "{prefix}{count}");
    }
}
