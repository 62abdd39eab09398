//! Provider instances and the senders that route through them.
//!
//! A provider row holds a connector's kind, its non-secret configuration and
//! its credentials (apart, so that nothing that lists providers reads them
//! by accident). A sender is an address of a workspace on a channel through
//! one provider; a channel's senders in order (default first, then by
//! priority) are its failover route.

use super::db::{Db, DbError, OptionalExt, Row, p};
use switchboard_core::{Channel, ProviderId, SenderId, Timestamp, WorkspaceId};

use crate::error::StoreError;
use crate::model::{NewSender, ProviderDeletion, ProviderRecord, Sender, SenderCreation};

const PROVIDER_COLUMNS: &str = "id, kind, name, config, credentials, attempt_budget, rate_per_second, burst, created_at, updated_at";

type ProviderRow = (
    String,
    String,
    String,
    String,
    String,
    Option<u32>,
    Option<f64>,
    Option<f64>,
    i64,
    i64,
);

fn provider_row(r: &Row<'_>) -> Result<ProviderRow, DbError> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn to_provider(row: ProviderRow) -> Result<ProviderRecord, StoreError> {
    let (id, kind, name, config, credentials, budget, rate, burst, created, updated) = row;
    let json = |what: &str, s: &str| {
        serde_json::from_str(s).map_err(|_| StoreError::Corrupt(format!("provider {id} {what}")))
    };
    Ok(ProviderRecord {
        id: ProviderId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        config: json("config", &config)?,
        credentials: json("credentials", &credentials)?,
        kind,
        name,
        attempt_budget: budget,
        rate: rate.map(|r| (r, burst.unwrap_or(r))),
        created_at: Timestamp::from_millis(created),
        updated_at: Timestamp::from_millis(updated),
    })
}

/// Stores a new provider.
pub fn create_provider(c: &Db<'_>, p: &ProviderRecord) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO providers (id, kind, name, config, credentials, attempt_budget, rate_per_second, burst, tokens, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10)",
        p![
            p.id.as_str(),
            p.kind,
            p.name,
            p.config.to_string(),
            p.credentials.to_string(),
            p.attempt_budget,
            p.rate.map(|r| r.0),
            p.rate.map(|r| r.1),
            p.created_at.as_millis(),
            p.updated_at.as_millis()
        ],
    )?;
    Ok(())
}

/// Replaces a provider's name, configuration, credentials, budget and
/// limit; `false` if there is no such provider. A new limit refills the
/// bucket.
pub fn update_provider(c: &Db<'_>, p: &ProviderRecord) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE providers SET name = ?1, config = ?2, credentials = ?3, attempt_budget = ?4, updated_at = ?5 WHERE id = ?6",
        p![
            p.name,
            p.config.to_string(),
            p.credentials.to_string(),
            p.attempt_budget,
            p.updated_at.as_millis(),
            p.id.as_str()
        ],
    )?;
    if n == 0 {
        return Ok(false);
    }
    super::messages::set_provider_rate(c, p.id.as_str(), p.rate)?;
    Ok(true)
}

/// Every provider, the built-in simulator first.
pub fn list_providers(c: &Db<'_>) -> Result<Vec<ProviderRecord>, StoreError> {
    let sql = format!("SELECT {PROVIDER_COLUMNS} FROM providers ORDER BY created_at, id");
    let rows = c
        .prepare_cached(&sql)?
        .query_map(p![], provider_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_provider).collect()
}

/// One provider.
pub fn get_provider(c: &Db<'_>, id: &str) -> Result<Option<ProviderRecord>, StoreError> {
    let sql = format!("SELECT {PROVIDER_COLUMNS} FROM providers WHERE id = ?1");
    c.query_row(&sql, p![id], provider_row)
        .optional()?
        .map(to_provider)
        .transpose()
}

/// Deletes a provider that no sender uses.
pub fn delete_provider(c: &Db<'_>, id: &str) -> Result<ProviderDeletion, StoreError> {
    let senders: i64 = c.query_row(
        "SELECT COUNT(*) FROM senders WHERE provider_id = ?1",
        p![id],
        |r| r.get(0),
    )?;
    if senders > 0 {
        return Ok(ProviderDeletion::InUse {
            senders: senders.unsigned_abs(),
        });
    }
    let n = c.execute("DELETE FROM providers WHERE id = ?1", p![id])?;
    Ok(if n == 0 {
        ProviderDeletion::NotFound
    } else {
        ProviderDeletion::Deleted
    })
}

const SENDER_COLUMNS: &str = "id, channel, provider_id, address, is_default, priority";
/// A channel's route: the default first, then by priority, then oldest.
const SENDER_ORDER: &str = "is_default DESC, priority, created_at, id";

fn sender_row(r: &Row<'_>) -> Result<(String, String, String, String, bool, i64), DbError> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_sender(
    (id, channel, provider, address, is_default, priority): (
        String,
        String,
        String,
        String,
        bool,
        i64,
    ),
) -> Result<Sender, StoreError> {
    Ok(Sender {
        id,
        channel: Channel::parse(&channel)
            .ok_or_else(|| StoreError::Corrupt(format!("sender channel {channel}")))?,
        provider_id: ProviderId::parse(&provider)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        address,
        is_default,
        priority,
    })
}

/// The senders of a workspace on a channel, in route order.
pub fn senders(c: &Db<'_>, ws: &WorkspaceId, channel: Channel) -> Result<Vec<Sender>, StoreError> {
    let sql = format!(
        "SELECT {SENDER_COLUMNS} FROM senders WHERE workspace_id = ?1 AND channel = ?2 ORDER BY {SENDER_ORDER}"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(p![ws.as_str(), channel.as_str()], sender_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_sender).collect()
}

/// Every sender of a workspace, by channel, each channel in route order.
pub fn all_senders(c: &Db<'_>, ws: &WorkspaceId) -> Result<Vec<Sender>, StoreError> {
    let sql = format!(
        "SELECT {SENDER_COLUMNS} FROM senders WHERE workspace_id = ?1 ORDER BY channel, {SENDER_ORDER}"
    );
    let rows = c
        .prepare_cached(&sql)?
        .query_map(p![ws.as_str()], sender_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_sender).collect()
}

/// Adds a sender; a new default demotes the channel's previous default.
pub fn create_sender(
    c: &Db<'_>,
    ws: &WorkspaceId,
    s: &NewSender,
    now: Timestamp,
) -> Result<SenderCreation, StoreError> {
    if get_provider(c, s.provider_id.as_str())?.is_none() {
        return Ok(SenderCreation::UnknownProvider);
    }
    let taken: Option<String> = c
        .query_row(
            "SELECT id FROM senders WHERE workspace_id = ?1 AND channel = ?2 AND address = ?3",
            p![ws.as_str(), s.channel.as_str(), s.address],
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return Ok(SenderCreation::Duplicate);
    }
    if s.is_default {
        c.execute(
            "UPDATE senders SET is_default = 0 WHERE workspace_id = ?1 AND channel = ?2",
            p![ws.as_str(), s.channel.as_str()],
        )?;
    }
    let id = SenderId::new_at(now);
    c.execute(
        "INSERT INTO senders (id, workspace_id, channel, provider_id, address, is_default, priority, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        p![
            id.as_str(),
            ws.as_str(),
            s.channel.as_str(),
            s.provider_id.as_str(),
            s.address,
            i64::from(s.is_default),
            s.priority,
            now.as_millis()
        ],
    )?;
    Ok(SenderCreation::Created(Sender {
        id: id.to_string(),
        channel: s.channel,
        provider_id: s.provider_id.clone(),
        address: s.address.clone(),
        is_default: s.is_default,
        priority: s.priority,
    }))
}

/// Removes a sender; if it was the default, the next in the route becomes
/// the default. `None` if the workspace has no such sender.
pub fn delete_sender(c: &Db<'_>, ws: &WorkspaceId, id: &str) -> Result<Option<Sender>, StoreError> {
    let sql = format!("SELECT {SENDER_COLUMNS} FROM senders WHERE id = ?1 AND workspace_id = ?2");
    let Some(row) = c
        .query_row(&sql, p![id, ws.as_str()], sender_row)
        .optional()?
    else {
        return Ok(None);
    };
    let sender = to_sender(row)?;
    c.execute("DELETE FROM senders WHERE id = ?1", p![id])?;
    if sender.is_default
        && let Some(next) = senders(c, ws, sender.channel)?.first()
    {
        c.execute(
            "UPDATE senders SET is_default = 1 WHERE id = ?1",
            p![next.id],
        )?;
    }
    Ok(Some(sender))
}

/// The sender a message on `provider`/`from` fails over to: the next one in
/// its channel's route that goes through another provider.
pub fn failover_target(
    c: &Db<'_>,
    ws: &str,
    channel: &str,
    provider: &str,
    from: Option<&str>,
) -> Result<Option<Sender>, StoreError> {
    let ws = WorkspaceId::parse(ws).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let channel = Channel::parse(channel)
        .ok_or_else(|| StoreError::Corrupt(format!("message channel {channel}")))?;
    let route = senders(c, &ws, channel)?;
    let here = route
        .iter()
        .position(|s| s.provider_id.as_str() == provider && Some(s.address.as_str()) == from);
    // A message whose sender was removed starts over at the top of the route.
    let rest = match here {
        Some(i) => &route[i + 1..],
        None => &route[..],
    };
    Ok(rest
        .iter()
        .find(|s| s.provider_id.as_str() != provider)
        .cloned())
}
