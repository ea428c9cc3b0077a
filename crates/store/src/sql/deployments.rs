//! DeploymentStore: deployments.

use super::*;

#[async_trait]
impl DeploymentStore for SqlMetaStore {
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
