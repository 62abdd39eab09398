-- A message accepted as queued marks its acceptance event as implied by
-- the row (SQLite's 0014_implied_accept, where the reasons are given).
ALTER TABLE messages ADD COLUMN implied_accept BIGINT NOT NULL DEFAULT 0;
