//! The webhook receiver a CRM would run: verifies every Standard Webhooks
//! signature, answers 200, and records when each message's terminal event
//! (`message.delivered` / `message.failed`) arrived.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

#[derive(Default)]
struct Inner {
    /// Signing keys by endpoint number.
    keys: HashMap<usize, Vec<u8>>,
    /// Deliveries received, verified or not.
    deliveries: usize,
    /// Deliveries whose signature did not verify.
    bad_signatures: usize,
    /// Distinct webhook ids seen.
    ids: std::collections::HashSet<String>,
    /// First arrival of a terminal event, by message id.
    terminal: HashMap<String, Instant>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    inner: Arc<Mutex<Inner>>,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

/// What the receiver has seen.
#[derive(Debug, Clone)]
pub struct Seen {
    pub deliveries: usize,
    pub distinct: usize,
    pub bad_signatures: usize,
    pub terminal: HashMap<String, Instant>,
    pub last: Option<Instant>,
}

fn verify(key: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes());
    mac.update(body);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    h("webhook-signature")
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}

async fn hook(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut s = inner.lock().expect("receiver lock");
    s.deliveries += 1;
    s.first.get_or_insert(now);
    s.last = Some(now);
    let ok = s.keys.get(&n).is_some_and(|k| verify(k, &headers, &body));
    if !ok {
        s.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
        s.ids.insert(id.to_owned());
    }
    let event = parsed["event"].as_str().unwrap_or_default();
    if (event == "message.delivered" || event == "message.failed")
        && let Some(id) = parsed["data"]["id"].as_str()
    {
        s.terminal.entry(id.to_owned()).or_insert(now);
    }
    StatusCode::OK
}

impl Receiver {
    /// Starts on a free loopback port.
    pub async fn start() -> anyhow::Result<Receiver> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/hook/{n}", axum::routing::post(hook))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { inner, base })
    }

    /// The URL of endpoint `n`, and registers its `whsec_…` secret.
    pub fn endpoint(&self, n: usize, secret: &str) -> anyhow::Result<()> {
        let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret))?;
        self.inner
            .lock()
            .expect("receiver lock")
            .keys
            .insert(n, key);
        Ok(())
    }

    /// What arrived so far.
    pub fn seen(&self) -> Seen {
        let s = self.inner.lock().expect("receiver lock");
        Seen {
            deliveries: s.deliveries,
            distinct: s.ids.len(),
            bad_signatures: s.bad_signatures,
            terminal: s.terminal.clone(),
            last: s.last,
        }
    }

    /// Counts of what arrived so far (cheap: no copy of the terminal map).
    pub fn counts(&self) -> (usize, usize, usize) {
        let s = self.inner.lock().expect("receiver lock");
        (s.deliveries, s.ids.len(), s.terminal.len())
    }
}
