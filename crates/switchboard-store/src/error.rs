use thiserror::Error;

/// A storage failure. None of these is the caller's fault; the HTTP edge
/// answers them with an opaque 500 and logs the cause.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The SQLite engine reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database (either engine) reported an error.
    #[error(transparent)]
    Db(#[from] crate::sql::db::DbError),
    /// The writer thread has stopped (shutdown, or it crashed).
    #[error("the database writer has stopped")]
    WriterGone,
    /// A stored value could not be read back.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The group commit holding this write failed; the write did not happen.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// Opening or locking the data directory failed.
    #[error("data directory: {0}")]
    DataDir(String),
}

impl StoreError {
    /// A unique constraint refused the write (on PostgreSQL, usually a race
    /// with another node writing the same key).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Db(e) => e.is_unique_violation(),
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            _ => false,
        }
    }

    /// A copy of this error for each job of a failed group commit.
    pub(crate) fn for_each_job(&self) -> StoreError {
        StoreError::CommitFailed(self.to_string())
    }
}
