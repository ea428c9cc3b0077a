-- Uploaded files (OpenAI's Files API): one row per upload, its bytes in the blob store by
-- sha256 (GC keeps a blob a file names). Stored responses (OpenAI's Responses API with `store`): this response's input items and the
-- response object, both JSON, owned by the account that made it; `previous_id` links a
-- conversation.
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    previous_id TEXT,
    model TEXT NOT NULL,
    input TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX responses_owner ON responses (owner, created_at);
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT
);
CREATE INDEX files_owner ON files (owner, created_at);
CREATE INDEX files_sha256 ON files (sha256);
