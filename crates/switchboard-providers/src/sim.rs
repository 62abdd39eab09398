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

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use switchboard_core::{Clock, ErrorClass, Timestamp};

use crate::{Provider, ProviderError, SendAccepted, SendRequest};

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
}

/// The simulator provider.
#[derive(Debug)]
pub struct SimProvider {
    // A std Mutex, not a Tokio one: it is only held inside spawn_blocking.
    ledger: Arc<Mutex<Connection>>,
    config: SimConfig,
    clock: Arc<dyn Clock>,
}

const LEDGER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sim_sends (
    key                 TEXT PRIMARY KEY,
    to_phone            TEXT NOT NULL,
    calls               INTEGER NOT NULL,
    calls_after_accept  INTEGER NOT NULL DEFAULT 0,
    provider_message_id TEXT,
    accepted_at         INTEGER
);
CREATE TABLE IF NOT EXISTS sim_receipts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_message_id TEXT NOT NULL,
    kind                TEXT NOT NULL,
    due_at              INTEGER NOT NULL,
    reported            INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sim_receipts_due ON sim_receipts (due_at) WHERE reported = 0;
";

/// The ledger's file name in the data directory.
pub const LEDGER_FILE: &str = "sim.db";

enum CallResult {
    Accepted(String),
    Failed(ProviderError),
    Hang,
}

impl SimProvider {
    /// Opens (creating) the ledger in `data_dir`.
    pub fn open(
        data_dir: &Path,
        config: SimConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, rusqlite::Error> {
        let conn = Connection::open(data_dir.join(LEDGER_FILE))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode survives a process crash, which is all a
        // simulator needs to model a provider that remembers.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(LEDGER_SCHEMA)?;
        Ok(SimProvider {
            ledger: Arc::new(Mutex::new(conn)),
            config,
            clock,
        })
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
            let mut stmt = c.prepare_cached(
                "SELECT id, provider_message_id, kind, due_at FROM sim_receipts WHERE reported = 0 AND due_at <= ?1 ORDER BY due_at, id LIMIT ?2",
            )?;
            stmt.query_map(params![now.as_millis(), limit as i64], |r| {
                Ok(SimReceipt { id: r.get(0)?, provider_message_id: r.get(1)?, kind: r.get(2)?, due_at: Timestamp::from_millis(r.get(3)?) })
            })?
            .collect()
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
            for id in ids {
                tx.execute("UPDATE sim_receipts SET reported = 1 WHERE id = ?1", [id])?;
            }
            tx.commit()
        })
        .await
    }

    /// Every key the simulator was called with.
    pub async fn sends(&self) -> Result<Vec<SimSendRecord>, rusqlite::Error> {
        self.with_ledger(|c| read_sends(c)).await
    }

    fn call(
        c: &mut Connection,
        req: &SendRequest,
        now: Timestamp,
        receipt_delay: Duration,
    ) -> Result<CallResult, rusqlite::Error> {
        let tx = c.transaction()?;
        let (calls, existing): (u32, Option<String>) = tx.query_row(
            "INSERT INTO sim_sends (key, to_phone, calls) VALUES (?1, ?2, 1)
             ON CONFLICT (key) DO UPDATE SET calls = calls + 1,
                 calls_after_accept = calls_after_accept + (provider_message_id IS NOT NULL)
             RETURNING calls, provider_message_id",
            params![req.idempotency_key, req.to],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if let Some(pmid) = existing {
            tx.commit()?;
            return Ok(CallResult::Accepted(pmid));
        }
        let behaviour = behaviour_for(&req.to);
        let fail = |class, code: &str, msg: &str| {
            Ok(CallResult::Failed(ProviderError::new(class, code, msg)))
        };
        let result = match behaviour {
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
            Behaviour::Throttle(n) if calls <= n => Ok(CallResult::Failed(ProviderError {
                retry_after: Some(Duration::from_secs(1)),
                ..ProviderError::new(
                    ErrorClass::Throttled,
                    "rate_limited",
                    "simulated throttling",
                )
            })),
            Behaviour::NeverAcknowledge => Ok(CallResult::Hang),
            _ => {
                let pmid = format!(
                    "SIM{}",
                    &req.idempotency_key.replace('_', "").to_lowercase()
                );
                tx.execute(
                    "UPDATE sim_sends SET provider_message_id = ?1, accepted_at = ?2 WHERE key = ?3",
                    params![pmid, now.as_millis(), req.idempotency_key],
                )?;
                let receipt = |kind: &str, after: u32| {
                    tx.execute(
                        "INSERT INTO sim_receipts (provider_message_id, kind, due_at) VALUES (?1, ?2, ?3)",
                        params![pmid, kind, now.plus(receipt_delay * after).as_millis()],
                    )
                };
                match behaviour {
                    Behaviour::Undeliver => receipt("undelivered", 1)?,
                    Behaviour::DeliverAndRead => {
                        receipt("delivered", 1).and_then(|_| receipt("read", 2))?
                    }
                    _ => receipt("delivered", 1)?,
                };
                Ok(CallResult::Accepted(pmid))
            }
        };
        tx.commit()?;
        result
    }
}

/// Reads the ledger's per-key counts from an open connection.
pub fn read_sends(c: &Connection) -> Result<Vec<SimSendRecord>, rusqlite::Error> {
    let mut stmt = c.prepare(
        "SELECT key, calls, calls_after_accept, provider_message_id FROM sim_sends ORDER BY key",
    )?;
    stmt.query_map([], |r| {
        Ok(SimSendRecord {
            key: r.get(0)?,
            calls: r.get(1)?,
            calls_after_accept: r.get(2)?,
            provider_message_id: r.get(3)?,
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
        let owned = req.clone();
        let result = self
            .with_ledger(move |c| Self::call(c, &owned, now, delay))
            .await
            .map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;

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
