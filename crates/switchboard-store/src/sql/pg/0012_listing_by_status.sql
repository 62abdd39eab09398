-- A workspace's messages in id order are read through the status index
-- (messages_by_status, on workspace, status and id), one range per status,
-- merged (SQLite's 0015_listing_by_status). The index on workspace and id
-- was one more B-tree entry for every accept and, since a change of status
-- is never a heap-only update here, for every transition. Dropping an
-- index is instant, whatever the table's size.
DROP INDEX messages_by_workspace;
