//! One SQL layer, two drivers.
//!
//! The store's SQL is written once against `Db`, which runs it on SQLite
//! (rusqlite) or PostgreSQL (the synchronous `postgres` client, always on a
//! blocking thread). Statements use SQLite's `?1` placeholders; for
//! PostgreSQL they are rewritten to `$1` once and the prepared statement is
//! cached per connection. Values cross as `V` and come back through
//! `FromCol`, converting by the column's actual type, so one schema may say
//! `INTEGER` (SQLite) where the other says `BIGINT`.
//!
//! *Boundary*: the few places where the dialects differ ask `Db::is_pg`
//! (row locks with `FOR UPDATE [SKIP LOCKED]`, JSON functions); everything
//! else is plain SQL both engines run the same way.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt::Write as _;

use bytes::BufMut;
use postgres_types::{IsNull, ToSql as PgToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};

/// A failure of either driver, or a value that does not fit its column.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite.
    #[error("sqlite: {0}")]
    Lite(#[from] rusqlite::Error),
    /// PostgreSQL.
    #[error("postgres: {}", pg_message(.0))]
    Pg(#[from] postgres::Error),
    /// A query that must return a row returned none.
    #[error("the query returned no rows")]
    NoRows,
    /// A column could not be read as the wanted type.
    #[error("column {0}: {1}")]
    Type(usize, String),
}

/// The server's own message (and code) when there is one: `db error` alone
/// tells an operator nothing.
fn pg_message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl DbError {
    /// A unique or primary-key constraint refused the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            DbError::Lite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::ConstraintViolation
            }
            DbError::Pg(e) => e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }
}

/// `Ok(None)` for `NoRows`.
pub trait OptionalExt<T> {
    /// The row, if there was one.
    fn optional(self) -> Result<Option<T>, DbError>;
}

impl<T> OptionalExt<T> for Result<T, DbError> {
    fn optional(self) -> Result<Option<T>, DbError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A parameter value. Text borrows from the caller where it can: a batch
/// of inserts binds thousands of strings, and copying each one was a third
/// of the writer thread's time (malloc, free and glibc's consolidation of
/// the large parameter vectors).
#[derive(Debug, Clone, PartialEq)]
pub enum V<'a> {
    /// NULL.
    Null,
    /// An integer (also booleans, as 0/1, on SQLite).
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(Cow<'a, str>),
    /// A boolean.
    Bool(bool),
}

impl From<String> for V<'_> {
    fn from(s: String) -> Self {
        V::Text(Cow::Owned(s))
    }
}

/// A Rust value that can be a parameter (taken by reference, so `p!` never
/// moves its arguments).
pub trait ToV {
    /// The parameter value.
    fn to_v(&self) -> V<'_>;
}

macro_rules! int_to_v {
    ($($t:ty),*) => {$(
        impl ToV for $t {
            fn to_v(&self) -> V<'_> {
                V::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_to_v!(i64, i32, u32, u64, usize, u16, u8);

impl ToV for bool {
    fn to_v(&self) -> V<'_> {
        V::Bool(*self)
    }
}
impl ToV for f64 {
    fn to_v(&self) -> V<'_> {
        V::Real(*self)
    }
}
impl ToV for str {
    fn to_v(&self) -> V<'_> {
        V::Text(Cow::Borrowed(self))
    }
}
impl ToV for String {
    fn to_v(&self) -> V<'_> {
        V::Text(Cow::Borrowed(self.as_str()))
    }
}
impl ToV for V<'_> {
    fn to_v(&self) -> V<'_> {
        match self {
            V::Text(s) => V::Text(Cow::Borrowed(s.as_ref())),
            V::Null => V::Null,
            V::Int(i) => V::Int(*i),
            V::Real(f) => V::Real(*f),
            V::Bool(b) => V::Bool(*b),
        }
    }
}
impl<T: ToV> ToV for Option<T> {
    fn to_v(&self) -> V<'_> {
        self.as_ref().map_or(V::Null, ToV::to_v)
    }
}
impl<T: ToV + ?Sized> ToV for &T {
    fn to_v(&self) -> V<'_> {
        (**self).to_v()
    }
}
impl<'a, T: ToV + ?Sized> From<&'a T> for V<'a> {
    fn from(v: &'a T) -> V<'a> {
        v.to_v()
    }
}

/// Parameters for `Db` calls: `p![a, b, c]` (by reference).
macro_rules! p {
    ($($x:expr),* $(,)?) => {
        &[$($crate::sql::db::ToV::to_v(&$x)),*][..]
    };
}
pub(crate) use p;

impl rusqlite::ToSql for V<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            V::Null => ValueRef::Null,
            V::Int(i) => ValueRef::Integer(*i),
            V::Real(f) => ValueRef::Real(*f),
            V::Text(s) => ValueRef::Text(s.as_bytes()),
            V::Bool(b) => ValueRef::Integer(i64::from(*b)),
        }))
    }
}

type BoxErr = Box<dyn StdError + Sync + Send>;

impl PgToSql for V<'_> {
    fn to_sql(&self, ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxErr> {
        let int = |i: i64, out: &mut bytes::BytesMut| -> Result<IsNull, BoxErr> {
            match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR => i.to_string().as_str().to_sql(ty, out),
                _ => Err(format!("cannot send an integer as {ty}").into()),
            }
        };
        match self {
            V::Null => Ok(IsNull::Yes),
            V::Int(i) => int(*i, out),
            V::Bool(b) if *ty == Type::BOOL => b.to_sql(ty, out),
            V::Bool(b) => int(i64::from(*b), out),
            V::Real(f) => match *ty {
                Type::FLOAT8 => f.to_sql(ty, out),
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => Err(format!("cannot send a float as {ty}").into()),
            },
            V::Text(s) => match *ty {
                Type::JSONB => {
                    out.put_u8(1);
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                Type::JSON => {
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                }
                _ => s.as_ref().to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A value read from a row, before conversion to the wanted type.
#[derive(Debug, Clone)]
pub enum Cell {
    /// NULL.
    Null,
    /// Integer (or boolean).
    Int(i64),
    /// Float.
    Real(f64),
    /// Text.
    Text(String),
}

/// A Rust type a column can be read as.
pub trait FromCol: Sized {
    /// Converts; `Err` says why not.
    fn from_cell(c: Cell) -> Result<Self, String>;
}

macro_rules! int_from_cell {
    ($($t:ty),*) => {$(
        impl FromCol for $t {
            fn from_cell(c: Cell) -> Result<Self, String> {
                match c {
                    Cell::Int(i) => <$t>::try_from(i).map_err(|e| e.to_string()),
                    other => Err(format!("expected an integer, got {other:?}")),
                }
            }
        }
    )*};
}
int_from_cell!(i64, i32, i16, u32, u64, u16, usize);

impl FromCol for bool {
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Int(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, got {other:?}")),
        }
    }
}
impl FromCol for f64 {
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Real(f) => Ok(f),
            Cell::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, got {other:?}")),
        }
    }
}
impl FromCol for String {
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Text(s) => Ok(s),
            other => Err(format!("expected text, got {other:?}")),
        }
    }
}
impl<T: FromCol> FromCol for Option<T> {
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Null => Ok(None),
            c => T::from_cell(c).map(Some),
        }
    }
}

/// A column index (lets call sites say `r.get::<_, String>(0)`).
pub trait ColIndex {
    /// The index.
    fn idx(self) -> usize;
}
impl ColIndex for usize {
    fn idx(self) -> usize {
        self
    }
}

/// A result row of either driver.
pub enum Row<'a> {
    /// SQLite.
    Lite(&'a rusqlite::Row<'a>),
    /// PostgreSQL.
    Pg(&'a postgres::Row),
    /// Read ahead (`Stmt::query`).
    Owned(&'a [Cell]),
}

impl Row<'_> {
    /// Column `i` as `T`.
    pub fn get<I: ColIndex, T: FromCol>(&self, i: I) -> Result<T, DbError> {
        let i = i.idx();
        T::from_cell(self.cell(i)?).map_err(|e| DbError::Type(i, e))
    }

    fn cell(&self, i: usize) -> Result<Cell, DbError> {
        Ok(match self {
            Row::Lite(r) => match r.get_ref(i)? {
                ValueRef::Null => Cell::Null,
                ValueRef::Integer(v) => Cell::Int(v),
                ValueRef::Real(v) => Cell::Real(v),
                ValueRef::Text(t) => Cell::Text(
                    std::str::from_utf8(t)
                        .map_err(|e| DbError::Type(i, e.to_string()))?
                        .to_owned(),
                ),
                ValueRef::Blob(_) => return Err(DbError::Type(i, "a blob".into())),
            },
            Row::Pg(r) => pg_cell(r, i)?,
            Row::Owned(cells) => cells
                .get(i)
                .cloned()
                .ok_or_else(|| DbError::Type(i, "no such column".into()))?,
        })
    }

    fn len(&self) -> usize {
        match self {
            Row::Lite(r) => r.as_ref().column_count(),
            Row::Pg(r) => r.len(),
            Row::Owned(cells) => cells.len(),
        }
    }
}

/// Rows read ahead, walked with `next` as with rusqlite.
pub struct Rows {
    rows: std::vec::IntoIter<Vec<Cell>>,
    current: Vec<Cell>,
}

impl Rows {
    /// The next row, if any.
    #[allow(
        clippy::should_implement_trait,
        reason = "rows borrow from the walker, which Iterator cannot express"
    )]
    pub fn next(&mut self) -> Result<Option<Row<'_>>, DbError> {
        match self.rows.next() {
            Some(r) => {
                self.current = r;
                Ok(Some(Row::Owned(&self.current)))
            }
            None => Ok(None),
        }
    }
}

fn pg_cell(r: &postgres::Row, i: usize) -> Result<Cell, DbError> {
    let ty = r
        .columns()
        .get(i)
        .ok_or_else(|| DbError::Type(i, "no such column".into()))?
        .type_()
        .clone();
    let cell = match ty {
        Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Cell::Int),
        Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(|v| Cell::Int(v.into())),
        Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(|v| Cell::Int(v.into())),
        Type::BOOL => r
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Cell::Int(v.into())),
        Type::FLOAT8 => r.try_get::<_, Option<f64>>(i)?.map(Cell::Real),
        Type::FLOAT4 => r
            .try_get::<_, Option<f32>>(i)?
            .map(|v| Cell::Real(v.into())),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            r.try_get::<_, Option<String>>(i)?.map(Cell::Text)
        }
        other => {
            return Err(DbError::Type(
                i,
                format!("unsupported column type {other} (cast it in SQL)"),
            ));
        }
    };
    Ok(cell.unwrap_or(Cell::Null))
}

/// A PostgreSQL connection with its prepared-statement cache.
pub struct PgConn {
    client: RefCell<postgres::Client>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgConn")
    }
}

impl PgConn {
    /// Wraps a connected client.
    pub fn new(client: postgres::Client) -> Self {
        PgConn {
            client: RefCell::new(client),
            statements: RefCell::default(),
        }
    }

    /// Whether the connection is unusable (the server went away).
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement, DbError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self
            .client
            .borrow_mut()
            .prepare(&dollar_placeholders(sql))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

/// Rewrites SQLite placeholders (`?1`, `?`) as PostgreSQL's (`$1`), leaving
/// string literals alone. A bare `?` takes the next number after the
/// largest used so far, as in SQLite.
pub fn dollar_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut in_string = false;
    let mut max = 0u32;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_string = !in_string;
            out.push(c);
            continue;
        }
        if c != '?' || in_string {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        let n = if digits.is_empty() {
            max + 1
        } else {
            digits.parse().unwrap_or(0)
        };
        max = max.max(n);
        out.push('$');
        out.push_str(&n.to_string());
    }
    out
}

/// A connection of either engine, as the SQL layer sees it.
#[derive(Clone, Copy)]
pub enum Db<'a> {
    /// SQLite.
    Lite(&'a rusqlite::Connection),
    /// PostgreSQL.
    Pg(&'a PgConn),
}

fn pg_params<'p>(params: &'p [V<'_>]) -> Vec<&'p (dyn PgToSql + Sync)> {
    params.iter().map(|v| v as &(dyn PgToSql + Sync)).collect()
}

/// A statement bound to its connection (the shape of rusqlite's cached
/// statements, so call sites read the same on both engines).
pub struct Stmt<'a, 's> {
    db: Db<'a>,
    sql: &'s str,
}

impl Stmt<'_, '_> {
    /// See `Db::execute`.
    pub fn execute(&mut self, params: &[V]) -> Result<usize, DbError> {
        self.db.execute(self.sql, params)
    }

    /// See `Db::query_row`.
    pub fn query_row<T>(
        &mut self,
        params: &[V],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        self.db.query_row(self.sql, params, f)
    }

    /// Every row read by `f`, as an iterator of results (read eagerly).
    pub fn query_map<T>(
        &mut self,
        params: &[V],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<std::vec::IntoIter<Result<T, DbError>>, DbError> {
        let mut out = Vec::new();
        let rows = self.db.query_map(self.sql, params, |r| {
            out.push(f(r));
            Ok(())
        });
        rows?;
        Ok(out.into_iter())
    }
}

impl Stmt<'_, '_> {
    /// Every row, read ahead.
    pub fn query(&mut self, params: &[V]) -> Result<Rows, DbError> {
        let rows = self.db.query_map(self.sql, params, |r| {
            (0..r.len())
                .map(|i| r.cell(i))
                .collect::<Result<Vec<_>, _>>()
        })?;
        Ok(Rows {
            rows: rows.into_iter(),
            current: Vec::new(),
        })
    }
}

impl<'a> Db<'a> {
    /// A statement on this connection (prepared and cached on first use).
    pub fn prepare_cached<'s>(&self, sql: &'s str) -> Result<Stmt<'a, 's>, DbError> {
        Ok(Stmt { db: *self, sql })
    }
}

impl Db<'_> {
    /// Whether this is PostgreSQL (for the few dialect differences).
    pub fn is_pg(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    /// ` FOR UPDATE SKIP LOCKED` on PostgreSQL (rows another node is
    /// working on are passed over), nothing on SQLite (one writer).
    pub fn skip_locked(&self) -> &'static str {
        if self.is_pg() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        }
    }

    /// ` FOR UPDATE` on PostgreSQL (wait for the row), nothing on SQLite.
    pub fn for_update(&self) -> &'static str {
        if self.is_pg() { " FOR UPDATE" } else { "" }
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[V]) -> Result<usize, DbError> {
        match self {
            Db::Lite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params.iter()))?),
            Db::Pg(c) => {
                let stmt = c.statement(sql)?;
                let n = c.client.borrow_mut().execute(&stmt, &pg_params(params))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs statements without parameters or results.
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Lite(c) => Ok(c.execute_batch(sql)?),
            Db::Pg(c) => Ok(c.client.borrow_mut().batch_execute(sql)?),
        }
    }

    /// The first row, read by `f`; `DbError::NoRows` if there is none.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[V],
        f: impl FnOnce(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        match self {
            Db::Lite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                match rows.next()? {
                    Some(r) => f(&Row::Lite(r)),
                    None => Err(DbError::NoRows),
                }
            }
            Db::Pg(c) => {
                let stmt = c.statement(sql)?;
                let row = c.client.borrow_mut().query_opt(&stmt, &pg_params(params))?;
                match row {
                    Some(r) => f(&Row::Pg(&r)),
                    None => Err(DbError::NoRows),
                }
            }
        }
    }

    /// Every row, each read by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[V],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match self {
            Db::Lite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    out.push(f(&Row::Lite(r))?);
                }
                Ok(out)
            }
            Db::Pg(c) => {
                let stmt = c.statement(sql)?;
                let rows = c.client.borrow_mut().query(&stmt, &pg_params(params))?;
                rows.iter().map(|r| f(&Row::Pg(r))).collect()
            }
        }
    }
}

/// Placeholders for `rows` rows of `cols` values each, numbered from `?1`:
/// `(?1, ?2), (?3, ?4)`. With `casts`, each value is `CAST(?n AS type)` so
/// PostgreSQL can type a `VALUES` list that has no target table.
pub fn values_rows(rows: usize, cols: usize, casts: Option<&[&str]>) -> String {
    let mut out = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            let n = r * cols + c + 1;
            // Written in place: a `format!` per placeholder was a thousand
            // allocations for one 64-row insert.
            let _ = match casts {
                Some(types) => write!(out, "CAST(?{n} AS {})", types[c]),
                None => write!(out, "?{n}"),
            };
        }
        out.push(')');
    }
    out
}

/// `(?1, ?2, …)` for an `IN` list of `n` values (one row of `n` columns).
pub fn in_list(n: usize) -> String {
    values_rows(1, n, None)
}

/// The rows that one set-based statement carries at most.
pub const MAX_SET: usize = 64;

/// Splits `items` into runs whose lengths are powers of two up to
/// `MAX_SET` (100 → 64, 32, 4), so a set-based statement has at most seven
/// shapes and its prepared statements stay cached.
pub fn set_chunks<T>(items: &[T]) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = MAX_SET.min(1 << rest.len().ilog2());
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

impl Db<'_> {
    /// `query_map` for a statement whose best plan depends on how large its
    /// tables are now: PostgreSQL plans it afresh for these values (one
    /// more round trip) instead of running a plan cached for a prepared
    /// statement, which may have been made while the tables were nearly
    /// empty and would then scan them. SQLite has no such cache.
    pub fn query_map_planned<T>(
        &self,
        sql: &str,
        params: &[V],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        match self {
            Db::Lite(_) => self.query_map(sql, params, f),
            Db::Pg(c) => {
                let sql = dollar_placeholders(sql);
                let rows = c.client.borrow_mut().query(&sql, &pg_params(params))?;
                rows.iter().map(|r| f(&Row::Pg(r))).collect()
            }
        }
    }
}

/// An owned connection of either engine.
#[derive(Debug)]
pub enum Conn {
    /// SQLite.
    Lite(rusqlite::Connection),
    /// PostgreSQL.
    Pg(Box<PgConn>),
}

impl Conn {
    /// The connection as the SQL layer uses it.
    pub fn db(&self) -> Db<'_> {
        match self {
            Conn::Lite(c) => Db::Lite(c),
            Conn::Pg(c) => Db::Pg(c),
        }
    }

    /// Whether the connection can no longer be used.
    pub fn is_broken(&self) -> bool {
        match self {
            Conn::Lite(_) => false,
            Conn::Pg(c) => c.is_closed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_outside_strings() {
        assert_eq!(
            dollar_placeholders("SELECT ?1, ?2, ?1 WHERE a = '?3'"),
            "SELECT $1, $2, $1 WHERE a = '?3'"
        );
        assert_eq!(
            dollar_placeholders("a = ? AND b = ? LIMIT ?"),
            "a = $1 AND b = $2 LIMIT $3"
        );
        assert_eq!(dollar_placeholders("x = ?3 AND y = ?"), "x = $3 AND y = $4");
    }

    #[test]
    fn set_chunks_are_powers_of_two_up_to_the_limit() {
        let v: Vec<u32> = (0..300).collect();
        let sizes: Vec<usize> = set_chunks(&v).map(<[u32]>::len).collect();
        assert_eq!(sizes, [64, 64, 64, 64, 32, 8, 4]);
        assert_eq!(set_chunks(&v).flatten().copied().collect::<Vec<_>>(), v);
        assert_eq!(set_chunks(&v[..1]).count(), 1);
        assert_eq!(set_chunks::<u32>(&[]).count(), 0);
        assert_eq!(values_rows(2, 2, None), "(?1, ?2), (?3, ?4)");
        assert_eq!(
            values_rows(1, 2, Some(&["TEXT", "BIGINT"])),
            "(CAST(?1 AS TEXT), CAST(?2 AS BIGINT))"
        );
    }

    #[test]
    fn values_round_trip_through_sqlite() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Lite(&c);
        db.execute_batch("CREATE TABLE t (i INTEGER, s TEXT, b INTEGER, n TEXT)")
            .unwrap();
        db.execute(
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4)",
            p![7_u32, "x", true, None::<String>],
        )
        .unwrap();
        let (i, s, b, n): (u32, String, bool, Option<String>) = db
            .query_row("SELECT i, s, b, n FROM t", p![], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .unwrap();
        assert_eq!((i, s.as_str(), b, n), (7, "x", true, None));
        let none = db
            .query_row("SELECT i FROM t WHERE i = ?1", p![8_i64], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .unwrap();
        assert_eq!(none, None);
        let bad = db.query_row("SELECT s FROM t", p![], |r| r.get::<_, i64>(0));
        assert!(matches!(bad, Err(DbError::Type(0, _))));
    }
}
