//! QuotaStore: quotas, their counters, and usage records.

use super::*;

#[async_trait]
impl QuotaStore for SqlMetaStore {
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
            sqlx::query("INSERT INTO usage_records (at, account, token_id, deployment, api, outcome, prompt_tokens, completion_tokens, latency_ms, cost_micros, ttft_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
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
                .bind(r.ttft_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
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
}
