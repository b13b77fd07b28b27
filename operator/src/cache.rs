//! Watch caches of the children that keep each object as its JSON text, compressed.
//!
//! A typed k8s-openapi object takes several times the memory of its JSON: every string and
//! every label map is an allocation of its own, and a map of seven labels is a B-tree node
//! of eleven slots. With 1,000 `FlaskMongoApp`s the caches hold 8,000 objects, so the
//! operator keeps the text and parses an object back only when a reconcile reads it. The
//! text repeats itself (keys, labels, names), so deflate at its fastest level keeps less
//! than half of it, for some microseconds per object stored or read. Objects of one kind
//! repeat each other even more, so each cache hands deflate the JSON of the first object
//! it stored as a preset dictionary: an object then costs little more than what sets it
//! apart (a Deployment after the first, in the tests: under a tenth of its JSON).
//!
//! Unlike kube-runtime's store, a cache takes in each object of a list as it arrives rather
//! than when the list is complete: a streaming list after an API server restart can take
//! seconds, and a reconcile that one of its objects triggers must see that object, not the
//! version from before the outage.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io;
use std::marker::PhantomData;
use std::sync::{Arc, PoisonError, RwLock};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// Deflate looks back this far, so a longer dictionary's head would never be used.
const WINDOW: usize = 32 * 1024;

/// The objects of a cache and the dictionary they are packed against.
struct Objects<K: Resource<DynamicType = ()>> {
    /// The last [`WINDOW`] bytes of the JSON of the first object stored; empty until then.
    /// It stays when that object goes, since the others are packed against it.
    dictionary: Box<[u8]>,
    by_key: HashMap<ObjectRef<K>, Stored<K>>,
}

/// An object as a cache keeps it, and the hash of what of it concerns its owner (see
/// [`Writer::triggered_by`]).
struct Stored<K> {
    packed: Packed<K>,
    trigger: Option<u64>,
}

impl<K: Resource<DynamicType = ()> + DeserializeOwned> Objects<K> {
    /// `stored`, the object named by `key`, parsed.
    fn unpack(&self, key: &ObjectRef<K>, stored: &Stored<K>) -> Result<K> {
        stored
            .packed
            .unpack_against(&self.dictionary)
            .map_err(|source| Error::Cached {
                what: key.to_string(),
                source,
            })
    }
}

impl<K: Resource<DynamicType = ()>> Default for Objects<K> {
    fn default() -> Self {
        Self {
            dictionary: Box::default(),
            by_key: HashMap::new(),
        }
    }
}

/// One object as the caches keep it: its JSON text, compressed.
pub struct Packed<K> {
    bytes: Box<[u8]>,
    kind: PhantomData<fn() -> K>,
}

thread_local! {
    // One compressor and one decompressor per thread, reset for each object: a new deflate
    // state is one block of some 370 KB, and allocating and freeing one per object stored
    // fragmented the heap (a 100-object run peaked at 27 MB against 19 MB before).
    static DEFLATE: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// `json` deflated (raw, with no zlib header) against `dictionary` (empty for none).
fn deflate(json: &[u8], dictionary: &[u8]) -> io::Result<Box<[u8]>> {
    DEFLATE.with_borrow_mut(|compress| {
        compress.reset();
        if !dictionary.is_empty() {
            compress.set_dictionary(dictionary)?;
        }
        let mut out = Vec::with_capacity(json.len().max(64) / 2);
        loop {
            let read = usize::try_from(compress.total_in()).unwrap_or(json.len());
            match compress.compress_vec(&json[read..], &mut out, FlushCompress::Finish)? {
                Status::StreamEnd => return Ok(out.into_boxed_slice()),
                Status::Ok | Status::BufError => out.reserve(out.capacity()),
            }
        }
    })
}

/// What [`deflate`] made of `bytes` with the same `dictionary`.
fn inflate(bytes: &[u8], dictionary: &[u8]) -> io::Result<Vec<u8>> {
    INFLATE.with_borrow_mut(|decompress| {
        decompress.reset(false);
        if !dictionary.is_empty() {
            decompress.set_dictionary(dictionary)?;
        }
        let mut json = Vec::with_capacity(bytes.len().max(16) * 4);
        loop {
            let read = usize::try_from(decompress.total_in()).unwrap_or(bytes.len());
            let status =
                decompress.decompress_vec(&bytes[read..], &mut json, FlushDecompress::Finish)?;
            if status == Status::StreamEnd {
                return Ok(json);
            }
            // Room left over means the input ran out before the stream's end.
            if json.len() < json.capacity() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated"));
            }
            json.reserve(json.capacity());
        }
    })
}

impl<K: Serialize> Packed<K> {
    /// `object`, packed alone.
    pub fn pack(object: &K) -> io::Result<Self> {
        Self::pack_against(object, &[])
    }

    /// `object`, packed with `dictionary` (empty for none) as deflate's preset dictionary.
    fn pack_against(object: &K, dictionary: &[u8]) -> io::Result<Self> {
        Ok(Self {
            bytes: deflate(&serde_json::to_vec(object)?, dictionary)?,
            kind: PhantomData,
        })
    }
}

impl<K: DeserializeOwned> Packed<K> {
    /// The object, parsed back.
    pub fn unpack(&self) -> serde_json::Result<K> {
        self.unpack_against(&[])
    }

    /// The object, parsed back with the dictionary it was packed against.
    fn unpack_against(&self, dictionary: &[u8]) -> serde_json::Result<K> {
        let json = inflate(&self.bytes, dictionary).map_err(serde_json::Error::io)?;
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
    /// What of an object concerns its owner, hashed; `None` when every change does.
    trigger: fn(&K) -> Option<u64>,
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
            trigger: |_| None,
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
            .by_key
            .get(key)
            .map(|stored| objects.unpack(key, stored))
            .transpose()
    }

    /// Every cached object, parsed.
    pub fn all(&self) -> Result<Vec<K>> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        objects
            .by_key
            .iter()
            .map(|(key, stored)| objects.unpack(key, stored))
            .collect()
    }

    /// Whether an object named by `key` is cached.
    pub fn contains(&self, key: &ObjectRef<K>) -> bool {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        objects.by_key.contains_key(key)
    }

    /// The names of the cached objects, without parsing any.
    pub fn names(&self) -> Vec<String> {
        let objects = self.objects.read().unwrap_or_else(PoisonError::into_inner);
        objects.by_key.keys().map(|key| key.name.clone()).collect()
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
    /// A writer whose changes of an object touch it only when `trigger` of it changes;
    /// an object listed, added or deleted always touches it.
    pub fn triggered_by(self, trigger: fn(&K) -> Option<u64>) -> Self {
        Self { trigger, ..self }
    }

    /// Brings the cache up to date with one watch event; returns the objects it touched:
    /// the one the event names or, at the end of a list, those the list no longer has (gone
    /// while the watch was down), whose owners must be reconciled as well.
    pub fn apply(&mut self, event: watcher::Event<K>) -> Vec<K> {
        let mut guard = self.objects.write().unwrap_or_else(PoisonError::into_inner);
        let objects = &mut *guard;
        match event {
            watcher::Event::Init => {
                self.listed = Some(HashSet::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                self.listed
                    .get_or_insert_with(HashSet::new)
                    .insert(key(&object));
                store(objects, &object, (self.trigger)(&object));
                vec![object]
            }
            watcher::Event::InitDone => {
                let listed = self.listed.take().unwrap_or_default();
                let gone: Vec<ObjectRef<K>> = objects
                    .by_key
                    .keys()
                    .filter(|key| !listed.contains(*key))
                    .cloned()
                    .collect();
                self.ready.send_replace(true);
                gone.iter()
                    .filter_map(|key| objects.by_key.remove(key).map(|stored| (key, stored)))
                    .filter_map(|(key, stored)| {
                        stored
                            .packed
                            .unpack_against(&objects.dictionary)
                            .inspect_err(|error| {
                                tracing::warn!(object = %key, %error, "cannot read a removed object");
                            })
                            .ok()
                    })
                    .collect()
            }
            watcher::Event::Apply(object) => {
                let trigger = (self.trigger)(&object);
                let unconcerned = trigger.is_some()
                    && objects
                        .by_key
                        .get(&key(&object))
                        .is_some_and(|stored| stored.trigger == trigger);
                store(objects, &object, trigger);
                if unconcerned {
                    Vec::new()
                } else {
                    vec![object]
                }
            }
            watcher::Event::Delete(object) => {
                objects.by_key.remove(&key(&object));
                vec![object]
            }
        }
    }
}

/// Stores `object` as its compressed JSON, with its `trigger`; the first object stored
/// becomes the dictionary.
/// Should that ever fail, the object is left out, so the operator sees it as missing and
/// applies it again: a wasted write, never a wrong one.
fn store<K: Resource<DynamicType = ()> + Serialize>(
    objects: &mut Objects<K>,
    object: &K,
    trigger: Option<u64>,
) {
    let key = key(object);
    if objects.dictionary.is_empty()
        && let Ok(json) = serde_json::to_vec(object)
    {
        objects.dictionary = json[json.len().saturating_sub(WINDOW)..].into();
    }
    match Packed::pack_against(object, &objects.dictionary) {
        Ok(packed) => {
            objects.by_key.insert(key, Stored { packed, trigger });
        }
        Err(error) => {
            tracing::warn!(object = %key, %error, "cannot cache; treating it as missing");
            objects.by_key.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
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

    fn deployment(name: &str) -> Deployment {
        let app = crate::children::tests::app(name, "team-a", Default::default());
        let instance = crate::children::Instance::new(&app).unwrap();
        crate::children::desired(&instance, &crate::Volumes::default()).deployment
    }

    fn stored_bytes<K: Resource<DynamicType = ()>>(cache: &Cache<K>, object: &K) -> usize {
        cache.objects.read().unwrap().by_key[&key(object)]
            .packed
            .bytes
            .len()
    }

    fn json_bytes(object: &impl Serialize) -> usize {
        serde_json::to_vec(object).unwrap().len()
    }

    #[test]
    fn a_child_is_stored_in_less_than_half_its_json() {
        let deployment = deployment("shop");
        let (cache, mut writer) = cache();
        writer.apply(watcher::Event::Apply(deployment.clone()));
        let (stored, json) = (stored_bytes(&cache, &deployment), json_bytes(&deployment));
        assert!(
            stored * 2 < json,
            "{stored} bytes stored for {json} of JSON"
        );
        assert_eq!(cache.get(&key(&deployment)).unwrap(), Some(deployment));
    }

    #[test]
    fn children_after_the_first_are_stored_in_a_tenth_of_their_json_even_once_it_is_gone() {
        let (first, second, third) = (deployment("shop"), deployment("till"), deployment("cart"));
        let (cache, mut writer) = cache();
        for deployment in [&first, &second, &third] {
            writer.apply(watcher::Event::Apply(deployment.clone()));
        }
        writer.apply(watcher::Event::Delete(first.clone()));
        for deployment in [second, third] {
            let (stored, json) = (stored_bytes(&cache, &deployment), json_bytes(&deployment));
            assert!(
                stored * 10 < json,
                "{stored} bytes stored for {json} of JSON"
            );
            assert_eq!(cache.get(&key(&deployment)).unwrap(), Some(deployment));
        }
        assert!(!cache.contains(&key(&first)));
    }

    #[test]
    fn a_damaged_object_is_an_error_not_a_wait() {
        let packed = Packed::pack(&deployment("shop")).unwrap();
        for length in [0, packed.bytes.len() / 2] {
            let damaged = Packed::<Deployment> {
                bytes: packed.bytes[..length].into(),
                kind: PhantomData,
            };
            assert!(
                damaged.unpack().is_err(),
                "{length} of {} bytes",
                packed.bytes.len()
            );
        }
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
    fn a_change_outside_the_trigger_is_stored_and_touches_nothing_and_a_deletion_always_does() {
        fn labels_counted(service: &Service) -> Option<u64> {
            Some(service.metadata.labels.iter().flatten().count() as u64)
        }
        let (cache, writer) = cache::<Service>();
        let mut writer = writer.triggered_by(labels_counted);
        let touched = writer.apply(watcher::Event::Apply(service("a", "10.0.0.1")));
        assert_eq!(touched, [service("a", "10.0.0.1")], "added");
        let touched = writer.apply(watcher::Event::Apply(service("a", "10.0.0.2")));
        assert_eq!(touched, [], "its cluster IP alone changed");
        assert_eq!(
            cache.get(&named("a")).unwrap(),
            Some(service("a", "10.0.0.2"))
        );
        let mut labelled = service("a", "10.0.0.2");
        labelled.metadata.labels = Some([("k".to_owned(), "v".to_owned())].into());
        let touched = writer.apply(watcher::Event::Apply(labelled.clone()));
        assert_eq!(touched, [labelled.clone()], "a label added");
        let touched = writer.apply(watcher::Event::Delete(labelled.clone()));
        assert_eq!(touched, [labelled], "deleted");
        writer.apply(watcher::Event::Apply(service("b", "10.0.0.3")));
        writer.apply(watcher::Event::Init);
        let touched = writer.apply(watcher::Event::InitApply(service("b", "10.0.0.3")));
        assert_eq!(
            touched,
            [service("b", "10.0.0.3")],
            "listed again, unchanged"
        );
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
