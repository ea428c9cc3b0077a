//! Files (OpenAI's Files API): bytes a caller uploads for retrieval and other uses, kept
//! content-addressed in the blob store (the same bytes are stored once, whoever uploads them)
//! with one metadata row per upload, owned by the account that uploaded it.

use async_trait::async_trait;

use crate::audit::AuditEvent;
use crate::error::Result;

/// The purposes OpenAI's Files API takes.
pub const PURPOSES: &[&str] = &["assistants", "batch", "fine-tune", "vision", "user_data", "evals"];

/// One uploaded file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// `file-...`.
    pub id: String,
    pub owner: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: u64,
    /// The blob holding its bytes.
    pub sha256: String,
    pub created_at: String,
    /// When it is deleted by itself (`expires_after`), if ever.
    pub expires_at: Option<String>,
}

/// Persistence of file records.
#[async_trait]
pub trait FileStore: Send + Sync {
    /// Stores a file record, audited, unless the owner's files would then hold more than `quota`
    /// bytes (`Invalid`) or the blob is being collected (`Conflict`: upload again).
    async fn create_upload(&self, file: &StoredFile, quota: u64, event: AuditEvent) -> Result<()>;
    async fn get_upload(&self, id: &str) -> Result<Option<StoredFile>>;
    /// The owner's files (of one purpose, if given), newest first.
    async fn list_uploads(&self, owner: &str, purpose: Option<&str>) -> Result<Vec<StoredFile>>;
    /// The bytes the owner's files hold.
    async fn upload_bytes(&self, owner: &str) -> Result<u64>;
    /// Deletes a file record, audited; `NotFound` if missing. The blob stays until GC finds no
    /// commit and no file naming it.
    async fn delete_upload(&self, id: &str, event: AuditEvent) -> Result<()>;
}
