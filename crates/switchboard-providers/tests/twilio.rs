//! The Twilio connector against a mock of Twilio's Messages API: a real
//! HTTP server on 127.0.0.1 answering as Twilio documents (201 with the
//! message resource; 400/429/5xx with its error object), and callbacks
//! signed as Twilio signs them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use switchboard_core::{ErrorClass, ReceiptKind, Timestamp};
use switchboard_providers::callback::{
    CallbackError, CallbackHandler, CallbackItem, CallbackRequest,
};
use switchboard_providers::twilio::{Twilio, TwilioConfig, signature};
use switchboard_providers::{Provider, SendRequest};

const SID: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "twilio-auth-token";

/// A request as the mock received it: path, `Authorization`, form fields.
type Received = (String, Option<String>, Vec<(String, String)>);

#[derive(Default)]
struct Seen {
    requests: Vec<Received>,
}

/// Answers by the `To` number, as Twilio would for such a number.
async fn messages(
    State(seen): State<Arc<Mutex<Seen>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock()
        .unwrap()
        .requests
        .push((uri.path().to_owned(), auth.clone(), form.clone()));
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{SID}:{TOKEN}"))
    );
    if auth.as_deref() != Some(expected.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            r#"{"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}"#,
        )
            .into_response();
    }
    let to = form
        .iter()
        .find(|(k, _)| k == "To")
        .map(|(_, v)| v.as_str());
    let error = |status: StatusCode, code: u32, message: &str| {
        (
            status,
            format!(
                r#"{{"code": {code}, "message": "{message}", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {}}}"#,
                status.as_u16()
            ),
        )
            .into_response()
    };
    match to {
        Some("+15005550001") => error(
            StatusCode::BAD_REQUEST,
            21211,
            "The 'To' number +15005550001 is not a valid phone number.",
        ),
        Some("+15005550009") => error(
            StatusCode::BAD_REQUEST,
            21610,
            "Attempt to send to unsubscribed recipient",
        ),
        Some("+15005550429") => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
            r.headers_mut().insert("retry-after", "3".parse().unwrap());
            r
        }
        Some("+15005550503") => (StatusCode::SERVICE_UNAVAILABLE, "upstream down").into_response(),
        _ => (
            StatusCode::CREATED,
            r#"{"account_sid": "AC00000000000000000000000000000001", "api_version": "2010-04-01", "body": "hi", "direction": "outbound-api", "error_code": null, "error_message": null, "num_segments": "1", "sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}"#,
        )
            .into_response(),
    }
}

async fn mock() -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = Router::new()
        .route("/2010-04-01/Accounts/{sid}/Messages.json", post(messages))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

fn twilio(base: &str, token: &str) -> Twilio {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cfg = TwilioConfig::new(SID, token);
    cfg.base_url = base.to_owned();
    cfg.status_callback = Some("https://gw.example.com/callbacks/pr_twilio".into());
    cfg.timeout = Duration::from_secs(5);
    Twilio::new(cfg, reqwest::Client::new())
}

fn send_to(to: &str) -> SendRequest {
    SendRequest {
        idempotency_key: "msg_1".into(),
        to: to.into(),
        from: "+14155550100".into(),
        channel: "sms".into(),
        body: "Your code is 1234 & welcome".into(),
        media_urls: vec![
            "https://cdn.example.com/a.png".into(),
            "https://cdn.example.com/b.png".into(),
        ],
        template: None,
    }
}

#[tokio::test]
async fn a_send_posts_the_documented_form_with_basic_auth_and_answers_the_sid() {
    let (base, seen) = mock().await;
    let accepted = twilio(&base, TOKEN)
        .send(&send_to("+14155550123"))
        .await
        .unwrap();
    assert_eq!(
        accepted.provider_message_id,
        "SM0123456789abcdef0123456789abcdef"
    );
    let seen = seen.lock().unwrap();
    let (path, _, form) = &seen.requests[0];
    assert_eq!(path, &format!("/2010-04-01/Accounts/{SID}/Messages.json"));
    let get_all = |k: &str| -> Vec<&str> {
        form.iter()
            .filter(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(get_all("To"), ["+14155550123"]);
    assert_eq!(get_all("From"), ["+14155550100"]);
    assert_eq!(get_all("Body"), ["Your code is 1234 & welcome"]);
    assert_eq!(
        get_all("MediaUrl"),
        [
            "https://cdn.example.com/a.png",
            "https://cdn.example.com/b.png"
        ]
    );
    assert_eq!(
        get_all("StatusCallback"),
        ["https://gw.example.com/callbacks/pr_twilio"]
    );
}

#[tokio::test]
async fn whatsapp_addresses_carry_twilios_prefix() {
    let (base, seen) = mock().await;
    let mut req = send_to("+14155550123");
    req.channel = "whatsapp".into();
    twilio(&base, TOKEN).send(&req).await.unwrap();
    let seen = seen.lock().unwrap();
    let form = &seen.requests[0].2;
    assert!(form.contains(&("To".into(), "whatsapp:+14155550123".into())));
    assert!(form.contains(&("From".into(), "whatsapp:+14155550100".into())));
}

#[tokio::test]
async fn failures_map_to_error_classes_and_codes() {
    let (base, _) = mock().await;
    let t = twilio(&base, TOKEN);
    let cases = [
        ("+15005550001", ErrorClass::Permanent, "invalid_number"),
        ("+15005550009", ErrorClass::Consent, "recipient_opted_out"),
        ("+15005550429", ErrorClass::Throttled, "rate_limited"),
        (
            "+15005550503",
            ErrorClass::Transport,
            "upstream_unavailable",
        ),
    ];
    for (to, class, code) in cases {
        let e = t.send(&send_to(to)).await.unwrap_err();
        assert_eq!((e.class, e.code.as_str()), (class, code), "{to}: {e}");
    }
    let throttled = t.send(&send_to("+15005550429")).await.unwrap_err();
    assert_eq!(throttled.retry_after, Some(Duration::from_secs(3)));
    let invalid = t.send(&send_to("+15005550001")).await.unwrap_err();
    assert!(invalid.message.contains("21211"), "{}", invalid.message);
    assert_eq!(invalid.retry_after, None);
    // Wrong credentials: Twilio's 20003.
    let e = twilio(&base, "wrong")
        .send(&send_to("+14155550123"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.class, e.code.as_str()),
        (ErrorClass::Permanent, "provider_auth_failed")
    );
}

#[tokio::test]
async fn an_unreachable_api_is_a_transport_error() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = twilio(&base, TOKEN)
        .send(&send_to("+14155550123"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transport);
}

#[test]
fn the_signature_matches_twilios_published_example() {
    // From Twilio's security documentation (api-snippets,
    // security/signature_validation).
    let params: Vec<(String, String)> = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(
        signature(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            &params
        ),
        "GvWf1cFY/Q7PnoempGyD5oXAezc="
    );
}

const CALLBACK_URL: &str = "https://gw.example.com/callbacks/pr_twilio";

fn form(params: &[(&str, &str)]) -> (Vec<u8>, Vec<(String, String)>) {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &owned {
        s.append_pair(k, v);
    }
    (s.finish().into_bytes(), owned)
}

fn open(
    t: &Twilio,
    url: &str,
    headers: Vec<(String, String)>,
    body: &[u8],
) -> Result<Vec<CallbackItem>, CallbackError> {
    t.open(&CallbackRequest {
        url,
        headers: &headers,
        body,
        now: Timestamp::from_millis(1_790_000_000_000),
    })
}

fn signed_form(url: &str, params: &[(&str, &str)]) -> (Vec<u8>, Vec<(String, String)>) {
    let (body, owned) = form(params);
    let headers = vec![
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        ("x-twilio-signature".into(), signature(TOKEN, url, &owned)),
    ];
    (body, headers)
}

#[test]
fn status_callbacks_become_receipts_with_their_error_codes() {
    let t = twilio("http://127.0.0.1:9", TOKEN);
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[
            ("AccountSid", SID),
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("MessageStatus", "delivered"),
            ("To", "+14155550123"),
            ("From", "+14155550100"),
            ("ApiVersion", "2010-04-01"),
        ],
    );
    let items = open(&t, CALLBACK_URL, headers, &body).unwrap();
    assert!(matches!(
        items.as_slice(),
        [CallbackItem::Receipt { provider_message_id, kind: ReceiptKind::Delivered, .. }]
            if provider_message_id == "SM0123456789abcdef0123456789abcdef"
    ));
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[
            ("AccountSid", SID),
            ("MessageSid", "SM1"),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
        ],
    );
    let items = open(&t, CALLBACK_URL, headers, &body).unwrap();
    let [
        CallbackItem::Receipt {
            kind,
            error_code,
            raw,
            ..
        },
    ] = items.as_slice()
    else {
        panic!("{items:?}")
    };
    assert_eq!(*kind, ReceiptKind::Undelivered);
    assert_eq!(error_code.as_deref(), Some("unreachable_destination"));
    assert!(raw.contains("\"ErrorCode\":\"30003\""), "{raw}");
    // Intermediate statuses are known and carry nothing new.
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[
            ("AccountSid", SID),
            ("MessageSid", "SM1"),
            ("MessageStatus", "sent"),
        ],
    );
    assert!(open(&t, CALLBACK_URL, headers, &body).unwrap().is_empty());
}

#[test]
fn an_inbound_message_is_read_with_its_media() {
    let t = twilio("http://127.0.0.1:9", TOKEN);
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[
            ("AccountSid", SID),
            ("MessageSid", "SMin1"),
            ("SmsStatus", "received"),
            ("From", "+14155550123"),
            ("To", "+14155550100"),
            ("Body", "STOP"),
            ("NumMedia", "1"),
            ("MediaUrl0", "https://api.twilio.com/media/ME1"),
        ],
    );
    let items = open(&t, CALLBACK_URL, headers, &body).unwrap();
    let [CallbackItem::Inbound(m)] = items.as_slice() else {
        panic!("{items:?}")
    };
    assert_eq!(
        (
            m.from.as_str(),
            m.to.as_str(),
            m.text.as_str(),
            m.channel.as_str()
        ),
        ("+14155550123", "+14155550100", "STOP", "sms")
    );
    assert_eq!(m.media_urls, ["https://api.twilio.com/media/ME1"]);
    assert_eq!(m.provider_message_id.as_deref(), Some("SMin1"));
    // WhatsApp inbound: the prefix says the channel.
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[
            ("AccountSid", SID),
            ("MessageSid", "SMin2"),
            ("SmsStatus", "received"),
            ("From", "whatsapp:+14155550123"),
            ("To", "whatsapp:+14155550100"),
            ("Body", "hi"),
        ],
    );
    let items = open(&t, CALLBACK_URL, headers, &body).unwrap();
    let [CallbackItem::Inbound(m)] = items.as_slice() else {
        panic!("{items:?}")
    };
    assert_eq!(
        (m.from.as_str(), m.channel.as_str()),
        ("+14155550123", "whatsapp")
    );
}

#[test]
fn forged_tampered_unsigned_and_foreign_callbacks_are_refused() {
    let t = twilio("http://127.0.0.1:9", TOKEN);
    let params = [
        ("AccountSid", SID),
        ("MessageSid", "SM1"),
        ("MessageStatus", "delivered"),
    ];
    // Signed with another token.
    let (body, owned) = form(&params);
    let forged = vec![(
        "x-twilio-signature".into(),
        signature("not-the-token", CALLBACK_URL, &owned),
    )];
    assert!(matches!(
        open(&t, CALLBACK_URL, forged, &body),
        Err(CallbackError::Forbidden(_))
    ));
    // Signed correctly, then the body changed.
    let (_, headers) = signed_form(CALLBACK_URL, &params);
    let (tampered, _) = form(&[
        ("AccountSid", SID),
        ("MessageSid", "SM1"),
        ("MessageStatus", "failed"),
    ]);
    assert!(matches!(
        open(&t, CALLBACK_URL, headers.clone(), &tampered),
        Err(CallbackError::Forbidden(_))
    ));
    // Signed for another URL.
    let (body, headers) = signed_form("https://evil.example.com/callbacks/pr_twilio", &params);
    assert!(matches!(
        open(&t, CALLBACK_URL, headers, &body),
        Err(CallbackError::Forbidden(_))
    ));
    // No signature.
    let (body, _) = form(&params);
    assert!(matches!(
        open(&t, CALLBACK_URL, vec![], &body),
        Err(CallbackError::Forbidden(_))
    ));
    // Correctly signed, but for another account.
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[
            ("AccountSid", "AC999"),
            ("MessageSid", "SM1"),
            ("MessageStatus", "delivered"),
        ],
    );
    assert!(matches!(
        open(&t, CALLBACK_URL, headers, &body),
        Err(CallbackError::Forbidden(_))
    ));
    // Authentic but unreadable: 400, not 403.
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[
            ("AccountSid", SID),
            ("MessageSid", "SM1"),
            ("MessageStatus", "exploded"),
        ],
    );
    assert!(matches!(
        open(&t, CALLBACK_URL, headers, &body),
        Err(CallbackError::Malformed(_))
    ));
    let (body, headers) = signed_form(
        CALLBACK_URL,
        &[("AccountSid", SID), ("MessageStatus", "delivered")],
    );
    assert!(matches!(
        open(&t, CALLBACK_URL, headers, &body),
        Err(CallbackError::Malformed(_))
    ));
}

#[test]
fn a_url_signed_with_or_without_its_default_port_is_accepted() {
    let t = twilio("http://127.0.0.1:9", TOKEN);
    let params = [
        ("AccountSid", SID),
        ("MessageSid", "SM1"),
        ("MessageStatus", "read"),
    ];
    // Twilio was configured with :443; the request arrives without it.
    let (body, headers) = signed_form("https://gw.example.com:443/callbacks/pr_twilio", &params);
    assert_eq!(open(&t, CALLBACK_URL, headers, &body).unwrap().len(), 1);
    // And the other way round.
    let (body, headers) = signed_form(CALLBACK_URL, &params);
    assert_eq!(
        open(
            &t,
            "https://gw.example.com:443/callbacks/pr_twilio",
            headers,
            &body
        )
        .unwrap()
        .len(),
        1
    );
}

#[test]
fn a_json_callback_is_signed_over_the_url_and_its_body_hash() {
    use sha2::{Digest, Sha256};
    let t = twilio("http://127.0.0.1:9", TOKEN);
    let body =
        format!(r#"{{"AccountSid":"{SID}","MessageSid":"SM1","MessageStatus":"delivered"}}"#);
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    let url = format!("{CALLBACK_URL}?bodySHA256={hash}");
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("x-twilio-signature".to_owned(), signature(TOKEN, &url, &[])),
    ];
    assert_eq!(
        open(&t, &url, headers.clone(), body.as_bytes())
            .unwrap()
            .len(),
        1
    );
    // The body changed: its hash no longer matches the signed URL.
    let changed = body.replace("delivered", "failed");
    assert!(matches!(
        open(&t, &url, headers, changed.as_bytes()),
        Err(CallbackError::Forbidden(_))
    ));
}
