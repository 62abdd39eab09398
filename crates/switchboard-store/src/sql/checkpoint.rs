//! WAL checkpoints on a thread of their own (SQLite).
//!
//! A checkpoint copies the pages committed to the WAL back into the
//! database file and syncs it, so the WAL can start over. SQLite runs one
//! by itself in the committing connection every 1,000 pages, which puts
//! the copy and two fsyncs on the writer thread, the one serial stage, for
//! tens of milliseconds at a time. Here a `db-checkpoint` thread, with a
//! connection of its own, runs a `PASSIVE` checkpoint at most every
//! [`EVERY`] while commits arrive: it copies what is committed without
//! waiting for or blocking the writer or any reader, and the writer's next
//! transaction restarts the WAL once everything has been copied. The sync
//! thread of `group_commit` nudges it after each sync of the WAL
//! ([`Nudge`]); with no nudge it sleeps, so an idle node's checkpoint
//! thread does not wake (it used to, every 50 ms). The writer's automatic
//! checkpoint stays as a backstop at [`BACKSTOP_PAGES`], should this
//! thread fall behind or stop. The thread ends when its store is dropped.
//!
//! Measured (bench/HISTORY.md, "Tenth session"): with the pipelined sync of
//! `group_commit`, e2e +13% to +27% and accept +7% to +22% on a machine
//! whose syncs are slow.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use crate::error::StoreError;

/// How often the thread checkpoints at most.
pub const EVERY: Duration = Duration::from_millis(50);

/// The writer's own automatic checkpoint, kept as a backstop (pages; 80 MB
/// of WAL at 4 KB pages).
pub const BACKSTOP_PAGES: i64 = 20_000;

/// The running checkpoint thread; stops it when dropped.
#[derive(Debug)]
pub struct Checkpointer {
    stop: Arc<AtomicBool>,
    nudge: Nudge,
}

/// Tells the checkpoint thread that commits have reached the WAL. Never
/// blocks: nudges that come while the thread is busy or pacing itself
/// count as one.
#[derive(Debug, Clone)]
pub struct Nudge(std::sync::mpsc::SyncSender<()>);

impl Nudge {
    /// Wakes the thread for a checkpoint (within [`EVERY`]).
    pub fn nudge(&self) {
        let _ = self.0.try_send(());
    }
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode),
    /// once at once (what a restart found in the WAL) and then whenever
    /// nudged (`nudger`).
    pub fn start(path: PathBuf) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(&path)?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        // The checkpoint syncs the WAL before copying and the database
        // file after, whatever this connection's level; NORMAL is enough.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let s = stop.clone();
        std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || {
                // Until every nudger is gone, or the store is dropped.
                while rx.recv().is_ok() && !s.load(Ordering::Acquire) {
                    if let Err(e) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "a WAL checkpoint failed; the writer's own checkpoint is the backstop");
                    }
                    // Paced: the nudges of these 50 ms make one checkpoint.
                    std::thread::sleep(EVERY);
                }
            })
            .map_err(|e| StoreError::DataDir(format!("cannot start the checkpoint thread: {e}")))?;
        let nudge = Nudge(tx);
        nudge.nudge();
        Ok(Checkpointer { stop, nudge })
    }

    /// What wakes the thread, for the sync thread to hold.
    pub fn nudger(&self) -> Nudge {
        self.nudge.clone()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes it to see that it is stopped.
        self.nudge.nudge();
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
    fn the_thread_copies_commits_when_nudged_and_sleeps_otherwise() {
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
        // The sync thread's handle, which outlives the store's.
        let nudge = checkpointer.nudger();
        // Its first checkpoint, at start, and the pause after it.
        std::thread::sleep(EVERY * 3);
        let start = size(&path);
        let blob = vec![7u8; 256 * 1024];
        let insert = |n: usize| {
            for _ in 0..n {
                writer
                    .execute("INSERT INTO t (b) VALUES (?1)", [&blob])
                    .unwrap();
            }
        };
        // A megabyte committed and nobody nudges: the thread sleeps (it
        // used to copy every 50 ms whether or not anything was written).
        insert(4);
        std::thread::sleep(EVERY * 6);
        assert_eq!(size(&path), start, "copied without a nudge");
        // Nudged, it reaches the database file without the writer
        // checkpointing.
        nudge.nudge();
        assert!(
            eventually(|| size(&path) >= start + 1024 * 1024),
            "the database file stayed at {} bytes",
            size(&path)
        );
        drop(checkpointer);
        std::thread::sleep(EVERY * 4);
        let stopped = size(&path);
        insert(4);
        nudge.nudge();
        std::thread::sleep(EVERY * 6);
        assert_eq!(size(&path), stopped, "a dropped checkpointer still copied");
        let n: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 8);
    }
}
