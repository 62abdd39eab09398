//! The real binary, idle: its workers wait to be told of work instead of
//! polling the writer for it, and work still goes through at once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::crash::{metric, setup_key, start, submit_many};

/// With idle polls of a minute, an idle gateway commits nothing, and a
/// message still goes from submit to its `message.delivered` webhook
/// within seconds: the accept wakes the dispatcher, the send the receipt
/// pump, the stored receipt the pump again, and the delivery's fan-out the
/// webhook deliverer. A wake-up missing anywhere on the way would hold the
/// message for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_commits_nothing_and_work_still_goes_through_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let client = crate::harness::client();
    let rx = crate::receiver::Receiver::start(vec![]).await;
    let env = [
        ("SWITCHBOARD_SIM_LATENCY_MS", "0"),
        ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "20"),
        ("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
        ("SWITCHBOARD_IDLE_POLL_MS", "60000"),
    ];
    let gw = start(dir.path(), &env);
    let key = setup_key(&client, &gw.base).await;
    let endpoint = client
        .post(format!("{}/v1/webhooks", gw.base))
        .bearer_auth(&key)
        .json(&json!({"url": rx.url, "event_types": ["message.delivered"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoint.status(), 201, "{:?}", endpoint.text().await);

    // Idle: the workers have looked once since the start, and now wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let commits = "switchboard_group_commits_total ";
    let before = metric(&client, &gw.base, commits).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = metric(&client, &gw.base, commits).await - before;
    assert_eq!(idle, 0, "write transactions while idle for two seconds");

    let started = Instant::now();
    let ids = submit_many(&client, &gw.base, &key, 1).await;
    let deadline = started + Duration::from_secs(20);
    while rx.received().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no webhook 20 s after the submit: a wake-up was missed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = rx.received();
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["event"], "message.delivered");
    assert_eq!(body["data"]["id"], ids[0].as_str());
    eprintln!(
        "submit to delivered webhook on an idle gateway: {:?}",
        started.elapsed()
    );
}
