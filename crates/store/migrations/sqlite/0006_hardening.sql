ALTER TABLE tokens ADD COLUMN parent_id INTEGER REFERENCES tokens(id);
CREATE INDEX tokens_parent ON tokens (parent_id);
CREATE TABLE blob_grants (
    repo_id INTEGER NOT NULL REFERENCES repos(id),
    sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (repo_id, sha256)
);
CREATE TABLE gc_tombstones (
    sha256 TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL
);
