-- The idempotency keys of a batch of accepts are read with one prepared
-- statement, one index lookup per key (messages::existing_keys). Indexed as
-- the pair (workspace_id, idempotency_key), a plan cached while the table
-- was nearly empty could as well take any other index that leads with
-- workspace_id and filter every message of the workspace, key by key (the
-- costs tie on an empty table, and this cluster's plans are never remade).
-- Indexed as one expression, no other index can serve the lookup. Workspace
-- ids never hold a space, so the expression is unique exactly when the pair is.
CREATE UNIQUE INDEX messages_idempotency_key ON messages ((workspace_id || ' ' || idempotency_key))
    WHERE idempotency_key IS NOT NULL;
DROP INDEX messages_idempotency;
