CREATE TABLE scan_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    hint TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_after TEXT NOT NULL,
    lease_until TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (sha256, hint)
);
CREATE TABLE scan_results (
    sha256 TEXT NOT NULL,
    hint TEXT NOT NULL,
    scanner_version TEXT NOT NULL,
    format TEXT NOT NULL,
    findings TEXT NOT NULL,
    scanned_at TEXT NOT NULL,
    PRIMARY KEY (sha256, hint, scanner_version)
);
CREATE TABLE policies (
    namespace TEXT PRIMARY KEY,
    allow_pickle INTEGER NOT NULL,
    allowed_licenses TEXT,
    suspicious_blocks INTEGER NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE overrides (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    code TEXT NOT NULL,
    subject TEXT NOT NULL,
    justification TEXT NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX overrides_namespace ON overrides (namespace)
