//! The HTTP API: submission, validation, idempotency, tenancy, listing,
//! cancel, limits and the operations endpoints.

use serde_json::{Value, json};

use crate::harness::{ADMIN_TOKEN, spawn_app, spawn_app_with, timeline};

#[tokio::test]
async fn a_message_is_accepted_with_its_encoding_and_segments() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let resp = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "body": "Hello", "client_ref": "lead-1"}),
        )
        .await;
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v: Value = resp.json().await.unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    // Exactly the six fields, with `client_ref` null when none was given.
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "client_ref",
            "created_at",
            "encoding",
            "id",
            "segments",
            "status"
        ]
    );
    let quoted = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "body": "x", "client_ref": "q\"uote\\d\n"}),
        )
        .await;
    let quoted: Value = quoted.json().await.unwrap();
    assert_eq!(quoted["client_ref"], "q\"uote\\d\n");
    let bare = app
        .post_message(&key, &json!({"to": "+14155550123", "body": "x"}))
        .await;
    assert_eq!(
        bare.json::<Value>().await.unwrap()["client_ref"],
        Value::Null
    );
    assert_eq!(
        (
            v["status"].as_str(),
            v["client_ref"].as_str(),
            v["segments"].as_u64(),
            v["encoding"].as_str()
        ),
        (Some("queued"), Some("lead-1"), Some(1), Some("GSM-7"))
    );
    let v: Value = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "body": "Привет ".repeat(12)}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (v["segments"].as_u64(), v["encoding"].as_str()),
        (Some(2), Some("UCS-2"))
    );
}

#[tokio::test]
async fn an_idempotent_replay_returns_the_same_answer_and_creates_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let body = json!({"to": "+14155550123", "body": "once", "metadata": {"a": 1, "b": 2}});
    let first = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(&key)
        .header("Idempotency-Key", "order-7")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    // Same fields in another order, and the key in the body instead of the header.
    let again = json!({"metadata": {"b": 2, "a": 1}, "body": "once", "to": "+14155550123", "idempotency_key": "order-7"});
    let second = app.post_message(&key, &again).await;
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    // Concurrent replays also resolve to the one message.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, key, body) = (
            app.client.clone(),
            app.url("/v1/messages"),
            key.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(key)
                .header("Idempotency-Key", "order-8")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one message for one key");
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
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        2,
        "order-7 and order-8, nothing else"
    );
}

#[tokio::test]
async fn reusing_an_idempotency_key_with_a_different_body_is_a_conflict() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let send = |body: Value| {
        app.client
            .post(app.url("/v1/messages"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "k1")
            .json(&body)
            .send()
    };
    assert_eq!(
        send(json!({"to": "+14155550123", "body": "one"}))
            .await
            .unwrap()
            .status(),
        202
    );
    let resp = send(json!({"to": "+14155550123", "body": "two"}))
        .await
        .unwrap();
    assert_eq!(resp.status(), 409);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "idempotency_conflict");
}

#[tokio::test]
async fn idempotency_keys_belong_to_one_workspace() {
    let app = spawn_app().await;
    let (_, a) = app.workspace("a").await;
    let (_, b) = app.workspace("b").await;
    let body = json!({"to": "+14155550123", "body": "x", "idempotency_key": "same"});
    let ida = app.send(&a, body.clone()).await;
    let idb = app.send(&b, body).await;
    assert_ne!(ida, idb);
}

async fn raw(
    app: &crate::harness::TestApp,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url("/v1/messages"))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn malformed_hostile_and_oversized_input_gets_its_specific_code_and_stores_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let json_ct = "application/json";
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let big = json!({"to": "+14155550123", "body": "x".repeat(70 * 1024)}).to_string();
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        (
            json_ct,
            r#"{"to": "+14155550123", "body": "#.into(),
            400,
            "malformed_json",
            None,
        ),
        (json_ct, "".into(), 400, "malformed_json", None),
        (json_ct, deep, 400, "malformed_json", None),
        (json_ct, "[1,2,3]".into(), 400, "invalid_type", None),
        (
            json_ct,
            r#""just a string""#.into(),
            400,
            "invalid_type",
            None,
        ),
        (
            json_ct,
            r#"{"to": 14155550123, "body": "x"}"#.into(),
            400,
            "invalid_type",
            Some("to"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123", "body": {"text": "x"}}"#.into(),
            400,
            "invalid_type",
            Some("body"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123", "body": "x", "priority": 1}"#.into(),
            400,
            "invalid_type",
            Some("priority"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123", "body": "x", "bodyy": "y"}"#.into(),
            400,
            "unknown_field",
            Some("bodyy"),
        ),
        (
            json_ct,
            r#"{"to": "4155550123", "body": "x"}"#.into(),
            422,
            "invalid_phone",
            Some("to"),
        ),
        (
            json_ct,
            r#"{"to": "+1 415 555 0123", "body": "x"}"#.into(),
            422,
            "invalid_phone",
            Some("to"),
        ),
        (
            json_ct,
            r#"{"to": "+11234567890", "body": "x"}"#.into(),
            422,
            "invalid_phone",
            Some("to"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123", "body": "x", "channel": "fax"}"#.into(),
            422,
            "invalid_channel",
            Some("channel"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123", "body": ""}"#.into(),
            422,
            "empty_body",
            Some("body"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123"}"#.into(),
            422,
            "missing_body",
            Some("body"),
        ),
        (
            json_ct,
            r#"{"body": "x"}"#.into(),
            422,
            "missing_field",
            Some("to"),
        ),
        (
            json_ct,
            format!(
                r#"{{"to": "+14155550123", "body": "{}"}}"#,
                "a".repeat(1601)
            ),
            422,
            "body_too_long",
            Some("body"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123", "body": "x", "from": "Nobody"}"#.into(),
            422,
            "unknown_sender",
            Some("from"),
        ),
        (
            json_ct,
            r#"{"to": "+14155550123", "template": {"name": "welcome"}}"#.into(),
            422,
            "template_not_found",
            Some("template.name"),
        ),
        (json_ct, big, 413, "payload_too_large", None),
        (
            "text/plain",
            r#"{"to": "+14155550123", "body": "x"}"#.into(),
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "application/x-www-form-urlencoded",
            "to=%2B14155550123&body=x".into(),
            415,
            "unsupported_media_type",
            None,
        ),
    ];
    for (ct, body, status, code, field) in cases {
        let shown: String = body.chars().take(60).collect();
        let (got_status, v) = raw(&app, &key, ct, body.into_bytes()).await;
        assert_eq!(got_status, status, "{shown}: {v}");
        assert_eq!(v["error"]["code"], code, "{shown}: {v}");
        assert_eq!(v["error"]["field"].as_str(), field, "{shown}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // Invalid UTF-8 is malformed JSON, not a crash.
    let (status, v) = raw(&app, &key, json_ct, b"{\"to\": \"\xff\xfe\"}".to_vec()).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
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
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing refused was stored"
    );
}

#[tokio::test]
async fn requests_without_valid_credentials_are_refused() {
    let app = spawn_app().await;
    let (ws, key) = app.workspace("acme").await;
    let body = json!({"to": "+14155550123", "body": "x"});
    let no_auth = app
        .client
        .post(app.url("/v1/messages"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), 401);
    for bad in ["sk_not_a_real_key", ADMIN_TOKEN, "Basic"] {
        assert_eq!(app.post_message(bad, &body).await.status(), 401, "{bad}");
    }
    // A workspace key is not an admin token.
    let r = app
        .client
        .post(app.url(&format!("/v1/workspaces/{ws}/keys")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .get(app.url("/v1/workspaces"))
        .bearer_auth("wrong-admin-token-000000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = app
        .client
        .post(app.url("/v1/workspaces/ws_nope/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .post(app.url("/v1/workspaces"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn a_key_of_workspace_a_cannot_see_or_touch_workspace_b_messages() {
    let app = spawn_app().await;
    let (_, a) = app.workspace("a").await;
    let (_, b) = app.workspace("b").await;
    let id = app
        .send(&b, json!({"to": "+14155550123", "body": "b's secret"}))
        .await;
    let r = app
        .client
        .get(app.url(&format!("/v1/messages/{id}")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found");
    let r = app
        .client
        .post(app.url(&format!("/v1/messages/{id}/cancel")))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let list: Value = app
        .client
        .get(app.url("/v1/messages"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["data"].as_array().unwrap().is_empty());
    // B still sees it, uncanceled.
    assert_eq!(app.get_message(&b, &id).await["status"], "queued");
    let r = app
        .client
        .get(app.url("/v1/messages/msg_../../etc"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn listing_filters_and_pages_with_a_cursor() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let to = if i % 2 == 0 {
            "+14155550123"
        } else {
            "+14155550124"
        };
        ids.push(
            app.send(
                &key,
                json!({"to": to, "body": format!("m{i}"), "client_ref": format!("ref-{i}")}),
            )
            .await,
        );
        app.clock.advance(std::time::Duration::from_millis(5));
    }
    let get = |q: &str| {
        let url = app.url(&format!("/v1/messages?{q}"));
        let c = app.client.clone();
        let key = key.clone();
        async move {
            c.get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let ids_of = |v: &Value| {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let p1 = get("limit=2").await;
    assert_eq!(
        ids_of(&p1),
        vec![ids[4].clone(), ids[3].clone()],
        "newest first"
    );
    let p2 = get(&format!(
        "limit=2&cursor={}",
        p1["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(ids_of(&p2), vec![ids[2].clone(), ids[1].clone()]);
    let p3 = get(&format!(
        "limit=2&cursor={}",
        p2["next_cursor"].as_str().unwrap()
    ))
    .await;
    assert_eq!(ids_of(&p3), vec![ids[0].clone()]);
    assert!(p3["next_cursor"].is_null());
    assert_eq!(ids_of(&get("client_ref=ref-3").await), vec![ids[3].clone()]);
    assert_eq!(
        ids_of(&get("to=%2B14155550124").await),
        vec![ids[3].clone(), ids[1].clone()]
    );
    assert_eq!(ids_of(&get("status=queued&limit=100").await).len(), 5);
    assert!(ids_of(&get("status=delivered").await).is_empty());
    for bad in [
        "status=lost",
        "limit=0",
        "limit=101",
        "cursor=nope",
        "created_after=yesterday",
    ] {
        let r = app
            .client
            .get(app.url(&format!("/v1/messages?{bad}")))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{bad}");
    }
}

#[tokio::test]
async fn a_queued_message_can_be_canceled_and_a_delivered_one_cannot() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let id = app
        .send(&key, json!({"to": "+14155550123", "body": "never mind"}))
        .await;
    let r = app
        .client
        .post(app.url(&format!("/v1/messages/{id}/cancel")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["status"], "canceled");
    assert_eq!(timeline(&m), ["message.queued", "message.canceled"]);
    app.drive().await;
    assert_eq!(
        app.get_message(&key, &id).await["status"],
        "canceled",
        "a canceled message is never sent"
    );

    let id = app
        .send(&key, json!({"to": "+14155550123", "body": "go"}))
        .await;
    app.drive().await;
    let r = app
        .client
        .post(app.url(&format!("/v1/messages/{id}/cancel")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_cancelable");
}

#[tokio::test]
async fn a_scheduled_message_waits_for_send_at() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let at = switchboard_core::Timestamp::from_millis(app.clock_now_ms() + 3_600_000).to_rfc3339();
    let r: Value = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "body": "later", "send_at": at}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "scheduled");
    let id = r["id"].as_str().unwrap();
    app.worker.run_until_idle().await.unwrap();
    assert_eq!(
        app.get_message(&key, id).await["status"],
        "scheduled",
        "not before its time"
    );
    let moved = app.drive().await;
    assert!(moved >= std::time::Duration::from_secs(3600));
    let m = app.get_message(&key, id).await;
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
async fn the_rate_limit_refuses_with_retry_after_and_reports_headers() {
    let app = spawn_app_with(|c| {
        c.rate_limit.burst = 3;
        c.rate_limit.per_second = 0.5;
    })
    .await;
    let (_, key) = app.workspace("acme").await;
    let body = json!({"to": "+14155550123", "body": "x"});
    for remaining in ["2", "1", "0"] {
        let r = app.post_message(&key, &body).await;
        assert_eq!(r.status(), 202);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        assert_eq!(r.headers()["x-ratelimit-remaining"], remaining);
        assert!(r.headers().contains_key("x-ratelimit-reset"));
    }
    let r = app.post_message(&key, &body).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limited");
    // Another key of another workspace has its own bucket.
    let (_, other) = app.workspace("other").await;
    assert_eq!(app.post_message(&other, &body).await.status(), 202);
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    app.send(&key, json!({"to": "+14155550123", "body": "x"}))
        .await;
    app.drive().await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "switchboard_messages_accepted_total 1",
        "switchboard_messages{status=\"delivered\"} 1",
        "switchboard_queue_depth 0",
        // A small database: every status counted at this scrape.
        "switchboard_messages_counted_age_seconds 0.000",
        "switchboard_send_attempts_total{outcome=\"accepted\"} 1",
        "switchboard_dispatch_latency_seconds_count 1",
        "switchboard_group_commits_total",
        "switchboard_group_commit_busy_seconds_total{work=\"accepts\"}",
        "switchboard_group_commit_busy_seconds_total{work=\"jobs\"}",
        "switchboard_group_commit_busy_seconds_total{work=\"chore\"}",
        "switchboard_accept_wait_seconds_count{stage=\"queued\"} 1",
        "switchboard_accept_wait_seconds_count{stage=\"resumed\"} 1",
        "switchboard_accept_wait_seconds_sum{stage=\"durable\"}",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let value = |series: &str| -> f64 {
        crate::crash::series_value(&metrics, series)
            .unwrap_or_else(|| panic!("missing {series} in\n{metrics}"))
    };
    // The writer's WAL writes through its VFS (counted for the whole test
    // process, whose other apps write too): SQLite asks for two per frame,
    // the VFS makes about one per commit.
    let wal = |kind: &str| {
        value(&format!(
            "switchboard_sqlite_wal_writes_total{{kind=\"{kind}\"}}"
        ))
    };
    let (asked, made) = (wal("asked"), wal("made"));
    assert!(
        made >= 1.0 && asked > made,
        "WAL writes asked {asked}, made {made}"
    );
    // The syncs that made this app's commits durable: at least the
    // accept's, each covering one commit or more, and never more commits
    // than the writer made.
    let syncs = value("switchboard_group_commit_sync_seconds_count");
    let synced = value("switchboard_group_commit_synced_total");
    assert!(syncs >= 1.0, "{metrics}");
    assert!(value("switchboard_group_commit_sync_seconds_sum") > 0.0);
    assert!(
        synced >= syncs && synced <= value("switchboard_group_commits_total"),
        "{metrics}"
    );
    let r = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .delete(app.url("/v1/messages"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = [
        ("/v1/messages", "post"),
        ("/v1/messages", "get"),
        ("/v1/messages/{id}", "get"),
        ("/v1/messages/{id}/cancel", "post"),
        ("/v1/messages/preview", "post"),
        ("/v1/stats", "get"),
        ("/v1/conversations", "get"),
        ("/v1/workspaces", "post"),
        ("/v1/workspaces", "get"),
        ("/v1/workspaces/{id}/keys", "post"),
        ("/v1/workspaces/{id}/keys", "get"),
        ("/v1/workspaces/{id}/keys/{key_id}", "delete"),
        ("/v1/workspaces/{id}/senders", "post"),
        ("/v1/workspaces/{id}/senders", "get"),
        ("/v1/workspaces/{id}/senders/{sender_id}", "delete"),
        ("/v1/providers", "post"),
        ("/v1/providers", "get"),
        ("/v1/providers/{id}", "get"),
        ("/v1/providers/{id}", "patch"),
        ("/v1/providers/{id}", "delete"),
        ("/v1/contacts", "get"),
        ("/v1/contacts/import", "post"),
        ("/v1/contacts/{phone}", "get"),
        ("/v1/contacts/{phone}/opt-out", "post"),
        ("/v1/contacts/{phone}/opt-in", "post"),
        ("/v1/inbound", "get"),
        ("/v1/sim/inbound", "post"),
        ("/v1/settings", "get"),
        ("/v1/settings", "patch"),
        ("/v1/templates", "post"),
        ("/v1/templates", "get"),
        ("/v1/templates/{id}", "get"),
        ("/v1/templates/{id}", "patch"),
        ("/v1/templates/{id}", "delete"),
        ("/v1/webhooks", "post"),
        ("/v1/webhooks", "get"),
        ("/v1/webhooks/{id}", "get"),
        ("/v1/webhooks/{id}", "patch"),
        ("/v1/webhooks/{id}", "delete"),
        ("/v1/webhooks/{id}/rotate-secret", "post"),
        ("/v1/webhooks/{id}/attempts", "get"),
        ("/v1/webhooks/{id}/test", "post"),
        ("/v1/webhooks/{id}/redeliver", "post"),
        ("/callbacks/{provider_id}", "post"),
        ("/callbacks/{provider_id}", "get"),
        ("/v1/compat/mycrmsim", "put"),
        ("/compat/mycrmsim/webhook", "post"),
        ("/v1/compat/2x", "put"),
        ("/compat/2x/send-text/", "post"),
        ("/v1/compat/automatenexus", "put"),
        ("/v1/compat/automatenexus/rules", "post"),
        ("/v1/compat/automatenexus/rules", "get"),
        ("/v1/compat/automatenexus/rules/{id}", "delete"),
        ("/compat/automatenexus/{integration_id}", "post"),
        ("/v1/hooks", "post"),
        ("/v1/hooks", "get"),
        ("/v1/hooks/{id}", "delete"),
        ("/hooks/{hook_id}", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let documented: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(
        documented,
        routes.len(),
        "the document has exactly the served routes: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (path, method) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
        // And the server has the route: anything but the router's 404/405.
        let url = app.url(
            &path
                .replace("{id}", "ws_x")
                .replace("{phone}", "%2B14155550123"),
        );
        let r = app
            .client
            .request(method.to_uppercase().parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(v["error"]["code"], "route_not_found", "{method} {path}");
        assert_ne!(v["error"]["code"], "method_not_allowed", "{method} {path}");
    }
    assert!(doc["components"]["schemas"]["SubmitMessageRequest"].is_object());
}

#[tokio::test]
async fn the_admin_endpoints_refuse_bad_input_with_codes() {
    let app = spawn_app().await;
    let post = |body: &'static str, ct: &'static str| {
        app.client
            .post(app.url("/v1/workspaces"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases = [
        ("{\"name\": ", "application/json", 400, "malformed_json"),
        ("{\"name\": 7}", "application/json", 400, "invalid_type"),
        ("{}", "application/json", 422, "missing_field"),
        (
            "{\"name\": \"   \"}",
            "application/json",
            422,
            "invalid_name",
        ),
        (
            "{\"name\": \"a\\u0000b\"}",
            "application/json",
            422,
            "invalid_name",
        ),
        (
            "name=acme",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, ct, status, code) in cases {
        let r = post(body, ct).await.unwrap();
        assert_eq!(r.status(), status, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], code, "{body}");
    }
    let long = json!({"name": "x".repeat(201)});
    let r = app
        .client
        .post(app.url("/v1/workspaces"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let list: Value = app
        .client
        .get(app.url("/v1/workspaces"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        list["data"].as_array().unwrap().is_empty(),
        "nothing refused was created"
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_at_once_and_listed_without_its_secret() {
    let app = spawn_app().await;
    let (ws, key) = app.workspace("acme").await;
    let body = json!({"to": "+14155550100", "body": "hi"});
    // The key authenticates (and is now cached).
    assert_eq!(app.post_message(&key, &body).await.status(), 202);
    let list: Value = app
        .client
        .get(app.url(&format!("/v1/workspaces/{ws}/keys")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = list["data"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0]["revoked_at"].is_null());
    assert!(
        !list.to_string().contains(&key),
        "the secret is never listed"
    );
    assert!(key.starts_with(keys[0]["hint"].as_str().unwrap().trim_end_matches('…')));
    let key_id = keys[0]["id"].as_str().unwrap().to_owned();
    let revoke = |path: String| {
        app.client
            .delete(app.url(&path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    // Unknown key, unknown workspace, another workspace's key: 404.
    let (other_ws, _) = app.workspace("other").await;
    for path in [
        format!("/v1/workspaces/{ws}/keys/key_nope"),
        format!("/v1/workspaces/ws_nope/keys/{key_id}"),
        format!("/v1/workspaces/{other_ws}/keys/{key_id}"),
    ] {
        assert_eq!(revoke(path.clone()).await.unwrap().status(), 404, "{path}");
    }
    // A workspace key cannot revoke.
    let r = app
        .client
        .delete(app.url(&format!("/v1/workspaces/{ws}/keys/{key_id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = revoke(format!("/v1/workspaces/{ws}/keys/{key_id}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert!(first["revoked_at"].is_string());
    // The cached key is refused at once.
    let r = app.post_message(&key, &body).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    // Revoking again keeps the first time.
    let again: Value = revoke(format!("/v1/workspaces/{ws}/keys/{key_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["revoked_at"], first["revoked_at"]);
    // A new key works.
    let fresh: Value = app
        .client
        .post(app.url(&format!("/v1/workspaces/{ws}/keys")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.post_message(fresh["key"].as_str().unwrap(), &body)
            .await
            .status(),
        202
    );
}

#[tokio::test]
async fn a_key_revoked_behind_the_nodes_back_expires_from_its_cache() {
    // Another node (here: the store directly) revokes the key. With the
    // cache time at zero the next request reads the database again.
    let app = crate::harness::spawn_app_with(|c| c.auth_cache_seconds = 0).await;
    let (ws, key) = app.workspace("acme").await;
    let body = json!({"to": "+14155550100", "body": "hi"});
    assert_eq!(app.post_message(&key, &body).await.status(), 202);
    let ws = switchboard_core::WorkspaceId::parse(&ws).unwrap();
    let keys = app.store.list_api_keys(&ws).await.unwrap();
    app.store
        .revoke_api_key(&ws, &keys[0].id, app.clock_now_ts())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.post_message(&key, &body).await.status(), 401);
}
