//! Vector stores (OpenAI's Vector Stores API): a store owns files attached to it (each ingested
//! by a job: its text extracted, chunked in the embedding model's tokens, embedded), and their
//! chunks with their vectors. A store belongs to the account whose token created it; its
//! ingestion runs as that token, through the store's embedding deployment, pinned to the
//! revision that embedded it.

use async_trait::async_trait;
use serde_json::Value;

use crate::audit::AuditEvent;
use crate::error::Result;

/// The ingestion states of an attached file.
pub const IN_PROGRESS: &str = "in_progress";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";

/// One vector store.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorStore {
    /// `vs_...`.
    pub id: String,
    pub owner: String,
    /// The token that created it: ingestion acts as it (a revoked token stops ingestion).
    pub token_id: i64,
    pub name: String,
    /// The deployment that embeds its chunks and queries.
    pub embedding_model: String,
    /// `repo@commit` of the model that embedded it.
    pub embedding_revision: String,
    pub metadata: Value,
    pub created_at: String,
    /// Seconds after `last_active_at` it expires (`expires_after`), if ever.
    pub expires_after_days: Option<u32>,
    pub last_active_at: String,
    /// Bumped by every change to its chunks, so caches of its index know they are stale.
    pub version: i64,
    /// The re-index under way, if its deployment moved to another revision.
    pub reindex: Option<Reindex>,
}

/// A re-index: the store's files embedded again by the revision its deployment now serves,
/// beside the chunks that keep answering until the swap.
#[derive(Clone, Debug, PartialEq)]
pub struct Reindex {
    /// `repo@commit` of the revision embedding anew.
    pub revision: String,
    pub started_at: String,
    /// Files embedded anew so far.
    pub files_done: u64,
    /// Why the last attempt stopped (it is tried again).
    pub error: Option<String>,
}

/// A file attached to a store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreFile {
    pub store_id: String,
    pub file_id: String,
    pub filename: String,
    /// The blob of the file's bytes.
    pub sha256: String,
    pub status: String,
    /// `{code, message}` when it failed.
    pub last_error: Option<Value>,
    pub attributes: Value,
    /// `{max_chunk_size_tokens, chunk_overlap_tokens}` as resolved when attached.
    pub chunking: Value,
    /// Bytes its chunks hold.
    pub usage_bytes: u64,
    pub batch_id: Option<String>,
    pub created_at: String,
}

/// One chunk of a file, with its vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Chunk {
    pub file_id: String,
    pub index: u32,
    pub text: String,
    pub vector: Vec<f32>,
}

/// A chunk as the search index reads it: with its file's name and attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedChunk {
    pub chunk: Chunk,
    pub filename: String,
    pub attributes: Value,
}

/// A file batch: files attached together.
#[derive(Clone, Debug, PartialEq)]
pub struct FileBatch {
    /// `vsfb_...`.
    pub id: String,
    pub store_id: String,
    pub created_at: String,
    pub cancelled: bool,
}

/// Persistence of vector stores, their files and chunks.
#[async_trait]
pub trait VectorStoreStore: Send + Sync {
    /// Stores a new store with its first files (queued for ingestion), audited.
    async fn create_vector_store(&self, store: &VectorStore, files: &[StoreFile], event: AuditEvent) -> Result<()>;
    async fn get_vector_store(&self, id: &str) -> Result<Option<VectorStore>>;
    /// The owner's stores, newest first.
    async fn list_vector_stores(&self, owner: &str) -> Result<Vec<VectorStore>>;
    /// Replaces a store's name, metadata and expiry, audited.
    async fn update_vector_store(&self, store: &VectorStore, event: AuditEvent) -> Result<()>;
    /// Deletes a store with its files and chunks, audited.
    async fn delete_vector_store(&self, id: &str, event: AuditEvent) -> Result<()>;
    /// Attaches files (again: an attached file is queued anew), optionally as one batch, audited.
    async fn attach_files(&self, store_id: &str, files: &[StoreFile], batch: Option<&FileBatch>, event: AuditEvent) -> Result<()>;
    async fn store_files(&self, store_id: &str) -> Result<Vec<StoreFile>>;
    async fn store_file(&self, store_id: &str, file_id: &str) -> Result<Option<StoreFile>>;
    /// Replaces a file's attributes (its chunks are filtered by them), audited.
    async fn set_file_attributes(&self, store_id: &str, file_id: &str, attributes: &Value, event: AuditEvent) -> Result<()>;
    /// Detaches a file and drops its chunks, audited.
    async fn detach_file(&self, store_id: &str, file_id: &str, event: AuditEvent) -> Result<()>;
    async fn get_file_batch(&self, id: &str) -> Result<Option<FileBatch>>;
    /// Cancels a batch: its files not yet ingested end `cancelled`, audited.
    async fn cancel_file_batch(&self, id: &str, event: AuditEvent) -> Result<()>;
    /// Claims the oldest file waiting for ingestion (or whose worker's lease ran out) until
    /// `lease_until`.
    async fn claim_ingestion(&self, now: &str, lease_until: &str) -> Result<Option<StoreFile>>;
    /// Ends an ingestion: its chunks (replacing any) and `completed`, or `failed` with the
    /// error; `false` (nothing written) if the file is no longer waiting (detached, cancelled),
    /// or if its chunks were embedded by a revision (`embedded_by`) the store no longer has
    /// (then it waits to be ingested again).
    async fn finish_ingestion(&self, file: &StoreFile, embedded_by: &str, outcome: std::result::Result<Vec<Chunk>, Value>) -> Result<bool>;
    /// Every chunk of a store, with its file's name and attributes, and the store's version.
    async fn store_chunks(&self, store_id: &str) -> Result<(i64, Vec<IndexedChunk>)>;
    /// One file's chunk texts, in order.
    async fn file_chunks(&self, store_id: &str, file_id: &str) -> Result<Vec<String>>;
    /// Marks a store used now.
    async fn touch_vector_store(&self, id: &str, now: &str) -> Result<()>;
    /// Every store (for the re-index sweep), at most `limit`.
    async fn all_vector_stores(&self, limit: usize) -> Result<Vec<VectorStore>>;
    /// Takes (or renews) the re-index of a store towards `revision` for `holder` until
    /// `lease_until`; `false` if another holder's lease runs. A re-index towards another revision
    /// is dropped first (its work is of no use).
    async fn claim_reindex(&self, store_id: &str, revision: &str, holder: &str, now: &str, lease_until: &str) -> Result<bool>;
    /// Drops a store's re-index and the chunks it made (its deployment serves the store's own
    /// revision again).
    async fn drop_reindex(&self, store_id: &str) -> Result<()>;
    /// Records why a re-index attempt stopped and releases it: anyone may take it again after
    /// `retry_at`.
    async fn fail_reindex(&self, store_id: &str, holder: &str, error: &str, retry_at: &str) -> Result<()>;
    /// Completed files of a store not yet embedded anew by the re-index.
    async fn reindex_pending(&self, store_id: &str) -> Result<Vec<StoreFile>>;
    /// Stores one file's chunks as embedded anew; `false` (nothing written) if the re-index moved
    /// on or the file changed meanwhile.
    async fn finish_reindex_file(&self, file: &StoreFile, revision: &str, chunks: &[Chunk]) -> Result<bool>;
    /// Swaps in the re-indexed chunks and the new revision, audited; `false` (nothing changed)
    /// while a file still waits or the re-index moved on.
    async fn swap_reindex(&self, store_id: &str, revision: &str, event: AuditEvent) -> Result<bool>;
}
