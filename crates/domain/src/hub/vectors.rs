//! `Hub`: vector stores. A store belongs to the account that created it: any of its tokens reads
//! and searches it, a write token changes it; anyone else gets `NotFound`. Files attached must
//! be the account's own uploads. Changes are audited; ingestion (claiming a file, writing its
//! chunks) is the server's own machinery.

use bytes::Bytes;
use serde_json::Value;

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
        store.owner = user.name.clone();
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
            Some(store) if store.owner == user.name => Ok(store),
            _ => Err(Error::NotFound(format!("no vector store {id}"))),
        }
    }

    /// The caller's stores, newest first.
    pub async fn vector_stores(&self, principal: &Principal) -> Result<Vec<VectorStore>> {
        let user = principal.user()?;
        self.meta.list_vector_stores(&user.name).await
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

    /// Ends a claimed file's ingestion; `false` if it no longer waits (detached, cancelled).
    pub async fn finish_ingestion(&self, file: &StoreFile, outcome: std::result::Result<Vec<Chunk>, Value>) -> Result<bool> {
        self.meta.finish_ingestion(file, outcome).await
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
