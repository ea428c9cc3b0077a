//! Migrations run by sqlx's `Migrator`: a fresh database gets every script recorded in
//! `_sqlx_migrations`, and a database the earlier runner made (scripts split on `;`, versions in
//! `schema_migrations`) is adopted in place with its rows intact, on SQLite and PostgreSQL.

use sqlx::{Connection as _, Executor as _, Row as _};
use store::SqlMetaStore;

/// The newest migration: the earlier runner applied 1..=6; later ones (7: Xet) came after it.
const LATEST: i64 = 15;

/// The scripts as the earlier runner knew them.
const SQLITE: &[&str] = &[
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_vetting.sql"),
    include_str!("../../migrations/sqlite/0003_deployments.sql"),
    include_str!("../../migrations/sqlite/0004_usage.sql"),
    include_str!("../../migrations/sqlite/0005_quotas.sql"),
    include_str!("../../migrations/sqlite/0006_hardening.sql"),
];
const POSTGRES: &[&str] = &[
    include_str!("../../migrations/postgres/0001_init.sql"),
    include_str!("../../migrations/postgres/0002_vetting.sql"),
    include_str!("../../migrations/postgres/0003_deployments.sql"),
    include_str!("../../migrations/postgres/0004_usage.sql"),
    include_str!("../../migrations/postgres/0005_quotas.sql"),
    include_str!("../../migrations/postgres/0006_hardening.sql"),
];

/// What the runner before sqlx's did: each script split on `;`, versions in `schema_migrations`.
async fn old_runner(url: &str, scripts: &[&str]) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)").await.unwrap();
    for (i, script) in scripts.iter().enumerate() {
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            conn.execute(statement).await.unwrap();
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, '2026-11-01T00:00:00Z')").bind(i as i64 + 1).execute(&mut conn).await.unwrap();
    }
    conn.execute("INSERT INTO settings (key, value) VALUES ('kept', 'yes')").await.unwrap();
}

async fn recorded(url: &str) -> Vec<(i64, bool)> {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    // The Any driver reads no SQLite booleans: as integers on both.
    let rows = sqlx::query("SELECT version, CAST(success AS INTEGER) AS ok FROM _sqlx_migrations ORDER BY version").fetch_all(&mut conn).await.unwrap();
    rows.iter().map(|r| (r.get::<i64, _>("version"), r.get::<i32, _>("ok") == 1)).collect()
}

async fn setting(url: &str) -> Option<String> {
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    sqlx::query("SELECT value FROM settings WHERE key = 'kept'").fetch_optional(&mut conn).await.unwrap().map(|r| r.get::<String, _>("value"))
}

async fn check(fresh: &str, old: &str, scripts: &[&str]) {
    let all: Vec<(i64, bool)> = (1..=LATEST).map(|v| (v, true)).collect();
    // A fresh database: every script applied and recorded; opening again changes nothing.
    SqlMetaStore::connect(fresh).await.unwrap();
    assert_eq!(recorded(fresh).await, all);
    SqlMetaStore::connect(fresh).await.unwrap();
    assert_eq!(recorded(fresh).await, all);

    // A database of the earlier runner: adopted, the migrations since applied, its rows intact, usable.
    old_runner(old, scripts).await;
    let store = SqlMetaStore::connect(old).await.unwrap();
    assert_eq!(recorded(old).await, all);
    assert_eq!(setting(old).await.as_deref(), Some("yes"));
    let admin = domain::ids::AccountName::parse("admin").unwrap();
    assert!(domain::meta::AccountStore::ensure_admin_token(&store, &admin, &"a".repeat(64), true).await.unwrap());
    drop(store);
    SqlMetaStore::connect(old).await.unwrap();
    assert_eq!(recorded(old).await, all);
}

#[tokio::test]
async fn r12_sqlite_migrates_fresh_and_adopts_the_earlier_runner() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    check(&url("fresh.db"), &url("old.db"), SQLITE).await;
}

#[tokio::test]
async fn r12_postgres_migrates_fresh_and_adopts_the_earlier_runner() {
    let (Some(fresh), Some(old)) = (crate::meta::postgres_url().await, crate::meta::postgres_url().await) else { return };
    check(&fresh, &old, POSTGRES).await;
}
