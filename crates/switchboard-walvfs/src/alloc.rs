//! SQLite's memory through jemalloc (feature `jemalloc`).
//!
//! SQLite allocates with the C library's `malloc` unless it is told
//! otherwise, so in a server whose Rust allocator is jemalloc every page
//! cache, statement and B-tree cursor of SQLite was on glibc's allocator.
//! glibc gives the free top of a thread's arena back to the kernel
//! (`madvise(MADV_DONTNEED)`) as soon as more than 128 KiB of it is free,
//! and a thread that runs one transaction after another frees that memory
//! and takes it again at every one. In e2e (bench/HISTORY.md, "Twenty-ninth
//! session") the simulator's ledger thread spent 45% of its time in
//! `madvise`, nearly all of it in the TLB shootdown that follows (an
//! interrupt to the other CPU, a VM exit on a virtual machine), and 11%
//! faulting the zeroed pages back; the writer spent 6% on the same.
//! jemalloc keeps freed pages for a while (its decay) and gives back only
//! what stays unused.
//!
//! [`route_sqlite_to_jemalloc`] must run before SQLite is initialised,
//! that is before the first connection is opened or VFS registered; the
//! server's `main` calls it first.

use rusqlite::ffi;
use std::ffi::{c_int, c_void};
use std::ptr;

/// The size SQLite asked for, as jemalloc takes it (SQLite never asks for
/// less than one byte, and a negative size would be its bug: one byte).
fn size(n: c_int) -> usize {
    usize::try_from(n).unwrap_or(0).max(1)
}

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    // SAFETY: jemalloc's `malloc` takes any size and returns null when it
    // cannot allocate, which is what SQLite expects of `xMalloc`.
    unsafe { tikv_jemalloc_sys::malloc(size(n)) }
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    // SAFETY: SQLite frees only what `x_malloc` or `x_realloc` returned
    // (or null, which `free` ignores), once.
    unsafe { tikv_jemalloc_sys::free(p) }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: `p` came from `x_malloc` or `x_realloc` (SQLite calls
    // `xRealloc` with neither a null pointer nor a zero size); on failure
    // `realloc` returns null and leaves `p` allocated, as SQLite expects.
    unsafe { tikv_jemalloc_sys::realloc(p, size(n)) }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    // SAFETY: `p` is a live allocation of jemalloc's (see `x_free`).
    let n = unsafe { tikv_jemalloc_sys::malloc_usable_size(p) };
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    // As SQLite's own allocator rounds: to a multiple of 8 (its memory
    // statistics, which this build does not keep, are all it is used for).
    n.saturating_add(7) & !7
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

/// Makes SQLite allocate through jemalloc, the server's allocator. Fails
/// (and changes nothing) if SQLite is already initialised in this process.
///
/// Call it before any thread touches SQLite: SQLite's configuration is
/// not thread-safe, and a connection opened on another thread at the same
/// moment would race with it. The server's `main` calls it before it
/// starts a thread.
pub fn route_sqlite_to_jemalloc() -> Result<(), String> {
    let methods = ffi::sqlite3_mem_methods {
        xMalloc: Some(x_malloc),
        xFree: Some(x_free),
        xRealloc: Some(x_realloc),
        xSize: Some(x_size),
        xRoundup: Some(x_roundup),
        xInit: Some(x_init),
        xShutdown: Some(x_shutdown),
        pAppData: ptr::null_mut(),
    };
    // SAFETY: `SQLITE_CONFIG_MALLOC` takes one pointer to a
    // `sqlite3_mem_methods`, which SQLite copies before it returns, so the
    // local lives long enough; its functions are `'static`. SQLite refuses
    // the call with `SQLITE_MISUSE` once it is initialised; no other thread
    // uses SQLite yet (the function's documented condition).
    let rc = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_MALLOC,
            &methods as *const ffi::sqlite3_mem_methods,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!(
            "SQLite refused its allocator (error {rc}): it was already initialised"
        ))
    }
}
