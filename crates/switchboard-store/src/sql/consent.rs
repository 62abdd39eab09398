//! Consent per (workspace, phone, channel), with its full history. Changes
//! are events (`contact.opted_out`, `contact.opted_in`) when the state
//! actually changes; every request is kept in the history.

use super::db::{Db, OptionalExt, p};
use serde_json::json;
use switchboard_core::{Timestamp, WorkspaceId};

use super::webhooks::record_workspace_event;
use crate::error::StoreError;
use crate::model::{ConsentChange, ConsentChangeRecord, ConsentRecord, ContactConsent};

/// The recorded state (`opted_in`, `opted_out`) of a number on a channel.
pub fn state_of(
    c: &Db<'_>,
    ws: &str,
    phone: &str,
    channel: &str,
) -> Result<Option<String>, StoreError> {
    Ok(c.prepare_cached(
        "SELECT state FROM contacts WHERE workspace_id = ?1 AND phone = ?2 AND channel = ?3",
    )?
    .query_row(p![ws, phone, channel], |r| r.get(0))
    .optional()?)
}

/// Records a change; returns whether the state changed. With `emit`, a
/// change of state is also a `contact.*` event.
pub fn change(c: &Db<'_>, ch: &ConsentChange, emit: bool) -> Result<bool, StoreError> {
    let ws = ch.workspace_id.as_str();
    let before = state_of(c, ws, &ch.phone, &ch.channel)?;
    c.prepare_cached(
        "INSERT INTO contacts (workspace_id, phone, channel, state, source, jurisdiction, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (workspace_id, phone, channel) DO UPDATE SET state = excluded.state, source = excluded.source,
             jurisdiction = COALESCE(excluded.jurisdiction, contacts.jurisdiction), updated_at = excluded.updated_at",
    )?
    .execute(p![ws, ch.phone, ch.channel, ch.state, ch.source, ch.jurisdiction, ch.at.as_millis()])?;
    c.prepare_cached(
        "INSERT INTO consent_history (workspace_id, phone, channel, state, source, jurisdiction, detail, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(p![ws, ch.phone, ch.channel, ch.state, ch.source, ch.jurisdiction, ch.detail, ch.at.as_millis()])?;
    let changed = before.as_deref() != Some(ch.state.as_str());
    if changed && emit {
        let event = if ch.state == "opted_out" {
            "contact.opted_out"
        } else {
            "contact.opted_in"
        };
        // The last message sent to the number: its client_ref and metadata
        // tell which CRM (adapter) the contact came through.
        let last: Option<(String, Option<String>, Option<String>)> =
            super::written_behind::last_to(
                c,
                "m.id, m.client_ref, m.metadata",
                ws,
                &ch.phone,
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
        let last_message = last.map(|(id, client_ref, metadata)| {
            json!({
                "id": id,
                "client_ref": client_ref,
                "metadata": metadata.and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok()),
            })
        });
        let payload = json!({
            "object": "contact",
            "phone": ch.phone,
            "channel": ch.channel,
            "state": ch.state,
            "source": ch.source,
            "jurisdiction": ch.jurisdiction,
            "detail": ch.detail,
            "last_message": last_message,
        });
        record_workspace_event(c, ws, event, &payload, ch.at, true)?;
    }
    Ok(changed)
}

/// The number's consent: per channel, and the history.
pub fn get(c: &Db<'_>, ws: &WorkspaceId, phone: &str) -> Result<ContactConsent, StoreError> {
    let current = c
        .prepare_cached("SELECT channel, state, source, jurisdiction, updated_at FROM contacts WHERE workspace_id = ?1 AND phone = ?2 ORDER BY channel")?
        .query_map(p![ws.as_str(), phone], |r| {
            Ok(ConsentRecord { channel: r.get(0)?, state: r.get(1)?, source: r.get(2)?, jurisdiction: r.get(3)?, updated_at: Timestamp::from_millis(r.get(4)?) })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let history = c
        .prepare_cached(
            "SELECT channel, state, source, jurisdiction, detail, created_at FROM consent_history WHERE workspace_id = ?1 AND phone = ?2 ORDER BY id",
        )?
        .query_map(p![ws.as_str(), phone], |r| {
            Ok(ConsentChangeRecord {
                channel: r.get(0)?,
                state: r.get(1)?,
                source: r.get(2)?,
                jurisdiction: r.get(3)?,
                detail: r.get(4)?,
                created_at: Timestamp::from_millis(r.get(5)?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ContactConsent { current, history })
}

/// Records many changes in one transaction, without events (an imported
/// suppression list is not news to the customer's systems). Returns
/// (changed, unchanged).
pub fn import(c: &Db<'_>, changes: &[ConsentChange]) -> Result<(u64, u64), StoreError> {
    let mut changed = 0;
    for ch in changes {
        if change(c, ch, false)? {
            changed += 1;
        }
    }
    Ok((changed, changes.len() as u64 - changed))
}

/// Contacts with a recorded consent, by phone then channel, after `cursor`
/// (`phone|channel`).
pub fn list(
    c: &Db<'_>,
    ws: &WorkspaceId,
    state: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, ConsentRecord)>, StoreError> {
    let (after_phone, after_channel) = cursor.and_then(|k| k.split_once('|')).unwrap_or(("", ""));
    let rows = c
        .prepare_cached(
            "SELECT phone, channel, state, source, jurisdiction, updated_at FROM contacts
             WHERE workspace_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR state = ?2) AND (phone, channel) > (?3, ?4)
             ORDER BY phone, channel LIMIT ?5",
        )?
        .query_map(
            p![
                ws.as_str(),
                state,
                after_phone,
                after_channel,
                i64::try_from(limit).unwrap_or(1000)
            ],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    ConsentRecord {
                        channel: r.get(1)?,
                        state: r.get(2)?,
                        source: r.get(3)?,
                        jurisdiction: r.get(4)?,
                        updated_at: Timestamp::from_millis(r.get(5)?),
                    },
                ))
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
