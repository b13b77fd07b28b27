//! Command-line flags, each of which can also come from the environment.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// How the service is configured: every flag has an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "webapp",
    version,
    about = "Serves the /data API of a FlaskMongoApp: JSON documents stored in MongoDB.",
    long_about = "Serves the /data API of a FlaskMongoApp: JSON documents stored in MongoDB.\n\n\
        Routes: GET / (welcome line), GET /data (all documents as a streamed JSON array; \
        ?limit=N&after=CURSOR pages through them), POST /data (stores one JSON object), \
        GET /healthz (liveness), GET /readyz (pings MongoDB), GET /metrics (Prometheus).\n\n\
        The database is the one named in the path of MONGODB_URI, else `flask_db`; the \
        collection is `data`. After SIGTERM or SIGINT the service drains: for the drain \
        period it goes on answering, each response with `Connection: close` so that clients \
        reconnect elsewhere while load balancers stop routing here; then it stops accepting \
        connections and lets in-flight requests finish within the shutdown grace period."
)]
pub struct Config {
    /// MongoDB connection string; its path names the database (default `flask_db`).
    // Its value may hold a password: `--help` must not show it.
    #[arg(
        long,
        env = "MONGODB_URI",
        hide_env_values = true,
        default_value = "mongodb://localhost:27017/"
    )]
    pub mongodb_uri: String,

    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDRESS", default_value = "0.0.0.0")]
    pub listen_address: IpAddr,

    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "PORT", default_value_t = 5000)]
    pub port: u16,

    /// Log format: one line per event, plain text or JSON.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Most connections to MongoDB that the shared client keeps open.
    #[arg(long, env = "MONGODB_MAX_POOL_SIZE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pool_size: u32,

    /// How long a request waits for a reachable MongoDB before it answers 503, in milliseconds.
    #[arg(long, env = "MONGODB_SERVER_SELECTION_TIMEOUT_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    pub server_selection_timeout_ms: u64,

    /// Largest accepted request body, in bytes; a larger one gets 413.
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Most `/data` requests served at once (a streamed response holds its turn until its
    /// last byte); more wait up to a second for a turn, then get 503. Bodies over 16 KiB are
    /// also served one at a time. Together these bound memory under load.
    #[arg(long, env = "MAX_CONCURRENT_REQUESTS", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_requests: u16,

    /// Longest time until a response starts, in seconds; then 503.
    /// A streamed body may take longer to finish.
    #[arg(long, env = "REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: u64,

    /// After SIGTERM or SIGINT, how long the service goes on accepting connections while it
    /// tells each client to close its own, in seconds. Kubernetes takes a moment to remove a
    /// stopping pod from its Service; connections it sends meanwhile are still answered.
    #[arg(long, env = "DRAIN_SECS", default_value_t = 5)]
    pub drain_secs: u64,

    /// After the drain, how long in-flight requests may take to finish, in seconds.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Threads that serve requests. One by default: a web pod has half a core unless its
    /// spec says otherwise, and a second thread only adds hand-offs between threads (a fifth
    /// to a quarter more CPU per request in alternating runs, for no more throughput).
    #[arg(long, env = "WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: u16,
}

/// Threads that serve requests unless `WORKER_THREADS` says otherwise.
pub const DEFAULT_WORKER_THREADS: u16 = 1;

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object a line.
    Json,
}

impl Config {
    /// The server-selection timeout as a duration.
    pub fn server_selection_timeout(&self) -> Duration {
        Duration::from_millis(self.server_selection_timeout_ms)
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// How the service stops after SIGTERM or SIGINT.
    pub fn shutdown(&self) -> Shutdown {
        Shutdown {
            drain: Duration::from_secs(self.drain_secs),
            grace: Duration::from_secs(self.shutdown_grace_secs),
        }
    }
}

/// How the service stops once asked to.
#[derive(Debug, Clone, Copy)]
pub struct Shutdown {
    /// How long it goes on accepting connections, answering each with `Connection: close`.
    pub drain: Duration,
    /// How long in-flight requests may then take to finish.
    pub grace: Duration,
}
