//! Evaluations (OpenAI's Evals API shape): an eval says what its data items look like and how
//! each is graded; a run grades one data source (items given as they are, or sampled from a
//! model served here) and leaves one output item per data item. The specs are kept as the JSON
//! the caller sent, after the server checked them; runs are jobs claimed under a lease, so a run
//! whose worker died is taken over (by any replica) and resumes after its last stored item.

use serde_json::Value;

use crate::audit::AuditEvent;
use crate::error::Result;

/// An evaluation, owned by the account that created it.
#[derive(Clone, Debug, PartialEq)]
pub struct Eval {
    /// `eval_...`.
    pub id: String,
    /// The account (user name) it belongs to; only it and site admins see it.
    pub owner: String,
    pub name: String,
    /// `data_source_config` as checked.
    pub data_source_config: Value,
    /// `testing_criteria` (the graders) as checked.
    pub testing_criteria: Value,
    /// Up to 16 string pairs.
    pub metadata: Value,
    pub created_at: String,
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
    Canceled,
}

impl RunStatus {
    /// The API's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::InProgress => "in_progress",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
        }
    }

    /// Parses a stored status.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "queued" => RunStatus::Queued,
            "in_progress" => RunStatus::InProgress,
            "completed" => RunStatus::Completed,
            "failed" => RunStatus::Failed,
            "canceled" => RunStatus::Canceled,
            _ => return None,
        })
    }

    /// Whether the run has ended.
    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Canceled)
    }
}

/// One run of an eval.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalRun {
    /// `evalrun_...`.
    pub id: String,
    pub eval_id: String,
    pub owner: String,
    /// The token that created it: the run samples models as that token (its quotas, its usage,
    /// its visibility), and stops if the token is revoked.
    pub token_id: i64,
    pub name: String,
    pub status: RunStatus,
    /// `data_source` and `metadata` as checked, and what the run resolved: the exact model
    /// revision and data revision it used.
    pub spec: Value,
    /// Counts, per-grader results, usage and any error, as the run went.
    pub summary: Value,
    pub created_at: String,
}

/// One graded data item of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputItem {
    pub run_id: String,
    /// The item's position in the data source.
    pub index: i64,
    /// `outputitem_...`.
    pub id: String,
    /// `pass`, `fail` or `error`.
    pub status: String,
    /// The item, the sample and each grader's result.
    pub body: Value,
    pub created_at: String,
}

/// Storage of evals, their runs and output items.
#[async_trait::async_trait]
pub trait EvalStore: Send + Sync {
    /// Stores a new eval, audited.
    async fn create_eval(&self, eval: &Eval, event: AuditEvent) -> Result<()>;
    async fn get_eval(&self, id: &str) -> Result<Option<Eval>>;
    /// The evals of `owner` (all of them for `None`), oldest first.
    async fn list_evals(&self, owner: Option<&str>) -> Result<Vec<Eval>>;
    /// Replaces an eval's name and metadata, audited.
    async fn update_eval(&self, eval: &Eval, event: AuditEvent) -> Result<()>;
    /// Deletes an eval with its runs and their items, audited; NotFound if missing.
    async fn delete_eval(&self, id: &str, event: AuditEvent) -> Result<()>;
    /// Stores a new run (queued), audited.
    async fn create_run(&self, run: &EvalRun, event: AuditEvent) -> Result<()>;
    async fn get_run(&self, id: &str) -> Result<Option<EvalRun>>;
    /// The runs of an eval, oldest first.
    async fn list_runs(&self, eval_id: &str) -> Result<Vec<EvalRun>>;
    /// Claims the oldest run that is queued, or in progress under an expired lease (its worker
    /// died), marking it in progress until `lease_until`.
    async fn claim_run(&self, now: &str, lease_until: &str) -> Result<Option<EvalRun>>;
    /// Extends the lease of a run still in progress and stores its summary so far; `false` when
    /// it is no longer in progress (canceled or deleted), so the worker stops.
    async fn renew_run(&self, id: &str, lease_until: &str, summary: &Value) -> Result<bool>;
    /// Stores (or replaces) one output item.
    async fn put_output_item(&self, item: &OutputItem) -> Result<()>;
    /// A run's output items, by index.
    async fn output_items(&self, run_id: &str) -> Result<Vec<OutputItem>>;
    /// Ends a run that is in progress with its final status and summary, audited; `false` if it
    /// was no longer in progress.
    async fn finish_run(&self, id: &str, status: RunStatus, summary: &Value, event: AuditEvent) -> Result<bool>;
    /// Cancels a run that has not ended, audited; `false` if it had ended.
    async fn cancel_run(&self, id: &str, event: AuditEvent) -> Result<bool>;
    /// Deletes a run and its items, audited; NotFound if missing.
    async fn delete_run(&self, id: &str, event: AuditEvent) -> Result<()>;
}
