//! Message index entries written behind the accepts (SQLite).
//!
//! Two of the keys an accept is found by are random: a CRM's idempotency
//! keys (UUIDs) and its recipients (a contact list). An index on either
//! takes a leaf page at a random place for every accept, and every such
//! page is a WAL frame in the accept's commit: together, the largest part
//! of what an accept writes (BENCHMARKS.md, "Fourteenth session": without
//! both indexes, accept +40% to +51% and p99 7.5 ms against 25). So on
//! SQLite both live in tables of their own, filled *behind* the accepts:
//! `message_keys` (workspace, idempotency key → message) and
//! `message_phones` (workspace, recipient, message).
//!
//! - An accept records its entries in `temp.pending_keys` and
//!   `temp.pending_phones`, tables of the writer's connection that live in
//!   memory and never reach the WAL, in the same transaction as its
//!   message. So they commit, roll back and roll back to a savepoint with
//!   the message.
//! - The writer sweeps the pending entries into their tables in key
//!   order, a tenth of them a step, a step every [`EVERY`]
//!   ([`sweep_step`]): entries that arrive together share leaf pages
//!   there, and each step's commit touches one stretch of each table.
//! - When a sweep ends, every message up to the last row when it began
//!   has its entries in the tables, and `written_behind` marks that row.
//! - The writer, which accepts alone, looks a key or a recipient up in its
//!   pending table and in the swept one ([`keys_sql`], [`last_to`]).
//!   Readers, which cannot see the writer's memory, read the swept table
//!   for the messages up to the mark and the message rows after it, at
//!   most a sweep or two of them ([`listing_to_sql`]).
//! - If the process stops without finishing a sweep, the entries since the
//!   mark are still in their message rows: on start ([`prepare`]) they are
//!   copied before the first accept. The mark is a row number, which only
//!   `VACUUM` can change; the writer finishes its sweep when it stops, so a
//!   `VACUUM` of a store that was shut down finds nothing pending.
//!
//! On PostgreSQL, where several nodes accept, the indexes stay.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use super::db::{Db, RowSet, V};
use crate::error::StoreError;

/// How often the writer takes a step of a sweep.
pub const EVERY: Duration = Duration::from_millis(100);

/// Steps per sweep: a sweep takes about a second.
const STEPS: i64 = 10;

/// The fewest entries a step moves from one table.
const MIN_STEP: i64 = 256;

/// The row of `written_behind` that holds the mark.
const MARK: &str = "messages";

/// A table written behind: its pending table in the writer's memory, and
/// its key (the columns of both, in key order: two columns of the message
/// row, then the message id).
struct Behind {
    name: &'static str,
    pending: &'static str,
    key: [&'static str; 3],
}

const TABLES: [Behind; 2] = [
    Behind {
        name: "main.message_keys",
        pending: "temp.pending_keys",
        key: ["workspace_id", "idempotency_key", "message_id"],
    },
    Behind {
        name: "main.message_phones",
        pending: "temp.pending_phones",
        key: ["workspace_id", "to_phone", "message_id"],
    },
];

impl Behind {
    fn columns(&self) -> String {
        self.key.join(", ")
    }
}

/// Makes the writer's connection ready: its tables of pending entries, and
/// the entries of every message accepted after the mark copied (see the
/// module documentation).
pub fn prepare(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // The keys' table is keyed by the pair, so a pending key is unique.
    conn.execute_batch(
        "CREATE TEMP TABLE IF NOT EXISTS pending_keys (
             workspace_id    TEXT NOT NULL,
             idempotency_key TEXT NOT NULL,
             message_id      TEXT NOT NULL,
             PRIMARY KEY (workspace_id, idempotency_key)
         ) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS pending_phones (
             workspace_id TEXT NOT NULL,
             to_phone     TEXT NOT NULL,
             message_id   TEXT NOT NULL,
             PRIMARY KEY (workspace_id, to_phone, message_id)
         ) WITHOUT ROWID;
         CREATE TEMP TABLE IF NOT EXISTS sweep (
             name  TEXT PRIMARY KEY,
             after TEXT NOT NULL,
             mark  INTEGER NOT NULL,
             step  INTEGER NOT NULL,
             done  INTEGER NOT NULL
         )",
    )?;
    let tx = conn.unchecked_transaction()?;
    let mut copied = 0;
    for t in &TABLES {
        let [a, b, _] = t.key;
        copied += tx.execute(
            &format!(
                "INSERT OR IGNORE INTO {} ({}) SELECT {a}, {b}, id FROM messages
                 WHERE rowid > (SELECT upto FROM written_behind WHERE name = ?1) AND {b} IS NOT NULL
                 ORDER BY 1, 2, 3",
                t.name,
                t.columns()
            ),
            [MARK],
        )?;
    }
    set_mark(&tx, last_row(&tx)?)?;
    tx.commit()?;
    if copied > 0 {
        tracing::info!(
            entries = copied,
            "copied the index entries of the messages accepted after the last sweep"
        );
    }
    Ok(())
}

/// Records new messages' entries as pending, in the accepts' transaction:
/// (workspace, idempotency key if any, recipient, message id).
pub fn record<'a>(
    c: &Db<'_>,
    messages: impl IntoIterator<Item = (&'a str, Option<&'a str>, &'a str, &'a str)>,
) -> Result<(), StoreError> {
    let messages: Vec<_> = messages.into_iter().collect();
    let keys: Vec<[&str; 3]> = messages
        .iter()
        .filter_map(|(ws, key, _, id)| Some([*ws, (*key)?, *id]))
        .collect();
    let phones: Vec<[&str; 3]> = messages
        .iter()
        .map(|(ws, _, to, id)| [*ws, *to, *id])
        .collect();
    for (t, rows) in TABLES.iter().zip([keys, phones]) {
        for chunk in c.chunks(&rows) {
            let set = RowSet::new(
                c,
                1,
                &["TEXT", "TEXT", "TEXT"],
                chunk.iter().map(|r| r.map(V::from)),
            );
            let sql = format!(
                "INSERT INTO {} ({}) {}",
                t.pending,
                t.columns(),
                set.values()
            );
            c.execute_later(&sql, set.into_params(), Some(chunk.len()))?;
        }
    }
    Ok(())
}

/// One step of the sweep that moves the pending entries into their
/// tables. A sweep goes through the entries pending when it began in key
/// order, about [`STEPS`] steps of a slice of each table, so each step's
/// commit touches one stretch of the table's pages (a move of everything
/// at once stalled the writer for tens of milliseconds: a commit of most
/// of the table's leaf pages). Entries that arrive meanwhile after the
/// sweep's position are moved by it too; those before it wait for the
/// next sweep. When a sweep ends, every message up to the last row when it
/// began has its entries in the tables, and the mark says so. Its state
/// lives in `temp.sweep`, in the writer's transaction with everything
/// else. Answers whether the sweep has steps left.
pub fn sweep_step(c: &Db<'_>) -> Result<bool, StoreError> {
    let Db::Lite(conn) = c else {
        return Ok(false);
    };
    let mut sweep: Vec<(String, String, i64, i64, bool)> = conn
        .prepare_cached("SELECT name, after, mark, step, done FROM temp.sweep ORDER BY name")?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<Result<_, _>>()?;
    if sweep.is_empty() {
        let mark = last_row(conn)?;
        let mut any = false;
        for t in &TABLES {
            let pending: i64 = conn
                .prepare_cached(&format!("SELECT count(*) FROM {}", t.pending))?
                .query_row([], |r| r.get(0))?;
            any |= pending > 0;
            let step = (pending / STEPS).max(MIN_STEP);
            sweep.push((t.name.to_owned(), String::new(), mark, step, pending == 0));
        }
        if !any {
            set_mark(conn, mark)?;
            return Ok(false);
        }
        for (name, after, mark, step, done) in &sweep {
            conn.prepare_cached(
                "INSERT INTO temp.sweep (name, after, mark, step, done) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(rusqlite::params![name, after, mark, step, done])?;
        }
    }
    let mark = sweep[0].2;
    let mut left = false;
    for (name, after, _, step, done) in &sweep {
        if *done {
            continue;
        }
        let t = TABLES
            .iter()
            .find(|t| t.name == name.as_str())
            .ok_or_else(|| StoreError::Corrupt(format!("no table {name} is written behind")))?;
        let more = sweep_slice(conn, t, after, *step)?;
        left |= more;
    }
    if left {
        return Ok(true);
    }
    conn.prepare_cached("DELETE FROM temp.sweep")?.execute([])?;
    set_mark(conn, mark)?;
    Ok(false)
}

/// Moves the next slice of `t`'s pending entries, those after `after` (its
/// key as JSON, or empty at the start). Answers whether entries are left.
fn sweep_slice(conn: &Connection, t: &Behind, after: &str, step: i64) -> Result<bool, StoreError> {
    let cols = t.columns();
    let after: [String; 3] = if after.is_empty() {
        Default::default()
    } else {
        serde_json::from_str(after)
            .map_err(|e| StoreError::Corrupt(format!("a sweep's position: {e}")))?
    };
    // The last key of this step's slice; none if fewer entries are left.
    let until: Option<[String; 3]> = conn
        .prepare_cached(&format!(
            "SELECT {cols} FROM {} WHERE ({cols}) > (?1, ?2, ?3) ORDER BY {cols} LIMIT 1 OFFSET ?4",
            t.pending
        ))?
        .query_row(
            rusqlite::params![after[0], after[1], after[2], step - 1],
            |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]),
        )
        .optional()?;
    let slice = match until {
        Some(_) => format!("({cols}) > (?1, ?2, ?3) AND ({cols}) <= (?4, ?5, ?6)"),
        None => format!("({cols}) > (?1, ?2, ?3) AND ?4 IS NULL AND ?5 IS NULL AND ?6 IS NULL"),
    };
    let u: [Option<&str>; 3] = match &until {
        Some(u) => [Some(&u[0]), Some(&u[1]), Some(&u[2])],
        None => [None; 3],
    };
    let params = rusqlite::params![after[0], after[1], after[2], u[0], u[1], u[2]];
    conn.prepare_cached(&format!(
        "INSERT INTO {} ({cols}) SELECT {cols} FROM {} WHERE {slice} ORDER BY {cols}",
        t.name, t.pending
    ))?
    .execute(params)?;
    conn.prepare_cached(&format!("DELETE FROM {} WHERE {slice}", t.pending))?
        .execute(params)?;
    let position = match &until {
        Some(until) => serde_json::to_string(until).expect("strings serialize"),
        None => String::new(),
    };
    conn.prepare_cached("UPDATE temp.sweep SET after = ?2, done = ?3 WHERE name = ?1")?
        .execute(rusqlite::params![t.name, position, until.is_none()])?;
    Ok(until.is_some())
}

/// The last message row (0 if none).
fn last_row(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(rowid), 0) FROM messages")?
        .query_row([], |r| r.get(0))?)
}

/// Every message row up to `upto` has its entries in the tables.
fn set_mark(conn: &Connection, upto: i64) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE written_behind SET upto = ?2 WHERE name = ?1")?
        .execute(rusqlite::params![MARK, upto])?;
    Ok(())
}

/// The writer's read of the stored messages that hold any of a set's
/// (workspace, key) pairs: those whose keys are pending, then those swept.
pub fn keys_sql(set: &str, columns: &str) -> String {
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

/// The writer's read of the newest message to a recipient (`?1` the
/// workspace, `?2` the number): `{columns}` of it, from `messages m`. On
/// SQLite through the pending and the swept recipients; on PostgreSQL
/// through its index.
pub fn last_to(c: &Db<'_>, columns: &str) -> String {
    if c.is_pg() {
        return format!(
            "SELECT {columns} FROM messages m WHERE m.workspace_id = ?1 AND m.to_phone = ?2 ORDER BY m.id DESC LIMIT 1"
        );
    }
    format!(
        "SELECT {columns} FROM messages m WHERE m.id = (SELECT max(message_id) FROM (
             SELECT max(message_id) AS message_id FROM temp.pending_phones WHERE workspace_id = ?1 AND to_phone = ?2
             UNION ALL
             SELECT max(message_id) FROM main.message_phones WHERE workspace_id = ?1 AND to_phone = ?2))"
    )
}

/// A reader's listing of the messages to a recipient, newest first:
/// `{columns}` of `messages m` where `m.workspace_id = ?1 AND m.to_phone =
/// ?2{and}` (`and`: further conditions on `m`, the cursor's `m.id <
/// {cursor}` among them), up to `{limit}`. The messages up to the mark are
/// found through `message_phones`, those after it by reading the rows
/// after it: by row number (`NOT INDEXED`), since a listing index of the
/// workspace or status would serve the order and the filter, and then
/// read every message it holds to find the few after the mark.
pub fn listing_to_sql(columns: &str, and: &str, cursor: Option<&str>, limit: &str) -> String {
    let mark = format!("(SELECT upto FROM written_behind WHERE name = '{MARK}')");
    let before = cursor
        .map(|c| format!(" AND p.message_id < {c}"))
        .unwrap_or_default();
    format!(
        "SELECT * FROM (
             SELECT * FROM (SELECT {columns} FROM main.message_phones p JOIN messages m ON m.id = p.message_id
                 WHERE p.workspace_id = ?1 AND p.to_phone = ?2{before} AND m.rowid <= {mark}{and}
                 ORDER BY p.message_id DESC LIMIT {limit})
             UNION ALL
             SELECT * FROM (SELECT {columns} FROM messages m NOT INDEXED
                 WHERE m.rowid > {mark} AND m.workspace_id = ?1 AND m.to_phone = ?2{and}
                 ORDER BY m.id DESC LIMIT {limit}))
         ORDER BY id DESC LIMIT {limit}"
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

    /// A message row, and its entries recorded as pending, as an accept
    /// does.
    fn accept(conn: &Connection, id: &str, key: Option<&str>, to: &str) {
        conn.execute(
            "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                 priority, status, initial_status, expires_at, idempotency_key, request_hash, created_at, updated_at)
             VALUES (?1, 'ws_1', ?3, 'sms', 'hi', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, ?2, 'h', 0, 0)",
            rusqlite::params![id, key, to],
        )
        .unwrap();
        record(&Db::Lite(conn), [("ws_1", key, to, id)]).unwrap();
    }

    fn strings(conn: &Connection, sql: &str) -> Vec<String> {
        let mut s = conn.prepare(sql).unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn keys(conn: &Connection, table: &str) -> Vec<String> {
        strings(
            conn,
            &format!("SELECT idempotency_key FROM {table} ORDER BY idempotency_key"),
        )
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn mark(conn: &Connection) -> i64 {
        count(
            conn,
            "SELECT upto FROM written_behind WHERE name = 'messages'",
        )
    }

    /// Every message has its recipient either pending or swept, once; and
    /// those up to the mark are swept.
    fn phones_whole(conn: &Connection) {
        assert_eq!(
            count(
                conn,
                "SELECT count(*) FROM messages m WHERE
                     (SELECT count(*) FROM temp.pending_phones p WHERE p.message_id = m.id AND p.to_phone = m.to_phone)
                   + (SELECT count(*) FROM main.message_phones p WHERE p.message_id = m.id AND p.to_phone = m.to_phone) != 1"
            ),
            0
        );
        assert_eq!(
            count(
                conn,
                "SELECT count(*) FROM messages m WHERE m.rowid <= (SELECT upto FROM written_behind)
                   AND NOT EXISTS (SELECT 1 FROM main.message_phones p WHERE p.message_id = m.id)"
            ),
            0
        );
    }

    /// One step in a transaction of its own, as the writer's chore runs it.
    fn step(conn: &Connection) -> bool {
        let tx = conn.unchecked_transaction().unwrap();
        let more = sweep_step(&Db::Lite(&tx)).unwrap();
        tx.commit().unwrap();
        phones_whole(conn);
        more
    }

    #[test]
    fn a_sweep_moves_the_pending_entries_in_key_order_slices_and_marks_its_end() {
        let (_dir, conn) = store();
        // 1,000 keys in no order to 37 recipients; a sweep of them moves
        // 256 of each table a step.
        for n in 0..1000 {
            let k = (n * 7919) % 1000;
            let to = format!("+1415555{:04}", n % 37);
            accept(
                &conn,
                &format!("msg_{n:04}"),
                Some(&format!("k{k:04}")),
                &to,
            );
        }
        accept(&conn, "msg_nokey", None, "+14155550000");
        assert!(step(&conn));
        let moved = keys(&conn, "main.message_keys");
        assert_eq!(moved.len(), 256);
        assert_eq!(moved.first().unwrap(), "k0000");
        assert_eq!(moved.last().unwrap(), "k0255");
        assert_eq!(keys(&conn, "temp.pending_keys").len(), 744);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM main.message_phones"),
            256
        );
        // The mark moves only when the sweep ends.
        assert_eq!(mark(&conn), 0);
        // Keys arriving meanwhile: behind the sweep's position they wait
        // for the next sweep, ahead of it they are moved by this one.
        accept(&conn, "msg_behind", Some("k0100x"), "+14155550001");
        accept(&conn, "msg_ahead", Some("k9999"), "+14155559999");
        assert!(step(&conn));
        assert!(step(&conn));
        assert!(!step(&conn), "the fourth step is the last");
        assert_eq!(keys(&conn, "temp.pending_keys"), ["k0100x"]);
        assert_eq!(keys(&conn, "main.message_keys").len(), 1001);
        assert_eq!(
            strings(&conn, "SELECT message_id FROM temp.pending_phones"),
            ["msg_behind"]
        );
        // Every row up to the last when the sweep began: the 1,000 and the
        // one without a key, not the two that came during it.
        assert_eq!(mark(&conn), 1001);
        assert!(!step(&conn), "a sweep of one entry is one step");
        assert!(keys(&conn, "temp.pending_keys").is_empty());
        assert_eq!(count(&conn, "SELECT count(*) FROM temp.pending_phones"), 0);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM main.message_phones"),
            1003
        );
        assert_eq!(mark(&conn), 1003);
        // Nothing pending: the mark follows the table.
        accept(&conn, "msg_nokey2", None, "+14155550000");
        assert!(!step(&conn));
        assert_eq!(mark(&conn), 1004);
    }

    #[test]
    fn entries_not_swept_before_a_stop_are_copied_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = open(&dir);
            accept(&conn, "msg_1", Some("a"), "+1");
            assert!(!step(&conn));
            accept(&conn, "msg_2", Some("b"), "+2");
            accept(&conn, "msg_3", None, "+1");
            accept(&conn, "msg_4", Some("c"), "+3");
            // Gone without a sweep, as in a crash: the pending entries
            // were only in this connection's memory.
        }
        let conn = open(&dir);
        assert_eq!(keys(&conn, "main.message_keys"), ["a", "b", "c"]);
        assert!(keys(&conn, "temp.pending_keys").is_empty());
        assert_eq!(
            strings(
                &conn,
                "SELECT to_phone || ' ' || message_id FROM message_phones ORDER BY 1"
            ),
            ["+1 msg_1", "+1 msg_3", "+2 msg_2", "+3 msg_4"]
        );
        assert_eq!(mark(&conn), 4);
        phones_whole(&conn);
        assert_eq!(
            strings(
                &conn,
                "SELECT message_id FROM message_keys WHERE workspace_id = 'ws_1' AND idempotency_key = 'c'"
            ),
            ["msg_4"]
        );
    }

    #[test]
    fn pending_entries_roll_back_with_their_message() {
        let (_dir, conn) = store();
        conn.execute_batch("BEGIN").unwrap();
        accept(&conn, "msg_1", Some("kept"), "+1");
        conn.execute_batch("SAVEPOINT job").unwrap();
        accept(&conn, "msg_2", Some("undone"), "+2");
        conn.execute_batch("ROLLBACK TO job; RELEASE job; COMMIT")
            .unwrap();
        conn.execute_batch("BEGIN").unwrap();
        accept(&conn, "msg_3", Some("rolled back"), "+3");
        conn.execute_batch("ROLLBACK").unwrap();
        assert_eq!(keys(&conn, "temp.pending_keys"), ["kept"]);
        assert_eq!(
            strings(&conn, "SELECT message_id FROM temp.pending_phones"),
            ["msg_1"]
        );
        assert_eq!(keys(&conn, "messages"), ["kept"]);
    }

    /// The writer's newest message to a number and a reader's listing see
    /// pending, swept and not yet swept messages alike.
    #[test]
    fn the_newest_message_to_a_number_and_the_listing_see_every_message() {
        let (dir, conn) = store();
        let reader = Connection::open(dir.path().join("t.db")).unwrap();
        let last = |conn: &Connection| -> Option<String> {
            conn.query_row(&last_to(&Db::Lite(conn), "m.id"), ["ws_1", "+1"], |r| {
                r.get(0)
            })
            .optional()
            .unwrap()
        };
        let listing = |limit: i64, cursor: Option<&str>| -> Vec<String> {
            let and = if cursor.is_some() {
                " AND m.id < ?4"
            } else {
                ""
            };
            let sql = listing_to_sql("m.id", and, cursor.map(|_| "?4"), "?3");
            let mut s = reader.prepare(&sql).unwrap();
            let rows = match cursor {
                Some(c) => s.query(rusqlite::params!["ws_1", "+1", limit, c]),
                None => s.query(rusqlite::params!["ws_1", "+1", limit]),
            };
            rows.unwrap()
                .mapped(|r| r.get(0))
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(last(&conn), None);
        accept(&conn, "msg_1", None, "+1");
        accept(&conn, "msg_2", None, "+2");
        assert!(!step(&conn));
        accept(&conn, "msg_3", None, "+1");
        // msg_1 swept and under the mark, msg_3 pending and after it.
        assert_eq!(last(&conn).as_deref(), Some("msg_3"));
        assert_eq!(listing(10, None), ["msg_3", "msg_1"]);
        assert_eq!(listing(1, None), ["msg_3"]);
        assert_eq!(listing(10, Some("msg_3")), ["msg_1"]);
        accept(&conn, "msg_4", None, "+1");
        assert!(!step(&conn));
        assert_eq!(last(&conn).as_deref(), Some("msg_4"));
        assert_eq!(listing(10, None), ["msg_4", "msg_3", "msg_1"]);
        assert_eq!(listing(2, Some("msg_4")), ["msg_3", "msg_1"]);
    }

    /// The listing's messages after the mark are read by row number from
    /// the mark on, whatever other filter it has: not through a listing
    /// index, which would read the whole workspace or status.
    #[test]
    fn the_listing_reads_the_rows_after_the_mark_by_row_number() {
        let (_dir, conn) = store();
        for (and, cursor) in [
            ("", None),
            (" AND m.status = ?4", None),
            (" AND m.client_ref = ?4 AND m.id < ?5", Some("?5")),
        ] {
            let sql = listing_to_sql("m.id", and, cursor, "?3");
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter()
                    .any(|l| l.contains("SEARCH m USING INTEGER PRIMARY KEY (rowid>?)")),
                "{and}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|l| l.contains("messages_by_")),
                "{and}: {plan:?}"
            );
            assert!(
                plan.iter().any(
                    |l| l.contains("SEARCH p USING PRIMARY KEY (workspace_id=? AND to_phone=?")
                ),
                "{and}: {plan:?}"
            );
        }
    }

    #[test]
    fn the_upgrade_moves_the_stored_keys_and_recipients_out_of_the_messages_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::schema::migrate_through_name(&mut conn, "0013_written_behind");
        conn.execute_batch(
            "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                 priority, status, initial_status, expires_at, idempotency_key, request_hash, created_at, updated_at)
             VALUES ('msg_1', 'ws_1', '+1', 'sms', 'x', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, 'old', 'h', 0, 0),
                    ('msg_2', 'ws_1', '+2', 'sms', 'x', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, NULL, 'h', 0, 0)",
        )
        .unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        assert_eq!(keys(&conn, "message_keys"), ["old"]);
        assert_eq!(
            strings(
                &conn,
                "SELECT to_phone || ' ' || message_id FROM message_phones ORDER BY 1"
            ),
            ["+1 msg_1", "+2 msg_2"]
        );
        assert_eq!(mark(&conn), 2);
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM sqlite_master WHERE name IN ('messages_idempotency', 'messages_by_phone')"
            ),
            0
        );
    }
}
