//! The service under load: many clients posting at once, every acknowledged document stored
//! exactly once.

pub mod common;

use std::collections::BTreeMap;

use common::{http, spawn_app, stack_uri};
use futures::future::join_all;
use serde_json::{Value, json};

const CLIENTS: u64 = 64;
const DOCUMENTS: u64 = 10_000;

/// One client's share of the documents: it posts them one after another, each on its own
/// connection pool, and returns the status of each by its number.
async fn post_share(url: &str, client_index: u64) -> Vec<(u64, u16)> {
    let client = http();
    let mut statuses = Vec::new();
    for seq in (client_index..DOCUMENTS).step_by(CLIENTS as usize) {
        let status = match client
            .post(format!("{url}/data"))
            .json(&json!({ "seq": seq, "client": client_index }))
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

#[tokio::test(flavor = "multi_thread")]
async fn sixty_four_clients_post_ten_thousand_documents_and_each_acknowledged_one_is_stored() {
    let url = spawn_app(&stack_uri("load"), &[]).await;
    let results: Vec<(u64, u16)> = join_all((0..CLIENTS).map(|i| post_share(&url, i)))
        .await
        .into_iter()
        .flatten()
        .collect();

    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for (_, status) in &results {
        *by_status.entry(*status).or_default() += 1;
    }
    let acknowledged: Vec<u64> = results
        .iter()
        .filter(|(_, status)| *status == 201)
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(
        acknowledged.len() as u64,
        DOCUMENTS,
        "every POST answered 201; statuses (0 = no response): {by_status:?}"
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
    assert_eq!(
        stored.len(),
        acknowledged.len(),
        "documents stored = documents acknowledged"
    );
    let duplicated: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        duplicated.is_empty(),
        "stored more than once: {duplicated:?}"
    );
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|seq| !copies.contains_key(seq))
        .collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
}
