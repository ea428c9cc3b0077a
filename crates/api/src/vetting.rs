//! Vetting wire types: revision verdicts, policies, overrides.

use serde::{Deserialize, Serialize};

/// One finding.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    pub level: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub member: Option<String>,
    pub subject: String,
    pub reason: String,
}

/// A finding an override accepted.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverriddenFinding {
    pub finding: Finding,
    #[serde(rename = "override")]
    pub accepted_by: Override,
}

/// The verdict of one file.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileVerdict {
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// `pending` until the scan is done.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub format: Option<String>,
    pub findings: Vec<Finding>,
    pub overridden: Vec<OverriddenFinding>,
}

/// `GET /api/{type}s/{repo}/vetting/{rev}`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevisionVerdict {
    pub repo: String,
    pub commit: String,
    /// `pending` until every scan is done, then the worst file or repo verdict after policy.
    pub status: String,
    pub blocked: bool,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub license: Option<String>,
    pub scanner_version: String,
    /// How many files of each format the revision holds (`pending` while unscanned).
    pub formats: std::collections::BTreeMap<String, u64>,
    pub policy: Policy,
    pub files: Vec<FileVerdict>,
    pub repo_findings: Vec<Finding>,
}

/// A namespace's policy.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub allow_pickle: bool,
    /// `null` accepts any licence.
    pub allowed_licenses: Option<Vec<String>>,
    pub suspicious_blocks: bool,
}

/// `POST /api/policies/{namespace}/overrides`.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOverride {
    pub sha256: String,
    pub code: String,
    #[serde(default)]
    pub subject: String,
    pub justification: String,
}

/// A stored override.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Override {
    pub id: i64,
    pub namespace: String,
    pub sha256: String,
    pub code: String,
    pub subject: String,
    pub justification: String,
    pub author: String,
    pub created_at: String,
}
