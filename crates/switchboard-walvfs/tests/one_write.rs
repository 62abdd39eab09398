//! What the VFS is for: a transaction's WAL frames in one write. (A test
//! binary of its own: the counts are the process's.)

mod common;

#[test]
fn a_commit_of_many_frames_is_one_write() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::writer(&dir.path().join("db"));
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        .unwrap();
    let before = switchboard_walvfs::stats();
    let tx = c.unchecked_transaction().unwrap();
    for _ in 0..100 {
        tx.execute("INSERT INTO t (b) VALUES (zeroblob(500))", [])
            .unwrap();
    }
    tx.commit().unwrap();
    let after = switchboard_walvfs::stats();
    let requested = after.asked - before.asked;
    let written = after.made - before.made;
    // About 13 pages of rows and the table's interior page: two writes
    // each (header, page) asked for, one made.
    assert!(requested >= 26, "SQLite asked for {requested} writes");
    assert_eq!(written, 1, "{requested} writes asked for, {written} made");
}
