//! The receipt inbox. A provider callback is stored here as it arrives (the
//! thin receiver's only write), deduplicated on (provider, provider message
//! id, kind). A processor then applies pending receipts in lifecycle order
//! per message (delivered before read), so duplicates and reordering converge
//! to one state with one event each. A receipt for a provider id no message
//! has yet (the send's result commits late) waits and is checked again with
//! backoff; after a day it is kept as `unmatched`.

use super::db::{Db, p};
use switchboard_core::Timestamp;

use super::messages::apply_receipt;
use crate::error::StoreError;
use crate::model::{ReceiptKind, ReceiptOutcome, ReceiptPass};

/// Stores a receipt; `false` if the same one was stored before.
pub fn receive(
    c: &Db<'_>,
    provider_id: &str,
    pmid: &str,
    kind: ReceiptKind,
    error_code: Option<&str>,
    raw: Option<&str>,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let n = c
        .prepare_cached(
            "INSERT INTO receipt_inbox (provider_id, provider_message_id, kind, error_code, raw, received_at, next_check_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6) ON CONFLICT (provider_id, provider_message_id, kind) DO NOTHING",
        )?
        .execute(p![provider_id, pmid, kind.as_str(), error_code, raw, now.as_millis()])?;
    Ok(n > 0)
}

/// Applies due pending receipts.
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
    let mut pass = ReceiptPass::default();
    for (id, provider, pmid, kind, checks, received_at, error_code) in rows {
        let kind = ReceiptKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("receipt kind {kind}")))?;
        let detail = match &error_code {
            Some(code) => format!("receipt from {provider}: {} ({code})", kind.as_str()),
            None => format!("receipt from {provider}: {}", kind.as_str()),
        };
        let outcome = apply_receipt(
            c,
            &provider,
            &pmid,
            kind,
            error_code.as_deref(),
            Some(&detail),
            now,
        )?;
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
        c.prepare_cached("UPDATE receipt_inbox SET state = ?1, processed_at = ?2 WHERE id = ?3")?
            .execute(p![state, now.as_millis(), id])?;
    }
    Ok(pass)
}
