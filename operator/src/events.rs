//! Events about `FlaskMongoApp` objects, sent by a task of their own so that no reconcile
//! waits for them.
//!
//! A Warning goes through kube-runtime's [`Recorder`], which folds a repeated failure into
//! one Event with a count. A Normal Event reports one change of one child, which does not
//! repeat, so it is created as it is: the recorder would otherwise keep every one of them
//! for six minutes, eight per new object, most of the operator's memory under a flood.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

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
