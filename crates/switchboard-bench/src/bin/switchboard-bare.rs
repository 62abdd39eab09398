//! The bare accept probe, as a server of its own: the least a
//! durable accept can be on this machine, against which `accept` is
//! read (`switchboard-bench accept-bare`).
//!
//! Issue 6 describes it: "axum, serde, one SQLite writer committing
//! whatever has queued the moment the previous commit ends, no linger".
//! So this is exactly that and nothing more:
//! - `POST /v1/messages`: the body parsed by serde into the fields the
//!   benchmark sends, handed to the writer thread, answered 202 with a
//!   small JSON body once its transaction has committed;
//! - `GET /healthz`: 200;
//! - one table, its row id the only B-tree; WAL with `synchronous =
//!   FULL`, so every commit is synced before its answers go out;
//! - the writer (a thread named `db-writer`, as the product's, so the
//!   benchmark's `writer` column reads it) takes the first job and every
//!   job queued behind it, and commits them in one transaction.
//!
//! What it leaves out is everything the product does per accept: API
//! keys, validation of the number and the body, segments, senders,
//! consent, idempotency keys and their lookup, the request hash, the
//! message's indexes (by workspace, status, queue, reference, recipient),
//! the sync handed to a thread of its own, metrics. It is not a product:
//! it is the floor. Usage: `switchboard-bare --listen ADDR --data-dir DIR
//! [--database-url URL]`.
//!
//! With `--database-url` (`switchboard-bench accept-pg-bare`) the writer
//! stores on PostgreSQL instead, as the issue's "bare group-commit
//! probe" there did: one connection, and per batch one multi-row
//! `INSERT` (arrays, `UNNEST`) committed on its own with the server's
//! default `synchronous_commit`, so it returns once the commit is
//! flushed. One table, its `BIGSERIAL` key the only index.
//!
//! `SWITCHBOARD_BARE_WITH` (`switchboard-bench accept-bare --bare-with`)
//! adds parts of what the product does, one at a time, comma-separated,
//! so the way from the floor to `accept` can be measured step by step:
//! - `request`: the request side's own work: the bearer key's SHA-256
//!   checked against the one key's, the body parsed into a
//!   `serde_json::Value` and from it into the fields, and the request
//!   hash (SHA-256 of the body's JSON without its idempotency key, hex);
//! - `row`: the product's message row: a text id (`msg_` and a ULID-like
//!   26 characters) as its primary key, so a second B-tree, and the
//!   columns an accept fills (workspace, channel, encoding, segments,
//!   category, priority, status twice, expiry, the request hash, times);
//! - `indexes` (with `row`): the four indexes of the product's message
//!   table that an accept writes in its own commit on SQLite: by
//!   workspace, by status, the queue, by reference; or one of them by
//!   its name (`by_workspace`, `by_status`, `queued`, `by_ref`);
//! - `compact` (with `row`): the same row and indexes with integer keys
//!   where the product has text: the row id as the key (the text id
//!   carries it, so it needs no index of its own), the workspace and the
//!   status as integers in the indexes. Not the product's layout: a
//!   measure of what a smaller key would save.

use std::path::PathBuf;
use std::sync::mpsc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_core::secret::hex_lower;
use tokio::sync::oneshot;

/// The fields the benchmark's messages carry.
#[derive(Deserialize)]
struct Submit {
    to: String,
    body: String,
    client_ref: Option<String>,
    idempotency_key: Option<String>,
}

#[derive(Serialize)]
struct Accepted {
    id: String,
    status: &'static str,
    client_ref: Option<String>,
}

/// A message for the writer, and where its row id goes once committed.
struct Job {
    message: Submit,
    /// The request hash (`request`), else empty.
    hash: String,
    done: oneshot::Sender<Result<String, String>>,
}

/// The parts of the product added to the floor (`SWITCHBOARD_BARE_WITH`).
#[derive(Debug, Clone, Default)]
struct With {
    request: bool,
    row: bool,
    /// Of [`PRODUCT_INDEXES`], by name.
    indexes: Vec<&'static str>,
    compact: bool,
}

impl With {
    fn from_env() -> anyhow::Result<With> {
        let mut with = With::default();
        let list = std::env::var("SWITCHBOARD_BARE_WITH").unwrap_or_default();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "request" => with.request = true,
                "row" => with.row = true,
                "compact" => with.compact = true,
                "indexes" => with.indexes = PRODUCT_INDEXES.iter().map(|i| i.0).collect(),
                other => match PRODUCT_INDEXES.iter().find(|i| i.0 == other) {
                    Some(index) => with.indexes.push(index.0),
                    None => anyhow::bail!(
                        "SWITCHBOARD_BARE_WITH: unknown part {other:?} (request, row, indexes, or an index: by_workspace, by_status, queued, by_ref)"
                    ),
                },
            }
        }
        if (!with.indexes.is_empty() || with.compact) && !with.row {
            anyhow::bail!(
                "SWITCHBOARD_BARE_WITH: `indexes` or `compact` needs `row` (they change its table)"
            );
        }
        Ok(with)
    }
}

/// What the handlers share.
#[derive(Clone)]
struct App {
    writer: mpsc::Sender<Job>,
    /// SHA-256 (hex) of the one API key, `none` (`request`).
    key_hash: String,
}

/// The benchmark's API key for this probe.
const KEY: &str = "none";

/// The product's message table (`row`), as in `switchboard-store`'s
/// schema, or with integer keys (`compact`): the row id as its key (the
/// text id then carries it), the workspace and the status as numbers.
fn messages_table(compact: bool) -> String {
    let (key, workspace, status) = if compact {
        (
            "seq INTEGER PRIMARY KEY, id TEXT NOT NULL",
            "workspace INTEGER NOT NULL",
            "INTEGER",
        )
    } else {
        ("id TEXT PRIMARY KEY", "workspace_id TEXT NOT NULL", "TEXT")
    };
    format!(
        "CREATE TABLE IF NOT EXISTS messages (
    {key}, {workspace}, to_phone TEXT NOT NULL, from_addr TEXT,
    channel TEXT NOT NULL, body TEXT NOT NULL, media_urls TEXT, encoding TEXT NOT NULL,
    segments INTEGER NOT NULL, client_ref TEXT, metadata TEXT, category TEXT NOT NULL,
    priority INTEGER NOT NULL, timezone TEXT, status {status} NOT NULL, initial_status {status} NOT NULL,
    provider_id TEXT, provider_message_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER, lease_until INTEGER, claimed_at INTEGER, send_at INTEGER,
    expires_at INTEGER NOT NULL, error_code TEXT, error_message TEXT, idempotency_key TEXT,
    request_hash TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL)"
    )
}

/// The four indexes of the product's message table that an accept
/// writes (`indexes`): each by name, as in the product, and in its
/// `compact` form.
const PRODUCT_INDEXES: [(&str, &str, &str); 4] = [
    (
        "queued",
        "CREATE INDEX IF NOT EXISTS messages_queued ON messages (priority DESC, next_attempt_at) WHERE status = 'queued'",
        "CREATE INDEX IF NOT EXISTS messages_queued ON messages (priority DESC, next_attempt_at) WHERE status = 0",
    ),
    (
        "by_workspace",
        "CREATE INDEX IF NOT EXISTS messages_by_workspace ON messages (workspace_id, id)",
        "CREATE INDEX IF NOT EXISTS messages_by_workspace ON messages (workspace, seq)",
    ),
    (
        "by_status",
        "CREATE INDEX IF NOT EXISTS messages_by_status ON messages (workspace_id, status, id)",
        "CREATE INDEX IF NOT EXISTS messages_by_status ON messages (workspace, status, seq)",
    ),
    (
        "by_ref",
        "CREATE INDEX IF NOT EXISTS messages_by_ref ON messages (workspace_id, client_ref, id) WHERE client_ref IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS messages_by_ref ON messages (workspace, client_ref, seq) WHERE client_ref IS NOT NULL",
    ),
];

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut data_dir: Option<PathBuf> = None;
    let mut database_url: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().unwrap_or_default(),
            "--data-dir" => data_dir = args.next().map(PathBuf::from),
            "--database-url" => database_url = args.next(),
            other => anyhow::bail!(
                "unknown argument {other:?}: usage: switchboard-bare --listen ADDR --data-dir DIR [--database-url URL]"
            ),
        }
    }
    let Some(data_dir) = data_dir else {
        anyhow::bail!("--data-dir is required");
    };
    let with = With::from_env()?;
    let (tx, rx) = mpsc::channel::<Job>();
    if let Some(url) = database_url {
        if with.row || with.compact || !with.indexes.is_empty() {
            anyhow::bail!(
                "on PostgreSQL the bare probe has its one table only (SWITCHBOARD_BARE_WITH: request at most)"
            );
        }
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS messages (
                 id BIGSERIAL PRIMARY KEY,
                 to_phone TEXT NOT NULL,
                 body TEXT NOT NULL,
                 client_ref TEXT,
                 idempotency_key TEXT,
                 created_at BIGINT NOT NULL
             )",
        )?;
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || pg_writer(client, &rx))?;
    } else {
        let conn = sqlite(&data_dir, &with)?;
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn({
                let with = with.clone();
                move || writer(conn, &rx, &with)
            })?;
    }
    let app = App {
        writer: tx,
        key_hash: hex_lower(&Sha256::digest(KEY.as_bytes())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        // The line the benchmark waits for, as `switchboard serve` prints it.
        println!(
            "switchboard listening on http://{} (bare probe)",
            listener.local_addr()?
        );
        let submit = if with.request {
            post(submit_with_request)
        } else {
            post(submit)
        };
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/v1/messages", submit)
            .with_state(app);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn submit(State(app): State<App>, Json(message): Json<Submit>) -> axum::response::Response {
    stored(&app, message, String::new()).await
}

/// `submit` with the request side's own work (`request`).
async fn submit_with_request(
    State(app): State<App>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if hex_lower(&Sha256::digest(token.as_bytes())) != app.key_hash {
        return (StatusCode::UNAUTHORIZED, "unknown API key").into_response();
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "malformed JSON").into_response();
    };
    let message = match Submit::deserialize(&value) {
        Ok(m) => m,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    };
    let mut without_key = value;
    if let Some(map) = without_key.as_object_mut() {
        map.remove("idempotency_key");
    }
    let hash = hex_lower(&Sha256::digest(
        serde_json::to_vec(&without_key).unwrap_or_default(),
    ));
    stored(&app, message, hash).await
}

/// Hands the message to the writer and answers once it is committed.
async fn stored(app: &App, message: Submit, hash: String) -> axum::response::Response {
    let client_ref = message.client_ref.clone();
    let (done, answer) = oneshot::channel();
    if app
        .writer
        .send(Job {
            message,
            hash,
            done,
        })
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "the writer has stopped").into_response();
    }
    match answer.await {
        Ok(Ok(id)) => (
            StatusCode::ACCEPTED,
            Json(Accepted {
                id,
                status: "queued",
                client_ref,
            }),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the writer has stopped").into_response(),
    }
}

/// The SQLite database in `data_dir`: WAL, every commit synced, and the
/// table (with the parts of the product `with` names).
fn sqlite(data_dir: &std::path::Path, with: &With) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(data_dir.join("bare.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    if with.row {
        conn.execute_batch(&messages_table(with.compact))?;
        for (name, sql, compact) in PRODUCT_INDEXES {
            if with.indexes.contains(&name) {
                conn.execute_batch(if with.compact { compact } else { sql })?;
            }
        }
    } else {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS messages (
                 id INTEGER PRIMARY KEY,
                 to_phone TEXT NOT NULL,
                 body TEXT NOT NULL,
                 client_ref TEXT,
                 idempotency_key TEXT,
                 created_at INTEGER NOT NULL
             )",
        )?;
    }
    Ok(conn)
}

/// Commits whatever has queued, one transaction at a time, and answers
/// each job after its commit.
fn writer(mut conn: rusqlite::Connection, rx: &mpsc::Receiver<Job>, with: &With) {
    let mut seq: u64 = 0;
    while let Some((batch, now)) = next_batch(rx) {
        let stored = (|| -> rusqlite::Result<Vec<String>> {
            let tx = conn.transaction()?;
            let mut ids = Vec::with_capacity(batch.len());
            if with.row {
                // The same parameters for both layouts: ?1 the row id
                // (`compact` only), ?2 the text id, then the message.
                let mut insert = tx.prepare_cached(if with.compact {
                    "INSERT INTO messages (seq, id, workspace, to_phone, channel, body, encoding, segments,
                         client_ref, category, priority, status, initial_status, next_attempt_at,
                         expires_at, idempotency_key, request_hash, created_at, updated_at)
                     VALUES (?1, ?2, 1, ?3, 'sms', ?4, 'gsm7', 1, ?5,
                         'transactional', 0, 0, 0, ?6, ?7, ?8, ?9, ?6, ?6)"
                } else {
                    "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments,
                         client_ref, category, priority, status, initial_status, next_attempt_at,
                         expires_at, idempotency_key, request_hash, created_at, updated_at)
                     VALUES (?2, 'ws_01JBARE0000000000000000000', ?3, 'sms', ?4, 'gsm7', 1, ?5,
                         'transactional', 0, 'queued', 'queued', ?6, ?7, ?8, ?9, ?6, ?6)"
                })?;
                for job in &batch {
                    let m = &job.message;
                    seq += 1;
                    let id = if with.compact {
                        // The row id in the text id, so it is found
                        // without an index of its own.
                        format!("msg_{seq:013x}{now:013x}")
                    } else {
                        // Time first, then a counter, as a ULID orders.
                        format!("msg_{now:013x}{seq:013x}")
                    };
                    insert.execute(rusqlite::params![
                        i64::try_from(seq).unwrap_or(i64::MAX),
                        id,
                        m.to,
                        m.body,
                        m.client_ref,
                        now,
                        now + 86_400_000,
                        m.idempotency_key,
                        job.hash
                    ])?;
                    ids.push(id);
                }
            } else {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO messages (to_phone, body, client_ref, idempotency_key, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for job in &batch {
                    let m = &job.message;
                    insert.execute(rusqlite::params![
                        m.to,
                        m.body,
                        m.client_ref,
                        m.idempotency_key,
                        now
                    ])?;
                    ids.push(format!("msg_{}", tx.last_insert_rowid()));
                }
            }
            tx.commit()?;
            Ok(ids)
        })();
        answer(batch, stored.map_err(|e| e.to_string()));
    }
}

/// [`writer`] on PostgreSQL: per batch one multi-row `INSERT`, its own
/// transaction, answered once PostgreSQL has flushed its commit.
fn pg_writer(mut client: postgres::Client, rx: &mpsc::Receiver<Job>) {
    let insert = match client.prepare(
        "INSERT INTO messages (to_phone, body, client_ref, idempotency_key, created_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])
         RETURNING id",
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("switchboard-bare: preparing the insert: {e}");
            return;
        }
    };
    while let Some((batch, now)) = next_batch(rx) {
        let to: Vec<&str> = batch.iter().map(|j| j.message.to.as_str()).collect();
        let body: Vec<&str> = batch.iter().map(|j| j.message.body.as_str()).collect();
        let refs: Vec<Option<&str>> = batch
            .iter()
            .map(|j| j.message.client_ref.as_deref())
            .collect();
        let keys: Vec<Option<&str>> = batch
            .iter()
            .map(|j| j.message.idempotency_key.as_deref())
            .collect();
        let at = vec![now; batch.len()];
        let stored = client
            .query(&insert, &[&to, &body, &refs, &keys, &at])
            .map_err(|e| e.to_string())
            .map(|rows| {
                rows.iter()
                    .map(|r| format!("msg_{}", r.get::<_, i64>(0)))
                    .collect()
            });
        answer(batch, stored);
    }
}

/// The first job to arrive and every job queued behind it (no linger),
/// and the time, in milliseconds; none once every sender is gone.
fn next_batch(rx: &mpsc::Receiver<Job>) -> Option<(Vec<Job>, i64)> {
    let first = rx.recv().ok()?;
    let mut batch = vec![first];
    batch.extend(rx.try_iter());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Some((batch, now))
}

/// Answers each job of a committed batch with its id, or all of them
/// with the error (and if an id is missing, which a store's answer
/// should never allow).
fn answer(batch: Vec<Job>, stored: Result<Vec<String>, String>) {
    match stored {
        Ok(ids) if ids.len() == batch.len() => {
            for (job, id) in batch.into_iter().zip(ids) {
                let _ = job.done.send(Ok(id));
            }
        }
        other => {
            let e = other
                .err()
                .unwrap_or_else(|| "the store answered fewer ids than rows".to_owned());
            for job in batch {
                let _ = job.done.send(Err(e.clone()));
            }
        }
    }
}
