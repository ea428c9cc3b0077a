-- Time to first token of each inference request (milliseconds; NULL when none came), so a
-- canary's analysis can hold it to a TTFT SLO across replicas.
ALTER TABLE usage_records ADD COLUMN ttft_ms BIGINT;
