//! The `data` collection: inserts, ordered reads and pings.

use std::sync::Arc;

use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{Document, RawDocumentBuf, doc};
use mongodb::options::{Acknowledgment, ClientOptions, CollectionOptions, WriteConcern};
use mongodb::{Client, Collection, Cursor, Database};

use serde::Deserialize;

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
        Ok(Self {
            client,
            database,
            documents,
            hosts,
        })
    }

    /// The servers named in the URI, comma-separated.
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// Stores `document`, returning once the write is acknowledged.
    pub async fn insert(&self, document: RawDocumentBuf) -> mongodb::error::Result<()> {
        let insert = self.documents.insert_one(&document);
        // The driver has made its own copy: ours need not live through the round trip.
        drop(document);
        insert.await?;
        Ok(())
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

    /// Closes the connection pool once every cursor is dropped.
    pub async fn close(self) {
        self.client.shutdown().await;
    }
}

fn id_filter(range: &Document) -> Document {
    if range.is_empty() {
        Document::new()
    } else {
        doc! { "_id": range.clone() }
    }
}
