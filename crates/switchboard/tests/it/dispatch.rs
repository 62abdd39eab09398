//! Each class of the simulator ends in the right state after the right
//! number of attempts. The clock is a `ManualClock` moved to each next due
//! time: no sleeps, and backoff is checked against the clock.

use serde_json::{Value, json};
use switchboard_core::Timestamp;
use switchboard_store::{ReceiptKind, ReceiptOutcome};

use crate::harness::{TestApp, spawn_app, timeline};

async fn run(app: &TestApp, key: &str, to: &str, extra: Value) -> Value {
    let mut body = json!({"to": to, "body": "class test"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let id = app.send(key, body).await;
    app.drive().await;
    app.get_message(key, &id).await
}

fn attempts(m: &Value) -> Vec<(String, Option<String>)> {
    m["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap().to_owned(),
                a["error_class"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn started(m: &Value) -> Vec<i64> {
    m["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            Timestamp::parse_rfc3339(a["started_at"].as_str().unwrap())
                .unwrap()
                .as_millis()
        })
        .collect()
}

#[tokio::test]
async fn an_ordinary_number_is_sent_then_delivered_in_one_attempt() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550123", json!({})).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(
        timeline(&m),
        [
            "message.queued",
            "message.sending",
            "message.sent",
            "message.delivered"
        ]
    );
    assert_eq!(attempts(&m), [("accepted".to_owned(), None)]);
    assert!(
        m["provider_message_id"]
            .as_str()
            .unwrap()
            .starts_with("SIM")
    );
}

#[tokio::test]
async fn an_invalid_number_fails_permanently_after_one_attempt() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550400", json!({})).await;
    assert_eq!(m["status"], "failed");
    assert_eq!(m["error_code"], "invalid_number");
    assert_eq!(
        attempts(&m),
        [("failed".to_owned(), Some("permanent".to_owned()))]
    );
    assert_eq!(
        timeline(&m),
        ["message.queued", "message.sending", "message.failed"]
    );
}

#[tokio::test]
async fn throttling_is_retried_no_sooner_than_retry_after_then_delivered() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550423", json!({})).await;
    assert_eq!(m["status"], "delivered");
    let a = attempts(&m);
    assert_eq!(a.len(), 4, "three throttled attempts, then accepted: {a:?}");
    assert!(
        a[..3]
            .iter()
            .all(|(o, c)| o == "failed" && c.as_deref() == Some("throttled"))
    );
    let t = started(&m);
    for w in t.windows(2) {
        assert!(
            w[1] - w[0] >= 1000,
            "the simulator's Retry-After of 1 s is a floor: {t:?}"
        );
    }
    let retries = timeline(&m)
        .iter()
        .filter(|e| *e == "message.retrying")
        .count();
    assert_eq!(retries, 3);
}

#[tokio::test]
async fn transport_errors_are_retried_with_backoff_then_delivered() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550502", json!({})).await;
    assert_eq!(m["status"], "delivered");
    let a = attempts(&m);
    assert_eq!(a.len(), 3, "{a:?}");
    assert_eq!(a[0].1.as_deref(), Some("transport"));
    let t = started(&m);
    // Full jitter: each wait lies within [0, base * 2^(n-1)].
    assert!(t[1] - t[0] <= 1000 && t[2] - t[1] <= 2000, "{t:?}");
}

#[tokio::test]
async fn a_permanent_outage_fails_after_the_attempt_budget() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550599", json!({})).await;
    assert_eq!(m["status"], "failed");
    assert_eq!(m["error_code"], "attempts_exhausted");
    assert_eq!(attempts(&m).len(), 8);
    assert_eq!(m["attempt_count"], 8);
}

#[tokio::test]
async fn an_accepted_message_can_end_undelivered() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550404", json!({})).await;
    assert_eq!(m["status"], "undelivered");
    assert_eq!(
        timeline(&m),
        [
            "message.queued",
            "message.sending",
            "message.sent",
            "message.undelivered"
        ]
    );
}

#[tokio::test]
async fn a_provider_that_never_answers_times_out_until_the_ttl_runs_out() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550408", json!({"ttl_seconds": 10})).await;
    assert_eq!(m["status"], "failed");
    assert_eq!(m["error_code"], "ttl_exhausted");
    let a = m["attempts"].as_array().unwrap();
    assert!(
        (2..8).contains(&a.len()),
        "stopped by the TTL, before the attempt budget: {}",
        a.len()
    );
    assert!(a.iter().all(|x| x["error_code"] == "timeout"));
    let created = Timestamp::parse_rfc3339(m["created_at"].as_str().unwrap())
        .unwrap()
        .as_millis();
    assert!(
        started(&m).iter().all(|t| *t < created + 10_000),
        "no attempt after the TTL"
    );
}

#[tokio::test]
async fn a_message_that_waits_past_its_ttl_expires_unsent() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let id = app
        .send(
            &key,
            json!({"to": "+14155550123", "body": "stale", "ttl_seconds": 10}),
        )
        .await;
    // The dispatcher does not run for a minute (a backlog, an outage).
    app.clock.advance(std::time::Duration::from_secs(60));
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "expired");
    assert!(m["attempts"].as_array().unwrap().is_empty(), "never sent");
}

#[tokio::test]
async fn a_carrier_opt_out_suppresses_the_message() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550451", json!({})).await;
    assert_eq!(m["status"], "suppressed");
    assert_eq!(attempts(&m).len(), 1);
}

#[tokio::test]
async fn read_receipts_follow_delivery() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550202", json!({"channel": "whatsapp"})).await;
    assert_eq!(m["status"], "read");
    assert_eq!(
        timeline(&m),
        [
            "message.queued",
            "message.sending",
            "message.sent",
            "message.delivered",
            "message.read"
        ]
    );
}

#[tokio::test]
async fn a_late_or_duplicate_receipt_never_moves_a_message_back() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let m = run(&app, &key, "+14155550123", json!({})).await;
    let pmid = m["provider_message_id"].as_str().unwrap();
    let now = Timestamp::from_millis(app.clock_now_ms());
    for kind in [ReceiptKind::Delivered, ReceiptKind::Undelivered] {
        let out = app
            .store
            .apply_receipt("pr_sim", pmid, kind, None, None, now)
            .await
            .unwrap();
        assert!(matches!(out, ReceiptOutcome::Ignored { .. }), "{out:?}");
    }
    let after = app.get_message(&key, m["id"].as_str().unwrap()).await;
    assert_eq!(after["status"], "delivered");
    assert_eq!(
        timeline(&after),
        timeline(&m),
        "no event for an ignored receipt"
    );
    let unknown = app
        .store
        .apply_receipt("pr_sim", "SIMnope", ReceiptKind::Delivered, None, None, now)
        .await
        .unwrap();
    assert_eq!(unknown, ReceiptOutcome::UnknownMessage);
}

#[tokio::test]
async fn high_priority_messages_are_claimed_first() {
    let app = spawn_app_batch_of_one().await;
    let (_, key) = app.workspace("acme").await;
    let normal = app
        .send(&key, json!({"to": "+14155550123", "body": "normal"}))
        .await;
    let high = app
        .send(
            &key,
            json!({"to": "+14155550123", "body": "high", "priority": "high"}),
        )
        .await;
    app.worker.dispatch_once().await.unwrap();
    assert_eq!(app.get_message(&key, &high).await["status"], "sent");
    assert_eq!(app.get_message(&key, &normal).await["status"], "queued");
}

async fn spawn_app_batch_of_one() -> TestApp {
    crate::harness::spawn_app_with(|c| c.dispatcher.batch = 1).await
}
