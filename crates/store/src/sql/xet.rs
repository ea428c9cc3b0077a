//! XetStore: xorbs, their owners and dedup chunks, files as chunk ranges, GC claims.

use domain::xet::{Term, XetFile, XetStore, XorbRecord};

use super::*;

fn xet_file(row: &AnyRow) -> Result<XetFile> {
    let terms: String = row.try_get("terms").map_err(db_err)?;
    Ok(XetFile { hash: row.try_get("hash").map_err(db_err)?, sha256: row.try_get("sha256").map_err(db_err)?, size: row.try_get::<i64, _>("size").map_err(db_err)? as u64, terms: serde_json::from_str::<Vec<Term>>(&terms).map_err(Error::internal)? })
}

fn strings(rows: &[AnyRow], column: &str) -> Result<Vec<String>> {
    rows.iter().map(|row| row.try_get::<String, _>(column).map_err(db_err)).collect()
}

/// A `deleting` claim younger than this is GC at work; an older one was left by a GC that died.
fn stale_claim_cutoff() -> String {
    domain::format_time(chrono::Utc::now() - chrono::Duration::hours(1))
}

#[async_trait]
impl XetStore for SqlMetaStore {
    async fn put_xorb(&self, xorb: &XorbRecord, namespace: &str, dedup_chunks: &[String]) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        // The row first: once it is there (fresh), GC's claim, which needs an old row, fails.
        let now = now_rfc3339();
        let existed = sqlx::query("SELECT 1 AS one FROM xet_xorbs WHERE hash = $1").bind(&xorb.hash).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_some();
        if existed {
            sqlx::query("UPDATE xet_xorbs SET created_at = $1 WHERE hash = $2").bind(&now).bind(&xorb.hash).execute(&mut *tx.tx).await.map_err(db_err)?;
        } else {
            sqlx::query("INSERT INTO xet_xorbs (hash, size, chunks, created_at) VALUES ($1, $2, $3, $4)").bind(&xorb.hash).bind(xorb.size as i64).bind(xorb.chunks.clone()).bind(&now).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        let tombstone = sqlx::query("SELECT state, created_at FROM xet_tombstones WHERE hash = $1").bind(&xorb.hash).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if let Some(row) = tombstone {
            let state: String = row.try_get("state").map_err(db_err)?;
            let created: String = row.try_get("created_at").map_err(db_err)?;
            if state == "deleting" && created >= stale_claim_cutoff() {
                return Err(Error::conflict(format!("xorb {} is being garbage-collected; upload it again in a moment", xorb.hash)));
            }
            sqlx::query("DELETE FROM xet_tombstones WHERE hash = $1").bind(&xorb.hash).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        sqlx::query("INSERT INTO xet_xorb_owners (xorb_hash, namespace) VALUES ($1, $2) ON CONFLICT DO NOTHING").bind(&xorb.hash).bind(namespace).execute(&mut *tx.tx).await.map_err(db_err)?;
        for chunk in dedup_chunks {
            sqlx::query("INSERT INTO xet_chunks (chunk_hash, xorb_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING").bind(chunk).bind(&xorb.hash).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        tx.commit().await?;
        Ok(!existed)
    }

    async fn xorb(&self, hash: &str) -> Result<Option<XorbRecord>> {
        let row = sqlx::query("SELECT size, chunks FROM xet_xorbs WHERE hash = $1").bind(hash).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| Ok(XorbRecord { hash: hash.to_owned(), size: row.try_get::<i64, _>("size").map_err(db_err)? as u64, chunks: row.try_get("chunks").map_err(db_err)? })).transpose()
    }

    async fn xorb_owners(&self, hash: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT namespace FROM xet_xorb_owners WHERE xorb_hash = $1").bind(hash).fetch_all(&self.pool).await.map_err(db_err)?;
        strings(&rows, "namespace")
    }

    async fn xorbs_with_chunk(&self, chunk: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT xorb_hash FROM xet_chunks WHERE chunk_hash = $1 LIMIT 16").bind(chunk).fetch_all(&self.pool).await.map_err(db_err)?;
        strings(&rows, "xorb_hash")
    }

    async fn related_xorbs(&self, xorb: &str, limit: i64) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT DISTINCT b.xorb_hash FROM xet_file_xorbs a JOIN xet_file_xorbs b ON b.file_hash = a.file_hash WHERE a.xorb_hash = $1 ORDER BY b.xorb_hash LIMIT $2")
            .bind(xorb)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        strings(&rows, "xorb_hash")
    }

    async fn put_xet_files(&self, repo_id: i64, files: &[XetFile], dedup_chunks: &[(String, String)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let now = now_rfc3339();
        for file in files {
            let terms = serde_json::to_string(&file.terms).map_err(Error::internal)?;
            let inserted = sqlx::query("INSERT INTO xet_files (hash, sha256, size, terms, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
                .bind(&file.hash)
                .bind(&file.sha256)
                .bind(file.size as i64)
                .bind(terms)
                .bind(&now)
                .execute(&mut *tx.tx)
                .await
                .map_err(db_err)?;
            if inserted.rows_affected() == 1 {
                let mut xorbs: Vec<&str> = file.terms.iter().map(|t| t.xorb.as_str()).collect();
                xorbs.sort_unstable();
                xorbs.dedup();
                for xorb in xorbs {
                    // The foreign key fails if GC removed the xorb since it was checked.
                    sqlx::query("INSERT INTO xet_file_xorbs (file_hash, xorb_hash) VALUES ($1, $2)").bind(&file.hash).bind(xorb).execute(&mut *tx.tx).await.map_err(|err| match db_err(err) {
                        Error::Internal(_) => Error::conflict(format!("xorb {xorb} was garbage-collected while the shard was checked; upload it again")),
                        other => other,
                    })?;
                }
            } else {
                sqlx::query("UPDATE xet_files SET created_at = $1 WHERE hash = $2").bind(&now).bind(&file.hash).execute(&mut *tx.tx).await.map_err(db_err)?;
            }
            sqlx::query("INSERT INTO blob_grants (repo_id, sha256, created_at) VALUES ($1, $2, $3) ON CONFLICT (repo_id, sha256) DO UPDATE SET created_at = excluded.created_at")
                .bind(repo_id)
                .bind(&file.sha256)
                .bind(&now)
                .execute(&mut *tx.tx)
                .await
                .map_err(db_err)?;
            // The bytes are stored again: a tombstone GC left for them no longer holds.
            sqlx::query("DELETE FROM gc_tombstones WHERE sha256 = $1 AND state = 'deleted'").bind(&file.sha256).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        for (chunk, xorb) in dedup_chunks {
            sqlx::query("INSERT INTO xet_chunks (chunk_hash, xorb_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING").bind(chunk).bind(xorb).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        tx.commit().await
    }

    async fn xet_file(&self, hash: &str) -> Result<Option<XetFile>> {
        let row = sqlx::query("SELECT hash, sha256, size, terms FROM xet_files WHERE hash = $1").bind(hash).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(xet_file).transpose()
    }

    async fn xet_file_by_sha256(&self, sha256: &str) -> Result<Option<XetFile>> {
        let row = sqlx::query("SELECT hash, sha256, size, terms FROM xet_files WHERE sha256 = $1 ORDER BY created_at LIMIT 1").bind(sha256).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.as_ref().map(xet_file).transpose()
    }

    async fn xet_hashes(&self, sha256s: &[String]) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for batch in sha256s.chunks(500) {
            let placeholders: Vec<String> = (1..=batch.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT sha256, hash FROM xet_files WHERE sha256 IN ({})", placeholders.join(", "));
            let mut query = sqlx::query(&sql);
            for sha in batch {
                query = query.bind(sha);
            }
            for row in query.fetch_all(&self.pool).await.map_err(db_err)? {
                out.insert(row.try_get("sha256").map_err(db_err)?, row.try_get("hash").map_err(db_err)?);
            }
        }
        Ok(out)
    }

    async fn repo_has_file(&self, repo_id: i64, sha256: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 AS one FROM blob_grants WHERE repo_id = $1 AND sha256 = $2 UNION ALL SELECT 1 AS one FROM commit_files f JOIN commits c ON c.id = f.commit_id WHERE c.repo_id = $1 AND f.sha256 = $2 LIMIT 1")
            .bind(repo_id)
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.is_some())
    }

    async fn unreferenced_xet_files(&self, before: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT x.hash FROM xet_files x WHERE x.created_at <= $1 AND NOT EXISTS (SELECT 1 FROM commit_files f WHERE f.sha256 = x.sha256) \
             AND NOT EXISTS (SELECT 1 FROM blob_grants g WHERE g.sha256 = x.sha256 AND g.created_at > $1)",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        strings(&rows, "hash")
    }

    async fn delete_xet_file(&self, hash: &str, before: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let Some(row) = sqlx::query("SELECT sha256 FROM xet_files WHERE hash = $1").bind(hash).fetch_optional(&mut *tx.tx).await.map_err(db_err)? else { return Ok(false) };
        let sha256: String = row.try_get("sha256").map_err(db_err)?;
        let deleted = sqlx::query(
            "DELETE FROM xet_files WHERE hash = $1 AND created_at <= $2 AND NOT EXISTS (SELECT 1 FROM commit_files f WHERE f.sha256 = xet_files.sha256) \
             AND NOT EXISTS (SELECT 1 FROM blob_grants g WHERE g.sha256 = xet_files.sha256 AND g.created_at > $2)",
        )
        .bind(hash)
        .bind(before)
        .execute(&mut *tx.tx)
        .await
        .map_err(db_err)?;
        if deleted.rows_affected() == 1 {
            // PostgreSQL cascades through the foreign key; SQLite does too with foreign_keys on,
            // but the links go explicitly so that the rule does not hang on a pragma.
            sqlx::query("DELETE FROM xet_file_xorbs WHERE file_hash = $1").bind(hash).execute(&mut *tx.tx).await.map_err(db_err)?;
            // A commit that checked the file before this and lands after it must fail, as for a
            // collected blob: the tombstone is checked in the commit's own transaction. Bytes
            // uploaded again (whole or through Xet) lift it.
            sqlx::query("INSERT INTO gc_tombstones (sha256, state, created_at) SELECT $1, 'deleted', $2 WHERE NOT EXISTS (SELECT 1 FROM xet_files WHERE sha256 = $1) ON CONFLICT (sha256) DO NOTHING")
                .bind(&sha256)
                .bind(now_rfc3339())
                .execute(&mut *tx.tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn unreferenced_xorbs(&self, before: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT x.hash FROM xet_xorbs x WHERE x.created_at <= $1 AND NOT EXISTS (SELECT 1 FROM xet_file_xorbs l WHERE l.xorb_hash = x.hash)").bind(before).fetch_all(&self.pool).await.map_err(db_err)?;
        strings(&rows, "hash")
    }

    async fn condemn_xorb(&self, hash: &str, before: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM xet_xorbs WHERE hash = $1 AND created_at <= $2 AND NOT EXISTS (SELECT 1 FROM xet_file_xorbs l WHERE l.xorb_hash = xet_xorbs.hash)").bind(hash).bind(before).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        // The foreign keys cascade too; deleted explicitly so the rule does not hang on a pragma.
        for sql in ["DELETE FROM xet_chunks WHERE xorb_hash = $1", "DELETE FROM xet_xorb_owners WHERE xorb_hash = $1"] {
            sqlx::query(sql).bind(hash).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        sqlx::query("INSERT INTO xet_tombstones (hash, state, created_at) VALUES ($1, 'deleting', $2) ON CONFLICT (hash) DO UPDATE SET state = 'deleting', created_at = excluded.created_at")
            .bind(hash)
            .bind(now_rfc3339())
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        tx.commit().await?;
        Ok(true)
    }

    async fn xorb_deleted(&self, hash: &str) -> Result<()> {
        sqlx::query("UPDATE xet_tombstones SET state = 'deleted' WHERE hash = $1").bind(hash).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }
}
