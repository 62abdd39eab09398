use std::sync::Arc;

use rusqlite::Connection;
use switchboard_store::sql::GroupCommit;
use switchboard_store::sql::db::{Conn, V};
use switchboard_store::{AcceptOutcome, StoreError};

use crate::{simple, sqlite};

/// A group commit on a fresh SQLite file made by `schema`; the directory
/// lives as long as the first value.
fn sqlite_writer(schema: &str) -> (tempfile::TempDir, std::path::PathBuf, Arc<GroupCommit>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(schema).unwrap();
    let (gc, _thread) = GroupCommit::start(Conn::Lite(conn), None);
    (dir, path, Arc::new(gc))
}

/// One write through `gc`: the row `n` into table `t`.
async fn insert(gc: &GroupCommit, n: i64) -> Result<usize, StoreError> {
    gc.run(move |c| Ok(c.execute("INSERT INTO t (n) VALUES (?1)", &[V::Int(n)])?))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_accepts_share_commits() {
    let f = sqlite().await;
    let mut tasks = Vec::new();
    for _ in 0..500 {
        let (store, req) = (f.store.clone(), simple(&f.ws));
        tasks.push(tokio::spawn(async move { store.accept_message(req).await }));
    }
    for t in tasks {
        assert!(matches!(
            t.await.unwrap().unwrap(),
            AcceptOutcome::Created(_)
        ));
    }
    let stats = f.store.group_commit_stats();
    assert!(stats.jobs >= 500, "{stats:?}");
    assert!(
        stats.max_batch > 1,
        "writes queued together commit together: {stats:?}"
    );
    assert!(stats.commits < stats.jobs, "{stats:?}");
    assert!(
        stats.busy_accepts > std::time::Duration::ZERO,
        "the writer's time in accepts is counted: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writers_busy_time_is_counted_by_the_work_it_did() {
    let (_dir, _path, gc) = sqlite_writer("CREATE TABLE t (n INTEGER PRIMARY KEY)");
    assert_eq!(gc.stats().busy_jobs, std::time::Duration::ZERO);
    let started = std::time::Instant::now();
    // A job that holds the writer for 20 ms is at least 20 ms of its time.
    gc.run(|c| {
        c.execute("INSERT INTO t (n) VALUES (1)", &[])?;
        std::thread::sleep(std::time::Duration::from_millis(20));
        Ok(())
    })
    .await
    .unwrap();
    insert(&gc, 2).await.unwrap();
    let stats = gc.stats();
    assert!(
        stats.busy_jobs >= std::time::Duration::from_millis(20),
        "{stats:?}"
    );
    assert!(stats.busy_jobs <= started.elapsed(), "{stats:?}");
    assert_eq!(
        (stats.busy_accepts, stats.busy_chore),
        (std::time::Duration::ZERO, std::time::Duration::ZERO),
        "no accepts and no chore ran: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_rolls_back_alone_and_its_batch_commits() {
    let (_dir, path, gc) = sqlite_writer("CREATE TABLE t (n INTEGER PRIMARY KEY)");
    let mut tasks = Vec::new();
    for n in 0..50i64 {
        let gc = gc.clone();
        tasks.push(tokio::spawn(async move {
            gc.run(move |c| {
                c.execute("INSERT INTO t (n) VALUES (?1)", &[V::Int(n)])?;
                if n == 25 {
                    return Err(StoreError::Corrupt("refused on purpose".into()));
                }
                Ok(n)
            })
            .await
        }));
    }
    for (n, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert_eq!(r.is_err(), n == 25, "job {n}: {r:?}");
    }
    let check = Connection::open(&path).unwrap();
    let (count, has25): (i64, bool) = check
        .query_row(
            "SELECT COUNT(*), EXISTS (SELECT 1 FROM t WHERE n = 25) FROM t",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((count, has25), (49, false));
}

/// `Db::insert_into` is `INSERT OR FAIL` on SQLite, which stops at the
/// failing row and keeps the rows before it (no statement journal): the
/// group commit must still roll the whole job back, in the optimistic pass
/// and in the careful one, and commit its neighbours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_row_insert_that_fails_part_way_leaves_none_of_its_rows() {
    let (_dir, path, gc) = sqlite_writer(
        "CREATE TABLE t (n INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE);
         INSERT INTO t VALUES (1000, 'taken');",
    );
    let mut tasks = Vec::new();
    for job in 0..40i64 {
        let gc = gc.clone();
        tasks.push(tokio::spawn(async move {
            gc.run(move |c| {
                // Four rows; job 13's third row takes a key already stored,
                // job 27's fourth row has no key at all.
                let rows: Vec<(i64, Option<String>)> = (0..4)
                    .map(|i| {
                        let n = job * 10 + i;
                        let k = match (job, i) {
                            (13, 2) => Some("taken".to_owned()),
                            (27, 3) => None,
                            _ => Some(format!("k{n}")),
                        };
                        (n, k)
                    })
                    .collect();
                let params: Vec<V> = rows
                    .iter()
                    .flat_map(|(n, k)| [V::Int(*n), k.as_deref().map_or(V::Null, V::from)])
                    .collect();
                c.execute(
                    &format!(
                        "{} t (n, k) VALUES (?1, ?2), (?3, ?4), (?5, ?6), (?7, ?8)",
                        c.insert_into()
                    ),
                    &params,
                )?;
                Ok(job)
            })
            .await
        }));
    }
    for (job, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert_eq!(r.is_err(), job == 13 || job == 27, "job {job}: {r:?}");
    }
    let check = Connection::open(&path).unwrap();
    let count = |sql: &str| -> i64 { check.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        count("SELECT COUNT(*) FROM t WHERE n BETWEEN 130 AND 139"),
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM t WHERE n BETWEEN 270 AND 279"),
        0
    );
    assert_eq!(count("SELECT COUNT(*) FROM t"), 1 + 38 * 4);
}

/// A PostgreSQL group commit (no sync thread) on a fresh schema with one
/// table `t (n)`; the schema lives as long as the first value. `None`
/// (the case is skipped) without a test server.
async fn pg_writer() -> Option<(crate::PgSchema, GroupCommit)> {
    let Some(base) = crate::pg_url() else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return None;
    };
    let schema = crate::new_schema(&base).await;
    let url = schema.url();
    let (gc, _thread) = tokio::task::spawn_blocking(move || {
        let conn = Conn::Pg(Box::new(
            switchboard_store::sql::db::PgConn::connect_url(&url).unwrap(),
        ));
        conn.db()
            .execute_batch("CREATE TABLE t (n BIGINT PRIMARY KEY)")
            .unwrap();
        GroupCommit::start(conn, None)
    })
    .await
    .unwrap();
    Some((schema, gc))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_job_that_carries_on_after_a_failed_statement_is_not_committed() {
    let Some((schema, gc)) = pg_writer().await else {
        return;
    };
    // Alone in its batch, and then beside a good job: either way the job that
    // swallowed an error is answered with an error and none of its writes stay.
    for round in 0..2i64 {
        let good = (round == 1).then(|| {
            let gc = gc.clone();
            tokio::spawn(async move {
                gc.run(move |c| {
                    Ok(c.execute("INSERT INTO t (n) VALUES (?1)", &[V::Int(100 + round)])?)
                })
                .await
            })
        });
        let sneaky = gc
            .run(move |c| {
                c.execute("INSERT INTO t (n) VALUES (?1)", &[V::Int(round)])?;
                let _ = c.execute("INSERT INTO t (n) VALUES (?1)", &[V::Int(round)]); // duplicate key, ignored
                Ok(())
            })
            .await;
        assert!(sneaky.is_err(), "round {round}: {sneaky:?}");
        if let Some(good) = good {
            good.await.unwrap().unwrap();
        }
    }
    let count: i64 = gc
        .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t WHERE n < 100", &[], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(count, 0);
    drop(schema);
}

/// A fresh SQLite file in WAL mode with one table `t (n)`, for the
/// pipelined writer; the directory lives as long as the first value.
fn wal_db() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
        .unwrap();
    (dir, path, conn)
}

/// The SQLite writer's pipelined sync: every write is answered, after a
/// sync of the WAL, and is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_are_answered_after_their_sync() {
    let (dir, path, conn) = wal_db();
    let wal = dir.path().join("t.db-wal");
    let (gc, _thread) = GroupCommit::start_pipelined(Conn::Lite(conn), wal, None, None);
    let gc = Arc::new(gc);
    let mut tasks = Vec::new();
    for n in 0..300i64 {
        let gc = gc.clone();
        tasks.push(tokio::spawn(async move { insert(&gc, n).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    let count: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 300);
    let stats = gc.stats();
    assert!(stats.max_batch > 1, "{stats:?}");
    // The commits that wrote went through syncs, each sync covering one
    // or more of them.
    let syncs = stats.syncs;
    assert!(
        syncs.count >= 1 && syncs.took > std::time::Duration::ZERO,
        "{stats:?}"
    );
    assert!(syncs.commits >= syncs.count, "{stats:?}");
    assert!(syncs.commits <= stats.commits, "{stats:?}");
}

/// The sync thread keeps the WAL it opened, the file SQLite writes to: a
/// `-wal` unlinked from outside while the node runs (SQLite goes on
/// writing the open file) does not fail the writes after it, as syncing
/// the file by its name would (which stops every write from then on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_keeps_the_wal_sqlite_writes_to() {
    let (dir, _path, conn) = wal_db();
    let wal = dir.path().join("t.db-wal");
    let (gc, _thread) = GroupCommit::start_pipelined(Conn::Lite(conn), wal.clone(), None, None);
    assert_eq!(insert(&gc, 1).await.unwrap(), 1);
    std::fs::remove_file(&wal).unwrap();
    for n in 2..40 {
        assert_eq!(insert(&gc, n).await.unwrap(), 1, "write {n}");
    }
    let count = gc
        .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", &[], |r| r.get::<_, i64>(0))?))
        .await
        .unwrap();
    assert_eq!(count, 39);
    assert!(!wal.exists(), "SQLite wrote to the file it had open");
}

/// A pipelined writer whose every sync fails: it syncs a path that is not
/// the WAL, and no such file exists.
fn unsyncable() -> (tempfile::TempDir, std::path::PathBuf, GroupCommit) {
    let (dir, path, conn) = wal_db();
    let (gc, _thread) = GroupCommit::start_pipelined(
        Conn::Lite(conn),
        dir.path().join("missing").join("wal"),
        None,
        None,
    );
    (dir, path, gc)
}

/// A WAL that cannot be synced: the batch is answered with an error (its
/// durability is unknown) and the writer refuses every write after it,
/// without running them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_fails_its_batch_and_stops_the_writer() {
    let (_dir, path, gc) = unsyncable();
    let first = insert(&gc, 1).await;
    assert!(
        matches!(&first, Err(StoreError::CommitFailed(m)) if m.contains("syncing")),
        "{first:?}"
    );
    let later = insert(&gc, 2).await;
    assert!(
        matches!(&later, Err(StoreError::CommitFailed(_))),
        "{later:?}"
    );
    let ns: Vec<i64> = {
        let c = Connection::open(&path).unwrap();
        let mut s = c.prepare("SELECT n FROM t ORDER BY n").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(ns, [1], "the refused write never ran");
    assert_eq!(gc.stats().syncs.count, 0, "a failed sync is not counted");
}

/// A batch that changes no row (a poll for due work that finds none) is
/// answered without a sync of the WAL, once every batch before it has
/// been synced: an idle node's polls cost no fsync. Here every sync fails,
/// so a job that went through one would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_writes_nothing_is_answered_without_a_sync() {
    let (_dir, _path, gc) = unsyncable();
    for _ in 0..20 {
        let read =
            gc.run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", &[], |r| r.get::<_, i64>(0))?));
        assert_eq!(read.await.unwrap(), 0);
        let nothing = gc.run(|c| Ok(c.execute("UPDATE t SET n = n WHERE n < 0", &[])?));
        assert_eq!(nothing.await.unwrap(), 0);
    }
    assert_eq!(gc.stats().commits, 40);
    // A write goes through the sync, which fails.
    assert!(matches!(
        insert(&gc, 1).await,
        Err(StoreError::CommitFailed(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_queued_write_that_fails_fails_its_own_job_only() {
    let Some((schema, gc)) = pg_writer().await else {
        return;
    };
    let gc = Arc::new(gc);
    // Writes that are queued (`Db::execute_later`): nothing reaches the
    // server until the batch's COMMIT, where the duplicate fails and the
    // server rolls the whole transaction back.
    let queued = |gc: &Arc<GroupCommit>, n: i64| {
        let gc = gc.clone();
        tokio::spawn(async move {
            gc.run(move |c| {
                c.execute_later("INSERT INTO t (n) VALUES (?1)", vec![V::Int(n)], Some(1))?;
                Ok(())
            })
            .await
        })
    };
    // A first job holds the writer so the next four queue up into one batch.
    let holder = {
        let gc = gc.clone();
        tokio::spawn(async move {
            gc.run(|c| Ok(c.execute_batch("SELECT pg_sleep(0.3)")?))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let before = gc.stats();
    let jobs = [
        queued(&gc, 1),
        queued(&gc, 2),
        queued(&gc, 1),
        queued(&gc, 3),
    ];
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    holder.await.unwrap().unwrap();
    let mut results = Vec::new();
    for j in jobs {
        results.push(j.await.unwrap());
    }
    let after = gc.stats();
    // The two writes of 1 may reach the writer in either order: the
    // second to arrive fails, alone.
    assert!(results[1].is_ok() && results[3].is_ok(), "{results:?}");
    let failed: Vec<String> = [&results[0], &results[2]]
        .into_iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    assert_eq!(failed.len(), 1, "{results:?}");
    assert!(failed[0].contains("duplicate key"), "{}", failed[0]);
    assert_eq!(after.jobs - before.jobs, 5, "the holder and the four");
    assert!(after.max_batch >= 4, "the four shared a batch: {after:?}");
    let ns: Vec<i64> = gc
        .run(|c| Ok(c.query_map("SELECT n FROM t ORDER BY n", &[], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(
        ns,
        [1, 2, 3],
        "the good jobs committed after the careful pass"
    );
    drop(schema);
}

/// A connection to `url` named `name` in `pg_stat_activity`.
fn pg_conn(url: &str, name: &str) -> Result<Conn, StoreError> {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    config.application_name(name);
    let conn = switchboard_store::sql::db::PgConn::connect(&config)
        .map_err(|e| StoreError::CommitFailed(e.to_string()))?;
    Ok(Conn::Pg(Box::new(conn)))
}

/// A pipelined PostgreSQL writer on a fresh schema with one table `t (n)`;
/// its sync connection is named `name`.
async fn pg_pipelined(name: &'static str) -> Option<(crate::PgSchema, String, GroupCommit)> {
    let Some(base) = crate::pg_url() else {
        eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
        return None;
    };
    let schema = crate::new_schema(&base).await;
    let url = schema.url();
    let u = url.clone();
    let gc = tokio::task::spawn_blocking(move || {
        let w = u.clone();
        let writer = move || -> Result<Conn, StoreError> {
            let c = pg_conn(&w, "writer")?;
            c.db().execute_batch("SET synchronous_commit = off")?;
            Ok(c)
        };
        let conn = writer()?;
        conn.db()
            .execute_batch("CREATE TABLE t (n BIGINT PRIMARY KEY)")?;
        let (gc, _thread) = GroupCommit::start_pipelined_pg(
            conn,
            Box::new(writer),
            Box::new(move || pg_conn(&u, name)),
        )?;
        Ok::<_, StoreError>(gc)
    })
    .await
    .unwrap()
    .unwrap();
    Some((schema, url, gc))
}

/// The PostgreSQL writer commits without waiting for the WAL flush; every
/// write is answered only once the WAL is flushed past it, and is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_pipelined_writes_are_answered_after_the_wal_is_flushed() {
    let Some((schema, url, gc)) = pg_pipelined("sb-sync-flushed").await else {
        return;
    };
    let gc = Arc::new(gc);
    let mut tasks = Vec::new();
    for n in 0..300i64 {
        let gc = gc.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            // The WAL position after the job's own insert, read inside it.
            let lsn: String = gc
                .run(move |c| {
                    c.execute("INSERT INTO t (n) VALUES (?1)", &[V::Int(n)])?;
                    Ok(
                        c.query_row("SELECT pg_current_wal_insert_lsn()::text", &[], |r| {
                            r.get(0)
                        })?,
                    )
                })
                .await
                .unwrap();
            // Answered: the WAL is flushed at least that far.
            crate::on_server(&url, move |c| {
                let flushed: bool = c
                    .query_one(
                        "SELECT pg_current_wal_flush_lsn() >= $1::text::pg_lsn",
                        &[&lsn],
                    )
                    .unwrap()
                    .get(0);
                assert!(flushed, "answered before the WAL was flushed past {lsn}");
            })
            .await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let count: i64 = gc
        .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", &[], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(count, 300);
    let stats = gc.stats();
    assert!(stats.max_batch > 1, "{stats:?}");
    let syncs = stats.syncs;
    assert!(
        syncs.count >= 1 && syncs.commits >= syncs.count,
        "{stats:?}"
    );
    assert!(syncs.commits <= stats.commits, "{stats:?}");
    drop(schema);
}

/// Terminates the one server connection named `name` and waits until the
/// server has closed it.
async fn terminate(url: &str, name: &'static str) {
    let killed: i64 = crate::on_server(url, move |c| {
        c.query_one(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
    })
    .await;
    assert_eq!(killed, 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
}

/// The process id of the one server connection named `name`, if there is
/// one.
async fn backend(url: &str, name: &'static str) -> Option<i32> {
    crate::on_server(url, move |c| {
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap()
        .map(|r| r.get(0))
    })
    .await
}

/// The sync connection is lost while writes keep coming: only the writes
/// in flight around the loss fail (each writer's write then, and at most
/// the one it began before the connection was made again), and the new
/// connection, once made, is kept: later writes are answered as usual.
///
/// Whether any write fails depends on when the backend ends: killed in the
/// middle of a sync, PostgreSQL finishes the commit (and so the flush)
/// before it ends the connection, the sync succeeds, and the connection
/// is made again before any write depends on it. So the test asks that a
/// new connection was made and that writes were answered after it, not
/// that one failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_lost_sync_connection_under_load_fails_only_the_writes_around_it() {
    let Some((schema, url, gc)) = pg_pipelined("sb-sync-load").await else {
        return;
    };
    let gc = Arc::new(gc);
    const WRITERS: i64 = 16;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Set once the connection has been lost.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (gc, stop, lost) = (gc.clone(), stop.clone(), lost.clone());
        tasks.push(tokio::spawn(async move {
            // (failed, begun after the loss and succeeded, last result ok)
            let (mut failed, mut after, mut last_ok) = (0u32, 0u32, false);
            for i in 0..100_000i64 {
                if stop.load(std::sync::atomic::Ordering::Acquire) {
                    break;
                }
                let begun_after = lost.load(std::sync::atomic::Ordering::Acquire);
                let n = w * 1_000_000 + i;
                let r = insert(&gc, n).await;
                last_ok = r.is_ok();
                match r {
                    Ok(_) if begun_after => after += 1,
                    Ok(_) => {}
                    Err(StoreError::CommitFailed(_)) => failed += 1,
                    Err(e) => panic!("write {n}: {e:?}"),
                }
            }
            (failed, after, last_ok)
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = backend(&url, "sb-sync-load").await;
    terminate(&url, "sb-sync-load").await;
    lost.store(true, std::sync::atomic::Ordering::Release);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    let mut after = 0;
    for t in tasks {
        let (f, a, last_ok) = t.await.unwrap();
        assert!(f <= 2, "one writer had {f} writes failed");
        assert!(last_ok, "a writer's last write failed");
        after += a;
    }
    let now = backend(&url, "sb-sync-load").await;
    assert!(
        before.is_some() && now.is_some() && now != before,
        "the sync connection was not made again: {before:?}, then {now:?}"
    );
    assert!(after >= 1, "no write begun after the loss succeeded");
    drop(schema);
}

/// The sync connection is lost: the batch it was for is answered with an
/// error (whether it survived is unknown to the writer), the connection is
/// made again, and the next write is answered as usual; the writer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_lost_sync_connection_fails_its_batch_and_is_made_again() {
    let Some((schema, url, gc)) = pg_pipelined("sb-sync-lost").await else {
        return;
    };
    insert(&gc, 1).await.unwrap();
    terminate(&url, "sb-sync-lost").await;
    let lost = insert(&gc, 2).await;
    assert!(
        matches!(&lost, Err(StoreError::CommitFailed(m)) if m.contains("PostgreSQL")),
        "{lost:?}"
    );
    for n in 3..6i64 {
        let r = insert(&gc, n).await;
        assert_eq!(
            r.unwrap(),
            1,
            "write {n} after the sync connection was made again"
        );
    }
    let ns: Vec<i64> = gc
        .run(|c| Ok(c.query_map("SELECT n FROM t ORDER BY n", &[], |r| r.get(0))?))
        .await
        .unwrap();
    // The failed batch's write was in fact committed: its answer said
    // only that the writer could not vouch for it.
    assert_eq!(ns, [1, 2, 3, 4, 5]);
    drop(schema);
}

/// A chore step for the tests below: records itself in `steps` (`n` 1
/// when the writer is stopping, 0 otherwise) and says there are steps left
/// until there are five.
fn five_steps(c: &switchboard_store::sql::db::Db<'_>, finish: bool) -> Result<bool, StoreError> {
    c.execute(
        "INSERT INTO steps (n) VALUES (?1)",
        &[V::Int(i64::from(finish))],
    )?;
    let n: i64 = c.query_row("SELECT count(*) FROM steps", &[], |r| r.get(0))?;
    Ok(n < 5)
}

fn steps(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM steps", [], |r| r.get(0))
        .unwrap()
}

/// The steps taken while the writer was stopping.
fn finishing_steps(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM steps WHERE n = 1", [], |r| r.get(0))
        .unwrap()
}

/// A pipelined writer on a fresh file with a `steps` table and the
/// `five_steps` chore, due before every batch; `wal` names the file its
/// syncs sync (relative to the directory).
fn chore_writer(
    wal: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    GroupCommit,
    std::thread::JoinHandle<()>,
) {
    chore_writer_with(
        wal,
        switchboard_store::sql::Chore {
            every: std::time::Duration::ZERO,
            step: five_steps,
            start: || {},
            due: || None,
        },
    )
}

/// A pipelined writer on a fresh file with a `steps` table and `chore`.
fn chore_writer_with(
    wal: &str,
    chore: switchboard_store::sql::Chore,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    GroupCommit,
    std::thread::JoinHandle<()>,
) {
    let (dir, path, conn) = wal_db();
    conn.execute_batch("CREATE TABLE steps (n INTEGER)")
        .unwrap();
    let (gc, thread) =
        GroupCommit::start_pipelined(Conn::Lite(conn), dir.path().join(wal), None, Some(chore));
    (dir, path, gc, thread)
}

/// Drops the writer and waits for its thread to end.
async fn stop(gc: GroupCommit, thread: std::thread::JoinHandle<()>) {
    drop(gc);
    tokio::task::spawn_blocking(move || thread.join().unwrap())
        .await
        .unwrap();
}

/// The writer's chore: a step before each batch once `every` has passed
/// (here at once), and when the writer stops, steps until none is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chore_steps_before_batches_and_to_its_end_when_the_writer_stops() {
    let (_dir, path, gc, thread) = chore_writer("t.db-wal");
    assert_eq!(insert(&gc, 1).await.unwrap(), 1);
    assert_eq!(steps(&path), 1);
    assert_eq!(insert(&gc, 2).await.unwrap(), 1);
    assert_eq!(steps(&path), 2);
    assert_eq!(finishing_steps(&path), 0);
    stop(gc, thread).await;
    assert_eq!(steps(&path), 5);
    assert_eq!(finishing_steps(&path), 3);
}

/// A chore that says it has steps due takes them with no job arriving, at
/// its pace, until it has none left; one that says none takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chore_that_is_due_steps_while_no_job_arrives() {
    // Due at once until it has taken five steps (`due` takes no
    // arguments: the steps count themselves in a static).
    static TAKEN: AtomicI64 = AtomicI64::new(0);
    fn counted(c: &switchboard_store::sql::db::Db<'_>, finish: bool) -> Result<bool, StoreError> {
        TAKEN.fetch_add(1, SeqCst);
        five_steps(c, finish)
    }
    fn due() -> Option<std::time::Duration> {
        (TAKEN.load(SeqCst) < 5).then_some(std::time::Duration::ZERO)
    }
    use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
    let every = std::time::Duration::from_millis(30);
    let started = std::time::Instant::now();
    let (_dir, path, gc, thread) = chore_writer_with(
        "t.db-wal",
        switchboard_store::sql::Chore {
            every,
            step: counted,
            start: || {},
            due,
        },
    );
    // No job at all: the writer steps by itself.
    while steps(&path) < 5 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{} steps after 10 s with no job",
            steps(&path)
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // At its pace: five steps `every` apart, the first `every` after the
    // writer started.
    assert!(started.elapsed() >= every * 5, "{:?}", started.elapsed());
    // Nothing more is due: no step while no job arrives.
    tokio::time::sleep(every * 5).await;
    assert_eq!(steps(&path), 5);
    assert_eq!(finishing_steps(&path), 0);
    stop(gc, thread).await;
}

/// A chore step that fails is tried again no sooner than a second later,
/// however often the chore says it is due and however many jobs arrive
/// (without the pause, a step that keeps failing while the store is idle
/// would be tried, and its error logged, every `every`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_chore_step_is_tried_again_a_second_later() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    static TRIED: AtomicUsize = AtomicUsize::new(0);
    fn failing(c: &switchboard_store::sql::db::Db<'_>, _: bool) -> Result<bool, StoreError> {
        TRIED.fetch_add(1, SeqCst);
        c.execute("INSERT INTO missing (n) VALUES (1)", &[])?;
        Ok(true)
    }
    let (_dir, _path, gc, thread) = chore_writer_with(
        "t.db-wal",
        switchboard_store::sql::Chore {
            every: std::time::Duration::from_millis(10),
            step: failing,
            start: || {},
            due: || Some(std::time::Duration::ZERO),
        },
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(TRIED.load(SeqCst), 1, "tried once, then paused");
    // Jobs still run, and do not bring the step back before its time.
    for n in 0..5 {
        assert_eq!(insert(&gc, n).await.unwrap(), 1);
    }
    assert_eq!(TRIED.load(SeqCst), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while TRIED.load(SeqCst) < 2 {
        assert!(std::time::Instant::now() < deadline, "never tried again");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop(gc, thread).await;
}

/// A chore that is never due takes no step while no job arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chore_that_is_not_due_waits_for_jobs() {
    let (_dir, path, gc, thread) = chore_writer("t.db-wal");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(steps(&path), 0);
    assert_eq!(insert(&gc, 1).await.unwrap(), 1);
    assert_eq!(steps(&path), 1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(steps(&path), 1);
    stop(gc, thread).await;
}

/// Once a sync has failed the writer refuses every write, its chore's
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_refuses_writes_runs_no_chore() {
    // Not the WAL: no such file, so every sync fails.
    let (_dir, path, gc, thread) = chore_writer("missing/wal");
    assert!(insert(&gc, 1).await.is_err());
    // The step before that first batch ran; none since.
    assert_eq!(steps(&path), 1);
    assert!(insert(&gc, 2).await.is_err());
    stop(gc, thread).await;
    assert_eq!(steps(&path), 1);
}
