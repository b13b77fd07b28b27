//! The `data` collection: inserts, ordered reads and pings.

use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawDocumentBuf, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, CollectionOptions, WriteConcern};
use mongodb::{Client, Collection, Cursor, Database};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;

/// Database used when the URI names none, as in the old app.
pub const DEFAULT_DATABASE: &str = "flask_db";
/// The collection that holds the documents.
pub const COLLECTION: &str = "data";
/// Documents per batch of a streamed read: a stream holds one batch while its reader is slow,
/// which bounds its memory (`tests/memory.rs`: four slow readers of 4 kB documents). 250
/// rather than 100 still holds 1 MB of such documents per reader, and a whole collection of
/// 100 documents comes in one round trip instead of two (the first batch fills up exactly, and
/// a second is asked for to learn that none follows), 100,000 documents in 400 instead of 1,000.
pub const BATCH_SIZE: u32 = 250;

/// A document waiting to be inserted, and where its request waits for the outcome.
type Waiting = (RawDocumentBuf, oneshot::Sender<mongodb::error::Result<()>>);

#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "_id")]
    id: ObjectId,
}

/// One page of documents in insertion order.
pub struct Page {
    /// The documents, read lazily.
    pub cursor: Cursor<RawDocumentBuf>,
    /// The `_id` of the page's last document when more documents follow it.
    pub next: Option<ObjectId>,
}

/// The shared MongoDB client and the `data` collection.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    database: Database,
    documents: Collection<RawDocumentBuf>,
    /// The servers named in the URI, for log lines about a MongoDB that does not answer;
    /// shared, since every request clones the store.
    hosts: Arc<str>,
    /// Where requests leave their documents for the inserter.
    inserts: mpsc::Sender<Waiting>,
    /// The inserter, awaited on close so that every document handed to it is written first.
    inserter: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Store {
    /// A store for `config`. No connection is made yet: the pool connects on first use,
    /// so the service starts whether or not MongoDB is up.
    pub async fn new(config: &Config) -> mongodb::error::Result<Self> {
        let mut options = ClientOptions::parse(&config.mongodb_uri).await?;
        options.max_pool_size = Some(config.max_pool_size);
        options.server_selection_timeout = Some(config.server_selection_timeout());
        options
            .app_name
            .get_or_insert_with(|| "flaskmongo-webapp".to_owned());
        // A 201 promises the document survives: ask for majority and the journal unless the
        // URI chooses otherwise.
        let write_concern = options.write_concern.clone().unwrap_or_else(|| {
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .build()
        });
        let database_name = options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let hosts = options
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
            .into();
        let client = Client::with_options(options)?;
        let database = client.database(&database_name);
        let documents = database.collection_with_options(
            COLLECTION,
            CollectionOptions::builder()
                .write_concern(write_concern)
                .build(),
        );
        // Requests at once are bounded, so the documents waiting are too.
        let most_waiting = usize::from(config.max_concurrent_requests);
        let (inserts, waiting) = mpsc::channel(most_waiting);
        let inserter = tokio::spawn(insert_waiting(documents.clone(), waiting, most_waiting));
        Ok(Self {
            client,
            database,
            documents,
            hosts,
            inserts,
            inserter: Arc::new(Mutex::new(Some(inserter))),
        })
    }

    /// The servers named in the URI, comma-separated.
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// Stores `document`, returning once the write is acknowledged. It goes to the database
    /// with the documents of the other requests waiting at that moment, in one command.
    pub async fn insert(&self, document: RawDocumentBuf) -> mongodb::error::Result<()> {
        let (outcome, receiver) = oneshot::channel();
        // Either end is gone only once the store is closing.
        self.inserts
            .send((document, outcome))
            .await
            .map_err(|_| ErrorKind::Shutdown)?;
        receiver.await.map_err(|_| ErrorKind::Shutdown)?
    }

    /// Documents after `after` (or from the first), at most `limit` of them (or all).
    pub async fn page(
        &self,
        after: Option<ObjectId>,
        limit: Option<u32>,
    ) -> mongodb::error::Result<Page> {
        let mut range = Document::new();
        if let Some(after) = after {
            range.insert("$gt", after);
        }
        let mut next = None;
        if let Some(limit) = limit {
            // The page's last id is read first so the link to the next page can go in the
            // response headers while the body is still streamed.
            let ids: Vec<ObjectId> = self
                .documents
                .clone_with_type::<IdOnly>()
                .find(id_filter(&range))
                .sort(doc! { "_id": 1 })
                .projection(doc! { "_id": 1 })
                .skip(u64::from(limit) - 1)
                .limit(2)
                .await?
                .map_ok(|document| document.id)
                .try_collect()
                .await?;
            if let [last, _more] = ids[..] {
                range.insert("$lte", last);
                next = Some(last);
            }
        }
        let mut find = self
            .documents
            .find(id_filter(&range))
            .sort(doc! { "_id": 1 })
            .batch_size(BATCH_SIZE);
        if let Some(limit) = limit {
            find = find.limit(i64::from(limit));
        }
        let cursor = find.await?;
        Ok(Page { cursor, next })
    }

    /// Checks that MongoDB answers.
    pub async fn ping(&self) -> mongodb::error::Result<()> {
        self.database
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
    }

    /// Writes the documents already handed over, then closes the connection pool once every
    /// cursor is dropped.
    pub async fn close(self) {
        let inserter = self.inserter.lock().ok().and_then(|mut slot| slot.take());
        // The inserter stops when the last sender goes: this one, once no request is left.
        drop(self.inserts);
        if let Some(inserter) = inserter {
            let _ = inserter.await;
        }
        self.client.shutdown().await;
    }
}

/// Inserts the documents that requests leave in `waiting`: every document waiting goes in one
/// command, and the next command leaves once this one is answered. The database's cost is per
/// command (BENCHMARKS.md: FerretDB's CPU per POST), so the busier the service, the larger and
/// cheaper its batches; a lone request still goes at once, alone.
async fn insert_waiting(
    documents: Collection<RawDocumentBuf>,
    mut waiting: mpsc::Receiver<Waiting>,
    most: usize,
) {
    let mut batch = Vec::with_capacity(most);
    while waiting.recv_many(&mut batch, most).await > 0 {
        // Unordered: a document the server refuses does not stop the others.
        let insert = documents
            .insert_many(batch.iter().map(|(document, _)| document))
            .ordered(false);
        // The driver has made its own copies: ours need not live through the round trip.
        let outcomes: Vec<_> = batch.drain(..).map(|(_, outcome)| outcome).collect();
        let failure = insert.await.err();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            // A request that gave up no longer listens; its document is stored all the same.
            let _ = outcome.send(outcome_of(failure.as_ref(), index));
        }
    }
}

/// What an `insert_many` that failed with `failure` (or succeeded) came to for its document at
/// `index`: the server's refusal of that document, else an unconfirmed write concern, else
/// success; an error of the whole command is every document's.
fn outcome_of(failure: Option<&mongodb::error::Error>, index: usize) -> mongodb::error::Result<()> {
    let Some(err) = failure else { return Ok(()) };
    let ErrorKind::InsertMany(failure) = err.kind.as_ref() else {
        return Err(err.clone());
    };
    let mut refused = failure.write_errors.iter().flatten();
    if let Some(refused) = refused.find(|refused| refused.index == index) {
        return Err(ErrorKind::Write(WriteFailure::WriteError(refused.clone().into())).into());
    }
    match &failure.write_concern_error {
        Some(unconfirmed) => {
            Err(ErrorKind::Write(WriteFailure::WriteConcernError(unconfirmed.clone())).into())
        }
        None => Ok(()),
    }
}

fn id_filter(range: &Document) -> Document {
    if range.is_empty() {
        Document::new()
    } else {
        doc! { "_id": range.clone() }
    }
}

#[cfg(test)]
mod tests {
    use mongodb::bson::from_document;
    use mongodb::error::{Error, InsertManyError};

    use super::*;

    fn failed_insert(failure: Document) -> Error {
        let failure: InsertManyError = from_document(failure).expect("an insert_many failure");
        ErrorKind::InsertMany(failure).into()
    }

    /// The outcome of each of three documents, told by what its request would answer.
    fn outcomes(failure: Option<&Error>) -> Vec<String> {
        (0..3)
            .map(
                |index| match outcome_of(failure, index).map_err(|err| *err.kind) {
                    Ok(()) => "stored".to_owned(),
                    Err(ErrorKind::Write(WriteFailure::WriteError(refused))) => {
                        format!("refused: {}", refused.message)
                    }
                    Err(ErrorKind::Write(WriteFailure::WriteConcernError(unconfirmed))) => {
                        format!("unconfirmed: {}", unconfirmed.message)
                    }
                    Err(other) => format!("failed: {other}"),
                },
            )
            .collect()
    }

    #[test]
    fn a_refused_document_fails_only_its_own_request() {
        let result = failed_insert(doc! {
            "writeErrors": [{ "index": 1, "code": 2, "errmsg": "invalid key" }],
        });
        assert_eq!(
            outcomes(Some(&result)),
            ["stored", "refused: invalid key", "stored"]
        );
    }

    #[test]
    fn an_unconfirmed_write_concern_fails_every_document_but_a_refused_one() {
        let result = failed_insert(doc! {
            "writeErrors": [{ "index": 2, "code": 2, "errmsg": "invalid key" }],
            "writeConcernError": { "code": 64, "errmsg": "waiting for replication timed out" },
        });
        assert_eq!(
            outcomes(Some(&result)),
            [
                "unconfirmed: waiting for replication timed out",
                "unconfirmed: waiting for replication timed out",
                "refused: invalid key",
            ]
        );
    }

    #[test]
    fn a_failed_command_fails_every_document() {
        let reset = Error::from(ErrorKind::Io(Arc::new(
            std::io::ErrorKind::ConnectionReset.into(),
        )));
        let failed = outcomes(Some(&reset));
        assert!(
            failed
                .iter()
                .all(|outcome| outcome.starts_with("failed: I/O error")),
            "{failed:?}"
        );
        assert_eq!(outcomes(None), ["stored", "stored", "stored"]);
    }
}
