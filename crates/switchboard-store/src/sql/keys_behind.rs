//! Idempotency keys written behind the accepts (SQLite).
//!
//! A CRM's idempotency keys are random (UUIDs), so a unique index on them
//! takes a leaf page at a random place for every accept, and every such
//! page is a WAL frame in the accept's commit: with the recipient index,
//! the largest part of what an accept writes (BENCHMARKS.md, "Fourteenth
//! session": without the index and its read, accept +11% to +36% and p99
//! halved). So on SQLite the keys live in a table of their own,
//! `message_keys`, filled *behind* the accepts:
//!
//! - An accept records its key in `temp.pending_keys`, a table of the
//!   writer's connection that lives in memory and never reaches the WAL,
//!   in the same transaction as its message. So it commits, rolls back and
//!   rolls back to a savepoint with the message.
//! - About once a second ([`EVERY`]) the writer moves the pending keys
//!   into `message_keys`, in key order and in one transaction, and records
//!   in `written_behind` the last message row the table now covers. Keys
//!   that arrive together share leaf pages there; the accepts' commits no
//!   longer carry them.
//! - A key is looked up in both tables (`messages::existing_keys`). The
//!   writer is the only one that accepts, so a key found in neither is new.
//! - If the process stops without the last move, the keys since it are
//!   still in their message rows: on start ([`prepare`]) every message
//!   after the `written_behind` mark has its key copied before the first
//!   accept. The mark is a row number, which only `VACUUM` can change; the
//!   writer moves what is pending when it stops, so a `VACUUM` of a store
//!   that was shut down finds nothing pending.
//!
//! On PostgreSQL, where several nodes accept, the unique index stays.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::db::{Db, RowSet, V};
use crate::error::StoreError;

/// How often the writer takes a step of the sweep that moves the pending
/// keys into `message_keys` ([`sweep_step`]).
pub const EVERY: Duration = Duration::from_millis(100);

/// Steps per sweep: a sweep takes about a second.
const STEPS: i64 = 10;

/// The fewest keys a step moves.
const MIN_STEP: i64 = 256;

const NAME: &str = "message_keys";

/// Makes the writer's connection ready: its table of pending keys, and the
/// keys of any message accepted after the last move copied (see the module
/// documentation).
pub fn prepare(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS pending_keys (
             workspace_id    TEXT NOT NULL,
             idempotency_key TEXT NOT NULL,
             message_id      TEXT NOT NULL,
             PRIMARY KEY (workspace_id, idempotency_key)
         ) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS keys_sweep (
             one       INTEGER PRIMARY KEY CHECK (one = 1),
             after_ws  TEXT NOT NULL,
             after_key TEXT NOT NULL,
             mark      INTEGER NOT NULL,
             step      INTEGER NOT NULL
         )",
    )?;
    let tx = conn.unchecked_transaction()?;
    let copied = tx.execute(
        "INSERT OR IGNORE INTO main.message_keys (workspace_id, idempotency_key, message_id)
         SELECT workspace_id, idempotency_key, id FROM messages
         WHERE rowid > (SELECT upto FROM written_behind WHERE name = ?1) AND idempotency_key IS NOT NULL
         ORDER BY workspace_id, idempotency_key",
        [NAME],
    )?;
    let last: i64 = tx.query_row("SELECT coalesce(max(rowid), 0) FROM messages", [], |r| {
        r.get(0)
    })?;
    set_mark(&tx, last)?;
    tx.commit()?;
    if copied > 0 {
        tracing::info!(
            keys = copied,
            "copied the idempotency keys accepted after the last move"
        );
    }
    Ok(())
}

/// Records the new messages' keys as pending, in the accepts' transaction.
pub fn record<'a>(
    c: &Db<'_>,
    keys: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
) -> Result<(), StoreError> {
    let keys: Vec<_> = keys.into_iter().collect();
    for chunk in c.chunks(&keys) {
        let set = RowSet::new(
            c,
            1,
            &["TEXT", "TEXT", "TEXT"],
            chunk
                .iter()
                .map(|(ws, key, id)| [V::from(*ws), V::from(*key), V::from(*id)]),
        );
        let sql = format!(
            "INSERT INTO temp.pending_keys (workspace_id, idempotency_key, message_id) {}",
            set.values()
        );
        c.execute_later(&sql, set.into_params(), Some(chunk.len()))?;
    }
    Ok(())
}

/// One step of the sweep that moves the pending keys into
/// `message_keys`. A sweep goes through the keys pending when it began in
/// key order, [`STEPS`] steps of a slice each, so each step's commit
/// touches one stretch of the table's pages (a move of everything at once
/// stalled the writer for tens of milliseconds: a commit of most of the
/// table's leaf pages). Keys that arrive meanwhile after the sweep's
/// position are moved by it too; those before it wait for the next sweep.
/// When a sweep ends, every message up to the last row when it began has
/// its key in `message_keys`, and the mark says so. Its state lives in
/// `temp.keys_sweep`, in the writer's transaction with everything else.
/// Answers whether the sweep has steps left.
pub fn sweep_step(c: &Db<'_>) -> Result<bool, StoreError> {
    let Db::Lite(conn) = c else {
        return Ok(false);
    };
    let sweep: Option<(String, String, i64, i64)> = conn
        .prepare_cached("SELECT after_ws, after_key, mark, step FROM temp.keys_sweep")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let (after_ws, after_key, mark, step) = match sweep {
        Some(s) => s,
        None => {
            let mark: i64 = conn
                .prepare_cached("SELECT coalesce(max(rowid), 0) FROM messages")?
                .query_row([], |r| r.get(0))?;
            let pending: i64 = conn
                .prepare_cached("SELECT count(*) FROM temp.pending_keys")?
                .query_row([], |r| r.get(0))?;
            if pending == 0 {
                set_mark(conn, mark)?;
                return Ok(false);
            }
            let step = (pending / STEPS).max(MIN_STEP);
            conn.prepare_cached(
                "INSERT INTO temp.keys_sweep (one, after_ws, after_key, mark, step) VALUES (1, '', '', ?1, ?2)",
            )?
            .execute([mark, step])?;
            (String::new(), String::new(), mark, step)
        }
    };
    // The last key of this step's slice; none if fewer keys are left.
    let until: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT workspace_id, idempotency_key FROM temp.pending_keys
             WHERE (workspace_id, idempotency_key) > (?1, ?2)
             ORDER BY workspace_id, idempotency_key LIMIT 1 OFFSET ?3",
        )?
        .query_row(rusqlite::params![after_ws, after_key, step - 1], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let slice = match until {
        Some(_) => {
            "(workspace_id, idempotency_key) > (?1, ?2) AND (workspace_id, idempotency_key) <= (?3, ?4)"
        }
        None => "(workspace_id, idempotency_key) > (?1, ?2) AND ?3 IS NULL AND ?4 IS NULL",
    };
    let (until_ws, until_key) = until.clone().unzip();
    let params = rusqlite::params![after_ws, after_key, until_ws, until_key];
    conn.prepare_cached(&format!(
        "INSERT INTO main.message_keys (workspace_id, idempotency_key, message_id)
         SELECT workspace_id, idempotency_key, message_id FROM temp.pending_keys WHERE {slice}
         ORDER BY workspace_id, idempotency_key"
    ))?
    .execute(params)?;
    conn.prepare_cached(&format!("DELETE FROM temp.pending_keys WHERE {slice}"))?
        .execute(params)?;
    match until {
        Some((ws, key)) => {
            conn.prepare_cached("UPDATE temp.keys_sweep SET after_ws = ?1, after_key = ?2")?
                .execute([ws, key])?;
            Ok(true)
        }
        None => {
            conn.prepare_cached("DELETE FROM temp.keys_sweep")?
                .execute([])?;
            set_mark(conn, mark)?;
            Ok(false)
        }
    }
}

/// Every message row up to `upto` has its key in `message_keys`.
fn set_mark(conn: &Connection, upto: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE written_behind SET upto = ?2 WHERE name = ?1")?
        .execute(rusqlite::params![NAME, upto])?;
    Ok(())
}

/// The read of the stored messages that hold any of a set's (workspace,
/// key) pairs: those whose keys are pending, then those moved.
pub fn lookup_sql(set: &str, columns: &str) -> String {
    let from = |table: &str| {
        format!(
            "SELECT k.column1, k.column2, {columns} FROM {set} k
             JOIN {table} x ON x.workspace_id = k.column1 AND x.idempotency_key = k.column2
             JOIN messages m ON m.id = x.message_id"
        )
    };
    format!(
        "{} UNION ALL {}",
        from("temp.pending_keys"),
        from("main.message_keys")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir);
        (dir, conn)
    }

    fn open(dir: &tempfile::TempDir) -> Connection {
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        prepare(&conn).unwrap();
        conn
    }

    /// A message row, and its key recorded as pending, as an accept does.
    fn accept(conn: &Connection, id: &str, key: Option<&str>) {
        conn.execute(
            "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                 priority, status, initial_status, expires_at, idempotency_key, request_hash, created_at, updated_at)
             VALUES (?1, 'ws_1', '+14155550123', 'sms', 'hi', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, ?2, 'h', 0, 0)",
            rusqlite::params![id, key],
        )
        .unwrap();
        record(&Db::Lite(conn), key.map(|k| ("ws_1", k, id))).unwrap();
    }

    fn keys(conn: &Connection, table: &str) -> Vec<String> {
        let mut s = conn
            .prepare(&format!(
                "SELECT idempotency_key FROM {table} ORDER BY idempotency_key"
            ))
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn mark(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT upto FROM written_behind WHERE name = 'message_keys'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    /// One step in a transaction of its own, as the writer's chore runs it.
    fn step(conn: &Connection) -> bool {
        let tx = conn.unchecked_transaction().unwrap();
        let more = sweep_step(&Db::Lite(&tx)).unwrap();
        tx.commit().unwrap();
        more
    }

    #[test]
    fn a_sweep_moves_the_pending_keys_in_key_order_slices_and_marks_its_end() {
        let (_dir, conn) = store();
        // 1,000 keys in no order; a sweep of them moves 256 a step.
        for n in 0..1000 {
            let k = (n * 7919) % 1000;
            accept(&conn, &format!("msg_{n:04}"), Some(&format!("k{k:04}")));
        }
        accept(&conn, "msg_nokey", None);
        assert!(step(&conn));
        let moved = keys(&conn, "main.message_keys");
        assert_eq!(moved.len(), 256);
        assert_eq!(moved.first().unwrap(), "k0000");
        assert_eq!(moved.last().unwrap(), "k0255");
        assert_eq!(keys(&conn, "temp.pending_keys").len(), 744);
        // The mark moves only when the sweep ends.
        assert_eq!(mark(&conn), 0);
        // Keys arriving meanwhile: behind the sweep's position they wait
        // for the next sweep, ahead of it they are moved by this one.
        accept(&conn, "msg_behind", Some("k0100x"));
        accept(&conn, "msg_ahead", Some("k9999"));
        assert!(step(&conn));
        assert!(step(&conn));
        assert!(!step(&conn), "the fourth step is the last");
        assert_eq!(keys(&conn, "temp.pending_keys"), ["k0100x"]);
        assert_eq!(keys(&conn, "main.message_keys").len(), 1001);
        // Every row up to the last when the sweep began: the 1,000 and the
        // one without a key, not the two that came during it.
        assert_eq!(mark(&conn), 1001);
        assert!(!step(&conn), "a sweep of one key is one step");
        assert!(keys(&conn, "temp.pending_keys").is_empty());
        assert_eq!(mark(&conn), 1003);
        // Nothing pending: the mark follows the table.
        accept(&conn, "msg_nokey2", None);
        assert!(!step(&conn));
        assert_eq!(mark(&conn), 1004);
    }

    #[test]
    fn keys_not_moved_before_a_stop_are_copied_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = open(&dir);
            accept(&conn, "msg_1", Some("a"));
            assert!(!step(&conn));
            accept(&conn, "msg_2", Some("b"));
            accept(&conn, "msg_3", None);
            accept(&conn, "msg_4", Some("c"));
            // Gone without a sweep, as in a crash: the pending keys were
            // only in this connection's memory.
        }
        let conn = open(&dir);
        assert_eq!(keys(&conn, "main.message_keys"), ["a", "b", "c"]);
        assert!(keys(&conn, "temp.pending_keys").is_empty());
        assert_eq!(mark(&conn), 4);
        let found: String = conn
            .query_row(
                "SELECT message_id FROM message_keys WHERE workspace_id = 'ws_1' AND idempotency_key = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(found, "msg_4");
    }

    #[test]
    fn a_pending_key_rolls_back_with_its_message() {
        let (_dir, conn) = store();
        conn.execute_batch("BEGIN").unwrap();
        accept(&conn, "msg_1", Some("kept"));
        conn.execute_batch("SAVEPOINT job").unwrap();
        accept(&conn, "msg_2", Some("undone"));
        conn.execute_batch("ROLLBACK TO job; RELEASE job; COMMIT")
            .unwrap();
        conn.execute_batch("BEGIN").unwrap();
        accept(&conn, "msg_3", Some("rolled back"));
        conn.execute_batch("ROLLBACK").unwrap();
        assert_eq!(keys(&conn, "temp.pending_keys"), ["kept"]);
        assert_eq!(keys(&conn, "messages"), ["kept"]);
    }

    #[test]
    fn the_upgrade_moves_the_stored_keys_out_of_the_messages_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::schema::migrate_through_name(&mut conn, "0013_message_keys");
        conn.execute_batch(
            "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                 priority, status, initial_status, expires_at, idempotency_key, request_hash, created_at, updated_at)
             VALUES ('msg_1', 'ws_1', '+1', 'sms', 'x', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, 'old', 'h', 0, 0),
                    ('msg_2', 'ws_1', '+1', 'sms', 'x', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, NULL, 'h', 0, 0)",
        )
        .unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        assert_eq!(keys(&conn, "message_keys"), ["old"]);
        assert_eq!(mark(&conn), 2);
        let index: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'messages_idempotency'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(index, 0);
    }
}
