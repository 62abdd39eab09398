//! Store behaviour, stated once and run on both backends: every case in
//! `conformance!` becomes a SQLite test and a PostgreSQL test. The
//! PostgreSQL tests need `SWITCHBOARD_TEST_DATABASE_URL` (`.ci/run` sets
//! it); each runs in a schema of its own, dropped at the end.

mod conformance;
mod group_commit;
mod messages;
mod multi_node;

use std::sync::Arc;

use serde_json::json;
use switchboard_core::{NewMessage, ProviderId, SubmitInput, Timestamp, WorkspaceId};
use switchboard_store::sql::SqlStore;
use switchboard_store::sql::counts::RecountPolicy;
use switchboard_store::{AcceptRequest, Store};
use tempfile::TempDir;

pub const T0: Timestamp = Timestamp::from_millis(1_790_000_000_000);

pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub ws: WorkspaceId,
    /// For PostgreSQL: the URL of this test's schema (to open more nodes).
    pub url: Option<String>,
    keep: Arc<(Option<TempDir>, Option<PgSchema>)>,
}

impl Fixture {
    /// Keeps the data directory or schema alive while held.
    pub fn keep(&self) -> Arc<(Option<TempDir>, Option<PgSchema>)> {
        self.keep.clone()
    }
}

pub async fn sqlite() -> Fixture {
    sqlite_with(RecountPolicy::default()).await
}

/// `sqlite()` with `policy` for `status_counts`.
pub async fn sqlite_with(policy: RecountPolicy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::open(dir.path())
            .unwrap()
            .with_recount_policy(policy),
    );
    let ws = store.create_workspace("test", T0).await.unwrap().id;
    Fixture {
        store,
        ws,
        url: None,
        keep: Arc::new((Some(dir), None)),
    }
}

pub use switchboard_store::sql::scratch::ScratchSchema as PgSchema;

/// The test server's URL, or `None` (the PostgreSQL cases are skipped).
pub fn pg_url() -> Option<String> {
    PgSchema::test_server_url()
}

/// Runs `f` on a blocking thread, on a connection of its own to the
/// server at `url`, beside the connections under test.
pub async fn on_server<T: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> T + Send + 'static,
) -> T {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        f(&mut postgres::Client::connect(&url, postgres::NoTls).unwrap())
    })
    .await
    .unwrap()
}

pub async fn new_schema(base: &str) -> PgSchema {
    PgSchema::create_async(base, "t")
        .await
        .expect("a schema on the test server")
}

pub async fn postgres() -> Option<Fixture> {
    postgres_with(RecountPolicy::default()).await
}

/// `postgres()` with `policy` for `status_counts`.
pub async fn postgres_with(policy: RecountPolicy) -> Option<Fixture> {
    let base = pg_url()?;
    let schema = new_schema(&base).await;
    let url = schema.url();
    let store: Arc<dyn Store> = Arc::new(
        SqlStore::connect_postgres_async(&url, 4)
            .await
            .unwrap()
            .with_recount_policy(policy),
    );
    let ws = store.create_workspace("test", T0).await.unwrap().id;
    Some(Fixture {
        store,
        ws,
        url: Some(url),
        keep: Arc::new((None, Some(schema))),
    })
}

/// `conformance!(name, |f| async move { … })`: the case on SQLite, and on
/// PostgreSQL when a test server is configured.
#[macro_export]
macro_rules! conformance {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let f = $crate::sqlite().await;
                let keep = f.keep();
                ($body)(f).await;
                drop(keep);
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(f) = $crate::postgres().await else {
                    eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: PostgreSQL case skipped");
                    return;
                };
                let keep = f.keep();
                ($body)(f).await;
                drop(keep);
            }
        }
    };
}

pub fn request(ws: &WorkspaceId, body: serde_json::Value, hash: &str) -> AcceptRequest {
    let input = SubmitInput::from_json(&body).unwrap();
    AcceptRequest {
        workspace_id: ws.clone(),
        message: NewMessage::parse(input, None, T0).unwrap(),
        request_hash: hash.to_owned(),
        provider_id: ProviderId::parse("pr_sim").unwrap(),
        from: "Switchboard".into(),
        now: T0,
        consent_exempt: false,
        hold_until: None,
        require_opt_in: false,
    }
}

pub fn simple(ws: &WorkspaceId) -> AcceptRequest {
    request(ws, json!({"to": "+14155550123", "body": "hi"}), "h")
}

/// The event types of a message's timeline, oldest first.
pub fn event_types(d: &switchboard_store::MessageDetail) -> Vec<&str> {
    d.events.iter().map(|e| e.event_type.as_str()).collect()
}
