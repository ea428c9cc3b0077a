//! VectorStoreStore: vector stores, their files (ingestion jobs under a lease), file batches and
//! chunks (vectors as little-endian f32 bytes).

use domain::vectors::{Chunk, FileBatch, IndexedChunk, Reindex, StoreFile, VectorStore, VectorStoreStore, CANCELLED, COMPLETED, FAILED, IN_PROGRESS};
use serde_json::Value;

use super::*;

const STORE_COLUMNS: &str = "id, owner, token_id, name, embedding_model, embedding_revision, metadata, created_at, expires_after_days, last_active_at, version, reindex_revision, reindex_started_at, reindex_error, (SELECT COUNT(*) FROM vector_reindexed_files r WHERE r.store_id = vector_stores.id) AS reindexed";
const FILE_COLUMNS: &str = "store_id, file_id, filename, sha256, status, last_error, attributes, chunking, usage_bytes, batch_id, created_at";

fn store_from_row(row: &AnyRow) -> Result<VectorStore> {
    Ok(VectorStore {
        id: row.try_get("id").map_err(db_err)?,
        owner: row.try_get("owner").map_err(db_err)?,
        token_id: row.try_get("token_id").map_err(db_err)?,
        name: row.try_get("name").map_err(db_err)?,
        embedding_model: row.try_get("embedding_model").map_err(db_err)?,
        embedding_revision: row.try_get("embedding_revision").map_err(db_err)?,
        metadata: json_column(row, "metadata")?,
        created_at: row.try_get("created_at").map_err(db_err)?,
        expires_after_days: row.try_get::<Option<i64>, _>("expires_after_days").map_err(db_err)?.map(|d| d as u32),
        last_active_at: row.try_get("last_active_at").map_err(db_err)?,
        version: row.try_get("version").map_err(db_err)?,
        reindex: match row.try_get::<Option<String>, _>("reindex_revision").map_err(db_err)? {
            Some(revision) => Some(Reindex {
                revision,
                started_at: row.try_get::<Option<String>, _>("reindex_started_at").map_err(db_err)?.unwrap_or_default(),
                files_done: row.try_get::<i64, _>("reindexed").map_err(db_err)? as u64,
                error: row.try_get("reindex_error").map_err(db_err)?,
            }),
            None => None,
        },
    })
}

fn file_from_row(row: &AnyRow) -> Result<StoreFile> {
    let last_error: Option<String> = row.try_get("last_error").map_err(db_err)?;
    Ok(StoreFile {
        store_id: row.try_get("store_id").map_err(db_err)?,
        file_id: row.try_get("file_id").map_err(db_err)?,
        filename: row.try_get("filename").map_err(db_err)?,
        sha256: row.try_get("sha256").map_err(db_err)?,
        status: row.try_get("status").map_err(db_err)?,
        last_error: last_error.map(|e| serde_json::from_str(&e)).transpose().map_err(Error::internal)?,
        attributes: json_column(row, "attributes")?,
        chunking: json_column(row, "chunking")?,
        usage_bytes: row.try_get::<i64, _>("usage_bytes").map_err(db_err)? as u64,
        batch_id: row.try_get("batch_id").map_err(db_err)?,
        created_at: row.try_get("created_at").map_err(db_err)?,
    })
}

fn vector_bytes(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn vector_of(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Inserts or re-queues attached files.
async fn upsert_files(tx: &mut sqlx::AnyConnection, files: &[StoreFile]) -> Result<()> {
    for file in files {
        forget_file_chunks(tx, &file.store_id, &file.file_id).await?;
        sqlx::query("DELETE FROM vector_store_files WHERE store_id = $1 AND file_id = $2").bind(&file.store_id).bind(&file.file_id).execute(&mut *tx).await.map_err(db_err)?;
        sqlx::query("INSERT INTO vector_store_files (store_id, file_id, filename, sha256, status, last_error, attributes, chunking, usage_bytes, batch_id, created_at, lease_until) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, 0, $8, $9, NULL)")
            .bind(&file.store_id)
            .bind(&file.file_id)
            .bind(&file.filename)
            .bind(&file.sha256)
            .bind(IN_PROGRESS)
            .bind(file.attributes.to_string())
            .bind(file.chunking.to_string())
            .bind(&file.batch_id)
            .bind(&file.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}

/// Drops a file's chunks, and what a re-index made of them.
async fn forget_file_chunks(tx: &mut sqlx::AnyConnection, store_id: &str, file_id: &str) -> Result<()> {
    for table in ["vector_chunks", "vector_chunks_next", "vector_reindexed_files"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE store_id = $1 AND file_id = $2")).bind(store_id).bind(file_id).execute(&mut *tx).await.map_err(db_err)?;
    }
    Ok(())
}

/// Inserts chunks of one file into `table` (`vector_chunks` or `vector_chunks_next`); the bytes
/// they hold.
async fn insert_chunks(tx: &mut sqlx::AnyConnection, table: &str, store_id: &str, chunks: &[Chunk]) -> Result<i64> {
    let sql = format!("INSERT INTO {table} (store_id, file_id, idx, text, vector) VALUES ($1, $2, $3, $4, $5)");
    for chunk in chunks {
        sqlx::query(&sql).bind(store_id).bind(&chunk.file_id).bind(i64::from(chunk.index)).bind(&chunk.text).bind(vector_bytes(&chunk.vector)).execute(&mut *tx).await.map_err(db_err)?;
    }
    Ok(chunks.iter().map(|c| c.text.len() + c.vector.len() * 4).sum::<usize>() as i64)
}

/// Drops a store's re-index: its state and what it made.
async fn clear_reindex(tx: &mut sqlx::AnyConnection, store_id: &str) -> Result<()> {
    for table in ["vector_chunks_next", "vector_reindexed_files"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE store_id = $1")).bind(store_id).execute(&mut *tx).await.map_err(db_err)?;
    }
    sqlx::query("UPDATE vector_stores SET reindex_revision = NULL, reindex_started_at = NULL, reindex_error = NULL, reindex_holder = NULL, reindex_lease_until = NULL WHERE id = $1").bind(store_id).execute(&mut *tx).await.map_err(db_err)?;
    Ok(())
}

/// Completed files of a store without a re-index marker for their attachment.
const REINDEX_PENDING: &str = "SELECT store_id, file_id, filename, sha256, status, last_error, attributes, chunking, usage_bytes, batch_id, created_at FROM vector_store_files f WHERE f.store_id = $1 AND f.status = $2 AND NOT EXISTS (SELECT 1 FROM vector_reindexed_files r WHERE r.store_id = f.store_id AND r.file_id = f.file_id AND r.attached_at = f.created_at) ORDER BY f.created_at, f.file_id";

async fn bump(tx: &mut sqlx::AnyConnection, store_id: &str) -> Result<()> {
    sqlx::query("UPDATE vector_stores SET version = version + 1 WHERE id = $1").bind(store_id).execute(tx).await.map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl VectorStoreStore for SqlMetaStore {
    async fn create_vector_store(&self, store: &VectorStore, files: &[StoreFile], event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO vector_stores (id, owner, token_id, name, embedding_model, embedding_revision, metadata, created_at, expires_after_days, last_active_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0)")
            .bind(&store.id)
            .bind(&store.owner)
            .bind(store.token_id)
            .bind(&store.name)
            .bind(&store.embedding_model)
            .bind(&store.embedding_revision)
            .bind(store.metadata.to_string())
            .bind(&store.created_at)
            .bind(store.expires_after_days.map(i64::from))
            .bind(&store.last_active_at)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        upsert_files(&mut tx.tx, files).await?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn get_vector_store(&self, id: &str) -> Result<Option<VectorStore>> {
        let row = sqlx::query(&format!("SELECT {STORE_COLUMNS} FROM vector_stores WHERE id = $1")).bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(store_from_row).transpose()
    }

    async fn list_vector_stores(&self, owner: &str) -> Result<Vec<VectorStore>> {
        let rows = sqlx::query(&format!("SELECT {STORE_COLUMNS} FROM vector_stores WHERE owner = $1 ORDER BY created_at DESC, id DESC")).bind(owner).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(store_from_row).collect()
    }

    async fn update_vector_store(&self, store: &VectorStore, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE vector_stores SET name = $1, metadata = $2, expires_after_days = $3 WHERE id = $4")
            .bind(&store.name)
            .bind(store.metadata.to_string())
            .bind(store.expires_after_days.map(i64::from))
            .bind(&store.id)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no vector store {}", store.id)));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn delete_vector_store(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        // Children first: the cascade is not left to a pragma.
        for table in ["vector_chunks", "vector_chunks_next", "vector_reindexed_files", "vector_store_files", "vector_file_batches"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE store_id = $1")).bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        let deleted = sqlx::query("DELETE FROM vector_stores WHERE id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no vector store {id}")));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn attach_files(&self, store_id: &str, files: &[StoreFile], batch: Option<&FileBatch>, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if sqlx::query("SELECT id FROM vector_stores WHERE id = $1").bind(store_id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_none() {
            return Err(Error::NotFound(format!("no vector store {store_id}")));
        }
        if let Some(batch) = batch {
            sqlx::query("INSERT INTO vector_file_batches (id, store_id, created_at, cancelled) VALUES ($1, $2, $3, 0)").bind(&batch.id).bind(&batch.store_id).bind(&batch.created_at).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        upsert_files(&mut tx.tx, files).await?;
        bump(&mut tx.tx, store_id).await?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn store_files(&self, store_id: &str) -> Result<Vec<StoreFile>> {
        let rows = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM vector_store_files WHERE store_id = $1 ORDER BY created_at DESC, file_id DESC")).bind(store_id).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn store_file(&self, store_id: &str, file_id: &str) -> Result<Option<StoreFile>> {
        let row = sqlx::query(&format!("SELECT {FILE_COLUMNS} FROM vector_store_files WHERE store_id = $1 AND file_id = $2")).bind(store_id).bind(file_id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(file_from_row).transpose()
    }

    async fn set_file_attributes(&self, store_id: &str, file_id: &str, attributes: &Value, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE vector_store_files SET attributes = $1 WHERE store_id = $2 AND file_id = $3").bind(attributes.to_string()).bind(store_id).bind(file_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no file {file_id} in vector store {store_id}")));
        }
        bump(&mut tx.tx, store_id).await?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn detach_file(&self, store_id: &str, file_id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        forget_file_chunks(&mut tx.tx, store_id, file_id).await?;
        let deleted = sqlx::query("DELETE FROM vector_store_files WHERE store_id = $1 AND file_id = $2").bind(store_id).bind(file_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no file {file_id} in vector store {store_id}")));
        }
        bump(&mut tx.tx, store_id).await?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn get_file_batch(&self, id: &str) -> Result<Option<FileBatch>> {
        let row = sqlx::query("SELECT id, store_id, created_at, cancelled FROM vector_file_batches WHERE id = $1").bind(id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| {
            Ok(FileBatch { id: row.try_get("id").map_err(db_err)?, store_id: row.try_get("store_id").map_err(db_err)?, created_at: row.try_get("created_at").map_err(db_err)?, cancelled: row.try_get::<i64, _>("cancelled").map_err(db_err)? != 0 })
        })
        .transpose()
    }

    async fn cancel_file_batch(&self, id: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query("UPDATE vector_file_batches SET cancelled = 1 WHERE id = $1").bind(id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Err(Error::NotFound(format!("no file batch {id}")));
        }
        sqlx::query("UPDATE vector_store_files SET status = $1, lease_until = NULL WHERE batch_id = $2 AND status = $3").bind(CANCELLED).bind(id).bind(IN_PROGRESS).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn claim_ingestion(&self, now: &str, lease_until: &str) -> Result<Option<StoreFile>> {
        // In the serialized write path: one claimant at a time, across replicas too.
        let mut tx = self.begin_write().await?;
        let sql = format!("SELECT {FILE_COLUMNS} FROM vector_store_files WHERE status = $1 AND (lease_until IS NULL OR lease_until < $2) ORDER BY created_at, file_id LIMIT 1");
        let Some(row) = sqlx::query(&sql).bind(IN_PROGRESS).bind(now).fetch_optional(&mut *tx.tx).await.map_err(db_err)? else { return Ok(None) };
        let file = file_from_row(&row)?;
        sqlx::query("UPDATE vector_store_files SET lease_until = $1 WHERE store_id = $2 AND file_id = $3").bind(lease_until).bind(&file.store_id).bind(&file.file_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await?;
        Ok(Some(file))
    }

    async fn finish_ingestion(&self, file: &StoreFile, embedded_by: &str, outcome: std::result::Result<Vec<Chunk>, Value>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        // Vectors of a revision the store no longer has (a re-index swapped meanwhile) are not
        // comparable with its others: the file waits to be ingested again.
        let revision: Option<String> =
            sqlx::query("SELECT embedding_revision FROM vector_stores WHERE id = $1").bind(&file.store_id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.map(|row| row.try_get("embedding_revision")).transpose().map_err(db_err)?;
        if outcome.is_ok() && revision.as_deref() != Some(embedded_by) {
            sqlx::query("UPDATE vector_store_files SET lease_until = NULL WHERE store_id = $1 AND file_id = $2 AND created_at = $3").bind(&file.store_id).bind(&file.file_id).bind(&file.created_at).execute(&mut *tx.tx).await.map_err(db_err)?;
            tx.commit().await?;
            return Ok(false);
        }
        // Only a file still waiting, attached as it was claimed (not detached and attached again).
        let live = sqlx::query("SELECT 1 AS one FROM vector_store_files WHERE store_id = $1 AND file_id = $2 AND status = $3 AND created_at = $4")
            .bind(&file.store_id)
            .bind(&file.file_id)
            .bind(IN_PROGRESS)
            .bind(&file.created_at)
            .fetch_optional(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if live.is_none() {
            return Ok(false);
        }
        forget_file_chunks(&mut tx.tx, &file.store_id, &file.file_id).await?;
        let (status, error, bytes) = match &outcome {
            Ok(chunks) => (COMPLETED, None, insert_chunks(&mut tx.tx, "vector_chunks", &file.store_id, chunks).await?),
            Err(error) => (FAILED, Some(error.to_string()), 0),
        };
        sqlx::query("UPDATE vector_store_files SET status = $1, last_error = $2, usage_bytes = $3, lease_until = NULL WHERE store_id = $4 AND file_id = $5")
            .bind(status)
            .bind(error)
            .bind(bytes)
            .bind(&file.store_id)
            .bind(&file.file_id)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        bump(&mut tx.tx, &file.store_id).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn store_chunks(&self, store_id: &str) -> Result<(i64, Vec<IndexedChunk>)> {
        // One read transaction, so the version matches the chunks read.
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let version: i64 = sqlx::query("SELECT version FROM vector_stores WHERE id = $1").bind(store_id).fetch_optional(&mut *tx).await.map_err(db_err)?.map(|row| row.try_get("version")).transpose().map_err(db_err)?.unwrap_or(-1);
        let rows = sqlx::query(
            "SELECT c.file_id, c.idx, c.text, c.vector, f.filename, f.attributes FROM vector_chunks c JOIN vector_store_files f ON f.store_id = c.store_id AND f.file_id = c.file_id WHERE c.store_id = $1 AND f.status = $2 ORDER BY c.file_id, c.idx",
        )
        .bind(store_id)
        .bind(COMPLETED)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        let chunks = rows
            .iter()
            .map(|row| {
                let bytes: Vec<u8> = row.try_get("vector").map_err(db_err)?;
                Ok(IndexedChunk {
                    chunk: Chunk { file_id: row.try_get("file_id").map_err(db_err)?, index: row.try_get::<i64, _>("idx").map_err(db_err)? as u32, text: row.try_get("text").map_err(db_err)?, vector: vector_of(&bytes) },
                    filename: row.try_get("filename").map_err(db_err)?,
                    attributes: json_column(row, "attributes")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((version, chunks))
    }

    async fn file_chunks(&self, store_id: &str, file_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT text FROM vector_chunks WHERE store_id = $1 AND file_id = $2 ORDER BY idx").bind(store_id).bind(file_id).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(|row| row.try_get::<String, _>("text").map_err(db_err)).collect()
    }

    async fn touch_vector_store(&self, id: &str, now: &str) -> Result<()> {
        sqlx::query("UPDATE vector_stores SET last_active_at = $1 WHERE id = $2").bind(now).bind(id).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn all_vector_stores(&self, limit: usize) -> Result<Vec<VectorStore>> {
        let rows = sqlx::query(&format!("SELECT {STORE_COLUMNS} FROM vector_stores ORDER BY id LIMIT $1")).bind(limit as i64).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(store_from_row).collect()
    }

    async fn claim_reindex(&self, store_id: &str, revision: &str, holder: &str, now: &str, lease_until: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT reindex_revision, reindex_holder, reindex_lease_until FROM vector_stores WHERE id = $1").bind(store_id).fetch_optional(&mut *tx.tx).await.map_err(db_err)? else { return Ok(false) };
        let current: Option<String> = row.try_get("reindex_revision").map_err(db_err)?;
        let held_by: Option<String> = row.try_get("reindex_holder").map_err(db_err)?;
        let until: Option<String> = row.try_get("reindex_lease_until").map_err(db_err)?;
        // Its holder renews it; anyone takes it once the lease (or, after a failure, the wait
        // before a retry) ran out.
        let free = held_by.as_deref() == Some(holder) || until.as_deref().is_none_or(|u| u < now);
        if !free {
            return Ok(false);
        }
        if current.as_deref() != Some(revision) {
            clear_reindex(&mut tx.tx, store_id).await?;
            sqlx::query("UPDATE vector_stores SET reindex_revision = $1, reindex_started_at = $2 WHERE id = $3").bind(revision).bind(now).bind(store_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        sqlx::query("UPDATE vector_stores SET reindex_holder = $1, reindex_lease_until = $2 WHERE id = $3").bind(holder).bind(lease_until).bind(store_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn drop_reindex(&self, store_id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        clear_reindex(&mut tx.tx, store_id).await?;
        tx.commit().await
    }

    async fn fail_reindex(&self, store_id: &str, holder: &str, error: &str, retry_at: &str) -> Result<()> {
        // Released, so the retry may fall to any replica (one that fails every time, say short of
        // memory for the model, does not keep it).
        sqlx::query("UPDATE vector_stores SET reindex_error = $1, reindex_holder = NULL, reindex_lease_until = $2 WHERE id = $3 AND reindex_holder = $4")
            .bind(error)
            .bind(retry_at)
            .bind(store_id)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn reindex_pending(&self, store_id: &str) -> Result<Vec<StoreFile>> {
        let rows = sqlx::query(REINDEX_PENDING).bind(store_id).bind(COMPLETED).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn finish_reindex_file(&self, file: &StoreFile, revision: &str, chunks: &[Chunk]) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let towards: Option<Option<String>> =
            sqlx::query("SELECT reindex_revision FROM vector_stores WHERE id = $1").bind(&file.store_id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.map(|row| row.try_get("reindex_revision")).transpose().map_err(db_err)?;
        let same = sqlx::query("SELECT 1 AS one FROM vector_store_files WHERE store_id = $1 AND file_id = $2 AND status = $3 AND created_at = $4")
            .bind(&file.store_id)
            .bind(&file.file_id)
            .bind(COMPLETED)
            .bind(&file.created_at)
            .fetch_optional(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if towards.flatten().as_deref() != Some(revision) || same.is_none() {
            return Ok(false);
        }
        for table in ["vector_chunks_next", "vector_reindexed_files"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE store_id = $1 AND file_id = $2")).bind(&file.store_id).bind(&file.file_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        let bytes = insert_chunks(&mut tx.tx, "vector_chunks_next", &file.store_id, chunks).await?;
        sqlx::query("INSERT INTO vector_reindexed_files (store_id, file_id, attached_at, usage_bytes) VALUES ($1, $2, $3, $4)").bind(&file.store_id).bind(&file.file_id).bind(&file.created_at).bind(bytes).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn swap_reindex(&self, store_id: &str, revision: &str, event: AuditEvent) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let towards: Option<Option<String>> =
            sqlx::query("SELECT reindex_revision FROM vector_stores WHERE id = $1").bind(store_id).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.map(|row| row.try_get("reindex_revision")).transpose().map_err(db_err)?;
        if towards.flatten().as_deref() != Some(revision) {
            return Ok(false);
        }
        // Checked again here, in the serialized write: a file ingested since the last look waits.
        if sqlx::query(REINDEX_PENDING).bind(store_id).bind(COMPLETED).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_some() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM vector_chunks WHERE store_id = $1").bind(store_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        sqlx::query("INSERT INTO vector_chunks (store_id, file_id, idx, text, vector) SELECT store_id, file_id, idx, text, vector FROM vector_chunks_next WHERE store_id = $1").bind(store_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        sqlx::query("UPDATE vector_store_files SET usage_bytes = (SELECT r.usage_bytes FROM vector_reindexed_files r WHERE r.store_id = vector_store_files.store_id AND r.file_id = vector_store_files.file_id) WHERE store_id = $1 AND status = $2")
            .bind(store_id)
            .bind(COMPLETED)
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        clear_reindex(&mut tx.tx, store_id).await?;
        sqlx::query("UPDATE vector_stores SET embedding_revision = $1 WHERE id = $2").bind(revision).bind(store_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        bump(&mut tx.tx, store_id).await?;
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(true)
    }
}
