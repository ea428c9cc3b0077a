//! ResponseStore: stored responses, one row each (input items and body as JSON text).

use domain::responses::{ResponseStore, StoredResponse};

use super::*;

const COLUMNS: &str = "id, owner, previous_id, model, input, body, created_at";

fn from_row(row: &AnyRow) -> Result<StoredResponse> {
    Ok(StoredResponse {
        id: row.try_get("id").map_err(db_err)?,
        owner: row.try_get("owner").map_err(db_err)?,
        previous_id: row.try_get("previous_id").map_err(db_err)?,
        model: row.try_get("model").map_err(db_err)?,
        input: json_column(row, "input")?,
        body: json_column(row, "body")?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

#[async_trait]
impl ResponseStore for SqlMetaStore {
    async fn put_response(&self, response: &StoredResponse) -> Result<()> {
        // One statement, outside the serialized audited write path: a response is a request's
        // record, written once by the request that made it.
        sqlx::query("INSERT INTO responses (id, owner, previous_id, model, input, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&response.id)
            .bind(&response.owner)
            .bind(&response.previous_id)
            .bind(&response.model)
            .bind(response.input.to_string())
            .bind(response.body.to_string())
            .bind(&response.created_at)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn get_response(&self, id: &str) -> Result<Option<StoredResponse>> {
        let sql = format!("SELECT {COLUMNS} FROM responses WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn delete_response(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM responses WHERE id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no response {id}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }
}
