//! Message index entries written behind the accepts (SQLite).
//!
//! Two of the keys an accept is found by are random: a CRM's idempotency
//! keys (UUIDs) and its recipients (a contact list). An index on either
//! takes a leaf page at a random place for every accept, and every such
//! page is a WAL frame in the accept's commit: together, the largest part
//! of what an accept writes (bench/HISTORY.md, "Fourteenth session": without
//! both indexes, accept +40% to +51% and p99 7.5 ms against 25). So on
//! SQLite both live in tables of their own, filled *behind* the accepts:
//! `message_keys` (workspace, idempotency key → message) and
//! `message_phones` (workspace, recipient, message).
//!
//! - An accept records its entries as *pending*, in ordered sets in the
//!   writer thread's memory ([`Pending`], installed by [`install`]), not
//!   in SQLite: no page of theirs is journaled, cached or written. They
//!   follow the writer's transaction: the writer tells them when it
//!   commits, rolls back, or opens, releases or rolls back to a savepoint
//!   ([`committed`], [`rolled_back`], [`savepoint`], [`released`],
//!   [`rolled_back_to`]), and an undo log takes back what a rolled-back
//!   transaction or savepoint recorded, so the entries commit and roll
//!   back with their message. (Until the fifteenth session they were
//!   temporary SQLite tables of the writer's connection; their page
//!   journal and cache cost the writer about a seventh of its time,
//!   bench/HISTORY.md, "Fifteenth session".)
//! - The writer sweeps the pending entries into their tables in key
//!   order, a share of them a step, a step every [`EVERY`] ([`sweep_step`]).
//!   A sweep begins at most once a second, and, once the tables are large,
//!   only when the pending entries have grown to a share of them ([`PACE`]):
//!   entries that arrive together share leaf pages there, and each step's
//!   commit touches one stretch of each table. It steps before batches,
//!   and by the clock while no job arrives until the mark has reached the
//!   last row ([`due`]), so a burst's entries do not wait in memory for
//!   the next write.
//! - When a sweep ends, every message up to the last row when it began
//!   has its entries in the tables, and `written_behind` marks that row.
//! - The writer, which accepts alone, looks a key or a recipient up in its
//!   pending entries and in the swept table ([`keys_sql`], [`last_to`]).
//!   Readers, which cannot see the writer's memory, read the swept table
//!   for the messages up to the mark and the message rows after it, at
//!   most a sweep or two of them, which [`PACE`] bounds ([`listing_to_sql`]).
//! - If the process stops without finishing a sweep, the entries since the
//!   mark are still in their message rows: on start ([`prepare`]) they are
//!   copied before the first accept. The mark is a row number, which only
//!   `VACUUM` can change; the writer finishes its sweep when it stops, so a
//!   `VACUUM` of a store that was shut down finds nothing pending.
//! - On a thread where no pending entries are installed (a tool or a test
//!   writing with a connection of its own) an accept's entries go straight
//!   into the tables.
//!
//! On PostgreSQL, where several nodes accept, the indexes stay.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::db::{Db, OptionalExt, RowSet, V, p};
use crate::error::StoreError;

/// How often the writer takes a step of a sweep.
pub const EVERY: Duration = Duration::from_millis(5);

/// Steps per sweep at least. (Fewer, larger steps made p99 worse: each
/// step's commit stalls the accepts behind it. bench/HISTORY.md,
/// "Fifteenth session".)
const STEPS: usize = 50;

/// A larger sweep is split into steps of about this many entries of a
/// table, in up to twenty times [`STEPS`] steps: a sweep of a second's
/// entries at 20,000 accepts a second takes about a second, the longest
/// (1,000 steps) five. Once a table has more leaf pages than a step has
/// entries, each entry of a step lands on a leaf of its own, so what a
/// step's commit writes, and the accepts behind it wait for, grows with
/// the step, not with the sweep: steps of 100 entries every 5 ms put p99
/// at 7.3–8.2 ms after 90 s of accepts (about two million keys) where
/// steps of 400 every 20 ms put it at 9.8–12.9 ms, and ten-second runs
/// were no slower (bench/HISTORY.md, "Thirty-fifth session"; steps of 50
/// every 2 ms wrote more a message).
const STEP_SIZE: usize = 100;

/// The fewest entries a step moves from one table.
const MIN_STEP: usize = 64;

/// When a sweep begins ([`Pending::begins_in`]).
#[derive(Debug)]
struct Pace {
    /// The least time from one sweep's start to the next.
    least: Duration,
    /// The most: a sweep then begins whatever is pending.
    most: Duration,
    /// In between, a sweep begins once the pending entries of a table are
    /// a `share`th of the entries it holds, or `cap` of them if fewer...
    share: usize,
    cap: usize,
    /// ...or once no entry has arrived for `quiet`.
    quiet: Duration,
}

/// The writer's pace. A leaf page is written once per sweep whatever
/// number of its entries the sweep moves, so a sweep of too few entries
/// for the table rewrites a page for every one or two of them: over 40 s
/// of accepts (800,000 keys, random, and 10,000 recipients) a sweep a
/// second wrote 12 KB per accept and put p99 over 10 ms (bench/HISTORY.md,
/// "Thirty-third session"; "Thirty-fourth session": 8 KB and 8.9 ms at this
/// pace). Waiting until the entries pending are an eighth of the table's
/// gives each leaf four to six of them at 35 to 50 entries a leaf. The cap
/// bounds the memory they take (about 140 bytes an entry, two entries an
/// accept) and the rows a reader scans after the mark: the mark lags by up
/// to two sweeps, at 20,000 accepts a second about 120,000 rows (against
/// 40,000 with a sweep a second). While the tables hold less than about
/// eight seconds of the accepts arriving, a sweep still begins every
/// second.
const PACE: Pace = Pace {
    least: Duration::from_secs(1),
    most: Duration::from_secs(5),
    share: 8,
    cap: 60_000,
    quiet: Duration::from_millis(100),
};

/// A sweep at once: the writer is stopping.
const NOW: Pace = Pace {
    least: Duration::ZERO,
    most: Duration::ZERO,
    share: 1,
    cap: 0,
    quiet: Duration::ZERO,
};

/// The row of `written_behind` that holds the mark.
const MARK: &str = "messages";

/// A table written behind, and its key: two columns of the message row,
/// then the message id.
struct Behind {
    name: &'static str,
    key: [&'static str; 3],
}

/// The keys' table (index 0 of [`Pending::tables`]), then the recipients'.
const TABLES: [Behind; 2] = [
    Behind {
        name: "main.message_keys",
        key: ["workspace_id", "idempotency_key", "message_id"],
    },
    Behind {
        name: "main.message_phones",
        key: ["workspace_id", "to_phone", "message_id"],
    },
];
const KEYS: usize = 0;
const PHONES: usize = 1;

impl Behind {
    fn columns(&self) -> String {
        self.key.join(", ")
    }
}

/// An entry of a table written behind: its three columns in one string,
/// separated by NULs, which order as the columns do (NUL sorts before
/// every other character), in one allocation, shared by its set, the undo
/// log and a sweep's slice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Entry(std::rc::Rc<str>);

impl Entry {
    /// The entry of columns `a`, `b`, `c`; none if one of them holds a NUL
    /// (such an entry goes straight into its table).
    fn new(a: &str, b: &str, c: &str) -> Option<Entry> {
        if [a, b, c].iter().any(|v| v.contains('\0')) {
            return None;
        }
        Some(Entry::joined(&[a, b, c]))
    }

    /// The start of every entry whose first two columns are `a`, `b`.
    fn prefix(a: &str, b: &str) -> Entry {
        Entry::joined(&[a, b, ""])
    }

    /// `parts` joined by NULs, in the entry's one allocation: built in a
    /// buffer the thread keeps (a `format!` grew a `String` and then
    /// copied it into the `Rc`: about 3,000 instructions an entry, two
    /// entries an accept).
    fn joined(parts: &[&str]) -> Entry {
        thread_local! {
            static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            buf.clear();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    buf.push('\0');
                }
                buf.push_str(part);
            }
            Entry(std::rc::Rc::from(buf.as_str()))
        })
    }

    fn columns(&self) -> [&str; 3] {
        let mut it = self.0.splitn(3, '\0');
        let mut next = || it.next().unwrap_or_default();
        [next(), next(), next()]
    }
}

/// The writer's pending entries and its sweep (see the module
/// documentation).
#[derive(Debug, Default)]
pub struct Pending {
    /// Per table of [`TABLES`], the entries not yet swept. A pending key
    /// is unique by its first two columns: an accept looks its key up
    /// first.
    tables: [BTreeSet<Entry>; 2],
    sweep: Option<Sweep>,
    /// When the last sweep began.
    began: Option<Instant>,
    /// The last message row when the last sweep began: about how many
    /// entries each table holds.
    rows: i64,
    /// When the last entry was recorded.
    last_added: Option<Instant>,
    /// Nothing pending and the mark at the last message row: the sweep
    /// has nothing to do until the next accept ([`due`]).
    settled: bool,
    /// What the open transaction changed, newest last.
    undo: Vec<Undo>,
    /// The length of `undo` when each open savepoint began.
    savepoints: Vec<usize>,
}

/// A sweep under way.
#[derive(Debug, Clone)]
struct Sweep {
    /// The last message row when it began.
    mark: i64,
    /// Per table: the last entry moved (none yet at the start), and
    /// whether the table is done.
    after: [Option<Entry>; 2],
    done: [bool; 2],
    /// Steps left, this one included.
    steps_left: usize,
}

/// A change to [`Pending`], undone on rollback.
#[derive(Debug)]
enum Undo {
    Added(usize, Entry),
    Removed(usize, Vec<Entry>),
    Sweep(Option<Sweep>),
    Settled(bool),
    Began(Option<Instant>),
}

thread_local! {
    // `Some` on the writer thread once `install` has run.
    static PENDING: RefCell<Option<Pending>> = const { RefCell::new(None) };
}

/// Keeps pending entries on this thread (the writer's) from now on. The
/// writer calls it before its first job, after [`prepare`].
pub fn install() {
    // `prepare` has just set the mark to the last row.
    PENDING.set(Some(Pending {
        settled: true,
        ..Pending::default()
    }));
}

/// How soon the sweep has a step to take though no write arrives
/// (`Chore::due`): at once while a sweep is under way, when [`PACE`]
/// allows the next one while entries are pending or the mark is behind,
/// and never once settled. So the entries of a burst reach their tables,
/// and the mark the last row, a second or two after the burst, not at
/// the next write.
pub fn due() -> Option<Duration> {
    with(|p| {
        if p.sweep.is_some() {
            Some(Duration::ZERO)
        } else if p.settled {
            None
        } else {
            Some(p.begins_in(&PACE))
        }
    })
    .flatten()
}

/// Runs `f` on this thread's pending entries, if it has them.
fn with<T>(f: impl FnOnce(&mut Pending) -> T) -> Option<T> {
    PENDING.with_borrow_mut(|p| p.as_mut().map(f))
}

/// The writer's transaction committed: its changes stay.
pub fn committed() {
    with(|p| {
        p.undo.clear();
        p.savepoints.clear();
    });
}

/// The writer's transaction rolled back: its changes are undone.
pub fn rolled_back() {
    with(|p| {
        p.undo_to(0);
        p.savepoints.clear();
    });
}

/// The writer opened a savepoint.
pub fn savepoint() {
    with(|p| p.savepoints.push(p.undo.len()));
}

/// The writer released its newest savepoint: its changes are the
/// transaction's.
pub fn released() {
    with(|p| p.savepoints.pop());
}

/// The writer rolled back to its newest savepoint (which stays open):
/// the changes since it began are undone.
pub fn rolled_back_to() {
    with(|p| {
        let to = p.savepoints.last().copied().unwrap_or(0);
        p.undo_to(to);
    });
}

impl Pending {
    fn undo_to(&mut self, len: usize) {
        while self.undo.len() > len {
            match self.undo.pop().expect("longer than len") {
                Undo::Added(t, e) => {
                    self.tables[t].remove(&e);
                }
                Undo::Removed(t, entries) => self.tables[t].extend(entries),
                Undo::Sweep(s) => self.sweep = s,
                Undo::Settled(v) => self.settled = v,
                Undo::Began(b) => self.began = b,
            }
        }
    }

    fn add(&mut self, t: usize, e: Entry) {
        self.last_added = Some(Instant::now());
        if self.tables[t].insert(e.clone()) {
            self.undo.push(Undo::Added(t, e));
            self.set_settled(false);
        }
    }

    fn set_settled(&mut self, v: bool) {
        if self.settled != v {
            self.settled = v;
            self.undo.push(Undo::Settled(!v));
        }
    }

    fn set_sweep(&mut self, s: Option<Sweep>) {
        let old = std::mem::replace(&mut self.sweep, s);
        self.undo.push(Undo::Sweep(old));
    }

    /// How soon the next sweep begins at `pace`, none being under way
    /// (zero: now). The first begins at once.
    fn begins_in(&self, pace: &Pace) -> Duration {
        let Some(began) = self.began else {
            return Duration::ZERO;
        };
        let since = began.elapsed();
        if since < pace.least {
            return pace.least - since;
        }
        let pending = self.tables.iter().map(BTreeSet::len).max().unwrap_or(0);
        let share = (usize::try_from(self.rows).unwrap_or(0) / pace.share.max(1)).min(pace.cap);
        if pending >= share || since >= pace.most {
            return Duration::ZERO;
        }
        let quiet = self.last_added.map_or(pace.quiet, |t| t.elapsed());
        if quiet >= pace.quiet {
            return Duration::ZERO;
        }
        (pace.quiet - quiet).min(pace.most - since)
    }

    /// The last columns of the entries of table `t` whose first two
    /// columns are `a`, `b`, in order.
    fn prefixed<'s>(&'s self, t: usize, a: &str, b: &str) -> impl Iterator<Item = &'s str> {
        let from = Entry::prefix(a, b);
        let len = from.0.len();
        self.tables[t]
            .range(from.clone()..)
            .take_while(move |e| e.0.starts_with(&*from.0))
            .map(move |e| &e.0[len..])
    }
}

/// The message a pending idempotency key belongs to.
fn pending_key(workspace: &str, key: &str) -> Option<String> {
    with(|p| p.prefixed(KEYS, workspace, key).next().map(str::to_owned)).flatten()
}

/// The newest pending message to a recipient.
fn newest_pending_to(workspace: &str, phone: &str) -> Option<String> {
    with(|p| {
        p.prefixed(PHONES, workspace, phone)
            .last()
            .map(str::to_owned)
    })
    .flatten()
}

/// Makes the store ready for its writer: the entries of every message
/// accepted after the mark copied into their tables (see the module
/// documentation).
pub fn prepare(conn: &Connection) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    let mut copied = 0;
    for t in &TABLES {
        let [a, b, _] = t.key;
        copied += tx.execute(
            &format!(
                "INSERT OR IGNORE INTO {} ({}) SELECT {a}, {b}, id FROM messages
                 WHERE rowid > (SELECT upto FROM written_behind WHERE name = ?1) AND {b} IS NOT NULL
                 ORDER BY 1, 2, 3",
                t.name,
                t.columns()
            ),
            [MARK],
        )?;
    }
    set_mark(&Db::Lite(&tx), last_row(&tx)?)?;
    tx.commit()?;
    if copied > 0 {
        tracing::info!(
            entries = copied,
            "copied the index entries of the messages accepted after the last sweep"
        );
    }
    Ok(())
}

/// Records new messages' entries, in the accepts' transaction:
/// (workspace, idempotency key if any, recipient, message id). Pending on
/// the writer's thread; into their tables at once elsewhere.
pub fn record<'a>(
    c: &Db<'_>,
    messages: impl IntoIterator<Item = (&'a str, Option<&'a str>, &'a str, &'a str)>,
) -> Result<(), StoreError> {
    // Per table, the entries that go straight into it.
    let mut straight: [Vec<[&str; 3]>; 2] = Default::default();
    let installed = PENDING.with_borrow(Option::is_some);
    let mut pend = |t: usize, e: [&'a str; 3]| match Entry::new(e[0], e[1], e[2]) {
        Some(entry) if installed => {
            with(|p| p.add(t, entry));
        }
        _ => straight[t].push(e),
    };
    for (ws, key, to, id) in messages {
        if let Some(key) = key {
            pend(KEYS, [ws, key, id]);
        }
        pend(PHONES, [ws, to, id]);
    }
    for (t, rows) in TABLES.iter().zip(&straight) {
        insert(c, t, rows)?;
    }
    Ok(())
}

/// Inserts entries into their table.
fn insert(c: &Db<'_>, t: &Behind, rows: &[[&str; 3]]) -> Result<(), StoreError> {
    for chunk in c.chunks(rows) {
        let set = RowSet::new(
            c,
            1,
            &["TEXT", "TEXT", "TEXT"],
            chunk.iter().map(|e| e.map(V::from)),
        );
        // `OR FAIL` (`Db::insert_into`): a step's entries land on many
        // pages of the table, and a plain `INSERT` copied each of them into
        // a statement journal first, which spilled to a temporary file
        // (bench/HISTORY.md, "Twenty-fourth session").
        // A table's name names its columns too (`TABLES`).
        let [n, nl] = super::db::static_part(t.name);
        let sql = set.sql([n, nl, 0, 0, 0, 0, 0, 0], || {
            format!(
                "{} {} ({}) {}",
                c.insert_into(),
                t.name,
                t.columns(),
                set.values()
            )
        });
        c.execute_later(&sql, set.into_params(), Some(chunk.len()))?;
    }
    Ok(())
}

/// One step of the sweep that moves the pending entries into their
/// tables. A sweep goes through the entries pending in key order, in
/// [`STEPS`] steps of a slice of each table or more for a large sweep
/// ([`steps_for`]), so each step's commit
/// touches one stretch of the table's pages (a move of everything at once
/// stalled the writer for tens of milliseconds: a commit of most of the
/// table's leaf pages). Entries that arrive meanwhile after the sweep's
/// position are moved by it too, so a step moves an equal share of what is
/// pending for each step left, at least [`MIN_STEP`] (a share fixed when
/// the sweep began never finished under a steady load: the random keys
/// kept arriving ahead of it); those that arrive behind the position wait
/// for the next sweep. A sweep begins at [`PACE`] (at once with `finish`,
/// when the writer stops): a leaf page is written once per sweep whatever
/// number of its entries the sweep moves, so sweeps that followed each
/// other as fast as the steps allowed wrote half as much again per
/// message in `e2e`, and a sweep a second into large tables a page for
/// nearly every entry. When a sweep ends, every message up to the
/// last row when it began has its entries in the tables, and the mark says
/// so. Its state changes with the writer's transaction, as the entries do.
/// Answers whether steps are left (none on a thread without pending
/// entries, or on PostgreSQL).
pub fn sweep_step(c: &Db<'_>, finish: bool) -> Result<bool, StoreError> {
    sweep_step_of(c, STEPS, if finish { &NOW } else { &PACE })
}

/// The steps of a sweep of `pending` entries (of its larger table): at
/// least `steps`, more for a sweep larger than `steps` of [`STEP_SIZE`],
/// up to twenty times as many.
fn steps_for(pending: usize, steps: usize) -> usize {
    pending.div_ceil(STEP_SIZE).clamp(steps, 20 * steps)
}

/// [`sweep_step`] of a sweep of at least `steps` steps, begun at `pace`.
fn sweep_step_of(c: &Db<'_>, steps: usize, pace: &Pace) -> Result<bool, StoreError> {
    let Db::Lite(conn) = c else {
        return Ok(false);
    };
    let Some((sweep, begins_in)) = with(|p| (p.sweep.clone(), p.begins_in(pace))) else {
        return Ok(false);
    };
    let mut sweep = match sweep {
        Some(s) => s,
        None if begins_in > Duration::ZERO => return Ok(false),
        None => {
            with(|p| {
                let old = p.began.replace(Instant::now());
                p.undo.push(Undo::Began(old));
            });
            let mark = last_row(conn)?;
            with(|p| p.rows = mark);
            let sizes = with(|p| p.tables.each_ref().map(BTreeSet::len)).unwrap_or_default();
            if sizes.iter().all(|n| *n == 0) {
                set_mark(c, mark)?;
                with(|p| p.set_settled(true));
                return Ok(false);
            }
            Sweep {
                mark,
                after: [None, None],
                done: sizes.map(|n| n == 0),
                steps_left: steps_for(sizes.into_iter().max().unwrap_or(0), steps),
            }
        }
    };
    for (t, table) in TABLES.iter().enumerate() {
        if sweep.done[t] {
            continue;
        }
        // The next slice in key order: an equal share of what is pending
        // for each step left (entries keep arriving ahead of the
        // position; those behind it count too, which only makes the share
        // larger), so the last step takes the rest.
        let (slice, take) = with(|p| {
            let from: Bound<&Entry> = match &sweep.after[t] {
                Some(a) => Bound::Excluded(a),
                None => Bound::Unbounded,
            };
            let take = p.tables[t].len().div_ceil(sweep.steps_left).max(MIN_STEP);
            let slice: Vec<Entry> = p.tables[t]
                .range::<Entry, _>((from, Bound::Unbounded))
                .take(take)
                .cloned()
                .collect();
            (slice, take)
        })
        .unwrap_or_default();
        let rows: Vec<[&str; 3]> = slice.iter().map(Entry::columns).collect();
        insert(c, table, &rows)?;
        sweep.done[t] = slice.len() < take;
        if let Some(last) = slice.last() {
            sweep.after[t] = Some(last.clone());
        }
        with(|p| {
            for e in &slice {
                p.tables[t].remove(e);
            }
            p.undo.push(Undo::Removed(t, slice));
        });
    }
    sweep.steps_left = sweep.steps_left.saturating_sub(1).max(1);
    let left = !sweep.done.iter().all(|d| *d);
    let mark = sweep.mark;
    with(|p| p.set_sweep(left.then_some(sweep)));
    if !left {
        set_mark(c, mark)?;
    }
    Ok(left)
}

/// The last message row (0 if none).
fn last_row(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT coalesce(max(rowid), 0) FROM messages")?
        .query_row([], |r| r.get(0))?)
}

/// Every message row up to `upto` has its entries in the tables.
fn set_mark(c: &Db<'_>, upto: i64) -> Result<(), StoreError> {
    c.prepare_cached("UPDATE written_behind SET upto = ?2 WHERE name = ?1")?
        .execute(p![MARK, upto])?;
    Ok(())
}

/// The writer's set of (workspace, key) pairs to look up, each with the
/// message its key is pending for, if it is: `(workspace, key, message
/// or NULL)` rows for [`keys_sql`].
pub fn key_rows<'a>(keys: &'a [(&'a str, &'a str)]) -> Vec<[V<'a>; 3]> {
    keys.iter()
        .map(|(ws, key)| {
            let pending = pending_key(ws, key).map_or(V::Null, V::from);
            [V::from(*ws), V::from(*key), pending]
        })
        .collect()
}

/// The writer's read of the stored messages that hold any of a set of
/// [`key_rows`]: those whose keys are pending, by id, then those swept.
pub fn keys_sql(set: &str, columns: &str) -> String {
    format!(
        "SELECT k.column1, k.column2, {columns} FROM {set} k
             JOIN messages m ON m.id = k.column3
         UNION ALL
         SELECT k.column1, k.column2, {columns} FROM {set} k
             JOIN main.message_keys x ON k.column3 IS NULL
                 AND x.workspace_id = k.column1 AND x.idempotency_key = k.column2
             JOIN messages m ON m.id = x.message_id"
    )
}

/// The writer's read of the newest message to a recipient: `row` of
/// `{columns}` of it, from `messages m`. On SQLite through the pending and
/// the swept recipients; on PostgreSQL through its index.
pub fn last_to<T>(
    c: &Db<'_>,
    columns: &str,
    workspace: &str,
    phone: &str,
    row: impl FnOnce(&super::db::Row<'_>) -> Result<T, super::db::DbError>,
) -> Result<Option<T>, StoreError> {
    let found = if c.is_pg() {
        c.prepare_cached(&format!(
            "SELECT {columns} FROM messages m WHERE m.workspace_id = ?1 AND m.to_phone = ?2 ORDER BY m.id DESC LIMIT 1"
        ))?
        .query_row(p![workspace, phone], row)
    } else {
        let pending = newest_pending_to(workspace, phone);
        c.prepare_cached(&format!(
            "SELECT {columns} FROM messages m WHERE m.id = (SELECT max(message_id) FROM (
                 SELECT ?3 AS message_id
                 UNION ALL
                 SELECT max(message_id) FROM main.message_phones WHERE workspace_id = ?1 AND to_phone = ?2))"
        ))?
        .query_row(p![workspace, phone, pending], row)
    };
    Ok(found.optional()?)
}

/// A reader's listing of the messages to a recipient, newest first:
/// `{columns}` of `messages m` where `m.workspace_id = ?1 AND m.to_phone =
/// ?2{and}` (`and`: further conditions on `m`, the cursor's `m.id <
/// {cursor}` among them), up to `{limit}`. The messages up to the mark are
/// found through `message_phones`, those after it by reading the rows
/// after it: by row number (`NOT INDEXED`), since a listing index of the
/// workspace or status would serve the order and the filter, and then
/// read every message it holds to find the few after the mark.
pub fn listing_to_sql(columns: &str, and: &str, cursor: Option<&str>, limit: &str) -> String {
    let mark = format!("(SELECT upto FROM written_behind WHERE name = '{MARK}')");
    let before = cursor
        .map(|c| format!(" AND p.message_id < {c}"))
        .unwrap_or_default();
    format!(
        "SELECT * FROM (
             SELECT * FROM (SELECT {columns} FROM main.message_phones p JOIN messages m ON m.id = p.message_id
                 WHERE p.workspace_id = ?1 AND p.to_phone = ?2{before} AND m.rowid <= {mark}{and}
                 ORDER BY p.message_id DESC LIMIT {limit})
             UNION ALL
             SELECT * FROM (SELECT {columns} FROM messages m NOT INDEXED
                 WHERE m.rowid > {mark} AND m.workspace_id = ?1 AND m.to_phone = ?2{and}
                 ORDER BY m.id DESC LIMIT {limit}))
         ORDER BY id DESC LIMIT {limit}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir);
        (dir, conn)
    }

    fn open(dir: &tempfile::TempDir) -> Connection {
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        prepare(&conn).unwrap();
        // This thread writes as the writer does, with pending entries (a
        // new start forgets those of the last, as a restart does).
        install();
        conn
    }

    /// A message row, and its entries recorded as pending, as an accept
    /// does.
    fn accept(conn: &Connection, id: &str, key: Option<&str>, to: &str) {
        conn.execute(
            "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                 priority, status, initial_status, expires_at, idempotency_key, request_hash, created_at, updated_at)
             VALUES (?1, 'ws_1', ?3, 'sms', 'hi', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, ?2, 'h', 0, 0)",
            rusqlite::params![id, key, to],
        )
        .unwrap();
        record(&Db::Lite(conn), [("ws_1", key, to, id)]).unwrap();
        if conn.is_autocommit() {
            committed();
        }
    }

    /// `n` accepts to one recipient, `msg_0000` with key `k0000` and on.
    fn accept_numbered(conn: &Connection, n: usize) {
        for n in 0..n {
            accept(
                conn,
                &format!("msg_{n:04}"),
                Some(&format!("k{n:04}")),
                "+1",
            );
        }
    }

    fn strings(conn: &Connection, sql: &str) -> Vec<String> {
        let mut s = conn.prepare(sql).unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The pending entries of table `t`.
    fn pending(t: usize) -> Vec<[String; 3]> {
        with(|p| {
            p.tables[t]
                .iter()
                .map(|e| e.columns().map(str::to_owned))
                .collect()
        })
        .expect("installed")
    }

    /// The pending keys, in order.
    fn pending_keys() -> Vec<String> {
        pending(KEYS).into_iter().map(|[_, k, _]| k).collect()
    }

    /// The messages whose recipients are pending, in the entries' order.
    fn pending_phones() -> Vec<String> {
        pending(PHONES).into_iter().map(|[_, _, id]| id).collect()
    }

    fn keys(conn: &Connection, table: &str) -> Vec<String> {
        strings(
            conn,
            &format!("SELECT idempotency_key FROM {table} ORDER BY idempotency_key"),
        )
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn mark(conn: &Connection) -> i64 {
        count(
            conn,
            "SELECT upto FROM written_behind WHERE name = 'messages'",
        )
    }

    /// Every message has its recipient either pending or swept, once; and
    /// those up to the mark are swept.
    fn phones_whole(conn: &Connection) {
        let pending: Vec<String> = pending(PHONES)
            .into_iter()
            .map(|[_, to, id]| format!("{to} {id}"))
            .collect();
        let swept = strings(
            conn,
            "SELECT to_phone || ' ' || message_id FROM main.message_phones",
        );
        let mut both: Vec<String> = pending.into_iter().chain(swept).collect();
        both.sort();
        let messages = strings(
            conn,
            "SELECT to_phone || ' ' || id FROM messages ORDER BY 1",
        );
        assert_eq!(both, messages);
        assert_eq!(
            count(
                conn,
                "SELECT count(*) FROM messages m WHERE m.rowid <= (SELECT upto FROM written_behind)
                   AND NOT EXISTS (SELECT 1 FROM main.message_phones p WHERE p.message_id = m.id)"
            ),
            0
        );
    }

    /// One step in a transaction of its own, as the writer's chore runs it.
    /// Checks the recipients after it (`phones_whole`).
    fn step(conn: &Connection) -> bool {
        let more = step_of(conn, STEPS);
        phones_whole(conn);
        more
    }

    /// A step of a sweep of at most `steps` steps, unchecked.
    fn step_of(conn: &Connection, steps: usize) -> bool {
        step_at(conn, steps, &NOW)
    }

    /// A step of a sweep of at most `steps` steps begun at `pace`,
    /// unchecked.
    fn step_at(conn: &Connection, steps: usize, pace: &Pace) -> bool {
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let more = sweep_step_of(&Db::Lite(conn), steps, pace).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        committed();
        more
    }

    #[test]
    fn a_sweep_moves_the_pending_entries_in_key_order_slices_and_marks_its_end() {
        let (_dir, conn) = store();
        // 250 keys in no order to 37 recipients; a sweep of them moves
        // `MIN_STEP` (64) of each table a step.
        for n in 0..250 {
            let k = (n * 7919) % 250;
            let to = format!("+1415555{:04}", n % 37);
            accept(
                &conn,
                &format!("msg_{n:04}"),
                Some(&format!("k{k:04}")),
                &to,
            );
        }
        accept(&conn, "msg_nokey", None, "+14155550000");
        assert!(step(&conn));
        let moved = keys(&conn, "main.message_keys");
        assert_eq!(moved.len(), MIN_STEP);
        assert_eq!(moved.first().unwrap(), "k0000");
        assert_eq!(moved.last().unwrap(), "k0063");
        assert_eq!(pending_keys().len(), 186);
        assert_eq!(count(&conn, "SELECT count(*) FROM main.message_phones"), 64);
        // The mark moves only when the sweep ends.
        assert_eq!(mark(&conn), 0);
        // Keys arriving meanwhile: behind the sweep's position they wait
        // for the next sweep, ahead of it they are moved by this one.
        accept(&conn, "msg_behind", Some("k0030x"), "+14155550001");
        accept(&conn, "msg_ahead", Some("k9999"), "+14155559999");
        assert!(step(&conn));
        assert!(step(&conn));
        assert!(!step(&conn), "the fourth step is the last");
        assert_eq!(pending_keys(), ["k0030x"]);
        assert_eq!(keys(&conn, "main.message_keys").len(), 251);
        assert_eq!(pending_phones(), ["msg_behind"]);
        // Every row up to the last when the sweep began: the 250 and the
        // one without a key, not the two that came during it.
        assert_eq!(mark(&conn), 251);
        assert!(!step(&conn), "a sweep of one entry is one step");
        assert!(pending_keys().is_empty());
        assert_eq!(pending(PHONES).len() as i64, 0);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM main.message_phones"),
            253
        );
        assert_eq!(mark(&conn), 253);
        // Nothing pending: the mark follows the table.
        accept(&conn, "msg_nokey2", None, "+14155550000");
        assert!(!step(&conn));
        assert_eq!(mark(&conn), 254);
    }

    /// Under a steady load, random keys keep arriving ahead of the
    /// sweep's position; the sweep still ends within its steps, and what
    /// stays pending is what arrived during it.
    #[test]
    fn a_sweep_ends_within_its_steps_while_keys_keep_arriving_ahead_of_it() {
        let (_dir, conn) = store();
        let mut n = 0;
        // A batch of accepts in one transaction, as the writer commits them.
        let mut arrive = |conn: &Connection, count: usize| {
            conn.execute_batch("BEGIN").unwrap();
            for _ in 0..count {
                n += 1;
                let k = (n * 7919) % 100_000;
                let (id, key, to) = (
                    format!("msg_{n:06}"),
                    format!("k{k:05}"),
                    format!("+1{k:05}"),
                );
                accept(conn, &id, Some(&key), &to);
            }
            conn.execute_batch("COMMIT").unwrap();
            committed();
        };
        arrive(&conn, 1_000);
        let mut steps: i64 = 0;
        loop {
            steps += 1;
            let more = step_of(&conn, 10);
            arrive(&conn, 1_000);
            if !more {
                break;
            }
            assert!(steps < 10, "a sweep of 10 steps at most took more");
        }
        assert!(steps > 1);
        // Every row up to the last when the sweep began.
        assert_eq!(mark(&conn), 1_000);
        assert!(pending_keys().len() < 1_000 * 10);
        phones_whole(&conn);
        // The next sweep moves what arrived behind the position too.
        while step_of(&conn, 10) {}
        phones_whole(&conn);
        assert!(pending_keys().is_empty());
        assert_eq!(
            count(&conn, "SELECT count(*) FROM main.message_keys"),
            1_000 * (steps + 1)
        );
    }

    /// A sweep begins at most once a period, unless the writer is
    /// stopping.
    #[test]
    fn a_sweep_begins_at_most_once_a_period_unless_the_writer_stops() {
        let (_dir, conn) = store();
        let sweep = |finish: bool| -> bool {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            let more = sweep_step(&Db::Lite(&conn), finish).unwrap();
            conn.execute_batch("COMMIT").unwrap();
            committed();
            more
        };
        accept(&conn, "msg_1", Some("a"), "+1");
        assert!(!sweep(false), "the first sweep begins at once");
        assert!(pending_keys().is_empty());
        accept(&conn, "msg_2", Some("b"), "+2");
        assert!(!sweep(false));
        assert_eq!(
            pending_keys(),
            ["b"],
            "less than a period since the last began"
        );
        assert_eq!(mark(&conn), 1);
        assert!(!sweep(true));
        assert!(pending_keys().is_empty());
        assert_eq!(mark(&conn), 2);
        phones_whole(&conn);
    }

    /// Past the least time between sweeps, a sweep waits while the
    /// pending entries of each table are fewer than their share of what
    /// the tables hold (capped) and entries keep arriving; it begins once
    /// one table's reach that share, once none has arrived for a while,
    /// or once the most time has passed, and the wait told is never past
    /// either.
    #[test]
    fn a_sweep_waits_for_its_share_of_the_tables_while_entries_arrive() {
        // Times long enough that a slow test thread does not pass them
        // between two lines.
        let pace = Pace {
            least: Duration::from_secs(1),
            most: Duration::from_secs(60),
            share: 8,
            cap: 100,
            quiet: Duration::from_secs(10),
        };
        let ago = |ms: u64| Some(Instant::now() - Duration::from_millis(ms));
        let entry = |i: usize| Entry::new("ws_1", "+1", &format!("msg_{i:04}")).unwrap();
        // A sweep begins later, within `most`.
        let waits = |p: &Pending, pace: &Pace, most: Duration, what: &str| {
            let wait = p.begins_in(pace);
            assert!(wait > Duration::ZERO && wait <= most, "{what}: {wait:?}");
        };
        let mut p = Pending::default();
        assert_eq!(p.begins_in(&pace), Duration::ZERO, "the first at once");
        p.began = ago(400);
        waits(&p, &pace, Duration::from_millis(600), "the least time");
        // 400 entries in the tables: a sweep wants 50 pending.
        p.began = ago(1_500);
        p.rows = 400;
        for i in 0..49 {
            p.add(PHONES, entry(i));
        }
        p.add(KEYS, Entry::new("ws_1", "k", "msg_0000").unwrap());
        waits(&p, &pace, pace.quiet, "49 of 50 and one just arrived");
        p.add(PHONES, entry(49));
        assert_eq!(p.begins_in(&pace), Duration::ZERO, "50 of 50");
        // A million in the tables: the cap, 100, not an eighth.
        p.rows = 1_000_000;
        assert!(p.begins_in(&pace) > Duration::ZERO);
        for i in 50..100 {
            p.add(PHONES, entry(i));
        }
        assert_eq!(p.begins_in(&pace), Duration::ZERO, "the cap reached");
        // Too few, but nothing has arrived for the quiet time.
        p.rows = 10_000_000;
        let pace = Pace { cap: 1_000, ..pace };
        assert!(p.begins_in(&pace) > Duration::ZERO);
        p.last_added = ago(10_500);
        assert_eq!(p.begins_in(&pace), Duration::ZERO, "quiet");
        // Entries arriving all the time: the most time.
        p.last_added = ago(0);
        p.began = ago(59_000);
        waits(
            &p,
            &pace,
            Duration::from_secs(1),
            "a second before the most",
        );
        p.began = ago(60_000);
        assert_eq!(p.begins_in(&pace), Duration::ZERO, "the most time");
    }

    /// The writer's sweep records how large the tables are when it begins,
    /// and waits for its share of them: an eighth of 800 rows is 100.
    /// (The writer's pace with a longer quiet time, which a slow test
    /// thread could pass between two accepts.)
    #[test]
    fn the_writer_waits_for_an_eighth_of_the_tables_before_a_sweep() {
        let (_dir, conn) = store();
        accept_numbered(&conn, 800);
        let pace = Pace {
            quiet: Duration::from_secs(30),
            ..PACE
        };
        let sweep = || step_at(&conn, STEPS, &pace);
        while sweep() {}
        assert!(pending_keys().is_empty());
        assert_eq!(mark(&conn), 800);
        let a_while_ago = || with(|p| p.began = Some(Instant::now() - 2 * PACE.least));
        for n in 800..899 {
            accept(
                &conn,
                &format!("msg_{n:04}"),
                Some(&format!("k{n:04}")),
                "+1",
            );
        }
        a_while_ago();
        assert!(!sweep());
        assert_eq!(pending_keys().len(), 99, "99 of 100, the last just now");
        assert!(due().is_some());
        accept(&conn, "msg_0899", Some("k0899"), "+1");
        // 100 of 100: a sweep begins; its first step moves `MIN_STEP`
        // (64) entries of a table, its second the rest.
        assert!(sweep());
        assert_eq!(pending_keys().len(), 100 - MIN_STEP);
        assert!(!sweep());
        assert!(pending_keys().is_empty());
        assert_eq!(mark(&conn), 900);
        phones_whole(&conn);
    }

    /// A sweep takes at least its steps, and one a step of about
    /// `STEP_SIZE` entries when that is more, up to twenty times as many.
    #[test]
    fn a_large_sweep_takes_more_steps_of_the_same_size() {
        assert_eq!(steps_for(0, 50), 50);
        assert_eq!(steps_for(5_000, 50), 50);
        assert_eq!(steps_for(5_001, 50), 51);
        assert_eq!(steps_for(20_000, 50), 200);
        assert_eq!(steps_for(60_000, 50), 600);
        assert_eq!(steps_for(1_000_000, 50), 1_000);
        assert_eq!(steps_for(1_000, 10), 10);
    }

    /// Entries order as their columns do, and a prefix finds exactly the
    /// entries of its first two columns.
    #[test]
    fn entries_order_as_their_columns_do() {
        let columns = [
            ["ws_1", "k", "msg_2"],
            ["ws_1", "k", "msg_10"],
            ["ws_1", "k2", "msg_1"],
            ["ws_1", "", "msg_3"],
            ["ws_10", "", "msg_4"],
            ["ws_", "1k", "msg_5"],
            ["ws_1", "k\u{1}", "msg_6"],
        ];
        let mut by_columns = columns.to_vec();
        by_columns.sort();
        let mut entries: Vec<Entry> = columns
            .iter()
            .map(|[a, b, c]| Entry::new(a, b, c).unwrap())
            .collect();
        entries.sort();
        assert_eq!(
            entries.iter().map(Entry::columns).collect::<Vec<_>>(),
            by_columns
        );
        let mut p = Pending::default();
        for e in entries {
            p.add(KEYS, e);
        }
        assert_eq!(
            p.prefixed(KEYS, "ws_1", "k").collect::<Vec<_>>(),
            ["msg_10", "msg_2"]
        );
        assert_eq!(p.prefixed(KEYS, "ws_1", "").collect::<Vec<_>>(), ["msg_3"]);
        assert!(Entry::new("ws_1", "a\0b", "msg_1").is_none());
    }

    /// A key holding a NUL cannot be an entry in memory: it goes straight
    /// into its table, where the key read finds it.
    #[test]
    fn an_entry_with_a_nul_goes_straight_into_its_table() {
        let (_dir, conn) = store();
        accept(&conn, "msg_1", Some("a\0b"), "+1");
        assert!(pending_keys().is_empty());
        assert_eq!(pending_phones(), ["msg_1"]);
        assert_eq!(keys(&conn, "main.message_keys"), ["a\0b"]);
        let wanted = [("ws_1", "a\0b"), ("ws_1", "a")];
        let db = Db::Lite(&conn);
        let set = RowSet::new(&db, 1, &["TEXT", "TEXT", "TEXT"], key_rows(&wanted));
        let found: Vec<String> = conn
            .prepare(&keys_sql(&set.table(), "m.id"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(set.params()), |r| r.get(2))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(found, ["msg_1"]);
        phones_whole(&conn);
    }

    #[test]
    fn entries_not_swept_before_a_stop_are_copied_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = open(&dir);
            accept(&conn, "msg_1", Some("a"), "+1");
            assert!(!step(&conn));
            accept(&conn, "msg_2", Some("b"), "+2");
            accept(&conn, "msg_3", None, "+1");
            accept(&conn, "msg_4", Some("c"), "+3");
            // Gone without a sweep, as in a crash: the pending entries
            // were only in this connection's memory.
        }
        let conn = open(&dir);
        assert_eq!(keys(&conn, "main.message_keys"), ["a", "b", "c"]);
        assert!(pending_keys().is_empty());
        assert_eq!(
            strings(
                &conn,
                "SELECT to_phone || ' ' || message_id FROM message_phones ORDER BY 1"
            ),
            ["+1 msg_1", "+1 msg_3", "+2 msg_2", "+3 msg_4"]
        );
        assert_eq!(mark(&conn), 4);
        phones_whole(&conn);
        assert_eq!(
            strings(
                &conn,
                "SELECT message_id FROM message_keys WHERE workspace_id = 'ws_1' AND idempotency_key = 'c'"
            ),
            ["msg_4"]
        );
    }

    #[test]
    fn pending_entries_roll_back_with_their_message() {
        let (_dir, conn) = store();
        // A statement, and the notice the writer gives the pending entries
        // with it (`group_commit`).
        let run = |sql: &str, notice: fn()| {
            conn.execute_batch(sql).unwrap();
            notice();
        };
        let nothing = || {};
        run("BEGIN", nothing);
        accept(&conn, "msg_1", Some("kept"), "+1");
        run("SAVEPOINT job", savepoint);
        accept(&conn, "msg_2", Some("undone"), "+2");
        run("ROLLBACK TO job", rolled_back_to);
        // The savepoint stays open after a rollback to it.
        accept(&conn, "msg_3", Some("redone"), "+3");
        run("RELEASE job", released);
        run("SAVEPOINT job", savepoint);
        accept(&conn, "msg_4", Some("released"), "+4");
        run("RELEASE job", released);
        run("COMMIT", committed);
        run("BEGIN", nothing);
        accept(&conn, "msg_5", Some("rolled back"), "+5");
        run("SAVEPOINT job", savepoint);
        accept(&conn, "msg_6", Some("rolled back too"), "+6");
        run("ROLLBACK", rolled_back);
        assert_eq!(pending_keys(), ["kept", "redone", "released"]);
        assert_eq!(pending_phones(), ["msg_1", "msg_3", "msg_4"]);
        assert_eq!(keys(&conn, "messages"), ["kept", "redone", "released"]);
        phones_whole(&conn);
        // A transaction after the rollback starts clean.
        run("BEGIN", nothing);
        accept(&conn, "msg_7", Some("later"), "+7");
        run("ROLLBACK", rolled_back);
        assert_eq!(pending_keys(), ["kept", "redone", "released"]);
    }

    /// A step rolled back leaves its entries pending and the sweep where
    /// it was; the next step moves them.
    #[test]
    fn a_step_rolled_back_leaves_its_entries_pending_and_the_sweep_where_it_was() {
        let (_dir, conn) = store();
        // Steps of `MIN_STEP` (64): 150 entries take three.
        accept_numbered(&conn, 150);
        assert!(step(&conn));
        assert_eq!(pending_keys().len(), 86);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(sweep_step(&Db::Lite(&conn), true).unwrap());
        assert_eq!(pending_keys().len(), 22);
        conn.execute_batch("ROLLBACK").unwrap();
        rolled_back();
        assert_eq!(pending_keys().len(), 86);
        assert_eq!(pending_keys().first().unwrap(), "k0064");
        phones_whole(&conn);
        assert!(step(&conn));
        assert_eq!(pending_keys().len(), 22);
        assert!(!step(&conn));
        assert!(pending_keys().is_empty());
        assert_eq!(keys(&conn, "main.message_keys").len(), 150);
        assert_eq!(mark(&conn), 150);
    }

    /// What the sweep says is due while no write arrives (`due`): nothing
    /// once settled (at start, `prepare` has moved the mark); the next
    /// sweep's start once entries are pending, within the period; the next
    /// step at once while a sweep is under way; the next start again when
    /// a sweep has ended, since its mark is the row it began at; nothing
    /// once a start has found nothing pending and moved the mark to the
    /// last row. A rolled-back accept takes its change back.
    #[test]
    fn the_sweep_is_due_until_the_mark_reaches_the_last_row() {
        let (_dir, conn) = store();
        assert_eq!(due(), None);
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        accept(&conn, "msg_0000", Some("k"), "+1");
        assert_eq!(due(), Some(Duration::ZERO), "no sweep has begun yet");
        conn.execute_batch("ROLLBACK").unwrap();
        rolled_back();
        assert_eq!(due(), None, "the accept rolled back");
        accept_numbered(&conn, 600);
        // A sweep's start that rolls back does not count as one: the next
        // is still due at once, not a period later.
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        assert!(sweep_step(&Db::Lite(&conn), false).unwrap());
        conn.execute_batch("ROLLBACK").unwrap();
        rolled_back();
        assert_eq!(due(), Some(Duration::ZERO), "the start rolled back");
        assert!(step(&conn));
        assert_eq!(due(), Some(Duration::ZERO), "a sweep under way");
        while step(&conn) {}
        let next = due().expect("the mark is where the sweep began");
        assert!(next > PACE.least / 2 && next <= PACE.least, "{next:?}");
        accept(&conn, "msg_0600", Some("k0600"), "+1");
        assert!(!step(&conn), "a sweep of one entry, begun and ended");
        assert!(due().is_some(), "the accept came after the sweep began");
        assert_eq!(mark(&conn), 601);
        assert!(!step(&conn));
        assert_eq!(mark(&conn), 601);
        assert_eq!(due(), None, "nothing pending, the mark at the last row");
    }

    /// On a thread without pending entries (a tool's or a test's own
    /// connection), an accept's entries go straight into their tables.
    #[test]
    fn without_pending_entries_the_entries_go_straight_into_their_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::thread::spawn(move || {
            let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
            super::super::schema::migrate(&mut conn).unwrap();
            prepare(&conn).unwrap();
            conn.execute(
                "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                     priority, status, initial_status, expires_at, idempotency_key, request_hash, created_at, updated_at)
                 VALUES ('msg_1', 'ws_1', '+1', 'sms', 'hi', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, 'k', 'h', 0, 0)",
                [],
            )
            .unwrap();
            let db = Db::Lite(&conn);
            record(&db, [("ws_1", Some("k"), "+1", "msg_1")]).unwrap();
            assert_eq!(keys(&conn, "main.message_keys"), ["k"]);
            assert_eq!(
                strings(&conn, "SELECT message_id FROM main.message_phones"),
                ["msg_1"]
            );
            assert!(!sweep_step(&db, true).unwrap(), "nothing to sweep");
            let found = last_to(&db, "m.id", "ws_1", "+1", |r| r.get::<_, String>(0)).unwrap();
            assert_eq!(found.as_deref(), Some("msg_1"));
        })
        .join()
        .unwrap();
    }

    /// The writer's newest message to a number and a reader's listing see
    /// pending, swept and not yet swept messages alike.
    #[test]
    fn the_newest_message_to_a_number_and_the_listing_see_every_message() {
        let (dir, conn) = store();
        let reader = Connection::open(dir.path().join("t.db")).unwrap();
        let last = |conn: &Connection| -> Option<String> {
            last_to(&Db::Lite(conn), "m.id", "ws_1", "+1", |r| r.get(0)).unwrap()
        };
        let listing = |limit: i64, cursor: Option<&str>| -> Vec<String> {
            let and = if cursor.is_some() {
                " AND m.id < ?4"
            } else {
                ""
            };
            let sql = listing_to_sql("m.id", and, cursor.map(|_| "?4"), "?3");
            let mut s = reader.prepare(&sql).unwrap();
            let rows = match cursor {
                Some(c) => s.query(rusqlite::params!["ws_1", "+1", limit, c]),
                None => s.query(rusqlite::params!["ws_1", "+1", limit]),
            };
            rows.unwrap()
                .mapped(|r| r.get(0))
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(last(&conn), None);
        accept(&conn, "msg_1", None, "+1");
        accept(&conn, "msg_2", None, "+2");
        assert!(!step(&conn));
        accept(&conn, "msg_3", None, "+1");
        // msg_1 swept and under the mark, msg_3 pending and after it.
        assert_eq!(last(&conn).as_deref(), Some("msg_3"));
        assert_eq!(listing(10, None), ["msg_3", "msg_1"]);
        assert_eq!(listing(1, None), ["msg_3"]);
        assert_eq!(listing(10, Some("msg_3")), ["msg_1"]);
        accept(&conn, "msg_4", None, "+1");
        assert!(!step(&conn));
        assert_eq!(last(&conn).as_deref(), Some("msg_4"));
        assert_eq!(listing(10, None), ["msg_4", "msg_3", "msg_1"]);
        assert_eq!(listing(2, Some("msg_4")), ["msg_3", "msg_1"]);
    }

    /// The listing's messages after the mark are read by row number from
    /// the mark on, whatever other filter it has: not through a listing
    /// index, which would read the whole workspace or status.
    #[test]
    fn the_listing_reads_the_rows_after_the_mark_by_row_number() {
        let (_dir, conn) = store();
        for (and, cursor) in [
            ("", None),
            (" AND m.status = ?4", None),
            (" AND m.client_ref = ?4 AND m.id < ?5", Some("?5")),
        ] {
            let sql = listing_to_sql("m.id", and, cursor, "?3");
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
            let plan: Vec<String> = explain
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter()
                    .any(|l| l.contains("SEARCH m USING INTEGER PRIMARY KEY (rowid>?)")),
                "{and}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|l| l.contains("messages_by_")),
                "{and}: {plan:?}"
            );
            assert!(
                plan.iter().any(
                    |l| l.contains("SEARCH p USING PRIMARY KEY (workspace_id=? AND to_phone=?")
                ),
                "{and}: {plan:?}"
            );
        }
    }

    /// The writer's key read finds a pending key's message by its id and
    /// a swept key through its table: primary-key searches only.
    #[test]
    fn the_key_read_searches_by_primary_keys_only() {
        let (_dir, conn) = store();
        accept(&conn, "msg_2", Some("swept"), "+2");
        assert!(!step(&conn));
        accept(&conn, "msg_3", Some("pending too"), "+3");
        let db = Db::Lite(&conn);
        let wanted = [
            ("ws_1", "pending too"),
            ("ws_1", "swept"),
            ("ws_1", "none"),
            ("ws_2", "swept"),
        ];
        let set = RowSet::new(&db, 1, &["TEXT", "TEXT", "TEXT"], key_rows(&wanted));
        let sql = keys_sql(&set.table(), "m.id");
        let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = explain
            .query_map(rusqlite::params_from_iter(set.params()), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for l in plan
            .iter()
            .filter(|l| l.contains("SCAN") || l.contains("SEARCH"))
        {
            assert!(
                l.contains("SCAN k")
                    || l.contains("CONSTANT ROWS")
                    || l.contains("(id=?)")
                    || l.contains("PRIMARY KEY"),
                "{l}: {plan:?}"
            );
        }
        let found: Vec<(String, String)> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(rusqlite::params_from_iter(set.params()), |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            found,
            [
                ("pending too".to_owned(), "msg_3".to_owned()),
                ("swept".to_owned(), "msg_2".to_owned())
            ]
        );
    }

    #[test]
    fn the_upgrade_moves_the_stored_keys_and_recipients_out_of_the_messages_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::schema::migrate_through_name(&mut conn, "0013_written_behind");
        conn.execute_batch(
            "INSERT INTO messages (id, workspace_id, to_phone, channel, body, encoding, segments, category,
                 priority, status, initial_status, expires_at, idempotency_key, request_hash, created_at, updated_at)
             VALUES ('msg_1', 'ws_1', '+1', 'sms', 'x', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, 'old', 'h', 0, 0),
                    ('msg_2', 'ws_1', '+2', 'sms', 'x', 'gsm7', 1, 'transactional', 0, 'queued', 'queued', 0, NULL, 'h', 0, 0)",
        )
        .unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        assert_eq!(keys(&conn, "message_keys"), ["old"]);
        assert_eq!(
            strings(
                &conn,
                "SELECT to_phone || ' ' || message_id FROM message_phones ORDER BY 1"
            ),
            ["+1 msg_1", "+2 msg_2"]
        );
        assert_eq!(mark(&conn), 2);
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM sqlite_master WHERE name IN ('messages_idempotency', 'messages_by_phone')"
            ),
            0
        );
    }
}
