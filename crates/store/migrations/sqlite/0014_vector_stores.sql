-- Vector stores: the stores, the files attached to them (each one an ingestion job, claimed
-- under a lease by any replica), file batches, and the chunks with their vectors (little-endian
-- f32). `version` changes with every change to a store's chunks, so every replica's cached
-- index knows when it is stale.
CREATE TABLE vector_stores (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    token_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    embedding_model TEXT NOT NULL,
    embedding_revision TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_after_days BIGINT,
    last_active_at TEXT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX vector_stores_owner ON vector_stores (owner, created_at);
CREATE TABLE vector_store_files (
    store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
    file_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT,
    attributes TEXT NOT NULL,
    chunking TEXT NOT NULL,
    usage_bytes BIGINT NOT NULL,
    batch_id TEXT,
    created_at TEXT NOT NULL,
    lease_until TEXT,
    PRIMARY KEY (store_id, file_id)
);
CREATE INDEX vector_store_files_status ON vector_store_files (status, created_at);
CREATE TABLE vector_file_batches (
    id TEXT PRIMARY KEY,
    store_id TEXT NOT NULL REFERENCES vector_stores(id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    cancelled BIGINT NOT NULL
);
CREATE TABLE vector_chunks (
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (store_id, file_id, idx)
);
