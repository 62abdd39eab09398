//! Statements whose text parameters SQLite reads where they are, not
//! copied.
//!
//! rusqlite binds every text parameter with `SQLITE_TRANSIENT`: SQLite
//! allocates a buffer, copies the text into it, and frees it when the
//! parameter is bound again. The group commit's writer binds about 80
//! texts per message end to end (ids, statuses, event types, details), and
//! under callgrind a text bind cost about 300 instructions, half of them
//! that allocation, copy and free (bench/HISTORY.md, fifty-second
//! session). rusqlite keeps its statements' handles to itself, so a
//! statement bound any other way has to be prepared here.
//!
//! [`StaticBinds::on`] turns this on for one connection on the calling
//! thread (the writer's); while it is on, [`execute`] runs that
//! connection's writes, and [`query`] its reads, on statements of its own,
//! prepared once and kept, with each text bound `SQLITE_STATIC`: SQLite
//! reads it from the caller's string. A read's columns are handed to the
//! caller where SQLite holds them ([`Row`]). Every other connection and
//! thread, a text of several statements, and a read given to [`execute`],
//! is left to rusqlite (the call answers `None`).
//!
//! Why a text bound `SQLITE_STATIC` is never read after it is gone:
//! SQLite reads a static binding until the parameter is bound again or
//! the statement is finalized. [`execute`] and [`query`] bind, step and
//! reset the statement and then clear every binding
//! (`sqlite3_clear_bindings`, which makes them `NULL`) before they return,
//! on every path, errors and a panic of [`query`]'s caller included, while
//! they still borrow the parameters. Between two calls no binding points
//! anywhere. [`query`] takes its statement out of the kept ones while it
//! steps through the rows, so a caller that uses the connection for each
//! row (the same read included) never rebinds or resets a statement that
//! is running.
//!
//! Why a kept statement never outlives its connection: SQLite refuses to
//! close a connection while a statement of it is not finalized
//! (`sqlite3_close` answers `SQLITE_BUSY`, and rusqlite then leaves it
//! open), so a statement kept here always has a connection to run on and
//! to be finalized on. [`StaticBinds`] finalizes them when it is dropped
//! (or the thread's end does, if it never is), and each call checks that
//! the connection it is given is the one the statements were prepared on.

use foldhash::{HashMap, HashMapExt};
use rusqlite::ffi;
use rusqlite::types::ValueRef;
use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::ffi::{CStr, c_char, c_int};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

/// A parameter as [`execute`] and [`query`] bind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    /// `NULL`.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text, read by SQLite where it is.
    Text(&'a str),
}

/// A value [`execute`] and [`query`] can bind: a [`Param`] itself, or the caller's own
/// parameter type, converted as it is bound (no list of `Param`s made
/// first). An error fails the call before the statement runs.
pub trait Bind {
    /// The value as it is bound.
    fn param(&self) -> rusqlite::Result<Param<'_>>;
}

impl Bind for Param<'_> {
    fn param(&self) -> rusqlite::Result<Param<'_>> {
        Ok(*self)
    }
}

/// Statements kept per connection; past this many they are all finalized
/// and prepared again as they are used (the group commit's statements
/// are far fewer: its sets' texts are kept per shape, `statement_text`).
const KEPT: usize = 512;

struct Kept {
    /// The connection the statements belong to.
    db: *mut ffi::sqlite3,
    /// By their text (hashed with foldhash: std's SipHash over texts of
    /// hundreds of bytes cost more than the copies saved, callgrind).
    statements: HashMap<Box<str>, NonNull<ffi::sqlite3_stmt>>,
}

impl Kept {
    /// Keeps `stmt`, prepared on `self.db` from `sql`; past `KEPT` of
    /// them, the others are finalized first. If `sql` is kept already (a
    /// statement prepared again while `query` had lent it out), `stmt` is
    /// finalized instead.
    fn keep(&mut self, sql: Box<str>, stmt: NonNull<ffi::sqlite3_stmt>) {
        if self.statements.len() >= KEPT {
            self.finalize_all();
        }
        match self.statements.entry(sql) {
            Entry::Vacant(v) => {
                v.insert(stmt);
            }
            // SAFETY: `stmt` is a statement of `self.db`, which is open,
            // and is not kept (its text's is another).
            Entry::Occupied(_) => unsafe {
                ffi::sqlite3_finalize(stmt.as_ptr());
            },
        }
    }

    fn finalize_all(&mut self) {
        for (_, stmt) in self.statements.drain() {
            // SAFETY: each statement was prepared on `self.db`, which is
            // open (it cannot close while they exist, see the module's
            // documentation), and is finalized once: drained here.
            unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
        }
    }
}

/// Statements dropped are finalized: by the guard, or by the thread's end
/// if the guard never dropped (the connection, which could not close
/// while they existed, is still open).
impl Drop for Kept {
    fn drop(&mut self) {
        self.finalize_all();
    }
}

thread_local! {
    static KEPT_HERE: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

/// While alive, [`execute`] and [`query`] run the statements of one
/// connection on this thread with static text bindings. Dropping it
/// finalizes the statements it kept.
pub struct StaticBinds(());

impl StaticBinds {
    /// Turns static bindings on for `conn` on this thread (replacing any
    /// other connection's, whose statements are finalized).
    pub fn on(conn: &rusqlite::Connection) -> Self {
        // SAFETY: the handle is only compared and passed to SQLite while
        // the connection is open (see the module's documentation).
        let db = unsafe { conn.handle() };
        KEPT_HERE.with_borrow_mut(|k| {
            // Another connection's are finalized as they are replaced.
            *k = Some(Kept {
                db,
                statements: HashMap::new(),
            });
        });
        StaticBinds(())
    }

    /// How many statements this thread keeps (for tests).
    pub fn kept() -> usize {
        KEPT_HERE.with_borrow(|k| k.as_ref().map_or(0, |k| k.statements.len()))
    }
}

impl Drop for StaticBinds {
    fn drop(&mut self) {
        // Dropping them finalizes them (`Kept`'s `Drop`).
        KEPT_HERE.with_borrow_mut(|k| drop(k.take()));
    }
}

/// Runs `sql`, one statement that returns no rows, with `params` bound in
/// order, and answers how many rows it changed, if static bindings are on
/// for `conn` on this thread ([`StaticBinds::on`]). `None` if they are not
/// (rusqlite should run it), or if `sql` is not one statement.
pub fn execute<B: Bind>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[B],
) -> Option<rusqlite::Result<usize>> {
    // SAFETY: compared only (see `StaticBinds::on`).
    let db = unsafe { conn.handle() };
    KEPT_HERE.with_borrow_mut(|k| {
        let kept = k.as_mut().filter(|k| k.db == db)?;
        let stmt = match kept.statements.get(sql) {
            // A read kept by `query` is still rusqlite's to refuse.
            // SAFETY: a kept statement of `db`, which is open.
            Some(s) if unsafe { returns_rows(*s) } => return None,
            Some(s) => *s,
            None => {
                // SAFETY: `db` is this thread's open connection (checked
                // above); `sql` is valid for its length.
                let stmt = match unsafe { prepare(db, sql) } {
                    Ok(Some(s)) => s,
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                };
                // SAFETY: just prepared on `db`, which is open.
                if unsafe { returns_rows(stmt) } {
                    // `execute` leaves reads to rusqlite, which refuses
                    // them.
                    // SAFETY: as above; not kept, so finalized once, here.
                    unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
                    return None;
                }
                kept.keep(sql.into(), stmt);
                stmt
            }
        };
        // SAFETY: `stmt` is a statement of `db`, kept until finalized by
        // `Kept`; `run` clears its bindings before returning, so none
        // outlives `params`.
        Some(unsafe { run(db, stmt.as_ptr(), params) })
    })
}

/// Prepares `sql` on `db`; `None` if it is not exactly one statement.
///
/// # Safety
/// `db` is an open connection used by this thread only.
unsafe fn prepare(
    db: *mut ffi::sqlite3,
    sql: &str,
) -> rusqlite::Result<Option<NonNull<ffi::sqlite3_stmt>>> {
    let Ok(len) = c_int::try_from(sql.len()) else {
        return Ok(None);
    };
    let mut stmt = ptr::null_mut();
    let mut tail: *const c_char = ptr::null();
    // SAFETY: `sql` is valid for `len` bytes (no NUL needed with a
    // length); `stmt` and `tail` are written by SQLite.
    let rc = unsafe {
        ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr().cast(),
            len,
            ffi::SQLITE_PREPARE_PERSISTENT,
            &mut stmt,
            &mut tail,
        )
    };
    if rc != ffi::SQLITE_OK {
        // SAFETY: `db` is open; per this function's contract.
        return Err(unsafe { error(db, rc) });
    }
    let Some(stmt) = NonNull::new(stmt) else {
        // Only whitespace or a comment: rusqlite says what it says.
        return Ok(None);
    };
    // SAFETY: `tail` points into `sql` (SQLite's contract), at or before
    // its end.
    let used = unsafe { tail.offset_from(sql.as_ptr().cast()) };
    let rest = usize::try_from(used).ok().and_then(|u| sql.get(u..));
    // A text of several statements is left to rusqlite.
    if rest.is_none_or(|r| !r.trim().is_empty()) {
        // SAFETY: just prepared, never kept.
        unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
        return Ok(None);
    }
    Ok(Some(stmt))
}

/// Binds `params`, steps `stmt` to its end, resets it and clears its
/// bindings; answers the rows changed.
///
/// # Safety
/// `stmt` is a statement of `db`, an open connection used by this thread
/// only.
unsafe fn run<B: Bind>(
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    params: &[B],
) -> rusqlite::Result<usize> {
    // SAFETY: `stmt` and `db` per this function's contract. A text is
    // bound `SQLITE_STATIC` and read by SQLite only while `params` is
    // borrowed: the bindings are cleared below, before this returns, on
    // every path.
    let outcome = unsafe { bind_and_step(db, stmt, params) };
    // SAFETY: as above.
    unsafe { release(stmt) };
    outcome
}

/// Resets `stmt` and clears its bindings (makes them `NULL`), which ends
/// SQLite's use of the caller's texts. After a failed step,
/// `sqlite3_reset` answers the same error again; the step's is the one
/// callers keep.
///
/// # Safety
/// `stmt` is a statement of an open connection used by this thread only.
unsafe fn release(stmt: *mut ffi::sqlite3_stmt) {
    // SAFETY: per this function's contract.
    unsafe {
        ffi::sqlite3_reset(stmt);
        ffi::sqlite3_clear_bindings(stmt);
    }
}

/// `run`'s binding and stepping, without its reset.
///
/// # Safety
/// As `run`'s; the caller clears the bindings before `params` is gone.
unsafe fn bind_and_step<B: Bind>(
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    params: &[B],
) -> rusqlite::Result<usize> {
    // SAFETY: per this function's contract.
    unsafe {
        bind(db, stmt, params)?;
        match ffi::sqlite3_step(stmt) {
            ffi::SQLITE_DONE => {
                Ok(usize::try_from(ffi::sqlite3_changes64(db)).unwrap_or(usize::MAX))
            }
            ffi::SQLITE_ROW => Err(rusqlite::Error::ExecuteReturnedResults),
            rc => Err(error(db, rc)),
        }
    }
}

/// Binds `params` to `stmt` in order, each text `SQLITE_STATIC`.
///
/// # Safety
/// `stmt` is a statement of `db`, an open connection used by this thread
/// only, and not stepping; the caller clears the bindings before `params`
/// is gone.
unsafe fn bind<B: Bind>(
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
    params: &[B],
) -> rusqlite::Result<()> {
    // SAFETY: every call is on `stmt` and `db` as this function's contract
    // says; each text is valid for its length while `params` is borrowed,
    // which outlasts the binding (the caller clears it).
    unsafe {
        let expected = ffi::sqlite3_bind_parameter_count(stmt);
        if usize::try_from(expected).ok() != Some(params.len()) {
            return Err(rusqlite::Error::InvalidParameterCount(
                params.len(),
                usize::try_from(expected).unwrap_or(0),
            ));
        }
        for (i, p) in (1..).zip(params) {
            let rc = match p.param()? {
                Param::Null => ffi::sqlite3_bind_null(stmt, i),
                Param::Int(v) => ffi::sqlite3_bind_int64(stmt, i, v),
                Param::Real(v) => ffi::sqlite3_bind_double(stmt, i, v),
                Param::Text(s) => ffi::sqlite3_bind_text64(
                    stmt,
                    i,
                    s.as_ptr().cast(),
                    s.len() as ffi::sqlite3_uint64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                ),
            };
            if rc != ffi::SQLITE_OK {
                return Err(error(db, rc));
            }
        }
    }
    Ok(())
}

/// Whether `stmt` returns rows (has result columns).
///
/// # Safety
/// `stmt` is a statement of an open connection.
unsafe fn returns_rows(stmt: NonNull<ffi::sqlite3_stmt>) -> bool {
    // SAFETY: per this function's contract.
    unsafe { ffi::sqlite3_column_count(stmt.as_ptr()) > 0 }
}

/// Runs `sql`, one statement, with `params` bound in order, and hands each
/// row it returns to `each` until `each` answers `false` or the rows end,
/// if static bindings are on for `conn` on this thread
/// ([`StaticBinds::on`]). `None` if they are not (rusqlite should run
/// it), or if `sql` is not one statement. An error of `each` ends the
/// call with it.
///
/// The statement is taken out of the kept ones while it runs and put back
/// after, so `each` may use the connection, kept statements included (the
/// same text is then prepared again beside it), and a panic in `each`
/// still resets it and clears its bindings.
pub fn query<B: Bind, E: From<rusqlite::Error>>(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[B],
    mut each: impl FnMut(&Row<'_>) -> Result<bool, E>,
) -> Option<Result<(), E>> {
    // SAFETY: compared only (see `StaticBinds::on`).
    let db = unsafe { conn.handle() };
    let lent = KEPT_HERE.with_borrow_mut(|k| {
        let kept = k.as_mut().filter(|k| k.db == db)?;
        if let Some((sql, stmt)) = kept.statements.remove_entry(sql) {
            return Some(Ok(Lent { db, sql, stmt }));
        }
        // SAFETY: `db` is this thread's open connection (checked above);
        // `sql` is valid for its length.
        match unsafe { prepare(db, sql) } {
            Ok(Some(stmt)) => Some(Ok(Lent {
                db,
                sql: sql.into(),
                stmt,
            })),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    })?;
    let lent = match lent {
        Ok(lent) => lent,
        Err(e) => return Some(Err(e.into())),
    };
    let stmt = lent.stmt.as_ptr();
    // SAFETY: `stmt` is a statement of `db`, open while `conn` is
    // borrowed, and not stepping (a kept statement is reset, and this one
    // is lent to no other call). Its texts are bound `SQLITE_STATIC` and
    // read while `params` is borrowed: `lent`'s drop, at the end of this
    // call on every path, panics included, resets the statement and clears
    // them.
    if let Err(e) = unsafe { bind(db, stmt, params) } {
        return Some(Err(e.into()));
    }
    let outcome = loop {
        // SAFETY: as above; bound, and stepped by this call alone.
        match unsafe { ffi::sqlite3_step(stmt) } {
            ffi::SQLITE_ROW => {
                let row = Row {
                    stmt: lent.stmt,
                    _stepping: PhantomData,
                };
                match each(&row) {
                    Ok(true) => {}
                    Ok(false) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
            ffi::SQLITE_DONE => break Ok(()),
            // SAFETY: `db` is open (above).
            rc => break Err(E::from(unsafe { error(db, rc) })),
        }
    };
    drop(lent);
    Some(outcome)
}

/// A statement `query` has taken out of the kept ones. Dropped, it is
/// reset, its bindings are cleared and it is kept again, or finalized if
/// it cannot be (the guard is gone, or the same text was kept again while
/// it was out).
struct Lent {
    db: *mut ffi::sqlite3,
    sql: Box<str>,
    stmt: NonNull<ffi::sqlite3_stmt>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let stmt = self.stmt;
        // SAFETY: a statement of `self.db`, which is open while the
        // `query` that lent it borrows its connection; released, no
        // binding points at the caller's texts.
        unsafe { release(stmt.as_ptr()) };
        let sql = std::mem::take(&mut self.sql);
        let kept = KEPT_HERE
            .try_with(|k| match k.try_borrow_mut() {
                Ok(mut k) => match k.as_mut().filter(|k| k.db == self.db) {
                    Some(kept) => {
                        kept.keep(sql, stmt);
                        true
                    }
                    None => false,
                },
                Err(_) => false,
            })
            .unwrap_or(false);
        if !kept {
            // SAFETY: as above; not kept, so finalized once, here.
            unsafe { ffi::sqlite3_finalize(stmt.as_ptr()) };
        }
    }
}

/// A row of a statement [`query`] is stepping through: its columns, read
/// where SQLite holds them, valid until the next step.
pub struct Row<'s> {
    stmt: NonNull<ffi::sqlite3_stmt>,
    _stepping: PhantomData<&'s ()>,
}

impl Row<'_> {
    /// How many columns the row has.
    pub fn column_count(&self) -> usize {
        // SAFETY: the statement is lent to the `query` that made this row
        // and is on it while the row is borrowed.
        let n = unsafe { ffi::sqlite3_column_count(self.stmt.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Column `i` as SQLite holds it, as rusqlite's `Row::get_ref` answers
    /// it: typed by the value, not by the column's declaration.
    pub fn get_ref(&self, i: usize) -> rusqlite::Result<ValueRef<'_>> {
        let col = c_int::try_from(i)
            .ok()
            .filter(|_| i < self.column_count())
            .ok_or(rusqlite::Error::InvalidColumnIndex(i))?;
        let stmt = self.stmt.as_ptr();
        // SAFETY: `stmt` is on this row (see `column_count`) and `col` is
        // one of its columns. A text's or blob's pointer is asked for
        // before its length, as SQLite advises; both stay valid until the
        // statement steps again or is reset, which cannot happen while the
        // answer borrows the row.
        unsafe {
            Ok(match ffi::sqlite3_column_type(stmt, col) {
                ffi::SQLITE_NULL => ValueRef::Null,
                ffi::SQLITE_INTEGER => ValueRef::Integer(ffi::sqlite3_column_int64(stmt, col)),
                ffi::SQLITE_FLOAT => ValueRef::Real(ffi::sqlite3_column_double(stmt, col)),
                ffi::SQLITE_TEXT => {
                    // Never null for a text, even an empty one, unless
                    // SQLite could not allocate it.
                    let p = ffi::sqlite3_column_text(stmt, col);
                    if p.is_null() {
                        return Err(no_memory());
                    }
                    ValueRef::Text(bytes(p, ffi::sqlite3_column_bytes(stmt, col))?)
                }
                _ => {
                    let p = ffi::sqlite3_column_blob(stmt, col).cast::<u8>();
                    ValueRef::Blob(bytes(p, ffi::sqlite3_column_bytes(stmt, col))?)
                }
            })
        }
    }
}

/// A column's text or blob: `len` bytes at `p`. SQLite answers a null
/// pointer for an empty blob, and for one it could not allocate.
///
/// # Safety
/// `p` is null or valid for `len` bytes for `'a`.
unsafe fn bytes<'a>(p: *const u8, len: c_int) -> rusqlite::Result<&'a [u8]> {
    let len = usize::try_from(len).unwrap_or(0);
    match (p.is_null(), len) {
        (true, 0) => Ok(&[]),
        (true, _) => Err(no_memory()),
        // SAFETY: per this function's contract.
        (false, _) => Ok(unsafe { std::slice::from_raw_parts(p, len) }),
    }
}

/// SQLite could not allocate a column's value.
fn no_memory() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_NOMEM), None)
}

/// The connection's error for `rc`, as rusqlite reports one.
///
/// # Safety
/// `db` is an open connection.
unsafe fn error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
    // SAFETY: per this function's contract; SQLite's message is a valid C
    // string until the next call on the connection, and is copied here.
    let (code, message) = unsafe {
        let code = ffi::sqlite3_extended_errcode(db);
        let msg = ffi::sqlite3_errmsg(db);
        let message = (!msg.is_null()).then(|| CStr::from_ptr(msg).to_string_lossy().into_owned());
        (code, message)
    };
    // The extended code names the same failure as `rc`, more precisely,
    // unless another call has set it since; then `rc` is what failed.
    let code = if code & 0xff == rc & 0xff { code } else { rc };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;
    use rusqlite::types::Value;

    fn db() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE t (id TEXT PRIMARY KEY, n INTEGER, f REAL, note TEXT);
             CREATE UNIQUE INDEX t_by_note ON t (note);",
        )
        .unwrap();
        c
    }

    /// A row of `t`: id, n, f, note.
    type TRow = (String, Option<i64>, Option<f64>, Option<String>);

    fn rows(c: &Connection) -> Vec<TRow> {
        let mut s = c
            .prepare("SELECT id, n, f, note FROM t ORDER BY id")
            .unwrap();
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    const INSERT: &str = "INSERT INTO t (id, n, f, note) VALUES (?1, ?2, ?3, ?4)";

    #[test]
    fn off_unless_turned_on_for_this_connection() {
        let c = db();
        assert!(execute(&c, INSERT, &[Param::Text("a"); 4]).is_none());
        let other = db();
        let _on = StaticBinds::on(&other);
        assert!(execute(&c, INSERT, &[Param::Text("a"); 4]).is_none());
        assert!(rows(&c).is_empty());
    }

    #[test]
    fn binds_every_kind_and_counts_changes() {
        let c = db();
        let _on = StaticBinds::on(&c);
        let params = [
            Param::Text("a"),
            Param::Int(7),
            Param::Real(1.5),
            Param::Text("héllo, wörld"),
        ];
        assert_eq!(execute(&c, INSERT, &params).unwrap().unwrap(), 1);
        let nulls = [Param::Text("b"), Param::Null, Param::Null, Param::Null];
        assert_eq!(execute(&c, INSERT, &nulls).unwrap().unwrap(), 1);
        let update = "UPDATE t SET n = ?1 WHERE id IN (?2, ?3)";
        let params = [Param::Int(9), Param::Text("a"), Param::Text("b")];
        assert_eq!(execute(&c, update, &params).unwrap().unwrap(), 2);
        assert_eq!(
            rows(&c),
            vec![
                ("a".into(), Some(9), Some(1.5), Some("héllo, wörld".into())),
                ("b".into(), Some(9), None, None),
            ]
        );
        assert_eq!(StaticBinds::kept(), 2);
    }

    /// The texts are the caller's, gone after the call: what was stored is
    /// SQLite's own copy, and a later statement run without those texts
    /// sees no binding left behind.
    #[test]
    fn nothing_bound_outlives_the_call() {
        let c = db();
        let _on = StaticBinds::on(&c);
        for i in 0..100 {
            let id = format!("id-{i:03}");
            let note = "x".repeat(i);
            let params = [
                Param::Text(&id),
                Param::Int(i as i64),
                Param::Null,
                Param::Text(&note),
            ];
            execute(&c, INSERT, &params).unwrap().unwrap();
            drop((id, note));
        }
        let stored = rows(&c);
        assert_eq!(stored.len(), 100);
        for (i, (id, n, _, note)) in stored.iter().enumerate() {
            assert_eq!(id, &format!("id-{i:03}"));
            assert_eq!(*n, Some(i as i64));
            assert_eq!(note.as_deref(), Some("x".repeat(i).as_str()));
        }
        // The kept statement's parameters are NULL between calls: SQLite's
        // text of it with its bindings expanded names none of the texts.
        KEPT_HERE.with_borrow(|k| {
            let stmt = k.as_ref().unwrap().statements[INSERT].as_ptr();
            // SAFETY: the statement is this thread's, kept and open; the
            // expanded text is SQLite's, freed with sqlite3_free.
            let expanded = unsafe {
                let p = ffi::sqlite3_expanded_sql(stmt);
                assert!(!p.is_null());
                let s = CStr::from_ptr(p).to_string_lossy().into_owned();
                ffi::sqlite3_free(p.cast());
                s
            };
            assert_eq!(
                expanded,
                "INSERT INTO t (id, n, f, note) VALUES (NULL, NULL, NULL, NULL)"
            );
        });
    }

    #[test]
    fn errors_are_rusqlites_and_leave_the_statement_usable() {
        let c = db();
        let _on = StaticBinds::on(&c);
        let a = [
            Param::Text("a"),
            Param::Int(1),
            Param::Null,
            Param::Text("same"),
        ];
        execute(&c, INSERT, &a).unwrap().unwrap();
        let b = [
            Param::Text("b"),
            Param::Int(2),
            Param::Null,
            Param::Text("same"),
        ];
        match execute(&c, INSERT, &b).unwrap() {
            Err(rusqlite::Error::SqliteFailure(f, Some(msg))) => {
                assert_eq!(f.code, rusqlite::ErrorCode::ConstraintViolation);
                assert_eq!(f.extended_code, ffi::SQLITE_CONSTRAINT_UNIQUE);
                assert!(msg.contains("t.note"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        match execute(&c, INSERT, &a[..3]).unwrap() {
            Err(rusqlite::Error::InvalidParameterCount(3, 4)) => {}
            other => panic!("{other:?}"),
        }
        match execute(&c, "INSERT INTO nowhere VALUES (?1)", &[Param::Null]).unwrap() {
            Err(rusqlite::Error::SqliteFailure(_, Some(msg))) => {
                assert!(msg.contains("nowhere"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
        let c2 = [
            Param::Text("c"),
            Param::Int(3),
            Param::Null,
            Param::Text("other"),
        ];
        assert_eq!(execute(&c, INSERT, &c2).unwrap().unwrap(), 1);
        assert_eq!(rows(&c).len(), 2);
    }

    #[test]
    fn reads_and_several_statements_are_left_to_rusqlite() {
        let c = db();
        let _on = StaticBinds::on(&c);
        assert!(execute(&c, "SELECT id FROM t WHERE id = ?1", &[Param::Text("a")]).is_none());
        let returning = "INSERT INTO t (id) VALUES (?1) RETURNING id";
        assert!(execute(&c, returning, &[Param::Text("a")]).is_none());
        let two = "UPDATE t SET n = 1; UPDATE t SET n = 2";
        assert!(execute::<Param>(&c, two, &[]).is_none());
        assert!(execute::<Param>(&c, "  -- nothing\n", &[]).is_none());
        assert!(rows(&c).is_empty());
        assert_eq!(StaticBinds::kept(), 0);
    }

    /// Stores the row `a` with every other column `NULL`, on a kept
    /// statement.
    fn insert_a(c: &Connection) {
        let params = [Param::Text("a"), Param::Null, Param::Null, Param::Null];
        assert_eq!(execute(c, INSERT, &params).unwrap().unwrap(), 1);
    }

    #[test]
    fn statements_are_finalized_when_turned_off() {
        let c = db();
        {
            let _on = StaticBinds::on(&c);
            insert_a(&c);
            assert_eq!(StaticBinds::kept(), 1);
        }
        assert_eq!(StaticBinds::kept(), 0);
        // No statement of the connection is left: it closes.
        c.close().map_err(|(_, e)| e).unwrap();
    }

    /// A guard that never drops (forgotten here) still leaves nothing
    /// behind: the thread's end finalizes its statements, and the
    /// connection, which outlived the thread, then closes.
    #[test]
    fn statements_are_finalized_when_their_thread_ends() {
        let c = std::thread::spawn(|| {
            let c = db();
            let on = StaticBinds::on(&c);
            insert_a(&c);
            std::mem::forget(on);
            c
        })
        .join()
        .unwrap();
        assert_eq!(rows(&c).len(), 1);
        c.close().map_err(|(_, e)| e).unwrap();
    }

    #[test]
    fn many_statements_are_kept_up_to_the_bound() {
        let c = db();
        let _on = StaticBinds::on(&c);
        for i in 0..KEPT + 10 {
            let sql = format!("UPDATE t SET n = {i} WHERE id = ?1");
            assert_eq!(
                execute(&c, &sql, &[Param::Text("none")]).unwrap().unwrap(),
                0
            );
        }
        assert!(StaticBinds::kept() <= KEPT);
        assert!(StaticBinds::kept() >= 10);
    }

    fn owned(v: ValueRef<'_>) -> Value {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Integer(i),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8(t.to_vec()).unwrap()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        }
    }

    /// Every row of `sql` read by [`query`], each column as an owned value.
    fn read_all(c: &Connection, sql: &str, params: &[Param]) -> Vec<Vec<Value>> {
        let mut out = Vec::new();
        query(c, sql, params, |r| {
            let row = (0..r.column_count())
                .map(|i| r.get_ref(i).map(owned))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.push(row);
            Ok::<_, rusqlite::Error>(true)
        })
        .expect("kept statements are on")
        .unwrap();
        out
    }

    const BY_ID: &str = "SELECT id, n FROM t WHERE id >= ?1 ORDER BY id";

    fn insert_abc(c: &Connection) {
        for (id, n) in [("a", 1), ("b", 2), ("c", 3)] {
            let params = [Param::Text(id), Param::Int(n), Param::Null, Param::Null];
            execute(c, INSERT, &params).unwrap().unwrap();
        }
    }

    #[test]
    fn query_is_off_unless_turned_on_for_this_connection() {
        let c = db();
        let nothing = |_: &Row<'_>| -> rusqlite::Result<bool> { panic!("read on rusqlite's") };
        assert!(query(&c, BY_ID, &[Param::Text("")], nothing).is_none());
        let other = db();
        let _on = StaticBinds::on(&other);
        assert!(query(&c, BY_ID, &[Param::Text("")], nothing).is_none());
        assert_eq!(StaticBinds::kept(), 0);
    }

    #[test]
    fn query_reads_every_kind_of_value() {
        let c = db();
        let _on = StaticBinds::on(&c);
        let params = [
            Param::Text("a"),
            Param::Int(-7),
            Param::Real(2.5),
            Param::Text("héllo"),
        ];
        execute(&c, INSERT, &params).unwrap().unwrap();
        let nulls = [Param::Text("b"), Param::Null, Param::Null, Param::Text("")];
        execute(&c, INSERT, &nulls).unwrap().unwrap();
        let sql = "SELECT id, n, f, note, x'00ff', x'' FROM t WHERE id IN (?1, ?2) ORDER BY id";
        let rows = read_all(&c, sql, &[Param::Text("a"), Param::Text("b")]);
        use Value::*;
        assert_eq!(
            rows,
            vec![
                vec![
                    Text("a".into()),
                    Integer(-7),
                    Real(2.5),
                    Text("héllo".into()),
                    Blob(vec![0, 0xff]),
                    Blob(vec![]),
                ],
                vec![
                    Text("b".into()),
                    Null,
                    Null,
                    Text("".into()),
                    Blob(vec![0, 0xff]),
                    Blob(vec![]),
                ],
            ]
        );
        // A column past the last is refused, as rusqlite refuses it.
        let mut refused = None;
        query(&c, sql, &[Param::Text("a"), Param::Null], |r| {
            refused = Some(r.get_ref(6).map(owned));
            Ok::<_, rusqlite::Error>(false)
        })
        .unwrap()
        .unwrap();
        assert!(
            matches!(refused, Some(Err(rusqlite::Error::InvalidColumnIndex(6)))),
            "{refused:?}"
        );
        // The insert and the read are kept.
        assert_eq!(StaticBinds::kept(), 2);
    }

    /// A read stopped early is reset: the next one starts again from the
    /// first row. And no binding is left once it returns.
    #[test]
    fn query_stops_when_asked_and_leaves_nothing_bound() {
        let c = db();
        let _on = StaticBinds::on(&c);
        insert_abc(&c);
        let mut seen = 0;
        let from = String::from("a");
        query(&c, BY_ID, &[Param::Text(&from)], |_| {
            seen += 1;
            Ok::<_, rusqlite::Error>(false)
        })
        .unwrap()
        .unwrap();
        drop(from);
        assert_eq!(seen, 1);
        let rows = read_all(&c, BY_ID, &[Param::Text("b")]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][0], Value::Text("b".into()));
        KEPT_HERE.with_borrow(|k| {
            let stmt = k.as_ref().unwrap().statements[BY_ID].as_ptr();
            // SAFETY: as in `nothing_bound_outlives_the_call`.
            let expanded = unsafe {
                let p = ffi::sqlite3_expanded_sql(stmt);
                let s = CStr::from_ptr(p).to_string_lossy().into_owned();
                ffi::sqlite3_free(p.cast());
                s
            };
            assert_eq!(expanded, "SELECT id, n FROM t WHERE id >= NULL ORDER BY id");
        });
    }

    /// While a read walks its rows, the same connection writes and runs
    /// the same read again, on kept statements; the outer read goes on
    /// where it was, and nothing is left behind.
    #[test]
    fn query_may_use_the_connection_while_it_reads() {
        let c = db();
        c.execute_batch("CREATE TABLE seen (id TEXT, inner_rows INTEGER)")
            .unwrap();
        {
            let _on = StaticBinds::on(&c);
            insert_abc(&c);
            let mut outer = Vec::new();
            query(&c, BY_ID, &[Param::Text("a")], |r| {
                let id = r.get_ref(0)?.as_str().unwrap().to_owned();
                let inner = read_all(&c, BY_ID, &[Param::Text(&id)]).len() as i64;
                let insert = "INSERT INTO seen (id, inner_rows) VALUES (?1, ?2)";
                execute(&c, insert, &[Param::Text(&id), Param::Int(inner)])
                    .unwrap()
                    .unwrap();
                outer.push(id);
                Ok::<_, rusqlite::Error>(true)
            })
            .unwrap()
            .unwrap();
            assert_eq!(outer, ["a", "b", "c"]);
            let seen = read_all(&c, "SELECT id, inner_rows FROM seen ORDER BY id", &[]);
            let want: Vec<Vec<Value>> = [("a", 3), ("b", 2), ("c", 1)]
                .into_iter()
                .map(|(id, n)| vec![Value::Text(id.into()), Value::Integer(n)])
                .collect();
            assert_eq!(seen, want);
            // The insert into `t`, the read (kept once: the inner one's copy
            // was finalized when the outer came back), the insert into
            // `seen` and the last read.
            assert_eq!(StaticBinds::kept(), 4);
        }
        c.close().map_err(|(_, e)| e).unwrap();
    }

    #[test]
    fn query_errors_and_panics_leave_the_statement_usable() {
        let c = db();
        {
            let _on = StaticBinds::on(&c);
            insert_abc(&c);
            // The caller's error ends the read with it.
            let err = query(&c, BY_ID, &[Param::Text("a")], |_| {
                Err::<bool, _>(rusqlite::Error::InvalidQuery)
            })
            .unwrap();
            assert!(matches!(err, Err(rusqlite::Error::InvalidQuery)), "{err:?}");
            // SQLite's, from a step.
            let bad = "SELECT json(?1)";
            let err = query(&c, bad, &[Param::Text("{not json")], |_| {
                Ok::<_, rusqlite::Error>(true)
            })
            .unwrap();
            match err {
                Err(rusqlite::Error::SqliteFailure(_, Some(msg))) => {
                    assert!(msg.contains("JSON"), "{msg}")
                }
                other => panic!("{other:?}"),
            }
            // A wrong number of parameters, and a text that is not SQL.
            let err = query(&c, BY_ID, &[] as &[Param], |_| {
                Ok::<_, rusqlite::Error>(true)
            });
            assert!(
                matches!(err, Some(Err(rusqlite::Error::InvalidParameterCount(0, 1)))),
                "{err:?}"
            );
            let err = query(&c, "SELEKT 1", &[] as &[Param], |_| {
                Ok::<_, rusqlite::Error>(true)
            });
            assert!(
                matches!(err, Some(Err(rusqlite::Error::SqliteFailure(..)))),
                "{err:?}"
            );
            // A panic in the middle of the rows.
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                query(
                    &c,
                    BY_ID,
                    &[Param::Text("a")],
                    |_| -> rusqlite::Result<bool> { panic!("the caller's") },
                )
            }));
            assert!(caught.is_err());
            assert_eq!(read_all(&c, BY_ID, &[Param::Text("a")]).len(), 3);
            assert_eq!(
                read_all(&c, bad, &[Param::Text("[1]")]),
                [[Value::Text("[1]".into())]]
            );
        }
        // Nothing was left unfinalized.
        c.close().map_err(|(_, e)| e).unwrap();
    }

    /// A read kept by `query` stays rusqlite's to run (and refuse) when it
    /// comes to `execute`; a write with `RETURNING` reads through `query`.
    #[test]
    fn execute_leaves_reads_to_rusqlite_even_when_kept() {
        let c = db();
        let _on = StaticBinds::on(&c);
        insert_abc(&c);
        assert_eq!(read_all(&c, BY_ID, &[Param::Text("c")]).len(), 1);
        assert!(execute(&c, BY_ID, &[Param::Text("a")]).is_none());
        let returning = "INSERT INTO t (id) VALUES (?1) RETURNING id";
        assert_eq!(
            read_all(&c, returning, &[Param::Text("d")]),
            [[Value::Text("d".into())]]
        );
        assert!(execute(&c, returning, &[Param::Text("e")]).is_none());
        assert_eq!(rows(&c).len(), 4);
    }
}
