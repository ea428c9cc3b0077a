//! Mantle's admin API: users, orgs, tokens, gc, audit.

use serde::{Deserialize, Serialize};

/// `POST /api/admin/users`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

/// `POST /api/admin/orgs`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub name: String,
}

/// `POST /api/admin/orgs/{org}/members`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

/// A user or org.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    pub id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub is_admin: bool,
    pub created_at: String,
}

/// `POST /api/admin/tokens`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub user: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Like `30d`, `12h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// A token's facts; `token` (the secret) only in the create response.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Token {
    pub id: i64,
    pub user: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /api/admin/gc`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Only objects older than this many seconds are removed (default one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_age_secs: Option<i64>,
}

/// `gc` outcome.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GcReport {
    pub blobs_seen: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    pub temporary_deleted: u64,
    #[serde(default)]
    pub xet_files_deleted: u64,
    #[serde(default)]
    pub xorbs_deleted: u64,
}

/// `GET /api/admin/audit/verify`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerify {
    pub ok: bool,
    pub checked: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken_seq: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The newest signed checkpoint the rows agree with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_through: Option<i64>,
}

/// A signed checkpoint of the audit chain: its head (`seq`, `hash`) at `time`, signed with the
/// server's Ed25519 key over `mantle-audit-checkpoint/v1\nseq=..\nhash=..\ntime=..\n`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AuditCheckpoint {
    pub seq: i64,
    pub hash: String,
    pub time: String,
    /// Base64 of the 64-byte signature.
    pub signature: String,
    /// Hex of the 32-byte public key that made it.
    pub public_key: String,
}

/// `GET /api/audit/public-key`: the key audit checkpoints are signed with.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPublicKey {
    pub algorithm: String,
    /// Hex of the 32-byte Ed25519 public key.
    pub public_key: String,
}

/// One audit row, as exported (JSONL).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
    pub prev_hash: String,
    pub hash: String,
}

/// `POST /api/admin/deployments`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    pub name: String,
    /// `namespace/name`.
    pub repo: String,
    /// Branch, tag or commit; pinned to its commit.
    #[serde(default = "default_revision")]
    pub revision: String,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default = "default_context")]
    pub context: u32,
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    #[serde(default = "default_threads")]
    pub threads: u32,
    /// Price of a million prompt tokens (currency units, e.g. 0.15), for usage costs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_prompt: Option<f64>,
    /// Price of a million completion tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_completion: Option<f64>,
    /// The longest (seconds) an ordinary caller's Ollama `keep_alive` keeps the model resident
    /// (default 300); pinning longer and unloading need an admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive_max: Option<u64>,
    /// Sampling used when a request leaves a parameter out; what is not given here comes from
    /// the revision's `generation_config.json`, then the model file, then the API's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingDefaults>,
}

/// A deployment's default sampling parameters (each optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// The most tokens an answer may have when a request names no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

fn default_revision() -> String {
    "main".into()
}
fn default_context() -> u32 {
    2048
}
fn default_max_batch() -> u32 {
    8
}
fn default_threads() -> u32 {
    2
}

/// A deployment.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deployment {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub repo: String,
    pub commit: String,
    pub file: String,
    pub sha256: String,
    pub context: u32,
    pub max_batch: u32,
    pub threads: u32,
    pub created_by: String,
    pub created_at: String,
    /// Loaded in the replica that answered (absent from older servers).
    #[serde(default)]
    pub resident: bool,
    /// Prices of a million prompt and completion tokens.
    #[serde(default)]
    pub price_prompt: f64,
    #[serde(default)]
    pub price_completion: f64,
    /// Seconds an ordinary caller's `keep_alive` may keep the model resident.
    #[serde(default)]
    pub keep_alive_max: u64,
    /// Default sampling parameters stored with the deployment.
    #[serde(default)]
    pub sampling: SamplingDefaults,
    /// Where the deployment is resident (in the replica that answered): the defaults in effect,
    /// the stored ones over the model file's own recommendation (GGUF `general.sampling.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_sampling: Option<SamplingDefaults>,
}

/// `GET /api/usage`: requests, tokens and cost, grouped.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageReport {
    /// `day`, `token`, `deployment` or `account`.
    pub by: String,
    pub rows: Vec<UsageRow>,
    pub total: UsageRow,
}

/// One group of a usage report (or the total, with an empty key).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageRow {
    pub key: String,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// In currency units, at each deployment's prices when the requests ran.
    pub cost: f64,
}

/// A quota: limits on one token or one org (all members together).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Quota {
    /// `token` or `org`.
    pub scope: String,
    /// The token id or the org name.
    pub subject: String,
    #[serde(flatten)]
    pub limits: SetQuota,
    #[serde(default)]
    pub updated_at: String,
}

/// `PUT /api/admin/quotas/{scope}/{subject}`: the limits; absent ones are unlimited.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetQuota {
    #[serde(default)]
    pub requests_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    #[serde(default)]
    pub tokens_per_month: Option<u64>,
}

/// A release route: the name clients put in `model`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Route {
    pub name: String,
    /// The deployment that answers callers not on the canary.
    pub stable: String,
    /// The deployment being tried, if any.
    pub canary: Option<String>,
    /// The share of callers (percent) the canary answers; each caller stays on its side.
    pub canary_percent: u8,
    /// A deployment that gets a copy of some requests (answers discarded), if any.
    #[serde(default)]
    pub shadow: Option<String>,
    /// The share of requests (percent) copied to the shadow deployment.
    #[serde(default)]
    pub shadow_percent: u8,
    /// A stepped rollout under analysis, while one runs (steps, bake time, SLOs, where it is).
    #[serde(default)]
    pub rollout: Option<serde_json::Value>,
    pub updated_at: String,
}

/// Why a route changes and what the change rests on.
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteNote {
    #[serde(default)]
    pub reason: Option<String>,
    /// Eval runs whose results justify the change; their results are kept in the history.
    #[serde(default)]
    pub eval_runs: Vec<String>,
}

/// `PUT /api/admin/routes/{name}`: create a route, or point it at one deployment.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoute {
    pub stable: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub eval_runs: Vec<String>,
}

/// `POST /api/admin/routes/{name}/canary`: send a share of the callers to a deployment.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRoute {
    pub deployment: String,
    /// 1 to 99; with `analysis`, its first step.
    #[serde(default)]
    pub percent: Option<u8>,
    /// Roll the canary out in steps under analysis: promoted after the last step, rolled back
    /// by itself when it breaks its SLOs.
    #[serde(default)]
    pub analysis: Option<RolloutAnalysis>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub eval_runs: Vec<String>,
}

/// One change of a route: who, when, from which deployments and revisions to which, why, and
/// the evidence.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteChange {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
    pub reason: String,
    pub evidence: serde_json::Value,
}

/// A stepped rollout: percentages, a bake time per step, SLOs the canary's requests must hold.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutAnalysis {
    /// Increasing percentages ending at 100, e.g. `[5, 25, 50, 100]`.
    pub steps: Vec<u8>,
    /// Seconds each step runs before it is analysed (default 300).
    #[serde(default)]
    pub bake_secs: Option<u64>,
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    #[serde(default)]
    pub max_latency_p95_ms: Option<u64>,
    /// Time to first token, 95th percentile.
    #[serde(default)]
    pub max_ttft_p95_ms: Option<u64>,
    #[serde(default)]
    pub min_tokens_per_sec: Option<f64>,
    /// Against the stable deployment over the same window: the largest fraction by which the
    /// canary's median time to first token may exceed the baseline's when a one-sided
    /// Mann-Whitney U test finds it significantly slower (p < 0.05).
    #[serde(default)]
    pub max_ttft_regression: Option<f64>,
    /// Requests a step needs before it is judged (default 20); fewer is inconclusive: it waits.
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// Failed analyses tolerated before the rollback (default 0).
    #[serde(default)]
    pub failure_limit: Option<u32>,
    /// Seconds of shadow traffic before the first step (a copy of every request goes to the
    /// candidate, its answers discarded, and it must hold the SLOs; default 0: none).
    #[serde(default)]
    pub shadow_secs: Option<u64>,
}

/// `POST /api/admin/routes/{name}/shadow`: copy a share of the route's requests to a deployment
/// (its answers discarded, its outcomes recorded); without `deployment`, stop.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRoute {
    #[serde(default)]
    pub deployment: Option<String>,
    /// Percent of the requests copied, 1 to 100 (default 100).
    #[serde(default)]
    pub percent: Option<u8>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub eval_runs: Vec<String>,
}

/// `PUT /api/admin/routes/{name}/pipeline`: release every push to a repo's branch to this route
/// through a pipeline (the repo's `.mantle/pipeline.yaml`, or `spec` given here).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindPipeline {
    /// `namespace/name` of the repo whose pushes are released.
    pub repo: String,
    /// `model` (default) or `dataset`.
    #[serde(default)]
    pub repo_type: Option<String>,
    /// The branch (default `main`).
    #[serde(default)]
    pub branch: Option<String>,
    /// The pipeline as YAML; when given, the repo's own file is not read.
    #[serde(default)]
    pub spec: Option<String>,
}

/// A route's pipeline.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineBinding {
    pub route: String,
    pub repo: String,
    pub repo_type: String,
    pub branch: String,
    pub spec: Option<String>,
    pub bound_by: String,
    pub bound_at: String,
}

/// One pipeline run: a pushed revision on its way to a route.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PipelineRun {
    pub id: String,
    pub route: String,
    pub repo: String,
    pub repo_type: String,
    pub branch: String,
    pub commit: String,
    pub pusher: String,
    /// `running`, `succeeded`, `failed` or `canceled`.
    pub status: String,
    /// `vet`, `deploy`, `evaluate`, `gate`, `staging`, `release`, `canary` or `done`.
    pub stage: String,
    /// The spec, the candidate deployment, eval runs, gate results, why it failed, and a log.
    pub state: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
}
