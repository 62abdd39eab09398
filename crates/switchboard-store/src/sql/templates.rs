//! Message templates.

use super::db::{Db, Row, p};
use switchboard_core::{Timestamp, WorkspaceId};

use crate::error::StoreError;
use crate::model::TemplateRecord;

const COLUMNS: &str = "id, workspace_id, name, body, variants, created_at, updated_at";

fn row(r: &Row<'_>) -> Result<TemplateRecord, StoreError> {
    let ws: String = r.get(1)?;
    let variants: String = r.get(4)?;
    Ok(TemplateRecord {
        id: r.get(0)?,
        workspace_id: WorkspaceId::parse(&ws).map_err(|_| StoreError::Corrupt(ws.clone()))?,
        name: r.get(2)?,
        body: r.get(3)?,
        variants: serde_json::from_str(&variants)
            .map_err(|_| StoreError::Corrupt(variants.clone()))?,
        created_at: Timestamp::from_millis(r.get(5)?),
        updated_at: Timestamp::from_millis(r.get(6)?),
    })
}

pub fn create(c: &Db<'_>, t: &TemplateRecord) -> Result<Option<TemplateRecord>, StoreError> {
    // ON CONFLICT rather than catching the error: on PostgreSQL a failed
    // statement would abort the whole group-commit transaction.
    let r = c.execute(
        &format!("INSERT INTO templates ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING"),
        p![
            t.id,
            t.workspace_id.as_str(),
            t.name,
            t.body,
            serde_json::to_string(&t.variants).expect("strings"),
            t.created_at.as_millis(),
            t.updated_at.as_millis()
        ],
    );
    match r? {
        0 => Ok(None),
        _ => Ok(Some(t.clone())),
    }
}

pub fn list(c: &Db<'_>, ws: &WorkspaceId) -> Result<Vec<TemplateRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM templates WHERE workspace_id = ?1 ORDER BY name");
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(p![ws.as_str()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(row(&r)?);
    }
    Ok(out)
}

pub fn get(
    c: &Db<'_>,
    ws: &WorkspaceId,
    id_or_name: &str,
) -> Result<Option<TemplateRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM templates WHERE workspace_id = ?1 AND (id = ?2 OR name = ?2)"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    let mut rows = stmt.query(p![ws.as_str(), id_or_name])?;
    rows.next()?.map(|r| row(&r)).transpose()
}

pub fn update(
    c: &Db<'_>,
    t: &TemplateRecord,
) -> Result<Option<Result<TemplateRecord, ()>>, StoreError> {
    let taken: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM templates WHERE workspace_id = ?1 AND name = ?2 AND id <> ?3)",
        p![t.workspace_id.as_str(), t.name, t.id],
        |r| r.get(0),
    )?;
    if taken {
        return Ok(get(c, &t.workspace_id, &t.id)?.map(|_| Err(())));
    }
    let r = c.execute(
        "UPDATE templates SET name = ?1, body = ?2, variants = ?3, updated_at = ?4 WHERE id = ?5 AND workspace_id = ?6",
        p![t.name, t.body, serde_json::to_string(&t.variants).expect("strings"), t.updated_at.as_millis(), t.id, t.workspace_id.as_str()],
    );
    match r? {
        0 => Ok(None),
        _ => Ok(get(c, &t.workspace_id, &t.id)?.map(Ok)),
    }
}

pub fn delete(c: &Db<'_>, ws: &WorkspaceId, id: &str) -> Result<bool, StoreError> {
    Ok(c.execute(
        "DELETE FROM templates WHERE workspace_id = ?1 AND (id = ?2 OR name = ?2)",
        p![ws.as_str(), id],
    )? > 0)
}
