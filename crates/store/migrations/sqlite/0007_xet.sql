-- Xet storage: xorbs (chunk containers, content-addressed in the blob store under xet/xorbs/),
-- the tenants (namespaces) that uploaded each, the chunks clients may ask the global-dedup API
-- about, and files as sequences of xorb chunk ranges, identified by their Xet hash and by the
-- sha256 Mantle computed from their bytes (the identity commits use).
CREATE TABLE xet_xorbs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunks BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE xet_xorb_owners (
    xorb_hash TEXT NOT NULL REFERENCES xet_xorbs(hash) ON DELETE CASCADE,
    namespace TEXT NOT NULL,
    PRIMARY KEY (xorb_hash, namespace)
);
CREATE TABLE xet_chunks (
    chunk_hash TEXT NOT NULL,
    xorb_hash TEXT NOT NULL REFERENCES xet_xorbs(hash) ON DELETE CASCADE,
    PRIMARY KEY (chunk_hash, xorb_hash)
);
CREATE INDEX xet_chunks_xorb ON xet_chunks (xorb_hash);
CREATE TABLE xet_files (
    hash TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    terms TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX xet_files_sha256 ON xet_files (sha256);
CREATE TABLE xet_file_xorbs (
    file_hash TEXT NOT NULL REFERENCES xet_files(hash) ON DELETE CASCADE,
    xorb_hash TEXT NOT NULL REFERENCES xet_xorbs(hash),
    PRIMARY KEY (file_hash, xorb_hash)
);
CREATE INDEX xet_file_xorbs_xorb ON xet_file_xorbs (xorb_hash);
CREATE TABLE xet_tombstones (
    hash TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL
);
