use std::time::Instant;

use flaskmongo_crd::{FlaskMongoAppSpec, FlaskMongoAppStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;

use super::*;
use crate::children::tests::{NODE, app, finished};
use crate::execute::Applied;
use crate::labels::INSTANCE;
use crate::observe::Unseen;

const PASSWORD: &str = "abcdefghijklmnopqrstuvwxyz012345";
const OTHER_FINALIZER: &str = "example.com/keep";
const ROOT: &str = "/var/lib/flaskmongo";
const PREPARATION_NAMESPACE: &str = "flaskmongo-volumes";

fn volumes() -> Volumes {
    Volumes {
        root: ROOT.to_owned(),
        preparation_namespace: PREPARATION_NAMESPACE.to_owned(),
        preparation_image: "flaskmongo/operator:test".to_owned(),
    }
}

/// A live object `shop` in `team-a` with our finalizer, as the first reconcile leaves one
/// under `Delete` and an earlier version left every object.
fn shop(spec: FlaskMongoAppSpec) -> FlaskMongoApp {
    let mut app = app("shop", "team-a", spec);
    app.metadata.finalizers = Some(vec![OTHER_FINALIZER.to_owned(), FINALIZER.to_owned()]);
    app
}

/// `app` with the credentials Secret recorded in its status, as after its first reconcile.
fn recorded(mut app: FlaskMongoApp) -> FlaskMongoApp {
    app.status = Some(FlaskMongoAppStatus {
        credentials_secret: Some(format!("{}-mongo-credentials", app.name_any())),
        ..FlaskMongoAppStatus::default()
    });
    app
}

/// `app` being deleted.
fn deleting(mut app: FlaskMongoApp) -> FlaskMongoApp {
    app.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
    app
}

/// What the caches hold of a new object: nothing of its own, and the volume preparer Ready
/// on [`NODE`].
fn fresh() -> Snapshot {
    Snapshot {
        preparer_nodes: vec![NODE.to_owned()],
        ..Snapshot::default()
    }
}

fn planned(app: &FlaskMongoApp, snapshot: &Snapshot) -> Plan {
    let instance = Instance::new(app).unwrap();
    plan(app, &instance, snapshot, &volumes(), || PASSWORD.to_owned()).unwrap()
}

fn converge(app: &FlaskMongoApp, snapshot: &Snapshot) -> Converge {
    match planned(app, snapshot) {
        Plan::Converge(converge) => *converge,
        other => panic!("expected converging, planned {other:?}"),
    }
}

fn finalize(app: &FlaskMongoApp, snapshot: &Snapshot) -> Finalize {
    match planned(app, snapshot) {
        Plan::Finalize(finalize) => finalize,
        other => panic!("expected a clean-up, planned {other:?}"),
    }
}

fn applied<K: std::fmt::Debug>(step: Step<K>) -> Apply<K> {
    match step {
        Step::Apply(apply) => apply,
        other => panic!("expected an apply, planned {other:?}"),
    }
}

/// What the caches hold once every write of `app`'s plans has succeeded, round after
/// round (a preparation pod, if any, succeeding on [`NODE`]), until a plan writes nothing.
fn converged(app: &FlaskMongoApp) -> Snapshot {
    let mut snapshot = fresh();
    for _round in 0..5 {
        let writes = converge(app, &snapshot).children;
        if !settle(&mut snapshot, writes) {
            snapshot.claim = Some(claim());
            return snapshot;
        }
    }
    panic!("still writing after 5 rounds: {snapshot:?}");
}

/// `snapshot` after `writes` succeeded; whether they changed anything.
fn settle(snapshot: &mut Snapshot, writes: Writes) -> bool {
    fn settled<K>(live: &mut Option<K>, step: Step<K>) -> bool {
        match step {
            Step::Leave => return false,
            Step::Apply(apply) => *live = Some(apply.object),
            Step::Delete(_) => *live = None,
        }
        true
    }
    let Writes {
        mongo_service,
        persistent_volume,
        statefulset,
        web_service,
        deployment,
        hpa,
        network_policy,
        volume_preparation,
    } = writes;
    let mut volume = snapshot.volumes.pop();
    let changed = [
        settled(&mut snapshot.deployment, deployment),
        settled(&mut snapshot.web_service, web_service),
        settled(&mut snapshot.hpa, hpa),
        settled(&mut snapshot.network_policy, network_policy),
        settled(&mut snapshot.statefulset, statefulset),
        settled(&mut snapshot.mongo_service, mongo_service),
        settled(&mut volume, persistent_volume),
        settled(&mut snapshot.volume_preparation, volume_preparation.step),
    ];
    snapshot.volumes.extend(volume);
    snapshot.deployment = snapshot.deployment.take().map(owning_replicas);
    snapshot.volume_preparation = snapshot
        .volume_preparation
        .take()
        .map(|pod| finished(pod, "Succeeded"));
    changed.contains(&true)
}

/// `deployment` with the managed fields the operator's apply leaves when it sets
/// `replicas` (as the cache keeps them).
fn owning_replicas(mut deployment: Deployment) -> Deployment {
    if deployment.spec.replicas.is_some() {
        deployment.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(MANAGER.to_owned()),
            operation: Some("Apply".to_owned()),
            fields_v1: Some(FieldsV1(json!({ "f:spec": { "f:replicas": {} } }))),
            ..ManagedFieldsEntry::default()
        }]);
    }
    deployment
}

fn claim() -> PartialObjectMeta<PersistentVolumeClaim> {
    PartialObjectMeta {
        metadata: ObjectMeta {
            name: Some("data-shop-mongo-0".to_owned()),
            namespace: Some("team-a".to_owned()),
            ..ObjectMeta::default()
        },
        ..PartialObjectMeta::default()
    }
}

fn terminating(mut meta: ObjectMeta) -> ObjectMeta {
    meta.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
    meta
}

fn spec(change: impl FnOnce(&mut FlaskMongoAppSpec)) -> FlaskMongoAppSpec {
    let mut spec = FlaskMongoAppSpec::default();
    change(&mut spec);
    spec
}

#[test]
fn a_new_object_gets_every_child_its_secret_and_under_delete_the_finalizer() {
    let new = |spec| {
        let mut app = shop(spec);
        app.metadata.finalizers = Some(vec![OTHER_FINALIZER.to_owned()]);
        app
    };
    let deletes_data = new(spec(|s| {
        s.mongo.storage.deletion_policy = DeletionPolicy::Delete;
    }));
    assert_eq!(
        converge(&deletes_data, &fresh()).finalizers,
        Some(vec![OTHER_FINALIZER.to_owned(), FINALIZER.to_owned()]),
        "under Delete ours is added after the others"
    );
    let Converge {
        finalizers,
        secret,
        children,
    } = converge(&new(FlaskMongoAppSpec::default()), &fresh());
    assert_eq!(
        finalizers, None,
        "under Retain nothing is left to do at deletion, so nothing holds it"
    );
    let Once::Create(secret) = secret else {
        panic!("expected a new Secret, planned {secret:?}");
    };
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some("shop-mongo-credentials")
    );
    assert_eq!(
        secret.string_data.unwrap()[children::PASSWORD_KEY],
        PASSWORD
    );
    let Writes {
        mongo_service,
        persistent_volume,
        statefulset,
        web_service,
        deployment,
        hpa,
        network_policy,
        volume_preparation,
    } = children;
    assert!(!applied(mongo_service).existed);
    assert!(!applied(network_policy).existed);
    assert!(!applied(persistent_volume).existed);
    assert_eq!(volume_preparation.namespace, PREPARATION_NAMESPACE);
    assert_eq!(volume_preparation.step, Step::Leave, "no pod of its own");
    assert!(!applied(statefulset).existed);
    assert!(!applied(web_service).existed);
    assert!(!applied(deployment).existed);
    let hpa = applied(hpa);
    assert!(!hpa.existed);
    assert!(
        hpa.object
            .annotations()
            .contains_key(apply::HASH_ANNOTATION),
        "every applied child carries the hash of its content"
    );
}

#[test]
fn a_converged_object_plans_no_write() {
    let app = recorded(shop(FlaskMongoAppSpec::default()));
    let mut snapshot = converged(&app);
    // The autoscaler's count is not the operator's to restore.
    if let Some(deployment) = &mut snapshot.deployment {
        deployment.spec.replicas = Some(4);
        deployment.metadata.managed_fields = None;
    }
    let Converge {
        finalizers,
        secret,
        children,
    } = converge(&app, &snapshot);
    assert_eq!(finalizers, None);
    assert!(matches!(secret, Once::Leave), "{secret:?}");
    assert_eq!(children, Writes::none(PREPARATION_NAMESPACE));
}

#[test]
fn a_paused_object_plans_no_write_at_all() {
    let mut app = app("shop", "team-a", spec(|s| s.paused = true));
    app.spec.web.image = "flaskmongo/webapp:paused".to_owned();
    let Converge {
        finalizers,
        secret,
        children,
    } = converge(&app, &fresh());
    assert_eq!(finalizers, None, "not even the finalizer");
    assert!(matches!(secret, Once::Leave), "{secret:?}");
    assert_eq!(children, Writes::none(PREPARATION_NAMESPACE));
}

#[test]
fn replicas_are_handed_over_to_the_autoscaler() {
    let fixed = |replicas| {
        spec(|s| {
            s.autoscaling.enabled = false;
            s.web.replicas = replicas;
        })
    };
    let autoscaled = spec(|s| s.autoscaling.min_replicas = 3);
    let live = |spec: FlaskMongoAppSpec, owned: bool| {
        let mut spec = spec;
        spec.web.image = "flaskmongo/webapp:before".to_owned();
        let mut deployment = converged(&shop(spec)).deployment.unwrap();
        if !owned {
            deployment.metadata.managed_fields = None;
        }
        deployment
    };
    // (case, spec, live Deployment, replicas applied, replicas held by the second manager)
    let cases = [
        (
            "created with autoscaling: starts at the autoscaler's minimum",
            autoscaled.clone(),
            None,
            Some(3),
            None,
        ),
        (
            "autoscaling turned on: the count is held while the operator lets go of it",
            autoscaled.clone(),
            Some(live(fixed(4), true)),
            None,
            Some(4),
        ),
        (
            "already handed over: nothing to hold",
            autoscaled.clone(),
            Some(live(autoscaled.clone(), false)),
            None,
            None,
        ),
        ("created without autoscaling", fixed(3), None, Some(3), None),
        (
            "autoscaling turned off: the spec's count",
            fixed(3),
            Some(live(autoscaled.clone(), false)),
            Some(3),
            None,
        ),
    ];
    for (case, spec, deployment, replicas, held) in cases {
        let snapshot = Snapshot {
            deployment,
            ..fresh()
        };
        let apply = applied(converge(&shop(spec), &snapshot).children.deployment);
        assert_eq!(apply.object.spec.replicas, replicas, "{case}");
        let hold = apply.first.map(|hold| {
            assert_eq!(hold.manager, REPLICAS_HANDOFF_MANAGER, "{case}");
            assert_eq!(hold.patch["kind"], "Deployment", "{case}");
            assert_eq!(hold.patch["metadata"]["name"], "shop-web", "{case}");
            assert_eq!(hold.patch["metadata"]["namespace"], "team-a", "{case}");
            hold.patch["spec"]["replicas"].as_i64().unwrap()
        });
        assert_eq!(hold, held, "{case}");
    }
}

#[test]
fn the_autoscaler_goes_when_autoscaling_is_turned_off() {
    let on = shop(FlaskMongoAppSpec::default());
    let off = shop(spec(|s| s.autoscaling.enabled = false));
    let ours = converged(&on).hpa;
    let mut another_objects = ours.clone().unwrap();
    another_objects
        .labels_mut()
        .insert(INSTANCE.to_owned(), "other".to_owned());
    let mut going = ours.clone().unwrap();
    going.metadata = terminating(going.metadata);
    // (case, object, cached autoscaler, step)
    let cases = [
        (
            "autoscaling off, ours cached: deleted",
            &off,
            ours.clone(),
            Some(Step::Delete("shop-web".to_owned())),
        ),
        (
            "autoscaling off, none cached",
            &off,
            None,
            Some(Step::Leave),
        ),
        (
            "autoscaling off, the cached one is another object's",
            &off,
            Some(another_objects),
            Some(Step::Leave),
        ),
        (
            "autoscaling off, already being deleted",
            &off,
            Some(going),
            Some(Step::Leave),
        ),
        ("autoscaling on, none cached: applied", &on, None, None),
    ];
    for (case, app, hpa, expected) in cases {
        let snapshot = Snapshot { hpa, ..fresh() };
        let step = converge(app, &snapshot).children.hpa;
        match expected {
            Some(expected) => assert_eq!(step, expected, "{case}"),
            None => assert!(!applied(step).existed, "{case}"),
        }
    }
}

#[test]
fn a_secret_is_generated_only_where_no_retained_data_needs_the_old_one() {
    #[derive(Debug)]
    enum Expect {
        Leave,
        Create,
        /// Look the Secret up by name, and report the data it opens as missing it.
        Confirm(&'static str),
    }
    let app = shop(FlaskMongoAppSpec::default());
    let volume = converged(&app).volumes;
    let pv = "PersistentVolume team-a.shop.mongo";
    let pvc = "PersistentVolumeClaim data-shop-mongo-0";
    // (Secret recorded in the status, volume cached, claim cached, decision)
    let cases = [
        (true, false, false, Expect::Leave),
        (true, true, true, Expect::Leave),
        (false, false, false, Expect::Create),
        (false, true, false, Expect::Confirm(pv)),
        (false, true, true, Expect::Confirm(pv)),
        (false, false, true, Expect::Confirm(pvc)),
    ];
    for (secret, has_volume, has_claim, expected) in cases {
        let case = format!("Secret {secret}, volume {has_volume}, claim {has_claim}");
        let snapshot = Snapshot {
            volumes: volume.clone().into_iter().filter(|_| has_volume).collect(),
            claim: has_claim.then(claim),
            ..fresh()
        };
        let app = if secret {
            recorded(app.clone())
        } else {
            app.clone()
        };
        let instance = Instance::new(&app).unwrap();
        let creates = matches!(expected, Expect::Create);
        let planned = plan(&app, &instance, &snapshot, &volumes(), || {
            assert!(creates, "{case}: a password only for a new Secret");
            PASSWORD.to_owned()
        });
        let Ok(Plan::Converge(converge)) = planned else {
            panic!("{case}: expected converging, planned {planned:?}");
        };
        match (converge.secret, expected) {
            (Once::Leave, Expect::Leave) => {}
            (Once::Create(created), Expect::Create) => {
                assert_eq!(
                    created.metadata.name.as_deref(),
                    Some("shop-mongo-credentials"),
                    "{case}"
                );
            }
            (Once::Confirm { name, missing }, Expect::Confirm(volume)) => {
                assert_eq!(name, "shop-mongo-credentials", "{case}");
                assert_eq!(missing.reason(), "CredentialsMissing", "{case}");
                let message = missing.to_string();
                assert!(message.starts_with(volume), "{case}: {message}");
                assert!(message.contains("shop-mongo-credentials"), "{case}");
            }
            (planned, expected) => panic!("{case}: expected {expected:?}, planned {planned:?}"),
        }
    }
}

#[test]
fn deletion_cleans_up_in_order_then_releases_the_finalizer() {
    let delete = spec(|s| s.mongo.storage.deletion_policy = DeletionPolicy::Delete);
    let dynamic = spec(|s| {
        s.mongo.storage.deletion_policy = DeletionPolicy::Delete;
        s.mongo.storage.persistent_volume.create = false;
    });
    let statefulset = converged(&shop(FlaskMongoAppSpec::default())).statefulset;
    let serving = running(statefulset.clone().unwrap(), 1);
    let mut told_to_stop = serving.clone();
    told_to_stop.spec.replicas = Some(0);
    told_to_stop.metadata.generation = Some(3);
    let stopped = running(told_to_stop.clone(), 0);
    let mut going_statefulset = serving.clone();
    going_statefulset.metadata = terminating(going_statefulset.metadata);
    let going_claim = PartialObjectMeta {
        metadata: terminating(claim().metadata),
        ..claim()
    };
    let mut without_ours = deleting(shop(delete.clone()));
    without_ours.metadata.finalizers = Some(vec![OTHER_FINALIZER.to_owned()]);

    let sts = Target::namespaced::<StatefulSet>("shop-mongo".to_owned(), "team-a");
    let stop = sts.clone().stopped_by(json!({ "spec": { "replicas": 0 } }));
    let pvc = Target::namespaced::<PersistentVolumeClaim>("data-shop-mongo-0".to_owned(), "team-a");
    let pv = Target::cluster::<PersistentVolume>("team-a.shop.mongo".to_owned());
    let secret = Target::namespaced::<Secret>("shop-mongo-credentials".to_owned(), "team-a");
    let release = |stages| Finalize::Release {
        stages,
        finalizers: vec![OTHER_FINALIZER.to_owned()],
    };
    // (case, object, cached StatefulSet, cached claim, clean-up)
    let cases = [
        (
            "our finalizer already gone",
            without_ours,
            statefulset.clone(),
            Some(claim()),
            Finalize::Nothing,
        ),
        (
            "Retain, with our finalizer from before: the data, its claim and its Secret stay",
            deleting(shop(FlaskMongoAppSpec::default())),
            statefulset.clone(),
            Some(claim()),
            release(vec![]),
        ),
        (
            "Delete: MongoDB is stopped first, and its claim kept while it may run",
            deleting(shop(delete.clone())),
            Some(serving),
            Some(claim()),
            Finalize::Wait(vec![stop.clone()]),
        ),
        (
            "Delete: told to stop, its controller has not seen it yet",
            deleting(shop(delete.clone())),
            Some(told_to_stop),
            Some(claim()),
            Finalize::Wait(vec![]),
        ),
        (
            "Delete: stopped, so the StatefulSet and the claim",
            deleting(shop(delete.clone())),
            Some(stopped.clone()),
            Some(claim()),
            Finalize::Wait(vec![sts.clone(), pvc.clone()]),
        ),
        (
            "Delete: what is already going is not deleted again",
            deleting(shop(delete.clone())),
            Some(going_statefulset.clone()),
            Some(going_claim.clone()),
            Finalize::Wait(vec![]),
        ),
        (
            "Delete: the StatefulSet going, the claim goes",
            deleting(shop(delete.clone())),
            Some(going_statefulset),
            Some(claim()),
            Finalize::Wait(vec![pvc.clone()]),
        ),
        (
            "Delete: the claim goes once no pod holds it",
            deleting(shop(delete.clone())),
            Some(stopped),
            Some(going_claim),
            Finalize::Wait(vec![sts.clone()]),
        ),
        (
            "Delete: the StatefulSet gone, the claim goes",
            deleting(shop(delete.clone())),
            None,
            Some(claim()),
            Finalize::Wait(vec![pvc.clone()]),
        ),
        (
            "Delete: both gone, so the volume and the Secret, after confirming",
            deleting(shop(delete)),
            None,
            None,
            release(vec![
                vec![stop.clone(), pvc.clone()],
                vec![pv, secret.clone()],
            ]),
        ),
        (
            "Delete with a provisioned volume: the claim's reclaim policy takes it",
            deleting(shop(dynamic)),
            None,
            None,
            release(vec![vec![stop, pvc], vec![secret]]),
        ),
    ];
    for (case, app, statefulset, claim, expected) in cases {
        let snapshot = Snapshot {
            statefulset,
            claim,
            ..converged(&shop(FlaskMongoAppSpec::default()))
        };
        assert_eq!(finalize(&app, &snapshot), expected, "{case}");
    }
}

#[test]
fn only_the_preparation_pods_of_objects_gone_are_orphans() {
    let live = HashSet::from(["uid-live"]);
    let pods = [
        "prepare-volume-uid-live",
        "prepare-volume-uid-gone",
        "prepare-volume-",
        "someone-elses-pod",
    ];
    assert_eq!(
        orphaned_preparations(pods, &live, PREPARATION_NAMESPACE),
        [Target::namespaced::<Pod>(
            "prepare-volume-uid-gone".to_owned(),
            PREPARATION_NAMESPACE
        )]
    );
    assert_eq!(
        orphaned_preparations(["prepare-volume-uid-gone"], &HashSet::new(), "elsewhere"),
        [Target::namespaced::<Pod>(
            "prepare-volume-uid-gone".to_owned(),
            "elsewhere"
        )],
        "deleted in the namespace it is in"
    );
}

#[test]
fn targets_name_their_kind_and_scope() {
    let volume = Target::cluster::<PersistentVolume>("team-a-shop-mongo".to_owned());
    assert_eq!(volume.namespace, None);
    assert_eq!(volume.resource.plural, "persistentvolumes");
    assert_eq!(volume.describe(), "PersistentVolume team-a-shop-mongo");
    let statefulset = Target::namespaced::<StatefulSet>("shop-mongo".to_owned(), "team-a");
    assert_eq!(statefulset.namespace.as_deref(), Some("team-a"));
    assert_eq!(statefulset.resource.api_version, "apps/v1");
}

#[test]
fn a_secret_recorded_for_another_name_is_not_trusted() {
    // Only the record of this object's own Secret says it exists; nothing reads Secrets.
    let mut app = recorded(shop(FlaskMongoAppSpec::default()));
    if let Some(status) = &mut app.status {
        status.credentials_secret = Some("other-mongo-credentials".to_owned());
    }
    let secret = converge(&app, &fresh()).secret;
    assert!(matches!(secret, Once::Create(_)), "{secret:?}");
    let secret = converge(&recorded(app), &fresh()).secret;
    assert!(matches!(secret, Once::Leave), "{secret:?}");
}

/// The volume `app`'s first plan creates, as cached.
fn volume_of(app: &FlaskMongoApp) -> PersistentVolume {
    converged(app).volumes.pop().unwrap()
}

/// `volume` named `name`, labelled for `owner` (namespace, name), bound to `claim`.
fn volume_as(
    mut volume: PersistentVolume,
    name: &str,
    owner: (&str, &str),
    claim: (&str, &str),
) -> PersistentVolume {
    volume.metadata.name = Some(name.to_owned());
    let owner_labels = volume.labels_mut();
    owner_labels.insert(labels::OWNER_NAMESPACE.to_owned(), owner.0.to_owned());
    owner_labels.insert(INSTANCE.to_owned(), owner.1.to_owned());
    let claim_ref = volume.spec.as_mut().unwrap().claim_ref.as_mut().unwrap();
    claim_ref.namespace = Some(claim.0.to_owned());
    claim_ref.name = Some(claim.1.to_owned());
    volume
}

#[test]
fn a_new_volume_gets_a_directory_of_its_own_under_the_volume_root() {
    let app = shop(FlaskMongoAppSpec::default());
    let volume = volume_of(&app);
    assert_eq!(volume.name_any(), "team-a.shop.mongo");
    assert_eq!(
        Placement::of(&volume).unwrap().path,
        format!("{ROOT}/team-a/shop-{}", app.uid().unwrap())
    );
}

#[test]
fn an_object_created_again_meets_an_empty_directory_unless_its_data_was_retained() {
    let first = shop(FlaskMongoAppSpec::default());
    let mut again = shop(FlaskMongoAppSpec::default());
    again.metadata.uid = Some("7c0ffee0-0000-4000-8000-000000000002".to_owned());
    // Deleted under `Delete`: no volume left, so a new directory for the new password.
    assert_ne!(
        Placement::of(&volume_of(&again)).unwrap().path,
        Placement::of(&volume_of(&first)).unwrap().path
    );
    // Retained: the old volume, and the Secret that opens it, are reused where they are.
    let retained = Snapshot {
        volumes: vec![volume_of(&first)],
        ..fresh()
    };
    let Converge {
        secret, children, ..
    } = converge(&again, &retained);
    assert!(matches!(secret, Once::Confirm { .. }), "{secret:?}");
    let kept = match children.persistent_volume {
        Step::Leave => volume_of(&first),
        Step::Apply(apply) => apply.object,
        Step::Delete(name) => panic!("deletes {name}"),
    };
    assert_eq!(
        Placement::of(&kept).unwrap().path,
        Placement::of(&volume_of(&first)).unwrap().path
    );
}

#[test]
fn a_volume_of_another_object_is_never_touched() {
    let app = shop(spec(|s| {
        s.mongo.storage.deletion_policy = DeletionPolicy::Delete
    }));
    let ours = volume_of(&app);
    // At this object's name, but labelled and bound for another: refused, reported.
    let taken = volume_as(
        ours.clone(),
        "team-a.shop.mongo",
        ("team-a", "other"),
        ("team-a", "data-other-mongo-0"),
    );
    let snapshot = Snapshot {
        volumes: vec![taken.clone()],
        ..fresh()
    };
    let instance = Instance::new(&app).unwrap();
    let error = plan(&app, &instance, &snapshot, &volumes(), || {
        PASSWORD.to_owned()
    })
    .unwrap_err();
    assert_eq!(error.reason(), "VolumeTaken");
    assert!(
        error.to_string().contains("team-a/data-other-mongo-0"),
        "{error}"
    );
    // Nor deleted with this object.
    let Finalize::Release { stages, .. } = finalize(&deleting(app.clone()), &snapshot) else {
        panic!("expected a release");
    };
    assert!(
        stages
            .iter()
            .flatten()
            .all(|t| t.resource.kind != "PersistentVolume"),
        "{stages:?}"
    );
    // Under the ambiguous name before 0.2, another object's volume is simply not this one's:
    // this object gets a volume of its own.
    let look_alike = volume_as(
        ours,
        "team-a-shop-mongo",
        ("team", "a-shop"),
        ("team", "data-a-shop-mongo-0"),
    );
    let snapshot = Snapshot {
        volumes: vec![look_alike],
        ..fresh()
    };
    let Converge {
        secret, children, ..
    } = converge(&app, &snapshot);
    assert!(
        matches!(secret, Once::Create(_)),
        "no data of this object: {secret:?}"
    );
    let own = applied(children.persistent_volume);
    assert!(!own.existed);
    assert_eq!(own.object.name_any(), "team-a.shop.mongo");
    assert_eq!(
        Placement::of(&own.object).unwrap().path,
        format!("{ROOT}/team-a/shop-{}", app.uid().unwrap()),
        "a directory of its own"
    );
}

#[test]
fn a_volume_retained_under_the_old_name_is_found_by_its_owner() {
    let app = shop(spec(|s| {
        s.mongo.storage.deletion_policy = DeletionPolicy::Delete
    }));
    // Outside today's volume root, and handed to MongoDB's user by its administrator.
    let mut old = volume_as(
        volume_of(&app),
        "team-a-shop-mongo",
        ("team-a", "shop"),
        ("team-a", "data-shop-mongo-0"),
    );
    old.spec.as_mut().unwrap().host_path.as_mut().unwrap().path =
        "/data/flaskmongo/team-a/shop".to_owned();
    assert!(Placement::of(&old).unwrap().prepared);
    let snapshot = Snapshot {
        volumes: vec![old.clone()],
        ..fresh()
    };
    let Converge {
        secret, children, ..
    } = converge(&app, &snapshot);
    let Once::Confirm { missing, .. } = secret else {
        panic!("its data needs the old Secret, planned {secret:?}");
    };
    assert!(
        missing
            .to_string()
            .starts_with("PersistentVolume team-a-shop-mongo")
    );
    let kept = applied(children.persistent_volume);
    assert!(kept.existed);
    assert_eq!(kept.object.name_any(), "team-a-shop-mongo");
    assert_eq!(
        Placement::of(&kept.object).unwrap().path,
        "/data/flaskmongo/team-a/shop"
    );
    let Finalize::Release { stages, .. } = finalize(&deleting(app), &snapshot) else {
        panic!("expected a release");
    };
    assert!(stages[1].contains(&Target::cluster::<PersistentVolume>(
        "team-a-shop-mongo".to_owned()
    )));
}

#[test]
fn the_network_policy_is_kept_and_goes_when_turned_off() {
    let on = shop(FlaskMongoAppSpec::default());
    let off = shop(spec(|s| s.network_policy.enabled = false));
    let ours = converged(&on).network_policy;
    let step = |app, network_policy| {
        let snapshot = Snapshot {
            network_policy,
            ..fresh()
        };
        converge(app, &snapshot).children.network_policy
    };
    assert!(!applied(step(&on, None)).existed, "created");
    assert_eq!(step(&on, ours.clone()), Step::Leave, "kept as it is");
    assert_eq!(
        step(&off, ours),
        Step::Delete("shop-network".to_owned()),
        "deleted once turned off"
    );
    assert_eq!(step(&off, None), Step::Leave, "none to delete");
}

/// The node directory a preparation pod mounts.
fn prepared_directory(pod: &Pod) -> String {
    let volumes = pod.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    volumes[0].host_path.as_ref().unwrap().path.clone()
}

/// `volume` as the operator created it before MongoDB ran without root: no record that its
/// directory was handed over, no node.
fn from_before_preparation(mut volume: PersistentVolume) -> PersistentVolume {
    volume.metadata.annotations = None;
    volume.spec.as_mut().unwrap().node_affinity = None;
    volume
}

/// `statefulset` as its controller reports it once it runs `pods` pods.
fn running(mut statefulset: StatefulSet, pods: i32) -> StatefulSet {
    statefulset.metadata.generation = Some(2);
    let status = statefulset.status.get_or_insert_default();
    status.observed_generation = Some(2);
    status.replicas = pods;
    statefulset
}

#[test]
fn a_new_volume_goes_at_once_to_a_node_with_a_ready_preparer_and_mongodb_with_it() {
    let app = recorded(shop(FlaskMongoAppSpec::default()));
    let nodes: Vec<String> = (1..=5).map(|n| format!("node-{n}")).collect();
    let fresh = Snapshot {
        preparer_nodes: nodes.clone(),
        ..fresh()
    };
    // In one pass: the volume, bound to one of those nodes and recorded as MongoDB's
    // (the node's preparer hands its directory over), and MongoDB; no preparation pod.
    let writes = converge(&app, &fresh).children;
    let volume = applied(writes.persistent_volume).object;
    let placement = Placement::of(&volume).unwrap();
    let node = placement.node.clone().unwrap();
    assert!(nodes.contains(&node), "{node}");
    assert!(placement.prepared);
    assert_eq!(
        volume.annotations()[persistent_volume::DATA_OWNER_ANNOTATION],
        "999:999"
    );
    assert_eq!(
        placement.path,
        format!("{ROOT}/team-a/shop-{}", app.uid().unwrap())
    );
    assert!(!applied(writes.statefulset).existed, "MongoDB created");
    assert_eq!(writes.volume_preparation.step, Step::Leave);
    // The same node again for the same object; once the volume exists, it stays there
    // whatever the preparers do.
    let again = converge(&app, &fresh).children;
    assert_eq!(
        Placement::of(&applied(again.persistent_volume).object)
            .unwrap()
            .node,
        Some(node.clone())
    );
    let placed = Snapshot {
        volumes: vec![volume],
        preparer_nodes: Vec::new(),
        ..fresh.clone()
    };
    assert_eq!(
        converge(&app, &placed).children.persistent_volume,
        Step::Leave
    );

    // No Ready preparer anywhere: no plan, so nothing is written, and the object says what
    // it waits for.
    let instance = Instance::new(&app).unwrap();
    let waiting = Snapshot {
        preparer_nodes: Vec::new(),
        ..fresh
    };
    let error = plan(&app, &instance, &waiting, &volumes(), || {
        PASSWORD.to_owned()
    })
    .unwrap_err();
    assert_eq!(error.reason(), "NoVolumePreparer");
    assert!(!error.is_permanent(), "tried again");
    assert!(
        error
            .to_string()
            .contains("DaemonSet flaskmongo-volumes/flaskmongo-volume-preparer"),
        "{error}"
    );
}

#[test]
fn writes_on_their_way_to_the_caches_are_not_made_again() {
    let app = recorded(shop(FlaskMongoAppSpec::default()));
    let owner = app.uid().unwrap();
    let done = converged(&app);
    // The pass that creates the volume and MongoDB.
    let before = Snapshot {
        volumes: Vec::new(),
        statefulset: None,
        ..done.clone()
    };
    let writes = converge(&app, &before).children;
    let returned = Applied {
        persistent_volume: Some(applied(writes.persistent_volume).object),
        statefulset: Some(applied(writes.statefulset).object),
        ..Applied::default()
    };
    let mut unseen = Unseen::default();
    let at = Instant::now();
    unseen.record(&owner, &returned, None, at);
    // The reconciles these writes start, while the caches show none of them, or the volume
    // only: nothing is written again.
    let volume_only = Snapshot {
        volumes: done.volumes.clone(),
        ..before.clone()
    };
    for (caches, snapshot) in [("nothing", &before), ("the volume", &volume_only)] {
        let mut snapshot = snapshot.clone();
        assert!(unseen.complete(&owner, &mut snapshot, at));
        let writes = converge(&app, &snapshot).children;
        assert_eq!(
            writes,
            Writes::none(PREPARATION_NAMESPACE),
            "caches show {caches}"
        );
    }
    // Without the record, the same caches create MongoDB again.
    let writes = converge(&app, &volume_only).children;
    assert!(!applied(writes.statefulset).existed);
    // Once the caches show every write, nothing is left to complete.
    let mut caught_up = done.clone();
    assert!(!unseen.complete(&owner, &mut caught_up, at));
    let mut stale = before;
    assert!(!unseen.complete(&owner, &mut stale, at), "forgotten");
}

#[test]
fn a_failed_preparation_is_reported_in_the_pods_words_and_tried_again_once_deleted() {
    let app = recorded(shop(FlaskMongoAppSpec::default()));
    let from_before = Snapshot {
        volumes: vec![from_before_preparation(volume_of(&app))],
        ..fresh()
    };
    let first = converge(&app, &from_before).children;
    let mut pod = finished(applied(first.volume_preparation.step).object, "Failed");
    pod.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 1,
                message: Some(
                    "error: cannot change the owner of /data: Read-only file system\n".to_owned(),
                ),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    }]);
    let snapshot = Snapshot {
        volume_preparation: Some(pod.clone()),
        ..from_before.clone()
    };
    let instance = Instance::new(&app).unwrap();
    let error = plan(&app, &instance, &snapshot, &volumes(), || {
        PASSWORD.to_owned()
    })
    .unwrap_err();
    assert_eq!(error.reason(), "VolumePreparationFailed");
    assert!(
        error.is_permanent(),
        "retried when the pod is deleted, not before"
    );
    let message = error.to_string();
    for words in [
        "Read-only file system;",
        &format!("kubectl logs -n {PREPARATION_NAMESPACE} {}", pod.name_any()),
        "delete the pod to try again",
    ] {
        assert!(message.contains(words), "{words:?} in {message}");
    }
    // Deleted: a new pod tries again.
    let again = converge(&app, &from_before).children;
    assert_eq!(
        applied(again.volume_preparation.step).object.name_any(),
        pod.name_any()
    );
}

#[test]
fn a_volume_from_before_is_handed_over_only_while_mongodb_is_stopped() {
    let app = recorded(shop(FlaskMongoAppSpec::default()));
    let done = converged(&app);
    let old_volume = from_before_preparation(done.volumes[0].clone());
    let statefulset = done.statefulset.clone().unwrap();
    let mongo_replicas = |writes: &Writes| match &writes.statefulset {
        Step::Apply(apply) => apply.object.spec.replicas,
        other => panic!("expected the StatefulSet applied, planned {other:?}"),
    };
    // MongoDB runs (as root, from before): stopped first, nothing handed over yet.
    let serving = Snapshot {
        volumes: vec![old_volume.clone()],
        statefulset: Some(running(statefulset.clone(), 1)),
        ..done.clone()
    };
    let writes = converge(&app, &serving).children;
    assert_eq!(mongo_replicas(&writes), Some(0));
    assert_eq!(writes.volume_preparation.step, Step::Leave);
    assert_eq!(writes.persistent_volume, Step::Leave);
    // Stopped: the directory is prepared where it is, and MongoDB stays stopped.
    let stopped = applied(writes.statefulset).object;
    let stopped = Snapshot {
        statefulset: Some(running(stopped, 0)),
        ..serving.clone()
    };
    let writes = converge(&app, &stopped).children;
    assert_eq!(writes.statefulset, Step::Leave, "kept at 0");
    let pod = applied(writes.volume_preparation.step).object;
    assert_eq!(
        prepared_directory(&pod),
        Placement::of(&old_volume).unwrap().path
    );
    // Done: recorded on the volume (its node, unknown before, is not invented); in the
    // same pass, after the volume, MongoDB starts again as MongoDB's user and the pod goes.
    let prepared = Snapshot {
        volume_preparation: Some(finished(pod.clone(), "Succeeded")),
        ..stopped.clone()
    };
    let writes = converge(&app, &prepared).children;
    assert_eq!(mongo_replicas(&writes), Some(1));
    assert_eq!(writes.volume_preparation.step, Step::Delete(pod.name_any()));
    let volume = applied(writes.persistent_volume);
    assert!(volume.existed);
    let placement = Placement::of(&volume.object).unwrap();
    assert!(placement.prepared);
    assert_eq!(placement.node, None);
}

#[test]
fn a_volume_from_before_outside_the_volume_root_is_not_handed_over() {
    let app = recorded(shop(FlaskMongoAppSpec::default()));
    let mut outside = from_before_preparation(volume_of(&app));
    outside
        .spec
        .as_mut()
        .unwrap()
        .host_path
        .as_mut()
        .unwrap()
        .path = "/etc".to_owned();
    let snapshot = Snapshot {
        volumes: vec![outside],
        ..fresh()
    };
    let instance = Instance::new(&app).unwrap();
    let error = plan(&app, &instance, &snapshot, &volumes(), || {
        PASSWORD.to_owned()
    })
    .unwrap_err();
    assert_eq!(error.reason(), "VolumeOutsideRoot");
    let message = error.to_string();
    assert!(message.contains("chown -R 999:999 /etc"), "{message}");
    assert!(
        message.contains("flaskmongo.dev/data-owner=999:999"),
        "{message}"
    );
    for (path, inside) in [
        (format!("{ROOT}/team-a/shop"), true),
        (ROOT.to_owned(), false),
        (format!("{ROOT}-other/team-a"), false),
        (format!("{ROOT}/../etc"), false),
    ] {
        assert_eq!(within(&path, ROOT), inside, "{path}");
    }
}

#[test]
fn with_a_provisioned_volume_nothing_is_prepared_and_a_leftover_pod_goes() {
    let app = recorded(shop(spec(|s| {
        s.mongo.storage.persistent_volume.create = false
    })));
    let writes = converge(&app, &fresh()).children;
    assert_eq!(writes.persistent_volume, Step::Leave);
    assert_eq!(writes.volume_preparation.step, Step::Leave);
    let instance = Instance::new(&app).unwrap();
    let leftover =
        volume_preparation::build(&instance, &Placement::new(&instance, ROOT), &volumes());
    let snapshot = Snapshot {
        volume_preparation: Some(leftover.clone()),
        ..fresh()
    };
    assert_eq!(
        converge(&app, &snapshot).children.volume_preparation.step,
        Step::Delete(leftover.name_any())
    );
}
