//! A small migrator: numbered SQL scripts per dialect, each applied once in its own transaction.
//! (sqlx's `migrate!` needs its macros feature and one dialect per directory check; this is simpler.)

use sqlx::AnyPool;
use sqlx::Row as _;

use crate::sql::Dialect;

const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_vetting.sql")),
    (3, include_str!("../migrations/sqlite/0003_deployments.sql")),
    (4, include_str!("../migrations/sqlite/0004_usage.sql")),
    (5, include_str!("../migrations/sqlite/0005_quotas.sql")),
    (6, include_str!("../migrations/sqlite/0006_hardening.sql")),
];
const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (2, include_str!("../migrations/postgres/0002_vetting.sql")),
    (3, include_str!("../migrations/postgres/0003_deployments.sql")),
    (4, include_str!("../migrations/postgres/0004_usage.sql")),
    (5, include_str!("../migrations/postgres/0005_quotas.sql")),
    (6, include_str!("../migrations/postgres/0006_hardening.sql")),
];

/// Applies every migration not yet applied. On PostgreSQL an advisory lock keeps replicas that
/// start together from racing.
pub(crate) async fn run(pool: &AnyPool, dialect: Dialect) -> anyhow::Result<()> {
    let scripts = match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    };
    // IMMEDIATE: two processes opening one SQLite file wait for each other instead of failing.
    let mut tx = match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Dialect::Postgres => pool.begin().await?,
    };
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7240002)").execute(&mut *tx).await?;
    }
    sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)").execute(&mut *tx).await?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetch_one(&mut *tx).await?.try_get("v")?;
    for (version, script) in scripts.iter().filter(|(version, _)| *version > current) {
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement).execute(&mut *tx).await.map_err(|err| anyhow::anyhow!("migration {version}: {err}"))?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)").bind(*version).bind(domain::now_rfc3339()).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
