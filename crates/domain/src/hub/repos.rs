//! `Hub`: repositories, commits, refs, files and uploads.

use super::*;

impl Hub {
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
        let stored_size = self.content_size(&sha256).await?.ok_or_else(never_uploaded)?;
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
    pub(super) async fn settle_written(&self, sha256: &Digest) -> Result<()> {
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
}
