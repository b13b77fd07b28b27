//! `bench-load`: the load of `make bench-webapp`, one closed loop for every side.
//!
//! `http` sends the workload's request (`GET /data` or `POST /data` of a small object) to a
//! server from as many concurrent tasks as it is given connections, one keep-alive connection
//! each, every response read to its end; `ceiling` issues the webapp's own queries (the same
//! find in `_id` order with the same batch size, each document read where the driver's batch
//! holds it, the same insert and write concern) straight through the mongodb driver, on as
//! many threads as the webapp, with no HTTP: what it reaches is the most any server over the
//! same driver and database could serve on this machine. Both time each request the same way
//! and report the same JSON line, so that every ratio compares like with like.
//!
//! `serve` is the other bound: the ceiling's insert and read behind the smallest HTTP/1.1
//! server, hyper alone on as many threads as the webapp's default, with no routing, middleware,
//! validation, metrics or log line; the read's documents written as JSON by the webapp's own
//! code, in one body. Between it and the ceiling lies what serving HTTP through hyper (and, on
//! `GET`, writing JSON) costs any server built on it; between it and the webapp, what the
//! webapp's own layers cost.
//!
//! `ceiling` talks to the benchmark runner over stdin and stdout so that the runner can read
//! this process's CPU time and memory from `/proc` exactly as it does for the HTTP servers: it
//! connects and warms up, prints `ready`, waits for a line on stdin, runs the load, prints one
//! JSON line of results, then waits for stdin to close before it exits.

use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flaskmongo_webapp::{
    BATCH_SIZE, COLLECTION, DEFAULT_DATABASE, DEFAULT_WORKER_THREADS, write_document,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawDocument, RawDocumentBuf, doc};
use mongodb::options::{Acknowledgment, ClientOptions, CollectionOptions, WriteConcern};
use mongodb::{Client, Collection};
use tokio::net::{TcpListener, TcpStream};

/// Documents per `insert_many` when seeding: large enough to be quick, well under 48 MB.
const SEED_BATCH: u32 = 10_000;
/// The body of `POST /data`, as the Flask app's README posts it.
const POST_BODY: &str = r#"{"sampleKey": "sampleValue"}"#;
/// The webapp's answer to a successful `POST /data`.
const CREATED_BODY: &[u8] = b"{\"status\":\"Data inserted\"}\n";

#[derive(Parser)]
#[command(name = "bench-load", about = "The load of the webapp benchmark.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replaces the collection with COUNT small documents in insertion order.
    Seed {
        /// MongoDB connection string; its path names the database (default `flask_db`).
        #[arg(long, env = "MONGODB_URI")]
        mongodb_uri: String,
        /// How many documents to store.
        #[arg(long)]
        count: u32,
    },
    /// The webapp's queries through the driver alone, started by the runner (see above).
    Ceiling {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Serves `POST /data` and `GET /data` with the ceiling's insert and read behind a bare
    /// HTTP/1.1 server on 127.0.0.1:PORT (see above); every other request gets an empty 200,
    /// which tells the runner it is up.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        /// The port to listen on.
        #[arg(long)]
        port: u16,
    },
    /// The workload's request to the server at ADDRESS (`127.0.0.1:PORT`) over HTTP/1.1.
    Http {
        /// The server's address.
        #[arg(long)]
        address: String,
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// The database, and the threads that query it, as the webapp's settings: the ceiling and the
/// bare server run on as many threads as the webapp, so that CPU per request compares alike.
#[derive(Args)]
struct ServerArgs {
    /// MongoDB connection string; its path names the database (default `flask_db`).
    #[arg(long, env = "MONGODB_URI")]
    mongodb_uri: String,
    /// Threads that run the queries (and serve requests), as the webapp's `WORKER_THREADS`.
    #[arg(long, env = "WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..))]
    worker_threads: u16,
}

/// What to load, how hard and how long; the results are one JSON line on stdout.
#[derive(Args)]
struct LoadArgs {
    /// Which request of the webapp to issue or mirror.
    #[arg(long, value_enum)]
    workload: Workload,
    /// Concurrent tasks (connections), each issuing one request after another.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// How long to issue requests, in seconds.
    #[arg(long)]
    duration_secs: f64,
}

impl LoadArgs {
    fn duration(&self) -> anyhow::Result<Duration> {
        Duration::try_from_secs_f64(self.duration_secs)
            .context("--duration-secs must be a positive number of seconds")
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    /// `GET /data`: every document in `_id` order, streamed in batches.
    Get,
    /// `POST /data` of a small object.
    Post,
}

/// One request's worth of work, issued again and again by one task.
trait Operation: Send + 'static {
    fn run(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Ceiling { server, .. } | Command::Serve { server, .. } = &cli.command {
        runtime.worker_threads(usize::from(server.worker_threads));
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Seed { mongodb_uri, count } => runtime.block_on(async {
            let collection = connect(&mongodb_uri).await?;
            seed(&collection, count).await
        }),
        Command::Ceiling { server, load } => {
            let duration = load.duration()?;
            let collection = runtime.block_on(connect(&server.mongodb_uri))?;
            let operations = (0..load.concurrency)
                .map(|_| DriverQuery {
                    collection: collection.clone(),
                    workload: load.workload,
                })
                .collect::<Vec<_>>();
            // One query first: connects the pool and fails early on an empty collection.
            runtime.block_on(operations[0].clone().run())?;
            handshake("ready")?;
            let outcome = runtime.block_on(run_load(operations, duration));
            handshake(&outcome.to_json().to_string())
        }
        Command::Serve { server, port } => runtime.block_on(async {
            let collection = connect(&server.mongodb_uri).await?;
            let listener = TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("listening on 127.0.0.1:{port}"))?;
            serve(listener, collection).await
        }),
        Command::Http { address, load } => {
            let duration = load.duration()?;
            let outcome = runtime.block_on(async {
                let mut operations = Vec::new();
                for _ in 0..load.concurrency {
                    operations.push(HttpRequest::connect(&address, load.workload).await?);
                }
                anyhow::Ok(run_load(operations, duration).await)
            })?;
            println!("{}", outcome.to_json());
            Ok(())
        }
    }
}

/// Prints `line` to the runner, then waits for its answer (a line, or stdin closing).
fn handshake(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    std::io::stdin()
        .lock()
        .read_line(&mut String::new())
        .context("reading the runner's go-ahead from stdin")?;
    Ok(())
}

/// The `data` collection of the URI's database, with the webapp's client settings.
async fn connect(uri: &str) -> anyhow::Result<Collection<RawDocumentBuf>> {
    let options = ClientOptions::parse(uri)
        .await
        .context("parsing MONGODB_URI")?;
    let database = options
        .default_database
        .clone()
        .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    // The webapp's write concern, unless the URI chooses another.
    let write_concern = options.write_concern.clone().unwrap_or_else(|| {
        WriteConcern::builder()
            .w(Acknowledgment::Majority)
            .journal(true)
            .build()
    });
    let client = Client::with_options(options)?;
    Ok(client.database(&database).collection_with_options(
        COLLECTION,
        CollectionOptions::builder()
            .write_concern(write_concern)
            .build(),
    ))
}

async fn seed(collection: &Collection<RawDocumentBuf>, count: u32) -> anyhow::Result<()> {
    let collection = collection.clone_with_type::<Document>();
    collection.drop().await.context("dropping the collection")?;
    let mut stored = 0;
    while stored < count {
        let batch = (stored..count.min(stored + SEED_BATCH))
            .map(|n| doc! { "_id": ObjectId::new(), "sampleKey": "sampleValue", "n": n });
        collection
            .insert_many(batch)
            .await
            .with_context(|| format!("inserting documents after the first {stored}"))?;
        stored = count.min(stored + SEED_BATCH);
    }
    Ok(())
}

/// Answers each connection of `listener` on a task of its own, as the webapp does.
async fn serve(
    listener: TcpListener,
    collection: Collection<RawDocumentBuf>,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await.context("accepting a connection")?;
        // As the webapp: a response goes out at once, not after the client's next ACK.
        stream.set_nodelay(true)?;
        let collection = collection.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request| answer(request, collection.clone()));
            // A connection's end or failure is the client's business.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `POST /data`: the ceiling's insert; `GET /data`: the ceiling's read, each document written
/// as the webapp writes it, in one body. Both answered as the webapp answers them (a failure
/// with a 500, which the load counts as an error); anything else: an empty 200.
async fn answer(
    request: Request<Incoming>,
    collection: Collection<RawDocumentBuf>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let workload = match (request.method(), request.uri().path()) {
        (&Method::POST, "/data") => Some(Workload::Post),
        (&Method::GET, "/data") => Some(Workload::Get),
        _ => None,
    };
    // The body is read whole, as any server reads it before answering.
    let read = request.into_body().collect().await;
    let answered = match (workload, read) {
        (None, Ok(_)) => Ok((StatusCode::OK, Bytes::new())),
        (Some(Workload::Post), Ok(_)) => insert(&collection)
            .await
            .map(|()| (StatusCode::CREATED, Bytes::from_static(CREATED_BODY))),
        (Some(Workload::Get), Ok(_)) => json_array(&collection)
            .await
            .map(|array| (StatusCode::OK, Bytes::from(array))),
        (_, Err(err)) => Ok((StatusCode::BAD_REQUEST, Bytes::from(err.to_string()))),
    };
    let (status, body) = answered.unwrap_or_else(|err| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from(err.to_string()),
        )
    });
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if status.is_success() && workload.is_some() {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(response)
}

/// The documents of `collection` as the webapp's `GET /data` writes them: `[`, each document
/// without its `_id`, separated by commas, `]` and a newline.
async fn json_array(collection: &Collection<RawDocumentBuf>) -> anyhow::Result<Vec<u8>> {
    let mut array = vec![b'['];
    read_all(collection, |document| {
        if array.len() > 1 {
            array.push(b',');
        }
        Ok(write_document(&mut array, document)?)
    })
    .await?;
    array.extend_from_slice(b"]\n");
    Ok(array)
}

/// The webapp's read of `GET /data`: every document in `_id` order, in batches of its size,
/// each handed to `visit` where the cursor holds it, as the webapp's stream reads it.
async fn read_all(
    collection: &Collection<RawDocumentBuf>,
    mut visit: impl FnMut(&RawDocument) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut cursor = collection
        .find(doc! {})
        .sort(doc! { "_id": 1 })
        .batch_size(BATCH_SIZE)
        .await?;
    let mut read = 0_u64;
    while cursor.advance().await? {
        visit(cursor.current())?;
        read += 1;
    }
    if read == 0 {
        bail!("the collection is empty: seed it first");
    }
    Ok(())
}

/// The webapp's insert of `POST /data`, one document per request.
async fn insert(collection: &Collection<RawDocumentBuf>) -> anyhow::Result<()> {
    collection
        .clone_with_type::<Document>()
        .insert_one(doc! { "_id": ObjectId::new(), "sampleKey": "sampleValue" })
        .await?;
    Ok(())
}

/// The webapp's query of the workload, straight through the driver.
#[derive(Clone)]
struct DriverQuery {
    /// The webapp's collection, with its write concern.
    collection: Collection<RawDocumentBuf>,
    /// Which request's query to run.
    workload: Workload,
}

impl Operation for DriverQuery {
    async fn run(&mut self) -> anyhow::Result<()> {
        match self.workload {
            Workload::Get => read_all(&self.collection, |_| Ok(())).await,
            Workload::Post => insert(&self.collection).await,
        }
    }
}

/// The workload's request over one keep-alive HTTP/1.1 connection, opened again after an
/// error so that one failure does not end the task's load.
struct HttpRequest {
    /// The server, `127.0.0.1:PORT`.
    address: String,
    /// Which request to send.
    workload: Workload,
    /// The connection of the last request, unless it failed.
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpRequest {
    /// A connection to `address`, tried once now so that a wrong address fails the run.
    async fn connect(address: &str, workload: Workload) -> anyhow::Result<Self> {
        Ok(Self {
            address: address.to_owned(),
            workload,
            sender: Some(open(address).await?),
        })
    }

    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let (method, body) = match self.workload {
            Workload::Get => (Method::GET, ""),
            Workload::Post => (Method::POST, POST_BODY),
        };
        let mut request = Request::builder()
            .method(method)
            .uri("/data")
            .header(HOST, &self.address);
        if !body.is_empty() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        Ok(request.body(Full::new(Bytes::from_static(body.as_bytes())))?)
    }

    async fn exchange(&self, sender: &mut SendRequest<Full<Bytes>>) -> anyhow::Result<()> {
        let response = sender.send_request(self.request()?).await?;
        let status = response.status();
        let mut body = response.into_body();
        // Read to the end, keeping nothing: the whole response counts, as for a client.
        while let Some(frame) = body.frame().await {
            frame?;
        }
        if !status.is_success() {
            bail!("{status}");
        }
        Ok(())
    }
}

impl Operation for HttpRequest {
    async fn run(&mut self) -> anyhow::Result<()> {
        // The connection is gone when the server closed it after its last response (Flask's
        // server and gunicorn's workers close every one) or after an error: a new one, as any
        // client would open, in the time of this request.
        let mut sender = match still_open(self.sender.take()).await {
            Some(sender) => sender,
            None => open(&self.address).await?,
        };
        let result = self.exchange(&mut sender).await;
        if result.is_ok() {
            self.sender = Some(sender);
        }
        result
    }
}

/// What a load run measured.
struct Outcome {
    /// Each successful request's time, from its start to the end of its response.
    latencies: Vec<Duration>,
    /// Requests that failed.
    errors: u64,
    /// From the start of the load until every task had finished its last request.
    elapsed: Duration,
}

impl Outcome {
    /// The line the runner reads: requests, errors, seconds, p50 and p99 in milliseconds.
    fn to_json(&self) -> serde_json::Value {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        serde_json::json!({
            "requests": sorted.len(),
            "errors": self.errors,
            "seconds": self.elapsed.as_secs_f64(),
            "p50_ms": percentile_ms(&sorted, 50.0),
            "p99_ms": percentile_ms(&sorted, 99.0),
        })
    }
}

/// The nearest-rank percentile of sorted latencies, in milliseconds (none when empty).
fn percentile_ms(sorted: &[Duration], percent: f64) -> Option<f64> {
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len().max(1)) - 1;
    sorted.get(index).map(|d| d.as_secs_f64() * 1000.0)
}

/// A new HTTP/1.1 connection to `address`.
async fn open(address: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    // As a browser or curl does: a request goes out at once, not after the last ACK.
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    // It ends when the connection closes or its sender is dropped.
    tokio::spawn(connection);
    Ok(sender)
}

/// The connection of the last request, if the server kept it open.
async fn still_open(sender: Option<SendRequest<Full<Bytes>>>) -> Option<SendRequest<Full<Bytes>>> {
    let mut sender = sender?;
    sender.ready().await.ok()?;
    Some(sender)
}

/// Each operation in a task of its own, one request after another until `duration` is over.
async fn run_load<O: Operation>(operations: Vec<O>, duration: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = operations
        .into_iter()
        .map(|mut operation| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    match operation.run().await {
                        Ok(()) => latencies.push(begun.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        // A task only ends by its loop finishing; a panic would be a bug in this program.
        let (latencies, failed) = task.await.expect("load task panicked");
        all.extend(latencies);
        errors += failed;
    }
    Outcome {
        latencies: all,
        errors,
        elapsed: started.elapsed(),
    }
}
