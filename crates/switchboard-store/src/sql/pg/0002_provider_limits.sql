-- A per-provider throughput limit (token bucket), shared by every node.
ALTER TABLE providers ADD COLUMN rate_per_second DOUBLE PRECISION;
ALTER TABLE providers ADD COLUMN burst DOUBLE PRECISION;
ALTER TABLE providers ADD COLUMN tokens DOUBLE PRECISION;
ALTER TABLE providers ADD COLUMN tokens_at BIGINT;
