//! Real provider connectors through the whole gateway: providers and
//! senders added through the admin API, messages sent to mock Twilio and
//! WhatsApp Cloud APIs (real HTTP on 127.0.0.1, their documented formats),
//! signed callbacks back into `/callbacks/{id}`, inbound replies and STOP,
//! and failover from a provider that is down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};
use switchboard_providers::{twilio, whatsapp};

use crate::harness::{ADMIN_TOKEN, TestApp, call, spawn_app_with, timeline};
use crate::receiver::Receiver;

const TOKEN: &str = "twilio-auth-token-0123456789abcdef";
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const OTHER_ACCOUNT: &str = "ACfedcba9876543210fedcba9876543210";
const OUR_NUMBER: &str = "+14155550100";
const WA_NUMBER_ID: &str = "106540352242922";
const WA_NUMBER: &str = "+14155550111";
const WA_SECRET: &str = "whatsapp-app-secret-0123456789";
const WA_TOKEN: &str = "EAAGm0PX4ZCpsBAMOCK";
const WA_VERIFY: &str = "verify-me-please";

/// What a mock provider API received: (path, body).
#[derive(Clone, Default)]
struct Calls(Arc<Mutex<Vec<(String, String)>>>);

impl Calls {
    fn all(&self) -> Vec<(String, String)> {
        self.0.lock().unwrap().clone()
    }
}

/// A mock of both APIs: Twilio's Messages resource (201 with a `sid`; the
/// documented 21211 error for `+15005550001`) and the Graph API's
/// `/{version}/{phone-number-id}/messages` (200 with a `wamid`; 131047
/// for `15005550002`).
async fn mock_apis() -> (SocketAddr, Calls) {
    async fn twilio_messages(
        State(calls): State<Calls>,
        Path(account): Path<String>,
        body: String,
    ) -> impl IntoResponse {
        let n = {
            let mut c = calls.0.lock().unwrap();
            c.push((format!("twilio:{account}"), body.clone()));
            c.len()
        };
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        if form.iter().any(|(k, v)| k == "To" && v == "+15005550001") {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({"code": 21211, "message": "The 'To' number +15005550001 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}),
                ),
            );
        }
        (
            StatusCode::CREATED,
            axum::Json(
                json!({"sid": format!("SM{n:032x}"), "status": "queued", "account_sid": account.trim_end_matches("/Messages.json")}),
            ),
        )
    }
    async fn graph_messages(
        State(calls): State<Calls>,
        Path((version, number_id)): Path<(String, String)>,
        body: String,
    ) -> impl IntoResponse {
        let n = {
            let mut c = calls.0.lock().unwrap();
            c.push((format!("graph:{version}/{number_id}"), body.clone()));
            c.len()
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        if v["to"] == "15005550002" {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({"error": {"message": "(#131047) Re-engagement message", "type": "OAuthException", "code": 131047, "error_data": {"messaging_product": "whatsapp", "details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}, "fbtrace_id": "AbCdEf"}}),
                ),
            );
        }
        (
            StatusCode::OK,
            axum::Json(json!({
                "messaging_product": "whatsapp",
                "contacts": [{"input": v["to"], "wa_id": v["to"]}],
                "messages": [{"id": format!("wamid.HBgL{n:08}")}],
            })),
        )
    }
    let calls = Calls::default();
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(twilio_messages),
        )
        .route("/{version}/{number_id}/messages", post(graph_messages))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, calls)
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    call(
        app,
        method,
        path,
        Some(ADMIN_TOKEN),
        &body.unwrap_or(Value::Null),
    )
    .await
}

async fn add_provider(app: &TestApp, body: Value) -> Value {
    let (status, p) = admin(app, reqwest::Method::POST, "/v1/providers", Some(body)).await;
    assert_eq!(status, 201, "{p}");
    p
}

async fn add_sender(app: &TestApp, ws: &str, body: Value) -> Value {
    let (status, s) = admin(
        app,
        reqwest::Method::POST,
        &format!("/v1/workspaces/{ws}/senders"),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{s}");
    s
}

fn twilio_provider(api: SocketAddr, account: &str) -> Value {
    json!({
        "kind": "twilio",
        "name": "Twilio US",
        "config": {"account_sid": account, "base_url": format!("http://{api}")},
        "credentials": {"auth_token": TOKEN},
    })
}

/// A Twilio callback: a form signed with `X-Twilio-Signature` over `url`.
async fn twilio_callback(
    app: &TestApp,
    url: &str,
    params: &[(&str, &str)],
    token: &str,
) -> (u16, Value) {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let r = app
        .client
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", twilio::signature(token, url, &owned))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn subscribe(app: &TestApp, key: &str, events: &[&str]) -> Receiver {
    let rx = Receiver::start(vec![]).await;
    let r = app
        .client
        .post(app.url("/v1/webhooks"))
        .bearer_auth(key)
        .json(&json!({"url": rx.url, "event_types": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    rx
}

/// How many events of each type the receiver got.
fn tally(rx: &Receiver) -> std::collections::HashMap<String, usize> {
    let mut seen = std::collections::HashMap::new();
    for t in rx.event_types() {
        *seen.entry(t).or_insert(0) += 1;
    }
    seen
}

/// A number's consent state on a channel (`none` if nothing is recorded).
async fn consent(app: &TestApp, key: &str, phone: &str, channel: &str) -> String {
    let c: Value = app
        .client
        .get(app.url(&format!("/v1/contacts/{}", phone.replace('+', "%2B"))))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    c["consent"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["channel"] == channel))
        .map_or("none".into(), |s| s["state"].as_str().unwrap().to_owned())
}

async fn spawn() -> TestApp {
    spawn_app_with(|c| {
        // Real HTTP to the mocks: leave room for a loaded machine.
        c.dispatcher.send_timeout_ms = 3_000;
        c.dispatcher.lease_seconds = 10;
    })
    .await
}

#[tokio::test]
async fn twilio_sends_receives_status_callbacks_replies_and_stop_through_the_gateway() {
    let (api, calls) = mock_apis().await;
    let app = spawn().await;
    let (ws, key) = app.workspace("acme").await;
    let provider = add_provider(&app, twilio_provider(api, ACCOUNT)).await;
    let pid = provider["id"].as_str().unwrap().to_owned();
    let callback_url = format!("{}/callbacks/{pid}", app.base);
    assert_eq!(provider["callback_url"], callback_url.as_str());
    assert_eq!(provider["status"], "ready");
    assert_eq!(provider["config"]["account_sid"], ACCOUNT);
    // The token is never shown again: a hint of its last characters only.
    assert_eq!(provider["credentials"]["auth_token"], "…cdef");
    let (_, listed) = admin(&app, reqwest::Method::GET, "/v1/providers", None).await;
    assert!(!listed.to_string().contains(TOKEN));
    assert_eq!(listed["data"][0]["id"], "pr_sim");
    assert_eq!(listed["data"][1]["id"], pid.as_str());
    add_sender(
        &app,
        &ws,
        json!({"provider_id": pid, "address": OUR_NUMBER, "default": true}),
    )
    .await;
    let rx = subscribe(
        &app,
        &key,
        &[
            "message.delivered",
            "message.undelivered",
            "message.received",
            "contact.opted_out",
        ],
    )
    .await;

    // send → Twilio → status callback → delivered
    let id = app
        .send(
            &key,
            json!({"to": "+14155550123", "body": "Your table is ready"}),
        )
        .await;
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(m["provider_id"], pid.as_str());
    let sid = m["provider_message_id"].as_str().unwrap().to_owned();
    let (path, form) = calls.all().last().cloned().unwrap();
    assert_eq!(path, format!("twilio:{ACCOUNT}"));
    let form: Vec<(String, String)> = url::form_urlencoded::parse(form.as_bytes())
        .into_owned()
        .collect();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(field("To"), Some("+14155550123"));
    assert_eq!(field("From"), Some(OUR_NUMBER));
    assert_eq!(field("Body"), Some("Your table is ready"));
    assert_eq!(field("StatusCallback"), Some(callback_url.as_str()));
    let status = |sid: &str, status: &str| {
        vec![
            ("AccountSid", ACCOUNT.to_owned()),
            ("MessageSid", sid.to_owned()),
            ("MessageStatus", status.to_owned()),
            ("To", "+14155550123".to_owned()),
            ("From", OUR_NUMBER.to_owned()),
        ]
    };
    let as_refs = |v: &[(&'static str, String)]| -> Vec<(&'static str, String)> { v.to_vec() };
    let delivered = as_refs(&status(&sid, "delivered"));
    let params: Vec<(&str, &str)> = delivered.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // A forged signature is refused and changes nothing.
    let (code, err) = twilio_callback(&app, &callback_url, &params, "not-the-token").await;
    assert_eq!(code, 403, "{err}");
    assert_eq!(err["error"]["code"], "invalid_signature");
    app.drive().await;
    assert_eq!(app.get_message(&key, &id).await["status"], "sent");
    let (code, ack) = twilio_callback(&app, &callback_url, &params, TOKEN).await;
    assert_eq!((code, ack["receipts"].as_u64()), (200, Some(1)), "{ack}");
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "delivered");
    assert!(timeline(&m).contains(&"message.delivered".to_owned()));

    // A carrier failure keeps Twilio's reason as the message's error code.
    let id2 = app
        .send(&key, json!({"to": "+14155550124", "body": "Second"}))
        .await;
    app.drive().await;
    let sid2 = app.get_message(&key, &id2).await["provider_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut failed = status(&sid2, "undelivered");
    failed.push(("ErrorCode", "30003".to_owned()));
    let params: Vec<(&str, &str)> = failed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        twilio_callback(&app, &callback_url, &params, TOKEN).await.0,
        200
    );
    app.drive().await;
    let m = app.get_message(&key, &id2).await;
    assert_eq!(m["status"], "undelivered", "{m}");
    assert_eq!(m["error_code"], "unreachable_destination", "{m}");

    // A provider-side refusal at send: permanent, with Twilio's meaning.
    let id3 = app
        .send(&key, json!({"to": "+15005550001", "body": "Bad"}))
        .await;
    app.drive().await;
    let m = app.get_message(&key, &id3).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["error_code"], "invalid_number", "{m}");

    // An inbound reply becomes message.received; STOP opts the sender out.
    let inbound = |text: &str, sid: &str| {
        vec![
            ("AccountSid", ACCOUNT.to_owned()),
            ("MessageSid", sid.to_owned()),
            ("SmsStatus", "received".to_owned()),
            ("From", "+14155550123".to_owned()),
            ("To", OUR_NUMBER.to_owned()),
            ("Body", text.to_owned()),
            ("NumMedia", "0".to_owned()),
        ]
    };
    for (text, sid) in [("Thanks, on my way", "SMin1"), ("STOP", "SMin2")] {
        let p = inbound(text, sid);
        let params: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (code, ack) = twilio_callback(&app, &callback_url, &params, TOKEN).await;
        assert_eq!((code, ack["inbound"].as_u64()), (200, Some(1)), "{ack}");
    }
    app.drive().await;
    assert_eq!(
        consent(&app, &key, "+14155550123", "sms").await,
        "opted_out"
    );
    let r = app
        .post_message(&key, &json!({"to": "+14155550123", "body": "more"}))
        .await;
    assert_eq!(r.status(), 422);
    let seen = tally(&rx);
    for e in [
        "message.delivered",
        "message.undelivered",
        "contact.opted_out",
    ] {
        assert!(seen.contains_key(e), "{e} in {seen:?}");
    }
    assert_eq!(seen.get("message.received"), Some(&2), "{seen:?}");
}

fn whatsapp_signed(body: &Value) -> (Vec<u8>, String) {
    let raw = serde_json::to_vec(body).unwrap();
    let sig = whatsapp::signature(WA_SECRET, &raw);
    (raw, sig)
}

async fn whatsapp_webhook(
    app: &TestApp,
    url: &str,
    body: &Value,
    sig: Option<&str>,
) -> (u16, Value) {
    let (raw, good) = whatsapp_signed(body);
    let r = app
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sig.unwrap_or(&good))
        .body(raw)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn wa_change(value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] =
        json!({"display_phone_number": "14155550111", "phone_number_id": WA_NUMBER_ID});
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}]})
}

#[tokio::test]
async fn whatsapp_cloud_sends_verifies_its_webhook_and_reads_statuses_and_replies() {
    let (api, calls) = mock_apis().await;
    let app = spawn().await;
    let (ws, key) = app.workspace("acme").await;
    let provider = add_provider(
        &app,
        json!({
            "kind": "whatsapp_cloud",
            "config": {"phone_number_id": WA_NUMBER_ID, "base_url": format!("http://{api}")},
            "credentials": {"access_token": WA_TOKEN, "app_secret": WA_SECRET, "verify_token": WA_VERIFY},
        }),
    )
    .await;
    let pid = provider["id"].as_str().unwrap().to_owned();
    let url = format!("{}/callbacks/{pid}", app.base);
    assert!(!provider.to_string().contains(WA_SECRET));

    // The subscription handshake: the challenge back for the right token only.
    let get = |token: &str| {
        app.client
            .get(format!(
                "{url}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
            ))
            .send()
    };
    let r = get(WA_VERIFY).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "1158201444");
    let r = get("guess").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .client
        .get(format!("{url}?hub.mode=subscribe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    add_sender(
        &app,
        &ws,
        json!({"channel": "whatsapp", "provider_id": pid, "address": WA_NUMBER, "default": true}),
    )
    .await;
    let rx = subscribe(&app, &key, &["message.received", "contact.opted_out"]).await;
    let reply = |from: &str, id: &str, msg: Value| {
        let mut msg = msg;
        msg["from"] = json!(from);
        msg["id"] = json!(id);
        msg["timestamp"] = json!("1603059201");
        wa_change(
            json!({"contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": from}], "messages": [msg]}),
        )
    };
    let refused = |body: Value| {
        let app = &app;
        let key = key.clone();
        async move {
            let r = app.post_message(&key, &body).await;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["error"]["code"].as_str().unwrap_or("").to_owned(),
                v["error"]["field"].as_str().unwrap_or("").to_owned(),
            )
        }
    };

    // Nobody has written yet: free text is refused at submit (the 24-hour
    // customer-service window); an approved template goes out.
    let free = json!({"to": "+16315551234", "channel": "whatsapp", "body": "Your order shipped"});
    assert_eq!(
        refused(free.clone()).await,
        (
            422,
            "outside_customer_service_window".into(),
            "whatsapp_template".into()
        )
    );
    for (t, field) in [
        (
            json!({"name": "Order Update", "language": "en_US"}),
            "whatsapp_template.name",
        ),
        (
            json!({"name": "order_update", "language": "english!"}),
            "whatsapp_template.language",
        ),
        (
            json!({"name": "order_update", "language": "en", "parameters": [""]}),
            "whatsapp_template.parameters",
        ),
    ] {
        let body = json!({"to": "+16315551234", "channel": "whatsapp", "whatsapp_template": t});
        assert_eq!(
            refused(body).await,
            (422, "invalid_whatsapp_template".into(), field.into())
        );
    }
    let (status, code, _) = refused(
        json!({"to": "+16315551234", "whatsapp_template": {"name": "x", "language": "en"}}),
    )
    .await;
    assert_eq!(
        (status, code.as_str()),
        (422, "invalid_whatsapp_template"),
        "sms has no WhatsApp templates"
    );
    let (status, code, _) = refused(
        json!({"to": "+16315551234", "channel": "whatsapp", "whatsapp_template": {"name": 5}}),
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_type"));
    let id = app
        .send(
            &key,
            json!({"to": "+16315551234", "channel": "whatsapp", "whatsapp_template": {"name": "order_update", "language": "en_US", "parameters": ["Kerry", "A-1001"]}}),
        )
        .await;
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(m["whatsapp_template"]["name"], "order_update", "{m}");
    assert!(
        m["body"]
            .as_str()
            .unwrap()
            .starts_with("[WhatsApp template order_update (en_US)]"),
        "{m}"
    );
    let wamid = m["provider_message_id"].as_str().unwrap().to_owned();
    let (path, body) = calls.all().last().cloned().unwrap();
    assert_eq!(path, format!("graph:v21.0/{WA_NUMBER_ID}"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["messaging_product"], "whatsapp");
    assert_eq!(body["to"], "16315551234");
    assert_eq!(body["type"], "template");
    assert_eq!(body["template"]["name"], "order_update");
    assert_eq!(body["template"]["language"]["code"], "en_US");
    assert_eq!(body["template"]["components"][0]["type"], "body");
    assert_eq!(
        body["template"]["components"][0]["parameters"][1],
        json!({"type": "text", "text": "A-1001"})
    );

    // Forged and unsigned webhooks are refused.
    let delivered = wa_change(
        json!({"statuses": [{"id": wamid, "status": "delivered", "timestamp": "1603086313", "recipient_id": "16315551234"}]}),
    );
    let (code, _) = whatsapp_webhook(&app, &url, &delivered, Some("sha256=00")).await;
    assert_eq!(code, 403);
    let (code, _) = whatsapp_webhook(&app, &url, &delivered, Some("")).await;
    assert_eq!(code, 403);
    let (code, ack) = whatsapp_webhook(&app, &url, &delivered, None).await;
    assert_eq!((code, ack["receipts"].as_u64()), (200, Some(1)), "{ack}");
    app.drive().await;
    assert_eq!(app.get_message(&key, &id).await["status"], "delivered");

    // The customer writes: free text (here a document with a caption) may
    // follow for 24 hours.
    let msg = json!({"type": "text", "text": {"body": "Where is it now?"}});
    let (code, ack) =
        whatsapp_webhook(&app, &url, &reply("16315551234", "wamid.in0", msg), None).await;
    assert_eq!((code, ack["inbound"].as_u64()), (200, Some(1)), "{ack}");
    let mut with_label = free.clone();
    with_label["media_urls"] = json!(["https://cdn.example.com/label.pdf"]);
    let id = app.send(&key, with_label).await;
    app.drive().await;
    assert_eq!(app.get_message(&key, &id).await["status"], "sent");
    let body: Value = serde_json::from_str(&calls.all().last().unwrap().1).unwrap();
    assert_eq!(body["type"], "document");
    assert_eq!(
        body["document"]["link"],
        "https://cdn.example.com/label.pdf"
    );
    assert_eq!(body["document"]["caption"], "Your order shipped");

    // Meta may still refuse free text (131047): the message fails with a
    // code that says so.
    let msg = json!({"type": "text", "text": {"body": "hi"}});
    assert_eq!(
        whatsapp_webhook(&app, &url, &reply("15005550002", "wamid.x", msg), None)
            .await
            .0,
        200
    );
    let id2 = app
        .send(
            &key,
            json!({"to": "+15005550002", "channel": "whatsapp", "body": "Hello again"}),
        )
        .await;
    app.drive().await;
    let m = app.get_message(&key, &id2).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["error_code"], "outside_customer_service_window", "{m}");

    // A failed status with Meta's error object.
    let id3 = app
        .send(
            &key,
            json!({"to": "+16315551235", "channel": "whatsapp", "whatsapp_template": {"name": "order_update", "language": "en"}}),
        )
        .await;
    app.drive().await;
    let wamid3 = app.get_message(&key, &id3).await["provider_message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = wa_change(
        json!({"statuses": [{"id": wamid3, "status": "failed", "timestamp": "1603086313", "recipient_id": "16315551235", "errors": [{"code": 131026, "title": "Message undeliverable"}]}]}),
    );
    assert_eq!(whatsapp_webhook(&app, &url, &failed, None).await.0, 200);
    app.drive().await;
    let m = app.get_message(&key, &id3).await;
    assert_eq!(m["status"], "undelivered", "{m}");
    assert_eq!(m["error_code"], "undeliverable", "{m}");

    // A day later the window has closed again.
    app.clock.advance(std::time::Duration::from_secs(25 * 3600));
    assert_eq!(
        refused(free.clone()).await.1,
        "outside_customer_service_window"
    );

    // Replies: a button press and STOP.
    for (i, msg) in [
        json!({"type": "button", "button": {"payload": "track", "text": "Track order"}}),
        json!({"type": "text", "text": {"body": "stop"}}),
    ]
    .into_iter()
    .enumerate()
    {
        let (code, ack) = whatsapp_webhook(
            &app,
            &url,
            &reply("16315551234", &format!("wamid.in{}", i + 1), msg),
            None,
        )
        .await;
        assert_eq!((code, ack["inbound"].as_u64()), (200, Some(1)), "{ack}");
    }
    app.drive().await;
    assert_eq!(
        consent(&app, &key, "+16315551234", "whatsapp").await,
        "opted_out"
    );
    let seen = tally(&rx);
    assert_eq!(seen.get("message.received"), Some(&4), "{seen:?}");
    assert!(seen.contains_key("contact.opted_out"), "{seen:?}");
    let texts: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.json())
        .filter(|e| e["event"] == "message.received")
        .map(|e| e["data"]["text"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(texts.contains(&"Track order".to_owned()), "{texts:?}");
}

#[tokio::test]
async fn a_message_fails_over_to_the_next_provider_when_the_first_is_down() {
    let (api, calls) = mock_apis().await;
    // A port nothing listens on: the first provider is down.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let app = spawn().await;
    let (ws, key) = app.workspace("acme").await;
    let mut first = twilio_provider(down, ACCOUNT);
    first["attempt_budget"] = json!(2);
    let first = add_provider(&app, first).await;
    let second = add_provider(&app, twilio_provider(api, OTHER_ACCOUNT)).await;
    let (a, b) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    add_sender(
        &app,
        &ws,
        json!({"provider_id": a, "address": OUR_NUMBER, "default": true}),
    )
    .await;
    add_sender(
        &app,
        &ws,
        json!({"provider_id": b, "address": "+14155550199", "priority": 10}),
    )
    .await;
    let (_, senders) = admin(
        &app,
        reqwest::Method::GET,
        &format!("/v1/workspaces/{ws}/senders"),
        None,
    )
    .await;
    let sms: Vec<&str> = senders["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["channel"] == "sms")
        .map(|s| s["address"].as_str().unwrap())
        .collect();
    assert_eq!(sms, [OUR_NUMBER, "+14155550199", "Switchboard"]);

    let id = app
        .send(&key, json!({"to": "+14155550123", "body": "Failover"}))
        .await;
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "sent", "{m}");
    assert_eq!(m["provider_id"], b, "{m}");
    assert_eq!(m["from"], "+14155550199", "{m}");
    let attempts: Vec<(String, String)> = m["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider_id"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        attempts,
        [
            (a.to_owned(), "failed".to_owned()),
            (a.to_owned(), "failed".to_owned()),
            (b.to_owned(), "accepted".to_owned()),
        ],
        "{m}"
    );
    assert_eq!(calls.all().len(), 1, "one send reached the second provider");

    // A permanent error does not fail over: the route is not tried further.
    let (code, _) = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/providers/{a}"),
        Some(json!({"config": {"base_url": format!("http://{api}")}})),
    )
    .await;
    assert_eq!(code, 200);
    let id = app
        .send(&key, json!({"to": "+15005550001", "body": "Invalid"}))
        .await;
    app.drive().await;
    let m = app.get_message(&key, &id).await;
    assert_eq!(m["status"], "failed", "{m}");
    assert_eq!(m["error_code"], "invalid_number");
    assert_eq!(m["attempts"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["provider_id"], a);
}

#[tokio::test]
async fn provider_and_sender_admin_refuses_bad_input_and_never_returns_secrets() {
    let (api, _) = mock_apis().await;
    let app = spawn().await;
    let (ws, key) = app.workspace("acme").await;
    let post = |body: Value| admin(&app, reqwest::Method::POST, "/v1/providers", Some(body));
    let cases = [
        (
            json!({"config": {}, "credentials": {}}),
            422,
            "missing_field",
            "kind",
        ),
        (
            json!({"kind": "carrier-pigeon", "config": {}, "credentials": {}}),
            422,
            "invalid_kind",
            "kind",
        ),
        (
            json!({"kind": "twilio", "credentials": {"auth_token": TOKEN}}),
            422,
            "missing_field",
            "config",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": "AC1"}, "credentials": {"auth_token": TOKEN}}),
            422,
            "invalid_provider_config",
            "config.account_sid",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": ACCOUNT, "acount": 1}, "credentials": {"auth_token": TOKEN}}),
            422,
            "invalid_provider_config",
            "config.acount",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": ACCOUNT}, "credentials": {}}),
            422,
            "invalid_provider_config",
            "credentials.auth_token",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": ACCOUNT, "base_url": "ftp://x"}, "credentials": {"auth_token": TOKEN}}),
            422,
            "invalid_provider_config",
            "config.base_url",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": ACCOUNT}, "credentials": {"auth_token": 5}}),
            422,
            "invalid_provider_config",
            "credentials.auth_token",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": ACCOUNT}, "credentials": {"auth_token": TOKEN}, "attempt_budget": 0}),
            422,
            "invalid_attempt_budget",
            "attempt_budget",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": ACCOUNT}, "credentials": {"auth_token": TOKEN}, "rate_per_second": -1}),
            422,
            "invalid_rate",
            "rate_per_second",
        ),
        (
            json!({"kind": "twilio", "config": {"account_sid": ACCOUNT}, "credentials": {"auth_token": TOKEN}, "secret": "x"}),
            400,
            "unknown_field",
            "secret",
        ),
        (
            json!({"kind": "whatsapp_cloud", "config": {"phone_number_id": "+1555"}, "credentials": {"access_token": "a", "app_secret": "b", "verify_token": "c"}}),
            422,
            "invalid_provider_config",
            "config.phone_number_id",
        ),
        (json!([1, 2]), 400, "invalid_body", ""),
    ];
    for (body, status, code, field) in cases {
        let (s, err) = post(body.clone()).await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} → {err}"
        );
        if !field.is_empty() {
            assert_eq!(err["error"]["field"], field, "{body} → {err}");
        }
        assert!(!err.to_string().contains(TOKEN));
    }
    // Not JSON, and without the admin token.
    let r = app
        .client
        .post(app.url("/v1/providers"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"kind\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(app.url("/v1/providers"))
        .bearer_auth(&key)
        .json(&twilio_provider(api, ACCOUNT))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a workspace key is not the admin token");

    let mut body = twilio_provider(api, ACCOUNT);
    body["rate_per_second"] = json!(5);
    let p = add_provider(&app, body).await;
    let pid = p["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (p["rate_per_second"].as_f64(), p["burst"].as_f64()),
        (Some(5.0), Some(5.0))
    );
    // Rotating the token alone keeps the rest; it is not echoed.
    let rotated = "rotated-token-00000000000000000009999";
    let (s, p) = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/providers/{pid}"),
        Some(json!({"credentials": {"auth_token": rotated}, "rate_per_second": null})),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["credentials"]["auth_token"], "…9999");
    assert_eq!(p["config"]["account_sid"], ACCOUNT);
    assert!(p["rate_per_second"].is_null());
    assert!(!p.to_string().contains(rotated));
    let stored = app.store.get_provider(&pid).await.unwrap().unwrap();
    assert_eq!(stored.credentials["auth_token"], rotated);
    assert!(
        !format!("{stored:?}").contains(rotated),
        "Debug redacts credentials"
    );
    let (s, err) = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/providers/{pid}"),
        Some(json!({"config": {"account_sid": null}})),
    )
    .await;
    assert_eq!(
        (s, err["error"]["field"].as_str()),
        (422, Some("config.account_sid"))
    );
    let (s, err) = admin(
        &app,
        reqwest::Method::PATCH,
        "/v1/providers/pr_sim",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (409, Some("builtin_provider"))
    );
    assert_eq!(
        admin(&app, reqwest::Method::GET, "/v1/providers/pr_nope", None)
            .await
            .0,
        404
    );

    // Senders: bad input, duplicates, and removal rules.
    let senders = format!("/v1/workspaces/{ws}/senders");
    let sender_cases = [
        (json!({"address": OUR_NUMBER}), 422, "missing_field"),
        (
            json!({"provider_id": "pr_nope", "address": OUR_NUMBER}),
            422,
            "unknown_provider",
        ),
        (
            json!({"provider_id": pid, "address": ""}),
            422,
            "invalid_address",
        ),
        (
            json!({"provider_id": pid, "address": "+1 234"}),
            422,
            "invalid_address",
        ),
        (
            json!({"provider_id": pid, "address": OUR_NUMBER, "channel": "fax"}),
            422,
            "invalid_channel",
        ),
        (
            json!({"provider_id": pid, "address": OUR_NUMBER, "default": "yes"}),
            422,
            "invalid_type",
        ),
        (
            json!({"provider_id": pid, "address": OUR_NUMBER, "priority": -3}),
            422,
            "invalid_priority",
        ),
        (
            json!({"provider_id": pid, "address": OUR_NUMBER, "weight": 1}),
            400,
            "unknown_field",
        ),
    ];
    for (body, status, code) in sender_cases {
        let (s, err) = admin(&app, reqwest::Method::POST, &senders, Some(body.clone())).await;
        assert_eq!(
            (s, err["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} → {err}"
        );
    }
    let (code, err) = admin(
        &app,
        reqwest::Method::POST,
        &senders,
        Some(json!({"provider_id": pid, "address": "+1 (415) 555-0100"})),
    )
    .await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (422, Some("invalid_address")),
        "numbers are given in E.164"
    );
    let s = add_sender(
        &app,
        &ws,
        json!({"provider_id": pid, "address": OUR_NUMBER}),
    )
    .await;
    assert_eq!(
        (s["default"].as_bool(), s["priority"].as_i64()),
        (Some(false), Some(100))
    );
    let (code, err) = admin(
        &app,
        reqwest::Method::POST,
        &senders,
        Some(json!({"provider_id": pid, "address": OUR_NUMBER})),
    )
    .await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (409, Some("sender_exists"))
    );
    let (code, err) = admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/providers/{pid}"),
        None,
    )
    .await;
    assert_eq!(
        (code, err["error"]["code"].as_str()),
        (409, Some("provider_in_use"))
    );
    assert_eq!(
        admin(&app, reqwest::Method::DELETE, "/v1/providers/pr_sim", None)
            .await
            .0,
        409
    );
    // A submission may name the new sender at once (the key cache was evicted).
    let r = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "from": OUR_NUMBER, "body": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let sid = s["id"].as_str().unwrap();
    assert_eq!(
        admin(
            &app,
            reqwest::Method::DELETE,
            &format!("{senders}/{sid}"),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        admin(
            &app,
            reqwest::Method::DELETE,
            &format!("{senders}/{sid}"),
            None
        )
        .await
        .0,
        404
    );
    let r = app
        .post_message(
            &key,
            &json!({"to": "+14155550123", "from": OUR_NUMBER, "body": "hi"}),
        )
        .await;
    assert_eq!(r.status(), 422, "a removed sender is refused at once");
    assert_eq!(
        admin(
            &app,
            reqwest::Method::DELETE,
            &format!("/v1/providers/{pid}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        admin(
            &app,
            reqwest::Method::GET,
            &format!("/v1/providers/{pid}"),
            None
        )
        .await
        .0,
        404
    );
    // The callback route forgets it too.
    let r = app
        .client
        .post(app.url(&format!("/callbacks/{pid}")))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn smpp_sends_reads_receipts_and_replies_through_the_gateway() {
    use switchboard_providers::smpp::smsc::{Behaviour, FakeSmsc};
    let smsc = FakeSmsc::start(Behaviour {
        receipts: true,
        ..Behaviour::default()
    })
    .await
    .unwrap();
    let app = spawn().await;
    let (ws, key) = app.workspace("acme").await;
    let p = add_provider(
        &app,
        json!({
            "kind": "smpp",
            "name": "Carrier A",
            "config": {"host": "127.0.0.1", "port": smsc.addr().port(), "system_id": "switchboard", "window": 5},
            "credentials": {"password": "secret"},
        }),
    )
    .await;
    let pid = p["id"].as_str().unwrap().to_owned();
    assert_eq!(
        p["credentials"]["password"], "…",
        "a short secret shows no characters"
    );
    add_sender(
        &app,
        &ws,
        json!({"provider_id": pid, "address": OUR_NUMBER, "default": true}),
    )
    .await;
    let rx = subscribe(
        &app,
        &key,
        &["message.delivered", "message.received", "contact.opted_out"],
    )
    .await;
    // The link binds on its own; the admin API shows it.
    let mut link = Value::Null;
    for _ in 0..50 {
        link = admin(
            &app,
            reqwest::Method::GET,
            &format!("/v1/providers/{pid}"),
            None,
        )
        .await
        .1["link"]
            .clone();
        if link == "bound" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(link, "bound");

    let id = app
        .send(
            &key,
            json!({"to": "+14155550123", "body": "Your code is 4711"}),
        )
        .await;
    // The receipt comes on the SMPP link, on its own time.
    let mut m = Value::Null;
    for _ in 0..100 {
        app.drive().await;
        m = app.get_message(&key, &id).await;
        if m["status"] == "delivered" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    assert_eq!(m["status"], "delivered", "{m}");
    let sub = &smsc.submitted()[0];
    assert_eq!(sub.sm.destination_addr, "14155550123");
    assert_eq!(sub.sm.source_addr, "14155550100");
    assert_eq!(m["provider_message_id"], sub.message_id.as_str());

    // A reply and a STOP from the handset.
    assert_eq!(
        smsc.mo("+14155550123", OUR_NUMBER, "Thanks!").await,
        Some(0)
    );
    assert_eq!(smsc.mo("+14155550123", OUR_NUMBER, "Stop").await, Some(0));
    app.drive().await;
    assert_eq!(
        consent(&app, &key, "+14155550123", "sms").await,
        "opted_out"
    );
    let seen = tally(&rx);
    assert_eq!(seen.get("message.received"), Some(&2), "{seen:?}");
    for e in ["contact.opted_out", "message.delivered"] {
        assert!(seen.contains_key(e), "{e} in {seen:?}");
    }
    // Removed, the link is closed.
    let sid = admin(
        &app,
        reqwest::Method::GET,
        &format!("/v1/workspaces/{ws}/senders"),
        None,
    )
    .await
    .1["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["provider_id"] == pid.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/workspaces/{ws}/senders/{sid}"),
        None,
    )
    .await;
    assert_eq!(
        admin(
            &app,
            reqwest::Method::DELETE,
            &format!("/v1/providers/{pid}"),
            None
        )
        .await
        .0,
        204
    );
    for _ in 0..100 {
        if !smsc.connected() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!smsc.connected(), "the SMSC no longer has a client");
    assert_eq!(smsc.unbinds(), 1, "it said goodbye with an unbind");
}

#[tokio::test]
async fn a_providers_throughput_limit_paces_the_dispatcher() {
    let (api, calls) = mock_apis().await;
    let app = spawn().await;
    let (ws, key) = app.workspace("acme").await;
    let mut body = twilio_provider(api, ACCOUNT);
    body["rate_per_second"] = json!(2);
    body["burst"] = json!(2);
    let p = add_provider(&app, body).await;
    add_sender(
        &app,
        &ws,
        json!({"provider_id": p["id"], "address": OUR_NUMBER, "default": true}),
    )
    .await;
    for i in 0..5 {
        app.send(
            &key,
            json!({"to": format!("+1415555{:04}", 2000 + i), "body": "paced"}),
        )
        .await;
    }
    // The clock stands still: only the burst goes out.
    assert_eq!(app.worker.dispatch_once().await.unwrap(), 2);
    assert_eq!(app.worker.dispatch_once().await.unwrap(), 0);
    assert_eq!(calls.all().len(), 2);
    // Half a second later one more token has come; a second, two.
    app.clock.advance(std::time::Duration::from_millis(500));
    assert_eq!(app.worker.dispatch_once().await.unwrap(), 1);
    app.clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(app.worker.dispatch_once().await.unwrap(), 2);
    assert_eq!(calls.all().len(), 5);
    // Lifted through the admin API: no limit from then on.
    let pid = p["id"].as_str().unwrap();
    let (code, _) = admin(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/providers/{pid}"),
        Some(json!({"rate_per_second": null})),
    )
    .await;
    assert_eq!(code, 200);
    for i in 0..4 {
        app.send(
            &key,
            json!({"to": format!("+1415555{:04}", 3000 + i), "body": "free"}),
        )
        .await;
    }
    assert_eq!(app.worker.dispatch_once().await.unwrap(), 4);
}
