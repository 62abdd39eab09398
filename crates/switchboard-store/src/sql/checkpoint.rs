//! WAL checkpoints on a thread of their own (SQLite).
//!
//! A checkpoint copies the pages committed to the WAL back into the
//! database file and syncs it, so the WAL can start over. SQLite runs one
//! by itself in the committing connection every 1,000 pages, which puts
//! the copy and two fsyncs on the writer thread, the one serial stage, for
//! tens of milliseconds at a time. Here a `db-checkpoint` thread, with a
//! connection of its own, runs a `PASSIVE` checkpoint every
//! [`EVERY`]: it copies what is committed without waiting for or blocking
//! the writer or any reader, and the writer's next transaction restarts
//! the WAL once everything has been copied. The writer's automatic
//! checkpoint stays as a backstop at [`BACKSTOP_PAGES`], should this
//! thread fall behind or stop. The thread ends when its store is dropped.
//!
//! Measured (BENCHMARKS.md, "Tenth session"): with the pipelined sync of
//! `group_commit`, e2e +13% to +27% and accept +7% to +22% on a machine
//! whose syncs are slow.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::StoreError;

/// How often the thread checkpoints.
pub const EVERY: Duration = Duration::from_millis(50);

/// The writer's own automatic checkpoint, kept as a backstop (pages; 80 MB
/// of WAL at 4 KB pages).
pub const BACKSTOP_PAGES: i64 = 20_000;

/// The running checkpoint thread; stops it when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode).
    pub fn start(path: PathBuf) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        // The checkpoint syncs the WAL before copying and the database
        // file after, whatever this connection's level; NORMAL is enough.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    std::thread::sleep(EVERY);
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "a WAL checkpoint failed; the writer's own checkpoint is the backstop");
                    }
                }
            })
            .map_err(|e| StoreError::DataDir(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer { stop })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(p: &std::path::Path) -> u64 {
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    /// Waits up to 5 s for `f`.
    fn eventually(f: impl Fn() -> bool) -> bool {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < until {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        f()
    }

    #[test]
    fn the_thread_copies_commits_into_the_database_file_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        // Only the thread checkpoints here.
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer
            .execute_batch("CREATE TABLE t (b BLOB NOT NULL)")
            .unwrap();
        let checkpointer = Checkpointer::start(path.clone()).unwrap();
        let start = size(&path);
        let blob = vec![7u8; 256 * 1024];
        for _ in 0..4 {
            writer
                .execute("INSERT INTO t (b) VALUES (?1)", [&blob])
                .unwrap();
        }
        // A megabyte committed: it reaches the database file without the
        // writer checkpointing.
        assert!(
            eventually(|| size(&path) >= start + 1024 * 1024),
            "the database file stayed at {} bytes",
            size(&path)
        );
        drop(checkpointer);
        std::thread::sleep(EVERY * 4);
        let stopped = size(&path);
        for _ in 0..4 {
            writer
                .execute("INSERT INTO t (b) VALUES (?1)", [&blob])
                .unwrap();
        }
        std::thread::sleep(EVERY * 6);
        assert_eq!(size(&path), stopped, "a dropped checkpointer still copied");
        let n: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 8);
    }
}
