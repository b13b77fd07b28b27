//! The controller: [`run`] wires the watches to [`reconcile`] and [`error_policy`]. A
//! reconcile observes (one snapshot of the caches), plans (a pure function of the object
//! and the snapshot), executes the plan, and hands the status to the [`StatusQueue`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use flaskmongo_crd::FlaskMongoApp;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;

use crate::backoff::{Failures, backoff_delay};
use crate::children::{Instance, secret};
use crate::error::{Error, Result};
use crate::events::{self, Changes};
use crate::execute::{self, Applied, Cleanup};
use crate::labels::MANAGER;
use crate::metrics::Metrics;
use crate::observe::{self, UNSEEN_AT_MOST, Unseen};
use crate::orphans;
use crate::plan::{self, Plan, Step};
use crate::preparer_keeper;
use crate::status::{self, Failure, Write};
use crate::status_queue::{self, StatusQueue, WriteStatus};
use crate::watches::{self, Stores};

pub use crate::plan::FINALIZER;

/// Pause while the clean-up waits for the claim to go (its watch usually comes first).
const CLEANUP_POLL: Duration = Duration::from_secs(2);

/// What every reconcile shares.
pub struct Context {
    /// The operator's client, counting its requests.
    client: Client,
    /// The queue of Events.
    events: events::Publisher,
    /// Counters and timings.
    metrics: Metrics,
    /// The watch caches.
    stores: Stores,
    /// Interval of the periodic re-check of a healthy object.
    requeue: Duration,
    /// Where volumes' directories go, and what prepares them.
    volumes: crate::Volumes,
    /// The objects as the controller's watch last saw them.
    apps: Store<FlaskMongoApp>,
    /// Consecutive transient failures of each object, for its backoff.
    failures: Mutex<Failures>,
    /// Credentials Secrets whose record in the status is still on its way to the cache.
    secrets: Mutex<RecordedSecrets>,
    /// The statuses on their way to the API server, and those written lately.
    statuses: Arc<StatusQueue>,
    /// Writes still on their way to the caches.
    unseen: Mutex<Unseen>,
}

/// The credentials Secret this process created or found for each object (by uid), kept
/// until the cached object's status records it. The operator may not read Secrets: it
/// knows of one only from the status, and a reconcile that starts before its own status
/// write reaches the cache would otherwise ask the API server for the Secret again.
#[derive(Debug, Default)]
struct RecordedSecrets(HashMap<String, String>);

impl RecordedSecrets {
    /// `app` with the Secret recorded in its status as this process last wrote it.
    fn complete<'a>(&mut self, app: &'a FlaskMongoApp) -> Cow<'a, FlaskMongoApp> {
        let Some(uid) = app.uid() else {
            return Cow::Borrowed(app);
        };
        let cached = app
            .status
            .as_ref()
            .and_then(|s| s.credentials_secret.as_ref());
        match (cached, self.0.get(&uid)) {
            (Some(_), Some(_)) => {
                self.0.remove(&uid);
                Cow::Borrowed(app)
            }
            (None, Some(name)) => {
                let mut app = app.clone();
                app.status.get_or_insert_default().credentials_secret = Some(name.clone());
                Cow::Owned(app)
            }
            (_, None) => Cow::Borrowed(app),
        }
    }

    /// Remembers that `app`'s Secret is `name`.
    fn record(&mut self, app: &FlaskMongoApp, name: &str) {
        if let Some(uid) = app.uid() {
            self.0.insert(uid, name.to_owned());
        }
    }

    /// Forgets `app`'s Secret.
    fn forget(&mut self, app: &FlaskMongoApp) {
        if let Some(uid) = app.uid() {
            self.0.remove(&uid);
        }
    }
}

impl Context {
    /// Queues a Warning about `app`.
    fn warn(&self, app: &FlaskMongoApp, reason: &str, note: String) {
        self.events
            .warn(reason.to_owned(), note, app.object_ref(&()));
    }

    /// Queues what a reconcile of `app` changed for the Event that tells it.
    fn report(&self, app: &FlaskMongoApp, changes: Changes) {
        self.events.changed(changes, app.object_ref(&()));
    }

    fn reset_backoff(&self, app: &FlaskMongoApp) {
        locked(&self.failures).reset(&ObjectRef::from(app));
    }
}

/// Runs the controller until `shutdown` resolves; `on_ready` is called once the caches
/// are filled.
pub async fn run(
    client: Client,
    settings: &crate::Config,
    identity: String,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    on_ready: impl FnOnce() + Send + 'static,
) {
    let orphans_wake = Arc::new(Notify::new());
    let (controller, stores) = watches::controller(
        &client,
        settings.namespace.as_deref(),
        &settings.volumes.preparation_namespace,
        &orphans_wake,
    );
    let (statuses, ready_statuses, status_retries) =
        StatusQueue::new(settings.metrics.clone(), controller.store());
    let controller = controller.reconcile_on(status_retries);
    let status_writer = status_queue::writer(
        Arc::clone(&statuses),
        ready_statuses,
        write_status(&client),
        usize::from(settings.concurrency),
    );
    let orphans = orphans::sweep(
        client.clone(),
        controller.store(),
        stores.volume_preparations.clone(),
        settings.volumes.preparation_namespace.clone(),
        orphans_wake,
    );
    let keeper = preparer_keeper::keep(client.clone(), settings.volumes.clone());
    let ready_stores = stores.clone();
    tokio::spawn(async move {
        ready_stores.wait_until_ready().await;
        on_ready();
    });
    let events = events::Publisher::start(
        client.clone(),
        Reporter {
            controller: MANAGER.to_owned(),
            instance: Some(identity),
        },
    );
    let context = Arc::new(Context {
        events,
        client,
        metrics: settings.metrics.clone(),
        stores,
        requeue: settings.requeue,
        volumes: settings.volumes.clone(),
        apps: controller.store(),
        failures: Mutex::default(),
        secrets: Mutex::default(),
        statuses,
        unseen: Mutex::default(),
    });
    let shutdown = shutdown.shared();
    let (apps, stores) = (controller.store(), context.stores.clone());
    let reconciles = controller
        .with_config(ControllerConfig::default().concurrency(settings.concurrency))
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not complete"),
            }
        });
    // kube-runtime's graceful shutdown ends only once the objects' cache is filled, which
    // never happens while they cannot be listed (no CRD yet, no rights). Until every cache
    // is filled no reconcile has gone past its first step, so there is nothing to wait for.
    let stop_unfilled = async move {
        shutdown.await;
        if !filled(&apps, &stores) {
            tracing::info!("stopping before the caches were filled; nothing was reconciled");
            return;
        }
        std::future::pending().await
    };
    tokio::select! {
        () = reconciles => {}
        () = stop_unfilled => {}
        () = orphans => {}
        () = keeper => {}
        () = status_writer => {}
    }
}

/// Writes a status with `client`.
fn write_status(client: &Client) -> WriteStatus {
    let client = client.clone();
    Arc::new(move |object, status| {
        let client = client.clone();
        Box::pin(async move { execute::patch_status(&client, &object, &status).await })
    })
}

/// Whether the objects' cache and every child's cache hold their first complete list.
fn filled(apps: &Store<FlaskMongoApp>, stores: &Stores) -> bool {
    let apps_filled = matches!(apps.wait_until_ready().now_or_never(), Some(Ok(())));
    apps_filled && stores.wait_until_ready().now_or_never().is_some()
}

/// Brings the children of `app` to its spec and queues the status of what it sees.
pub async fn reconcile(app: Arc<FlaskMongoApp>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started();
    tracing::debug!(object = %ObjectRef::from(app.as_ref()), "reconcile starts");
    ctx.stores.wait_until_ready().await;
    let app = locked(&ctx.secrets).complete(&app);
    let instance = Instance::new(&app)?;
    let mut snapshot =
        observe::observe(&ctx.stores, &instance, &ctx.volumes.preparation_namespace)?;
    let uid = app.uid().unwrap_or_default();
    let relies_on_unseen = locked(&ctx.unseen).complete(&uid, &mut snapshot, Instant::now());
    let changes = Changes::default();
    let (applied, result) = match plan::plan(
        &app,
        &instance,
        &snapshot,
        &ctx.volumes,
        secret::generate_password,
    ) {
        Ok(Plan::Finalize(cleanup)) => {
            let done = execute::finalize(&ctx.client, &*app, cleanup, &changes).await;
            ctx.report(&app, changes);
            return Ok(match done? {
                Cleanup::Done => {
                    locked(&ctx.secrets).forget(&app);
                    locked(&ctx.unseen).forget(&uid);
                    Action::await_change()
                }
                Cleanup::Pending => Action::requeue(CLEANUP_POLL),
            });
        }
        Ok(Plan::Converge(converge)) => {
            let deletes_preparation =
                matches!(converge.children.volume_preparation.step, Step::Delete(_));
            let (applied, result) =
                execute::converge(&ctx.client, &*app, *converge, &changes).await;
            // Every write succeeded, so the pod is gone (or was already).
            let deleted_preparation = snapshot
                .volume_preparation
                .as_ref()
                .filter(|_| deletes_preparation && result.is_ok())
                .map(|pod| (pod, Time(Timestamp::now())));
            locked(&ctx.unseen).record(&uid, &applied, deleted_preparation, Instant::now());
            (applied, result)
        }
        // Reported in the status like a failed write.
        Err(error) => (Applied::default(), Err(error)),
    };
    ctx.report(&app, changes);
    if let Some(name) = &applied.secret {
        locked(&ctx.secrets).record(&app, name);
    }
    // The object changed while it was being read: the retry soon after sees the new
    // version, so this is not worth reporting.
    if let Err(error) = &result
        && error.is_conflict()
    {
        tracing::debug!(%error, "the object changed meanwhile; retrying");
        return result.map(|()| Action::requeue(ctx.requeue));
    }
    let failure = result.as_ref().err().map(|error| Failure {
        reason: error.reason().to_owned(),
        message: error.to_string(),
    });
    if let Some(failure) = &failure {
        ctx.warn(&app, &failure.reason, failure.message.clone());
    }
    let status = status::report(&app, &snapshot, &applied, failure);
    let now = Instant::now();
    let write = ctx.statuses.decide(&app, &status, now);
    let mut next = if relies_on_unseen {
        ctx.requeue.min(UNSEEN_AT_MOST)
    } else {
        ctx.requeue
    };
    match write {
        Write::Skip => {}
        Write::After(delay) => next = next.min(delay),
        Write::Now => ctx.statuses.submit(&app, status, now),
    }
    result?;
    ctx.reset_backoff(&app);
    Ok(Action::requeue(next))
}

/// After a conflict, retries soon, quietly. After a permanent failure, waits for the
/// object to change; after a transient one, waits longer after each retry of the same
/// object that failed: 1 s, 2 s, 4 s … up to 5 minutes.
pub fn error_policy(app: Arc<FlaskMongoApp>, error: &Error, ctx: Arc<Context>) -> Action {
    // Not a failure: the object changed while it was being read (a reconcile started from
    // a cache that did not show the operator's own finalizer yet, say), and the retry
    // sees the new version.
    if error.is_conflict() {
        return Action::requeue(backoff_delay(1));
    }
    ctx.metrics.reconcile_failed(error.reason());
    let object = ObjectRef::from(app.as_ref());
    if error.is_permanent() {
        ctx.reset_backoff(&app);
        tracing::warn!(%object, %error, "reconcile failed; waiting for the object to change");
        return Action::await_change();
    }
    let (attempt, delay) = locked(&ctx.failures).record(&object, Instant::now(), |other| {
        ctx.apps.get(other).is_some()
    });
    tracing::warn!(%object, %error, attempt, ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The guard of `mutex`, also after a reconcile panicked while holding it: each of the
/// records it guards is whole after every single call.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use flaskmongo_crd::FlaskMongoAppSpec;

    use super::*;
    use crate::cache;
    use crate::children::tests::app;
    use crate::error::tests::refused;

    /// A context over caches that stay empty and a client that reaches no server.
    fn offline_context(metrics: Metrics) -> Arc<Context> {
        let client = Client::new(
            tower::service_fn(|_: http::Request<kube::client::Body>| async {
                Err::<http::Response<kube::client::Body>, _>(std::io::Error::other("offline"))
            }),
            "default",
        );
        let stores = Stores {
            deployments: cache::cache().0,
            services: cache::cache().0,
            hpas: cache::cache().0,
            statefulsets: cache::cache().0,
            network_policies: cache::cache().0,
            volumes: cache::cache().0,
            claims: cache::cache().0,
            volume_preparations: cache::cache().0,
            volume_preparers: cache::cache().0,
            nodes: cache::cache().0,
        };
        Arc::new(Context {
            events: events::Publisher::start(
                client.clone(),
                Reporter {
                    controller: MANAGER.to_owned(),
                    instance: None,
                },
            ),
            client,
            metrics,
            stores,
            requeue: Duration::from_secs(300),
            volumes: crate::Volumes::default(),
            apps: kube::runtime::reflector::store().0,
            failures: Mutex::default(),
            secrets: Mutex::default(),
            statuses: StatusQueue::new(Metrics::new(), kube::runtime::reflector::store().0).0,
            unseen: Mutex::default(),
        })
    }

    #[tokio::test]
    async fn a_conflict_is_retried_soon_and_not_counted_as_a_failure() {
        let metrics = Metrics::new();
        let ctx = offline_context(metrics.clone());
        let app = Arc::new(app("shop", "team-a", FlaskMongoAppSpec::default()));
        let refused = |code| Error::kube("set the finalizers", refused(code));
        let failures = || {
            metrics
                .render()
                .lines()
                .filter(|line| line.starts_with("flaskmongo_reconcile_failures_total"))
                .count()
        };
        assert_eq!(
            error_policy(app.clone(), &refused(409), ctx.clone()),
            Action::requeue(backoff_delay(1))
        );
        assert_eq!(failures(), 0, "a conflict is no failure");
        error_policy(app, &refused(500), ctx);
        assert_eq!(failures(), 1, "a refusal is");
    }

    #[test]
    fn a_secret_created_counts_as_recorded_until_the_cached_status_records_it() {
        let shop = || crate::children::tests::app("shop", "team-a", Default::default());
        let mut app = shop();
        let mut secrets = RecordedSecrets::default();
        let recorded = |app: &FlaskMongoApp| {
            app.status
                .as_ref()
                .and_then(|s| s.credentials_secret.clone())
        };
        assert_eq!(
            recorded(&secrets.complete(&app)),
            None,
            "nothing created yet"
        );
        secrets.record(&app, "shop-mongo-credentials");
        let completed = secrets.complete(&app);
        assert!(matches!(completed, Cow::Owned(_)));
        assert_eq!(
            recorded(&completed).as_deref(),
            Some("shop-mongo-credentials"),
            "the status write is on its way: the Secret is not asked for again"
        );
        // The cache caught up: the record is the status's again, and forgotten here.
        app.status.get_or_insert_default().credentials_secret =
            Some("shop-mongo-credentials".to_owned());
        assert!(matches!(secrets.complete(&app), Cow::Borrowed(_)));
        assert!(secrets.0.is_empty());
        // An object created again under the same name has another uid: not its Secret.
        secrets.record(&app, "shop-mongo-credentials");
        let mut again = shop();
        again.metadata.uid = Some("another-uid".to_owned());
        assert_eq!(recorded(&secrets.complete(&again)), None);
        secrets.forget(&app);
        assert!(secrets.0.is_empty());
    }
}
