-- An accept batch's messages are bound as one array of this type, whose
-- fields are the columns an accept writes, in the order of the insert
-- (messages::MESSAGE_INSERT), and unnested back into rows. Bound as 28
-- arrays, one per column, the insert read them through 28 function scans,
-- each stored whole and then read back row by row: about a sixth of the
-- backend's time per accepted row (bench/HISTORY.md, "Thirty-seventh
-- session"). Text fields compare as bytes, as the columns do
-- (0011_binary_collation), so the opt-out lookup joins them with the
-- contacts' columns. A change to the insert's columns changes this type
-- with it (a test compares the two). Making a type is instant.
CREATE TYPE message_row AS (
    id               TEXT COLLATE "C",
    workspace_id     TEXT COLLATE "C",
    to_phone         TEXT COLLATE "C",
    from_addr        TEXT COLLATE "C",
    channel          TEXT COLLATE "C",
    body             TEXT COLLATE "C",
    media_urls       TEXT COLLATE "C",
    encoding         TEXT COLLATE "C",
    segments         BIGINT,
    client_ref       TEXT COLLATE "C",
    metadata         TEXT COLLATE "C",
    category         TEXT COLLATE "C",
    priority         BIGINT,
    timezone         TEXT COLLATE "C",
    status           TEXT COLLATE "C",
    initial_status   TEXT COLLATE "C",
    provider_id      TEXT COLLATE "C",
    attempts         BIGINT,
    next_attempt_at  BIGINT,
    send_at          BIGINT,
    expires_at       BIGINT,
    idempotency_key  TEXT COLLATE "C",
    request_hash     TEXT COLLATE "C",
    created_at       BIGINT,
    updated_at       BIGINT,
    consent_exempt   BIGINT,
    channel_template TEXT COLLATE "C",
    implied_accept   BIGINT
);
