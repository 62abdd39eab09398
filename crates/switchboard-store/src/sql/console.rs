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

/// `workspace_stats`' series: `?1` the workspace, `?2` and `?5` the id
/// range, `?3` its start and `?4` a bucket's width in milliseconds. Each
/// status's range is read in id order, which only the status index (or
/// the primary key) gives without a sort: so PostgreSQL plans it as a
/// range of one of them even on empty tables, where any index that leads
/// with the workspace costs the same (and would read the whole workspace).
static SERIES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let ranges = super::messages::each_status(|status| {
        format!(
            "SELECT * FROM (SELECT created_at, status FROM messages
                 WHERE workspace_id = ?1 AND status = {status} AND id >= ?2 AND id < ?5 ORDER BY id) AS r"
        )
    });
    format!(
        "SELECT (created_at - ?3) / ?4 AS bucket, status, COUNT(*) FROM ({ranges}) AS t
         GROUP BY bucket, status"
    )
});

/// `conversations`: `?1` the workspace, `?2` and `?3` the floors of the
/// messages' and the inbound ids, `?4` the limit.
static CONVERSATIONS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let outbound = super::messages::each_status(|status| {
        format!(
            "SELECT * FROM (SELECT to_phone AS phone, created_at AS at, 1 AS outbound, 0 AS inbound
                 FROM messages WHERE workspace_id = ?1 AND status = {status} AND id >= ?2 ORDER BY id) AS r"
        )
    });
    format!(
        "SELECT phone, MAX(at), SUM(outbound), SUM(inbound) FROM (
             {outbound}
             UNION ALL
             SELECT from_phone, created_at, 0, 1
             FROM inbound WHERE workspace_id = ?1 AND id >= ?3) AS t
         GROUP BY phone ORDER BY MAX(at) DESC, phone LIMIT ?4"
    )
});

/// A workspace's messages created since `since`, in `buckets` equal buckets
/// up to `until`. Time ranges are id ranges (ids sort by creation time), so
/// every read is a range on an index: of the messages, one range of the
/// status index per status (`messages::each_status`).
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
        &SERIES_SQL,
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
        &CONVERSATIONS_SQL,
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

#[cfg(test)]
mod tests {
    /// The overview's reads of a workspace's recent messages are ranges of
    /// the status index, one per status, never a scan of the table.
    #[test]
    fn recent_messages_are_read_as_ranges_of_the_status_index() {
        let (_dir, conn) = crate::sql::messages::plan_tests::sqlite_migrated();
        for sql in [&*super::SERIES_SQL, &*super::CONVERSATIONS_SQL] {
            let plan = crate::sql::messages::plan_tests::sqlite_plan(&conn, sql);
            let ranges = plan
                .iter()
                .filter(|l| {
                    l.contains(
                        "USING INDEX messages_by_status (workspace_id=? AND status=? AND id>?",
                    )
                })
                .count();
            assert_eq!(
                ranges,
                switchboard_core::state::ALL_STATUSES.len(),
                "{plan:?}"
            );
            assert!(
                !plan.iter().any(|l| l.starts_with("SCAN messages")),
                "{plan:?}"
            );
        }
    }

    /// On PostgreSQL the same, in generic plans: made on empty tables
    /// (this cluster never analyzes on its own, so such a plan may be kept
    /// as the table grows), a range of the status index per status; made
    /// on the statistics of 20,000 messages of one workspace over a day,
    /// to 2,000 numbers, no read of the whole workspace either.
    #[test]
    fn on_postgres_recent_messages_are_read_through_the_status_index() {
        use crate::sql::db::V;
        use crate::sql::messages::plan_tests::{pg_generic_planner, pg_plan};
        let Some((_schema, conn)) = pg_generic_planner() else {
            return;
        };
        let db = conn.db();
        let day = 86_400_000_i64;
        let start = 1_790_000_000_000_i64;
        let rows = format!(
            "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                                   priority, status, initial_status, expires_at, request_hash, created_at, updated_at)
             SELECT 'msg_' || lpad(to_hex({start} + n * {day} / 20000), 12, '0') || lpad(n::text, 10, '0'),
                    'ws_1', '+1415555' || lpad((n % 2000)::text, 4, '0'), 'sms', 'hi', 'gsm7', 1,
                    'transactional', 0,
                    (ARRAY['delivered', 'delivered', 'delivered', 'sent', 'failed', 'queued'])[n % 6 + 1],
                    'queued', {start} + 2 * {day}, 'h', {start} + n * {day} / 20000, {start}
             FROM generate_series(0::bigint, 19999::bigint) AS n;
             ANALYZE messages;"
        );
        // The rows' ids begin with their time in hex, as a floor here does.
        let floor = |t: i64| format!("msg_{t:012x}");
        let series: Vec<V> = vec![
            "ws_1".into(),
            floor(start + day - 3_600_000).into(),
            V::Int(start + day - 3_600_000),
            V::Int(60_000),
            floor(start + day).into(),
        ];
        let conversations: Vec<V> = vec![
            "ws_1".into(),
            floor(start + day - 3_600_000).into(),
            "in_0".into(),
            V::Int(50),
        ];
        let reads = [
            (&*super::SERIES_SQL, series),
            (&*super::CONVERSATIONS_SQL, conversations),
        ];
        // Planned on empty tables: a range of the status index per status.
        for (sql, params) in &reads {
            let plan = pg_plan(&db, sql, params);
            assert_eq!(
                plan.matches("using messages_by_status on messages").count(),
                switchboard_core::state::ALL_STATUSES.len(),
                "{plan}"
            );
        }
        db.execute_batch(&rows).unwrap();
        // Planned on the rows' statistics: no scan of the workspace.
        for (sql, params) in &reads {
            let plan = pg_plan(&db, sql, params);
            assert!(!plan.contains("Seq Scan on messages"), "{plan}");
            assert!(!plan.contains("messages_by_phone"), "{plan}");
            assert!(
                plan.contains("using messages_by_status on messages"),
                "{plan}"
            );
        }
    }
}
