//! The HTTP API against the local stack's FerretDB: what the old Flask app did, byte for
//! byte, and what this service adds (validation, paging, streaming, compression, metrics).

pub mod common;

use std::io::Read;
use std::time::Duration;

use common::{get_text, http, send, spawn_app, stack_uri};
use flaskmongo_webapp::{COLLECTION, DEFAULT_DATABASE, MAX_DEPTH, MAX_LIMIT, NEXT_CURSOR_HEADER};
use futures::StreamExt;
use mongodb::bson::doc;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LINK};
use serde_json::{Value, json};

async fn post_json(url: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    http()
        .post(format!("{url}/data"))
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("POST /data")
}

/// GET `url`: its status, `Content-Type` and body text.
async fn get_typed(url: &str) -> (u16, String, String) {
    let response = http().get(url).send().await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map_or("", |v| v.to_str().unwrap())
        .to_owned();
    (status, content_type, response.text().await.expect("a body"))
}

/// Checks that GET `url` answers `status` with exactly `body`.
async fn assert_answers(url: &str, status: u16, body: &str) {
    assert_eq!(get_text(url).await, (status, body.to_owned()), "GET {url}");
}

/// The stored documents, as `GET /data` gives them.
async fn stored(url: &str) -> Vec<Value> {
    let (status, body) = get_text(&format!("{url}/data")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("a JSON array")
}

#[tokio::test]
async fn welcome_line_has_the_server_time() {
    let url = spawn_app(&stack_uri("welcome"), &[]).await;
    let before = jiff::Timestamp::now();
    let (status, content_type, text) = get_typed(&format!("{url}/")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/plain; charset=utf-8")
    );
    let time = text
        .strip_prefix("Welcome to the Flask app! The current time is: ")
        .expect(&text);
    let shown: jiff::civil::DateTime = time.parse().expect("a date and time");
    let shown = shown
        .to_zoned(jiff::tz::TimeZone::system())
        .unwrap()
        .timestamp();
    let skew = shown.duration_since(before).abs();
    assert!(
        skew < jiff::SignedDuration::from_secs(5),
        "shown {time}, now {before}"
    );
}

#[tokio::test]
async fn post_and_get_answer_like_the_old_app() {
    let url = spawn_app(&stack_uri("compat"), &[]).await;
    assert_answers(&format!("{url}/data"), 200, "[]\n").await;

    for body in [
        r#"{"sampleKey":"sampleValue"}"#,
        r#"{"b": 2, "a": {"z": [1, 2.5]}}"#,
        r#"{"name": "Zoë"}"#,
    ] {
        let response = post_json(&url, body).await;
        assert_eq!(response.status(), 201);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(
            response.text().await.unwrap(),
            "{\"status\":\"Data inserted\"}\n"
        );
    }

    // Flask's jsonify: compact, keys sorted, non-ASCII escaped, `_id` projected away.
    let expected = "[{\"sampleKey\":\"sampleValue\"},{\"a\":{\"z\":[1,2.5]},\"b\":2},{\"name\":\"Zo\\u00eb\"}]\n";
    assert_eq!(
        get_typed(&format!("{url}/data")).await,
        (200, "application/json".to_owned(), expected.to_owned())
    );
}

#[tokio::test]
async fn a_uri_without_a_database_uses_flask_db() {
    let uri = testenv::stack().mongodb_uri_for("");
    let url = spawn_app(&uri, &[]).await;
    let marker = testenv::unique_name("default-database");
    assert_eq!(
        post_json(&url, json!({ "marker": marker }).to_string())
            .await
            .status(),
        201
    );
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let data = client
        .database(DEFAULT_DATABASE)
        .collection::<mongodb::bson::Document>(COLLECTION);
    // The database is shared with other runs: remove exactly what this test stored.
    let removed = data.delete_many(doc! { "marker": &marker }).await.unwrap();
    assert_eq!(removed.deleted_count, 1);
}

#[tokio::test]
async fn documents_come_back_as_they_were_posted() {
    let url = spawn_app(&stack_uri("roundtrip"), &[]).await;
    let posted = json!({
        "int": 7, "negative": -3, "big": 9_007_199_254_740_993_i64, "float": 1.0, "tiny": 1.5e-300,
        "text": "line\nbreak \"quoted\" \u{1F600} \u{0}", "flag": false, "nothing": null,
        "list": [1, "two", 3.0, {"four": [4]}], "nested": {"deeper": {"deepest": []}}, "": "empty key",
    });
    assert_eq!(post_json(&url, posted.to_string()).await.status(), 201);
    // Integers stay integers and floats stay floats: serde_json compares them by kind.
    assert_eq!(stored(&url).await, vec![posted]);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_json_error_and_nothing_is_stored() {
    let url = spawn_app(&stack_uri("badinput"), &[]).await;
    let too_deep = format!(
        "{}1{}",
        "{\"a\":".repeat(MAX_DEPTH + 1),
        "}".repeat(MAX_DEPTH + 1)
    );
    let too_large = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 * 1024));
    let cases: Vec<(Option<&str>, String, u16, &str)> = vec![
        (
            None,
            r#"{"a":1}"#.into(),
            415,
            "Content-Type must be application/json",
        ),
        (
            Some("text/plain"),
            r#"{"a":1}"#.into(),
            415,
            "Content-Type must be application/json",
        ),
        (
            Some("application/x-www-form-urlencoded"),
            "a=1".into(),
            415,
            "Content-Type",
        ),
        (
            Some("application/json"),
            r#"{"a":"#.into(),
            400,
            "malformed JSON",
        ),
        (
            Some("application/json"),
            String::new(),
            400,
            "malformed JSON",
        ),
        (
            Some("application/json"),
            "[1, 2]".into(),
            400,
            "must be a JSON object, not an array",
        ),
        (
            Some("application/json"),
            r#""text""#.into(),
            400,
            "not a string",
        ),
        (Some("application/json"), "42".into(), 400, "not a number"),
        (Some("application/json"), "null".into(), 400, "not null"),
        (
            Some("application/json"),
            r#"{"$where":"sleep(1000)"}"#.into(),
            400,
            "invalid key at /$where",
        ),
        (
            Some("application/json"),
            r#"{"a":{"$gt":""}}"#.into(),
            400,
            "invalid key at /a/$gt",
        ),
        (
            Some("application/json"),
            r#"{"a":[{"b":{"$set":1}}]}"#.into(),
            400,
            "invalid key at /a/0/b/$set",
        ),
        (
            Some("application/json"),
            r#"{"a.b":1}"#.into(),
            400,
            "invalid key at /a.b",
        ),
        (
            Some("application/json"),
            r#"{"x":{"y.z":1}}"#.into(),
            400,
            "invalid key at /x/y.z",
        ),
        (
            Some("application/json"),
            r#"{"nul\u0000key":1}"#.into(),
            400,
            "NUL",
        ),
        (
            Some("application/json"),
            r#"{"tab\tkey":1}"#.into(),
            400,
            "a control character, a quote or a backslash",
        ),
        (
            Some("application/json"),
            r#"{"_id":"mine"}"#.into(),
            400,
            "_id",
        ),
        (
            Some("application/json"),
            too_deep,
            400,
            "nesting deeper than 32 levels",
        ),
        (
            Some("application/json"),
            too_large,
            413,
            "larger than 1048576 bytes",
        ),
    ];
    for (content_type, body, status, message) in cases {
        let mut request = http().post(format!("{url}/data")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        let response = request.send().await.unwrap();
        let shown: String = body.chars().take(60).collect();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{content_type:?} {shown}"
        );
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/json",
            "{shown}"
        );
        let error: Value = response.json().await.unwrap();
        let text = error["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {error}"));
        assert!(
            text.contains(message),
            "{shown}: {text:?} does not mention {message:?}"
        );
    }
    assert_answers(&format!("{url}/data"), 200, "[]\n").await;
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let url = spawn_app(&stack_uri("limit"), &["--body-limit-bytes", "100"]).await;
    let fits = format!("{{\"pad\":\"{}\"}}", "x".repeat(80));
    let over = format!("{{\"pad\":\"{}\"}}", "x".repeat(100));
    assert_eq!(post_json(&url, fits).await.status(), 201);
    let response = post_json(&url, over).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.text().await.unwrap(),
        "{\"error\":\"request body is larger than 100 bytes\"}\n"
    );
    assert_eq!(stored(&url).await.len(), 1);
}

#[tokio::test]
async fn a_document_over_mongodbs_limit_is_refused_with_its_size() {
    let url = spawn_app(&stack_uri("huge"), &["--body-limit-bytes", "20000000"]).await;
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(17_000_000));
    let response = post_json(&url, huge).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.text().await.unwrap(),
        "{\"error\":\"the document is 17000032 bytes as BSON, over MongoDB's limit of 16777216 bytes\"}\n"
    );
    assert!(stored(&url).await.is_empty());
}

/// Follows the `Link` headers from `/data?limit=N`; returns each page's documents.
async fn pages(url: &str, limit: u32) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut next = Some(format!("/data?limit={limit}"));
    while let Some(path) = next.take() {
        assert!(pages.len() < 100, "too many pages");
        let response = http().get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let cursor = response
            .headers()
            .get(NEXT_CURSOR_HEADER)
            .map(|v| v.to_str().unwrap().to_owned());
        let link = response
            .headers()
            .get(LINK)
            .map(|v| v.to_str().unwrap().to_owned());
        match (&cursor, &link) {
            (Some(cursor), Some(link)) => {
                assert_eq!(
                    link,
                    &format!("</data?limit={limit}&after={cursor}>; rel=\"next\"")
                );
                next = Some(link[1..link.find('>').unwrap()].to_owned());
            }
            (None, None) => {}
            _ => panic!("X-Next-Cursor {cursor:?} and Link {link:?} disagree"),
        }
        pages.push(response.json().await.unwrap());
    }
    pages
}

#[tokio::test]
async fn pages_cover_the_collection_without_duplicates_or_gaps() {
    let url = spawn_app(&stack_uri("pages"), &[]).await;
    for n in 0..21 {
        assert_eq!(
            post_json(&url, json!({ "n": n }).to_string())
                .await
                .status(),
            201
        );
    }
    let all: Vec<Value> = (0..21).map(|n| json!({ "n": n })).collect();
    assert_eq!(stored(&url).await, all);

    for (limit, sizes) in [
        (7, vec![7, 7, 7]),
        (5, vec![5, 5, 5, 5, 1]),
        (21, vec![21]),
        (100, vec![21]),
        (1, vec![1; 21]),
    ] {
        let pages = pages(&url, limit).await;
        assert_eq!(
            pages.iter().map(Vec::len).collect::<Vec<_>>(),
            sizes,
            "limit {limit}"
        );
        assert_eq!(pages.concat(), all, "limit {limit}");
    }

    // A document added after a page was served shows up on a later page.
    let first = http()
        .get(format!("{url}/data?limit=20"))
        .send()
        .await
        .unwrap();
    let cursor = first.headers()[NEXT_CURSOR_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        post_json(&url, json!({ "n": 21 }).to_string())
            .await
            .status(),
        201
    );
    let rest: Vec<Value> = http()
        .get(format!("{url}/data?limit=20&after={cursor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rest, vec![json!({ "n": 20 }), json!({ "n": 21 })]);
}

#[tokio::test]
async fn bad_page_parameters_are_refused() {
    let url = spawn_app(&stack_uri("badpage"), &[]).await;
    for query in [
        "limit=0",
        &format!("limit={}", MAX_LIMIT + 1),
        "limit=-1",
        "limit=ten",
        "limit=",
        "after=zzz",
        "after=",
        "limit=5&after=1234",
    ] {
        let response = http()
            .get(format!("{url}/data?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string(), "{query}: {error}");
    }
    assert_answers(&format!("{url}/data?limit={MAX_LIMIT}"), 200, "[]\n").await;
}

#[tokio::test]
async fn a_large_collection_streams_complete_and_in_order() {
    const COUNT: usize = 20_000;
    let uri = stack_uri("large");
    // Filled through the driver: 20,000 POSTs would only measure the test's own client.
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let collection = client.default_database().unwrap().collection(COLLECTION);
    for batch in (0..COUNT).collect::<Vec<_>>().chunks(2000) {
        let documents = batch
            .iter()
            .map(|&n| doc! { "n": n as i64, "text": format!("document number {n}") });
        collection.insert_many(documents).await.unwrap();
    }
    let url = spawn_app(&uri, &[]).await;

    let response = http().get(format!("{url}/data")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get(CONTENT_LENGTH).is_none(),
        "the body should be streamed, not sized up front"
    );
    let mut chunks = 0;
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.expect("the stream ends cleanly"));
        chunks += 1;
    }
    assert!(chunks > 10, "{chunks} chunks for {} bytes", body.len());
    let documents: Vec<Value> = serde_json::from_slice(&body).expect("a complete JSON array");
    assert_eq!(documents.len(), COUNT);
    for (n, document) in documents.iter().enumerate() {
        assert_eq!(
            document,
            &json!({ "n": n, "text": format!("document number {n}") })
        );
    }
}

#[tokio::test]
async fn responses_are_gzipped_when_the_client_asks() {
    let url = spawn_app(&stack_uri("gzip"), &[]).await;
    for n in 0..50 {
        let body = json!({ "n": n, "text": "some repetitive text that compresses well" });
        assert_eq!(post_json(&url, body.to_string()).await.status(), 201);
    }
    let plain = http().get(format!("{url}/data")).send().await.unwrap();
    assert!(plain.headers().get(CONTENT_ENCODING).is_none());
    let plain = plain.bytes().await.unwrap();

    let response = http()
        .get(format!("{url}/data"))
        .header(ACCEPT_ENCODING, "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()[CONTENT_ENCODING], "gzip");
    let compressed = response.bytes().await.unwrap();
    assert!(
        compressed.len() * 4 < plain.len(),
        "{} bytes gzipped from {}",
        compressed.len(),
        plain.len()
    );
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, plain);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let url = spawn_app(&stack_uri("routes"), &[]).await;
    for path in ["/nope", "/data/1", "/DATA"] {
        let answer = get_typed(&format!("{url}{path}")).await;
        let expected = (
            404,
            "application/json".to_owned(),
            "{\"error\":\"not found\"}\n".to_owned(),
        );
        assert_eq!(answer, expected, "{path}");
    }
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
        reqwest::Method::PATCH,
    ] {
        let response = http()
            .request(method.clone(), format!("{url}/data"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "GET,HEAD,POST");
        assert_eq!(
            response.text().await.unwrap(),
            "{\"error\":\"method not allowed\"}\n"
        );
    }
    assert_eq!(send(http().post(format!("{url}/healthz"))).await.0, 405);
}

#[tokio::test]
async fn health_and_readiness_answer_while_the_database_is_up() {
    let url = spawn_app(&stack_uri("health"), &[]).await;
    assert_answers(&format!("{url}/healthz"), 200, "{\"status\":\"ok\"}\n").await;
    assert_answers(&format!("{url}/readyz"), 200, "{\"status\":\"ready\"}\n").await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_status() {
    let url = spawn_app(&stack_uri("metrics"), &[]).await;
    assert_eq!(post_json(&url, r#"{"a":1}"#).await.status(), 201);
    assert_eq!(post_json(&url, r#"{"b":2}"#).await.status(), 201);
    assert_eq!(post_json(&url, "[]").await.status(), 400);
    assert_eq!(get_text(&format!("{url}/data")).await.0, 200);
    assert_eq!(get_text(&format!("{url}/no/such/page")).await.0, 404);
    assert_eq!(send(http().delete(format!("{url}/data"))).await.0, 405);
    // Every other route once: each is counted under its own pattern, none as `unmatched`.
    for route in ["/", "/healthz", "/readyz", "/metrics"] {
        assert_eq!(get_text(&format!("{url}{route}")).await.0, 200, "{route}");
    }

    let (status, content_type, text) = get_typed(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        r#"http_requests_total{route="/data",method="POST",status="201"} 2"#,
        r#"http_requests_total{route="/data",method="POST",status="400"} 1"#,
        r#"http_requests_total{route="/data",method="GET",status="200"} 1"#,
        r#"http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
        r#"http_requests_total{route="/data",method="DELETE",status="405"} 1"#,
        r#"http_requests_total{route="/",method="GET",status="200"} 1"#,
        r#"http_requests_total{route="/healthz",method="GET",status="200"} 1"#,
        r#"http_requests_total{route="/readyz",method="GET",status="200"} 1"#,
        r#"http_requests_total{route="/metrics",method="GET",status="200"} 1"#,
        r#"http_request_duration_seconds_count{route="/data",method="POST"} 3"#,
        r#"http_request_duration_seconds_bucket{le="+Inf",route="/data",method="POST"} 3"#,
        "# TYPE http_request_duration_seconds histogram",
        "# EOF",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
}

/// Object keys: ordinary ones, and ones that MongoDB or its storage treat specially.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z_]{1,8}",
        1 => "\\$[a-z]{1,6}",
        1 => "[a-z]{0,3}\\.[a-z]{0,3}",
        1 => any::<String>(),
        1 => Just("_id".to_owned()),
    ]
}

fn object(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), value, 0..6)
        .prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// JSON values of every kind.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            object(inner)
        ]
    })
}

/// Request bodies: mostly JSON objects, some other JSON, some deep chains, some raw bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => object(json_value()).prop_map(|value| serde_json::to_vec(&value).unwrap()),
        2 => json_value().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        1 => (1..2 * MAX_DEPTH).prop_map(|depth| format!("{}0{}", "{\"k\":[".repeat(depth), "]}".repeat(depth)).into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn arbitrary_json_bodies_never_get_a_server_error() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let url = runtime.block_on(spawn_app(&stack_uri("fuzz"), &[]));
    let created = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    runner
        .run(&body(), |body| {
            let response = runtime.block_on(post_json(&url, body.clone()));
            let status = response.status().as_u16();
            let text = runtime.block_on(response.text()).unwrap();
            prop_assert!(
                status == 201 || (400..500).contains(&status),
                "{status} {text} for {}",
                String::from_utf8_lossy(&body)
            );
            if status == 201 {
                created.set(created.get() + 1);
                // What was stored must not keep the collection from being read.
                let (status, text) = runtime.block_on(get_text(&format!("{url}/data")));
                prop_assert_eq!(
                    status,
                    200,
                    "{} after storing {}",
                    text,
                    String::from_utf8_lossy(&body)
                );
            } else {
                let error: Value = serde_json::from_str(&text).unwrap();
                prop_assert!(error["error"].is_string(), "{text}");
            }
            Ok(())
        })
        .unwrap();
    // Every 201 was stored and nothing else was.
    let stored = runtime.block_on(stored(&url));
    assert_eq!(stored.len(), created.get());
    assert!(created.get() > 0, "no generated body was accepted");
}

#[tokio::test]
async fn requests_wait_at_most_the_request_timeout_for_a_slow_response() {
    // A TCP listener that never answers stands in for a database that hangs.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("mongodb://{}/hang", silent.local_addr().unwrap());
    let url = spawn_app(
        &uri,
        &[
            "--request-timeout-secs",
            "1",
            "--server-selection-timeout-ms",
            "30000",
        ],
    )
    .await;
    let started = std::time::Instant::now();
    let response = post_json(&url, r#"{"a":1}"#).await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.text().await.unwrap(),
        "{\"error\":\"request timed out\"}\n"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}
