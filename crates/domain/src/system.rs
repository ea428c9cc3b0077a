//! Operations of the server's own machinery, on the `Hub`: the scan worker, the model runtime,
//! audit checkpoints, bootstrap and signed-URL uploads (whose signature is their authorization).
//! They take no principal, and they are the only way outside this crate to the metadata store
//! and the blob store: `Hub` does not hand out its store handles, so nothing can write past the
//! authorization checks of the user-facing operations.

use std::ops::Range;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::audit::{AuditEvent, AuditRecord};
use crate::blobs::Expect;
use crate::hub::Hub;
use crate::ids::{AccountName, CommitId, Digest, RepoKind, RepoName, RepoPath};
use crate::meta::{Deployment, Quota};
use crate::quota::{Admission, Exceeded};
use crate::repo::FileEntry;
use crate::vetting::{ScanJob, ScanResult};
use crate::Result;

impl Hub {
    // ---- blobs ---------------------------------------------------------------------------

    /// The size of a stored blob, or `None`.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        self.blobs.size_of(digest).await
    }

    /// A stored blob's bytes (a range of them). Callers have resolved the digest through an
    /// authorized operation (a file of a visible revision, a deployment, a scan job).
    /// Files uploaded through Xet are rebuilt from their xorbs.
    pub async fn blob_stream(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BoxStream<'static, Result<Bytes>>> {
        match self.blobs.get(digest, range.clone()).await {
            Err(crate::Error::NotFound(why)) => self.xet_stream(digest, range).await?.ok_or(crate::Error::NotFound(why)),
            other => other,
        }
    }

    /// The size of a file's bytes, stored whole or through Xet, or `None`.
    pub async fn content_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.blobs.size_of(digest).await? {
            Some(size) => Ok(Some(size)),
            None => self.xet_size(digest).await,
        }
    }

    /// A signed basic upload: streams the bytes, checks them against the digest and size, and
    /// records the possession for the repo the URL was signed for.
    pub async fn upload_object<E: std::fmt::Display>(&self, kind: RepoKind, name: &RepoName, digest: &Digest, size: u64, stream: BoxStream<'_, std::result::Result<Bytes, E>>) -> Result<()> {
        self.blobs.put_stream(stream, Expect { sha256: Some(digest.clone()), size: Some(size), max_size: None }).await?;
        self.record_upload(kind, name, digest).await
    }

    /// One part of a signed multipart upload; returns its ETag.
    pub async fn upload_part<E: std::fmt::Display>(&self, digest: &Digest, part: u32, stream: BoxStream<'_, std::result::Result<Bytes, E>>, max_size: u64) -> Result<String> {
        self.blobs.put_part(digest, part, stream, max_size).await
    }

    /// Completes a signed multipart upload (digest and size checked) and records the possession.
    pub async fn complete_upload(&self, kind: RepoKind, name: &RepoName, digest: &Digest, size: u64, n_parts: u32) -> Result<()> {
        self.blobs.complete_parts(digest, size, n_parts).await?;
        self.record_upload(kind, name, digest).await
    }

    // ---- the runtime ---------------------------------------------------------------------

    /// A deployment by name, for the runtime (no authorization: the request that led here was
    /// authorized for it, or it is the runtime's own restart).
    pub async fn deployment_by_name(&self, name: &str) -> Result<Option<Deployment>> {
        self.meta.get_deployment(name).await
    }

    /// A file of a deployment's commit (an encoder's tokenizer and config beside its weights).
    pub async fn commit_file(&self, commit: &CommitId, path: &RepoPath) -> Result<Option<FileEntry>> {
        self.meta.get_file(commit, path).await
    }

    // ---- quotas --------------------------------------------------------------------------

    /// Every quota definition (the admission cache re-reads them).
    pub async fn quota_definitions(&self) -> Result<Vec<Quota>> {
        self.meta.list_quotas().await
    }

    /// Admits a request under `quotas` (see `quota::admit`).
    pub async fn admit(&self, principal: &crate::auth::Principal, quotas: &[Quota], prompt_tokens: u64) -> Result<std::result::Result<Admission, Exceeded>> {
        crate::quota::admit(self.meta.as_ref(), principal, quotas, prompt_tokens).await
    }

    // ---- scans ---------------------------------------------------------------------------

    /// Claims the next due scan job under a lease.
    pub async fn claim_scan_job(&self, lease_secs: i64) -> Result<Option<ScanJob>> {
        self.meta.claim_scan_job(lease_secs).await
    }

    /// Extends a running job's lease; `false` once another worker took it over.
    pub async fn renew_scan_job(&self, job: &ScanJob, lease_secs: i64) -> Result<bool> {
        self.meta.renew_scan_job(job.id, job.attempts, lease_secs).await
    }

    /// Stores a job's result and closes it, audited (`scan.completed`: the file's digest, the
    /// scanner, its format and worst finding; no repo, since one blob may be in many).
    pub async fn finish_scan_job(&self, job: &ScanJob, result: &ScanResult) -> Result<()> {
        let worst = result.findings.iter().map(|f| f.level).max().map_or("safe", |l| l.as_str());
        let details = serde_json::json!({ "hint": result.hint, "scanner_version": result.scanner_version, "format": result.format, "findings": result.findings.len(), "level": worst });
        let event = AuditEvent::new("system", "scan.completed", format!("blob:{}", result.sha256.as_str()), details);
        self.meta.finish_scan_job(job.id, result, event).await
    }

    /// Schedules a failed job again at `run_after`, or marks it failed for good (`None`).
    pub async fn retry_scan_job(&self, job: &ScanJob, error: &str, run_after: Option<String>) -> Result<()> {
        self.meta.retry_scan_job(job.id, error, run_after).await
    }

    /// Stored scan results of these blobs by a scanner version.
    pub async fn scan_results(&self, sha256s: &[String], scanner_version: &str) -> Result<Vec<ScanResult>> {
        self.meta.scan_results(sha256s, scanner_version).await
    }

    // ---- audit and bootstrap -------------------------------------------------------------

    /// The newest audit row, if any.
    pub async fn audit_head(&self) -> Result<Option<AuditRecord>> {
        self.meta.audit_head().await
    }

    /// Stores a named record outside the content-addressed space (audit checkpoints).
    pub async fn put_record(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.blobs.put_record(key, bytes).await
    }

    /// The last `newest` named records under a prefix, in key order.
    pub async fn records(&self, prefix: &str, newest: usize) -> Result<Vec<(String, Bytes)>> {
        self.blobs.records(prefix, newest).await
    }

    /// Makes sure the site administrator holds the bootstrap token (see `MetaStore`).
    pub async fn ensure_admin_token(&self, admin_name: &AccountName, token_hash: &str, rotate: bool) -> Result<bool> {
        self.meta.ensure_admin_token(admin_name, token_hash, rotate).await
    }

    // ---- eval runs -------------------------------------------------------------------------

    /// Claims the oldest queued run, or one whose worker's lease expired, for `lease_secs`.
    pub async fn claim_eval_run(&self, lease_secs: i64) -> Result<Option<crate::evals::EvalRun>> {
        let now = chrono::Utc::now();
        self.meta.claim_run(&crate::format_time(now), &crate::format_time(now + chrono::Duration::seconds(lease_secs))).await
    }

    /// Extends a claimed run's lease and stores its summary so far; `false` once it was
    /// canceled or deleted.
    pub async fn renew_eval_run(&self, run_id: &str, lease_secs: i64, summary: &serde_json::Value) -> Result<bool> {
        let until = crate::format_time(chrono::Utc::now() + chrono::Duration::seconds(lease_secs));
        self.meta.renew_run(run_id, &until, summary).await
    }

    /// The eval a claimed run belongs to.
    pub async fn eval_of_run(&self, run: &crate::evals::EvalRun) -> Result<Option<crate::evals::Eval>> {
        self.meta.get_eval(&run.eval_id).await
    }

    /// A claimed run's output items so far (a resumed run skips them).
    pub async fn run_output_items(&self, run_id: &str) -> Result<Vec<crate::evals::OutputItem>> {
        self.meta.output_items(run_id).await
    }

    /// Stores one output item of a run in progress.
    pub async fn put_eval_output_item(&self, item: &crate::evals::OutputItem) -> Result<()> {
        self.meta.put_output_item(item).await
    }

    /// Ends a run in progress, audited as the system; `false` if it had been canceled or deleted.
    pub async fn finish_eval_run(&self, run: &crate::evals::EvalRun, status: crate::evals::RunStatus, summary: &serde_json::Value) -> Result<bool> {
        let action = format!("eval.run.{}", if status == crate::evals::RunStatus::Completed { "succeeded" } else { "failed" });
        let details = serde_json::json!({ "eval": run.eval_id, "result_counts": summary.get("result_counts"), "error": summary.get("error") });
        let event = crate::audit::AuditEvent::new("system", &action, format!("evalrun:{}", run.id), details);
        self.meta.finish_run(&run.id, status, summary, event).await
    }

    /// The principal a run acts as: the token that created it, if it is still valid.
    pub async fn principal_of_token(&self, token_id: i64) -> Result<crate::auth::Principal> {
        let gone = || crate::Error::Unauthenticated("the token that started this run was revoked, expired or deleted".into());
        let token = self.meta.get_token(token_id).await?.ok_or_else(gone)?;
        let expires = match &token.expires_at {
            Some(at) => Some(chrono::DateTime::parse_from_rfc3339(at).map_err(crate::Error::internal)?.with_timezone(&chrono::Utc)),
            None => None,
        };
        if token.revoked_at.is_some() || expires.is_some_and(|at| at <= chrono::Utc::now()) {
            return Err(gone());
        }
        let name = AccountName::parse(&token.user_name)?;
        let account = self.meta.get_account(&name).await?.ok_or_else(gone)?;
        let orgs = self.meta.orgs_of(&name).await?;
        Ok(crate::auth::Principal::User(crate::auth::UserPrincipal {
            user_id: account.id,
            name: token.user_name.clone(),
            is_admin: account.is_admin,
            role: token.role,
            token_id: token.id,
            token_name: token.name.clone(),
            token_expires_at: expires,
            orgs,
            workspace: None,
        }))
    }
}
