//! Plan: what one reconcile does, decided from the object and one [`Snapshot`] of the
//! caches by a pure function (no request, no clock, no randomness: a new password comes
//! from the caller). Every decision about the children is here: what to apply, with the
//! hand-off of `replicas` to the autoscaler; what to delete (the autoscaler once
//! autoscaling is off); whether a credentials Secret may be generated; when a volume's
//! directory is prepared for MongoDB's user, and MongoDB held back until it is; the
//! finalizer (under `deletionPolicy: Delete` only); the order of the clean-up under
//! `Delete`; and which preparation pods lost their object.

use std::collections::HashSet;

use flaskmongo_crd::{DeletionPolicy, FlaskMongoApp};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::ObjectMeta;
use kube::core::ApiResource;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::Volumes;
use crate::apply;
use crate::children::persistent_volume::{self, Placement};
use crate::children::volume_preparation::{self, Progress};
use crate::children::volume_preparer;
use crate::children::{self, Children, Instance, secret};
use crate::error::{Error, Result};
use crate::labels::{self, MANAGER};
use crate::observe::Snapshot;

/// Finalizer that lets the operator remove the data under `deletionPolicy: Delete`. Only
/// such objects get it: under `Retain` nothing is left for the operator to do at deletion,
/// so the object goes at once, also while no operator runs.
pub const FINALIZER: &str = "flaskmongo.dev/cleanup";
/// Field manager that keeps `spec.replicas` while the autoscaler takes it over.
pub const REPLICAS_HANDOFF_MANAGER: &str = "flaskmongo-operator-replicas-handoff";

/// What one reconcile does.
#[derive(Debug)]
pub enum Plan {
    /// The object lives: bring the children to its spec, then report its status. Boxed:
    /// it holds every child.
    Converge(Box<Converge>),
    /// The object is being deleted: clean up, report nothing.
    Finalize(Finalize),
}

/// The writes that bring a live object's children to its spec, in this order: the
/// finalizer (and any confirmation of the Secret, at the same time), then the Secret and
/// every child at once, but for the workloads, written once the Secret is.
#[derive(Debug)]
pub struct Converge {
    /// The object's finalizers with ours added, when its data is to be deleted with it and
    /// it lacks ours; `None` leaves them.
    pub finalizers: Option<Vec<String>>,
    /// The credentials Secret.
    pub secret: Once<Secret>,
    /// Every other child.
    pub children: Writes,
}

/// An object created once and never changed afterwards.
#[derive(Debug)]
pub enum Once<K> {
    /// It exists (or, paused, the object changes nothing).
    Leave,
    /// Create it; one that already exists is left as it is.
    Create(K),
    /// It must exist, and nothing records that it does: ask whether it is there, and fail
    /// with `missing` if it is not. Nothing else is written until it is.
    Confirm {
        /// Its name, in the object's namespace.
        name: String,
        /// The failure to report when it is not there.
        missing: Error,
    },
}

/// One step for each child the operator applies. Execute takes it apart field by field,
/// so a child added here and not handled there does not compile.
#[derive(Debug, Clone, PartialEq)]
pub struct Writes {
    /// MongoDB headless Service.
    pub mongo_service: Step<Service>,
    /// Static volume (cluster-scoped). Written first: the StatefulSet and the
    /// preparation pod, which may depend on it, are written only once it succeeded.
    pub persistent_volume: Step<PersistentVolume>,
    /// MongoDB StatefulSet.
    pub statefulset: Step<StatefulSet>,
    /// Web NodePort Service.
    pub web_service: Step<Service>,
    /// Web Deployment.
    pub deployment: Step<Deployment>,
    /// Web autoscaler.
    pub hpa: Step<HorizontalPodAutoscaler>,
    /// The NetworkPolicy around MongoDB.
    pub network_policy: Step<NetworkPolicy>,
    /// The pod that prepares the volume's directory, in the operator's namespace for it.
    pub volume_preparation: Elsewhere<Pod>,
}

/// A step on an object in another namespace than the owner's.
#[derive(Debug, Clone, PartialEq)]
pub struct Elsewhere<K> {
    /// The object's namespace.
    pub namespace: String,
    /// The step.
    pub step: Step<K>,
}

impl Writes {
    /// No write at all (preparation pods live in `preparation_namespace`).
    fn none(preparation_namespace: &str) -> Self {
        Self {
            volume_preparation: Elsewhere {
                namespace: preparation_namespace.to_owned(),
                step: Step::Leave,
            },
            mongo_service: Step::Leave,
            persistent_volume: Step::Leave,
            statefulset: Step::Leave,
            web_service: Step::Leave,
            deployment: Step::Leave,
            hpa: Step::Leave,
            network_policy: Step::Leave,
        }
    }
}

/// What to do with one child.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<K> {
    /// Its cached live version already is what the spec makes it (or it is neither
    /// wanted nor there).
    Leave,
    /// Apply it.
    Apply(Apply<K>),
    /// Delete the object of this name: the spec no longer wants it.
    Delete(String),
}

/// One server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Apply<K> {
    /// The object, stamped with the hash of its content.
    pub object: K,
    /// Whether it exists: an apply then reports Updated rather than Created.
    pub existed: bool,
    /// Applied first, to keep a field that `object` stops setting.
    pub first: Option<Hold>,
}

/// An apply by a second field manager that keeps a field when the operator's own applies
/// stop setting it: a field no manager owns any more is removed.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// The second field manager.
    pub manager: &'static str,
    /// What it applies: the kind, the name and the field.
    pub patch: Value,
}

/// The clean-up of an object being deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum Finalize {
    /// Our finalizer is not there: nothing to do.
    Nothing,
    /// What holds the data is still there: delete or stop these (what is not already
    /// going), and look again shortly.
    Wait(Vec<Target>),
    /// Delete stage by stage, then set `finalizers` (the object's, without ours). Each
    /// stage runs concurrently; one that still finds something to delete or stop ends the
    /// run before the next stage (the caches lagged: look again), unless it is the last.
    Release {
        /// The deletions and stops, in order.
        stages: Vec<Vec<Target>>,
        /// The finalizers to leave on the object.
        finalizers: Vec<String>,
    },
}

/// An object to delete, or to stop before it is deleted, named by kind and name.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Its kind, for a dynamic API.
    pub resource: ApiResource,
    /// Its namespace; `None` for a cluster-scoped kind.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// A merge patch that stops it, sent instead of the deletion: a 404 tells all the
    /// same that it is gone.
    pub stop: Option<Value>,
}

impl Target {
    /// The object `name` of the namespaced kind `K` in `namespace`.
    pub fn namespaced<K>(name: String, namespace: &str) -> Self
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
    {
        Self {
            resource: ApiResource::erase::<K>(&()),
            namespace: Some(namespace.to_owned()),
            name,
            stop: None,
        }
    }

    /// The object `name` of the cluster-scoped kind `K`.
    pub fn cluster<K>(name: String) -> Self
    where
        K: Resource<DynamicType = (), Scope = ClusterResourceScope>,
    {
        Self {
            resource: ApiResource::erase::<K>(&()),
            namespace: None,
            name,
            stop: None,
        }
    }

    /// The same object, stopped by `patch` instead of deleted.
    pub fn stopped_by(self, patch: Value) -> Self {
        Self {
            stop: Some(patch),
            ..self
        }
    }

    /// Kind and name, for messages and Events.
    pub fn describe(&self) -> String {
        format!("{} {}", self.resource.kind, self.name)
    }
}

/// The plan for `app` (checked as `instance`) given what the caches hold of it; a new
/// volume's directory goes under `volumes.root`. `password` is called only when a new
/// Secret is to be created.
pub fn plan(
    app: &FlaskMongoApp,
    instance: &Instance<'_>,
    snapshot: &Snapshot,
    volumes: &Volumes,
    password: impl FnOnce() -> String,
) -> Result<Plan> {
    if app.metadata.deletion_timestamp.is_some() {
        return Ok(Plan::Finalize(finalize(app, instance, snapshot, volumes)));
    }
    if app.spec.paused {
        return Ok(Plan::Converge(Box::new(Converge {
            finalizers: None,
            secret: Once::Leave,
            children: Writes::none(&volumes.preparation_namespace),
        })));
    }
    let volume = own_volume(instance, snapshot);
    if volume.is_none()
        && let Some(taken) = snapshot
            .volumes
            .iter()
            .find(|v| v.metadata.name.as_deref() == Some(instance.volume_name().as_str()))
    {
        return Err(Error::VolumeTaken {
            volume: instance.volume_name(),
            owner: describe_claim(taken),
        });
    }
    let deletes_data = instance.spec.mongo.storage.deletion_policy == DeletionPolicy::Delete;
    Ok(Plan::Converge(Box::new(Converge {
        finalizers: (deletes_data && !has_finalizer(app)).then(|| {
            let mut finalizers = app.finalizers().to_vec();
            finalizers.push(FINALIZER.to_owned());
            finalizers
        }),
        secret: credentials(app, instance, snapshot, volume, password),
        children: writes(
            instance,
            snapshot,
            storage(instance, snapshot, volume, volumes)?,
            volumes,
        )?,
    })))
}

fn has_finalizer(app: &FlaskMongoApp) -> bool {
    app.finalizers().iter().any(|f| f == FINALIZER)
}

/// The operator may not read Secrets, so it knows of the credentials Secret only what
/// its status records: the Secret it created or found. Without that record, the Secret
/// is created only when nothing holds data from an earlier object of this name (only the
/// old Secret holds the password that opens it); with such data, its presence is asked
/// for, and its absence reported. That a volume is data holds since the executor writes a
/// new volume only once its Secret exists (`execute::converge`).
fn credentials(
    app: &FlaskMongoApp,
    instance: &Instance<'_>,
    snapshot: &Snapshot,
    volume: Option<&PersistentVolume>,
    password: impl FnOnce() -> String,
) -> Once<Secret> {
    let recorded = app
        .status
        .as_ref()
        .and_then(|s| s.credentials_secret.as_deref());
    if recorded == Some(instance.secret_name().as_str()) {
        return Once::Leave;
    }
    let retained = if let Some(volume) = volume {
        Some(format!("PersistentVolume {}", volume.name_any()))
    } else if snapshot.claim.is_some() {
        Some(format!("PersistentVolumeClaim {}", instance.claim_name()))
    } else {
        None
    };
    match retained {
        None => Once::Create(secret::build(instance, &password())),
        Some(volume) => Once::Confirm {
            name: instance.secret_name(),
            missing: Error::CredentialsMissing {
                volume,
                secret: instance.secret_name(),
            },
        },
    }
}

/// The volume cached for this object: labelled as its own and pre-bound to its claim,
/// under its name or its name before 0.2. Any other volume is never reused, changed or
/// deleted.
fn own_volume<'s>(instance: &Instance<'_>, snapshot: &'s Snapshot) -> Option<&'s PersistentVolume> {
    snapshot.volumes.iter().find(|volume| {
        let claim = volume
            .spec
            .as_ref()
            .and_then(|spec| spec.claim_ref.as_ref());
        belongs_to(instance, &volume.metadata)
            && claim.is_some_and(|claim| {
                claim.namespace.as_deref() == Some(instance.namespace)
                    && claim.name.as_deref() == Some(instance.claim_name().as_str())
            })
    })
}

/// Whom a volume that is not this object's belongs to, for the message.
fn describe_claim(volume: &PersistentVolume) -> String {
    let claim = volume
        .spec
        .as_ref()
        .and_then(|spec| spec.claim_ref.as_ref());
    match claim.and_then(|c| Some((c.namespace.as_deref()?, c.name.as_deref()?))) {
        Some((namespace, name)) => format!("the claim {namespace}/{name}"),
        None => "no claim of this object".to_owned(),
    }
}

/// What the plan does about MongoDB's storage.
#[derive(Debug)]
struct Storage {
    /// The static volume.
    volume: Step<PersistentVolume>,
    /// The pod that prepares its directory.
    preparation: Step<Pod>,
    /// What MongoDB's StatefulSet may do meanwhile.
    mongo: Mongo,
}

/// What MongoDB's StatefulSet may do while its volume is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mongo {
    /// Run as the spec says.
    Run,
    /// Run no pod: its volume holds data MongoDB's user cannot write until the
    /// preparation is done.
    Stop,
}

/// The static volume and the preparation of its directory. A new volume is created at
/// once, on a node whose volume preparer hands its directory to MongoDB's user as soon as
/// the kubelet makes it (see [`new_volume`]). A volume from before MongoDB ran without
/// root is prepared in place by a pod of its own once MongoDB has stopped. A volume the
/// spec does not create, or one being deleted, is left alone: it holds data.
fn storage(
    instance: &Instance<'_>,
    snapshot: &Snapshot,
    live: Option<&PersistentVolume>,
    volumes: &Volumes,
) -> Result<Storage> {
    let leave = |preparation| Storage {
        volume: Step::Leave,
        preparation,
        mongo: Mongo::Run,
    };
    let pod = snapshot.volume_preparation.as_ref();
    if !instance.spec.mongo.storage.persistent_volume.create {
        return Ok(leave(orphan(instance, pod)));
    }
    let Some(live) = live else {
        return new_volume(instance, snapshot, volumes);
    };
    let placement = match Placement::of(live) {
        Some(placement) if live.metadata.deletion_timestamp.is_none() => placement,
        _ => return Ok(leave(Step::Leave)),
    };
    if placement.prepared {
        return Ok(Storage {
            volume: apply_step(persistent_volume::build(instance, &placement), Some(live))?,
            preparation: orphan(instance, pod),
            mongo: Mongo::Run,
        });
    }
    if !within(&placement.path, &volumes.root) {
        return Err(Error::VolumeOutsideRoot {
            volume: placement.name,
            path: placement.path,
            root: volumes.root.clone(),
        });
    }
    let Some(pod) = pod else {
        // Data is handed over only once no MongoDB process of the old image writes it.
        let mongo_stopped = snapshot.statefulset.as_ref().is_none_or(is_stopped);
        let preparation = if mongo_stopped {
            apply_step(
                volume_preparation::build(instance, &placement, volumes),
                None,
            )?
        } else {
            Step::Leave
        };
        return Ok(Storage {
            volume: Step::Leave,
            preparation,
            mongo: Mongo::Stop,
        });
    };
    match volume_preparation::progress(pod) {
        Progress::Succeeded => {
            // The volume keeps the node it had: where its data is was never recorded, and
            // a node guessed now could be one without it.
            let prepared = Placement {
                prepared: true,
                ..placement
            };
            // All in one pass: the executor writes the volume first, and MongoDB and the
            // pod's removal only once the volume records that its data is MongoDB's.
            Ok(Storage {
                volume: apply_step(persistent_volume::build(instance, &prepared), Some(live))?,
                preparation: orphan(instance, Some(pod)),
                mongo: Mongo::Run,
            })
        }
        Progress::Failed(why) => Err(Error::VolumePreparationFailed {
            volume: placement.name,
            pod: pod.metadata.name.clone().unwrap_or_default(),
            pod_namespace: volumes.preparation_namespace.clone(),
            why,
        }),
        Progress::Running => Ok(Storage {
            volume: Step::Leave,
            preparation: Step::Leave,
            mongo: Mongo::Stop,
        }),
    }
}

/// A new volume, bound from the start to a node where the volume preparer is Ready (chosen
/// by [`volume_preparer::choose`]), so that MongoDB is scheduled there and its directory
/// is handed over there. Written with MongoDB in one pass: the executor writes the volume
/// first (a claim made before its pre-bound volume waits for the binder's next resync).
/// Without such a node the plan fails: nothing of the object is written until one is
/// Ready, and the object says why.
fn new_volume(instance: &Instance<'_>, snapshot: &Snapshot, volumes: &Volumes) -> Result<Storage> {
    let Some(node) = volume_preparer::choose(&snapshot.preparer_nodes, instance.uid()) else {
        return Err(Error::NoVolumePreparer {
            namespace: volumes.preparation_namespace.clone(),
            daemon_set: volume_preparer::NAME.to_owned(),
        });
    };
    let placement = Placement {
        node: Some(node.to_owned()),
        prepared: true,
        ..Placement::new(instance, &volumes.root)
    };
    Ok(Storage {
        volume: apply_step(persistent_volume::build(instance, &placement), None)?,
        preparation: orphan(instance, snapshot.volume_preparation.as_ref()),
        mongo: Mongo::Run,
    })
}

/// Whether `path` is inside the directory `root` (both written without `.`, `..` or
/// repeated slashes, as the operator writes them).
fn within(path: &str, root: &str) -> bool {
    path.strip_prefix(root)
        .is_some_and(|rest| rest.starts_with('/') && !rest.split('/').any(|part| part == ".."))
}

/// Whether a StatefulSet asked to run no pod has none left.
fn is_stopped(statefulset: &StatefulSet) -> bool {
    let asked = statefulset.spec.replicas;
    let status = statefulset.status.as_ref();
    let current = status.and_then(|s| s.observed_generation) >= statefulset.metadata.generation;
    asked == Some(0) && current && status.is_none_or(|s| s.replicas == 0)
}

/// Each child against its cached live version.
fn writes(
    instance: &Instance<'_>,
    snapshot: &Snapshot,
    storage: Storage,
    volumes: &Volumes,
) -> Result<Writes> {
    let Children {
        deployment,
        web_service,
        hpa,
        mut statefulset,
        mongo_service,
        network_policy,
    } = children::desired(instance, volumes);
    let live_statefulset = snapshot.statefulset.as_ref();
    let statefulset = match (storage.mongo, live_statefulset) {
        (Mongo::Stop, None) => Step::Leave,
        // Stopped, not deleted: its pod's claim keeps holding the volume.
        (Mongo::Stop, Some(_)) => {
            statefulset.spec.replicas = Some(0);
            apply_step(statefulset, live_statefulset)?
        }
        (Mongo::Run, _) => apply_step(statefulset, live_statefulset)?,
    };
    Ok(Writes {
        mongo_service: apply_step(mongo_service, snapshot.mongo_service.as_ref())?,
        persistent_volume: storage.volume,
        statefulset,
        web_service: apply_step(web_service, snapshot.web_service.as_ref())?,
        deployment: deployment_step(
            deployment,
            snapshot.deployment.as_ref(),
            instance.spec.autoscaling.min_replicas,
        )?,
        hpa: optional_step(instance, hpa, snapshot.hpa.as_ref())?,
        network_policy: optional_step(instance, network_policy, snapshot.network_policy.as_ref())?,
        volume_preparation: Elsewhere {
            namespace: volumes.preparation_namespace.clone(),
            step: storage.preparation,
        },
    })
}

/// A child the spec may turn off: applied while wanted, deleted once not (see [`orphan`]).
fn optional_step<K>(
    instance: &Instance<'_>,
    desired: Option<K>,
    live: Option<&K>,
) -> Result<Step<K>>
where
    K: Resource + Serialize,
{
    match desired {
        Some(desired) => apply_step(desired, live),
        None => Ok(orphan(instance, live)),
    }
}

/// `desired` stamped with its hash, to apply unless its cached live version already
/// matches it.
fn apply_step<K>(desired: K, live: Option<&K>) -> Result<Step<K>>
where
    K: Resource + Serialize,
{
    let stamped = apply::stamp(desired)?;
    if stamped.is_current(live)? {
        return Ok(Step::Leave);
    }
    Ok(Step::Apply(Apply {
        object: stamped.object,
        existed: live.is_some(),
        first: None,
    }))
}

/// The Deployment, handing `spec.replicas` over to the autoscaler when it is turned on.
///
/// A field dropped from an apply is removed if no other manager owns it, and a Deployment
/// without `replicas` falls back to one pod. So before the first apply without `replicas`,
/// a second field manager applies the current count; it keeps the field until the
/// autoscaler's first change takes it over.
fn deployment_step(
    desired: Deployment,
    live: Option<&Deployment>,
    min_replicas: i32,
) -> Result<Step<Deployment>> {
    let Step::Apply(mut apply) = apply_step(desired, live)? else {
        return Ok(Step::Leave);
    };
    if apply.object.spec.replicas.is_none() {
        match live {
            // The hash stays that of the spec without `replicas`, so the count is handed
            // over like any other.
            None => start_at_the_minimum(&mut apply.object, min_replicas),
            Some(live) if owns_replicas(live) => {
                apply.first = Some(Hold {
                    manager: REPLICAS_HANDOFF_MANAGER,
                    patch: json!({
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": { "name": live.name_any(), "namespace": live.namespace() },
                        "spec": { "replicas": live.spec.replicas },
                    }),
                });
            }
            Some(_) => {}
        }
    }
    Ok(Step::Apply(apply))
}

/// The web Deployment as it is created: without `replicas` (autoscaling on) it would run
/// one pod until the autoscaler's first pass, so it starts at the autoscaler's minimum.
pub fn start_at_the_minimum(deployment: &mut Deployment, min_replicas: i32) {
    deployment.spec.replicas.get_or_insert(min_replicas);
}

/// Whether the operator's own applies own the live Deployment's `spec.replicas`.
pub fn owns_replicas(deployment: &Deployment) -> bool {
    deployment.managed_fields().iter().any(|entry| {
        entry.manager.as_deref() == Some(MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0["f:spec"].get("f:replicas").is_some())
    })
}

/// A child the spec no longer wants: deleted if the cache (which holds only objects with
/// the operator's labels) has it, labelled as this object's, and not already going.
fn orphan<K: Resource>(instance: &Instance<'_>, live: Option<&K>) -> Step<K> {
    match live {
        Some(live)
            if belongs_to(instance, live.meta()) && live.meta().deletion_timestamp.is_none() =>
        {
            Step::Delete(live.meta().name.clone().unwrap_or_default())
        }
        _ => Step::Leave,
    }
}

/// Whether the owner labels of `meta` name this object.
fn belongs_to(instance: &Instance<'_>, meta: &ObjectMeta) -> bool {
    let owner = meta.labels.as_ref().and_then(labels::owner);
    owner == Some((instance.namespace, instance.name))
}

/// The clean-up, of an object that has our finalizer: all under `Delete`, and those under
/// `Retain` that had it before (an earlier version set it on every object, and one changed
/// from `Delete` keeps it). Under `Retain` the data, its claim and its Secret stay, and the
/// namespaced children go with the object through their owner references. Under `Delete`:
/// first the StatefulSet is stopped, then deleted with the claim; once both are gone, the
/// volume and the Secret; then the finalizer. Under both, a volume's preparation pod (in
/// another namespace, so no owner reference takes it away) goes in the last stage;
/// [`orphaned_preparations`] finds that of an object that had no finalizer.
///
/// The StatefulSet's controller creates the claim of a pod it is about to create, from a
/// copy of the StatefulSet read before: one deleted while it runs could still make the
/// claim after the clean-up confirmed it gone, and that claim would outlive its object.
/// Once the controller has seen the StatefulSet asked to run no pod, it makes none.
fn finalize(
    app: &FlaskMongoApp,
    instance: &Instance<'_>,
    snapshot: &Snapshot,
    volumes: &Volumes,
) -> Finalize {
    if !has_finalizer(app) {
        return Finalize::Nothing;
    }
    let finalizers = app
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    let preparation: Vec<Target> = snapshot
        .volume_preparation
        .iter()
        .map(|pod| Target::namespaced::<Pod>(pod.name_any(), &volumes.preparation_namespace))
        .collect();
    let storage = &instance.spec.mongo.storage;
    if storage.deletion_policy != DeletionPolicy::Delete {
        return Finalize::Release {
            stages: Some(preparation)
                .filter(|stage| !stage.is_empty())
                .into_iter()
                .collect(),
            finalizers,
        };
    }
    let namespace = instance.namespace;
    let statefulset = Target::namespaced::<StatefulSet>(instance.mongo_name(), namespace);
    let stop = statefulset
        .clone()
        .stopped_by(json!({ "spec": { "replicas": 0 } }));
    let claim = Target::namespaced::<PersistentVolumeClaim>(instance.claim_name(), namespace);
    let live_claim = snapshot.claim.as_ref().map(|c| &c.metadata);
    let claim_to_delete = live_claim.is_some_and(|meta| meta.deletion_timestamp.is_none());
    if let Some(live) = &snapshot.statefulset {
        // One already going gets no new pod from its controller.
        let going = live.metadata.deletion_timestamp.is_some();
        let stopped = going || is_stopped(live);
        let mut targets = Vec::new();
        if stopped && !going {
            targets.push(statefulset);
        } else if !stopped && live.spec.replicas != Some(0) {
            targets.push(stop);
        }
        // Deleted while the StatefulSet may still run a pod, the claim would be made again.
        if stopped && claim_to_delete {
            targets.push(claim);
        }
        return Finalize::Wait(targets);
    }
    if live_claim.is_some() {
        return Finalize::Wait(if claim_to_delete {
            vec![claim]
        } else {
            Vec::new()
        });
    }
    // The caches show neither: stopping the one and deleting the other again confirms both
    // gone (404) before the data goes.
    let mut data = Vec::new();
    if storage.persistent_volume.create
        && let Some(volume) = own_volume(instance, snapshot)
    {
        data.push(Target::cluster::<PersistentVolume>(volume.name_any()));
    }
    data.push(Target::namespaced::<Secret>(
        instance.secret_name(),
        namespace,
    ));
    data.extend(preparation);
    Finalize::Release {
        stages: vec![vec![stop, claim], data],
        finalizers,
    }
}

/// The preparation pods, of those named `pods` in `namespace`, whose object is gone: their
/// name holds a uid no object in `live` has. Such a pod stays behind when its object goes
/// without a finalizer (`Retain`) before the pod is removed. A pod named otherwise is not
/// one the operator made and stays.
pub fn orphaned_preparations<'a>(
    pods: impl IntoIterator<Item = &'a str>,
    live: &HashSet<&str>,
    namespace: &str,
) -> Vec<Target> {
    pods.into_iter()
        .filter(|pod| volume_preparation::uid_of(pod).is_some_and(|uid| !live.contains(uid)))
        .map(|pod| Target::namespaced::<Pod>(pod.to_owned(), namespace))
        .collect()
}

#[cfg(test)]
mod tests;
