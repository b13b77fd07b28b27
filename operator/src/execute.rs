//! Execute: carries out a [`Plan`](crate::plan::Plan) in the order it sets, concurrently
//! wherever it allows, and records every change for the reconcile's Event. It decides
//! nothing, and knows the kinds only as types: nothing of what the objects are for.

use std::fmt::Debug;

use futures::future;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::apply;
use crate::error::{Error, Refusal, Result};
use crate::events::{Changes, Verb};
use crate::labels::MANAGER;
use crate::plan::{Apply, Converge, Elsewhere, Finalize, Hold, Once, Step, Target, Writes};

/// The object being reconciled: namespaced, with finalizers and a status subresource.
pub trait Owner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
{
}

impl<K> Owner for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
{
}

/// Whether a clean-up is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing is left to do: the finalizer is gone.
    Done,
    /// Something is still going: look again later.
    Pending,
}

/// What the API server returned for each child an apply wrote (`None`: not applied, or
/// the apply failed). Fresher than the snapshot the plan was made from: a Service just
/// created already has its node port.
#[derive(Debug, Default)]
pub struct Applied {
    /// MongoDB headless Service.
    pub mongo_service: Option<Service>,
    /// Static volume.
    pub persistent_volume: Option<PersistentVolume>,
    /// MongoDB StatefulSet.
    pub statefulset: Option<StatefulSet>,
    /// Web NodePort Service.
    pub web_service: Option<Service>,
    /// Web Deployment.
    pub deployment: Option<Deployment>,
    /// Web autoscaler.
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// The NetworkPolicy around MongoDB.
    pub network_policy: Option<NetworkPolicy>,
    /// The volume's preparation pod.
    pub volume_preparation: Option<Pod>,
    /// The credentials Secret's name, when this reconcile created it or found it there.
    pub secret: Option<String>,
}

/// Converges `owner`'s children: the finalizer first (and, at the same time, the
/// confirmation of a Secret that must exist), so that nothing is written before it can be
/// cleaned up; then every child concurrently, but for what depends on another: the
/// workloads, which read the Secret, and the volume, which must never exist without it,
/// once it is created, and the StatefulSet and the preparation pod once the volume is
/// written. Every child is tried even when one fails (but for those dependents), so one
/// refused object (say, a taken node port) does not hold the others back; the first
/// failure is returned, with what the others' applies returned.
pub async fn converge<K: Owner>(
    client: &Client,
    owner: &K,
    plan: Converge,
    changes: &Changes,
) -> (Applied, Result<()>) {
    let Converge {
        finalizers,
        secret,
        children,
    } = plan;
    let namespace = owner.namespace().unwrap_or_default();
    let (create, confirm) = match secret {
        Once::Leave => (None, None),
        Once::Create(object) => (Some(object), None),
        Once::Confirm { name, missing } => (None, Some((name, missing))),
    };
    let confirmed = match prepare(client, owner, &namespace, finalizers, confirm).await {
        Ok(confirmed) => confirmed,
        Err(error) => return (Applied::default(), Err(error)),
    };
    let (applied, result) = write_all(client, &namespace, create, children, changes).await;
    let secret = applied.secret.or(confirmed);
    (Applied { secret, ..applied }, result)
}

/// The finalizer, and the confirmation that a Secret that must exist does; returns the
/// Secret's name when it was found. Nothing else is written until both are done.
async fn prepare<K: Owner>(
    client: &Client,
    owner: &K,
    namespace: &str,
    finalizers: Option<Vec<String>>,
    confirm: Option<(String, Error)>,
) -> Result<Option<String>> {
    let finalizer = async {
        match finalizers {
            Some(finalizers) => set_finalizers(client, owner, finalizers).await,
            None => Ok(()),
        }
    };
    match confirm {
        None => finalizer.await.map(|()| None),
        Some((name, missing)) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
            let (finalized, found) = futures::join!(finalizer, exists(&secrets, &name));
            finalized?;
            if found? { Ok(Some(name)) } else { Err(missing) }
        }
    }
}

/// Runs the clean-up stage by stage, then sets the finalizers it leaves.
pub async fn finalize<K: Owner>(
    client: &Client,
    owner: &K,
    plan: Finalize,
    changes: &Changes,
) -> Result<Cleanup> {
    match plan {
        Finalize::Nothing => Ok(Cleanup::Done),
        Finalize::Wait(targets) => {
            clean_up(client, &targets, changes).await?;
            Ok(Cleanup::Pending)
        }
        Finalize::Release { stages, finalizers } => {
            let last = stages.len();
            for (number, stage) in stages.iter().enumerate() {
                let found = clean_up(client, stage, changes).await?;
                if found && number + 1 < last {
                    return Ok(Cleanup::Pending);
                }
            }
            set_finalizers(client, owner, finalizers).await?;
            Ok(Cleanup::Done)
        }
    }
}

/// Applies `status` to `object`'s status subresource.
pub async fn patch_status<K: Owner>(
    client: &Client,
    object: &ObjectRef<K>,
    status: &impl Serialize,
) -> Result<()> {
    let name = &object.name;
    let api: Api<K> = Api::namespaced(
        client.clone(),
        object.namespace.as_deref().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(drop)
    .map_err(|source| {
        Error::kube(
            format!("update the status of {} {name}", K::kind(&())),
            source,
        )
    })
}

/// `secret` to create and every step of `writes`, concurrently but for the dependents of
/// the Secret and of the volume, each written once what it depends on is; the first
/// failure is returned.
async fn write_all(
    client: &Client,
    namespace: &str,
    secret: Option<Secret>,
    writes: Writes,
    changes: &Changes,
) -> (Applied, Result<()>) {
    let Writes {
        mongo_service,
        persistent_volume,
        statefulset,
        web_service,
        deployment,
        hpa,
        network_policy,
        volume_preparation:
            Elsewhere {
                namespace: preparation_namespace,
                step: volume_preparation,
            },
    } = writes;
    // The Secret first: the workloads read it, and a volume without the record of its
    // Secret is taken for one holding an earlier object's data, whose password only that
    // Secret has (`plan::credentials`). A volume written before a Secret that a crash or a
    // refusal then kept from existing would stop the object for good.
    let secret_then_the_rest = async {
        let secret_name = match &secret {
            Some(object) => {
                let secrets = Api::namespaced(client.clone(), namespace);
                match create_once(changes, &secrets, object).await {
                    Ok(()) => Some(object.name_any()),
                    Err(error) => return (Err(error), Ok(None), Ok(None), Ok(None), Ok(None)),
                }
            }
            None => None,
        };
        // The volume before what mounts or prepares it: no workload starts on it, and no
        // record of its preparation goes, before the volume itself is written.
        let volume_then_mongodb = async {
            let persistent_volume =
                write(changes, Api::all(client.clone()), persistent_volume).await;
            if persistent_volume.is_err() {
                return (persistent_volume, Ok(None), Ok(None));
            }
            let (volume_preparation, statefulset) = futures::join!(
                write(
                    changes,
                    Api::namespaced(client.clone(), &preparation_namespace),
                    volume_preparation,
                ),
                write(
                    changes,
                    Api::namespaced(client.clone(), namespace),
                    statefulset
                ),
            );
            (persistent_volume, volume_preparation, statefulset)
        };
        // On the heap: with every write's future inline, this one outgrows a thread's stack
        // in a debug build.
        let ((persistent_volume, volume_preparation, statefulset), deployment) = futures::join!(
            Box::pin(volume_then_mongodb),
            write(
                changes,
                Api::namespaced(client.clone(), namespace),
                deployment
            ),
        );
        (
            Ok(secret_name),
            persistent_volume,
            volume_preparation,
            statefulset,
            deployment,
        )
    };
    let (
        (secret, persistent_volume, volume_preparation, statefulset, deployment),
        mongo_service,
        web_service,
        hpa,
        network_policy,
    ) = futures::join!(
        secret_then_the_rest,
        write(
            changes,
            Api::namespaced(client.clone(), namespace),
            mongo_service
        ),
        write(
            changes,
            Api::namespaced(client.clone(), namespace),
            web_service
        ),
        write(changes, Api::namespaced(client.clone(), namespace), hpa),
        write(
            changes,
            Api::namespaced(client.clone(), namespace),
            network_policy
        ),
    );
    let mut failure = None;
    let applied = Applied {
        secret: keep(secret, &mut failure),
        mongo_service: keep(mongo_service, &mut failure),
        persistent_volume: keep(persistent_volume, &mut failure),
        statefulset: keep(statefulset, &mut failure),
        web_service: keep(web_service, &mut failure),
        deployment: keep(deployment, &mut failure),
        hpa: keep(hpa, &mut failure),
        network_policy: keep(network_policy, &mut failure),
        volume_preparation: keep(volume_preparation, &mut failure),
    };
    (applied, failure.map_or(Ok(()), Err))
}

/// The object of a write, or `None` with its error kept in `failure` unless one is there.
fn keep<K>(written: Result<Option<K>>, failure: &mut Option<Error>) -> Option<K> {
    written.unwrap_or_else(|error| {
        failure.get_or_insert(error);
        None
    })
}

/// One step; returns what the API server returned for an apply.
async fn write<K>(changes: &Changes, api: Api<K>, step: Step<K>) -> Result<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    match step {
        Step::Leave => Ok(None),
        Step::Apply(Apply {
            object,
            existed,
            first,
        }) => {
            let what = describe(&object);
            if let Some(Hold { manager, patch }) = first {
                apply::apply_as::<K, _>(&api, &patch, manager).await?;
            }
            tracing::debug!(child = %what, "applying");
            let live = apply::apply(&api, &object).await?;
            let verb = if existed {
                Verb::Updated
            } else {
                Verb::Created
            };
            tracing::info!(child = %what, "{}", verb.word());
            changes.record(verb, what);
            Ok(Some(live))
        }
        Step::Delete(name) => {
            let what = format!("{} {name}", K::kind(&()));
            delete(changes, &api, &name, what).await.map(|_| None)
        }
    }
}

/// Deletes or stops every target concurrently; returns whether any was still there.
pub async fn clean_up(client: &Client, targets: &[Target], changes: &Changes) -> Result<bool> {
    let cleanups = targets.iter().map(|target| {
        let api: Api<DynamicObject> = match &target.namespace {
            Some(namespace) => Api::namespaced_with(client.clone(), namespace, &target.resource),
            None => Api::all_with(client.clone(), &target.resource),
        };
        async move {
            match &target.stop {
                Some(patch) => stop(changes, &api, &target.name, target.describe(), patch).await,
                None => delete(changes, &api, &target.name, target.describe()).await,
            }
        }
    });
    future::join_all(cleanups)
        .await
        .into_iter()
        .try_fold(false, |found, done| Ok(found | done?))
}

/// Stops `name` (`what`, for messages) with the merge patch `patch`; returns whether it
/// was there.
async fn stop(
    changes: &Changes,
    api: &Api<DynamicObject>,
    name: &str,
    what: String,
    patch: &Value,
) -> Result<bool> {
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let outcome = api.patch(name, &params, &Patch::Merge(patch)).await;
    found(changes, Verb::Stopped, ("stop", what), outcome)
}

/// Deletes `name` (`what`, for messages); returns whether it was there.
async fn delete<K>(changes: &Changes, api: &Api<K>, name: &str, what: String) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let outcome = api.delete(name, &DeleteParams::background()).await;
    found(changes, Verb::Deleted, ("delete", what), outcome)
}

/// Whether the request to `action` `what` found it (a 404: it was gone already); what it
/// did is recorded as `verb`.
fn found<T>(
    changes: &Changes,
    verb: Verb,
    (action, what): (&str, String),
    outcome: kube::Result<T>,
) -> Result<bool> {
    match outcome {
        Ok(_) => {
            tracing::info!(child = %what, "{}", verb.word());
            changes.record(verb, what);
            Ok(true)
        }
        Err(error) if Refusal::of(&error) == Some(Refusal::NotFound) => Ok(false),
        Err(source) => Err(Error::kube(format!("{action} {what}"), source)),
    }
}

/// Creates `object` unless an object of its name exists.
async fn create_once<K>(changes: &Changes, api: &Api<K>, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let what = describe(object);
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api.create(&params, object).await {
        Ok(_) => {
            tracing::info!(child = %what, "created");
            changes.record(Verb::Created, what);
            Ok(())
        }
        // There already: created by an earlier reconcile, or restored by hand.
        Err(error) if Refusal::of(&error) == Some(Refusal::Conflict) => Ok(()),
        Err(source) => Err(Error::kube(format!("create {what}"), source)),
    }
}

/// Whether an object `name` exists, asked without reading it (the operator may not): the
/// dry-run create of an empty object of that name is refused with 409 exactly when one
/// exists, and it stores nothing.
async fn exists<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Default + Clone + Serialize + DeserializeOwned + Debug,
{
    let mut probe = K::default();
    probe.meta_mut().name = Some(name.to_owned());
    let params = PostParams {
        dry_run: true,
        field_manager: Some(MANAGER.to_owned()),
    };
    match api.create(&params, &probe).await {
        Ok(_) => Ok(false),
        Err(error) if Refusal::of(&error) == Some(Refusal::Conflict) => Ok(true),
        Err(source) => Err(Error::kube(
            format!("look for {} {name}", K::kind(&())),
            source,
        )),
    }
}

/// Replaces `owner`'s finalizers, failing if it changed since it was read.
async fn set_finalizers<K: Owner>(
    client: &Client,
    owner: &K,
    finalizers: Vec<String>,
) -> Result<()> {
    let name = owner.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": owner.resource_version() }
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|source| {
            Error::kube(
                format!("set the finalizers of {} {name}", K::kind(&())),
                source,
            )
        })
}

/// Kind and name, for messages and Events.
fn describe<K: Resource<DynamicType = ()>>(object: &K) -> String {
    format!("{} {}", K::kind(&()), object.name_any())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use flaskmongo_crd::{DeletionPolicy, FlaskMongoAppSpec};
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use kube::api::ObjectMeta;
    use kube::core::PartialObjectMeta;

    use super::*;
    use crate::children::persistent_volume::Placement;
    use crate::children::tests::{app, finished};
    use crate::children::{Instance, persistent_volume, volume_preparation};
    use crate::observe::Snapshot;
    use crate::plan::{FINALIZER, Plan, plan};

    #[tokio::test]
    async fn polling_a_claim_that_is_already_going_sends_nothing_and_tells_nothing() {
        let gone = Some(Time(Timestamp::from_second(1).unwrap()));
        let mut spec = FlaskMongoAppSpec::default();
        spec.mongo.storage.deletion_policy = DeletionPolicy::Delete;
        let mut owner = app("shop", "team-a", spec);
        owner.metadata.deletion_timestamp = gone.clone();
        owner.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        // The StatefulSet is gone; its claim is being deleted.
        let snapshot = Snapshot {
            claim: Some(PartialObjectMeta::<PersistentVolumeClaim> {
                metadata: ObjectMeta {
                    name: Some("data-shop-mongo-0".to_owned()),
                    namespace: Some("team-a".to_owned()),
                    deletion_timestamp: gone,
                    ..ObjectMeta::default()
                },
                ..PartialObjectMeta::default()
            }),
            ..Snapshot::default()
        };
        let instance = Instance::new(&owner).unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let counted = sent.clone();
        let client = stand_in(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok((500, Vec::new())) }
        });
        for poll in 1..=3 {
            let Ok(Plan::Finalize(cleanup)) = plan(
                &owner,
                &instance,
                &snapshot,
                &crate::Volumes::default(),
                || unreachable!(),
            ) else {
                panic!("expected a clean-up");
            };
            let changes = Changes::default();
            let done = finalize(&client, &owner, cleanup, &changes).await.unwrap();
            assert_eq!(done, Cleanup::Pending, "poll {poll}: waits for the claim");
            assert_eq!(
                sent.load(Ordering::SeqCst),
                0,
                "poll {poll}: deletes nothing again"
            );
            assert_eq!(changes.summary(), None, "poll {poll}: no Event");
        }
    }

    /// The requests (`METHOD path`, and the body of a patch to the StatefulSet) of one
    /// clean-up under `Delete` of an object whose StatefulSet and claim the caches no longer
    /// show, its outcome and its Event. The API server has the StatefulSet when
    /// `statefulset_there` (its cache lagged), and nothing else to delete but the Secret.
    async fn clean_up_with_nothing_cached(
        statefulset_there: bool,
    ) -> (Vec<String>, Cleanup, Option<(String, String)>) {
        let mut spec = FlaskMongoAppSpec::default();
        spec.mongo.storage.deletion_policy = DeletionPolicy::Delete;
        let mut owner = app("shop", "team-a", spec);
        owner.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        owner.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
        let instance = Instance::new(&owner).unwrap();
        let Ok(Plan::Finalize(cleanup)) = plan(
            &owner,
            &instance,
            &Snapshot::default(),
            &crate::Volumes::default(),
            || unreachable!(),
        ) else {
            panic!("expected a clean-up");
        };
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let released = serde_json::to_vec(&owner).unwrap();
        let client = stand_in(move |request| {
            let line = format!("{} {}", request.method(), request.uri().path());
            let released = released.clone();
            let log = log.clone();
            async move {
                let body = request.into_body().collect_bytes().await?;
                if line.contains("/statefulsets/") {
                    log.lock()
                        .unwrap()
                        .push(format!("{line} {}", String::from_utf8_lossy(&body)));
                } else {
                    log.lock().unwrap().push(line.clone());
                }
                Ok(if line.contains("/flaskmongoapps/") {
                    (200, released)
                } else if line.contains("/secrets/")
                    || statefulset_there && line.contains("/statefulsets/")
                {
                    an_object()
                } else {
                    refusal(404, "NotFound")
                })
            }
        });
        let changes = Changes::default();
        let done = finalize(&client, &owner, cleanup, &changes).await.unwrap();
        let sent = sent.lock().unwrap().clone();
        (sent, done, changes.summary())
    }

    #[tokio::test]
    async fn mongodb_is_stopped_not_deleted_to_confirm_it_gone_before_the_data() {
        let (mut sent, done, event) = clean_up_with_nothing_cached(false).await;
        assert_eq!(done, Cleanup::Done);
        // The first stage runs concurrently: its two requests in either order.
        sent[..2].sort();
        assert_eq!(
            sent,
            [
                "DELETE /api/v1/namespaces/team-a/persistentvolumeclaims/data-shop-mongo-0",
                r#"PATCH /apis/apps/v1/namespaces/team-a/statefulsets/shop-mongo {"spec":{"replicas":0}}"#,
                "DELETE /api/v1/namespaces/team-a/secrets/shop-mongo-credentials",
                "PATCH /apis/flaskmongo.dev/v1alpha1/namespaces/team-a/flaskmongoapps/shop",
            ]
        );
        assert_eq!(
            event,
            Some((
                "Deleted".to_owned(),
                "deleted Secret shop-mongo-credentials".to_owned()
            ))
        );
    }

    #[tokio::test]
    async fn a_statefulset_the_cache_missed_is_stopped_and_the_data_waits() {
        let (sent, done, event) = clean_up_with_nothing_cached(true).await;
        assert_eq!(done, Cleanup::Pending);
        assert_eq!(sent.len(), 2, "nothing after the first stage: {sent:?}");
        assert_eq!(
            event,
            Some((
                "Stopped".to_owned(),
                "stopped StatefulSet shop-mongo".to_owned()
            ))
        );
    }

    /// A client whose API server is `answer`: the status and body of each response.
    fn stand_in<F, Answer>(answer: F) -> Client
    where
        F: Fn(http::Request<kube::client::Body>) -> Answer + Clone + Send + 'static,
        Answer: Future<Output = std::result::Result<(u16, Vec<u8>), kube::Error>> + Send + 'static,
    {
        Client::new(
            tower::service_fn(move |request| {
                let answered = answer(request);
                async move {
                    let (status, body) = answered.await?;
                    Ok::<_, kube::Error>(
                        http::Response::builder()
                            .status(status)
                            .body(kube::client::Body::from(body))
                            .unwrap(),
                    )
                }
            }),
            "default",
        )
    }

    /// The API server's refusal with `code` and `reason`.
    fn refusal(code: u16, reason: &str) -> (u16, Vec<u8>) {
        let status = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": code, "reason": reason, "message": reason });
        (code, status.to_string().into_bytes())
    }

    /// An answer with an object, as to a deletion or a patch that found its target.
    fn an_object() -> (u16, Vec<u8>) {
        let object = json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "any" } });
        (200, object.to_string().into_bytes())
    }

    /// The requests of one [`converge`] of a new object, as `METHOD path` in the order they
    /// were sent, with `answered` and the path of the volume's or the Secret's when its
    /// answer went out, and its outcome; with `from_before`, of an object whose volume from
    /// before MongoDB ran without root was just prepared by its pod. The API server answers
    /// every write with the object written, the volume and the Secret a moment later than
    /// the rest (what waits for them is sent after that answer), but refuses the writes whose
    /// path contains `refused`.
    async fn first_writes(
        refused: Option<&'static str>,
        from_before: bool,
    ) -> (Vec<String>, Result<()>) {
        let mut owner = app("shop", "team-a", FlaskMongoAppSpec::default());
        if from_before {
            owner.status = Some(flaskmongo_crd::FlaskMongoAppStatus {
                credentials_secret: Some("shop-mongo-credentials".to_owned()),
                ..Default::default()
            });
        }
        let instance = Instance::new(&owner).unwrap();
        let volumes = crate::Volumes::default();
        let snapshot = if from_before {
            let placement = Placement::new(&instance, &volumes.root);
            let prepared = volume_preparation::build(&instance, &placement, &volumes);
            Snapshot {
                volumes: vec![persistent_volume::build(&instance, &placement)],
                volume_preparation: Some(finished(prepared, "Succeeded")),
                ..Snapshot::default()
            }
        } else {
            Snapshot {
                preparer_nodes: vec!["node-1".to_owned()],
                ..Snapshot::default()
            }
        };
        let Ok(Plan::Converge(converging)) =
            plan(&owner, &instance, &snapshot, &volumes, || "p".repeat(32))
        else {
            panic!("expected the children to be written");
        };
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        let client = stand_in(move |request| {
            let line = format!("{} {}", request.method(), request.uri().path());
            log.lock().unwrap().push(line.clone());
            let log = log.clone();
            async move {
                if line.contains("/persistentvolumes/") || line.contains("/secrets") {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    log.lock().unwrap().push(format!("answered {line}"));
                }
                Ok(if refused.is_some_and(|part| line.contains(part)) {
                    refusal(500, "InternalError")
                } else if line.starts_with("DELETE ") {
                    an_object()
                } else {
                    (200, request.into_body().collect_bytes().await?.to_vec())
                })
            }
        });
        let changes = Changes::default();
        let (_, outcome) = converge(&client, &owner, *converging, &changes).await;
        let sent = sent.lock().unwrap().clone();
        (sent, outcome)
    }

    /// Where the first request whose line contains `part` is among `sent`.
    fn position(sent: &[String], part: &str) -> Option<usize> {
        sent.iter().position(|line| line.contains(part))
    }

    /// Where the first request whose line contains `part` is among `sent`, which has one.
    fn sent_at(sent: &[String], part: &str) -> usize {
        position(sent, part).unwrap_or_else(|| panic!("no request for {part}: {sent:?}"))
    }

    #[tokio::test]
    async fn the_secret_goes_first_and_the_volume_before_mongodb() {
        let (sent, outcome) = first_writes(None, false).await;
        outcome.unwrap();
        let at = |part| sent_at(&sent, part);
        let volume = at("answered PATCH /api/v1/persistentvolumes/team-a.shop.mongo");
        let secret = at("answered POST /api/v1/namespaces/team-a/secrets");
        assert!(secret < at("PATCH /api/v1/persistentvolumes/"), "{sent:?}");
        assert!(volume < at("/statefulsets/shop-mongo"), "{sent:?}");
        assert!(secret < at("/deployments/shop-web"), "{sent:?}");
        assert_eq!(
            sent.len(),
            10,
            "every child once and the answers of the volume and the Secret: {sent:?}"
        );
    }

    #[tokio::test]
    async fn a_preparation_pod_goes_only_once_its_volume_records_the_preparation() {
        let (sent, outcome) = first_writes(None, true).await;
        outcome.unwrap();
        let at = |part| sent_at(&sent, part);
        let volume = at("answered PATCH /api/v1/persistentvolumes/team-a.shop.mongo");
        assert!(volume < at("DELETE /api/v1/namespaces/flaskmongo-volumes/pods/prepare-volume-"));
        assert!(volume < at("/statefulsets/shop-mongo"), "{sent:?}");
    }

    #[tokio::test]
    async fn a_refused_volume_holds_back_only_what_needs_it_and_is_named() {
        for from_before in [false, true] {
            let (sent, outcome) = first_writes(Some("/persistentvolumes/"), from_before).await;
            let error = outcome.unwrap_err().to_string();
            assert!(
                error.contains("PersistentVolume team-a.shop.mongo"),
                "{error}"
            );
            assert_eq!(
                position(&sent, "/statefulsets/shop-mongo"),
                None,
                "{sent:?}"
            );
            assert_eq!(position(&sent, "/pods/prepare-volume-"), None, "{sent:?}");
            for other in [
                "/deployments/shop-web",
                "/services/shop-web",
                "/services/shop-mongo",
                "/horizontalpodautoscalers/shop-web",
                "/networkpolicies/shop-network",
            ] {
                assert!(position(&sent, other).is_some(), "no {other}: {sent:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_refused_secret_holds_back_the_volume_and_the_workloads_and_is_named() {
        let (sent, outcome) = first_writes(Some("/secrets"), false).await;
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("shop-mongo-credentials"), "{error}");
        for held_back in [
            "/persistentvolumes/",
            "/statefulsets/shop-mongo",
            "/deployments/shop-web",
            "/pods/prepare-volume-",
        ] {
            assert_eq!(position(&sent, held_back), None, "{held_back}: {sent:?}");
        }
        for other in [
            "/services/shop-web",
            "/services/shop-mongo",
            "/horizontalpodautoscalers/shop-web",
            "/networkpolicies/shop-network",
        ] {
            assert!(position(&sent, other).is_some(), "no {other}: {sent:?}");
        }
    }
}
