//! The service under load: many clients posting at once, every acknowledged document stored
//! exactly once, their documents sharing insert commands, and a document the database refuses
//! failing only its own request.

pub mod common;

use std::collections::BTreeMap;

use common::{FerretDb, http, spawn_app, stack_uri};
use futures::future::join_all;
use serde_json::{Value, json};

/// The body of document `seq`: with an array directly inside an array when `refused`, which
/// the service lets through and FerretDB 1.x refuses.
fn body(seq: u64, refused: bool) -> Value {
    if refused {
        json!({ "seq": seq, "nested": [[seq]] })
    } else {
        json!({ "seq": seq })
    }
}

/// One client's share of `documents` among `clients`: it posts them one after another, each
/// client on its own connection pool, and returns the status of each by its number.
async fn post_share(
    url: &str,
    clients: u64,
    documents: u64,
    refused: fn(u64) -> bool,
    client_index: u64,
) -> Vec<(u64, u16)> {
    let client = http();
    let mut statuses = Vec::new();
    for seq in (client_index..documents).step_by(clients as usize) {
        let status = match client
            .post(format!("{url}/data"))
            .json(&body(seq, refused(seq)))
            .send()
            .await
        {
            Ok(response) => response.status().as_u16(),
            // No status: counted apart, as a failure the assertions name.
            Err(_) => 0,
        };
        statuses.push((seq, status));
    }
    statuses
}

/// `documents` posted by `clients` at once, those that `refused` picks with a value the
/// database refuses; checks that each of those got 400 and is not stored, and that each other
/// one got 201 and is stored exactly once.
async fn post_at_once(url: &str, clients: u64, documents: u64, refused: fn(u64) -> bool) {
    let results: Vec<(u64, u16)> =
        join_all((0..clients).map(|i| post_share(url, clients, documents, refused, i)))
            .await
            .into_iter()
            .flatten()
            .collect();

    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for (_, status) in &results {
        *by_status.entry(*status).or_default() += 1;
    }
    let wrong: Vec<_> = results
        .iter()
        .filter(|(seq, status)| *status != if refused(*seq) { 400 } else { 201 })
        .take(20)
        .collect();
    assert!(
        wrong.is_empty(),
        "every POST answered 201, or 400 if refused; statuses (0 = no response): \
         {by_status:?}; the first wrong (seq, status): {wrong:?}"
    );

    let response = http()
        .get(format!("{url}/data"))
        .send()
        .await
        .expect("GET /data answers");
    assert_eq!(response.status().as_u16(), 200);
    let stored: Vec<Value> = response.json().await.expect("a JSON array");
    let mut copies: BTreeMap<u64, u32> = BTreeMap::new();
    for document in &stored {
        let seq = document["seq"]
            .as_u64()
            .expect("every document has its seq");
        *copies.entry(seq).or_default() += 1;
    }
    let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "stored more than once: {duplicated:?}"
    );
    let lost: Vec<_> = (0..documents)
        .filter(|seq| !refused(*seq) && !copies.contains_key(seq))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let refused_but_stored: Vec<_> = copies.keys().filter(|seq| refused(**seq)).collect();
    assert!(
        refused_but_stored.is_empty(),
        "refused but stored: {refused_but_stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_clients_post_ten_thousand_documents_and_each_acknowledged_one_is_stored() {
    let url = spawn_app(&stack_uri("load"), &[]).await;
    post_at_once(&url, 64, 10_000, |_| false).await;
}

/// Posts as [`post_at_once`] does, through a service over a FerretDB of its own, and checks
/// that the documents went to FerretDB in at most one insert command per two of them.
async fn post_at_once_in_shared_inserts(clients: u64, documents: u64, refused: fn(u64) -> bool) {
    let mut ferretdb = FerretDb::on_free_port();
    ferretdb.start();
    let url = spawn_app(&ferretdb.uri("together"), &[]).await;
    let before = ferretdb.commands("insert").await;
    post_at_once(&url, clients, documents, refused).await;
    let inserts = ferretdb.commands("insert").await - before;
    assert!(
        (1.0..=documents as f64 / 2.0).contains(&inserts),
        "{documents} documents posted by {clients} clients at once took {inserts} insert \
         commands: expected at most one per two documents"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_posted_at_once_go_to_the_database_together() {
    post_at_once_in_shared_inserts(16, 1_600, |_| false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_the_database_refuses_among_others_fails_only_its_own_request() {
    post_at_once_in_shared_inserts(16, 800, |seq| seq % 10 == 0).await;
}
