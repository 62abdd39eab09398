//! A SQLite VFS that writes a transaction's WAL frames in one system call.
//!
//! SQLite's own (`unix`) VFS writes each WAL frame as two `pwrite`s, its
//! 24-byte header and then its page, each at an offset that is not a page
//! of the kernel's: a frame costs two system calls and three page-cache
//! page updates (ext4's `write_begin`/`write_end` for each page a call
//! touches). The writer of the group commit writes about two frames per
//! accepted message and thirty per commit (bench/HISTORY.md, twenty-fifth
//! session): on this machine the two calls per frame cost 3.1 µs against
//! 0.8 µs for the same bytes written in one call.
//!
//! This VFS wraps the default one and changes one thing: appends to a WAL
//! file are held in memory and written in one call when the transaction's
//! commit frame has been appended (its header's "database size" field,
//! bytes 4 to 8, is not zero), and before anything else touches the file
//! (a read, a write elsewhere, a sync, a truncation, its size, a file
//! control, closing it) or once 1 MiB is held. Every other file, and
//! every other method, is the default VFS's.
//!
//! Why this keeps SQLite's guarantees:
//! - **A commit is on the file before it can be seen.** SQLite publishes
//!   a commit to other connections by writing the WAL index's header in
//!   shared memory after the commit frame's `xWrite` returned; the commit
//!   frame's `xWrite` is the call that writes everything held, and if
//!   that write fails it returns the error, so SQLite abandons the
//!   commit as it would have on the unbuffered write. As a second guard
//!   the database file's `xShmBarrier`, which SQLite calls between the
//!   two copies of the WAL index header it writes, writes anything its
//!   WAL still holds.
//! - **Durability is unchanged.** Nothing is held across an `xSync`, and
//!   the group commit's sync thread syncs the WAL after the commit
//!   returned, when nothing of it is held any more.
//! - **Order is unchanged.** Only a write that continues the last one is
//!   held; any other write, and any read, first writes what is held. A
//!   frame SQLite rewrites inside a transaction, or the WAL header after
//!   a restart, is written in place after everything before it.
//! - A connection's files are used by one thread at a time (SQLite's
//!   connection mutex, or rusqlite's `Connection`, which is not `Sync`),
//!   so the held bytes need no lock.
//!
//! Only the group commit's writer opens its connection with this VFS
//! ([`register`], then `Connection::open_with_flags_and_vfs`); readers and
//! the checkpointer read the same files through the default VFS.

#[cfg(feature = "jemalloc")]
pub mod alloc;
pub mod statements;

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The VFS's name, for `Connection::open_with_flags_and_vfs`.
pub const NAME: &str = "switchboard-wal";
const NAME_C: &CStr = c"switchboard-wal";

/// Most bytes held before they are written anyway.
const LIMIT: usize = 1 << 20;
/// Most bytes written in one call: the unix VFS writes at most 128 KiB − 1
/// in one (`seekAndWriteFd` masks the length with `0x1ffff`).
const CHUNK: usize = 124 << 10;
/// A WAL frame header's size (SQLite's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;

static ASKED: AtomicU64 = AtomicU64::new(0);
static MADE: AtomicU64 = AtomicU64::new(0);

/// Writes to WAL files through this VFS since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// The writes SQLite asked for.
    pub asked: u64,
    /// The writes made to the files.
    pub made: u64,
}

/// The WAL writes of every connection on this VFS so far.
pub fn stats() -> Stats {
    Stats {
        asked: ASKED.load(Ordering::Relaxed),
        made: MADE.load(Ordering::Relaxed),
    }
}

/// Registers the VFS (once per process; not as the default) and answers
/// its name.
pub fn register() -> Result<&'static str, rusqlite::Error> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    // SAFETY: `register_once` runs once, guarded by the OnceLock, and
    // touches only SQLite's registry, which has its own mutex.
    let rc = *REGISTERED.get_or_init(|| unsafe { register_once() });
    if rc == ffi::SQLITE_OK {
        Ok(NAME)
    } else {
        Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some(format!("could not register the {NAME} VFS")),
        ))
    }
}

/// The file object SQLite allocates for each open file (`szOsFile` bytes):
/// this header, then the default VFS's own file object at `INNER_OFFSET`.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    state: *mut State,
}

/// Where the default VFS's file object starts in ours.
const INNER_OFFSET: usize = std::mem::size_of::<File>().next_multiple_of(16);

struct State {
    /// A WAL file, whose appends are held.
    wal: bool,
    /// For a database file: its WAL file while that is open.
    wal_file: *mut File,
    /// For a WAL file: its database file, if SQLite named it.
    db_file: *mut File,
    /// The bytes held, to be written at `start`.
    held: Vec<u8>,
    start: i64,
    /// Where the last write ended (held or written); -1 when unknown.
    end: i64,
    /// The last write was a commit frame's header: its page is the last
    /// write of the commit, which writes everything.
    commit_next: bool,
}

/// The default VFS's file object inside ours.
///
/// # Safety
/// `file` points to a file object of `szOsFile` bytes allocated for this VFS.
unsafe fn inner(file: *mut File) -> *mut ffi::sqlite3_file {
    // SAFETY: the allocation is INNER_OFFSET + the default VFS's szOsFile
    // bytes (see `register_once`).
    unsafe { file.cast::<u8>().add(INNER_OFFSET).cast() }
}

/// The default VFS's methods for the file inside ours.
///
/// # Safety
/// `file` is an open file of this VFS.
unsafe fn methods(file: *mut File) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: the default VFS set its methods when it opened the file, and
    // they are static in SQLite.
    unsafe { &*(*inner(file)).pMethods }
}

/// # Safety
/// `file` is an open file of this VFS, used by this thread alone.
unsafe fn state<'a>(file: *mut File) -> &'a mut State {
    // SAFETY: set in x_open for every file it opened, freed in x_close.
    unsafe { &mut *(*file).state }
}

/// Writes what `file` holds, if anything.
///
/// # Safety
/// `file` is an open file of this VFS, used by this thread alone.
unsafe fn flush(file: *mut File) -> c_int {
    // SAFETY: per this function's contract.
    let st = unsafe { state(file) };
    if st.held.is_empty() {
        return ffi::SQLITE_OK;
    }
    // SAFETY: per this function's contract.
    let write = unsafe { methods(file) }.xWrite.expect("xWrite");
    let mut rc = ffi::SQLITE_OK;
    let mut at = st.start;
    for chunk in st.held.chunks(CHUNK) {
        MADE.fetch_add(1, Ordering::Relaxed);
        // SAFETY: a chunk is at most CHUNK bytes, which fits a c_int and
        // the unix VFS's largest write, and the inner file is open.
        rc = unsafe { write(inner(file), chunk.as_ptr().cast(), chunk.len() as c_int, at) };
        if rc != ffi::SQLITE_OK {
            break;
        }
        at += chunk.len() as i64;
    }
    st.held.clear();
    if rc != ffi::SQLITE_OK {
        st.end = -1;
    }
    rc
}

/// The default VFS's file and methods inside `file`, after writing what
/// it holds; the write's error if that failed.
///
/// # Safety
/// `file` is an open file of this VFS, used by this thread alone.
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
) -> Result<(*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods), c_int> {
    let me: *mut File = file.cast();
    // SAFETY: per this function's contract.
    unsafe {
        match flush(me) {
            ffi::SQLITE_OK => Ok((inner(me), methods(me))),
            rc => Err(rc),
        }
    }
}

unsafe fn register_once() -> c_int {
    // SAFETY: sqlite3_initialize may be called any number of times, from
    // any thread; a null name finds the default VFS, which SQLite keeps
    // for the life of the process.
    let parent = unsafe {
        let rc = ffi::sqlite3_initialize();
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        ffi::sqlite3_vfs_find(ptr::null())
    };
    // SAFETY: a non-null VFS from SQLite's registry.
    if parent.is_null() || unsafe { (*parent).iVersion } < 3 {
        // Its struct would be shorter than the one copied below.
        return ffi::SQLITE_ERROR;
    }
    // SAFETY: `parent` is a valid VFS (above); its struct is plain data.
    let mut vfs: ffi::sqlite3_vfs = unsafe { *parent };
    vfs.szOsFile = (INNER_OFFSET + vfs.szOsFile as usize) as c_int;
    vfs.pNext = ptr::null_mut();
    vfs.zName = NAME_C.as_ptr();
    vfs.pAppData = parent.cast();
    vfs.xOpen = Some(x_open);
    // The methods that take the VFS get the default one, whatever it does
    // with it; the dynamic-library and system-call methods (extensions,
    // fault injection; unused here) are the default VFS's as they are.
    vfs.xDelete = Some(x_delete);
    vfs.xAccess = Some(x_access);
    vfs.xFullPathname = Some(x_full_pathname);
    vfs.xRandomness = Some(x_randomness);
    vfs.xSleep = Some(x_sleep);
    vfs.xCurrentTime = Some(x_current_time);
    vfs.xGetLastError = Some(x_get_last_error);
    vfs.xCurrentTimeInt64 = Some(x_current_time_int64);
    let vfs = Box::leak(Box::new(vfs));
    // SAFETY: the VFS lives for the rest of the process (leaked) and SQLite
    // is initialized.
    unsafe { ffi::sqlite3_vfs_register(vfs, 0) }
}

/// # Safety
/// `vfs` is this VFS.
unsafe fn parent(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: pAppData holds the default VFS (register_once).
    unsafe { (*vfs).pAppData.cast() }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: SQLite gives xOpen szOsFile bytes for the file; the default
    // VFS opens its own object inside them. If it fails, its methods are
    // null (SQLite requires it) and so are ours: SQLite will not close it.
    unsafe {
        (*me).base.pMethods = ptr::null();
        (*me).state = ptr::null_mut();
        let parent = parent(vfs);
        let open = (*parent).xOpen.expect("xOpen");
        let rc = open(parent, name, inner(me), flags, out_flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let wal = flags & ffi::SQLITE_OPEN_WAL != 0;
        (*me).state = Box::into_raw(Box::new(State {
            wal,
            wal_file: ptr::null_mut(),
            db_file: ptr::null_mut(),
            held: Vec::new(),
            start: 0,
            end: -1,
            commit_next: false,
        }));
        if wal && !name.is_null() {
            // Valid for a WAL file's name inside xOpen: the database file
            // object of the same connection.
            let db: *mut File = ffi::sqlite3_database_file_object(name).cast();
            if !db.is_null() && ptr::eq((*db).base.pMethods, &METHODS) {
                state(db).wal_file = me;
                state(me).db_file = db;
            }
        }
        (*me).base.pMethods = &METHODS;
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: SQLite closes an open file once, on its connection's thread;
    // the linked file, if any, is open (each unlinks itself on close).
    unsafe {
        let flushed = flush(me);
        let st = Box::from_raw((*me).state);
        (*me).state = ptr::null_mut();
        if !st.wal_file.is_null() {
            state(st.wal_file).db_file = ptr::null_mut();
        }
        if !st.db_file.is_null() {
            state(st.db_file).wal_file = ptr::null_mut();
        }
        let closed = methods(me).xClose.expect("xClose")(inner(me));
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn x_read(
    file: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: an open file of this VFS, on its connection's thread.
    unsafe {
        match flushed(file) {
            Ok((f, m)) => m.xRead.expect("xRead")(f, buf, amt, offset),
            Err(rc) => rc,
        }
    }
}

unsafe extern "C" fn x_write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amt: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS, on its connection's thread; `data`
    // holds `amt` bytes (SQLite's contract for xWrite).
    unsafe {
        let st = state(me);
        if !st.wal || amt < 0 {
            return methods(me).xWrite.expect("xWrite")(inner(me), data, amt, offset);
        }
        ASKED.fetch_add(1, Ordering::Relaxed);
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amt as usize);
        // A frame header whose "database size after commit" is set.
        let commit_header = bytes.len() == FRAME_HEADER && bytes[4..8] != [0, 0, 0, 0];
        if offset == st.end && st.held.len() + bytes.len() <= LIMIT {
            if st.held.is_empty() {
                st.start = offset;
            }
            st.held.extend_from_slice(bytes);
            st.end = offset + i64::from(amt);
            let commit = std::mem::replace(&mut st.commit_next, commit_header);
            return if commit { flush(me) } else { ffi::SQLITE_OK };
        }
        let rc = flush(me);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        MADE.fetch_add(1, Ordering::Relaxed);
        let st = state(me);
        let rc = methods(me).xWrite.expect("xWrite")(inner(me), data, amt, offset);
        st.end = if rc == ffi::SQLITE_OK {
            offset + i64::from(amt)
        } else {
            -1
        };
        st.commit_next = rc == ffi::SQLITE_OK && commit_header;
        rc
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    // SAFETY: an open file of this VFS, on its connection's thread.
    unsafe {
        match flushed(file) {
            Ok((f, m)) => m.xTruncate.expect("xTruncate")(f, size),
            Err(rc) => rc,
        }
    }
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: an open file of this VFS, on its connection's thread.
    unsafe {
        match flushed(file) {
            Ok((f, m)) => m.xSync.expect("xSync")(f, flags),
            Err(rc) => rc,
        }
    }
}

unsafe extern "C" fn x_file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: an open file of this VFS, on its connection's thread.
    unsafe {
        match flushed(file) {
            Ok((f, m)) => m.xFileSize.expect("xFileSize")(f, size),
            Err(rc) => rc,
        }
    }
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe { methods(me).xLock.expect("xLock")(inner(me), level) }
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe { methods(me).xUnlock.expect("xUnlock")(inner(me), level) }
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe { methods(me).xCheckReservedLock.expect("xCheckReservedLock")(inner(me), out) }
}

unsafe extern "C" fn x_file_control(
    file: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: an open file of this VFS, on its connection's thread.
    unsafe {
        match flushed(file) {
            Ok((f, m)) => m.xFileControl.expect("xFileControl")(f, op, arg),
            Err(rc) => rc,
        }
    }
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe { methods(me).xSectorSize.expect("xSectorSize")(inner(me)) }
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe {
        methods(me)
            .xDeviceCharacteristics
            .expect("xDeviceCharacteristics")(inner(me))
    }
}

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe {
        match methods(me).xShmMap {
            Some(f) => f(inner(me), page, size, extend, out),
            None => ffi::SQLITE_IOERR_SHMMAP,
        }
    }
}

unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe {
        match methods(me).xShmLock {
            Some(f) => f(inner(me), offset, n, flags),
            None => ffi::SQLITE_IOERR_SHMLOCK,
        }
    }
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS, on its connection's thread; its
    // linked WAL file, if any, is open and of the same connection.
    unsafe {
        let wal = state(me).wal_file;
        if !wal.is_null() {
            // Nothing is held here after a commit frame (x_write); this
            // is the second guard. A barrier cannot fail: a failed write
            // leaves the WAL's end unknown, so the next write starts over.
            let _ = flush(wal);
        }
        if let Some(f) = methods(me).xShmBarrier {
            f(inner(me));
        }
    }
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe {
        match methods(me).xShmUnmap {
            Some(f) => f(inner(me), delete),
            None => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_fetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: an open file of this VFS, on its connection's thread; `out`
    // is SQLite's.
    unsafe {
        match flushed(file) {
            Ok((f, m)) => match m.xFetch {
                Some(fetch) if m.iVersion >= 3 => fetch(f, offset, amt, out),
                _ => {
                    *out = ptr::null_mut();
                    ffi::SQLITE_OK
                }
            },
            Err(rc) => rc,
        }
    }
}

unsafe extern "C" fn x_unfetch(
    file: *mut ffi::sqlite3_file,
    offset: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    let me: *mut File = file.cast();
    // SAFETY: an open file of this VFS.
    unsafe {
        let m = methods(me);
        match m.xUnfetch {
            Some(f) if m.iVersion >= 3 => f(inner(me), offset, p),
            _ => ffi::SQLITE_OK,
        }
    }
}

unsafe extern "C" fn x_delete(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        (*p).xDelete.expect("xDelete")(p, name, sync_dir)
    }
}

unsafe extern "C" fn x_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        (*p).xAccess.expect("xAccess")(p, name, flags, out)
    }
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        (*p).xFullPathname.expect("xFullPathname")(p, name, n, out)
    }
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        (*p).xRandomness.expect("xRandomness")(p, n, out)
    }
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        (*p).xSleep.expect("xSleep")(p, micros)
    }
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        (*p).xCurrentTime.expect("xCurrentTime")(p, out)
    }
}

unsafe extern "C" fn x_get_last_error(
    vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        match (*p).xGetLastError {
            Some(f) => f(p, n, out),
            None => 0,
        }
    }
}

unsafe extern "C" fn x_current_time_int64(
    vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: forwarded to the default VFS with SQLite's own arguments.
    unsafe {
        let p = parent(vfs);
        match (*p).xCurrentTimeInt64 {
            Some(f) => f(p, out),
            None => {
                let mut days = 0.0;
                let rc = x_current_time(vfs, &mut days);
                *out = (days * 86_400_000.0) as ffi::sqlite3_int64;
                rc
            }
        }
    }
}
