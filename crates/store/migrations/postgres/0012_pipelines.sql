-- Pipelines and shadow traffic. A route's binding to a repo's branch (the pipeline acts as the admin token that
-- bound it), the dispatcher's cursor over the audit log (pushes become runs), and the runs,
-- stepped by any replica under a lease.
CREATE TABLE route_pipelines (
    route TEXT PRIMARY KEY,
    binding TEXT NOT NULL
);
CREATE TABLE pipeline_cursor (
    id INTEGER PRIMARY KEY,
    seq BIGINT NOT NULL,
    holder TEXT,
    lease_until TEXT
);
CREATE TABLE pipeline_runs (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    -- The audit sequence of the push: runs of one route go one at a time, in push order.
    push_seq BIGINT NOT NULL,
    repo_kind TEXT NOT NULL,
    repo TEXT NOT NULL,
    branch TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    pusher TEXT NOT NULL,
    status TEXT NOT NULL,
    stage TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    next_at TEXT NOT NULL,
    lease_until TEXT
);
CREATE INDEX pipeline_runs_due ON pipeline_runs (status, next_at);
CREATE INDEX pipeline_runs_route ON pipeline_runs (route, push_seq);
-- Shadow traffic: a deployment that gets a copy of a share of a route's requests.
ALTER TABLE routes ADD COLUMN shadow TEXT;
ALTER TABLE routes ADD COLUMN shadow_percent INTEGER NOT NULL DEFAULT 0;
