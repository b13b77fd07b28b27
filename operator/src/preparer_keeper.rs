//! Keeps the volume preparer's DaemonSet as the operator's settings say: applied when the
//! operator starts, and applied again whenever its watch shows it deleted or a field the
//! operator sets changed. Without it, new objects wait with `NoVolumePreparer`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::Volumes;
use crate::apply::{self, Stamped};
use crate::children::volume_preparer;
use crate::controller::backoff_delay;

/// An apply this soon after the one before waits first (1 s, 2 s, 4 s … up to 5 minutes),
/// so that two operators with different settings cannot rewrite the DaemonSet at full
/// speed; after this long without one, the next goes at once.
const QUIET: Duration = Duration::from_secs(60);

/// Applies the DaemonSet, then watches it alone. Runs until dropped.
pub async fn keep(client: Client, volumes: Volumes) {
    let namespace = volumes.preparation_namespace.clone();
    let api = Api::<DaemonSet>::namespaced(client, &namespace);
    let desired = match apply::stamp(volume_preparer::build(&volumes)) {
        Ok(desired) => desired,
        Err(error) => {
            // Not for a typed DaemonSet; new objects would then say `NoVolumePreparer`.
            tracing::error!(%error, "cannot build the volume preparer");
            return std::future::pending().await;
        }
    };
    // Applied before the watch is up, so that an operator whose rights lack the watch
    // still has a preparer.
    apply_until_done(&api, &desired).await;
    let mut pacing = Pacing {
        last: Some(Instant::now()),
        streak: 0,
    };
    tracing::info!(%namespace, name = volume_preparer::NAME, "volume preparer applied");

    let only_it =
        watcher::Config::default().fields(&format!("metadata.name={}", volume_preparer::NAME));
    let mut events = std::pin::pin!(watcher(api.clone(), only_it).default_backoff());
    // What the watch last said of it; each event says it before it is read.
    let mut live = None;
    while let Some(event) = events.next().await {
        // Until a list is complete (a failed watch lists again), what is missing may only
        // not have arrived yet.
        let complete = match event {
            Ok(watcher::Event::Init) => {
                live = None;
                false
            }
            Ok(watcher::Event::InitApply(daemon_set)) => {
                live = Some(daemon_set);
                false
            }
            Ok(watcher::Event::InitDone) => true,
            Ok(watcher::Event::Apply(daemon_set)) => {
                live = Some(daemon_set);
                true
            }
            Ok(watcher::Event::Delete(_)) => {
                live = None;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "the watch of the volume preparer failed");
                false
            }
        };
        if !complete {
            continue;
        }
        match desired.is_current(live.as_ref()) {
            Ok(true) => continue,
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot compare the volume preparer");
                continue;
            }
        }
        let delay = pacing.delay(Instant::now());
        tracing::info!(
            %namespace,
            name = volume_preparer::NAME,
            deleted = live.is_none(),
            ?delay,
            "the volume preparer was deleted or changed; applying it again"
        );
        tokio::time::sleep(delay).await;
        apply_until_done(&api, &desired).await;
    }
    // A watcher with a backoff does not end; returning would stop the controller with it.
    std::future::pending().await
}

/// Applies `desired`, trying again after a failure (1 s, 2 s, 4 s … up to 5 minutes).
async fn apply_until_done(api: &Api<DaemonSet>, desired: &Stamped<DaemonSet>) {
    let mut attempt = 1;
    loop {
        match apply::apply(api, &desired.object).await {
            Ok(_) => return,
            Err(error) => {
                let delay = backoff_delay(attempt);
                tracing::warn!(%error, ?delay, "cannot apply the volume preparer; trying again");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// When the applies of the DaemonSet go: at once after a quiet spell, each one sooner than
/// [`QUIET`] after the one before waiting twice as long as the one before.
#[derive(Debug, Default)]
struct Pacing {
    /// When the last apply went.
    last: Option<Instant>,
    /// How many applies in a row came within [`QUIET`] of the one before.
    streak: u32,
}

impl Pacing {
    /// How long an apply wanted at `now` waits, counting it as done then.
    fn delay(&mut self, now: Instant) -> Duration {
        let soon = self.last.is_some_and(|last| now < last + QUIET);
        self.streak = if soon { self.streak + 1 } else { 0 };
        let delay = if soon {
            backoff_delay(self.streak)
        } else {
            Duration::ZERO
        };
        self.last = Some(now + delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_that_follow_each_other_closely_wait_ever_longer_and_a_quiet_spell_resets_that() {
        let mut pacing = Pacing::default();
        let start = Instant::now();
        assert_eq!(pacing.delay(start), Duration::ZERO, "the first apply");
        let secs = Duration::from_secs;
        assert_eq!(pacing.delay(start + secs(1)), secs(1));
        assert_eq!(pacing.delay(start + secs(3)), secs(2));
        assert_eq!(pacing.delay(start + secs(6)), secs(4));
        // The last apply went at 10 s: a minute after it, the next goes at once.
        assert_eq!(pacing.delay(start + secs(71)), Duration::ZERO);
        assert_eq!(pacing.delay(start + secs(80)), secs(1));
    }
}
