//! PostgreSQL migrations: the same tables as SQLite's (`schema.rs`), in
//! PostgreSQL's types. Applied at start, or by `switchboard migrate`, under
//! an advisory lock so that nodes starting together apply each one once.

use super::db::{Db, p};
use crate::error::StoreError;

/// Serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x5357_4254_4348; // "SWBTCH"

const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_initial", include_str!("pg/0001_initial.sql")),
    (
        "0002_provider_limits",
        include_str!("pg/0002_provider_limits.sql"),
    ),
    ("0003_provider_routing", super::schema::PROVIDER_ROUTING),
    ("0004_integrations", super::schema::INTEGRATIONS),
    ("0005_console_sessions", super::schema::CONSOLE_SESSIONS),
    (
        "0006_webhook_claim_order",
        super::schema::WEBHOOK_CLAIM_ORDER,
    ),
    (
        "0007_idempotency_lookup",
        include_str!("pg/0007_idempotency_lookup.sql"),
    ),
    (
        "0008_fewer_log_indexes",
        include_str!("pg/0008_fewer_log_indexes.sql"),
    ),
    (
        "0009_events_keyed_by_id",
        include_str!("pg/0009_events_keyed_by_id.sql"),
    ),
    (
        "0010_implied_accept",
        include_str!("pg/0010_implied_accept.sql"),
    ),
    (
        "0011_binary_collation",
        include_str!("pg/0011_binary_collation.sql"),
    ),
    (
        "0012_listing_by_status",
        include_str!("pg/0012_listing_by_status.sql"),
    ),
    (
        "0013_message_rows",
        include_str!("pg/0013_message_rows.sql"),
    ),
];

/// Applies the migrations not yet applied, each in its own transaction;
/// returns how many it applied.
pub fn migrate(db: &Db<'_>) -> Result<usize, StoreError> {
    db.query_row(
        "SELECT pg_advisory_lock(?1)",
        p![MIGRATION_LOCK],
        |_| Ok(()),
    )?;
    let result = apply(db);
    db.query_row("SELECT pg_advisory_unlock(?1)", p![MIGRATION_LOCK], |_| {
        Ok(())
    })?;
    result
}

fn apply(db: &Db<'_>) -> Result<usize, StoreError> {
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )?;
    let mut applied = 0;
    for (name, sql) in MIGRATIONS {
        let done: bool = db.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = ?1)",
            p![*name],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        db.execute_batch("BEGIN")?;
        let step = db.execute_batch(sql).and_then(|()| {
            db.execute(
                "INSERT INTO schema_migrations (name, applied_at) VALUES (?1, EXTRACT(EPOCH FROM now())::BIGINT)",
                p![*name],
            )
        });
        match step {
            Ok(_) => db.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = db.execute_batch("ROLLBACK");
                return Err(e.into());
            }
        }
        applied += 1;
    }
    Ok(applied)
}
