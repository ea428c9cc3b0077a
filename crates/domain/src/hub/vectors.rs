//! `Hub`: vector stores. A store belongs to the account that created it, or to the org the request
//! acted for: any of its tokens (an org's: its members') reads and searches it, a write token
//! changes it; anyone else gets `NotFound`. Files attached must be files the caller can read. Changes are audited; ingestion (claiming a file, writing its
//! chunks) is the server's own machinery.

use bytes::Bytes;
use serde_json::Value;

use crate::meta::Deployment;
use crate::vectors::{Chunk, FileBatch, IndexedChunk, StoreFile, VectorStore, IN_PROGRESS};

use super::*;

/// The most files one request may attach.
pub const MAX_ATTACH: usize = 500;
/// The largest file ingested (its bytes are read whole to extract the text).
pub const MAX_INGEST_BYTES: u64 = 64 * 1024 * 1024;

/// A file to attach: its id, attributes and resolved chunking.
pub struct Attach {
    pub file_id: String,
    pub attributes: Value,
    pub chunking: Value,
}

impl Hub {
    /// Creates a store owned by the caller, with its first files queued for ingestion.
    pub async fn create_vector_store(&self, principal: &Principal, mut store: VectorStore, files: Vec<Attach>) -> Result<VectorStore> {
        let user = writer(principal)?;
        check_store_name(&store.name)?;
        store.owner = user.owner().to_owned();
        store.token_id = user.token_id;
        let now = format_time(chrono::Utc::now());
        store.created_at = now.clone();
        store.last_active_at = now;
        let rows = self.attachments(principal, &store.id, files, None).await?;
        let event = AuditEvent::new(&user.name, "vector_store.create", format!("vector_store:{}", store.id), json!({ "name": store.name, "embedding_model": store.embedding_model, "revision": store.embedding_revision, "files": rows.len() }));
        self.meta.create_vector_store(&store, &rows, event).await?;
        Ok(store)
    }

    /// The rows for files the caller attaches (each must be its own upload).
    async fn attachments(&self, principal: &Principal, store_id: &str, files: Vec<Attach>, batch: Option<&str>) -> Result<Vec<StoreFile>> {
        if files.len() > MAX_ATTACH {
            return Err(Error::invalid(format!("at most {MAX_ATTACH} files may be attached at once")));
        }
        let now = format_time(chrono::Utc::now());
        let mut rows = Vec::with_capacity(files.len());
        for attach in files {
            let file = self.uploaded_file(principal, &attach.file_id).await?;
            rows.push(StoreFile {
                store_id: store_id.to_owned(),
                file_id: file.id,
                filename: file.filename,
                sha256: file.sha256,
                status: IN_PROGRESS.to_owned(),
                last_error: None,
                attributes: attach.attributes,
                chunking: attach.chunking,
                usage_bytes: 0,
                batch_id: batch.map(str::to_owned),
                created_at: now.clone(),
            });
        }
        Ok(rows)
    }

    /// One of the caller's stores.
    pub async fn vector_store(&self, principal: &Principal, id: &str) -> Result<VectorStore> {
        let user = principal.user()?;
        match self.meta.get_vector_store(id).await? {
            Some(store) if user.shares(&store.owner) => Ok(store),
            _ => Err(Error::NotFound(format!("no vector store {id}"))),
        }
    }

    /// The caller's stores, newest first.
    pub async fn vector_stores(&self, principal: &Principal) -> Result<Vec<VectorStore>> {
        let user = principal.user()?;
        self.meta.list_vector_stores(user.owner()).await
    }

    /// Renames a store, replaces its metadata or its expiry (`Some(None)` removes it).
    pub async fn update_vector_store(&self, principal: &Principal, id: &str, name: Option<String>, metadata: Option<Value>, expires_after_days: Option<Option<u32>>) -> Result<VectorStore> {
        let user = writer(principal)?;
        let mut store = self.vector_store(principal, id).await?;
        if let Some(name) = name {
            check_store_name(&name)?;
            store.name = name;
        }
        store.metadata = metadata.unwrap_or(store.metadata);
        store.expires_after_days = expires_after_days.unwrap_or(store.expires_after_days);
        let event = AuditEvent::new(&user.name, "vector_store.update", format!("vector_store:{id}"), json!({ "name": store.name }));
        self.meta.update_vector_store(&store, event).await?;
        Ok(store)
    }

    /// Deletes a store with its files' chunks (the uploaded files stay).
    pub async fn delete_vector_store(&self, principal: &Principal, id: &str) -> Result<()> {
        let user = writer(principal)?;
        self.vector_store(principal, id).await?;
        self.meta.delete_vector_store(id, AuditEvent::new(&user.name, "vector_store.delete", format!("vector_store:{id}"), json!({}))).await
    }

    /// Attaches the caller's files to one of its stores, as a batch when asked.
    pub async fn attach_vector_files(&self, principal: &Principal, store_id: &str, files: Vec<Attach>, as_batch: bool) -> Result<(Vec<StoreFile>, Option<FileBatch>)> {
        let user = writer(principal)?;
        let store = self.vector_store(principal, store_id).await?;
        check_live(&store)?;
        if files.is_empty() {
            return Err(Error::invalid("no files to attach"));
        }
        let batch = as_batch.then(|| FileBatch { id: format!("vsfb_{}", super::files::random_id()), store_id: store_id.to_owned(), created_at: format_time(chrono::Utc::now()), cancelled: false });
        let rows = self.attachments(principal, store_id, files, batch.as_ref().map(|b| b.id.as_str())).await?;
        let ids: Vec<&str> = rows.iter().map(|f| f.file_id.as_str()).collect();
        let event = AuditEvent::new(&user.name, "vector_store.files.attach", format!("vector_store:{store_id}"), json!({ "files": ids, "batch": batch.as_ref().map(|b| &b.id) }));
        self.meta.attach_files(store_id, &rows, batch.as_ref(), event).await?;
        Ok((rows, batch))
    }

    /// The files of one of the caller's stores, newest first.
    pub async fn vector_store_files(&self, principal: &Principal, store_id: &str) -> Result<Vec<StoreFile>> {
        self.vector_store(principal, store_id).await?;
        self.meta.store_files(store_id).await
    }

    /// One file of one of the caller's stores.
    pub async fn vector_store_file(&self, principal: &Principal, store_id: &str, file_id: &str) -> Result<StoreFile> {
        self.vector_store(principal, store_id).await?;
        self.meta.store_file(store_id, file_id).await?.ok_or_else(|| Error::NotFound(format!("no file {file_id} in vector store {store_id}")))
    }

    /// The chunk texts of one file of one of the caller's stores, in order.
    pub async fn vector_file_chunks(&self, principal: &Principal, store_id: &str, file_id: &str) -> Result<Vec<String>> {
        self.vector_store_file(principal, store_id, file_id).await?;
        self.meta.file_chunks(store_id, file_id).await
    }

    /// Replaces a file's attributes.
    pub async fn set_vector_file_attributes(&self, principal: &Principal, store_id: &str, file_id: &str, attributes: Value) -> Result<StoreFile> {
        let user = writer(principal)?;
        self.vector_store_file(principal, store_id, file_id).await?;
        let event = AuditEvent::new(&user.name, "vector_store.file.update", format!("vector_store:{store_id}"), json!({ "file": file_id }));
        self.meta.set_file_attributes(store_id, file_id, &attributes, event).await?;
        self.vector_store_file(principal, store_id, file_id).await
    }

    /// Detaches a file from one of the caller's stores (the upload stays).
    pub async fn detach_vector_file(&self, principal: &Principal, store_id: &str, file_id: &str) -> Result<()> {
        let user = writer(principal)?;
        self.vector_store_file(principal, store_id, file_id).await?;
        let event = AuditEvent::new(&user.name, "vector_store.file.detach", format!("vector_store:{store_id}"), json!({ "file": file_id }));
        self.meta.detach_file(store_id, file_id, event).await
    }

    /// A file batch of one of the caller's stores, with its files.
    pub async fn file_batch(&self, principal: &Principal, store_id: &str, batch_id: &str) -> Result<(FileBatch, Vec<StoreFile>)> {
        self.vector_store(principal, store_id).await?;
        let batch = self.meta.get_file_batch(batch_id).await?.filter(|b| b.store_id == store_id).ok_or_else(|| Error::NotFound(format!("no file batch {batch_id} in vector store {store_id}")))?;
        let files = self.meta.store_files(store_id).await?.into_iter().filter(|f| f.batch_id.as_deref() == Some(batch_id)).collect();
        Ok((batch, files))
    }

    /// Cancels a batch: its files not yet ingested end `cancelled`.
    pub async fn cancel_file_batch(&self, principal: &Principal, store_id: &str, batch_id: &str) -> Result<(FileBatch, Vec<StoreFile>)> {
        let user = writer(principal)?;
        self.file_batch(principal, store_id, batch_id).await?;
        let event = AuditEvent::new(&user.name, "vector_store.file_batch.cancel", format!("vector_store:{store_id}"), json!({ "batch": batch_id }));
        self.meta.cancel_file_batch(batch_id, event).await?;
        self.file_batch(principal, store_id, batch_id).await
    }

    /// One of the caller's stores, to search: refused once expired, and marked active (at most
    /// once a minute, so searches do not each write to the database).
    pub async fn searchable_store(&self, principal: &Principal, store_id: &str) -> Result<VectorStore> {
        let store = self.vector_store(principal, store_id).await?;
        check_live(&store)?;
        let now = chrono::Utc::now();
        let recent = chrono::DateTime::parse_from_rfc3339(&store.last_active_at).is_ok_and(|at| now - at.with_timezone(&chrono::Utc) < chrono::Duration::seconds(60));
        if !recent {
            self.meta.touch_vector_store(store_id, &format_time(now)).await?;
        }
        Ok(store)
    }

    /// Every chunk of a store and the store's version (for building a search index).
    pub async fn vector_chunks(&self, store: &VectorStore) -> Result<(i64, Vec<IndexedChunk>)> {
        self.meta.store_chunks(&store.id).await
    }

    /// Claims a file waiting for ingestion, until `lease_secs` from now.
    pub async fn claim_ingestion(&self, lease_secs: i64) -> Result<Option<StoreFile>> {
        let now = chrono::Utc::now();
        self.meta.claim_ingestion(&format_time(now), &format_time(now + chrono::Duration::seconds(lease_secs))).await
    }

    /// The store a claimed file belongs to, and the file's bytes (at most `MAX_INGEST_BYTES`).
    pub async fn ingestion_source(&self, file: &StoreFile) -> Result<(VectorStore, Bytes)> {
        let store = self.meta.get_vector_store(&file.store_id).await?.ok_or_else(|| Error::NotFound(format!("no vector store {}", file.store_id)))?;
        let digest = Digest::parse(&file.sha256)?;
        let size = self.blobs.size_of(&digest).await?.ok_or_else(|| Error::NotFound(format!("the bytes of file {} are gone", file.file_id)))?;
        if size > MAX_INGEST_BYTES {
            return Err(Error::invalid(format!("the file has {size} bytes; at most {MAX_INGEST_BYTES} are ingested")));
        }
        Ok((store, self.blobs.read_all(&digest).await?))
    }

    /// Ends a claimed file's ingestion; `false` if it no longer waits (detached, cancelled) or
    /// the store no longer has the revision that embedded it (it is ingested again).
    pub async fn finish_ingestion(&self, file: &StoreFile, embedded_by: &str, outcome: std::result::Result<Vec<Chunk>, Value>) -> Result<bool> {
        self.meta.finish_ingestion(file, embedded_by, outcome).await
    }

    /// The deployment that serves a store's own revision when its named deployment has moved
    /// on (while a re-index runs): that revision's file at the same path (else its
    /// `model.safetensors`), with the current deployment's settings, named `repo@commit`. The
    /// owner must still see the repo, and the revision must still pass vetting when it loads.
    pub async fn pinned_embedding_model(&self, principal: &Principal, store: &VectorStore, current: &Deployment) -> Result<Deployment> {
        let (repo_name, commit) = store.embedding_revision.split_once('@').ok_or_else(|| Error::internal(format!("vector store {} names no revision", store.id)))?;
        let name = RepoName::parse(repo_name)?;
        let repo = self.visible_repo(principal, RepoKind::Model, &name).await?;
        let commit = self.resolve(&repo, commit).await?;
        let files = self.meta.list_files(&commit).await?;
        let file = files
            .iter()
            .find(|f| f.path == current.file_path)
            .or_else(|| files.iter().find(|f| f.path.as_str() == "model.safetensors"))
            .ok_or_else(|| Error::invalid(format!("{} has no {} to embed with", store.embedding_revision, current.file_path)))?;
        Ok(Deployment {
            name: store.embedding_revision.clone(),
            kind: RepoKind::Model,
            repo: name,
            commit,
            file_path: file.path.clone(),
            file_sha256: file.sha256.clone(),
            settings: current.settings.clone(),
            created_by: current.created_by.clone(),
            created_at: current.created_at.clone(),
        })
    }

    /// A store by id, whoever owns it (the server's own machinery).
    pub async fn vector_store_by_id(&self, id: &str) -> Result<Option<VectorStore>> {
        self.meta.get_vector_store(id).await
    }

    /// Stores to look at for re-indexing (the server's own sweep).
    pub async fn reindex_candidates(&self, limit: usize) -> Result<Vec<VectorStore>> {
        self.meta.all_vector_stores(limit).await
    }

    /// Takes or renews a store's re-index towards `revision` for `holder`, for `lease_secs`.
    pub async fn claim_reindex(&self, store_id: &str, revision: &str, holder: &str, lease_secs: i64) -> Result<bool> {
        let now = chrono::Utc::now();
        self.meta.claim_reindex(store_id, revision, holder, &format_time(now), &format_time(now + chrono::Duration::seconds(lease_secs))).await
    }

    /// Drops a store's re-index (its deployment serves the store's revision again).
    pub async fn drop_reindex(&self, store_id: &str) -> Result<()> {
        self.meta.drop_reindex(store_id).await
    }

    /// Records why a re-index attempt stopped; it is tried again after `retry_secs`.
    pub async fn fail_reindex(&self, store_id: &str, holder: &str, error: &str, retry_secs: i64) -> Result<()> {
        self.meta.fail_reindex(store_id, holder, error, &format_time(chrono::Utc::now() + chrono::Duration::seconds(retry_secs))).await
    }

    /// Completed files of a store that the re-index has not embedded anew yet.
    pub async fn reindex_pending(&self, store_id: &str) -> Result<Vec<StoreFile>> {
        self.meta.reindex_pending(store_id).await
    }

    /// Stores a file's chunks embedded anew by `revision`.
    pub async fn finish_reindex_file(&self, file: &StoreFile, revision: &str, chunks: &[Chunk]) -> Result<bool> {
        self.meta.finish_reindex_file(file, revision, chunks).await
    }

    /// Swaps a finished re-index in: the store answers from the new chunks and names the new
    /// revision. Audited as the server's act on the owner's store.
    pub async fn swap_reindex(&self, store: &VectorStore, revision: &str) -> Result<bool> {
        let files = store.reindex.as_ref().map_or(0, |r| r.files_done);
        let details = json!({ "owner": store.owner, "embedding_model": store.embedding_model, "from": store.embedding_revision, "to": revision, "files": files });
        let event = AuditEvent::new("system", "vector_store.reindex", format!("vector_store:{}", store.id), details);
        self.meta.swap_reindex(&store.id, revision, event).await
    }
}

fn writer(principal: &Principal) -> Result<&UserPrincipal> {
    let user = principal.user()?;
    if user.role < Role::Write {
        return Err(Error::forbidden("this needs a write token"));
    }
    Ok(user)
}

/// Whether a store is past its `expires_after`.
pub fn expired(store: &VectorStore) -> bool {
    let Some(days) = store.expires_after_days else { return false };
    chrono::DateTime::parse_from_rfc3339(&store.last_active_at).is_ok_and(|at| at.with_timezone(&chrono::Utc) + chrono::Duration::days(i64::from(days)) <= chrono::Utc::now())
}

fn check_live(store: &VectorStore) -> Result<()> {
    if expired(store) {
        return Err(Error::invalid(format!("vector store {} has expired", store.id)));
    }
    Ok(())
}

/// Store names: at most 256 characters.
fn check_store_name(name: &str) -> Result<()> {
    if name.chars().count() > 256 {
        return Err(Error::invalid("the name is longer than 256 characters"));
    }
    Ok(())
}
