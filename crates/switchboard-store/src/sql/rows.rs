//! Reading message rows back into records.

use super::db::Row;
use switchboard_core::{MessageId, Status, Timestamp, WorkspaceId};

use crate::error::StoreError;
use crate::model::MessageRecord;

/// The column list that `message` reads, in order.
pub const MESSAGE_COLUMNS: &str = "id, workspace_id, to_phone, from_addr, channel, body, media_urls, encoding, segments, \
     client_ref, metadata, category, priority, timezone, status, provider_id, provider_message_id, attempts, \
     next_attempt_at, send_at, expires_at, error_code, error_message, idempotency_key, created_at, updated_at, \
     channel_template";

/// How many columns `MESSAGE_COLUMNS` names: the index of a column selected
/// after them.
pub const MESSAGE_COLUMN_COUNT: usize = 27;

/// A column list (`MESSAGE_COLUMNS`, …) qualified by a table alias
/// (`m.id, m.workspace_id, …`), for a statement that joins its table to
/// another.
pub fn qualified(alias: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

/// Parses a stored status.
pub fn status(s: &str) -> Result<Status, StoreError> {
    Status::parse(s).ok_or_else(|| corrupt("status", s))
}

/// A message's stored `media_urls` (a JSON array of URLs; NULL for none).
pub fn media_urls(text: Option<String>) -> Result<Vec<String>, StoreError> {
    match text {
        Some(m) => serde_json::from_str(&m).map_err(|_| corrupt("media_urls", &m)),
        None => Ok(Vec::new()),
    }
}

/// A message's stored `metadata` (a JSON object, or NULL).
pub fn metadata(
    text: Option<String>,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, StoreError> {
    text.map(|m| serde_json::from_str(&m).map_err(|_| corrupt("metadata", &m)))
        .transpose()
}

/// Reads a row selected with `MESSAGE_COLUMNS`.
pub fn message(r: &Row<'_>) -> Result<MessageRecord, StoreError> {
    message_at(r, 0)
}

/// Reads the `MESSAGE_COLUMNS` of a row that selects them from column `at`
/// on (after columns of another table it joins).
pub fn message_at(r: &Row<'_>, at: usize) -> Result<MessageRecord, StoreError> {
    let id: String = r.get(at)?;
    let ws: String = r.get(at + 1)?;
    let status_s: String = r.get(at + 14)?;
    let priority: i64 = r.get(at + 12)?;
    Ok(MessageRecord {
        id: MessageId::parse(&id).map_err(|_| corrupt("message id", &id))?,
        workspace_id: WorkspaceId::parse(&ws).map_err(|_| corrupt("workspace id", &ws))?,
        to: r.get(at + 2)?,
        from: r.get(at + 3)?,
        channel: r.get(at + 4)?,
        body: r.get(at + 5)?,
        media_urls: media_urls(r.get(at + 6)?)?,
        encoding: r.get(at + 7)?,
        segments: r.get(at + 8)?,
        client_ref: r.get(at + 9)?,
        metadata: metadata(r.get(at + 10)?)?,
        category: r.get(at + 11)?,
        priority: if priority > 0 { "high" } else { "normal" }.to_owned(),
        timezone: r.get(at + 13)?,
        status: status(&status_s)?,
        provider_id: r.get(at + 15)?,
        provider_message_id: r.get(at + 16)?,
        attempts: r.get(at + 17)?,
        next_attempt_at: r
            .get::<_, Option<i64>>(at + 18)?
            .map(Timestamp::from_millis),
        send_at: r
            .get::<_, Option<i64>>(at + 19)?
            .map(Timestamp::from_millis),
        expires_at: Timestamp::from_millis(r.get(at + 20)?),
        error_code: r.get(at + 21)?,
        error_message: r.get(at + 22)?,
        idempotency_key: r.get(at + 23)?,
        created_at: Timestamp::from_millis(r.get(at + 24)?),
        updated_at: Timestamp::from_millis(r.get(at + 25)?),
        whatsapp_template: match r.get::<_, Option<String>>(at + 26)? {
            Some(t) => Some(serde_json::from_str(&t).map_err(|_| corrupt("channel_template", &t))?),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_count_counts_the_columns() {
        assert_eq!(MESSAGE_COLUMNS.split(',').count(), MESSAGE_COLUMN_COUNT);
    }

    #[test]
    fn qualified_columns_name_the_same_columns_in_order() {
        let q = qualified("m", MESSAGE_COLUMNS);
        assert!(q.starts_with("m.id, m.workspace_id, m.to_phone, "));
        assert!(q.ends_with(", m.channel_template"));
        assert_eq!(q.split(", ").count(), MESSAGE_COLUMN_COUNT);
        assert!(
            q.split(", ")
                .all(|c| c.starts_with("m.") && !c.contains(' '))
        );
    }
}
