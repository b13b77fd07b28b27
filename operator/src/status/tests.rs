use flaskmongo_crd::{
    CONDITION_DEGRADED, CONDITION_PROGRESSING, CONDITION_READY, FlaskMongoAppSpec,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::time::{Duration, Instant};

use super::*;
use crate::children::tests::app;

fn time(second: i64) -> Time {
    Time(Timestamp::from_second(second).unwrap())
}

fn deployment(wanted: i32, ready: i32) -> Deployment {
    let mut deployment = Deployment::default();
    deployment.metadata.generation = Some(2);
    deployment.spec.replicas = Some(wanted);
    deployment.status = Some(DeploymentStatus {
        observed_generation: Some(2),
        replicas: Some(wanted),
        updated_replicas: Some(wanted),
        ready_replicas: Some(ready),
        ..DeploymentStatus::default()
    });
    deployment
}

fn statefulset(ready: i32) -> StatefulSet {
    StatefulSet {
        status: Some(StatefulSetStatus {
            ready_replicas: Some(ready),
            replicas: 1,
            ..StatefulSetStatus::default()
        }),
        ..StatefulSet::default()
    }
}

fn service(node_port: Option<i32>) -> Service {
    Service {
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 80,
                node_port,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn all<'a>(d: &'a Deployment, s: &'a Service, m: &'a StatefulSet) -> Observed<'a> {
    Observed {
        deployment: Some(d),
        web_service: Some(s),
        statefulset: Some(m),
        ..Observed::default()
    }
}

fn condition<'a>(status: &'a FlaskMongoAppStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn all_children_ready_makes_the_app_ready() {
    let app = app("shop", "ns", FlaskMongoAppSpec::default());
    let (d, s, m) = (deployment(2, 2), service(Some(30080)), statefulset(1));
    let observed = all(&d, &s, &m);
    let status = compute(&app, &observed, &time(100));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&status, CONDITION_READY).status, "True");
    assert_eq!(condition(&status, CONDITION_READY).reason, "AllReady");
    assert_eq!(condition(&status, CONDITION_PROGRESSING).status, "False");
    assert_eq!(condition(&status, CONDITION_DEGRADED).status, "False");
    assert_eq!(
        status.web,
        WebStatus {
            replicas: 2,
            ready_replicas: 2,
            ready: "2/2".into()
        }
    );
    assert!(status.mongo_ready);
    assert_eq!(status.node_port, Some(30080));
    assert_eq!(
        status.message,
        "ready: web 2/2 on node port 30080, MongoDB ready"
    );
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
}

#[test]
fn missing_or_unready_children_keep_it_progressing() {
    let app = app("shop", "ns", FlaskMongoAppSpec::default());
    let status = compute(&app, &Observed::default(), &time(100));
    assert_eq!(condition(&status, CONDITION_READY).status, "False");
    assert_eq!(condition(&status, CONDITION_READY).reason, "WebNotReady");
    assert_eq!(condition(&status, CONDITION_PROGRESSING).status, "True");
    assert_eq!(status.web.ready, "0/0");

    let (d, m) = (deployment(3, 3), statefulset(0));
    let observed = Observed {
        deployment: Some(&d),
        statefulset: Some(&m),
        ..Observed::default()
    };
    let status = compute(&app, &observed, &time(100));
    assert_eq!(condition(&status, CONDITION_READY).reason, "MongoNotReady");
    assert!(
        status.message.contains("MongoDB") && status.message.contains("node port"),
        "{}",
        status.message
    );
}

#[test]
fn a_rollout_in_progress_is_progressing_but_ready() {
    let app = app("shop", "ns", FlaskMongoAppSpec::default());
    let mut d = deployment(2, 2);
    d.status.as_mut().unwrap().updated_replicas = Some(1);
    d.status.as_mut().unwrap().replicas = Some(3);
    let (s, m) = (service(Some(30001)), statefulset(1));
    let observed = all(&d, &s, &m);
    let status = compute(&app, &observed, &time(100));
    assert_eq!(condition(&status, CONDITION_READY).status, "True");
    assert_eq!(condition(&status, CONDITION_PROGRESSING).status, "True");
    assert_eq!(
        condition(&status, CONDITION_PROGRESSING).reason,
        "RollingOut"
    );
}

#[test]
fn a_failure_is_degraded_with_the_servers_message() {
    let app = app("shop", "ns", FlaskMongoAppSpec::default());
    let failure = Failure {
        reason: "Invalid".into(),
        message: "provided port is already allocated".into(),
    };
    let observed = Observed {
        failure: Some(failure),
        ..Observed::default()
    };
    let status = compute(&app, &observed, &time(100));
    let degraded = condition(&status, CONDITION_DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "Invalid")
    );
    assert_eq!(degraded.message, "provided port is already allocated");
    assert_eq!(status.message, "provided port is already allocated");
    assert_eq!(
        condition(&status, CONDITION_PROGRESSING).reason,
        "ReconcileFailed"
    );
}

#[test]
fn paused_says_so() {
    let spec = FlaskMongoAppSpec {
        paused: true,
        ..FlaskMongoAppSpec::default()
    };
    let status = compute(&app("shop", "ns", spec), &Observed::default(), &time(100));
    assert_eq!(condition(&status, CONDITION_PROGRESSING).reason, "Paused");
    assert!(status.message.contains("paused"));
}

#[test]
fn transition_times_move_only_on_transitions() {
    let mut app = app("shop", "ns", FlaskMongoAppSpec::default());
    let first = compute(&app, &Observed::default(), &time(100));
    app.status = Some(first.clone());
    let again = compute(&app, &Observed::default(), &time(200));
    assert_eq!(
        again, first,
        "an unchanged state is an unchanged status, so nothing is written"
    );

    let (d, s, m) = (deployment(2, 2), service(Some(30080)), statefulset(1));
    let observed = all(&d, &s, &m);
    let ready = compute(&app, &observed, &time(300));
    assert_eq!(
        condition(&ready, CONDITION_READY).last_transition_time,
        time(300)
    );
    assert_eq!(
        condition(&ready, CONDITION_DEGRADED).last_transition_time,
        time(100)
    );
}

#[test]
fn the_report_prefers_what_the_applies_returned_and_an_unchanged_one_is_not_written() {
    let mut app = app("shop", "ns", FlaskMongoAppSpec::default());
    let snapshot = crate::observe::Snapshot {
        deployment: Some(deployment(2, 2)),
        web_service: None,
        statefulset: Some(statefulset(1)),
        ..crate::observe::Snapshot::default()
    };
    // The Service was created by this reconcile: the apply's answer has its node port.
    let applied = crate::execute::Applied {
        web_service: Some(service(Some(30080))),
        ..crate::execute::Applied::default()
    };
    let status = report(&app, &snapshot, &applied, None);
    assert_eq!(status.node_port, Some(30080));
    assert_eq!(condition(&status, CONDITION_READY).status, "True");
    let mut writes = Writes::default();
    let now = Instant::now();
    assert_eq!(
        writes.decide(&app, &status, now),
        Write::Now,
        "a first status that is Ready"
    );

    app.status = Some(status);
    let again = report(&app, &snapshot, &applied, None);
    assert_eq!(
        writes.decide(&app, &again, now),
        Write::Skip,
        "the same state writes nothing"
    );
    let failure = Failure {
        reason: "Invalid".to_owned(),
        message: "refused".to_owned(),
    };
    let degraded = report(&app, &snapshot, &applied, Some(failure));
    assert_eq!(condition(&degraded, CONDITION_DEGRADED).status, "True");
    assert_eq!(writes.decide(&app, &degraded, now), Write::Now);
}

#[test]
fn the_credentials_secret_once_recorded_stays_recorded() {
    let mut app = app("shop", "ns", FlaskMongoAppSpec::default());
    let snapshot = crate::observe::Snapshot::default();
    let found = crate::execute::Applied {
        secret: Some("shop-mongo-credentials".to_owned()),
        ..crate::execute::Applied::default()
    };
    let status = report(&app, &snapshot, &found, None);
    assert_eq!(
        status.credentials_secret.as_deref(),
        Some("shop-mongo-credentials")
    );
    app.status = Some(status.clone());
    let later = report(&app, &snapshot, &crate::execute::Applied::default(), None);
    assert_eq!(
        later, status,
        "a later reconcile that left it keeps the record"
    );
}

/// The status of `app` with `ready` of `wanted` web pods ready, MongoDB and the Service
/// ready.
fn web_progress(app: &FlaskMongoApp, wanted: i32, ready: i32) -> FlaskMongoAppStatus {
    let (d, s, m) = (
        deployment(wanted, ready),
        service(Some(30080)),
        statefulset(1),
    );
    compute(app, &all(&d, &s, &m), &time(100))
}

/// Asserts that `status`, a moment after `start`, is written once [`PROGRESS_INTERVAL`]
/// has passed since `start`, and only then.
fn waits_out_the_interval(
    writes: &mut Writes,
    app: &FlaskMongoApp,
    status: &FlaskMongoAppStatus,
    start: Instant,
    why: &str,
) {
    let soon = start + Duration::from_millis(300);
    assert_eq!(
        writes.decide(app, status, soon),
        Write::After(Duration::from_millis(700)),
        "{why}"
    );
    assert_eq!(
        writes.decide(app, status, start + PROGRESS_INTERVAL),
        Write::Now
    );
}

#[test]
fn progress_alone_is_written_at_most_once_per_interval_and_milestones_at_once() {
    let app = app("shop", "ns", FlaskMongoAppSpec::default());
    let start = Instant::now();
    let mut writes = Writes::default();
    let none_ready = web_progress(&app, 3, 0);
    writes.record(&app, none_ready.clone(), start);

    let one_ready = web_progress(&app, 3, 1);
    assert_eq!(
        condition(&one_ready, CONDITION_READY).status,
        condition(&none_ready, CONDITION_READY).status
    );
    let soon = start + Duration::from_millis(300);
    waits_out_the_interval(
        &mut writes,
        &app,
        &one_ready,
        start,
        "a count a moment after the last write waits for the rest of the interval",
    );
    let all_ready = web_progress(&app, 3, 3);
    assert_eq!(condition(&all_ready, CONDITION_READY).status, "True");
    assert_eq!(
        writes.decide(&app, &all_ready, soon),
        Write::Now,
        "Ready turning True is written at once"
    );
}

#[test]
fn an_own_write_not_yet_cached_is_not_repeated() {
    let mut app = app("shop", "ns", FlaskMongoAppSpec::default());
    let start = Instant::now();
    let mut writes = Writes::default();
    let before = web_progress(&app, 2, 0);
    app.status = Some(before.clone());
    let ready = web_progress(&app, 2, 2);
    writes.record(&app, ready.clone(), start);

    // The cached object still shows the status from before the write.
    let later = start + Duration::from_secs(2);
    assert_eq!(writes.decide(&app, &ready, later), Write::Skip);
    assert_eq!(
        writes.decide(&app, &before, later),
        Write::Now,
        "going back to what the cache shows is a change of what the API server holds"
    );
    // Long after, the cache is trusted again.
    let much_later = start + OWN_WRITE_MEMORY;
    assert_eq!(writes.decide(&app, &ready, much_later), Write::Now);
    // Another object created under the same name has another uid.
    let mut again = app.clone();
    again.metadata.uid = Some("another-uid".to_owned());
    assert_eq!(writes.decide(&again, &ready, later), Write::Now);
    // Old writes are forgotten when the next is recorded.
    writes.record(&again, ready, much_later);
    assert_eq!(writes.written.len(), 1);
}

#[test]
fn a_first_status_waits_a_moment_unless_ready_or_degraded() {
    let mut app = app("shop", "ns", FlaskMongoAppSpec::default());
    // The Secret this process created, recorded before any status is written.
    app.status = Some(FlaskMongoAppStatus {
        credentials_secret: Some("shop-mongo-credentials".to_owned()),
        ..FlaskMongoAppStatus::default()
    });
    let start = Instant::now();
    let mut writes = Writes::default();
    let none_ready = web_progress(&app, 2, 0);
    assert_eq!(
        writes.decide(&app, &none_ready, start),
        Write::After(PROGRESS_INTERVAL)
    );
    let one_ready = web_progress(&app, 2, 1);
    let soon = start + Duration::from_millis(300);
    waits_out_the_interval(
        &mut writes,
        &app,
        &one_ready,
        start,
        "the wait counts from the first computation, not from the last",
    );
    let ready = web_progress(&app, 2, 2);
    assert_eq!(writes.decide(&app, &ready, soon), Write::Now);
    let failure = Failure {
        reason: "Invalid".to_owned(),
        message: "refused".to_owned(),
    };
    let (d, s, m) = (deployment(2, 0), service(None), statefulset(0));
    let degraded = compute(
        &app,
        &Observed {
            failure: Some(failure),
            ..all(&d, &s, &m)
        },
        &time(100),
    );
    assert_eq!(writes.decide(&app, &degraded, soon), Write::Now);

    // Once written, the wait of a first status is over; so is it for an object whose
    // first status could not be written for longer than the memory of writes.
    writes.record(&app, one_ready.clone(), soon);
    assert!(writes.first_computed.is_empty());
    let mut other = app.clone();
    other.metadata.uid = Some("another-uid".to_owned());
    writes.decide(&other, &none_ready, soon);
    writes.record(&app, one_ready, soon + OWN_WRITE_MEMORY);
    assert!(writes.first_computed.is_empty());
}

#[test]
fn a_volume_being_prepared_is_what_mongodb_waits_for() {
    let app = app("shop", "ns", FlaskMongoAppSpec::default());
    let instance = crate::children::Instance::new(&app).unwrap();
    let placement =
        crate::children::persistent_volume::Placement::new(&instance, crate::DEFAULT_VOLUME_ROOT);
    let pod = crate::children::volume_preparation::build(
        &instance,
        &placement,
        &crate::Volumes::default(),
    );
    let waiting = format!(
        "MongoDB's volume to be prepared by pod flaskmongo-volumes/prepare-volume-{}",
        instance.uid()
    );
    let (d, s, m) = (deployment(2, 2), service(Some(30080)), statefulset(0));
    let mut snapshot = crate::observe::Snapshot {
        deployment: Some(d),
        web_service: Some(s),
        statefulset: Some(m),
        volume_preparation: Some(pod),
        ..crate::observe::Snapshot::default()
    };
    let applied = crate::execute::Applied::default();
    let status = report(&app, &snapshot, &applied, None);
    assert_eq!(condition(&status, CONDITION_READY).reason, "MongoNotReady");
    assert!(status.message.contains(&waiting), "{}", status.message);

    // Done: MongoDB's own readiness is what is left.
    if let Some(pod) = &mut snapshot.volume_preparation {
        pod.status.get_or_insert_default().phase = Some("Succeeded".to_owned());
    }
    let status = report(&app, &snapshot, &applied, None);
    assert!(!status.message.contains("prepared"), "{}", status.message);
    assert!(status.message.contains("MongoDB"), "{}", status.message);
}
