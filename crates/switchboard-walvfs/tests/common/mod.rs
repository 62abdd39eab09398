//! What the tests share: a writer's connection on the VFS, configured as
//! the group commit's is.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// A connection on the VFS in WAL mode, `synchronous = NORMAL`, without
/// automatic checkpoints (the tests' checkpoints are their own, as the
/// product's are a thread's own).
pub fn writer(path: &Path) -> Connection {
    let vfs = switchboard_walvfs::register().unwrap();
    let c = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs).unwrap();
    c.pragma_update(None, "journal_mode", "WAL").unwrap();
    c.pragma_update(None, "synchronous", "NORMAL").unwrap();
    c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    c
}
