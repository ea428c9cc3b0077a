-- Re-indexing a vector store when its embedding deployment serves a new revision: the store's
-- files are embedded again by the new revision into vector_chunks_next (one marker row per file
-- done, naming the attachment by its created_at) while vector_chunks keeps answering; the swap
-- moves them over and records the new revision in one transaction. One replica at a time holds
-- a store's re-index under a lease.
ALTER TABLE vector_stores ADD COLUMN reindex_revision TEXT;
ALTER TABLE vector_stores ADD COLUMN reindex_started_at TEXT;
ALTER TABLE vector_stores ADD COLUMN reindex_error TEXT;
ALTER TABLE vector_stores ADD COLUMN reindex_holder TEXT;
ALTER TABLE vector_stores ADD COLUMN reindex_lease_until TEXT;
CREATE TABLE vector_chunks_next (
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    idx BIGINT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (store_id, file_id, idx)
);
CREATE TABLE vector_reindexed_files (
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    attached_at TEXT NOT NULL,
    usage_bytes BIGINT NOT NULL,
    PRIMARY KEY (store_id, file_id)
);
