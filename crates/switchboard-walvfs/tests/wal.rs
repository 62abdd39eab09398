//! The VFS under SQLite's WAL: what a commit leaves on disk, what other
//! connections see, transactions that spill, rewrite frames and roll back,
//! and the WAL's restart after a checkpoint.

mod common;

use common::writer;
use rusqlite::{Connection, OpenFlags, params};
use std::path::Path;

/// The database as a crash right now would leave it: the main file and
/// the WAL as the kernel has them, without the writer's memory (no
/// shared-memory index; SQLite recovers from the WAL).
fn crash_image(dir: &Path, into: &Path) -> Connection {
    std::fs::create_dir_all(into).unwrap();
    for f in ["db", "db-wal"] {
        let _ = std::fs::remove_file(into.join(f));
        let from = dir.join(f);
        if from.exists() {
            std::fs::copy(&from, into.join(f)).unwrap();
        }
    }
    let _ = std::fs::remove_file(into.join("db-shm"));
    Connection::open(into.join("db")).unwrap()
}

fn contents(c: &Connection) -> (i64, i64, i64) {
    c.query_row(
        "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(b)), 0) FROM t",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

fn integrity(c: &Connection) -> String {
    c.query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn every_commit_is_on_disk_and_visible_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let w = writer(&path);
    w.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, b BLOB NOT NULL); CREATE INDEX t_n ON t (n);")
        .unwrap();
    let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let checkpointer = Connection::open(&path).unwrap();
    let image = dir.path().join("image");
    let mut expected = (0i64, 0i64, 0i64);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for txn in 0..300 {
        // Mostly small transactions, some of a few pages, and a few larger
        // than the 1 MiB the VFS holds at most.
        let (rows, size) = match txn % 50 {
            7 => (40, 60_000),
            _ if txn % 5 == 0 => (30, 900),
            _ => (1 + (next() % 8) as i64, 1 + (next() % 300) as usize),
        };
        let tx = w.unchecked_transaction().unwrap();
        for _ in 0..rows {
            let n = (next() % 1_000_000) as i64;
            tx.execute(
                "INSERT INTO t (n, b) VALUES (?1, zeroblob(?2))",
                params![n, size as i64],
            )
            .unwrap();
            expected.0 += 1;
            expected.1 += n;
            expected.2 += size as i64;
        }
        if txn % 3 == 0 {
            // Rewrite some older rows too (pages already in the WAL).
            let moved = tx
                .execute("UPDATE t SET n = n + 1 WHERE id % 97 = ?1", [txn % 97])
                .unwrap();
            expected.1 += moved as i64;
        }
        tx.commit().unwrap();
        assert_eq!(
            contents(&reader),
            expected,
            "seen by another connection after commit {txn}"
        );
        if txn % 10 == 0 {
            let crashed = crash_image(dir.path(), &image);
            assert_eq!(contents(&crashed), expected, "on disk after commit {txn}");
            assert_eq!(integrity(&crashed), "ok");
        }
        if txn % 17 == 0 {
            // TRUNCATE empties the WAL, so the next commit restarts it:
            // the WAL header written again at offset 0.
            checkpointer
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
        } else if txn % 5 == 0 {
            checkpointer
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .unwrap();
        }
    }
    drop(w);
    let after = Connection::open(&path).unwrap();
    assert_eq!(contents(&after), expected);
    assert_eq!(integrity(&after), "ok");
}

#[test]
fn transactions_that_spill_rewrite_and_roll_back_leave_only_what_committed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let w = writer(&path);
    // A page cache of a few pages: a transaction of any size writes its
    // pages to the WAL before its commit (a spill), and a page changed
    // again after spilling is written again in place (SQLite's rewritten
    // frames and checksums).
    w.pragma_update(None, "cache_size", 5).unwrap();
    w.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER NOT NULL, b BLOB NOT NULL);",
    )
    .unwrap();
    let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let image = dir.path().join("image");

    let tx = w.unchecked_transaction().unwrap();
    for i in 0..400i64 {
        tx.execute("INSERT INTO t (n, b) VALUES (?1, zeroblob(700))", [i])
            .unwrap();
    }
    tx.execute("UPDATE t SET n = n * 2", []).unwrap();
    tx.execute("UPDATE t SET n = n + 1 WHERE id % 2 = 0", [])
        .unwrap();
    tx.commit().unwrap();
    let committed = (
        400,
        (0..400i64).map(|i| 2 * i).sum::<i64>() + 200,
        400 * 700,
    );
    assert_eq!(contents(&reader), committed);
    assert_eq!(contents(&crash_image(dir.path(), &image)), committed);

    // Spilled, then rolled back: nothing of it is seen or recovered.
    let tx = w.unchecked_transaction().unwrap();
    for i in 0..400i64 {
        tx.execute("INSERT INTO t (n, b) VALUES (?1, zeroblob(900))", [i])
            .unwrap();
    }
    tx.execute("DELETE FROM t WHERE id < 100", []).unwrap();
    tx.rollback().unwrap();
    assert_eq!(contents(&reader), committed);
    let crashed = crash_image(dir.path(), &image);
    assert_eq!(contents(&crashed), committed);
    assert_eq!(integrity(&crashed), "ok");

    // The next transaction writes over the rolled-back frames.
    w.execute("INSERT INTO t (n, b) VALUES (5, zeroblob(10))", [])
        .unwrap();
    let last = (committed.0 + 1, committed.1 + 5, committed.2 + 10);
    assert_eq!(contents(&reader), last);
    let crashed = crash_image(dir.path(), &image);
    assert_eq!(contents(&crashed), last);
    assert_eq!(integrity(&crashed), "ok");
}
