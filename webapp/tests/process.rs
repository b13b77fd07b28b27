//! The `webapp` binary as Kubernetes runs it: its `--help`, start-up without MongoDB,
//! the drain and graceful shutdown on SIGTERM, and its log lines.

pub mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{FerretDb, PROCESS_TIMEOUT, Webapp, get_text, http, send, stack_uri, wait_for_status};
use mongodb::bson::doc;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

async fn get(app: &Webapp, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, text) = get_text(&app.url(path)).await;
    (status, text, started.elapsed())
}

async fn post(app: &Webapp, body: &str) -> (u16, String) {
    send(
        http()
            .post(app.url("/data"))
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_owned()),
    )
    .await
}

#[test]
fn help_documents_every_flag_and_environment_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_webapp"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for (flag, variable) in [
        ("--mongodb-uri", "MONGODB_URI"),
        ("--listen-address", "LISTEN_ADDRESS"),
        ("--port", "PORT"),
        ("--log-format", "LOG_FORMAT"),
        ("--max-pool-size", "MONGODB_MAX_POOL_SIZE"),
        (
            "--server-selection-timeout-ms",
            "MONGODB_SERVER_SELECTION_TIMEOUT_MS",
        ),
        ("--body-limit-bytes", "BODY_LIMIT_BYTES"),
        ("--request-timeout-secs", "REQUEST_TIMEOUT_SECS"),
        ("--drain-secs", "DRAIN_SECS"),
        ("--shutdown-grace-secs", "SHUTDOWN_GRACE_SECS"),
        ("--worker-threads", "WORKER_THREADS"),
        ("--max-concurrent-requests", "MAX_CONCURRENT_REQUESTS"),
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
        assert!(
            help.contains(&format!("[env: {variable}")),
            "--help lacks {variable}:\n{help}"
        );
    }
    for words in [
        "flask_db",
        "[default: mongodb://localhost:27017/]",
        "[default: 5000]",
        "[default: 1048576]",
        "SIGTERM",
    ] {
        assert!(help.contains(words), "--help lacks {words:?}:\n{help}");
    }
}

#[test]
fn help_does_not_show_the_mongodb_uri_of_the_environment() {
    let output = Command::new(env!("CARGO_BIN_EXE_webapp"))
        .arg("--help")
        .env("MONGODB_URI", "mongodb://user:secret@h/")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("[env: MONGODB_URI]"), "{help}");
    assert!(!help.contains("secret"), "{help}");
}

#[tokio::test]
async fn starts_without_mongodb_then_serves_once_it_appears() {
    let mut ferretdb = FerretDb::on_free_port();
    let app = Webapp::start(
        &ferretdb.uri("late"),
        &[("MONGODB_SERVER_SELECTION_TIMEOUT_MS", "1000")],
    );

    assert_eq!(get(&app, "/healthz").await.0, 200);
    let (status, body, took) = get(&app, "/readyz").await;
    // The driver's reason names hosts: it goes to the log, not to the client.
    assert_eq!(
        (status, body.as_str()),
        (503, "{\"error\":\"database unreachable\"}\n")
    );
    assert!(took < Duration::from_secs(3), "/readyz took {took:?}");
    let (status, body, took) = get(&app, "/data").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "{\"error\":\"database unavailable\"}\n")
    );
    assert!(took < Duration::from_secs(3), "GET /data took {took:?}");
    assert_eq!(post(&app, r#"{"before":"start"}"#).await.0, 503);

    ferretdb.start();
    assert!(wait_for_status(&app.url("/readyz"), 200, Duration::from_secs(30)).await);
    assert_eq!(post(&app, r#"{"after":"start"}"#).await.0, 201);
    let (status, body, _) = get(&app, "/data").await;
    assert_eq!((status, body.as_str()), (200, "[{\"after\":\"start\"}]\n"));
    let output = app.stop();
    let address = ferretdb.address().to_string();
    let logged = output.iter().any(|line| {
        let event: Value = serde_json::from_str(line).unwrap_or_default();
        event["level"] == "WARN"
            && event["message"] == "not ready: the database does not answer"
            && event["error"]
                .as_str()
                .is_some_and(|error| error.contains(&address))
    });
    assert!(
        logged,
        "no readiness failure naming the server in:\n{}",
        output.join("\n")
    );
}

/// Sends the head of a POST and the first bytes of its body; the rest is up to the caller.
fn start_slow_post(app: &Webapp, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(app.address).unwrap();
    stream.set_read_timeout(Some(PROCESS_TIMEOUT)).unwrap();
    let head = format!(
        "POST /data HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.address,
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..body.len() / 2]).unwrap();
    // Lets the server read the head and start waiting for the rest of the body.
    std::thread::sleep(Duration::from_millis(300));
    stream
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_0() {
    let uri = stack_uri("sigterm");
    let mut app = Webapp::start(&uri, &[]);
    let body = br#"{"in_flight":"during shutdown"}"#;
    let mut in_flight = start_slow_post(&app, body);

    app.terminate();
    // New connections are refused while the in-flight request is still open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(app.address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        app.wait_for_exit(Duration::from_millis(500)).is_none(),
        "exited before finishing the request"
    );

    in_flight.write_all(&body[body.len() / 2..]).unwrap();
    let mut response = String::new();
    in_flight.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 201 Created\r\n"),
        "{response}"
    );
    assert!(
        response.ends_with("{\"status\":\"Data inserted\"}\n"),
        "{response}"
    );
    let status = app
        .wait_for_exit(PROCESS_TIMEOUT)
        .expect("webapp exits after its last request");
    assert!(status.success(), "{status}");

    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let data = client
        .default_database()
        .unwrap()
        .collection::<mongodb::bson::Document>("data");
    assert_eq!(
        data.count_documents(doc! { "in_flight": "during shutdown" })
            .await
            .unwrap(),
        1
    );
}

/// Sends `GET path` on `stream` and returns the response's head, lower-cased, once its
/// body has been read too: by its length, else up to the end of the connection.
fn get_on(stream: &mut TcpStream, path: &str) -> String {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: webapp\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let mut byte = [0; 1];
    while !received.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed in the head"
        );
        received.push(byte[0]);
    }
    let head = String::from_utf8(received).unwrap().to_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "));
    match length {
        Some(length) => stream
            .read_exact(&mut vec![0; length.trim().parse().unwrap()])
            .unwrap(),
        // A streamed body ends where the server closes the connection, if it does.
        None => drop(stream.read_to_end(&mut Vec::new()).unwrap()),
    }
    head
}

#[test]
fn sigterm_drains_then_stops_accepting_connections() {
    let drain = Duration::from_secs(2);
    let mut app = Webapp::start(&stack_uri("drain"), &[("DRAIN_SECS", "2")]);
    let mut kept = TcpStream::connect(app.address).unwrap();
    kept.set_read_timeout(Some(PROCESS_TIMEOUT)).unwrap();
    let before = get_on(&mut kept, "/healthz");
    assert!(before.starts_with("http/1.1 200 ok\r\n"), "{before}");
    assert!(!before.contains("connection: close"), "{before}");

    let started = Instant::now();
    app.terminate();
    let deadline = started + PROCESS_TIMEOUT;
    while !app
        .output()
        .iter()
        .any(|line| line.contains("\"draining: answering with Connection: close\""))
    {
        assert!(
            Instant::now() < deadline,
            "no drain in:\n{}",
            app.output().join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A client that kept its connection is answered, then told to go elsewhere.
    let during = get_on(&mut kept, "/healthz");
    assert!(during.starts_with("http/1.1 200 ok\r\n"), "{during}");
    assert!(during.contains("connection: close\r\n"), "{during}");
    assert_eq!(
        kept.read(&mut [0; 1]).unwrap(),
        0,
        "the server kept the connection open"
    );
    // A connection sent before the Service forgets this replica is still served.
    let mut late = TcpStream::connect(app.address).expect("connections accepted while draining");
    late.set_read_timeout(Some(PROCESS_TIMEOUT)).unwrap();
    let late_head = get_on(&mut late, "/data?limit=1");
    assert!(late_head.starts_with("http/1.1 200 ok\r\n"), "{late_head}");
    assert!(late_head.contains("connection: close\r\n"), "{late_head}");

    while TcpStream::connect(app.address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after the drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused_after = started.elapsed();
    assert!(
        refused_after >= drain,
        "stopped accepting after {refused_after:?}, within the drain"
    );
    let status = app
        .wait_for_exit(PROCESS_TIMEOUT)
        .expect("webapp exits after the drain");
    assert!(status.success(), "{status}");
}

#[test]
fn the_shutdown_grace_period_bounds_a_stalled_request() {
    let mut app = Webapp::start(&stack_uri("grace"), &[("SHUTDOWN_GRACE_SECS", "1")]);
    let _stalled = start_slow_post(&app, br#"{"never":"finished"}"#);
    let started = Instant::now();
    app.terminate();
    let status = app
        .wait_for_exit(Duration::from_secs(10))
        .expect("webapp exits after the grace period");
    assert!(status.success(), "{status}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(8),
        "exited after {took:?}"
    );
}

#[tokio::test]
async fn logs_one_json_line_per_request_and_never_a_body() {
    let app = Webapp::start(&stack_uri("logs"), &[]);
    let secret = "do-not-log-this-body-4f7a";
    assert_eq!(
        post(&app, &json!({ "secret": secret }).to_string()).await.0,
        201
    );
    assert_eq!(get(&app, "/data?limit=1").await.0, 200);
    assert_eq!(get(&app, "/nowhere").await.0, 404);
    let output = app.stop();

    assert!(
        output.iter().all(|line| !line.contains(secret)),
        "a body reached the log:\n{}",
        output.join("\n")
    );
    let events: Vec<Value> = output
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect();
    let requests: Vec<(&str, &str, u64)> = events
        .iter()
        .filter(|event| event["message"] == "request")
        .map(|event| {
            assert!(
                event["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
                "{event}"
            );
            assert_eq!(event["level"], "INFO", "{event}");
            (
                event["method"].as_str().unwrap(),
                event["path"].as_str().unwrap(),
                event["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        requests,
        [
            ("POST", "/data", 201),
            ("GET", "/data", 200),
            ("GET", "/nowhere", 404)
        ]
    );
}

#[tokio::test]
async fn a_request_is_logged_while_the_webapp_runs_not_only_at_exit() {
    let app = Webapp::start(&stack_uri("logs_while_running"), &[]);
    assert_eq!(post(&app, r#"{"logged":"soon"}"#).await.0, 201);
    // Lines go out in batches, 100 ms after the first of each; a second is ample.
    let deadline = Instant::now() + Duration::from_secs(1);
    let logged = |line: &String| {
        serde_json::from_str::<Value>(line)
            .is_ok_and(|event| event["message"] == "request" && event["method"] == "POST")
    };
    while !app.output().iter().any(logged) {
        assert!(
            Instant::now() < deadline,
            "no request line within 1 s:\n{}",
            app.output().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
