//! BlobLedger: which blobs are referenced, claimed by GC, or granted to a repo.

use super::*;

#[async_trait]
impl BlobLedger for SqlMetaStore {
    async fn referenced_blobs(&self) -> Result<HashSet<String>> {
        let rows = sqlx::query("SELECT sha256 FROM commit_files UNION SELECT sha256 FROM files").fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(|row| row.try_get::<String, _>("sha256").map_err(db_err)).collect()
    }

    async fn condemn_blob(&self, sha256: &str, stale_before: &str) -> Result<Option<Tombstone>> {
        let mut tx = self.begin_write().await?;
        let referenced = sqlx::query("SELECT 1 AS one FROM commit_files WHERE sha256 = $1 UNION ALL SELECT 1 AS one FROM files WHERE sha256 = $1 LIMIT 1").bind(sha256).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_some();
        if referenced {
            return Ok(None);
        }
        let claim = Tombstone { sha256: sha256.to_owned(), state: "deleting".into(), created_at: now_rfc3339() };
        let written = sqlx::query(
            "INSERT INTO gc_tombstones (sha256, state, created_at) VALUES ($1, 'deleting', $2) \
             ON CONFLICT (sha256) DO UPDATE SET state = 'deleting', created_at = excluded.created_at WHERE gc_tombstones.state = 'deleted' OR gc_tombstones.created_at < $3",
        )
        .bind(sha256)
        .bind(&claim.created_at)
        .bind(stale_before)
        .execute(&mut *tx.tx)
        .await
        .map_err(db_err)?;
        tx.commit().await?;
        Ok((written.rows_affected() == 1).then_some(claim))
    }

    async fn blob_deleted(&self, claim: &Tombstone) -> Result<()> {
        sqlx::query("UPDATE gc_tombstones SET state = 'deleted' WHERE sha256 = $1 AND state = $2 AND created_at = $3").bind(&claim.sha256).bind(&claim.state).bind(&claim.created_at).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn blob_tombstone(&self, sha256: &str) -> Result<Option<Tombstone>> {
        let row = sqlx::query("SELECT state, created_at FROM gc_tombstones WHERE sha256 = $1").bind(sha256).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| Ok(Tombstone { sha256: sha256.to_owned(), state: row.try_get("state").map_err(db_err)?, created_at: row.try_get("created_at").map_err(db_err)? })).transpose()
    }

    async fn clear_tombstone(&self, tombstone: &Tombstone) -> Result<()> {
        sqlx::query("DELETE FROM gc_tombstones WHERE sha256 = $1 AND state = $2 AND created_at = $3").bind(&tombstone.sha256).bind(&tombstone.state).bind(&tombstone.created_at).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn grant_blob(&self, repo_id: i64, sha256: &str) -> Result<()> {
        // Not audited on its own: it records that an upload proved possession, which the commit
        // using it then audits. Idempotent.
        sqlx::query("INSERT INTO blob_grants (repo_id, sha256, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING").bind(repo_id).bind(sha256).bind(now_rfc3339()).execute(&self.pool).await.map_err(db_err)?;
        Ok(())
    }

    async fn blob_access(&self, repo_id: i64, sha256: &str) -> Result<BlobAccess> {
        let granted = sqlx::query("SELECT 1 AS one FROM blob_grants WHERE repo_id = $1 AND sha256 = $2").bind(repo_id).bind(sha256).fetch_optional(&self.pool).await.map_err(db_err)?.is_some();
        let rows = sqlx::query("SELECT DISTINCT r.namespace, r.private FROM commit_files f JOIN commits c ON c.id = f.commit_id JOIN repos r ON r.id = c.repo_id WHERE f.sha256 = $1").bind(sha256).fetch_all(&self.pool).await.map_err(db_err)?;
        let holders = rows.iter().map(|row| Ok((row.try_get::<String, _>("namespace").map_err(db_err)?, row.try_get::<i64, _>("private").map_err(db_err)? != 0))).collect::<Result<_>>()?;
        let tombstoned = sqlx::query("SELECT 1 AS one FROM gc_tombstones WHERE sha256 = $1").bind(sha256).fetch_optional(&self.pool).await.map_err(db_err)?.is_some();
        Ok(BlobAccess { granted, holders, tombstoned })
    }
}
