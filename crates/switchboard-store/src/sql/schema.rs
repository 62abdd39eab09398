//! SQLite migrations, applied in order at open. Each is run once, recorded in
//! `schema_migrations`; never edit a released migration, add a new one.

use rusqlite::Connection;

use crate::error::StoreError;

const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_foundation",
        r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    location_id TEXT UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    key_hash     TEXT NOT NULL UNIQUE,
    hint         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

CREATE TABLE providers (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    name       TEXT NOT NULL,
    config     TEXT NOT NULL DEFAULT '{}',
    created_at INTEGER NOT NULL
);
INSERT INTO providers (id, kind, name, created_at) VALUES ('pr_sim', 'sim', 'Built-in simulator', 0);

CREATE TABLE senders (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    channel      TEXT NOT NULL,
    provider_id  TEXT NOT NULL REFERENCES providers(id),
    address      TEXT NOT NULL,
    is_default   INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    UNIQUE (workspace_id, channel, address)
);

CREATE TABLE messages (
    id                  TEXT PRIMARY KEY,
    workspace_id        TEXT NOT NULL,
    to_phone            TEXT NOT NULL,
    from_addr           TEXT,
    channel             TEXT NOT NULL,
    body                TEXT NOT NULL,
    media_urls          TEXT,
    encoding            TEXT NOT NULL,
    segments            INTEGER NOT NULL,
    client_ref          TEXT,
    metadata            TEXT,
    category            TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    timezone            TEXT,
    status              TEXT NOT NULL,
    initial_status      TEXT NOT NULL,
    provider_id         TEXT,
    provider_message_id TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     INTEGER,
    lease_until         INTEGER,
    claimed_at          INTEGER,
    send_at             INTEGER,
    expires_at          INTEGER NOT NULL,
    error_code          TEXT,
    error_message       TEXT,
    idempotency_key     TEXT,
    request_hash        TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);
CREATE UNIQUE INDEX messages_idempotency ON messages (workspace_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_queued ON messages (priority DESC, next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_scheduled ON messages (next_attempt_at) WHERE status = 'scheduled';
CREATE INDEX messages_leased ON messages (lease_until) WHERE status = 'sending';
CREATE INDEX messages_by_workspace ON messages (workspace_id, id);
CREATE INDEX messages_by_status ON messages (workspace_id, status, id);
CREATE INDEX messages_by_phone ON messages (workspace_id, to_phone, id);
CREATE INDEX messages_by_ref ON messages (workspace_id, client_ref, id) WHERE client_ref IS NOT NULL;
CREATE INDEX messages_by_provider_id ON messages (provider_id, provider_message_id) WHERE provider_message_id IS NOT NULL;

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    message_id   TEXT,
    type         TEXT NOT NULL,
    status       TEXT NOT NULL,
    detail       TEXT,
    error_code   TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX events_by_message ON events (message_id, seq);

CREATE TABLE attempts (
    id                  TEXT PRIMARY KEY,
    message_id          TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    provider_id         TEXT NOT NULL,
    started_at          INTEGER NOT NULL,
    duration_ms         INTEGER NOT NULL,
    outcome             TEXT NOT NULL,
    error_class         TEXT,
    error_code          TEXT,
    error_message       TEXT,
    provider_message_id TEXT
);
CREATE INDEX attempts_by_message ON attempts (message_id, attempt);
"#,
    ),
    (
        "0002_webhooks",
        r#"
ALTER TABLE events ADD COLUMN payload TEXT;

CREATE TABLE webhook_endpoints (
    id                    TEXT PRIMARY KEY,
    workspace_id          TEXT NOT NULL REFERENCES workspaces(id),
    url                   TEXT NOT NULL,
    method                TEXT NOT NULL,
    content_type          TEXT NOT NULL,
    event_types           TEXT,
    headers               TEXT NOT NULL,
    description           TEXT,
    enabled               INTEGER NOT NULL,
    disabled_reason       TEXT,
    format                TEXT NOT NULL,
    template              TEXT,
    retry_schedule        TEXT NOT NULL,
    timeout_ms            INTEGER NOT NULL,
    disable_after         INTEGER NOT NULL,
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    secret                TEXT NOT NULL,
    previous_secret       TEXT,
    previous_secret_until INTEGER,
    deleted_at            INTEGER,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_by_workspace ON webhook_endpoints (workspace_id) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT NOT NULL,
    workspace_id    TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_seq       INTEGER NOT NULL,
    ordering_key    TEXT,
    status          TEXT NOT NULL,
    trigger         TEXT NOT NULL DEFAULT 'scheduled',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, ordering_key, event_seq) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id            TEXT PRIMARY KEY,
    endpoint_id   TEXT NOT NULL,
    delivery_id   TEXT,
    event_id      TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    trigger       TEXT NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    response_body TEXT,
    duration_ms   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, created_at);
"#,
    ),
    (
        "0003_templates",
        r#"
CREATE TABLE templates (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    body         TEXT NOT NULL,
    variants     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (workspace_id, name)
);
"#,
    ),
    (
        "0004_consent",
        r#"
CREATE TABLE contacts (
    workspace_id TEXT NOT NULL,
    phone        TEXT NOT NULL,
    channel      TEXT NOT NULL,
    state        TEXT NOT NULL,
    source       TEXT NOT NULL,
    jurisdiction TEXT,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, phone, channel)
) WITHOUT ROWID;

CREATE TABLE consent_history (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    phone        TEXT NOT NULL,
    channel      TEXT NOT NULL,
    state        TEXT NOT NULL,
    source       TEXT NOT NULL,
    jurisdiction TEXT,
    detail       TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX consent_history_by_phone ON consent_history (workspace_id, phone, id);

ALTER TABLE messages ADD COLUMN consent_exempt INTEGER NOT NULL DEFAULT 0;
"#,
    ),
    (
        "0005_inbound",
        r#"
ALTER TABLE workspaces ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';

CREATE TABLE inbound (
    id                      TEXT PRIMARY KEY,
    workspace_id            TEXT NOT NULL,
    from_phone              TEXT NOT NULL,
    to_addr                 TEXT,
    channel                 TEXT NOT NULL,
    text                    TEXT NOT NULL,
    media_urls              TEXT,
    provider_id             TEXT NOT NULL,
    provider_message_id     TEXT,
    conversation_message_id TEXT,
    keyword                 TEXT,
    created_at              INTEGER NOT NULL
);
CREATE INDEX inbound_by_workspace ON inbound (workspace_id, id);
CREATE INDEX inbound_by_phone ON inbound (workspace_id, from_phone, id);
CREATE UNIQUE INDEX inbound_dedupe ON inbound (provider_id, provider_message_id) WHERE provider_message_id IS NOT NULL;
"#,
    ),
    (
        "0006_receipt_inbox",
        r#"
CREATE TABLE receipt_inbox (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id         TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    kind                TEXT NOT NULL,
    raw                 TEXT,
    received_at         INTEGER NOT NULL,
    state               TEXT NOT NULL DEFAULT 'pending',
    checks              INTEGER NOT NULL DEFAULT 0,
    next_check_at       INTEGER NOT NULL,
    processed_at        INTEGER,
    UNIQUE (provider_id, provider_message_id, kind)
);
CREATE INDEX receipt_inbox_pending ON receipt_inbox (next_check_at) WHERE state = 'pending';
"#,
    ),
    (
        "0007_provider_limits",
        r#"
ALTER TABLE providers ADD COLUMN rate_per_second REAL;
ALTER TABLE providers ADD COLUMN burst REAL;
ALTER TABLE providers ADD COLUMN tokens REAL;
ALTER TABLE providers ADD COLUMN tokens_at INTEGER;
"#,
    ),
    ("0008_provider_routing", PROVIDER_ROUTING),
    ("0009_integrations", INTEGRATIONS),
    ("0010_console_sessions", CONSOLE_SESSIONS),
    ("0011_webhook_claim_order", WEBHOOK_CLAIM_ORDER),
    ("0012_fewer_log_indexes", FEWER_LOG_INDEXES),
    ("0013_written_behind", WRITTEN_BEHIND),
    ("0014_implied_accept", IMPLIED_ACCEPT),
    ("0015_listing_by_status", LISTING_BY_STATUS),
];

/// A workspace's messages in id order are read through the status index
/// (`messages_by_status`, on workspace, status and id), one range per
/// status, merged (`messages::list`, `console`): the index on workspace
/// and id was one more B-tree written by every accept, for reads the
/// status index serves as well (bench/HISTORY.md, twenty-eighth session).
/// PostgreSQL: migration 0012, where every change of status wrote it too.
const LISTING_BY_STATUS: &str = r#"
DROP INDEX messages_by_workspace;
"#;

/// A message accepted as `queued` marks its acceptance event
/// (`message.queued`, id `evt_` + the message's ULID) as implied by the
/// row: the event is stored in `events` only when an endpoint of the
/// workspace subscribes to it (`events::write`), and the message's
/// timeline shows it from the row otherwise (`messages::get`). Rows from
/// before the upgrade keep their stored event (0). PostgreSQL: migration
/// 0010.
const IMPLIED_ACCEPT: &str = r#"
ALTER TABLE messages ADD COLUMN implied_accept INTEGER NOT NULL DEFAULT 0;
"#;

/// The idempotency keys and the recipients of messages in tables of their
/// own, written behind the accepts (`written_behind`): the unique index on
/// the keys and the index by recipient put a random leaf page each into
/// every accept's commit (bench/HISTORY.md, fourteenth session). What is stored
/// is copied once, at the upgrade; `written_behind` says up to which
/// message row the tables are complete.
const WRITTEN_BEHIND: &str = r#"
CREATE TABLE message_keys (
    workspace_id    TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    PRIMARY KEY (workspace_id, idempotency_key)
) WITHOUT ROWID;
INSERT INTO message_keys (workspace_id, idempotency_key, message_id)
    SELECT workspace_id, idempotency_key, id FROM messages WHERE idempotency_key IS NOT NULL;
DROP INDEX messages_idempotency;
CREATE TABLE message_phones (
    workspace_id TEXT NOT NULL,
    to_phone     TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    PRIMARY KEY (workspace_id, to_phone, message_id)
) WITHOUT ROWID;
INSERT INTO message_phones (workspace_id, to_phone, message_id)
    SELECT workspace_id, to_phone, id FROM messages;
DROP INDEX messages_by_phone;
CREATE TABLE written_behind (
    name TEXT PRIMARY KEY,
    upto INTEGER NOT NULL
);
INSERT INTO written_behind (name, upto) VALUES ('messages', (SELECT coalesce(max(rowid), 0) FROM messages));
"#;

/// Fewer B-trees written per message end to end (bench/HISTORY.md, twelfth
/// session): every B-tree an insert touches costs the writer its leaf and
/// a WAL frame per commit.
/// - `webhook_deliveries_by_event`: no statement reads it.
/// - `attempts`: keyed by its message (`WITHOUT ROWID`), the only way it
///   is read; its id had an index of its own and the message a third
///   B-tree. Ids stay unique: the key ends with them.
/// - `webhook_attempts`: its id had an index of its own that nothing reads;
///   an explicit `seq` orders attempts of one millisecond (it was the
///   implicit rowid, which `VACUUM` may renumber), as on PostgreSQL.
///
/// The two tables are copied once, at the upgrade.
const FEWER_LOG_INDEXES: &str = r#"
DROP INDEX webhook_deliveries_by_event;

CREATE TABLE attempts_v2 (
    message_id          TEXT NOT NULL,
    attempt             INTEGER NOT NULL,
    id                  TEXT NOT NULL,
    provider_id         TEXT NOT NULL,
    started_at          INTEGER NOT NULL,
    duration_ms         INTEGER NOT NULL,
    outcome             TEXT NOT NULL,
    error_class         TEXT,
    error_code          TEXT,
    error_message       TEXT,
    provider_message_id TEXT,
    PRIMARY KEY (message_id, attempt, id)
) WITHOUT ROWID;
INSERT INTO attempts_v2 (message_id, attempt, id, provider_id, started_at, duration_ms, outcome, error_class, error_code, error_message, provider_message_id)
    SELECT message_id, attempt, id, provider_id, started_at, duration_ms, outcome, error_class, error_code, error_message, provider_message_id FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v2 RENAME TO attempts;

CREATE TABLE webhook_attempts_v2 (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL,
    endpoint_id   TEXT NOT NULL,
    delivery_id   TEXT,
    event_id      TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    trigger       TEXT NOT NULL,
    status_code   INTEGER,
    error         TEXT,
    response_body TEXT,
    duration_ms   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
INSERT INTO webhook_attempts_v2 (seq, id, endpoint_id, delivery_id, event_id, attempt, trigger, status_code, error, response_body, duration_ms, created_at)
    SELECT rowid, id, endpoint_id, delivery_id, event_id, attempt, trigger, status_code, error, response_body, duration_ms, created_at FROM webhook_attempts ORDER BY rowid;
DROP TABLE webhook_attempts;
ALTER TABLE webhook_attempts_v2 RENAME TO webhook_attempts;
CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, created_at);
"#;

/// Operator console sign-ins: the cookie's hash, who it acts as, and its
/// CSRF token. The same statements on both engines.
pub const CONSOLE_SESSIONS: &str = r#"
CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    workspace_id TEXT,
    key_id       TEXT,
    csrf_token   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
"#;

/// The delivery claim reads due deliveries in `(next_attempt_at,
/// event_seq)` order: with both in the index the read stops at its limit.
/// On `next_attempt_at` alone, every delivery due at the same millisecond
/// (a range redelivery queues thousands at once) was read and sorted on
/// every claim. The same statements on both engines.
pub const WEBHOOK_CLAIM_ORDER: &str = r#"
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at, event_seq) WHERE status = 'pending';
"#;

/// CRM adapters that authenticate with a token of their own (2X): the
/// token's hash finds the workspace. The same statements on both engines.
pub const INTEGRATIONS: &str = r#"
CREATE TABLE integrations (
    id           TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL REFERENCES workspaces(id),
    kind         TEXT NOT NULL,
    header       TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    config       TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    UNIQUE (workspace_id, kind)
);
CREATE TABLE integration_deliveries (
    integration_id TEXT NOT NULL,
    delivery_key   TEXT NOT NULL,
    received_at    BIGINT NOT NULL,
    PRIMARY KEY (integration_id, delivery_key)
);
"#;

/// Provider instances with credentials, sender order, failover and receipt
/// error codes: the same statements on both engines.
pub const PROVIDER_ROUTING: &str = r#"
ALTER TABLE providers ADD COLUMN credentials TEXT NOT NULL DEFAULT '{}';
ALTER TABLE providers ADD COLUMN attempt_budget INTEGER;
ALTER TABLE providers ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE senders ADD COLUMN priority INTEGER NOT NULL DEFAULT 100;
ALTER TABLE messages ADD COLUMN route_start INTEGER NOT NULL DEFAULT 0;
ALTER TABLE receipt_inbox ADD COLUMN error_code TEXT;
ALTER TABLE messages ADD COLUMN channel_template TEXT;
"#;

/// Applies the migrations not yet applied, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<usize, StoreError> {
    migrate_through(conn, MIGRATIONS.len())
}

/// Applies the first `count` migrations not yet applied.
fn migrate_through(conn: &mut Connection, count: usize) -> Result<usize, StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let mut applied = 0;
    for (name, sql) in &MIGRATIONS[..count] {
        let done: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (name, applied_at) VALUES (?1, strftime('%s','now'))",
            [name],
        )?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}

/// Applies the migrations before the one named `name` (tests of
/// upgrades); answers how many that is.
#[cfg(test)]
pub(super) fn migrate_through_name(conn: &mut Connection, name: &str) -> usize {
    let before = MIGRATIONS
        .iter()
        .position(|(n, _)| *n == name)
        .expect("a migration of that name");
    migrate_through(conn, before).unwrap();
    before
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1 ORDER BY name")
            .unwrap();
        stmt.query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn the_upgrade_to_fewer_log_indexes_keeps_every_attempt_and_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("old.db")).unwrap();
        let before = migrate_through_name(&mut conn, "0012_fewer_log_indexes");
        // Two message attempts, and three webhook attempts of which two
        // share a millisecond: insertion order must still break that tie.
        conn.execute_batch(
            "INSERT INTO attempts (id, message_id, attempt, provider_id, started_at, duration_ms, outcome, error_message)
                 VALUES ('att_2', 'msg_a', 2, 'pr_sim', 20, 5, 'sent', NULL),
                        ('att_1', 'msg_a', 1, 'pr_sim', 10, 5, 'failed', 'it''s down');
             INSERT INTO webhook_attempts (id, endpoint_id, event_id, attempt, trigger, status_code, duration_ms, created_at)
                 VALUES ('wha_z', 'we_1', 'evt_1', 1, 'scheduled', 500, 3, 100),
                        ('wha_a', 'we_1', 'evt_1', 2, 'scheduled', 200, 3, 100),
                        ('wha_m', 'we_1', 'evt_2', 1, 'scheduled', 200, 3, 50);",
        )
        .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), MIGRATIONS.len() - before);

        let attempts: Vec<(String, i64, String, Option<String>)> = conn
            .prepare("SELECT id, attempt, outcome, error_message FROM attempts WHERE message_id = 'msg_a' ORDER BY attempt")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            attempts,
            [
                ("att_1".into(), 1, "failed".into(), Some("it's down".into())),
                ("att_2".into(), 2, "sent".into(), None),
            ]
        );
        // The listing's order: newest first, the later insert first within
        // a millisecond.
        let hooks: Vec<String> = conn
            .prepare("SELECT id FROM webhook_attempts WHERE endpoint_id = 'we_1' ORDER BY created_at DESC, seq DESC")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(hooks, ["wha_a", "wha_z", "wha_m"]);
        // A new attempt goes after the copied ones.
        conn.execute(
            "INSERT INTO webhook_attempts (id, endpoint_id, event_id, attempt, trigger, duration_ms, created_at)
             VALUES ('wha_new', 'we_1', 'evt_3', 1, 'scheduled', 1, 100)",
            [],
        )
        .unwrap();
        let seq: i64 = conn
            .query_row(
                "SELECT seq FROM webhook_attempts WHERE id = 'wha_new'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(seq, 4);
        // The same attempt cannot be logged twice.
        assert!(
            conn.execute(
                "INSERT INTO attempts (id, message_id, attempt, provider_id, started_at, duration_ms, outcome)
                 VALUES ('att_1', 'msg_a', 1, 'pr_sim', 10, 5, 'failed')",
                [],
            )
            .is_err()
        );
        // What is left to write per row: the attempts table is its own
        // key, one B-tree.
        assert!(indexes(&conn, "attempts").is_empty());
        let without_rowid: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'attempts'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(without_rowid.ends_with("WITHOUT ROWID"), "{without_rowid}");
        assert_eq!(
            indexes(&conn, "webhook_attempts"),
            ["webhook_attempts_by_endpoint"]
        );
        assert!(
            !indexes(&conn, "webhook_deliveries")
                .contains(&"webhook_deliveries_by_event".to_owned())
        );
    }
}
