//! The WhatsApp Cloud API connector against a mock Graph API on 127.0.0.1
//! (real HTTP, Meta's documented success and error bodies), and its webhook
//! reader with signed, forged and unusual payloads.

use std::time::Duration;

use axum::Router;
use axum::extract::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use switchboard_core::{ErrorClass, ReceiptKind, Timestamp};
use switchboard_providers::callback::{
    CallbackError, CallbackHandler, CallbackItem, CallbackRequest,
};
use switchboard_providers::whatsapp::{WhatsApp, WhatsAppConfig, classify, signature};
use switchboard_providers::{ChannelTemplate, Provider, SendRequest};

const NUMBER_ID: &str = "106540352242922";
const SECRET: &str = "app-secret";

fn config(base: &str) -> WhatsAppConfig {
    WhatsAppConfig::from_spec(
        &json!({"phone_number_id": NUMBER_ID, "base_url": base, "timeout_ms": 5000}),
        &json!({"access_token": "EAAG-token", "app_secret": SECRET, "verify_token": "vt"}),
    )
    .unwrap()
}

fn connector(base: &str) -> WhatsApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    WhatsApp::new(config(base), reqwest::Client::new())
}

fn request(to: &str) -> SendRequest {
    SendRequest {
        idempotency_key: "msg_1".into(),
        to: to.into(),
        from: "+14155550111".into(),
        channel: "whatsapp".into(),
        body: "Hello".into(),
        media_urls: Vec::new(),
        template: None,
    }
}

/// Answers by the recipient, as the Graph API would.
async fn messages(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer EAAG-token") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190, "fbtrace_id": "x"}})),
        )
            .into_response();
    }
    let error = |status: StatusCode, code: u64, details: &str| {
        (
            status,
            Json(json!({"error": {"message": format!("({code})"), "type": "OAuthException", "code": code, "error_data": {"messaging_product": "whatsapp", "details": details}, "fbtrace_id": "x"}})),
        )
            .into_response()
    };
    match body["to"].as_str() {
        Some("15005550429") => {
            let mut r = error(StatusCode::BAD_REQUEST, 130429, "Rate limit hit");
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            r
        }
        Some("15005550131") => error(StatusCode::BAD_REQUEST, 131026, "Message undeliverable"),
        Some("15005550500") => (StatusCode::BAD_GATEWAY, "bad gateway").into_response(),
        Some("15005550200") => (StatusCode::OK, Json(json!({"messaging_product": "whatsapp"}))).into_response(),
        _ => Json(json!({"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}], "messages": [{"id": "wamid.OK"}]})).into_response(),
    }
}

async fn mock() -> String {
    let app = Router::new().route("/v21.0/{id}/messages", post(messages));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn sends_and_maps_the_cloud_api_errors_onto_classes() {
    let base = mock().await;
    let wa = connector(&base);
    let ok = wa.send(&request("+16315551234")).await.unwrap();
    assert_eq!(ok.provider_message_id, "wamid.OK");
    let err = |to: &str| {
        let wa = wa.clone();
        let to = to.to_owned();
        async move { wa.send(&request(&to)).await.unwrap_err() }
    };
    let e = err("+15005550429").await;
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Throttled, "rate_limited")
    );
    assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
    let e = err("+15005550131").await;
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Permanent, "undeliverable")
    );
    assert!(e.message.contains("Message undeliverable"), "{e}");
    let e = err("+15005550500").await;
    assert_eq!(e.class, ErrorClass::Transport);
    let e = err("+15005550200").await;
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Transport, "upstream_bad_response")
    );
    // A wrong token, and an API that is not there.
    let mut cfg = config(&base);
    cfg.access_token = "expired".into();
    let e = WhatsApp::new(cfg, reqwest::Client::new())
        .send(&request("+16315551234"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Permanent, "provider_auth_failed")
    );
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = connector(&down)
        .send(&request("+16315551234"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transport);
    for (code, class) in [
        (131047, ErrorClass::Permanent),
        (131050, ErrorClass::Consent),
        (131056, ErrorClass::Throttled),
        (131000, ErrorClass::Transport),
        (132001, ErrorClass::Permanent),
    ] {
        assert_eq!(classify(code).0, class, "{code}");
    }
}

#[test]
fn payloads_follow_the_message_types() {
    let wa = connector("http://127.0.0.1:9");
    let mut r = request("+16315551234");
    assert_eq!(
        wa.payload(&r),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "16315551234", "type": "text", "text": {"preview_url": false, "body": "Hello"}})
    );
    r.media_urls = vec![
        "https://cdn.example.com/a.JPG?size=2".into(),
        "https://cdn.example.com/b.pdf".into(),
    ];
    let p = wa.payload(&r);
    assert_eq!(p["type"], "image");
    assert_eq!(p["image"]["link"], "https://cdn.example.com/a.JPG?size=2");
    assert_eq!(
        p["image"]["caption"], "Hello\nhttps://cdn.example.com/b.pdf",
        "one media per message: the others go as links"
    );
    r.media_urls = vec!["https://cdn.example.com/note.ogg".into()];
    let p = wa.payload(&r);
    assert_eq!(p["type"], "audio");
    assert!(
        p["audio"].get("caption").is_none(),
        "audio takes no caption"
    );
    r.template = Some(ChannelTemplate {
        name: "hello_world".into(),
        language: "en_US".into(),
        parameters: vec![],
    });
    let p = wa.payload(&r);
    assert_eq!(p["type"], "template");
    assert_eq!(
        p["template"],
        json!({"name": "hello_world", "language": {"code": "en_US"}})
    );
}

fn open(
    wa: &WhatsApp,
    body: &Value,
    sig: Option<String>,
) -> Result<Vec<CallbackItem>, CallbackError> {
    let raw = serde_json::to_vec(body).unwrap();
    let sig = sig.unwrap_or_else(|| signature(SECRET, &raw));
    let headers = vec![("x-hub-signature-256".to_owned(), sig)];
    wa.open(&CallbackRequest {
        url: "https://gw.example.com/callbacks/pr_wa",
        headers: &headers,
        body: &raw,
        now: Timestamp::from_millis(0),
    })
}

fn change(value: Value) -> Value {
    let mut value = value;
    value["metadata"] =
        json!({"display_phone_number": "1 415 555 0111", "phone_number_id": NUMBER_ID});
    json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]})
}

#[test]
fn webhooks_are_verified_and_read() {
    let wa = connector("http://127.0.0.1:9");
    let body = change(json!({
        "statuses": [
            {"id": "wamid.1", "status": "sent"},
            {"id": "wamid.1", "status": "delivered"},
            {"id": "wamid.2", "status": "read"},
            {"id": "wamid.3", "status": "failed", "errors": [{"code": 131047, "title": "Re-engagement message"}]},
        ],
        "messages": [
            {"from": "16315551234", "id": "wamid.in1", "type": "image", "image": {"id": "1479537139650973", "mime_type": "image/jpeg", "caption": "the label"}},
            {"from": "16315551234", "id": "wamid.in2", "type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "r1", "title": "Reschedule"}}},
        ],
    }));
    let items = open(&wa, &body, None).unwrap();
    let receipts: Vec<(&str, ReceiptKind, Option<&str>)> = items
        .iter()
        .filter_map(|i| match i {
            CallbackItem::Receipt {
                provider_message_id,
                kind,
                error_code,
                ..
            } => Some((provider_message_id.as_str(), *kind, error_code.as_deref())),
            CallbackItem::Inbound(_) => None,
        })
        .collect();
    assert_eq!(
        receipts,
        [
            ("wamid.1", ReceiptKind::Delivered, None),
            ("wamid.2", ReceiptKind::Read, None),
            (
                "wamid.3",
                ReceiptKind::Undelivered,
                Some("outside_customer_service_window")
            ),
        ]
    );
    let inbound: Vec<_> = items
        .iter()
        .filter_map(|i| match i {
            CallbackItem::Inbound(m) => Some(m),
            CallbackItem::Receipt { .. } => None,
        })
        .collect();
    assert_eq!(inbound[0].from, "+16315551234");
    assert_eq!(inbound[0].to, "+14155550111");
    assert_eq!(inbound[0].text, "the label");
    assert_eq!(
        inbound[0].media_urls,
        ["http://127.0.0.1:9/v21.0/1479537139650973"]
    );
    assert_eq!(inbound[1].text, "Reschedule");

    // Forged, tampered, unsigned; then signed but unusable.
    let forbidden = |r: Result<Vec<CallbackItem>, CallbackError>| {
        assert!(matches!(r, Err(CallbackError::Forbidden(_))), "{r:?}")
    };
    forbidden(open(
        &wa,
        &body,
        Some("sha256=".to_owned() + &"0".repeat(64)),
    ));
    forbidden(open(&wa, &body, Some(signature("other-secret", b"{}"))));
    forbidden(open(&wa, &body, Some(String::new())));
    let mut foreign = body.clone();
    foreign["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("999");
    forbidden(open(&wa, &foreign, None));
    let malformed = |r: Result<Vec<CallbackItem>, CallbackError>| {
        assert!(matches!(r, Err(CallbackError::Malformed(_))), "{r:?}")
    };
    malformed(open(&wa, &json!({"object": "page", "entry": []}), None));
    malformed(open(
        &wa,
        &change(json!({"statuses": [{"id": "w", "status": "exploded"}]})),
        None,
    ));
    malformed(open(
        &wa,
        &change(json!({"statuses": [{"status": "delivered"}]})),
        None,
    ));
    malformed(open(
        &wa,
        &change(json!({"messages": [{"id": "w", "type": "text"}]})),
        None,
    ));
}

#[test]
fn the_subscription_handshake_answers_the_challenge_for_the_right_token_only() {
    let wa = connector("http://127.0.0.1:9");
    let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let ok = q(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", "vt"),
        ("hub.challenge", "42"),
    ]);
    assert_eq!(wa.handshake(&ok), Some(Ok("42".to_owned())));
    let wrong = q(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", "vx"),
        ("hub.challenge", "42"),
    ]);
    assert!(matches!(
        wa.handshake(&wrong),
        Some(Err(CallbackError::Forbidden(_)))
    ));
    let partial = q(&[("hub.mode", "subscribe")]);
    assert!(matches!(
        wa.handshake(&partial),
        Some(Err(CallbackError::Malformed(_)))
    ));
}

#[test]
fn settings_are_checked_strictly() {
    let creds = json!({"access_token": "a", "app_secret": "b", "verify_token": "c"});
    let bad = |config: Value, credentials: Value| {
        WhatsAppConfig::from_spec(&config, &credentials)
            .unwrap_err()
            .field
    };
    assert_eq!(bad(json!({}), creds.clone()), "config.phone_number_id");
    assert_eq!(
        bad(json!({"phone_number_id": "12a"}), creds.clone()),
        "config.phone_number_id"
    );
    assert_eq!(
        bad(
            json!({"phone_number_id": "1", "api_version": "21"}),
            creds.clone()
        ),
        "config.api_version"
    );
    assert_eq!(
        bad(
            json!({"phone_number_id": "1", "base_url": "graph.facebook.com"}),
            creds.clone()
        ),
        "config.base_url"
    );
    assert_eq!(
        bad(json!({"phone_number_id": "1", "extra": 1}), creds.clone()),
        "config.extra"
    );
    assert_eq!(
        bad(
            json!({"phone_number_id": "1"}),
            json!({"access_token": "a", "app_secret": "b"})
        ),
        "credentials.verify_token"
    );
    assert_eq!(
        bad(
            json!({"phone_number_id": "1"}),
            json!({"access_token": " ", "app_secret": "b", "verify_token": "c"})
        ),
        "credentials.access_token"
    );
    let cfg = WhatsAppConfig::from_spec(&json!({"phone_number_id": "1"}), &creds).unwrap();
    assert!(
        !format!("{cfg:?}").contains("\"b\""),
        "Debug redacts secrets"
    );
}
