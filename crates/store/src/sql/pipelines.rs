//! PipelineStore: route bindings, the dispatcher's cursor over the audit log, pipeline runs.

use domain::pipelines::{Binding, PipelineRun, PipelineStatus, PipelineStore};

use super::*;

const RUN_COLUMNS: &str = "id, route, repo_kind, repo, branch, commit_id, pusher, status, stage, state, created_at, updated_at";

fn run_from_row(row: &AnyRow) -> Result<PipelineRun> {
    let status: String = row.try_get("status").map_err(db_err)?;
    Ok(PipelineRun {
        id: row.try_get("id").map_err(db_err)?,
        route: row.try_get("route").map_err(db_err)?,
        repo_kind: row.try_get("repo_kind").map_err(db_err)?,
        repo: row.try_get("repo").map_err(db_err)?,
        branch: row.try_get("branch").map_err(db_err)?,
        commit: row.try_get("commit_id").map_err(db_err)?,
        pusher: row.try_get("pusher").map_err(db_err)?,
        status: PipelineStatus::parse(&status).ok_or_else(|| Error::internal(format!("unknown pipeline status {status:?}")))?,
        stage: row.try_get("stage").map_err(db_err)?,
        state: json_column(row, "state")?,
        created_at: row.try_get("created_at").map_err(db_err)?,
        updated_at: row.try_get("updated_at").map_err(db_err)?,
    })
}

#[async_trait]
impl PipelineStore for SqlMetaStore {
    async fn set_binding(&self, route: &str, binding: Option<&Binding>, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM route_pipelines WHERE route = $1").bind(route).execute(&mut *tx.tx).await.map_err(db_err)?;
        if let Some(binding) = binding {
            let exists = sqlx::query("SELECT name FROM routes WHERE name = $1").bind(route).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
            if exists.is_none() {
                return Err(Error::NotFound(format!("no route named {route}")));
            }
            sqlx::query("INSERT INTO route_pipelines (route, binding) VALUES ($1, $2)").bind(route).bind(binding.to_json().to_string()).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn bindings(&self) -> Result<Vec<Binding>> {
        let rows = sqlx::query("SELECT binding FROM route_pipelines ORDER BY route").fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(|row| Binding::from_json(&json_column(row, "binding")?).ok_or_else(|| Error::internal("a stored pipeline binding is malformed"))).collect()
    }

    async fn pipeline_cursor(&self) -> Result<Option<i64>> {
        cursor_seq(self, "pipeline_cursor").await
    }

    async fn claim_pipeline_cursor(&self, holder: &str, now: &str, lease_until: &str) -> Result<Option<i64>> {
        // The first dispatcher starts just before the first binding ever made (pushes before it
        // concern no pipeline), or at the log's head when there is none yet.
        let start = "SELECT COALESCE((SELECT MIN(seq) - 1 FROM audit_log WHERE action = 'route.pipeline.set'), (SELECT MAX(seq) FROM audit_log), 0) AS seq";
        claim_cursor(self, "pipeline_cursor", start, holder, now, lease_until).await
    }

    async fn enqueue_pipeline_runs(&self, holder: &str, runs: &[PipelineRun], events: Vec<AuditEvent>, seq: i64) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query("UPDATE pipeline_cursor SET seq = $1 WHERE id = 1 AND holder = $2 AND seq < $1").bind(seq).bind(holder).execute(&mut *tx.tx).await.map_err(db_err)?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        for run in runs {
            sqlx::query("INSERT INTO pipeline_runs (id, route, push_seq, repo_kind, repo, branch, commit_id, pusher, status, stage, state, created_at, updated_at, next_at, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $12, NULL)")
                .bind(&run.id)
                .bind(&run.route)
                .bind(run.state["push_seq"].as_i64().unwrap_or(seq))
                .bind(&run.repo_kind)
                .bind(&run.repo)
                .bind(&run.branch)
                .bind(&run.commit)
                .bind(&run.pusher)
                .bind(run.status.as_str())
                .bind(&run.stage)
                .bind(run.state.to_string())
                .bind(&run.created_at)
                .execute(&mut *tx.tx)
                .await
                .map_err(db_err)?;
        }
        for event in &events {
            tx.audit(event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn claim_pipeline_run(&self, now: &str, lease_until: &str) -> Result<Option<PipelineRun>> {
        // A read first: an idle worker never takes the serialized write lock.
        let any = sqlx::query("SELECT id FROM pipeline_runs WHERE status = 'running' AND next_at <= $1 LIMIT 1").bind(now).fetch_optional(&self.pool).await.map_err(db_err)?;
        if any.is_none() {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        // Runs of one route go one at a time, oldest push first.
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM pipeline_runs r WHERE status = 'running' AND next_at <= $1 AND (lease_until IS NULL OR lease_until < $1) \
             AND NOT EXISTS (SELECT 1 FROM pipeline_runs o WHERE o.route = r.route AND o.status = 'running' AND o.push_seq < r.push_seq) ORDER BY next_at, id LIMIT 1"
        );
        let Some(row) = sqlx::query(&sql).bind(now).fetch_optional(&mut *tx.tx).await.map_err(db_err)? else { return Ok(None) };
        let run = run_from_row(&row)?;
        sqlx::query("UPDATE pipeline_runs SET lease_until = $1 WHERE id = $2").bind(lease_until).bind(&run.id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await?;
        Ok(Some(run))
    }

    async fn update_pipeline_run(&self, run: &PipelineRun, next_at: &str, event: Option<AuditEvent>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE pipeline_runs SET status = $1, stage = $2, state = $3, updated_at = $4, next_at = $5, lease_until = NULL WHERE id = $6 AND status = 'running'")
            .bind(run.status.as_str())
            .bind(&run.stage)
            .bind(run.state.to_string())
            .bind(domain::now_rfc3339())
            .bind(next_at)
            .bind(&run.id)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(event) = event {
            tx.audit(&event).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn get_pipeline_run(&self, id: &str) -> Result<Option<PipelineRun>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(run_from_row).transpose()
    }

    async fn list_pipeline_runs(&self, route: Option<&str>, limit: i64) -> Result<Vec<PipelineRun>> {
        let rows = match route {
            Some(route) => {
                let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs WHERE route = $1 ORDER BY push_seq DESC, id LIMIT $2");
                sqlx::query(&sql).bind(route).bind(limit).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {RUN_COLUMNS} FROM pipeline_runs ORDER BY push_seq DESC, id LIMIT $1");
                sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await
            }
        }
        .map_err(db_err)?;
        rows.iter().map(run_from_row).collect()
    }

    async fn cancel_pipeline_run(&self, id: &str, event: AuditEvent) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE pipeline_runs SET status = 'canceled', updated_at = $1, lease_until = NULL WHERE id = $2 AND status = 'running'").bind(domain::now_rfc3339()).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(true)
    }
}
