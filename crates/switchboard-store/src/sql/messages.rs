//! Messages: accept, read, and every state change. The write functions run
//! inside the group commit (see `group_commit.rs`), so each reads and writes
//! without interference; every state change goes through
//! `switchboard_core::state::transition` and records exactly its one event.

use foldhash::{HashMap, HashMapExt};
use std::fmt::Write as _;
use std::time::Duration;

use super::db::{
    Db, DbError, LaterRows, MAX_PG_SET, OptionalExt, Row, RowSet, V, p, statement_text,
};
use super::events::{NewEvent, Pending};
use switchboard_core::quiet_hours::QuietHours;
use switchboard_core::retry::GiveUpReason;
use switchboard_core::state::transition;
use switchboard_core::{
    AttemptId, Category, ErrorClass, EventId, EventType, MessageId, PhoneNumber, Priority,
    ProviderId, Status, Timestamp, Trigger, WorkspaceId,
};

use super::rows::{self, MESSAGE_COLUMNS};
use crate::error::StoreError;
use crate::model::*;

#[expect(
    clippy::too_many_arguments,
    reason = "one row's columns; a struct would only restate them"
)]
pub(super) fn record_event(
    c: &Db<'_>,
    ws: &str,
    message_id: &str,
    event: EventType,
    status: Status,
    detail: Option<&str>,
    error_code: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let id = EventId::new_at(now);
    super::events::record(
        c,
        &super::events::NewEvent {
            id: id.as_str(),
            workspace_id: ws,
            message_id,
            event_type: event.as_str(),
            status: status.as_str(),
            detail,
            error_code,
            at: now,
            implied: false,
        },
    )
}

/// What a message accepted as `queued` says of itself in its acceptance
/// event (implied by the row: `NewRow::implied`).
pub(super) const ACCEPTED: &str = "accepted";

/// id, request hash, initial status, client_ref, segments, encoding, created_at.
type AcceptedRow = (String, String, String, Option<String>, u32, String, i64);

/// Stores a message or resolves its idempotency key.
pub fn accept(c: &Db<'_>, req: &AcceptRequest) -> Result<AcceptOutcome, StoreError> {
    Ok(accept_many(c, &[req], false)?
        .pop()
        .expect("one outcome per request"))
}

/// Stores many messages, or resolves their idempotency keys, with a few
/// set-based statements per `Db::chunks` run instead of four or five per
/// message: one read of the idempotency keys, one of the consent rows and
/// one insert of the messages; their events are recorded with the batch's
/// others (`events::record`). Requests
/// are decided in order, so of two in the batch with the same key the first
/// is stored and the second is its replay (or conflict). Returns one outcome
/// per request, in order.
///
/// `blind` (PostgreSQL, where the reads cost a round trip per batch and
/// were 28% of the backend's work per accept): no reads at all. Every
/// request is taken to be new and allowed, and the insert itself checks
/// both: the unique index refuses a stored key, and the statement fails
/// unless it stored every row, which a recipient's opt-out withholds
/// (`insert_messages`). A refusal fails the transaction, and the writer
/// runs the batch again with the reads (`group_commit`), which then tell
/// replays, conflicts and opt-outs apart. Only for requests without
/// `require_opt_in` (`accepts_blind`).
pub fn accept_many(
    c: &Db<'_>,
    reqs: &[&AcceptRequest],
    blind: bool,
) -> Result<Vec<AcceptOutcome>, StoreError> {
    let blind = blind && c.is_pg() && accepts_blind(reqs.iter().copied());
    let (existing, consent) = if blind {
        (HashMap::new(), HashMap::new())
    } else {
        // Both reads are sent before either is answered (`Db::query_later`).
        let keys = existing_keys(c, reqs)?;
        let consent = consent_states(c, reqs)?;
        (keys.read(c)?, consent.read(c)?)
    };
    let (outcomes, rows) = decide(reqs, &existing, &consent)?;
    insert_messages(c, &rows, blind)?;
    Ok(outcomes)
}

/// `accept_many`'s blind accepts (PostgreSQL, no `require_opt_in`) as one
/// statement that inserts the messages and their acceptance events and
/// fans those out, for a batch sent in flight
/// (`group_commit::send_accepts`). Sent in no transaction, it is its own:
/// it commits when it ends, with the durability the writer's session has
/// (the server's own setting), and the server answers once it has, in one
/// answer where a `BEGIN`, the inserts and a `COMMIT` took four.
/// Refused, as a blind batch can be, it stored nothing.
pub fn accept_in_one_statement(
    c: &Db<'_>,
    reqs: &[&AcceptRequest],
) -> Result<Vec<AcceptOutcome>, StoreError> {
    if !c.is_pg() || !accepts_blind(reqs.iter().copied()) || reqs.len() > MAX_PG_SET {
        return Err(StoreError::Corrupt(
            "one statement carries blind accepts on PostgreSQL, up to a set's rows".into(),
        ));
    }
    let (outcomes, rows) = decide(reqs, &HashMap::new(), &HashMap::new())?;
    let events: Vec<Pending> = rows.iter().map(|r| Pending::of(&r.acceptance())).collect();
    let (sql, params) = blind_insert(c, &rows, &events);
    c.execute_later(&sql, params, Some(1))?;
    if !events.is_empty() {
        super::signals::note_deliveries();
    }
    Ok(outcomes)
}

/// Each request's outcome, given the stored keys and consent states it
/// may meet (none for a blind batch), and the rows of those to store.
#[allow(clippy::type_complexity)]
fn decide<'r>(
    reqs: &[&'r AcceptRequest],
    existing: &HashMap<(String, String), AcceptedRow>,
    consent: &HashMap<(String, String, String), String>,
) -> Result<(Vec<AcceptOutcome>, Vec<NewRow<'r>>), StoreError> {
    // Keys stored by this batch: (workspace, key) → (request hash, answer).
    let mut stored: HashMap<(&str, &str), (&str, Accepted)> = HashMap::new();
    let mut outcomes = Vec::with_capacity(reqs.len());
    let mut rows: Vec<NewRow<'_>> = Vec::with_capacity(reqs.len());
    for req in reqs {
        let m = &req.message;
        let ws = req.workspace_id.as_str();
        if let Some(key) = m.idempotency_key.as_deref() {
            if let Some((id, hash, status, client_ref, segments, encoding, created)) =
                existing.get(&(ws.to_owned(), key.to_owned()))
            {
                let id = MessageId::parse(id).map_err(|_| StoreError::Corrupt(id.clone()))?;
                outcomes.push(if *hash != req.request_hash {
                    AcceptOutcome::Conflict { existing: id }
                } else {
                    AcceptOutcome::Replayed(Accepted {
                        id,
                        status: rows::status(status)?,
                        client_ref: client_ref.clone(),
                        segments: *segments,
                        encoding: encoding.clone(),
                        created_at: Timestamp::from_millis(*created),
                    })
                });
                continue;
            }
            if let Some((hash, accepted)) = stored.get(&(ws, key)) {
                outcomes.push(if *hash != req.request_hash {
                    AcceptOutcome::Conflict {
                        existing: accepted.id.clone(),
                    }
                } else {
                    AcceptOutcome::Replayed(accepted.clone())
                });
                continue;
            }
        }
        if !req.consent_exempt || req.require_opt_in {
            let state = consent
                .get(&(
                    ws.to_owned(),
                    m.to.as_str().to_owned(),
                    m.channel.as_str().to_owned(),
                ))
                .map(String::as_str);
            if !req.consent_exempt && state == Some("opted_out") {
                outcomes.push(AcceptOutcome::OptedOut);
                continue;
            }
            if req.require_opt_in && state != Some("opted_in") {
                outcomes.push(AcceptOutcome::OptInRequired);
                continue;
            }
        }
        let row = NewRow::of(req);
        let accepted = Accepted {
            id: row.id.clone(),
            status: row.status,
            client_ref: m.client_ref.clone(),
            segments: m.segments.segments,
            encoding: m.segments.encoding.as_str().to_owned(),
            created_at: req.now,
        };
        if let Some(key) = m.idempotency_key.as_deref() {
            stored.insert((ws, key), (req.request_hash.as_str(), accepted.clone()));
        }
        outcomes.push(AcceptOutcome::Created(accepted));
        rows.push(row);
    }
    Ok((outcomes, rows))
}

/// Whether these requests can be stored without reading first
/// (`accept_many`'s `blind`): none needs a recorded opt-in, which only a
/// read can find.
pub fn accepts_blind<'a>(mut reqs: impl Iterator<Item = &'a AcceptRequest>) -> bool {
    reqs.all(|r| !r.require_opt_in)
}

/// The stored messages that hold any of the requests' idempotency keys,
/// by (workspace, key).
fn existing_keys(
    c: &Db<'_>,
    reqs: &[&AcceptRequest],
) -> Result<Reads<(String, String), AcceptedRow>, StoreError> {
    let keys: Vec<(&str, &str)> = reqs
        .iter()
        .filter_map(|r| {
            let key = r.message.idempotency_key.as_deref()?;
            Some((r.workspace_id.as_str(), key))
        })
        .collect();
    let mut reads = Vec::new();
    for chunk in c.chunks(&keys) {
        let set = if c.is_pg() {
            RowSet::new(
                c,
                1,
                &["TEXT", "TEXT"],
                chunk.iter().map(|(ws, key)| [V::from(*ws), V::from(*key)]),
            )
        } else {
            // With the message each key is pending for, if it is.
            RowSet::new(
                c,
                1,
                &["TEXT", "TEXT", "TEXT"],
                super::written_behind::key_rows(chunk),
            )
        };
        let sql = set.sql([0; 8], || existing_keys_sql(c, &set.table()));
        reads.push(c.query_later(&sql, set.into_params())?);
    }
    Ok(Reads {
        reads,
        row: |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                (
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                ),
            ))
        },
    })
}

/// Lookups sent (`Db::query_later`) and not yet read: one read per chunk,
/// each row becoming a map entry.
struct Reads<K, T> {
    reads: Vec<LaterRows>,
    row: fn(&Row<'_>) -> Result<(K, T), DbError>,
}

impl<K: std::hash::Hash + Eq, T> Reads<K, T> {
    /// Every row found, by key.
    fn read(self, c: &Db<'_>) -> Result<HashMap<K, T>, StoreError> {
        let mut found = HashMap::new();
        for read in self.reads {
            let mut rows = c.rows(read)?;
            while let Some(r) = rows.next()? {
                let (k, v) = (self.row)(&r)?;
                found.insert(k, v);
            }
        }
        Ok(found)
    }
}

/// The read of `existing_keys` for a set of (workspace, key) pairs.
fn existing_keys_sql(c: &Db<'_>, set: &str) -> String {
    // On PostgreSQL the key is looked up as the one expression its index
    // holds (migration 0007): the pair could as well be served by any index
    // that leads with workspace_id, and a plan cached on an empty table
    // took one of those and filtered the whole workspace.
    let columns = "m.id, m.request_hash, m.initial_status, m.client_ref, m.segments, m.encoding, m.created_at";
    if !c.is_pg() {
        // On SQLite the keys are written behind (`written_behind`).
        return super::written_behind::keys_sql(set, columns);
    }
    let on = "(m.workspace_id || ' ' || m.idempotency_key) = (k.column1 || ' ' || k.column2)
         AND m.idempotency_key IS NOT NULL";
    format!(
        "SELECT k.column1, k.column2, {columns} FROM {}",
        c.lookup_join(set, "messages", "m", columns, on, false)
    )
}

/// The consent state of each recipient whose request is subject to a
/// consent rule, by (workspace, phone, channel); one read serves both rules.
fn consent_states(
    c: &Db<'_>,
    reqs: &[&AcceptRequest],
) -> Result<Reads<(String, String, String), String>, StoreError> {
    let who: Vec<[&str; 3]> = reqs
        .iter()
        .filter(|r| !r.consent_exempt || r.require_opt_in)
        .map(|r| {
            [
                r.workspace_id.as_str(),
                r.message.to.as_str(),
                r.message.channel.as_str(),
            ]
        })
        .collect();
    consent_reads(c, &who)
}

/// The stored consent state of each (workspace, phone, channel) that has
/// one: one read per `Db::chunks` run.
fn consent_states_of(
    c: &Db<'_>,
    who: &[[&str; 3]],
) -> Result<HashMap<(String, String, String), String>, StoreError> {
    consent_reads(c, who)?.read(c)
}

/// The reads of `consent_states_of`, sent and not yet read.
fn consent_reads(
    c: &Db<'_>,
    who: &[[&str; 3]],
) -> Result<Reads<(String, String, String), String>, StoreError> {
    let mut reads = Vec::new();
    for chunk in c.chunks(who) {
        let set = RowSet::new(
            c,
            1,
            &["TEXT", "TEXT", "TEXT"],
            chunk.iter().map(|row| row.map(V::from)),
        );
        let sql = set.sql([0; 8], || consent_sql(c, &set.table()));
        reads.push(c.query_later(&sql, set.into_params())?);
    }
    Ok(Reads {
        reads,
        row: |r| Ok(((r.get(0)?, r.get(1)?, r.get(2)?), r.get(3)?)),
    })
}

/// The read of `consent_states_of` for a set of (workspace, phone,
/// channel) triples: one primary-key lookup per triple.
fn consent_sql(c: &Db<'_>, set: &str) -> String {
    format!(
        "SELECT k.column1, k.column2, k.column3, c.state FROM {}",
        c.lookup_join(
            set,
            "contacts",
            "c",
            "c.state",
            "c.workspace_id = k.column1 AND c.phone = k.column2 AND c.channel = k.column3",
            false,
        )
    )
}

/// A message about to be stored, with its first event.
struct NewRow<'a> {
    req: &'a AcceptRequest,
    id: MessageId,
    event_id: EventId,
    status: Status,
    start: Timestamp,
    detail: String,
}

impl<'a> NewRow<'a> {
    fn of(req: &'a AcceptRequest) -> Self {
        let m = &req.message;
        // Quiet hours push the start later still; the TTL runs from the start.
        let start = match (m.send_at, req.hold_until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let status = if start.is_some() {
            Status::Scheduled
        } else {
            Status::Queued
        };
        let start = start.unwrap_or(req.now);
        let detail = match req.hold_until {
            Some(t) if t == start => format!("held by quiet hours until {t}"),
            _ if status == Status::Scheduled => format!("scheduled for {start}"),
            _ => ACCEPTED.to_owned(),
        };
        let id = MessageId::new_at(req.now);
        NewRow {
            req,
            event_id: EventId::of_acceptance(&id),
            id,
            status,
            start,
            detail,
        }
    }

    /// Whether its acceptance event is implied by the row (`implied_accept`):
    /// a message accepted as `queued`, whose event says nothing the row
    /// does not (`ACCEPTED`).
    fn implied(&self) -> bool {
        self.status == Status::Queued
    }

    /// Its acceptance event.
    fn acceptance(&self) -> NewEvent<'_> {
        NewEvent {
            id: self.event_id.as_str(),
            workspace_id: self.req.workspace_id.as_str(),
            message_id: self.id.as_str(),
            event_type: EventType::on_accept(self.status).as_str(),
            status: self.status.as_str(),
            detail: Some(&self.detail),
            error_code: None,
            at: self.req.now,
            implied: self.implied(),
        }
    }

    /// The `messages` row, in `MESSAGE_INSERT` order.
    fn message_values(&self) -> [V<'_>; MESSAGE_INSERT_COLUMNS] {
        let (req, m) = (self.req, &self.req.message);
        let owned = |v: Option<String>| v.map_or(V::Null, V::from);
        let media = (!m.media_urls.is_empty())
            .then(|| serde_json::to_string(&m.media_urls).expect("strings serialize"));
        let metadata = m
            .metadata
            .as_ref()
            .map(|v| serde_json::to_string(v).expect("json serializes"));
        let template = m
            .whatsapp_template
            .as_ref()
            .map(|t| serde_json::to_string(t).expect("json serializes"));
        let int = |v: Option<i64>| v.map_or(V::Null, V::Int);
        let now = req.now.as_millis();
        [
            V::from(self.id.as_str()),
            V::from(req.workspace_id.as_str()),
            V::from(m.to.as_str()),
            V::from(req.from.as_str()),
            V::from(m.channel.as_str()),
            V::from(m.body.as_str()),
            owned(media),
            V::from(m.segments.encoding.as_str()),
            V::Int(i64::from(m.segments.segments)),
            V::from(&m.client_ref),
            owned(metadata),
            V::from(m.category.as_str()),
            V::Int(m.priority.rank()),
            V::from(&m.timezone),
            V::from(self.status.as_str()),
            V::from(self.status.as_str()),
            V::from(req.provider_id.as_str()),
            V::Int(0),
            V::Int(self.start.as_millis()),
            int(m.send_at.map(Timestamp::as_millis)),
            V::Int(self.start.plus(m.ttl).as_millis()),
            V::from(&m.idempotency_key),
            V::from(req.request_hash.as_str()),
            V::Int(now),
            V::Int(now),
            V::Bool(req.consent_exempt),
            owned(template),
            V::Bool(self.implied()),
        ]
    }
}

const MESSAGE_INSERT: &str = "messages (id, workspace_id, to_phone, from_addr, channel, body, media_urls, encoding, segments,
    client_ref, metadata, category, priority, timezone, status, initial_status, provider_id, attempts,
    next_attempt_at, send_at, expires_at, idempotency_key, request_hash, created_at, updated_at, consent_exempt, channel_template,
    implied_accept) ";
const MESSAGE_INSERT_COLUMNS: usize = 28;
/// The PostgreSQL composite type whose fields are `MESSAGE_INSERT`'s
/// columns, in order, with `MESSAGE_INSERT_TYPES` (migration
/// `0013_message_rows`): an accept batch's rows are bound as one array of
/// it (`RowSet::typed`).
const MESSAGE_ROW: &str = "message_row";
/// The PostgreSQL types of `MESSAGE_INSERT`'s columns.
const MESSAGE_INSERT_TYPES: [&str; MESSAGE_INSERT_COLUMNS] = [
    "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "TEXT",
    "TEXT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "BIGINT", "BIGINT", "BIGINT",
    "TEXT", "TEXT", "BIGINT", "BIGINT", "BIGINT", "TEXT", "BIGINT",
];

/// Inserts the messages, one statement per `Db::chunks` run, and records
/// their acceptance events (`events::record`: with the rest of the batch's
/// events, before its commit). `blind` (`accept_many`): on PostgreSQL, the
/// insert leaves out the rows whose recipient opted out of their channel
/// (unless exempt) and then fails unless it stored them all.
fn insert_messages(c: &Db<'_>, rows: &[NewRow<'_>], blind: bool) -> Result<(), StoreError> {
    for chunk in c.chunks(rows) {
        if blind {
            let (sql, params) = blind_insert(c, chunk, &[]);
            c.execute_later(&sql, params, Some(1))?;
            continue;
        }
        let set = RowSet::typed(
            c,
            1,
            MESSAGE_ROW,
            &MESSAGE_INSERT_TYPES,
            chunk.iter().map(NewRow::message_values),
        );
        let sql = set.sql([0; 8], || {
            format!("{} {MESSAGE_INSERT}{}", c.insert_into(), set.values())
        });
        c.execute_later(&sql, set.into_params(), Some(chunk.len()))?;
    }
    if !c.is_pg() {
        super::written_behind::record(
            c,
            rows.iter().map(|r| {
                (
                    r.req.workspace_id.as_str(),
                    r.req.message.idempotency_key.as_deref(),
                    r.req.message.to.as_str(),
                    r.id.as_str(),
                )
            }),
        )?;
    }
    for r in rows {
        super::events::record(c, &r.acceptance())?;
    }
    Ok(())
}

/// The blind insert of `rows` (`blind_insert_sql`) and its parameters,
/// with `events`' insert and fan-out in the same statement when there are
/// any (`events::pg_items`, `accept_in_one_statement`).
fn blind_insert<'p>(
    c: &Db<'_>,
    rows: &'p [NewRow<'_>],
    events: &'p [Pending],
) -> (String, Vec<V<'p>>) {
    let set = RowSet::typed(
        c,
        1,
        MESSAGE_ROW,
        &MESSAGE_INSERT_TYPES,
        rows.iter().map(NewRow::message_values),
    );
    let (table, count) = (set.table(), set.next_placeholder());
    let mut params = set.into_params();
    params.push(V::Int(i64::try_from(rows.len()).unwrap_or(i64::MAX)));
    let mut items = String::new();
    if !events.is_empty() {
        let (events_items, events_params) = super::events::pg_items(c, count + 1, events);
        items = events_items;
        params.extend(events_params);
    }
    (blind_insert_sql(&table, count, &items), params)
}

/// `insert_messages`' blind insert (PostgreSQL) of the rows of `table` (a
/// `RowSet::table()` of `MESSAGE_INSERT` rows, then the row count as the
/// parameter `?count`, the one after the set's), with `and` (more `WITH`
/// items, after a comma, or nothing) in the same statement. A recipient's
/// opt-out is looked up per row by the contact's primary key. The count is
/// checked by the server, not by `execute_later`'s `rows`, which is checked
/// by this process after the batch's `COMMIT` has gone out with it: only a
/// failed statement makes PostgreSQL roll the transaction back. (The
/// failure is a cast of the whole `CASE`, so no arm is a constant the
/// planner would fold early.)
fn blind_insert_sql(table: &str, count: usize, and: &str) -> String {
    let and = if and.is_empty() {
        String::new()
    } else {
        format!(",\n         {and}")
    };
    format!(
        "WITH stored AS (
             INSERT INTO {MESSAGE_INSERT}
             SELECT * FROM {table} k
             WHERE k.column26 <> 0
                OR (SELECT c.state FROM contacts c
                    WHERE c.workspace_id = k.column2 AND c.phone = k.column3 AND c.channel = k.column5)
                   IS DISTINCT FROM 'opted_out'
             RETURNING 1){and}
         SELECT CAST(CASE WHEN count(*) = CAST(?{count} AS BIGINT) THEN '1'
                     ELSE 'not every accept was stored: a recipient opted out' END AS INT)
         FROM stored"
    )
}

/// The timeline of a message accepted as `queued` (`implied_accept`) from
/// its stored `events`: its acceptance event first, as the row implies it
/// (stored too only if an endpoint subscribed to it).
fn with_implied_acceptance(m: &MessageRecord, stored: Vec<EventRecord>) -> Vec<EventRecord> {
    let id = EventId::of_acceptance(&m.id).to_string();
    let mut events = Vec::with_capacity(stored.len() + 1);
    events.push(EventRecord {
        id: id.clone(),
        event_type: EventType::Queued.as_str().to_owned(),
        status: Status::Queued.as_str().to_owned(),
        detail: Some(ACCEPTED.to_owned()),
        error_code: None,
        created_at: m.created_at,
    });
    events.extend(stored.into_iter().filter(|e| e.id != id));
    events
}

/// A message with its timeline and attempts, scoped to the workspace.
pub fn get(
    c: &Db<'_>,
    ws: &WorkspaceId,
    id: &MessageId,
) -> Result<Option<MessageDetail>, StoreError> {
    let sql = format!(
        "SELECT {MESSAGE_COLUMNS}, implied_accept FROM messages WHERE workspace_id = ?1 AND id = ?2"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut found = stmt.query(p![ws.as_str(), id.as_str()])?;
    let Some(row) = found.next()? else {
        return Ok(None);
    };
    let message = rows::message(&row)?;
    let implied = row.get::<_, i64>(rows::MESSAGE_COLUMN_COUNT)? != 0;
    let mut stmt = c.prepare_cached(
        "SELECT id, type, status, detail, error_code, created_at FROM events WHERE message_id = ?1 ORDER BY seq",
    )?;
    let events = stmt
        .query_map(p![id.as_str()], |r| {
            Ok(EventRecord {
                id: r.get(0)?,
                event_type: r.get(1)?,
                status: r.get(2)?,
                detail: r.get(3)?,
                error_code: r.get(4)?,
                created_at: Timestamp::from_millis(r.get(5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let events = if implied {
        with_implied_acceptance(&message, events)
    } else {
        events
    };
    let mut stmt = c.prepare_cached(
        "SELECT attempt, provider_id, started_at, duration_ms, outcome, error_class, error_code, error_message, provider_message_id
         FROM attempts WHERE message_id = ?1 ORDER BY attempt, started_at",
    )?;
    let attempts = stmt
        .query_map(p![id.as_str()], |r| {
            Ok(AttemptRecord {
                attempt: r.get(0)?,
                provider_id: r.get(1)?,
                started_at: Timestamp::from_millis(r.get(2)?),
                duration_ms: r.get(3)?,
                outcome: r.get(4)?,
                error_class: r.get(5)?,
                error_code: r.get(6)?,
                error_message: r.get(7)?,
                provider_message_id: r.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(MessageDetail {
        message,
        events,
        attempts,
    }))
}

/// `MESSAGE_COLUMNS` of the alias `m` (`m.id, m.workspace_id, …`), made
/// once rather than on every listing.
static M_COLUMNS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    MESSAGE_COLUMNS
        .split(',')
        .map(|col| format!("m.{}", col.trim()))
        .collect::<Vec<_>>()
        .join(", ")
});

/// `select` of each status (its name as SQL text, quoted), joined by
/// `UNION ALL`: a read of a workspace's messages in an id range as one
/// range of `messages_by_status` per status, which both engines plan as
/// such (an `IN` list of statuses PostgreSQL may read as a filter over the
/// whole workspace in another index).
pub(crate) fn each_status(select: impl Fn(&str) -> String) -> String {
    switchboard_core::state::ALL_STATUSES
        .iter()
        .map(|s| select(&format!("'{}'", s.as_str())))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// A page of a workspace's messages, newest first.
///
/// A creation-time bound is also an id bound (an id begins with the
/// time it was made, which is its message's `created_at`), so every
/// filter reads a range of an index. Without a recipient, status or
/// reference, the page is merged from one range of `messages_by_status`
/// per status (`merged_listing_sql`): the workspace has no index of its
/// own in id order (migration 0015, PostgreSQL 0012).
pub fn list(c: &Db<'_>, ws: &WorkspaceId, f: &MessageFilter) -> Result<MessagePage, StoreError> {
    // `?1` the workspace, `?2` the recipient if any, then the filters'.
    let mut args: Vec<V> = vec![ws.as_str().into()];
    if let Some(to) = &f.to {
        args.push(to.into());
    }
    let mut and = String::new();
    // The conditions on the id alone, which the merged listing's ranges
    // take too.
    let mut on_id = String::new();
    let mut cond = |args: &mut Vec<V<'_>>, what: &str| {
        let _ = write!(and, " AND m.{what} ?{}", args.len());
        if what.starts_with("id ") {
            let _ = write!(on_id, " AND s.{what} ?{}", args.len());
        }
    };
    if let Some(s) = f.status {
        args.push(s.as_str().into());
        cond(&mut args, "status =");
    }
    if let Some(r) = &f.client_ref {
        args.push(r.into());
        cond(&mut args, "client_ref =");
    }
    if let Some(t) = f.created_after {
        args.push(V::Int(t.as_millis()));
        cond(&mut args, "created_at >=");
        args.push(MessageId::floor_at(t).into());
        cond(&mut args, "id >=");
    }
    if let Some(t) = f.created_before {
        args.push(V::Int(t.as_millis()));
        cond(&mut args, "created_at <");
        args.push(MessageId::floor_at(t).into());
        cond(&mut args, "id <");
    }
    let cursor = f.cursor.as_ref().map(|cursor| {
        args.push(cursor.as_str().into());
        cond(&mut args, "id <");
        format!("?{}", args.len())
    });
    let limit = f.limit.clamp(1, 100);
    args.push(V::Int(i64::try_from(limit + 1).unwrap_or(101)));
    let limit_arg = format!("?{}", args.len());
    let columns = M_COLUMNS.as_str();
    let sql = match (&f.to, f.status, &f.client_ref) {
        // On SQLite the recipients are written behind (`written_behind`).
        (Some(_), ..) if !c.is_pg() => {
            super::written_behind::listing_to_sql(columns, &and, cursor.as_deref(), &limit_arg)
        }
        (Some(_), ..) => format!(
            "SELECT {columns} FROM messages m WHERE m.workspace_id = ?1 AND m.to_phone = ?2{and} ORDER BY m.id DESC LIMIT {limit_arg}"
        ),
        (None, None, None) => merged_listing_sql(c.is_pg(), columns, &and, &on_id, &limit_arg),
        (None, ..) => format!(
            "SELECT {columns} FROM messages m WHERE m.workspace_id = ?1{and} ORDER BY m.id DESC LIMIT {limit_arg}"
        ),
    };
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows_ = stmt.query(&args)?;
    let mut data = Vec::with_capacity(limit + 1);
    while let Some(r) = rows_.next()? {
        data.push(rows::message(&r)?);
    }
    let next_cursor = if data.len() > limit {
        data.truncate(limit);
        data.last().map(|m| m.id.clone())
    } else {
        None
    };
    Ok(MessagePage { data, next_cursor })
}

/// The listing of a workspace's messages of every status (`list`), newest
/// first: the newest `{limit}` ids of each status, each read backwards
/// from its own range of `messages_by_status` (`{on_id}`: the cursor's and
/// the time bounds' conditions on `s.id`), merged, cut to `{limit}`, and
/// only then their rows (`{columns}` of `m`, with `{and}` on them), each
/// by its id. So a page reads at most eleven short index ranges and its
/// own rows, however many messages the workspace holds. On PostgreSQL each
/// row is a lateral lookup behind a fence (`OFFSET 0`): a plan made while
/// the table is small (and cached as it grows) would otherwise join the
/// ids to a scan of the whole table.
fn merged_listing_sql(pg: bool, columns: &str, and: &str, on_id: &str, limit: &str) -> String {
    let ranges = each_status(|status| {
        format!(
            "SELECT id FROM (SELECT s.id FROM messages s WHERE s.workspace_id = ?1 AND s.status = {status}{on_id} ORDER BY s.id DESC LIMIT {limit}) AS r"
        )
    });
    let newest = format!("SELECT id FROM ({ranges}) AS u ORDER BY id DESC LIMIT {limit}");
    if pg {
        format!(
            "SELECT {columns} FROM ({newest}) AS newest
             CROSS JOIN LATERAL (SELECT m.* FROM messages m WHERE m.id = newest.id{and} OFFSET 0) AS m
             ORDER BY m.id DESC"
        )
    } else {
        format!("SELECT {columns} FROM messages m WHERE m.id IN ({newest}){and} ORDER BY m.id DESC")
    }
}

/// Cancels a message that has not been sent yet. `None` if it does not exist.
pub fn cancel(
    c: &Db<'_>,
    ws: &WorkspaceId,
    id: &MessageId,
    now: Timestamp,
) -> Result<Option<TransitionOutcome>, StoreError> {
    let sql = format!(
        "SELECT status FROM messages WHERE workspace_id = ?1 AND id = ?2{}",
        c.for_update()
    );
    let current: Option<String> = c
        .query_row(&sql, p![ws.as_str(), id.as_str()], |r| r.get(0))
        .optional()?;
    let Some(current) = current else {
        return Ok(None);
    };
    let from = rows::status(&current)?;
    match transition(from, Trigger::Cancel) {
        Ok(t) => {
            c.execute(
                "UPDATE messages SET status = ?1, next_attempt_at = NULL, error_code = 'canceled', updated_at = ?2 WHERE id = ?3",
                p![t.to.as_str(), now.as_millis(), id.as_str()],
            )?;
            record_event(
                c,
                ws.as_str(),
                id.as_str(),
                t.event,
                t.to,
                Some("canceled by API request"),
                None,
                now,
            )?;
            Ok(Some(TransitionOutcome::Applied {
                status: t.to,
                event: t.event,
            }))
        }
        Err(_) => Ok(Some(TransitionOutcome::Refused { status: from })),
    }
}

/// A message that may be claimed, as the claim reads it.
struct Candidate {
    id: String,
    ws: String,
    to: String,
    from: Option<String>,
    channel: String,
    body: String,
    media: Option<String>,
    provider: Option<String>,
    attempts: u32,
    expires_at: i64,
    claimed_at: Option<i64>,
    status: String,
    created_at: i64,
    consent_exempt: bool,
    category: String,
    priority: i64,
    timezone: Option<String>,
    channel_template: Option<String>,
    /// Its row number on SQLite (`Db::update_rows`); none on PostgreSQL.
    row: Option<i64>,
}

const CANDIDATE_COLUMNS: &str = "id, workspace_id, to_phone, from_addr, channel, body, media_urls, provider_id, attempts, expires_at, claimed_at, status, created_at, consent_exempt, category, priority, timezone, channel_template";

/// The column a job updates the messages it has just read by
/// (`Db::update_from`, `Db::update_rows`): their row number on SQLite,
/// one search of the table instead of the index on their text id first;
/// their id on PostgreSQL, where rows have no such number.
pub(super) fn key_column(c: &Db<'_>) -> &'static str {
    if c.is_pg() { "id" } else { "rowid" }
}

/// What to select beside rows read as `alias` for `key_of` (messages;
/// the webhook claim's deliveries too): their row number on SQLite, no
/// value on PostgreSQL.
pub(super) fn row_number(c: &Db<'_>, alias: &str) -> String {
    if c.is_pg() {
        "CAST(NULL AS BIGINT)".to_owned()
    } else {
        format!("{alias}.rowid")
    }
}

/// A row's number as read with it (`row_number`, SQLite): one read
/// without it is an error naming the row (`what` and its id), never
/// another row.
pub(super) fn row_of(what: &str, id: &str, row: Option<i64>) -> Result<i64, StoreError> {
    row.ok_or_else(|| StoreError::Corrupt(format!("{what} {id} was read without its row number")))
}

/// Updates rows of `table` a job has just read, one statement per
/// `Db::chunks` run, by `key_column`: their row numbers as read (`rows`,
/// `row_of`) on SQLite, their `ids` on PostgreSQL. `leading` is bound as
/// `?1`, `?2`, … for `assignments` (`Db::update_ids`, `Db::update_rows`).
pub(super) fn update_read<'a>(
    c: &Db<'_>,
    table: &'static str,
    assignments: &'static str,
    leading: &[V<'_>],
    ids: impl IntoIterator<Item = &'a str>,
    rows: &[i64],
) -> Result<(), StoreError> {
    if c.is_pg() {
        let ids: Vec<&str> = ids.into_iter().collect();
        c.update_ids(table, assignments, "", leading, &ids)?;
    } else {
        c.update_rows(table, assignments, "", leading, rows)?;
    }
    Ok(())
}

/// A message's value of `key_column`: its row number as read on SQLite
/// (`row_of`), its id on PostgreSQL.
pub(super) fn key_of<'a>(c: &Db<'_>, id: &'a str, row: Option<i64>) -> Result<V<'a>, StoreError> {
    if c.is_pg() {
        Ok(V::from(id))
    } else {
        row_of("message", id, row).map(V::Int)
    }
}

fn candidate(r: &Row<'_>) -> Result<Candidate, DbError> {
    Ok(Candidate {
        id: r.get(0)?,
        ws: r.get(1)?,
        to: r.get(2)?,
        from: r.get(3)?,
        channel: r.get(4)?,
        body: r.get(5)?,
        media: r.get(6)?,
        provider: r.get(7)?,
        attempts: r.get(8)?,
        expires_at: r.get(9)?,
        claimed_at: r.get(10)?,
        status: r.get(11)?,
        created_at: r.get(12)?,
        consent_exempt: r.get(13)?,
        category: r.get(14)?,
        priority: r.get(15)?,
        timezone: r.get(16)?,
        channel_template: r.get(17)?,
        row: r.get(18)?,
    })
}

fn release_scheduled(c: &Db<'_>, now: Timestamp) -> Result<(), StoreError> {
    // Another node may be releasing the same messages: each takes the rows
    // it can lock and passes over the rest.
    let sql = statement_text(c.is_pg(), [0; 14], || {
        format!(
            "SELECT id, workspace_id FROM messages WHERE status = 'scheduled' AND next_attempt_at <= ?1 LIMIT 1000{}",
            c.skip_locked()
        )
    });
    let mut stmt = c.prepare_cached(&sql)?;
    let due = stmt
        .query_map(p![now.as_millis()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, ws) in due {
        let t = transition(Status::Scheduled, Trigger::Release).expect("scheduled can be released");
        c.execute(
            "UPDATE messages SET status = ?1, updated_at = ?2 WHERE id = ?3",
            p![t.to.as_str(), now.as_millis(), id],
        )?;
        record_event(
            c,
            &ws,
            &id,
            t.event,
            t.to,
            Some("its time came (send_at or the end of quiet hours)"),
            None,
            now,
        )?;
    }
    Ok(())
}

/// Sets or clears a provider's token bucket; a change refills it.
pub fn set_provider_rate(
    c: &Db<'_>,
    provider: &str,
    rate: Option<(f64, f64)>,
) -> Result<(), StoreError> {
    let current: Option<(Option<f64>, Option<f64>)> = c
        .query_row(
            "SELECT rate_per_second, burst FROM providers WHERE id = ?1",
            p![provider],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some(current) = current else {
        return Err(StoreError::Corrupt(format!("no provider {provider}")));
    };
    let wanted = rate.map_or((None, None), |(r, b)| (Some(r), Some(b)));
    if current != wanted {
        c.execute(
            "UPDATE providers SET rate_per_second = ?1, burst = ?2, tokens = ?2, tokens_at = NULL WHERE id = ?3",
            p![wanted.0, wanted.1, provider],
        )?;
    }
    Ok(())
}

/// A provider's token bucket during one claim.
struct Bucket {
    burst: f64,
    tokens: f64,
    // Refilled up to here. A node whose claim was queued behind another's
    // carries an earlier `now`: time is never counted twice.
    at: i64,
}

/// The bucket of `provider` refilled to `now`, locked for this transaction;
/// `None` if the provider has no limit.
fn bucket(c: &Db<'_>, provider: &str, now: Timestamp) -> Result<Option<Bucket>, StoreError> {
    let sql = format!(
        "SELECT rate_per_second, burst, tokens, tokens_at FROM providers WHERE id = ?1{}",
        c.for_update()
    );
    type BucketRow = (Option<f64>, Option<f64>, Option<f64>, Option<i64>);
    let row: Option<BucketRow> = c
        .query_row(&sql, p![provider], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let Some((Some(rate), burst, tokens, at)) = row else {
        return Ok(None);
    };
    let burst = burst.unwrap_or(rate).max(1.0);
    let elapsed = at.map_or(0, |at| (now.as_millis() - at).max(0)) as f64 / 1000.0;
    let tokens = (tokens.unwrap_or(burst) + elapsed * rate).min(burst);
    Ok(Some(Bucket {
        burst,
        tokens,
        at: at.map_or(now.as_millis(), |at| at.max(now.as_millis())),
    }))
}

/// Releases due scheduled messages, then claims due queued messages and
/// messages whose lease ran out. Expired ones are expired instead of claimed.
pub fn claim_due(
    c: &Db<'_>,
    now: Timestamp,
    limit: usize,
    lease: Duration,
) -> Result<Vec<ClaimedMessage>, StoreError> {
    release_scheduled(c, now)?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut candidates = {
        let sql = statement_text(c.is_pg(), [0; 14], || {
            format!(
                "SELECT {CANDIDATE_COLUMNS}, {} FROM messages WHERE status = 'queued' AND next_attempt_at <= ?1
                 ORDER BY priority DESC, next_attempt_at LIMIT ?2{}",
                row_number(c, "messages"),
                c.skip_locked()
            )
        });
        let mut stmt = c.prepare_cached(&sql)?;
        stmt.query_map(p![now.as_millis(), limit], candidate)?
            .collect::<Result<Vec<_>, _>>()?
    };
    let room = limit - candidates.len() as i64;
    if room > 0 {
        let sql = statement_text(c.is_pg(), [0; 14], || {
            format!(
                "SELECT {CANDIDATE_COLUMNS}, {} FROM messages WHERE status = 'sending' AND lease_until <= ?1 LIMIT ?2{}",
                row_number(c, "messages"),
                c.skip_locked()
            )
        });
        let mut stmt = c.prepare_cached(&sql)?;
        candidates.extend(
            stmt.query_map(p![now.as_millis(), room], candidate)?
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    let lease_until = now.plus(lease).as_millis();
    // An opt-out may have arrived while a message waited: the recipients'
    // consent, read once for the whole claim.
    let consent = {
        let who: Vec<[&str; 3]> = candidates
            .iter()
            .filter(|m| !m.consent_exempt)
            .map(|m| [m.ws.as_str(), m.to.as_str(), m.channel.as_str()])
            .collect();
        consent_states_of(c, &who)?
    };
    let mut claimed = Vec::with_capacity(candidates.len());
    // Their row numbers, in the same order (SQLite).
    let mut rows: Vec<i64> = Vec::with_capacity(candidates.len());
    let mut quiet: HashMap<String, Option<QuietHours>> = HashMap::new();
    // Per-provider throughput limits, shared by every node: a message whose
    // provider has no token left stays where it is for a later claim.
    let mut buckets: HashMap<String, Option<Bucket>> = HashMap::new();
    for Candidate {
        id,
        ws,
        to,
        from,
        channel,
        body,
        media,
        provider,
        attempts,
        expires_at,
        claimed_at,
        status,
        created_at,
        consent_exempt,
        category,
        priority,
        timezone,
        channel_template,
        row,
    } in candidates
    {
        let from_status = rows::status(&status)?;
        if from_status == Status::Sending {
            // The node that held this claim stopped before reporting. The
            // attempt is logged as interrupted; the retry reuses the message
            // id as the provider's idempotency key, so a send that did reach
            // the provider is not repeated.
            c.execute(
                "INSERT INTO attempts (id, message_id, attempt, provider_id, started_at, duration_ms, outcome, error_class, error_message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'interrupted', 'transport', 'the dispatcher stopped before the attempt finished')",
                p![
                    AttemptId::new_at(now).as_str(),
                    id,
                    attempts,
                    provider.as_deref().unwrap_or("unknown"),
                    claimed_at.unwrap_or(now.as_millis()),
                    now.as_millis() - claimed_at.unwrap_or(now.as_millis())
                ],
            )?;
        }
        let unsent = |trigger, code, detail| -> Result<(), StoreError> {
            let t =
                transition(from_status, trigger).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            c.execute(
                "UPDATE messages SET status = ?1, next_attempt_at = NULL, lease_until = NULL, error_code = ?2, updated_at = ?3 WHERE id = ?4",
                p![t.to.as_str(), code, now.as_millis(), id],
            )?;
            record_event(c, &ws, &id, t.event, t.to, Some(detail), Some(code), now)
        };
        if Timestamp::from_millis(expires_at) <= now {
            unsent(
                Trigger::Expire,
                "expired",
                "the TTL passed before the message could be sent",
            )?;
            continue;
        }
        // An opt-out may have arrived while the message waited.
        if !consent_exempt
            && !consent.is_empty()
            && consent
                .get(&(ws.clone(), to.clone(), channel.clone()))
                .is_some_and(|state| state == "opted_out")
        {
            unsent(
                Trigger::Suppress,
                "recipient_opted_out",
                "the recipient opted out before the message was sent",
            )?;
            continue;
        }
        // A marketing message that comes up late (a backlog, retries, a
        // stopped worker) may now be inside the recipient's quiet hours:
        // hold it again rather than send it at night.
        if from_status == Status::Queued
            && category == Category::Marketing.as_str()
            && priority < Priority::High.rank()
        {
            let rule = match quiet.get(&ws) {
                Some(rule) => rule.clone(),
                None => {
                    let settings = super::inbound::settings(
                        c,
                        &WorkspaceId::parse(&ws).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    )?;
                    let rule = settings.as_ref().and_then(QuietHours::from_settings);
                    quiet.insert(ws.clone(), rule.clone());
                    rule
                }
            };
            let region = PhoneNumber::parse(&to).ok();
            let hold = rule.and_then(|q| {
                q.hold(
                    now,
                    timezone.as_deref(),
                    region.as_ref().and_then(|p| p.region()),
                )
            });
            if let Some(until) = hold {
                let t = transition(from_status, Trigger::Hold)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                c.execute(
                    "UPDATE messages SET status = ?1, next_attempt_at = ?2, updated_at = ?3 WHERE id = ?4",
                    p![t.to.as_str(), until.as_millis(), now.as_millis(), id],
                )?;
                record_event(
                    c,
                    &ws,
                    &id,
                    t.event,
                    t.to,
                    Some(&format!(
                        "inside the recipient's quiet hours; held until {}",
                        until.to_rfc3339()
                    )),
                    None,
                    now,
                )?;
                continue;
            }
        }
        if let Some(p) = provider.as_deref() {
            if !buckets.contains_key(p) {
                let b = bucket(c, p, now)?;
                buckets.insert(p.to_owned(), b);
            }
            if let Some(Some(b)) = buckets.get_mut(p) {
                if b.tokens < 1.0 {
                    continue;
                }
                b.tokens -= 1.0;
            }
        }
        // Marked `sending` below, all together.
        let attempt = attempts + 1;
        if from_status == Status::Queued {
            let t = transition(from_status, Trigger::Claim).expect("queued can be claimed");
            record_event(
                c,
                &ws,
                &id,
                t.event,
                t.to,
                Some(&format!("attempt {attempt}")),
                None,
                now,
            )?;
        }
        let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("{what}: {v}"));
        if !c.is_pg() {
            rows.push(row_of("message", &id, row)?);
        }
        claimed.push(ClaimedMessage {
            id: MessageId::parse(&id).map_err(|_| corrupt("message id", &id))?,
            workspace_id: WorkspaceId::parse(&ws).map_err(|_| corrupt("workspace id", &ws))?,
            to,
            from: from.unwrap_or_default(),
            channel,
            body,
            media_urls: match media {
                Some(m) => serde_json::from_str(&m).map_err(|_| corrupt("media_urls", &m))?,
                None => Vec::new(),
            },
            provider_id: provider
                .as_deref()
                .and_then(|p| ProviderId::parse(p).ok())
                .ok_or_else(|| corrupt("provider id", provider.as_deref().unwrap_or("")))?,
            attempt,
            template: match channel_template {
                Some(t) => {
                    Some(serde_json::from_str(&t).map_err(|_| corrupt("channel_template", &t))?)
                }
                None => None,
            },
            expires_at: Timestamp::from_millis(expires_at),
            claimed_at: now,
            created_at: Timestamp::from_millis(created_at),
        });
    }
    // One update per `Db::chunks` run: `attempts + 1` is the attempt handed
    // out above, as the row was read (and, on PostgreSQL, locked) by this job.
    // On SQLite by the row numbers the read above found (`update_read`).
    const SENDING: &str = "status = 'sending', attempts = attempts + 1, lease_until = ?1, claimed_at = ?2, next_attempt_at = NULL, updated_at = ?2";
    let leading = [V::Int(lease_until), V::Int(now.as_millis())];
    let ids = claimed.iter().map(|m| m.id.as_str());
    update_read(c, "messages", SENDING, &leading, ids, &rows)?;
    for (provider, b) in buckets {
        if let Some(b) = b {
            c.execute(
                "UPDATE providers SET tokens = ?1, tokens_at = ?2 WHERE id = ?3",
                p![b.tokens.min(b.burst), b.at, provider],
            )?;
        }
    }
    Ok(claimed)
}

/// The attempt-log row of a report, in `ATTEMPT_INSERT` order; `None` for
/// an expiry (no provider was called).
fn attempt_values(r: &AttemptReport) -> Option<[V<'_>; 11]> {
    let (outcome, class, code, message, pmid): (
        &str,
        Option<ErrorClass>,
        Option<&str>,
        Option<&str>,
        Option<&str>,
    ) = match &r.outcome {
        AttemptOutcome::Accepted {
            provider_message_id,
        } => ("accepted", None, None, None, Some(provider_message_id)),
        AttemptOutcome::Retry {
            class,
            code,
            message,
            ..
        }
        | AttemptOutcome::GiveUp {
            class,
            code,
            message,
            ..
        } => ("failed", Some(*class), Some(code), Some(message), None),
        AttemptOutcome::Expired => return None,
    };
    Some([
        V::from(AttemptId::new_at(r.started_at).to_string()),
        V::from(r.message_id.as_str()),
        V::Int(i64::from(r.attempt)),
        V::from(r.provider_id.as_str()),
        V::Int(r.started_at.as_millis()),
        V::Int(r.finished_at.as_millis() - r.started_at.as_millis()),
        V::from(outcome),
        class.map(ErrorClass::as_str).map_or(V::Null, V::from),
        code.map_or(V::Null, V::from),
        message.map_or(V::Null, V::from),
        pmid.map_or(V::Null, V::from),
    ])
}

const ATTEMPT_INSERT: &str = "attempts (id, message_id, attempt, provider_id, started_at, duration_ms, outcome, error_class, error_code, error_message, provider_message_id) ";
/// The PostgreSQL types of `ATTEMPT_INSERT`'s columns.
const ATTEMPT_INSERT_TYPES: [&str; 11] = [
    "TEXT", "TEXT", "BIGINT", "TEXT", "BIGINT", "BIGINT", "TEXT", "TEXT", "TEXT", "TEXT", "TEXT",
];

/// Logs the attempts of many reports: one insert per `Db::chunks` run.
fn log_attempts(c: &Db<'_>, reports: &[&AttemptReport]) -> Result<(), StoreError> {
    let rows: Vec<[V<'_>; 11]> = reports.iter().filter_map(|r| attempt_values(r)).collect();
    for chunk in c.chunks(&rows) {
        let set = RowSet::new(c, 1, &ATTEMPT_INSERT_TYPES, chunk.iter().cloned());
        let sql = set.sql([0; 8], || {
            format!("{} {ATTEMPT_INSERT}{}", c.insert_into(), set.values())
        });
        c.execute(&sql, set.params())?;
    }
    Ok(())
}

/// `complete_attempt` for many reports, with the common case set-based: a
/// send the provider accepted, reported by the claim that is still current,
/// moves its message `sending → sent` with one update per `Db::chunks` run
/// (and the attempt log with one insert), instead of an insert, a read and
/// an update per report. Every other report (failures, retries, failover,
/// stale or refused reports, a message reported twice) goes through
/// `complete_attempt`'s own path. One outcome per report, in order.
pub fn complete_attempts(
    c: &Db<'_>,
    reports: &[AttemptReport],
) -> Result<Vec<TransitionOutcome>, StoreError> {
    log_attempts(c, &reports.iter().collect::<Vec<_>>())?;
    // The messages' current state, read (and on PostgreSQL locked) at once.
    let ids: Vec<&str> = reports.iter().map(|r| r.message_id.as_str()).collect();
    // With their row numbers on SQLite (`row_number`, here as literals for
    // `Db::query_ids`), which the update below finds them by.
    let read = if c.is_pg() {
        "SELECT id, status, attempts, workspace_id, CAST(NULL AS BIGINT) FROM messages"
    } else {
        "SELECT id, status, attempts, workspace_id, rowid FROM messages"
    };
    type State = (String, u32, String, Option<i64>);
    let state: HashMap<String, State> = c
        .query_ids(read, c.for_update(), &ids, |r| {
            Ok((
                r.get::<_, String>(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?),
            ))
        })?
        .into_iter()
        .collect();
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(ids.len());
    for id in &ids {
        *seen.entry(id).or_default() += 1;
    }
    let sent = transition(Status::Sending, Trigger::ProviderAccepted)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut fast: Vec<(&AttemptReport, &str, &str, Option<i64>)> = Vec::new();
    let mut outcomes = Vec::with_capacity(reports.len());
    for r in reports {
        let id = r.message_id.as_str();
        let current = state.get(id);
        match (&r.outcome, current) {
            (
                AttemptOutcome::Accepted {
                    provider_message_id,
                },
                Some((status, attempts, ws, row)),
            ) if status == "sending" && *attempts == r.attempt && seen[id] == 1 => {
                fast.push((r, provider_message_id, ws, *row));
                outcomes.push(TransitionOutcome::Applied {
                    status: sent.to,
                    event: sent.event,
                });
            }
            _ => outcomes.push(apply_attempt(c, r)?),
        }
    }
    // The status is the state machine's constant, not input.
    debug_assert_eq!(sent.to, Status::Sent);
    const SENT: &str = "status = 'sent', provider_message_id = v.column2, lease_until = NULL, error_code = NULL, error_message = NULL, updated_at = v.column3";
    // On SQLite by the row numbers read above (`key_column`).
    let types: &'static [&'static str] = if c.is_pg() {
        &["TEXT", "TEXT", "BIGINT"]
    } else {
        &["BIGINT", "TEXT", "BIGINT"]
    };
    let keyed = fast
        .iter()
        .map(|f| Ok((key_of(c, f.0.message_id.as_str(), f.3)?, f)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    c.update_from(
        key_column(c),
        ("messages", SENT, ""),
        types,
        &keyed,
        |(key, (r, pmid, _, _))| {
            [
                key.clone(),
                V::from(*pmid),
                V::Int(r.finished_at.as_millis()),
            ]
        },
    )?;
    for (r, pmid, ws, _) in fast {
        record_event(
            c,
            ws,
            r.message_id.as_str(),
            sent.event,
            sent.to,
            Some(&format!("accepted by {} as {pmid}", r.provider_id)),
            None,
            r.finished_at,
        )?;
    }
    Ok(outcomes)
}

/// Records an attempt's result and applies the transition it implies.
pub fn complete_attempt(c: &Db<'_>, r: &AttemptReport) -> Result<TransitionOutcome, StoreError> {
    log_attempts(c, &[r])?;
    apply_attempt(c, r)
}

/// Applies the transition an attempt's result implies (its attempt is
/// already logged).
fn apply_attempt(c: &Db<'_>, r: &AttemptReport) -> Result<TransitionOutcome, StoreError> {
    let sql = format!(
        "SELECT status, attempts, workspace_id, route_start, channel, from_addr FROM messages WHERE id = ?1{}",
        c.for_update()
    );
    type Row = (String, u32, String, u32, String, Option<String>);
    let row: Option<Row> = c
        .query_row(&sql, p![r.message_id.as_str()], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })
        .optional()?;
    let Some((status, attempts, ws, route_start, channel, from_addr)) = row else {
        return Err(StoreError::Corrupt(format!(
            "attempt reported for unknown message {}",
            r.message_id
        )));
    };
    let from = rows::status(&status)?;
    let id = r.message_id.as_str();
    let now = r.finished_at;
    if attempts != r.attempt || from != Status::Sending {
        // A receipt can overtake the provider's answer: keep the provider id.
        if let AttemptOutcome::Accepted {
            provider_message_id,
        } = &r.outcome
        {
            c.execute(
                "UPDATE messages SET provider_message_id = COALESCE(provider_message_id, ?1) WHERE id = ?2",
                p![provider_message_id, id],
            )?;
        }
        return Ok(if attempts != r.attempt {
            TransitionOutcome::Stale
        } else {
            TransitionOutcome::Refused { status: from }
        });
    }
    if let Some(outcome) = fail_over(
        c,
        r,
        &ws,
        &channel,
        from_addr.as_deref(),
        attempts - route_start.min(attempts),
        from,
    )? {
        return Ok(outcome);
    }
    let (trigger, detail, error_code) = match &r.outcome {
        AttemptOutcome::Accepted {
            provider_message_id,
        } => (
            Trigger::ProviderAccepted,
            format!("accepted by {} as {provider_message_id}", r.provider_id),
            None,
        ),
        AttemptOutcome::Retry {
            class,
            code,
            message,
            next_at,
        } => (
            Trigger::RetryScheduled,
            format!(
                "attempt {} failed ({} {code}: {message}); next attempt at {next_at}",
                r.attempt,
                class.as_str()
            ),
            Some(code.clone()),
        ),
        AttemptOutcome::GiveUp {
            class: ErrorClass::Consent,
            code,
            message,
            ..
        } => (
            Trigger::Suppress,
            format!("provider refused for consent ({code}: {message})"),
            Some(code.clone()),
        ),
        AttemptOutcome::GiveUp {
            class,
            code,
            message,
            reason,
        } => {
            let code_out = match reason {
                GiveUpReason::NotRetryable => code.clone(),
                other => other.code().to_owned(),
            };
            (
                Trigger::Fail,
                format!(
                    "attempt {} failed ({} {code}: {message}); {}",
                    r.attempt,
                    class.as_str(),
                    reason.code().replace('_', " ")
                ),
                Some(code_out),
            )
        }
        AttemptOutcome::Expired => (
            Trigger::Expire,
            "the TTL passed before the message could be sent".to_owned(),
            Some("expired".to_owned()),
        ),
    };
    let t = transition(from, trigger).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    match &r.outcome {
        AttemptOutcome::Accepted {
            provider_message_id,
        } => {
            c.execute(
                "UPDATE messages SET status = ?1, provider_message_id = ?2, lease_until = NULL, error_code = NULL, error_message = NULL, updated_at = ?3 WHERE id = ?4",
                p![t.to.as_str(), provider_message_id, now.as_millis(), id],
            )?;
        }
        AttemptOutcome::Retry {
            message, next_at, ..
        } => {
            c.execute(
                "UPDATE messages SET status = ?1, next_attempt_at = ?2, lease_until = NULL, error_code = ?3, error_message = ?4, updated_at = ?5 WHERE id = ?6",
                p![t.to.as_str(), next_at.as_millis(), error_code, message, now.as_millis(), id],
            )?;
        }
        AttemptOutcome::GiveUp { message, .. } => {
            c.execute(
                "UPDATE messages SET status = ?1, lease_until = NULL, error_code = ?2, error_message = ?3, updated_at = ?4 WHERE id = ?5",
                p![t.to.as_str(), error_code, message, now.as_millis(), id],
            )?;
        }
        AttemptOutcome::Expired => {
            c.execute(
                "UPDATE messages SET status = ?1, lease_until = NULL, error_code = 'expired', updated_at = ?2 WHERE id = ?3",
                p![t.to.as_str(), now.as_millis(), id],
            )?;
        }
    }
    record_event(
        c,
        &ws,
        id,
        t.event,
        t.to,
        Some(&detail),
        error_code.as_deref(),
        now,
    )?;
    Ok(TransitionOutcome::Applied {
        status: t.to,
        event: t.event,
    })
}

/// Moves a message whose provider failed with a transport or throttle
/// error past its attempt budget to the next sender of its channel's
/// route, due at once; `None` (nothing done) if the error is of another
/// class, the budget is not spent, the message ran out of time, or the
/// route has no further provider. The global attempt limit does not stop
/// a failover: each provider further down the route gets its turn.
fn fail_over(
    c: &Db<'_>,
    r: &AttemptReport,
    ws: &str,
    channel: &str,
    from_addr: Option<&str>,
    on_this_provider: u32,
    from: Status,
) -> Result<Option<TransitionOutcome>, StoreError> {
    let (class, code, message) = match &r.outcome {
        AttemptOutcome::Retry {
            class,
            code,
            message,
            ..
        }
        | AttemptOutcome::GiveUp {
            class,
            code,
            message,
            reason: GiveUpReason::AttemptsExhausted,
        } if matches!(class, ErrorClass::Transport | ErrorClass::Throttled) => {
            (*class, code, message)
        }
        _ => return Ok(None),
    };
    let budget: Option<u32> = c
        .query_row(
            "SELECT attempt_budget FROM providers WHERE id = ?1",
            p![r.provider_id.as_str()],
            |row| row.get(0),
        )
        .optional()?
        .flatten();
    if on_this_provider < budget.unwrap_or(crate::DEFAULT_ATTEMPT_BUDGET) {
        return Ok(None);
    }
    let Some(next) =
        super::providers::failover_target(c, ws, channel, r.provider_id.as_str(), from_addr)?
    else {
        return Ok(None);
    };
    let t = transition(from, Trigger::RetryScheduled)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let now = r.finished_at;
    let detail = format!(
        "attempt {} failed ({} {code}: {message}); failing over from {} to {} ({})",
        r.attempt,
        class.as_str(),
        r.provider_id,
        next.provider_id,
        next.address
    );
    c.execute(
        "UPDATE messages SET status = ?1, next_attempt_at = ?2, lease_until = NULL, provider_id = ?3, from_addr = ?4,
         route_start = attempts, provider_message_id = NULL, error_code = ?5, error_message = ?6, updated_at = ?2 WHERE id = ?7",
        p![
            t.to.as_str(),
            now.as_millis(),
            next.provider_id.as_str(),
            next.address,
            code,
            message,
            r.message_id.as_str()
        ],
    )?;
    record_event(
        c,
        ws,
        r.message_id.as_str(),
        t.event,
        t.to,
        Some(&detail),
        Some(code),
        now,
    )?;
    Ok(Some(TransitionOutcome::Applied {
        status: t.to,
        event: t.event,
    }))
}

/// The transition a receipt asks for, with the error code it records.
pub(super) fn receipt_trigger(
    kind: ReceiptKind,
    error_code: Option<&str>,
) -> (Trigger, Option<&str>) {
    match kind {
        ReceiptKind::Delivered => (Trigger::ReceiptDelivered, None),
        ReceiptKind::Read => (Trigger::ReceiptRead, None),
        // The provider's own code when it gave one (`carrier_unreachable`, …).
        ReceiptKind::Undelivered => (
            Trigger::ReceiptUndelivered,
            Some(error_code.unwrap_or("undelivered")),
        ),
    }
}

/// Applies a receipt to the message with this provider id.
pub fn apply_receipt(
    c: &Db<'_>,
    provider_id: &str,
    provider_message_id: &str,
    kind: ReceiptKind,
    error_code: Option<&str>,
    detail: Option<&str>,
    now: Timestamp,
) -> Result<ReceiptOutcome, StoreError> {
    let sql = format!(
        "SELECT id, status, workspace_id FROM messages WHERE provider_id = ?1 AND provider_message_id = ?2{}",
        c.for_update()
    );
    let row: Option<(String, String, String)> = c
        .prepare_cached(&sql)?
        .query_row(p![provider_id, provider_message_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((id, status, ws)) = row else {
        return Ok(ReceiptOutcome::UnknownMessage);
    };
    let message_id = MessageId::parse(&id).map_err(|_| StoreError::Corrupt(id.clone()))?;
    let from = rows::status(&status)?;
    let (trigger, code) = receipt_trigger(kind, error_code);
    match transition(from, trigger) {
        Ok(t) => {
            c.prepare_cached("UPDATE messages SET status = ?1, lease_until = NULL, error_code = COALESCE(?2, error_code), updated_at = ?3 WHERE id = ?4")?
                .execute(p![t.to.as_str(), code, now.as_millis(), id])?;
            record_event(c, &ws, &id, t.event, t.to, detail, code, now)?;
            Ok(ReceiptOutcome::Applied {
                message_id,
                status: t.to,
            })
        }
        Err(_) => Ok(ReceiptOutcome::Ignored {
            message_id,
            status: from,
        }),
    }
}

/// The earliest due time among scheduled, queued and leased messages.
pub fn next_due_at(c: &Db<'_>) -> Result<Option<Timestamp>, StoreError> {
    let t: Option<i64> = c.query_row(
        "SELECT MIN(t) FROM (
            SELECT MIN(next_attempt_at) AS t FROM messages WHERE status = 'queued'
            UNION ALL SELECT MIN(next_attempt_at) FROM messages WHERE status = 'scheduled'
            UNION ALL SELECT MIN(lease_until) FROM messages WHERE status = 'sending') AS due",
        p![],
        |r| r.get(0),
    )?;
    Ok(t.map(Timestamp::from_millis))
}

/// The statuses a message holds until a provider has it, each with the
/// partial index that holds exactly its messages (`sql::counts`).
pub(crate) const LIVE: [(Status, &str); 3] = [
    (Status::Scheduled, "messages_scheduled"),
    (Status::Queued, "messages_queued"),
    (Status::Sending, "messages_leased"),
];

/// `live_counts`' statement: one count per live status, each from its
/// partial index. SQLite is told the index (`INDEXED BY`, which fails the
/// statement rather than plan it otherwise): left to choose, it counts
/// `queued` by scanning the status index, every message's entry.
/// PostgreSQL chooses the partial index by itself (`plan_tests`).
fn live_counts_sql(pg: bool) -> String {
    LIVE.iter()
        .map(|(status, index)| {
            let s = status.as_str();
            let indexed = if pg {
                String::new()
            } else {
                format!(" INDEXED BY {index}")
            };
            format!("SELECT '{s}', COUNT(*) FROM messages{indexed} WHERE status = '{s}'")
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// The counts of the live statuses (`LIVE`): a read of the queue, however
/// many messages have settled.
pub fn live_counts(c: &Db<'_>) -> Result<Vec<(Status, u64)>, StoreError> {
    counts_by_status(c, &live_counts_sql(c.is_pg()))
}

/// Every status's count: a read of every message's entry in an index.
pub fn status_counts(c: &Db<'_>) -> Result<Vec<(Status, u64)>, StoreError> {
    counts_by_status(c, "SELECT status, COUNT(*) FROM messages GROUP BY status")
}

/// The rows of `sql`, each a status and its count.
fn counts_by_status(c: &Db<'_>, sql: &str) -> Result<Vec<(Status, u64)>, StoreError> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows_ = stmt
        .query_map(p![], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    rows_
        .into_iter()
        .map(|(s, n)| Ok((rows::status(&s)?, u64::try_from(n).unwrap_or(0))))
        .collect()
}

#[cfg(test)]
pub(crate) mod plan_tests {
    use super::*;
    use crate::sql::db::{Conn, PgConn};
    use crate::sql::scratch::ScratchSchema;

    /// SQLite's plan of `sql`, one line per step, its parameters all null.
    pub(crate) fn sqlite_plan(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
        explain
            .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A migrated SQLite database, for its plans.
    pub(crate) fn sqlite_migrated() -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        crate::sql::schema::migrate(&mut conn).unwrap();
        (dir, conn)
    }

    /// A migrated scratch schema on the test server (`None`, and the test
    /// skipped, without one) and a connection to it that plans every
    /// prepared statement generically, as PostgreSQL may once a statement
    /// has run five times: a plan made now, on empty tables, is one a node
    /// may keep as they grow.
    pub(crate) fn pg_generic_planner() -> Option<(ScratchSchema, Conn)> {
        let Some(base) = ScratchSchema::test_server_url() else {
            eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
            return None;
        };
        let schema = ScratchSchema::create(&base, "plan").unwrap();
        let conn = Conn::Pg(Box::new(PgConn::connect_url(&schema.url()).unwrap()));
        crate::sql::pg_schema::migrate(&conn.db()).unwrap();
        conn.db()
            .execute_batch("SET plan_cache_mode = force_generic_plan")
            .unwrap();
        Some((schema, conn))
    }

    /// PostgreSQL's plan of `sql` with `params`, as text.
    pub(crate) fn pg_plan(db: &Db<'_>, sql: &str, params: &[V]) -> String {
        db.query_map(&format!("EXPLAIN {sql}"), params, |r| r.get::<_, String>(0))
            .unwrap()
            .join("\n")
    }

    /// The conditions on `m` and on the ranges' ids that `list` gives the
    /// merged listing, its limit's parameter, and its parameters: none; a
    /// cursor; both time bounds and a cursor.
    fn merged() -> [(&'static str, &'static str, &'static str, Vec<V<'static>>); 3] {
        [
            ("", "", "?2", vec!["ws_1".into(), V::Int(51)]),
            (
                " AND m.id < ?2",
                " AND s.id < ?2",
                "?3",
                vec!["ws_1".into(), "msg_5".into(), V::Int(51)],
            ),
            (
                " AND m.created_at >= ?2 AND m.id >= ?3 AND m.created_at < ?4 AND m.id < ?5 AND m.id < ?6",
                " AND s.id >= ?3 AND s.id < ?5 AND s.id < ?6",
                "?7",
                vec![
                    "ws_1".into(),
                    V::Int(0),
                    "msg_0".into(),
                    V::Int(9),
                    "msg_9".into(),
                    "msg_5".into(),
                    V::Int(51),
                ],
            ),
        ]
    }

    /// A listing of every status reads one range of the status index per
    /// status, backwards and from the index alone, and then the page's
    /// rows by id: no scan of the table, and no sort of more than each
    /// range's first ids.
    #[test]
    fn the_merged_listing_reads_a_range_of_the_status_index_per_status() {
        let (_dir, conn) = sqlite_migrated();
        for (and, on_id, limit, _) in merged() {
            let plan = sqlite_plan(
                &conn,
                &merged_listing_sql(false, "m.id, m.body", and, on_id, limit),
            );
            let ranges = plan
                .iter()
                .filter(|l| l.starts_with("SEARCH s USING COVERING INDEX messages_by_status (workspace_id=? AND status=?"))
                .count();
            assert_eq!(
                ranges,
                switchboard_core::state::ALL_STATUSES.len(),
                "{and}: {plan:?}"
            );
            assert!(
                plan.iter()
                    .any(|l| l
                        .starts_with("SEARCH m USING INDEX sqlite_autoindex_messages_1 (id=?)")),
                "{and}: {plan:?}"
            );
            assert!(
                !plan
                    .iter()
                    .any(|l| l.starts_with("SCAN s") || l.starts_with("SCAN m")),
                "{and}: {plan:?}"
            );
        }
    }

    /// On PostgreSQL, with a generic plan made on empty tables, the same:
    /// each status's range through the status index, no sequential scan.
    #[test]
    fn on_postgres_the_merged_listing_reads_the_status_index() {
        let Some((_schema, conn)) = pg_generic_planner() else {
            return;
        };
        let db = conn.db();
        for (and, on_id, limit, params) in merged() {
            let sql = merged_listing_sql(true, "m.id, m.body", and, on_id, limit);
            let plan = pg_plan(&db, &sql, &params);
            assert_eq!(
                plan.matches("using messages_by_status").count(),
                switchboard_core::state::ALL_STATUSES.len(),
                "{and}: {plan}"
            );
            assert!(!plan.contains("Seq Scan on messages"), "{and}: {plan}");
            assert!(
                plan.contains("Index Scan using messages_pkey on messages m"),
                "{and}: {plan}"
            );
        }
    }

    /// The live statuses' counts read each status's partial index, on
    /// SQLite (told so) and on PostgreSQL (with a generic plan made on
    /// empty tables): never every message's entry in the status index.
    #[test]
    fn the_live_counts_read_the_partial_indexes() {
        let (_dir, conn) = sqlite_migrated();
        let plan = sqlite_plan(&conn, &live_counts_sql(false));
        for (_, index) in LIVE {
            assert!(
                plan.iter()
                    .any(|l| l == &format!("SCAN messages USING INDEX {index}")
                        || l == &format!("SCAN messages USING COVERING INDEX {index}")),
                "{index}: {plan:?}"
            );
        }
        assert!(
            !plan.iter().any(|l| l.contains("messages_by_status")),
            "{plan:?}"
        );
        let Some((_schema, conn)) = pg_generic_planner() else {
            return;
        };
        let plan = pg_plan(&conn.db(), &live_counts_sql(true), &[]);
        for (_, index) in LIVE {
            assert!(
                plan.contains(&format!("using {index} on messages")),
                "{index}: {plan}"
            );
        }
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("messages_by_status"), "{plan}");
    }

    /// The plan PostgreSQL caches for a prepared statement may be made
    /// while the tables are empty and is kept as they grow: with a generic
    /// plan made on empty tables, each key read must still be an index
    /// lookup per key in its own index, never a filter over a workspace.
    #[test]
    fn on_postgres_the_key_reads_look_each_key_up_in_its_own_index() {
        let Some((_schema, conn)) = pg_generic_planner() else {
            return;
        };
        let db = conn.db();
        let keys = RowSet::new(&db, 1, &["TEXT", "TEXT"], [[V::from("ws_1"), V::from("k")]]);
        let plan = pg_plan(&db, &existing_keys_sql(&db, &keys.table()), keys.params());
        assert!(
            plan.contains("Index Scan using messages_idempotency_key"),
            "{plan}"
        );
        assert!(!plan.contains("messages_by_"), "{plan}");
        let who = RowSet::new(
            &db,
            1,
            &["TEXT", "TEXT", "TEXT"],
            [[V::from("ws_1"), V::from("+14155550123"), V::from("sms")]],
        );
        let plan = pg_plan(&db, &consent_sql(&db, &who.table()), who.params());
        assert!(plan.contains("Index Scan using contacts_pkey"), "{plan}");
        assert!(plan.contains("Nested Loop"), "{plan}");
    }
}

#[cfg(test)]
mod row_type_tests {
    use super::plan_tests::{pg_generic_planner, pg_plan};
    use super::*;

    /// The composite type an accept batch is bound as has the insert's
    /// columns, in its order, with the types the rows are made in and the
    /// `messages` columns' own types and collations; the blind insert's
    /// generic plan looks each recipient up by the contacts' key.
    #[test]
    fn the_message_row_type_is_the_inserts_columns() {
        let Some((_schema, conn)) = pg_generic_planner() else {
            return;
        };
        let db = conn.db();
        let columns: Vec<&str> = MESSAGE_INSERT
            .trim()
            .trim_start_matches("messages (")
            .trim_end_matches(')')
            .split(',')
            .map(str::trim)
            .collect();
        assert_eq!(columns.len(), MESSAGE_INSERT_COLUMNS);
        let fields = |relation: &str| {
            db.query_map(
                "SELECT a.attname, format_type(a.atttypid, NULL), a.attcollation::regcollation::text
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 WHERE c.relname = ?1 AND c.relnamespace = current_schema()::regnamespace
                   AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                p![relation],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)),
            )
            .unwrap()
        };
        let row = fields(MESSAGE_ROW);
        let names: Vec<&str> = row.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, columns);
        let table = fields("messages");
        for ((name, ty, collation), want) in row.iter().zip(MESSAGE_INSERT_TYPES) {
            assert_eq!(ty, &want.to_lowercase(), "{name}");
            let column = table
                .iter()
                .find(|(n, _, _)| n == name)
                .expect("a messages column");
            assert_eq!((ty, collation), (&column.1, &column.2), "{name}");
        }
        let set = RowSet::typed(
            &db,
            1,
            MESSAGE_ROW,
            &MESSAGE_INSERT_TYPES,
            Vec::<Vec<V<'_>>>::new(),
        );
        let (table, count) = (set.table(), set.next_placeholder());
        let mut params = set.into_params();
        params.push(V::Int(0));
        // Alone, and with the acceptance events (`accept_in_one_statement`).
        let sql = blind_insert_sql(&table, count, "");
        let plan = pg_plan(&db, &sql, &params);
        assert!(plan.contains("Index Scan using contacts_pkey"), "{plan}");
        assert!(plan.contains("Function Scan on unnest"), "{plan}");
        let events = [Pending::of(&NewEvent {
            id: "evt_1",
            workspace_id: "ws_1",
            message_id: "msg_1",
            event_type: "message.queued",
            status: "queued",
            detail: None,
            error_code: None,
            at: Timestamp::from_millis(0),
            implied: true,
        })];
        let (items, events_params) = crate::sql::events::pg_items(&db, count + 1, &events);
        params.extend(events_params);
        let sql = blind_insert_sql(&table, count, &items);
        let plan = pg_plan(&db, &sql, &params);
        assert!(plan.contains("Index Scan using contacts_pkey"), "{plan}");
        assert!(plan.contains("Insert on events"), "{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
    }
}
