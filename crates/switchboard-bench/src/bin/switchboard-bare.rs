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
//! it is the floor. Usage: `switchboard-bare --listen ADDR --data-dir DIR`.

use std::path::PathBuf;
use std::sync::mpsc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
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
    done: oneshot::Sender<Result<i64, String>>,
}

fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut data_dir: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().unwrap_or_default(),
            "--data-dir" => data_dir = args.next().map(PathBuf::from),
            other => anyhow::bail!(
                "unknown argument {other:?}: usage: switchboard-bare --listen ADDR --data-dir DIR"
            ),
        }
    }
    let Some(data_dir) = data_dir else {
        anyhow::bail!("--data-dir is required");
    };
    let conn = rusqlite::Connection::open(data_dir.join("bare.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
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
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("db-writer".into())
        .spawn(move || writer(conn, &rx))?;
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
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/v1/messages", post(submit))
            .with_state(tx);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

async fn submit(
    State(writer): State<mpsc::Sender<Job>>,
    Json(message): Json<Submit>,
) -> axum::response::Response {
    let client_ref = message.client_ref.clone();
    let (done, answer) = oneshot::channel();
    if writer.send(Job { message, done }).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the writer has stopped").into_response();
    }
    match answer.await {
        Ok(Ok(id)) => (
            StatusCode::ACCEPTED,
            Json(Accepted {
                id: format!("msg_{id}"),
                status: "queued",
                client_ref,
            }),
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "the writer has stopped").into_response(),
    }
}

/// Commits whatever has queued, one transaction at a time, and answers
/// each job after its commit.
fn writer(mut conn: rusqlite::Connection, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let stored = (|| -> rusqlite::Result<Vec<i64>> {
            let tx = conn.transaction()?;
            let mut ids = Vec::with_capacity(batch.len());
            {
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
                    ids.push(tx.last_insert_rowid());
                }
            }
            tx.commit()?;
            Ok(ids)
        })();
        match stored {
            Ok(ids) => {
                for (job, id) in batch.into_iter().zip(ids) {
                    let _ = job.done.send(Ok(id));
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.done.send(Err(e.to_string()));
                }
            }
        }
    }
}
