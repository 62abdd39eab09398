-- The idempotency keys of a batch of accepts are read with one prepared
-- statement, one index lookup per key (messages::existing_keys). Indexed as
-- the pair (workspace_id, idempotency_key), a plan cached while the table
-- was nearly empty could as well take any other index that leads with
-- workspace_id and filter every message of the workspace, key by key: the
-- costs tie on an empty table, and a cached plan is remade only after an
-- ANALYZE, which a cluster without autovacuum never runs. Indexed as one
-- expression, no other index can serve the lookup. Workspace ids never hold
-- a space, so the expression is unique exactly when the pair is.
-- On a large table the build holds writes to messages until it is done (a
-- migration runs in a transaction, so not CONCURRENTLY): upgrade a busy
-- node in a quiet moment, or first run this CREATE with CONCURRENTLY by
-- hand, which the IF NOT EXISTS then keeps.
CREATE UNIQUE INDEX IF NOT EXISTS messages_idempotency_key
    ON messages ((workspace_id || ' ' || idempotency_key))
    WHERE idempotency_key IS NOT NULL;
DROP INDEX IF EXISTS messages_idempotency;
