-- Webhooks: endpoints (with their signing secrets: they must be usable to sign, so they are
-- stored as they are, like the upload signing key), the dispatcher's cursor over the audit log
-- (one row, held under a lease), and deliveries with their attempts.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    secrets TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    -- The audit sequence of its creation: it gets the events after it.
    created_seq BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner, created_at);
CREATE TABLE webhook_cursor (
    id INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL,
    holder TEXT,
    lease_until TEXT
);
CREATE TABLE webhook_deliveries (
    id BIGSERIAL PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at TEXT NOT NULL,
    last_status INTEGER,
    last_error TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_at);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);
