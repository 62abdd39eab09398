//! The provider callback receiver, `POST /callbacks/{provider_id}`, with the
//! simulator's signed callbacks: what the simulator's own network calls, and
//! forged, malformed, oversized, repeated and reordered callbacks.

use serde_json::{Value, json};

use crate::harness::{TestApp, spawn_app, timeline};

/// Posts `body` to the simulator's callback route, signed with the
/// simulator's secret unless `signature` is given.
async fn callback(app: &TestApp, body: &Value, signature: Option<&str>) -> (u16, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let sig = match signature {
        Some(s) => s.to_owned(),
        None => app.sim.sign_callback(&raw, app.clock_now_ts()),
    };
    let r = app
        .client
        .post(app.url("/callbacks/pr_sim"))
        .header("content-type", "application/json")
        .header("x-sim-signature", sig)
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Submits a message and runs only the dispatcher: the message is `sent`
/// and the simulator holds its receipts. Returns (id, provider message id).
async fn sent_message(app: &TestApp, key: &str, to: &str) -> (String, String) {
    let id = app.send(key, json!({"to": to, "body": "hi"})).await;
    app.worker.dispatch_once().await.unwrap();
    let m = app.get_message(key, &id).await;
    assert_eq!(m["status"], "sent");
    (id, m["provider_message_id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn forged_stale_or_unsigned_callbacks_are_refused_and_change_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let (id, pmid) = sent_message(&app, &key, "+14155550123").await;
    let body = json!({"receipts": [{"id": pmid, "status": "undelivered"}]});
    let raw = serde_json::to_vec(&body).unwrap();
    let now = app.clock_now_ts();
    let good = app.sim.sign_callback(&raw, now);
    let forged = good.replace("v1=", "v1=00");
    let stale = app
        .sim
        .sign_callback(&raw, now.plus(std::time::Duration::from_secs(3600)));
    for sig in [forged.as_str(), stale.as_str(), "", "t=1,v1=zz"] {
        let (status, err) = callback(&app, &body, Some(sig)).await;
        assert_eq!(status, 403, "{sig}");
        assert_eq!(err["error"]["code"], "invalid_signature");
    }
    // A signature over another body does not carry over.
    let other = json!({"receipts": [{"id": pmid, "status": "delivered"}]});
    assert_eq!(callback(&app, &other, Some(&good)).await.0, 403);
    // Nothing was stored: the message is delivered by the simulator's real receipt.
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "delivered");
}

#[tokio::test]
async fn unknown_providers_malformed_and_oversized_callbacks_get_clear_errors() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.url("/callbacks/pr_twilio_nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_provider");
    for bad in [
        json!({"receipts": "all of them"}),
        json!({"receipts": [{"id": "SIM1", "status": "teleported"}]}),
        json!({"receipts": [{"status": "delivered"}]}),
        json!({"inbound": [{"from": "+14155550123", "to": "Switchboard"}]}),
    ] {
        let (status, err) = callback(&app, &bad, None).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(err["error"]["code"], "malformed_callback", "{bad}");
    }
    // Signed bytes that are not JSON.
    let raw = b"\xff\xfe not json".to_vec();
    let r = app
        .client
        .post(app.url("/callbacks/pr_sim"))
        .header(
            "x-sim-signature",
            app.sim.sign_callback(&raw, app.clock_now_ts()),
        )
        .body(raw)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Larger than 1 MiB.
    let r = app
        .client
        .post(app.url("/callbacks/pr_sim"))
        .header("x-sim-signature", "t=1,v1=00")
        .body(vec![b' '; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // GET is not a callback.
    let r = app
        .client
        .get(app.url("/callbacks/pr_sim"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn duplicated_and_reordered_receipts_over_http_end_in_one_state_with_one_event_each() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    // 0202: the simulator will also report delivered, then read.
    let (id, pmid) = sent_message(&app, &key, "+14155550202").await;
    let receipt = |status: &str| json!({"id": pmid, "status": status});
    // `read` overtakes `delivered`; both arrive twice; one callback repeats itself.
    let (s, ack) = callback(&app, &json!({"receipts": [receipt("read")]}), None).await;
    assert_eq!((s, ack["receipts"].as_u64()), (200, Some(1)), "{ack}");
    let (s, ack) = callback(
        &app,
        &json!({"receipts": [receipt("delivered"), receipt("read"), receipt("delivered")]}),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ack["receipts"], 1, "{ack}");
    assert_eq!(ack["duplicate_receipts"], 2, "{ack}");
    // The simulator's own callbacks (delivered, read) come too, and are repeats.
    app.drive().await;
    let m = app.get_message(&key, &id).await;
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
    // An `undelivered` after `read` is recorded and ignored.
    let (s, _) = callback(&app, &json!({"receipts": [receipt("undelivered")]}), None).await;
    assert_eq!(s, 200);
    app.drive().await;
    assert_eq!(app.get_message(&key, &id).await["status"], "read");
}

#[tokio::test]
async fn a_receipt_that_arrives_before_its_send_record_is_kept_and_applied_later() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let (s, ack) = callback(
        &app,
        &json!({"receipts": [{"id": "SIMnot-yet-known", "status": "delivered"}]}),
        None,
    )
    .await;
    assert_eq!((s, ack["receipts"].as_u64()), (200, Some(1)));
    // Kept in the inbox: a pass does not lose it.
    app.worker.pump_receipts_once().await.unwrap();
    let (id, _) = sent_message(&app, &key, "+14155550123").await;
    app.drive().await;
    assert_eq!(app.get_message(&key, &id).await["status"], "delivered");
}

#[tokio::test]
async fn inbound_callbacks_are_routed_by_the_address_they_were_sent_to() {
    let app = spawn_app().await;
    let (_, key) = app.workspace("acme").await;
    let outbound = app
        .send(&key, json!({"to": "+14155550123", "body": "Deals!"}))
        .await;
    app.drive().await;
    let stop = json!({"inbound": [{"id": "SIMin1", "from": "+14155550123", "to": "Switchboard", "text": "Stop."}]});
    let (s, ack) = callback(&app, &stop, None).await;
    assert_eq!(s, 200);
    assert_eq!(ack["inbound"], 1, "{ack}");
    // A repeated callback is recognised, not stored twice.
    assert_eq!(callback(&app, &stop, None).await.0, 200);
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
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{list}");
    assert_eq!(data[0]["conversation_message_id"], outbound.as_str());
    // The STOP opted the contact out and is confirmed.
    let r = app
        .post_message(&key, &json!({"to": "+14155550123", "body": "More deals"}))
        .await;
    assert_eq!(r.status(), 422);
    // Once a second workspace sends from the same simulator address, an
    // inbound message cannot be routed: it is acknowledged and dropped.
    app.workspace("beta").await;
    let hi = json!({"inbound": [{"id": "SIMin2", "from": "+14155550199", "to": "Switchboard", "text": "hi"}]});
    let (s, ack) = callback(&app, &hi, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        (ack["inbound"].as_u64(), ack["unrouted"].as_u64()),
        (Some(0), Some(1))
    );
}
