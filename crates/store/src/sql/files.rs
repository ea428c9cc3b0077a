//! FileStore: uploaded files' records (their bytes are blobs).

use domain::files::{FileStore, StoredFile};

use super::*;

const COLUMNS: &str = "id, owner, filename, purpose, bytes, sha256, created_at, expires_at";

fn from_row(row: &AnyRow) -> Result<StoredFile> {
    Ok(StoredFile {
        id: row.try_get("id").map_err(db_err)?,
        owner: row.try_get("owner").map_err(db_err)?,
        filename: row.try_get("filename").map_err(db_err)?,
        purpose: row.try_get("purpose").map_err(db_err)?,
        bytes: row.try_get::<i64, _>("bytes").map_err(db_err)? as u64,
        sha256: row.try_get("sha256").map_err(db_err)?,
        created_at: row.try_get("created_at").map_err(db_err)?,
        expires_at: row.try_get("expires_at").map_err(db_err)?,
    })
}

async fn bytes_of(conn: &mut sqlx::AnyConnection, owner: &str) -> Result<u64> {
    let row = sqlx::query("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS total FROM files WHERE owner = $1").bind(owner).fetch_one(conn).await.map_err(db_err)?;
    Ok(row.try_get::<i64, _>("total").map_err(db_err)? as u64)
}

#[async_trait]
impl FileStore for SqlMetaStore {
    async fn create_upload(&self, file: &StoredFile, quota: u64, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Serialized with GC's claim on the blob: one of the two sees the other.
        if sqlx::query("SELECT 1 AS one FROM gc_tombstones WHERE sha256 = $1").bind(&file.sha256).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_some() {
            return Err(Error::conflict("the stored bytes were garbage-collected meanwhile; upload the file again"));
        }
        // Serialized with other uploads: concurrent ones cannot together pass the quota.
        let used = bytes_of(&mut tx.tx, &file.owner).await?;
        if used.saturating_add(file.bytes) > quota {
            return Err(Error::invalid(format!("the account's files would hold more than its quota of {quota} bytes")));
        }
        sqlx::query("INSERT INTO files (id, owner, filename, purpose, bytes, sha256, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(&file.id)
            .bind(&file.owner)
            .bind(&file.filename)
            .bind(&file.purpose)
            .bind(file.bytes as i64)
            .bind(&file.sha256)
            .bind(&file.created_at)
            .bind(&file.expires_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn get_upload(&self, id: &str) -> Result<Option<StoredFile>> {
        let sql = format!("SELECT {COLUMNS} FROM files WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(from_row).transpose()
    }

    async fn list_uploads(&self, owner: &str, purpose: Option<&str>) -> Result<Vec<StoredFile>> {
        let rows = match purpose {
            Some(purpose) => sqlx::query(&format!("SELECT {COLUMNS} FROM files WHERE owner = $1 AND purpose = $2 ORDER BY created_at DESC, id DESC")).bind(owner).bind(purpose).fetch_all(&self.pool).await,
            None => sqlx::query(&format!("SELECT {COLUMNS} FROM files WHERE owner = $1 ORDER BY created_at DESC, id DESC")).bind(owner).fetch_all(&self.pool).await,
        }
        .map_err(db_err)?;
        rows.iter().map(from_row).collect()
    }

    async fn upload_bytes(&self, owner: &str) -> Result<u64> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        bytes_of(&mut conn, owner).await
    }

    async fn delete_upload(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM files WHERE id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no file {id}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }
}
