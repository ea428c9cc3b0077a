//! RepoStore: repositories, commits (with their files) and refs.

use super::*;

#[async_trait]
impl RepoStore for SqlMetaStore {
    async fn create_repo(&self, kind: RepoKind, name: &RepoName, private: bool, initial: Vec<FileEntry>, author: &str, event: AuditEvent) -> Result<Repo> {
        let mut tx = self.begin_write().await?;
        let existing = sqlx::query("SELECT id FROM repos WHERE kind = $1 AND namespace = $2 AND name = $3").bind(kind.as_str()).bind(name.namespace.as_str()).bind(name.name.as_str()).fetch_optional(&mut *tx.tx).await.map_err(db_err)?;
        if existing.is_some() {
            return Err(Error::conflict(format!("You already created this {} repo: {name}", kind.as_str())));
        }
        let created_at = now_rfc3339();
        let row = sqlx::query("INSERT INTO repos (kind, namespace, name, private, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
            .bind(kind.as_str())
            .bind(name.namespace.as_str())
            .bind(name.name.as_str())
            .bind(i64::from(private))
            .bind(&created_at)
            .fetch_one(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        let id: i64 = row.try_get("id").map_err(db_err)?;
        let commit = tx.insert_commit(id, None, &initial, "initial commit", "", author).await?;
        sqlx::query("INSERT INTO refs (repo_id, kind, name, commit_id) VALUES ($1, 'branch', $2, $3)").bind(id).bind(DEFAULT_BRANCH).bind(commit.id.as_str()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.enqueue(&scan_keys(&initial)).await?;
        let mut event = event;
        insert_detail(&mut event, "commit", serde_json::json!(commit.id.as_str()));
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(Repo { id, kind, name: name.clone(), private, created_at })
    }

    async fn get_repo(&self, kind: RepoKind, name: &RepoName) -> Result<Option<Repo>> {
        let sql = format!("SELECT {REPO_COLUMNS} FROM repos WHERE kind = $1 AND namespace = $2 AND name = $3");
        let row = sqlx::query(&sql).bind(kind.as_str()).bind(name.namespace.as_str()).bind(name.name.as_str()).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| repo_from_row(&row)).transpose()
    }

    async fn list_repos(&self, kind: RepoKind, namespace: Option<&str>) -> Result<Vec<Repo>> {
        let rows = match namespace {
            Some(namespace) => {
                let sql = format!("SELECT {REPO_COLUMNS} FROM repos WHERE kind = $1 AND namespace = $2 ORDER BY namespace, name");
                sqlx::query(&sql).bind(kind.as_str()).bind(namespace).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {REPO_COLUMNS} FROM repos WHERE kind = $1 ORDER BY namespace, name");
                sqlx::query(&sql).bind(kind.as_str()).fetch_all(&self.pool).await
            }
        }
        .map_err(db_err)?;
        rows.iter().map(repo_from_row).collect()
    }

    async fn delete_repo(&self, repo_id: i64, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for sql in ["DELETE FROM refs WHERE repo_id = $1", "DELETE FROM blob_grants WHERE repo_id = $1", "DELETE FROM commit_files WHERE commit_id IN (SELECT id FROM commits WHERE repo_id = $1)", "DELETE FROM commits WHERE repo_id = $1"] {
            sqlx::query(sql).bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        }
        let deleted = sqlx::query("DELETE FROM repos WHERE id = $1").bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::RepoNotFound("repository not found".into()));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn set_private(&self, repo_id: i64, private: bool, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE repos SET private = $1 WHERE id = $2").bind(i64::from(private)).bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn rename_repo(&self, repo_id: i64, to: &RepoName, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let taken = sqlx::query("SELECT r2.id FROM repos r1 JOIN repos r2 ON r2.kind = r1.kind WHERE r1.id = $1 AND r2.namespace = $2 AND r2.name = $3")
            .bind(repo_id)
            .bind(to.namespace.as_str())
            .bind(to.name.as_str())
            .fetch_optional(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if taken.is_some() {
            return Err(Error::conflict(format!("a repo named {to} already exists")));
        }
        sqlx::query("UPDATE repos SET namespace = $1, name = $2 WHERE id = $3").bind(to.namespace.as_str()).bind(to.name.as_str()).bind(repo_id).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn resolve(&self, repo_id: i64, revision: &str) -> Result<Option<CommitId>> {
        // Branches win over tags, as in git's ref resolution order for short names.
        let row = sqlx::query("SELECT commit_id FROM refs WHERE repo_id = $1 AND name = $2 ORDER BY kind LIMIT 1").bind(repo_id).bind(revision).fetch_optional(&self.pool).await.map_err(db_err)?;
        if let Some(row) = row {
            return Ok(Some(commit_from_text(&row.try_get::<String, _>("commit_id").map_err(db_err)?)?));
        }
        let Some(id) = CommitId::parse(revision) else { return Ok(None) };
        let row = sqlx::query("SELECT id FROM commits WHERE id = $1 AND repo_id = $2").bind(id.as_str()).bind(repo_id).fetch_optional(&self.pool).await.map_err(db_err)?;
        Ok(row.map(|_| id))
    }

    async fn get_commit(&self, repo_id: i64, id: &CommitId) -> Result<Option<Commit>> {
        let sql = format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE id = $1 AND repo_id = $2");
        let row = sqlx::query(&sql).bind(id.as_str()).bind(repo_id).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| commit_from_row(&row)).transpose()
    }

    async fn list_commits(&self, repo_id: i64, head: &CommitId) -> Result<Vec<Commit>> {
        let sql = format!("SELECT {COMMIT_COLUMNS} FROM commits WHERE repo_id = $1");
        let rows = sqlx::query(&sql).bind(repo_id).fetch_all(&self.pool).await.map_err(db_err)?;
        let mut by_id: HashMap<String, Commit> = HashMap::new();
        for row in &rows {
            let commit = commit_from_row(row)?;
            by_id.insert(commit.id.to_string(), commit);
        }
        let mut history = Vec::new();
        let mut next = Some(head.clone());
        while let Some(id) = next {
            let Some(commit) = by_id.remove(id.as_str()) else { break };
            next = commit.parent.clone();
            history.push(commit);
        }
        Ok(history)
    }

    async fn list_files(&self, commit: &CommitId) -> Result<Vec<FileEntry>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM commit_files WHERE commit_id = $1 ORDER BY path");
        let rows = sqlx::query(&sql).bind(commit.as_str()).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter().map(file_from_row).collect()
    }

    async fn get_file(&self, commit: &CommitId, path: &RepoPath) -> Result<Option<FileEntry>> {
        let sql = format!("SELECT {FILE_COLUMNS} FROM commit_files WHERE commit_id = $1 AND path = $2");
        let row = sqlx::query(&sql).bind(commit.as_str()).bind(path.as_str()).fetch_optional(&self.pool).await.map_err(db_err)?;
        row.map(|row| file_from_row(&row)).transpose()
    }

    async fn commit(&self, new: NewCommit, event: AuditEvent) -> Result<Commit> {
        let mut tx = self.begin_write().await?;
        let head = tx.ref_target(new.repo_id, RefKind::Branch, &new.branch).await?.ok_or_else(|| Error::RevisionNotFound(format!("branch {:?} not found: commits go to an existing branch", new.branch)))?;
        if let Some(expected) = &new.expected_parent {
            if *expected != head {
                return Err(Error::conflict(format!("parent commit {expected} is not the head of {} (now {head}); fetch and retry", new.branch)));
            }
        }
        let base = tx.files(&head).await?;
        let files = apply_operations(base, &new.operations)?;
        let commit = tx.insert_commit(new.repo_id, Some(&head), &files, &new.title, &new.message, &new.author).await?;
        let moved = sqlx::query("UPDATE refs SET commit_id = $1 WHERE repo_id = $2 AND kind = 'branch' AND name = $3 AND commit_id = $4")
            .bind(commit.id.as_str())
            .bind(new.repo_id)
            .bind(&new.branch)
            .bind(head.as_str())
            .execute(&mut *tx.tx)
            .await
            .map_err(db_err)?;
        if moved.rows_affected() != 1 {
            return Err(Error::conflict(format!("branch {} moved during the commit; retry", new.branch)));
        }
        let added: Vec<FileEntry> = new.operations.iter().filter_map(|op| if let FileOperation::Add(entry) = op { Some(entry.clone()) } else { None }).collect();
        // A blob that GC claimed (or deleted) since the caller checked it cannot be referenced:
        // GC's claim and this commit are serialized by the write lock, so one of them sees the other.
        for entry in &added {
            if sqlx::query("SELECT 1 AS one FROM gc_tombstones WHERE sha256 = $1").bind(entry.sha256.as_str()).fetch_optional(&mut *tx.tx).await.map_err(db_err)?.is_some() {
                return Err(Error::conflict(format!("the stored object for {} was garbage-collected meanwhile; upload it again", entry.path)));
            }
        }
        tx.enqueue(&scan_keys(&added)).await?;
        let mut event = event;
        insert_detail(&mut event, "commit", serde_json::json!(commit.id.as_str()));
        insert_detail(&mut event, "parent", serde_json::json!(head.as_str()));
        tx.audit(&event).await?;
        tx.commit().await?;
        Ok(commit)
    }

    async fn list_refs(&self, repo_id: i64) -> Result<Vec<GitRef>> {
        let rows = sqlx::query("SELECT kind, name, commit_id FROM refs WHERE repo_id = $1 ORDER BY kind, name").bind(repo_id).fetch_all(&self.pool).await.map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let kind = match row.try_get::<String, _>("kind").map_err(db_err)?.as_str() {
                    "branch" => RefKind::Branch,
                    _ => RefKind::Tag,
                };
                Ok(GitRef { kind, name: row.try_get("name").map_err(db_err)?, commit: commit_from_text(&row.try_get::<String, _>("commit_id").map_err(db_err)?)? })
            })
            .collect()
    }

    async fn create_ref(&self, repo_id: i64, kind: RefKind, name: &str, target: &CommitId, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        if tx.ref_target(repo_id, kind, name).await?.is_some() {
            return Err(Error::conflict(format!("{} {name:?} already exists", kind.as_str())));
        }
        sqlx::query("INSERT INTO refs (repo_id, kind, name, commit_id) VALUES ($1, $2, $3, $4)").bind(repo_id).bind(kind.as_str()).bind(name).bind(target.as_str()).execute(&mut *tx.tx).await.map_err(db_err)?;
        tx.audit(&event).await?;
        tx.commit().await
    }

    async fn delete_ref(&self, repo_id: i64, kind: RefKind, name: &str, event: AuditEvent) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let deleted = sqlx::query("DELETE FROM refs WHERE repo_id = $1 AND kind = $2 AND name = $3").bind(repo_id).bind(kind.as_str()).bind(name).execute(&mut *tx.tx).await.map_err(db_err)?;
        if deleted.rows_affected() == 0 {
            return Err(Error::RevisionNotFound(format!("{} {name:?} not found", kind.as_str())));
        }
        tx.audit(&event).await?;
        tx.commit().await
    }
}
