//! `Hub`: verdicts, policies and overrides.

use super::*;

impl Hub {
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

    pub(super) async fn small_text(&self, files: &[FileEntry], path: &str) -> Result<Option<String>> {
        match files.iter().find(|f| f.path.as_str() == path) {
            Some(file) if file.size <= 1024 * 1024 => {
                let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(self.blob_stream(&file.sha256, None).await?).await?;
                Ok(Some(String::from_utf8_lossy(&chunks.concat()).into_owned()))
            }
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

    pub(super) fn require_policy_admin(&self, principal: &Principal, namespace: &str) -> Result<()> {
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
}
