-- Fewer indexes written per message (SQLite's 0012_fewer_log_indexes):
-- no statement reads webhook_deliveries_by_event, and attempts are read
-- only by their message, so the primary key leads with it and the separate
-- index on the message goes. (webhook_attempts keeps its id key here: its
-- rows already have their seq, and the id index is one of three.)
DROP INDEX IF EXISTS webhook_deliveries_by_event;
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE attempts ADD PRIMARY KEY (message_id, attempt, id);
DROP INDEX IF EXISTS attempts_by_message;
