//! The HTTP routes, the per-request middleware (timeout, metrics, log line) and the
//! streamed JSON array of `GET /data`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::header::{CONNECTION, CONTENT_TYPE, LINK};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use mongodb::Cursor;
use mongodb::bson::RawDocumentBuf;
use mongodb::bson::oid::ObjectId;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::compression::CompressionLayer;

use crate::error::Error;
use crate::limit::Turn;
use crate::{App, metrics, render, validate};

/// Largest page a client may ask for with `?limit=`.
pub const MAX_LIMIT: u32 = 10_000;
/// Header that carries the cursor of the next page.
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";
const WELCOME: &str = "/";
const DATA: &str = "/data";
const HEALTHZ: &str = "/healthz";
const READYZ: &str = "/readyz";
const METRICS: &str = "/metrics";
/// Every route's pattern: the metrics' route label is one of these, or `unmatched`.
const ROUTES: [&str; 5] = [WELCOME, DATA, HEALTHZ, READYZ, METRICS];
/// The body of every `201` of `POST /data`, as `json_response` writes it.
const INSERTED: &[u8] = b"{\"status\":\"Data inserted\"}\n";
/// Size at which a chunk of the streamed array is handed to the connection: large enough
/// to keep writes few, small enough to keep memory flat.
const CHUNK_BYTES: usize = 32 * 1024;

/// The service's routes, with their middleware, for `app`. Only the answers that can be
/// large are compressed: on the others the layer would only cost time.
pub fn router(app: App) -> Router {
    Router::new()
        .route(WELCOME, get(welcome))
        .route(DATA, get(list).layer(CompressionLayer::new()).post(insert))
        .route(HEALTHZ, get(healthz))
        .route(READYZ, get(readyz))
        .route(METRICS, get(metrics).layer(CompressionLayer::new()))
        .fallback(|| async { Error::NotFound })
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(app.body_limit))
        .layer(from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// A JSON response as the old app's `jsonify` wrote it: compact, with a final newline.
pub fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    json_text(status, body)
}

/// A response of JSON text written already.
fn json_text(status: StatusCode, body: impl Into<Body>) -> Response {
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body.into(),
    )
        .into_response()
}

/// Bounds the time to the response head, asks the client to close the connection while the
/// service drains, then counts and logs the request (never its body).
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(&request);
    // A clone shares the request's bytes: no copy of the path on every request.
    let uri = request.uri().clone();
    let mut response = tokio::time::timeout(app.request_timeout, next.run(request))
        .await
        .unwrap_or_else(|_elapsed| Error::Timeout.into_response());
    if app.is_draining() {
        // The client's next request then opens a new connection, which the Service sends
        // to a replica that is not stopping. (HTTP/2 drops the header: its clients move at
        // the GOAWAY that ends the drain.)
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    let latency = started.elapsed();
    let status = response.status().as_u16();
    app.metrics.observe_request(route, method, status, latency);
    tracing::info!(
        method,
        path = uri.path(),
        status,
        latency_ms = latency.as_micros() as f64 / 1000.0,
        "request"
    );
    response
}

/// The matched route's pattern, or `unmatched`: static, so that counting a request
/// allocates nothing.
fn route_label(request: &Request) -> &'static str {
    request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|matched| ROUTES.into_iter().find(|route| *route == matched.as_str()))
        .unwrap_or("unmatched")
}

/// A fixed label per method, so that made-up methods cannot grow the metrics.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

async fn welcome() -> Response {
    // Formatted like Python's `str(datetime.now())`, which the old app printed.
    let now = jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S%.6f");
    let text = format!("Welcome to the Flask app! The current time is: {now}");
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Ready once MongoDB has answered since the start. An outage of MongoDB later leaves the
/// service ready: every replica shares the one database, so taking them all out of the
/// Service would only turn the quick 503s of `/data` into refused connections, `GET /`
/// included, and keep them refused until each replica's next probe after MongoDB is back.
async fn readyz(State(app): State<App>) -> Response {
    let ready = || json_response(StatusCode::OK, &json!({ "status": "ready" }));
    if app.reached_database.load(Ordering::Relaxed) {
        return ready();
    }
    let reason = match tokio::time::timeout(app.ping_timeout, app.store.ping()).await {
        Ok(Ok(())) => {
            app.reached_database.store(true, Ordering::Relaxed);
            return ready();
        }
        Ok(Err(err)) => err.to_string(),
        // The driver's own server-selection timeout races this one; both name the servers.
        Err(_elapsed) => format!(
            "no answer from {} within {:?}",
            app.store.hosts(),
            app.ping_timeout
        ),
    };
    app.metrics.database_error("ping");
    // The driver's text names hosts and the topology: it is for the log, not for anyone who
    // can reach the port.
    tracing::warn!(error = %reason, "not ready: the database does not answer");
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({ "error": "database unreachable" }),
    )
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(metrics::CONTENT_TYPE),
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn insert(
    State(app): State<App>,
    turn: Turn,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    if !validate::is_json_content_type(&headers) {
        return Err(Error::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge {
            limit: app.body_limit,
        },
        _ => Error::BadRequest(rejection.body_text()),
    })?;
    turn.run(async move {
        // The id is made here rather than by the driver so that it comes first in the stored
        // document. Ids increase within a process (and by the second across processes),
        // which gives insertion order.
        let document = validate::document_from_body(&body, ObjectId::new())?;
        drop(body);
        app.store
            .insert(document)
            .await
            .map_err(|err| app.database_error("insert", err))
    })
    .await?;
    Ok(json_text(StatusCode::CREATED, Bytes::from_static(INSERTED)))
}

/// `?limit=N&after=CURSOR`, both optional. Kept as text to answer bad values in JSON.
#[derive(Deserialize)]
struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    State(app): State<App>,
    turn: Turn,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(query) = query.map_err(|rejection| Error::BadRequest(rejection.body_text()))?;
    let limit = query.limit.as_deref().map(parse_limit).transpose()?;
    let after = query.after.as_deref().map(parse_cursor).transpose()?;
    let page = app
        .store
        .page(after, limit)
        .await
        .map_err(|err| app.database_error("find", err))?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let (Some(next), Some(limit)) = (page.next, limit) {
        let cursor = next.to_hex();
        let link = format!("</data?limit={limit}&after={cursor}>; rel=\"next\"");
        // Both are ASCII made here, so they are valid header values.
        headers.insert(
            LINK,
            HeaderValue::try_from(link).expect("ASCII header value"),
        );
        headers.insert(
            NEXT_CURSOR_HEADER,
            HeaderValue::try_from(cursor).expect("ASCII header value"),
        );
    }
    Ok((
        headers,
        Body::from_stream(json_array(page.cursor, app, turn)),
    )
        .into_response())
}

fn parse_limit(text: &str) -> Result<u32, Error> {
    text.parse()
        .ok()
        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
        .ok_or_else(|| Error::BadRequest(format!("limit must be an integer from 1 to {MAX_LIMIT}")))
}

fn parse_cursor(text: &str) -> Result<ObjectId, Error> {
    ObjectId::parse_str(text).map_err(|_| {
        Error::BadRequest("after must be a cursor given by a previous page".to_owned())
    })
}

/// Where the streamed array is: the cursor still to read, and what was written so far.
struct ArrayState {
    cursor: Cursor<RawDocumentBuf>,
    app: App,
    _turn: Turn,
    opened: bool,
    written_any: bool,
}

/// `[`, the documents separated by commas, `]`: chunk by chunk, so memory stays bounded
/// whatever the size of the collection. The connection asks for the next chunk only once it
/// has written the last ones, so a slow reader holds at most a batch and a few chunks.
/// A database error ends the body early, which the client sees as a truncated response.
fn json_array(
    cursor: Cursor<RawDocumentBuf>,
    app: App,
    turn: Turn,
) -> impl Stream<Item = Result<Bytes, Error>> {
    let state = ArrayState {
        cursor,
        app,
        _turn: turn,
        opened: false,
        written_any: false,
    };
    futures::stream::try_unfold(Some(state), |state| async move {
        let Some(mut state) = state else {
            return Ok(None);
        };
        let mut chunk = Vec::with_capacity(CHUNK_BYTES * 2);
        if !state.opened {
            chunk.push(b'[');
            state.opened = true;
        }
        while chunk.len() < CHUNK_BYTES {
            let more = state.cursor.advance().await.map_err(|err| {
                tracing::warn!(error = %err, "reading /data failed while streaming");
                state.app.database_error("find", err)
            })?;
            if !more {
                chunk.extend_from_slice(b"]\n");
                return Ok(Some((Bytes::from(chunk), None)));
            }
            if state.written_any {
                chunk.push(b',');
            }
            render::write_document(&mut chunk, state.cursor.current())?;
            state.written_any = true;
        }
        Ok(Some((Bytes::from(chunk), Some(state))))
    })
}
