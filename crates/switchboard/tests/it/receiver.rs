//! A real HTTP server on loopback that records what it receives and answers
//! from a script, and a Standard Webhooks verifier written independently of
//! the product's signing code.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

#[derive(Debug, Default)]
struct Script {
    received: Vec<Received>,
    answers: VecDeque<Answer>,
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub url: String,
    script: Arc<Mutex<Script>>,
}

async fn handle(
    State(script): State<Arc<Mutex<Script>>>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut s = script.lock().unwrap();
    s.received.push(Received {
        method: method.to_string(),
        headers,
        body,
    });
    let a = s.answers.pop_front().unwrap_or(Answer {
        status: 200,
        body: "ok".into(),
        headers: vec![],
    });
    let mut out = HeaderMap::new();
    for (k, v) in a.headers {
        out.insert(k, v.parse().unwrap());
    }
    (StatusCode::from_u16(a.status).unwrap(), out, a.body)
}

impl Receiver {
    /// Starts a receiver that answers `answers` in order, then 200.
    pub async fn start(answers: Vec<(u16, String)>) -> Receiver {
        Self::start_with(
            answers
                .into_iter()
                .map(|(status, body)| Answer {
                    status,
                    body,
                    headers: vec![],
                })
                .collect(),
        )
        .await
    }

    /// Starts a receiver with full scripted answers (status, body, headers).
    pub async fn start_with(answers: Vec<Answer>) -> Receiver {
        let script = Arc::new(Mutex::new(Script {
            received: Vec::new(),
            answers: answers.into(),
        }));
        let app = Router::new().fallback(handle).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook"),
            script,
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    pub fn event_types(&self) -> Vec<String> {
        self.received()
            .iter()
            .map(|r| r.json()["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Verifies a delivery by the Standard Webhooks algorithm: HMAC-SHA256 over
/// `{webhook-id}.{webhook-timestamp}.{body}` with the base64-decoded key of
/// `whsec_…`, compared with each `v1,` signature in the header.
pub fn verify(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.",
            r.header("webhook-id"),
            r.header("webhook-timestamp")
        )
        .as_bytes(),
    );
    mac.update(&r.body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    r.header("webhook-signature")
        .split(' ')
        .any(|sig| sig.strip_prefix("v1,") == Some(expected.as_str()))
}

#[test]
fn the_verifier_accepts_the_reference_vector() {
    let mut headers = HeaderMap::new();
    headers.insert(
        "webhook-id",
        "msg_p5jXN8AQM9LWM0D4loKWxJek".parse().unwrap(),
    );
    headers.insert("webhook-timestamp", "1614265330".parse().unwrap());
    headers.insert(
        "webhook-signature",
        "v1,bm9ldmVu v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
            .parse()
            .unwrap(),
    );
    let r = Received {
        method: "POST".into(),
        headers,
        body: Bytes::from_static(br#"{"test": 2432232314}"#),
    };
    assert!(verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &r));
    assert!(!verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", &r));
}
