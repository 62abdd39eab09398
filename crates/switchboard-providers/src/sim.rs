//! The built-in simulator (`pr_sim`): deterministic by the recipient's last
//! four digits, with its own ledger so it behaves like a real provider that
//! remembers what it accepted, across restarts of Switchboard.
//!
//! | last 4 digits | behaviour |
//! |---|---|
//! | `0400` | permanent failure `invalid_number` on every attempt |
//! | `0421`–`0429` | throttled (`Retry-After: 1`) N times (N = last digit), then accepted and delivered |
//! | `0501`–`0509` | transport error N times (N = last digit), then accepted and delivered |
//! | `0599` | transport error on every attempt |
//! | `0404` | accepted, then an `undelivered` receipt |
//! | `0408` | never acknowledged: the request hangs until the dispatcher's send timeout |
//! | `0451` | refused for consent (recipient opted out at the carrier) |
//! | `0202` | accepted, delivered, then read |
//! | anything else (e.g. `+14155550123`) | accepted, then delivered |
//!
//! The ledger (`sim.db` in the data directory) keys every call by the
//! request's idempotency key (the message id): a second call for a message
//! already accepted returns the same provider id and is counted as a
//! duplicate call, never as a second send.
//!
//! Receipts come back the way a real provider's do: the worker posts the
//! due ones to the gateway's `POST /callbacks/pr_sim` as
//! `{"receipts":[{"id","status","at"}…]}` (and the route also takes
//! `{"inbound":[{"id","from","to","text"}…]}`), signed with
//! `X-Sim-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`
//! under a secret made fresh by every process. A receipt is marked reported
//! only after a 2xx; otherwise it is posted again.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use switchboard_core::{Clock, ErrorClass, Timestamp};

use hmac::{Hmac, Mac};
use serde_json::value::RawValue;
use sha2::Sha256;
use switchboard_core::ReceiptKind;

use crate::callback::{CallbackError, CallbackHandler, CallbackItem, CallbackRequest, InboundItem};
use crate::{Provider, ProviderError, SendAccepted, SendRequest};

/// How far a callback's signed time may be from the receiver's clock.
const CALLBACK_TOLERANCE_SECONDS: i64 = 300;
/// Most receipts in one callback.
pub const MAX_CALLBACK_RECEIPTS: usize = 500;

/// Timing of the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// How long a send takes to answer.
    pub latency: Duration,
    /// How long after acceptance the receipt is due.
    pub receipt_delay: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            latency: Duration::from_millis(20),
            receipt_delay: Duration::from_millis(500),
        }
    }
}

/// What the simulator does for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Accepted, then delivered.
    Deliver,
    /// Accepted, delivered, then read.
    DeliverAndRead,
    /// Accepted, then undelivered.
    Undeliver,
    /// Permanent failure.
    InvalidNumber,
    /// Throttled this many times, then delivered.
    Throttle(u32),
    /// Transport errors this many times, then delivered.
    TransportErrors(u32),
    /// Transport errors forever.
    AlwaysTransportError,
    /// Never answers.
    NeverAcknowledge,
    /// Refused for consent.
    OptedOut,
}

/// The behaviour for a recipient number (see the module table).
pub fn behaviour_for(to: &str) -> Behaviour {
    let tail = to
        .len()
        .checked_sub(4)
        .and_then(|i| to.get(i..))
        .unwrap_or("");
    let n = tail
        .as_bytes()
        .get(3)
        .map_or(0, |b| u32::from(b.wrapping_sub(b'0')));
    match tail {
        "0400" => Behaviour::InvalidNumber,
        "0404" => Behaviour::Undeliver,
        "0408" => Behaviour::NeverAcknowledge,
        "0451" => Behaviour::OptedOut,
        "0202" => Behaviour::DeliverAndRead,
        "0599" => Behaviour::AlwaysTransportError,
        t if t.starts_with("042") && (1..=9).contains(&n) => Behaviour::Throttle(n),
        t if t.starts_with("050") && (1..=9).contains(&n) => Behaviour::TransportErrors(n),
        _ => Behaviour::Deliver,
    }
}

/// A receipt the simulator has due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReceipt {
    /// Ledger row.
    pub id: i64,
    /// The provider message id it refers to.
    pub provider_message_id: String,
    /// `delivered`, `read` or `undelivered`.
    pub kind: String,
    /// When it fell due.
    pub due_at: Timestamp,
}

/// Per-key counts from the ledger, for tests and `switchboard sim sends`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSendRecord {
    /// The idempotency key (message id).
    pub key: String,
    /// Calls received for it.
    pub calls: u32,
    /// Calls received after it had been accepted.
    pub calls_after_accept: u32,
    /// The provider id, once accepted.
    pub provider_message_id: Option<String>,
    /// When it was accepted (the simulator's clock).
    pub accepted_at: Option<Timestamp>,
}

/// The simulator provider.
#[derive(Debug)]
pub struct SimProvider {
    // A std Mutex, not a Tokio one: it is only held inside spawn_blocking
    // and by the ledger thread.
    ledger: Arc<Mutex<Connection>>,
    // Sends go to the ledger thread, which records everything queued in one
    // transaction (see `ledger_loop`).
    calls: tokio::sync::mpsc::Sender<LedgerCall>,
    config: SimConfig,
    clock: Arc<dyn Clock>,
    // Signs the simulator's receipt callbacks; new for every process, as
    // the simulator and the receiver it calls are the same process.
    callback_secret: String,
}

/// The ledger's tables. Each send writes one B-tree of `sim_sends` (keyed
/// by the message id, `WITHOUT ROWID`) and the table and due index of its
/// receipts, whose ids are row numbers (no `AUTOINCREMENT`: receipts are
/// never deleted, so a number is never given twice, and SQLite's sequence
/// table is not written by every send). Ledgers made before that layout
/// are rebuilt once when opened (`upgrade_ledger`).
const SENDS_TABLE: &str = "(
    key                 TEXT PRIMARY KEY,
    to_phone            TEXT NOT NULL,
    calls               INTEGER NOT NULL,
    calls_after_accept  INTEGER NOT NULL DEFAULT 0,
    provider_message_id TEXT,
    accepted_at         INTEGER
) WITHOUT ROWID";
const RECEIPTS_TABLE: &str = "(
    id                  INTEGER PRIMARY KEY,
    provider_message_id TEXT NOT NULL,
    kind                TEXT NOT NULL,
    due_at              INTEGER NOT NULL,
    reported            INTEGER NOT NULL DEFAULT 0
)";
const RECEIPTS_DUE: &str = "sim_receipts_due ON sim_receipts (due_at) WHERE reported = 0";

fn ledger_schema() -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS sim_sends {SENDS_TABLE};
         CREATE TABLE IF NOT EXISTS sim_receipts {RECEIPTS_TABLE};
         CREATE INDEX IF NOT EXISTS {RECEIPTS_DUE};"
    )
}

/// Rebuilds the tables of a ledger made before `ledger_schema`'s layout
/// (a rowid `sim_sends` with an index on its key, `sim_receipts` numbered
/// by `AUTOINCREMENT`), keeping every row and receipt id. Nodes sharing a
/// data directory may open the ledger at once: the check and the rebuild
/// are one immediate transaction, so one of them rebuilds and the others
/// find it done.
fn upgrade_ledger(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let sql_of = |name: &str| -> Result<Option<String>, rusqlite::Error> {
        tx.query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .optional()
    };
    if sql_of("sim_sends")?.is_some_and(|sql| !sql.contains("WITHOUT ROWID")) {
        tx.execute_batch(&format!(
            "CREATE TABLE sim_sends_v2 {SENDS_TABLE};
             INSERT INTO sim_sends_v2 (key, to_phone, calls, calls_after_accept, provider_message_id, accepted_at)
                 SELECT key, to_phone, calls, calls_after_accept, provider_message_id, accepted_at FROM sim_sends;
             DROP TABLE sim_sends;
             ALTER TABLE sim_sends_v2 RENAME TO sim_sends;"
        ))?;
    }
    if sql_of("sim_receipts")?.is_some_and(|sql| sql.contains("AUTOINCREMENT")) {
        tx.execute_batch(&format!(
            "CREATE TABLE sim_receipts_v2 {RECEIPTS_TABLE};
             INSERT INTO sim_receipts_v2 (id, provider_message_id, kind, due_at, reported)
                 SELECT id, provider_message_id, kind, due_at, reported FROM sim_receipts ORDER BY id;
             DROP TABLE sim_receipts;
             ALTER TABLE sim_receipts_v2 RENAME TO sim_receipts;
             CREATE INDEX {RECEIPTS_DUE};"
        ))?;
    }
    tx.commit()
}

/// The simulator's provider id.
pub const SIM_PROVIDER_ID: &str = "pr_sim";

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "sim.db";

enum CallResult {
    Accepted(String),
    Failed(ProviderError),
    Hang,
}

impl Behaviour {
    /// What the simulator answers the `calls`-th call of a send (the first
    /// is 1) to a recipient with this behaviour instead of accepting it,
    /// if anything.
    fn refusal(self, calls: u32) -> Option<CallResult> {
        let fail = |class, code: &str, msg: &str| {
            Some(CallResult::Failed(ProviderError::new(class, code, msg)))
        };
        match self {
            Behaviour::InvalidNumber => fail(
                ErrorClass::Permanent,
                "invalid_number",
                "the simulator treats this number as invalid",
            ),
            Behaviour::OptedOut => fail(
                ErrorClass::Consent,
                "recipient_opted_out",
                "the recipient has opted out at the carrier",
            ),
            Behaviour::AlwaysTransportError => fail(
                ErrorClass::Transport,
                "upstream_unavailable",
                "simulated upstream outage",
            ),
            Behaviour::TransportErrors(n) if calls <= n => fail(
                ErrorClass::Transport,
                "upstream_unavailable",
                "simulated transient upstream error",
            ),
            Behaviour::Throttle(n) if calls <= n => Some(CallResult::Failed(ProviderError {
                retry_after: Some(Duration::from_secs(1)),
                ..ProviderError::new(
                    ErrorClass::Throttled,
                    "rate_limited",
                    "simulated throttling",
                )
            })),
            Behaviour::NeverAcknowledge => Some(CallResult::Hang),
            _ => None,
        }
    }

    /// Whether the simulator accepts the `calls`-th call of a send.
    fn accepts_call(self, calls: u32) -> bool {
        self.refusal(calls).is_none()
    }
}

/// One send for the ledger thread.
struct LedgerCall {
    req: SendRequest,
    now: Timestamp,
    receipt_delay: Duration,
    answer: tokio::sync::oneshot::Sender<Result<CallResult, rusqlite::Error>>,
}

/// Sends queued for the ledger thread before callers wait (backpressure).
const LEDGER_QUEUE: usize = 4096;
/// Most sends recorded in one ledger transaction.
const LEDGER_BATCH: usize = 512;

/// The ledger thread: takes the first queued send and everything queued
/// behind it, records them all in one transaction and answers each after
/// the commit — the same group commit as the gateway's own writer, so a
/// simulator under load costs one commit per batch, not one per send and
/// a blocking-pool thread waiting on the ledger's lock for each. If the
/// batch fails, each send runs again in a transaction of its own, so one
/// bad call does not fail the others. Ends when the provider is dropped.
fn ledger_loop(ledger: &Mutex<Connection>, mut rx: tokio::sync::mpsc::Receiver<LedgerCall>) {
    let mut batch: Vec<LedgerCall> = Vec::with_capacity(LEDGER_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < LEDGER_BATCH {
            match rx.try_recv() {
                Ok(call) => batch.push(call),
                Err(_) => break,
            }
        }
        let mut c = ledger.lock().expect("sim ledger lock");
        let together = (|| {
            let tx = c.transaction()?;
            let results = batch
                .iter()
                .map(|call| SimProvider::call(&tx, &call.req, call.now, call.receipt_delay))
                .collect::<Result<Vec<_>, _>>()?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(results)
        })();
        match together {
            Ok(results) => {
                for (call, r) in batch.drain(..).zip(results) {
                    let _ = call.answer.send(Ok(r));
                }
            }
            Err(_) => {
                for call in batch.drain(..) {
                    let r = c.transaction().and_then(|tx| {
                        let r = SimProvider::call(&tx, &call.req, call.now, call.receipt_delay)?;
                        tx.commit()?;
                        Ok(r)
                    });
                    let _ = call.answer.send(r);
                }
            }
        }
    }
}

impl SimProvider {
    /// Opens (creating) the ledger in `data_dir`.
    pub fn open(
        data_dir: &Path,
        config: SimConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, rusqlite::Error> {
        let mut conn = Connection::open(data_dir.join(LEDGER_FILE))?;
        // Nodes sharing a data directory (several nodes on one PostgreSQL,
        // one machine) share the ledger: wait for each other's writes.
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a process crash, which is all a
        // simulator needs to model a provider that remembers.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The receipt claim's `LIMIT ?2` would otherwise have SQLite plan
        // the statement again whenever the limit changes.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        upgrade_ledger(&mut conn)?;
        conn.execute_batch(&ledger_schema())?;
        let ledger = Arc::new(Mutex::new(conn));
        let (calls, rx) = tokio::sync::mpsc::channel(LEDGER_QUEUE);
        let l = ledger.clone();
        std::thread::Builder::new()
            .name("sim-ledger".into())
            .spawn(move || ledger_loop(&l, rx))
            .map_err(|e| {
                rusqlite::Error::ToSqlConversionFailure(
                    format!("cannot start the sim ledger thread: {e}").into(),
                )
            })?;
        Ok(SimProvider {
            ledger,
            calls,
            config,
            clock,
            callback_secret: switchboard_core::secret::new_token("simcb_"),
        })
    }

    /// The body of a receipt callback, as the simulator's network sends it:
    /// `{"receipts":[{"at","id","status"}…]}`, written by hand as
    /// serde_json writes the same `Value` (a test holds the two together).
    pub fn callback_body(receipts: &[SimReceipt]) -> Vec<u8> {
        use switchboard_core::json_text::push_str;
        let mut out = String::with_capacity(16 + receipts.len() * 96);
        out.push_str("{\"receipts\":[");
        for (i, r) in receipts.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"at\":");
            push_str(&mut out, &r.due_at.to_rfc3339());
            out.push_str(",\"id\":");
            push_str(&mut out, &r.provider_message_id);
            out.push_str(",\"status\":");
            push_str(&mut out, &r.kind);
            out.push('}');
        }
        out.push_str("]}");
        out.into_bytes()
    }

    /// The `X-Sim-Signature` header for `body` sent at `at`:
    /// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
    pub fn sign_callback(&self, body: &[u8], at: Timestamp) -> String {
        let t = at.as_millis().div_euclid(1000);
        format!(
            "t={t},v1={}",
            hex::encode(self.mac(t, body).finalize().into_bytes())
        )
    }

    fn mac(&self, t: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.callback_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    async fn with_ledger<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, rusqlite::Error> {
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || f(&mut ledger.lock().expect("sim ledger lock")))
            .await
            .expect("sim ledger task")
    }

    /// Receipts due at `now`, oldest first, at most `limit`.
    pub async fn due_receipts(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<SimReceipt>, rusqlite::Error> {
        self.with_ledger(move |c| {
            // Taken for 30 s: nodes sharing the ledger do not post the same
            // receipts at once; if the post fails they fall due again.
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let due: Vec<SimReceipt> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, provider_message_id, kind, due_at FROM sim_receipts WHERE reported = 0 AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
                )?;
                stmt.query_map(params![now.as_millis(), limit as i64], |r| {
                    Ok(SimReceipt { id: r.get(0)?, provider_message_id: r.get(1)?, kind: r.get(2)?, due_at: Timestamp::from_millis(r.get(3)?) })
                })?
                .collect::<Result<_, _>>()?
            };
            {
                let mut take = tx.prepare_cached("UPDATE sim_receipts SET due_at = ?1 WHERE id = ?2")?;
                let until = now.plus(Duration::from_secs(30)).as_millis();
                for r in &due {
                    take.execute(params![until, r.id])?;
                }
            }
            tx.commit()?;
            Ok(due)
        })
        .await
    }

    /// The earliest time a receipt is due, if any is pending.
    pub async fn next_receipt_at(&self) -> Result<Option<Timestamp>, rusqlite::Error> {
        self.with_ledger(|c| {
            let t: Option<i64> = c.query_row(
                "SELECT MIN(due_at) FROM sim_receipts WHERE reported = 0",
                [],
                |r| r.get(0),
            )?;
            Ok(t.map(Timestamp::from_millis))
        })
        .await
    }

    /// Marks receipts as handed to Switchboard.
    pub async fn mark_reported(&self, ids: Vec<i64>) -> Result<(), rusqlite::Error> {
        self.with_ledger(move |c| {
            let tx = c.transaction()?;
            {
                let mut mark =
                    tx.prepare_cached("UPDATE sim_receipts SET reported = 1 WHERE id = ?1")?;
                for id in ids {
                    mark.execute([id])?;
                }
            }
            tx.commit()
        })
        .await
    }

    /// Every key the simulator was called with.
    pub async fn sends(&self) -> Result<Vec<SimSendRecord>, rusqlite::Error> {
        self.with_ledger(|c| read_sends(c)).await
    }

    /// Records one call inside the ledger thread's transaction `tx`.
    fn call(
        tx: &Connection,
        req: &SendRequest,
        now: Timestamp,
        receipt_delay: Duration,
    ) -> Result<CallResult, rusqlite::Error> {
        let behaviour = behaviour_for(&req.to);
        let pmid = format!(
            "SIM{}",
            &req.idempotency_key.replace('_', "").to_lowercase()
        );
        // A first call that the behaviour accepts is stored accepted at
        // once, by the insert itself. It is a plain insert that reads
        // nothing back: an upsert with `RETURNING` made SQLite open and free
        // a temporary B-tree for its answer at every send. Only a repeated
        // call (nothing inserted) reads its row, as it counts itself.
        let accepted_at_once = behaviour.accepts_call(1);
        let inserted = tx
            .prepare_cached(
                "INSERT INTO sim_sends (key, to_phone, calls, provider_message_id, accepted_at)
                 VALUES (?1, ?2, 1, ?3, ?4)
             ON CONFLICT (key) DO NOTHING",
            )?
            .execute(params![
                req.idempotency_key,
                req.to,
                accepted_at_once.then_some(pmid.as_str()),
                accepted_at_once.then_some(now.as_millis()),
            ])?;
        let (calls, existing): (u32, Option<String>) = if inserted == 1 {
            (1, accepted_at_once.then(|| pmid.clone()))
        } else {
            tx.prepare_cached(
                "UPDATE sim_sends SET calls = calls + 1,
                     calls_after_accept = calls_after_accept + (provider_message_id IS NOT NULL)
                 WHERE key = ?1
                 RETURNING calls, provider_message_id",
            )?
            .query_row(params![req.idempotency_key], |r| Ok((r.get(0)?, r.get(1)?)))?
        };
        if let Some(existing) = existing {
            if calls == 1 {
                // Accepted by this first call: its receipts follow.
                Self::schedule_receipts(tx, &existing, behaviour, now, receipt_delay)?;
            }
            return Ok(CallResult::Accepted(existing));
        }
        if let Some(refused) = behaviour.refusal(calls) {
            return Ok(refused);
        }
        // Accepted by a later call (after throttling or transport errors).
        tx.prepare_cached(
            "UPDATE sim_sends SET provider_message_id = ?1, accepted_at = ?2 WHERE key = ?3",
        )?
        .execute(params![pmid, now.as_millis(), req.idempotency_key])?;
        Self::schedule_receipts(tx, &pmid, behaviour, now, receipt_delay)?;
        Ok(CallResult::Accepted(pmid))
    }

    /// The receipts an accepted send will report, by its behaviour.
    fn schedule_receipts(
        tx: &Connection,
        pmid: &str,
        behaviour: Behaviour,
        now: Timestamp,
        receipt_delay: Duration,
    ) -> Result<(), rusqlite::Error> {
        let receipt =
            |kind: &str, after: u32| {
                tx.prepare_cached(
                "INSERT INTO sim_receipts (provider_message_id, kind, due_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![pmid, kind, now.plus(receipt_delay * after).as_millis()])
            };
        match behaviour {
            Behaviour::Undeliver => receipt("undelivered", 1)?,
            Behaviour::DeliverAndRead => {
                receipt("delivered", 1).and_then(|_| receipt("read", 2))?
            }
            _ => receipt("delivered", 1)?,
        };
        Ok(())
    }
}

/// Reads the ledger's per-key counts from an open connection.
pub fn read_sends(c: &Connection) -> Result<Vec<SimSendRecord>, rusqlite::Error> {
    let mut stmt = c.prepare(
        "SELECT key, calls, calls_after_accept, provider_message_id, accepted_at FROM sim_sends ORDER BY key",
    )?;
    stmt.query_map([], |r| {
        Ok(SimSendRecord {
            key: r.get(0)?,
            calls: r.get(1)?,
            calls_after_accept: r.get(2)?,
            provider_message_id: r.get(3)?,
            accepted_at: r.get::<_, Option<i64>>(4)?.map(Timestamp::from_millis),
        })
    })?
    .collect()
}

/// Opens a ledger read-only (for inspection after a run) and reads it.
pub fn read_ledger(data_dir: &Path) -> Result<Vec<SimSendRecord>, rusqlite::Error> {
    let c = Connection::open(data_dir.join(LEDGER_FILE))?;
    let exists: Option<String> = c
        .query_row(
            "SELECT name FROM sqlite_master WHERE name = 'sim_sends'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    read_sends(&c)
}

#[async_trait]
impl Provider for SimProvider {
    async fn send(&self, req: &SendRequest) -> Result<SendAccepted, ProviderError> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let now = self.clock.now();
        let delay = self.config.receipt_delay;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let call = LedgerCall {
            req: req.clone(),
            now,
            receipt_delay: delay,
            answer,
        };
        let gone = || {
            ProviderError::new(
                ErrorClass::Transport,
                "sim_ledger_error",
                "the simulator's ledger thread stopped",
            )
        };
        self.calls.send(call).await.map_err(|_| gone())?;
        let result = answered.await.map_err(|_| gone())?.map_err(|e| {
            ProviderError::new(ErrorClass::Transport, "sim_ledger_error", e.to_string())
        })?;
        match result {
            CallResult::Accepted(provider_message_id) => Ok(SendAccepted {
                provider_message_id,
            }),
            CallResult::Failed(e) => Err(e),
            CallResult::Hang => std::future::pending().await,
        }
    }
}

impl CallbackHandler for SimProvider {
    fn open(&self, req: &CallbackRequest<'_>) -> Result<Vec<CallbackItem>, CallbackError> {
        let forbidden = |m: &str| CallbackError::Forbidden(m.to_owned());
        let header = req
            .header("x-sim-signature")
            .ok_or_else(|| forbidden("missing X-Sim-Signature"))?;
        let (mut t, mut v1) = (None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", x)) => t = x.parse::<i64>().ok(),
                Some(("v1", x)) => v1 = hex::decode(x).ok(),
                _ => {}
            }
        }
        let (Some(t), Some(v1)) = (t, v1) else {
            return Err(forbidden("X-Sim-Signature must be t=<seconds>,v1=<hex>"));
        };
        self.mac(t, req.body)
            .verify_slice(&v1)
            .map_err(|_| forbidden("the signature does not match"))?;
        if (req.now.as_millis().div_euclid(1000) - t).abs() > CALLBACK_TOLERANCE_SECONDS {
            return Err(forbidden("the signature's time is too far from now"));
        }
        let malformed = |m: String| CallbackError::Malformed(m);
        if !is_object(req.body) {
            return Err(malformed(
                match serde_json::from_slice::<serde::de::IgnoredAny>(req.body) {
                    Ok(_) => "the body must be a JSON object with `receipts` or `inbound` arrays"
                        .to_owned(),
                    Err(e) => format!("the body is not JSON: {e}"),
                },
            ));
        }
        let doc: CallbackDoc<'_> = serde_json::from_slice(req.body).map_err(|e| {
            malformed(if e.is_data() {
                format!("the body must be a JSON object with `receipts` or `inbound` arrays: {e}")
            } else {
                format!("the body is not JSON: {e}")
            })
        })?;
        fn items<'a>(
            list: Option<&'a RawValue>,
            name: &str,
        ) -> Result<Vec<&'a RawValue>, CallbackError> {
            match list {
                None => Ok(Vec::new()),
                Some(raw) => serde_json::from_str(raw.get())
                    .map_err(|_| CallbackError::Malformed(format!("`{name}` must be an array"))),
            }
        }
        let list = items(doc.receipts, "receipts")?;
        let inbound = items(doc.inbound, "inbound")?;
        if list.len() + inbound.len() > MAX_CALLBACK_RECEIPTS {
            return Err(malformed(format!(
                "at most {MAX_CALLBACK_RECEIPTS} items per callback"
            )));
        }
        let text = |v: &Option<Cow<'_, str>>, i: usize, f: &str, max: usize| {
            v.as_deref()
                .filter(|s| !s.is_empty() && s.chars().count() <= max)
                .map(str::to_owned)
                .ok_or_else(|| {
                    malformed(format!(
                        "inbound[{i}].{f} must be a string of 1 to {max} characters"
                    ))
                })
        };
        let inbound = inbound.iter().enumerate().map(|(i, raw)| {
            let m: SimInbound<'_> = item(raw, "inbound", i)?;
            Ok(CallbackItem::Inbound(InboundItem {
                from: text(&m.from, i, "from", 32)?,
                to: text(&m.to, i, "to", 64)?,
                channel: m.channel.as_deref().unwrap_or("sms").to_owned(),
                text: text(&m.text, i, "text", 1600)?,
                media_urls: Vec::new(),
                provider_message_id: Some(text(&m.id, i, "id", 200)?),
            }))
        });
        list.iter()
            .enumerate()
            .map(|(i, raw)| {
                let r: SimReceiptItem<'_> = item(raw, "receipts", i)?;
                let id =
                    r.id.as_deref()
                        .filter(|id| !id.is_empty() && id.len() <= 200)
                        .ok_or_else(|| malformed(format!("receipts[{i}].id must be a string")))?;
                let kind = r
                    .status
                    .as_deref()
                    .and_then(ReceiptKind::parse)
                    .ok_or_else(|| {
                        malformed(format!(
                            "receipts[{i}].status must be delivered, read or undelivered"
                        ))
                    })?;
                Ok(CallbackItem::Receipt {
                    provider_message_id: id.to_owned(),
                    kind,
                    error_code: None,
                    // The item as it was sent: the simulator's own are
                    // compact with their keys in order, as serde_json
                    // writes them.
                    raw: raw.get().to_owned(),
                })
            })
            .chain(inbound)
            .collect()
    }
}

/// A simulator callback's body. Each list is kept as its text until it is
/// read as an array, and each item as its text, which a receipt keeps as
/// it came (`CallbackItem::Receipt::raw`): the callback is not parsed into
/// a `Value` and written out again. A field given twice is refused, as
/// is a body that is not an object.
#[derive(serde::Deserialize)]
struct CallbackDoc<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    receipts: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    inbound: Option<&'a RawValue>,
}

/// Whether the JSON `text` is an object: checked before a derived struct
/// reads it, which would also read an array as its fields in order.
fn is_object(text: &[u8]) -> bool {
    text.trim_ascii_start().starts_with(b"{")
}

/// The `i`th item of the list `name`, which must be an object.
fn item<'a, T: serde::Deserialize<'a>>(
    raw: &'a RawValue,
    name: &str,
    i: usize,
) -> Result<T, CallbackError> {
    let malformed = |m: String| CallbackError::Malformed(m);
    if !is_object(raw.get().as_bytes()) {
        return Err(malformed(format!("{name}[{i}] must be an object")));
    }
    serde_json::from_str(raw.get()).map_err(|e| malformed(format!("{name}[{i}]: {e}")))
}

/// A field that is there, `null` included (which is then not an array).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// A receipt in a simulator callback; other fields (`at`) are ignored.
#[derive(serde::Deserialize)]
struct SimReceiptItem<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
}

/// An inbound message in a simulator callback.
#[derive(serde::Deserialize)]
struct SimInbound<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    from: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str, to: &str) -> SendRequest {
        SendRequest {
            idempotency_key: key.to_owned(),
            to: to.to_owned(),
            from: "+14155550000".to_owned(),
            channel: "sms".to_owned(),
            body: "hi".to_owned(),
            media_urls: Vec::new(),
            template: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_sends_share_ledger_commits_and_each_key_is_sent_once() {
        let dir = tempfile::tempdir().unwrap();
        let sim = Arc::new(sim(&dir));
        // 300 keys, each sent three times at once, mixed with numbers that
        // fail: they land in the same ledger transactions.
        let mut tasks = tokio::task::JoinSet::new();
        for round in 0..3 {
            for k in 0..300 {
                let sim = sim.clone();
                let to = if k % 10 == 0 {
                    "+14155550400"
                } else {
                    "+14155550123"
                };
                tasks.spawn(async move {
                    let r = sim.send(&request(&format!("msg_{k:04}"), to)).await;
                    (k, round, r)
                });
            }
        }
        let mut ids: std::collections::HashMap<usize, String> = Default::default();
        while let Some(joined) = tasks.join_next().await {
            let (k, _, r) = joined.unwrap();
            if k % 10 == 0 {
                assert_eq!(r.unwrap_err().code, "invalid_number");
                continue;
            }
            let id = r.unwrap().provider_message_id;
            // Every call for a key answers the same provider id.
            assert_eq!(ids.entry(k).or_insert_with(|| id.clone()), &id);
        }
        let sends = sim.sends().await.unwrap();
        assert_eq!(sends.len(), 300);
        for s in &sends {
            assert_eq!(s.calls, 3, "{s:?}");
            if s.provider_message_id.is_some() {
                // Accepted once; the two later calls were repeats of it.
                assert_eq!(s.calls_after_accept, 2, "{s:?}");
            } else {
                assert_eq!(s.calls_after_accept, 0, "{s:?}");
            }
        }
        assert_eq!(
            sends
                .iter()
                .filter(|s| s.provider_message_id.is_some())
                .count(),
            270
        );
        // One delivered receipt per accepted message, however the calls were batched.
        let receipts = sim
            .due_receipts(Timestamp::from_millis(1_800_000_000_000), 1000)
            .await
            .unwrap();
        assert_eq!(receipts.len(), 270);
    }

    /// A ledger made before the leaner layout (a rowid `sim_sends`,
    /// `AUTOINCREMENT` receipts) is rebuilt when opened: its sends, their
    /// counts and its receipts with their ids and states are kept, a
    /// repeated call is still a repeat, and new receipts are numbered
    /// after the old ones. Opening it again changes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_ledger_of_the_old_layout_is_rebuilt_with_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(dir.path().join(LEDGER_FILE)).unwrap();
            // The layout before: the same columns, `sim_sends` a rowid table
            // and the receipts numbered by `AUTOINCREMENT`.
            let old_receipts = RECEIPTS_TABLE
                .replace("INTEGER PRIMARY KEY,", "INTEGER PRIMARY KEY AUTOINCREMENT,");
            assert_ne!(old_receipts, RECEIPTS_TABLE);
            c.execute_batch(&format!(
                "CREATE TABLE sim_sends {};
                 CREATE TABLE sim_receipts {old_receipts};
                 CREATE INDEX {RECEIPTS_DUE};
                 INSERT INTO sim_sends VALUES ('msg_old1', '+14155550123', 2, 1, 'SIMmsgold1', 1000);
                 INSERT INTO sim_sends VALUES ('msg_old2', '+14155550599', 3, 0, NULL, NULL);
                 INSERT INTO sim_receipts (id, provider_message_id, kind, due_at, reported)
                     VALUES (7, 'SIMmsgold1', 'delivered', 1050, 1), (9, 'SIMmsgold1', 'read', 1100, 0);",
                SENDS_TABLE.trim_end_matches(" WITHOUT ROWID")
            ))
            .unwrap();
        }
        let sim = sim(&dir);
        let layout = |name: &str| -> String {
            let c = sim.ledger.lock().unwrap();
            c.query_row(
                "SELECT sql FROM sqlite_master WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert!(layout("sim_sends").contains("WITHOUT ROWID"));
        assert!(!layout("sim_receipts").contains("AUTOINCREMENT"));
        let sends = sim.sends().await.unwrap();
        let counts: Vec<(&str, u32, u32, Option<&str>)> = sends
            .iter()
            .map(|r| {
                (
                    r.key.as_str(),
                    r.calls,
                    r.calls_after_accept,
                    r.provider_message_id.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            counts,
            [
                ("msg_old1", 2, 1, Some("SIMmsgold1")),
                ("msg_old2", 3, 0, None)
            ]
        );
        // The old receipt still pending is due; the reported one is not.
        let due = sim
            .due_receipts(Timestamp::from_millis(2_000), 100)
            .await
            .unwrap();
        let due: Vec<(i64, &str)> = due.iter().map(|r| (r.id, r.kind.as_str())).collect();
        assert_eq!(due, [(9, "read")]);
        // A repeat of an old send is a repeat; a new send's receipt is
        // numbered after the old ones.
        let again = sim
            .send(&request("msg_old1", "+14155550123"))
            .await
            .unwrap();
        assert_eq!(again.provider_message_id, "SIMmsgold1");
        sim.send(&request("msg_new1", "+14155550123"))
            .await
            .unwrap();
        let (max_id, indexes): (i64, i64) = {
            let c = sim.ledger.lock().unwrap();
            (
                c.query_row("SELECT max(id) FROM sim_receipts", [], |r| r.get(0))
                    .unwrap(),
                c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'sim_receipts_due'",
                    [],
                    |r| r.get(0),
                )
                .unwrap(),
            )
        };
        assert_eq!((max_id, indexes), (10, 1));
        let after = sim.sends().await.unwrap();
        assert_eq!(after.iter().find(|r| r.key == "msg_old1").unwrap().calls, 3);
        drop(sim);
        // Opened again: nothing to rebuild, the rows as they were.
        let sim = self::sim(&dir);
        assert_eq!(sim.sends().await.unwrap().len(), 3);
    }

    fn sim(dir: &tempfile::TempDir) -> SimProvider {
        let clock = switchboard_core::ManualClock::new(Timestamp::from_millis(1_790_000_000_000));
        SimProvider::open(dir.path(), SimConfig::default(), Arc::new(clock)).unwrap()
    }

    fn open(
        sim: &SimProvider,
        body: &[u8],
        signature: &str,
        now: Timestamp,
    ) -> Result<Vec<CallbackItem>, CallbackError> {
        let headers = [("x-sim-signature".to_owned(), signature.to_owned())];
        sim.open(&CallbackRequest {
            url: "http://127.0.0.1/callbacks/pr_sim",
            headers: &headers,
            body,
            now,
        })
    }

    #[test]
    fn receipt_callbacks_are_signed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let (sim, other) = (sim(&dir), sim(&other_dir));
        let now = Timestamp::from_millis(1_790_000_000_000);
        let receipts = [SimReceipt {
            id: 1,
            provider_message_id: "SIM1".into(),
            kind: "delivered".into(),
            due_at: now,
        }];
        let body = SimProvider::callback_body(&receipts);
        let sig = sim.sign_callback(&body, now);
        let items = open(&sim, &body, &sig, now).unwrap();
        assert!(matches!(
            &items[..],
            [CallbackItem::Receipt { provider_message_id, kind: ReceiptKind::Delivered, .. }] if provider_message_id == "SIM1"
        ));
        let forbidden = |r: Result<Vec<CallbackItem>, CallbackError>| {
            assert!(matches!(r, Err(CallbackError::Forbidden(_))), "{r:?}")
        };
        // Another process's secret, a changed body, a garbled header, a stale time.
        forbidden(open(&sim, &body, &other.sign_callback(&body, now), now));
        let mut tampered = body.clone();
        tampered[5] ^= 1;
        forbidden(open(&sim, &tampered, &sig, now));
        forbidden(open(&sim, &body, "v1=00", now));
        forbidden(open(&sim, &body, "", now));
        forbidden(open(&sim, &body, &sig, now.plus(Duration::from_secs(301))));
        assert!(open(&sim, &body, &sig, now.plus(Duration::from_secs(299))).is_ok());
        // Signed but unreadable.
        for bad in [
            &b"not json"[..],
            br#"{"receipts": {}}"#,
            br#"{"inbound": [{"from": "+14155550100", "to": "SIM", "text": ""}]}"#,
            br#"{"inbound": [{"from": "+14155550100", "text": "hi", "id": "x"}]}"#,
            br#"{"receipts": [{"id": "SIM1", "status": "exploded"}]}"#,
            br#"{"receipts": [{"id": 7, "status": "delivered"}]}"#,
            br#"{"receipts": [{"id": "", "status": "delivered"}]}"#,
        ] {
            let r = open(&sim, bad, &sim.sign_callback(bad, now), now);
            assert!(matches!(r, Err(CallbackError::Malformed(_))), "{r:?}");
        }
        let many: Vec<SimReceipt> = (0..=MAX_CALLBACK_RECEIPTS as i64)
            .map(|i| SimReceipt {
                id: i,
                provider_message_id: format!("SIM{i}"),
                kind: "read".into(),
                due_at: now,
            })
            .collect();
        let big = SimProvider::callback_body(&many);
        let r = open(&sim, &big, &sim.sign_callback(&big, now), now);
        assert!(matches!(r, Err(CallbackError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn callback_bodies_are_what_serde_json_writes_and_items_are_kept_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim(&dir);
        let now = Timestamp::from_millis(1_790_000_000_123);
        let receipts: Vec<SimReceipt> = ["delivered", "read", "undelivered"]
            .iter()
            .enumerate()
            .map(|(i, kind)| SimReceipt {
                id: i as i64,
                provider_message_id: format!("SIM{i}-\"odd\"\\\n"),
                kind: (*kind).into(),
                due_at: now.plus(Duration::from_millis(i as u64)),
            })
            .collect();
        for n in [0, 1, 3] {
            let list = &receipts[..n];
            let body = SimProvider::callback_body(list);
            let items: Vec<serde_json::Value> = list
                .iter()
                .map(|r| {
                    serde_json::json!({"id": r.provider_message_id, "status": r.kind, "at": r.due_at.to_rfc3339()})
                })
                .collect();
            let value = serde_json::json!({ "receipts": items });
            assert_eq!(body, serde_json::to_vec(&value).unwrap());
            // Read back: each receipt keeps its item's text, which is the
            // item's JSON as serde_json writes it.
            let opened = open(&sim, &body, &sim.sign_callback(&body, now), now).unwrap();
            assert_eq!(opened.len(), n);
            for (item, (r, v)) in opened.iter().zip(list.iter().zip(&items)) {
                let CallbackItem::Receipt {
                    provider_message_id,
                    raw,
                    ..
                } = item
                else {
                    panic!("{item:?}");
                };
                assert_eq!(provider_message_id, &r.provider_message_id);
                assert_eq!(raw, &v.to_string());
            }
        }
        // A hand-written callback's item is kept as it was sent, spacing
        // and unknown fields included; an escaped id is read unescaped.
        let body = br#"{"receipts": [ {"status": "read",  "id": "SIM\u0031", "carrier": {"x": [1]}} ], "extra": 1}"#;
        let items = open(&sim, body, &sim.sign_callback(body, now), now).unwrap();
        assert!(
            matches!(
                &items[..],
                [CallbackItem::Receipt { provider_message_id, kind: ReceiptKind::Read, raw, .. }]
                    if provider_message_id == "SIM1"
                        && raw == r#"{"status": "read",  "id": "SIM\u0031", "carrier": {"x": [1]}}"#
            ),
            "{items:?}"
        );
        // Empty lists, or none, are an empty callback.
        for body in [&br#"{}"#[..], br#"{"receipts": [], "inbound": []}"#] {
            assert_eq!(
                open(&sim, body, &sim.sign_callback(body, now), now).unwrap(),
                []
            );
        }
        // Bodies that are JSON but not a callback, and items that are not
        // receipts or messages: each a clear refusal that names the part.
        for (bad, says) in [
            (&br#"[{"id": "SIM1", "status": "read"}]"#[..], "must be a JSON object"),
            (br#""receipts""#, "must be a JSON object"),
            (br#"null"#, "must be a JSON object"),
            (br#"{"receipts": null}"#, "`receipts` must be an array"),
            (br#"{"inbound": "hi"}"#, "`inbound` must be an array"),
            (
                br#"{"receipts": [], "receipts": [{"id": "SIM1", "status": "read"}]}"#,
                "duplicate field `receipts`",
            ),
            (br#"{"receipts": ["SIM1"]}"#, "receipts[0] must be an object"),
            (br#"{"receipts": [["SIM1", "read"]]}"#, "receipts[0] must be an object"),
            (
                br#"{"receipts": [{"id": "SIM1", "status": "read"}, {"id": "SIM2", "id": "SIM3", "status": "read"}]}"#,
                "receipts[1]: duplicate field `id`",
            ),
            (br#"{"receipts": [{"id": "SIM1"}]}"#, "receipts[0].status must be"),
            (br#"{"receipts": [{"id": null, "status": "read"}]}"#, "receipts[0].id must be a string"),
            (br#"{"inbound": [7]}"#, "inbound[0] must be an object"),
            (
                br#"{"inbound": [{"id": "x", "from": "+14155550100", "to": "SIM", "text": "hi", "channel": 5}]}"#,
                "inbound[0]: invalid type",
            ),
            (br#"{"receipts": [{"id": "SIM1", "status": "read"}"#, "the body is not JSON"),
            (br#"[{"id": "SIM1""#, "the body is not JSON"),
            (b"", "the body is not JSON"),
        ] {
            match open(&sim, bad, &sim.sign_callback(bad, now), now) {
                Err(CallbackError::Malformed(m)) => {
                    assert!(m.contains(says), "{}: {m}", String::from_utf8_lossy(bad))
                }
                r => panic!("{}: {r:?}", String::from_utf8_lossy(bad)),
            }
        }
        // An inbound message's fields, and its channel by default.
        let body = br#"{"inbound": [{"id": "SIMin1", "from": "+14155550100", "to": "Switchboard", "text": "Stop \"now\""}]}"#;
        let items = open(&sim, body, &sim.sign_callback(body, now), now).unwrap();
        assert_eq!(
            items,
            [CallbackItem::Inbound(InboundItem {
                from: "+14155550100".into(),
                to: "Switchboard".into(),
                channel: "sms".into(),
                text: "Stop \"now\"".into(),
                media_urls: Vec::new(),
                provider_message_id: Some("SIMin1".into()),
            })]
        );
    }

    /// Each behaviour, called again and again for one send: accepted
    /// exactly when `accepts_call` says, with one provider id from the
    /// first acceptance on, and that acceptance's receipts scheduled once.
    #[test]
    fn repeated_calls_follow_each_behaviour_and_schedule_receipts_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("ledger.db")).unwrap();
        c.execute_batch(&ledger_schema()).unwrap();
        let now = Timestamp::from_millis(1_790_000_000_000);
        let delay = Duration::from_millis(50);
        for (to, receipts) in [
            ("+14155550123", 1),
            ("+14155550202", 2),
            ("+14155550404", 1),
            ("+14155550423", 1),
            ("+14155550502", 1),
            ("+14155550400", 0),
            ("+14155550408", 0),
            ("+14155550451", 0),
            ("+14155550599", 0),
        ] {
            let behaviour = behaviour_for(to);
            let req = request(&format!("msg_{}", &to[8..]), to);
            let mut ids = Vec::new();
            for calls in 1..=6 {
                let tx = c.transaction().unwrap();
                let r = SimProvider::call(&tx, &req, now, delay).unwrap();
                tx.commit().unwrap();
                match r {
                    CallResult::Accepted(id) => {
                        assert!(
                            behaviour.accepts_call(calls) || !ids.is_empty(),
                            "{to} call {calls}"
                        );
                        ids.push(id);
                    }
                    _ => assert!(
                        !behaviour.accepts_call(calls) && ids.is_empty(),
                        "{to} call {calls}"
                    ),
                }
            }
            ids.dedup();
            assert!(ids.len() <= 1, "{to}: one provider id, got {ids:?}");
            let scheduled: i64 = c
                .query_row(
                    "SELECT count(*) FROM sim_receipts r JOIN sim_sends s ON s.provider_message_id = r.provider_message_id
                     WHERE s.to_phone = ?1",
                    [to],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(scheduled, receipts, "{to}");
            let (calls, after): (u32, u32) = c
                .query_row(
                    "SELECT calls, calls_after_accept FROM sim_sends WHERE to_phone = ?1",
                    [to],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            let first = (1..=6).find(|&n| behaviour.accepts_call(n));
            assert_eq!(calls, 6, "{to}");
            assert_eq!(after, first.map_or(0, |n| 6 - n), "{to}");
        }
    }

    /// Due receipts are handed out oldest first, at most `limit`, and each
    /// is taken for 30 s: a second pass does not see it, a pass after that
    /// does unless it was marked reported. Marking leaves the others due.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_receipts_are_taken_for_a_while_and_marked_once() {
        let dir = tempfile::tempdir().unwrap();
        let sim = sim(&dir);
        {
            let c = sim.ledger.lock().unwrap();
            // Eight receipts, inserted out of order: seven due by 7,000 ms
            // (one of them already reported) and one due much later.
            for (id, due, reported) in [
                (5, 5_000, 0),
                (1, 1_000, 0),
                (3, 3_000, 1),
                (2, 2_000, 0),
                (4, 4_000, 0),
                (6, 6_000, 0),
                (7, 7_000, 0),
                (8, 900_000, 0),
            ] {
                c.execute(
                    "INSERT INTO sim_receipts (id, provider_message_id, kind, due_at, reported)
                     VALUES (?1, 'SIMx', 'delivered', ?2, ?3)",
                    params![id, due, reported],
                )
                .unwrap();
            }
        }
        let ids = |r: &[SimReceipt]| r.iter().map(|r| r.id).collect::<Vec<_>>();
        let now = Timestamp::from_millis(10_000);
        let first = sim.due_receipts(now, 3).await.unwrap();
        assert_eq!(ids(&first), [1, 2, 4]);
        // Each keeps the time it fell due, not the time it was taken until.
        assert_eq!(first[1].due_at, Timestamp::from_millis(2_000));
        // Taken: the next pass at the same moment gets the rest.
        assert_eq!(ids(&sim.due_receipts(now, 100).await.unwrap()), [5, 6, 7]);
        assert!(sim.due_receipts(now, 100).await.unwrap().is_empty());
        // Two of the first three reported (an id repeated and one unknown
        // change nothing else); after 30 s the third falls due again, and
        // so do the three of the second pass, all taken until the same
        // moment (so in id order).
        sim.mark_reported(vec![1, 4, 4, 99]).await.unwrap();
        let later = now.plus(Duration::from_secs(31));
        assert_eq!(
            ids(&sim.due_receipts(later, 100).await.unwrap()),
            [2, 5, 6, 7]
        );
        sim.mark_reported(vec![2, 5, 6, 7]).await.unwrap();
        sim.mark_reported(Vec::new()).await.unwrap();
        let much_later = now.plus(Duration::from_secs(3600));
        assert_eq!(ids(&sim.due_receipts(much_later, 100).await.unwrap()), [8]);
    }

    #[test]
    fn the_table_of_behaviours_by_suffix() {
        let cases = [
            ("+14155550123", Behaviour::Deliver),
            ("+14155550400", Behaviour::InvalidNumber),
            ("+14155550423", Behaviour::Throttle(3)),
            ("+14155550420", Behaviour::Deliver),
            ("+14155550502", Behaviour::TransportErrors(2)),
            ("+14155550599", Behaviour::AlwaysTransportError),
            ("+14155550404", Behaviour::Undeliver),
            ("+14155550408", Behaviour::NeverAcknowledge),
            ("+14155550451", Behaviour::OptedOut),
            ("+14155550202", Behaviour::DeliverAndRead),
            ("", Behaviour::Deliver),
        ];
        for (to, expect) in cases {
            assert_eq!(behaviour_for(to), expect, "{to}");
        }
    }
}
