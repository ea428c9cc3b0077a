//! PolicyStore: vetting policies and overrides.

use super::*;

#[async_trait]
impl PolicyStore for SqlMetaStore {
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
}
