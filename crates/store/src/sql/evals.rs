//! EvalStore: evals, runs (claimed under a lease) and their output items.

use domain::evals::{Eval, EvalRun, EvalStore, OutputItem, RunStatus};
use serde_json::Value;

use super::*;

const EVAL_COLUMNS: &str = "id, owner, name, data_source_config, testing_criteria, metadata, created_at";
const RUN_COLUMNS: &str = "id, eval_id, owner, token_id, name, status, spec, summary, created_at";

fn eval_from_row(row: &AnyRow) -> Result<Eval> {
    Ok(Eval {
        id: row.try_get("id").map_err(db_err)?,
        owner: row.try_get("owner").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        data_source_config: json_column(row, "data_source_config")?,
        testing_criteria: json_column(row, "testing_criteria")?,
        metadata: json_column(row, "metadata")?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

fn run_from_row(row: &AnyRow) -> Result<EvalRun> {
    let status: String = row.try_get("status").map_err(db_err)?;
    Ok(EvalRun {
        id: row.try_get("id").map_err(db_err)?,
        eval_id: row.try_get("eval_id").map_err(db_err)?,
        owner: row.try_get("owner").map_err(db_err)?,
        token_id: row.try_get("token_id").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        status: RunStatus::parse(&status).ok_or_else(|| Error::internal(format!("unknown run status {status:?}")))?,
        spec: json_column(row, "spec")?,
        summary: json_column(row, "summary")?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

#[async_trait]
impl EvalStore for SqlMetaStore {
    async fn create_eval(&self, eval: &Eval, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO evals (id, owner, name, data_source_config, testing_criteria, metadata, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&eval.id)
            .bind(&eval.owner)
            .bind(&eval.name)
            .bind(eval.data_source_config.to_string())
            .bind(eval.testing_criteria.to_string())
            .bind(eval.metadata.to_string())
            .bind(&eval.created_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn get_eval(&self, id: &str) -> Result<Option<Eval>> {
        let sql = format!("SELECT {EVAL_COLUMNS} FROM evals WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(eval_from_row).transpose()
    }

    async fn list_evals(&self, owner: Option<&str>) -> Result<Vec<Eval>> {
        let rows = match owner {
            Some(owner) => sqlx::query(&format!("SELECT {EVAL_COLUMNS} FROM evals WHERE owner = $1 ORDER BY created_at, id")).bind(owner).fetch_all(&self.pool).await,
            None => sqlx::query(&format!("SELECT {EVAL_COLUMNS} FROM evals ORDER BY created_at, id")).fetch_all(&self.pool).await,
        }
        .map_err(db_err)?;
        rows.iter().map(eval_from_row).collect()
    }

    async fn update_eval(&self, eval: &Eval, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE evals SET name = $1, metadata = $2 WHERE id = $3").bind(&eval.name).bind(eval.metadata.to_string()).bind(&eval.id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no eval {}", eval.id)));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn delete_eval(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Children first: the cascade is not left to a pragma.
        sqlx::query("DELETE FROM eval_output_items WHERE run_id IN (SELECT id FROM eval_runs WHERE eval_id = $1)").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        sqlx::query("DELETE FROM eval_runs WHERE eval_id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        let deleted = sqlx::query("DELETE FROM evals WHERE id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no eval {id}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn create_run(&self, run: &EvalRun, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let parent = sqlx::query("SELECT id FROM evals WHERE id = $1").bind(&run.eval_id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if parent.is_none() {
            return Err(Error::NotFound(format!("no eval {}", run.eval_id)));
        }
        sqlx::query("INSERT INTO eval_runs (id, eval_id, owner, token_id, name, status, spec, summary, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&run.id)
            .bind(&run.eval_id)
            .bind(&run.owner)
            .bind(run.token_id)
            .bind(&run.name)
            .bind(run.status.as_str())
            .bind(run.spec.to_string())
            .bind(run.summary.to_string())
            .bind(&run.created_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn get_run(&self, id: &str) -> Result<Option<EvalRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM eval_runs WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_runs(&self, eval_id: &str) -> Result<Vec<EvalRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM eval_runs WHERE eval_id = $1 ORDER BY created_at, id");
        let rows = sqlx::query(&sql).bind(eval_id).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn claim_run(&self, now: &str, lease_until: &str) -> Result<Option<EvalRun>> {
        // In the serialized write path: one claimant at a time, across replicas too.
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {RUN_COLUMNS} FROM eval_runs WHERE status = 'queued' OR (status = 'in_progress' AND (lease_until IS NULL OR lease_until < $1)) ORDER BY created_at, id LIMIT 1");
        let Some(row) = sqlx::query(&sql).bind(now).fetch_optional(&mut *tx.tx).await.map_err(db_err)? else { return Ok(None) };
        let mut run = run_from_row(&row)?;
        sqlx::query("UPDATE eval_runs SET status = 'in_progress', lease_until = $1 WHERE id = $2").bind(lease_until).bind(&run.id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await?;
        run.status = RunStatus::InProgress;
        Ok(Some(run))
    }

    async fn renew_run(&self, id: &str, lease_until: &str, summary: &Value) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE eval_runs SET lease_until = $1, summary = $2 WHERE id = $3 AND status = 'in_progress'").bind(lease_until).bind(summary.to_string()).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await?;
        Ok(updated.rows_affected() == 1)
    }

    async fn put_output_item(&self, item: &OutputItem) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Only for a run still in progress: a canceled or deleted run takes no more items.
        let live = sqlx::query("SELECT id FROM eval_runs WHERE id = $1 AND status = 'in_progress'").bind(&item.run_id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if live.is_none() {
            return Err(Error::conflict(format!("run {} is not in progress", item.run_id)));
        }
        sqlx::query("DELETE FROM eval_output_items WHERE run_id = $1 AND idx = $2").bind(&item.run_id).bind(item.index).execute(&mut *tx.tx).await.map_err(db_err)?;
        sqlx::query("INSERT INTO eval_output_items (run_id, idx, id, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&item.run_id)
            .bind(item.index)
            .bind(&item.id)
            .bind(&item.status)
            .bind(item.body.to_string())
            .bind(&item.created_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.commit().await
    }

    async fn output_items(&self, run_id: &str) -> Result<Vec<OutputItem>> {
        let rows = sqlx::query("SELECT run_id, idx, id, status, body, created_at FROM eval_output_items WHERE run_id = $1 ORDER BY idx").bind(run_id).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter()
            .map(|row| {
                Ok(OutputItem {
                    run_id: row.try_get("run_id").map_err(db_err)?,
                    index: row.try_get("idx").map_err(db_err)?,
                    id: row.try_get("id").map_err(db_err)?,
                    status: row.try_get("status").map_err(db_err)?,
                    body: json_column(row, "body")?,
                    created_at: row.try_get("created_at").map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn finish_run(&self, id: &str, status: RunStatus, summary: &Value, event: AuditEvent) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE eval_runs SET status = $1, summary = $2, lease_until = NULL WHERE id = $3 AND status = 'in_progress'").bind(status.as_str()).bind(summary.to_string()).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn cancel_run(&self, id: &str, event: AuditEvent) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE eval_runs SET status = 'canceled', lease_until = NULL WHERE id = $1 AND status IN ('queued', 'in_progress')").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn delete_run(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM eval_output_items WHERE run_id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        let deleted = sqlx::query("DELETE FROM eval_runs WHERE id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no eval run {id}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }
}
