//! Schema migrations with sqlx's `Migrator`: numbered SQL scripts per dialect, embedded in the
//! binary, applied in order and recorded (with their checksums) in `_sqlx_migrations`. The whole
//! run is one transaction (each script in a savepoint of it) behind a lock, so replicas or
//! processes that start together wait for each other instead of racing: on PostgreSQL a
//! transaction-scoped advisory lock (no session lock, which a connection pooler would break), on
//! SQLite `BEGIN IMMEDIATE`.
//!
//! Databases made before sqlx ran the migrations recorded them in `schema_migrations`; they are
//! adopted in place: the scripts that runner applied are entered in `_sqlx_migrations` with
//! their checksums, so the migrator goes on from there and changes nothing that exists.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::migrate::{Migrate as _, Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{AnyPool, Row as _};

use crate::dialect::Dialect;

/// `(version, description, script)`.
type Script = (i64, &'static str, &'static str);

const SQLITE: &[Script] = &[
    (1, "init", include_str!("../migrations/sqlite/0001_init.sql")),
    (2, "vetting", include_str!("../migrations/sqlite/0002_vetting.sql")),
    (3, "deployments", include_str!("../migrations/sqlite/0003_deployments.sql")),
    (4, "usage", include_str!("../migrations/sqlite/0004_usage.sql")),
    (5, "quotas", include_str!("../migrations/sqlite/0005_quotas.sql")),
    (6, "hardening", include_str!("../migrations/sqlite/0006_hardening.sql")),
    (7, "xet", include_str!("../migrations/sqlite/0007_xet.sql")),
    (8, "evals", include_str!("../migrations/sqlite/0008_evals.sql")),
    (9, "routes", include_str!("../migrations/sqlite/0009_routes.sql")),
    (10, "webhooks", include_str!("../migrations/sqlite/0010_webhooks.sql")),
    (11, "usage_ttft", include_str!("../migrations/sqlite/0011_usage_ttft.sql")),
    (12, "pipelines", include_str!("../migrations/sqlite/0012_pipelines.sql")),
    (13, "responses", include_str!("../migrations/sqlite/0013_responses.sql")),
    (14, "vector_stores", include_str!("../migrations/sqlite/0014_vector_stores.sql")),
    (15, "vector_reindex", include_str!("../migrations/sqlite/0015_vector_reindex.sql")),
];
const POSTGRES: &[Script] = &[
    (1, "init", include_str!("../migrations/postgres/0001_init.sql")),
    (2, "vetting", include_str!("../migrations/postgres/0002_vetting.sql")),
    (3, "deployments", include_str!("../migrations/postgres/0003_deployments.sql")),
    (4, "usage", include_str!("../migrations/postgres/0004_usage.sql")),
    (5, "quotas", include_str!("../migrations/postgres/0005_quotas.sql")),
    (6, "hardening", include_str!("../migrations/postgres/0006_hardening.sql")),
    (7, "xet", include_str!("../migrations/postgres/0007_xet.sql")),
    (8, "evals", include_str!("../migrations/postgres/0008_evals.sql")),
    (9, "routes", include_str!("../migrations/postgres/0009_routes.sql")),
    (10, "webhooks", include_str!("../migrations/postgres/0010_webhooks.sql")),
    (11, "usage_ttft", include_str!("../migrations/postgres/0011_usage_ttft.sql")),
    (12, "pipelines", include_str!("../migrations/postgres/0012_pipelines.sql")),
    (13, "responses", include_str!("../migrations/postgres/0013_responses.sql")),
    (14, "vector_stores", include_str!("../migrations/postgres/0014_vector_stores.sql")),
    (15, "vector_reindex", include_str!("../migrations/postgres/0015_vector_reindex.sql")),
];

/// The embedded scripts of one dialect, as sqlx's migrator reads a source.
#[derive(Debug)]
struct Embedded(&'static [Script]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move { Ok(self.0.iter().map(|(version, description, sql)| Migration::new(*version, Cow::Borrowed(*description), MigrationType::Simple, Cow::Borrowed(*sql), false)).collect()) })
    }
}

fn scripts(dialect: Dialect) -> &'static [Script] {
    match dialect {
        Dialect::Sqlite => SQLITE,
        Dialect::Postgres => POSTGRES,
    }
}

/// Applies every migration not yet applied.
pub(crate) async fn run(pool: &AnyPool, dialect: Dialect) -> anyhow::Result<()> {
    let mut migrator = Migrator::new(Embedded(scripts(dialect))).await?;
    // The transaction below is the lock (sqlx's own takes a session-level advisory lock).
    migrator.set_locking(false);
    // IMMEDIATE: two processes opening one SQLite file wait for each other instead of failing.
    let mut tx = match dialect {
        Dialect::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Dialect::Postgres => pool.begin().await?,
    };
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7240002)").execute(&mut *tx).await?;
    }
    tx.ensure_migrations_table().await?;
    adopt_old_runner(&mut tx, dialect, &migrator).await?;
    migrator.run_direct(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Enters what the old runner applied (`schema_migrations`) in `_sqlx_migrations`, once.
async fn adopt_old_runner(tx: &mut sqlx::Transaction<'_, sqlx::Any>, dialect: Dialect, migrator: &Migrator) -> anyhow::Result<()> {
    let exists = match dialect {
        Dialect::Sqlite => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
        Dialect::Postgres => "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'schema_migrations'",
    };
    if sqlx::query(exists).fetch_one(&mut **tx).await?.try_get::<i64, _>("n")? == 0 {
        return Ok(());
    }
    let recorded: i64 = sqlx::query("SELECT COUNT(*) AS n FROM _sqlx_migrations").fetch_one(&mut **tx).await?.try_get("n")?;
    if recorded > 0 {
        return Ok(());
    }
    let applied: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations").fetch_one(&mut **tx).await?.try_get("v")?;
    for migration in migrator.iter().filter(|m| m.version <= applied) {
        let success = match dialect {
            Dialect::Sqlite => "1",
            Dialect::Postgres => "TRUE",
        };
        let insert = format!("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, $2, {success}, $3, 0)");
        sqlx::query(&insert).bind(migration.version).bind(migration.description.as_ref()).bind(migration.checksum.to_vec()).execute(&mut **tx).await?;
    }
    tracing::info!(version = applied, "adopted the schema migrations of an earlier Mantle in sqlx's table");
    Ok(())
}
