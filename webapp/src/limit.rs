//! Admission to `/data`: a bounded number of requests at once, and one large body at a time
//! on a thread of its own, so that memory stays bounded whatever the load.

use std::future::Future;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::request::Parts;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::App;
use crate::error::Error;

/// Longest wait for a turn before a 503: long enough to absorb a burst, short enough that an
/// overloaded service says so at once rather than piling up work it answers too late.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Bodies above this size take the large-body turn: each body byte can take about 18 bytes
/// while it is converted and written (its BSON, then the driver's two copies and its wire
/// message).
const LARGE_BODY_BYTES: u64 = 16 * 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The turns of `/data`. Cloning shares them.
#[derive(Clone, Debug)]
pub struct Limits {
    requests: Arc<Semaphore>,
    large_body: Arc<Semaphore>,
    /// The thread that does the work of large bodies. Parsing one takes tens of milliseconds
    /// of CPU, which would stall a worker thread, and its tens of MB of allocations stay in
    /// that thread's allocator arena rather than growing each worker's.
    large_body_thread: mpsc::Sender<Job>,
}

impl Limits {
    /// At most `requests` requests at once, and one large body.
    pub fn new(requests: usize) -> std::io::Result<Self> {
        let (sender, jobs) = mpsc::channel::<Job>();
        // It ends when the last `Limits` is dropped.
        std::thread::Builder::new()
            .name("large-bodies".to_owned())
            .spawn(move || jobs.into_iter().for_each(|job| job()))?;
        Ok(Self {
            requests: Arc::new(Semaphore::new(requests)),
            large_body: Arc::new(Semaphore::new(1)),
            large_body_thread: sender,
        })
    }
}

/// A request's turn: held until its response is complete, streamed body included.
pub struct Turn {
    _request: OwnedSemaphorePermit,
    large_body: Option<OwnedSemaphorePermit>,
    large_body_thread: mpsc::Sender<Job>,
}

impl Turn {
    /// Runs `work`: here, or on the large-body thread if the body is large. There the large
    /// turn lasts until `work` ends, even if the request is given up before.
    pub async fn run<T: Send + 'static>(
        mut self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> T {
        let Some(large_body) = self.large_body.take() else {
            return work.await;
        };
        let (sender, result) = oneshot::channel();
        let runtime = Handle::current();
        let job = Box::new(move || {
            let _ = sender.send(runtime.block_on(work));
            drop(large_body);
        });
        // The thread only ends once every sender is gone, and a panic aborts the process.
        self.large_body_thread
            .send(job)
            .expect("the large-body thread runs");
        result.await.expect("the large-body thread answers")
    }
}

impl FromRequestParts<App> for Turn {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Error> {
        let deadline = Instant::now() + MAX_WAIT;
        // A large body waits for its turn first, so that it holds no request turn that small
        // requests could use meanwhile.
        let large_body = match is_large(&parts.headers) {
            true => Some(take(&app.limits.large_body, deadline).await?),
            false => None,
        };
        Ok(Self {
            _request: take(&app.limits.requests, deadline).await?,
            large_body,
            large_body_thread: app.limits.large_body_thread.clone(),
        })
    }
}

/// Whether the body is over [`LARGE_BODY_BYTES`]; a chunked one may be as large as the limit.
fn is_large(headers: &HeaderMap) -> bool {
    headers.contains_key(TRANSFER_ENCODING)
        || headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|length| length > LARGE_BODY_BYTES)
}

async fn take(
    semaphore: &Arc<Semaphore>,
    deadline: Instant,
) -> Result<OwnedSemaphorePermit, Error> {
    match tokio::time::timeout_at(deadline, Arc::clone(semaphore).acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        // The semaphores are never closed: only the wait can fail.
        _ => Err(Error::Busy),
    }
}
