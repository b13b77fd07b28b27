//! Removes the preparation pods whose object is gone. They live in the operator's own
//! namespace for them, where no owner reference takes them away with their object, and an
//! object under `deletionPolicy: Retain` has no finalizer that holds it until its pod is
//! removed. The same shape as a reconcile: what the caches hold, the pure decision
//! ([`plan::orphaned_preparations`]), then the deletions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flaskmongo_crd::FlaskMongoApp;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::backoff::backoff_delay;
use crate::cache::Cache;
use crate::events::Changes;
use crate::{execute, plan};

/// Least time between two sweeps: the objects deleted and pods changed meanwhile share
/// the next one.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Sweeps whenever `wake` is notified (an object was deleted, a preparation pod changed,
/// the objects were listed), once both caches are filled; a failed sweep is tried again
/// later. Runs until dropped.
pub async fn sweep(
    client: Client,
    apps: Store<FlaskMongoApp>,
    preparations: Cache<Pod>,
    namespace: String,
    wake: Arc<Notify>,
) {
    let mut failures = 0;
    loop {
        wake.notified().await;
        // The operator stops if a cache can never be filled; until then nothing is decided.
        if apps.wait_until_ready().await.is_err() {
            return;
        }
        preparations.wait_until_ready().await;
        let states = apps.state();
        let live: HashSet<&str> = states
            .iter()
            .filter_map(|app| app.metadata.uid.as_deref())
            .collect();
        let names = preparations.names();
        let orphans =
            plan::orphaned_preparations(names.iter().map(String::as_str), &live, &namespace);
        let delay = match execute::clean_up(&client, &orphans, &Changes::default()).await {
            Ok(_) => {
                failures = 0;
                SWEEP_INTERVAL
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(%error, "cannot remove preparation pods whose object is gone");
                wake.notify_one();
                backoff_delay(failures).max(SWEEP_INTERVAL)
            }
        };
        tokio::time::sleep(delay).await;
    }
}
