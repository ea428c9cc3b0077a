//! ScanStore: the scan queue and scan results.

use super::*;

#[async_trait]
impl ScanStore for SqlMetaStore {
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

    async fn finish_scan_job(&self, job_id: i64, result: &ScanResult, event: AuditEvent) -> Result<()> {
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
        tx.audit(&event).await?;
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
}
