//! Inbound messages, linked to their conversation, with keyword handling in
//! the same transaction (the opt-out is on disk before anything is answered).

use super::db::{Db, OptionalExt, Row, p};
use serde_json::json;
use switchboard_core::{Channel, EventId, Timestamp, WorkspaceId};

use super::consent;
use super::webhooks::record_workspace_event;
use crate::error::StoreError;
use crate::model::{ConsentChange, InboundOutcome, InboundRecord, NewInbound};

const COLUMNS: &str = "id, from_phone, to_addr, channel, text, media_urls, conversation_message_id, keyword, created_at";

fn row(r: &Row<'_>) -> Result<InboundRecord, StoreError> {
    let media: Option<String> = r.get(5)?;
    Ok(InboundRecord {
        id: r.get(0)?,
        from: r.get(1)?,
        to: r.get(2)?,
        channel: r.get(3)?,
        text: r.get(4)?,
        media_urls: match media {
            Some(m) => serde_json::from_str(&m).map_err(|_| StoreError::Corrupt(m.clone()))?,
            None => Vec::new(),
        },
        conversation_message_id: r.get(6)?,
        keyword: r.get(7)?,
        created_at: Timestamp::from_millis(r.get(8)?),
    })
}

/// The JSON `data` of `message.received`.
pub fn data(i: &InboundRecord) -> serde_json::Value {
    json!({
        "object": "inbound_message",
        "id": i.id,
        "from": i.from,
        "to": i.to,
        "channel": i.channel,
        "text": i.text,
        "media_urls": i.media_urls,
        "conversation_message_id": i.conversation_message_id,
        "keyword": i.keyword,
        "created_at": i.created_at.to_rfc3339(),
    })
}

pub fn record(c: &Db<'_>, n: &NewInbound) -> Result<InboundOutcome, StoreError> {
    let ws = n.workspace_id.as_str();
    if let Some(pmid) = &n.provider_message_id {
        let sql = format!(
            "SELECT {COLUMNS} FROM inbound WHERE provider_id = ?1 AND provider_message_id = ?2"
        );
        let mut stmt = c.prepare_cached(&sql)?;
        let mut found = stmt.query(p![n.provider_id, pmid])?;
        if let Some(r) = found.next()? {
            return Ok(InboundOutcome::Duplicate(row(&r)?));
        }
    }
    let conversation: Option<String> =
        super::written_behind::last_to(c, "m.id", ws, &n.from, |r| r.get(0))?;
    let rec = InboundRecord {
        id: format!("in_{}", &EventId::new_at(n.now).as_str()[4..]),
        from: n.from.clone(),
        to: n.to.clone(),
        channel: n.channel.clone(),
        text: n.text.clone(),
        media_urls: n.media_urls.clone(),
        conversation_message_id: conversation,
        keyword: n.keyword.clone(),
        created_at: n.now,
    };
    c.prepare_cached(
        "INSERT INTO inbound (id, workspace_id, from_phone, to_addr, channel, text, media_urls, provider_id, provider_message_id, conversation_message_id, keyword, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(p![
        rec.id,
        ws,
        rec.from,
        rec.to,
        rec.channel,
        rec.text,
        (!rec.media_urls.is_empty()).then(|| serde_json::to_string(&rec.media_urls).expect("strings")),
        n.provider_id,
        n.provider_message_id,
        rec.conversation_message_id,
        rec.keyword,
        n.now.as_millis()
    ])?;
    record_workspace_event(c, ws, "message.received", &data(&rec), n.now, true)?;
    let state = match n.keyword.as_deref() {
        Some("stop") => Some("opted_out"),
        Some("start") => Some("opted_in"),
        _ => None,
    };
    let consent_changed = match state {
        Some(state) => consent::change(
            c,
            &ConsentChange {
                workspace_id: n.workspace_id.clone(),
                phone: n.from.clone(),
                channel: n.channel.clone(),
                state: state.to_owned(),
                source: "keyword".into(),
                jurisdiction: None,
                detail: Some(format!("replied {:?}", n.text.trim())),
                at: n.now,
            },
            true,
        )?,
        None => false,
    };
    Ok(InboundOutcome::Stored {
        inbound: rec,
        consent_changed,
    })
}

pub fn list(
    c: &Db<'_>,
    ws: &WorkspaceId,
    phone: Option<&str>,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Vec<InboundRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM inbound WHERE workspace_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR from_phone = ?2) AND (CAST(?3 AS TEXT) IS NULL OR id < ?3)
         ORDER BY id DESC LIMIT ?4"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(p![
        ws.as_str(),
        phone,
        cursor,
        i64::try_from(limit).unwrap_or(100)
    ])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(&r)?);
    }
    Ok(out)
}

pub fn settings(c: &Db<'_>, ws: &WorkspaceId) -> Result<Option<serde_json::Value>, StoreError> {
    let s: Option<String> = c
        .query_row(
            "SELECT settings FROM workspaces WHERE id = ?1",
            p![ws.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    s.map(|s| serde_json::from_str(&s).map_err(|_| StoreError::Corrupt(s.clone())))
        .transpose()
}

pub fn set_settings(
    c: &Db<'_>,
    ws: &WorkspaceId,
    v: &serde_json::Value,
) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE workspaces SET settings = ?1 WHERE id = ?2",
        p![v.to_string(), ws.as_str()],
    )? > 0)
}

/// When `phone` last wrote to the workspace on `channel`.
pub fn last_at(
    c: &Db<'_>,
    ws: &WorkspaceId,
    phone: &str,
    channel: Channel,
) -> Result<Option<Timestamp>, StoreError> {
    let t: Option<i64> = c.query_row(
        "SELECT MAX(created_at) FROM inbound WHERE workspace_id = ?1 AND from_phone = ?2 AND channel = ?3",
        p![ws.as_str(), phone, channel.as_str()],
        |r| r.get(0),
    )?;
    Ok(t.map(Timestamp::from_millis))
}
