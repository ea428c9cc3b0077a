-- Stored responses (OpenAI's Responses API with `store`): this response's input items and the
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
