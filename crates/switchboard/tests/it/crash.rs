//! The real binary, killed: SIGKILL between accept and delivery loses
//! nothing and sends nothing twice; SIGTERM drains what is in flight.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Client;
use serde_json::{Value, json};
use switchboard_providers::sim::read_ledger;

use crate::harness::ADMIN_TOKEN;

pub struct Gateway {
    pub child: Child,
    pub base: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `switchboard serve` on a free port and waits for its
/// "listening" line (the process prints it once the port is bound).
pub fn start(dir: &Path, env: &[(&str, &str)]) -> Gateway {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("SWITCHBOARD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SWITCHBOARD_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start the switchboard binary");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the gateway exited before listening")
            .expect("read stdout");
        if let Some(rest) = line.strip_prefix("switchboard listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Gateway { child, base }
}

pub(crate) async fn setup_key(client: &Client, base: &str) -> String {
    let ws: Value = client
        .post(format!("{base}/v1/workspaces"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "crash"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key: Value = client
        .post(format!(
            "{base}/v1/workspaces/{}/keys",
            ws["id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    key["key"].as_str().unwrap().to_owned()
}

pub(crate) async fn submit_many(client: &Client, base: &str, key: &str, n: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (client, base, key) = (client.clone(), base.to_owned(), key.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (worker..n).step_by(16) {
                let r = client
                    .post(format!("{base}/v1/messages"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", format!("crash-{i}"))
                    .json(&json!({"to": "+14155550123", "body": format!("message {i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                ids.push(
                    r.json::<Value>().await.unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await.unwrap());
    }
    ids
}

pub(crate) async fn metric(client: &Client, base: &str, name: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    series_value(&text, name).unwrap_or(0)
}

/// The value of the series `name` (with its labels, as `/metrics` writes
/// them) in the text of `/metrics`.
pub(crate) fn series_value<T: std::str::FromStr>(text: &str, name: &str) -> Option<T> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// Polls a metric until it reaches `target` (bounded: 60 s).
async fn wait_for(client: &Client, base: &str, name: &str, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = metric(client, base, name).await;
        if v >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stuck at {v}, expected {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fetch(client: &Client, base: &str, key: &str, id: &str) -> Value {
    client
        .get(format!("{base}/v1/messages/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_accept_and_delivery_loses_nothing_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let client = crate::harness::client();
    const N: usize = 300;
    // Slow sends and few at a time, so the kill finds messages queued,
    // in flight and sent-but-not-delivered.
    let slow = [
        ("SWITCHBOARD_SIM_LATENCY_MS", "200"),
        ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "3000"),
        ("SWITCHBOARD_DISPATCH_CONCURRENCY", "32"),
    ];
    let (key, ids) = {
        let mut gw = start(dir.path(), &slow);
        let key = setup_key(&client, &gw.base).await;
        let ids = submit_many(&client, &gw.base, &key, N).await;
        wait_for(
            &client,
            &gw.base,
            "switchboard_send_attempts_total{outcome=\"accepted\"}",
            40,
        )
        .await;
        gw.child.kill().expect("SIGKILL");
        gw.child.wait().unwrap();
        (key, ids)
    };
    assert_eq!(ids.len(), N);
    let gw = start(
        dir.path(),
        &[
            ("SWITCHBOARD_SIM_LATENCY_MS", "0"),
            ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "50"),
        ],
    );
    wait_for(
        &client,
        &gw.base,
        "switchboard_messages{status=\"delivered\"}",
        N as u64,
    )
    .await;
    let mut interrupted = HashSet::new();
    for id in &ids {
        let m = fetch(&client, &gw.base, &key, id).await;
        assert_eq!(m["status"], "delivered", "{id}");
        let attempts = m["attempts"].as_array().unwrap();
        if attempts.iter().any(|a| a["outcome"] == "interrupted") {
            interrupted.insert(id.clone());
        }
        let sent = m["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "message.sent")
            .count();
        assert_eq!(sent, 1, "{id}: one sent event");
    }
    assert_eq!(
        metric(&client, &gw.base, "switchboard_messages_accepted_total").await,
        0,
        "the restart accepted nothing new"
    );
    drop(gw);
    let ledger: HashMap<String, _> = read_ledger(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    assert_eq!(
        ledger.len(),
        N,
        "the provider saw every message, and no other"
    );
    for id in &ids {
        let rec = &ledger[id];
        assert!(
            rec.provider_message_id.is_some(),
            "{id} was accepted by the provider once"
        );
        // A repeat call can only come from a claim whose outcome was lost
        // in the kill; the provider deduplicated it by the message id.
        if rec.calls_after_accept > 0 {
            assert!(
                interrupted.contains(id),
                "{id} was called again without having been interrupted"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sends_in_flight_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let client = crate::harness::client();
    let mut gw = start(
        dir.path(),
        &[
            ("SWITCHBOARD_SIM_LATENCY_MS", "500"),
            ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "50"),
        ],
    );
    let key = setup_key(&client, &gw.base).await;
    let ids = submit_many(&client, &gw.base, &key, 20).await;
    // Wait until the sends are in flight (claimed), then ask to stop.
    wait_for(
        &client,
        &gw.base,
        "switchboard_messages{status=\"sending\"}",
        1,
    )
    .await;
    let pid = gw.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = gw.child.wait().unwrap();
    assert!(status.success(), "a clean exit: {status}");
    drop(gw);
    let gw = start(
        dir.path(),
        &[
            ("SWITCHBOARD_SIM_LATENCY_MS", "0"),
            ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "50"),
        ],
    );
    wait_for(
        &client,
        &gw.base,
        "switchboard_messages{status=\"delivered\"}",
        20,
    )
    .await;
    for id in &ids {
        let m = fetch(&client, &gw.base, &key, id).await;
        let interrupted = m["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["outcome"] == "interrupted");
        assert!(!interrupted, "{id}: a graceful stop interrupts nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_in_the_middle_of_webhook_retries_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let client = crate::harness::client();
    let rx = crate::receiver::Receiver::start(vec![(500, "fail 1".into()), (500, "fail 2".into())])
        .await;
    let env = [
        ("SWITCHBOARD_SIM_LATENCY_MS", "0"),
        ("SWITCHBOARD_SIM_RECEIPT_DELAY_MS", "20"),
        ("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS", "127.0.0.0/8"),
    ];
    let (key, secret) = {
        let mut gw = start(dir.path(), &env);
        let key = setup_key(&client, &gw.base).await;
        let ep: Value = client
            .post(format!("{}/v1/webhooks", gw.base))
            .bearer_auth(&key)
            .json(&json!({"url": rx.url, "event_types": ["message.delivered"], "retry_schedule": [1, 1, 1]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        submit_many(&client, &gw.base, &key, 1).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while rx.received().is_empty() {
            assert!(Instant::now() < deadline, "the first attempt never came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The first attempt failed; its retry is due in a second. Kill now.
        gw.child.kill().unwrap();
        gw.child.wait().unwrap();
        (key, ep["secret"].as_str().unwrap().to_owned())
    };
    let _gw = start(dir.path(), &env);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.received().len() < 3 {
        if Instant::now() >= deadline {
            let c = rusqlite::Connection::open(dir.path().join("switchboard.db")).unwrap();
            let mut st = c.prepare("SELECT id, status, attempts, next_attempt_at, lease_until, trigger FROM webhook_deliveries").unwrap();
            let rows: Vec<String> = st
                .query_map([], |r| {
                    Ok(format!(
                        "{:?}",
                        (
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, i64>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, String>(5)?
                        )
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let ep: (i64, bool) = c
                .query_row(
                    "SELECT consecutive_failures, enabled FROM webhook_endpoints",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            panic!(
                "the retries did not resume: {} attempts; deliveries {rows:?}; endpoint {ep:?}",
                rx.received().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = rx.received();
    assert_eq!(got.len(), 3, "two failures, one success, nothing more");
    assert!(
        got.iter()
            .all(|r| r.header("webhook-id") == got[0].header("webhook-id"))
    );
    assert!(got.iter().all(|r| crate::receiver::verify(&secret, r)));
    let _ = key;
}
