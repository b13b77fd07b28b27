//! Keeps the volume preparer's DaemonSet as the operator's settings say: applied when the
//! operator starts, and applied again whenever its watch shows it deleted or a field the
//! operator sets changed. Without it, new objects wait with `NoVolumePreparer`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::apply::{self, Stamped};
use crate::backoff::backoff_delay;
use crate::children::volume_preparer;
use crate::{Result, Volumes};

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
    let applied = apply_until_done(&api, &desired).await;
    let mut pacing = Pacing {
        last: Some(Instant::now()),
        streak: 0,
    };
    tracing::info!(%namespace, name = volume_preparer::NAME, "volume preparer applied");

    let only_it =
        watcher::Config::default().fields(&format!("metadata.name={}", volume_preparer::NAME));
    let mut events = std::pin::pin!(watcher(api.clone(), only_it).default_backoff());
    let mut watched = Watched {
        applied: Version::of(&applied),
        ..Watched::default()
    };
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "the watch of the volume preparer failed");
                continue;
            }
        };
        if !watched.see(event) {
            continue;
        }
        match watched.to_apply(&desired) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "cannot compare the volume preparer");
                continue;
            }
        }
        let delay = pacing.delay(Instant::now());
        tracing::info!(
            %namespace,
            name = volume_preparer::NAME,
            deleted = watched.live.is_none(),
            ?delay,
            "the volume preparer was deleted or changed; applying it again"
        );
        tokio::time::sleep(delay).await;
        watched.applied = Version::of(&apply_until_done(&api, &desired).await);
    }
    // A watcher with a backoff does not end; returning would stop the controller with it.
    std::future::pending().await
}

/// Applies `desired`, trying again after a failure (1 s, 2 s, 4 s … up to 5 minutes), and
/// returns the DaemonSet as applied.
async fn apply_until_done(api: &Api<DaemonSet>, desired: &Stamped<DaemonSet>) -> DaemonSet {
    let mut attempt = 1;
    loop {
        match apply::apply(api, &desired.object).await {
            Ok(applied) => return applied,
            Err(error) => {
                let delay = backoff_delay(attempt);
                tracing::warn!(%error, ?delay, "cannot apply the volume preparer; trying again");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
    }
}

/// The DaemonSet as its watch shows it, and the operator's own last apply of it.
#[derive(Debug, Default)]
struct Watched {
    /// What the watch last said of it; `None` while it is gone.
    live: Option<DaemonSet>,
    /// Whether `live` is whole: not while a list (a failed watch lists again) is under
    /// way, since what is missing then may only not have arrived yet.
    listed: bool,
    /// The version of the operator's last apply.
    applied: Option<Version>,
}

impl Watched {
    /// Takes in `event`; returns whether the watch now shows the DaemonSet whole.
    fn see(&mut self, event: watcher::Event<DaemonSet>) -> bool {
        match event {
            watcher::Event::Init => {
                self.live = None;
                self.listed = false;
            }
            watcher::Event::InitApply(daemon_set) => self.live = Some(daemon_set),
            watcher::Event::InitDone => self.listed = true,
            watcher::Event::Apply(daemon_set) => self.live = Some(daemon_set),
            watcher::Event::Delete(_) => self.live = None,
        }
        self.listed
    }

    /// Whether to apply `desired` again: the DaemonSet is gone, or a field the operator
    /// sets differs in a version not older than the operator's last apply. Older versions
    /// are events of a change the operator has put back already, which queued while it
    /// waited.
    fn to_apply(&self, desired: &Stamped<DaemonSet>) -> Result<bool> {
        let live_version = self.live.as_ref().and_then(Version::of);
        let older_than_applied = match (live_version, &self.applied) {
            (Some(live), Some(applied)) => {
                live.uid == applied.uid && live.generation < applied.generation
            }
            _ => false,
        };
        Ok(!older_than_applied && !desired.is_current(self.live.as_ref())?)
    }
}

/// Which DaemonSet, and which version of its spec.
#[derive(Debug)]
struct Version {
    /// Its uid: another one once it was deleted and made again.
    uid: String,
    /// Its `metadata.generation`, which each change of its spec raises.
    generation: i64,
}

impl Version {
    /// The version of `daemon_set`, as the API server sets it on every object it serves.
    fn of(daemon_set: &DaemonSet) -> Option<Self> {
        Some(Self {
            uid: daemon_set.metadata.uid.clone()?,
            generation: daemon_set.metadata.generation?,
        })
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

    /// The preparer as the operator would apply it, and as the API server would serve it.
    fn desired_and_served(generation: i64) -> (Stamped<DaemonSet>, DaemonSet) {
        let desired = apply::stamp(volume_preparer::build(&Volumes::default())).unwrap();
        let mut served = at(desired.object.clone(), generation);
        served.metadata.uid = Some("uid-1".to_owned());
        (desired, served)
    }

    /// `daemon_set` at `generation`.
    fn at(mut daemon_set: DaemonSet, generation: i64) -> DaemonSet {
        daemon_set.metadata.generation = Some(generation);
        daemon_set
    }

    #[test]
    fn the_watch_is_acted_on_only_once_its_list_is_complete() {
        let (_, served) = desired_and_served(1);
        let mut watched = Watched::default();
        assert!(!watched.see(watcher::Event::Init));
        assert!(!watched.see(watcher::Event::InitApply(served.clone())));
        assert!(watched.see(watcher::Event::InitDone));
        assert_eq!(watched.live.as_ref(), Some(&served));
        assert!(watched.see(watcher::Event::Delete(served.clone())));
        assert_eq!(watched.live, None);
        assert!(watched.see(watcher::Event::Apply(served.clone())));
        assert_eq!(watched.live.as_ref(), Some(&served));
        // A relist forgets what the watch showed until it is complete again.
        assert!(!watched.see(watcher::Event::Init));
        assert_eq!(watched.live, None);
        assert!(
            watched.see(watcher::Event::InitDone),
            "listed empty: it is gone"
        );
    }

    #[test]
    fn a_preparer_deleted_or_changed_after_the_last_apply_is_applied_again_and_no_other() {
        let (desired, served) = desired_and_served(2);
        let mut changed = at(served.clone(), 3);
        let pod = changed.spec.template.spec.as_mut().unwrap();
        pod.containers[0].image = Some("elsewhere/image:1".to_owned());
        let to_apply = |live: Option<&DaemonSet>, applied: &DaemonSet| {
            Watched {
                live: live.cloned(),
                listed: true,
                applied: Version::of(applied),
            }
            .to_apply(&desired)
            .unwrap()
        };
        assert!(!to_apply(Some(&served), &served), "as applied");
        assert!(to_apply(None, &served), "deleted");
        assert!(to_apply(Some(&changed), &served), "its image changed");
        let put_back = at(served.clone(), 4);
        assert!(
            !to_apply(Some(&changed), &put_back),
            "a change the last apply has put back, seen late"
        );
        let mut made_again = at(changed.clone(), 1);
        made_again.metadata.uid = Some("uid-2".to_owned());
        assert!(
            to_apply(Some(&made_again), &put_back),
            "changed in a DaemonSet made again since, whose generation starts anew"
        );
    }

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
