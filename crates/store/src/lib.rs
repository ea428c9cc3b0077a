//! Storage backends: the `MetaStore` over SQLite or PostgreSQL (one SQL text for both through
//! sqlx's Any driver, per-dialect migrations), and the blob backend (local folder or S3) behind
//! `domain::blobs::BlobStore`.

mod blob_backend;
mod dialect;
mod migrate;
mod sql;

pub use blob_backend::open_blob_store;
pub use sql::SqlMetaStore;
