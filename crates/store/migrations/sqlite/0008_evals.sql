-- Evaluations (OpenAI's Evals API shape): evals, their runs (jobs claimed under a lease, so a
-- run whose worker died is taken over), and one graded output item per data item of a run.
CREATE TABLE evals (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    data_source_config TEXT NOT NULL,
    testing_criteria TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX evals_owner ON evals (owner, created_at);
CREATE TABLE eval_runs (
    id TEXT PRIMARY KEY,
    eval_id TEXT NOT NULL REFERENCES evals(id) ON DELETE CASCADE,
    owner TEXT NOT NULL,
    token_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    summary TEXT NOT NULL,
    created_at TEXT NOT NULL,
    lease_until TEXT
);
CREATE INDEX eval_runs_eval ON eval_runs (eval_id, created_at);
CREATE INDEX eval_runs_status ON eval_runs (status, created_at);
CREATE TABLE eval_output_items (
    run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);
