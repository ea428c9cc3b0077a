//! The `Hub` service: every registry operation, with its authorization check and its audit event.
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
        }))
    }

    // ---- accounts and tokens -------------------------------------------------------------

    /// Creates a user (site admin only), optionally as a member of an org.
    pub async fn create_user(&self, principal: &Principal, name: &str, org: Option<&str>) -> Result<Account> {
        let admin = principal.site_admin()?;
        let name = AccountName::parse(name)?;
        let org = org.map(AccountName::parse).transpose()?;
        if let Some(org) = &org {
            self.require_account(org, AccountKind::Org).await?;
        }
        let event = AuditEvent::new(&admin.name, "user.create", format!("user:{name}"), json!({ "org": org.as_ref().map(|o| o.to_string()) }));
        self.meta.create_account(&name, AccountKind::User, org.as_ref(), event).await
    }

    /// Creates an org (site admin only).
    pub async fn create_org(&self, principal: &Principal, name: &str) -> Result<Account> {
        let admin = principal.site_admin()?;
        let name = AccountName::parse(name)?;
        let event = AuditEvent::new(&admin.name, "org.create", format!("org:{name}"), json!({}));
        self.meta.create_account(&name, AccountKind::Org, None, event).await
    }

    /// Adds a user to an org (site admin only).
    pub async fn add_member(&self, principal: &Principal, org: &str, user: &str) -> Result<()> {
        let admin = principal.site_admin()?;
        let org = AccountName::parse(org)?;
        let user = AccountName::parse(user)?;
        self.require_account(&org, AccountKind::Org).await?;
        self.require_account(&user, AccountKind::User).await?;
        let event = AuditEvent::new(&admin.name, "org.add_member", format!("org:{org}"), json!({ "user": user.as_str() }));
        self.meta.add_member(&org, &user, event).await
    }

    async fn require_account(&self, name: &AccountName, kind: AccountKind) -> Result<Account> {
        match self.meta.get_account(name).await? {
            Some(account) if account.kind == kind => Ok(account),
            _ => Err(Error::NotFound(format!("no {} named {name}", kind.as_str()))),
        }
    }

    /// Lists accounts (site admin only).
    pub async fn list_accounts(&self, principal: &Principal) -> Result<Vec<Account>> {
        principal.site_admin()?;
        self.meta.list_accounts().await
    }

    /// Creates a token. A site admin may create one for anyone; a user may create one for
    /// themselves with a role no higher than the token they use. Whoever creates it, a token
    /// never outlives the token it was created through (without an asked expiry it gets that
    /// token's), and revoking that token revokes it. Returns the secret once.
    pub async fn create_token(&self, principal: &Principal, user: &str, role: &str, name: Option<&str>, expires_in: Option<&str>) -> Result<(TokenInfo, String)> {
        let caller = principal.user()?;
        let user = AccountName::parse(user)?;
        let role = Role::parse(role)?;
        let is_site_admin = principal.site_admin().is_ok();
        if !is_site_admin && (caller.name != user.as_str() || role > caller.role) {
            return Err(Error::forbidden("only a site admin may create tokens for others or with a higher role"));
        }
        self.require_account(&user, AccountKind::User).await?;
        let asked = expires_in.map(parse_duration).transpose()?.map(|d| chrono::Utc::now() + d);
        let expires_at = match (asked, caller.token_expires_at) {
            (Some(asked), Some(limit)) if asked > limit => {
                return Err(Error::forbidden(format!("expires_in: a token may not outlive the token that creates it (which expires at {})", format_time(limit))));
            }
            (Some(asked), _) => Some(asked),
            (None, limit) => limit,
        }
        .map(format_time);
        let name = name.unwrap_or("cli");
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(Error::invalid("token name must be 1 to 100 printable characters"));
        }
        let secret = generate_token();
        let event = AuditEvent::new(&caller.name, "token.create", format!("user:{user}"), json!({ "name": name, "role": role.as_str(), "expires_at": expires_at }));
        let hash = hash_token(&secret);
        let token = crate::meta::NewToken { user: &user, name, role, hash: &hash, expires_at, parent: Some(caller.token_id) };
        let info = self.meta.create_token(token, event).await?;
        Ok((info, secret))
    }

    /// Revokes a token: a site admin any token, a user their own.
    pub async fn revoke_token(&self, principal: &Principal, id: i64) -> Result<TokenInfo> {
        let caller = principal.user()?;
        let token = self.meta.get_token(id).await?.ok_or_else(|| Error::NotFound(format!("no token with id {id}")))?;
        if principal.site_admin().is_err() && token.user_name != caller.name {
            return Err(Error::NotFound(format!("no token with id {id}")));
        }
        let event = AuditEvent::new(&caller.name, "token.revoke", format!("token:{id}"), json!({ "user": token.user_name }));
        self.meta.revoke_token(id, event).await
    }

    /// Lists tokens: all for a site admin, else the caller's own.
    pub async fn list_tokens(&self, principal: &Principal) -> Result<Vec<TokenInfo>> {
        let caller = principal.user()?;
        if principal.site_admin().is_ok() {
            self.meta.list_tokens(None).await
        } else {
            self.meta.list_tokens(Some(&AccountName::parse(&caller.name)?)).await
        }
    }

    // ---- repos ---------------------------------------------------------------------------

    /// Creates a repo with an initial commit holding the Hub's default `.gitattributes`.
    pub async fn create_repo(&self, principal: &Principal, kind: RepoKind, name: &RepoName, private: bool) -> Result<Repo> {
        let caller = principal.user()?;
        if self.meta.get_account(&name.namespace).await?.is_none() {
            return Err(Error::NotFound(format!("no user or org named {}", name.namespace)));
        }
        if !principal.can_write_namespace(name.namespace.as_str()) {
            return Err(Error::forbidden(format!("you cannot create repos in {}", name.namespace)));
        }
        let (stored, git_oid) = self.blobs.put_bytes(Bytes::from_static(INITIAL_GITATTRIBUTES.as_bytes())).await?;
        let initial = vec![FileEntry { path: RepoPath::parse(".gitattributes")?, size: stored.size, sha256: stored.sha256, git_oid, lfs: false }];
        let event = AuditEvent::new(&caller.name, "repo.create", format!("{}:{name}", kind.as_str()), json!({ "private": private }));
        self.meta.create_repo(kind, name, private, initial, &caller.name, event).await
    }

    /// A repo the caller may see, or `RepoNotFound` (private repos are invisible, not forbidden).
    pub async fn visible_repo(&self, principal: &Principal, kind: RepoKind, name: &RepoName) -> Result<Repo> {
        match self.meta.get_repo(kind, name).await? {
            Some(repo) if !repo.private || principal.can_see_namespace(repo.name.namespace.as_str()) => Ok(repo),
            _ => Err(Error::RepoNotFound(format!("repository {name} not found"))),
        }
    }

    /// A repo the caller may write: 404 if invisible, then 401 without a token, 403 without rights.
    pub async fn writable_repo(&self, principal: &Principal, kind: RepoKind, name: &RepoName) -> Result<Repo> {
        let repo = self.visible_repo(principal, kind, name).await?;
        authorize_write(principal, &repo)?;
        Ok(repo)
    }

    /// Lists the repos the caller may see.
    pub async fn list_repos(&self, principal: &Principal, kind: RepoKind, author: Option<&str>) -> Result<Vec<Repo>> {
        let repos = self.meta.list_repos(kind, author).await?;
        Ok(repos.into_iter().filter(|repo| !repo.private || principal.can_see_namespace(repo.name.namespace.as_str())).collect())
    }

    /// Deletes a repo.
    pub async fn delete_repo(&self, principal: &Principal, kind: RepoKind, name: &RepoName) -> Result<()> {
        let repo = self.writable_repo(principal, kind, name).await?;
        let event = AuditEvent::new(principal.actor(), "repo.delete", repo.audit_target(), json!({}));
        self.meta.delete_repo(repo.id, event).await
    }

    /// Changes a repo's visibility.
    pub async fn set_private(&self, principal: &Principal, kind: RepoKind, name: &RepoName, private: bool) -> Result<()> {
        let repo = self.writable_repo(principal, kind, name).await?;
        if repo.private == private {
            return Ok(());
        }
        let event = AuditEvent::new(principal.actor(), "repo.visibility", repo.audit_target(), json!({ "private": private }));
        self.meta.set_private(repo.id, private, event).await
    }

    /// Moves a repo to a new name; the caller must be able to write both namespaces.
    pub async fn move_repo(&self, principal: &Principal, kind: RepoKind, from: &RepoName, to: &RepoName) -> Result<()> {
        let repo = self.writable_repo(principal, kind, from).await?;
        if !principal.can_write_namespace(to.namespace.as_str()) {
            return Err(Error::forbidden(format!("you cannot create repos in {}", to.namespace)));
        }
        let event = AuditEvent::new(principal.actor(), "repo.move", repo.audit_target(), json!({ "to": to.to_string() }));
        self.meta.rename_repo(repo.id, to, event).await
    }

    /// Resolves a revision (branch, tag, `refs/heads/x`, `refs/tags/x` or commit id) of a repo.
    pub async fn resolve(&self, repo: &Repo, revision: &str) -> Result<CommitId> {
        let name = revision.strip_prefix("refs/heads/").or_else(|| revision.strip_prefix("refs/tags/")).unwrap_or(revision);
        self.meta.resolve(repo.id, name).await?.ok_or_else(|| Error::RevisionNotFound(format!("revision {revision:?} not found in {}", repo.name)))
    }

    /// The commit and files at a revision.
    pub async fn snapshot(&self, repo: &Repo, revision: &str) -> Result<(Commit, Vec<FileEntry>)> {
        let id = self.resolve(repo, revision).await?;
        let commit = self.meta.get_commit(repo.id, &id).await?.ok_or_else(|| Error::internal(format!("commit {id} has no row")))?;
        let files = self.meta.list_files(&id).await?;
        Ok((commit, files))
    }

    /// One file at a revision; `EntryNotFound` carries the commit so clients can cache the miss.
    pub async fn file(&self, repo: &Repo, revision: &str, path: &str) -> Result<(CommitId, FileEntry)> {
        let commit = self.resolve(repo, revision).await?;
        let Ok(path) = RepoPath::parse(path) else {
            return Err(Error::entry_not_found(path, Some(commit.to_string())));
        };
        match self.meta.get_file(&commit, &path).await? {
            Some(entry) => Ok((commit, entry)),
            None => Err(Error::entry_not_found(path.as_str(), Some(commit.to_string()))),
        }
    }

    /// How a file of this size should be uploaded.
    pub fn upload_mode(&self, size: u64) -> UploadMode {
        if size > self.config.lfs_threshold {
            UploadMode::Lfs
        } else {
            UploadMode::Regular
        }
    }

    /// Stores inline file bytes from a commit body to `repo` and returns their entry.
    pub async fn store_inline(&self, principal: &Principal, repo: &Repo, path: RepoPath, bytes: Bytes) -> Result<FileEntry> {
        authorize_write(principal, repo)?;
        if bytes.len() as u64 > self.config.max_inline_file {
            return Err(Error::Invalid(format!("{path} is larger than the inline limit of {} bytes; upload it through LFS", self.config.max_inline_file)));
        }
        let (stored, git_oid) = self.blobs.put_bytes(bytes).await?;
        self.settle_written(&stored.sha256).await?;
        Ok(FileEntry { path, size: stored.size, sha256: stored.sha256, git_oid, lfs: false })
    }

    /// Builds the entry for an LFS file named in a commit to `repo`; its bytes must already be
    /// uploaded, and the caller must be entitled to them (see `may_reuse_blob`): to anyone else
    /// a stored blob looks exactly like one never uploaded.
    pub async fn lfs_entry(&self, principal: &Principal, repo: &Repo, path: RepoPath, oid: &str, size: Option<u64>) -> Result<FileEntry> {
        authorize_write(principal, repo)?;
        let sha256 = Digest::parse(oid)?;
        let never_uploaded = || Error::invalid(format!("LFS object {sha256} for {path} was never uploaded"));
        let stored_size = self.blobs.size_of(&sha256).await?.ok_or_else(never_uploaded)?;
        if !self.may_reuse_blob(principal, repo, &sha256).await? {
            return Err(never_uploaded());
        }
        if size.is_some_and(|size| size != stored_size) {
            return Err(Error::invalid(format!("LFS object {sha256} for {path} has {stored_size} bytes, not the declared {}", size.unwrap_or(0))));
        }
        let git_oid = git_blob_oid(lfs_pointer(&sha256, stored_size).as_bytes());
        Ok(FileEntry { path, size: stored_size, sha256, git_oid, lfs: true })
    }

    /// Whether the caller may use a stored blob in `repo` without uploading it: an upload to
    /// `repo` proved possession of its bytes, or the caller can read a revision that holds it.
    /// Knowing a digest (and size) is never enough: content-addressed storage is shared by
    /// every tenant, and reusing another tenant's private blob would let the caller download it.
    pub async fn may_reuse_blob(&self, principal: &Principal, repo: &Repo, sha256: &Digest) -> Result<bool> {
        let access = self.meta.blob_access(repo.id, sha256.as_str()).await?;
        // A blob GC claimed or deleted is uploaded again, which lifts its tombstone.
        let entitled = access.granted || access.holders.iter().any(|(namespace, private)| !private || principal.can_see_namespace(namespace));
        Ok(entitled && !access.tombstoned)
    }

    /// Records that a signed upload to a repo delivered a blob's bytes (possession proven), so
    /// commits to that repo may name it.
    pub(crate) async fn record_upload(&self, kind: RepoKind, name: &RepoName, sha256: &Digest) -> Result<()> {
        let repo = self.meta.get_repo(kind, name).await?.ok_or_else(|| Error::RepoNotFound(format!("repository {name} not found")))?;
        self.settle_written(sha256).await?;
        self.meta.grant_blob(repo.id, sha256.as_str()).await
    }

    /// After a blob's bytes were written: if GC is deleting it right now, the bytes may be gone,
    /// so the writer must retry; if GC deleted it before (or claimed it and died), the fresh
    /// bytes lift the tombstone.
    async fn settle_written(&self, sha256: &Digest) -> Result<()> {
        let Some(tombstone) = self.meta.blob_tombstone(sha256.as_str()).await? else { return Ok(()) };
        let settled = tombstone.state == "deleted" || tombstone.created_at < stale_claims();
        if settled && self.blobs.size_of(sha256).await?.is_some() {
            return self.meta.clear_tombstone(&tombstone).await;
        }
        Err(Error::conflict(format!("the object {sha256} is being garbage-collected; upload it again in a moment")))
    }

    /// Commits to a branch of a writable repo.
    pub async fn commit(&self, principal: &Principal, repo: &Repo, request: CommitRequest) -> Result<Commit> {
        let caller = authorize_write(principal, repo)?;
        // The store checks that the branch exists, in the commit's own transaction.
        let branch = request.branch.strip_prefix("refs/heads/").unwrap_or(&request.branch).to_owned();
        let expected_parent = match request.parent_commit.as_deref() {
            None => None,
            Some(text) => Some(CommitId::parse(text).ok_or_else(|| Error::invalid(format!("parentCommit {text:?} is not a 40-hex commit id")))?),
        };
        if request.title.trim().is_empty() {
            return Err(Error::invalid("the commit summary must not be empty"));
        }
        if request.operations.is_empty() {
            return Err(Error::invalid("a commit needs at least one operation"));
        }
        let files: Vec<&str> = request
            .operations
            .iter()
            .map(|op| match op {
                FileOperation::Add(entry) => entry.path.as_str(),
                FileOperation::DeleteFile(path) | FileOperation::DeleteFolder(path) => path.as_str(),
            })
            .take(100)
            .collect();
        let event = AuditEvent::new(&caller.name, "repo.commit", repo.audit_target(), json!({ "branch": branch, "title": request.title, "operations": request.operations.len(), "paths": files }));
        let new = NewCommit { repo_id: repo.id, branch, expected_parent, operations: request.operations, title: request.title, message: request.message, author: caller.name.clone() };
        self.meta.commit(new, event).await
    }

    /// Commits reachable from a revision, newest first.
    pub async fn commits(&self, repo: &Repo, revision: &str) -> Result<Vec<Commit>> {
        let head = self.resolve(repo, revision).await?;
        self.meta.list_commits(repo.id, &head).await
    }

    /// Branches and tags of a repo.
    pub async fn refs(&self, repo: &Repo) -> Result<Vec<GitRef>> {
        self.meta.list_refs(repo.id).await
    }

    /// Creates a branch or tag at a revision (default: the head of `main`).
    pub async fn create_ref(&self, principal: &Principal, repo: &Repo, kind: RefKind, name: &str, revision: Option<&str>) -> Result<CommitId> {
        authorize_write(principal, repo)?;
        check_ref_name(name)?;
        let target = self.resolve(repo, revision.unwrap_or(DEFAULT_BRANCH)).await?;
        let event = AuditEvent::new(principal.actor(), &format!("{}.create", kind.as_str()), repo.audit_target(), json!({ "name": name, "commit": target.as_str() }));
        self.meta.create_ref(repo.id, kind, name, &target, event).await?;
        Ok(target)
    }

    /// Deletes a branch or tag. The default branch cannot be deleted.
    pub async fn delete_ref(&self, principal: &Principal, repo: &Repo, kind: RefKind, name: &str) -> Result<()> {
        authorize_write(principal, repo)?;
        if kind == RefKind::Branch && name == DEFAULT_BRANCH {
            return Err(Error::forbidden("the default branch cannot be deleted"));
        }
        let event = AuditEvent::new(principal.actor(), &format!("{}.delete", kind.as_str()), repo.audit_target(), json!({ "name": name }));
        self.meta.delete_ref(repo.id, kind, name, event).await
    }

    // ---- vetting ---------------------------------------------------------------------------

    /// The verdict of a revision after its namespace's policy and overrides. Files whose scan of
    /// the current scanner version is missing are queued again (idempotent).
    pub async fn vetting(&self, repo: &Repo, revision: &str) -> Result<(Commit, RevisionVerdict)> {
        let (commit, files) = self.snapshot(repo, revision).await?;
        let verdict = self.judge_files(repo, &files).await?;
        Ok((commit, verdict))
    }

    /// The verdict of a file list already read (from `snapshot`), so callers holding it do not read it twice.
    pub async fn judge_files(&self, repo: &Repo, files: &[FileEntry]) -> Result<RevisionVerdict> {
        let mut sha256s: Vec<String> = files.iter().map(|f| f.sha256.to_string()).collect();
        sha256s.sort();
        sha256s.dedup();
        let results = self.meta.scan_results(&sha256s, &self.config.scanner_version).await?;
        let mut by_key: std::collections::BTreeMap<(String, String), crate::vetting::ScanResult> = results.into_iter().map(|r| ((r.sha256.to_string(), r.hint.clone()), r)).collect();
        // Scans that failed for good count as an error finding, so the revision is not left pending forever.
        for (sha256, hint, error) in self.meta.failed_scans(&sha256s).await? {
            let Ok(digest) = Digest::parse(&sha256) else { continue };
            let finding = Finding { level: Level::Error, code: "scan.failed".into(), offset: None, member: None, subject: hint.clone(), reason: format!("the scan failed: {error}") };
            by_key.entry((sha256, hint.clone())).or_insert(crate::vetting::ScanResult { sha256: digest, hint, scanner_version: self.config.scanner_version.clone(), format: "unknown".into(), findings: vec![finding], scanned_at: String::new() });
        }
        let missing: Vec<(String, String)> = files.iter().map(|f| (f.sha256.to_string(), scan_hint(f.path.as_str()))).filter(|key| !by_key.contains_key(key)).collect();
        if !missing.is_empty() {
            self.meta.enqueue_scans(&missing).await?;
        }
        let namespace = repo.name.namespace.as_str();
        let policy = self.meta.get_policy(namespace).await?.unwrap_or_default();
        let overrides = self.meta.list_overrides(namespace).await?;
        let card = self.small_text(files, "README.md").await?;
        let license_file = match self.small_text(files, "LICENSE").await? {
            Some(text) => Some(text),
            None => self.small_text(files, "LICENSE.md").await?,
        };
        let license = declared_license(card.as_deref(), license_file.as_deref());
        Ok(judge(files, &by_key, &overrides, &policy, license, card.as_deref()))
    }

    async fn small_text(&self, files: &[FileEntry], path: &str) -> Result<Option<String>> {
        match files.iter().find(|f| f.path.as_str() == path) {
            Some(file) if file.size <= 1024 * 1024 => Ok(Some(String::from_utf8_lossy(&self.blobs.read_all(&file.sha256).await?).into_owned())),
            _ => Ok(None),
        }
    }

    /// A namespace's policy (the default if none was set); visible to whoever may see the namespace's private repos.
    pub async fn policy(&self, principal: &Principal, namespace: &str) -> Result<Policy> {
        if !principal.can_see_namespace(namespace) {
            return Err(Error::NotFound(format!("no policy visible for {namespace}")));
        }
        Ok(self.meta.get_policy(namespace).await?.unwrap_or_default())
    }

    fn require_policy_admin(&self, principal: &Principal, namespace: &str) -> Result<()> {
        let user = principal.user()?;
        let allowed = principal.site_admin().is_ok() || (user.role == Role::Admin && principal.can_see_namespace(namespace));
        if allowed {
            Ok(())
        } else {
            Err(Error::forbidden(format!("changing the policy of {namespace} needs an admin token of a member, or a site admin")))
        }
    }

    /// Sets a namespace's policy (an admin token of a member, or a site admin).
    pub async fn set_policy(&self, principal: &Principal, namespace: &str, policy: Policy) -> Result<()> {
        let namespace = AccountName::parse(namespace)?;
        self.require_policy_admin(principal, namespace.as_str())?;
        if self.meta.get_account(&namespace).await?.is_none() {
            return Err(Error::NotFound(format!("no user or org named {namespace}")));
        }
        let details = json!({ "allow_pickle": policy.allow_pickle, "allowed_licenses": policy.allowed_licenses, "suspicious_blocks": policy.suspicious_blocks });
        let event = AuditEvent::new(principal.actor(), "policy.set", format!("namespace:{namespace}"), details);
        self.meta.set_policy(namespace.as_str(), &policy, event).await
    }

    /// Accepts one finding on one blob, with a written justification.
    pub async fn add_override(&self, principal: &Principal, namespace: &str, sha256: &str, code: &str, subject: &str, justification: &str) -> Result<Override> {
        let namespace = AccountName::parse(namespace)?;
        self.require_policy_admin(principal, namespace.as_str())?;
        let sha256 = Digest::parse(sha256)?;
        if code.trim().is_empty() || code.len() > 100 {
            return Err(Error::invalid("an override names the finding code it accepts"));
        }
        if justification.trim().len() < 10 || justification.len() > 4000 {
            return Err(Error::invalid("an override needs a written justification of 10 to 4000 characters"));
        }
        let item = Override { id: 0, namespace: namespace.to_string(), sha256: sha256.clone(), code: code.to_owned(), subject: subject.to_owned(), justification: justification.to_owned(), author: principal.actor(), created_at: String::new() };
        let event = AuditEvent::new(principal.actor(), "override.add", format!("namespace:{namespace}"), json!({ "sha256": sha256.as_str(), "code": code, "subject": subject, "justification": justification }));
        self.meta.add_override(&item, event).await
    }

    /// Overrides of a namespace.
    pub async fn overrides(&self, principal: &Principal, namespace: &str) -> Result<Vec<Override>> {
        if !principal.can_see_namespace(namespace) {
            return Err(Error::NotFound(format!("no policy visible for {namespace}")));
        }
        self.meta.list_overrides(namespace).await
    }

    // ---- deployments -----------------------------------------------------------------------

    /// Deploys one file of a revision under `name` (site admin). The revision is pinned to its
    /// commit; only a revision whose verdict passes its org's policy deploys, else 403 with the
    /// verdict's reasons. Without `file`, the first `.gguf`, else `model.safetensors`, is chosen.
    pub async fn deploy(&self, principal: &Principal, request: DeployRequest) -> Result<Deployment> {
        let DeployRequest { name, kind, repo: repo_name, revision, file, mut settings } = request;
        let (name, repo_name, revision, file) = (name.as_str(), &repo_name, revision.as_str(), file.as_deref());
        let admin = principal.site_admin()?;
        AccountName::parse(name).map_err(|_| Error::invalid(format!("invalid deployment name {name:?}: letters, digits, '-', '_' and '.'")))?;
        if settings.context == 0 || settings.context > 1 << 20 || settings.max_batch == 0 || settings.max_batch > 1024 || settings.threads == 0 || settings.threads > 256 {
            return Err(Error::invalid("context must be 1..=1048576, max_batch 1..=1024 and threads 1..=256"));
        }
        settings.sampling.check()?;
        let repo = self.visible_repo(principal, kind, repo_name).await?;
        let commit = self.resolve(&repo, revision).await?;
        let (_, verdict) = self.vetting(&repo, commit.as_str()).await?;
        if verdict.blocked {
            return Err(Error::forbidden(format!("{repo_name}@{commit} may not be deployed: {}", verdict.reasons.join("; "))));
        }
        let files = self.meta.list_files(&commit).await?;
        let chosen = match file {
            Some(path) => files.iter().find(|f| f.path.as_str() == path).ok_or_else(|| Error::entry_not_found(path, Some(commit.to_string())))?,
            None => files
                .iter()
                .find(|f| f.path.as_str().ends_with(".gguf"))
                .or_else(|| files.iter().find(|f| f.path.as_str() == "model.safetensors"))
                .ok_or_else(|| Error::invalid("the revision has no .gguf or model.safetensors file; name one with --file"))?,
        };
        // The revision's recommended sampling fills what the deployer left out (as vLLM reads it).
        if let Some(Ok(config)) = self.small_text(&files, "generation_config.json").await?.map(|text| serde_json::from_str::<serde_json::Value>(&text)) {
            settings.sampling = settings.sampling.or(&crate::meta::SamplingDefaults::from_generation_config(&config));
        }
        let deployment = Deployment {
            name: name.to_owned(),
            kind,
            repo: repo_name.clone(),
            commit: commit.clone(),
            file_path: chosen.path.clone(),
            file_sha256: chosen.sha256.clone(),
            settings: settings.clone(),
            created_by: admin.name.clone(),
            created_at: format_time(chrono::Utc::now()),
        };
        let details = json!({ "repo": repo_name.to_string(), "commit": commit.as_str(), "file": chosen.path.as_str(), "sha256": chosen.sha256.as_str(), "context": settings.context, "max_batch": settings.max_batch, "threads": settings.threads, "sampling": settings.sampling.to_json(), "verdict": verdict.level.map(|l| l.as_str()) });
        let event = AuditEvent::new(&admin.name, "deployment.create", format!("deployment:{name}"), details);
        self.meta.create_deployment(&deployment, event).await?;
        Ok(deployment)
    }

    /// Usage grouped as asked. Anyone sees their own; a site admin sees anyone's, by account or
    /// org. Times are RFC 3339 or dates (UTC).
    pub async fn usage(&self, principal: &Principal, since: Option<&str>, until: Option<&str>, org: Option<&str>, account: Option<&str>, group: crate::meta::UsageGroup) -> Result<Vec<crate::meta::UsageRow>> {
        let user = principal.user()?;
        let admin = user.is_admin && user.role == crate::auth::Role::Admin;
        let account = match (admin, account, org) {
            (true, account, _) => account.map(str::to_owned),
            (false, None | Some(_), Some(_)) => return Err(Error::forbidden("usage by org needs a site admin token")),
            (false, Some(other), None) if other != user.name => return Err(Error::forbidden("only a site admin sees other accounts' usage")),
            (false, _, None) => Some(user.name.clone()),
        };
        let time = |text: Option<&str>, field: &str| -> Result<Option<String>> {
            let Some(text) = text else { return Ok(None) };
            if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
                return Ok(Some(format_time(t.with_timezone(&chrono::Utc))));
            }
            match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(day) => Ok(Some(format!("{day}T00:00:00.000Z"))),
                Err(_) => Err(Error::invalid(format!("{field} must be a date (2026-11-01) or an RFC 3339 time, not {text:?}"))),
            }
        };
        let query = crate::meta::UsageQuery { since: time(since, "since")?, until: time(until, "until")?, account, org: org.map(str::to_owned), group };
        self.meta.usage(&query).await
    }

    /// Sets a quota (site admin), audited.
    pub async fn set_quota(&self, principal: &Principal, mut quota: crate::meta::Quota) -> Result<crate::meta::Quota> {
        let admin = principal.site_admin()?;
        crate::quota::validate(&quota)?;
        match &quota.subject {
            crate::meta::QuotaSubject::Token(id) => {
                self.meta.get_token(*id).await?.ok_or_else(|| Error::NotFound(format!("no token {id}")))?;
            }
            crate::meta::QuotaSubject::User(name) => {
                let account = self.meta.get_account(&AccountName::parse(name)?).await?;
                if !account.is_some_and(|a| a.kind == AccountKind::User) {
                    return Err(Error::NotFound(format!("no user {name}")));
                }
            }
            crate::meta::QuotaSubject::Org(org) => {
                let account = self.meta.get_account(&AccountName::parse(org)?).await?;
                if !account.is_some_and(|a| a.kind == AccountKind::Org) {
                    return Err(Error::NotFound(format!("no org {org}")));
                }
            }
        }
        quota.updated_at = format_time(chrono::Utc::now());
        let (scope, subject) = quota.subject.key();
        let details = json!({ "requests_per_minute": quota.requests_per_minute, "tokens_per_minute": quota.tokens_per_minute, "tokens_per_month": quota.tokens_per_month });
        let event = AuditEvent::new(&admin.name, "quota.set", format!("quota:{scope}:{subject}"), details);
        self.meta.set_quota(&quota, event).await?;
        Ok(quota)
    }

    /// Removes a quota (site admin), audited.
    pub async fn delete_quota(&self, principal: &Principal, subject: &crate::meta::QuotaSubject) -> Result<()> {
        let admin = principal.site_admin()?;
        let (scope, name) = subject.key();
        let event = AuditEvent::new(&admin.name, "quota.delete", format!("quota:{scope}:{name}"), json!({}));
        self.meta.delete_quota(subject, event).await
    }

    /// All quotas (site admin).
    pub async fn quotas(&self, principal: &Principal) -> Result<Vec<crate::meta::Quota>> {
        principal.site_admin()?;
        self.meta.list_quotas().await
    }

    /// All deployments (site admin).
    pub async fn deployments(&self, principal: &Principal) -> Result<Vec<Deployment>> {
        principal.site_admin()?;
        self.meta.list_deployments().await
    }

    /// Removes a deployment (site admin).
    pub async fn undeploy(&self, principal: &Principal, name: &str) -> Result<()> {
        let admin = principal.site_admin()?;
        let event = AuditEvent::new(&admin.name, "deployment.delete", format!("deployment:{name}"), json!({}));
        self.meta.delete_deployment(name, event).await
    }

    /// The deployments a caller may run: those whose repo it can see. A token is required.
    pub async fn runnable_deployments(&self, principal: &Principal) -> Result<Vec<Deployment>> {
        principal.user()?;
        let mut runnable = Vec::new();
        for deployment in self.meta.list_deployments().await? {
            if self.visible_repo(principal, deployment.kind, &deployment.repo).await.is_ok() {
                runnable.push(deployment);
            }
        }
        Ok(runnable)
    }

    /// One deployment the caller may run; an invisible one is `NotFound`, like a missing one.
    pub async fn runnable_deployment(&self, principal: &Principal, name: &str) -> Result<Deployment> {
        principal.user()?;
        let missing = || Error::NotFound(format!("The model `{name}` does not exist or you do not have access to it."));
        let deployment = self.meta.get_deployment(name).await?.ok_or_else(missing)?;
        self.visible_repo(principal, deployment.kind, &deployment.repo).await.map_err(|_| missing())?;
        Ok(deployment)
    }

    /// Checks, just before a deployment's bytes are loaded, that its revision still passes its
    /// org's policy (a policy may have tightened since it was deployed).
    pub async fn check_loadable(&self, deployment: &Deployment) -> Result<()> {
        let repo = self.meta.get_repo(deployment.kind, &deployment.repo).await?.ok_or_else(|| Error::NotFound(format!("repository {} is gone", deployment.repo)))?;
        let (_, verdict) = self.vetting(&repo, deployment.commit.as_str()).await?;
        if verdict.blocked {
            return Err(Error::forbidden(format!("{}@{} may no longer run: {}", deployment.repo, deployment.commit, verdict.reasons.join("; "))));
        }
        Ok(())
    }

    // ---- operations ----------------------------------------------------------------------

    /// Deletes blobs no commit references and abandoned temporary objects, both only when older
    /// than `min_age`, so uploads that are not yet committed survive. Site admin only.
    pub async fn gc(&self, principal: &Principal, min_age: chrono::Duration) -> Result<GcReport> {
        let admin = principal.site_admin()?;
        let cutoff = chrono::Utc::now() - min_age;
        // Multipart parts live at least as long as the URLs that upload them.
        let url_lifetime = chrono::Duration::try_seconds(i64::try_from(self.config.upload_url_ttl_secs).unwrap_or(i64::MAX)).unwrap_or(chrono::Duration::days(3650));
        let parts_cutoff = cutoff.min(chrono::Utc::now() - url_lifetime - chrono::Duration::hours(1));
        let referenced = self.meta.referenced_blobs().await?;
        let mut report = GcReport::default();
        for object in self.blobs.list_blobs().await? {
            report.blobs_seen += 1;
            let Some(sha256) = &object.sha256 else { continue };
            if object.last_modified > cutoff || referenced.contains(sha256.as_str()) {
                continue;
            }
            // Written again since the listing (an upload of the same bytes): not garbage.
            if self.blobs.modified(sha256).await?.is_none_or(|modified| modified > cutoff) {
                continue;
            }
            // Claim it in the serialized write path: a commit that landed since the listing wins;
            // one that comes later is refused while the tombstone stands, so no commit can ever
            // name a deleted object. Writers of the same bytes meanwhile are told to retry.
            let Some(claim) = self.meta.condemn_blob(sha256.as_str(), &stale_claims()).await? else { continue };
            if let Err(err) = self.blobs.delete_key(&object.key).await {
                // The object stays: lift the claim, so commits and uploads of it are not refused.
                self.meta.clear_tombstone(&claim).await?;
                return Err(err);
            }
            self.meta.blob_deleted(&claim).await?;
            report.blobs_deleted += 1;
            report.bytes_freed += object.size;
        }
        for object in self.blobs.list_temporary().await? {
            let cutoff = if object.key.starts_with("parts/") { parts_cutoff } else { cutoff };
            if object.last_modified <= cutoff {
                self.blobs.delete_key(&object.key).await?;
                report.temporary_deleted += 1;
            }
        }
        let event = AuditEvent::new(&admin.name, "blobs.gc", "blobs", json!({ "deleted": report.blobs_deleted, "bytes": report.bytes_freed, "temporary": report.temporary_deleted }));
        self.meta.append_audit(event).await?;
        Ok(report)
    }

    /// Recomputes the audit chain and names the first broken link. Site admin only.
    pub async fn verify_audit(&self, principal: &Principal) -> Result<AuditVerification> {
        principal.site_admin()?;
        let mut verifier = ChainVerifier::default();
        let mut after = 0;
        loop {
            let rows = self.meta.audit_after(after, 1000).await?;
            let Some(last) = rows.last() else { break };
            after = last.seq;
            for row in &rows {
                if let Err(broken) = verifier.check(row) {
                    return Ok(AuditVerification { checked: verifier.checked, broken: Some(broken) });
                }
            }
        }
        Ok(AuditVerification { checked: verifier.checked, broken: None })
    }

    /// Audit rows after `after_seq`, at most `limit`. Site admin only.
    pub async fn audit_page(&self, principal: &Principal, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>> {
        principal.site_admin()?;
        self.meta.audit_after(after_seq, limit.clamp(1, 10_000)).await
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
