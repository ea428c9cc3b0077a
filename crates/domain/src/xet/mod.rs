//! Xet storage: files as sequences of chunk ranges in xorbs, chunk-level dedup within a tenant.
//! `format` reads and writes the wire formats; `XetStore` is the metadata port; the operations
//! live on the `Hub` (`hub/xet.rs`), behind a `XetScope` that a signed CAS token stands for.

pub mod format;
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

pub use format::{parse_hash, Term, XorbIndex};

use crate::Result;

/// What a CAS access token allows: one repo, read or write, for one user's tenant.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct XetScope {
    pub repo_id: i64,
    /// The repo's namespace: xorbs uploaded through the token belong to it.
    pub repo_namespace: String,
    pub write: bool,
    /// The user the token was issued to.
    pub user: String,
    /// The namespaces whose private data the user may see (their own and their orgs'): the
    /// tenant within which chunks and xorbs are offered for reuse.
    pub namespaces: Vec<String>,
}

impl XetScope {
    /// Whether `namespace` belongs to the caller's tenant.
    pub fn in_tenant(&self, namespace: &str) -> bool {
        self.namespaces.iter().any(|n| n == namespace)
    }
}

/// A stored xorb's row.
#[derive(Clone, Debug)]
pub struct XorbRecord {
    pub hash: String,
    /// Bytes of the stored object.
    pub size: u64,
    /// `XorbIndex::encode`.
    pub chunks: Vec<u8>,
}

/// A registered file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XetFile {
    pub hash: String,
    /// Computed by Mantle from the reconstructed bytes.
    pub sha256: String,
    pub size: u64,
    pub terms: Vec<Term>,
}

/// The metadata port for Xet storage. Writes that GC races with go through the store's write
/// transactions, which are serialized (see `SqlMetaStore`).
#[async_trait::async_trait]
pub trait XetStore: Send + Sync {
    /// Records a validated xorb uploaded through `namespace` (kept if present, its age reset so
    /// GC leaves it alone), with the chunks clients may look it up by. `Conflict` while GC is
    /// deleting it. Returns whether the row is new.
    async fn put_xorb(&self, xorb: &XorbRecord, namespace: &str, dedup_chunks: &[String]) -> Result<bool>;
    /// A xorb's row.
    async fn xorb(&self, hash: &str) -> Result<Option<XorbRecord>>;
    /// The namespaces a xorb was uploaded through.
    async fn xorb_owners(&self, hash: &str) -> Result<Vec<String>>;
    /// Xorbs holding a chunk (as indexed for global dedup).
    async fn xorbs_with_chunk(&self, chunk: &str) -> Result<Vec<String>>;
    /// Xorbs used by the files that use `xorb` (the rest of a file that dedups against it), at most `limit`.
    async fn related_xorbs(&self, xorb: &str, limit: i64) -> Result<Vec<String>>;
    /// Registers validated files in one transaction (files already registered are kept), indexes
    /// `dedup_chunks` as `(chunk, xorb)`, and grants `repo_id` each file's sha256 (the upload
    /// proved possession, so a commit to that repo may name it).
    async fn put_xet_files(&self, repo_id: i64, files: &[XetFile], dedup_chunks: &[(String, String)]) -> Result<()>;
    /// A file by Xet hash.
    async fn xet_file(&self, hash: &str) -> Result<Option<XetFile>>;
    /// A file with these bytes, by sha256.
    async fn xet_file_by_sha256(&self, sha256: &str) -> Result<Option<XetFile>>;
    /// Xet hashes of files stored through Xet, by sha256, for those of `sha256s` that are.
    async fn xet_hashes(&self, sha256s: &[String]) -> Result<std::collections::HashMap<String, String>>;
    /// Whether a commit of `repo_id` holds the sha256, or an upload to it proved possession.
    async fn repo_has_file(&self, repo_id: i64, sha256: &str) -> Result<bool>;
    /// Files no commit references and no grant younger than `before` mentions, made before `before`.
    async fn unreferenced_xet_files(&self, before: &str) -> Result<Vec<String>>;
    /// Deletes a file's row if it is still unreferenced (checked in the same transaction).
    async fn delete_xet_file(&self, hash: &str, before: &str) -> Result<bool>;
    /// Xorbs no file uses, made (or last re-uploaded) before `before`.
    async fn unreferenced_xorbs(&self, before: &str) -> Result<Vec<String>>;
    /// GC's claim: deletes the xorb's row if still unreferenced and old, leaving a `deleting`
    /// tombstone, in one write transaction. Returns whether it did.
    async fn condemn_xorb(&self, hash: &str, before: &str) -> Result<bool>;
    /// GC deleted the object: the tombstone turns `deleted`.
    async fn xorb_deleted(&self, hash: &str) -> Result<()>;
}
