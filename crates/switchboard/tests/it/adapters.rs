//! CRM adapters, replaying the payloads of the seed documents.

use serde_json::{Value, json};

use crate::harness::{TestApp, call, get, spawn_app};
use crate::receiver::Receiver;

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

/// Seed 004's text webhook, verbatim but for a real phone number.
fn seed_2x(id: u64, kind: &str) -> Value {
    json!({
        "id": id,
        "agent_key": "ABC123",
        "record_phone_number": "+14155550123",
        "record_first_name": "John",
        "record_last_name": "Smith",
        "record_zip_code": "98765",
        "record_timezone": "UTC-8",
        "meta": { "lead_id": "123", "test_id": "abc" },
        "workflow_key": "DEF456",
        "workflow_day": 1,
        "workflow_call": 1,
        "workflow_end": false,
        "type": kind,
        "message": "We will call you in several minutes, looking forward to talking with you."
    })
}

async fn post_2x(app: &TestApp, header: (&str, &str), body: &Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/compat/2x/send-text/"))
        .header(header.0, header.1)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn twox_pre_call_texts_skip_quiet_hours_and_post_voicemail_texts_wait() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    // Quiet hours all day long in the recipient's zone (UTC-8), so that
    // whatever the test clock says, a held text would be held.
    let r = app
        .client
        .patch(app.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"quiet_hours": {"start": "00:00", "end": "23:59"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, conn) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/2x",
        Some(&key),
        &json!({"auth_header": "X-2X-Token", "auth_token": "2x-secret-token-0123456789"}),
    )
    .await;
    assert_eq!(status, 200, "{conn}");
    assert_eq!(conn["auth_header"], "x-2x-token");
    assert!(conn["auth_token"].is_null(), "a token given is not echoed");
    let auth = ("X-2X-Token", "2x-secret-token-0123456789");

    let (status, pre) = post_2x(&app, auth, &seed_2x(1234, "pre-call")).await;
    assert_eq!(status, 200, "{pre}");
    assert_eq!(pre["status"], "queued", "pre-call is never held");
    let (status, post) = post_2x(&app, auth, &seed_2x(1235, "post-voicemail")).await;
    assert_eq!(status, 200, "{post}");
    assert_eq!(
        post["status"], "scheduled",
        "post-voicemail waits for the quiet hours to end"
    );
    let m = app.get_message(&key, pre["id"].as_str().unwrap()).await;
    assert_eq!(m["priority"], "high");
    assert_eq!(m["timezone"], "UTC-8");
    assert_eq!(m["client_ref"], "2x-1234");
    // The record fields are kept, and every event echoes them.
    assert_eq!(m["metadata"]["agent_key"], "ABC123");
    assert_eq!(m["metadata"]["meta"]["lead_id"], "123");
    assert_eq!(m["metadata"]["workflow_key"], "DEF456");
    assert_eq!(m["metadata"]["source"], "2x");
    // 2X repeating a webhook is the same text.
    let (_, again) = post_2x(&app, auth, &seed_2x(1234, "pre-call")).await;
    assert_eq!(again["id"], pre["id"]);

    // Wrong or missing token; bad payloads.
    let (status, err) = post_2x(
        &app,
        ("X-2X-Token", "not-the-token-000000"),
        &seed_2x(9, "pre-call"),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let (status, _) = post_2x(
        &app,
        ("X-Other", "2x-secret-token-0123456789"),
        &seed_2x(9, "pre-call"),
    )
    .await;
    assert_eq!(status, 401, "the token counts only in its header");
    let (status, _) = post_2x(
        &app,
        ("Authorization", &format!("Bearer {key}")),
        &seed_2x(9, "pre-call"),
    )
    .await;
    assert_eq!(status, 401, "an API key is not a 2X token");
    let mut bad_type = seed_2x(10, "pre-call");
    bad_type["type"] = json!("follow-up");
    let (status, err) = post_2x(&app, auth, &bad_type).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (422, Some("invalid_text_type"))
    );
    let mut bad_phone = seed_2x(11, "pre-call");
    bad_phone["record_phone_number"] = json!("555-0100");
    let (status, err) = post_2x(&app, auth, &bad_phone).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("record_phone_number")),
        "{err}"
    );
    let mut no_message = seed_2x(12, "post-voicemail");
    no_message.as_object_mut().unwrap().remove("message");
    let (status, err) = post_2x(&app, auth, &no_message).await;
    assert_eq!(
        (status, err["error"]["field"].as_str()),
        (422, Some("message")),
        "{err}"
    );
    // Bad connection settings.
    for (body, code) in [
        (json!({"auth_token": "short"}), "invalid_token"),
        (json!({"auth_header": "X Bad"}), "invalid_header"),
        (json!({"token": "x"}), "unknown_field"),
    ] {
        let (_, err) = call(
            &app,
            reqwest::Method::PUT,
            "/v1/compat/2x",
            Some(&key),
            &body,
        )
        .await;
        assert_eq!(err["error"]["code"], code, "{body}");
    }
    // A token made here is shown once, and replaces the old one.
    let (_, made) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/2x",
        Some(&key),
        &json!({}),
    )
    .await;
    let token = made["auth_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("2x_"));
    let (status, _) = post_2x(&app, ("Authorization", &token), &seed_2x(13, "pre-call")).await;
    assert_eq!(status, 200);
    let (status, _) = post_2x(&app, auth, &seed_2x(14, "pre-call")).await;
    assert_eq!(status, 401, "the replaced token no longer works");
}

#[tokio::test]
async fn a_2x_contact_replying_stop_is_reported_to_the_opt_out_url() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let (status, conn) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/2x",
        Some(&key),
        &json!({
            "auth_header": "Authorization",
            "auth_token": "2x-secret-token-0123456789",
            "opt_out_url": rx.url,
            "opt_out_headers": {"X-Api-Key": "2x-side-key"}
        }),
    )
    .await;
    assert_eq!(status, 200, "{conn}");
    let endpoint = conn["opt_out_endpoint"].as_str().unwrap().to_owned();
    let auth = ("Authorization", "2x-secret-token-0123456789");
    let (status, _) = post_2x(&app, auth, &seed_2x(1234, "pre-call")).await;
    assert_eq!(status, 200);
    // Another contact, texted through the API, not through 2X.
    app.send(&key, json!({"to": "+14155550124", "body": "hello"}))
        .await;
    app.drive().await;
    let inject = |from: &str| {
        let app = &app;
        let key = key.clone();
        let from = from.to_owned();
        async move {
            let r = app
                .client
                .post(app.url("/v1/sim/inbound"))
                .bearer_auth(&key)
                .json(&json!({"from": from, "text": "STOP"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }
    };
    inject("+14155550123").await;
    inject("+14155550124").await;
    app.drive().await;
    let got: Vec<Value> = rx.received().iter().map(|r| r.json()).collect();
    assert_eq!(got.len(), 1, "only the 2X contact is reported: {got:?}");
    assert_eq!(got[0]["type"], "opt-out");
    assert_eq!(got[0]["record_phone_number"], "+14155550123");
    assert_eq!(got[0]["channel"], "sms");
    assert_eq!(got[0]["record"]["agent_key"], "ABC123");
    assert_eq!(got[0]["record"]["meta"]["lead_id"], "123");
    assert_eq!(rx.received()[0].header("x-api-key"), "2x-side-key");
    // The other contact's opt-out was skipped, and the log says so.
    let log: Value = app
        .client
        .get(app.url(&format!("/v1/webhooks/{endpoint}/attempts")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let skipped = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["response_body"]
                .as_str()
                .is_some_and(|b| b.starts_with("skipped"))
        })
        .count();
    assert_eq!(skipped, 1, "{log}");
    // A bad opt-out URL is refused before anything changes.
    let (status, err) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/2x",
        Some(&key),
        &json!({"auth_token": "another-token-00000000000", "opt_out_url": "ftp://x"}),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["error"]["field"], "opt_out_url");
    let mut text = seed_2x(77, "pre-call");
    text["record_phone_number"] = json!("+14155550125");
    let (status, r) = post_2x(&app, auth, &text).await;
    assert_eq!(status, 200, "the old token still works: {r}");
}

const AN_SECRET: &str = "automatenexus-signing-secret-01";

fn an_sign(body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(AN_SECRET.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn an_post(app: &TestApp, path: &str, body: &[u8], signature: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .header("x-automatenexus-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn automatenexus_events_are_verified_deduplicated_and_mapped_by_rules() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    // Not set up yet: rules cannot be added.
    let (status, _) = get(&app, "/v1/compat/automatenexus/rules", &key).await;
    assert_eq!(status, 404);
    let (status, r) = call(
        &app,
        reqwest::Method::PUT,
        "/v1/compat/automatenexus",
        Some(&key),
        &json!({"secret": AN_SECRET}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    assert!(r["secret"].is_null(), "a secret given is not echoed");
    let path = r["path"].as_str().unwrap().to_owned();
    for (name, body) in [
        (
            "deal_update",
            "Heads up: {{ title }} moved from {{ previous_stage }} to {{ new_stage }}.",
        ),
        (
            "appointment",
            "Hi {{ first_name }}, your appointment is booked.",
        ),
    ] {
        let (status, t) = call(
            &app,
            reqwest::Method::POST,
            "/v1/templates",
            Some(&key),
            &json!({"name": name, "body": body}),
        )
        .await;
        assert_eq!(status, 201, "{t}");
    }
    let rules = [
        json!({"event": "deal.stage_changed", "conditions": [{"path": "data.new_stage", "equals": "Negotiation"}], "template": "deal_update", "to": "+14155550199", "client_ref_path": "data.id"}),
        json!({"event": "appointment.booked", "conditions": [{"path": "data.phone", "exists": true}, {"path": "data.type", "in": ["demo", "consult"]}], "template": "appointment", "to_path": "data.phone"}),
    ];
    for r in &rules {
        let (status, added) = call(
            &app,
            reqwest::Method::POST,
            "/v1/compat/automatenexus/rules",
            Some(&key),
            r,
        )
        .await;
        assert_eq!(status, 201, "{added}");
    }
    // Bad rules.
    for (bad, code) in [
        (
            json!({"event": "deal.won", "template": "nope", "to": "+14155550199"}),
            "unknown_template",
        ),
        (
            json!({"event": "deal.won", "template": "deal_update"}),
            "invalid_recipient",
        ),
        (
            json!({"event": "deal.won", "template": "deal_update", "to": "+14155550199", "conditions": [{"path": "data.x", "greater": 1}]}),
            "invalid_conditions",
        ),
        (
            json!({"event": "", "template": "deal_update", "to": "+14155550199"}),
            "invalid_event",
        ),
        (
            json!({"event": "deal.won", "template": "deal_update", "to": "+14155550199", "extra": 1}),
            "unknown_field",
        ),
    ] {
        let (_, e) = call(
            &app,
            reqwest::Method::POST,
            "/v1/compat/automatenexus/rules",
            Some(&key),
            &bad,
        )
        .await;
        assert_eq!(e["error"]["code"], code, "{bad}");
    }

    // Seed 002's deal.stage_changed, with the envelope's id fields.
    let now = app.clock_now_ts().to_rfc3339();
    let deal = json!({
        "event": "deal.stage_changed",
        "timestamp": now,
        "webhook_id": "wh_abc123def456",
        "account_id": "acc_789xyz",
        "data": {
            "id": "deal_67890",
            "title": "Enterprise License - Acme Corp",
            "value": 50000,
            "currency": "USD",
            "previous_stage": "Proposal",
            "new_stage": "Negotiation",
            "pipeline": "Sales Pipeline",
            "owner": {"id": "user_111", "name": "Sales Rep"}
        }
    });
    let raw = serde_json::to_vec(&deal).unwrap();
    // A bad signature, and none.
    let (status, e) = an_post(&app, &path, &raw, &"0".repeat(64)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, _) = an_post(&app, &path, &raw, "").await;
    assert_eq!(status, 401);
    // Signed (with the optional prefix): the mapped template goes out.
    let (status, got) = an_post(&app, &path, &raw, &format!("sha256={}", an_sign(&raw))).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["matched"], true);
    let m = app
        .get_message(&key, got["message_id"].as_str().unwrap())
        .await;
    assert_eq!(m["to"], "+14155550199");
    assert_eq!(
        m["body"],
        "Heads up: Enterprise License - Acme Corp moved from Proposal to Negotiation."
    );
    assert_eq!(m["client_ref"], "deal_67890");
    assert_eq!(m["metadata"]["webhook_id"], "wh_abc123def456");
    // The same delivery again is a replay.
    let (status, e) = an_post(&app, &path, &raw, &an_sign(&raw)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (409, Some("replayed_event"))
    );
    // A stale one is refused, though signed.
    let mut stale = deal.clone();
    stale["timestamp"] = json!("2020-01-01T00:00:00Z");
    let raw = serde_json::to_vec(&stale).unwrap();
    let (status, e) = an_post(&app, &path, &raw, &an_sign(&raw)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("stale_event"))
    );
    // Another stage: no rule matches; acknowledged, nothing sent.
    let mut other = deal.clone();
    other["data"]["new_stage"] = json!("Closed Won");
    other["webhook_id"] = json!("wh_other");
    let raw = serde_json::to_vec(&other).unwrap();
    let (status, got) = an_post(&app, &path, &raw, &an_sign(&raw)).await;
    assert_eq!((status, &got["matched"]), (200, &json!(false)));
    // appointment.booked: recipient from the event.
    let appt = json!({
        "event": "appointment.booked", "timestamp": now, "webhook_id": "wh_appt", "account_id": "acc_789xyz",
        "data": {"id": "apt_1", "type": "demo", "first_name": "Jane", "phone": "+14155550123"}
    });
    let raw = serde_json::to_vec(&appt).unwrap();
    let (status, got) = an_post(&app, &path, &raw, &an_sign(&raw)).await;
    assert_eq!(status, 200, "{got}");
    let m = app
        .get_message(&key, got["message_id"].as_str().unwrap())
        .await;
    assert_eq!(
        (m["to"].as_str(), m["body"].as_str()),
        (
            Some("+14155550123"),
            Some("Hi Jane, your appointment is booked.")
        )
    );
    // Malformed, signed; an unknown receiver.
    let raw = b"{not json".to_vec();
    let (status, e) = an_post(&app, &path, &raw, &an_sign(&raw)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let raw = serde_json::to_vec(&json!({"event": "x"})).unwrap();
    let (status, e) = an_post(&app, &path, &raw, &an_sign(&raw)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (400, Some("malformed_event"))
    );
    let (status, _) = an_post(&app, "/compat/automatenexus/an_nope", &raw, &an_sign(&raw)).await;
    assert_eq!(status, 404);
    let big = vec![b' '; 70 * 1024];
    let (status, e) = an_post(&app, &path, &big, &an_sign(&big)).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // Rules are listed and removed.
    let (_, list) = get(&app, "/v1/compat/automatenexus/rules", &key).await;
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/compat/automatenexus/rules/{id}"),
        Some(&key),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/compat/automatenexus/rules/{id}"),
        Some(&key),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 404);
}

async fn hook_post(
    app: &TestApp,
    path: &str,
    ct: &str,
    body: &[u8],
    header: (&str, &str),
) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .header("content-type", ct)
        .header(header.0, header.1)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_generic_hook_maps_a_nested_hubspot_style_body_to_a_message() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let (status, hook) = call(
        &app,
        reqwest::Method::POST,
        "/v1/hooks",
        Some(&key),
        &json!({
            "name": "HubSpot workflow",
            "auth": {"type": "token", "header": "X-Hook-Token"},
            "mapping": {
                "to": "/properties/phone/value",
                "body": "Hi {{ properties.firstname.value }}, thanks for your interest in {{ properties.product.value }}!",
                "client_ref": "/objectId",
                "idempotency_key": "hubspot-{{ eventId }}",
                "metadata": {"portal": "/portalId", "source": "hubspot"}
            }
        }),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let path = hook["path"].as_str().unwrap().to_owned();
    let token = hook["secret"].as_str().unwrap().to_owned();
    // HubSpot's workflow webhook: properties nested as {"value": …}.
    let hubspot = json!({
        "objectId": 1234567,
        "portalId": 62515,
        "eventId": 98765,
        "subscriptionType": "contact.propertyChange",
        "properties": {
            "firstname": {"value": "Ana", "timestamp": 1700000000000u64},
            "phone": {"value": "+14155550123"},
            "product": {"value": "Switchboard Pro"}
        }
    });
    let raw = serde_json::to_vec(&hubspot).unwrap();
    let (status, got) = hook_post(
        &app,
        &path,
        "application/json",
        &raw,
        ("X-Hook-Token", &token),
    )
    .await;
    assert_eq!(status, 202, "{got}");
    let m = app.get_message(&key, got["id"].as_str().unwrap()).await;
    assert_eq!(m["to"], "+14155550123");
    assert_eq!(
        m["body"],
        "Hi Ana, thanks for your interest in Switchboard Pro!"
    );
    assert_eq!(m["client_ref"], "1234567");
    assert_eq!(m["metadata"], json!({"portal": 62515, "source": "hubspot"}));
    // HubSpot retrying the same event: the same message.
    let (_, again) = hook_post(
        &app,
        &path,
        "application/json",
        &raw,
        ("X-Hook-Token", &token),
    )
    .await;
    assert_eq!(again["id"], got["id"]);
    // Wrong or missing token.
    let (status, _) = hook_post(
        &app,
        &path,
        "application/json",
        &raw,
        ("X-Hook-Token", "wrong-token-000000000000"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = hook_post(&app, &path, "application/json", &raw, ("X-Other", &token)).await;
    assert_eq!(status, 401);
    // A body without the phone: the submit path's own error.
    let mut no_phone = hubspot.clone();
    no_phone["properties"]
        .as_object_mut()
        .unwrap()
        .remove("phone");
    no_phone["eventId"] = json!(1);
    let raw2 = serde_json::to_vec(&no_phone).unwrap();
    let (status, e) = hook_post(
        &app,
        &path,
        "application/json",
        &raw2,
        ("X-Hook-Token", &token),
    )
    .await;
    assert_eq!(
        (status, e["error"]["field"].as_str()),
        (422, Some("to")),
        "{e}"
    );
    let (status, _) = hook_post(
        &app,
        &path,
        "application/json",
        b"{nope",
        ("X-Hook-Token", &token),
    )
    .await;
    assert_eq!(status, 400);
    let big = vec![b' '; 70 * 1024];
    let (status, e) = hook_post(
        &app,
        &path,
        "application/json",
        &big,
        ("X-Hook-Token", &token),
    )
    .await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    // Listed without its token.
    let (_, list) = get(&app, "/v1/hooks", &key).await;
    assert_eq!(list["data"][0]["path"], path.as_str());
    assert!(!list.to_string().contains(&token));
    // Removed: gone.
    let id = hook["id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/hooks/{id}"),
        Some(&key),
        &Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = hook_post(
        &app,
        &path,
        "application/json",
        &raw,
        ("X-Hook-Token", &token),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_generic_hook_checks_an_hmac_over_a_form_body() {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let secret = "zapier-shared-secret-0123456789";
    let (status, hook) = call(
        &app,
        reqwest::Method::POST,
        "/v1/hooks",
        Some(&key),
        &json!({
            "auth": {"type": "hmac", "header": "X-Signature", "algorithm": "sha256", "encoding": "base64", "prefix": "sha256=", "secret": secret},
            "mapping": {"to": "/phone", "body": "Hello {{ name }}", "channel": "sms"}
        }),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let path = hook["path"].as_str().unwrap().to_owned();
    let form = b"phone=%2B14155550123&name=Bob".to_vec();
    let sign = |body: &[u8]| {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        format!(
            "sha256={}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    let (status, got) = hook_post(
        &app,
        &path,
        "application/x-www-form-urlencoded",
        &form,
        ("X-Signature", &sign(&form)),
    )
    .await;
    assert_eq!(status, 202, "{got}");
    let m = app.get_message(&key, got["id"].as_str().unwrap()).await;
    assert_eq!(
        (m["to"].as_str(), m["body"].as_str()),
        (Some("+14155550123"), Some("Hello Bob"))
    );
    let tampered = b"phone=%2B14155550124&name=Bob".to_vec();
    let (status, _) = hook_post(
        &app,
        &path,
        "application/x-www-form-urlencoded",
        &tampered,
        ("X-Signature", &sign(&form)),
    )
    .await;
    assert_eq!(status, 401);
    // Bad hooks.
    for (body, field) in [
        (
            json!({"auth": {"type": "token", "header": "X-T"}, "mapping": {"body": "x"}}),
            "mapping.to",
        ),
        (
            json!({"auth": {"type": "token", "header": "X-T"}, "mapping": {"to": "/p"}}),
            "mapping.body",
        ),
        (
            json!({"auth": {"type": "token", "header": "X-T"}, "mapping": {"to": "/p", "body": "x", "colour": "red"}}),
            "mapping.colour",
        ),
        (
            json!({"auth": {"type": "token", "header": "X-T"}, "mapping": {"to": "/p", "body": "{{ unclosed"}}),
            "mapping.body",
        ),
        (
            json!({"auth": {"type": "magic", "header": "X-T"}, "mapping": {"to": "/p", "body": "x"}}),
            "auth.type",
        ),
        (
            json!({"auth": {"type": "hmac", "header": "X-T", "algorithm": "md5"}, "mapping": {"to": "/p", "body": "x"}}),
            "auth.algorithm",
        ),
        (json!({"mapping": {"to": "/p", "body": "x"}}), "auth"),
    ] {
        let (status, e) = call(&app, reqwest::Method::POST, "/v1/hooks", Some(&key), &body).await;
        assert_eq!(
            (status, e["error"]["field"].as_str()),
            (422, Some(field)),
            "{body} → {e}"
        );
    }
}
