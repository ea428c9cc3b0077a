CREATE TABLE quotas (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    requests_per_minute BIGINT,
    tokens_per_minute BIGINT,
    tokens_per_month BIGINT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (scope, subject)
);
CREATE TABLE quota_counters (
    scope TEXT NOT NULL,
    subject TEXT NOT NULL,
    period TEXT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (scope, subject, period)
);
