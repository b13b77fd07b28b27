//! Events about `FlaskMongoApp` objects, sent by a task of their own so that no reconcile
//! waits for them, and the [`Changes`] one reconcile made, told in one Event.
//!
//! A Warning goes through kube-runtime's [`Recorder`], which folds a repeated failure into
//! one Event with a count. A Normal Event reports one change of one child, which does not
//! repeat, so it is created as it is: the recorder would otherwise keep every one of them
//! for six minutes, eight per new object, most of the operator's memory under a flood.

use std::sync::Mutex;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

/// The children one reconcile created, updated or deleted, told in one Event at its end:
/// one write instead of one per child.
#[derive(Default)]
pub struct Changes(Mutex<Vec<(Verb, String)>>);

/// What happened to a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verb {
    /// It did not exist and was made.
    Created,
    /// It existed and was changed.
    Updated,
    /// It was removed.
    Deleted,
}

impl Verb {
    /// The reason of an Event about this change.
    fn reason(self) -> &'static str {
        match self {
            Self::Created => "Created",
            Self::Updated => "Updated",
            Self::Deleted => "Deleted",
        }
    }

    /// The word for this change in a sentence.
    pub fn word(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
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

    /// The Event's reason (the first of Created, Updated, Deleted that happened) and note
    /// (`created Secret a, Service a-mongo; deleted HorizontalPodAutoscaler a-web`), or
    /// `None` when nothing changed.
    pub fn summary(self) -> Option<(String, String)> {
        let mut changes = self.0.into_inner().unwrap_or_else(|e| e.into_inner());
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
        Some((reason, note))
    }
}

/// Events waiting to be sent; under a flood of changes, more are dropped, as client-go does.
const QUEUE: usize = 1000;
/// Events sent at once.
const IN_FLIGHT: usize = 4;

/// The sending side of the Event queue.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<(Event, ObjectReference)>,
}

impl Publisher {
    /// Starts the task that sends the queued Events; it ends when every [`Publisher`] is gone.
    pub fn start(client: Client, reporter: Reporter) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(client, reporter, queued));
        Self { queue }
    }

    /// Queues `event` about the object `regarding`.
    pub fn publish(&self, event: Event, regarding: ObjectReference) {
        if self.queue.try_send((event, regarding)).is_err() {
            tracing::debug!("the Event queue is full; Event dropped");
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
}
