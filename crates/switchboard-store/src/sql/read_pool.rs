//! A few read connections, used on Tokio's blocking threads. (SQLite's WAL
//! lets them read committed data while the writer commits.)

use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::db::{Conn, Db};
use crate::error::StoreError;

type Opener = Box<dyn Fn() -> Result<Conn, StoreError> + Send + Sync>;

/// A bounded pool of read connections, opened lazily.
pub struct ReadPool {
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
    open: Opener,
}

impl ReadPool {
    /// A pool of at most `size` connections made by `open`.
    pub fn new(size: usize, open: Opener) -> Self {
        ReadPool {
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
            open,
        }
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Db<'_>) -> Result<R, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::WriterGone)?;
        // A std Mutex, not a Tokio one: it is held only to pop or push.
        let conn = self.idle.lock().expect("read pool lock").pop();
        let conn = match conn {
            Some(c) if !c.is_broken() => c,
            _ => (self.open)()?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn.db());
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?;
        // A connection that broke is dropped, not pooled.
        if !conn.is_broken() {
            self.idle.lock().expect("read pool lock").push(conn);
        }
        result
    }
}

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool").finish_non_exhaustive()
    }
}
