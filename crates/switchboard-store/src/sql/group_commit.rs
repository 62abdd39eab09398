//! The group commit: one writer thread, many writes, one transaction.
//!
//! Every write to the SQLite database — accepts, claims, attempt results,
//! receipts — is a *job* sent to this thread. The thread takes the first job
//! that arrives and everything queued behind it at that moment (no linger:
//! waiting for more would trade latency for nothing, since a batch forms by
//! itself while the previous commit is being fsynced), runs each job inside
//! its own savepoint, commits once, and only then answers each job. So a 202
//! is sent after the row is durable, and under load one fsync carries
//! hundreds of accepts.
//!
//! A job that fails rolls back its own savepoint and does not disturb the
//! others in the batch. If the commit itself fails, every job in the batch is
//! answered with the error: none of them happened.
//!
//! *Invariant*: this thread is the only writer of the database on this
//! node, so a job can read and then write (idempotency check, state
//! transition) without races from this node. On PostgreSQL other nodes write
//! too: jobs that read and then change shared rows lock them
//! (`Db::for_update`, `Db::skip_locked`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use super::db::{Conn, Db};
use crate::error::StoreError;
use crate::model::GroupCommitStats;

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write: given the open transaction (or the error that prevented one), it
/// runs and says whether to keep its writes and how to answer after commit.
type Job = Box<dyn FnOnce(Result<&Db<'_>, &StoreError>) -> (bool, Reply) + Send>;

/// Queue capacity: submitters wait (backpressure) beyond this many pending jobs.
const QUEUE: usize = 16_384;
/// The largest batch one transaction carries.
const MAX_BATCH: usize = 2_048;

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    jobs: AtomicU64,
    max_batch: AtomicU64,
}

/// The handle to the writer thread. Cloning is cheap; the thread stops when
/// the last handle is dropped, after finishing what is queued.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl GroupCommit {
    /// Starts the writer thread on `conn`; `reconnect` replaces a
    /// connection that broke (a PostgreSQL server restart).
    pub fn start(
        conn: Conn,
        reconnect: Option<Box<dyn Fn() -> Result<Conn, StoreError> + Send>>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let handle = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(conn, reconnect, rx, &c))
            .expect("spawning the writer thread");
        (GroupCommit { tx, counters }, handle)
    }

    /// Runs `f` in the next group commit and returns its result once the
    /// transaction is durable. An `Err` from `f` rolls back only `f`'s writes.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job =
            Box::new(
                move |conn| match conn.map_err(StoreError::for_each_job).and_then(f) {
                    Ok(value) => (
                        true,
                        Box::new(move |commit: Result<(), StoreError>| {
                            let _ = tx.send(commit.map(|()| value));
                        }),
                    ),
                    Err(e) => (
                        false,
                        Box::new(move |_| {
                            let _ = tx.send(Err(e));
                        }),
                    ),
                },
            );
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            jobs: self.counters.jobs.load(Ordering::Relaxed),
            max_batch: self.counters.max_batch.load(Ordering::Relaxed),
        }
    }
}

fn writer_loop(
    mut conn: Conn,
    reconnect: Option<Box<dyn Fn() -> Result<Conn, StoreError> + Send>>,
    mut rx: mpsc::Receiver<Job>,
    counters: &Counters,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        if conn.is_broken()
            && let Some(reconnect) = &reconnect
        {
            match reconnect() {
                Ok(c) => {
                    tracing::warn!("the database connection broke; reconnected");
                    conn = c;
                }
                Err(e) => tracing::error!(error = %e, "reconnecting to the database failed"),
            }
        }
        let db = conn.db();
        let conn = &db;
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let replies = run_batch(conn, batch.drain(..));
        let outcome = conn.execute_batch("COMMIT").map_err(StoreError::from);
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
            tracing::error!(error = ?outcome, jobs = n, "group commit failed");
        }
        // Counted before answering, so a caller that has its answer sees
        // its commit in the counters.
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters.jobs.fetch_add(n, Ordering::Relaxed);
        counters.max_batch.fetch_max(n, Ordering::Relaxed);
        for reply in replies {
            reply(
                outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(StoreError::for_each_job),
            );
        }
    }
}

fn run_batch(conn: &Db<'_>, jobs: impl Iterator<Item = Job>) -> Vec<Reply> {
    let begin = if conn.is_pg() {
        "BEGIN"
    } else {
        "BEGIN IMMEDIATE"
    };
    if let Err(e) = conn.execute_batch(begin) {
        let e = StoreError::from(e);
        tracing::error!(error = %e, "could not begin a write transaction");
        return jobs.map(|job| job(Err(&e)).1).collect();
    }
    let mut replies = Vec::new();
    for job in jobs {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            let e = StoreError::from(e);
            replies.push(job(Err(&e)).1);
            continue;
        }
        match catch_unwind(AssertUnwindSafe(|| job(Ok(conn)))) {
            Ok((true, reply)) => {
                if let Err(e) = conn.execute_batch("RELEASE job") {
                    // The job swallowed a failed statement (PostgreSQL then
                    // refuses everything up to a rollback): undo it alone.
                    tracing::error!(error = %e, "a write job left its savepoint unusable; rolled back");
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    let e = StoreError::from(e);
                    replies.push(Box::new(move |_| reply(Err(StoreError::for_each_job(&e)))));
                } else {
                    replies.push(reply);
                }
            }
            Ok((false, reply)) => {
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                replies.push(reply);
            }
            Err(_) => {
                // The job's answer channel was dropped with it: its caller
                // sees `WriterGone`, and the batch goes on.
                tracing::error!("a write job panicked; its writes were rolled back");
                let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            }
        }
    }
    replies
}
