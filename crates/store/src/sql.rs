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
    apply_operations, Account, AccountKind, BlobAccess, Charge, Deployment, EngineSettings, FileOperation, MetaStore, NewCommit, NewToken, Quota, QuotaSubject, TokenInfo, TokenLookup, Tombstone, UsageGroup, UsageQuery, UsageRecord, UsageRow,
};
use domain::repo::{commit_id, Commit, FileEntry, GitRef, RefKind, Repo, DEFAULT_BRANCH};
use domain::vetting::{scan_hint, Finding, Level, Override, Policy, ScanJob, ScanResult};
use domain::{now_rfc3339, Error, Result};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row as _, Transaction};
use tokio::sync::{Mutex, MutexGuard};

use crate::dialect::Dialect;

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

#[async_trait]
impl MetaStore for SqlMetaStore {
    async fn ensure_admin_token(&self, admin_name: &AccountName, token_hash: &str, rotate: bool) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT id FROM tokens WHERE hash = $1").bind(token_hash).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if exists.is_some() {
            return Ok(false);
        }
        let admin = match tx.account(admin_name).await? {
            Some(account) if account.kind == AccountKind::User && account.is_admin => account,
            Some(_) => return Err(Error::conflict(format!("{admin_name} exists but is not a site administrator"))),
            None => {
                let row = sqlx::query("INSERT INTO accounts (name, kind, is_admin, created_at) VALUES ($1, 'user', 1, $2) RETURNING id").bind(admin_name.as_str()).bind(now_rfc3339()).fetch_one(&mut *tx.tx).await.map_err(db_err)?;
                let id: i64 = row.try_get("id").map_err(db_err)?;
                tx.audit(&AuditEvent::new("system", "user.create", format!("user:{admin_name}"), serde_json::json!({ "admin": true }))).await?;
                Account { id, name: admin_name.clone(), kind: AccountKind::User, is_admin: true, created_at: now_rfc3339() }
            }
        };
        sqlx::query("INSERT INTO tokens (user_id, name, hash, role, created_at) VALUES ($1, 'bootstrap', $2, 'admin', $3)").bind(admin.id).bind(token_hash).bind(now_rfc3339()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&AuditEvent::new("system", "token.create", format!("user:{admin_name}"), serde_json::json!({ "name": "bootstrap", "role": "admin" }))).await?;
        if rotate {
            let now = now_rfc3339();
            let rows =
                sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND name = 'bootstrap' AND hash <> $3 AND revoked_at IS NULL RETURNING id").bind(&now).bind(admin.id).bind(token_hash).fetch_all(&mut *tx.tx).await.map_err(db_err)?;
            for row in rows {
                let id: i64 = row.try_get("id").map_err(db_err)?;
                tx.audit(&AuditEvent::new("system", "token.revoke", format!("token:{id}"), serde_json::json!({ "user": admin_name.as_str(), "reason": "admin token rotated" }))).await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn create_account(&self, name: &AccountName, kind: AccountKind, member_of: Option<&AccountName>, event: AuditEvent) -> Result<Account> {
        let mut tx = self.begin_write().await?;
        if tx.account(name).await?.is_some() {
            return Err(Error::conflict(format!("the name {name} is taken")));
        }
        let created_at = now_rfc3339();
        let row = sqlx::query("INSERT INTO accounts (name, kind, is_admin, created_at) VALUES ($1, $2, 0, $3) RETURNING id").bind(name.as_str()).bind(kind.as_str()).bind(&created_at).fetch_one(&mut *tx.tx).await.map_err(db_err)?;
        let id: i64 = row.try_get("id").map_err(db_err)?;
        tx.audit(&event).await?;
        if let Some(org) = member_of {
            let org = tx.account(org).await?.filter(|a| a.kind == AccountKind::Org).ok_or_else(|| Error::NotFound(format!("no org named {org}")))?;
            sqlx::query("INSERT INTO memberships (org_id, user_id, created_at) VALUES ($1, $2, $3)").bind(org.id).bind(id).bind(&created_at).execute(&mut *tx.tx).await.map_err(db_err)?;
            tx.audit(&AuditEvent::new(&event.actor, "org.add_member", format!("org:{}", org.name), serde_json::json!({ "user": name.as_str() }))).await?;
        }
        tx.commit().await?;
        Ok(Account { id, name: name.clone(), kind, is_admin: false, created_at })
    }

    async fn get_account(&self, name: &AccountName) -> Result<Option<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = $1");
        let row = sqlx::query(&sql).bind(name.as_str()).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| account_from_row(&row)).transpose()
    }

    async fn list_accounts(&self) -> Result<Vec<Account>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn add_member(&self, org: &AccountName, user: &AccountName, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let org_row = tx.account(org).await?.filter(|a| a.kind == AccountKind::Org).ok_or_else(|| Error::NotFound(format!("no org named {org}")))?;
        let user_row = tx.account(user).await?.filter(|a| a.kind == AccountKind::User).ok_or_else(|| Error::NotFound(format!("no user named {user}")))?;
        let existing = sqlx::query("SELECT 1 AS one FROM memberships WHERE org_id = $1 AND user_id = $2").bind(org_row.id).bind(user_row.id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if existing.is_some() {
            return Err(Error::conflict(format!("{user} is already a member of {org}")));
        }
        sqlx::query("INSERT INTO memberships (org_id, user_id, created_at) VALUES ($1, $2, $3)").bind(org_row.id).bind(user_row.id).bind(now_rfc3339()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn orgs_of(&self, user: &AccountName) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT o.name FROM memberships m JOIN accounts o ON o.id = m.org_id JOIN accounts u ON u.id = m.user_id WHERE u.name = $1 ORDER BY o.name").bind(user.as_str()).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(|row| row.try_get::<String, _>("name").map_err(db_err)).collect()
    }

    async fn create_token(&self, token: NewToken<'_>, event: AuditEvent) -> Result<TokenInfo> {
        let NewToken { user, name, role, hash: token_hash, expires_at, parent } = token;
        let mut tx = self.begin_write().await?;
        let account = tx.account(user).await?.filter(|a| a.kind == AccountKind::User).ok_or_else(|| Error::NotFound(format!("no user named {user}")))?;
        let created_at = now_rfc3339();
        let row = sqlx::query("INSERT INTO tokens (user_id, name, hash, role, created_at, expires_at, parent_id) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(account.id)
            .bind(name)
            .bind(token_hash)
            .bind(role.as_str())
            .bind(&created_at)
            .bind(expires_at.clone())
            .bind(parent)
            .fetch_one(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let mut event = event;
        insert_detail(&mut event, "token_id", serde_json::json!(id));
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(TokenInfo { id, user_name: user.to_string(), name: name.to_owned(), role, created_at, expires_at, revoked_at: None })
    }

    async fn get_token(&self, id: i64) -> Result<Option<TokenInfo>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE t.id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| token_from_row(&row)).transpose()
    }

    async fn revoke_token(&self, id: i64, event: AuditEvent) -> Result<TokenInfo> {
        let mut tx = self.begin_write().await?;
        let now = now_rfc3339();
        let updated = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL").bind(&now).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(Error::conflict(format!("token {id} does not exist or is already revoked")));
        }
        // Tokens created through this one (and through those, transitively) go with it.
        let descendants = "WITH RECURSIVE tree(id) AS (SELECT id FROM tokens WHERE parent_id = $2 UNION SELECT t.id FROM tokens t JOIN tree ON t.parent_id = tree.id) \
                           UPDATE tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND id IN (SELECT id FROM tree)";
        let cascaded = sqlx::query(descendants).bind(&now).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?.rows_affected();
        let mut event = event;
        insert_detail(&mut event, "revoked_descendants", serde_json::json!(cascaded));
        tx.audit(&event).await?;
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE t.id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_one(&mut *tx.tx).await.map_err(db_err)?;
        let info = token_from_row(&row)?;
        tx.commit().await?;
        Ok(info)
    }

    async fn lookup_token(&self, token_hash: &str) -> Result<Option<TokenLookup>> {
        let sql = format!("SELECT {TOKEN_COLUMNS}, a.id AS user_id, a.is_admin FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE t.hash = $1");
        let Some(row) = sqlx::query(&sql).bind(token_hash).fetch_optional(&self.pool).await.map_err(db_err)? else {
            return Ok(None);
        };
        let token = token_from_row(&row)?;
        let user_id: i64 = row.try_get("user_id").map_err(db_err)?;
        let is_admin = row.try_get::<i64, _>("is_admin").map_err(db_err)? != 0;
        let orgs = self.orgs_of(&AccountName::parse(&token.user_name)?).await?;
        Ok(Some(TokenLookup { token, user_id, is_admin, orgs }))
    }

    async fn list_tokens(&self, user: Option<&AccountName>) -> Result<Vec<TokenInfo>> {
        let rows = match user {
            Some(user) => {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id WHERE a.name = $1 ORDER BY t.id");
                sqlx::query(&sql).bind(user.as_str()).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens t JOIN accounts a ON a.id = t.user_id ORDER BY t.id");
                sqlx::query(&sql).fetch_all(&self.pool).await
            }
        }
        .map_err(db_err)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn create_repo(&self, kind: RepoKind, name: &RepoName, private: bool, initial: Vec<FileEntry>, author: &str, event: AuditEvent) -> Result<Repo> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT id FROM repos WHERE kind = $1 AND namespace = $2 AND name = $3").bind(kind.as_str()).bind(name.namespace.as_str()).bind(name.name.as_str()).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if existing.is_some() {
            return Err(Error::conflict(format!("You already created this {} repo: {name}", kind.as_str())));
        }
        let created_at = now_rfc3339();
        let row = sqlx::query("INSERT INTO repos (kind, namespace, name, private, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
            .bind(kind.as_str())
            .bind(name.namespace.as_str())
            .bind(name.name.as_str())
            .bind(i64::from(private))
            .bind(&created_at)
            .fetch_one(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let commit = tx.insert_commit(id, None, &initial, "initial commit", "", author).await?;
        sqlx::query("INSERT INTO refs (repo_id, kind, name, commit_id) VALUES ($1, 'branch', $2, $3)").bind(id).bind(DEFAULT_BRANCH).bind(commit.id.as_str()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.enqueue(&scan_keys(&initial)).await?;
        let mut event = event;
        insert_detail(&mut event, "commit", serde_json::json!(commit.id.as_str()));
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(Repo { id, kind, name: name.clone(), private, created_at })
    }

    async fn get_repo(&self, kind: RepoKind, name: &RepoName) -> Result<Option<Repo>> {
        let sql = format!("SELECT {REPO_COLUMNS} FROM repos WHERE kind = $1 AND namespace = $2 AND name = $3");
        let row = sqlx::query(&sql).bind(kind.as_str()).bind(name.namespace.as_str()).bind(name.name.as_str()).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| repo_from_row(&row)).transpose()
    }

    async fn list_repos(&self, kind: RepoKind, namespace: Option<&str>) -> Result<Vec<Repo>> {
        let rows = match namespace {
            Some(namespace) => {
                let sql = format!("SELECT {REPO_COLUMNS} FROM repos WHERE kind = $1 AND namespace = $2 ORDER BY namespace, name");
                sqlx::query(&sql).bind(kind.as_str()).bind(namespace).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {REPO_COLUMNS} FROM repos WHERE kind = $1 ORDER BY namespace, name");
                sqlx::query(&sql).bind(kind.as_str()).fetch_all(&self.pool).await
            }
        }
        .map_err(db_err)?;
        rows.iter().map(repo_from_row).collect()
    }

    async fn delete_repo(&self, repo_id: i64, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for sql in ["DELETE FROM refs WHERE repo_id = $1", "DELETE FROM blob_grants WHERE repo_id = $1", "DELETE FROM commit_files WHERE commit_id IN (SELECT id FROM commits WHERE repo_id = $1)", "DELETE FROM commits WHERE repo_id = $1"] {
            sqlx::query(sql).bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        let deleted = sqlx::query("DELETE FROM repos WHERE id = $1").bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::RepoNotFound("repository not found".into()));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn set_private(&self, repo_id: i64, private: bool, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE repos SET private = $1 WHERE id = $2").bind(i64::from(private)).bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn rename_repo(&self, repo_id: i64, to: &RepoName, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT r2.id FROM repos r1 JOIN repos r2 ON r2.kind = r1.kind WHERE r1.id = $1 AND r2.namespace = $2 AND r2.name = $3")
            .bind(repo_id)
            .bind(to.namespace.as_str())
            .bind(to.name.as_str())
            .fetch_optional(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if taken.is_some() {
            return Err(Error::conflict(format!("a repo named {to} already exists")));
        }
        sqlx::query("UPDATE repos SET namespace = $1, name = $2 WHERE id = $3").bind(to.namespace.as_str()).bind(to.name.as_str()).bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn resolve(&self, repo_id: i64, revision: &str) -> Result<Option<CommitId>> {
        // Branches win over tags, as in git's ref resolution order for short names.
        let row = sqlx::query("SELECT commit_id FROM refs WHERE repo_id = $1 AND name = $2 ORDER BY kind LIMIT 1").bind(repo_id).bind(revision).fetch_optional(&self.pool).await.map_err(db_err)?;
        if let Some(row) = row {
            return Ok(Some(commit_from_text(&row.try_get::<String, _>("commit_id").map_err(db_err)?)?));
        }
        let Some(id) = CommitId::parse(revision) else { return Ok(None) };
        let row = sqlx::query("SELECT id FROM commits WHERE id = $1 AND repo_id = $2").bind(id.as_str()).bind(repo_id).fetch_optional(&self.pool).await.map_err(db_err)?;
        Ok(row.map(|_| id))
    }

    async fn get_commit(&self, repo_id: i64, id: &CommitId) -> Result<Option<Commit>> {
        let sql = format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE id = $1 AND repo_id = $2");
        let row = sqlx::query(&sql).bind(id.as_str()).bind(repo_id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| commit_from_row(&row)).transpose()
    }

    async fn list_commits(&self, repo_id: i64, head: &CommitId) -> Result<Vec<Commit>> {
        let sql = format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE repo_id = $1");
        let rows = sqlx::query(&sql).bind(repo_id).fetch_all(&self.pool).await.map_err(db_err)?;
        let mut by_id: HashMap<String, Commit> = HashMap::new();
        for row in &rows {
            let commit = commit_from_row(row)?;
            by_id.insert(commit.id.to_string(), commit);
        }
        let mut history = Vec::new();
        let mut next = Some(head.clone());
        while let Some(id) = next {
            let Some(commit) = by_id.remove(id.as_str()) else { break };
            next = commit.parent.clone();
            history.push(commit);
        }
        Ok(history)
    }

    async fn list_files(&self, commit: &CommitId) -> Result<Vec<FileEntry>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM commit_files WHERE commit_id = $1 ORDER BY path");
        let rows = sqlx::query(&sql).bind(commit.as_str()).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn get_file(&self, commit: &CommitId, path: &RepoPath) -> Result<Option<FileEntry>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM commit_files WHERE commit_id = $1 AND path = $2");
        let row = sqlx::query(&sql).bind(commit.as_str()).bind(path.as_str()).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| file_from_row(&row)).transpose()
    }

    async fn commit(&self, new: NewCommit, event: AuditEvent) -> Result<Commit> {
        let mut tx = self.begin_write().await?;
        let head = tx.ref_target(new.repo_id, RefKind::Branch, &new.branch).await?.ok_or_else(|| Error::RevisionNotFound(format!("branch {:?} not found: commits go to an existing branch", new.branch)))?;
        if let Some(expected) = &new.expected_parent {
            if *expected != head {
                return Err(Error::conflict(format!("parent commit {expected} is not the head of {} (now {head}); fetch and retry", new.branch)));
            }
        }
        let base = tx.files(&head).await?;
        let files = apply_operations(base, &new.operations)?;
        let commit = tx.insert_commit(new.repo_id, Some(&head), &files, &new.title, &new.message, &new.author).await?;
        let moved = sqlx::query("UPDATE refs SET commit_id = $1 WHERE repo_id = $2 AND kind = 'branch' AND name = $3 AND commit_id = $4")
            .bind(commit.id.as_str())
            .bind(new.repo_id)
            .bind(&new.branch)
            .bind(head.as_str())
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if moved.rows_affected() != 1 {
            return Err(Error::conflict(format!("branch {} moved during the commit; retry", new.branch)));
        }
        let added: Vec<FileEntry> = new.operations.iter().filter_map(|op| if let FileOperation::Add(entry) = op { Some(entry.clone()) } else { None }).collect();
        // A blob that GC claimed (or deleted) since the caller checked it cannot be referenced:
        // GC's claim and this commit are serialized by the write lock, so one of them sees the other.
        for entry in &added {
            if sqlx::query("SELECT 1 AS one FROM gc_tombstones WHERE sha256 = $1").bind(entry.sha256.as_str()).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_some() {
                return Err(Error::conflict(format!("the stored object for {} was garbage-collected meanwhile; upload it again", entry.path)));
            }
        }
        tx.enqueue(&scan_keys(&added)).await?;
        let mut event = event;
        insert_detail(&mut event, "commit", serde_json::json!(commit.id.as_str()));
        insert_detail(&mut event, "parent", serde_json::json!(head.as_str()));
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(commit)
    }

    async fn list_refs(&self, repo_id: i64) -> Result<Vec<GitRef>> {
        let rows = sqlx::query("SELECT kind, name, commit_id FROM refs WHERE repo_id = $1 ORDER BY kind, name").bind(repo_id).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let kind = match row.try_get::<String, _>("kind").map_err(db_err)?.as_str() {
                    "branch" => RefKind::Branch,
                    _ => RefKind::Tag,
                };
                Ok(GitRef { kind, name: row.try_get("name").map_err(db_err)?, commit: commit_from_text(&row.try_get::<String, _>("commit_id").map_err(db_err)?)? })
            })
            .collect()
    }

    async fn create_ref(&self, repo_id: i64, kind: RefKind, name: &str, target: &CommitId, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if tx.ref_target(repo_id, kind, name).await?.is_some() {
            return Err(Error::conflict(format!("{} {name:?} already exists", kind.as_str())));
        }
        sqlx::query("INSERT INTO refs (repo_id, kind, name, commit_id) VALUES ($1, $2, $3, $4)").bind(repo_id).bind(kind.as_str()).bind(name).bind(target.as_str()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn delete_ref(&self, repo_id: i64, kind: RefKind, name: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM refs WHERE repo_id = $1 AND kind = $2 AND name = $3").bind(repo_id).bind(kind.as_str()).bind(name).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::RevisionNotFound(format!("{} {name:?} not found", kind.as_str())));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn referenced_blobs(&self) -> Result<HashSet<String>> {
        let rows = sqlx::query("SELECT DISTINCT sha256 FROM commit_files").fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(|row| row.try_get::<String, _>("sha256").map_err(db_err)).collect()
    }

    async fn condemn_blob(&self, sha256: &str, stale_before: &str) -> Result<Option<Tombstone>> {
        let mut tx = self.begin_write().await?;
        let referenced = sqlx::query("SELECT 1 AS one FROM commit_files WHERE sha256 = $1 LIMIT 1").bind(sha256).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_some();
        if referenced {
            return Ok(None);
        }
        let claim = Tombstone { sha256: sha256.to_owned(), state: "deleting".into(), created_at: now_rfc3339() };
        let written = sqlx::query(
            "INSERT INTO gc_tombstones (sha256, state, created_at) VALUES ($1, 'deleting', $2) \
             ON CONFLICT (sha256) DO UPDATE SET state = 'deleting', created_at = excluded.created_at WHERE gc_tombstones.state = 'deleted' OR gc_tombstones.created_at < $3",
        )
        .bind(sha256)
        .bind(&claim.created_at)
        .bind(stale_before)
        .execute(&mut *tx.tx)
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        Ok((written.rows_affected() == 1).then_some(claim))
    }

    async fn blob_deleted(&self, claim: &Tombstone) -> Result<()> {
        sqlx::query("UPDATE gc_tombstones SET state = 'deleted' WHERE sha256 = $1 AND state = $2 AND created_at = $3").bind(&claim.sha256).bind(&claim.state).bind(&claim.created_at).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn blob_tombstone(&self, sha256: &str) -> Result<Option<Tombstone>> {
        let row = sqlx::query("SELECT state, created_at FROM gc_tombstones WHERE sha256 = $1").bind(sha256).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| Ok(Tombstone { sha256: sha256.to_owned(), state: row.try_get("state").map_err(db_err)?, created_at: row.try_get("created_at").map_err(db_err)? })).transpose()
    }

    async fn clear_tombstone(&self, tombstone: &Tombstone) -> Result<()> {
        sqlx::query("DELETE FROM gc_tombstones WHERE sha256 = $1 AND state = $2 AND created_at = $3").bind(&tombstone.sha256).bind(&tombstone.state).bind(&tombstone.created_at).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn grant_blob(&self, repo_id: i64, sha256: &str) -> Result<()> {
        // Not audited on its own: it records that an upload proved possession, which the commit
        // using it then audits. Idempotent.
        sqlx::query("INSERT INTO blob_grants (repo_id, sha256, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").bind(repo_id).bind(sha256).bind(now_rfc3339()).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn blob_access(&self, repo_id: i64, sha256: &str) -> Result<BlobAccess> {
        let granted = sqlx::query("SELECT 1 AS one FROM blob_grants WHERE repo_id = $1 AND sha256 = $2").bind(repo_id).bind(sha256).fetch_optional(&self.pool).await.map_err(db_err)?.is_some();
        let rows = sqlx::query("SELECT DISTINCT r.namespace, r.private FROM commit_files f JOIN commits c ON c.id = f.commit_id JOIN repos r ON r.id = c.repo_id WHERE f.sha256 = $1").bind(sha256).fetch_all(&self.pool).await.map_err(db_err)?;
        let holders = rows.iter().map(|row| Ok((row.try_get::<String, _>("namespace").map_err(db_err)?, row.try_get::<i64, _>("private").map_err(db_err)? != 0))).collect::<Result<_>>()?;
        let tombstoned = sqlx::query("SELECT 1 AS one FROM gc_tombstones WHERE sha256 = $1").bind(sha256).fetch_optional(&self.pool).await.map_err(db_err)?.is_some();
        Ok(BlobAccess { granted, holders, tombstoned })
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn audit_after(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        let rows = sqlx::query("SELECT seq, time, actor, action, target, details, prev_hash, hash FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2").bind(after_seq).bind(limit).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_head(&self) -> Result<Option<AuditRecord>> {
        let row = sqlx::query("SELECT seq, time, actor, action, target, details, prev_hash, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(audit_from_row).transpose()
    }

    async fn secret(&self, key: &str, candidate: &str) -> Result<String> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if let Some(row) = row {
            return row.try_get("value").map_err(db_err);
        }
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2)").bind(key).bind(candidate).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await?;
        Ok(candidate.to_owned())
    }

    async fn enqueue_scans(&self, keys: &[(String, String)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.enqueue(keys).await?;
        tx.commit().await
    }

    async fn claim_scan_job(&self, lease_secs: i64) -> Result<Option<ScanJob>> {
        let mut tx = self.begin_write().await?;
        let now = now_rfc3339();
        // The write lock (and on PostgreSQL the advisory lock) already serializes claims; SKIP LOCKED
        // keeps a claim from waiting on a row another transaction holds.
        let lock = if self.dialect == Dialect::Postgres { " FOR UPDATE SKIP LOCKED" } else { "" };
        let sql = format!("SELECT id, sha256, hint, attempts FROM scan_jobs WHERE (state = 'queued' AND run_after <= $1) OR (state = 'running' AND lease_until < $1) ORDER BY id LIMIT 1{lock}");
        let Some(row) = sqlx::query(&sql).bind(&now).fetch_optional(&mut *tx.tx).await.map_err(db_err)? else {
            return Ok(None);
        };
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let lease = domain::format_time(chrono::Utc::now() + chrono::Duration::seconds(lease_secs));
        sqlx::query("UPDATE scan_jobs SET state = 'running', attempts = attempts + 1, lease_until = $1 WHERE id = $2").bind(&lease).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        let job = ScanJob { id, sha256: Digest::parse(&row.try_get::<String, _>("sha256").map_err(db_err)?)?, hint: row.try_get("hint").map_err(db_err)?, attempts: row.try_get::<i64, _>("attempts").map_err(db_err)? + 1 };
        tx.commit().await?;
        Ok(Some(job))
    }

    async fn renew_scan_job(&self, job_id: i64, attempts: i64, lease_secs: i64) -> Result<bool> {
        let lease = domain::format_time(chrono::Utc::now() + chrono::Duration::seconds(lease_secs));
        // One statement: no other write depends on it, so it needs neither the write lock nor an audit row.
        let updated = sqlx::query("UPDATE scan_jobs SET lease_until = $1 WHERE id = $2 AND state = 'running' AND attempts = $3").bind(&lease).bind(job_id).bind(attempts).execute(&self.pool).await.map_err(db_err)?;
        Ok(updated.rows_affected() == 1)
    }

    async fn finish_scan_job(&self, job_id: i64, result: &ScanResult) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO scan_results (sha256, hint, scanner_version, format, findings, scanned_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (sha256, hint, scanner_version) DO UPDATE SET format = excluded.format, findings = excluded.findings, scanned_at = excluded.scanned_at",
        )
        .bind(result.sha256.as_str())
        .bind(&result.hint)
        .bind(&result.scanner_version)
        .bind(&result.format)
        .bind(findings_to_json(&result.findings))
        .bind(&result.scanned_at)
        .execute(&mut *tx.tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM scan_jobs WHERE id = $1").bind(job_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await
    }

    async fn retry_scan_job(&self, job_id: i64, error: &str, run_after: Option<String>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let (state, run_after) = match run_after {
            Some(at) => ("queued", at),
            None => ("failed", now_rfc3339()),
        };
        sqlx::query("UPDATE scan_jobs SET state = $1, run_after = $2, lease_until = NULL, last_error = $3 WHERE id = $4").bind(state).bind(run_after).bind(error).bind(job_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await
    }

    async fn scan_results(&self, sha256s: &[String], scanner_version: &str) -> Result<Vec<ScanResult>> {
        let mut out = Vec::new();
        for chunk in sha256s.chunks(500) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!("SELECT sha256, hint, scanner_version, format, findings, scanned_at FROM scan_results WHERE scanner_version = $1 AND sha256 IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(&sql).bind(scanner_version);
            for sha in chunk {
                query = query.bind(sha);
            }
            for row in query.fetch_all(&self.pool).await.map_err(db_err)? {
                out.push(ScanResult {
                    sha256: Digest::parse(&row.try_get::<String, _>("sha256").map_err(db_err)?)?,
                    hint: row.try_get("hint").map_err(db_err)?,
                    scanner_version: row.try_get("scanner_version").map_err(db_err)?,
                    format: row.try_get("format").map_err(db_err)?,
                    findings: findings_from_json(&row.try_get::<String, _>("findings").map_err(db_err)?)?,
                    scanned_at: row.try_get("scanned_at").map_err(db_err)?,
                });
            }
        }
        Ok(out)
    }

    async fn failed_scans(&self, sha256s: &[String]) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for chunk in sha256s.chunks(500) {
            let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 1)).collect();
            let sql = format!("SELECT sha256, hint, COALESCE(last_error, '') AS last_error FROM scan_jobs WHERE state = 'failed' AND sha256 IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(&sql);
            for sha in chunk {
                query = query.bind(sha);
            }
            for row in query.fetch_all(&self.pool).await.map_err(db_err)? {
                out.push((row.try_get("sha256").map_err(db_err)?, row.try_get("hint").map_err(db_err)?, row.try_get("last_error").map_err(db_err)?));
            }
        }
        Ok(out)
    }

    async fn get_policy(&self, namespace: &str) -> Result<Option<Policy>> {
        let row = sqlx::query("SELECT allow_pickle, allowed_licenses, suspicious_blocks FROM policies WHERE namespace = $1").bind(namespace).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| {
            let licenses: Option<String> = row.try_get("allowed_licenses").map_err(db_err)?;
            Ok(Policy {
                allow_pickle: row.try_get::<i64, _>("allow_pickle").map_err(db_err)? != 0,
                allowed_licenses: licenses.map(|l| l.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()),
                suspicious_blocks: row.try_get::<i64, _>("suspicious_blocks").map_err(db_err)? != 0,
            })
        })
        .transpose()
    }

    async fn set_policy(&self, namespace: &str, policy: &Policy, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO policies (namespace, allow_pickle, allowed_licenses, suspicious_blocks, updated_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (namespace) DO UPDATE SET allow_pickle = excluded.allow_pickle, allowed_licenses = excluded.allowed_licenses, suspicious_blocks = excluded.suspicious_blocks, updated_at = excluded.updated_at",
        )
        .bind(namespace)
        .bind(i64::from(policy.allow_pickle))
        .bind(policy.allowed_licenses.as_ref().map(|l| l.join(",")))
        .bind(i64::from(policy.suspicious_blocks))
        .bind(now_rfc3339())
        .execute(&mut *tx.tx)
        .await
        .map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn add_override(&self, item: &Override, event: AuditEvent) -> Result<Override> {
        let mut tx = self.begin_write().await?;
        let created_at = now_rfc3339();
        let row = sqlx::query("INSERT INTO overrides (namespace, sha256, code, subject, justification, author, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id")
            .bind(&item.namespace)
            .bind(item.sha256.as_str())
            .bind(&item.code)
            .bind(&item.subject)
            .bind(&item.justification)
            .bind(&item.author)
            .bind(&created_at)
            .fetch_one(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let mut event = event;
        insert_detail(&mut event, "override_id", serde_json::json!(id));
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(Override { id, created_at, ..item.clone() })
    }

    async fn list_overrides(&self, namespace: &str) -> Result<Vec<Override>> {
        let rows = sqlx::query("SELECT id, namespace, sha256, code, subject, justification, author, created_at FROM overrides WHERE namespace = $1 ORDER BY id").bind(namespace).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter()
            .map(|row| {
                Ok(Override {
                    id: row.try_get("id").map_err(db_err)?,
                    namespace: row.try_get("namespace").map_err(db_err)?,
                    sha256: Digest::parse(&row.try_get::<String, _>("sha256").map_err(db_err)?)?,
                    code: row.try_get("code").map_err(db_err)?,
                    subject: row.try_get("subject").map_err(db_err)?,
                    justification: row.try_get("justification").map_err(db_err)?,
                    author: row.try_get("author").map_err(db_err)?,
                    created_at: row.try_get("created_at").map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn create_deployment(&self, deployment: &Deployment, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT name FROM deployments WHERE name = $1").bind(&deployment.name).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if exists.is_some() {
            return Err(Error::conflict(format!("a deployment named {} exists; undeploy it first", deployment.name)));
        }
        let s = &deployment.settings;
        let settings = serde_json::json!({ "context": s.context, "max_batch": s.max_batch, "threads": s.threads, "price_prompt_micros": s.price_prompt_micros, "price_completion_micros": s.price_completion_micros, "keep_alive_max_secs": s.keep_alive_max_secs, "sampling": s.sampling.to_json() });
        sqlx::query("INSERT INTO deployments (name, repo_kind, namespace, repo_name, commit_id, file_path, file_sha256, settings, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(&deployment.name)
            .bind(deployment.kind.as_str())
            .bind(deployment.repo.namespace.as_str())
            .bind(&deployment.repo.name)
            .bind(deployment.commit.as_str())
            .bind(deployment.file_path.as_str())
            .bind(deployment.file_sha256.as_str())
            .bind(settings.to_string())
            .bind(&deployment.created_by)
            .bind(&deployment.created_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn list_deployments(&self) -> Result<Vec<Deployment>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments ORDER BY name");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(deployment_from_row).collect()
    }

    async fn get_deployment(&self, name: &str) -> Result<Option<Deployment>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE name = $1");
        let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    async fn set_quota(&self, quota: &Quota, event: AuditEvent) -> Result<()> {
        let (scope, subject) = quota.subject.key();
        let limit = |v: Option<u64>| v.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM quotas WHERE scope = $1 AND subject = $2").bind(scope).bind(&subject).execute(&mut *tx.tx).await.map_err(db_err)?;
        sqlx::query("INSERT INTO quotas (scope, subject, requests_per_minute, tokens_per_minute, tokens_per_month, updated_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(scope)
            .bind(&subject)
            .bind(limit(quota.requests_per_minute))
            .bind(limit(quota.tokens_per_minute))
            .bind(limit(quota.tokens_per_month))
            .bind(&quota.updated_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn delete_quota(&self, subject: &QuotaSubject, event: AuditEvent) -> Result<()> {
        let (scope, name) = subject.key();
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM quotas WHERE scope = $1 AND subject = $2").bind(scope).bind(&name).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no quota for {scope} {name}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn list_quotas(&self) -> Result<Vec<Quota>> {
        let rows = sqlx::query(&format!("SELECT {QUOTA_COLUMNS} FROM quotas ORDER BY scope, subject")).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(quota_from_row).collect()
    }

    async fn charge(&self, charges: &[Charge], reads: &[(QuotaSubject, String)]) -> Result<(Vec<(i64, i64)>, Vec<(i64, i64)>)> {
        let mut tx = self.begin_counters().await?;
        let totals = add_charges(&mut tx, charges).await?;
        let read = read_counters(&mut tx, reads).await?;
        tx.commit().await.map_err(db_err)?;
        Ok((totals, read))
    }

    async fn record_usage(&self, records: &[UsageRecord], charges: &[Charge]) -> Result<()> {
        if records.is_empty() && charges.is_empty() {
            return Ok(());
        }
        // Not `begin_write`: usage rows and counters touch no other table and need no audit link,
        // so they do not queue behind (or hold up) the serialized metadata writes.
        let mut tx = self.begin_counters().await?;
        for r in records {
            sqlx::query("INSERT INTO usage_records (at, account, token_id, deployment, api, outcome, prompt_tokens, completion_tokens, latency_ms, cost_micros) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
                .bind(&r.at)
                .bind(&r.account)
                .bind(r.token_id)
                .bind(&r.deployment)
                .bind(&r.api)
                .bind(&r.outcome)
                .bind(i64::try_from(r.prompt_tokens).unwrap_or(i64::MAX))
                .bind(i64::try_from(r.completion_tokens).unwrap_or(i64::MAX))
                .bind(i64::try_from(r.latency_ms).unwrap_or(i64::MAX))
                .bind(r.cost_micros)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        add_charges(&mut tx, charges).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>> {
        let key = match query.group {
            UsageGroup::Day => "substr(at, 1, 10)",
            UsageGroup::Token => "CAST(token_id AS TEXT)",
            UsageGroup::Deployment => "deployment",
            UsageGroup::Account => "account",
        };
        // Every filter is bound; only the fixed grouping expression above is spliced in.
        let mut filters = Vec::new();
        let mut binds: Vec<&str> = Vec::new();
        let conditions = [
            ("at >= ?", query.since.as_deref()),
            ("at < ?", query.until.as_deref()),
            ("account = ?", query.account.as_deref()),
            ("account IN (SELECT u.name FROM accounts u JOIN memberships m ON m.user_id = u.id JOIN accounts o ON o.id = m.org_id WHERE o.name = ?)", query.org.as_deref()),
        ];
        for (condition, value) in conditions {
            if let Some(value) = value {
                binds.push(value);
                filters.push(condition.replace('?', &format!("${}", binds.len())));
            }
        }
        let filter = if filters.is_empty() { String::new() } else { format!("WHERE {}", filters.join(" AND ")) };
        let sql = format!(
            "SELECT {key} AS k, COUNT(*) AS requests, CAST(SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END) AS BIGINT) AS errors, CAST(SUM(prompt_tokens) AS BIGINT) AS prompt_tokens, CAST(SUM(completion_tokens) AS BIGINT) AS completion_tokens, SUM(cost_micros) AS cost FROM usage_records {filter} GROUP BY {key} ORDER BY {key}"
        );
        let mut statement = sqlx::query(&sql);
        for value in binds {
            statement = statement.bind(value);
        }
        let rows = statement.fetch_all(&self.pool).await.map_err(db_err)?;
        let count = |row: &AnyRow, column: &str| -> Result<u64> { Ok(u64::try_from(row.try_get::<i64, _>(column).map_err(db_err)?).unwrap_or(0)) };
        rows.iter()
            .map(|row| {
                Ok(UsageRow {
                    key: row.try_get("k").map_err(db_err)?,
                    requests: count(row, "requests")?,
                    errors: count(row, "errors")?,
                    prompt_tokens: count(row, "prompt_tokens")?,
                    completion_tokens: count(row, "completion_tokens")?,
                    cost_micros: row.try_get::<f64, _>("cost").map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn delete_deployment(&self, name: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM deployments WHERE name = $1").bind(name).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no deployment named {name}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
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
