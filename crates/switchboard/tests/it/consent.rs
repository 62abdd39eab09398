//! Consent: refusal at submit, suppression at dispatch, events and history.

use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app, timeline};
use crate::receiver::Receiver;

async fn consent(app: &TestApp, key: &str, phone: &str, action: &str, body: Value) -> Value {
    let r = app
        .client
        .post(app.url(&format!("/v1/contacts/{phone}/{action}")))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{action} {phone}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn an_opted_out_recipient_is_refused_at_submit_until_opted_back_in() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    consent(&app, &key, "%2B14155550123", "opt-out", json!({})).await;
    let r = app
        .post_message(&key, &json!({"to": "+14155550123", "body": "hi"}))
        .await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (Some("recipient_opted_out"), Some("to"))
    );
    // Consent is per channel.
    assert_eq!(
        app.post_message(
            &key,
            &json!({"to": "+14155550123", "body": "hi", "channel": "whatsapp"})
        )
        .await
        .status(),
        202
    );
    consent(
        &app,
        &key,
        "+14155550123",
        "opt-in",
        json!({"channel": "sms"}),
    )
    .await;
    assert_eq!(
        app.post_message(&key, &json!({"to": "+14155550123", "body": "hi"}))
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn a_queued_message_to_a_number_that_just_opted_out_is_suppressed_and_never_sent() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let id = app
        .send(
            &key,
            json!({"to": "+14155550123", "body": "promo", "category": "marketing"}),
        )
        .await;
    consent(
        &app,
        &key,
        "%2B14155550123",
        "opt-out",
        json!({"detail": "asked by phone"}),
    )
    .await;
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "suppressed");
    assert_eq!(m["error_code"], "recipient_opted_out");
    assert_eq!(timeline(&m), ["message.queued", "message.suppressed"]);
    assert!(
        m["attempts"].as_array().unwrap().is_empty(),
        "the provider was never called"
    );
}

#[tokio::test]
async fn consent_changes_are_events_with_a_full_history() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let r = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": rx.url, "event_types": ["contact.opted_out", "contact.opted_in"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    consent(
        &app,
        &key,
        "%2B14155550123",
        "opt-out",
        json!({"jurisdiction": "US-TCPA"}),
    )
    .await;
    consent(&app, &key, "%2B14155550123", "opt-out", json!({})).await;
    let c = consent(&app, &key, "%2B14155550123", "opt-in", json!({})).await;
    app.drive().await;
    assert_eq!(
        rx.event_types(),
        ["contact.opted_out", "contact.opted_in"],
        "a repeated opt-out is not a second event"
    );
    let data = &rx.received()[0].json()["data"];
    assert_eq!(
        (
            data["phone"].as_str(),
            data["channel"].as_str(),
            data["source"].as_str()
        ),
        (Some("+14155550123"), Some("sms"), Some("api"))
    );
    assert_eq!(c["consent"][0]["state"], "opted_in");
    assert_eq!(
        c["consent"][0]["jurisdiction"], "US-TCPA",
        "kept from the earlier change"
    );
    let states: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["opted_out", "opted_out", "opted_in"]);
    let got: Value = app
        .client
        .get(app.url("/v1/contacts/%2B14155550123"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["history"].as_array().unwrap().len(), 3);
    let none: Value = app
        .client
        .get(app.url("/v1/contacts/%2B14155550124"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(none["consent"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn consent_requests_are_validated() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    for (path, body, status, code) in [
        (
            "/v1/contacts/12345/opt-out",
            json!({}),
            422,
            "invalid_phone",
        ),
        (
            "/v1/contacts/%2B14155550123/opt-out",
            json!({"channel": "fax"}),
            422,
            "invalid_channel",
        ),
        (
            "/v1/contacts/%2B14155550123/opt-out",
            json!({"channel": 1}),
            400,
            "invalid_type",
        ),
        (
            "/v1/contacts/%2B14155550123/opt-out",
            json!({"chanel": "sms"}),
            400,
            "unknown_field",
        ),
        (
            "/v1/contacts/%2B14155550123/opt-in",
            json!([1]),
            400,
            "invalid_type",
        ),
    ] {
        let r = app
            .client
            .post(app.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{path} {body}");
    }
    let r = app
        .client
        .get(app.url("/v1/contacts/not-a-phone"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn a_workspace_can_require_a_recorded_opt_in_for_marketing() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let r = app
        .client
        .patch(app.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"require_marketing_opt_in": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let promo = json!({"to": "+14155550123", "body": "20% off", "category": "marketing"});
    let r = app.post_message(&key, &promo).await;
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "opt_in_required");
    assert_eq!(
        app.post_message(&key, &json!({"to": "+14155550123", "body": "Your receipt"}))
            .await
            .status(),
        202,
        "transactional is not affected"
    );
    consent(
        &app,
        &key,
        "%2B14155550123",
        "opt-in",
        json!({"detail": "web form"}),
    )
    .await;
    assert_eq!(app.post_message(&key, &promo).await.status(), 202);
    let r = app
        .client
        .patch(app.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"require_marketing_opt_in": "yes"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn imports_are_checked_whole_and_listed_by_state() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let import = |body: Value| {
        app.client
            .post(app.url("/v1/contacts/import"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let r = import(json!({"records": [{"phone": "+14155550123"}, {"phone": "+1415"}]}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["field"].as_str()),
        (Some("invalid_phone"), Some("records[1].phone"))
    );
    let too_many: Vec<Value> = (0..5001)
        .map(|_| json!({"phone": "+14155550123"}))
        .collect();
    assert_eq!(
        import(json!({"records": too_many})).await.unwrap().status(),
        422
    );
    assert_eq!(import(json!({"records": "x"})).await.unwrap().status(), 400);
    let r = import(json!({"records": [{"phone": "+14155550123"}, {"phone": "+14155550124", "state": "opted_in"}]})).await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["imported"].as_u64(), v["changed"].as_u64()),
        (Some(2), Some(2))
    );
    let out: Value = app
        .client
        .get(app.url("/v1/contacts?state=opted_out"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["data"].as_array().unwrap().len(), 1);
    assert_eq!(out["data"][0]["source"], "import");
    assert_eq!(
        app.client
            .get(app.url("/v1/contacts?state=maybe"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
}
