//! `MetaStore` over SQLite or PostgreSQL. Both dialects share one SQL text (`$N` placeholders,
//! `RETURNING`, integers for booleans) through sqlx's Any driver; only DDL differs.
//!
//! Writes are serialized: one in-process lock (SQLite has a single writer anyway) plus, on
//! PostgreSQL, a transaction-scoped advisory lock so replicas append to the audit chain in turn.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use domain::audit::{AuditEvent, AuditRecord, GENESIS_HASH};
use domain::auth::Role;
use domain::ids::{AccountName, CommitId, Digest, RepoKind, RepoName, RepoPath};
use domain::meta::{
    apply_operations, Account, AccountKind, AccountStore, AuditStore, BlobAccess, BlobLedger, Charge, Deployment, DeploymentStore, EngineSettings, FileOperation, NewCommit, NewToken, PolicyStore, Quota, QuotaStore, QuotaSubject, RepoStore,
    ScanStore, TokenInfo, TokenLookup, Tombstone, UsageGroup, UsageQuery, UsageRecord, UsageRow,
};
use domain::repo::{commit_id, Commit, FileEntry, GitRef, RefKind, Repo, DEFAULT_BRANCH};
use domain::vetting::{scan_hint, Finding, Level, Override, Policy, ScanJob, ScanResult};
use domain::{now_rfc3339, Error, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row as _, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::dialect::Dialect;

mod accounts;
mod audit;
mod blobs;
mod deployments;
mod evals;
mod files;
mod pipelines;
mod policies;
mod quotas;
mod repos;
mod responses;
mod routes;
mod scans;
mod vectors;
mod webhooks;
mod xet;

/// The SQL metadata store.
pub struct SqlMetaStore {
    pool: AnyPool,
    /// Quota counters and usage rows (see `connect`).
    counters: AnyPool,
    dialect: Dialect,
    // A tokio mutex: it is held across the awaits of a whole write transaction.
    write_lock: Mutex<()>,
}

struct WriteTx<'a> {
    tx: Transaction<'static, Any>,
    _guard: MutexGuard<'a, ()>,
}

const ACCOUNT_COLUMNS: &str = "id, name, kind, is_admin, created_at";
const TOKEN_COLUMNS: &str = "t.id, a.name AS user_name, t.name, t.role, t.created_at, t.expires_at, t.revoked_at";
const REPO_COLUMNS: &str = "id, kind, namespace, name, private, created_at";
const COMMIT_COLUMNS: &str = "id, repo_id, parent, title, message, author, created_at";
const FILE_COLUMNS: &str = "path, size, sha256, git_oid, lfs";
const DEPLOYMENT_COLUMNS: &str = "name, repo_kind, namespace, repo_name, commit_id, file_path, file_sha256, settings, created_by, created_at";

impl SqlMetaStore {
    /// Connects to `url` (`sqlite://PATH` or `postgres://...`) and applies migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            anyhow::bail!("unsupported database url {url:?}: expected sqlite:// or postgres://");
        };
        let url = match dialect {
            Dialect::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(30));
        let options = if dialect == Dialect::Sqlite {
            options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    use sqlx::Executor as _;
                    // The busy timeout first, so that even switching the journal mode waits for a lock.
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    // FULL: a committed change (and its audit row) survives power loss, not only a crash.
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(&url).await.context("connect to the metadata database")?;
        crate::migrate::run(&pool, dialect).await.context("migrate the metadata database")?;
        // Quota counters and usage rows are written on (or right after) every inference request.
        // Their commits need not wait for the disk: on SQLite a second pool commits them with
        // synchronous = NORMAL (in WAL mode: atomic and safe from a process crash, though the
        // last ones may be lost to a power cut); on PostgreSQL each such transaction sets
        // `synchronous_commit = off` (likewise).
        let counters = match dialect {
            Dialect::Sqlite => AnyPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        use sqlx::Executor as _;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .context("connect to the metadata database")?,
            Dialect::Postgres => pool.clone(),
        };
        Ok(SqlMetaStore { pool, counters, dialect, write_lock: Mutex::new(()) })
    }

    /// The pool, for tests that inspect or tamper with rows directly.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction for quota counters and usage rows, committed without waiting for the disk.
    async fn begin_counters(&self) -> Result<sqlx::Transaction<'_, sqlx::Any>> {
        match self.dialect {
            Dialect::Sqlite => self.counters.begin_with("BEGIN IMMEDIATE").await.map_err(db_err),
            Dialect::Postgres => {
                let mut tx = self.counters.begin().await.map_err(db_err)?;
                sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await.map_err(db_err)?;
                Ok(tx)
            }
        }
    }

    async fn begin_write(&self) -> Result<WriteTx<'_>> {
        let guard = self.write_lock.lock().await;
        let tx = match self.dialect {
            // IMMEDIATE takes SQLite's write lock at BEGIN, where the busy timeout applies. A deferred
            // transaction that reads first and then writes gets SQLITE_BUSY at once, without waiting,
            // while another connection still holds the lock (e.g. a dropped transaction whose
            // rollback the pool has not run yet).
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_err)?,
            Dialect::Postgres => {
                let mut tx = self.pool.begin().await.map_err(db_err)?;
                sqlx::query("SELECT pg_advisory_xact_lock(7240001)").execute(&mut *tx).await.map_err(db_err)?;
                tx
            }
        };
        Ok(WriteTx { tx, _guard: guard })
    }
}

impl WriteTx<'_> {
    async fn audit(&mut self, event: &AuditEvent) -> Result<()> {
        let last = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&mut *self.tx).await.map_err(db_err)?;
        let (seq, prev_hash) = match last {
            Some(row) => (row.try_get::<i64, _>("seq").map_err(db_err)? + 1, row.try_get::<String, _>("hash").map_err(db_err)?),
            None => (1, GENESIS_HASH.to_owned()),
        };
        let record = AuditRecord::next(&prev_hash, seq, now_rfc3339(), event);
        sqlx::query("INSERT INTO audit_log (seq, time, actor, action, target, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(record.seq)
            .bind(record.time)
            .bind(record.actor)
            .bind(record.action)
            .bind(record.target)
            .bind(record.details)
            .bind(record.prev_hash)
            .bind(record.hash)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        self.tx.commit().await.map_err(db_err)
    }

    async fn account(&mut self, name: &AccountName) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1");
        let row = sqlx::query(&sql).bind(name.as_str()).fetch_optional(&mut *self.tx).await.map_err(db_err)?;
        row.map(|row| account_from_row(&row)).transpose()
    }

    async fn insert_commit(&mut self, repo_id: i64, parent: Option<&CommitId>, files: &[FileEntry], title: &str, message: &str, author: &str) -> Result<Commit> {
        let created_at = now_rfc3339();
        let id = commit_id(repo_id, parent, files, title, message, author, &created_at);
        sqlx::query("INSERT INTO commits (id, repo_id, parent, title, message, author, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(id.as_str())
            .bind(repo_id)
            .bind(parent.map(|p| p.as_str().to_owned()))
            .bind(title)
            .bind(message)
            .bind(author)
            .bind(&created_at)
            .execute(&mut *self.tx)
            .await
            .map_err(db_err)?;
        // Multi-row inserts keep large commits to a few statements; 200 rows x 6 binds stays under every driver's limit.
        for chunk in files.chunks(200) {
            let mut sql = String::from("INSERT INTO commit_files (commit_id, path, size, sha256, git_oid, lfs) VALUES ");
            for i in 0..chunk.len() {
                let base = i * 6;
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("(${}, ${}, ${}, ${}, ${}, ${})", base + 1, base + 2, base + 3, base + 4, base + 5, base + 6));
            }
            let mut query = sqlx::query(&sql);
            for file in chunk {
                query = query.bind(id.as_str()).bind(file.path.as_str()).bind(to_i64(file.size)?).bind(file.sha256.as_str()).bind(file.git_oid.as_str()).bind(i64::from(file.lfs));
            }
            query.execute(&mut *self.tx).await.map_err(db_err)?;
        }
        Ok(Commit { id, repo_id, parent: parent.cloned(), title: title.to_owned(), message: message.to_owned(), author: author.to_owned(), created_at })
    }

    /// Queues scans for files, skipping pairs already queued.
    async fn enqueue(&mut self, keys: &[(String, String)]) -> Result<()> {
        let now = now_rfc3339();
        for (sha256, hint) in keys {
            sqlx::query("INSERT INTO scan_jobs (sha256, hint, state, attempts, run_after, created_at) VALUES ($1, $2, 'queued', 0, $3, $3) ON CONFLICT (sha256, hint) DO NOTHING")
                .bind(sha256)
                .bind(hint)
                .bind(&now)
                .execute(&mut *self.tx)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    async fn files(&mut self, commit: &CommitId) -> Result<Vec<FileEntry>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM commit_files WHERE commit_id = $1 ORDER BY path");
        let rows = sqlx::query(&sql).bind(commit.as_str()).fetch_all(&mut *self.tx).await.map_err(db_err)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn ref_target(&mut self, repo_id: i64, kind: RefKind, name: &str) -> Result<Option<CommitId>> {
        let row = sqlx::query("SELECT commit_id FROM refs WHERE repo_id = $1 AND kind = $2 AND name = $3").bind(repo_id).bind(kind.as_str()).bind(name).fetch_optional(&mut *self.tx).await.map_err(db_err)?;
        row.map(|row| commit_from_text(&row.try_get::<String, _>("commit_id").map_err(db_err)?)).transpose()
    }
}

fn scan_keys(files: &[FileEntry]) -> Vec<(String, String)> {
    files.iter().map(|f| (f.sha256.to_string(), scan_hint(f.path.as_str()))).collect()
}

fn findings_to_json(findings: &[Finding]) -> String {
    let items: Vec<serde_json::Value> = findings.iter().map(|f| serde_json::json!({ "level": f.level.as_str(), "code": f.code, "offset": f.offset, "member": f.member, "subject": f.subject, "reason": f.reason })).collect();
    serde_json::Value::Array(items).to_string()
}

fn findings_from_json(text: &str) -> Result<Vec<Finding>> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(Error::internal)?;
    let items = value.as_array().ok_or_else(|| Error::internal("stored findings are not a list"))?;
    items
        .iter()
        .map(|item| {
            let text = |key: &str| item[key].as_str().unwrap_or_default().to_owned();
            Ok(Finding {
                level: Level::parse(item["level"].as_str().unwrap_or_default()).ok_or_else(|| Error::internal("stored finding has no level"))?,
                code: text("code"),
                offset: item["offset"].as_u64(),
                member: item["member"].as_str().map(str::to_owned),
                subject: text("subject"),
                reason: text("reason"),
            })
        })
        .collect()
}

fn db_err(err: sqlx::Error) -> Error {
    if let Some(db) = err.as_database_error() {
        if db.is_unique_violation() {
            return Error::conflict(format!("already exists: {}", db.message()));
        }
    }
    Error::internal(err)
}

fn to_i64(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid("size out of range"))
}

fn insert_detail(event: &mut AuditEvent, key: &str, value: serde_json::Value) {
    if let serde_json::Value::Object(map) = &mut event.details {
        map.insert(key.to_owned(), value);
    }
}

fn commit_from_text(text: &str) -> Result<CommitId> {
    CommitId::parse(text).ok_or_else(|| Error::internal(format!("stored commit id {text:?} is malformed")))
}

fn account_from_row(row: &AnyRow) -> Result<Account> {
    let kind = match row.try_get::<String, _>("kind").map_err(db_err)?.as_str() {
        "org" => AccountKind::Org,
        _ => AccountKind::User,
    };
    Ok(Account {
        id: row.try_get("id").map_err(db_err)?,
        name: AccountName::parse(&row.try_get::<String, _>("name").map_err(db_err)?)?,
        kind,
        is_admin: row.try_get::<i64, _>("is_admin").map_err(db_err)? != 0,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

/// A column holding JSON text, parsed.
fn json_column(row: &AnyRow, column: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(column).map_err(db_err)?;
    serde_json::from_str(&text).map_err(Error::internal)
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: row.try_get("seq").map_err(db_err)?,
        time: row.try_get("time").map_err(db_err)?,
        actor: row.try_get("actor").map_err(db_err)?,
        action: row.try_get("action").map_err(db_err)?,
        target: row.try_get("target").map_err(db_err)?,
        details: row.try_get("details").map_err(db_err)?,
        prev_hash: row.try_get("prev_hash").map_err(db_err)?,
        hash: row.try_get("hash").map_err(db_err)?,
    })
}

fn token_from_row(row: &AnyRow) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id").map_err(db_err)?,
        user_name: row.try_get("user_name").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        role: Role::parse(&row.try_get::<String, _>("role").map_err(db_err)?)?,
        created_at: row.try_get("created_at").map_err(db_err)?,
        expires_at: row.try_get("expires_at").map_err(db_err)?,
        revoked_at: row.try_get("revoked_at").map_err(db_err)?,
    })
}

fn repo_from_row(row: &AnyRow) -> Result<Repo> {
    Ok(Repo {
        id: row.try_get("id").map_err(db_err)?,
        kind: RepoKind::parse(&row.try_get::<String, _>("kind").map_err(db_err)?)?,
        name: RepoName::from_parts(&row.try_get::<String, _>("namespace").map_err(db_err)?, &row.try_get::<String, _>("name").map_err(db_err)?)?,
        private: row.try_get::<i64, _>("private").map_err(db_err)? != 0,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

fn commit_from_row(row: &AnyRow) -> Result<Commit> {
    let parent: Option<String> = row.try_get("parent").map_err(db_err)?;
    Ok(Commit {
        id: commit_from_text(&row.try_get::<String, _>("id").map_err(db_err)?)?,
        repo_id: row.try_get("repo_id").map_err(db_err)?,
        parent: parent.as_deref().map(commit_from_text).transpose()?,
        title: row.try_get("title").map_err(db_err)?,
        message: row.try_get("message").map_err(db_err)?,
        author: row.try_get("author").map_err(db_err)?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

fn file_from_row(row: &AnyRow) -> Result<FileEntry> {
    Ok(FileEntry {
        path: RepoPath::parse(&row.try_get::<String, _>("path").map_err(db_err)?)?,
        size: u64::try_from(row.try_get::<i64, _>("size").map_err(db_err)?).map_err(|_| Error::internal("negative size stored"))?,
        sha256: Digest::parse(&row.try_get::<String, _>("sha256").map_err(db_err)?)?,
        git_oid: row.try_get("git_oid").map_err(db_err)?,
        lfs: row.try_get::<i64, _>("lfs").map_err(db_err)? != 0,
    })
}

/// Reads quota counters inside `tx`, zero where there is no row yet.
async fn read_counters(tx: &mut sqlx::Transaction<'_, sqlx::Any>, keys: &[(QuotaSubject, String)]) -> Result<Vec<(i64, i64)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let conditions: Vec<String> = (0..keys.len()).map(|i| format!("(scope = ${} AND subject = ${} AND period = ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
    let sql = format!("SELECT scope, subject, period, requests, tokens FROM quota_counters WHERE {}", conditions.join(" OR "));
    let named: Vec<(&'static str, String, &str)> = keys
        .iter()
        .map(|(subject, period)| {
            let (scope, name) = subject.key();
            (scope, name, period.as_str())
        })
        .collect();
    let mut query = sqlx::query(&sql);
    for (scope, name, period) in &named {
        query = query.bind(*scope).bind(name.as_str()).bind(*period);
    }
    let rows = query.fetch_all(&mut **tx).await.map_err(db_err)?;
    let mut found = std::collections::HashMap::new();
    for row in &rows {
        let key: (String, String, String) = (row.try_get("scope").map_err(db_err)?, row.try_get("subject").map_err(db_err)?, row.try_get("period").map_err(db_err)?);
        found.insert(key, (row.try_get::<i64, _>("requests").map_err(db_err)?, row.try_get::<i64, _>("tokens").map_err(db_err)?));
    }
    Ok(named.iter().map(|(scope, name, period)| found.get(&((*scope).to_owned(), name.clone(), (*period).to_owned())).copied().unwrap_or((0, 0))).collect())
}

/// Adds to quota counters inside `tx`: one upsert each, so whichever replica gets to a row first
/// creates it and the others add to it.
async fn add_charges(tx: &mut sqlx::Transaction<'_, sqlx::Any>, charges: &[Charge]) -> Result<Vec<(i64, i64)>> {
    let mut totals = Vec::with_capacity(charges.len());
    for charge in charges {
        let (scope, name) = charge.subject.key();
        let row = sqlx::query(
            "INSERT INTO quota_counters (scope, subject, period, requests, tokens) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (scope, subject, period) DO UPDATE SET requests = quota_counters.requests + excluded.requests, tokens = quota_counters.tokens + excluded.tokens \
             RETURNING requests, tokens",
        )
        .bind(scope)
        .bind(&name)
        .bind(charge.period.as_str())
        .bind(charge.requests)
        .bind(charge.tokens)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)?;
        totals.push((row.try_get::<i64, _>("requests").map_err(db_err)?, row.try_get::<i64, _>("tokens").map_err(db_err)?));
    }
    Ok(totals)
}

const QUOTA_COLUMNS: &str = "scope, subject, requests_per_minute, tokens_per_minute, tokens_per_month, updated_at";

fn quota_from_row(row: &AnyRow) -> Result<Quota> {
    let limit = |column: &str| -> Result<Option<u64>> { Ok(row.try_get::<Option<i64>, _>(column).map_err(db_err)?.map(|n| u64::try_from(n).unwrap_or(0))) };
    Ok(Quota {
        subject: QuotaSubject::from_key(&row.try_get::<String, _>("scope").map_err(db_err)?, &row.try_get::<String, _>("subject").map_err(db_err)?)?,
        requests_per_minute: limit("requests_per_minute")?,
        tokens_per_minute: limit("tokens_per_minute")?,
        tokens_per_month: limit("tokens_per_month")?,
        updated_at: row.try_get("updated_at").map_err(db_err)?,
    })
}

fn deployment_from_row(row: &AnyRow) -> Result<Deployment> {
    let settings: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("settings").map_err(db_err)?).map_err(Error::internal)?;
    let number = |key: &str| settings[key].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
    Ok(Deployment {
        name: row.try_get("name").map_err(db_err)?,
        kind: RepoKind::parse(&row.try_get::<String, _>("repo_kind").map_err(db_err)?)?,
        repo: RepoName::from_parts(&row.try_get::<String, _>("namespace").map_err(db_err)?, &row.try_get::<String, _>("repo_name").map_err(db_err)?)?,
        commit: commit_from_text(&row.try_get::<String, _>("commit_id").map_err(db_err)?)?,
        file_path: RepoPath::parse(&row.try_get::<String, _>("file_path").map_err(db_err)?)?,
        file_sha256: Digest::parse(&row.try_get::<String, _>("file_sha256").map_err(db_err)?)?,
        settings: EngineSettings {
            context: number("context"),
            max_batch: number("max_batch"),
            threads: number("threads"),
            price_prompt_micros: settings["price_prompt_micros"].as_u64().unwrap_or(0),
            price_completion_micros: settings["price_completion_micros"].as_u64().unwrap_or(0),
            keep_alive_max_secs: settings["keep_alive_max_secs"].as_u64().unwrap_or(domain::meta::DEFAULT_KEEP_ALIVE_MAX_SECS),
            sampling: domain::meta::SamplingDefaults::from_json(&settings["sampling"]),
        },
        created_by: row.try_get("created_by").map_err(db_err)?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

/// A dispatcher's cursor over the audit log (one row in `table`, held under a lease): its place,
/// after taking or renewing the lease, or `None` while another holder's lease runs. A missing
/// row starts at what `start` (a query answering `seq`) says.
async fn claim_cursor(store: &SqlMetaStore, table: &str, start: &str, holder: &str, now: &str, lease_until: &str) -> Result<Option<i64>> {
    let mut tx = store.begin_write().await?;
    let row = sqlx::query(&format!("SELECT seq, holder, lease_until FROM {table} WHERE id = 1")).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
    let seq = match row {
        None => {
            let seq: i64 = sqlx::query(start).fetch_one(&mut *tx.tx).await.map_err(db_err)?.try_get("seq").map_err(db_err)?;
            sqlx::query(&format!("INSERT INTO {table} (id, seq, holder, lease_until) VALUES (1, $1, $2, $3)")).bind(seq).bind(holder).bind(lease_until).execute(&mut *tx.tx).await.map_err(db_err)?;
            seq
        }
        Some(row) => {
            let current: Option<String> = row.try_get("holder").map_err(db_err)?;
            let until: Option<String> = row.try_get("lease_until").map_err(db_err)?;
            if current.as_deref() != Some(holder) && until.as_deref().is_some_and(|until| until >= now) {
                return Ok(None);
            }
            sqlx::query(&format!("UPDATE {table} SET holder = $1, lease_until = $2 WHERE id = 1")).bind(holder).bind(lease_until).execute(&mut *tx.tx).await.map_err(db_err)?;
            row.try_get("seq").map_err(db_err)?
        }
    };
    tx.commit().await?;
    Ok(Some(seq))
}

/// A cursor's place, if it was ever claimed.
async fn cursor_seq(store: &SqlMetaStore, table: &str) -> Result<Option<i64>> {
    let row = sqlx::query(&format!("SELECT seq FROM {table} WHERE id = 1")).fetch_optional(&store.pool).await.map_err(db_err)?;
    row.map(|row| row.try_get("seq").map_err(db_err)).transpose()
}
