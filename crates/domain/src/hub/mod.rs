//! The `Hub` service: every registry operation, with its authorization check and its audit event,
//! one file per concern (`accounts`, `repos`, `vetting`, `deployments`, `operations`).
//! The HTTP layer, the CLI and later the dashboard all go through here, so they get the same rules.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use crate::audit::{AuditEvent, AuditRecord, ChainVerifier};
use crate::auth::{generate_token, hash_token, parse_duration, Principal, Role, UserPrincipal};
use crate::blobs::BlobStore;
use crate::ids::{AccountName, CommitId, Digest, RepoKind, RepoName, RepoPath};
use crate::meta::{Account, AccountKind, Deployment, EngineSettings, FileOperation, MetaStore, NewCommit, TokenInfo};
use crate::repo::{check_ref_name, git_blob_oid, lfs_pointer, Commit, FileEntry, GitRef, RefKind, Repo, DEFAULT_BRANCH, INITIAL_GITATTRIBUTES};
use crate::vetting::{declared_license, judge, scan_hint, Finding, Level, Override, Policy, RevisionVerdict};
use crate::{format_time, Error, Result};

mod accounts;
mod deployments;
mod evals;
mod files;
pub use evals::MAX_EVAL_DATA_BYTES;
mod operations;
mod pipelines;
mod repos;
mod responses;
pub use responses::{MAX_CHAIN, MAX_CHAIN_BYTES};
mod routes;
pub use routes::{ChangeNote, RolloutPlan, RouteTarget};
mod vectors;
pub use vectors::{expired as vector_store_expired, Attach, MAX_ATTACH, MAX_INGEST_BYTES};
mod vetting;
mod webhooks;
mod xet;

pub use xet::{plan, PlannedTerm, Reconstruction};

/// Settings the Hub needs from config.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Files larger than this are asked to travel through LFS; smaller ones go inline in the commit.
    pub lfs_threshold: u64,
    /// The largest file accepted inline (base64) in a commit body.
    pub max_inline_file: u64,
    /// The largest single LFS object accepted.
    pub max_lfs_file: u64,
    /// The version of the scanners whose results count; results of other versions are rescanned.
    pub scanner_version: String,
    /// How long signed upload URLs stay valid; GC keeps multipart parts at least that long.
    pub upload_url_ttl_secs: u64,
    /// The largest file accepted by the Files API.
    pub max_file_bytes: u64,
    /// The most bytes one account's files may hold together.
    pub file_quota_bytes: u64,
}

/// The registry service.
#[derive(Clone)]
pub struct Hub {
    // Invariant: private. Everything outside this crate goes through `Hub`'s operations, which
    // check authorization (user-facing ones) or are the server's own machinery (`system.rs`).
    pub(crate) meta: Arc<dyn MetaStore>,
    pub(crate) blobs: BlobStore,
    pub config: HubConfig,
}

impl Hub {
    /// A hub over these stores.
    pub fn new(meta: Arc<dyn MetaStore>, blobs: BlobStore, config: HubConfig) -> Self {
        Hub { meta, blobs, config }
    }
}

/// How preupload tells a client to send a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadMode {
    Regular,
    Lfs,
}

/// A commit as the client asked for it, before its blobs are checked.
#[derive(Clone, Debug)]
pub struct CommitRequest {
    pub branch: String,
    pub parent_commit: Option<String>,
    pub title: String,
    pub message: String,
    pub operations: Vec<FileOperation>,
}

/// What to deploy.
#[derive(Clone, Debug)]
pub struct DeployRequest {
    pub name: String,
    pub kind: RepoKind,
    pub repo: RepoName,
    /// Branch, tag or commit; the deployment pins the commit it resolves to.
    pub revision: String,
    /// The file to serve; `None` picks the first `.gguf`, else `model.safetensors`.
    pub file: Option<String>,
    pub settings: EngineSettings,
}

/// The outcome of `gc`.
#[derive(Clone, Debug, Default)]
pub struct GcReport {
    pub blobs_seen: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub temporary_deleted: u64,
    /// Files stored through Xet that no commit referenced.
    pub xet_files_deleted: u64,
    pub xorbs_deleted: u64,
}

/// The outcome of verifying the audit chain.
#[derive(Clone, Debug)]
pub struct AuditVerification {
    pub checked: u64,
    pub broken: Option<crate::audit::BrokenLink>,
}

impl Hub {
    /// Resolves a bearer token to a principal. No token is anonymous; an unknown, expired or
    /// revoked token is refused.
    pub async fn authenticate(&self, secret: Option<&str>) -> Result<Principal> {
        let Some(secret) = secret else { return Ok(Principal::Anonymous) };
        let invalid = || Error::Unauthenticated("Invalid credentials in Authorization header".into());
        let found = self.meta.lookup_token(&hash_token(secret)).await?.ok_or_else(invalid)?;
        if found.token.revoked_at.is_some() {
            return Err(invalid());
        }
        let token_expires_at = match &found.token.expires_at {
            Some(expires_at) => Some(chrono::DateTime::parse_from_rfc3339(expires_at).map_err(Error::internal)?.with_timezone(&chrono::Utc)),
            None => None,
        };
        if token_expires_at.is_some_and(|expires| expires <= chrono::Utc::now()) {
            return Err(invalid());
        }
        Ok(Principal::User(UserPrincipal {
            user_id: found.user_id,
            name: found.token.user_name.clone(),
            is_admin: found.is_admin,
            role: found.token.role,
            token_id: found.token.id,
            token_name: found.token.name.clone(),
            token_expires_at,
            orgs: found.orgs,
            workspace: None,
        }))
    }
}

/// Claims older than this came from a GC that died between claiming and deleting (a live one
/// deletes within moments); they no longer block anyone.
fn stale_claims() -> String {
    format_time(chrono::Utc::now() - chrono::Duration::hours(1))
}

/// The caller, if it may write `repo`: a private repo it cannot see is `RepoNotFound`, no token
/// is 401, too weak a token or another namespace is 403. Every mutating operation on a repo
/// checks this itself, whatever a route checked before (a `Repo` value proves nothing about who
/// may change it).
fn authorize_write<'a>(principal: &'a Principal, repo: &Repo) -> Result<&'a UserPrincipal> {
    let namespace = repo.name.namespace.as_str();
    if repo.private && !principal.can_see_namespace(namespace) {
        return Err(Error::RepoNotFound(format!("repository {} not found", repo.name)));
    }
    let caller = principal.user()?;
    if !principal.can_write_namespace(namespace) {
        return Err(Error::forbidden(format!("{} has no write access to {}", caller.name, repo.name)));
    }
    Ok(caller)
}
