//! Quiet hours: marketing held to the end of the window in recipient local
//! time (also across a daylight-saving change), transactional and high
//! priority not held. The clock is a `ManualClock`.

use serde_json::{Value, json};
use switchboard_core::Timestamp;

use crate::harness::{TestApp, spawn_app, timeline};

async fn quiet_app() -> (TestApp, String) {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let r = app
        .client
        .patch(app.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"quiet_hours": {"start": "21:00", "end": "08:00"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    (app, key)
}

fn ms(s: &str) -> i64 {
    Timestamp::parse_rfc3339(s).unwrap().as_millis()
}

fn first_attempt_ms(m: &Value) -> i64 {
    ms(m["attempts"][0]["started_at"].as_str().unwrap())
}

#[tokio::test]
async fn a_marketing_message_at_22_30_local_is_held_until_08_00_local_across_a_dst_change() {
    let (app, key) = quiet_app().await;
    // 22:30 EDT on Saturday 31 October 2026; clocks go back at 02:00 on 1 November.
    app.clock
        .advance_to(Timestamp::from_millis(ms("2026-11-01T02:30:00Z")));
    let r: Value = app
        .post_message(&key, &json!({"to": "+14155550123", "body": "Sale starts now", "category": "marketing", "timezone": "America/New_York"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "scheduled");
    let id = r["id"].as_str().unwrap();
    let m = app.get_message(&key, id).await;
    // 08:00 EST is 13:00 UTC (a naive +9 h 30 would say 12:00).
    assert_eq!(m["next_attempt_at"], "2026-11-01T13:00:00.000Z");
    assert!(
        m["events"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("quiet hours")
    );
    app.drive().await;
    let m = app.get_message(&key, id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(
        first_attempt_ms(&m),
        ms("2026-11-01T13:00:00Z"),
        "sent at the first allowed minute"
    );
    assert_eq!(
        timeline(&m),
        [
            "message.scheduled",
            "message.queued",
            "message.sending",
            "message.sent",
            "message.delivered"
        ]
    );
}

#[tokio::test]
async fn the_zone_of_a_single_zone_region_is_used_when_none_is_given() {
    let (app, key) = quiet_app().await;
    // 22:30 in London (GMT) on 10 November.
    app.clock
        .advance_to(Timestamp::from_millis(ms("2026-11-10T22:30:00Z")));
    let r: Value = app
        .post_message(
            &key,
            &json!({"to": "+442071838750", "body": "Offer", "category": "marketing"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let m = app.get_message(&key, r["id"].as_str().unwrap()).await;
    assert_eq!(m["next_attempt_at"], "2026-11-11T08:00:00.000Z");
}

#[tokio::test]
async fn transactional_and_high_priority_messages_are_not_held() {
    let (app, key) = quiet_app().await;
    app.clock
        .advance_to(Timestamp::from_millis(ms("2026-11-01T02:30:00Z")));
    let now = app.clock_now_ms();
    let t: Value = app.post_message(&key, &json!({"to": "+14155550123", "body": "Your code is 1234", "timezone": "America/New_York"})).await.json().await.unwrap();
    let h: Value = app
        .post_message(&key, &json!({"to": "+14155550123", "body": "Flash", "category": "marketing", "priority": "high", "timezone": "America/New_York"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (t["status"].as_str(), h["status"].as_str()),
        (Some("queued"), Some("queued"))
    );
    app.drive().await;
    for id in [t["id"].as_str().unwrap(), h["id"].as_str().unwrap()] {
        let m = app.get_message(&key, id).await;
        assert_eq!(first_attempt_ms(&m), now, "sent at once");
    }
}

#[tokio::test]
async fn quiet_hours_settings_are_validated() {
    let (app, key) = quiet_app().await;
    for (body, status) in [
        (
            json!({"quiet_hours": {"start": "9pm", "end": "08:00"}}),
            422,
        ),
        (
            json!({"quiet_hours": {"start": "21:00", "end": "21:00"}}),
            422,
        ),
        (json!({"default_timezone": "Mars/Base"}), 422),
    ] {
        let r = app
            .client
            .patch(app.url("/v1/settings"))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
    let s: Value = app
        .client
        .patch(app.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"default_timezone": "Europe/Paris"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            s["default_timezone"].as_str(),
            s["quiet_hours"]["start"].as_str()
        ),
        (Some("Europe/Paris"), Some("21:00"))
    );
    let s: Value = app
        .client
        .patch(app.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"quiet_hours": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(s["quiet_hours"].is_null());
}

#[tokio::test]
async fn a_marketing_backlog_released_late_is_held_again_until_morning() {
    let (app, key) = quiet_app().await;
    // 20:50 EST: outside the window, so the message is queued...
    app.clock
        .advance_to(Timestamp::from_millis(ms("2026-11-10T01:50:00Z")));
    let r: Value = app
        .post_message(&key, &json!({"to": "+14155550123", "body": "Sale", "category": "marketing", "timezone": "America/New_York"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "queued");
    let id = r["id"].as_str().unwrap();
    // ...and a transactional one beside it.
    let tx = app
        .send(
            &key,
            json!({"to": "+14155550124", "body": "Your code is 1234", "timezone": "America/New_York"}),
        )
        .await;
    // The workers were stopped until 22:30 EST: the backlog is released now.
    app.clock
        .advance_to(Timestamp::from_millis(ms("2026-11-10T03:30:00Z")));
    app.worker.run_until_idle().await.unwrap();
    let m = app.get_message(&key, id).await;
    assert_eq!(m["status"], "scheduled", "{m}");
    assert_eq!(m["next_attempt_at"], "2026-11-10T13:00:00.000Z");
    assert!(
        m["attempts"].as_array().unwrap().is_empty(),
        "not sent at night"
    );
    let held = m["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(held["type"], "message.scheduled");
    assert!(
        held["detail"].as_str().unwrap().contains("quiet hours"),
        "{held}"
    );
    // The transactional message is not held.
    let t = app.get_message(&key, &tx).await;
    assert_eq!(t["attempts"][0]["started_at"], "2026-11-10T03:30:00.000Z");
    app.drive().await;
    let m = app.get_message(&key, id).await;
    assert_eq!(m["status"], "delivered");
    assert_eq!(first_attempt_ms(&m), ms("2026-11-10T13:00:00Z"));
    assert_eq!(
        timeline(&m),
        [
            "message.queued",
            "message.scheduled",
            "message.queued",
            "message.sending",
            "message.sent",
            "message.delivered"
        ]
    );
}
