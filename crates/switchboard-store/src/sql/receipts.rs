//! The receipt inbox. A provider callback is stored here as it arrives (the
//! thin receiver's only write), deduplicated on (provider, provider message
//! id, kind). A processor then applies pending receipts in lifecycle order
//! per message (delivered before read), so duplicates and reordering converge
//! to one state with one event each. A receipt for a provider id no message
//! has yet (the send's result commits late) waits and is checked again with
//! backoff; after a day it is kept as `unmatched`.

use std::collections::{HashMap, HashSet};

use super::db::{Db, RowSet, V, p};
use switchboard_core::state::transition;
use switchboard_core::{MessageId, Status, Timestamp};

use super::messages::{apply_receipt, receipt_trigger, record_event};
use super::rows;
use crate::error::StoreError;
use crate::model::{IncomingReceipt, ReceiptKind, ReceiptOutcome, ReceiptPass};

/// Stores receipts in the inbox, one insert per `Db::chunks` run; each is
/// `true` if it is new, `false` if the inbox already had it (a provider's
/// retry) or it repeats one earlier in `receipts` (only the first counts).
pub fn receive_many(
    c: &Db<'_>,
    provider_id: &str,
    receipts: &[IncomingReceipt],
    now: Timestamp,
) -> Result<Vec<bool>, StoreError> {
    let mut stored: HashSet<(String, String)> = HashSet::with_capacity(receipts.len());
    for chunk in c.chunks(receipts) {
        let set = RowSet::new(
            c,
            1,
            &["TEXT", "TEXT", "TEXT", "TEXT", "TEXT", "BIGINT", "BIGINT"],
            chunk.iter().map(|r| {
                [
                    V::from(provider_id),
                    V::from(r.provider_message_id.as_str()),
                    V::from(r.kind.as_str()),
                    V::from(&r.error_code),
                    V::from(&r.raw),
                    V::Int(now.as_millis()),
                    V::Int(now.as_millis()),
                ]
            }),
        );
        let sql = format!(
            "{} receipt_inbox (provider_id, provider_message_id, kind, error_code, raw, received_at, next_check_at) {}
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

/// A message a receipt names: id, status, workspace.
type Named = (String, String, String);
/// A message's new status, its error code if a receipt gave one, and when.
type Moved = (Status, Option<String>, i64);

/// Applies due pending receipts, set-based: one read of the messages they
/// name, then one update of the messages moved and one of the receipts
/// settled per `Db::chunks` run, with the transitions decided in between
/// in lifecycle order per message (so delivered then read in one pass ends
/// at read, with both events). A provider id that two messages share is
/// left to `apply_receipt`, receipt by receipt.
pub fn process(c: &Db<'_>, now: Timestamp, limit: usize) -> Result<ReceiptPass, StoreError> {
    type Row = (i64, String, String, String, u32, i64, Option<String>);
    let sql = format!(
        "SELECT id, provider_id, provider_message_id, kind, checks, received_at, error_code FROM receipt_inbox
         WHERE state = 'pending' AND next_check_at <= ?1
         ORDER BY provider_id, provider_message_id, CASE kind WHEN 'read' THEN 2 ELSE 1 END, id LIMIT ?2{}",
        c.skip_locked()
    );
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
    let mut named: HashMap<(String, String), Vec<Named>> = HashMap::new();
    for chunk in c.chunks(&keys) {
        let set = RowSet::new(
            c,
            1,
            &["TEXT", "TEXT"],
            chunk.iter().map(|k| k.map(V::from)),
        );
        let sql = format!(
            "SELECT k.column1, k.column2, m.id, m.status, m.workspace_id FROM {}",
            c.lookup_join(
                &set.table(),
                "messages",
                "m",
                "m.id, m.status, m.workspace_id",
                "m.provider_id = k.column1 AND m.provider_message_id = k.column2",
                true,
            )
        );
        for (key, m) in c.query_map(&sql, set.params(), |r| {
            Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?, r.get(4)?)))
        })? {
            named.entry(key).or_default().push(m);
        }
    }
    // Each message's status as this pass moves it (receipts come in
    // lifecycle order per message), and what to write once at the end.
    let mut status: HashMap<String, Status> = HashMap::new();
    let mut changed: HashMap<String, Moved> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut done: Vec<(i64, &'static str)> = Vec::with_capacity(rows.len());
    let mut pass = ReceiptPass::default();
    for (id, provider, pmid, kind, checks, received_at, error_code) in rows {
        let kind = ReceiptKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("receipt kind {kind}")))?;
        let detail = match &error_code {
            Some(code) => format!("receipt from {provider}: {} ({code})", kind.as_str()),
            None => format!("receipt from {provider}: {}", kind.as_str()),
        };
        let key = (provider, pmid);
        let outcome = match named.get(&key).map(Vec::as_slice) {
            None | Some([]) => ReceiptOutcome::UnknownMessage,
            Some([(mid, current, ws)]) => {
                let from = match status.get(mid) {
                    Some(s) => *s,
                    None => rows::status(current)?,
                };
                let message_id =
                    MessageId::parse(mid).map_err(|_| StoreError::Corrupt(mid.clone()))?;
                let (trigger, code) = receipt_trigger(kind, error_code.as_deref());
                match transition(from, trigger) {
                    Ok(t) => {
                        status.insert(mid.clone(), t.to);
                        let entry = changed.entry(mid.clone()).or_insert_with(|| {
                            order.push(mid.clone());
                            (t.to, None, now.as_millis())
                        });
                        entry.0 = t.to;
                        if let Some(code) = code {
                            entry.1 = Some(code.to_owned());
                        }
                        record_event(c, ws, mid, t.event, t.to, Some(&detail), code, now)?;
                        ReceiptOutcome::Applied {
                            message_id,
                            status: t.to,
                        }
                    }
                    Err(_) => ReceiptOutcome::Ignored {
                        message_id,
                        status: from,
                    },
                }
            }
            // Two messages with one provider id: as `apply_receipt` decides.
            Some(_) => apply_receipt(
                c,
                &key.0,
                &key.1,
                kind,
                error_code.as_deref(),
                Some(&detail),
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
    // The messages moved, one update per `Db::chunks` run.
    let moved: Vec<(&str, &Moved)> = order.iter().map(|id| (id.as_str(), &changed[id])).collect();
    c.update_from(
        "messages",
        "status = v.column2, lease_until = NULL, error_code = COALESCE(v.column3, messages.error_code), updated_at = v.column4",
        "",
        &["TEXT", "TEXT", "TEXT", "BIGINT"],
        &moved,
        |(id, (st, code, at))| {
            [
                V::from(*id),
                V::from(st.as_str()),
                code.as_deref().map_or(V::Null, V::from),
                V::Int(*at),
            ]
        },
    )?;
    // The receipts settled, likewise.
    c.update_from(
        "receipt_inbox",
        "state = v.column2, processed_at = v.column3",
        "",
        &["BIGINT", "TEXT", "BIGINT"],
        &done,
        |(id, state)| [V::Int(*id), V::from(*state), V::Int(now.as_millis())],
    )?;
    Ok(pass)
}
