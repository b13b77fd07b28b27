//! The status writes, off the reconciles: a reconcile hands its status over and returns,
//! so that its slot goes to the next object instead of waiting for the API server. One
//! write at a time per object, and the latest status wins over the ones still waiting; at
//! most as many writes at once as reconciles. A failed write is dropped and its object
//! reconciled again after a backoff, which computes the status afresh; the write of an
//! object deleted meanwhile is just dropped.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use flaskmongo_crd::{FlaskMongoApp, FlaskMongoAppStatus};
use futures::{Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::backoff::Failures;
use crate::error::Result;
use crate::metrics::Metrics;
use crate::status::{Write, Writes};

/// One status write under way.
pub type Writing = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Writes `status` to the object's status subresource.
pub type WriteStatus =
    Arc<dyn Fn(ObjectRef<FlaskMongoApp>, FlaskMongoAppStatus) -> Writing + Send + Sync>;

/// The statuses waiting to be written, and what was written lately.
pub struct StatusQueue {
    state: Mutex<State>,
    /// Objects whose next write may start, in turn.
    ready: mpsc::UnboundedSender<ObjectRef<FlaskMongoApp>>,
    /// Objects to reconcile again after a failed write.
    retries: mpsc::UnboundedSender<ObjectRef<FlaskMongoApp>>,
    metrics: Metrics,
    /// The objects as the controller's watch last saw them, to forget the backoffs of
    /// deleted ones.
    apps: Store<FlaskMongoApp>,
}

#[derive(Default)]
struct State {
    /// The statuses handed over lately, for [`StatusQueue::decide`].
    writes: Writes,
    /// The latest status not yet written for each object, with the object's uid.
    pending: HashMap<ObjectRef<FlaskMongoApp>, (String, FlaskMongoAppStatus)>,
    /// The objects with a write waiting for its turn or under way.
    busy: HashSet<ObjectRef<FlaskMongoApp>>,
    /// Consecutive failed writes of each object, for its backoff. Apart from the
    /// reconciles' own: a reconcile that succeeds must not reset the backoff of a status
    /// write that keeps failing.
    failures: Failures,
}

impl StatusQueue {
    /// An empty queue, the objects whose writes may start (for [`writer`]), and the
    /// objects to reconcile again after a failed write (for the controller's triggers).
    pub fn new(
        metrics: Metrics,
        apps: Store<FlaskMongoApp>,
    ) -> (
        Arc<Self>,
        mpsc::UnboundedReceiver<ObjectRef<FlaskMongoApp>>,
        impl Stream<Item = ObjectRef<FlaskMongoApp>> + Send + 'static,
    ) {
        let (ready, ready_receiver) = mpsc::unbounded_channel();
        let (retries, retries_receiver) = mpsc::unbounded_channel();
        let queue = Self {
            state: Mutex::default(),
            ready,
            retries,
            metrics,
            apps,
        };
        (Arc::new(queue), ready_receiver, received(retries_receiver))
    }

    /// Whether `status` is worth a write for `app` at `now` ([`Writes::decide`]): a status
    /// handed over counts as written.
    pub fn decide(&self, app: &FlaskMongoApp, status: &FlaskMongoAppStatus, now: Instant) -> Write {
        self.locked().writes.decide(app, status, now)
    }

    /// Queues `status` for `app`, in place of a status of it still waiting.
    pub fn submit(&self, app: &FlaskMongoApp, status: FlaskMongoAppStatus, now: Instant) {
        let object = ObjectRef::from(app);
        let uid = app.uid().unwrap_or_default();
        let mut state = self.locked();
        state.writes.record(app, status.clone(), now);
        state.pending.insert(object.clone(), (uid, status));
        if state.busy.insert(object.clone()) {
            // Fails only once the writer is gone, when the operator stops.
            let _ = self.ready.send(object);
        }
    }

    /// Writes the latest status of `object` until none is waiting.
    async fn write_latest(&self, object: ObjectRef<FlaskMongoApp>, write: &WriteStatus) {
        loop {
            let (uid, status) = {
                let mut state = self.locked();
                match state.pending.remove(&object) {
                    Some(pending) => pending,
                    None => {
                        state.busy.remove(&object);
                        return;
                    }
                }
            };
            match write(object.clone(), status).await {
                Err(error) if !error.is_not_found() => self.failed(&object, &uid, &error),
                _ => self.locked().failures.reset(&object),
            }
        }
    }

    /// Forgets the failed write, so the next reconcile writes its status again, and
    /// reconciles `object` again after its backoff.
    fn failed(&self, object: &ObjectRef<FlaskMongoApp>, uid: &str, error: &crate::Error) {
        self.metrics.reconcile_failed(error.reason());
        let (attempts, delay) = {
            let mut state = self.locked();
            state.writes.forget(uid);
            state.failures.record(object, Instant::now(), |other| {
                self.apps.get(other).is_some()
            })
        };
        tracing::warn!(%object, %error, attempt = attempts, ?delay, "status write failed");
        let (retries, object) = (self.retries.clone(), object.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            // Fails only once the controller is gone.
            let _ = retries.send(object);
        });
    }

    /// The state, also after a task panicked while holding it: each of its records is
    /// whole after every single call.
    fn locked(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Writes the queued statuses with `write`, `concurrency` objects at once; runs until it is
/// dropped, with the controller.
pub async fn writer(
    queue: Arc<StatusQueue>,
    ready: mpsc::UnboundedReceiver<ObjectRef<FlaskMongoApp>>,
    write: WriteStatus,
    concurrency: usize,
) {
    received(ready)
        .map(|object| {
            let (queue, write) = (Arc::clone(&queue), Arc::clone(&write));
            async move { queue.write_latest(object, &write).await }
        })
        .buffer_unordered(concurrency.max(1))
        .for_each(|()| std::future::ready(()))
        .await;
}

/// The items of `receiver` as a stream.
fn received<T: Send + 'static>(receiver: mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flaskmongo_crd::CONDITION_READY;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use k8s_openapi::jiff::Timestamp;
    use kube::runtime::{reflector, watcher};
    use tokio::sync::Semaphore;

    use super::*;
    use crate::Error;
    use crate::error::tests::refused;

    /// A write that waits for the test's permission, records what it wrote and how many
    /// writes ran at once, and fails where the test says so.
    #[derive(Clone)]
    struct Probe(Arc<Mutex<Seen>>, Arc<Semaphore>);

    #[derive(Default)]
    struct Seen {
        /// Writes started.
        started: usize,
        /// Writes started and not yet done.
        running: usize,
        /// The most writes that ran at once.
        most_at_once: usize,
        /// "name: message" of each write done, in order.
        written: Vec<String>,
        /// The API server's refusal of every write, if any.
        refusal: Option<u16>,
    }

    impl Probe {
        /// A probe whose writes all wait.
        fn new() -> Self {
            Self(Arc::default(), Arc::new(Semaphore::new(0)))
        }

        fn write(&self) -> WriteStatus {
            let probe = self.clone();
            Arc::new(move |object, status| {
                let probe = probe.clone();
                Box::pin(async move {
                    {
                        let mut seen = probe.seen();
                        seen.started += 1;
                        seen.running += 1;
                        seen.most_at_once = seen.most_at_once.max(seen.running);
                    }
                    probe.1.acquire().await.expect("open").forget();
                    let mut seen = probe.seen();
                    seen.running -= 1;
                    seen.written
                        .push(format!("{}: {}", object.name, status.message));
                    match seen.refusal {
                        Some(code) => Err(Error::kube("update the status", refused(code))),
                        None => Ok(()),
                    }
                })
            })
        }

        fn seen(&self) -> MutexGuard<'_, Seen> {
            self.0.lock().unwrap()
        }

        /// Waits up to 5 s until `done` holds of what was seen.
        async fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
            for _ in 0..500 {
                if done(&self.seen()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("not within 5 s: {what}");
        }
    }

    fn object(name: &str) -> FlaskMongoApp {
        let mut app = crate::children::tests::app(name, "team-a", Default::default());
        app.metadata.uid = Some(format!("uid-{name}"));
        app
    }

    fn ready(message: &str) -> FlaskMongoAppStatus {
        FlaskMongoAppStatus {
            conditions: vec![Condition {
                type_: CONDITION_READY.to_owned(),
                status: "True".to_owned(),
                reason: "Ready".to_owned(),
                message: message.to_owned(),
                last_transition_time: Time(Timestamp::UNIX_EPOCH),
                observed_generation: Some(1),
            }],
            message: message.to_owned(),
            ..FlaskMongoAppStatus::default()
        }
    }

    /// A queue whose writer writes with `probe`, `concurrency` objects at once, and whose
    /// controller's watch sees `apps`; its retries and its counters.
    fn started(
        probe: &Probe,
        concurrency: usize,
        apps: Store<FlaskMongoApp>,
    ) -> (
        Arc<StatusQueue>,
        impl Stream<Item = ObjectRef<FlaskMongoApp>> + Send + use<>,
        Metrics,
    ) {
        let metrics = Metrics::new();
        let (queue, ready, retries) = StatusQueue::new(metrics.clone(), apps);
        tokio::spawn(writer(
            Arc::clone(&queue),
            ready,
            probe.write(),
            concurrency,
        ));
        (queue, retries, metrics)
    }

    #[tokio::test]
    async fn an_object_has_one_write_at_a_time_and_its_latest_status_wins() {
        let probe = Probe::new();
        let (queue, _, _) = started(&probe, 8, reflector::store().0);
        let (shop, now) = (object("shop"), Instant::now());
        queue.submit(&shop, ready("first"), now);
        probe
            .until("the first write starts", |s| s.started == 1)
            .await;
        queue.submit(&shop, ready("second"), now);
        queue.submit(&shop, ready("third"), now);
        assert_eq!(
            queue.decide(&shop, &ready("third"), now),
            Write::Skip,
            "handed over: on its way"
        );
        probe.1.add_permits(3);
        probe.until("two writes", |s| s.written.len() == 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = probe.seen();
        assert_eq!(
            seen.written,
            ["shop: first", "shop: third"],
            "the second was replaced while it waited"
        );
        assert_eq!(seen.most_at_once, 1);
    }

    #[tokio::test]
    async fn no_more_objects_are_written_at_once_than_allowed() {
        let probe = Probe::new();
        let (queue, _, _) = started(&probe, 2, reflector::store().0);
        for name in ["a", "b", "c"] {
            queue.submit(&object(name), ready(name), Instant::now());
        }
        probe.until("two writes start", |s| s.started == 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(probe.seen().started, 2, "the third waits for a turn");
        probe.1.add_permits(3);
        probe
            .until("all three written", |s| s.written.len() == 3)
            .await;
        assert_eq!(probe.seen().most_at_once, 2);
    }

    #[tokio::test]
    async fn the_writes_under_way_stop_with_the_writer() {
        let probe = Probe::new();
        let (queue, ready_objects, _) = StatusQueue::new(Metrics::new(), reflector::store().0);
        let writing = tokio::spawn(writer(Arc::clone(&queue), ready_objects, probe.write(), 8));
        queue.submit(&object("shop"), ready("up"), Instant::now());
        probe.until("the write starts", |s| s.started == 1).await;
        // What the controller's end (a shutdown, a lost leadership) does to the writer.
        writing.abort();
        assert!(writing.await.is_err_and(|error| error.is_cancelled()));
        probe.1.add_permits(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            probe.seen().written,
            Vec::<String>::new(),
            "no write goes on after the writer"
        );
    }

    /// The retries and the counters of a queue whose one write of `app`, with the status
    /// `up`, the API server refused with `code`.
    async fn refused_write(
        code: u16,
        app: &FlaskMongoApp,
    ) -> (
        Arc<StatusQueue>,
        Pin<Box<dyn Stream<Item = ObjectRef<FlaskMongoApp>> + Send>>,
        Metrics,
    ) {
        let probe = Probe::new();
        probe.seen().refusal = Some(code);
        let (queue, retries, metrics) = started(&probe, 8, reflector::store().0);
        queue.submit(app, ready("up"), Instant::now());
        probe.1.add_permits(1);
        probe
            .until("the write is refused", |s| s.written.len() == 1)
            .await;
        (queue, Box::pin(retries), metrics)
    }

    #[tokio::test]
    async fn a_failed_write_is_written_again_by_the_object_s_next_reconcile() {
        let shop = object("shop");
        let (queue, mut retries, metrics) = refused_write(500, &shop).await;
        let retry = tokio::time::timeout(Duration::from_secs(5), retries.next()).await;
        assert_eq!(
            retry.expect("a reconcile within the first backoff of 1 s"),
            Some(ObjectRef::from(&shop))
        );
        assert_eq!(
            queue.decide(&shop, &ready("up"), Instant::now()),
            Write::Now,
            "the failed status is written again"
        );
        assert!(
            metrics
                .render()
                .contains("flaskmongo_reconcile_failures_total{reason=\"ApiError\"} 1"),
            "{}",
            metrics.render()
        );
    }

    #[tokio::test]
    async fn the_write_of_an_object_deleted_meanwhile_is_dropped() {
        let (_, mut retries, metrics) = refused_write(404, &object("gone")).await;
        let retry = tokio::time::timeout(Duration::from_millis(1_500), retries.next()).await;
        assert!(
            retry.is_err(),
            "no reconcile of a deleted object: {retry:?}"
        );
        assert!(
            !metrics
                .render()
                .contains("flaskmongo_reconcile_failures_total{"),
            "{}",
            metrics.render()
        );
    }

    #[tokio::test]
    async fn the_backoff_of_an_object_deleted_meanwhile_is_forgotten() {
        let shop = object("shop");
        let (apps, mut watch) = reflector::store();
        watch.apply_watcher_event(&watcher::Event::Apply(shop.clone()));
        let probe = Probe::new();
        probe.seen().refusal = Some(500);
        let (queue, _, _) = started(&probe, 8, apps);
        // Not in the watch's cache: deleted after its status was handed over.
        for (app, writes) in [(object("gone"), 1), (shop.clone(), 2)] {
            queue.submit(&app, ready("up"), Instant::now());
            probe.1.add_permits(1);
            probe
                .until("the write is refused", |s| s.written.len() == writes)
                .await;
        }
        assert_eq!(
            queue.locked().failures.objects().collect::<Vec<_>>(),
            [&ObjectRef::from(&shop)],
            "only the object that still exists keeps a backoff"
        );
    }
}
