CREATE TABLE deployments (
    name TEXT PRIMARY KEY,
    repo_kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    repo_name TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    file_path TEXT NOT NULL,
    file_sha256 TEXT NOT NULL,
    settings TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
)
