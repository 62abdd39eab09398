//! CRM adapters, replaying the payloads of the seed documents.

use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app};
use crate::receiver::Receiver;

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Seed 003's send payload, with the fields it names.
fn seed_send(message_id: &str, phone: &str) -> Value {
    json!({
        "location_id": "loc_8f2k",
        "user_id": "usr_42",
        "phone": phone,
        "message": "Hi Ana, your appointment is confirmed for 3pm.",
        "attachments": [],
        "message_id": message_id,
        "channel": "sms"
    })
}

#[tokio::test]
async fn mycrmsim_sends_reports_status_updates_and_forwards_replies() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let (status, set) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/mycrmsim",
        Some(&key),
        &json!({
            "location_id": "loc_8f2k",
            "url": rx.url,
            "headers": {"Authorization": "Bearer sk_live_xxx", "X-Client-ID": "mycrm-client-01"}
        }),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["location_id"], "loc_8f2k");
    // Configuring again changes the same endpoint.
    let (_, again) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/mycrmsim",
        Some(&key),
        &json!({"location_id": "loc_8f2k", "url": rx.url, "headers": {"X-Client-ID": "mycrm-client-01"}}),
    )
    .await;
    assert_eq!(again["endpoint_id"], set["endpoint_id"]);

    // Send → 200 → STATUS-UPDATE SENT then DELIVERED at the configured URL.
    let (status, ok) = call(
        &app,
        reqwest::Method::POST,
        "/compat/mycrmsim/webhook",
        Some(&key),
        &seed_send("crm-msg-1001", "+14155550123"),
    )
    .await;
    assert_eq!(status, 200, "{ok}");
    assert_eq!(ok["status"], "queued");
    assert_eq!(ok["message_id"], "crm-msg-1001");
    app.drive().await;
    let got: Vec<Value> = rx.received().iter().map(|r| r.json()).collect();
    assert_eq!(
        got,
        [
            json!({"type": "STATUS-UPDATE", "location_id": "loc_8f2k", "message_id": "crm-msg-1001", "status": "SENT"}),
            json!({"type": "STATUS-UPDATE", "location_id": "loc_8f2k", "message_id": "crm-msg-1001", "status": "DELIVERED"}),
        ]
    );
    assert!(
        rx.received()
            .iter()
            .all(|r| r.header("x-client-id") == "mycrm-client-01")
    );
    let m = app.get_message(&key, ok["id"].as_str().unwrap()).await;
    assert_eq!(m["client_ref"], "crm-msg-1001");
    assert_eq!(m["metadata"]["user_id"], "usr_42");

    // The same message_id again: the same message, nothing sent twice.
    let (status, replay) = call(
        &app,
        reqwest::Method::POST,
        "/compat/mycrmsim/webhook",
        Some(&key),
        &seed_send("crm-msg-1001", "+14155550123"),
    )
    .await;
    assert_eq!((status, &replay["id"]), (200, &ok["id"]));
    app.drive().await;
    assert_eq!(rx.received().len(), 2);

    // A reply is forwarded as MESSAGE with isMe false.
    let r = app
        .client
        .post(app.url("/v1/sim/inbound"))
        .bearer_auth(&key)
        .json(&json!({"from": "+14155550123", "text": "See you then!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    app.drive().await;
    assert_eq!(
        rx.received().last().unwrap().json(),
        json!({"type": "MESSAGE", "location_id": "loc_8f2k", "phone": "+14155550123", "message": "See you then!", "isMe": false, "attachments": []})
    );

    // A failure is FAILED.
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/compat/mycrmsim/webhook",
        Some(&key),
        &seed_send("crm-msg-1002", "+14155550400"),
    )
    .await;
    assert_eq!(status, 200);
    app.drive().await;
    assert_eq!(
        rx.received().last().unwrap().json()["status"],
        "FAILED",
        "{:?}",
        rx.received().iter().map(|r| r.json()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn mycrmsim_validation_errors_are_400_with_a_clear_message() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let (_, other_key) = app.workspace("beta").await;
    let rx = Receiver::start(vec![]).await;
    let setup = json!({"location_id": "loc_8f2k", "url": rx.url});
    let (status, _) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/mycrmsim",
        Some(&key),
        &setup,
    )
    .await;
    assert_eq!(status, 200);
    // Another workspace cannot take the same location_id.
    let (status, err) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/mycrmsim",
        Some(&other_key),
        &setup,
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (409, Some("location_id_taken"))
    );
    let good = seed_send("crm-msg-2001", "+14155550123");
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v;
        }
        b
    };
    let cases = [
        (
            with("location_id", Value::Null),
            "missing_location_id",
            "location_id",
        ),
        (
            with("location_id", json!("")),
            "missing_location_id",
            "location_id",
        ),
        (
            with("message_id", Value::Null),
            "missing_message_id",
            "message_id",
        ),
        (
            with("message_id", json!("  ")),
            "missing_message_id",
            "message_id",
        ),
        (with("channel", json!("fax")), "invalid_channel", "channel"),
        (with("channel", Value::Null), "invalid_channel", "channel"),
        (with("phone", json!("555-0100")), "invalid_phone", "phone"),
        (with("phone", json!("+1415555")), "invalid_phone", "phone"),
        (with("user_id", Value::Null), "missing_user_id", "user_id"),
        (with("message", json!("")), "missing_message", "message"),
        (
            with("attachments", json!("https://x")),
            "invalid_attachments",
            "attachments",
        ),
    ];
    for (body, code, field) in cases {
        let (status, err) = call(
            &app,
            reqwest::Method::POST,
            "/compat/mycrmsim/webhook",
            Some(&key),
            &body,
        )
        .await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (400, Some(code)),
            "{body} → {err}"
        );
        assert_eq!(err["error"]["field"], field);
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    // Someone else's location, and no key.
    let (status, err) = call(
        &app,
        reqwest::Method::POST,
        "/compat/mycrmsim/webhook",
        Some(&key),
        &with("location_id", json!("loc_other")),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (404, Some("unknown_location"))
    );
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/compat/mycrmsim/webhook",
        Some(&other_key),
        &good,
    )
    .await;
    assert_eq!(status, 404, "the location belongs to another workspace");
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/compat/mycrmsim/webhook",
        None,
        &good,
    )
    .await;
    assert_eq!(status, 401);
    // Nothing was stored by any of them.
    let list: Value = app
        .client
        .get(app.url("/v1/messages"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // Bad settings.
    for (body, code) in [
        (
            json!({"location_id": "loc 1", "url": rx.url}),
            "invalid_location_id",
        ),
        (json!({"location_id": "loc_1"}), "missing_field"),
        (
            json!({"location_id": "loc_1", "url": rx.url, "secret": 1}),
            "unknown_field",
        ),
    ] {
        // On a workspace not connected yet (a reconfiguration may leave out the URL).
        let (status, err) = call(
            &app,
            reqwest::Method::PUT,
            "/v1/compat/mycrmsim",
            Some(&other_key),
            &body,
        )
        .await;
        assert_eq!(err["error"]["code"], code, "{body} → {status} {err}");
    }
}
