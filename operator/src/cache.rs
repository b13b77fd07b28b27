//! Watch caches of the children that keep each object as its JSON text, compressed.
//!
//! A typed k8s-openapi object takes several times the memory of its JSON: every string and
//! every label map is an allocation of its own, and a map of seven labels is a B-tree node
//! of eleven slots. With 1,000 `FlaskMongoApp`s the caches hold 8,000 objects, so the
//! operator keeps the text and parses an object back only when a reconcile reads it. The
//! text repeats itself (keys, labels, names), so deflate at its fastest level keeps less
//! than half of it (one object's seven children: 14.4 KB of JSON, 6.3 KB stored), for some
//! microseconds per object stored or read.
//!
//! Unlike kube-runtime's store, a cache takes in each object of a list as it arrives rather
//! than when the list is complete: a streaming list after an API server restart can take
//! seconds, and a reconcile that one of its objects triggers must see that object, not the
//! version from before the outage.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};

use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::error::{Error, Result};

type Objects<K> = HashMap<ObjectRef<K>, Packed<K>>;

/// One object as the caches keep it: its JSON text, compressed.
pub struct Packed<K> {
    bytes: Box<[u8]>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Serialize> Packed<K> {
    /// `object`, packed.
    pub fn pack(object: &K) -> std::io::Result<Self> {
        let mut encoder = DeflateEncoder::new(Vec::new(), Compression::fast());
        serde_json::to_writer(&mut encoder, object)?;
        Ok(Self {
            bytes: encoder.finish()?.into_boxed_slice(),
            kind: PhantomData,
        })
    }
}

impl<K: DeserializeOwned> Packed<K> {
    /// The object, parsed back.
    pub fn unpack(&self) -> serde_json::Result<K> {
        let mut json = Vec::new();
        DeflateDecoder::new(&*self.bytes)
            .read_to_end(&mut json)
            .map_err(serde_json::Error::io)?;
        serde_json::from_slice(&json)
    }
}

impl<K> std::fmt::Debug for Packed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.bytes.len())
    }
}

/// The reading side of a cache; clones share it.
pub struct Cache<K: Resource<DynamicType = ()>> {
    objects: Arc<RwLock<Objects<K>>>,
    ready: watch::Receiver<bool>,
}

impl<K: Resource<DynamicType = ()>> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            objects: Arc::clone(&self.objects),
            ready: self.ready.clone(),
        }
    }
}

/// The writing side of a cache: fed every event of the watch.
pub struct Writer<K: Resource<DynamicType = ()>> {
    objects: Arc<RwLock<Objects<K>>>,
    /// The keys a list in progress has named so far; when the list is complete, every other
    /// object is dropped.
    listed: Option<HashSet<ObjectRef<K>>>,
    ready: watch::Sender<bool>,
}

/// An empty cache and the writer that fills it.
pub fn cache<K: Resource<DynamicType = ()>>() -> (Cache<K>, Writer<K>) {
    let objects = Arc::default();
    let (ready_sender, ready) = watch::channel(false);
    (
        Cache {
            objects: Arc::clone(&objects),
            ready,
        },
        Writer {
            objects,
            listed: None,
            ready: ready_sender,
        },
    )
}

/// The key of an object in a cache: its namespace and name only (`ObjectRef::from_obj`
/// would also keep its uid and resourceVersion in every key).
pub fn key<K: Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let meta = object.meta();
    let name = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match &meta.namespace {
        Some(namespace) => name.within(namespace),
        None => name,
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    /// The cached object named by `key`, parsed.
    pub fn get(&self, key: &ObjectRef<K>) -> Result<Option<K>> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        objects
            .get(key)
            .map(|stored| {
                stored.unpack().map_err(|source| Error::Cached {
                    what: key.to_string(),
                    source,
                })
            })
            .transpose()
    }

    /// Whether an object named by `key` is cached.
    pub fn contains(&self, key: &ObjectRef<K>) -> bool {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        objects.contains_key(key)
    }

    /// The names of the cached objects, without parsing any.
    pub fn names(&self) -> Vec<String> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        objects.keys().map(|key| key.name.clone()).collect()
    }

    /// Waits until the cache holds its first complete list; returns at once if the watch
    /// has stopped.
    pub async fn wait_until_ready(&self) {
        // An error means the writer is gone: the watch stopped, nothing is left to wait for.
        let _ = self.ready.clone().wait_for(|ready| *ready).await;
    }
}

impl<K> Writer<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
{
    /// Brings the cache up to date with one watch event; returns the objects it touched:
    /// the one the event names or, at the end of a list, those the list no longer has (gone
    /// while the watch was down), whose owners must be reconciled as well.
    pub fn apply(&mut self, event: watcher::Event<K>) -> Vec<K> {
        let mut objects = self.objects.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Init => {
                self.listed = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                self.listed
                    .get_or_insert_with(HashSet::new)
                    .insert(key(&object));
                store(&mut objects, &object);
                vec![object]
            }
            watcher::Event::InitDone => {
                let listed = self.listed.take().unwrap_or_default();
                let gone: Vec<ObjectRef<K>> = objects
                    .keys()
                    .filter(|key| !listed.contains(*key))
                    .cloned()
                    .collect();
                self.ready.send_replace(true);
                gone.iter()
                    .filter_map(|key| objects.remove(key).map(|stored| (key, stored)))
                    .filter_map(|(key, stored)| {
                        stored
                            .unpack()
                            .inspect_err(|error| {
                                tracing::warn!(object = %key, %error, "cannot read a removed object");
                            })
                            .ok()
                    })
                    .collect()
            }
            watcher::Event::Apply(object) => {
                store(&mut objects, &object);
                vec![object]
            }
            watcher::Event::Delete(object) => {
                objects.remove(&key(&object));
                vec![object]
            }
        }
    }
}

/// Stores `object` as its compressed JSON. Should that ever fail, the object is left out,
/// so the operator sees it as missing and applies it again: a wasted write, never a wrong
/// one.
fn store<K: Resource<DynamicType = ()> + Serialize>(objects: &mut Objects<K>, object: &K) {
    let key = key(object);
    match Packed::pack(object) {
        Ok(stored) => {
            objects.insert(key, stored);
        }
        Err(error) => {
            tracing::warn!(object = %key, %error, "cannot cache; treating it as missing");
            objects.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Service;
    use kube::api::ObjectMeta;

    use super::*;

    fn service(name: &str, cluster_ip: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("shop".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned()),
                ..Default::default()
            }),
            ..Service::default()
        }
    }

    fn named(name: &str) -> ObjectRef<Service> {
        ObjectRef::new(name).within("shop")
    }

    #[test]
    fn a_child_is_stored_in_less_than_half_its_json() {
        let app = crate::children::tests::app("shop", "team-a", Default::default());
        let instance = crate::children::Instance::new(&app).unwrap();
        let deployment = crate::children::desired(&instance).deployment;
        let (cache, mut writer) = cache();
        writer.apply(watcher::Event::Apply(deployment.clone()));
        let stored = cache
            .objects
            .read()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .bytes
            .len();
        let json = serde_json::to_vec(&deployment).unwrap().len();
        assert!(
            stored * 2 < json,
            "{stored} bytes stored for {json} of JSON"
        );
        assert_eq!(cache.get(&key(&deployment)).unwrap(), Some(deployment));
    }

    #[tokio::test]
    async fn a_cache_is_ready_once_its_first_list_is_complete() {
        let (cache, mut writer) = cache::<Service>();
        writer.apply(watcher::Event::Init);
        writer.apply(watcher::Event::InitApply(service("a", "10.0.0.1")));
        assert!(!*cache.ready.borrow());
        writer.apply(watcher::Event::InitDone);
        cache.wait_until_ready().await;
        assert_eq!(
            cache.get(&named("a")).unwrap(),
            Some(service("a", "10.0.0.1"))
        );
    }

    #[test]
    fn watch_events_add_change_and_remove_objects() {
        let (cache, mut writer) = cache::<Service>();
        writer.apply(watcher::Event::Apply(service("a", "10.0.0.1")));
        writer.apply(watcher::Event::Apply(service("b", "10.0.0.2")));
        let touched = writer.apply(watcher::Event::Apply(service("a", "10.0.0.3")));
        assert_eq!(touched, [service("a", "10.0.0.3")]);
        let touched = writer.apply(watcher::Event::Delete(service("b", "10.0.0.2")));
        assert_eq!(touched, [service("b", "10.0.0.2")]);
        assert_eq!(
            cache.get(&named("a")).unwrap(),
            Some(service("a", "10.0.0.3"))
        );
        assert!(!cache.contains(&named("b")));
        assert_eq!(cache.get(&named("b")).unwrap(), None);
        assert!(!cache.contains(&ObjectRef::new("a").within("elsewhere")));
    }

    #[test]
    fn a_relist_shows_each_object_at_once_and_drops_the_unlisted_at_its_end() {
        let (cache, mut writer) = cache::<Service>();
        writer.apply(watcher::Event::Apply(service("gone", "10.0.0.1")));
        writer.apply(watcher::Event::Apply(service("kept", "10.0.0.2")));
        writer.apply(watcher::Event::Init);
        let touched = writer.apply(watcher::Event::InitApply(service("kept", "10.0.0.3")));
        assert_eq!(touched, [service("kept", "10.0.0.3")]);
        assert_eq!(
            cache.get(&named("kept")).unwrap(),
            Some(service("kept", "10.0.0.3")),
            "a reconcile the listed object triggers sees it before the list ends"
        );
        assert!(cache.contains(&named("gone")), "the list may still name it");
        let touched = writer.apply(watcher::Event::InitDone);
        assert_eq!(
            touched,
            [service("gone", "10.0.0.1")],
            "its owner must hear of it"
        );
        assert!(!cache.contains(&named("gone")));
        assert!(cache.contains(&named("kept")));
    }
}
