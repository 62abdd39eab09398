//! A commit whose WAL write fails is not a commit: SQLite answers the
//! error and publishes nothing, though the VFS wrote none of the
//! transaction's frames until its commit frame. (A test binary of its
//! own: the file-size limit is the process's.)

mod common;

use rusqlite::{Connection, OpenFlags};

fn contents(c: &Connection) -> (i64, i64) {
    c.query_row(
        "SELECT count(*), coalesce(sum(length(b)), 0) FROM t",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Limits the size of any file this process writes (`RLIMIT_FSIZE`); a
/// write past it fails with `EFBIG` instead of raising `SIGXFSZ`.
fn limit_file_size(bytes: u64) {
    // SAFETY: plain libc calls with valid arguments; the signal's
    // disposition is process-wide, which is why this test has a binary of
    // its own.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

#[test]
fn a_commit_whose_frames_cannot_be_written_fails_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let w = common::writer(&path);
    w.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        .unwrap();
    for _ in 0..10 {
        w.execute("INSERT INTO t (b) VALUES (zeroblob(1000))", [])
            .unwrap();
    }
    let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let before = contents(&reader);
    assert_eq!(before, (10, 10_000));

    // Room for 64 KiB more of WAL; the transaction below needs about 300.
    let wal_len = std::fs::metadata(dir.path().join("db-wal")).unwrap().len();
    limit_file_size(wal_len + (64 << 10));
    let before_stats = switchboard_walvfs::stats();
    let tx = w.unchecked_transaction().unwrap();
    for _ in 0..300 {
        tx.execute("INSERT INTO t (b) VALUES (zeroblob(1000))", [])
            .unwrap();
    }
    let failed = tx.commit();
    let after_stats = switchboard_walvfs::stats();
    limit_file_size(u64::MAX);
    assert!(
        failed.is_err(),
        "the commit succeeded past the file-size limit"
    );
    // Its frames were held until the commit frame: none was written
    // before the write that failed.
    assert!(
        after_stats.made - before_stats.made <= 3,
        "{:?} then {:?}",
        before_stats,
        after_stats
    );
    assert_eq!(contents(&reader), before, "a failed commit was published");

    // The writer goes on, and what it commits next is on disk.
    w.execute("INSERT INTO t (b) VALUES (zeroblob(7))", [])
        .unwrap();
    assert_eq!(contents(&reader), (11, 10_007));
    drop(reader);
    drop(w);
    let after = Connection::open(&path).unwrap();
    assert_eq!(contents(&after), (11, 10_007));
    let ok: String = after
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}
