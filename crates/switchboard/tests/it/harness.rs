//! `spawn_app()`: a real server on port 0 over a fresh data directory, on a
//! `ManualClock`, with workers *not* running: a test drives them with
//! `drive()` so that retry timing needs no sleeps.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use switchboard::app;
use switchboard::config::{Config, Secret};
use switchboard_core::{Clock, ManualClock, Timestamp};
use switchboard_store::Store;
use switchboard_worker::Worker;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub clock: ManualClock,
    pub worker: Worker,
    pub webhooks: switchboard_worker::WebhookDeliverer,
    pub store: Arc<dyn Store>,
    pub sim: Arc<switchboard_providers::sim::SimProvider>,
    _dir: TempDir,
    _schema: Option<PgSchema>,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn test_config(dir: &TempDir) -> Config {
    let mut c = Config {
        data_dir: dir.path().to_path_buf(),
        admin_token: Some(Secret(ADMIN_TOKEN.into())),
        ..Config::default()
    };
    c.sim.latency_ms = 0;
    c.sim.receipt_delay_ms = 1_000;
    // "Never acknowledged" hangs until this timeout: keep it short in tests.
    c.dispatcher.send_timeout_ms = 100;
    c.dispatcher.lease_seconds = 5;
    // Test receivers listen on loopback: allow it explicitly.
    c.webhook_allow_networks = "127.0.0.0/8,::1/128".into();
    c
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(&dir);
    // `SWITCHBOARD_TEST_BACKEND=postgres` runs the suite on PostgreSQL.
    let schema = match (
        std::env::var("SWITCHBOARD_TEST_BACKEND").as_deref(),
        pg_url(),
    ) {
        (Ok("postgres"), Some(url)) => {
            let schema = new_schema(&url).await;
            config.database_url = Some(Secret(schema.url()));
            Some(schema)
        }
        _ => None,
    };
    tweak(&mut config);
    let clock = ManualClock::new(Timestamp::from_millis(1_790_000_000_000));
    let built = app::build(&config, Arc::new(clock.clone()))
        .await
        .expect("app builds");
    let worker = built.worker.clone();
    let webhooks = built.webhooks.clone();
    let store = built.store.clone();
    let sim = built.sim.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    tokio::spawn(app::serve(built, listener, shutdown.clone(), false));
    TestApp {
        base: format!("http://{addr}"),
        client: client(),
        clock,
        worker,
        webhooks,
        store,
        sim,
        _dir: dir,
        _schema: schema,
        shutdown,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Creates a workspace and returns (workspace id, API key).
    pub async fn workspace(&self, name: &str) -> (String, String) {
        let ws: Value = self
            .client
            .post(self.url("/v1/workspaces"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "name": name }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = ws["id"].as_str().expect("workspace id").to_owned();
        let key: Value = self
            .client
            .post(self.url(&format!("/v1/workspaces/{id}/keys")))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (id, key["key"].as_str().expect("key").to_owned())
    }

    pub async fn post_message(&self, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/v1/messages"))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Submits and expects a 202; returns the message id.
    pub async fn send(&self, key: &str, body: Value) -> String {
        let resp = self.post_message(key, &body).await;
        assert_eq!(resp.status(), 202, "submit {body}");
        let v: Value = resp.json().await.unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    pub async fn get_message(&self, key: &str, id: &str) -> Value {
        let resp = self
            .client
            .get(self.url(&format!("/v1/messages/{id}")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Runs the workers, moving the clock to each next due time, until
    /// nothing more is due. Returns how far the clock moved.
    pub async fn drive(&self) -> Duration {
        let start = self.clock.now();
        for _ in 0..200 {
            self.worker.run_until_idle().await.expect("worker pass");
            while self.webhooks.deliver_once().await.expect("webhook pass") > 0 {}
            let a = self.worker.next_due_at().await.expect("next due");
            let b = self.webhooks.next_due_at().await.expect("next webhook due");
            let next = match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(t) => self.clock.advance_to(t),
                None => return self.clock.now().since(start),
            }
        }
        panic!("work was still due after 200 steps");
    }
}

/// The event types of a message's timeline, in order.
pub fn timeline(message: &Value) -> Vec<String> {
    message["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

impl TestApp {
    pub fn clock_now_ms(&self) -> i64 {
        self.clock.now().as_millis()
    }
}

impl TestApp {
    pub fn clock_now_ts(&self) -> Timestamp {
        self.clock.now()
    }
}

/// An HTTP client for tests. The workspace builds reqwest on rustls without
/// a default crypto provider; install the one the product uses.
pub fn client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new()
}

pub use switchboard_store::sql::scratch::ScratchSchema as PgSchema;

/// The PostgreSQL test server (`SWITCHBOARD_TEST_DATABASE_URL`), if any.
pub fn pg_url() -> Option<String> {
    PgSchema::test_server_url()
}

/// A schema of its own on the test server, dropped at the end.
pub async fn new_schema(base: &str) -> PgSchema {
    PgSchema::create_async(base, "it")
        .await
        .expect("a schema on the PostgreSQL test server")
}

/// A `GET` with a bearer token: the status and the JSON answer (`call`).
pub async fn get(app: &TestApp, path: &str, bearer: &str) -> (u16, Value) {
    call(app, reqwest::Method::GET, path, Some(bearer), &Value::Null).await
}

/// One request with an optional bearer token and a JSON body (none when
/// `body` is null); the status and the JSON answer (null if none).
pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(k) = bearer {
        req = req.bearer_auth(k);
    }
    if !body.is_null() {
        req = req.json(body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}
