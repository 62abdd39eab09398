//! The receipt inbox. A provider callback is stored here as it arrives (the
//! thin receiver's only write), deduplicated on (provider, provider message
//! id, kind). A processor then applies pending receipts in lifecycle order
//! per message (delivered before read), so duplicates and reordering converge
//! to one state with one event each. A receipt for a provider id no message
//! has yet (the send's result commits late) waits and is checked again with
//! backoff; after a day it is kept as `unmatched`.
//!
//! On SQLite, whose writer is the inbox's only writer, a receipt the pass
//! would apply at once is applied in the write that stores it, and stored
//! already settled (`receive_settling`); the inbox still holds every
//! receipt's raw payload and outcome.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::db::{Db, RowSet, V, p};
use switchboard_core::state::transition;
use switchboard_core::{MessageId, Status, Timestamp};

use super::messages::{
    apply_receipt, key_column, key_of, receipt_trigger, record_event, row_number,
};
use super::rows;
use crate::error::StoreError;
use crate::model::{IncomingReceipt, ReceiptKind, ReceiptOutcome, ReceiptPass};

/// Stores receipts in the inbox; each is `true` if it is new, `false` if
/// the inbox already had it (a provider's retry) or it repeats one earlier
/// in `receipts` (only the first counts).
///
/// On PostgreSQL every new receipt is stored pending, one insert per
/// `Db::chunks` run, for the pass (`process`) to apply. On SQLite a new
/// receipt whose one message is known, and for whose provider id nothing
/// waits in the inbox, is applied in the same write, exactly as the pass
/// would apply it, and stored already settled (`receive_settling`).
pub fn receive_many(
    c: &Db<'_>,
    provider_id: &str,
    receipts: &[IncomingReceipt],
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    if c.is_pg() {
        store_pending(c, provider_id, receipts, now)
    } else {
        receive_settling(c, provider_id, receipts, now)
    }
}

/// `receive_many` on PostgreSQL: every new receipt stored pending. Nodes
/// receive concurrently, so the unique key (`ON CONFLICT DO NOTHING`)
/// decides which copy of a receipt is new.
fn store_pending(
    c: &Db<'_>,
    provider_id: &str,
    receipts: &[IncomingReceipt],
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    let mut stored: HashSet<(String, String)> = HashSet::with_capacity(receipts.len());
    let rows: Vec<InboxRow<'_>> = receipts.iter().map(|r| (r, None)).collect();
    for chunk in c.chunks(&rows) {
        let set = inbox_set(c, provider_id, chunk, now);
        let sql = format!(
            "{} {INBOX_COLUMNS} {}
             ON CONFLICT (provider_id, provider_message_id, kind) DO NOTHING RETURNING provider_message_id, kind",
            c.insert_into(),
            set.values()
        );
        stored.extend(c.query_map(&sql, set.params(), |r| Ok((r.get(0)?, r.get(1)?)))?);
    }
    if !stored.is_empty() {
        super::signals::note_receipts();
    }
    Ok(receipts
        .iter()
        .map(|r| stored.remove(&(r.provider_message_id.clone(), r.kind.as_str().to_owned())))
        .collect())
}

/// `receive_many` on SQLite, where this writer is the inbox's only writer,
/// so what it reads first is what the insert would find: a new receipt is
/// applied as it is stored when the pass would apply it now with the same
/// result, and stored pending otherwise.
///
/// That is when its provider id names exactly one message, no receipt for
/// that id is pending (one could be, waiting for a check after arriving
/// before its message's provider id was known; the pass applies the two in
/// lifecycle order), and it is not a read that overtook its message's
/// delivered receipt (`read_waits`). The batch's receipts settled together
/// go in the pass's order: by provider id, delivered before read, then as
/// they came. Each is stored with its raw payload and its state (`applied`
/// or `ignored`), as the pass would leave it, and the message moves and
/// its events are recorded as the pass records them (`Moves`).
///
/// It saves, per receipt, what the inbox's churn cost the pass: the pending
/// index's insert and delete, the row's rewrite, and the pass's read
/// (bench/HISTORY.md, "Twenty-fourth session").
fn receive_settling(
    c: &Db<'_>,
    provider_id: &str,
    receipts: &[IncomingReceipt],
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    if receipts.is_empty() {
        return Ok(Vec::new());
    }
    let mut pmids: Vec<&str> = receipts
        .iter()
        .map(|r| r.provider_message_id.as_str())
        .collect();
    pmids.sort_unstable();
    pmids.dedup();
    let keys: Vec<[&str; 2]> = pmids.iter().map(|pmid| [provider_id, *pmid]).collect();
    // What the inbox holds for these provider ids, and which have a receipt
    // still pending.
    let mut held: HashSet<(String, String)> = HashSet::new();
    let mut waiting: HashSet<String> = HashSet::new();
    for chunk in c.chunks(&keys) {
        let set = key_set(c, chunk);
        let sql = set.sql([0; 8], || {
            format!(
                "SELECT i.provider_message_id, i.kind, i.state FROM {}",
                c.lookup_join(
                    &set.table(),
                    "receipt_inbox",
                    "i",
                    "i.provider_message_id, i.kind, i.state",
                    "i.provider_id = k.column1 AND i.provider_message_id = k.column2",
                    false,
                )
            )
        });
        let found: Vec<(String, String, String)> = c.query_map(&sql, set.params(), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        for (pmid, kind, state) in found {
            if state == "pending" {
                waiting.insert(pmid.clone());
            }
            held.insert((pmid, kind));
        }
    }
    let fresh: Vec<bool> = receipts
        .iter()
        .map(|r| held.insert((r.provider_message_id.clone(), r.kind.as_str().to_owned())))
        .collect();
    let named = named(c, &keys)?;
    // The new receipts in the pass's order (a stable sort keeps arrival
    // order within a provider id and rank).
    let mut order: Vec<usize> = (0..receipts.len()).filter(|&i| fresh[i]).collect();
    order.sort_by_key(|&i| {
        let r = &receipts[i];
        (r.provider_message_id.as_str(), lifecycle_rank(r.kind))
    });
    let mut settled: Vec<Option<&'static str>> = vec![None; receipts.len()];
    let mut moves = Moves::default();
    let mut pending = false;
    for i in order {
        let r = &receipts[i];
        let message = match named
            .get(&(provider_id.to_owned(), r.provider_message_id.clone()))
            .map(Vec::as_slice)
        {
            Some([one]) if !waiting.contains(&r.provider_message_id) => one,
            _ => {
                pending = true;
                continue;
            }
        };
        // A read that overtook its delivered waits for it, as in the pass
        // when both are there (`read_waits`).
        if read_waits(r.kind, moves.status_of(message)?) {
            pending = true;
            continue;
        }
        let outcome = moves.apply(
            c,
            provider_id,
            message,
            r.kind,
            r.error_code.as_deref(),
            now,
        )?;
        settled[i] = Some(match outcome {
            ReceiptOutcome::Applied { .. } => "applied",
            _ => "ignored",
        });
    }
    let rows: Vec<InboxRow<'_>> = receipts
        .iter()
        .zip(&settled)
        .zip(&fresh)
        .filter(|(_, new)| **new)
        .map(|((r, state), _)| (r, *state))
        .collect();
    for chunk in c.chunks(&rows) {
        let set = inbox_set(c, provider_id, chunk, now);
        // No `ON CONFLICT`: the read above found every stored copy, so a
        // conflict here would be a fault, and fails the write.
        let sql = set.sql([0; 8], || {
            format!("{} {INBOX_COLUMNS} {}", c.insert_into(), set.values())
        });
        c.execute(&sql, set.params())?;
    }
    moves.write(c)?;
    if pending {
        super::signals::note_receipts();
    }
    Ok(fresh)
}

/// Whether a read receipt is left to the pass rather than applied as it
/// is stored: when its message is `sent`, not yet delivered, the read has
/// overtaken its delivered receipt (providers send them apart, and in any
/// order), which the pass applies first if it has arrived by then, so the
/// message's timeline has both events, as when they come in one callback.
fn read_waits(kind: ReceiptKind, status: Status) -> bool {
    kind == ReceiptKind::Read && status == Status::Sent
}

/// A receipt as the inbox stores it: pending (`None`), or settled with
/// its state.
type InboxRow<'a> = (&'a IncomingReceipt, Option<&'static str>);

/// The inbox's columns a receipt is stored with, in `inbox_set` order.
const INBOX_COLUMNS: &str = "receipt_inbox (provider_id, provider_message_id, kind, error_code, raw, received_at, next_check_at, state, processed_at)";

/// Receipts from `provider_id` as rows of the inbox, received `now`.
fn inbox_set<'p>(
    c: &Db<'_>,
    provider_id: &'p str,
    rows: &'p [InboxRow<'p>],
    now: Timestamp,
) -> RowSet<'p> {
    let at = now.as_millis();
    RowSet::new(
        c,
        1,
        &[
            "TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "BIGINT", "TEXT", "BIGINT",
        ],
        rows.iter().map(move |(r, state)| {
            [
                V::from(provider_id),
                V::from(r.provider_message_id.as_str()),
                V::from(r.kind.as_str()),
                V::from(&r.error_code),
                V::from(&r.raw),
                V::Int(at),
                V::Int(at),
                V::from(state.unwrap_or("pending")),
                state.map_or(V::Null, |_| V::Int(at)),
            ]
        }),
    )
}

/// A set of (provider, provider message id) keys, to join.
fn key_set<'p>(c: &Db<'_>, keys: &'p [[&'p str; 2]]) -> RowSet<'p> {
    RowSet::new(c, 1, &["TEXT", "TEXT"], keys.iter().map(|k| k.map(V::from)))
}

/// The messages each (provider, provider message id) key names, read (and
/// on PostgreSQL locked) at once; a key no message has is absent.
fn named(
    c: &Db<'_>,
    keys: &[[&str; 2]],
) -> Result<HashMap<(String, String), Vec<Named>>, StoreError> {
    let mut named: HashMap<(String, String), Vec<Named>> = HashMap::new();
    for chunk in c.chunks(keys) {
        let set = key_set(c, chunk);
        let sql = set.sql([0; 8], || {
            format!(
                "SELECT k.column1, k.column2, m.id, m.status, m.workspace_id, {} FROM {}",
                // The row number (SQLite) that `Moves::write` finds it by.
                row_number(c, "m"),
                c.lookup_join(
                    &set.table(),
                    "messages",
                    "m",
                    "m.id, m.status, m.workspace_id",
                    "m.provider_id = k.column1 AND m.provider_message_id = k.column2",
                    true,
                )
            )
        });
        for (key, m) in c.query_map(&sql, set.params(), |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })? {
            named.entry(key).or_default().push(m);
        }
    }
    Ok(named)
}

/// A receipt's place in a message's lifecycle: a read comes after the
/// others (the pass's `ORDER BY`).
fn lifecycle_rank(kind: ReceiptKind) -> u8 {
    match kind {
        ReceiptKind::Read => 2,
        _ => 1,
    }
}

/// A receipt's event detail.
fn detail(provider: &str, kind: ReceiptKind, error_code: Option<&str>) -> String {
    match error_code {
        Some(code) => format!("receipt from {provider}: {} ({code})", kind.as_str()),
        None => format!("receipt from {provider}: {}", kind.as_str()),
    }
}

/// A message a receipt names: id, status, workspace, and on SQLite its
/// row number.
type Named = (String, String, String, Option<i64>);
/// A message's new status, its error code if a receipt gave one, when,
/// and on SQLite its row number (`Moves::write` finds it by).
type Moved = (Status, Option<String>, i64, Option<i64>);

/// Applies due pending receipts, set-based: one read of the messages they
/// name, then one update of the messages moved and one of the receipts
/// settled per `Db::chunks` run, with the transitions decided in between
/// in lifecycle order per message (so delivered then read in one pass ends
/// at read, with both events). A provider id that two messages share is
/// left to `apply_receipt`, receipt by receipt.
pub fn process(c: &Db<'_>, now: Timestamp, limit: usize) -> Result<ReceiptPass, StoreError> {
    type Row = (i64, String, String, String, u32, i64, Option<String>);
    let sql = super::db::statement_text(c.is_pg(), [0; 14], || {
        format!(
            "SELECT id, provider_id, provider_message_id, kind, checks, received_at, error_code FROM receipt_inbox
             WHERE state = 'pending' AND next_check_at <= ?1
             ORDER BY provider_id, provider_message_id, CASE kind WHEN 'read' THEN 2 ELSE 1 END, id LIMIT ?2{}",
            c.skip_locked()
        )
    });
    let rows: Vec<Row> = c
        .prepare_cached(&sql)?
        .query_map(
            p![now.as_millis(), i64::try_from(limit).unwrap_or(1000)],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )?
        .collect::<Result<_, _>>()?;
    // The messages the receipts name, read (and on PostgreSQL locked) at once.
    let mut keys: Vec<[&str; 2]> = rows.iter().map(|r| [r.1.as_str(), r.2.as_str()]).collect();
    keys.sort_unstable();
    keys.dedup();
    let named = named(c, &keys)?;
    let mut moves = Moves::default();
    let mut done: Vec<(i64, &'static str)> = Vec::with_capacity(rows.len());
    let mut pass = ReceiptPass::default();
    for (id, provider, pmid, kind, checks, received_at, error_code) in rows {
        let kind = ReceiptKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("receipt kind {kind}")))?;
        let key = (provider, pmid);
        let outcome = match named.get(&key).map(Vec::as_slice) {
            None | Some([]) => ReceiptOutcome::UnknownMessage,
            Some([one]) => moves.apply(c, &key.0, one, kind, error_code.as_deref(), now)?,
            // Two messages with one provider id: as `apply_receipt` decides.
            Some(_) => apply_receipt(
                c,
                &key.0,
                &key.1,
                kind,
                error_code.as_deref(),
                Some(&detail(&key.0, kind, error_code.as_deref())),
                now,
            )?,
        };
        let state = match outcome {
            ReceiptOutcome::Applied { .. } => {
                pass.applied += 1;
                "applied"
            }
            ReceiptOutcome::Ignored { .. } => {
                pass.ignored += 1;
                "ignored"
            }
            ReceiptOutcome::UnknownMessage if now.as_millis() - received_at > 86_400_000 => {
                pass.unmatched += 1;
                "unmatched"
            }
            ReceiptOutcome::UnknownMessage => {
                pass.waiting += 1;
                // 1 s, 2 s, 4 s … up to 5 min between checks.
                let wait = 1000i64 << checks.min(8);
                c.prepare_cached("UPDATE receipt_inbox SET checks = checks + 1, next_check_at = ?1 WHERE id = ?2")?
                    .execute(p![now.as_millis() + wait.min(300_000), id])?;
                continue;
            }
        };
        done.push((id, state));
    }
    moves.write(c)?;
    // The receipts settled, likewise.
    c.update_from(
        "id",
        (
            "receipt_inbox",
            "state = v.column2, processed_at = v.column3",
            "",
        ),
        &["BIGINT", "TEXT", "BIGINT"],
        &done,
        |(id, state)| [V::Int(*id), V::from(*state), V::Int(now.as_millis())],
    )?;
    Ok(pass)
}

/// The messages a run of receipts moves: each receipt decided against its
/// message's status as the receipts before it left it, its event recorded,
/// and each message written once at the end (`write`).
#[derive(Default)]
struct Moves {
    /// What to write per message moved (its status as these receipts
    /// left it first), in `order`.
    changed: HashMap<String, Moved>,
    order: Vec<String>,
}

impl Moves {
    /// A message's status as these receipts left it.
    fn status_of(&self, (mid, current, _, _): &Named) -> Result<Status, StoreError> {
        match self.changed.get(mid) {
            Some((moved, _, _, _)) => Ok(*moved),
            None => Ok(rows::status(current)?),
        }
    }

    /// Applies a receipt from `provider` to the one message it names.
    fn apply(
        &mut self,
        c: &Db<'_>,
        provider: &str,
        message: &Named,
        kind: ReceiptKind,
        error_code: Option<&str>,
        now: Timestamp,
    ) -> Result<ReceiptOutcome, StoreError> {
        let (mid, _, ws, row) = message;
        let from = self.status_of(message)?;
        let message_id = MessageId::parse(mid).map_err(|_| StoreError::Corrupt(mid.clone()))?;
        let (trigger, code) = receipt_trigger(kind, error_code);
        let Ok(t) = transition(from, trigger) else {
            return Ok(ReceiptOutcome::Ignored {
                message_id,
                status: from,
            });
        };
        let entry = self.changed.entry(mid.clone()).or_insert_with(|| {
            self.order.push(mid.clone());
            (t.to, None, now.as_millis(), *row)
        });
        entry.0 = t.to;
        if let Some(code) = code {
            entry.1 = Some(code.to_owned());
        }
        let detail = detail(provider, kind, error_code);
        record_event(c, ws, mid, t.event, t.to, Some(&detail), code, now)?;
        Ok(ReceiptOutcome::Applied {
            message_id,
            status: t.to,
        })
    }

    /// Writes the messages moved, one update per `Db::chunks` run.
    fn write(&self, c: &Db<'_>) -> Result<(), StoreError> {
        let moved: Vec<(&str, &Moved)> = self
            .order
            .iter()
            .map(|id| (id.as_str(), &self.changed[id]))
            .collect();
        // On SQLite by the row numbers `named` read (`key_column`).
        let types: &'static [&'static str] = if c.is_pg() {
            &["TEXT", "TEXT", "TEXT", "BIGINT"]
        } else {
            &["BIGINT", "TEXT", "TEXT", "BIGINT"]
        };
        let keyed = moved
            .iter()
            .map(|(id, m)| Ok((key_of(c, id, m.3)?, m)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        c.update_from(
            key_column(c),
            (
                "messages",
                "status = v.column2, lease_until = NULL, error_code = COALESCE(v.column3, messages.error_code), updated_at = v.column4",
                "",
            ),
            types,
            &keyed,
            |(key, (st, code, at, _))| {
                [
                    key.clone(),
                    V::from(st.as_str()),
                    code.as_deref().map_or(V::Null, V::from),
                    V::Int(*at),
                ]
            },
        )?;
        Ok(())
    }
}
