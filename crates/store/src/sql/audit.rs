//! AuditStore: the audit chain and the shared secrets kept beside it.

use super::*;

#[async_trait]
impl AuditStore for SqlMetaStore {
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
}
