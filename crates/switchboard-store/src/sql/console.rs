//! The operator console: sign-in sessions, and the read-only aggregates its
//! overview and conversation pages show.

use super::db::{Db, OptionalExt, Row, p};
use switchboard_core::{AttemptId, EventId, MessageId, Status, Timestamp, WorkspaceId};

use crate::error::StoreError;
use crate::model::{ConsoleSession, ConversationSummary, ProviderHealth, WorkspaceStats};

use super::rows;

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

pub fn create_session(c: &Db<'_>, s: &ConsoleSession) -> Result<(), StoreError> {
    // Sessions past their end are forgotten whenever one is made.
    c.execute(
        "DELETE FROM console_sessions WHERE expires_at < ?1",
        p![s.created_at.as_millis()],
    )?;
    c.execute(
        "INSERT INTO console_sessions (id_hash, workspace_id, key_id, csrf_token, created_at, last_seen_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        p![
            s.id_hash.as_str(),
            s.workspace_id.as_ref().map(WorkspaceId::as_str),
            s.key_id.as_deref(),
            s.csrf_token.as_str(),
            s.created_at.as_millis(),
            s.last_seen_at.as_millis(),
            s.expires_at.as_millis()
        ],
    )?;
    Ok(())
}

/// A live session: not past its end, and signed in with a key that is not
/// revoked (or as the admin).
pub fn find_session(
    c: &Db<'_>,
    id_hash: &str,
    now: Timestamp,
) -> Result<Option<ConsoleSession>, StoreError> {
    let row = c
        .query_row(
            "SELECT s.id_hash, s.workspace_id, s.key_id, s.csrf_token, s.created_at, s.last_seen_at, s.expires_at
             FROM console_sessions s
             WHERE s.id_hash = ?1 AND s.expires_at > ?2
               AND (s.key_id IS NULL OR EXISTS (
                   SELECT 1 FROM api_keys k WHERE k.id = s.key_id AND k.revoked_at IS NULL))",
            p![id_hash, now.as_millis()],
            |r: &Row<'_>| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            },
        )
        .optional()?;
    let Some((id_hash, ws, key_id, csrf_token, created, seen, expires)) = row else {
        return Ok(None);
    };
    let workspace_id = ws
        .map(|w| WorkspaceId::parse(&w).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()?;
    Ok(Some(ConsoleSession {
        id_hash,
        workspace_id,
        key_id,
        csrf_token,
        created_at: Timestamp::from_millis(created),
        last_seen_at: Timestamp::from_millis(seen),
        expires_at: Timestamp::from_millis(expires),
    }))
}

pub fn touch_session(
    c: &Db<'_>,
    id_hash: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE console_sessions SET last_seen_at = ?2, expires_at = ?3 WHERE id_hash = ?1",
        p![id_hash, now.as_millis(), expires_at.as_millis()],
    )?;
    Ok(())
}

pub fn delete_session(c: &Db<'_>, id_hash: &str) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM console_sessions WHERE id_hash = ?1",
        p![id_hash],
    )?;
    Ok(())
}

fn status_counts(rows_: Vec<(String, i64)>) -> Result<Vec<(Status, u64)>, StoreError> {
    rows_
        .into_iter()
        .map(|(s, n)| Ok((rows::status(&s)?, count(n))))
        .collect()
}

/// A workspace's messages created since `since`, in `buckets` equal buckets
/// up to `until`. Time ranges are id ranges (ids sort by creation time), so
/// every read is a range on an index.
pub fn workspace_stats(
    c: &Db<'_>,
    ws: &WorkspaceId,
    since: Timestamp,
    until: Timestamp,
    buckets: u32,
) -> Result<WorkspaceStats, StoreError> {
    let floor = MessageId::floor_at(since);
    // Ids made at `until` itself are inside the window.
    let ceiling = MessageId::floor_at(until.plus(std::time::Duration::from_millis(1)));
    let width = ((until.as_millis() - since.as_millis()) / i64::from(buckets.max(1))).max(1);
    let series_rows = c.query_map(
        "SELECT (created_at - ?3) / ?4 AS bucket, status, COUNT(*)
         FROM messages WHERE workspace_id = ?1 AND id >= ?2 AND id < ?5
         GROUP BY bucket, status",
        p![
            ws.as_str(),
            floor.as_str(),
            since.as_millis(),
            width,
            ceiling.as_str()
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )?;
    let mut by_status: Vec<(Status, u64)> = Vec::new();
    let mut series = Vec::new();
    for (bucket, status, n) in series_rows {
        let status = rows::status(&status)?;
        match by_status.iter_mut().find(|(s, _)| *s == status) {
            Some((_, total)) => *total += count(n),
            None => by_status.push((status, count(n))),
        }
        let bucket = u32::try_from(bucket.clamp(0, i64::from(buckets.max(1)) - 1)).unwrap_or(0);
        series.push((bucket, status, count(n)));
    }
    let queue = status_counts(c.query_map(
        "SELECT status, COUNT(*) FROM messages
         WHERE workspace_id = ?1 AND status IN ('scheduled', 'queued', 'sending')
         GROUP BY status",
        p![ws.as_str()],
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )?)?;
    let providers = c.query_map(
        "SELECT a.provider_id, COUNT(*),
                SUM(CASE WHEN a.outcome = 'accepted' THEN 0 ELSE 1 END),
                SUM(CASE WHEN a.error_class = 'throttled' THEN 1 ELSE 0 END)
         FROM attempts a JOIN messages m ON m.id = a.message_id
         WHERE a.id >= ?2 AND a.id < ?3 AND m.workspace_id = ?1
         GROUP BY a.provider_id ORDER BY a.provider_id",
        p![
            ws.as_str(),
            AttemptId::floor_at(since).as_str(),
            AttemptId::floor_at(until.plus(std::time::Duration::from_millis(1))).as_str()
        ],
        |r| {
            Ok(ProviderHealth {
                provider_id: r.get(0)?,
                attempts: count(r.get(1)?),
                errors: count(r.get(2)?),
                throttled: count(r.get(3)?),
            })
        },
    )?;
    Ok(WorkspaceStats {
        by_status,
        series,
        queue,
        providers,
    })
}

/// The numbers a workspace exchanged messages with since `since`, latest
/// first.
pub fn conversations(
    c: &Db<'_>,
    ws: &WorkspaceId,
    since: Timestamp,
    limit: usize,
) -> Result<Vec<ConversationSummary>, StoreError> {
    let inbound_floor = format!("in_{}", &EventId::floor_at(since)[4..]);
    let rows_ = c.query_map(
        "SELECT phone, MAX(at), SUM(outbound), SUM(inbound) FROM (
             SELECT to_phone AS phone, created_at AS at, 1 AS outbound, 0 AS inbound
             FROM messages WHERE workspace_id = ?1 AND id >= ?2
             UNION ALL
             SELECT from_phone, created_at, 0, 1
             FROM inbound WHERE workspace_id = ?1 AND id >= ?3) AS t
         GROUP BY phone ORDER BY MAX(at) DESC, phone LIMIT ?4",
        p![
            ws.as_str(),
            MessageId::floor_at(since).as_str(),
            inbound_floor.as_str(),
            i64::try_from(limit).unwrap_or(100)
        ],
        |r| {
            Ok(ConversationSummary {
                phone: r.get(0)?,
                last_at: Timestamp::from_millis(r.get(1)?),
                outbound: count(r.get(2)?),
                inbound: count(r.get(3)?),
            })
        },
    )?;
    Ok(rows_)
}
