//! The platform's core: names and ids, repos and commits, accounts and tokens, the audit chain,
//! the `MetaStore` port and the content-addressed `BlobStore`, and the `Hub` service that checks
//! rights and records audit events. No HTTP and no SQL live here.

pub mod audit;
pub mod auth;
pub mod blobs;
pub mod card;
pub mod error;
pub mod evals;
pub mod files;
pub mod hub;
pub mod ids;
pub mod meta;
pub mod pipelines;
pub mod quota;
pub mod repo;
pub mod responses;
pub mod routes;
mod system;
pub mod vectors;
pub mod vetting;
pub mod webhooks;
pub mod xet;

pub use error::{Error, Result};

/// Current time as the RFC 3339 string (UTC, milliseconds) that every stored timestamp uses.
pub fn now_rfc3339() -> String {
    format_time(chrono::Utc::now())
}

/// Formats a time the way the Hub API and the stores expect: `2026-01-02T03:04:05.678Z`.
pub fn format_time(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}
