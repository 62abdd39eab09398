//! A few read connections, used on Tokio's blocking threads. (SQLite's WAL
//! lets them read committed data while the writer commits.)

use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::db::{Conn, Db};
use crate::error::StoreError;

type Opener = std::sync::Arc<dyn Fn() -> Result<Conn, StoreError> + Send + Sync>;

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
        let idle = self.idle.lock().expect("read pool lock").pop();
        let open = self.open.clone();
        // Opening, using and dropping a connection all block (PostgreSQL's
        // client runs its own small runtime): all on a blocking thread.
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let conn = match idle {
                Some(c) if !c.is_broken() => c,
                _ => match open() {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            let r = f(&conn.db());
            // A connection that broke is dropped here, not pooled.
            ((!conn.is_broken()).then_some(conn), r)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?;
        if let Some(conn) = conn {
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

impl Drop for ReadPool {
    fn drop(&mut self) {
        // Closing a PostgreSQL client blocks on its runtime, which must not
        // happen on an async thread: close them on a thread of their own.
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("db-close".into())
                .spawn(move || drop(idle));
        }
    }
}
