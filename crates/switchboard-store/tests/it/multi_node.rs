//! Several nodes on one PostgreSQL database (each a store of its own, as a
//! separate process would have): claims never overlap, an idempotency key
//! makes one message whichever nodes it reaches, leases are taken over.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use switchboard_store::sql::SqlStore;
use switchboard_store::{AcceptOutcome, Store};

use crate::{T0, request};

/// Three nodes on one fresh schema, or `None` when no server is configured.
async fn three_nodes() -> Option<(crate::Fixture, Vec<Arc<dyn Store>>)> {
    let f = crate::postgres().await?;
    let url = f.url.clone().expect("a PostgreSQL fixture has a URL");
    let mut nodes: Vec<Arc<dyn Store>> = vec![f.store.clone()];
    for _ in 0..2 {
        nodes.push(Arc::new(
            SqlStore::connect_postgres_async(&url, 2).await.unwrap(),
        ));
    }
    Some((f, nodes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_claim_disjoint_work_and_take_over_expired_leases() {
    let Some((f, nodes)) = three_nodes().await else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    for i in 0..300 {
        let node = &nodes[i % 3];
        let req = request(
            &f.ws,
            json!({"to": "+14155550123", "body": format!("m{i}")}),
            &format!("h{i}"),
        );
        assert!(matches!(
            node.accept_message(req).await.unwrap(),
            AcceptOutcome::Created(_)
        ));
    }
    // All three claim at once, in small batches, until nothing is left.
    let lease = Duration::from_secs(30);
    let mut tasks = Vec::new();
    for node in &nodes {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = node.claim_due(T0, 7, lease).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|m| m.id.to_string()));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut per_node = Vec::new();
    for t in tasks {
        let mine = t.await.unwrap();
        per_node.push(mine.len());
        for id in mine {
            assert!(seen.insert(id.clone()), "{id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 300, "every message claimed once: {per_node:?}");
    // Before the lease runs out nobody else takes them; after, one node does.
    assert!(
        nodes[1]
            .claim_due(T0.plus(Duration::from_secs(29)), 1000, lease)
            .await
            .unwrap()
            .is_empty()
    );
    let later = T0.plus(Duration::from_secs(31));
    let (a, b) = tokio::join!(
        nodes[1].claim_due(later, 1000, lease),
        nodes[2].claim_due(later, 1000, lease)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 300, "taken over exactly once");
    assert!(a.iter().chain(&b).all(|m| m.attempt == 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_idempotency_key_is_one_message_across_nodes() {
    let Some((f, nodes)) = three_nodes().await else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    let body = json!({"to": "+14155550123", "body": "hi", "idempotency_key": "order-7"});
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (node, req) = (nodes[i % 3].clone(), request(&f.ws, body.clone(), "same"));
        tasks.push(tokio::spawn(async move {
            node.accept_message(req).await.unwrap()
        }));
    }
    let mut ids = HashSet::new();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            AcceptOutcome::Created(a) => {
                created += 1;
                ids.insert(a.id);
            }
            AcceptOutcome::Replayed(a) => {
                ids.insert(a.id);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((created, ids.len()), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_work_is_released_once_by_whichever_node_looks_first() {
    let Some((f, nodes)) = three_nodes().await else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    let due = T0.plus(Duration::from_secs(10));
    for i in 0..120 {
        let mut req = request(
            &f.ws,
            json!({"to": "+14155550123", "body": format!("m{i}"), "send_at": due.to_rfc3339()}),
            &format!("h{i}"),
        );
        req.now = T0;
        assert!(matches!(
            nodes[i % 3].accept_message(req).await.unwrap(),
            AcceptOutcome::Created(_)
        ));
    }
    assert!(
        nodes[0]
            .claim_due(T0, 1000, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    let mut tasks = Vec::new();
    for node in &nodes {
        let node = node.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            loop {
                let got = node
                    .claim_due(due, 9, Duration::from_secs(30))
                    .await
                    .unwrap()
                    .len();
                if got == 0 {
                    return n;
                }
                n += got;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 120);
    // Each message was released (queued) exactly once: scheduled, queued, sending.
    let page = f
        .store
        .list_messages(
            &f.ws,
            &switchboard_store::MessageFilter {
                limit: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for m in page.data {
        let detail = f.store.get_message(&f.ws, &m.id).await.unwrap().unwrap();
        let types = crate::event_types(&detail);
        assert_eq!(
            types,
            ["message.scheduled", "message.queued", "message.sending"]
        );
    }
}
