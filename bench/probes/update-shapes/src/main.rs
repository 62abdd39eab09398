//! Instructions per row of a writer's update of message rows, in two
//! shapes (bench/HISTORY.md, "Fifty-seventh session"): `from`, the
//! product's `UPDATE … FROM (VALUES …)` of a run of rows by row number;
//! `one`, a one-row `UPDATE … WHERE rowid = ?1` per row; `touch`, `from`
//! changing no indexed column. The table and indexes are the product's
//! SQLite `messages`. Not part of the workspace; run with
//!
//!     cargo build --release --manifest-path bench/probes/update-shapes/Cargo.toml
//!     valgrind --tool=callgrind --toggle-collect='upd::run_*' \
//!         bench/probes/update-shapes/target/release/upd from 12
//!
//! and divide the instructions collected by the 20,000 rows.

use rusqlite::{Connection, params_from_iter, types::Value};

const SCHEMA: &str = r#"
CREATE TABLE messages (
    id TEXT PRIMARY KEY, workspace_id TEXT NOT NULL, to_phone TEXT NOT NULL, from_addr TEXT, channel TEXT NOT NULL,
    body TEXT NOT NULL, media_urls TEXT, encoding TEXT NOT NULL, segments INTEGER NOT NULL, client_ref TEXT, metadata TEXT,
    category TEXT NOT NULL, priority INTEGER NOT NULL, timezone TEXT, status TEXT NOT NULL, initial_status TEXT NOT NULL,
    provider_id TEXT, provider_message_id TEXT, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER,
    lease_until INTEGER, claimed_at INTEGER, send_at INTEGER, expires_at INTEGER NOT NULL, error_code TEXT,
    error_message TEXT, idempotency_key TEXT, request_hash TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX messages_queued ON messages (priority DESC, next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_scheduled ON messages (next_attempt_at) WHERE status = 'scheduled';
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_by_status ON messages (workspace_id, status, id);
CREATE INDEX messages_by_ref ON messages (workspace_id, client_ref, id) WHERE client_ref IS NOT NULL;
CREATE INDEX messages_by_provider_id ON messages (provider_id, provider_message_id) WHERE provider_message_id IS NOT NULL;
"#;

const SENT_FROM: &str = "status = 'sent', provider_message_id = v.column2, lease_until = NULL, error_code = NULL, error_message = NULL, updated_at = v.column3";
/// The same row rewritten with no indexed column changed.
const TOUCH_FROM: &str = "updated_at = v.column3, error_message = v.column2";
const SENT_ONE: &str = "status = 'sent', provider_message_id = ?2, lease_until = NULL, error_code = NULL, error_message = NULL, updated_at = ?3";

fn setup(path: &str, n: i64) -> Connection {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(format!("{path}-wal"));
    let c = Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")
        .unwrap();
    c.execute_batch(SCHEMA).unwrap();
    c.execute_batch("BEGIN").unwrap();
    {
        let mut s = c.prepare("INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, client_ref, category, priority, status, initial_status, provider_id, attempts, lease_until, expires_at, request_hash, created_at, updated_at) VALUES (?1, 'ws_01JBENCHWORKSPACE000000000', ?2, 'sms', 'Hello there, this is a message body of some length', 'gsm7', 1, ?3, 'transactional', 0, 'sending', 'queued', 'sim', 1, ?4, 99999999999, 'hashhashhashhashhashhashhashhashhashhash', ?4, ?4)").unwrap();
        for i in 0..n {
            s.execute(rusqlite::params![
                format!("msg_01JBENCH{i:017}"),
                format!("+1555{:07}", (i * 7919) % 10_000_000),
                format!("b{i}"),
                1_000_000 + i
            ])
            .unwrap();
        }
    }
    c.execute_batch("COMMIT").unwrap();
    c
}

/// Moves rows 1..=n in runs of `per`, ten runs a transaction, `run`
/// given each run's first row and length.
fn in_runs(c: &Connection, n: i64, per: usize, mut run: impl FnMut(i64, usize)) {
    let mut i = 1i64;
    while i <= n {
        c.execute_batch("BEGIN").unwrap();
        for _ in 0..10 {
            let k = per.min((n - i + 1) as usize);
            if k == 0 {
                break;
            }
            run(i, k);
            i += k as i64;
        }
        c.execute_batch("COMMIT").unwrap();
    }
}

#[inline(never)]
fn run_from(c: &Connection, n: i64, per: usize, assignments: &str) {
    in_runs(c, n, per, |i, k| {
        let values: Vec<String> = (0..k)
            .map(|j| format!("(?{}, ?{}, ?{})", 3 * j + 1, 3 * j + 2, 3 * j + 3))
            .collect();
        let sql = format!(
            "UPDATE messages SET {assignments} FROM (VALUES {}) AS v WHERE messages.rowid = v.column1",
            values.join(", ")
        );
        let mut params: Vec<Value> = Vec::new();
        for r in 0..k as i64 {
            params.push(Value::Integer(i + r));
            params.push(Value::Text(format!("SIMmsg{:020}", i + r)));
            params.push(Value::Integer(2_000_000 + i + r));
        }
        c.prepare_cached(&sql)
            .unwrap()
            .execute(params_from_iter(params))
            .unwrap();
    });
}

#[inline(never)]
fn run_one(c: &Connection, n: i64, per: usize) {
    let sql = format!("UPDATE messages SET {SENT_ONE} WHERE rowid = ?1");
    in_runs(c, n, per, |i, k| {
        let mut s = c.prepare_cached(&sql).unwrap();
        for r in 0..k as i64 {
            s.execute(rusqlite::params![
                i + r,
                format!("SIMmsg{:020}", i + r),
                2_000_000 + i + r
            ])
            .unwrap();
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: i64 = 20_000;
    let per: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(12);
    let c = setup("/tmp/upd.db", n);
    match args[1].as_str() {
        "from" => run_from(&c, n, per, SENT_FROM),
        "one" => run_one(&c, n, per),
        "touch" => {
            run_from(&c, n, per, TOUCH_FROM);
            return;
        }
        _ => panic!("from, one or touch"),
    }
    let sent: i64 = c.query_row("SELECT count(*) FROM messages WHERE status = 'sent' AND provider_message_id IS NOT NULL", [], |r| r.get(0)).unwrap();
    assert_eq!(sent, n);
    eprintln!("ok {sent}");
}
