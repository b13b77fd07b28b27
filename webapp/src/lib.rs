//! The `/data` web service: JSON documents stored in MongoDB, served over HTTP with the API
//! of the Flask app it replaces, plus health, readiness, metrics and graceful shutdown.

mod config;
mod error;
mod limit;
mod log_output;
mod metrics;
mod render;
mod routes;
mod store;
mod validate;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;

pub use config::{Config, DEFAULT_WORKER_THREADS, LogFormat, Shutdown};
pub use error::Error;
pub use log_output::BatchedStdout;
pub use render::write_document;
pub use routes::{MAX_LIMIT, NEXT_CURSOR_HEADER};
pub use store::{BATCH_SIZE, COLLECTION, DEFAULT_DATABASE};
pub use validate::MAX_DEPTH;

use limit::Limits;
use metrics::Metrics;
use store::Store;

/// How long closing the connection pool may take once the server has stopped.
const POOL_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The state every request shares: one MongoDB client, the metrics, the limits and whether
/// the service drains. Cloning is cheap: the client, the metrics and the flag are shared.
#[derive(Clone, Debug)]
pub struct App {
    store: Store,
    metrics: Arc<Metrics>,
    limits: Limits,
    body_limit: usize,
    request_timeout: Duration,
    ping_timeout: Duration,
    draining: Arc<AtomicBool>,
    /// Whether MongoDB has answered since the start: from then on the service stays ready.
    reached_database: Arc<AtomicBool>,
}

impl App {
    /// Builds the service for `config`. Fails only on a malformed `MONGODB_URI`: MongoDB
    /// itself need not be up.
    pub async fn new(config: &Config) -> mongodb::error::Result<Self> {
        Ok(Self {
            store: Store::new(config).await?,
            metrics: Arc::default(),
            limits: Limits::new(usize::from(config.max_concurrent_requests))?,
            body_limit: config.body_limit_bytes,
            request_timeout: config.request_timeout(),
            ping_timeout: config.server_selection_timeout(),
            draining: Arc::default(),
            reached_database: Arc::default(),
        })
    }

    /// Whether the service has been asked to stop and tells clients to close connections.
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The HTTP routes of the service.
    pub fn router(&self) -> Router {
        routes::router(self.clone())
    }

    /// Counts a failed database operation and turns it into the request's error.
    fn database_error(&self, operation: &'static str, err: mongodb::error::Error) -> Error {
        self.metrics.database_error(operation);
        Error::Database(err)
    }
}

/// Serves `app` on `listener` until `stop` completes, then drains: goes on serving for
/// `shutdown.drain`, each response with `Connection: close`. Then it stops accepting
/// connections, gives in-flight requests up to `shutdown.grace` to finish and closes the
/// MongoDB pool.
pub async fn serve(
    listener: TcpListener,
    app: App,
    stop: impl Future<Output = ()> + Send + 'static,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let (stopping, stopped) = tokio::sync::oneshot::channel();
    // Each write leaves at once: the last small write of a streamed body (its end) would
    // otherwise wait for the client's delayed acknowledgement of the one before, about
    // 40 ms on Linux, on every keep-alive request.
    let listener = listener.tap_io(|connection| {
        if let Err(err) = connection.set_nodelay(true) {
            tracing::warn!(error = %err, "cannot set TCP_NODELAY on a connection");
        }
    });
    let draining = Arc::clone(&app.draining);
    let server = axum::serve(listener, app.router()).with_graceful_shutdown(async move {
        stop.await;
        draining.store(true, Ordering::Relaxed);
        tracing::info!(
            drain_secs = shutdown.drain.as_secs_f64(),
            "draining: answering with Connection: close"
        );
        tokio::time::sleep(shutdown.drain).await;
        let _ = stopping.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => result?,
        _ = stopped => {
            tracing::info!(grace_secs = shutdown.grace.as_secs_f64(), "shutting down: finishing in-flight requests");
            match tokio::time::timeout(shutdown.grace, &mut server).await {
                Ok(result) => result?,
                Err(_elapsed) => tracing::warn!("in-flight requests outlasted the shutdown grace period"),
            }
        }
    }
    let store = app.store.clone();
    drop(app);
    if tokio::time::timeout(POOL_CLOSE_TIMEOUT, store.close())
        .await
        .is_err()
    {
        tracing::warn!("closing the MongoDB pool timed out");
    }
    tracing::info!("stopped");
    Ok(())
}
