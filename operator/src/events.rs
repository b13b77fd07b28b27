//! Events about `FlaskMongoApp` objects, sent by a task of their own so that no reconcile
//! waits for them, and the [`Changes`] made to one object's children, told in one Event
//! for all the reconciles of a [`GATHERING`].
//!
//! A Warning goes through kube-runtime's [`Recorder`], which folds a repeated failure into
//! one Event with a count. A Normal Event reports changes of children, which do not repeat,
//! so it is created as it is: the recorder would otherwise keep every one of them for six
//! minutes, most of the operator's memory under a flood.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The children one reconcile created, updated, stopped or deleted: one Event for them all
/// instead of one per child.
#[derive(Default)]
pub struct Changes(Mutex<Vec<(Verb, String)>>);

/// What happened to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// It did not exist and was made.
    Created,
    /// It existed and was changed.
    Updated,
    /// It was told to run no pod before it is removed.
    Stopped,
    /// It was removed.
    Deleted,
}

impl Verb {
    /// The reason of an Event about this change.
    fn reason(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Updated => "Updated",
            Self::Stopped => "Stopped",
            Self::Deleted => "Deleted",
        }
    }

    /// The word for this change in a sentence.
    pub fn word(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Stopped => "stopped",
            Self::Deleted => "deleted",
        }
    }
}

impl Changes {
    /// Records that `child` (kind and name) was changed; safe from concurrent writes.
    pub fn record(&self, verb: Verb, child: String) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((verb, child));
    }

    /// Whether nothing was changed.
    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Adds the changes of `later`.
    fn absorb(&mut self, later: Self) {
        let later = later.0.into_inner().unwrap_or_else(|e| e.into_inner());
        self.0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .extend(later);
    }

    /// The Event's reason (the first of Created, Updated, Stopped, Deleted that happened)
    /// and note (`created Secret a, Service a-mongo; deleted HorizontalPodAutoscaler a-web`),
    /// or `None` when nothing changed.
    pub fn summary(self) -> Option<(String, String)> {
        let mut changes = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
        // The reconciles of a second may change one child twice the same way.
        let mut seen = HashSet::new();
        changes.retain(|change| seen.insert(change.clone()));
        changes.sort_by_key(|(verb, _)| *verb);
        let reason = changes.first()?.0.reason().to_owned();
        let note = changes
            .chunk_by(|a, b| a.0 == b.0)
            .map(|group| {
                let children: Vec<&str> = group.iter().map(|(_, child)| child.as_str()).collect();
                format!("{} {}", group[0].0.word(), children.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ");
        Some((reason, within_note_limit(note)))
    }
}

/// The longest note the API server takes, in bytes.
const NOTE_LIMIT: usize = 1024;

/// `note`, cut to [`NOTE_LIMIT`] with an ellipsis if it is longer.
fn within_note_limit(mut note: String) -> String {
    if note.len() > NOTE_LIMIT {
        let mut end = NOTE_LIMIT - '…'.len_utf8();
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push('…');
    }
    note
}

/// Events waiting to be sent; under a flood of changes, more are dropped, as client-go does.
const QUEUE: usize = 1000;
/// Events sent at once.
const IN_FLIGHT: usize = 4;
/// How long the changes to one object's children are gathered into one Event, from the
/// first: where the volume's preparation is quick (tens of milliseconds on simulated
/// nodes, seconds on a real one), a new object's two passes (its children, then the volume
/// and MongoDB) come within it, and one Event tells what two would have.
pub const GATHERING: Duration = Duration::from_secs(1);

/// What a reconcile has to tell about an object.
enum Report {
    /// A Warning, sent at once: its reason and note.
    Warning(String, String),
    /// Changes to its children, gathered.
    Changed(Changes),
}

/// The sending side of the Event queue.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<(Report, ObjectReference)>,
}

impl Publisher {
    /// Starts the tasks that gather and send the queued Events; they end when every
    /// [`Publisher`] is gone, once the gathered changes are sent.
    pub fn start(client: Client, reporter: Reporter) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        let (ready, to_send) = mpsc::channel(QUEUE);
        tokio::spawn(gather(queued, ready));
        tokio::spawn(send_all(client, reporter, to_send));
        Self { queue }
    }

    /// Queues a Warning about the object `regarding`.
    pub fn warn(&self, reason: String, note: String, regarding: ObjectReference) {
        self.queue((Report::Warning(reason, note), regarding));
    }

    /// Queues `changes` to the children of the object `regarding`, if there are any.
    pub fn changed(&self, changes: Changes, regarding: ObjectReference) {
        if !changes.is_empty() {
            self.queue((Report::Changed(changes), regarding));
        }
    }

    fn queue(&self, report: (Report, ObjectReference)) {
        if self.queue.try_send(report).is_err() {
            tracing::debug!("the Event queue is full; Event dropped");
        }
    }
}

/// The changes of each object (by uid) waiting for their Event, and the uids in the order
/// their Events fall due: every Event is due a [`GATHERING`] after its first change, so
/// that is the order in which they were added.
#[derive(Default)]
struct Gathered {
    pending: HashMap<String, Pending>,
    due_order: VecDeque<(Instant, String)>,
}

struct Pending {
    regarding: ObjectReference,
    changes: Changes,
}

impl Gathered {
    /// Adds `changes` to those of `regarding`; their Event is due a [`GATHERING`] after
    /// the first. `now` never goes back.
    fn add(&mut self, regarding: ObjectReference, changes: Changes, now: Instant) {
        let uid = regarding.uid.clone().unwrap_or_default();
        match self.pending.entry(uid) {
            Entry::Occupied(mut pending) => pending.get_mut().changes.absorb(changes),
            Entry::Vacant(slot) => {
                self.due_order
                    .push_back((now + GATHERING, slot.key().clone()));
                slot.insert(Pending { regarding, changes });
            }
        }
    }

    /// When the next Event is due.
    fn next_due(&self) -> Option<Instant> {
        self.due_order.front().map(|(due, _)| *due)
    }

    /// The Events due at `now` (all of them with `None`), taken out in the order they fell
    /// due.
    fn take_due(&mut self, now: Option<Instant>) -> Vec<(Event, ObjectReference)> {
        let mut events = Vec::new();
        while let Some(due) = self.next_due()
            && now.is_none_or(|now| due <= now)
            && let Some((_, uid)) = self.due_order.pop_front()
        {
            if let Some(pending) = self.pending.remove(&uid)
                && let Some((reason, note)) = pending.changes.summary()
            {
                events.push((event(EventType::Normal, reason, note), pending.regarding));
            }
        }
        events
    }
}

/// An Event of the reconcile.
fn event(type_: EventType, reason: String, note: String) -> Event {
    Event {
        type_,
        reason,
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    }
}

/// Passes Warnings on at once and each object's changes once their [`GATHERING`] is over.
async fn gather(
    mut queued: mpsc::Receiver<(Report, ObjectReference)>,
    ready: mpsc::Sender<(Event, ObjectReference)>,
) {
    let mut gathered = Gathered::default();
    let mut open = true;
    while open {
        let due = gathered.next_due();
        let events = tokio::select! {
            received = queued.recv() => match received {
                Some((Report::Warning(reason, note), regarding)) => {
                    vec![(event(EventType::Warning, reason, note), regarding)]
                }
                Some((Report::Changed(changes), regarding)) => {
                    gathered.add(regarding, changes, Instant::now());
                    Vec::new()
                }
                None => {
                    open = false;
                    gathered.take_due(None)
                }
            },
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                gathered.take_due(Some(Instant::now()))
            }
        };
        for event in events {
            // Fails only once the sending task is gone, when nothing can be sent anyway.
            let _ = ready.send(event).await;
        }
    }
}

async fn send_all(
    client: Client,
    reporter: Reporter,
    mut queued: mpsc::Receiver<(Event, ObjectReference)>,
) {
    let recorder = Recorder::new(client.clone(), reporter.clone());
    let (client, reporter, recorder) = (&client, &reporter, &recorder);
    futures::stream::poll_fn(|cx| queued.poll_recv(cx))
        .for_each_concurrent(IN_FLIGHT, |(event, regarding)| async move {
            let sent = match event.type_ {
                EventType::Warning => recorder.publish(&event, &regarding).await,
                EventType::Normal => create(client, reporter, &event, regarding).await,
            };
            if let Err(error) = sent {
                tracing::warn!(%error, reason = event.reason, "cannot publish an Event");
            }
        })
        .await;
}

/// Creates `event` as a new Event, named as kube-runtime's recorder names them.
async fn create(
    client: &Client,
    reporter: &Reporter,
    event: &Event,
    regarding: ObjectReference,
) -> kube::Result<()> {
    let now = Timestamp::now();
    let namespace = regarding.namespace.clone().unwrap_or_default();
    let object = KubeEvent {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or(&reporter.controller),
                now.as_nanosecond()
            )),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        type_: Some("Normal".to_owned()),
        regarding: Some(regarding),
        related: event.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        ..KubeEvent::default()
    };
    Api::<KubeEvent>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &object)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_tells_every_change_of_a_reconcile() {
        let changes = Changes::default();
        changes.record(Verb::Deleted, "HorizontalPodAutoscaler a-web".to_owned());
        changes.record(Verb::Created, "Secret a".to_owned());
        changes.record(Verb::Updated, "Deployment a-web".to_owned());
        changes.record(Verb::Created, "Service a-mongo".to_owned());
        let (reason, note) = changes.summary().expect("something changed");
        assert_eq!(reason, "Created");
        assert_eq!(
            note,
            "created Secret a, Service a-mongo; updated Deployment a-web; \
             deleted HorizontalPodAutoscaler a-web"
        );
        assert_eq!(Changes::default().summary(), None);
    }

    #[test]
    fn a_change_is_told_once_and_a_long_note_is_cut_to_the_servers_limit() {
        let changes = Changes::default();
        changes.record(Verb::Updated, "Deployment a-web".to_owned());
        changes.record(Verb::Updated, "Deployment a-web".to_owned());
        assert_eq!(
            changes.summary().expect("changed").1,
            "updated Deployment a-web"
        );

        let many = Changes::default();
        for index in 0..100 {
            many.record(Verb::Updated, format!("Service é-{index}"));
        }
        let (_, note) = many.summary().expect("changed");
        assert!(note.len() <= NOTE_LIMIT, "{} bytes", note.len());
        assert!(note.len() > NOTE_LIMIT - 8, "{} bytes", note.len());
        assert!(note.starts_with("updated Service é-0, Service é-1, "));
        assert!(note.ends_with('…'));
    }

    fn regarding(uid: &str) -> ObjectReference {
        ObjectReference {
            name: Some(uid.to_owned()),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        }
    }

    fn changes(verb: Verb, children: &[&str]) -> Changes {
        let changes = Changes::default();
        for child in children {
            changes.record(verb, (*child).to_owned());
        }
        changes
    }

    fn notes(events: Vec<(Event, ObjectReference)>) -> Vec<(String, String)> {
        let mut notes: Vec<(String, String)> = events
            .into_iter()
            .map(|(event, regarding)| (regarding.uid.unwrap(), event.note.unwrap()))
            .collect();
        notes.sort();
        notes
    }

    #[test]
    fn the_changes_of_one_object_within_a_second_are_told_in_one_event() {
        let start = Instant::now();
        let mut gathered = Gathered::default();
        gathered.add(regarding("a"), changes(Verb::Created, &["Secret a"]), start);
        let soon = start + Duration::from_millis(70);
        gathered.add(regarding("b"), changes(Verb::Created, &["Secret b"]), soon);
        let second_pass = changes(Verb::Created, &["StatefulSet a-mongo"]);
        second_pass.record(Verb::Deleted, "Pod prepare-volume-a".to_owned());
        gathered.add(regarding("a"), second_pass, soon);

        assert_eq!(gathered.next_due(), Some(start + GATHERING));
        assert!(gathered.take_due(Some(start + GATHERING / 2)).is_empty());
        let due = gathered.take_due(Some(start + GATHERING));
        assert_eq!(due[0].0.reason, "Created");
        assert_eq!(
            notes(due),
            [(
                "a".to_owned(),
                "created Secret a, StatefulSet a-mongo; deleted Pod prepare-volume-a".to_owned()
            )]
        );
        // A later change of the same object starts a new Event.
        let later = start + GATHERING;
        gathered.add(
            regarding("a"),
            changes(Verb::Updated, &["Deployment a-web"]),
            later,
        );
        assert_eq!(gathered.next_due(), Some(soon + GATHERING));
        assert_eq!(
            notes(gathered.take_due(None)),
            [
                ("a".to_owned(), "updated Deployment a-web".to_owned()),
                ("b".to_owned(), "created Secret b".to_owned()),
            ],
            "at the end, whatever is gathered goes out"
        );
        assert_eq!(gathered.next_due(), None);
    }
}
