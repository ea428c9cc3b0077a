//! The `MetaStore` port: every metadata operation the platform needs, each one transaction.
//! Implemented by `store` for SQLite and PostgreSQL; one contract suite checks both.

use std::collections::HashSet;

use crate::audit::{AuditEvent, AuditRecord};
use crate::auth::Role;
use crate::ids::{AccountName, CommitId, RepoKind, RepoName, RepoPath};
use crate::repo::{Commit, FileEntry, GitRef, RefKind, Repo};
use crate::vetting::{Override, Policy, ScanJob, ScanResult};
use crate::{Error, Result};

/// Whether an account is a person or an organisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    User,
    Org,
}

impl AccountKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Org => "org",
        }
    }
}

/// A user or an org. Users and orgs share one namespace of names, as on the Hub.
#[derive(Clone, Debug)]
pub struct Account {
    pub id: i64,
    pub name: AccountName,
    pub kind: AccountKind,
    pub is_admin: bool,
    pub created_at: String,
}

/// A token's stored facts (never its secret).
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub id: i64,
    pub user_name: String,
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A token to store.
#[derive(Clone, Debug)]
pub struct NewToken<'a> {
    pub user: &'a AccountName,
    pub name: &'a str,
    pub role: Role,
    /// sha256 of the secret; the secret itself is never stored.
    pub hash: &'a str,
    pub expires_at: Option<String>,
    /// The token it was created through, which revokes it when revoked itself.
    pub parent: Option<i64>,
}

/// What a token hash resolves to, with what authorization needs.
#[derive(Clone, Debug)]
pub struct TokenLookup {
    pub token: TokenInfo,
    pub user_id: i64,
    pub is_admin: bool,
    pub orgs: Vec<String>,
}

/// A change to the files of a branch.
#[derive(Clone, Debug)]
pub struct NewCommit {
    pub repo_id: i64,
    pub branch: String,
    /// When set, the branch head must still be this commit, or the commit is refused as a conflict.
    pub expected_parent: Option<CommitId>,
    pub operations: Vec<FileOperation>,
    pub title: String,
    pub message: String,
    pub author: String,
}

/// One operation of a commit, applied in order.
#[derive(Clone, Debug)]
pub enum FileOperation {
    /// Add or replace a file whose bytes are already in the blob store.
    Add(FileEntry),
    /// Remove one file; it must exist.
    DeleteFile(RepoPath),
    /// Remove every file under a folder; at least one must exist.
    DeleteFolder(RepoPath),
}

/// Applies commit operations to a base tree. Pure: the stores call it inside their transaction.
pub fn apply_operations(base: Vec<FileEntry>, operations: &[FileOperation]) -> Result<Vec<FileEntry>> {
    let mut files: std::collections::BTreeMap<RepoPath, FileEntry> = base.into_iter().map(|f| (f.path.clone(), f)).collect();
    for operation in operations {
        match operation {
            FileOperation::Add(entry) => {
                files.insert(entry.path.clone(), entry.clone());
            }
            FileOperation::DeleteFile(path) => {
                if files.remove(path).is_none() {
                    return Err(Error::entry_not_found(path.as_str(), None));
                }
            }
            FileOperation::DeleteFolder(folder) => {
                let before = files.len();
                files.retain(|path, _| !path.is_under(folder.as_str()));
                if files.len() == before {
                    return Err(Error::entry_not_found(folder.as_str(), None));
                }
            }
        }
    }
    // A file and a folder may not share a name: `a` and `a/b` cannot both exist. Every folder
    // above each file is looked up (neighbours in sorted order are not enough: `a-b` sorts
    // between `a` and `a/b`).
    let names: std::collections::BTreeSet<&str> = files.keys().map(RepoPath::as_str).collect();
    for path in &names {
        if let Some(file) = path.match_indices('/').map(|(at, _)| &path[..at]).find(|folder| names.contains(folder)) {
            return Err(Error::invalid(format!("{file:?} is a file, so {path:?} cannot be inside it")));
        }
    }
    Ok(files.into_values().collect())
}

/// Metadata persistence, as focused ports (accounts, repos, blobs, audit, scans, policies,
/// deployments, quotas). Each method is one transaction; each mutating method takes the audit
/// event and appends it in that same transaction, so the change and its record land together.
/// `MetaStore` is all of them: what a backend implements and what `Hub` holds.
pub trait MetaStore:
    AccountStore
    + RepoStore
    + BlobLedger
    + AuditStore
    + ScanStore
    + PolicyStore
    + DeploymentStore
    + QuotaStore
    + crate::xet::XetStore
    + crate::evals::EvalStore
    + crate::routes::RouteStore
    + crate::webhooks::WebhookStore
    + crate::pipelines::PipelineStore
    + crate::responses::ResponseStore
    + crate::files::FileStore
    + crate::vectors::VectorStoreStore
    + Send
    + Sync
    + 'static
{
}

impl<
        T: AccountStore
            + RepoStore
            + BlobLedger
            + AuditStore
            + ScanStore
            + PolicyStore
            + DeploymentStore
            + QuotaStore
            + crate::xet::XetStore
            + crate::evals::EvalStore
            + crate::routes::RouteStore
            + crate::webhooks::WebhookStore
            + crate::pipelines::PipelineStore
            + crate::responses::ResponseStore
            + crate::files::FileStore
            + crate::vectors::VectorStoreStore
            + Send
            + Sync
            + 'static,
    > MetaStore for T
{
}

/// Accounts, organisations and tokens.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
    /// Makes sure a site admin named `admin_name` exists and holds a token with `token_hash`.
    /// With `rotate`, a newly registered token revokes the admin's earlier bootstrap tokens.
    /// Returns whether anything was created.
    async fn ensure_admin_token(&self, admin_name: &AccountName, token_hash: &str, rotate: bool) -> Result<bool>;
    /// Creates a user or org; a user may be added to `member_of` in the same transaction.
    async fn create_account(&self, name: &AccountName, kind: AccountKind, member_of: Option<&AccountName>, event: AuditEvent) -> Result<Account>;
    /// Looks up an account by name.
    async fn get_account(&self, name: &AccountName) -> Result<Option<Account>>;
    /// Lists all accounts.
    async fn list_accounts(&self) -> Result<Vec<Account>>;
    /// Adds a user to an org. Conflict if already a member.
    async fn add_member(&self, org: &AccountName, user: &AccountName, event: AuditEvent) -> Result<()>;
    /// The orgs a user belongs to.
    async fn orgs_of(&self, user: &AccountName) -> Result<Vec<String>>;
    /// Stores a new token (by hash) for a user.
    async fn create_token(&self, token: NewToken<'_>, event: AuditEvent) -> Result<TokenInfo>;
    /// Looks up a token by id.
    async fn get_token(&self, id: i64) -> Result<Option<TokenInfo>>;
    /// Marks a token revoked, with every token created through it (transitively). Conflict if it
    /// already is.
    async fn revoke_token(&self, id: i64, event: AuditEvent) -> Result<TokenInfo>;
    /// Resolves a token hash, whatever its expiry or revocation (the caller checks those).
    async fn lookup_token(&self, token_hash: &str) -> Result<Option<TokenLookup>>;
    /// Lists tokens, of one user or of all.
    async fn list_tokens(&self, user: Option<&AccountName>) -> Result<Vec<TokenInfo>>;
}

/// Repositories, commits (with their files) and refs.
#[async_trait::async_trait]
pub trait RepoStore: Send + Sync {
    /// Creates a repo with its first commit on `main`. Conflict if the name is taken.
    async fn create_repo(&self, kind: RepoKind, name: &RepoName, private: bool, initial: Vec<FileEntry>, author: &str, event: AuditEvent) -> Result<Repo>;
    /// Looks up a repo.
    async fn get_repo(&self, kind: RepoKind, name: &RepoName) -> Result<Option<Repo>>;
    /// Lists repos of a kind, optionally in one namespace.
    async fn list_repos(&self, kind: RepoKind, namespace: Option<&str>) -> Result<Vec<Repo>>;
    /// Deletes a repo with its commits and refs (blobs stay until `gc`).
    async fn delete_repo(&self, repo_id: i64, event: AuditEvent) -> Result<()>;
    /// Changes a repo's visibility.
    async fn set_private(&self, repo_id: i64, private: bool, event: AuditEvent) -> Result<()>;
    /// Moves a repo to a new name (and namespace). Conflict if the name is taken.
    async fn rename_repo(&self, repo_id: i64, to: &RepoName, event: AuditEvent) -> Result<()>;
    /// Resolves a branch, tag or full commit id of this repo.
    async fn resolve(&self, repo_id: i64, revision: &str) -> Result<Option<CommitId>>;
    /// A commit of this repo.
    async fn get_commit(&self, repo_id: i64, id: &CommitId) -> Result<Option<Commit>>;
    /// The commits reachable from `head`, newest first.
    async fn list_commits(&self, repo_id: i64, head: &CommitId) -> Result<Vec<Commit>>;
    /// Every file of a commit, sorted by path.
    async fn list_files(&self, commit: &CommitId) -> Result<Vec<FileEntry>>;
    /// One file of a commit.
    async fn get_file(&self, commit: &CommitId, path: &RepoPath) -> Result<Option<FileEntry>>;
    /// Applies a commit to a branch head. The commit id goes into the audit details as `commit`.
    async fn commit(&self, new: NewCommit, event: AuditEvent) -> Result<Commit>;
    /// Branches and tags of a repo.
    async fn list_refs(&self, repo_id: i64) -> Result<Vec<GitRef>>;
    /// Creates a branch or tag. Conflict if it exists.
    async fn create_ref(&self, repo_id: i64, kind: RefKind, name: &str, target: &CommitId, event: AuditEvent) -> Result<()>;
    /// Deletes a branch or tag. NotFound if missing.
    async fn delete_ref(&self, repo_id: i64, kind: RefKind, name: &str, event: AuditEvent) -> Result<()>;
}

/// Which blobs are referenced, claimed by GC, or granted to a repo.
#[async_trait::async_trait]
pub trait BlobLedger: Send + Sync {
    /// Every sha256 that some commit still references.
    async fn referenced_blobs(&self) -> Result<HashSet<String>>;
    /// GC's claim on an unreferenced blob before deleting its object, in one write transaction:
    /// `None` if some commit references it or a live claim holds it, else the `deleting`
    /// tombstone written (over a `deleted` one, or a `deleting` one made before `stale_before` by
    /// a GC that died). While a tombstone exists, commits naming the blob are refused.
    async fn condemn_blob(&self, sha256: &str, stale_before: &str) -> Result<Option<Tombstone>>;
    /// GC deleted the object: the claim's tombstone turns `deleted`.
    async fn blob_deleted(&self, claim: &Tombstone) -> Result<()>;
    /// The blob's tombstone, if any.
    async fn blob_tombstone(&self, sha256: &str) -> Result<Option<Tombstone>>;
    /// Removes this tombstone if it is still exactly as read (a newer claim is left alone).
    async fn clear_tombstone(&self, tombstone: &Tombstone) -> Result<()>;
    /// Records that an upload to `repo_id` proved possession of the blob's bytes.
    async fn grant_blob(&self, repo_id: i64, sha256: &str) -> Result<()>;
    /// Who may reuse a stored blob: whether an upload to `repo_id` proved possession, and the
    /// repos whose commits hold it.
    async fn blob_access(&self, repo_id: i64, sha256: &str) -> Result<BlobAccess>;
}

/// The audit chain and the shared secrets kept beside it.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an event that has no other change attached (e.g. a gc run).
    async fn append_audit(&self, event: AuditEvent) -> Result<()>;
    /// Audit rows with `seq > after_seq`, oldest first, at most `limit`.
    async fn audit_after(&self, after_seq: i64, limit: i64) -> Result<Vec<AuditRecord>>;
    /// The newest audit row (the chain head), if any.
    async fn audit_head(&self) -> Result<Option<AuditRecord>>;
    /// A persistent server secret: returns the stored value, or stores and returns `candidate`.
    async fn secret(&self, key: &str, candidate: &str) -> Result<String>;
}

/// The scan queue and scan results.
#[async_trait::async_trait]
pub trait ScanStore: Send + Sync {
    /// Queues scans of `(sha256, hint)` pairs not queued yet (commits do this in their own transaction).
    async fn enqueue_scans(&self, keys: &[(String, String)]) -> Result<()>;
    /// Claims the next due scan job for `lease_secs`; a job whose lease ran out is claimable again.
    async fn claim_scan_job(&self, lease_secs: i64) -> Result<Option<ScanJob>>;
    /// Extends a running job's lease to `lease_secs` from now, if the claim made at `attempts` still
    /// holds it; `false` when another worker has taken the job over (or it is gone).
    async fn renew_scan_job(&self, job_id: i64, attempts: i64, lease_secs: i64) -> Result<bool>;
    /// Stores a scan result and removes its job, in one transaction.
    /// Stores a job's result and closes it, with its audit row (`scan.completed`).
    async fn finish_scan_job(&self, job_id: i64, result: &ScanResult, event: AuditEvent) -> Result<()>;
    /// Puts a failed job back for `run_after` (RFC 3339), or marks it failed for good when `None`.
    async fn retry_scan_job(&self, job_id: i64, error: &str, run_after: Option<String>) -> Result<()>;
    /// Stored results of one scanner version for these blobs.
    async fn scan_results(&self, sha256s: &[String], scanner_version: &str) -> Result<Vec<ScanResult>>;
    /// Jobs that failed for good, by `(sha256, hint)`, with their last error.
    async fn failed_scans(&self, sha256s: &[String]) -> Result<Vec<(String, String, String)>>;
}

/// Vetting policies and overrides.
#[async_trait::async_trait]
pub trait PolicyStore: Send + Sync {
    /// A namespace's policy, if one was set.
    async fn get_policy(&self, namespace: &str) -> Result<Option<Policy>>;
    /// Sets a namespace's policy.
    async fn set_policy(&self, namespace: &str, policy: &Policy, event: AuditEvent) -> Result<()>;
    /// Records an override.
    async fn add_override(&self, item: &Override, event: AuditEvent) -> Result<Override>;
    /// Overrides of a namespace.
    async fn list_overrides(&self, namespace: &str) -> Result<Vec<Override>>;
}

/// Deployments.
#[async_trait::async_trait]
pub trait DeploymentStore: Send + Sync {
    /// Stores a deployment. Conflict if the name is taken.
    async fn create_deployment(&self, deployment: &Deployment, event: AuditEvent) -> Result<()>;
    /// All deployments, by name.
    async fn list_deployments(&self) -> Result<Vec<Deployment>>;
    /// One deployment by name.
    async fn get_deployment(&self, name: &str) -> Result<Option<Deployment>>;
    /// Removes a deployment. NotFound if missing.
    async fn delete_deployment(&self, name: &str, event: AuditEvent) -> Result<()>;
}

/// Quotas, their counters, and usage records.
#[async_trait::async_trait]
pub trait QuotaStore: Send + Sync {
    /// Sets (creates or replaces) a quota, audited.
    async fn set_quota(&self, quota: &Quota, event: AuditEvent) -> Result<()>;
    /// Removes a quota, audited; NotFound if there is none.
    async fn delete_quota(&self, subject: &QuotaSubject, event: AuditEvent) -> Result<()>;
    /// All quotas.
    async fn list_quotas(&self) -> Result<Vec<Quota>>;
    /// In one transaction: adds to counters (each atomically across replicas) and reads others;
    /// returns the new totals (requests, tokens) of the charged ones and the totals of the read
    /// ones (zero where nothing was counted yet), in order. Periods are `m:<minute>`, `M:<month>`.
    async fn charge(&self, charges: &[Charge], reads: &[(QuotaSubject, String)]) -> Result<(Vec<(i64, i64)>, Vec<(i64, i64)>)>;
    /// Appends usage records and adds their tokens to quota counters, in one transaction (not
    /// audited: they are the audit of use).
    async fn record_usage(&self, records: &[UsageRecord], charges: &[Charge]) -> Result<()>;
    /// Usage grouped as asked, by key.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>>;
}

/// A name bound to one file of one pinned revision, with engine settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployment {
    pub name: String,
    pub kind: RepoKind,
    pub repo: RepoName,
    pub commit: CommitId,
    pub file_path: RepoPath,
    pub file_sha256: crate::ids::Digest,
    pub settings: EngineSettings,
    pub created_by: String,
    pub created_at: String,
}

/// Engine settings of a deployment, and its prices.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    pub context: u32,
    pub max_batch: u32,
    pub threads: u32,
    /// Price of a million prompt tokens, in millionths of the currency unit (0: free).
    pub price_prompt_micros: u64,
    /// Price of a million completion tokens, likewise.
    pub price_completion_micros: u64,
    /// The longest an ordinary caller may keep the model resident through Ollama's
    /// `keep_alive`, in seconds; longer (or for good), and unloading, need an admin token.
    pub keep_alive_max_secs: u64,
    /// Sampling used when a request leaves a parameter out.
    pub sampling: SamplingDefaults,
}

/// A deployment's default sampling parameters: set at deploy time, else read from the revision's
/// `generation_config.json` (as vLLM does); a field left `None` falls back to the model file's
/// own recommendation (GGUF `general.sampling.*`) and then to the API's default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// 0: off.
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    /// The most tokens an answer may have when the request names no limit.
    pub max_tokens: Option<u32>,
}

/// The allowed range of each sampling default, as the error states it.
const TEMPERATURE: &str = "between 0 and 2";
const TOP_P: &str = "above 0 and at most 1";
const MIN_P: &str = "between 0 and 1";
const REPETITION_PENALTY: &str = "above 0 and at most 10";
const TOP_K: &str = "0 (off) to 1000000";
const MAX_TOKENS: &str = "at least 1";

fn valid_temperature(v: &f32) -> bool {
    v.is_finite() && (0.0..=2.0).contains(v)
}
fn valid_top_p(v: &f32) -> bool {
    v.is_finite() && *v > 0.0 && *v <= 1.0
}
fn valid_min_p(v: &f32) -> bool {
    v.is_finite() && (0.0..=1.0).contains(v)
}
fn valid_repetition_penalty(v: &f32) -> bool {
    v.is_finite() && *v > 0.0 && *v <= 10.0
}
fn valid_top_k(k: &u32) -> bool {
    *k <= 1_000_000
}
fn valid_max_tokens(n: &u32) -> bool {
    *n >= 1
}

impl SamplingDefaults {
    /// Checks every value's range; the error names the field.
    pub fn check(&self) -> crate::Result<()> {
        let problems = [
            ("temperature", TEMPERATURE, self.temperature.is_some_and(|v| !valid_temperature(&v))),
            ("top_p", TOP_P, self.top_p.is_some_and(|v| !valid_top_p(&v))),
            ("min_p", MIN_P, self.min_p.is_some_and(|v| !valid_min_p(&v))),
            ("repetition_penalty", REPETITION_PENALTY, self.repetition_penalty.is_some_and(|v| !valid_repetition_penalty(&v))),
            ("top_k", TOP_K, self.top_k.is_some_and(|k| !valid_top_k(&k))),
            ("max_tokens", MAX_TOKENS, self.max_tokens.is_some_and(|n| !valid_max_tokens(&n))),
        ];
        match problems.iter().find(|(_, _, bad)| *bad) {
            Some((name, range, _)) => Err(crate::Error::invalid(format!("sampling default {name} must be {range}"))),
            None => Ok(()),
        }
    }

    /// These defaults, with `other`'s filling the fields these leave out.
    pub fn or(&self, other: &SamplingDefaults) -> SamplingDefaults {
        SamplingDefaults {
            temperature: self.temperature.or(other.temperature),
            top_p: self.top_p.or(other.top_p),
            top_k: self.top_k.or(other.top_k),
            min_p: self.min_p.or(other.min_p),
            repetition_penalty: self.repetition_penalty.or(other.repetition_penalty),
            max_tokens: self.max_tokens.or(other.max_tokens),
        }
    }

    /// The defaults a Hugging Face `generation_config.json` recommends (the keys vLLM reads:
    /// `temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`, `max_new_tokens`). A
    /// config with `do_sample: false` asks for greedy decoding. Values out of range are left out.
    pub fn from_generation_config(json: &serde_json::Value) -> SamplingDefaults {
        // Each value on its own: one bad key does not discard the others.
        let float = |key: &str| json.get(key).and_then(serde_json::Value::as_f64).map(|v| v as f32);
        let count = |key: &str| json.get(key).and_then(serde_json::Value::as_u64).and_then(|k| u32::try_from(k).ok());
        let greedy = json.get("do_sample") == Some(&serde_json::Value::Bool(false));
        SamplingDefaults {
            temperature: if greedy { Some(0.0) } else { float("temperature").filter(valid_temperature) },
            top_p: float("top_p").filter(valid_top_p),
            top_k: count("top_k").filter(valid_top_k),
            min_p: float("min_p").filter(valid_min_p),
            repetition_penalty: float("repetition_penalty").filter(valid_repetition_penalty),
            max_tokens: count("max_new_tokens").filter(valid_max_tokens),
        }
    }

    /// As JSON, only the fields that are set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        let mut put = |key: &str, value: Option<serde_json::Value>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        put("temperature", self.temperature.map(|v| serde_json::json!(v)));
        put("top_p", self.top_p.map(|v| serde_json::json!(v)));
        put("top_k", self.top_k.map(|v| serde_json::json!(v)));
        put("min_p", self.min_p.map(|v| serde_json::json!(v)));
        put("repetition_penalty", self.repetition_penalty.map(|v| serde_json::json!(v)));
        put("max_tokens", self.max_tokens.map(|v| serde_json::json!(v)));
        serde_json::Value::Object(map)
    }

    /// Reads what `to_json` wrote (unknown or ill-typed keys are left out).
    pub fn from_json(json: &serde_json::Value) -> SamplingDefaults {
        let float = |key: &str| json.get(key).and_then(serde_json::Value::as_f64).map(|v| v as f32);
        let count = |key: &str| json.get(key).and_then(serde_json::Value::as_u64).and_then(|k| u32::try_from(k).ok());
        SamplingDefaults { temperature: float("temperature"), top_p: float("top_p"), top_k: count("top_k"), min_p: float("min_p"), repetition_penalty: float("repetition_penalty"), max_tokens: count("max_tokens") }
    }
}

/// Ollama's own default for `keep_alive`: five minutes.
pub const DEFAULT_KEEP_ALIVE_MAX_SECS: u64 = 300;

impl EngineSettings {
    /// What a request costs at these prices, in millionths of the currency unit.
    pub fn cost_micros(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.price_prompt_micros as f64 + completion_tokens as f64 * self.price_completion_micros as f64) / 1e6
    }
}

/// One inference request, as usage accounting keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRecord {
    /// When it ended (RFC 3339, UTC).
    pub at: String,
    pub account: String,
    pub token_id: i64,
    pub deployment: String,
    /// Which API and route: `openai.chat`, `ollama.generate`, ...
    pub api: String,
    /// `ok`, `cancelled`, `failed`, `rejected`, `invalid`.
    pub outcome: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub latency_ms: u64,
    /// Time to the first generated text, when any came.
    pub ttft_ms: Option<u64>,
    /// In millionths of the currency unit, at the deployment's prices when it ran.
    pub cost_micros: f64,
}

/// Who a quota limits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaSubject {
    /// One API token, by id.
    Token(i64),
    /// Every token of one user, together (so minting new tokens escapes nothing).
    User(String),
    /// Every member of an org, together.
    Org(String),
}

impl QuotaSubject {
    /// The (scope, subject) pair rows are keyed by.
    pub fn key(&self) -> (&'static str, String) {
        match self {
            QuotaSubject::Token(id) => ("token", id.to_string()),
            QuotaSubject::User(name) => ("user", name.clone()),
            QuotaSubject::Org(name) => ("org", name.clone()),
        }
    }

    pub fn from_key(scope: &str, subject: &str) -> Result<Self> {
        match scope {
            "token" => subject.parse().map(QuotaSubject::Token).map_err(|_| Error::invalid(format!("a token quota names a token id, not {subject:?}"))),
            "user" => Ok(QuotaSubject::User(subject.to_owned())),
            "org" => Ok(QuotaSubject::Org(subject.to_owned())),
            other => Err(Error::invalid(format!("a quota is for a token, a user or an org, not {other:?}"))),
        }
    }
}

/// An addition to one quota counter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    pub subject: QuotaSubject,
    /// `m:<minute>` or `M:<month>`.
    pub period: String,
    pub requests: i64,
    pub tokens: i64,
}

/// Limits on one subject; `None` is no limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    pub subject: QuotaSubject,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_month: Option<u64>,
    pub updated_at: String,
}

impl Quota {
    /// Whether it limits a request through `token_id` by `user`, a member of `orgs`.
    pub fn applies_to(&self, token_id: i64, user: &str, orgs: &[String]) -> bool {
        match &self.subject {
            QuotaSubject::Token(id) => *id == token_id,
            QuotaSubject::User(name) => name == user,
            QuotaSubject::Org(org) => orgs.contains(org),
        }
    }
}

/// GC's mark on a blob: `deleting` while it deletes the object, `deleted` after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub sha256: String,
    pub state: String,
    pub created_at: String,
}

/// Who may reuse a stored blob (content-addressed storage is shared by every tenant, so knowing
/// a digest must never be enough to use it).
#[derive(Clone, Debug, Default)]
pub struct BlobAccess {
    /// An upload to the repo asking proved possession of the bytes.
    pub granted: bool,
    /// `(namespace, private)` of each repo whose commits hold the blob.
    pub holders: Vec<(String, bool)>,
    /// GC claimed or deleted it: its bytes must be uploaded again.
    pub tombstoned: bool,
}

/// How a usage report groups requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroup {
    Day,
    Token,
    Deployment,
    Account,
}

impl UsageGroup {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "day" => Ok(UsageGroup::Day),
            "token" => Ok(UsageGroup::Token),
            "deployment" => Ok(UsageGroup::Deployment),
            "account" | "user" => Ok(UsageGroup::Account),
            other => Err(Error::invalid(format!("usage can be grouped by day, token, deployment or account, not {other:?}"))),
        }
    }
}

/// Which requests a usage report covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageQuery {
    /// From this time on (RFC 3339 or a date), inclusive.
    pub since: Option<String>,
    /// Before this time, exclusive.
    pub until: Option<String>,
    /// Only this account's requests.
    pub account: Option<String>,
    /// Only requests of this org's current members.
    pub org: Option<String>,
    pub group: UsageGroup,
}

/// One group of a usage report.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRow {
    pub key: String,
    pub requests: u64,
    /// Requests that did not end `ok`.
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Digest;

    fn file(path: &str) -> FileEntry {
        FileEntry { path: RepoPath::parse(path).unwrap(), size: 1, sha256: Digest::parse(&"a".repeat(64)).unwrap(), git_oid: "x".into(), lfs: false }
    }

    fn check(base: &[&str], operations: Vec<FileOperation>, expect: Result<Vec<&str>, ()>) {
        let got = apply_operations(base.iter().map(|p| file(p)).collect(), &operations).map(|files| files.iter().map(|f| f.path.as_str().to_owned()).collect::<Vec<_>>()).map_err(|_| ());
        assert_eq!(got, expect.map(|v| v.into_iter().map(String::from).collect()));
    }

    fn path(p: &str) -> RepoPath {
        RepoPath::parse(p).unwrap()
    }

    #[test]
    fn operations_apply_in_order() {
        check(&["a", "d/x", "d/y", "dz"], vec![FileOperation::DeleteFolder(path("d"))], Ok(vec!["a", "dz"]));
        check(&["a"], vec![FileOperation::Add(file("b")), FileOperation::DeleteFile(path("a"))], Ok(vec!["b"]));
        check(&["a"], vec![FileOperation::DeleteFile(path("missing"))], Err(()));
        check(&["a"], vec![FileOperation::DeleteFolder(path("nothing"))], Err(()));
        check(&["a"], vec![FileOperation::Add(file("a/b"))], Err(()));
        // Regression (#11.14): a name sorting between the file and the folder hid the clash.
        check(&[], vec![FileOperation::Add(file("a")), FileOperation::Add(file("a-b")), FileOperation::Add(file("a/b"))], Err(()));
        check(&["a-b", "x/y/z"], vec![FileOperation::Add(file("x/y"))], Err(()));
        check(&["a-b"], vec![FileOperation::Add(file("a/b")), FileOperation::Add(file("ab"))], Ok(vec!["a-b", "a/b", "ab"]));
    }
}
