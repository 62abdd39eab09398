//! Webhook endpoints, the delivery outbox and the attempt log.
//!
//! Fan-out happens in the transaction that records an event: one
//! `webhook_deliveries` row per matching enabled endpoint, so an event that
//! is committed is also committed to be delivered (a restart loses nothing).
//! Deliveries of one message to one endpoint go in event order: a delivery
//! is not claimed while an earlier one of the same message is pending.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;
use std::time::Duration;

use super::db::{Db, Row, RowSet, V, p};
use serde_json::{Value, json};
use switchboard_core::webhook_endpoint::{
    DEFAULT_DISABLE_AFTER, DEFAULT_RETRY_SCHEDULE, DEFAULT_TIMEOUT_MS, EndpointSettings,
};
use switchboard_core::{EventId, EventType, MessageId, Status, Timestamp, WorkspaceId};

use super::messages::{row_number, row_of, update_read};
use super::rows;
use crate::error::StoreError;
use crate::model::*;

fn corrupt(what: &str, v: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {v}"))
}

/// An event to fan out: what a delivery row needs of it.
pub struct Fan<'a> {
    /// Event id.
    pub id: &'a str,
    /// Its workspace.
    pub workspace_id: &'a str,
    /// Its sequence number.
    pub seq: i64,
    /// Its type (`message.queued`).
    pub event_type: &'a str,
    /// Its message, which orders its deliveries; `None` for workspace events.
    pub message_id: Option<&'a str>,
    /// When it was recorded (the deliveries are due then).
    pub at: Timestamp,
}

/// Creates a delivery for each enabled endpoint of the event's workspace
/// that subscribes to its type, for any number of events: one statement per
/// `Db::chunks` run. The events come as parameters, not by joining the
/// `events` table: a cached plan made while that table was small would scan
/// it once it is large.
pub fn fan_out(c: &Db<'_>, events: &[Fan<'_>]) -> Result<(), StoreError> {
    for chunk in c.chunks(events) {
        let set = RowSet::new(
            c,
            1,
            &["TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "BIGINT"],
            chunk.iter().map(|e| {
                [
                    V::from(e.id),
                    V::from(e.workspace_id),
                    V::Int(e.seq),
                    V::from(e.event_type),
                    V::from(&e.message_id),
                    V::Int(e.at.as_millis()),
                ]
            }),
        );
        let sql = set.sql([0; 8], || fan_out_from(c, &set.table()));
        if c.execute(&sql, set.params())? > 0 {
            super::signals::note_deliveries();
        }
    }
    Ok(())
}

/// A delivery of an event to an endpoint known to subscribe to it.
pub(crate) struct NewDelivery<'a> {
    pub endpoint_id: &'a str,
    pub event: Fan<'a>,
}

/// Stores deliveries whose endpoints are already known (SQLite's events,
/// `events::Subscribed`), one insert per `Db::chunks` run: the rows the
/// fan-out statement would make, without its join, and without the SQL
/// function its subscription test calls, which makes SQLite keep a
/// statement journal for a multi-row write (bench/HISTORY.md,
/// "Twenty-fourth session").
pub(crate) fn insert_deliveries(
    c: &Db<'_>,
    deliveries: &[NewDelivery<'_>],
) -> Result<(), StoreError> {
    for chunk in c.chunks(deliveries) {
        let set = RowSet::new(
            c,
            1,
            &["TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "BIGINT"],
            chunk.iter().map(|d| {
                [
                    V::from(d.endpoint_id),
                    V::from(d.event.workspace_id),
                    V::from(d.event.id),
                    V::Int(d.event.seq),
                    V::from(&d.event.message_id),
                    V::Int(d.event.at.as_millis()),
                ]
            }),
        );
        // The id is `{event id}/{endpoint id}`, as the fan-out statement
        // and a redelivery name it (`||` is an operator, not a function).
        let sql = set.sql([0; 8], || {
            format!(
                "{} webhook_deliveries (id, endpoint_id, workspace_id, event_id, event_seq, ordering_key, status, next_attempt_at, created_at, updated_at)
                 SELECT column3 || '/' || column1, column1, column2, column3, column4, column5, 'pending', column6, column6, column6 FROM {}",
                c.insert_into(),
                set.table()
            )
        });
        c.execute(&sql, set.params())?;
    }
    if !deliveries.is_empty() {
        super::signals::note_deliveries();
    }
    Ok(())
}

/// The fan-out statement for the events of `source`, a table expression
/// whose columns `column1` … `column6` are each event's id, workspace,
/// sequence number, type, message and time (a `RowSet`, or on PostgreSQL
/// the events an insert returns, see `events::write`).
pub(crate) fn fan_out_from(c: &Db<'_>, source: &str) -> String {
    // On PostgreSQL each event's endpoints are looked up by its workspace
    // (`OFFSET 0` keeps the lookup a subquery of its own): as a join, the
    // plan made on empty tables walked every live endpoint and compared it
    // with every event of the run, endpoints × events for each run (see
    // `claim_sql` on such ties). SQLite's planner searches the index by
    // workspace either way.
    let endpoints = if c.is_pg() {
        format!(
            "JOIN LATERAL (SELECT w.id, w.event_types FROM webhook_endpoints w WHERE {} OFFSET 0) w ON {}",
            live_of("w", "e.column2"),
            listed(c, "w", "e.column4"),
        )
    } else {
        format!(
            "JOIN webhook_endpoints w ON {}",
            subscribes(c, "w", "e.column2", "e.column4")
        )
    };
    format!(
        "{} webhook_deliveries (id, endpoint_id, workspace_id, event_id, event_seq, ordering_key, status, next_attempt_at, created_at, updated_at)
         SELECT e.column1 || '/' || w.id, w.id, e.column2, e.column1, e.column3, e.column5, 'pending', e.column6, e.column6, e.column6
         FROM {source} e {endpoints}",
        c.insert_into(),
    )
}

/// The condition that endpoint `w` (an alias of `webhook_endpoints`) is an
/// enabled endpoint of workspace `ws` subscribed to events of type `ty`
/// (SQL expressions).
pub(crate) fn subscribes(c: &Db<'_>, w: &str, ws: &str, ty: &str) -> String {
    format!("{} AND {}", live_of(w, ws), listed(c, w, ty))
}

/// The condition that endpoint `w` is an enabled endpoint of workspace `ws`.
fn live_of(w: &str, ws: &str) -> String {
    format!("{w}.workspace_id = {ws} AND {w}.enabled = 1 AND {w}.deleted_at IS NULL")
}

/// The condition that endpoint `w` subscribes to events of type `ty`.
fn listed(c: &Db<'_>, w: &str, ty: &str) -> String {
    // Only the event-type filter differs between the engines. On SQLite the
    // list is searched as text for the quoted name: the lists are written
    // by serde_json from validated names (letters, dots, underscores), so
    // `"message.sent"` matches that element and nothing else, without
    // opening `json_each` for every event and endpoint.
    let listed = if c.is_pg() {
        format!("jsonb_exists({w}.event_types::jsonb, {ty})")
    } else {
        format!("instr({w}.event_types, '\"' || {ty} || '\"') > 0")
    };
    format!("({w}.event_types IS NULL OR {listed})")
}

/// Records an event that is not about a message (`endpoint.disabled`,
/// `webhook.test`, …) with its payload; fans it out if `fan` is set.
pub fn record_workspace_event(
    c: &Db<'_>,
    ws: &str,
    event_type: &str,
    payload: &Value,
    now: Timestamp,
    fan: bool,
) -> Result<(String, i64), StoreError> {
    let id = EventId::new_at(now).to_string();
    let seq: i64 = c.query_row(
        "INSERT INTO events (id, workspace_id, message_id, type, status, payload, created_at) VALUES (?1, ?2, NULL, ?3, '', ?4, ?5) RETURNING seq",
        p![id, ws, event_type, payload.to_string(), now.as_millis()],
        |r| r.get(0),
    )?;
    if fan {
        let fan = Fan {
            id: &id,
            workspace_id: ws,
            seq,
            event_type,
            message_id: None,
            at: now,
        };
        fan_out(c, &[fan])?;
    }
    Ok((id, seq))
}

const ENDPOINT_COLUMNS: &str = "id, workspace_id, url, method, content_type, event_types, headers, description, enabled, disabled_reason, \
     format, template, retry_schedule, timeout_ms, disable_after, consecutive_failures, secret, previous_secret, previous_secret_until, created_at, updated_at";

fn endpoint(r: &Row<'_>) -> Result<EndpointRecord, StoreError> {
    let ws: String = r.get(1)?;
    let types: Option<String> = r.get(5)?;
    let headers: String = r.get(6)?;
    let schedule: String = r.get(12)?;
    Ok(EndpointRecord {
        id: r.get(0)?,
        workspace_id: WorkspaceId::parse(&ws).map_err(|_| corrupt("workspace id", &ws))?,
        url: r.get(2)?,
        method: r.get(3)?,
        content_type: r.get(4)?,
        event_types: types
            .map(|t| serde_json::from_str(&t).map_err(|_| corrupt("event_types", &t)))
            .transpose()?,
        headers: serde_json::from_str(&headers).map_err(|_| corrupt("headers", &headers))?,
        description: r.get(7)?,
        enabled: r.get(8)?,
        disabled_reason: r.get(9)?,
        format: r.get(10)?,
        template: r.get(11)?,
        retry_schedule: serde_json::from_str(&schedule)
            .map_err(|_| corrupt("retry_schedule", &schedule))?,
        timeout_ms: r.get(13)?,
        disable_after: r.get(14)?,
        consecutive_failures: r.get(15)?,
        secret: r.get(16)?,
        previous_secret: r.get(17)?,
        previous_secret_until: r.get::<_, Option<i64>>(18)?.map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(r.get(19)?),
        updated_at: Timestamp::from_millis(r.get(20)?),
    })
}

fn load_endpoint(
    c: &Db<'_>,
    ws: Option<&WorkspaceId>,
    id: &str,
) -> Result<Option<EndpointRecord>, StoreError> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ?1 AND deleted_at IS NULL AND (CAST(?2 AS TEXT) IS NULL OR workspace_id = ?2)"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut found = stmt.query(p![id, ws.map(WorkspaceId::as_str)])?;
    found.next()?.map(|r| endpoint(&r)).transpose()
}

/// Creates an endpoint from validated settings (defaults fill the gaps).
pub fn create_endpoint(
    c: &Db<'_>,
    ws: &WorkspaceId,
    s: &EndpointSettings,
    id: &str,
    secret: &str,
    now: Timestamp,
) -> Result<EndpointRecord, StoreError> {
    let types = s
        .event_types
        .clone()
        .flatten()
        .map(|t| serde_json::to_string(&t).expect("strings"));
    let headers = serde_json::to_string(&s.headers.clone().unwrap_or_default()).expect("strings");
    let schedule = serde_json::to_string(
        &s.retry_schedule
            .clone()
            .unwrap_or(DEFAULT_RETRY_SCHEDULE.to_vec()),
    )
    .expect("numbers");
    c.execute(
        "INSERT INTO webhook_endpoints (id, workspace_id, url, method, content_type, event_types, headers, description, enabled,
            format, template, retry_schedule, timeout_ms, disable_after, secret, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?16)",
        p![
            id,
            ws.as_str(),
            s.url.as_deref().unwrap_or_default(),
            s.method.as_deref().unwrap_or("POST"),
            s.content_type.as_deref().unwrap_or("json"),
            types,
            headers,
            s.description.clone().flatten(),
            s.enabled.unwrap_or(true),
            s.format.as_deref().unwrap_or("standard"),
            s.template.clone().flatten(),
            schedule,
            s.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            s.disable_after.unwrap_or(DEFAULT_DISABLE_AFTER),
            secret,
            now.as_millis()
        ],
    )?;
    load_endpoint(c, Some(ws), id)?.ok_or_else(|| corrupt("endpoint vanished", id))
}

/// The workspace's endpoints, oldest first.
pub fn list_endpoints(c: &Db<'_>, ws: &WorkspaceId) -> Result<Vec<EndpointRecord>, StoreError> {
    let sql = format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE workspace_id = ?1 AND deleted_at IS NULL ORDER BY id"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows_ = stmt.query(p![ws.as_str()])?;
    let mut out = Vec::new();
    while let Some(r) = rows_.next()? {
        out.push(endpoint(&r)?);
    }
    Ok(out)
}

/// One endpoint of the workspace.
pub fn get_endpoint(
    c: &Db<'_>,
    ws: &WorkspaceId,
    id: &str,
) -> Result<Option<EndpointRecord>, StoreError> {
    load_endpoint(c, Some(ws), id)
}

/// Applies a partial update. Re-enabling clears the failure count.
pub fn update_endpoint(
    c: &Db<'_>,
    ws: &WorkspaceId,
    id: &str,
    s: &EndpointSettings,
    now: Timestamp,
) -> Result<Option<EndpointRecord>, StoreError> {
    let Some(mut e) = load_endpoint(c, Some(ws), id)? else {
        return Ok(None);
    };
    if let Some(v) = &s.url {
        e.url = v.clone();
    }
    if let Some(v) = &s.method {
        e.method = v.clone();
    }
    if let Some(v) = &s.content_type {
        e.content_type = v.clone();
    }
    if let Some(v) = &s.event_types {
        e.event_types = v.clone();
    }
    if let Some(v) = &s.headers {
        e.headers = v.clone();
    }
    if let Some(v) = &s.description {
        e.description = v.clone();
    }
    if let Some(v) = &s.format {
        e.format = v.clone();
    }
    if let Some(v) = &s.template {
        e.template = v.clone();
    }
    if let Some(v) = &s.retry_schedule {
        e.retry_schedule = v.clone();
    }
    if let Some(v) = s.timeout_ms {
        e.timeout_ms = v;
    }
    if let Some(v) = s.disable_after {
        e.disable_after = v;
    }
    if let Some(v) = s.enabled {
        if v && !e.enabled {
            e.consecutive_failures = 0;
            e.disabled_reason = None;
        }
        e.enabled = v;
    }
    c.execute(
        "UPDATE webhook_endpoints SET url = ?1, method = ?2, content_type = ?3, event_types = ?4, headers = ?5, description = ?6,
            enabled = ?7, disabled_reason = ?8, format = ?9, template = ?10, retry_schedule = ?11, timeout_ms = ?12,
            disable_after = ?13, consecutive_failures = ?14, updated_at = ?15 WHERE id = ?16",
        p![
            e.url,
            e.method,
            e.content_type,
            e.event_types.as_ref().map(|t| serde_json::to_string(t).expect("strings")),
            serde_json::to_string(&e.headers).expect("strings"),
            e.description,
            e.enabled,
            e.disabled_reason,
            e.format,
            e.template,
            serde_json::to_string(&e.retry_schedule).expect("numbers"),
            e.timeout_ms,
            e.disable_after,
            e.consecutive_failures,
            now.as_millis(),
            id
        ],
    )?;
    load_endpoint(c, Some(ws), id)
}

/// Deletes an endpoint; its pending deliveries are dropped.
pub fn delete_endpoint(
    c: &Db<'_>,
    ws: &WorkspaceId,
    id: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE webhook_endpoints SET deleted_at = ?1, enabled = 0 WHERE id = ?2 AND workspace_id = ?3 AND deleted_at IS NULL",
        p![now.as_millis(), id, ws.as_str()],
    )?;
    c.execute("UPDATE webhook_deliveries SET status = 'canceled' WHERE endpoint_id = ?1 AND status = 'pending'", p![id])?;
    Ok(n > 0)
}

/// Replaces the secret; the old one keeps signing until `grace_until`.
pub fn rotate_secret(
    c: &Db<'_>,
    ws: &WorkspaceId,
    id: &str,
    new_secret: &str,
    grace_until: Timestamp,
    now: Timestamp,
) -> Result<Option<EndpointRecord>, StoreError> {
    let n = c.execute(
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = ?1, secret = ?2, updated_at = ?3
         WHERE id = ?4 AND workspace_id = ?5 AND deleted_at IS NULL",
        p![grace_until.as_millis(), new_secret, now.as_millis(), id, ws.as_str()],
    )?;
    if n == 0 {
        return Ok(None);
    }
    load_endpoint(c, Some(ws), id)
}

/// The columns of `messages` a message event's `data` shows
/// (`MessagePayload`), read by `payload_at`. Only these: the delivery claim
/// reads them for every delivery it leases, and reading the whole record
/// (`rows::MESSAGE_COLUMNS`, with its channel template parsed and its ids
/// checked) was about a sixth of the claim's work per delivery.
const PAYLOAD_COLUMNS: &str = "id, to_phone, from_addr, channel, body, media_urls, encoding, segments, \
     client_ref, metadata, category, priority, provider_id, provider_message_id, created_at";

/// Reads the `PAYLOAD_COLUMNS` of a row that selects them from column `at`
/// on; `None` where they are NULL (a message deleted since its event, on
/// the claim's outer join).
fn payload_at(r: &Row<'_>, at: usize) -> Result<Option<MessagePayload>, StoreError> {
    let Some(id) = r.get::<_, Option<String>>(at)? else {
        return Ok(None);
    };
    Ok(Some(MessagePayload {
        id,
        to: r.get(at + 1)?,
        from: r.get(at + 2)?,
        channel: r.get(at + 3)?,
        body: r.get(at + 4)?,
        media_urls: rows::media_urls(r.get(at + 5)?)?,
        encoding: r.get(at + 6)?,
        segments: r.get(at + 7)?,
        client_ref: r.get(at + 8)?,
        metadata: rows::metadata(r.get(at + 9)?)?,
        category: r.get(at + 10)?,
        priority: r.get(at + 11)?,
        provider_id: r.get(at + 12)?,
        provider_message_id: r.get(at + 13)?,
        created_at: r.get(at + 14)?,
    }))
}

/// An `events` row as a delivery needs it.
struct EventRow {
    ws: String,
    event_type: String,
    message_id: Option<String>,
    status: String,
    detail: Option<String>,
    error_code: Option<String>,
    payload: Option<String>,
    created: i64,
}

const EVENT_COLUMNS: &str =
    "id, workspace_id, type, message_id, status, detail, error_code, payload, created_at";

fn event_row(r: &Row<'_>) -> Result<(String, EventRow), super::db::DbError> {
    event_row_at(r, 0)
}

/// Reads the `EVENT_COLUMNS` of a row that selects them from column `at` on.
fn event_row_at(r: &Row<'_>, at: usize) -> Result<(String, EventRow), super::db::DbError> {
    Ok((
        r.get(at)?,
        EventRow {
            ws: r.get(at + 1)?,
            event_type: r.get(at + 2)?,
            message_id: r.get(at + 3)?,
            status: r.get(at + 4)?,
            detail: r.get(at + 5)?,
            error_code: r.get(at + 6)?,
            payload: r.get(at + 7)?,
            created: r.get(at + 8)?,
        },
    ))
}

/// The event as a delivery carries it: a message event's data is the
/// message (`message`, if it still exists) as of the event, its text left
/// to the deliverer (`EventData::message`).
fn webhook_event(
    id: &str,
    e: EventRow,
    message: Option<MessagePayload>,
) -> Result<WebhookEvent, StoreError> {
    let data = match (&e.message_id, &e.payload) {
        (Some(mid), _) => match message {
            Some(m) => EventData::message(m, e.status, e.error_code, e.detail),
            None => EventData::of(&json!({"object": "message", "id": mid})),
        },
        // A stored payload is checked, and written as a `Value` writes it.
        (None, Some(p)) => EventData::of(
            &serde_json::from_str::<Value>(p).map_err(|_| corrupt("event payload", p))?,
        ),
        (None, None) => EventData::of(&Value::Null),
    };
    Ok(WebhookEvent {
        id: id.to_owned(),
        event_type: e.event_type,
        created_at: Timestamp::from_millis(e.created),
        workspace_id: WorkspaceId::parse(&e.ws).map_err(|_| corrupt("workspace id", &e.ws))?,
        data,
    })
}

/// Loads events with their data: two reads per `Db::chunks` run (the
/// events, then their messages), not two per event. Events not found are
/// left out.
fn load_events(c: &Db<'_>, ids: &[&str]) -> Result<HashMap<String, WebhookEvent>, StoreError> {
    static EVENTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static MESSAGES: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let rows = c.query_ids(
        EVENTS.get_or_init(|| format!("SELECT {EVENT_COLUMNS} FROM events")),
        "",
        ids,
        event_row,
    )?;
    let mut message_ids: Vec<&str> = rows
        .iter()
        .filter_map(|(_, e)| e.message_id.as_deref())
        .collect();
    message_ids.sort_unstable();
    message_ids.dedup();
    let found = c.query_ids(
        MESSAGES.get_or_init(|| format!("SELECT {PAYLOAD_COLUMNS} FROM messages")),
        "",
        &message_ids,
        |r| Ok(payload_at(r, 0)),
    )?;
    let mut messages: HashMap<String, MessagePayload> = HashMap::with_capacity(found.len());
    for m in found {
        if let Some(m) = m? {
            messages.insert(m.id.clone(), m);
        }
    }
    rows.into_iter()
        .map(|(id, e)| {
            let message = e
                .message_id
                .as_deref()
                .and_then(|m| messages.get(m))
                .cloned();
            let event = webhook_event(&id, e, message)?;
            Ok((id, event))
        })
        .collect()
}

/// Loads one event with its data.
fn load_event(c: &Db<'_>, event_id: &str) -> Result<Option<WebhookEvent>, StoreError> {
    Ok(load_events(c, &[event_id])?.remove(event_id))
}

/// The statement of `claim`: due deliveries with their endpoint's health
/// and their row number (`row_number`), their event and its message, in
/// one read (on SQLite the event by its sequence number, the table's
/// rowid; PostgreSQL has no index on it). A
/// delivery whose event is missing still comes back, with NULL event
/// columns, so that it shows as the corruption it is.
///
/// On PostgreSQL every lookup is written so that its plan is one by key
/// even when it is made on empty tables: the writer keeps a statement's
/// generic plan (`SqlStore::WRITER_SESSION`), and a node's first claim
/// runs while the tables are empty. Left to the planner there, each tie
/// between indexes went to one that walks them: the earlier pending
/// delivery was looked for in every pending delivery, once per due row
/// (quadratic: a third of PostgreSQL's time in e2e-pg, 340 buffers read
/// per delivery), and the endpoint among all the endpoints. So:
/// - the endpoint is a lateral lookup by id, whose state is tested outside
///   it, which leaves the primary key the only index that serves it (the
///   index by workspace holds live endpoints only);
/// - the two questions about other pending deliveries are asked in the
///   order of `webhook_deliveries_order` (`ORDER BY … LIMIT 1`, which that
///   index answers without a sort), kept as subplans by `OFFSET 0` (an
///   `EXISTS` without it is flattened, and its order dropped).
///
/// `plan_tests` checks that plan on empty tables.
fn claim_sql(c: &Db<'_>) -> &'static str {
    static LITE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static PG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let pg = c.is_pg();
    let (cell, endpoint, event_join, lock) = if pg {
        (
            &PG,
            "JOIN LATERAL (SELECT w.consecutive_failures, w.enabled, w.deleted_at
                            FROM webhook_endpoints w WHERE w.id = d.endpoint_id LIMIT 1) w ON true",
            "e.id = d.event_id",
            " FOR UPDATE OF d SKIP LOCKED",
        )
    } else {
        (
            &LITE,
            "JOIN webhook_endpoints w ON w.id = d.endpoint_id",
            "e.seq = d.event_seq AND e.id = d.event_id",
            "",
        )
    };
    let in_order = |t: &str| {
        if pg {
            format!(" ORDER BY {t}.endpoint_id, {t}.ordering_key, {t}.event_seq LIMIT 1 OFFSET 0")
        } else {
            String::new()
        }
    };
    cell.get_or_init(|| {
        // Whether a failing endpoint already has an attempt in flight is
        // asked only of failing endpoints: for a healthy one it would scan
        // all its pending deliveries for every row (quadratic in a backlog).
        format!(
            "SELECT d.id, d.endpoint_id, d.attempts, d.trigger, w.consecutive_failures,
                    CASE WHEN w.consecutive_failures > 0
                         THEN EXISTS (SELECT 1 FROM webhook_deliveries f WHERE f.endpoint_id = d.endpoint_id AND f.status = 'pending' AND f.lease_until > ?1{})
                         ELSE 0 = 1 END,
                    {}, {}, {}
             FROM webhook_deliveries d
             {endpoint}
             LEFT JOIN events e ON {event_join}
             LEFT JOIN messages m ON m.id = e.message_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= ?1 AND (d.lease_until IS NULL OR d.lease_until <= ?1)
               AND w.enabled = 1 AND w.deleted_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p
                               WHERE p.endpoint_id = d.endpoint_id AND p.ordering_key = d.ordering_key
                                 AND p.status = 'pending' AND p.event_seq < d.event_seq{})
             ORDER BY d.next_attempt_at, d.event_seq LIMIT ?2{lock}",
            in_order("f"),
            row_number(c, "d"),
            rows::qualified("e", EVENT_COLUMNS),
            rows::qualified("m", PAYLOAD_COLUMNS),
            in_order("p"),
        )
    })
}

/// How many columns `EVENT_COLUMNS` names.
const EVENT_COLUMN_COUNT: usize = 9;

/// Where `claim_sql`'s delivery's row number is (`row_number`), where
/// its event columns begin, and its message columns.
const CLAIM_ROW_AT: usize = 6;
const CLAIM_EVENT_AT: usize = CLAIM_ROW_AT + 1;
const CLAIM_MESSAGE_AT: usize = CLAIM_EVENT_AT + EVENT_COLUMN_COUNT;

/// Claims due deliveries of enabled endpoints, in per-message order. An
/// endpoint that is failing gets one attempt at a time (a probe), so a burst
/// does not pile up attempts past its `disable_after`; a healthy endpoint
/// gets as many at once as are due. One read (`claim_sql`) finds them with
/// their events and messages (and on SQLite their row numbers), and one
/// update per `Db::chunks` run leases them.
pub fn claim(
    c: &Db<'_>,
    now: Timestamp,
    limit: usize,
    lease: Duration,
) -> Result<Vec<WebhookJob>, StoreError> {
    struct Due {
        id: String,
        endpoint_id: String,
        attempts: u32,
        trigger: String,
        failures: u32,
        in_flight: bool,
        /// Its row number on SQLite (`row_number`), none on PostgreSQL.
        row: Option<i64>,
        /// The same event as the row before: a fan-out's deliveries of one
        /// event come one after another (`ORDER BY d.next_attempt_at,
        /// d.event_seq`), and share one read of it and one `EventData`.
        /// Then `event` and `message` are not read.
        as_before: bool,
        /// The event's row (NULL columns: a missing event, a corruption).
        event: Option<(String, EventRow)>,
        /// Its message's (NULL: deleted since the event).
        message: Option<MessagePayload>,
    }
    let mut last_event: Option<String> = None;
    let rows_: Vec<Result<Due, StoreError>> = c
        .prepare_cached(claim_sql(c))?
        .query_map(
            p![now.as_millis(), i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                // A missing event has NULL columns here.
                let event_id = r.get::<_, Option<String>>(CLAIM_EVENT_AT)?;
                let (as_before, event, message) = match event_id {
                    Some(id) if last_event.as_deref() == Some(id.as_str()) => (true, None, None),
                    Some(id) => {
                        last_event = Some(id);
                        // A message deleted since its event has NULL
                        // columns here.
                        match payload_at(r, CLAIM_MESSAGE_AT) {
                            Ok(m) => (false, Some(event_row_at(r, CLAIM_EVENT_AT)?), m),
                            Err(e) => return Ok(Err(e)),
                        }
                    }
                    None => {
                        last_event = None;
                        (false, None, None)
                    }
                };
                Ok(Ok(Due {
                    id: r.get(0)?,
                    endpoint_id: r.get(1)?,
                    attempts: r.get(2)?,
                    trigger: r.get(3)?,
                    failures: r.get(4)?,
                    in_flight: r.get(5)?,
                    row: r.get(CLAIM_ROW_AT)?,
                    as_before,
                    event,
                    message,
                }))
            },
        )?
        .collect::<Result<_, _>>()?;
    // Each row's event, made before the failing endpoints' rows are left
    // out: a row left out may hold the event the next one shares.
    let mut probing: HashSet<String> = HashSet::new();
    let mut due = Vec::with_capacity(rows_.len());
    // Their row numbers, in the same order (SQLite).
    let mut rows: Vec<i64> = Vec::with_capacity(rows_.len());
    let mut last: Option<WebhookEvent> = None;
    for d in rows_ {
        let d = d?;
        let event = if d.as_before {
            last.clone()
                .ok_or_else(|| corrupt("event of delivery", &d.id))?
        } else {
            let (event_id, row) = d.event.ok_or_else(|| corrupt("event of delivery", &d.id))?;
            let event = webhook_event(&event_id, row, d.message)?;
            last = Some(event.clone());
            event
        };
        if d.failures > 0 && (d.in_flight || !probing.insert(d.endpoint_id.clone())) {
            continue;
        }
        if !c.is_pg() {
            rows.push(row_of("webhook delivery", &d.id, d.row)?);
        }
        due.push((d.id, d.endpoint_id, d.attempts, d.trigger, event));
    }
    // The lease: on SQLite by the row numbers the read above found (one
    // search of the table instead of the index on the text id first), by
    // id on PostgreSQL (`update_read`).
    const LEASE: &str = "lease_until = ?1, attempts = attempts + 1, updated_at = ?2";
    let leading = [V::Int(now.plus(lease).as_millis()), V::Int(now.as_millis())];
    let ids = due.iter().map(|d| d.0.as_str());
    update_read(c, "webhook_deliveries", LEASE, &leading, ids, &rows)?;
    // Each endpoint read once and shared by its jobs.
    let mut endpoints: HashMap<String, Arc<EndpointRecord>> = HashMap::new();
    let mut jobs = Vec::with_capacity(due.len());
    for (delivery_id, endpoint_id, attempts, trigger, event) in due {
        let endpoint = match endpoints.get(&endpoint_id) {
            Some(e) => Arc::clone(e),
            None => {
                let e = Arc::new(
                    load_endpoint(c, None, &endpoint_id)?
                        .ok_or_else(|| corrupt("endpoint", &endpoint_id))?,
                );
                endpoints.insert(endpoint_id, Arc::clone(&e));
                e
            }
        };
        jobs.push(WebhookJob {
            delivery_id,
            attempt: attempts + 1,
            trigger,
            endpoint,
            event,
        });
    }
    Ok(jobs)
}

const WEBHOOK_ATTEMPT_INSERT: &str = "webhook_attempts (id, endpoint_id, delivery_id, event_id, attempt, trigger, status_code, error, response_body, duration_ms, created_at) ";

/// Logs webhook attempts: one insert per `Db::chunks` run.
fn log_webhook_attempts(c: &Db<'_>, reports: &[WebhookAttemptReport]) -> Result<(), StoreError> {
    for chunk in c.chunks(reports) {
        let set = RowSet::new(
            c,
            1,
            &[
                "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "TEXT", "BIGINT", "TEXT", "TEXT",
                "BIGINT", "BIGINT",
            ],
            chunk.iter().map(|r| {
                [
                    V::from(format!(
                        "wha_{}",
                        &EventId::new_at(r.finished_at).as_str()[4..]
                    )),
                    V::from(r.endpoint_id.as_str()),
                    V::from(r.delivery_id.as_str()),
                    V::from(r.event_id.as_str()),
                    V::Int(i64::from(r.attempt)),
                    V::from(r.trigger.as_str()),
                    r.status_code.map_or(V::Null, |s| V::Int(i64::from(s))),
                    V::from(&r.error),
                    V::from(&r.response_body),
                    V::Int(r.duration_ms),
                    V::Int(r.finished_at.as_millis()),
                ]
            }),
        );
        let sql = set.sql([0; 8], || {
            format!(
                "{} {WEBHOOK_ATTEMPT_INSERT}{}",
                c.insert_into(),
                set.values()
            )
        });
        c.execute(&sql, set.params())?;
    }
    Ok(())
}

/// `complete` for many reports. When every one is a success, each for a
/// different delivery (the common case: a delivery is leased to one
/// attempt at a time), the attempts are logged with one insert, the
/// deliveries marked `succeeded` with one update and the endpoints'
/// failure counts reset with another (per `Db::chunks` run), instead of
/// three statements per report: all successes, whatever their order, leave
/// the same state. Otherwise each report goes through `complete` in order,
/// since a failure's effect on its endpoint depends on what came before.
pub fn complete_all(c: &Db<'_>, reports: &[WebhookAttemptReport]) -> Result<Vec<()>, StoreError> {
    let mut seen = HashSet::with_capacity(reports.len());
    let together = reports
        .iter()
        .all(|r| r.outcome == WebhookOutcome::Succeeded && seen.insert(r.delivery_id.as_str()));
    if !together {
        return reports.iter().map(|r| complete(c, r)).collect();
    }
    log_webhook_attempts(c, reports)?;
    c.update_from(
        "id",
        (
            "webhook_deliveries",
            "status = 'succeeded', lease_until = NULL, updated_at = v.column2",
            " AND webhook_deliveries.status = 'pending'",
        ),
        &["TEXT", "BIGINT"],
        reports,
        |r| {
            [
                V::from(r.delivery_id.as_str()),
                V::Int(r.finished_at.as_millis()),
            ]
        },
    )?;
    // A test send says nothing about the endpoint's health.
    let mut endpoints: Vec<&str> = reports
        .iter()
        .filter(|r| r.trigger != "test")
        .map(|r| r.endpoint_id.as_str())
        .collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    // Only where there is something to reset (see `complete`).
    c.update_ids(
        "webhook_endpoints",
        "consecutive_failures = 0",
        " AND consecutive_failures <> 0",
        &[],
        &endpoints,
    )?;
    Ok(vec![(); reports.len()])
}

/// Logs an attempt and applies its outcome to the delivery and endpoint.
pub fn complete(c: &Db<'_>, r: &WebhookAttemptReport) -> Result<(), StoreError> {
    log_webhook_attempts(c, std::slice::from_ref(r))?;
    let now = r.finished_at.as_millis();
    let (status, next) = match r.outcome {
        WebhookOutcome::Succeeded => ("succeeded", None),
        WebhookOutcome::RetryAt(t) => ("pending", Some(t.as_millis())),
        WebhookOutcome::GaveUp | WebhookOutcome::Gone => ("failed", None),
    };
    c.prepare_cached(
        "UPDATE webhook_deliveries SET status = ?1, next_attempt_at = COALESCE(?2, next_attempt_at), lease_until = NULL, updated_at = ?3
         WHERE id = ?4 AND status = 'pending'",
    )?
    .execute(p![status, next, now, r.delivery_id])?;
    // A test send says nothing about the endpoint's health.
    if r.trigger == "test" {
        return Ok(());
    }
    if r.outcome == WebhookOutcome::Succeeded {
        // Only when there is something to reset: a success must not lock
        // the endpoint row (every node's deliveries would queue behind it).
        c.prepare_cached("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = ?1 AND consecutive_failures <> 0")?
            .execute(p![&r.endpoint_id])?;
        return Ok(());
    }
    c.prepare_cached("UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 WHERE id = ?1")?.execute(p![&r.endpoint_id])?;
    let Some(e) = load_endpoint(c, None, &r.endpoint_id)? else {
        return Ok(());
    };
    let reason = if r.outcome == WebhookOutcome::Gone {
        Some("the endpoint answered 410 Gone".to_owned())
    } else if e.enabled && e.consecutive_failures >= e.disable_after {
        Some(format!(
            "{} consecutive failed attempts",
            e.consecutive_failures
        ))
    } else {
        None
    };
    if let (Some(reason), true) = (reason, e.enabled) {
        c.execute(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = ?1, updated_at = ?2 WHERE id = ?3",
            p![reason, now, e.id],
        )?;
        let payload = json!({"object": "webhook_endpoint", "id": e.id, "url": e.url, "reason": reason, "consecutive_failures": e.consecutive_failures});
        record_workspace_event(
            c,
            e.workspace_id.as_str(),
            "endpoint.disabled",
            &payload,
            r.finished_at,
            true,
        )?;
    }
    Ok(())
}

/// The attempt log of an endpoint, newest first.
pub fn attempts(
    c: &Db<'_>,
    ws: &WorkspaceId,
    endpoint_id: &str,
    limit: usize,
) -> Result<Option<Vec<WebhookAttemptRecord>>, StoreError> {
    if load_endpoint(c, Some(ws), endpoint_id)?.is_none() {
        return Ok(None);
    }
    // Insertion order (`seq`) breaks ties within a millisecond.
    let sql = "SELECT id, delivery_id, event_id, attempt, trigger, status_code, error, response_body, duration_ms, created_at
         FROM webhook_attempts WHERE endpoint_id = ?1 ORDER BY created_at DESC, seq DESC LIMIT ?2";
    let list = c
        .prepare_cached(sql)?
        .query_map(p![endpoint_id, i64::try_from(limit).unwrap_or(100)], |r| {
            Ok(WebhookAttemptRecord {
                id: r.get(0)?,
                delivery_id: r.get(1)?,
                event_id: r.get(2)?,
                attempt: r.get(3)?,
                trigger: r.get(4)?,
                status_code: r.get(5)?,
                error: r.get(6)?,
                response_body: r.get(7)?,
                duration_ms: r.get(8)?,
                created_at: Timestamp::from_millis(r.get(9)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(list))
}

/// Queues events again for one endpoint (manual trigger). Returns how many,
/// or `None` if the endpoint does not exist.
pub fn redeliver(
    c: &Db<'_>,
    ws: &WorkspaceId,
    endpoint_id: &str,
    what: &Redelivery,
    now: Timestamp,
) -> Result<Option<usize>, StoreError> {
    let Some(e) = load_endpoint(c, Some(ws), endpoint_id)? else {
        return Ok(None);
    };
    let queued = EventType::Queued.as_str();
    if matches!(what, Redelivery::Event(_))
        || e.event_types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| t == queued))
    {
        store_implied_acceptances(c, ws, what)?;
    }
    let events: Vec<(String, i64, String, Option<String>)> = match what {
        Redelivery::Event(id) => c
            .prepare_cached(
                "SELECT id, seq, type, message_id FROM events WHERE id = ?1 AND workspace_id = ?2",
            )?
            .query_map(p![id, ws.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?,
        Redelivery::Range { since, until } => c
            .prepare_cached(EVENTS_IN_RANGE)?
            .query_map(&id_range(ws, EventId::floor_at, *since, *until), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?,
    };
    // A single event named explicitly is sent even if the filter would skip it.
    let events: Vec<_> = events
        .into_iter()
        .filter(|(_, _, event_type, _)| {
            matches!(what, Redelivery::Event(_))
                || e.event_types
                    .as_ref()
                    .is_none_or(|t| t.contains(event_type))
        })
        .collect();
    // One statement per `Db::chunks` run, not one per event: on PostgreSQL
    // each statement is a round trip, and a range of 10,000 events held
    // the writer for as many.
    let mut n = 0;
    for chunk in c.chunks(&events) {
        let set = RowSet::new(
            c,
            4,
            &["TEXT", "BIGINT", "TEXT"],
            chunk.iter().map(|(event_id, seq, _, message_id)| {
                [V::from(event_id), V::Int(*seq), V::from(message_id)]
            }),
        );
        // `WHERE true`: SQLite's upsert after `INSERT … SELECT` needs a
        // `WHERE` to parse.
        let sql = format!(
            "INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_id, event_seq, ordering_key, status, trigger, next_attempt_at, created_at, updated_at)
             SELECT column1 || '/' || CAST(?1 AS TEXT), CAST(?1 AS TEXT), CAST(?2 AS TEXT), column1, column2, column3,
                    'pending', 'manual', CAST(?3 AS BIGINT), CAST(?3 AS BIGINT), CAST(?3 AS BIGINT)
             FROM {} AS v WHERE true
             ON CONFLICT (id) DO UPDATE SET status = 'pending', trigger = 'manual', next_attempt_at = excluded.next_attempt_at,
                 lease_until = NULL, updated_at = excluded.updated_at",
            set.table()
        );
        let mut params = vec![
            V::from(endpoint_id),
            V::from(ws.as_str()),
            V::Int(now.as_millis()),
        ];
        params.extend_from_slice(set.params());
        n += c.execute(&sql, &params)?;
    }
    if n > 0 {
        super::signals::note_deliveries();
    }
    Ok(Some(n))
}

/// Workspace `ws`'s time range as the parameters `?1` to `?5` of a read
/// by id: the workspace, the lowest ids made at `since` and at `until`
/// (`floor`, an id type's `floor_at`; ids carry the millisecond they were
/// made), and the two times.
fn id_range(
    ws: &WorkspaceId,
    floor: fn(Timestamp) -> String,
    since: Timestamp,
    until: Timestamp,
) -> [V<'_>; 5] {
    [
        V::from(ws.as_str()),
        V::from(floor(since)),
        V::from(floor(until)),
        V::Int(since.as_millis()),
        V::Int(until.as_millis()),
    ]
}

/// The events of workspace `?1` made in a time range, for a redelivery:
/// `?4 <= created_at < ?5`, found as the range of their ids (`?2`, `?3`:
/// `EventId::floor_at` of each end; an event's id carries the millisecond
/// it was made, its `created_at`), so that both engines read the range
/// from the ids' unique index instead of every event of every workspace
/// (no index has the events' time).
const EVENTS_IN_RANGE: &str = "SELECT id, seq, type, message_id FROM events
     WHERE workspace_id = ?1 AND id >= ?2 AND id < ?3 AND created_at >= ?4 AND created_at < ?5
     ORDER BY seq LIMIT 10000";

/// Stores the acceptance events that `what` names but that were left to
/// their messages' rows (`implied_accept`: no endpoint subscribed to them
/// then), so that they can be delivered now. They are stored with the next
/// sequence numbers: after the other events of their messages, where a
/// redelivery of a whole range sends them.
fn store_implied_acceptances(
    c: &Db<'_>,
    ws: &WorkspaceId,
    what: &Redelivery,
) -> Result<usize, StoreError> {
    // `'evt_' || substr(m.id, 5)` is `EventId::of_acceptance`. Another
    // node storing the same event in the same moment is not an error.
    let insert = |which: &str, params: &[V<'_>]| -> Result<usize, StoreError> {
        let sql = format!(
            "INSERT INTO events (id, workspace_id, message_id, type, status, detail, error_code, created_at)
             SELECT 'evt_' || substr(m.id, 5), m.workspace_id, m.id, '{}', '{}', '{}', NULL, m.created_at
             FROM messages m
             WHERE m.workspace_id = ?1 AND {which} AND m.implied_accept = 1
               AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = 'evt_' || substr(m.id, 5))
             ORDER BY m.id LIMIT 10000
             ON CONFLICT (id) DO NOTHING",
            EventType::Queued.as_str(),
            Status::Queued.as_str(),
            super::messages::ACCEPTED,
        );
        Ok(c.execute(&sql, params)?)
    };
    match what {
        Redelivery::Event(id) => {
            let Some(m) = EventId::parse(id).ok().and_then(|e| e.accepted_message()) else {
                return Ok(0);
            };
            insert("m.id = ?2", p![ws.as_str(), m.as_str()])
        }
        Redelivery::Range { since, until } => insert(
            "m.id >= ?2 AND m.id < ?3 AND m.created_at >= ?4 AND m.created_at < ?5",
            &id_range(ws, MessageId::floor_at, *since, *until),
        ),
    }
}

/// Records a `webhook.test` event for one endpoint and claims its delivery
/// for the caller, who makes the attempt at once.
pub fn test_job(
    c: &Db<'_>,
    ws: &WorkspaceId,
    endpoint_id: &str,
    now: Timestamp,
) -> Result<Option<WebhookJob>, StoreError> {
    let Some(endpoint) = load_endpoint(c, Some(ws), endpoint_id)? else {
        return Ok(None);
    };
    let payload = json!({"object": "webhook_test", "endpoint_id": endpoint_id, "message": "This is a test event from Switchboard."});
    let (event_id, seq) =
        record_workspace_event(c, ws.as_str(), "webhook.test", &payload, now, false)?;
    let delivery_id = format!("{event_id}/{endpoint_id}");
    c.execute(
        "INSERT INTO webhook_deliveries (id, endpoint_id, workspace_id, event_id, event_seq, status, trigger, attempts, next_attempt_at, lease_until, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 'test', 1, ?6, ?7, ?6, ?6)",
        p![delivery_id, endpoint_id, ws.as_str(), event_id, seq, now.as_millis(), now.plus(Duration::from_secs(3600)).as_millis()],
    )?;
    let event = load_event(c, &event_id)?.ok_or_else(|| corrupt("event", &event_id))?;
    Ok(Some(WebhookJob {
        delivery_id,
        attempt: 1,
        trigger: "test".into(),
        endpoint: Arc::new(endpoint),
        event,
    }))
}

/// The earliest time after `now` at which a pending delivery may become
/// claimable: its next attempt's time, or the end of the lease of one in
/// flight. Asked when a claim found nothing due, so what is due by `now`
/// is waiting for an earlier delivery of its message (which frees it when
/// it finishes, or its lease ends) and is left out. It may be early (a
/// retry queued behind another delivery, an endpoint disabled since),
/// never late, and is one lookup in the due index plus a look at the
/// leases, not a test of every pending delivery's predecessors (25–90 ms
/// with a few thousand pending on PostgreSQL).
pub fn next_due_at(c: &Db<'_>, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
    let t: Option<i64> = c.query_row(
        "SELECT MIN(t) FROM (
            SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at > ?1
            UNION ALL SELECT MIN(lease_until) FROM webhook_deliveries WHERE status = 'pending' AND lease_until > ?1) AS due",
        p![now.as_millis()],
        |r| r.get(0),
    )?;
    Ok(t.map(Timestamp::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_column_count_counts_the_columns() {
        assert_eq!(EVENT_COLUMNS.split(',').count(), EVENT_COLUMN_COUNT);
    }

    /// The message object as a `Value`, as the data was built before it
    /// was written straight from the row: the reference for its text.
    fn as_value(
        m: &MessagePayload,
        status: &str,
        error_code: Option<&str>,
        detail: Option<&str>,
    ) -> Value {
        json!({
            "object": "message",
            "id": m.id,
            "to": m.to,
            "from": m.from,
            "channel": m.channel,
            "body": m.body,
            "media_urls": m.media_urls,
            "status": status,
            "encoding": m.encoding,
            "segments": m.segments,
            "client_ref": m.client_ref,
            "metadata": m.metadata,
            "category": m.category,
            "priority": if m.priority > 0 { "high" } else { "normal" },
            "provider_id": m.provider_id,
            "provider_message_id": m.provider_message_id,
            "error_code": error_code,
            "detail": detail,
            "created_at": Timestamp::from_millis(m.created_at).to_rfc3339(),
        })
    }

    #[test]
    fn a_message_events_data_is_the_text_its_value_writes() {
        let full = MessagePayload {
            id: "msg_01JD0000000000000000000000".into(),
            to: "+14155550123".into(),
            from: Some("Switchboard \"HQ\"".into()),
            channel: "whatsapp".into(),
            body: "Quote \" backslash \\ newline \n tab \t ✓ 🎉 \u{1}".into(),
            media_urls: vec![
                "https://example.com/a.png?x=1&y=2".into(),
                "https://example.com/\"b\"\\c.png".into(),
            ],
            encoding: "UCS-2".into(),
            segments: 3,
            client_ref: Some("crm-77".into()),
            metadata: Some(
                json!({"z": 1, "a": [true, null, 2.5, -0.0, 1e300], "nested": {"k": "v", "b": {}}})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
            category: "marketing".into(),
            priority: 1,
            provider_id: Some("pr_sim".into()),
            provider_message_id: Some("SM123".into()),
            created_at: 1_764_800_000_123,
        };
        let bare = MessagePayload {
            from: None,
            media_urls: Vec::new(),
            client_ref: None,
            metadata: None,
            priority: 0,
            provider_id: None,
            provider_message_id: None,
            ..full.clone()
        };
        // Every text field with what JSON escapes in it.
        let odd = |s: &str| format!("{s} \" \\ \n \u{0} \u{1f} \u{7f} / é 🎉");
        let hostile = MessagePayload {
            id: odd("msg"),
            to: odd("+1"),
            from: Some(odd("from")),
            channel: odd("sms"),
            media_urls: vec![odd("u1"), String::new(), odd("u3")],
            encoding: odd("GSM-7"),
            segments: -1,
            client_ref: Some(odd("ref")),
            category: odd("transactional"),
            provider_id: Some(odd("pr")),
            provider_message_id: Some(odd("pm")),
            created_at: 0,
            ..full.clone()
        };
        let hostile_status = odd("sent");
        for (m, status, code, detail) in [
            (
                &hostile,
                hostile_status.as_str(),
                Some("\"code\""),
                Some("tab\tand\r"),
            ),
            (
                &full,
                "failed",
                Some("invalid_number"),
                Some("the carrier said no"),
            ),
            (&bare, "queued", None, None),
        ] {
            let text = EventData::message(
                m.clone(),
                status.to_owned(),
                code.map(str::to_owned),
                detail.map(str::to_owned),
            );
            assert_eq!(text.json(), as_value(m, status, code, detail).to_string());
            assert_eq!(text.value(), as_value(m, status, code, detail));
        }
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;
    use crate::sql::SqlStore;
    use crate::sql::db::Conn;
    use crate::sql::events::{NewEvent, Pending, pg_items};
    use crate::sql::messages::plan_tests::{
        pg_generic_planner, pg_plan, sqlite_migrated, sqlite_plan,
    };
    use crate::sql::scratch::ScratchSchema;

    /// `pg_generic_planner` in the writer's session, which runs these
    /// statements (`SqlStore::WRITER_SESSION`).
    fn writer_planner() -> Option<(ScratchSchema, Conn)> {
        let (schema, conn) = pg_generic_planner()?;
        conn.db().execute_batch(SqlStore::WRITER_SESSION).unwrap();
        Some((schema, conn))
    }

    /// The step of `plan` that reads `index` as `alias`, with the lines
    /// under it (its conditions), up to the next step.
    fn step<'p>(plan: &'p str, index: &str, alias: &str) -> Vec<&'p str> {
        let mut lines = plan.lines();
        let head = format!("using {index} on ");
        lines
            .by_ref()
            .find(|l| l.contains(&head) && l.contains(&format!(" {alias}  (")))
            .unwrap_or_else(|| panic!("no step reads {index} as {alias}: {plan}"));
        lines
            .take_while(|l| !l.trim_start().starts_with("->"))
            .collect()
    }

    /// The claim's generic plan, made on empty tables in the writer's
    /// session as a node's first claim makes it, finds everything it joins
    /// or asks about by key: the due deliveries in the due index's order,
    /// each one's earlier pending delivery by endpoint, ordering key and
    /// sequence, its endpoint by id, and a failing endpoint's attempts in
    /// flight by endpoint. Left to ties between indexes (before), the
    /// first and last walked every pending delivery and the endpoint every
    /// endpoint, for each due row.
    #[test]
    fn on_postgres_the_claim_finds_each_rows_neighbours_by_key_on_empty_tables() {
        let Some((_schema, conn)) = writer_planner() else {
            return;
        };
        let db = conn.db();
        let plan = pg_plan(&db, claim_sql(&db), &[V::Int(0), V::Int(100)]);
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
        let due = step(&plan, "webhook_deliveries_due", "d").join("\n");
        assert!(due.contains("Index Cond: (next_attempt_at <= "), "{plan}");
        let earlier = step(&plan, "webhook_deliveries_order", "p").join("\n");
        assert!(
            earlier.contains(
                "Index Cond: ((endpoint_id = d.endpoint_id) AND (ordering_key = d.ordering_key) AND (event_seq < d.event_seq))"
            ),
            "{plan}"
        );
        let endpoint = step(&plan, "webhook_endpoints_pkey", "w_1").join("\n");
        assert!(
            endpoint.contains("Index Cond: (id = d.endpoint_id)"),
            "{plan}"
        );
        let in_flight = step(&plan, "webhook_deliveries_order", "f").join("\n");
        assert!(
            in_flight.contains("Index Cond: (endpoint_id = d.endpoint_id)"),
            "{plan}"
        );
        assert!(!plan.contains("webhook_endpoints_by_workspace"), "{plan}");
    }

    /// Three events of one workspace's messages, as a batch records them.
    fn events() -> Vec<Pending> {
        let ids: Vec<String> = (0..3).map(|n| format!("evt_{n:026}")).collect();
        ids.iter()
            .map(|id| {
                Pending::of(&NewEvent {
                    id,
                    workspace_id: "ws_1",
                    message_id: "msg_1",
                    event_type: "message.sent",
                    status: "sent",
                    detail: None,
                    error_code: None,
                    at: Timestamp::from_millis(1_000),
                    implied: false,
                })
            })
            .collect()
    }

    /// The rows `fan_out` binds, for one event.
    fn fans<'a>(db: &Db<'_>) -> RowSet<'a> {
        RowSet::new(
            db,
            1,
            &["TEXT", "TEXT", "BIGINT", "TEXT", "TEXT", "BIGINT"],
            [[
                V::from("evt_1"),
                V::from("ws_1"),
                V::Int(1),
                V::from("message.sent"),
                V::from("msg_1"),
                V::Int(1_000),
            ]],
        )
    }

    /// The fan-out's generic plans on PostgreSQL, made on empty tables in
    /// the writer's session, look each event's endpoints up by its
    /// workspace, alone (`fan_out`) and inside the insert of a batch's
    /// events (`events::pg_items`). As a join they walked every live
    /// endpoint, with every event of the run compared against each.
    #[test]
    fn on_postgres_the_fan_out_finds_each_events_endpoints_by_workspace_on_empty_tables() {
        let Some((_schema, conn)) = writer_planner() else {
            return;
        };
        let db = conn.db();
        let run = events();
        let (items, params) = pg_items(&db, 1, &run);
        let in_insert = pg_plan(&db, &format!("WITH {items} SELECT 1 FROM ev"), &params);
        let set = fans(&db);
        let alone = pg_plan(&db, &fan_out_from(&db, &set.table()), set.params());
        for (plan, event) in [(in_insert, "e"), (alone, "u")] {
            let lookup = step(&plan, "webhook_endpoints_by_workspace", "w_1").join("\n");
            assert!(
                lookup.contains(&format!("Index Cond: (workspace_id = {event}.column2)")),
                "{plan}"
            );
            assert!(!plan.contains("Join Filter"), "{plan}");
            assert!(!plan.contains("Seq Scan"), "{plan}");
        }
    }

    /// The writer's session compiles no plan with JIT, even one whose
    /// sequential scan it prices at 10^10 (`enable_seqscan = off`), which
    /// crosses `jit_above_cost` however small the table.
    #[test]
    fn on_postgres_the_writers_session_compiles_no_plan() {
        let Some((_schema, conn)) = writer_planner() else {
            return;
        };
        let db = conn.db();
        // A row to evaluate the filter on: JIT compiles when it first runs.
        db.execute_batch("CREATE TEMPORARY TABLE one_row AS SELECT 1 AS x")
            .unwrap();
        let plan = db
            .query_map(
                "EXPLAIN ANALYZE SELECT count(*) FROM one_row WHERE x >= ?1",
                &[V::Int(0)],
                |r| r.get::<_, String>(0),
            )
            .unwrap()
            .join("\n");
        assert!(plan.contains("Seq Scan on one_row"), "{plan}");
        assert!(!plan.contains("JIT"), "{plan}");
    }

    /// A redelivery's range of events is read from the ids' unique index,
    /// on both engines: not a scan of every event of every workspace (on
    /// PostgreSQL a sequential scan the writer's session prices so high
    /// that the server compiled it with JIT, 50–110 ms a call).
    #[test]
    fn a_range_of_events_is_read_from_the_ids_index() {
        let params = [
            V::from("ws_1"),
            V::from("evt_0"),
            V::from("evt_9"),
            V::Int(0),
            V::Int(1),
        ];
        if let Some((_schema, conn)) = writer_planner() {
            let plan = pg_plan(&conn.db(), EVENTS_IN_RANGE, &params);
            let lookup = step(&plan, "events_id_key", "events").join("\n");
            assert!(
                lookup.contains("Index Cond: ((id >= ") && lookup.contains("(id < "),
                "{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{plan}");
        }
        let (_dir, lite) = sqlite_migrated();
        let plan = sqlite_plan(&lite, EVENTS_IN_RANGE);
        assert!(
            plan.iter()
                .any(|l| l.contains("SEARCH events USING INDEX") && l.contains("(id>? AND id<?)")),
            "{plan:?}"
        );
    }

    /// SQLite's plan of the same statement searches the index by
    /// workspace for each event.
    #[test]
    fn on_sqlite_the_fan_out_finds_each_events_endpoints_by_workspace() {
        let (_dir, lite) = sqlite_migrated();
        let conn = Conn::Lite(lite);
        let db = conn.db();
        let set = fans(&db);
        let sql = fan_out_from(&db, &set.table());
        let Conn::Lite(lite) = &conn else {
            unreachable!()
        };
        let plan = sqlite_plan(lite, &sql);
        assert!(
            plan.iter().any(|l| l
                .contains("SEARCH w USING INDEX webhook_endpoints_by_workspace (workspace_id=?)")),
            "{plan:?}"
        );
    }
}
