//! A few read-only connections, used on Tokio's blocking threads. WAL lets
//! them read committed data while the writer commits.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::error::StoreError;

type Opener = fn(&PathBuf) -> Result<Connection, StoreError>;

/// A bounded pool of read connections, opened lazily.
#[derive(Debug)]
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
    open: Opener,
}

impl ReadPool {
    /// A pool of at most `size` connections to `path`.
    pub fn new(path: PathBuf, size: usize, open: Opener) -> Self {
        ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
            open,
        }
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    pub async fn run<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::WriterGone)?;
        // A std Mutex, not a Tokio one: it is held only to pop or push.
        let conn = self.idle.lock().expect("read pool lock").pop();
        let conn = match conn {
            Some(c) => c,
            None => (self.open)(&self.path)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let r = f(&conn);
            (conn, r)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("read task failed: {e}")))?;
        self.idle.lock().expect("read pool lock").push(conn);
        result
    }
}
