-- Text compares as bytes, as SQLite's BINARY does: every TEXT column of
-- this schema's tables takes the "C" collation. Ids, keys, phone numbers,
-- statuses and names are compared in every index an accept writes (seven
-- on messages), and under the database's default collation each unequal
-- comparison went through strcoll() on NUL-terminated copies of both
-- strings: on a C.UTF-8 database about a tenth of the writer's backend in
-- accept-pg (bench/HISTORY.md, "Twenty-seventh session"), more under a
-- linguistic or ICU locale. Under "C" it is one memcmp. The order of the
-- ids (ULIDs behind an ASCII prefix) is the same either way; listings
-- ordered by a name now order as on SQLite.
--
-- A change of collation alone does not rewrite a table, but it rebuilds
-- every index on the columns it changes, under an exclusive lock: one
-- ALTER TABLE per table, so each index is rebuilt once. On a large store,
-- run `switchboard migrate` before starting the new version.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.relname AS name,
               string_agg(format('ALTER COLUMN %I TYPE text COLLATE "C"', a.attname), ', '
                          ORDER BY a.attnum) AS changes
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid
        WHERE n.nspname = current_schema()
          AND c.relkind IN ('r', 'p')
          AND a.attnum > 0
          AND NOT a.attisdropped
          AND a.atttypid = 'text'::regtype
          AND a.attcollation <> 'pg_catalog."C"'::regcollation
        GROUP BY c.relname
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE %I %s', t.name, t.changes);
    END LOOP;
END
$$;
