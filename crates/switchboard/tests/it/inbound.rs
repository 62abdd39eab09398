//! Inbound replies, keywords and their confirmations.

use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app};
use crate::receiver::Receiver;

async fn inject(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url("/v1/sim/inbound"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn consent_state(app: &TestApp, key: &str) -> String {
    let c: Value = app
        .client
        .get(app.url("/v1/contacts/%2B14155550123"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    c["consent"][0]["state"]
        .as_str()
        .unwrap_or("none")
        .to_owned()
}

#[tokio::test]
async fn stop_keywords_opt_out_and_start_opts_back_in_each_with_its_webhook_and_reply() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let rx = Receiver::start(vec![]).await;
    let r = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": rx.url, "event_types": ["message.received", "contact.opted_out", "contact.opted_in"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let outbound = app
        .send(
            &key,
            json!({"to": "+14155550123", "body": "Deals this week!"}),
        )
        .await;
    app.drive().await;
    let mut last_outbound = outbound;
    for stop in ["stop", " Stop. ", "UNSUBSCRIBE"] {
        let before = rx.received().len();
        let (status, v) = inject(&app, &key, json!({"from": "+14155550123", "text": stop})).await;
        assert_eq!(status, 201, "{stop:?}");
        assert_eq!(v["inbound"]["keyword"], "stop");
        assert_eq!(
            v["inbound"]["conversation_message_id"],
            last_outbound.as_str(),
            "linked to the last outbound message"
        );
        let reply = v["reply_message_id"]
            .as_str()
            .expect("a confirmation is queued")
            .to_owned();
        app.drive().await;
        assert_eq!(consent_state(&app, &key).await, "opted_out", "{stop:?}");
        let m = app.get_message(&key, &reply).await;
        assert_eq!(
            m["status"], "delivered",
            "the confirmation is sent although the number is now opted out"
        );
        assert!(m["body"].as_str().unwrap().contains("unsubscribed"));
        let new: Vec<String> = rx.event_types()[before..].to_vec();
        assert_eq!(new, ["message.received", "contact.opted_out"], "{stop:?}");
        assert_eq!(
            app.post_message(&key, &json!({"to": "+14155550123", "body": "more deals"}))
                .await
                .status(),
            422
        );

        let (_, v) = inject(&app, &key, json!({"from": "+14155550123", "text": "START"})).await;
        assert_eq!(v["inbound"]["keyword"], "start");
        assert_eq!(
            v["inbound"]["conversation_message_id"],
            reply.as_str(),
            "the confirmation is now the last outbound message"
        );
        let reply = v["reply_message_id"]
            .as_str()
            .expect("a confirmation is queued")
            .to_owned();
        last_outbound = reply.clone();
        app.drive().await;
        assert_eq!(consent_state(&app, &key).await, "opted_in");
        assert!(
            app.get_message(&key, &reply).await["body"]
                .as_str()
                .unwrap()
                .contains("resubscribed")
        );
        assert_eq!(rx.event_types().last().unwrap(), "contact.opted_in");
    }
    let c: Value = app
        .client
        .get(app.url("/v1/contacts/%2B14155550123"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sources: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["keyword"; 6]);
}

#[tokio::test]
async fn help_is_answered_ordinary_replies_are_not_and_repeats_are_deduplicated() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let (_, v) = inject(&app, &key, json!({"from": "+14155550123", "text": "help"})).await;
    assert!(v["reply_message_id"].is_string());
    let (_, v) = inject(
        &app,
        &key,
        json!({"from": "+14155550123", "text": "Thanks, see you Tuesday"}),
    )
    .await;
    assert!(v["reply_message_id"].is_null());
    assert!(v["inbound"]["keyword"].is_null());
    let (status, first) = inject(
        &app,
        &key,
        json!({"from": "+14155550124", "text": "hi", "provider_message_id": "SM1"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, again) = inject(
        &app,
        &key,
        json!({"from": "+14155550124", "text": "hi", "provider_message_id": "SM1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            again["duplicate"].as_bool(),
            again["inbound"]["id"].as_str()
        ),
        (Some(true), first["inbound"]["id"].as_str())
    );
    let list: Value = app
        .client
        .get(app.url("/v1/inbound"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    let one: Value = app
        .client
        .get(app.url("/v1/inbound?phone=%2B14155550124"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    let page: Value = app
        .client
        .get(app.url("/v1/inbound?limit=2"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let next: Value = app
        .client
        .get(app.url(&format!(
            "/v1/inbound?limit=2&cursor={}",
            page["next_cursor"].as_str().unwrap()
        )))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(next["data"].as_array().unwrap().len(), 1);
    for (body, status, code) in [
        (json!({"text": "x"}), 422, "missing_field"),
        (json!({"from": "123", "text": "x"}), 422, "invalid_phone"),
        (
            json!({"from": "+14155550123", "text": 5}),
            400,
            "invalid_type",
        ),
        (
            json!({"from": "+14155550123", "text": "x", "channel": "fax"}),
            422,
            "invalid_channel",
        ),
        (
            json!({"from": "+14155550123", "text": "x", "bogus": 1}),
            400,
            "unknown_field",
        ),
    ] {
        let (s, v) = inject(&app, &key, body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn keyword_replies_are_configurable_per_workspace() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let r = app
        .client
        .patch(app.url("/v1/settings"))
        .bearer_auth(&key)
        .json(&json!({"keyword_replies": {"stop": "Acme: you're out. Text START to return.", "start": null}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = r.json().await.unwrap();
    assert!(s["keyword_replies"]["start"].is_null());
    assert!(
        s["keyword_replies"]["help"]
            .as_str()
            .unwrap()
            .contains("STOP"),
        "defaults stay for the rest"
    );
    let (_, v) = inject(&app, &key, json!({"from": "+14155550123", "text": "STOP"})).await;
    let reply = v["reply_message_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.get_message(&key, &reply).await["body"],
        "Acme: you're out. Text START to return."
    );
    let (_, v) = inject(&app, &key, json!({"from": "+14155550123", "text": "start"})).await;
    assert!(
        v["reply_message_id"].is_null(),
        "no reply configured for START"
    );
    for (body, status) in [
        (json!({"keyword_replies": {"stop": ""}}), 422),
        (json!({"keyword_replies": {"later": "x"}}), 422),
        (json!({"quiet": 1}), 400),
        (json!({"keyword_replies": {"stop": 5}}), 400),
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
}

/// PostgreSQL's text cannot hold a NUL character (SQLite's can), so none
/// reaches the store on either engine: a reply's NUL becomes U+FFFD, and
/// is never a reason to lose it; a submission's, a template's, a consent
/// change's or a keyword reply's is refused with its field. Run on PostgreSQL when the test server is set, where
/// each of these was a 500.
#[tokio::test]
async fn a_nul_character_never_reaches_the_store() {
    let schema = match crate::harness::pg_url() {
        Some(base) => Some(crate::harness::new_schema(&base).await),
        None => None,
    };
    let url = schema.as_ref().map(|s| s.url());
    let app = crate::harness::spawn_app_with(|c| {
        if let Some(url) = url {
            c.database_url = Some(switchboard::config::Secret(url));
        }
    })
    .await;
    let (_, key) = app.workspace("acme").await;
    let (status, v) = inject(
        &app,
        &key,
        json!({"from": "+14155550123", "text": "hi\u{0}there", "provider_message_id": "p\u{0}1"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["inbound"]["text"], "hi\u{FFFD}there");
    let (status, v) = crate::harness::get(&app, "/v1/inbound", &key).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"][0]["text"], "hi\u{FFFD}there", "{v}");

    let refused = [
        (
            "/v1/messages",
            json!({"to": "+14155550123", "body": "x", "client_ref": "a\u{0}"}),
            "invalid_client_ref",
        ),
        (
            "/v1/messages",
            json!({"to": "+14155550123", "body": "a\u{0}"}),
            "invalid_body",
        ),
        (
            "/v1/templates",
            json!({"name": "t", "body": "a\u{0} {{x}}"}),
            "invalid_body",
        ),
    ];
    let more = [
        (
            reqwest::Method::POST,
            "/v1/contacts/%2B14155550123/opt-in",
            json!({"detail": "a\u{0}"}),
            "invalid_value",
        ),
        (
            reqwest::Method::PATCH,
            "/v1/settings",
            json!({"keyword_replies": {"help": "a\u{0}"}}),
            "invalid_value",
        ),
    ];
    let refused = refused
        .into_iter()
        .map(|(path, body, code)| (reqwest::Method::POST, path, body, code))
        .chain(more);
    for (method, path, body, code) in refused {
        let (status, v) = crate::harness::call(&app, method, path, Some(&key), &body).await;
        assert_eq!((status, &v["error"]["code"]), (422, &json!(code)), "{body}");
    }
    let (status, _) = crate::harness::call(
        &app,
        reqwest::Method::POST,
        "/v1/templates",
        Some(&key),
        &json!({"name": "t", "body": "hi {{x}}"}),
    )
    .await;
    assert_eq!(status, 201);
    let body =
        json!({"to": "+14155550123", "template": {"name": "t", "variables": {"x": "a\u{0}"}}});
    let (status, v) = crate::harness::call(
        &app,
        reqwest::Method::POST,
        "/v1/messages",
        Some(&key),
        &body,
    )
    .await;
    assert_eq!(
        (status, &v["error"]["field"]),
        (422, &json!("template")),
        "{v}"
    );
    // Nothing refused was stored; the server still answers.
    let (status, v) = crate::harness::get(&app, "/v1/messages", &key).await;
    assert_eq!(
        (status, v["data"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
    drop(schema);
}
