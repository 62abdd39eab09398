//! One SQL layer, two drivers.
//!
//! The store's SQL is written once against `Db`, which runs it on SQLite
//! (rusqlite) or PostgreSQL (tokio-postgres on a one-thread runtime of the
//! connection's own, blocked on by its caller, always a blocking thread;
//! it can pipeline, see `Db::execute_later`). Statements use SQLite's `?1` placeholders; for
//! PostgreSQL they are rewritten to `$1` once and the prepared statement is
//! cached per connection. Values cross as `V` and come back through
//! `FromCol`, converting by the column's actual type, so one schema may say
//! `INTEGER` (SQLite) where the other says `BIGINT`.
//!
//! *Boundary*: the few places where the dialects differ ask `Db::is_pg`
//! (row locks with `FOR UPDATE [SKIP LOCKED]`, JSON functions); everything
//! else is plain SQL both engines run the same way.

use foldhash::{HashMap, HashMapExt};
use std::borrow::Cow;
use std::cell::RefCell;
use std::error::Error as StdError;
use std::fmt::Write as _;

use bytes::BufMut;
use postgres_types::{IsNull, ToSql as PgToSql, Type, to_sql_checked};
use rusqlite::types::{ToSqlOutput, ValueRef};
use switchboard_walvfs::statements::Param as StaticParam;

/// A failure of either driver, or a value that does not fit its column.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite.
    #[error("sqlite: {0}")]
    Lite(#[from] rusqlite::Error),
    /// PostgreSQL.
    #[error("postgres: {}", pg_message(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// A query that must return a row returned none.
    #[error("the query returned no rows")]
    NoRows,
    /// A column could not be read as the wanted type.
    #[error("column {0}: {1}")]
    Type(usize, String),
    /// A queued write (`Db::execute_later`) changed another number of rows
    /// than it had to.
    #[error("a write changed {got} rows where it had to change {want}")]
    Rows {
        /// The rows it had to change.
        want: usize,
        /// The rows it changed.
        got: u64,
    },
    /// A queued read (`Db::query_later`) was not answered: a statement
    /// sent before it failed, and PostgreSQL refused the rest of its
    /// transaction.
    #[error("a queued read was not answered: a statement before it failed")]
    Unanswered,
    /// The connection's runtime could not be made.
    #[error("runtime: {0}")]
    Runtime(String),
}

/// The server's own message (and code) when there is one: `db error` alone
/// tells an operator nothing.
fn pg_message(e: &tokio_postgres::Error) -> String {
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
            DbError::Pg(e) => e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
            _ => false,
        }
    }

    /// The server refused a statement (PostgreSQL): it answered with an
    /// error, so the statement's transaction did not commit. A lost
    /// connection, say, is not one: whether it committed is unknown.
    pub fn is_refusal(&self) -> bool {
        matches!(self, DbError::Pg(e) if e.as_db_error().is_some())
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
    /// A column of values sent as one PostgreSQL array (`RowSet`); SQLite
    /// has no array parameters.
    Array(Vec<V<'a>>),
    /// One row of a PostgreSQL composite type, its fields in the type's
    /// order (`RowSet::typed`: an array of them is a set of rows).
    Record(Vec<V<'a>>),
}

impl V<'_> {
    /// The value, owning its text (to outlive what it borrowed).
    pub fn into_owned(self) -> V<'static> {
        match self {
            V::Null => V::Null,
            V::Int(i) => V::Int(i),
            V::Real(f) => V::Real(f),
            V::Text(t) => V::Text(Cow::Owned(t.into_owned())),
            V::Bool(b) => V::Bool(b),
            V::Array(items) => V::Array(items.into_iter().map(V::into_owned).collect()),
            V::Record(fields) => V::Record(fields.into_iter().map(V::into_owned).collect()),
        }
    }
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
            V::Array(items) => V::Array(items.iter().map(ToV::to_v).collect()),
            V::Record(fields) => V::Record(fields.iter().map(ToV::to_v).collect()),
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
            V::Array(_) | V::Record(_) => return Err(not_sqlite()),
        }))
    }
}

/// `V` as `switchboard_walvfs::statements` binds it, converted as it is
/// bound; an array or a record fails as rusqlite's binding does.
impl switchboard_walvfs::statements::Bind for V<'_> {
    fn param(&self) -> rusqlite::Result<StaticParam<'_>> {
        Ok(match self {
            V::Null => StaticParam::Null,
            V::Int(i) => StaticParam::Int(*i),
            V::Real(f) => StaticParam::Real(*f),
            V::Text(t) => StaticParam::Text(t),
            V::Bool(b) => StaticParam::Int(i64::from(*b)),
            V::Array(_) | V::Record(_) => return Err(not_sqlite()),
        })
    }
}

/// The failure of binding an array or a record on SQLite.
fn not_sqlite() -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(
        "array and record parameters are PostgreSQL's (build sets with RowSet)".into(),
    )
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
            V::Array(items) => items.to_sql(ty, out),
            V::Record(fields) => record_to_sql(fields, ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A composite value in PostgreSQL's binary format (`record_recv`): the
/// number of fields, then each field's type, length (−1 for NULL) and
/// value. The fields must be as many as the type's and each one's value
/// must fit its type.
fn record_to_sql(fields: &[V<'_>], ty: &Type, out: &mut bytes::BytesMut) -> Result<IsNull, BoxErr> {
    let postgres_types::Kind::Composite(types) = ty.kind() else {
        return Err(format!("cannot send a record as {ty}").into());
    };
    if types.len() != fields.len() {
        return Err(format!(
            "{ty} has {} fields, the record {}",
            types.len(),
            fields.len()
        )
        .into());
    }
    out.put_i32(i32::try_from(fields.len())?);
    for (v, field) in fields.iter().zip(types) {
        out.put_u32(field.type_().oid());
        let at = out.len();
        out.put_i32(0);
        let len = match v.to_sql(field.type_(), out)? {
            IsNull::Yes => -1,
            IsNull::No => i32::try_from(out.len() - at - 4)?,
        };
        out[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }
    Ok(IsNull::No)
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
    /// SQLite, on the writer's kept statements
    /// (`switchboard_walvfs::statements::query`).
    Kept(&'a switchboard_walvfs::statements::Row<'a>),
    /// PostgreSQL.
    Pg(&'a tokio_postgres::Row),
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
            Row::Lite(r) => lite_cell(r.get_ref(i)?, i)?,
            Row::Kept(r) => lite_cell(r.get_ref(i)?, i)?,
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
            Row::Kept(r) => r.column_count(),
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

/// A SQLite value as a cell (column `i`, for errors).
fn lite_cell(v: ValueRef<'_>, i: usize) -> Result<Cell, DbError> {
    Ok(match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(v) => Cell::Int(v),
        ValueRef::Real(v) => Cell::Real(v),
        ValueRef::Text(t) => Cell::Text(
            std::str::from_utf8(t)
                .map_err(|e| DbError::Type(i, e.to_string()))?
                .to_owned(),
        ),
        ValueRef::Blob(_) => return Err(DbError::Type(i, "a blob".into())),
    })
}

fn pg_cell(r: &tokio_postgres::Row, i: usize) -> Result<Cell, DbError> {
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
///
/// The client is tokio-postgres's, driven by a runtime of the connection's
/// own (one thread: the caller's, which blocks on each call, as the
/// synchronous `postgres` client does). Unlike that client it can
/// *pipeline*: writes whose answer nobody waits for (`Db::execute_later`)
/// are queued and sent together with the next statement that needs an
/// answer, so a batch's inserts and its `COMMIT` cost one round trip
/// between the writer and the server, not one each.
pub struct PgConn {
    /// Shared with the statements in flight, whose futures own what they
    /// send (`Db::send`).
    client: Option<std::sync::Arc<tokio_postgres::Client>>,
    /// Drives the connection (socket reads and writes) while a call blocks.
    connection: Option<tokio::task::JoinHandle<()>>,
    runtime: tokio::runtime::Runtime,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    /// Whether a statement failed since `Db::take_failed` last asked.
    failed: std::cell::Cell<bool>,
    /// Whether `execute_later` queues (`Db::pipeline`).
    pipelining: std::cell::Cell<bool>,
    /// Queued writes, sent in order ahead of the next call.
    later: RefCell<Vec<Later>>,
    /// Whether a queued write failed since `Db::take_later_failed` asked.
    later_failed: std::cell::Cell<bool>,
    /// The rows of queued reads that have been run, by slot
    /// (`Db::query_later`), and the next slot.
    read: RefCell<HashMap<usize, Vec<Vec<Cell>>>>,
    next_slot: std::cell::Cell<usize>,
    /// Statements sent by `Db::send` whose answers `Db::land` has not
    /// taken yet, oldest first; every wait on this connection polls them.
    flights: RefCell<Vec<Flight>>,
    next_flight: std::cell::Cell<u64>,
}

/// What a queued statement's answer is: nothing, or a read's rows by slot.
type Answered = Result<Option<(usize, Vec<Vec<Cell>>)>, DbError>;

/// A queued statement on its way: a future that owns what it sends, and
/// sends it on its first poll.
type Leg = std::pin::Pin<Box<dyn std::future::Future<Output = Answered> + Send>>;

/// A leg, running or answered.
enum LegState {
    Running(Leg),
    Done(Answered),
}

impl LegState {
    /// Polls it if it still runs; whether it is answered.
    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        if let LegState::Running(leg) = self
            && let std::task::Poll::Ready(r) = leg.as_mut().poll(cx)
        {
            *self = LegState::Done(r);
        }
        matches!(self, LegState::Done(_))
    }

    fn answer(self) -> Answered {
        match self {
            LegState::Done(r) => r,
            LegState::Running(_) => Err(DbError::Unanswered),
        }
    }
}

/// Statements sent together by `Db::send`, answered to `Db::land`.
struct Flight {
    id: u64,
    legs: Vec<LegState>,
}

/// A handle on statements sent by `Db::send`, for `Db::land`.
#[derive(Debug)]
#[must_use = "a flight's answers must be landed"]
pub struct FlightId(u64);

/// The rows of a `Db::query_later` read, there or to come.
pub enum LaterRows {
    /// Read at once.
    Ready(Rows),
    /// Queued on a PostgreSQL connection.
    Slot(usize),
}

/// A write queued by `Db::execute_later`.
enum Later {
    /// A prepared statement, its parameters and the rows it must change.
    Statement {
        statement: tokio_postgres::Statement,
        params: Vec<V<'static>>,
        rows: Option<usize>,
    },
    /// Statements without parameters (`BEGIN`).
    Simple(&'static str),
    /// A read whose rows are kept for `Db::rows` under `slot`.
    Query {
        statement: tokio_postgres::Statement,
        params: Vec<V<'static>>,
        slot: usize,
    },
}

impl Later {
    /// Its future, which sends it on its first poll; a read's rows come
    /// back with their slot.
    fn start(self, client: std::sync::Arc<tokio_postgres::Client>) -> Leg {
        Box::pin(async move {
            match self {
                Later::Statement {
                    statement,
                    params,
                    rows,
                } => {
                    let n = client.execute(&statement, &pg_params(&params)).await?;
                    changed(n, rows).map(|()| None)
                }
                Later::Simple(sql) => Ok(client.batch_execute(sql).await.map(|()| None)?),
                Later::Query {
                    statement,
                    params,
                    slot,
                } => {
                    let rows = client
                        .query(&statement, &pg_params(&params))
                        .await?
                        .iter()
                        .map(|r| (0..r.len()).map(|i| pg_cell(r, i)).collect())
                        .collect::<Result<Vec<Vec<Cell>>, DbError>>()?;
                    Ok(Some((slot, rows)))
                }
            }
        })
    }
}

/// `Ok` if a write changed (or returned) `n` rows where it had to change
/// `want`, if it had to change a number (`Db::execute_later`).
fn changed(n: u64, want: Option<usize>) -> Result<(), DbError> {
    match want {
        Some(want) if usize::try_from(n).ok() != Some(want) => Err(DbError::Rows { want, got: n }),
        _ => Ok(()),
    }
}

impl std::fmt::Debug for PgConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PgConn")
    }
}

impl PgConn {
    /// Connects (without TLS: the server is on the node's own network).
    pub fn connect(config: &tokio_postgres::Config) -> Result<Self, DbError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DbError::Runtime(e.to_string()))?;
        let (client, connection) = runtime.block_on(config.connect(tokio_postgres::NoTls))?;
        let connection = runtime.spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "the PostgreSQL connection ended");
            }
        });
        Ok(PgConn {
            client: Some(std::sync::Arc::new(client)),
            connection: Some(connection),
            runtime,
            statements: RefCell::default(),
            failed: std::cell::Cell::new(false),
            pipelining: std::cell::Cell::new(false),
            later: RefCell::default(),
            later_failed: std::cell::Cell::new(false),
            read: RefCell::default(),
            next_slot: std::cell::Cell::new(0),
            flights: RefCell::default(),
            next_flight: std::cell::Cell::new(0),
        })
    }

    /// `connect` with a URL (`postgres://user@host:port/db`).
    pub fn connect_url(url: &str) -> Result<Self, DbError> {
        Self::connect(&url.parse()?)
    }

    fn client(&self) -> &std::sync::Arc<tokio_postgres::Client> {
        self.client
            .as_ref()
            .expect("the client lives as long as the connection")
    }

    /// The queued writes and reads as legs, in order.
    fn take_later(&self) -> Vec<LegState> {
        let later = std::mem::take(&mut *self.later.borrow_mut());
        later
            .into_iter()
            .map(|l| LegState::Running(l.start(self.client().clone())))
            .collect()
    }

    /// Blocks on `f`, polling before it every leg still running: first
    /// the flights' (`Db::send`), oldest first, then `legs`. Each leg sends
    /// its statement on its first poll, so they go out in that order, and
    /// `f`'s after them. Returns once `f` and every one of `legs` is done;
    /// the flights need not be, but they are read as their answers come,
    /// so the connection never stops for an answer nobody takes.
    fn drive<T>(&self, legs: &mut [LegState], f: impl std::future::Future<Output = T>) -> T {
        let mut f = std::pin::pin!(f);
        let mut now = None;
        self.runtime.block_on(std::future::poll_fn(|cx| {
            for flight in self.flights.borrow_mut().iter_mut() {
                for leg in &mut flight.legs {
                    leg.poll(cx);
                }
            }
            let mut done = true;
            for leg in legs.iter_mut() {
                done &= leg.poll(cx);
            }
            if now.is_none()
                && let std::task::Poll::Ready(r) = f.as_mut().poll(cx)
            {
                now = Some(r);
            }
            if done && now.is_some() {
                std::task::Poll::Ready(())
            } else {
                std::task::Poll::Pending
            }
        }));
        now.expect("polled to the end")
    }

    /// The answers of queued statements: a read's rows are kept for
    /// `Db::rows`, and the first failure, in order, is returned (and
    /// remembered, `Db::take_later_failed`).
    fn settle(&self, legs: Vec<LegState>) -> Result<(), DbError> {
        let mut first_error = None;
        for leg in legs {
            match leg.answer() {
                Ok(Some((slot, rows))) => {
                    self.read.borrow_mut().insert(slot, rows);
                }
                Ok(None) => {}
                Err(e) => {
                    self.later_failed.set(true);
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs one call, after every queued write (all sent together, in
    /// order, before any answer is awaited). The first failure, in that
    /// order, is the call's; a queued write's failure is remembered
    /// (`Db::take_later_failed`): PostgreSQL then refuses the rest of the
    /// transaction, and a `COMMIT` rolls it back without an error.
    fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        let mut earlier = self.take_later();
        let now = self.drive(&mut earlier, f);
        let r = self
            .settle(earlier)
            .and_then(|()| now.map_err(DbError::from));
        if r.is_err() {
            self.failed.set(true);
        }
        r
    }

    /// Whether the connection is unusable (the server went away).
    pub fn is_closed(&self) -> bool {
        self.client().is_closed()
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement, DbError> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        // Prepared on its own, ahead of any queued write: a statement is
        // the session's, not the transaction's.
        let stmt = self
            .drive(&mut [], self.client().prepare(&dollar_placeholders(sql)))
            .inspect_err(|_| self.failed.set(true))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // Dropping the client ends the session politely (a Terminate
        // message); the connection task then finishes. Statements still in
        // flight are abandoned (and hold the client until then).
        self.flights.borrow_mut().clear();
        drop(self.client.take());
        if let Some(connection) = self.connection.take() {
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(1), connection).await
            });
        }
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

    /// SQLite: the rows inserted, changed or deleted on this connection
    /// since it was opened (rolled-back changes included, so an unchanged
    /// count means nothing was written). `None` on PostgreSQL.
    pub fn total_changes(&self) -> Option<u64> {
        match self {
            Db::Lite(c) => Some(c.total_changes()),
            Db::Pg(_) => None,
        }
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

    /// Whether a PostgreSQL statement failed since the last call (and
    /// forgets it). PostgreSQL aborts the whole transaction on a failed
    /// statement and `COMMIT` then quietly rolls back, so a write job that
    /// caught such a failure and carried on would look successful; the
    /// group commit asks this before committing, instead of a round trip
    /// to the server. Always `false` on SQLite, where a failed statement
    /// leaves the transaction usable.
    pub fn take_failed(&self) -> bool {
        match self {
            Db::Lite(_) => false,
            Db::Pg(c) => c.failed.replace(false),
        }
    }

    /// Lets `execute_later` queue writes on this connection (PostgreSQL),
    /// or makes it run them at once again. Only the group commit turns it
    /// on, inside its transactions, which always end with a statement that
    /// sends what is queued (`COMMIT`, `RELEASE`); turned off, anything
    /// still queued is sent first.
    pub fn pipeline(&self, on: bool) -> Result<(), DbError> {
        match self {
            Db::Lite(_) => Ok(()),
            Db::Pg(c) => {
                let sent = if on { Ok(()) } else { self.flush() };
                // Reads whose rows nobody took are forgotten.
                c.read.borrow_mut().clear();
                c.pipelining.set(on);
                sent
            }
        }
    }

    /// Sends every queued write now and waits for their answers.
    pub fn flush(&self) -> Result<(), DbError> {
        match self {
            Db::Lite(_) => Ok(()),
            Db::Pg(c) if c.later.borrow().is_empty() => Ok(()),
            Db::Pg(c) => c.call(std::future::ready(Ok(()))),
        }
    }

    /// Sends every queued statement now (`execute_later`, `query_later`,
    /// `execute_batch_later`) without waiting for their answers, which
    /// `land` takes. Meanwhile the connection runs other statements, after
    /// these: the writer builds its next batch while the server runs this
    /// one. A flight is whole transactions (it ends with the `COMMIT`), as
    /// a failure among its statements is only known when it lands. On
    /// SQLite nothing is queued, and there is nothing to send.
    pub fn send(&self) -> FlightId {
        let Db::Pg(c) = self else {
            return FlightId(u64::MAX);
        };
        let id = c.next_flight.get();
        c.next_flight.set(id.wrapping_add(1));
        let legs = c.take_later();
        c.flights.borrow_mut().push(Flight { id, legs });
        // Each leg sends its statement on its first poll; one yield lets the
        // connection's task write them to the socket before this returns.
        c.drive(&mut [], tokio::task::yield_now());
        FlightId(id)
    }

    /// Waits until a flight's answers are all in (then `land` takes them
    /// without waiting) or `other` is ready, whichever is first: `Some`
    /// with `other`'s output, or `None` once the flight is answered. Both
    /// are polled on this thread, so the writer can wait for its next job
    /// and for the batch it sent at once.
    pub fn answered_or<T>(
        &self,
        flight: &FlightId,
        mut other: impl FnMut(&mut std::task::Context<'_>) -> std::task::Poll<T>,
    ) -> Option<T> {
        let Db::Pg(c) = self else {
            return None;
        };
        let answered = || {
            c.flights
                .borrow()
                .iter()
                .find(|f| f.id == flight.0)
                .is_none_or(|f| f.legs.iter().all(|l| matches!(l, LegState::Done(_))))
        };
        // Woken with the flight's legs, which `drive` polls first, or
        // with `other`.
        c.drive(
            &mut [],
            std::future::poll_fn(|cx| {
                if answered() {
                    return std::task::Poll::Ready(None);
                }
                other(cx).map(Some)
            }),
        )
    }

    /// Waits for the answers of a flight (`send`). The first failure, in
    /// order, is returned; as with `call`, a failure of any statement but
    /// the last (the `COMMIT`) is a queued write's (`take_later_failed`),
    /// whose transaction the server rolled back, and any failure is
    /// remembered for `take_failed`. A read's rows are kept for `rows`.
    pub fn land(&self, flight: FlightId) -> Result<(), DbError> {
        let Db::Pg(c) = self else {
            return Ok(());
        };
        let _ = self.answered_or(&flight, |_| std::task::Poll::<()>::Pending);
        let mut legs = {
            let mut flights = c.flights.borrow_mut();
            let Some(at) = flights.iter().position(|f| f.id == flight.0) else {
                return Err(DbError::Unanswered);
            };
            flights.remove(at).legs
        };
        let last = legs.pop().map_or(Ok(None), LegState::answer);
        let r = c.settle(legs).and(last.map(|_| ()));
        if r.is_err() {
            c.failed.set(true);
        }
        r
    }

    /// Runs a write whose answer nobody waits for. On PostgreSQL, while
    /// the connection pipelines (`pipeline`), it is queued and sent with
    /// the next statement that needs an answer, in order, with no round
    /// trip of its own; its failure is then that statement's, and
    /// `take_later_failed` tells it apart. Otherwise, and on SQLite, it
    /// runs at once. `rows`: how many rows it must change (or return),
    /// else it fails (`DbError::Rows`). On PostgreSQL that count is checked
    /// by this process, once the answers are back, when whatever was sent
    /// with it (a transaction's `COMMIT`) has already run: a shortfall
    /// fails the call, but only a statement that fails on the server rolls
    /// its transaction back. A write whose count can fall short without an
    /// error checks it in its SQL (`messages::blind_insert_sql`).
    pub fn execute_later(
        &self,
        sql: &str,
        params: Vec<V<'_>>,
        rows: Option<usize>,
    ) -> Result<(), DbError> {
        if let Db::Pg(c) = self
            && c.pipelining.get()
        {
            let statement = c.statement(sql)?;
            let params = params.into_iter().map(V::into_owned).collect();
            c.later.borrow_mut().push(Later::Statement {
                statement,
                params,
                rows,
            });
            return Ok(());
        }
        let n = self.execute(sql, &params)?;
        changed(u64::try_from(n).unwrap_or(u64::MAX), rows)
    }

    /// A read sent as `execute_later` sends its writes: on PostgreSQL,
    /// while the connection pipelines, it is queued and its rows are read
    /// with `rows`, so reads that do not depend on each other go to the
    /// server together. Otherwise it runs at once.
    pub fn query_later(&self, sql: &str, params: Vec<V<'_>>) -> Result<LaterRows, DbError> {
        if let Db::Pg(c) = self
            && c.pipelining.get()
        {
            let statement = c.statement(sql)?;
            let slot = c.next_slot.get();
            c.next_slot.set(slot.wrapping_add(1));
            c.later.borrow_mut().push(Later::Query {
                statement,
                params: params.into_iter().map(V::into_owned).collect(),
                slot,
            });
            return Ok(LaterRows::Slot(slot));
        }
        Ok(LaterRows::Ready(self.prepare_cached(sql)?.query(&params)?))
    }

    /// The rows of a `query_later` read (sending what is queued first, if
    /// it has not been sent).
    pub fn rows(&self, read: LaterRows) -> Result<Rows, DbError> {
        let slot = match read {
            LaterRows::Ready(rows) => return Ok(rows),
            LaterRows::Slot(slot) => slot,
        };
        let Db::Pg(c) = self else {
            unreachable!("only PostgreSQL queues reads")
        };
        let queued = c
            .later
            .borrow()
            .iter()
            .any(|l| matches!(l, Later::Query { slot: s, .. } if *s == slot));
        // A failure of what was sent with it is remembered (`take_failed`,
        // `take_later_failed`); the read itself may have been answered.
        let sent = if queued { self.flush() } else { Ok(()) };
        match (c.read.borrow_mut().remove(&slot), sent) {
            (Some(rows), _) => Ok(Rows {
                rows: rows.into_iter(),
                current: Vec::new(),
            }),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(DbError::Unanswered),
        }
    }

    /// `execute_batch`, queued as `execute_later` queues (for `BEGIN`).
    pub fn execute_batch_later(&self, sql: &'static str) -> Result<(), DbError> {
        match self {
            Db::Pg(c) if c.pipelining.get() => {
                c.later.borrow_mut().push(Later::Simple(sql));
                Ok(())
            }
            _ => self.execute_batch(sql),
        }
    }

    /// Whether a queued write failed since the last call (and forgets it):
    /// its transaction is lost, as if a job had failed.
    pub fn take_later_failed(&self) -> bool {
        match self {
            Db::Lite(_) => false,
            Db::Pg(c) => c.later_failed.replace(false),
        }
    }

    /// `INSERT INTO`; on SQLite `INSERT OR FAIL INTO`. A statement that
    /// may abort part-way (any `UNIQUE` or `NOT NULL` column) makes SQLite
    /// copy every page it touches into a statement journal first, so that
    /// it can undo itself alone and leave the transaction open. No write
    /// job carries on after a failed statement (the job's savepoint or the
    /// whole batch is rolled back, see `group_commit`), so that copy buys
    /// nothing; `OR FAIL` stops at the failing row without it. For the hot
    /// set-based writes: a multi-row insert ran a third faster without it.
    pub fn insert_into(&self) -> &'static str {
        if self.is_pg() {
            "INSERT INTO"
        } else {
            "INSERT OR FAIL INTO"
        }
    }

    /// `UPDATE`; on SQLite `UPDATE OR FAIL` (see `insert_into`).
    pub fn update(&self) -> &'static str {
        if self.is_pg() {
            "UPDATE"
        } else {
            "UPDATE OR FAIL"
        }
    }

    /// A `FROM` clause that finds, for each row `k` of a key set (`set`, a
    /// `RowSet::table()`), the rows of `table` (as `alias`) that `on`
    /// names: `{set} k JOIN {table} {alias} ON {on}`. On PostgreSQL the
    /// lookup is a `LATERAL` subquery, `{set} k JOIN LATERAL (SELECT
    /// {columns} FROM {table} {alias} WHERE {on} OFFSET 0) {alias} ON
    /// true` (`OFFSET 0` keeps the planner from flattening it back into a
    /// join it could hash), so every plan, even a generic one cached while
    /// the table was empty, is one index lookup per key; `on` must match
    /// one index only (ARCHITECTURE.md, "One SQL layer"). `columns` are
    /// the columns of `alias` the statement reads; `lock` locks each row
    /// found (PostgreSQL only).
    pub fn lookup_join(
        &self,
        set: &str,
        table: &str,
        alias: &str,
        columns: &str,
        on: &str,
        lock: bool,
    ) -> String {
        if self.is_pg() {
            let lock = if lock { " FOR UPDATE" } else { "" };
            format!(
                "{set} k JOIN LATERAL (SELECT {columns} FROM {table} {alias} WHERE {on} OFFSET 0{lock}) {alias} ON true"
            )
        } else {
            format!("{set} k JOIN {table} {alias} ON {on}")
        }
    }

    /// ` FOR UPDATE` on PostgreSQL (wait for the row), nothing on SQLite.
    pub fn for_update(&self) -> &'static str {
        if self.is_pg() { " FOR UPDATE" } else { "" }
    }

    /// Runs a statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[V]) -> Result<usize, DbError> {
        match self {
            Db::Lite(c) => {
                // The writer's statements bind their texts where they are
                // (`switchboard_walvfs::statements`); any other connection
                // is rusqlite's.
                if let Some(n) = switchboard_walvfs::statements::execute(c, sql, params) {
                    return Ok(n?);
                }
                Ok(c.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params.iter()))?)
            }
            Db::Pg(c) => {
                let stmt = c.statement(sql)?;
                let n = c.call(c.client().execute(&stmt, &pg_params(params)))?;
                Ok(usize::try_from(n).unwrap_or(usize::MAX))
            }
        }
    }

    /// Runs statements without parameters or results.
    pub fn execute_batch(&self, sql: &str) -> Result<(), DbError> {
        match self {
            Db::Lite(c) => Ok(c.execute_batch(sql)?),
            Db::Pg(c) => c.call(c.client().batch_execute(sql)),
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
                let mut f = Some(f);
                let mut first = None;
                lite_rows(c, sql, params, |r| {
                    first = f.take().map(|f| f(r));
                    Ok(false)
                })?;
                first.unwrap_or(Err(DbError::NoRows))
            }
            Db::Pg(c) => {
                let stmt = c.statement(sql)?;
                let row = c.call(c.client().query_opt(&stmt, &pg_params(params)))?;
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
                let mut out = Vec::new();
                lite_rows(c, sql, params, |r| {
                    out.push(f(r)?);
                    Ok(true)
                })?;
                Ok(out)
            }
            Db::Pg(c) => {
                let stmt = c.statement(sql)?;
                let rows = c.call(c.client().query(&stmt, &pg_params(params)))?;
                rows.iter().map(|r| f(&Row::Pg(r))).collect()
            }
        }
    }
}

/// Hands each row of `sql` on SQLite to `each` until it answers `false`:
/// on the writer's kept statements, which bind their texts where they are
/// (`switchboard_walvfs::statements`, as `Db::execute`), and on rusqlite's
/// cached statements on any other connection.
fn lite_rows(
    c: &rusqlite::Connection,
    sql: &str,
    params: &[V],
    mut each: impl FnMut(&Row<'_>) -> Result<bool, DbError>,
) -> Result<(), DbError> {
    if let Some(read) =
        switchboard_walvfs::statements::query(c, sql, params, |r| each(&Row::Kept(r)))
    {
        return read;
    }
    let mut stmt = c.prepare_cached(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
    while let Some(r) = rows.next()? {
        if !each(&Row::Lite(r))? {
            break;
        }
    }
    Ok(())
}

/// Placeholders for `rows` rows of `cols` values each, numbered from
/// `?first`: `(?1, ?2), (?3, ?4)`. With `casts`, each value is
/// `CAST(?n AS type)` so PostgreSQL can type a `VALUES` list that has no
/// target table.
fn values_rows(first: usize, rows: usize, cols: usize, casts: Option<&[&str]>) -> String {
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
            let n = first + r * cols + c;
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

/// The rows of one set-based statement (`Db::chunks` gives their runs),
/// bound as parameters in the form each engine takes best.
///
/// On SQLite they are a `VALUES` list of placeholders, one per value
/// (`(?1, ?2), (?3, ?4)`), as SQLite's own bulk inserts are written. On
/// PostgreSQL each column is one array parameter, unnested back into rows
/// (`SELECT * FROM UNNEST(CAST(?1 AS TEXT[]), CAST(?2 AS BIGINT[]))`): the
/// statement then has one shape whatever the number of rows, so it is
/// prepared once and a batch of any size is one round trip, where a
/// `VALUES` list of placeholders needed a prepared statement per size (or a
/// statement per power-of-two run, five round trips for 31 rows).
///
/// A set of many columns can instead be bound on PostgreSQL as one array
/// of a composite type whose fields are its columns (`RowSet::typed`):
/// unnesting 28 arrays is 28 function scans, each stored whole and read
/// back row by row, where one array of rows is one. For the accepts'
/// inserts that was about a sixth of PostgreSQL's backend time per row
/// (bench/HISTORY.md, "Thirty-seventh session").
///
/// The placeholders start at `?first`; a statement's other parameters take
/// the numbers below it and come first in its parameter list.
pub struct RowSet<'p> {
    pg: bool,
    first: usize,
    rows: usize,
    types: &'static [&'static str],
    /// On PostgreSQL, the composite type the rows are bound as, if any.
    row_type: Option<&'static str>,
    params: Vec<V<'p>>,
}

impl<'p> RowSet<'p> {
    /// `rows`, each of `types.len()` values (`TEXT` or `BIGINT`, the
    /// PostgreSQL schema's types), numbered from `?first`.
    pub fn new<R: IntoIterator<Item = V<'p>>>(
        c: &Db<'_>,
        first: usize,
        types: &'static [&'static str],
        rows: impl IntoIterator<Item = R>,
    ) -> Self {
        Self::make(c, first, types, None, rows)
    }

    /// `new`, but on PostgreSQL the rows are one array parameter of
    /// `row_type`, a composite type (made by a migration) whose fields are
    /// `types` in order. On SQLite it is `new`.
    pub fn typed<R: IntoIterator<Item = V<'p>>>(
        c: &Db<'_>,
        first: usize,
        row_type: &'static str,
        types: &'static [&'static str],
        rows: impl IntoIterator<Item = R>,
    ) -> Self {
        Self::make(c, first, types, Some(row_type), rows)
    }

    fn make<R: IntoIterator<Item = V<'p>>>(
        c: &Db<'_>,
        first: usize,
        types: &'static [&'static str],
        row_type: Option<&'static str>,
        rows: impl IntoIterator<Item = R>,
    ) -> Self {
        let cols = types.len();
        let (rows, params) = if c.is_pg() && row_type.is_some() {
            let records: Vec<V<'p>> = rows
                .into_iter()
                .map(|row| V::Record(row.into_iter().collect()))
                .collect();
            (records.len(), vec![V::Array(records)])
        } else if c.is_pg() {
            let mut columns: Vec<Vec<V<'p>>> = vec![Vec::new(); cols];
            let mut n = 0;
            for row in rows {
                n += 1;
                for (col, v) in columns.iter_mut().zip(row) {
                    col.push(v);
                }
            }
            (n, columns.into_iter().map(V::Array).collect())
        } else {
            let params: Vec<V<'p>> = rows.into_iter().flatten().collect();
            (params.len() / cols.max(1), params)
        };
        RowSet {
            pg: c.is_pg(),
            first,
            rows,
            types,
            row_type: row_type.filter(|_| c.is_pg()),
            params,
        }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    fn unnest(&self) -> String {
        if let Some(row_type) = self.row_type {
            return format!(
                "SELECT * FROM UNNEST(CAST(?{} AS {row_type}[]))",
                self.first
            );
        }
        let mut out = String::from("SELECT * FROM UNNEST(");
        for (i, ty) in self.types.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "CAST(?{} AS {ty}[])", self.first + i);
        }
        out.push(')');
        out
    }

    /// `values_rows` for this set, written once per shape and thread: a
    /// set-based statement has a few shapes (`set_chunks`), and writing
    /// its placeholders again for every batch was 4% of the writer's time
    /// (bench/HISTORY.md, "Fifteenth session").
    fn placeholders(&self, casts: bool) -> std::rc::Rc<str> {
        type Shape = (bool, usize, usize, usize, usize);
        thread_local! {
            static WRITTEN: RefCell<HashMap<Shape, std::rc::Rc<str>>> = RefCell::new(HashMap::new());
        }
        // The types are static: their address names them.
        let shape = (
            casts,
            self.first,
            self.rows,
            self.types.as_ptr() as usize,
            self.types.len(),
        );
        WRITTEN.with_borrow_mut(|written| {
            if let Some(s) = written.get(&shape) {
                return s.clone();
            }
            if written.len() >= 4_096 {
                written.clear();
            }
            let s: std::rc::Rc<str> = values_rows(
                self.first,
                self.rows,
                self.types.len(),
                casts.then_some(self.types),
            )
            .into();
            written.insert(shape, s.clone());
            s
        })
    }

    /// The rows as an insert's source: `INSERT INTO t (a, b) {values}`.
    pub fn values(&self) -> String {
        if self.pg {
            self.unnest()
        } else {
            format!("VALUES {}", self.placeholders(false))
        }
    }

    /// The rows as a table to join, its columns named `column1`, `column2`,
    /// …: `FROM {table} AS v JOIN …`.
    pub fn table(&self) -> String {
        if self.pg {
            let names: Vec<String> = (1..=self.types.len())
                .map(|i| format!("column{i}"))
                .collect();
            format!("({} AS u({}))", self.unnest(), names.join(", "))
        } else {
            format!("(VALUES {})", self.placeholders(true))
        }
    }

    /// The values of a one-column set as an `IN` list: `WHERE id IN {in_list}`.
    pub fn in_list(&self) -> String {
        debug_assert_eq!(self.types.len(), 1, "an IN list has one column");
        if self.pg {
            format!("({})", self.unnest())
        } else {
            // One row of `rows` columns: `(?1, ?2, …)`.
            values_rows(self.first, 1, self.rows, None)
        }
    }

    /// The text of a statement made around this set (`make`), kept per
    /// call site, engine and shape of the set (`statement_text`); `extra`
    /// holds whatever else the text depends on.
    #[track_caller]
    pub fn sql(&self, extra: [usize; 8], make: impl FnOnce() -> String) -> std::rc::Rc<str> {
        let row_type = self.row_type.map_or([0, 0], static_part);
        statement_text(
            self.pg,
            [
                self.first,
                // On PostgreSQL a set is arrays: one text whatever its rows.
                if self.pg { 0 } else { self.rows },
                self.types.as_ptr() as usize,
                self.types.len(),
                row_type[0],
                row_type[1],
                extra[0],
                extra[1],
                extra[2],
                extra[3],
                extra[4],
                extra[5],
                extra[6],
                extra[7],
            ],
            make,
        )
    }

    /// The number of the first placeholder after the set's, for a
    /// statement's parameters that follow them.
    pub fn next_placeholder(&self) -> usize {
        self.first + self.params.len()
    }

    /// The set's parameters, to follow the statement's others.
    pub fn params(&self) -> &[V<'p>] {
        &self.params
    }

    /// The set's parameters, owned.
    pub fn into_params(self) -> Vec<V<'p>> {
        self.params
    }
}

/// What names a statement's text in `statement_text`: the call site that
/// makes it, the engine, and the words it is made of besides (a set's
/// shape, the addresses and lengths of static strings).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TextKey {
    file: usize,
    line: u32,
    column: u32,
    pg: bool,
    parts: [usize; 14],
}

/// The address and length of a static string, as a part of a `TextKey`:
/// a static string is never freed, so its address names its text.
pub fn static_part(s: &'static str) -> [usize; 2] {
    [s.as_ptr() as usize, s.len()]
}

/// The text of a statement, made by `make` the first time this thread
/// asks for it at this call site with these `parts` on this engine, and
/// kept: most of the writer's statements are a few shapes (`set_chunks`),
/// and writing each one's text again for every batch, with its set's
/// placeholders, was about 3% of the writer's instructions in e2e
/// (bench/HISTORY.md, "Fiftieth session"). `parts` must hold everything
/// else the text depends on: a set's shape (`RowSet::sql`), the static
/// strings it is made of (`static_part`), flags. Debug builds make the
/// text again at every call and check that it is the kept one.
#[track_caller]
pub fn statement_text(
    pg: bool,
    parts: [usize; 14],
    make: impl FnOnce() -> String,
) -> std::rc::Rc<str> {
    thread_local! {
        static MADE: RefCell<HashMap<TextKey, std::rc::Rc<str>>> = RefCell::new(HashMap::new());
    }
    let at = std::panic::Location::caller();
    let key = TextKey {
        file: at.file().as_ptr() as usize,
        line: at.line(),
        column: at.column(),
        pg,
        parts,
    };
    if let Some(kept) = MADE.with_borrow(|made| made.get(&key).cloned()) {
        if cfg!(debug_assertions) {
            let fresh = make();
            assert_eq!(
                &*kept,
                fresh.as_str(),
                "a statement's text at {at} depends on something its parts do not name"
            );
        }
        return kept;
    }
    let text: std::rc::Rc<str> = make().into();
    MADE.with_borrow_mut(|made| {
        if made.len() >= 4_096 {
            made.clear();
        }
        made.insert(key, text.clone());
    });
    text
}

/// The rows that one set-based statement carries at most on SQLite.
pub const MAX_SET: usize = 64;

/// The rows that one set-based statement carries at most on PostgreSQL,
/// where a set is a few array parameters of any length.
pub const MAX_PG_SET: usize = 4_096;

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
    /// The runs of `items` that one set-based statement (`RowSet`) carries:
    /// on SQLite `set_chunks` (so each statement has at most seven shapes
    /// and stays in the statement cache), on PostgreSQL runs of up to
    /// `MAX_PG_SET` (one shape, one round trip per run).
    pub fn chunks<'t, T>(&self, items: &'t [T]) -> Box<dyn Iterator<Item = &'t [T]> + 't> {
        if self.is_pg() {
            Box::new(items.chunks(MAX_PG_SET))
        } else {
            Box::new(set_chunks(items))
        }
    }

    /// Updates rows of `table` from a set, one statement per `chunks` run:
    /// `UPDATE {table} SET {assignments} FROM {set} AS v WHERE
    /// {table}.{key} = v.column1{and}`, the target given as `(table,
    /// assignments, and)`. Each item's row (`row`) starts with the value
    /// of `key`, the column the rows are found by: `id`, or on SQLite
    /// `rowid` (a job updating rows it has just read, `update_rows`);
    /// `assignments` name its other values `v.column2`, ….
    pub fn update_from<'p, T, R>(
        &self,
        key: &'static str,
        (table, assignments, and): (&'static str, &'static str, &'static str),
        types: &'static [&'static str],
        items: &'p [T],
        row: impl Fn(&'p T) -> R,
    ) -> Result<(), DbError>
    where
        R: IntoIterator<Item = V<'p>>,
    {
        for chunk in self.chunks(items) {
            let set = RowSet::new(self, 1, types, chunk.iter().map(&row));
            let parts = update_parts(key, (table, assignments, and));
            let sql = set.sql(parts, || {
                format!(
                    "{} {table} SET {assignments} FROM {} AS v WHERE {table}.{key} = v.column1{and}",
                    self.update(),
                    set.table()
                )
            });
            // Nobody waits for its row count: queued (`execute_later`).
            self.execute_later(&sql, set.into_params(), None)?;
        }
        Ok(())
    }

    /// Updates the rows of `table` whose id is one of `ids`, one statement
    /// per `chunks` run: `UPDATE {table} SET {assignments} WHERE id IN
    /// {ids}{and}`, with `leading` bound as `?1`, `?2`, … for
    /// `assignments` and `and` to use.
    pub fn update_ids(
        &self,
        table: &'static str,
        assignments: &'static str,
        and: &'static str,
        leading: &[V<'_>],
        ids: &[&str],
    ) -> Result<(), DbError> {
        let target = (table, assignments, and);
        self.update_in("id", target, leading, &["TEXT"], ids, |id| V::from(*id))
    }

    /// `update_ids` for rows found by their `rowid` (SQLite only): a job
    /// that has just read its rows updates them by their row number, one
    /// search of the table's B-tree, instead of searching the index on
    /// their text id first.
    pub fn update_rows(
        &self,
        table: &'static str,
        assignments: &'static str,
        and: &'static str,
        leading: &[V<'_>],
        rows: &[i64],
    ) -> Result<(), DbError> {
        debug_assert!(!self.is_pg(), "PostgreSQL rows have no rowid");
        let target = (table, assignments, and);
        self.update_in("rowid", target, leading, &["BIGINT"], rows, |r| V::Int(*r))
    }

    /// `UPDATE {table} SET {assignments} WHERE {key} IN {keys}{and}`, one
    /// statement per `chunks` run (`update_ids`, `update_rows`).
    fn update_in<'p, K>(
        &self,
        key: &'static str,
        (table, assignments, and): (&'static str, &'static str, &'static str),
        leading: &[V<'_>],
        types: &'static [&'static str],
        keys: &'p [K],
        value: impl Fn(&'p K) -> V<'p>,
    ) -> Result<(), DbError> {
        for chunk in self.chunks(keys) {
            let set = RowSet::new(
                self,
                leading.len() + 1,
                types,
                chunk.iter().map(|k| [value(k)]),
            );
            let parts = update_parts(key, (table, assignments, and));
            let sql = set.sql(parts, || {
                format!(
                    "{} {table} SET {assignments} WHERE {key} IN {}{and}",
                    self.update(),
                    set.in_list()
                )
            });
            let mut params: Vec<V> = leading.iter().map(ToV::to_v).collect();
            params.extend(set.into_params());
            self.execute_later(&sql, params, None)?;
        }
        Ok(())
    }

    /// The rows whose id is one of `ids`, each read by `f`, one read per
    /// `chunks` run: `{select} WHERE id IN {ids}{suffix}`.
    pub fn query_ids<T>(
        &self,
        select: &'static str,
        suffix: &'static str,
        ids: &[&str],
        mut f: impl FnMut(&Row<'_>) -> Result<T, DbError>,
    ) -> Result<Vec<T>, DbError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in self.chunks(ids) {
            let set = id_set(self, 1, chunk);
            let [q, ql] = static_part(select);
            let [x, xl] = static_part(suffix);
            let sql = set.sql([q, ql, x, xl, 0, 0, 0, 0], || {
                format!("{select} WHERE id IN {}{suffix}", set.in_list())
            });
            out.extend(self.query_map(&sql, set.params(), &mut f)?);
        }
        Ok(out)
    }
}

/// What an update's text depends on besides its set (`RowSet::sql`): the
/// column its rows are found by, its table, assignments and condition.
fn update_parts(
    key: &'static str,
    (table, assignments, and): (&'static str, &'static str, &'static str),
) -> [usize; 8] {
    let [t, tl] = static_part(table);
    let [a, al] = static_part(assignments);
    let [w, wl] = static_part(and);
    let [k, kl] = static_part(key);
    [t, tl, a, al, w, wl, k, kl]
}

/// A one-column set of text ids, numbered from `?first`.
fn id_set<'p>(c: &Db<'_>, first: usize, ids: &[&'p str]) -> RowSet<'p> {
    RowSet::new(c, first, &["TEXT"], ids.iter().map(|id| [V::from(*id)]))
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
        assert_eq!(values_rows(1, 2, 2, None), "(?1, ?2), (?3, ?4)");
        assert_eq!(
            values_rows(1, 1, 2, Some(&["TEXT", "BIGINT"])),
            "(CAST(?1 AS TEXT), CAST(?2 AS BIGINT))"
        );
    }

    /// A statement's text is made once per call site, engine and parts:
    /// the second call at a site returns the text kept by the first, and
    /// another set shape or static part at the same site is another text.
    #[test]
    fn a_statement_text_is_kept_per_site_and_parts() {
        static TYPES: [&str; 1] = ["TEXT"];
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Lite(&conn);
        let made = std::cell::Cell::new(0);
        let text = |rows: usize, table: &'static str| {
            let set = RowSet::new(&db, 1, &TYPES, (0..rows).map(|_| [V::Null]));
            let [t, tl] = static_part(table);
            set.sql([t, tl, 0, 0, 0, 0, 0, 0], || {
                made.set(made.get() + 1);
                format!("DELETE FROM {table} WHERE id IN {}", set.in_list())
            })
        };
        let first = text(2, "a");
        let again = text(2, "a");
        assert_eq!(&*first, "DELETE FROM a WHERE id IN (?1, ?2)");
        assert!(std::rc::Rc::ptr_eq(&first, &again), "the kept text");
        assert_eq!(&*text(4, "a"), "DELETE FROM a WHERE id IN (?1, ?2, ?3, ?4)");
        assert_eq!(&*text(2, "b"), "DELETE FROM b WHERE id IN (?1, ?2)");
        // Debug builds make it again at every call, to check it.
        let expected = if cfg!(debug_assertions) { 4 } else { 3 };
        assert_eq!(made.get(), expected);
        // Another engine is another text at the same site and parts.
        let pg = |pg: bool| statement_text(pg, [0; 14], || format!("pg {pg}"));
        assert_eq!(
            (&*pg(false), &*pg(true), &*pg(false)),
            ("pg false", "pg true", "pg false")
        );
    }

    /// Rows found by their row number (`Db::update_rows`,
    /// `Db::update_from` with `rowid`) are the rows named, and only
    /// those, whatever their ids; runs of any length (`set_chunks`).
    #[test]
    fn rows_updated_by_their_row_number_are_the_rows_named() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (id TEXT PRIMARY KEY, s TEXT, n INTEGER)")
            .unwrap();
        for i in 0..100 {
            conn.execute(
                "INSERT INTO t (id, s, n) VALUES (?1, 'a', 0)",
                [format!("id_{:03}", 99 - i)],
            )
            .unwrap();
        }
        let db = Db::Lite(&conn);
        let rowid = |id: &str| -> i64 {
            conn.query_row("SELECT rowid FROM t WHERE id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        // 70 rows: runs of 64, 4 and 2.
        let named: Vec<i64> = (0..70).map(|i| rowid(&format!("id_{:03}", i))).collect();
        db.update_rows("t", "s = ?1", "", &[V::from("b")], &named)
            .unwrap();
        let moved: Vec<(i64, i64)> = named[..5].iter().map(|r| (*r, 7)).collect();
        db.update_from(
            "rowid",
            ("t", "n = v.column2", ""),
            &["BIGINT", "BIGINT"],
            &moved,
            |(r, n)| [V::Int(*r), V::Int(*n)],
        )
        .unwrap();
        let state = |id: &str| -> (String, i64) {
            conn.query_row("SELECT s, n FROM t WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap()
        };
        for i in 0..100 {
            let id = format!("id_{:03}", i);
            let s = if i < 70 { "b" } else { "a" };
            let n = if i < 5 { 7 } else { 0 };
            assert_eq!(state(&id), (s.to_owned(), n), "{id}");
        }
    }

    /// A text that depends on something its parts do not name is caught
    /// by debug builds (the test suite's) at the call that would reuse it.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "depends on something its parts do not name")]
    fn a_statement_text_that_its_parts_do_not_name_is_caught() {
        for n in 0..2 {
            statement_text(false, [0; 14], || format!("SELECT {n}"));
        }
    }

    /// The placeholders written once per shape are those of that shape:
    /// its first number, its rows, and its types (two static lists of one
    /// length are two shapes).
    #[test]
    fn row_set_placeholders_are_written_once_per_shape() {
        static ONE: [&str; 2] = ["TEXT", "TEXT"];
        static TWO: [&str; 2] = ["TEXT", "BIGINT"];
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Lite(&conn);
        let set = |first: usize, types: &'static [&'static str], rows: usize| {
            let set = RowSet::new(&db, first, types, (0..rows).map(|_| [V::Null, V::Null]));
            (set.values(), set.table())
        };
        for _ in 0..2 {
            assert_eq!(
                set(1, &ONE, 2),
                (
                    "VALUES (?1, ?2), (?3, ?4)".to_owned(),
                    "(VALUES (CAST(?1 AS TEXT), CAST(?2 AS TEXT)), (CAST(?3 AS TEXT), CAST(?4 AS TEXT)))"
                        .to_owned()
                )
            );
            assert_eq!(set(3, &ONE, 1).0, "VALUES (?3, ?4)");
            assert_eq!(set(1, &ONE, 1).0, "VALUES (?1, ?2)");
            assert_eq!(
                set(1, &TWO, 1).1,
                "(VALUES (CAST(?1 AS TEXT), CAST(?2 AS BIGINT)))"
            );
        }
    }

    /// The rows `row_sets_join_and_insert` puts through a `RowSet`: NULLs
    /// in both types, a column of nothing but NULLs, quotes.
    fn sample_rows(n: i64) -> Vec<[V<'static>; 3]> {
        (0..n)
            .map(|i| {
                [
                    if i % 3 == 0 {
                        V::Null
                    } else {
                        V::from(format!("it's {i}"))
                    },
                    if i % 2 == 0 { V::Int(i) } else { V::Null },
                    V::Null,
                ]
            })
            .collect()
    }

    /// Inserts `n` rows through `RowSet::values`, reads them back through
    /// `table` (with a parameter before the set's) and `in_list`.
    fn row_sets_join_and_insert(db: &Db<'_>, n: i64) {
        db.execute_batch("CREATE TEMPORARY TABLE rs (s TEXT, i BIGINT, z TEXT)")
            .unwrap();
        let rows = sample_rows(n);
        let mut inserted = 0;
        for chunk in db.chunks(&rows) {
            let set = RowSet::new(db, 1, &["TEXT", "BIGINT", "TEXT"], chunk.iter().cloned());
            assert_eq!(set.len(), chunk.len());
            inserted += db
                .execute(
                    &format!("INSERT INTO rs (s, i, z) {}", set.values()),
                    set.params(),
                )
                .unwrap();
        }
        assert_eq!(inserted, usize::try_from(n).unwrap());
        // Joined as a table, numbered after the statement's own parameter.
        let wanted: Vec<[V<'_>; 2]> = (0..n)
            .filter(|i| i % 2 == 0)
            .map(|i| [V::Int(i), V::from(format!("w{i}"))])
            .collect();
        let mut found = 0;
        for chunk in db.chunks(&wanted) {
            let set = RowSet::new(db, 2, &["BIGINT", "TEXT"], chunk.iter().cloned());
            let sql = format!(
                "SELECT v.column2, rs.i, rs.s FROM {} AS v JOIN rs ON rs.i = v.column1 WHERE rs.z IS NULL AND ?1 = 'x' ORDER BY rs.i",
                set.table()
            );
            let mut params = vec![V::from("x")];
            params.extend(set.into_params());
            let got = db
                .query_map(&sql, &params, |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<String>>(2)?,
                    ))
                })
                .unwrap();
            for (tag, i, s) in &got {
                assert_eq!(tag, &format!("w{i}"));
                assert_eq!(s.is_none(), i % 3 == 0, "row {i}");
            }
            found += got.len();
        }
        assert_eq!(found, wanted.len());
        // As an IN list, after two parameters of the statement's own.
        let some: Vec<String> = (1..n).step_by(7).map(|i| format!("it's {i}")).collect();
        let set = RowSet::new(db, 3, &["TEXT"], some.iter().map(|s| [V::from(s.as_str())]));
        let sql = format!(
            "SELECT COUNT(*) FROM rs WHERE s IN {} AND ?1 = ?2",
            set.in_list()
        );
        let mut params = vec![V::Int(1), V::Int(1)];
        params.extend(set.into_params());
        let count: i64 = db.query_row(&sql, &params, |r| r.get(0)).unwrap();
        let expected = some
            .iter()
            .filter(|s| {
                let i: i64 = s.trim_start_matches("it's ").parse().unwrap();
                i % 3 != 0
            })
            .count();
        assert_eq!(usize::try_from(count).unwrap(), expected);
    }

    #[test]
    fn row_sets_number_their_placeholders_from_first() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Lite(&c);
        let set = RowSet::new(
            &db,
            3,
            &["TEXT", "BIGINT"],
            [[V::from("a"), V::Int(1)], [V::from("b"), V::Int(2)]],
        );
        assert_eq!(set.values(), "VALUES (?3, ?4), (?5, ?6)");
        assert_eq!(
            set.table(),
            "(VALUES (CAST(?3 AS TEXT), CAST(?4 AS BIGINT)), (CAST(?5 AS TEXT), CAST(?6 AS BIGINT)))"
        );
        assert_eq!(set.params().len(), 4);
        let ids = RowSet::new(&db, 2, &["TEXT"], [[V::from("a")], [V::from("b")]]);
        assert_eq!(ids.in_list(), "(?2, ?3)");
        assert_eq!(set_chunks(&[0; 100]).count(), db.chunks(&[0; 100]).count());
    }

    #[test]
    fn row_sets_join_and_insert_on_sqlite() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        row_sets_join_and_insert(&Db::Lite(&c), 300);
    }

    /// The rows of `SELECT n FROM t ORDER BY n` on `db`.
    fn ns(db: &Db<'_>) -> Vec<i64> {
        db.query_map("SELECT n FROM t ORDER BY n", &[], |r| r.get(0))
            .unwrap()
    }

    /// A scratch schema on the test server holding a table `t (n BIGINT
    /// PRIMARY KEY)`, and two connections to it (the second to see what the
    /// first has sent); `None`, skipped, without a test server.
    fn table_t_on_postgres(
        prefix: &str,
    ) -> Option<(crate::sql::scratch::ScratchSchema, PgConn, PgConn)> {
        let Some(base) = crate::sql::scratch::ScratchSchema::test_server_url() else {
            eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
            return None;
        };
        let schema = crate::sql::scratch::ScratchSchema::create(&base, prefix).unwrap();
        let conn = PgConn::connect_url(&schema.url()).unwrap();
        let other = PgConn::connect_url(&schema.url()).unwrap();
        Db::Pg(&conn)
            .execute_batch("CREATE TABLE t (n BIGINT PRIMARY KEY)")
            .unwrap();
        Some((schema, conn, other))
    }

    #[test]
    fn queued_writes_and_reads_go_out_together_and_in_order_on_postgres() {
        let Some((_schema, conn, other)) = table_t_on_postgres("pipe") else {
            return;
        };
        let (db, seen) = (Db::Pg(&conn), Db::Pg(&other));
        db.pipeline(true).unwrap();
        let insert = "INSERT INTO t (n) VALUES (?1)";
        db.execute_later(insert, vec![V::Int(1)], Some(1)).unwrap();
        db.execute_later(insert, vec![V::Int(2)], Some(1)).unwrap();
        assert_eq!(ns(&seen), Vec::<i64>::new(), "queued, not yet sent");
        // Two reads queued behind the writes: each sees both writes.
        let count = db.query_later("SELECT COUNT(*) FROM t", vec![]).unwrap();
        let max = db
            .query_later("SELECT MAX(n) FROM t WHERE n < ?1", vec![V::Int(10)])
            .unwrap();
        assert_eq!(ns(&seen), Vec::<i64>::new(), "reads are queued too");
        let mut rows = db.rows(count).unwrap();
        assert_eq!(rows.next().unwrap().unwrap().get::<_, i64>(0).unwrap(), 2);
        assert_eq!(ns(&seen), [1, 2], "sent by the first read's rows");
        let mut rows = db.rows(max).unwrap();
        assert_eq!(rows.next().unwrap().unwrap().get::<_, i64>(0).unwrap(), 2);
        assert!(!db.take_failed() && !db.take_later_failed());

        // A queued write that fails is the failure of the call that sent
        // it, and is told apart from that call's own.
        db.execute_later(insert, vec![V::Int(1)], Some(1)).unwrap();
        let e = db.execute(insert, &[V::Int(3)]).unwrap_err();
        assert!(e.is_unique_violation(), "{e}");
        assert!(db.take_later_failed(), "the queued write failed");
        assert!(db.take_failed());
        // Outside a transaction each statement stands alone.
        assert_eq!(ns(&seen), [1, 2, 3]);

        // A write that must change one row and changes none.
        db.execute_later("UPDATE t SET n = n WHERE n = ?1", vec![V::Int(99)], Some(1))
            .unwrap();
        let e = db.flush().unwrap_err();
        assert!(matches!(e, DbError::Rows { want: 1, got: 0 }), "{e}");
        assert!(db.take_later_failed());

        // In a transaction, the queued statements, BEGIN and COMMIT
        // included, go out with the COMMIT; one failure loses them all.
        db.execute_batch_later("BEGIN").unwrap();
        db.execute_later(insert, vec![V::Int(4)], Some(1)).unwrap();
        db.execute_later(insert, vec![V::Int(2)], Some(1)).unwrap();
        db.execute_later(insert, vec![V::Int(5)], Some(1)).unwrap();
        assert!(
            db.execute_batch("COMMIT")
                .unwrap_err()
                .is_unique_violation()
        );
        assert!(db.take_later_failed());
        assert_eq!(ns(&seen), [1, 2, 3], "rolled back whole");
        // A read queued before the failure has its rows; one after it
        // has none (PostgreSQL refused the rest of the transaction).
        db.execute_batch_later("BEGIN").unwrap();
        let before = db.query_later("SELECT 1", vec![]).unwrap();
        db.execute_later(insert, vec![V::Int(2)], Some(1)).unwrap();
        let after = db.query_later("SELECT 1", vec![]).unwrap();
        assert!(db.rows(before).is_ok(), "answered before the failure");
        assert!(db.take_later_failed());
        assert!(matches!(db.rows(after), Err(DbError::Unanswered)));
        db.execute_batch("ROLLBACK").unwrap();

        // Turning the pipeline off sends what is queued.
        db.execute_later(insert, vec![V::Int(6)], Some(1)).unwrap();
        db.pipeline(false).unwrap();
        assert_eq!(ns(&seen), [1, 2, 3, 6]);
        // And from then on writes run at once.
        db.execute_later(insert, vec![V::Int(7)], Some(1)).unwrap();
        assert_eq!(ns(&seen), [1, 2, 3, 6, 7]);
    }

    #[test]
    fn flights_are_sent_at_once_and_landed_in_any_order_on_postgres() {
        let Some((_schema, conn, other)) = table_t_on_postgres("flight") else {
            return;
        };
        let (db, seen) = (Db::Pg(&conn), Db::Pg(&other));
        let insert = "INSERT INTO t (n) VALUES (?1)";
        let transaction = |ns: &[i64]| {
            db.pipeline(true).unwrap();
            db.execute_batch_later("BEGIN").unwrap();
            for n in ns {
                db.execute_later(insert, vec![V::Int(*n)], Some(1)).unwrap();
            }
            db.execute_batch_later("COMMIT").unwrap();
            let flight = db.send();
            db.pipeline(false).unwrap();
            flight
        };
        // Sent without waiting: another connection sees the commit before
        // anything on this one waits for it.
        let first = transaction(&[1, 2]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while ns(&seen) != [1, 2] {
            assert!(
                std::time::Instant::now() < deadline,
                "the flight was never sent"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // A second flight behind the first, one that fails behind it, and
        // a statement of the connection's own run after them; then they
        // land, the newest first.
        let second = transaction(&[3]);
        let third = transaction(&[4, 1, 5]);
        assert_eq!(
            db.query_row("SELECT COUNT(*) FROM t", &[], |r| r.get::<_, i64>(0))
                .unwrap(),
            3,
            "run after the flights sent before it"
        );
        let e = db.land(third).unwrap_err();
        assert!(e.is_unique_violation(), "{e}");
        assert!(
            db.take_later_failed(),
            "a statement before the COMMIT failed"
        );
        assert!(db.take_failed());
        db.land(second).unwrap();
        db.land(first).unwrap();
        assert!(!db.take_failed() && !db.take_later_failed());
        assert_eq!(ns(&seen), [1, 2, 3], "the failed flight rolled back whole");
        // A transaction after a failed flight begins afresh.
        let fourth = transaction(&[6]);
        db.land(fourth).unwrap();
        assert_eq!(ns(&seen), [1, 2, 3, 6]);
        // Many flights whose answers nobody reads for a while: the
        // connection keeps reading them, so a later call is answered.
        let flights: Vec<FlightId> = (100..400).map(|n| transaction(&[n])).collect();
        assert_eq!(
            db.query_row("SELECT COUNT(*) FROM t", &[], |r| r.get::<_, i64>(0))
                .unwrap(),
            304
        );
        for flight in flights {
            db.land(flight).unwrap();
        }
    }

    #[test]
    fn flights_are_nothing_to_wait_for_on_sqlite() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Lite(&c);
        db.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        db.pipeline(true).unwrap();
        db.execute_later("INSERT INTO t (n) VALUES (?1)", vec![V::Int(1)], Some(1))
            .unwrap();
        let flight = db.send();
        db.pipeline(false).unwrap();
        db.land(flight).unwrap();
        assert_eq!(ns(&db), [1], "run at once");
    }

    #[test]
    fn queued_writes_and_reads_run_at_once_on_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Lite(&conn);
        db.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .unwrap();
        db.pipeline(true).unwrap();
        let insert = "INSERT INTO t (n) VALUES (?1)";
        db.execute_later(insert, vec![V::Int(1)], Some(1)).unwrap();
        assert_eq!(ns(&db), [1]);
        let read = db.query_later("SELECT COUNT(*) FROM t", vec![]).unwrap();
        assert!(matches!(read, LaterRows::Ready(_)));
        let mut rows = db.rows(read).unwrap();
        assert_eq!(rows.next().unwrap().unwrap().get::<_, i64>(0).unwrap(), 1);
        assert!(db.execute_later(insert, vec![V::Int(1)], Some(1)).is_err());
        let e = db
            .execute_later("UPDATE t SET n = n WHERE n = ?1", vec![V::Int(99)], Some(1))
            .unwrap_err();
        assert!(matches!(e, DbError::Rows { want: 1, got: 0 }), "{e}");
        assert!(!db.take_later_failed(), "nothing is ever queued");
    }

    /// On PostgreSQL, when a test server is configured: arrays of any
    /// length, more rows than one run carries (`MAX_PG_SET`).
    #[test]
    fn row_sets_join_and_insert_on_postgres() {
        let Ok(url) = std::env::var("SWITCHBOARD_TEST_DATABASE_URL") else {
            eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
            return;
        };
        let conn = PgConn::connect_url(&url).unwrap();
        let db = Db::Pg(&conn);
        let n = i64::try_from(MAX_PG_SET).unwrap() + 300;
        assert_eq!(db.chunks(&sample_rows(n)).count(), 2);
        row_sets_join_and_insert(&db, n);
        assert!(!db.take_failed());
        assert!(db.execute_batch("SELECT nonsense").is_err());
        assert!(db.take_failed(), "a failed statement is remembered");
        assert!(!db.take_failed(), "and forgotten once asked");
    }

    /// A set bound as one array of a composite type (`RowSet::typed`):
    /// every value, NULLs and text that needs quoting in the text format
    /// included, arrives as sent, as an insert's rows and as a table to
    /// join; a record that does not fit its type is refused, not sent.
    #[test]
    fn typed_row_sets_bind_one_array_of_rows_on_postgres() {
        let Some(base) = crate::sql::scratch::ScratchSchema::test_server_url() else {
            eprintln!("SWITCHBOARD_TEST_DATABASE_URL is not set: skipped");
            return;
        };
        let schema = crate::sql::scratch::ScratchSchema::create(&base, "typed").unwrap();
        let conn = PgConn::connect_url(&schema.url()).unwrap();
        let db = Db::Pg(&conn);
        db.execute_batch(
            "CREATE TYPE rs_row AS (s TEXT COLLATE \"C\", i BIGINT, z TEXT COLLATE \"C\");
             CREATE TABLE rs (s TEXT COLLATE \"C\", i BIGINT, z TEXT COLLATE \"C\")",
        )
        .unwrap();
        const TYPES: [&str; 3] = ["TEXT", "BIGINT", "TEXT"];
        let hostile = "(\"a\",b)\\ {c,d}\t\n 'é' 𝄞 NULL";
        let mut rows = sample_rows(i64::try_from(MAX_PG_SET).unwrap() + 300);
        rows.push([V::from(hostile), V::Int(i64::MIN), V::from("")]);
        let mut inserted = 0;
        for chunk in db.chunks(&rows) {
            let set = RowSet::typed(&db, 1, "rs_row", &TYPES, chunk.iter().cloned());
            assert_eq!((set.len(), set.params().len()), (chunk.len(), 1));
            assert_eq!(set.next_placeholder(), 2);
            inserted += db
                .execute(
                    &format!("INSERT INTO rs (s, i, z) {}", set.values()),
                    set.params(),
                )
                .unwrap();
        }
        assert_eq!(inserted, rows.len());
        let stored = db
            .query_map("SELECT s, i, z FROM rs", &[], |r| {
                Ok((
                    r.get::<_, Option<String>>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })
            .unwrap();
        let text = |v: &V<'_>| match v {
            V::Text(t) => Some(t.to_string()),
            _ => None,
        };
        let mut sent: Vec<_> = rows
            .iter()
            .map(|[s, i, z]| {
                (
                    text(s),
                    if let V::Int(i) = i { Some(*i) } else { None },
                    text(z),
                )
            })
            .collect();
        let mut got = stored;
        sent.sort();
        got.sort();
        assert_eq!(got, sent);

        // Joined as a table, its columns named column1, column2, …, the
        // statement's own parameter first.
        let wanted = [
            [V::Int(i64::MIN), V::from(hostile)],
            [V::Int(4), V::from("w4")],
        ];
        let set = RowSet::typed(
            &db,
            2,
            "rs_pick",
            &["BIGINT", "TEXT"],
            wanted.iter().cloned(),
        );
        db.execute_batch("CREATE TYPE rs_pick AS (i BIGINT, tag TEXT COLLATE \"C\")")
            .unwrap();
        let sql = format!(
            "SELECT v.column2, rs.s FROM {} AS v JOIN rs ON rs.i = v.column1 WHERE ?1 = 'x' ORDER BY rs.i",
            set.table()
        );
        let mut params = vec![V::from("x")];
        params.extend(set.into_params());
        let got = db
            .query_map(&sql, &params, |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .unwrap();
        assert_eq!(
            got,
            [
                (hostile.to_owned(), Some(hostile.to_owned())),
                ("w4".to_owned(), Some("it's 4".to_owned()))
            ]
        );

        // A record of another arity, or sent as something else: refused by
        // this process with a clear error, nothing stored.
        let short = RowSet::typed(&db, 1, "rs_row", &["TEXT"], [[V::from("x")]]);
        let e = db
            .execute(
                &format!("INSERT INTO rs (s, i, z) {}", short.values()),
                short.params(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("fields"), "{e}");
        let e = db
            .execute("SELECT CAST(?1 AS TEXT)", &[V::Record(vec![V::Int(1)])])
            .unwrap_err();
        assert!(e.to_string().contains("record"), "{e}");
        assert_eq!(
            db.query_row("SELECT COUNT(*) FROM rs", &[], |r| r.get::<_, i64>(0))
                .unwrap(),
            i64::try_from(rows.len()).unwrap()
        );
    }

    /// On SQLite a typed set is a plain one: there are no composite types.
    #[test]
    fn typed_row_sets_are_plain_ones_on_sqlite() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let db = Db::Lite(&c);
        let rows = [[V::from("a"), V::Int(1)], [V::from("b"), V::Int(2)]];
        let typed = RowSet::typed(&db, 3, "t_row", &["TEXT", "BIGINT"], rows.iter().cloned());
        let plain = RowSet::new(&db, 3, &["TEXT", "BIGINT"], rows.iter().cloned());
        assert_eq!(typed.values(), plain.values());
        assert_eq!(typed.table(), plain.table());
        assert_eq!(typed.params(), plain.params());
        assert_eq!(typed.next_placeholder(), 7);
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
