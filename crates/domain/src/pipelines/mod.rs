//! Pipelines as code: a route bound to a repo and branch releases every revision pushed there
//! through the steps its pipeline file names (vetting, deployment of the candidate, eval suites,
//! gates, staging, a canary), or stops and says why. The trigger is the push's audit row (a
//! dispatcher tails the log under a lease, as the webhook dispatcher does); each run is a job
//! in the store, stepped by any replica under a lease, so it survives restarts.

mod gate;
mod spec;

pub use gate::{judge, paired_bootstrap, GateResult, ItemValue};
pub use spec::{yaml_to_json, DeployPlan, Gate, Metric, PipelineSpec, Suite, SuiteData, MAX_SPEC_BYTES};

use serde_json::Value;

use crate::audit::AuditEvent;
use crate::error::Result;

/// Where a pipeline file lives in a repo.
pub const PIPELINE_PATH: &str = ".mantle/pipeline.yaml";

/// A route's pipeline: which pushes release to it, and as whom.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    pub route: String,
    /// `model` or `dataset`... always a model repo today.
    pub repo_kind: String,
    pub repo: String,
    pub branch: String,
    /// The pipeline as the admin set it on the route (then the repo's file is not read).
    pub spec: Option<String>,
    /// The site admin's token the pipeline acts as (deploys, evaluates, moves the route); a
    /// revoked token stops it.
    pub token_id: i64,
    pub bound_by: String,
    pub bound_at: String,
}

/// Where a pipeline run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineStatus {
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl PipelineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Running => "running",
            PipelineStatus::Succeeded => "succeeded",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "running" => PipelineStatus::Running,
            "succeeded" => PipelineStatus::Succeeded,
            "failed" => PipelineStatus::Failed,
            "canceled" => PipelineStatus::Canceled,
            _ => return None,
        })
    }
}

/// One pipeline run: one pushed revision on its way to a route.
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineRun {
    /// `pipe_...`.
    pub id: String,
    pub route: String,
    pub repo_kind: String,
    pub repo: String,
    pub branch: String,
    pub commit: String,
    /// Who pushed.
    pub pusher: String,
    pub status: PipelineStatus,
    /// `vet`, `deploy`, `evaluate`, `gate`, `staging`, `release`, `canary`, `done`.
    pub stage: String,
    /// What the run found and made so far: the spec, the candidate, eval runs, gate results, a
    /// log of its steps.
    pub state: Value,
    pub created_at: String,
    pub updated_at: String,
}

/// Storage of bindings and pipeline runs.
#[async_trait::async_trait]
pub trait PipelineStore: Send + Sync {
    /// Binds a route to a repo's pushes (replacing its binding), or unbinds it, audited.
    async fn set_binding(&self, route: &str, binding: Option<&Binding>, event: AuditEvent) -> Result<()>;
    async fn bindings(&self) -> Result<Vec<Binding>>;
    /// The pipeline dispatcher's place in the audit log.
    async fn pipeline_cursor(&self) -> Result<Option<i64>>;
    /// Takes (or renews) the dispatcher's lease; its place in the log, or `None` while another
    /// holds it.
    async fn claim_pipeline_cursor(&self, holder: &str, now: &str, lease_until: &str) -> Result<Option<i64>>;
    /// Stores new runs with their audit rows and moves the cursor to `seq`, in one transaction;
    /// `false` if the lease was lost.
    async fn enqueue_pipeline_runs(&self, holder: &str, runs: &[PipelineRun], events: Vec<AuditEvent>, seq: i64) -> Result<bool>;
    /// Claims the oldest running run that is due (`next_at` passed) and not leased.
    async fn claim_pipeline_run(&self, now: &str, lease_until: &str) -> Result<Option<PipelineRun>>;
    /// Stores a claimed run's new state (and status), due again at `next_at`, releasing the
    /// lease, with an audit row when given; `false` if it was no longer running (canceled).
    async fn update_pipeline_run(&self, run: &PipelineRun, next_at: &str, event: Option<AuditEvent>) -> Result<bool>;
    async fn get_pipeline_run(&self, id: &str) -> Result<Option<PipelineRun>>;
    /// The newest runs, of one route or all.
    async fn list_pipeline_runs(&self, route: Option<&str>, limit: i64) -> Result<Vec<PipelineRun>>;
    /// Cancels a running run, audited; `false` if it had ended.
    async fn cancel_pipeline_run(&self, id: &str, event: AuditEvent) -> Result<bool>;
}

impl Binding {
    /// The stored form.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "route": self.route, "repo_kind": self.repo_kind, "repo": self.repo, "branch": self.branch, "spec": self.spec, "token_id": self.token_id, "bound_by": self.bound_by, "bound_at": self.bound_at })
    }

    pub fn from_json(value: &Value) -> Option<Self> {
        Some(Binding {
            route: value["route"].as_str()?.to_owned(),
            repo_kind: value["repo_kind"].as_str()?.to_owned(),
            repo: value["repo"].as_str()?.to_owned(),
            branch: value["branch"].as_str()?.to_owned(),
            spec: value["spec"].as_str().map(str::to_owned),
            token_id: value["token_id"].as_i64()?,
            bound_by: value["bound_by"].as_str()?.to_owned(),
            bound_at: value["bound_at"].as_str()?.to_owned(),
        })
    }
}
