//! Workspaces, API keys, senders and the admin token.

use super::db::{Db, DbError, OptionalExt, Row, p};
use switchboard_core::message::ALL_CHANNELS;
use switchboard_core::{ApiKeyId, Channel, SenderId, Timestamp, WorkspaceId};

use crate::error::StoreError;
use crate::model::{ApiKey, IntegrationRecord, Workspace};

/// The address of the built-in simulator sender every workspace starts with.
pub const SIM_SENDER_ADDRESS: &str = "Switchboard";

pub fn admin_token_hash(c: &Db<'_>) -> Result<Option<String>, StoreError> {
    Ok(c.query_row(
        "SELECT value FROM meta WHERE key = 'admin_token_hash'",
        p![],
        |r| r.get(0),
    )
    .optional()?)
}

pub fn set_admin_token_hash(c: &Db<'_>, hash: &str) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES ('admin_token_hash', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        p![hash],
    )?;
    Ok(())
}

pub fn create_workspace(c: &Db<'_>, name: &str, now: Timestamp) -> Result<Workspace, StoreError> {
    let id = WorkspaceId::new_at(now);
    c.execute(
        "INSERT INTO workspaces (id, name, created_at) VALUES (?1, ?2, ?3)",
        p![id.as_str(), name, now.as_millis()],
    )?;
    for channel in ALL_CHANNELS {
        c.execute(
            "INSERT INTO senders (id, workspace_id, channel, provider_id, address, is_default, created_at)
             VALUES (?1, ?2, ?3, 'pr_sim', ?4, 1, ?5)",
            p![SenderId::new_at(now).as_str(), id.as_str(), channel.as_str(), SIM_SENDER_ADDRESS, now.as_millis()],
        )?;
    }
    Ok(Workspace {
        id,
        name: name.to_owned(),
        location_id: None,
        created_at: now,
    })
}

fn workspace_row(r: &Row<'_>) -> Result<(String, String, Option<String>, i64), DbError> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_workspace(
    (id, name, location_id, created): (String, String, Option<String>, i64),
) -> Result<Workspace, StoreError> {
    Ok(Workspace {
        id: WorkspaceId::parse(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        name,
        location_id,
        created_at: Timestamp::from_millis(created),
    })
}

pub fn get_workspace(c: &Db<'_>, id: &WorkspaceId) -> Result<Option<Workspace>, StoreError> {
    c.query_row(
        "SELECT id, name, location_id, created_at FROM workspaces WHERE id = ?1",
        p![id.as_str()],
        workspace_row,
    )
    .optional()?
    .map(to_workspace)
    .transpose()
}

pub fn list_workspaces(c: &Db<'_>) -> Result<Vec<Workspace>, StoreError> {
    let mut stmt =
        c.prepare_cached("SELECT id, name, location_id, created_at FROM workspaces ORDER BY id")?;
    let rows = stmt
        .query_map(p![], workspace_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_workspace).collect()
}

pub fn create_api_key(
    c: &Db<'_>,
    ws: &WorkspaceId,
    hash: &str,
    hint: &str,
    now: Timestamp,
) -> Result<ApiKey, StoreError> {
    let id = ApiKeyId::new_at(now);
    c.execute(
        "INSERT INTO api_keys (id, workspace_id, key_hash, hint, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        p![id.as_str(), ws.as_str(), hash, hint, now.as_millis()],
    )?;
    Ok(ApiKey {
        id: id.to_string(),
        workspace_id: ws.clone(),
        hint: hint.to_owned(),
        created_at: now,
        revoked_at: None,
    })
}

type KeyRow = (String, String, String, i64, Option<i64>);

fn key_row(r: &Row<'_>) -> Result<KeyRow, DbError> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
}

fn to_key((id, ws, hint, created, revoked): KeyRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id,
        workspace_id: WorkspaceId::parse(&ws).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        hint,
        created_at: Timestamp::from_millis(created),
        revoked_at: revoked.map(Timestamp::from_millis),
    })
}

pub fn find_api_key(c: &Db<'_>, hash: &str) -> Result<Option<ApiKey>, StoreError> {
    c.query_row(
        "SELECT id, workspace_id, hint, created_at, revoked_at FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
        p![hash],
        key_row,
    )
    .optional()?
    .map(to_key)
    .transpose()
}

pub fn list_api_keys(c: &Db<'_>, ws: &WorkspaceId) -> Result<Vec<ApiKey>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT id, workspace_id, hint, created_at, revoked_at FROM api_keys WHERE workspace_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map(p![ws.as_str()], key_row)?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(to_key).collect()
}

/// Revokes a key of `ws`; `None` if there is no such key, else the key as it is now
/// (revoking twice keeps the first time).
pub fn revoke_api_key(
    c: &Db<'_>,
    ws: &WorkspaceId,
    key_id: &str,
    now: Timestamp,
) -> Result<Option<ApiKey>, StoreError> {
    c.execute(
        "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND workspace_id = ?3 AND revoked_at IS NULL",
        p![now.as_millis(), key_id, ws.as_str()],
    )?;
    c.query_row(
        "SELECT id, workspace_id, hint, created_at, revoked_at FROM api_keys WHERE id = ?1 AND workspace_id = ?2",
        p![key_id, ws.as_str()],
        key_row,
    )
    .optional()?
    .map(to_key)
    .transpose()
}

/// The workspaces that own `address` on `channel` through `provider`.
pub fn sender_owners(
    c: &Db<'_>,
    provider: &str,
    channel: Channel,
    address: &str,
) -> Result<Vec<WorkspaceId>, StoreError> {
    let mut stmt = c.prepare_cached(
        "SELECT workspace_id FROM senders WHERE provider_id = ?1 AND channel = ?2 AND address = ?3 ORDER BY workspace_id LIMIT 2",
    )?;
    let rows = stmt
        .query_map(p![provider, channel.as_str(), address], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.iter()
        .map(|ws| WorkspaceId::parse(ws).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

/// Sets the workspace's `location_id`; `false` if another workspace has it.
pub fn set_location_id(c: &Db<'_>, ws: &WorkspaceId, loc: &str) -> Result<bool, StoreError> {
    let taken: Option<String> = c
        .query_row(
            "SELECT id FROM workspaces WHERE location_id = ?1 AND id <> ?2",
            p![loc, ws.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return Ok(false);
    }
    c.execute(
        "UPDATE workspaces SET location_id = ?1 WHERE id = ?2",
        p![loc, ws.as_str()],
    )?;
    Ok(true)
}

/// Connects an adapter; `false` if another connection has the token.
pub fn put_integration(c: &Db<'_>, i: &IntegrationRecord) -> Result<bool, StoreError> {
    let taken: Option<String> = c
        .query_row(
            "SELECT id FROM integrations WHERE token_hash = ?1 AND NOT (workspace_id = ?2 AND kind = ?3)",
            p![i.token_hash, i.workspace_id.as_str(), i.kind],
            |r| r.get(0),
        )
        .optional()?;
    if taken.is_some() {
        return Ok(false);
    }
    c.execute(
        "DELETE FROM integrations WHERE workspace_id = ?1 AND kind = ?2",
        p![i.workspace_id.as_str(), i.kind],
    )?;
    c.execute(
        "INSERT INTO integrations (id, workspace_id, kind, header, token_hash, config, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        p![
            i.id,
            i.workspace_id.as_str(),
            i.kind,
            i.header,
            i.token_hash,
            i.config.to_string(),
            i.created_at.as_millis()
        ],
    )?;
    Ok(true)
}

const INTEGRATION_COLUMNS: &str = "id, workspace_id, kind, header, token_hash, config, created_at";

type IntegrationRow = (String, String, String, String, String, String, i64);

fn integration_row(r: &Row<'_>) -> Result<IntegrationRow, DbError> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn to_integration(row: IntegrationRow) -> Result<IntegrationRecord, StoreError> {
    let (id, ws, kind, header, token_hash, config, created) = row;
    Ok(IntegrationRecord {
        id,
        workspace_id: WorkspaceId::parse(&ws).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        kind,
        header,
        token_hash,
        config: serde_json::from_str(&config)
            .map_err(|_| StoreError::Corrupt(format!("integration config {config}")))?,
        created_at: Timestamp::from_millis(created),
    })
}

fn integration(
    c: &Db<'_>,
    filter: &str,
    params: &[super::db::V],
) -> Result<Option<IntegrationRecord>, StoreError> {
    let sql = format!("SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE {filter}");
    c.query_row(&sql, params, integration_row)
        .optional()?
        .map(to_integration)
        .transpose()
}

/// A workspace's adapter connections, oldest first.
pub fn list_integrations(
    c: &Db<'_>,
    ws: &WorkspaceId,
) -> Result<Vec<IntegrationRecord>, StoreError> {
    let sql = format!(
        "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE workspace_id = ?1 ORDER BY created_at, id"
    );
    c.query_map(&sql, p![ws.as_str()], integration_row)?
        .into_iter()
        .map(to_integration)
        .collect()
}

pub fn find_integration(
    c: &Db<'_>,
    kind: &str,
    hash: &str,
) -> Result<Option<IntegrationRecord>, StoreError> {
    integration(c, "kind = ?1 AND token_hash = ?2", p![kind, hash])
}

pub fn get_integration(c: &Db<'_>, id: &str) -> Result<Option<IntegrationRecord>, StoreError> {
    integration(c, "id = ?1", p![id])
}

pub fn set_integration_config(
    c: &Db<'_>,
    id: &str,
    config: &serde_json::Value,
) -> Result<bool, StoreError> {
    Ok(c.execute(
        "UPDATE integrations SET config = ?1 WHERE id = ?2",
        p![config.to_string(), id],
    )? > 0)
}

pub fn first_delivery(
    c: &Db<'_>,
    id: &str,
    key: &str,
    now: Timestamp,
    forget_before: Timestamp,
) -> Result<bool, StoreError> {
    c.execute(
        "DELETE FROM integration_deliveries WHERE integration_id = ?1 AND received_at < ?2",
        p![id, forget_before.as_millis()],
    )?;
    let n = c.execute(
        "INSERT INTO integration_deliveries (integration_id, delivery_key, received_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (integration_id, delivery_key) DO NOTHING",
        p![id, key, now.as_millis()],
    )?;
    Ok(n > 0)
}

pub fn integration_headers(c: &Db<'_>, kind: &str) -> Result<Vec<String>, StoreError> {
    Ok(c.query_map(
        "SELECT DISTINCT header FROM integrations WHERE kind = ?1 ORDER BY header",
        p![kind],
        |r| r.get(0),
    )?)
}
