//! The group commit: one writer thread, many writes, one transaction.
//!
//! Every write to the database — accepts, claims, attempt results, receipts
//! — is a *job* sent to this thread. The thread takes the first job that
//! arrives and everything queued behind it at that moment (no linger:
//! waiting for more would trade latency for nothing, since a batch forms by
//! itself while the previous commit is being fsynced), runs the jobs in one
//! transaction, commits once, and only then answers each job. So a 202 is
//! sent after the row is durable, and under load one fsync carries hundreds
//! of accepts. (On SQLite a batch with accepts and other jobs is two
//! transactions, the accepts' first, so that a 202 does not wait for the
//! workers' jobs: `accepts_first`.)
//!
//! Jobs almost never fail, so a batch first runs *optimistically*: all jobs
//! in one transaction with no savepoints (a savepoint per job costs a
//! statement pair and a sub-journal copy of every page it touches). If any
//! job fails, the whole transaction is rolled back and the batch runs again
//! the careful way, each job in its own savepoint, so the failing job rolls
//! back alone and the others commit. (That is why a job must be repeatable:
//! `GroupCommit::run` takes an `Fn`.) If the commit itself fails, every job
//! in the batch is answered with the error: none of them happened.
//!
//! Accepts are the one job kind the writer knows by name: all the accepts
//! of a batch run first, together, as a few set-based statements
//! (`messages::accept_many`), because they are most of the writes under
//! load and four or five statements each were most of the writer's time.
//! In the careful pass each accept runs alone like any other job.
//!
//! Message events are inserted and fanned out to webhook deliveries once
//! per batch, just before the commit (`events::DeferEvents`), not two
//! statements per event.
//!
//! On PostgreSQL the batch's statements are pipelined (`Db::pipeline`):
//! `BEGIN`, the writes nobody waits for (`Db::execute_later`) and the reads
//! that can go together (`Db::query_later`) are sent with the next
//! statement that needs an answer. A queued write that fails makes the
//! server roll the transaction back at `COMMIT`; the writer tells that
//! apart from a failed commit (`Db::take_later_failed`) and runs the batch
//! again carefully.
//!
//! On PostgreSQL a batch's accepts are also stored *blind*: without first
//! reading their idempotency keys and their recipients' consent, as one
//! insert that the server refuses if a key is stored or a recipient opted
//! out (`messages::accept_many`). So a batch of accepts is one round trip,
//! where the reads made it two. A refused batch runs once more with the
//! reads before any job runs alone, and for a second after a refusal
//! (`BLIND_PAUSE`) the writer reads first, as a client's retries come in
//! runs.
//!
//! On PostgreSQL a batch of blind accepts only is also *in flight*
//! (`send_accepts`): it is one statement, in no transaction but its own,
//! that inserts the messages and their acceptance events and fans those
//! out (`messages::accept_in_one_statement`); it is sent and the writer
//! goes on to its next job without waiting for the answer; the next such
//! batch is sent behind it on the same connection, once it holds half as
//! many accepts or the first has landed (`worth_sending`), and the writer
//! waits for the oldest's answer or a new job, whichever comes first
//! (`Db::answered_or`), with two in flight at most (`MAX_FLIGHTS`), or
//! eight on a server whose round trip, measured when the writer connects,
//! is 0.5 ms or more (`FAR_FLIGHTS`, `flights_for`). So the server
//! runs one batch while the writer builds the next, where the two took
//! turns. Such a batch commits synchronously, as the server is set to
//! (the writer's own transactions set `synchronous_commit` off, `begin`),
//! and is answered as it lands, without the sync thread (below): one round
//! trip to a durable 202 rather than two, and one answer from the server
//! where a `BEGIN`, the inserts and a `COMMIT` took four. A flight whose
//! statement was refused stored nothing and runs again with reads as it
//! lands; the flight behind it is independent, so the two may commit out
//! of the order they were sent in, as two concurrent requests may. Any
//! other batch waits for the flights to land first. accept-pg +38%, and
//! +139% with the server 1 ms away (bench/HISTORY.md, "Thirty-eighth
//! session"); as one statement, held for half the batch ahead, +13%
//! ("Thirty-ninth session").
//!
//! On SQLite the fsync is *pipelined*: the writer's connection commits
//! with `synchronous = NORMAL` (the WAL frames are written, not synced) and
//! hands the batch's answers to a second thread, `db-sync`, which syncs the
//! WAL file (`fdatasync`) and only then answers. Meanwhile the writer runs
//! the next batch, so the disk's flush no longer stops the one serial stage.
//! A 202 still means the row is on disk: the WAL is written in order, so the
//! sync that follows a commit covers it and every commit before it (one
//! sync answers every batch that reached the sync thread before it began).
//! What changes is visibility, not durability: the node's own readers may
//! see a batch's rows up to one sync before its callers are answered (on
//! `synchronous = FULL` a commit is visible only after its sync). Nothing
//! leaves the node on such a read: provider sends and webhook deliveries
//! follow claims, which are writes answered after their own sync. A failed
//! sync fails its batches and stops the writer (the pages the kernel could
//! not write may be gone while a later sync reports success, so no later
//! answer could be trusted). WAL checkpoints, which SQLite would run on
//! the committing connection, run on a thread of their own as well
//! (`checkpoint`). Together: e2e +13% to +27%, accept +8%, on a machine
//! whose syncs take 0.3–1 ms (bench/HISTORY.md, "Tenth session").
//!
//! On PostgreSQL the same pipeline for every batch but the flights: the
//! writer's transactions commit with
//! `synchronous_commit = off` (the commit returns once its record is in
//! the WAL buffers), and the `db-sync` thread makes the batches durable
//! with a synchronous commit on a connection of its own (`Durability::
//! PgFlush`): PostgreSQL flushes the WAL up to that commit's record, past
//! every commit the writer had finished, before it answers. The same
//! visibility trade-off holds, now for every node: another node may read
//! a batch's rows before it is durable, but it acts on them only after a
//! claim of its own, whose commit comes later in the WAL and is answered
//! only after its own flush. A lost sync connection fails the batches it
//! was for (they may or may not have survived; idempotency keys make the
//! retry safe) and is made again; it is not fail-stop, as the server, not
//! this process, owns the WAL's fsync. accept-pg +10% to +20%
//! (bench/HISTORY.md, "Eleventh session").
//!
//! On SQLite the writer also has a *chore* (`Chore`), work it does by
//! itself in steps, each in a transaction of its own between batches: it
//! sweeps the index entries written behind the accepts into their tables
//! (`written_behind`), a step every 20 ms before batches, or by the clock
//! while no job arrives and the chore says a step is due (`Chore::due`:
//! the writer's wait for a job then has a deadline, `next_job`), and the
//! whole of what is left when it stops. Neither runs once writes are
//! refused. The writer tells the pending entries of every commit,
//! rollback and savepoint (`written_behind::committed` and the rest,
//! beside the SQL here), as they live in its thread's memory.
//!
//! *Invariant*: this thread is the only writer of the database on this
//! node, so a job can read and then write (idempotency check, state
//! transition) without races from this node. On PostgreSQL other nodes write
//! too: jobs that read and then change shared rows lock them
//! (`Db::for_update`, `Db::skip_locked`).

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::db::{Conn, Db, DbError, FlightId};
use super::events::DeferEvents;
use super::messages;
use super::signals::{self, WorkSignals};
use super::written_behind;
use crate::error::StoreError;
use crate::model::{AcceptOutcome, AcceptRequest, AcceptWaits, GroupCommitStats, SyncStats};

type Value = Box<dyn Any + Send>;
/// A write job: `work` may run twice (optimistically, then alone in a
/// savepoint if its batch had a failure); `answer` runs once, after commit.
type Work = Box<dyn FnMut(&Db<'_>) -> Result<Value, StoreError> + Send>;
type Answer = Box<dyn FnOnce(Result<Value, StoreError>) + Send>;

enum Job {
    /// Any write.
    Work { work: Work, answer: Answer },
    /// A message to store (see the module documentation).
    Accept {
        /// The message and its stamps, boxed together: a job stays two
        /// words of pointers wide as it moves through the queue and batches.
        req: Box<(AcceptRequest, Stamps)>,
        answer: oneshot::Sender<(Result<AcceptOutcome, StoreError>, Stamps)>,
    },
}

/// When the writer took an accept into a batch, when that batch's commit
/// was settled, and when the accept was answered: with when its caller
/// queued it and when its task ran again, where it waited
/// (`GroupCommit::accept`, `AcceptWaits`). A few clock reads an accept.
#[derive(Debug, Default, Clone, Copy)]
struct Stamps {
    taken: Option<Instant>,
    committed: Option<Instant>,
    answered: Option<Instant>,
}

impl Job {
    /// The message to store, if it is an accept.
    fn accept(&self) -> Option<&AcceptRequest> {
        match self {
            Job::Accept { req, .. } => Some(&req.0),
            Job::Work { .. } => None,
        }
    }

    /// Answers the job with its result, after the commit.
    fn answer(self, r: Result<Value, StoreError>) {
        match self {
            Job::Work { answer, .. } => answer(r),
            Job::Accept { answer, req } => {
                let mut stamps = req.1;
                stamps.answered = Some(Instant::now());
                let r = r.map(|v| {
                    *v.downcast::<AcceptOutcome>()
                        .expect("an accept answers an outcome")
                });
                let _ = answer.send((r, stamps));
            }
        }
    }

    /// An accept's stamp `which` (of its `Stamps`), unless it has one: an
    /// accept held over from one pass of the writer to the next keeps
    /// when it was first taken.
    fn stamp(&mut self, which: fn(&mut Stamps) -> &mut Option<Instant>, at: Instant) {
        if let Job::Accept { req, .. } = self {
            which(&mut req.1).get_or_insert(at);
        }
    }
}

/// Queue capacity: submitters wait (backpressure) beyond this many pending jobs.
const QUEUE: usize = 16_384;
/// The largest batch one transaction carries.
const MAX_BATCH: usize = 2_048;

#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    jobs: AtomicU64,
    max_batch: AtomicU64,
    rechecked: AtomicU64,
    /// Nanoseconds the writer spent in transactions of accepts only, of
    /// other jobs (or both, on PostgreSQL), and in its chore's steps.
    busy_accepts: AtomicU64,
    busy_jobs: AtomicU64,
    busy_chore: AtomicU64,
    /// Accepts answered with all their stamps, and the nanoseconds they
    /// waited at each stage (`AcceptWaits`).
    accepts_timed: AtomicU64,
    accept_waits: [AtomicU64; 4],
    /// The sync thread's syncs, the nanoseconds they took, and the commits
    /// they made durable (`SyncStats`).
    syncs: AtomicU64,
    sync_ns: AtomicU64,
    synced_commits: AtomicU64,
}

impl Counters {
    fn read_busy(counter: &AtomicU64) -> std::time::Duration {
        std::time::Duration::from_nanos(counter.load(Ordering::Relaxed))
    }

    /// Adds where an accept queued at `queued` and running again at
    /// `resumed` waited, if the writer stamped every stage (an accept
    /// refused before it reached a batch is not timed).
    fn time_accept(&self, queued: Instant, stamps: Stamps, resumed: Instant) {
        let (Some(taken), Some(committed), Some(answered)) =
            (stamps.taken, stamps.committed, stamps.answered)
        else {
            return;
        };
        let stages = [
            (queued, taken),
            (taken, committed),
            (committed, answered),
            (answered, resumed),
        ];
        for (counter, (from, to)) in self.accept_waits.iter().zip(stages) {
            Self::add(counter, to.saturating_duration_since(from));
        }
        self.accepts_timed.fetch_add(1, Ordering::Relaxed);
    }

    fn accept_waits(&self) -> AcceptWaits {
        let [queued, batch, durable, resumed] = self.accept_waits.each_ref().map(Self::read_busy);
        AcceptWaits {
            count: self.accepts_timed.load(Ordering::Relaxed),
            queued,
            batch,
            durable,
            resumed,
        }
    }

    /// Adds the time since `since` to `counter`.
    fn busy(counter: &AtomicU64, since: Instant) {
        Self::add(counter, since.elapsed());
    }

    /// Adds `d` to `counter`, in nanoseconds (`read_busy` reads it back).
    fn add(counter: &AtomicU64, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        counter.fetch_add(ns, Ordering::Relaxed);
    }
}

/// The handle to the writer thread. Cloning is cheap; the thread stops when
/// the last handle is dropped, after finishing what is queued.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
    signals: Arc<WorkSignals>,
}

impl GroupCommit {
    /// Starts the writer thread on `conn`; `reconnect` replaces a
    /// connection that broke (a PostgreSQL server restart).
    pub fn start(
        conn: Conn,
        reconnect: Option<Box<dyn Fn() -> Result<Conn, StoreError> + Send>>,
    ) -> (Self, JoinHandle<()>) {
        Self::spawn(conn, reconnect, None, None)
    }

    /// Starts the writer thread on a SQLite connection in WAL mode whose
    /// commits are made durable by syncing `wal` (its `-wal` file) on a
    /// thread of their own (see the module documentation). Sets the
    /// connection's `synchronous` to `NORMAL`: the sync thread does what
    /// `FULL` would do inside each commit.
    pub fn start_pipelined(
        conn: Conn,
        wal: std::path::PathBuf,
        synced: Option<Synced>,
        chore: Option<Chore>,
    ) -> (Self, JoinHandle<()>) {
        if let Conn::Lite(c) = &conn
            && let Err(e) = c.pragma_update(None, "synchronous", "NORMAL")
        {
            tracing::error!(error = %e, "could not set synchronous = NORMAL; commits sync themselves");
        }
        Self::spawn(
            conn,
            None,
            Some(Durability::Wal {
                wal,
                file: None,
                synced,
            }),
            chore,
        )
    }

    /// Starts the writer thread on a PostgreSQL connection (made again by
    /// `reconnect`) whose transactions do not wait for the WAL flush
    /// (`synchronous_commit = off`, set by each, `begin`): the sync thread
    /// makes them durable with a synchronous commit of its own on a
    /// connection from `sync_connect`. Its batches in flight commit with the
    /// session's setting, the server's (see the module documentation).
    pub fn start_pipelined_pg(
        conn: Conn,
        reconnect: Box<dyn Fn() -> Result<Conn, StoreError> + Send>,
        sync_connect: Box<dyn Fn() -> Result<Conn, StoreError> + Send>,
    ) -> Result<(Self, JoinHandle<()>), StoreError> {
        let sync_conn = sync_connect()?;
        let durability = Durability::PgFlush {
            connect: sync_connect,
            conn: Some((sync_conn, Instant::now())),
        };
        Ok(Self::spawn(conn, Some(reconnect), Some(durability), None))
    }

    fn spawn(
        conn: Conn,
        reconnect: Option<Box<dyn Fn() -> Result<Conn, StoreError> + Send>>,
        durability: Option<Durability>,
        chore: Option<Chore>,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let signals = Arc::new(WorkSignals::default());
        let s = signals.clone();
        let syncer = durability.map(|d| Syncer::start(d, counters.clone()));
        let handle = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || writer_loop(conn, reconnect, rx, &c, &s, syncer, chore))
            .expect("spawning the writer thread");
        (
            GroupCommit {
                tx,
                counters,
                signals,
            },
            handle,
        )
    }

    /// What the writer's batches wake (`signals`).
    pub fn signals(&self) -> Arc<WorkSignals> {
        self.signals.clone()
    }

    /// Runs `f` in the next group commit and returns its result once the
    /// transaction is durable. An `Err` from `f` rolls back only `f`'s
    /// writes. `f` may be run twice (see the module documentation): it must
    /// not have effects outside the transaction.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: Fn(&Db<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Work {
            work: Box::new(move |c| f(c).map(|v| Box::new(v) as Value)),
            answer: Box::new(move |r: Result<Value, StoreError>| {
                let r = r.map(|v| *v.downcast::<R>().expect("a job answers its own type"));
                let _ = tx.send(r);
            }),
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Stores a message (`messages::accept`) in the next group commit,
    /// together with the batch's other accepts; answers once it is durable.
    pub async fn accept(&self, req: AcceptRequest) -> Result<AcceptOutcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        let job = Job::Accept {
            req: Box::new((req, Stamps::default())),
            answer: tx,
        };
        let queued = Instant::now();
        self.tx
            .send(job)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        let (r, stamps) = rx.await.map_err(|_| StoreError::WriterGone)?;
        self.counters.time_accept(queued, stamps, Instant::now());
        r
    }

    /// Counters for `/metrics`.
    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            jobs: self.counters.jobs.load(Ordering::Relaxed),
            max_batch: self.counters.max_batch.load(Ordering::Relaxed),
            rechecked: self.counters.rechecked.load(Ordering::Relaxed),
            busy_accepts: Counters::read_busy(&self.counters.busy_accepts),
            busy_jobs: Counters::read_busy(&self.counters.busy_jobs),
            busy_chore: Counters::read_busy(&self.counters.busy_chore),
            accept_waits: self.counters.accept_waits(),
            syncs: SyncStats {
                count: self.counters.syncs.load(Ordering::Relaxed),
                took: Counters::read_busy(&self.counters.sync_ns),
                commits: self.counters.synced_commits.load(Ordering::Relaxed),
            },
            wal_writes: None,
        }
    }
}

/// Work the writer does by itself in steps, each in a transaction of its
/// own: a step before a batch when `every` has passed since the last one,
/// a step while no job arrives when `due` says one is, and, when the
/// writer stops, steps until none is left (`written_behind::sweep_step`).
#[derive(Debug, Clone, Copy)]
pub struct Chore {
    /// How often a step runs at most (before batches, or by the clock).
    pub every: std::time::Duration,
    /// One step; answers whether steps are left. With `true` the writer
    /// is stopping: the chore goes on to its end whatever its pace.
    pub step: fn(&Db<'_>, bool) -> Result<bool, StoreError>,
    /// Runs on the writer thread before its first job (for state the
    /// chore keeps on that thread: `written_behind::install`).
    pub start: fn(),
    /// Asked on the writer thread while no job is queued: how soon the
    /// chore has a step to take though no write arrives (never sooner
    /// than `every` after its last step, or a second after a failed one),
    /// or `None` when it has none.
    /// Without it, work the chore has left after a burst would wait for
    /// the next write (`written_behind::due`).
    pub due: fn() -> Option<std::time::Duration>,
}

impl Chore {
    /// Runs a step in a transaction: whether steps are left, or `None` if
    /// it failed. A failure is logged and rolled back, and the step is
    /// tried again, no sooner than [`CHORE_RETRY`] later.
    /// `finish`: the writer is stopping.
    fn run(&self, conn: &Db<'_>, finish: bool) -> Option<bool> {
        let done = conn
            .execute_batch(begin(conn))
            .map_err(StoreError::from)
            .and_then(|()| guarded(|| (self.step)(conn, finish)))
            .and_then(|more| {
                conn.execute_batch("COMMIT")
                    .map(|()| more)
                    .map_err(StoreError::from)
            });
        match done {
            Ok(more) => {
                written_behind::committed();
                Some(more)
            }
            Err(e) => {
                rollback(conn);
                tracing::error!(error = %e, "a step of the writer's chore failed; it is tried again later");
                None
            }
        }
    }

    /// Runs a step (`run`), adds its time to `busy`, and answers how long
    /// until the next may run: `every`, or [`CHORE_RETRY`] after a failure.
    fn run_paced(&self, conn: &Db<'_>, busy: &AtomicU64) -> std::time::Duration {
        let began = Instant::now();
        let ran = self.run(conn, false);
        Counters::busy(busy, began);
        match ran {
            Some(_) => self.every,
            None => self.every.max(CHORE_RETRY),
        }
    }
}

/// The shortest wait before a failed chore step is tried again: a step
/// that keeps failing (a full disk) while no job arrives would otherwise
/// be tried, and its error logged, every `Chore::every`.
const CHORE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// A batch's jobs with their results, committed and waiting to be answered.
type Answers = Vec<(Job, Result<Value, StoreError>)>;

/// A committed batch on its way to the sync thread.
struct Committed {
    answers: Answers,
    /// When the writer began the batch (before its first statement).
    began: Instant,
}

/// Batches committed but not yet synced that the sync thread holds at most;
/// beyond that the writer waits for it (the disk is then the bound).
const SYNC_QUEUE: usize = 64;

/// Told on the sync thread after each sync of the WAL that succeeds
/// (`GroupCommit::start_pipelined`).
pub type Synced = Box<dyn Fn() + Send>;

/// What the sync thread does to make every commit before it durable.
enum Durability {
    /// SQLite: `fdatasync` the WAL file. A failure is final: the pages the
    /// kernel could not write may be gone while a later sync succeeds.
    /// `synced` is told after each sync that succeeds (the checkpoint
    /// thread, which copies what the WAL holds into the database file).
    Wal {
        wal: std::path::PathBuf,
        /// The WAL, opened at the first sync and kept (see `sync`).
        file: Option<std::fs::File>,
        synced: Option<Synced>,
    },
    /// PostgreSQL: a synchronous commit on a connection of its own. Its
    /// commit record comes after every commit the writer had finished, and
    /// PostgreSQL flushes the WAL up to it (and, with synchronous
    /// replication, waits for the standbys) before answering, so it makes
    /// them all durable. The transaction writes one WAL record, a logical
    /// decoding message (prefix `switchboard.sync`, no content): without a
    /// record of its own a transaction's commit is not flushed. A failure
    /// fails the batches it was for; the connection is made anew at once,
    /// and only batches begun after that can be answered through it (a
    /// commit made before a server restart may be gone even though a flush
    /// on the restarted server succeeds).
    PgFlush {
        connect: Box<dyn Fn() -> Result<Conn, StoreError> + Send>,
        /// The connection and when it was made.
        conn: Option<(Conn, Instant)>,
    },
}

impl Durability {
    /// Makes durable every commit that finished before this call; `since`
    /// is when the oldest of their batches began.
    fn sync(&mut self, since: Instant) -> Result<(), String> {
        match self {
            // The file is opened once, at the first sync (by then the
            // writer's connection has made it), and kept: opening and
            // closing it were two more system calls, a tenth of the time
            // of the `fdatasync` itself under accept's load
            // (bench/HISTORY.md, "Forty-fourth session"). It is the file
            // SQLite writes to: SQLite removes a WAL only when the last
            // connection to the database closes, after copying it into the
            // database file and syncing that, and the writer's connection
            // is never made again on SQLite. Should the file be unlinked
            // from outside, this still syncs the one SQLite writes, where
            // opening it by name would fail. A failed sync lets it go, so
            // the next opens it again.
            Durability::Wal { wal, file, synced } => {
                let opened = match file.take() {
                    Some(f) => Ok(f),
                    None => std::fs::OpenOptions::new().write(true).open(&wal),
                };
                let r = opened
                    .and_then(|f| f.sync_data().map(|()| *file = Some(f)))
                    .map_err(|e| format!("syncing {}: {e}", wal.display()));
                if let (Ok(()), Some(synced)) = (&r, synced) {
                    synced();
                }
                r
            }
            Durability::PgFlush { connect, conn } => {
                let flushed = match conn.as_ref() {
                    None => Err("no connection to PostgreSQL to make the commit durable".to_owned()),
                    // The connection is sound, only too new to vouch for
                    // these batches: keep it (making it again would refuse
                    // the batches begun meanwhile, and so on under load).
                    Some((_, made)) if *made > since => return Err(
                        "the connection to PostgreSQL was made again after this write began, so whether it was stored is unknown"
                            .to_owned(),
                    ),
                    Some((c, _)) => c
                        .db()
                        .execute_batch("SELECT pg_logical_emit_message(true, 'switchboard.sync', '')")
                        .map_err(|e| format!("making the commit durable on PostgreSQL: {e}")),
                };
                if flushed.is_err() || conn.as_ref().is_some_and(|(c, _)| c.is_broken()) {
                    *conn = match connect() {
                        Ok(c) => Some((c, Instant::now())),
                        Err(e) => {
                            tracing::error!(error = %e, "reconnecting the sync connection to PostgreSQL failed");
                            None
                        }
                    };
                }
                flushed
            }
        }
    }

    /// Whether a failed sync stops every later write.
    fn fail_stop(&self) -> bool {
        matches!(self, Durability::Wal { .. })
    }
}

/// The `db-sync` thread: makes commits durable and answers their jobs
/// (see the module documentation).
struct Syncer {
    tx: std::sync::mpsc::SyncSender<Committed>,
    failed: Arc<std::sync::atomic::AtomicBool>,
    /// Batches handed over and not yet answered.
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Syncer {
    fn start(durability: Durability, counters: Arc<Counters>) -> Syncer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Committed>(SYNC_QUEUE);
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (f, p) = (failed.clone(), pending.clone());
        std::thread::Builder::new()
            .name("db-sync".into())
            .spawn(move || sync_loop(durability, &rx, &f, &p, &counters))
            .expect("spawning the sync thread");
        Syncer {
            tx,
            failed,
            pending,
        }
    }

    /// Answers the batch after the next sync; gives it back if the sync
    /// thread has stopped.
    fn hand_over(&self, batch: Committed) -> Result<(), Answers> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.tx.send(batch).map_err(|e| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            e.0.answers
        })
    }

    /// Whether every batch handed over has been synced and answered, so
    /// everything committed so far is durable.
    fn caught_up(&self) -> bool {
        self.pending.load(Ordering::Acquire) == 0
    }
}

/// Syncs and answers every batch that arrived before the sync began.
fn sync_loop(
    mut durability: Durability,
    rx: &std::sync::mpsc::Receiver<Committed>,
    failed: &std::sync::atomic::AtomicBool,
    pending: &std::sync::atomic::AtomicUsize,
    counters: &Counters,
) {
    let mut batches: Vec<Committed> = Vec::new();
    while let Ok(first) = rx.recv() {
        batches.push(first);
        while let Ok(more) = rx.try_recv() {
            batches.push(more);
        }
        // Every batch here was committed before this sync starts.
        let since = batches
            .iter()
            .map(|b| b.began)
            .min()
            .unwrap_or_else(Instant::now);
        let synced = if failed.load(Ordering::Acquire) {
            Err("an earlier sync of the database failed".to_owned())
        } else {
            let began = Instant::now();
            let synced = durability.sync(since);
            if synced.is_ok() {
                Counters::busy(&counters.sync_ns, began);
                counters.syncs.fetch_add(1, Ordering::Relaxed);
                counters
                    .synced_commits
                    .fetch_add(batches.len() as u64, Ordering::Relaxed);
            }
            synced
        };
        if let Err(e) = &synced {
            if !durability.fail_stop() {
                tracing::error!(error = %e, "a commit could not be made durable; its writes are answered with an error");
            } else if !failed.swap(true, Ordering::AcqRel) {
                tracing::error!(error = %e, "the database's WAL could not be synced; refusing every write from now on");
            }
        }
        for batch in batches.drain(..) {
            for (job, result) in batch.answers {
                let result = match (&synced, result) {
                    (Ok(()), r) => r,
                    (Err(e), Ok(_)) => Err(StoreError::CommitFailed(e.clone())),
                    (Err(_), Err(e)) => Err(e),
                };
                job.answer(result);
            }
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn writer_loop(
    mut conn: Conn,
    reconnect: Option<Box<dyn Fn() -> Result<Conn, StoreError> + Send>>,
    mut rx: mpsc::Receiver<Job>,
    counters: &Counters,
    signals: &WorkSignals,
    syncer: Option<Syncer>,
    chore: Option<Chore>,
) {
    // SQLite: this thread's statements, writes and reads, bind their texts
    // where they are (`switchboard_walvfs::statements`), on statements
    // finalized when the loop ends, before the connection is dropped. (A
    // SQLite connection is never replaced: `reconnect` is PostgreSQL's.)
    let _static_binds = match &conn {
        Conn::Lite(c) => Some(switchboard_walvfs::statements::StaticBinds::on(c)),
        Conn::Pg(_) => None,
    };
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    // When a batch's blind accepts were last refused (`run_transaction`).
    let mut rechecked_at: Option<Instant> = None;
    // A batch of accepts sent whose commit is not answered yet (PostgreSQL,
    // `send_accepts`).
    let mut flying: std::collections::VecDeque<InFlight> = std::collections::VecDeque::new();
    let mut max_flights = flights_for(&conn.db());
    let mut chore_ran = Instant::now();
    // How long after `chore_ran` the next step may run.
    let mut chore_pace = chore.as_ref().map(|c| c.every).unwrap_or_default();
    if let Some(chore) = &chore {
        (chore.start)();
    }
    let refusing = |syncer: &Option<Syncer>| {
        syncer
            .as_ref()
            .is_some_and(|s| s.failed.load(Ordering::Acquire))
    };
    // What follows a batch's commit (or its failure): the counters, the
    // workers woken, and the answers, once the commit is durable
    // (`Durable`).
    let settle = |mut answers: Answers, began: Instant, durable: Durable, rechecked: bool| {
        let n = answers.len() as u64;
        let committed = Instant::now();
        for (job, _) in &mut answers {
            job.stamp(|s| &mut s.committed, committed);
        }
        // The deliverer's claim or the receipt pump's pass is a later
        // batch, which runs after this one's commit.
        signals::wake(signals);
        if rechecked {
            counters.rechecked.fetch_add(1, Ordering::Relaxed);
        }
        // Counted before answering, so a caller that has its answer sees
        // its commit in the counters.
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters.jobs.fetch_add(n, Ordering::Relaxed);
        counters.max_batch.fetch_max(n, Ordering::Relaxed);
        match syncer.as_ref().filter(|s| match durable {
            Durable::Already => false,
            Durable::AfterSync { wrote } => wrote || !s.caught_up(),
        }) {
            None => {
                for (job, result) in answers {
                    job.answer(result);
                }
            }
            Some(s) => {
                if let Err(answers) = s.hand_over(Committed { answers, began }) {
                    // Committed but never synced: not an answer to give.
                    s.failed.store(true, Ordering::Release);
                    tracing::error!(
                        "the sync thread has stopped; refusing every write from now on"
                    );
                    refuse(
                        answers.into_iter().map(|(job, _)| job),
                        "the database sync thread stopped; restart the node",
                    );
                }
            }
        }
    };
    // Takes a flight's answers. Refused (a stored key, an opted-out
    // recipient), its accepts run again with reads, after the flight sent
    // behind it, which is independent: a statement of its own.
    let land = |conn: &Db<'_>, f: InFlight, rechecked_at: &mut Option<Instant>| {
        let waited = Instant::now();
        let began = f.began;
        let landed = land_accepts(conn, f);
        Counters::busy(&counters.busy_accepts, waited);
        match landed {
            Ok(answers) => settle(answers, began, Durable::Already, false),
            Err(jobs) => {
                let again = Instant::now();
                let (answers, _) = run_batch(conn, jobs, false);
                Counters::busy(&counters.busy_accepts, again);
                *rechecked_at = Some(again);
                settle(answers, began, Durable::AfterSync { wrote: true }, true);
            }
        }
    };
    loop {
        // As many batches in flight as may be: the oldest lands first.
        if flying.len() >= max_flights
            && let Some(f) = flying.pop_front()
        {
            land(&conn.db(), f, &mut rechecked_at);
            continue;
        }
        let first = if let Some(oldest) = flying.front() {
            // Batches in flight: the next job, or the oldest batch's
            // answers, whichever comes first.
            let next = conn.db().answered_or(&oldest.flight, |cx| rx.poll_recv(cx));
            match next {
                Some(Some(job)) => Some(job),
                // Answered, or no job will come: it lands.
                Some(None) | None => {
                    let f = flying.pop_front().expect("the oldest");
                    land(&conn.db(), f, &mut rechecked_at);
                    continue;
                }
            }
        } else if !batch.is_empty() {
            // Held behind a batch that has landed since: it goes now.
            None
        } else {
            // With no job queued, the chore's next step is due by the clock.
            let idle = chore
                .as_ref()
                .filter(|_| !refusing(&syncer))
                .and_then(|c| Some((c.due)()?.max(chore_pace.saturating_sub(chore_ran.elapsed()))));
            match next_job(&mut rx, idle) {
                Next::Job(job) => Some(job),
                Next::Closed => break,
                Next::Idle => {
                    if let Some(chore) = &chore {
                        chore_pace = chore.run_paced(&conn.db(), &counters.busy_chore);
                        chore_ran = Instant::now();
                    }
                    continue;
                }
            }
        };
        if let Some(chore) = &chore
            && chore_ran.elapsed() >= chore_pace
            && !refusing(&syncer)
        {
            while let Some(f) = flying.pop_front() {
                land(&conn.db(), f, &mut rechecked_at);
            }
            chore_pace = chore.run_paced(&conn.db(), &counters.busy_chore);
            chore_ran = Instant::now();
        }
        if conn.is_broken()
            && let Some(reconnect) = &reconnect
        {
            while let Some(f) = flying.pop_front() {
                land(&conn.db(), f, &mut rechecked_at);
            }
            match reconnect() {
                Ok(c) => {
                    tracing::warn!("the database connection broke; reconnected");
                    conn = c;
                    max_flights = flights_for(&conn.db());
                }
                Err(e) => tracing::error!(error = %e, "reconnecting to the database failed"),
            }
        }
        // Accepts already in the batch were held behind a batch in flight
        // (`worth_sending`, below).
        let held = batch.len();
        batch.extend(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let taken = Instant::now();
        for job in &mut batch {
            job.stamp(|s| &mut s.taken, taken);
        }
        // Accepts behind a batch in flight wait for more, or for it to land
        // (`worth_sending`).
        if let Some(ahead) = flying.back()
            && !worth_sending(batch.len(), ahead.jobs.len())
            && batch.iter().all(|j| j.accept().is_some())
        {
            continue;
        }
        let pg = conn.db().is_pg();
        // On PostgreSQL a batch of blind accepts is sent without waiting for
        // its commit (`send_accepts`): the server runs it while this thread
        // takes and builds the next batch, instead of the two taking turns.
        let blind = rechecked_at.is_none_or(|t| t.elapsed() >= BLIND_PAUSE);
        let may_fly = |jobs: &[Job]| {
            blind
                && !refusing(&syncer)
                && messages::accepts_blind(jobs.iter().filter_map(Job::accept))
        };
        // Sends blind accepts in flight, or gives them back, not sent.
        let mut fly = |conn: &Db<'_>, jobs: Vec<Job>| {
            send_accepts(conn, jobs, &counters.busy_accepts).map(|sent| flying.push_back(sent))
        };
        // Accepts held so were joined by other jobs: they go in flight
        // first, as they would have without the wait, rather than wait for
        // the other jobs' transaction and its sync.
        if held > 0 && batch[held..].iter().any(|j| j.accept().is_none()) && may_fly(&batch[..held])
        {
            let rest = batch.split_off(held);
            if let Err(mut jobs) = fly(&conn.db(), std::mem::replace(&mut batch, rest)) {
                jobs.append(&mut batch);
                batch = jobs;
            }
        }
        if pg && batch.iter().all(|j| j.accept().is_some()) && may_fly(&batch) {
            match fly(&conn.db(), std::mem::take(&mut batch)) {
                Ok(()) => continue,
                // Not sent: it runs as any batch does, below.
                Err(jobs) => batch = jobs,
            }
        }
        while let Some(f) = flying.pop_front() {
            land(&conn.db(), f, &mut rechecked_at);
        }
        // On SQLite a batch's accepts commit first, on their own, when it
        // has other jobs too (`accepts_first`).
        for jobs in accepts_first(std::mem::take(&mut batch), !pg) {
            if refusing(&syncer) {
                // A failed WAL sync (SQLite), or a sync thread that stopped
                // (either engine).
                refuse(
                    jobs,
                    "an earlier commit could not be made durable; restart the node",
                );
                continue;
            }
            let began = Instant::now();
            let blind = rechecked_at.is_none_or(|t| t.elapsed() >= BLIND_PAUSE);
            let changes = conn.db().total_changes();
            let busy = if jobs.iter().all(|j| j.accept().is_some()) {
                &counters.busy_accepts
            } else {
                &counters.busy_jobs
            };
            let (answers, rechecked) = run_batch(&conn.db(), jobs, blind);
            Counters::busy(busy, began);
            // SQLite: a batch that changed no row wrote nothing to the WAL.
            let wrote = changes.is_none() || changes != conn.db().total_changes();
            if rechecked {
                rechecked_at = Some(began);
            }
            settle(answers, began, Durable::AfterSync { wrote }, rechecked);
        }
    }
    // Stopping: the chore to its end, unless the writes are refused.
    if let Some(chore) = &chore
        && !refusing(&syncer)
    {
        while chore.run(&conn.db(), true) == Some(true) {}
    }
}

/// When a batch's commit is durable, and so when its jobs are answered
/// (`writer_loop`'s `settle`).
#[derive(Clone, Copy)]
enum Durable {
    /// Already, by its own synchronous commit (a batch in flight,
    /// `send_accepts`): answered at once.
    Already,
    /// After the sync thread's next sync, if it `wrote`. A batch that
    /// wrote nothing has nothing to make durable, and what it read is
    /// durable once every batch before it has been synced: it is answered
    /// at once then. So an idle node's polls (claims that find nothing)
    /// cost no sync of the WAL, where they cost about thirty a second.
    AfterSync { wrote: bool },
}

/// Whether a batch of `n` accepts goes out behind a batch in flight of
/// `ahead`, or waits for more accepts or for that one to land: it goes
/// once it holds half as many. Sent at once, a batch of whatever had
/// queued was often of one or two accepts, while the next waited behind
/// it with tens: the server's work per batch (its commit's flush, the
/// statement's start) paid for a few, and batches alternating large and
/// small. In pairs, accept-pg +13% median (bench/HISTORY.md,
/// "Thirty-ninth session"). Under a light load, where a batch is of one
/// accept, it goes at once.
fn worth_sending(n: usize, ahead: usize) -> bool {
    n * 2 >= ahead
}

/// A batch of accepts sent to PostgreSQL, its commit not answered yet
/// (`send_accepts`).
struct InFlight {
    jobs: Vec<Job>,
    /// Each job's outcome, once its commit is answered.
    values: Vec<Value>,
    flight: FlightId,
    /// When the writer began the batch.
    began: Instant,
}

/// Sends a batch of accepts, blind, as one statement that is its own
/// transaction (`messages::accept_in_one_statement`), without waiting for
/// the server's answer (`Db::send`): the writer takes and builds the next
/// batch while the server runs this one, and the next is sent behind it on
/// the same connection (up to `flights_for` in flight). It commits as
/// durably as the sync thread's commits (the writer's session keeps the
/// server's setting, and only its transactions set it off, `begin`), so
/// its 202s need no sync of the sync thread's. The batch's outcome is known
/// when it lands (`land_accepts`). A failure while building it (before
/// anything is sent) gives the jobs back, to run as any batch.
fn send_accepts(conn: &Db<'_>, jobs: Vec<Job>, busy: &AtomicU64) -> Result<InFlight, Vec<Job>> {
    let began = Instant::now();
    let built = conn
        .pipeline(true)
        .map_err(StoreError::from)
        .and_then(|()| {
            let accepts: Vec<&AcceptRequest> = jobs.iter().filter_map(Job::accept).collect();
            guarded(|| messages::accept_in_one_statement(conn, &accepts))
        });
    let sent = match built {
        Ok(outcomes) => Ok(InFlight {
            jobs,
            values: outcomes.into_iter().map(|o| Box::new(o) as Value).collect(),
            flight: conn.send(),
            began,
        }),
        Err(e) => {
            // Nothing was queued: the statement is queued last, once built.
            tracing::debug!(error = %e, "a batch of accepts could not be sent; it runs again");
            Err(jobs)
        }
    };
    if let Err(e) = conn.pipeline(false) {
        tracing::error!(error = %e, "a write was queued after its transaction ended");
    }
    Counters::busy(busy, began);
    sent
}

/// Waits for a sent batch's statement (`send_accepts`) and answers its
/// jobs. `Err` gives the jobs back when the server refused it (a stored
/// idempotency key, an opted-out recipient, as with any blind batch): it
/// stored nothing, and the jobs must run again with reads. Any other
/// failure (the connection lost, say) leaves unknown whether it committed,
/// and is every job's error, as a failed `COMMIT` is.
fn land_accepts(conn: &Db<'_>, f: InFlight) -> Result<Answers, Vec<Job>> {
    let n = f.jobs.len();
    match conn.land(f.flight) {
        Ok(()) => {
            written_behind::committed();
            Ok(f.jobs
                .into_iter()
                .zip(f.values)
                .map(|(j, v)| (j, Ok(v)))
                .collect())
        }
        Err(e) if e.is_refusal() => {
            tracing::debug!(error = %e, "blind accepts refused; the batch runs again with reads");
            written_behind::rolled_back();
            Err(f.jobs)
        }
        Err(e) => {
            let e = commit_failed(conn, n, e);
            Ok(f.jobs
                .into_iter()
                .map(|j| (j, Err(StoreError::for_each_job(&e))))
                .collect())
        }
    }
}

/// A batch as the transactions it runs in: with `split`, its accepts in
/// one and its other jobs in the next, when it has both; otherwise one. An
/// accept's caller waits for its 202, while the other jobs are the
/// workers' claims, results and receipts of hundreds of messages:
/// committed together, every accept would wait for them too. On their own
/// the accepts are synced and answered while the rest runs. On SQLite,
/// where a commit costs no round trip, that is worth its commit end to end
/// (bench/HISTORY.md, "Nineteenth session"); on PostgreSQL the extra commit
/// cost more than it saved (e2e-pg -9%), so it splits nothing.
fn accepts_first(jobs: Vec<Job>, split: bool) -> impl Iterator<Item = Vec<Job>> {
    let (first, rest): (Vec<Job>, Vec<Job>) = if split {
        jobs.into_iter().partition(|j| j.accept().is_some())
    } else {
        (jobs, Vec::new())
    };
    [first, rest].into_iter().filter(|part| !part.is_empty())
}

/// What the writer's wait for a job ended with.
enum Next {
    Job(Job),
    /// Every sender is gone: the writer stops.
    Closed,
    /// The wait's time ran out with no job.
    Idle,
}

/// Wakes a thread parked in `next_job`.
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The next job, waiting for it at most `wait` (for ever when `None`).
fn next_job(rx: &mut mpsc::Receiver<Job>, wait: Option<std::time::Duration>) -> Next {
    let Some(wait) = wait else {
        return rx.blocking_recv().map_or(Next::Closed, Next::Job);
    };
    let deadline = Instant::now() + wait;
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    loop {
        match rx.poll_recv(&mut cx) {
            std::task::Poll::Ready(Some(job)) => return Next::Job(job),
            std::task::Poll::Ready(None) => return Next::Closed,
            std::task::Poll::Pending => {
                let now = Instant::now();
                if now >= deadline {
                    return Next::Idle;
                }
                // A job's arrival unparks the thread (as may nothing at
                // all: the loop asks again).
                std::thread::park_timeout(deadline - now);
            }
        }
    }
}

/// Answers every job with a failed commit: the writer no longer trusts
/// its syncs (`Syncer`).
fn refuse(jobs: impl IntoIterator<Item = Job>, why: &str) {
    for job in jobs {
        job.answer(Err(StoreError::CommitFailed(why.to_owned())));
    }
}

/// Every job of a batch that could not run, answered with `e`.
fn failed_all(jobs: Vec<Job>, e: &StoreError) -> Answers {
    jobs.into_iter()
        .map(|j| (j, Err(StoreError::for_each_job(e))))
        .collect()
}

/// Runs `f`, turning a panic into an error (its writes are then rolled
/// back with the transaction or its savepoint).
fn guarded<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("a write job panicked; its writes were rolled back");
            Err(StoreError::Corrupt("a write job panicked".into()))
        }
    }
}

/// Runs one job alone.
fn attempt(job: &mut Job, conn: &Db<'_>) -> Result<Value, StoreError> {
    guarded(|| match job {
        Job::Work { work, .. } => work(conn),
        Job::Accept { req, .. } => messages::accept(conn, &req.0).map(|v| Box::new(v) as Value),
    })
}

/// Runs every job of the batch, the accepts first and together (`blind`:
/// see `messages::accept_many`); stops at the first failure.
fn attempt_all(jobs: &mut [Job], conn: &Db<'_>, blind: bool) -> Result<Vec<Value>, StoreError> {
    let accepts: Vec<&AcceptRequest> = jobs.iter().filter_map(Job::accept).collect();
    let mut accepted = if accepts.is_empty() {
        Vec::new()
    } else {
        guarded(|| messages::accept_many(conn, &accepts, blind))?
    }
    .into_iter();
    let mut values = Vec::with_capacity(jobs.len());
    for job in jobs {
        values.push(match job {
            Job::Accept { .. } => {
                Box::new(accepted.next().expect("one outcome per accept")) as Value
            }
            Job::Work { work, .. } => guarded(|| work(conn))?,
        });
    }
    Ok(values)
}

/// Runs every job of a transaction just begun, optimistically (no
/// savepoints), then the batch's deferred events: the jobs' values, or the
/// first failure. PostgreSQL aborts the whole transaction on a failed
/// statement, and `COMMIT` then quietly rolls back: a job that caught such
/// a failure and carried on would look successful (`Db::take_failed`), so
/// that is a failure too. What failed before the transaction is not its
/// concern.
fn attempt_optimistically(
    conn: &Db<'_>,
    jobs: &mut [Job],
    blind: bool,
    events: &DeferEvents,
) -> Result<Vec<Value>, StoreError> {
    let _ = conn.take_failed();
    let _ = conn.take_later_failed();
    let outcome =
        attempt_all(jobs, conn, blind).and_then(|v| guarded(|| events.flush(conn)).map(|()| v));
    if conn.take_failed() && outcome.is_ok() {
        return Err(StoreError::Corrupt(
            "a write job carried on after a failed statement; rolled back".into(),
        ));
    }
    outcome
}

/// Commits, or rolls back if the commit fails; the error is every job's.
fn commit(conn: &Db<'_>, n: usize) -> Result<(), StoreError> {
    conn.execute_batch("COMMIT")
        .map(|()| written_behind::committed())
        .map_err(|e| commit_failed(conn, n, e))
}

/// Rolls the transaction back, with the pending entries the writer keeps
/// beside it (`written_behind`, which follows every end of a transaction
/// and every savepoint of the writer's: each statement that ends one or
/// opens, releases or rolls back to a savepoint is written once, in these
/// functions, with its notice).
fn rollback(conn: &Db<'_>) {
    let _ = conn.execute_batch("ROLLBACK");
    written_behind::rolled_back();
}

/// Opens a job's savepoint (the careful pass).
fn savepoint_job(conn: &Db<'_>) -> Result<(), DbError> {
    conn.execute_batch("SAVEPOINT job")
        .map(|()| written_behind::savepoint())
}

/// Releases a job's savepoint: its writes are the transaction's.
fn release_job(conn: &Db<'_>) -> Result<(), DbError> {
    conn.execute_batch("RELEASE job")
        .map(|()| written_behind::released())
}

/// Rolls back the newest savepoint's writes and releases it.
fn rollback_job(conn: &Db<'_>) {
    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
    written_behind::rolled_back_to();
    written_behind::released();
}

/// Rolls back after a failed commit; the error is every job's.
fn commit_failed(conn: &Db<'_>, n: usize, e: DbError) -> StoreError {
    rollback(conn);
    let e = StoreError::from(e);
    tracing::error!(error = %e, jobs = n, "group commit failed");
    e
}

/// Runs a batch with its writes pipelined (`Db::pipeline`): on PostgreSQL
/// the `BEGIN`, the accepts' inserts, the events and the `COMMIT` go to the
/// server together with the statements that need an answer, not one round
/// trip each.
fn run_batch(conn: &Db<'_>, jobs: Vec<Job>, blind: bool) -> (Answers, bool) {
    if let Err(e) = conn.pipeline(true) {
        tracing::error!(error = %e, "could not pipeline the writer's connection");
    }
    let answers = run_transaction(conn, jobs, blind);
    // Every path above ends with a statement that sent what was queued.
    if let Err(e) = conn.pipeline(false) {
        tracing::error!(error = %e, "a write was queued after its transaction ended");
    }
    answers
}

/// Batches of accepts in flight at most on PostgreSQL (`send_accepts`) on
/// a server nearby: the server runs one while the writer builds the next.
/// accept-pg on loopback: +38% with two, +27% with three, +25% with four,
/// +20% with one (sent and answered in turn), against the sync thread's
/// flush: more make smaller batches (bench/HISTORY.md, "Thirty-eighth
/// session"). A far server takes more (`FAR_FLIGHTS`).
const MAX_FLIGHTS: usize = 2;

/// How many batches may be in flight on this connection: `MAX_FLIGHTS`
/// nearby, more on a server a round trip of `FAR` or more away, where the
/// round trip, not the server's work, is what a batch waits for.
fn flights_for(conn: &Db<'_>) -> usize {
    if !conn.is_pg() {
        return MAX_FLIGHTS;
    }
    let rtt = (0..5)
        .filter_map(|_| {
            let t = Instant::now();
            conn.execute_batch("SELECT 1").ok().map(|()| t.elapsed())
        })
        .min();
    match rtt {
        Some(rtt) if rtt >= FAR => FAR_FLIGHTS,
        _ => MAX_FLIGHTS,
    }
}

/// A round trip to the server at least this long makes it far
/// (`flights_for`); on loopback one is 50–150 µs, to another host on a
/// LAN or in a cloud zone a few hundred µs and more.
const FAR: std::time::Duration = std::time::Duration::from_micros(500);

/// Batches of accepts in flight at most on a far server (`flights_for`).
/// With PostgreSQL 1 ms away each way: +139% against the sync thread's
/// flush with eight, +87% with four, +48% with two; sixteen made +144%
/// with half again the writer's CPU per accept (bench/HISTORY.md,
/// "Thirty-eighth session").
const FAR_FLIGHTS: usize = 8;

/// How the writer begins a transaction: on SQLite taking the write lock at
/// once (`IMMEDIATE`), so no statement of it waits for the lock midway; on
/// PostgreSQL committing without waiting for the WAL flush, which the sync
/// thread's connection makes before anyone is answered, while the writer
/// runs the next batch (`GroupCommit::start_pipelined_pg`). Its session
/// keeps the server's setting, which a batch in flight, a statement in no
/// transaction, commits with (`send_accepts`).
fn begin(conn: &Db<'_>) -> &'static str {
    if conn.is_pg() {
        "BEGIN; SET LOCAL synchronous_commit = off"
    } else {
        "BEGIN IMMEDIATE"
    }
}

/// How long the writer reads before it accepts after a batch's blind
/// accepts were refused: a client retrying requests, or messages to
/// opted-out recipients, tend to come in runs, and each refusal costs the
/// batch a second run.
const BLIND_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a batch: optimistically in one transaction, or, if a job fails, again
/// with a savepoint per job. Returns each job's answer with its result, and
/// whether the batch's blind accepts were refused.
///
/// `blind`: the batch's accepts may be stored without reading first
/// (`messages::accept_many`; PostgreSQL only, where each read is a round
/// trip). If the batch then fails, that may be all the failure was (a
/// stored idempotency key, an opt-out), so it runs optimistically once more
/// with the reads before any job is run alone.
fn run_transaction(conn: &Db<'_>, mut jobs: Vec<Job>, blind: bool) -> (Answers, bool) {
    let begin = begin(conn);
    let n = jobs.len();
    let accepts = || jobs.iter().filter_map(Job::accept);
    let mut blind =
        blind && conn.is_pg() && accepts().next().is_some() && messages::accepts_blind(accepts());
    let mut rechecked = false;
    // Message events are recorded once for the batch, before it commits.
    let events = DeferEvents::start();
    let first_error = loop {
        if let Err(e) = conn.execute_batch_later(begin) {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "could not begin a write transaction");
            let _ = conn.take_failed();
            return (failed_all(jobs, &e), rechecked);
        }
        let error = match attempt_optimistically(conn, &mut jobs, blind, &events) {
            Ok(values) => match conn.execute_batch("COMMIT") {
                // Not the commit: a job's queued write failed, so the server
                // rolled the transaction back. Redone below, as any failed
                // job is.
                Err(e) if conn.take_later_failed() => StoreError::from(e),
                r => {
                    let committed = r
                        .map(|()| written_behind::committed())
                        .map_err(|e| commit_failed(conn, n, e));
                    let answers = jobs
                        .into_iter()
                        .zip(values)
                        .map(|(j, v)| {
                            let r = match &committed {
                                Ok(()) => Ok(v),
                                Err(e) => Err(StoreError::for_each_job(e)),
                            };
                            (j, r)
                        })
                        .collect();
                    return (answers, rechecked);
                }
            },
            Err(e) => e,
        };
        rollback(conn);
        events.discard();
        if !blind {
            break error;
        }
        tracing::debug!(error = %error, "blind accepts refused; the batch runs again with reads");
        blind = false;
        rechecked = true;
    };
    if n == 1 {
        // Alone in its batch: its failure is the batch's; nothing to redo.
        let job = jobs.pop().expect("one job");
        return (vec![(job, Err(first_error))], rechecked);
    }
    if let Err(e) = conn.execute_batch(begin) {
        return (failed_all(jobs, &StoreError::from(e)), rechecked);
    }
    // Careful: each job in its own savepoint, so a failure is its own.
    let mut results = Vec::with_capacity(n);
    for job in &mut jobs {
        if let Err(e) = savepoint_job(conn) {
            results.push(Err(StoreError::from(e)));
            continue;
        }
        // Its queued writes are sent before its savepoint ends, so their
        // failure is its own.
        let r = attempt(job, conn)
            .and_then(|v| guarded(|| events.flush(conn)).map(|()| v))
            .and_then(|v| conn.flush().map(|()| v).map_err(StoreError::from));
        if r.is_err() {
            events.discard();
        }
        let r = match r {
            Ok(v) => match release_job(conn) {
                Ok(()) => Ok(v),
                Err(e) => {
                    // The job swallowed a failed statement (PostgreSQL then
                    // refuses everything up to a rollback): undo it alone.
                    tracing::error!(error = %e, "a write job left its savepoint unusable; rolled back");
                    rollback_job(conn);
                    Err(StoreError::from(e))
                }
            },
            Err(e) => {
                rollback_job(conn);
                Err(e)
            }
        };
        results.push(r);
    }
    let committed = commit(conn, n);
    let answers = jobs
        .into_iter()
        .zip(results)
        .map(|(j, r)| {
            let r = match (&committed, r) {
                (Ok(()), r) => r,
                (Err(e), Ok(_)) => Err(StoreError::for_each_job(e)),
                (Err(_), Err(e)) => Err(e),
            };
            (j, r)
        })
        .collect();
    (answers, rechecked)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rusqlite::Connection;
    use switchboard_core::Timestamp;

    use super::*;
    use crate::sql::events::{NewEvent, record};

    const TABLES: &str = "
        CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, workspace_id TEXT NOT NULL, message_id TEXT,
            type TEXT NOT NULL, status TEXT NOT NULL, detail TEXT, error_code TEXT, created_at INTEGER NOT NULL);
        CREATE TABLE webhook_endpoints (id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, enabled INTEGER NOT NULL, deleted_at INTEGER, event_types TEXT);
        CREATE TABLE webhook_deliveries (id TEXT PRIMARY KEY, endpoint_id TEXT NOT NULL, workspace_id TEXT NOT NULL, event_id TEXT NOT NULL,
            event_seq INTEGER NOT NULL, ordering_key TEXT, status TEXT NOT NULL, next_attempt_at INTEGER NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
        INSERT INTO webhook_endpoints VALUES ('we_1', 'ws_1', 1, NULL, NULL);
        INSERT INTO webhook_endpoints VALUES ('we_2', 'ws_1', 1, NULL, '[\"message.failed\"]');
    ";

    fn event(id: &str, n: i64) -> NewEvent<'_> {
        NewEvent {
            id,
            workspace_id: "ws_1",
            message_id: "msg_1",
            event_type: if n == 3 {
                "message.failed"
            } else {
                "message.sent"
            },
            status: "sent",
            detail: Some("d"),
            error_code: None,
            at: Timestamp::from_millis(1_000 + n),
            implied: false,
        }
    }

    /// (event id, its seq, endpoint, due at) of every delivery, in event order.
    fn deliveries(path: &std::path::Path) -> Vec<(String, i64, String, i64)> {
        let c = Connection::open(path).unwrap();
        let mut stmt = c
            .prepare(
                "SELECT d.event_id, e.seq, d.endpoint_id, d.next_attempt_at FROM webhook_deliveries d
                 JOIN events e ON e.id = d.event_id AND e.seq = d.event_seq ORDER BY e.seq, d.endpoint_id",
            )
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// An accept as the HTTP edge makes it, with an idempotency key.
    fn keyed(key: &str) -> AcceptRequest {
        keyed_saying(key, "hi")
    }

    /// `keyed` with this text.
    fn keyed_saying(key: &str, text: &str) -> AcceptRequest {
        use switchboard_core::{NewMessage, ProviderId, SubmitInput, WorkspaceId};
        let body = serde_json::json!({"to": "+14155550123", "body": text, "idempotency_key": key});
        let now = Timestamp::from_millis(1_700_000_000_000);
        AcceptRequest {
            workspace_id: WorkspaceId::parse("ws_1").unwrap(),
            message: NewMessage::parse(SubmitInput::from_json(&body).unwrap(), None, now).unwrap(),
            request_hash: "h".into(),
            provider_id: ProviderId::parse("pr_sim").unwrap(),
            from: "Switchboard".into(),
            now,
            consent_exempt: false,
            hold_until: None,
            require_opt_in: false,
        }
    }

    /// A pipelined writer on a fresh SQLite file (made by `schema::migrate`,
    /// then `setup`) with the written-behind chore, which sweeps nothing
    /// until the writer stops; the directory lives as long as the first
    /// value.
    fn sqlite_writer(
        setup: &str,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        GroupCommit,
        JoinHandle<()>,
    ) {
        use crate::sql::written_behind;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        crate::sql::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(setup).unwrap();
        written_behind::prepare(&conn).unwrap();
        let chore = Chore {
            every: std::time::Duration::from_secs(3_600),
            step: written_behind::sweep_step,
            start: written_behind::install,
            due: written_behind::due,
        };
        let (gc, thread) = GroupCommit::start_pipelined(
            Conn::Lite(conn),
            dir.path().join("t.db-wal"),
            None,
            Some(chore),
        );
        (dir, path, gc, thread)
    }

    /// Holds the writer in a job until the returned sender is told, so
    /// that the jobs queued meanwhile form one batch; returns once the
    /// writer is held.
    async fn hold(
        gc: &GroupCommit,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), StoreError>>,
    ) {
        let (started, has_started) = std::sync::mpsc::channel::<()>();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let held = tokio::spawn({
            let gc = gc.clone();
            async move {
                gc.run(move |_| {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || has_started.recv())
            .await
            .unwrap()
            .unwrap();
        (go, held)
    }

    /// Waits until `n` jobs are queued behind the held one.
    async fn queued(gc: &GroupCommit, n: usize) {
        let mut waited = 0;
        while gc.tx.capacity() > QUEUE - n {
            assert!(waited < 5_000, "the jobs were never queued");
            waited += 1;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// The writer's pending index entries follow its transactions: a
    /// batch whose first pass fails (a failing accept among accepts) is
    /// rolled back and run again job by job, and its accepts' keys are then
    /// pending once, for the messages that were stored (a stale entry from
    /// the first pass would name a message rolled back, and the key would
    /// be taken for a new one); the stop sweeps each once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pending_index_entries_follow_a_batch_run_again_after_a_failure() {
        // A message saying "boom" cannot be stored.
        let (_dir, path, gc, thread) = sqlite_writer(
            "CREATE TRIGGER boom BEFORE INSERT ON messages WHEN NEW.body = 'boom'
             BEGIN SELECT RAISE(ABORT, 'boom'); END",
        );
        let (go, held) = hold(&gc).await;
        let a = tokio::spawn({
            let gc = gc.clone();
            async move { gc.accept(keyed("a")).await }
        });
        let b = tokio::spawn({
            let gc = gc.clone();
            async move { gc.accept(keyed("b")).await }
        });
        let failing = tokio::spawn({
            let gc = gc.clone();
            async move { gc.accept(keyed_saying("c", "boom")).await }
        });
        queued(&gc, 3).await;
        go.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert!(failing.await.unwrap().is_err());
        let mut ids = Vec::new();
        for (key, job) in [("a", a), ("b", b)] {
            let AcceptOutcome::Created(m) = job.await.unwrap().unwrap() else {
                panic!("{key}: a new key")
            };
            ids.push(m.id);
        }
        assert!(gc.stats().max_batch >= 3, "{:?}", gc.stats());
        for (key, id) in ["a", "b"].into_iter().zip(&ids) {
            let again = gc.accept(keyed(key)).await.unwrap();
            assert!(
                matches!(&again, AcceptOutcome::Replayed(r) if r.id == *id),
                "{key}: {again:?}"
            );
        }
        drop(gc);
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        let c = Connection::open(&path).unwrap();
        let keys: Vec<(String, String)> = c
            .prepare(
                "SELECT k.idempotency_key, m.id FROM message_keys k JOIN messages m ON m.id = k.message_id
                 ORDER BY 1",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected: Vec<(String, String)> = ["a", "b"]
            .into_iter()
            .zip(&ids)
            .map(|(k, id)| (k.to_owned(), id.as_str().to_owned()))
            .collect();
        assert_eq!(keys, expected);
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT count(*) FROM messages"), 2);
        assert_eq!(count("SELECT count(*) FROM message_keys"), 2);
        assert_eq!(count("SELECT count(*) FROM message_phones"), 2);
    }

    /// A batch's accepts are answered without waiting for its other jobs
    /// (`accepts_first`): here a job batched with an accept waits for that
    /// accept's answer, which in one transaction with it would come only
    /// after the job had given up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_answers_its_accepts_before_it_runs_its_other_jobs() {
        let (_dir, _path, gc, _thread) = sqlite_writer("");
        let (go, held) = hold(&gc).await;
        // Waits (for at most 5 s) to be told that the accept was answered.
        let (answered, was_answered) = std::sync::mpsc::channel::<()>();
        let was_answered = std::sync::Mutex::new(was_answered);
        let waiting = tokio::spawn({
            let gc = gc.clone();
            async move {
                gc.run(move |_| {
                    let told = was_answered
                        .lock()
                        .unwrap()
                        .recv_timeout(std::time::Duration::from_secs(5));
                    Ok(told.is_ok())
                })
                .await
            }
        });
        let accept = tokio::spawn({
            let gc = gc.clone();
            async move { gc.accept(keyed("a")).await }
        });
        queued(&gc, 2).await;
        go.send(()).unwrap();
        held.await.unwrap().unwrap();
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(3), accept)
            .await
            .expect("the accept was answered before the job batched with it ended")
            .unwrap()
            .unwrap();
        assert!(matches!(outcome, AcceptOutcome::Created(_)), "{outcome:?}");
        answered.send(()).unwrap();
        assert!(
            waiting.await.unwrap().unwrap(),
            "the job heard of the answer"
        );
        let stats = gc.stats();
        assert_eq!((stats.jobs, stats.commits), (3, 3), "{stats:?}");
    }

    /// Where an accept waited is told stage by stage (`AcceptWaits`): one
    /// queued behind a job that holds the writer for 100 ms waited that
    /// long to be taken, its answer waited for a sync of the WAL, and its
    /// stages add up to no more than its call took.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_accepts_waits_are_timed_stage_by_stage() {
        let (_dir, _path, gc, _thread) = sqlite_writer("");
        assert_eq!(gc.stats().accept_waits, AcceptWaits::default());
        let (go, held) = hold(&gc).await;
        let began = Instant::now();
        let accept = tokio::spawn({
            let gc = gc.clone();
            async move { gc.accept(keyed("a")).await }
        });
        queued(&gc, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        go.send(()).unwrap();
        held.await.unwrap().unwrap();
        let outcome = accept.await.unwrap().unwrap();
        let took = began.elapsed();
        assert!(matches!(outcome, AcceptOutcome::Created(_)), "{outcome:?}");
        let w = gc.stats().accept_waits;
        assert_eq!(w.count, 1, "{w:?}");
        assert!(w.queued >= std::time::Duration::from_millis(100), "{w:?}");
        assert!(w.queued < took, "{w:?}, {took:?}");
        assert!(w.batch > std::time::Duration::ZERO, "{w:?}");
        assert!(w.durable > std::time::Duration::ZERO, "{w:?}");
        assert!(
            w.queued + w.batch + w.durable + w.resumed <= took,
            "{w:?}, {took:?}"
        );
        // A second accept, not held, adds its own.
        gc.accept(keyed("b")).await.unwrap();
        let again = gc.stats().accept_waits;
        assert_eq!(again.count, 2);
        assert!(
            again.queued >= w.queued && again.batch > w.batch,
            "{again:?}"
        );
    }

    /// The writer's writes run on statements of its own with their texts
    /// bound in place (`switchboard_walvfs::statements`): what each job
    /// stored is its texts, though the strings are gone when it ends, and
    /// a failed write leaves the next job's statement usable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_binds_its_texts_in_place() {
        use crate::sql::db::V;
        use switchboard_walvfs::statements::StaticBinds;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
            .unwrap();
        // Off on any other thread, and for this connection here.
        assert_eq!(StaticBinds::kept(), 0);
        let (gc, _thread) = GroupCommit::start(Conn::Lite(conn), None);
        let sql = "INSERT INTO notes (id, body) VALUES (?1, ?2)";
        let mut kept = Vec::new();
        for n in 0..20usize {
            let got = gc
                .run(move |c| {
                    let id = format!("n{n:02}");
                    let body = "é".repeat(n + 1);
                    let stored = c.execute(sql, &[V::from(id.as_str()), V::from(body.as_str())]);
                    drop((id, body));
                    stored?;
                    // The same id again fails, and leaves the statement usable.
                    let again = c.execute(sql, &[V::from(format!("n{n:02}")), V::from("x")]);
                    assert!(again.is_err(), "{again:?}");
                    Ok(StaticBinds::kept())
                })
                .await
                .unwrap();
            kept.push(got);
        }
        assert!(kept.iter().all(|&k| k >= 1), "{kept:?}");
        // Its reads too: on kept statements, with their texts in place, and
        // a read may use the connection while it walks its rows.
        let (rows, count, kept) = gc
            .run(move |c| {
                let from = String::from("n17");
                let rows = c.query_map(
                    "SELECT id, body FROM notes WHERE id >= ?1 ORDER BY id",
                    &[V::from(from.as_str())],
                    |r| {
                        let id: String = r.get(0)?;
                        let again = c.query_row(
                            "SELECT length(body) FROM notes WHERE id = ?1",
                            &[V::from(id.as_str())],
                            |r| r.get::<_, i64>(0),
                        )?;
                        Ok((id, r.get::<_, String>(1)?, again))
                    },
                )?;
                drop(from);
                let count = c.query_row(
                    "SELECT count(*) FROM notes WHERE id < ?1",
                    &[V::from("n05")],
                    |r| r.get::<_, i64>(0),
                )?;
                let none = c.query_row(
                    "SELECT id FROM notes WHERE id = ?1",
                    &[V::from("nobody")],
                    |r| r.get::<_, String>(0),
                );
                assert!(
                    matches!(none, Err(crate::sql::db::DbError::NoRows)),
                    "{none:?}"
                );
                Ok((rows, count, StaticBinds::kept()))
            })
            .await
            .unwrap();
        let want: Vec<(String, String, i64)> = (17..20usize)
            .map(|n| (format!("n{n:02}"), "é".repeat(n + 1), n as i64 + 1))
            .collect();
        assert_eq!(rows, want);
        assert_eq!(count, 5);
        // The insert and the four reads.
        assert_eq!(kept, 5);
        let read = Connection::open(&path).unwrap();
        let mut stmt = read
            .prepare("SELECT id, body FROM notes ORDER BY id")
            .unwrap();
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let want: Vec<(String, String)> = (0..20usize)
            .map(|n| (format!("n{n:02}"), "é".repeat(n + 1)))
            .collect();
        assert_eq!(rows, want);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deferred_events_commit_with_their_job_and_roll_back_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(TABLES).unwrap();
        // Outside a batch an event is recorded and fans out at once.
        record(&Db::Lite(&conn), &event("evt_00", 0)).unwrap();
        assert_eq!(
            deliveries(&path),
            [("evt_00".to_owned(), 1, "we_1".to_owned(), 1_000)]
        );
        let (gc, _thread) = GroupCommit::start(Conn::Lite(conn), None);
        let gc = Arc::new(gc);
        let mut tasks = Vec::new();
        for n in 1..=40i64 {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move {
                gc.run(move |c| {
                    let id = format!("evt_{n:02}");
                    record(c, &event(&id, n))?;
                    if n % 10 == 7 {
                        return Err(StoreError::Corrupt("refused on purpose".into()));
                    }
                    Ok(n)
                })
                .await
            }));
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        let got = deliveries(&path);
        // Every committed job's event is stored once and has its deliveries
        // (the second endpoint takes only message.failed), due at the
        // event's own time; the failed jobs' events are gone with them.
        let mut ids: Vec<&str> = got.iter().map(|d| d.0.as_str()).collect();
        ids.dedup();
        let want: Vec<String> = (0..=40i64)
            .filter(|n| n % 10 != 7)
            .map(|n| format!("evt_{n:02}"))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, want);
        assert_eq!(got.len(), want.len() + 1, "evt_03 goes to both endpoints");
        for (id, _, endpoint, due) in &got {
            let n: i64 = id[4..].parse().unwrap();
            assert_eq!(*due, 1_000 + n, "{id}");
            assert!(endpoint == "we_1" || n == 3, "{id} to {endpoint}");
        }
        let events: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(events as usize, want.len());
        let stats = gc.stats();
        assert!(stats.max_batch > 1, "the jobs shared batches: {stats:?}");
    }

    /// A TCP proxy on loopback to `upstream` that forwards every chunk
    /// `delay` after it arrived, both ways, in order; returns its port.
    fn delaying_proxy(upstream: std::net::SocketAddr, delay: std::time::Duration) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(server)) = (client, std::net::TcpStream::connect(upstream))
                else {
                    return;
                };
                let ways = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ];
                for (mut from, mut to) in ways {
                    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            if tx
                                .send((Instant::now() + delay, buf[..n].to_vec()))
                                .is_err()
                            {
                                break;
                            }
                        }
                    });
                    std::thread::spawn(move || {
                        for (due, chunk) in rx {
                            std::thread::sleep(due.saturating_duration_since(Instant::now()));
                            if to.write_all(&chunk).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        port
    }

    #[test]
    fn a_far_server_takes_more_batches_in_flight() {
        use std::net::ToSocketAddrs;
        let Some(base) = crate::sql::scratch::ScratchSchema::test_server_url() else {
            eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
            return;
        };
        let config: tokio_postgres::Config = base.parse().unwrap();
        let Some(tokio_postgres::config::Host::Tcp(host)) = config.get_hosts().first() else {
            eprintln!("the test server is not reached over TCP: skipped");
            return;
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let upstream = (host.as_str(), port)
            .to_socket_addrs()
            .unwrap()
            .next()
            .unwrap();
        // Nearby (the test server is on loopback): two.
        let near = super::super::db::PgConn::connect(&config).unwrap();
        assert_eq!(flights_for(&Db::Pg(&near)), MAX_FLIGHTS);
        // The same server 1 ms away each way: eight.
        let mut far = tokio_postgres::Config::new();
        far.user(config.get_user().unwrap_or("postgres"))
            .host("127.0.0.1")
            .port(delaying_proxy(
                upstream,
                std::time::Duration::from_millis(1),
            ));
        if let Some(db) = config.get_dbname() {
            far.dbname(db);
        }
        let far = super::super::db::PgConn::connect(&far).unwrap();
        assert_eq!(flights_for(&Db::Pg(&far)), FAR_FLIGHTS);
        // SQLite has no round trip.
        let c = Connection::open_in_memory().unwrap();
        assert_eq!(flights_for(&Db::Lite(&c)), MAX_FLIGHTS);
    }

    #[test]
    fn accepts_behind_a_batch_in_flight_go_once_they_are_half_as_many() {
        // Under a light load one accept goes behind one or two.
        assert!(worth_sending(1, 1));
        assert!(worth_sending(1, 2));
        // Behind forty, not one or nineteen, but twenty.
        assert!(!worth_sending(1, 40));
        assert!(!worth_sending(19, 40));
        assert!(worth_sending(20, 40));
        assert!(worth_sending(60, 40));
    }

    /// A store on a scratch schema of the test server, or `None` (and the
    /// test skipped) without one; the schema lives as long as the first
    /// value.
    async fn pg_store(
        prefix: &str,
    ) -> Option<(
        crate::sql::scratch::ScratchSchema,
        Arc<crate::sql::SqlStore>,
    )> {
        let Some(base) = crate::sql::scratch::ScratchSchema::test_server_url() else {
            eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
            return None;
        };
        let schema = crate::sql::scratch::ScratchSchema::create_async(&base, prefix)
            .await
            .unwrap();
        let store = crate::sql::SqlStore::connect_postgres_async(&schema.url(), 1)
            .await
            .unwrap();
        Some((schema, Arc::new(store)))
    }

    /// The writer's prepared statements are planned once on PostgreSQL
    /// (`SqlStore::WRITER_SESSION`), as on SQLite
    /// (`sql::tests::a_new_limit_does_not_plan_a_statement_again`).
    /// Accepts one at a time are batches of one row, for which the
    /// server's own choice (`auto`) plans the statement afresh at every
    /// run: a custom plan each time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_plans_its_statements_once_on_postgres() {
        use crate::Store;
        let Some((_schema, store)) = pg_store("plans").await else {
            return;
        };
        for i in 0..12 {
            let outcome = store.accept_message(keyed(&format!("k{i}"))).await.unwrap();
            assert!(matches!(outcome, AcceptOutcome::Created(_)), "{outcome:?}");
        }
        let (custom, generic) = store
            .writer
            .run(|c| {
                Ok(c.query_row(
                    "SELECT CAST(coalesce(sum(custom_plans), 0) AS BIGINT),
                            CAST(coalesce(sum(generic_plans), 0) AS BIGINT)
                     FROM pg_prepared_statements",
                    &[],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )?)
            })
            .await
            .unwrap();
        assert_eq!(custom, 0, "no statement of the writer's is planned per run");
        assert!(
            generic >= 12,
            "the accepts ran prepared statements: {generic}"
        );
    }

    /// Accepts held behind a batch in flight (`worth_sending`) go when it
    /// lands, with no other job to wake the writer: a burst of forty, then
    /// one and two more alone, are all answered, and stored once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn accepts_held_behind_a_batch_in_flight_go_when_it_lands_on_postgres() {
        use crate::Store;
        let Some((_schema, store)) = pg_store("held").await else {
            return;
        };
        for round in 0..20 {
            let mut tasks = Vec::new();
            for i in 0..43 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    if i >= 40 {
                        // After the burst, one at a time.
                        tokio::time::sleep(std::time::Duration::from_micros(200 * (i - 39))).await;
                    }
                    store.accept_message(keyed(&format!("k{round}-{i}"))).await
                }));
            }
            for t in tasks {
                let outcome = tokio::time::timeout(std::time::Duration::from_secs(10), t)
                    .await
                    .expect("answered")
                    .unwrap()
                    .unwrap();
                assert!(matches!(outcome, AcceptOutcome::Created(_)), "{outcome:?}");
            }
        }
        let stored = store
            .writer
            .run(|c| Ok(c.query_row("SELECT count(*) FROM messages", &[], |r| r.get::<_, i64>(0))?))
            .await
            .unwrap();
        assert_eq!(stored, 20 * 43);
        // Batches in flight are timed too, durable as they land.
        let waits = store.writer.stats().accept_waits;
        assert_eq!(waits.count, 20 * 43, "{waits:?}");
        assert!(waits.batch > waits.durable, "{waits:?}");
    }

    /// A batch in flight, a statement in the writer's session outside any
    /// transaction, commits as the server is set to; the writer's
    /// transactions do not wait for the flush, which the sync thread's
    /// connection makes.
    #[test]
    fn a_flight_commits_as_durably_as_the_server_is_set_to_on_postgres() {
        let Some(base) = crate::sql::scratch::ScratchSchema::test_server_url() else {
            eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
            return;
        };
        let setting = |db: &Db<'_>| {
            db.query_row("SHOW synchronous_commit", &[], |r| r.get::<_, String>(0))
                .unwrap()
        };
        let other = super::super::db::PgConn::connect_url(&base).unwrap();
        let server = setting(&Db::Pg(&other));
        assert_ne!(server, "off", "the test server makes commits durable");
        let conn = super::super::db::PgConn::connect_url(&base).unwrap();
        let db = Db::Pg(&conn);
        db.execute_batch(crate::sql::SqlStore::WRITER_SESSION)
            .unwrap();
        assert_eq!(
            setting(&db),
            server,
            "a flight commits with the server's setting"
        );
        db.execute_batch(begin(&db)).unwrap();
        assert_eq!(
            setting(&db),
            "off",
            "a transaction of the writer's does not wait"
        );
        db.execute_batch("COMMIT").unwrap();
        assert_eq!(setting(&db), server, "and leaves the session's as it was");
    }
}
