//! SQLite's memory through jemalloc. An integration test is a process of
//! its own, so the allocator is set here before SQLite is initialised, as
//! the server's `main` sets it.
#![cfg(feature = "jemalloc")]

use rusqlite::{Connection, ffi, params};
use switchboard_walvfs::alloc::route_sqlite_to_jemalloc;

#[test]
fn sqlite_allocates_through_jemalloc_once_routed_and_works_as_before() {
    route_sqlite_to_jemalloc().expect("SQLite takes the allocator before it is initialised");

    // A block's size as SQLite reports it is the allocator's: jemalloc
    // rounds 1,001 bytes up to its 1,024-byte size class, where SQLite's
    // default allocator reports the 1,001 it was asked for.
    // SAFETY: `sqlite3_malloc` returns a block (or null, checked) that is
    // measured and then freed once by SQLite's own functions; `nallocx`
    // reads no memory.
    unsafe {
        let p = ffi::sqlite3_malloc(1001);
        assert!(!p.is_null());
        let size = ffi::sqlite3_msize(p);
        ffi::sqlite3_free(p);
        assert_eq!(size, tikv_jemalloc_sys::nallocx(1001, 0) as u64);
        assert_eq!(size, 1024);
    }

    // A database in WAL mode, with enough rows, large values and
    // transactions to grow and shrink SQLite's caches many times over.
    let dir = tempfile::tempdir().unwrap();
    let mut c = Connection::open(dir.path().join("t.db")).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)")
        .unwrap();
    for batch in 0..40 {
        let tx = c.transaction().unwrap();
        for i in 0..500 {
            let n = batch * 500 + i;
            let v = vec![(n % 251) as u8; (n % 5000) as usize];
            tx.execute(
                "INSERT INTO t (id, k, v) VALUES (?1, ?2, ?3)",
                params![n, format!("key-{n:08}"), v],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let (rows, bytes): (i64, i64) = c
        .query_row("SELECT COUNT(*), SUM(length(v)) FROM t", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(rows, 20_000);
    assert_eq!(bytes, (0..20_000i64).map(|n| n % 5000).sum::<i64>());
    let v: Vec<u8> = c
        .query_row("SELECT v FROM t WHERE k = 'key-00004999'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, vec![(4999 % 251) as u8; 4999]);

    // Once SQLite is initialised it keeps its allocator, and says so.
    let refused = route_sqlite_to_jemalloc().unwrap_err();
    assert!(refused.contains("already initialised"), "{refused}");
}
