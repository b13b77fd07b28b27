//! Memory under load: the limits on requests served at once, and the `webapp` binary under
//! hostile load: many clients posting the bodies that cost the most to convert and store,
//! beside slow readers of a large collection. Its peak RSS must stay well below the web
//! pod's 128 MiB limit, and it must keep answering.
//!
//! The webapp reaches FerretDB through a proxy that answers the hostile inserts itself, after
//! a delay, as a slow database would: FerretDB would take seconds to store each one, and then
//! to read past it on every later GET.

pub mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{FerretDb, Webapp, get_text, http, spawn_app};
use futures::future::join_all;
use mongodb::bson::{doc, rawdoc};
use reqwest::header::CONTENT_TYPE;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Mutex;

/// The bound on the webapp's peak RSS (VmHWM): 64 MiB, half the pod's memory limit, for the
/// release build that the pod runs (9 MiB at rest), plus 8 MiB for the debug build under test,
/// whose code alone holds some 12 MiB more.
const PEAK_RSS_BOUND: u64 = 72 * 1024 * 1024;
/// Clients posting each of the hostile bodies, at once, each `ROUNDS` times.
const CLIENTS_PER_BODY: usize = 8;
const ROUNDS: usize = 3;
const SLOW_READERS: usize = 4;
/// Documents of the collection the slow readers read: 8 MB, more than the socket buffers
/// hold, so that their responses stall in the server.
const DOCUMENTS: usize = 2000;
const DOCUMENT_TEXT_BYTES: usize = 4000;

/// Messages to the database larger than this are the hostile inserts: the proxy answers them.
const LARGE_MESSAGE_BYTES: usize = 64 * 1024;
/// How long the proxy takes to acknowledge a hostile insert.
const SLOW_WRITE: Duration = Duration::from_millis(300);
const OP_MSG: i32 = 2013;

/// One whole message of the MongoDB wire protocol.
async fn read_message(from: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Vec<u8>> {
    let length = from.read_i32_le().await?;
    let mut message = length.to_le_bytes().to_vec();
    message.resize(usize::try_from(length).expect("a message length"), 0);
    from.read_exact(&mut message[4..]).await?;
    Ok(message)
}

/// `{n: 1, ok: 1}` in reply to `request`: one document inserted.
fn acknowledgement(request: &[u8]) -> Vec<u8> {
    let body = rawdoc! { "n": 1, "ok": 1.0 }.into_bytes();
    let length = i32::try_from(16 + 4 + 1 + body.len()).expect("a small reply");
    let mut reply = Vec::new();
    reply.extend(length.to_le_bytes());
    reply.extend(0_i32.to_le_bytes());
    // responseTo: the request's id.
    reply.extend(&request[4..8]);
    reply.extend(OP_MSG.to_le_bytes());
    // No flags, then the body section.
    reply.extend(0_u32.to_le_bytes());
    reply.push(0);
    reply.extend(body);
    reply
}

/// Forwards whole messages from FerretDB, so that an acknowledgement never lands inside one.
async fn forward_replies(
    mut server: impl AsyncRead + Unpin,
    client: Arc<Mutex<OwnedWriteHalf>>,
) -> std::io::Result<()> {
    loop {
        let message = read_message(&mut server).await?;
        client.lock().await.write_all(&message).await?;
    }
}

/// Serves one connection of the webapp to FerretDB until either side closes it.
async fn proxy_connection(
    client: tokio::net::TcpStream,
    upstream: SocketAddr,
) -> std::io::Result<()> {
    let server = tokio::net::TcpStream::connect(upstream).await?;
    let (mut client_read, client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let client_write = Arc::new(Mutex::new(client_write));
    let replies = tokio::spawn(forward_replies(server_read, Arc::clone(&client_write)));
    let result = async {
        loop {
            let message = read_message(&mut client_read).await?;
            if message.len() > LARGE_MESSAGE_BYTES {
                tokio::time::sleep(SLOW_WRITE).await;
                let reply = acknowledgement(&message);
                client_write.lock().await.write_all(&reply).await?;
            } else {
                server_write.write_all(&message).await?;
            }
        }
    }
    .await;
    replies.abort();
    result
}

/// A proxy to `upstream` on a free port of 127.0.0.1; returns its address.
async fn start_proxy(upstream: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(proxy_connection(client, upstream));
        }
    });
    address
}

/// `{"<key>":[<items>]}`, with as many items as fit in `size` bytes.
fn array_body(key: &str, item: &str, size: usize) -> String {
    let overhead = key.len() + "{\"\":[]}".len();
    let count = (size - overhead + 1) / (item.len() + 1);
    format!("{{\"{key}\":[{}]}}", vec![item; count].join(","))
}

/// The costliest bodies: an array of zeros as large as the body limit allows (each 2-byte item
/// takes 12 bytes of BSON), one as large as a body can be without waiting for the large-body
/// turn, and small objects nested as deep as allowed.
fn hostile_bodies() -> Vec<String> {
    let nested = format!("{}0{}", "{\"a\":".repeat(30), "}".repeat(30));
    vec![
        array_body("z", "0", 1024 * 1024),
        array_body("z", "0", 16 * 1024),
        array_body("n", &nested, 1024 * 1024),
    ]
}

/// Asks for the whole collection and reads 16 bytes every 100 ms until `stop`; returns how
/// many bytes it read.
fn slow_reader(address: SocketAddr, stop: Arc<AtomicBool>) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        write!(stream, "GET /data HTTP/1.1\r\nHost: {address}\r\n\r\n").expect("send");
        let mut received = 0;
        let mut buffer = [0; 16];
        while !stop.load(Ordering::Relaxed) {
            let read = stream.read(&mut buffer).expect("the stream goes on");
            assert!(read > 0, "the response ended early");
            received += read;
            thread::sleep(Duration::from_millis(100));
        }
        received
    })
}

/// POSTs `body`; returns the status, or 0 for a connection closed while the body was being
/// sent (which is how a client still sending a refused large body may learn of it).
async fn post(client: &reqwest::Client, url: &str, body: String) -> u16 {
    let request = client
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body);
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) if !err.is_timeout() => return 0,
        Err(err) => panic!("no answer in time: {err}"),
    };
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    assert!(
        status == 201 || (status == 503 && text == "{\"error\":\"server busy, retry later\"}\n"),
        "{status} {text}"
    );
    status
}

/// A client posting `body` once per round; returns the statuses.
async fn hostile_client(url: String, body: String) -> Vec<u16> {
    let client = http();
    let mut statuses = Vec::new();
    for _ in 0..ROUNDS {
        statuses.push(post(&client, &url, body.clone()).await);
    }
    statuses
}

/// `/healthz`, then a small POST and a GET of one document, as an ordinary client would.
async fn ordinary_requests(app: &Webapp, n: usize) {
    let client = http();
    let health = client
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("/healthz answers");
    assert_eq!(health.status(), 200);
    let body = format!("{{\"ordinary\":{n}}}");
    assert_eq!(post(&client, &app.url("/data"), body).await, 201);
    let get = client
        .get(app.url("/data?limit=1"))
        .send()
        .await
        .expect("GET answers");
    assert_eq!(get.status(), 200);
    assert!(get.text().await.expect("a body").starts_with("[{"));
}

fn peak_rss(app: &Webapp) -> u64 {
    testenv::process::usage(app.pid())
        .expect("/proc of the webapp")
        .peak_rss_bytes
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peak_memory_stays_bounded_under_hostile_load() {
    let started = Instant::now();
    let mut ferretdb = FerretDb::on_free_port();
    ferretdb.start();
    let client = mongodb::Client::with_uri_str(ferretdb.uri("memory"))
        .await
        .unwrap();
    let collection = client
        .default_database()
        .unwrap()
        .collection(flaskmongo_webapp::COLLECTION);
    let text = "x".repeat(DOCUMENT_TEXT_BYTES);
    for batch in (0..DOCUMENTS).collect::<Vec<_>>().chunks(500) {
        let documents = batch.iter().map(|&n| doc! { "n": n as i64, "text": &text });
        collection.insert_many(documents).await.unwrap();
    }
    let proxy = start_proxy(ferretdb.address()).await;
    // The defaults: what the web pod runs.
    let app = Webapp::start(&format!("mongodb://{proxy}/memory"), &[]);
    let idle = peak_rss(&app);

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..SLOW_READERS)
        .map(|_| slow_reader(app.address, Arc::clone(&stop)))
        .collect();
    let url = app.url("/data");
    for body in hostile_bodies() {
        assert_eq!(
            post(&http(), &url, body).await,
            201,
            "alone, it is accepted"
        );
    }
    let hostile = tokio::spawn(join_all(hostile_bodies().into_iter().flat_map(|body| {
        let url = url.clone();
        (0..CLIENTS_PER_BODY).map(move |_| hostile_client(url.clone(), body.clone()))
    })));
    let mut rounds = 0;
    while !hostile.is_finished() {
        ordinary_requests(&app, rounds).await;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let statuses: Vec<u16> = hostile.await.unwrap().concat();
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("a slow reader") > 0);
    }
    ordinary_requests(&app, rounds).await;

    let peak = peak_rss(&app);
    let accepted = statuses.iter().filter(|&&status| status == 201).count();
    eprintln!(
        "peak RSS {:.1} MiB (idle {:.1} MiB); hostile POSTs: {accepted} accepted, {} refused; \
         {rounds} rounds of ordinary requests during the load; {:.1} s",
        mib(peak),
        mib(idle),
        statuses.len() - accepted,
        started.elapsed().as_secs_f64()
    );
    assert!(rounds > 0, "the load ended before any ordinary request");
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {:.1} MiB, over the bound of {:.0} MiB",
        mib(peak),
        mib(PEAK_RSS_BOUND)
    );
    app.stop();
}

/// Sends the head of a POST of a `length`-byte body and half of the body; returns the
/// connection and the rest. The request holds its turn while it waits for the rest.
fn stalled_post(url: &str, length: usize) -> (TcpStream, Vec<u8>) {
    let address = url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let body = format!("{{\"p\":\"{}\"}}", "x".repeat(length - 8)).into_bytes();
    write!(
        stream,
        "POST /data HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    stream.write_all(&body[..length / 2]).unwrap();
    // Lets the server take the turn and start waiting for the rest.
    thread::sleep(Duration::from_millis(300));
    (stream, body[length / 2..].to_vec())
}

/// Sends the rest of a stalled POST; returns its status line.
fn finish(stalled: (TcpStream, Vec<u8>)) -> String {
    let (mut stream, rest) = stalled;
    stream.write_all(&rest).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

/// POSTs a `length`-byte object; returns the status, the `Retry-After` header, the body and
/// how long the answer took.
async fn timed_post(url: &str, length: usize) -> (u16, Option<String>, String, Duration) {
    let started = Instant::now();
    let response = http()
        .post(format!("{url}/data"))
        .header(CONTENT_TYPE, "application/json")
        .body(format!("{{\"p\":\"{}\"}}", "x".repeat(length - 8)))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let text = response.text().await.unwrap();
    (status, retry_after, text, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_beyond_the_limits_wait_a_second_then_get_503() {
    let mut ferretdb = FerretDb::on_free_port();
    ferretdb.start();
    let url = spawn_app(&ferretdb.uri("limits"), &["--max-concurrent-requests", "2"]).await;
    let busy = "{\"error\":\"server busy, retry later\"}\n";

    // One small and one large request hold both turns, the large one also the large-body turn.
    let small = stalled_post(&url, 100);
    let large = stalled_post(&url, 20_000);
    let (status, retry_after, text, took) = timed_post(&url, 100).await;
    assert_eq!(
        (status, retry_after.as_deref(), text.as_str()),
        (503, Some("1"), busy)
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert_eq!(get_text(&format!("{url}/healthz")).await.0, 200);

    // A freed turn serves a small request at once, but a large one waits for the large body.
    assert_eq!(finish(small), "HTTP/1.1 201 Created");
    assert_eq!(timed_post(&url, 100).await.0, 201);
    let (status, _, text, _) = timed_post(&url, 20_000).await;
    assert_eq!((status, text.as_str()), (503, busy));
    assert_eq!(finish(large), "HTTP/1.1 201 Created");
    assert_eq!(timed_post(&url, 20_000).await.0, 201);
}
