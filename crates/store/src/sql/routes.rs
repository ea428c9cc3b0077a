//! RouteStore: release routes and their history.

use domain::routes::{Outcome, Rollout, Route, RouteChange, RouteStore};

use super::*;

fn route_from_row(row: &AnyRow) -> Result<Route> {
    let canary: Option<String> = row.try_get("canary").map_err(db_err)?;
    let percent: i64 = row.try_get("canary_percent").map_err(db_err)?;
    let rollout = json_column(row, "rollout")?;
    let shadow: Option<String> = row.try_get("shadow").map_err(db_err)?;
    let shadow_percent: i64 = row.try_get("shadow_percent").map_err(db_err)?;
    Ok(Route {
        name: row.try_get("name").map_err(db_err)?,
        stable: row.try_get("stable").map_err(db_err)?,
        canary: canary.map(|c| (c, percent.clamp(0, 100) as u8)),
        shadow: shadow.map(|s| (s, shadow_percent.clamp(0, 100) as u8)),
        rollout: Rollout::from_json(&rollout),
        updated_at: row.try_get("updated_at").map_err(db_err)?,
    })
}

async fn append(tx: &mut WriteTx<'_>, change: &RouteChange) -> Result<()> {
    sqlx::query("INSERT INTO route_history (route, at, actor, action, from_state, to_state, reason, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&change.route)
        .bind(&change.at)
        .bind(&change.actor)
        .bind(&change.action)
        .bind(change.from.to_string())
        .bind(change.to.to_string())
        .bind(&change.reason)
        .bind(change.evidence.to_string())
        .execute(&mut *tx.tx)
        .await
        .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl RouteStore for SqlMetaStore {
    async fn put_route(&self, route: &Route, expected: Option<&str>, change: &RouteChange, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let current: Option<String> = sqlx::query("SELECT updated_at FROM routes WHERE name = $1").bind(&route.name).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.map(|row| row.try_get("updated_at")).transpose().map_err(db_err)?;
        if current.as_deref() != expected {
            return Err(Error::conflict(format!("route {} changed meanwhile; read it again", route.name)));
        }
        let (canary, percent) = match &route.canary {
            Some((name, percent)) => (Some(name.clone()), i64::from(*percent)),
            None => (None, 0),
        };
        sqlx::query("DELETE FROM routes WHERE name = $1").bind(&route.name).execute(&mut *tx.tx).await.map_err(db_err)?;
        let rollout = route.rollout.as_ref().map_or(serde_json::Value::Null, Rollout::to_json).to_string();
        let (shadow, shadow_percent) = match &route.shadow {
            Some((name, percent)) => (Some(name.clone()), i64::from(*percent)),
            None => (None, 0),
        };
        sqlx::query("INSERT INTO routes (name, stable, canary, canary_percent, rollout, updated_at, shadow, shadow_percent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&route.name)
            .bind(&route.stable)
            .bind(canary)
            .bind(percent)
            .bind(rollout)
            .bind(&route.updated_at)
            .bind(shadow)
            .bind(shadow_percent)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        append(&mut tx, change).await?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn get_route(&self, name: &str) -> Result<Option<Route>> {
        let row = sqlx::query("SELECT name, stable, canary, canary_percent, rollout, updated_at, shadow, shadow_percent FROM routes WHERE name = $1").bind(name).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(route_from_row).transpose()
    }

    async fn list_routes(&self) -> Result<Vec<Route>> {
        let rows = sqlx::query("SELECT name, stable, canary, canary_percent, rollout, updated_at, shadow, shadow_percent FROM routes ORDER BY name").fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(route_from_row).collect()
    }

    async fn delete_route(&self, name: &str, change: &RouteChange, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM routes WHERE name = $1").bind(name).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no route named {name}")));
        }
        // Its pipeline goes with it (the runs stay).
        sqlx::query("DELETE FROM route_pipelines WHERE route = $1").bind(name).execute(&mut *tx.tx).await.map_err(db_err)?;
        append(&mut tx, change).await?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn deployment_outcomes(&self, deployment: &str, since: &str, limit: i64) -> Result<Vec<Outcome>> {
        let rows =
            sqlx::query("SELECT outcome, latency_ms, completion_tokens, ttft_ms FROM usage_records WHERE deployment = $1 AND at >= $2 ORDER BY id DESC LIMIT $3").bind(deployment).bind(since).bind(limit).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let latency: i64 = row.try_get("latency_ms").map_err(db_err)?;
                let tokens: i64 = row.try_get("completion_tokens").map_err(db_err)?;
                let ttft: Option<i64> = row.try_get("ttft_ms").map_err(db_err)?;
                Ok(Outcome { outcome: row.try_get("outcome").map_err(db_err)?, latency_ms: latency.max(0) as u64, completion_tokens: tokens.max(0) as u64, ttft_ms: ttft.map(|t| t.max(0) as u64) })
            })
            .collect()
    }

    async fn route_history(&self, name: &str) -> Result<Vec<RouteChange>> {
        let rows = sqlx::query("SELECT route, at, actor, action, from_state, to_state, reason, evidence FROM route_history WHERE route = $1 ORDER BY id").bind(name).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter()
            .map(|row| {
                Ok(RouteChange {
                    route: row.try_get("route").map_err(db_err)?,
                    at: row.try_get("at").map_err(db_err)?,
                    actor: row.try_get("actor").map_err(db_err)?,
                    action: row.try_get("action").map_err(db_err)?,
                    from: json_column(row, "from_state")?,
                    to: json_column(row, "to_state")?,
                    reason: row.try_get("reason").map_err(db_err)?,
                    evidence: json_column(row, "evidence")?,
                })
            })
            .collect()
    }
}
