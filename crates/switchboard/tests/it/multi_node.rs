//! Three real `switchboard` processes on one PostgreSQL database (a schema
//! of this test's own), sharing the simulator's ledger: messages submitted
//! across them are sent exactly once, every event reaches the webhook
//! receiver, and a node killed with SIGKILL mid-run loses nothing. Runs when
//! `SWITCHBOARD_TEST_DATABASE_URL` is set (`.ci/run` sets it).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use switchboard_providers::sim::read_ledger;

use crate::crash::{Gateway, start};
use crate::harness::{ADMIN_TOKEN, client, new_schema, pg_url};
use crate::receiver::Receiver;

const MESSAGES: usize = 5_000;

/// Runs a query on the test schema (on a blocking thread).
async fn pg_query(url: &str, sql: &'static str) -> Vec<postgres::Row> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.query(sql, &[]).unwrap()
    })
    .await
    .unwrap()
}

fn node(dir: &std::path::Path, url: &str, role: &str) -> Gateway {
    start(
        dir,
        &[
            ("SWITCHBOARD_DATABASE_URL", url),
            ("SWITCHBOARD_ROLE", role),
            ("SWITCHBOARD_SIM_LATENCY_MS", "2"),
            ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "50"),
            ("SWITCHBOARD_LEASE_SECONDS", "3"),
            ("SWITCHBOARD_SEND_TIMEOUT_MS", "1000"),
            ("SWITCHBOARD_WEBHOOK_LEASE_SECONDS", "8"),
            ("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
            ("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "100000"),
            ("SWITCHBOARD_RATE_LIMIT_BURST", "100000"),
        ],
    )
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

async fn setup(client: &Client, base: &str, hook: &str) -> String {
    let ws = json_of(
        client
            .post(format!("{base}/v1/workspaces"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "multi"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let key = json_of(
        client
            .post(format!(
                "{base}/v1/workspaces/{}/keys",
                ws["id"].as_str().unwrap()
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": hook, "timeout_ms": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    key
}

/// Submits message `i` to node `i % n`, moving on to the next node when one
/// does not answer (the client retries with the same Idempotency-Key, as a
/// CRM behind a load balancer would). Returns the message id.
async fn submit(client: &Client, bases: &[String], key: &str, i: usize) -> String {
    let mut last = String::new();
    for k in 0..bases.len() * 3 {
        let base = &bases[(i + k) % bases.len()];
        let sent = client
            .post(format!("{base}/v1/messages"))
            .bearer_auth(key)
            .header("Idempotency-Key", format!("multi-{i}"))
            .json(&json!({"to": "+14155550123", "body": format!("message {i}")}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                return json_of(r).await["id"].as_str().unwrap().to_owned();
            }
            Ok(r) => {
                last = format!(
                    "{base}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )
            }
            Err(e) => last = format!("{base}: {e}"),
        }
    }
    panic!("message {i} was accepted by no node; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_deliver_every_message_once_and_survive_a_sigkill() {
    let Some(base_url) = pg_url() else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    let schema = new_schema(&base_url).await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(vec![]).await;
    let mut nodes: Vec<Option<Gateway>> = (0..3)
        .map(|_| Some(node(dir.path(), &url, "all")))
        .collect();
    let bases: Vec<String> = nodes
        .iter()
        .map(|n| n.as_ref().unwrap().base.clone())
        .collect();
    let client = client();
    let key = setup(&client, &bases[0], &receiver.url).await;

    // Submit across the three nodes, 32 at a time; kill node 1 partway.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for lane in 0..32 {
        let (client, bases, key) = (client.clone(), bases.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (lane..MESSAGES).step_by(32) {
                ids.push(submit(&client, &bases, &key, i).await);
            }
            ids
        }));
    }
    let waiter = {
        let url = url.clone();
        async move {
            // Once a third of the messages are in, SIGKILL node 1 (it has
            // sends and webhook deliveries in flight by then).
            loop {
                let rows = pg_query(&url, "SELECT COUNT(*) FROM messages").await;
                let n: i64 = rows[0].get(0);
                if n as usize >= MESSAGES / 3 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    waiter.await;
    let mut victim = nodes[1].take().unwrap();
    victim.child.kill().unwrap(); // SIGKILL
    victim.child.wait().unwrap();
    let mut ids = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            ids.insert(id);
        }
    }
    let submitted_in = started.elapsed();
    assert_eq!(ids.len(), MESSAGES, "one message per idempotency key");

    // Every message ends delivered (the survivors take over node 1's leases).
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let rows = pg_query(
            &url,
            "SELECT status, COUNT(*) FROM messages GROUP BY status",
        )
        .await;
        let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        if counts == [("delivered".to_owned(), MESSAGES as i64)] {
            break;
        }
        assert!(Instant::now() < deadline, "not all delivered: {counts:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let delivered_in = started.elapsed();

    // Sent exactly once: the shared ledger has one accepted send per message;
    // repeated calls happen only for attempts cut off by the kill, and the
    // provider's idempotency answered them with the same send.
    let ledger = read_ledger(dir.path()).unwrap();
    let accepted: HashSet<&str> = ledger
        .iter()
        .filter(|r| r.provider_message_id.is_some())
        .map(|r| r.key.as_str())
        .collect();
    assert_eq!(accepted.len(), MESSAGES);
    assert!(ids.iter().all(|id| accepted.contains(id.as_str())));
    let repeated: u32 = ledger.iter().map(|r| r.calls_after_accept).sum();
    let interrupted: i64 = pg_query(
        &url,
        "SELECT COUNT(*) FROM attempts WHERE outcome = 'interrupted'",
    )
    .await[0]
        .get(0);
    assert!(
        i64::from(repeated) <= interrupted,
        "{repeated} repeated provider calls but only {interrupted} attempts were cut off"
    );

    // Every event reached the receiver (at least once).
    let events: HashSet<String> =
        pg_query(&url, "SELECT id FROM events WHERE message_id IS NOT NULL")
            .await
            .iter()
            .map(|r| r.get(0))
            .collect();
    // queued, sending, sent, delivered; `sent` is missing only where the
    // killed node's attempt never reported and the receipt came first.
    assert!(events.len() > MESSAGES * 3, "{} events", events.len());
    let delivered: i64 = pg_query(
        &url,
        "SELECT COUNT(DISTINCT message_id) FROM events WHERE type = 'message.delivered'",
    )
    .await[0]
        .get(0);
    assert_eq!(
        delivered, MESSAGES as i64,
        "one delivered event per message"
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    let (got, deliveries) = loop {
        let received = receiver.received();
        let got: HashSet<String> = received.iter().map(|r| r.header("webhook-id")).collect();
        if events.is_subset(&got) {
            break (got, received.len());
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events reached the receiver",
            events.intersection(&got).count(),
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let all_in = started.elapsed();
    eprintln!(
        "three nodes, {MESSAGES} messages: submitted in {submitted_in:?}, all delivered after {delivered_in:?}, \
         all {} events at the receiver after {all_in:?} ({deliveries} deliveries, {} repeated; {repeated} repeated provider calls, {interrupted} interrupted attempts)",
        got.len(),
        deliveries - got.len()
    );
    drop(nodes);
    drop(schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_split_the_api_from_the_workers() {
    let Some(base_url) = pg_url() else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    let schema = new_schema(&base_url).await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let api = node(dir.path(), &url, "api");
    let client = client();
    let receiver = Receiver::start(vec![]).await;
    let key = setup(&client, &api.base, &receiver.url).await;
    let id = submit(&client, std::slice::from_ref(&api.base), &key, 1).await;
    // An api node does not send.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = |client: Client, base: String, key: String, id: String| async move {
        json_of(
            client
                .get(format!("{base}/v1/messages/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .unwrap(),
        )
        .await["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        status(client.clone(), api.base.clone(), key.clone(), id.clone()).await,
        "queued"
    );
    // A worker node sends it, and serves no API (only operations routes).
    let worker = node(dir.path(), &url, "worker");
    let r = client
        .get(format!("{}/v1/messages/{id}", worker.base))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        client
            .get(format!("{}/healthz", worker.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(client.clone(), api.base.clone(), key.clone(), id.clone()).await != "delivered" {
        assert!(Instant::now() < deadline, "the worker node did not deliver");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Roles other than `all` need a shared database.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["serve", "--role", "worker", "--data-dir"])
        .arg(dir.path().join("solo"))
        .env_remove("SWITCHBOARD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shared database"));
    drop((api, worker, schema));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_throughput_limit_holds_across_three_nodes() {
    let Some(base_url) = pg_url() else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return;
    };
    const RATE: f64 = 50.0;
    const COUNT: usize = 450;
    let schema = new_schema(&base_url).await;
    let url = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let rate = RATE.to_string();
    let nodes: Vec<Gateway> = (0..3)
        .map(|_| {
            start(
                dir.path(),
                &[
                    ("SWITCHBOARD_DATABASE_URL", url.as_str()),
                    ("SWITCHBOARD_SIM_LATENCY_MS", "2"),
                    ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "50"),
                    ("SWITCHBOARD_SIM_RATE_PER_SECOND", rate.as_str()),
                    ("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
                    ("SWITCHBOARD_RATE_LIMIT_PER_SECOND", "100000"),
                    ("SWITCHBOARD_RATE_LIMIT_BURST", "100000"),
                ],
            )
        })
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = client();
    let receiver = Receiver::start(vec![]).await;
    let key = setup(&client, &bases[0], &receiver.url).await;
    let mut tasks = Vec::new();
    for lane in 0..16 {
        let (client, bases, key) = (client.clone(), bases.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            for i in (lane..COUNT).step_by(16) {
                submit(&client, &bases, &key, i).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = loop {
        let ledger = read_ledger(dir.path()).unwrap();
        let times: Vec<i64> = ledger
            .iter()
            .filter_map(|r| r.accepted_at.map(|t| t.as_millis()))
            .collect();
        if times.len() == COUNT {
            break times;
        }
        assert!(Instant::now() < deadline, "{} of {COUNT} sent", times.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    sent.sort_unstable();
    // Measured twice: when the dispatchers started each send (what the limit
    // governs) and when the provider accepted it (what the provider sees).
    // The provider's ledger records a send before the node records its
    // attempt: wait for the attempts to be written too.
    let mut started: Vec<i64> = loop {
        let rows: Vec<i64> = pg_query(&url, "SELECT started_at FROM attempts")
            .await
            .iter()
            .map(|r| r.get(0))
            .collect();
        if rows.len() >= COUNT || Instant::now() >= deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    started.sort_unstable();
    if started.len() != COUNT {
        // Say why a message needed a second attempt.
        let failed: Vec<String> = pg_query(
            &url,
            "SELECT outcome || ' ' || COALESCE(error_code, '') || ' ' || COALESCE(error_message, '') FROM attempts WHERE outcome <> 'accepted'",
        )
        .await
        .iter()
        .map(|r| r.get(0))
        .collect();
        panic!(
            "one attempt per message: {} attempts for {COUNT}; not accepted: {failed:?}",
            started.len()
        );
    }
    // After the initial burst (one second's worth), the sends of all three
    // nodes together follow the limit.
    let rate_of = |times: &[i64]| {
        let steady = &times[RATE as usize..];
        let span = (steady[steady.len() - 1] - steady[0]) as f64 / 1000.0;
        ((steady.len() - 1) as f64 / span, span)
    };
    let (dispatched, span) = rate_of(&started);
    let (at_provider, _) = rate_of(&sent);
    eprintln!(
        "limit {RATE}/s across three nodes: sends started at {dispatched:.1}/s over {span:.1} s, accepted by the provider at {at_provider:.1}/s"
    );
    assert!(
        (dispatched - RATE).abs() <= RATE * 0.10,
        "sends started at {dispatched:.1}/s against a limit of {RATE}/s"
    );
    assert!(
        at_provider <= RATE * 1.10,
        "the provider saw {at_provider:.1}/s against a limit of {RATE}/s"
    );
    drop((nodes, schema));
}
