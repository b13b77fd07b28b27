//! Status: what a `FlaskMongoApp` reports, computed from the snapshot its plan was made
//! from and the outcome of executing that plan (what the applies returned, and the
//! failure if any).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use flaskmongo_crd::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, FlaskMongoApp, FlaskMongoAppStatus,
    WebStatus,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::children::volume_preparation::{self, Progress};
use crate::execute::Applied;
use crate::observe::Snapshot;

/// Why the last reconcile did not reach the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// CamelCase reason.
    pub reason: String,
    /// The message, with the API server's own words where it refused something.
    pub message: String,
}

/// What the operator saw of the children.
#[derive(Debug, Clone, Default)]
pub struct Observed<'a> {
    /// The web Deployment, if it exists.
    pub deployment: Option<&'a Deployment>,
    /// The web Service, if it exists.
    pub web_service: Option<&'a Service>,
    /// The MongoDB StatefulSet, if it exists.
    pub statefulset: Option<&'a StatefulSet>,
    /// The pod preparing MongoDB's volume, while it runs.
    pub volume_preparation: Option<&'a Pod>,
    /// The failure of this reconcile, if any.
    pub failure: Option<Failure>,
    /// The credentials Secret, when this reconcile created it or found it there.
    pub credentials_secret: Option<&'a str>,
}

/// The status of `app`, from `snapshot` updated with what the reconcile's applies
/// returned, and its `failure`. [`Writes::decide`] tells whether it is worth a write.
pub fn report(
    app: &FlaskMongoApp,
    snapshot: &Snapshot,
    applied: &Applied,
    failure: Option<Failure>,
) -> FlaskMongoAppStatus {
    let observed = Observed {
        deployment: applied.deployment.as_ref().or(snapshot.deployment.as_ref()),
        web_service: applied
            .web_service
            .as_ref()
            .or(snapshot.web_service.as_ref()),
        statefulset: applied
            .statefulset
            .as_ref()
            .or(snapshot.statefulset.as_ref()),
        volume_preparation: applied
            .volume_preparation
            .as_ref()
            .or(snapshot.volume_preparation.as_ref())
            .filter(|pod| volume_preparation::progress(pod) == Progress::Running),
        failure,
        credentials_secret: applied.secret.as_deref(),
    };
    // Whole seconds, as the API server stores them.
    let now =
        Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now());
    compute(app, &observed, &Time(now))
}

/// Shortest time between two status writes of one object that differ only in progress:
/// pods counted one by one as they start would otherwise cost a write each.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long this process trusts its own last status write over the cached object: the
/// watch brings the write back within milliseconds, this only bounds the memory.
pub const OWN_WRITE_MEMORY: Duration = Duration::from_secs(10);

/// What to do with a computed status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The API server already holds it.
    Skip,
    /// Write it now.
    Now,
    /// Only progress changed, and the last write was a moment ago: reconcile again after
    /// this long, and write what is true then.
    After(Duration),
}

/// The status this process last wrote or queued for each object (by uid), and when; and
/// when it first computed one for an object that has none yet.
#[derive(Debug, Default)]
pub struct Writes {
    written: HashMap<String, (FlaskMongoAppStatus, Instant)>,
    first_computed: HashMap<String, Instant>,
}

impl Writes {
    /// Whether to write `status` for `app` at `now`. A change of a condition's status, the
    /// observed generation, a failure, the node port or the Secret is written at once;
    /// a change of progress alone (counts, messages) at most once per
    /// [`PROGRESS_INTERVAL`]. An object's first status waits as long after its first
    /// computation unless it is already Ready or Degraded: a new object that reaches Ready
    /// within that time (on simulated nodes, about 0.2 s) then costs one write instead of
    /// two. A status
    /// equal to this process's own recent write is not written again while the cache
    /// still shows the one before it.
    pub fn decide(
        &mut self,
        app: &FlaskMongoApp,
        status: &FlaskMongoAppStatus,
        now: Instant,
    ) -> Write {
        let uid = app.metadata.uid.as_deref().unwrap_or_default();
        let recent = self
            .written
            .get(uid)
            .map(|(written, at)| (written, now.saturating_duration_since(*at)))
            .filter(|(_, age)| *age < OWN_WRITE_MEMORY);
        // Before the first write, all a status can hold is the Secret this process recorded.
        let stored = recent
            .map(|(written, _)| written)
            .or(app.status.as_ref())
            .filter(|stored| !stored.conditions.is_empty());
        let Some(stored) = stored else {
            if is_true(status, CONDITION_READY) || is_true(status, CONDITION_DEGRADED) {
                return Write::Now;
            }
            let first = match self.first_computed.get(uid) {
                Some(first) => *first,
                None => {
                    self.first_computed.insert(uid.to_owned(), now);
                    now
                }
            };
            return wait_rest(now.saturating_duration_since(first));
        };
        if stored == status {
            return Write::Skip;
        }
        match recent {
            Some((_, age)) if milestones(stored) == milestones(status) => wait_rest(age),
            _ => Write::Now,
        }
    }

    /// Remembers that `status` was written or queued for `app` at `now`, and forgets what is
    /// older than [`OWN_WRITE_MEMORY`]: here, not on every reconcile's [`Writes::decide`].
    pub fn record(&mut self, app: &FlaskMongoApp, status: FlaskMongoAppStatus, now: Instant) {
        self.forget_before(now);
        if let Some(uid) = &app.metadata.uid {
            self.first_computed.remove(uid);
            self.written.insert(uid.clone(), (status, now));
        }
    }

    /// Forgets the write recorded for the object `uid`, which did not reach the API server.
    pub fn forget(&mut self, uid: &str) {
        self.written.remove(uid);
    }

    /// Forgets what is older than [`OWN_WRITE_MEMORY`]: the cache shows such a write, and
    /// an object whose first status is that old was deleted or cannot be written (its wait
    /// is over either way).
    fn forget_before(&mut self, now: Instant) {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < OWN_WRITE_MEMORY;
        self.written.retain(|_, (_, at)| fresh(at));
        self.first_computed.retain(|_, at| fresh(at));
    }
}

/// Write now if `age` is a whole [`PROGRESS_INTERVAL`], else after the rest of it.
fn wait_rest(age: Duration) -> Write {
    match PROGRESS_INTERVAL.checked_sub(age) {
        Some(rest) if !rest.is_zero() => Write::After(rest),
        _ => Write::Now,
    }
}

fn is_true(status: &FlaskMongoAppStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// What a user acts on: the generation described, each condition's status, the failure,
/// the node port and the Secret.
#[derive(PartialEq)]
struct Milestones<'a> {
    observed_generation: Option<i64>,
    conditions: Vec<(&'a str, &'a str)>,
    failure: Option<&'a Condition>,
    node_port: Option<i32>,
    credentials_secret: Option<&'a str>,
}

fn milestones(status: &FlaskMongoAppStatus) -> Milestones<'_> {
    Milestones {
        observed_generation: status.observed_generation,
        conditions: status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect(),
        failure: status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_DEGRADED && c.status == "True"),
        node_port: status.node_port,
        credentials_secret: status.credentials_secret.as_deref(),
    }
}

/// The status for `app` given its observed children; conditions whose status did not
/// change keep their `lastTransitionTime`.
pub fn compute(app: &FlaskMongoApp, observed: &Observed<'_>, now: &Time) -> FlaskMongoAppStatus {
    let generation = app.metadata.generation;
    let web = web_state(observed.deployment);
    let mongo = mongo_state(observed.statefulset);
    let node_port = observed
        .web_service
        .and_then(|service| service.spec.as_ref()?.ports.as_ref()?.first()?.node_port);

    let ready = web.ready && mongo.ready && node_port.is_some();
    let rolled_out = web.rolled_out && mongo.rolled_out;
    let waiting_for: Vec<String> = [
        (!web.ready).then(|| {
            format!(
                "web pods ({}/{} ready)",
                web.status.ready_replicas, web.status.replicas
            )
        }),
        (!mongo.ready).then(|| match observed.volume_preparation {
            Some(pod) => format!(
                "MongoDB's volume to be prepared by pod {}/{}",
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default()
            ),
            None => "MongoDB".to_owned(),
        }),
        node_port
            .is_none()
            .then(|| "the web Service's node port".to_owned()),
        (ready && !rolled_out).then(|| "the rollout to finish".to_owned()),
    ]
    .into_iter()
    .flatten()
    .collect();

    let (ready_reason, ready_message) = if ready {
        ("AllReady", "web pods and MongoDB are ready".to_owned())
    } else if !web.ready {
        (
            "WebNotReady",
            format!("waiting for {}", waiting_for.join(", ")),
        )
    } else if !mongo.ready {
        (
            "MongoNotReady",
            format!("waiting for {}", waiting_for.join(", ")),
        )
    } else {
        (
            "ServiceNotReady",
            format!("waiting for {}", waiting_for.join(", ")),
        )
    };
    let (progressing, progressing_reason, progressing_message) = if app.spec.paused {
        (
            false,
            "Paused",
            "spec.paused is true: the operator changes nothing".to_owned(),
        )
    } else if observed.failure.is_some() {
        (
            false,
            "ReconcileFailed",
            "the last reconcile failed; see the Degraded condition".to_owned(),
        )
    } else if waiting_for.is_empty() {
        (
            false,
            "Reconciled",
            "every child matches the spec".to_owned(),
        )
    } else {
        (
            true,
            "RollingOut",
            format!("waiting for {}", waiting_for.join(", ")),
        )
    };
    let (degraded, degraded_reason, degraded_message) = match &observed.failure {
        Some(failure) => (true, failure.reason.as_str(), failure.message.clone()),
        None => (false, "AsExpected", String::new()),
    };

    let message = if let Some(failure) = &observed.failure {
        failure.message.clone()
    } else if app.spec.paused {
        progressing_message.clone()
    } else if waiting_for.is_empty() {
        match node_port {
            Some(port) => format!(
                "ready: web {} on node port {port}, MongoDB ready",
                web.status.ready
            ),
            None => ready_message.clone(),
        }
    } else {
        format!("waiting for {}", waiting_for.join(", "))
    };

    let previous = app
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_owned();
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time,
        }
    };
    FlaskMongoAppStatus {
        observed_generation: generation,
        conditions: vec![
            condition(CONDITION_READY, ready, ready_reason, ready_message),
            condition(
                CONDITION_PROGRESSING,
                progressing,
                progressing_reason,
                progressing_message,
            ),
            condition(
                CONDITION_DEGRADED,
                degraded,
                degraded_reason,
                degraded_message,
            ),
        ],
        web: web.status,
        mongo_ready: mongo.ready,
        node_port,
        message,
        // Once recorded, kept: the Secret outlives the object's other children.
        credentials_secret: observed
            .credentials_secret
            .map(str::to_owned)
            .or_else(|| app.status.as_ref()?.credentials_secret.clone()),
    }
}

struct TierState {
    ready: bool,
    rolled_out: bool,
}

struct WebState {
    ready: bool,
    rolled_out: bool,
    status: WebStatus,
}

fn web_state(deployment: Option<&Deployment>) -> WebState {
    let Some(deployment) = deployment else {
        return WebState {
            ready: false,
            rolled_out: false,
            status: WebStatus {
                ready: "0/0".into(),
                ..WebStatus::default()
            },
        };
    };
    let wanted = deployment.spec.replicas.unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let ready_replicas = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let current = status.observed_generation >= deployment.metadata.generation;
    WebState {
        ready: wanted > 0 && ready_replicas >= wanted,
        rolled_out: current && updated >= wanted && status.replicas.unwrap_or(0) <= wanted,
        status: WebStatus {
            replicas: wanted,
            ready_replicas,
            ready: format!("{ready_replicas}/{wanted}"),
        },
    }
}

fn mongo_state(statefulset: Option<&StatefulSet>) -> TierState {
    let Some(statefulset) = statefulset else {
        return TierState {
            ready: false,
            rolled_out: false,
        };
    };
    let status = statefulset.status.clone().unwrap_or_default();
    let current = status.observed_generation >= statefulset.metadata.generation;
    let revisions_match =
        status.update_revision.is_none() || status.update_revision == status.current_revision;
    TierState {
        ready: status.ready_replicas.unwrap_or(0) >= 1,
        rolled_out: current && revisions_match,
    }
}

#[cfg(test)]
mod tests;
