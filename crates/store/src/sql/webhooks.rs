//! WebhookStore: endpoints, the dispatcher's cursor over the audit log, deliveries.

use domain::webhooks::{Delivery, Endpoint, NewDelivery, WebhookStore};
use serde_json::{json, Value};

use super::*;

const ENDPOINT_COLUMNS: &str = "id, owner, name, url, event_types, secrets, created_at, updated_at, created_seq";
const DELIVERY_COLUMNS: &str = "id, endpoint_id, event_id, event_type, payload, status, attempts, next_at, last_status, last_error, created_at";

fn endpoint_from_row(row: &AnyRow) -> Result<Endpoint> {
    let types: String = row.try_get("event_types").map_err(db_err)?;
    let secrets: String = row.try_get("secrets").map_err(db_err)?;
    let secrets: Vec<Value> = serde_json::from_str(&secrets).map_err(Error::internal)?;
    Ok(Endpoint {
        id: row.try_get("id").map_err(db_err)?,
        owner: row.try_get("owner").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        url: row.try_get("url").map_err(db_err)?,
        event_types: serde_json::from_str(&types).map_err(Error::internal)?,
        secrets: secrets.iter().filter_map(|s| Some((s["secret"].as_str()?.to_owned(), s["expires_at"].as_str().map(str::to_owned)))).collect(),
        created_at: row.try_get("created_at").map_err(db_err)?,
        updated_at: row.try_get("updated_at").map_err(db_err)?,
        created_seq: row.try_get("created_seq").map_err(db_err)?,
    })
}

fn secrets_json(endpoint: &Endpoint) -> String {
    Value::Array(endpoint.secrets.iter().map(|(secret, expires)| json!({ "secret": secret, "expires_at": expires })).collect()).to_string()
}

fn delivery_from_row(row: &AnyRow) -> Result<Delivery> {
    let attempts: i64 = row.try_get("attempts").map_err(db_err)?;
    let status: Option<i64> = row.try_get("last_status").map_err(db_err)?;
    Ok(Delivery {
        id: row.try_get("id").map_err(db_err)?,
        endpoint_id: row.try_get("endpoint_id").map_err(db_err)?,
        event_id: row.try_get("event_id").map_err(db_err)?,
        event_type: row.try_get("event_type").map_err(db_err)?,
        payload: row.try_get("payload").map_err(db_err)?,
        status: row.try_get("status").map_err(db_err)?,
        attempts: attempts.max(0) as u32,
        next_at: row.try_get("next_at").map_err(db_err)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error").map_err(db_err)?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

#[async_trait]
impl WebhookStore for SqlMetaStore {
    async fn create_endpoint(&self, endpoint: &Endpoint, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.audit(&event).await?;
        let head = sqlx::query("SELECT MAX(seq) AS seq FROM audit_log").fetch_one(&mut *tx.tx).await.map_err(db_err)?;
        let created_seq: i64 = head.try_get("seq").map_err(db_err)?;
        sqlx::query("INSERT INTO webhook_endpoints (id, owner, name, url, event_types, secrets, created_at, updated_at, created_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
            .bind(&endpoint.id)
            .bind(&endpoint.owner)
            .bind(&endpoint.name)
            .bind(&endpoint.url)
            .bind(json!(endpoint.event_types).to_string())
            .bind(secrets_json(endpoint))
            .bind(&endpoint.created_at)
            .bind(&endpoint.updated_at)
            .bind(created_seq)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.commit().await
    }

    async fn get_endpoint(&self, id: &str) -> Result<Option<Endpoint>> {
        let row = sqlx::query(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1")).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(endpoint_from_row).transpose()
    }

    async fn list_endpoints(&self, owner: Option<&str>) -> Result<Vec<Endpoint>> {
        let rows = match owner {
            Some(owner) => sqlx::query(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE owner = $1 ORDER BY created_at, id")).bind(owner).fetch_all(&self.pool).await,
            None => sqlx::query(&format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id")).fetch_all(&self.pool).await,
        }
        .map_err(db_err)?;
        rows.iter().map(endpoint_from_row).collect()
    }

    async fn update_endpoint(&self, endpoint: &Endpoint, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE webhook_endpoints SET name = $1, url = $2, event_types = $3, secrets = $4, updated_at = $5 WHERE id = $6")
            .bind(&endpoint.name)
            .bind(&endpoint.url)
            .bind(json!(endpoint.event_types).to_string())
            .bind(secrets_json(endpoint))
            .bind(&endpoint.updated_at)
            .bind(&endpoint.id)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no webhook endpoint {}", endpoint.id)));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn delete_endpoint(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no webhook endpoint {id}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn webhook_cursor(&self) -> Result<Option<i64>> {
        cursor_seq(self, "webhook_cursor").await
    }

    async fn claim_webhook_cursor(&self, holder: &str, now: &str, lease_until: &str) -> Result<Option<i64>> {
        // The first dispatcher starts at the log's current head: events from before webhooks
        // existed are not sent.
        claim_cursor(self, "webhook_cursor", "SELECT COALESCE(MAX(seq), 0) AS seq FROM audit_log", holder, now, lease_until).await
    }

    async fn enqueue_deliveries(&self, holder: &str, deliveries: &[NewDelivery], seq: i64, now: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let moved = sqlx::query("UPDATE webhook_cursor SET seq = $1 WHERE id = 1 AND holder = $2 AND seq < $1").bind(seq).bind(holder).execute(&mut *tx.tx).await.map_err(db_err)?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        for delivery in deliveries {
            sqlx::query("INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload, status, attempts, next_at, last_status, last_error, created_at) VALUES ($1, $2, $3, $4, 'pending', 0, $5, NULL, '', $5)")
                .bind(&delivery.endpoint_id)
                .bind(&delivery.event_id)
                .bind(&delivery.event_type)
                .bind(&delivery.payload)
                .bind(now)
                .execute(&mut *tx.tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn due_deliveries(&self, now: &str, lease_until: &str, limit: i64) -> Result<Vec<Delivery>> {
        // A read first: an idle dispatcher never takes the serialized write lock.
        let any = sqlx::query("SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_at <= $1 LIMIT 1").bind(now).fetch_optional(&self.pool).await.map_err(db_err)?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE status = 'pending' AND next_at <= $1 ORDER BY next_at, id LIMIT $2")).bind(now).bind(limit).fetch_all(&mut *tx.tx).await.map_err(db_err)?;
        let due: Vec<Delivery> = rows.iter().map(delivery_from_row).collect::<Result<_>>()?;
        for delivery in &due {
            sqlx::query("UPDATE webhook_deliveries SET next_at = $1 WHERE id = $2").bind(lease_until).bind(delivery.id).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        tx.commit().await?;
        Ok(due)
    }

    async fn record_attempt(&self, id: i64, delivered: bool, status: Option<u16>, error: &str, retry_at: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let state = match (delivered, retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        sqlx::query("UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, last_status = $2, last_error = $3, next_at = COALESCE($4, next_at) WHERE id = $5")
            .bind(state)
            .bind(status.map(i64::from))
            .bind(error)
            .bind(retry_at)
            .bind(id)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.commit().await
    }

    async fn deliveries(&self, endpoint_id: &str, limit: i64) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(&format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2")).bind(endpoint_id).bind(limit).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(delivery_from_row).collect()
    }
}
