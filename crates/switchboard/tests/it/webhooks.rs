//! Outbound webhooks against a real receiver on loopback.

use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app, spawn_app_with};
use crate::receiver::{Receiver, verify};

async fn endpoint(app: &TestApp, key: &str, body: Value) -> Value {
    let r = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v
}

async fn attempts(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let v: Value = app
        .client
        .get(app.url(&format!("/v1/webhooks/{id}/attempts")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"].as_array().unwrap().clone()
}

async fn get_endpoint(app: &TestApp, key: &str, id: &str) -> Value {
    app.client
        .get(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_message_lifecycle_arrives_signed_verifiable_and_in_order() {
    let app = spawn_app().await;
    let (ws, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let ep = endpoint(&app, &key, json!({"url": rx.url})).await;
    let secret = ep["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    let id = app.send(&key, json!({"to": "+14155550123", "body": "hi", "client_ref": "c-1", "metadata": {"deal": 7}})).await;
    app.drive().await;
    assert_eq!(
        rx.event_types(),
        [
            "message.queued",
            "message.sending",
            "message.sent",
            "message.delivered"
        ]
    );
    for r in rx.received() {
        assert!(verify(secret, &r), "signature verifies: {:?}", r.headers);
        let body = r.json();
        assert_eq!(r.header("webhook-id"), body["id"].as_str().unwrap());
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert_eq!(body["webhook_id"], ep["id"]);
        assert_eq!(body["account_id"], ws.as_str());
        assert_eq!(body["data"]["id"], id.as_str());
        assert_eq!(body["data"]["client_ref"], "c-1");
        assert_eq!(body["data"]["metadata"]["deal"], 7);
        assert_eq!(r.header("content-type"), "application/json");
    }
    assert_eq!(rx.received()[3].json()["data"]["status"], "delivered");
    // A tampered body does not verify.
    let mut forged = rx.received()[0].clone();
    let tampered: Vec<u8> = forged
        .body
        .iter()
        .map(|b| if *b == b'q' { b'Q' } else { *b })
        .collect();
    forged.body = axum::body::Bytes::from(tampered);
    assert!(!verify(secret, &forged));
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_the_event_on_the_fourth_attempt_with_the_same_id() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let fail = |n| (500, format!("boom {n}"));
    let rx = Receiver::start(vec![fail(1), fail(2), fail(3)]).await;
    let ep = endpoint(
        &app,
        &key,
        json!({"url": rx.url, "event_types": ["message.delivered", "message.failed"]}),
    )
    .await;
    app.send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    let moved = app.drive().await;
    let got = rx.received();
    assert_eq!(
        got.len(),
        4,
        "three failures then success, and nothing after"
    );
    let ids: Vec<String> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "webhook-id is stable across retries: {ids:?}"
    );
    assert!(
        got.iter()
            .all(|r| verify(ep["secret"].as_str().unwrap(), r))
    );
    assert!(
        moved.as_secs() >= 60 + 300 + 1800,
        "the default schedule 1 m, 5 m, 30 m was followed: {moved:?}"
    );
    let log = attempts(&app, &key, ep["id"].as_str().unwrap()).await;
    let statuses: Vec<u64> = log
        .iter()
        .rev()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 200]);
    let numbers: Vec<u64> = log
        .iter()
        .rev()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4]);
    assert_eq!(log.last().unwrap()["response_body"], "boom 1");
    assert_eq!(
        get_endpoint(&app, &key, ep["id"].as_str().unwrap()).await["consecutive_failures"],
        0,
        "a success resets the count"
    );
}

#[tokio::test]
async fn gone_disables_the_endpoint_and_tells_the_others() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let gone = Receiver::start(vec![(410, "gone".into())]).await;
    let watcher = Receiver::start(vec![]).await;
    let ep = endpoint(
        &app,
        &key,
        json!({"url": gone.url, "event_types": ["message.queued"]}),
    )
    .await;
    endpoint(
        &app,
        &key,
        json!({"url": watcher.url, "event_types": ["endpoint.disabled"]}),
    )
    .await;
    app.send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    app.drive().await;
    app.send(&key, json!({"to": "+14155550123", "body": "again"}))
        .await;
    app.drive().await;
    assert_eq!(gone.received().len(), 1, "nothing more after 410");
    let e = get_endpoint(&app, &key, ep["id"].as_str().unwrap()).await;
    assert_eq!(e["enabled"], false);
    assert!(e["disabled_reason"].as_str().unwrap().contains("410"));
    assert_eq!(watcher.event_types(), ["endpoint.disabled"]);
    assert_eq!(watcher.received()[0].json()["data"]["id"], ep["id"]);
}

#[tokio::test]
async fn consecutive_failures_disable_the_endpoint_and_emit_endpoint_disabled() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let bad = Receiver::start((0..10).map(|_| (503, "down".into())).collect()).await;
    let watcher = Receiver::start(vec![]).await;
    let ep = endpoint(&app, &key, json!({"url": bad.url, "event_types": ["message.queued"], "retry_schedule": [], "disable_after": 3})).await;
    endpoint(
        &app,
        &key,
        json!({"url": watcher.url, "event_types": ["endpoint.disabled"]}),
    )
    .await;
    for i in 0..5 {
        app.send(&key, json!({"to": "+14155550123", "body": format!("m{i}")}))
            .await;
        app.drive().await;
    }
    assert_eq!(
        bad.received().len(),
        3,
        "disabled after the third failure in a row"
    );
    let e = get_endpoint(&app, &key, ep["id"].as_str().unwrap()).await;
    assert_eq!(
        (e["enabled"].as_bool(), e["consecutive_failures"].as_u64()),
        (Some(false), Some(3))
    );
    assert_eq!(watcher.event_types(), ["endpoint.disabled"]);
    let reason = watcher.received()[0].json()["data"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("3 consecutive"), "{reason}");
    // Events raised while it was disabled are not queued for it; after
    // re-enabling, a range redelivery recovers them.
    let id = ep["id"].as_str().unwrap();
    let r = app
        .client
        .patch(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&key)
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (
            e["enabled"].as_bool(),
            e["consecutive_failures"].as_u64(),
            e["disabled_reason"].is_null()
        ),
        (Some(true), Some(0), true)
    );
    app.drive().await;
    assert_eq!(bad.received().len(), 3);
    let r = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/redeliver")))
        .bearer_auth(&key)
        .json(&json!({"since": "2000-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["queued"], 5);
    app.drive().await;
    assert_eq!(
        bad.received().len(),
        8,
        "all five subscribed events sent again"
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_probed_one_attempt_at_a_time() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let bad = Receiver::start((0..20).map(|_| (500, "down".into())).collect()).await;
    let ep = endpoint(&app, &key, json!({"url": bad.url, "event_types": ["message.queued"], "retry_schedule": [60], "disable_after": 4})).await;
    // One failure puts it on probation.
    app.send(&key, json!({"to": "+14155550123", "body": "first"}))
        .await;
    app.worker.run_until_idle().await.unwrap();
    app.webhooks.deliver_once().await.unwrap();
    assert_eq!(bad.received().len(), 1);
    // A burst of five while failing: one attempt per pass, not five at once.
    for i in 0..5 {
        app.send(&key, json!({"to": "+14155550123", "body": format!("m{i}")}))
            .await;
    }
    app.worker.run_until_idle().await.unwrap();
    assert_eq!(app.webhooks.deliver_once().await.unwrap(), 1);
    app.drive().await;
    assert_eq!(
        bad.received().len(),
        4,
        "disabled at the fourth failure in a row, the rest held back"
    );
    assert_eq!(
        get_endpoint(&app, &key, ep["id"].as_str().unwrap()).await["enabled"],
        false
    );
}

#[tokio::test]
async fn a_rotation_signs_with_both_secrets_during_the_grace_period() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let ep = endpoint(
        &app,
        &key,
        json!({"url": rx.url, "event_types": ["message.queued"]}),
    )
    .await;
    let old = ep["secret"].as_str().unwrap().to_owned();
    let id = ep["id"].as_str().unwrap();
    let rotated: Value = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/rotate-secret")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    assert!(rotated["previous_secret_expires_at"].is_string());
    app.send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    app.drive().await;
    let r = &rx.received()[0];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 2);
    assert!(verify(&old, r) && verify(&new, r));
    // After the grace period only the new secret signs.
    app.clock.advance(std::time::Duration::from_secs(86_401));
    app.send(&key, json!({"to": "+14155550123", "body": "later"}))
        .await;
    app.drive().await;
    let r = &rx.received()[1];
    assert_eq!(r.header("webhook-signature").split(' ').count(), 1);
    assert!(verify(&new, r) && !verify(&old, r));
}

#[tokio::test]
async fn private_and_internal_destinations_are_refused_with_a_clear_error() {
    let app = spawn_app_with(|c| c.webhook_allow_networks = String::new()).await;
    let (_, key) = app.workspace("acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost:1234/",
        "http://100.64.0.1/",
    ] {
        let r = app
            .client
            .post(app.url("/v1/webhooks"))
            .bearer_auth(&key)
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{url}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "destination_not_allowed", "{url}");
        assert_eq!(v["error"]["field"], "url");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("SWITCHBOARD_WEBHOOK_ALLOW_NETWORKS"),
            "{v}"
        );
    }
    let list: Value = app
        .client
        .get(app.url("/v1/webhooks"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn the_destination_is_checked_again_at_every_attempt() {
    // Created while loopback was allowed, delivered by a node that does not allow it.
    let app = spawn_app_with(|c| c.webhook_allow_networks = String::new()).await;
    let (ws, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let settings = switchboard_core::webhook_endpoint::EndpointSettings::from_json(
        &json!({"url": rx.url, "event_types": ["message.queued"], "retry_schedule": []}),
        true,
    )
    .unwrap();
    let ws = switchboard_core::WorkspaceId::parse(&ws).unwrap();
    app.store
        .create_endpoint(
            &ws,
            &settings,
            "wh_direct",
            &switchboard_core::webhook_signature::WebhookSecret::generate().expose(),
            app.clock_now_ts(),
        )
        .await
        .unwrap();
    app.send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    app.drive().await;
    assert!(
        rx.received().is_empty(),
        "nothing reached the loopback receiver"
    );
    let log = attempts(&app, &key, "wh_direct").await;
    assert_eq!(log.len(), 1);
    assert!(
        log[0]["error"].as_str().unwrap().contains("loopback"),
        "{}",
        log[0]
    );
}

#[tokio::test]
async fn the_attempt_log_keeps_the_first_1000_characters_and_the_duration() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![(500, "é".repeat(3000))]).await;
    let ep = endpoint(
        &app,
        &key,
        json!({"url": rx.url, "event_types": ["message.queued"], "retry_schedule": []}),
    )
    .await;
    app.send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    app.drive().await;
    let log = attempts(&app, &key, ep["id"].as_str().unwrap()).await;
    assert_eq!(log.len(), 1);
    let a = &log[0];
    assert_eq!(a["status_code"], 500);
    assert_eq!(a["response_body"].as_str().unwrap().chars().count(), 1000);
    assert!(a["duration_ms"].as_i64().unwrap() >= 0);
    assert_eq!(
        (a["trigger"].as_str(), a["attempt"].as_u64()),
        (Some("scheduled"), Some(1))
    );
    assert!(a["created_at"].is_string());
}

#[tokio::test]
async fn events_can_be_redelivered_one_by_one_or_by_time_range() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let ep = endpoint(
        &app,
        &key,
        json!({"url": rx.url, "event_types": ["message.delivered"]}),
    )
    .await;
    let id = ep["id"].as_str().unwrap();
    app.send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    app.drive().await;
    assert_eq!(rx.received().len(), 1);
    let event_id = rx.received()[0].header("webhook-id");
    let r = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/redeliver")))
        .bearer_auth(&key)
        .json(&json!({"event_id": event_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    app.drive().await;
    assert_eq!(rx.received().len(), 2);
    assert_eq!(
        rx.received()[1].header("webhook-id"),
        event_id,
        "the same event, the same id"
    );
    let log = attempts(&app, &key, id).await;
    assert_eq!(log[0]["trigger"], "manual");
    // A range: everything subscribed since the start.
    let r = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/redeliver")))
        .bearer_auth(&key)
        .json(&json!({"since": "2000-01-01T00:00:00Z"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["queued"], 1, "only the subscribed event type");
    app.drive().await;
    assert_eq!(rx.received().len(), 3);
    for (body, status) in [
        (json!({"event_id": "evt_nope"}), 404),
        (json!({}), 422),
        (json!({"since": "x"}), 422),
        (json!({"event_id": 5}), 400),
    ] {
        let r = app
            .client
            .post(app.url(&format!("/v1/webhooks/{id}/redeliver")))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{body}");
    }
}

#[tokio::test]
async fn a_test_send_returns_its_attempt() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![(503, "not yet".into())]).await;
    let ep = endpoint(
        &app,
        &key,
        json!({"url": rx.url, "event_types": ["message.delivered"]}),
    )
    .await;
    let id = ep["id"].as_str().unwrap();
    let first: Value = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/test")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            first["status_code"].as_u64(),
            first["trigger"].as_str(),
            first["response_body"].as_str()
        ),
        (Some(503), Some("test"), Some("not yet"))
    );
    let second: Value = app
        .client
        .post(app.url(&format!("/v1/webhooks/{id}/test")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["status_code"], 200);
    assert_eq!(
        rx.event_types(),
        ["webhook.test", "webhook.test"],
        "sent even though the filter does not list it"
    );
    assert!(verify(ep["secret"].as_str().unwrap(), &rx.received()[1]));
    app.drive().await;
    assert_eq!(rx.received().len(), 2, "a failed test is not retried");
    assert_eq!(
        get_endpoint(&app, &key, id).await["consecutive_failures"],
        0,
        "tests do not count towards disabling"
    );
}

#[tokio::test]
async fn a_payload_template_shapes_the_body_for_a_crm() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let template = r#"{"type":"STATUS-UPDATE","location_id":"loc-1","message_id":{{ event.data.client_ref | tojson }},"status":{{ event.data.status | upper | tojson }}}"#;
    endpoint(&app, &key, json!({"url": rx.url, "format": "template", "template": template, "event_types": ["message.sent", "message.delivered"]})).await;
    app.send(
        &key,
        json!({"to": "+14155550123", "body": "hi", "client_ref": "crm-77"}),
    )
    .await;
    app.drive().await;
    let bodies: Vec<Value> = rx.received().iter().map(|r| r.json()).collect();
    assert_eq!(
        bodies,
        [
            json!({"type": "STATUS-UPDATE", "location_id": "loc-1", "message_id": "crm-77", "status": "SENT"}),
            json!({"type": "STATUS-UPDATE", "location_id": "loc-1", "message_id": "crm-77", "status": "DELIVERED"}),
        ]
    );
    let r = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": rx.url, "format": "template", "template": "{{ unclosed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": rx.url, "format": "template"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn endpoints_are_private_to_their_workspace_and_validated() {
    let app = spawn_app().await;
    let (_, a) = app.workspace("a").await;
    let (_, b) = app.workspace("b").await;
    let rx = Receiver::start(vec![]).await;
    let ep = endpoint(&app, &a, json!({"url": rx.url})).await;
    let id = ep["id"].as_str().unwrap();
    for (method, path) in [
        ("GET", format!("/v1/webhooks/{id}")),
        ("DELETE", format!("/v1/webhooks/{id}")),
        ("GET", format!("/v1/webhooks/{id}/attempts")),
        ("POST", format!("/v1/webhooks/{id}/test")),
    ] {
        let r = app
            .client
            .request(method.parse().unwrap(), app.url(&path))
            .bearer_auth(&b)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
    }
    let listed: Value = app
        .client
        .get(app.url("/v1/webhooks"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown only at creation"
    );
    let r = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(&a)
        .json(&json!({"url": rx.url, "timeout_ms": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = app
        .client
        .delete(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    app.send(&a, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    app.drive().await;
    assert!(
        rx.received().is_empty(),
        "a deleted endpoint receives nothing"
    );
}

#[tokio::test]
async fn redirects_are_failures_and_retry_after_is_honoured() {
    use crate::receiver::Answer;
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let elsewhere = Receiver::start(vec![]).await;
    let rx = Receiver::start_with(vec![
        Answer {
            status: 302,
            body: String::new(),
            headers: vec![("location", elsewhere.url.clone())],
        },
        Answer {
            status: 429,
            body: "slow down".into(),
            headers: vec![("retry-after", "3600".into())],
        },
    ])
    .await;
    let ep = endpoint(
        &app,
        &key,
        json!({"url": rx.url, "event_types": ["message.queued"], "retry_schedule": [10, 10]}),
    )
    .await;
    app.send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    let moved = app.drive().await;
    assert!(
        elsewhere.received().is_empty(),
        "the redirect was not followed"
    );
    assert_eq!(
        rx.received().len(),
        3,
        "302 and 429 both retried, then success"
    );
    let log = attempts(&app, &key, ep["id"].as_str().unwrap()).await;
    let statuses: Vec<u64> = log
        .iter()
        .rev()
        .map(|a| a["status_code"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [302, 429, 200]);
    assert!(
        moved.as_secs() >= 3600 + 10,
        "the second retry waited for Retry-After, not the 10 s schedule: {moved:?}"
    );
}

#[tokio::test]
async fn form_bodies_and_other_methods_are_sent_as_configured() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let ep = endpoint(&app, &key, json!({"url": rx.url, "method": "PUT", "content_type": "form", "event_types": ["message.queued"], "headers": {"X-Crm-Token": "t0k"}})).await;
    let id = app
        .send(&key, json!({"to": "+14155550123", "body": "hi"}))
        .await;
    app.drive().await;
    let r = &rx.received()[0];
    assert_eq!(r.method, "PUT");
    assert_eq!(
        r.header("content-type"),
        "application/x-www-form-urlencoded"
    );
    assert_eq!(r.header("x-crm-token"), "t0k");
    assert!(
        verify(ep["secret"].as_str().unwrap(), r),
        "the form body is what is signed"
    );
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(text.contains("event=message.queued"), "{text}");
    assert!(text.contains(&format!("%22id%22%3A%22{id}%22")), "{text}");
}
