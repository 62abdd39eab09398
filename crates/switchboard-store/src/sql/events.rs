//! Message events, recorded once per write batch.
//!
//! Every state change records its event (`messages::record_event`), and
//! every event fans out to the webhook endpoints that subscribe to it. One
//! insert and one fan-out statement per event were a third of the writer's
//! time end to end: a batch of a few hundred sends, results and receipts
//! records a thousand events. So while the group commit runs a batch
//! (`DeferEvents`), events are kept on the writer thread and, just before
//! the commit, inserted with a few multi-row statements and fanned out with
//! a few more. An event that is committed is still committed to be
//! delivered, and one rolled back with its job is forgotten with it.
//!
//! What a deferred event changes: a job that reads the `events` or
//! `webhook_deliveries` table does not see the events recorded earlier in
//! its batch, only those of earlier batches. The writer's readers of those
//! tables are the delivery claim and the range redelivery, which then find
//! them on their next pass, as if they had run first. Sequence numbers are
//! still in the order events were recorded: the batch's events are
//! inserted in that order (a batch's accepts run first, so their events
//! come first).
//!
//! An *implied* event (the acceptance of a message accepted as `queued`,
//! see `messages.implied_accept`) is stored only if an endpoint of its
//! workspace subscribes to it: its message's row says all it says, and the
//! timeline shows it from there. SQLite checks the subscriptions before
//! the insert (`Subscribed`); PostgreSQL filters in the insert itself,
//! which costs no round trip.

use foldhash::{HashMap, HashMapExt};

use switchboard_core::Timestamp;

use super::db::{Db, RowSet, V, p, statement_text};
use super::webhooks::{Fan, NewDelivery, fan_out_from, insert_deliveries, subscribes};
use crate::error::StoreError;

/// A message event to record.
pub struct NewEvent<'a> {
    /// Event id (`EventId::new_at(at)`).
    pub id: &'a str,
    /// Its workspace.
    pub workspace_id: &'a str,
    /// Its message.
    pub message_id: &'a str,
    /// Its type (`message.sent`).
    pub event_type: &'a str,
    /// The message's status after it.
    pub status: &'a str,
    /// What happened, in words.
    pub detail: Option<&'a str>,
    /// The error code, for a failure.
    pub error_code: Option<&'a str>,
    /// When.
    pub at: Timestamp,
    /// Implied by its message's row (a `queued` message's acceptance,
    /// `implied_accept`): stored only if an endpoint subscribes to it.
    pub implied: bool,
}

/// An event kept until the end of its batch.
pub(super) struct Pending {
    id: String,
    workspace_id: String,
    message_id: String,
    event_type: String,
    status: String,
    detail: Option<String>,
    error_code: Option<String>,
    at: Timestamp,
    implied: bool,
}

impl Pending {
    pub(super) fn of(e: &NewEvent<'_>) -> Self {
        Pending {
            id: e.id.to_owned(),
            workspace_id: e.workspace_id.to_owned(),
            message_id: e.message_id.to_owned(),
            event_type: e.event_type.to_owned(),
            status: e.status.to_owned(),
            detail: e.detail.map(str::to_owned),
            error_code: e.error_code.map(str::to_owned),
            at: e.at,
            implied: e.implied,
        }
    }
}

thread_local! {
    // `Some` while the writer thread runs a batch (see `DeferEvents`).
    static DEFERRED: std::cell::RefCell<Option<Vec<Pending>>> = const { std::cell::RefCell::new(None) };
}

/// While alive, events recorded on this thread wait for `flush`.
pub struct DeferEvents(());

impl DeferEvents {
    /// Starts deferring on this thread.
    pub fn start() -> Self {
        DEFERRED.set(Some(Vec::new()));
        DeferEvents(())
    }

    /// Inserts the events deferred so far and fans them all out.
    pub fn flush(&self, c: &Db<'_>) -> Result<(), StoreError> {
        let pending =
            DEFERRED.with_borrow_mut(|d| d.as_mut().map(std::mem::take).unwrap_or_default());
        write(c, pending)
    }

    /// Forgets what was deferred (its job was rolled back).
    pub fn discard(&self) {
        DEFERRED.with_borrow_mut(|d| {
            if let Some(v) = d {
                v.clear();
            }
        });
    }
}

impl Drop for DeferEvents {
    fn drop(&mut self) {
        DEFERRED.set(None);
    }
}

/// The columns of an events insert, and the PostgreSQL types of an
/// `event_set`: those columns, then whether the event is implied.
const EVENT_INSERT: &str =
    "events (id, workspace_id, message_id, type, status, detail, error_code, created_at)";
const EVENT_TYPES: [&str; 9] = [
    "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "BIGINT",
];

/// The events of a run as a `RowSet`, in `EVENT_INSERT` order and then
/// whether each is implied.
fn event_set<'p>(c: &Db<'_>, first: usize, chunk: &'p [Pending]) -> RowSet<'p> {
    RowSet::new(
        c,
        first,
        &EVENT_TYPES,
        chunk.iter().map(|p| {
            [
                V::from(p.id.as_str()),
                V::from(p.workspace_id.as_str()),
                V::from(p.message_id.as_str()),
                V::from(p.event_type.as_str()),
                V::from(p.status.as_str()),
                V::from(&p.detail),
                V::from(&p.error_code),
                V::Int(p.at.as_millis()),
                V::Bool(p.implied),
            ]
        }),
    )
}

/// Inserts events, one statement per `Db::chunks` run, and fans them out.
/// On SQLite the endpoints subscribed to each workspace and type are read
/// first (`Subscribed`), and the deliveries are stored from them as rows
/// (`insert_deliveries`): most events of a message (`sending`, `sent`)
/// usually have no subscriber, and a fan-out statement joined each of them
/// to the workspace's endpoints only to find none.
fn write(c: &Db<'_>, events: Vec<Pending>) -> Result<(), StoreError> {
    if c.is_pg() {
        return write_pg(c, &events);
    }
    let subscribed = Subscribed::ask(c, &events)?;
    // Each event's endpoints, looked up once. An implied event nobody
    // subscribes to is left to its message's row.
    let (events, subs): (Vec<Pending>, Vec<&[String]>) = events
        .into_iter()
        .map(|p| {
            let endpoints = subscribed.endpoints(&p);
            (p, endpoints)
        })
        .filter(|(p, endpoints)| !p.implied || !endpoints.is_empty())
        .unzip();
    if events.is_empty() {
        return Ok(());
    }
    // The numbers of the subscribed events, in the events' order.
    let mut seqs: Vec<Option<i64>> = vec![None; events.len()];
    let mut at = 0;
    for chunk in c.chunks(&events) {
        let run = at..at + chunk.len();
        at = run.end;
        let set = event_set(c, 1, chunk);
        let sql = set.sql([0; 8], || insert_sql(c, &set, false));
        let inserted = c.execute(&sql, set.params())?;
        number(c, chunk, &subs[run.clone()], inserted, &mut seqs[run])?;
    }
    // The deliveries, one per event and subscribed endpoint, stored as
    // rows: the endpoints are known (`Subscribed`), so no statement joins
    // the events to them again.
    let mut deliveries = Vec::new();
    for ((p, endpoints), seq) in events.iter().zip(&subs).zip(&seqs) {
        if endpoints.is_empty() {
            continue;
        }
        let seq =
            seq.ok_or_else(|| StoreError::Corrupt(format!("event {} was not inserted", p.id)))?;
        for endpoint in *endpoints {
            deliveries.push(NewDelivery {
                endpoint_id: endpoint,
                event: Fan {
                    id: &p.id,
                    workspace_id: &p.workspace_id,
                    seq,
                    event_type: &p.event_type,
                    message_id: Some(&p.message_id),
                    at: p.at,
                },
            });
        }
    }
    insert_deliveries(c, &deliveries)
}

/// Finds the sequence numbers of a run's subscribed events (those whose
/// `subs`, their endpoints, are not empty), just inserted (SQLite), which
/// their deliveries carry, into `seqs` (in the run's order; the others are
/// left as they are). SQLite numbers the rows of one
/// multi-row insert one after another in the order they are listed (the
/// table is `AUTOINCREMENT` and this connection its only writer; the
/// events' order of recording rests on the same), so they are counted back
/// from `last_insert_rowid()`: a `RETURNING id, seq` cost a fifth of the
/// events' writing. The first and last rows are checked against their ids,
/// and if either is not where it was counted, each subscribed event's
/// number is read by its id instead. Answers whether they were counted.
fn number(
    c: &Db<'_>,
    run: &[Pending],
    subs: &[&[String]],
    inserted: usize,
    seqs: &mut [Option<i64>],
) -> Result<bool, StoreError> {
    if subs.iter().all(|s| s.is_empty()) {
        return Ok(true);
    }
    let last: i64 = c.query_row("SELECT last_insert_rowid()", &[], |r| r.get(0))?;
    let first = last - i64::try_from(inserted).unwrap_or(i64::MAX) + 1;
    let (head, tail): (Option<String>, Option<String>) = c.query_row(
        "SELECT (SELECT id FROM events WHERE seq = ?1), (SELECT id FROM events WHERE seq = ?2)",
        p![first, last],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let counted = inserted == run.len()
        && head.as_deref() == run.first().map(|p| p.id.as_str())
        && tail.as_deref() == run.last().map(|p| p.id.as_str());
    for (((seq, p), endpoints), out) in (first..).zip(run).zip(subs).zip(seqs) {
        if endpoints.is_empty() {
            continue;
        }
        *out = Some(if counted {
            seq
        } else {
            c.query_row("SELECT seq FROM events WHERE id = ?1", p![p.id], |r| {
                r.get(0)
            })?
        });
    }
    Ok(counted)
}

/// The enabled endpoints of a workspace that subscribe to a type of event,
/// for each workspace and type among a batch's events (SQLite, where a
/// read costs no round trip): one indexed read per pair, usually three or
/// four per batch. It asks what the fan-out statement's join asks
/// (`subscribes`), in the same transaction, so an event left out of the
/// fan-out is one it would have made no delivery for, and the deliveries
/// made from it are the ones the join would have made.
struct Subscribed(HashMap<String, HashMap<String, Vec<String>>>);

impl Subscribed {
    fn ask(c: &Db<'_>, events: &[Pending]) -> Result<Self, StoreError> {
        let sql = statement_text(c.is_pg(), [0; 14], || {
            format!(
                "SELECT w.id FROM webhook_endpoints w WHERE {} ORDER BY w.id",
                subscribes(c, "w", "?1", "?2")
            )
        });
        let mut asked = Subscribed(HashMap::new());
        for p in events {
            if asked.known(p).is_none() {
                let endpoints: Vec<String> =
                    c.query_map(&sql, p![p.workspace_id, p.event_type], |r| r.get(0))?;
                asked
                    .0
                    .entry(p.workspace_id.clone())
                    .or_default()
                    .insert(p.event_type.clone(), endpoints);
            }
        }
        Ok(asked)
    }

    fn known(&self, p: &Pending) -> Option<&[String]> {
        self.0
            .get(p.workspace_id.as_str())
            .and_then(|types| types.get(p.event_type.as_str()))
            .map(Vec::as_slice)
    }

    /// The endpoints subscribed to `p` (one of the events asked about).
    fn endpoints(&self, p: &Pending) -> &[String] {
        self.known(p).unwrap_or_default()
    }
}

/// The insert of the events in `set` (an `event_set`). With `filter`, an
/// implied event is inserted only if an endpoint of its workspace
/// subscribes to it, which is then fanned out as any other; one that
/// nobody subscribes to is left to its message's row (`implied_accept`),
/// which shows it. (SQLite leaves those out before, `Subscribed`.)
fn insert_sql(c: &Db<'_>, set: &RowSet<'_>, filter: bool) -> String {
    let unless_implied = if filter {
        format!(
            " WHERE v.column9 = 0 OR EXISTS (SELECT 1 FROM webhook_endpoints w WHERE {})",
            subscribes(c, "w", "v.column2", "v.column4")
        )
    } else {
        String::new()
    };
    format!(
        "{} {EVENT_INSERT} SELECT column1, column2, column3, column4, column5, column6, column7, column8
         FROM {} AS v{unless_implied}",
        c.insert_into(),
        set.table(),
    )
}

/// On PostgreSQL, where every statement is a round trip, the insert and
/// the fan-out are one statement per run (`pg_items`).
fn write_pg(c: &Db<'_>, events: &[Pending]) -> Result<(), StoreError> {
    for chunk in c.chunks(events) {
        let implied = chunk.iter().any(|p| p.implied);
        let (items, params) = pg_items(c, 1, chunk);
        // One row per event inserted, or it fails (`DbError::Rows`); a
        // run with implied events stores those that are subscribed to.
        let rows = (!implied).then_some(chunk.len());
        c.execute_later(&format!("WITH {items} SELECT 1 FROM ev"), params, rows)?;
    }
    // How many deliveries they made is not read back: wake the deliverer.
    if !events.is_empty() {
        super::signals::note_deliveries();
    }
    Ok(())
}

/// A run of events as the `WITH` items of a PostgreSQL statement: `ev`
/// inserts them (an implied one only if an endpoint subscribes to it) and
/// returns the rows inserted, with their sequence numbers, which `fan`
/// fans out in the same statement. Their set's placeholders start at
/// `?first`, and its parameters are returned to follow the statement's
/// others. `write_pg` runs them alone; an accept in flight runs them with
/// its messages' insert (`messages::accept_in_one_statement`), whose caller
/// then wakes the deliverer (`signals::note_deliveries`).
pub(super) fn pg_items<'p>(c: &Db<'_>, first: usize, run: &'p [Pending]) -> (String, Vec<V<'p>>) {
    let set = event_set(c, first, run);
    let implied = run.iter().any(|p| p.implied);
    let items = format!(
        "ev (column1, column2, column3, column4, column5, column6) AS (
             {}
             RETURNING id, workspace_id, seq, type, message_id, created_at),
         fan AS ({})",
        insert_sql(c, &set, implied),
        fan_out_from(c, "ev"),
    );
    (items, set.into_params())
}

/// Records a message event: at the end of the batch inside one
/// (`DeferEvents`), at once otherwise.
pub fn record(c: &Db<'_>, e: &NewEvent<'_>) -> Result<(), StoreError> {
    let pending = Pending::of(e);
    let pending = DEFERRED.with_borrow_mut(|d| match d {
        Some(v) => {
            v.push(pending);
            None
        }
        None => Some(pending),
    });
    match pending {
        Some(p) => write(c, vec![p]),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn events_db() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO workspaces (id, name, created_at) VALUES ('ws_1', 'Test', 0);
             INSERT INTO webhook_endpoints (id, workspace_id, url, method, content_type, event_types, headers, enabled,
                 format, retry_schedule, timeout_ms, disable_after, consecutive_failures, secret, created_at, updated_at)
             VALUES ('we_1', 'ws_1', 'https://crm.example.com/hook', 'POST', 'application/json', '[\"message.delivered\"]',
                 '{}', 1, 'standard', '[1]', 1000, 5, 0, 'whsec_x', 0, 0)",
        )
        .unwrap();
        conn
    }

    fn event(n: usize, event_type: &str) -> Pending {
        Pending {
            id: format!("evt_{n:026}"),
            workspace_id: "ws_1".into(),
            message_id: format!("msg_{:026}", n / 3),
            event_type: event_type.into(),
            status: "sent".into(),
            detail: None,
            error_code: None,
            at: Timestamp::from_millis(1_000),
            implied: false,
        }
    }

    /// A run of `n` events, every third subscribed to.
    fn run(from: usize, n: usize) -> Vec<Pending> {
        (from..from + n)
            .map(|i| match i % 3 {
                0 => event(i, "message.sending"),
                1 => event(i, "message.sent"),
                _ => event(i, "message.delivered"),
            })
            .collect()
    }

    fn stored_seq(conn: &Connection, id: &str) -> i64 {
        conn.query_row("SELECT seq FROM events WHERE id = ?1", [id], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn written_events_fan_out_with_the_numbers_they_were_stored_under() {
        let conn = events_db();
        let c = Db::Lite(&conn);
        // Runs of several lengths (64, 32, 4 rows per statement), after a
        // gap in the numbers that a deleted last row leaves behind.
        write(&c, run(0, 5)).unwrap();
        conn.execute(
            "DELETE FROM events WHERE seq = (SELECT max(seq) FROM events)",
            [],
        )
        .unwrap();
        let events = run(5, 100);
        write(&c, events).unwrap();
        let deliveries: Vec<(String, i64)> = conn
            .prepare("SELECT event_id, event_seq FROM webhook_deliveries ORDER BY event_seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // Only the delivered events fan out (one of the first five, 34 of
        // the next hundred), each with the number it was stored under.
        assert_eq!(deliveries.len(), 35);
        for (id, seq) in &deliveries {
            assert_eq!(*seq, stored_seq(&conn, id), "{id}");
        }
        // Numbers follow the order of recording.
        let seqs: Vec<i64> = (5..105)
            .map(|i| stored_seq(&conn, &event(i, "").id))
            .collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    }

    /// The subscribed events of `events` with the numbers they are stored
    /// under.
    fn stored_seqs(conn: &Connection, events: &[Pending]) -> Vec<(String, i64)> {
        let mut seqs: Vec<(String, i64)> = events
            .iter()
            .filter(|p| p.event_type == "message.delivered")
            .map(|p| (p.id.clone(), stored_seq(conn, &p.id)))
            .collect();
        seqs.sort();
        seqs
    }

    /// Inserts `events` as one run, as `write` does; answers what their
    /// subscriptions are and how many rows went in.
    fn insert(c: &Db<'_>, events: &[Pending]) -> (Subscribed, usize) {
        let subscribed = Subscribed::ask(c, events).unwrap();
        let set = event_set(c, 1, events);
        let inserted = c
            .execute(&insert_sql(c, &set, false), set.params())
            .unwrap();
        (subscribed, inserted)
    }

    /// `number` on a run as `write` calls it: the ids of its subscribed
    /// events with the numbers it found, and whether it counted them.
    fn numbered(
        c: &Db<'_>,
        events: &[Pending],
        subscribed: &Subscribed,
        inserted: usize,
    ) -> (bool, Vec<(String, i64)>) {
        let subs: Vec<&[String]> = events.iter().map(|p| subscribed.endpoints(p)).collect();
        let mut seqs = vec![None; events.len()];
        let counted = number(c, events, &subs, inserted, &mut seqs).unwrap();
        let mut got: Vec<(String, i64)> = events
            .iter()
            .zip(seqs)
            .filter_map(|(p, seq)| Some((p.id.clone(), seq?)))
            .collect();
        got.sort();
        (counted, got)
    }

    #[test]
    fn events_just_inserted_are_counted_back_from_the_last_row() {
        let conn = events_db();
        let c = Db::Lite(&conn);
        let events = run(0, 32);
        let (subscribed, inserted) = insert(&c, &events);
        let (counted, got) = numbered(&c, &events, &subscribed, inserted);
        assert!(counted);
        assert_eq!(got, stored_seqs(&conn, &events));
    }

    #[test]
    fn events_not_where_they_were_counted_are_numbered_by_their_ids() {
        let conn = events_db();
        let c = Db::Lite(&conn);
        let events = run(0, 6);
        let (subscribed, inserted) = insert(&c, &events);
        // An unrelated row inserted since: the run's rows are no longer the
        // last ones, so counting back from the last row would misnumber them.
        conn.execute(
            "INSERT INTO events (id, workspace_id, type, status, created_at) VALUES ('evt_other', 'ws_1', 'webhook.test', 'sent', 0)",
            [],
        )
        .unwrap();
        let (counted, got) = numbered(&c, &events, &subscribed, inserted);
        assert!(!counted);
        assert_eq!(got, stored_seqs(&conn, &events));
    }
}
