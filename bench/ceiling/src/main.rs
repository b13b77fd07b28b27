//! `bench-ceiling`: the driver-only ceiling of `make bench-webapp`.
//!
//! It issues the webapp's own queries (the `GET /data` find in `_id` order, the `POST /data`
//! insert with the same write concern) straight through the mongodb driver, with no HTTP, from
//! as many concurrent tasks as the load generator has connections. What it reaches is the most
//! any server over the same driver and database could serve on this machine.
//!
//! `load` talks to the benchmark runner over stdin and stdout so that the runner can read this
//! process's CPU time and memory from `/proc` exactly as it does for the HTTP servers: it
//! connects and warms up, prints `ready`, waits for a line on stdin, runs the load, prints one
//! JSON line of results, then waits for stdin to close before it exits.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawDocumentBuf, doc};
use mongodb::options::{Acknowledgment, ClientOptions, CollectionOptions, WriteConcern};
use mongodb::{Client, Collection};

/// Database used when the URI names none, as the webapp does.
const DEFAULT_DATABASE: &str = "flask_db";
/// The webapp's collection.
const COLLECTION: &str = "data";
/// The webapp's batch size for streaming reads.
const BATCH_SIZE: u32 = 1000;
/// Documents per `insert_many` when seeding: large enough to be quick, well under 48 MB.
const SEED_BATCH: u32 = 10_000;

#[derive(Parser)]
#[command(
    name = "bench-ceiling",
    about = "Driver-only ceiling of the webapp benchmark."
)]
struct Cli {
    /// MongoDB connection string; its path names the database (default `flask_db`).
    #[arg(long, env = "MONGODB_URI")]
    mongodb_uri: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replaces the collection with COUNT small documents in insertion order.
    Seed {
        /// How many documents to store.
        #[arg(long)]
        count: u32,
    },
    /// Runs one workload for a fixed time, then prints requests, errors and latencies as JSON.
    Load {
        /// Which request of the webapp to mirror.
        #[arg(long, value_enum)]
        workload: Workload,
        /// Concurrent tasks, each issuing one operation after another.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        concurrency: u16,
        /// How long to issue operations, in seconds.
        #[arg(long)]
        duration_secs: f64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Workload {
    /// `GET /data`: every document in `_id` order, streamed in batches.
    Get,
    /// `POST /data` of a small object.
    Post,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let collection = runtime.block_on(connect(&cli.mongodb_uri))?;
    match cli.command {
        Command::Seed { count } => runtime.block_on(seed(&collection, count)),
        Command::Load {
            workload,
            concurrency,
            duration_secs,
        } => {
            let duration = Duration::try_from_secs_f64(duration_secs)
                .context("--duration-secs must be a positive number of seconds")?;
            // One operation first: connects the pool and fails early on an empty collection.
            runtime.block_on(operation(&collection, workload))?;
            handshake("ready")?;
            let result = runtime.block_on(load(&collection, workload, concurrency, duration));
            handshake(&result.to_json().to_string())?;
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

/// One request's worth of database work.
async fn operation(
    collection: &Collection<RawDocumentBuf>,
    workload: Workload,
) -> anyhow::Result<()> {
    match workload {
        Workload::Get => {
            let cursor = collection
                .find(doc! {})
                .sort(doc! { "_id": 1 })
                .batch_size(BATCH_SIZE)
                .await?;
            let read = cursor.try_fold(0, |n, _| async move { Ok(n + 1) }).await?;
            if read == 0 {
                bail!("the collection is empty: seed it first");
            }
            Ok(())
        }
        Workload::Post => {
            collection
                .clone_with_type::<Document>()
                .insert_one(doc! { "_id": ObjectId::new(), "sampleKey": "sampleValue" })
                .await?;
            Ok(())
        }
    }
}

/// What a load run measured.
struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

impl Outcome {
    /// The same fields the load generator's report has.
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

async fn load(
    collection: &Collection<RawDocumentBuf>,
    workload: Workload,
    concurrency: u16,
    duration: Duration,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let collection = collection.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                while Instant::now() < deadline {
                    let begun = Instant::now();
                    match operation(&collection, workload).await {
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
