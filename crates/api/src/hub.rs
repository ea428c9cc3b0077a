//! Hugging Face Hub API shapes.

use serde::{Deserialize, Serialize};

/// `GET /api/whoami-v2`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmI {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub fullname: String,
    #[serde(rename = "isPro")]
    pub is_pro: bool,
    pub orgs: Vec<WhoAmIOrg>,
    pub auth: WhoAmIAuth,
}

/// An org in `whoami-v2`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmIOrg {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub fullname: String,
}

/// The token part of `whoami-v2`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhoAmIAuth {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "accessToken")]
    pub access_token: AccessToken,
}

/// The token's name and role.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessToken {
    #[serde(rename = "displayName")]
    pub display_name: String,
    pub role: String,
}

/// `POST /api/repos/create`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRepoRequest {
    pub name: String,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub private: Option<bool>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub sdk: Option<String>,
    #[serde(default)]
    pub license: Option<String>,
}

/// `POST /api/repos/create` response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateRepoResponse {
    pub url: String,
    pub name: String,
    pub id: String,
}

/// `DELETE /api/repos/delete`.
#[derive(Clone, Debug, Deserialize)]
pub struct DeleteRepoRequest {
    pub name: String,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `POST /api/repos/move`.
#[derive(Clone, Debug, Deserialize)]
pub struct MoveRepoRequest {
    #[serde(rename = "fromRepo")]
    pub from_repo: String,
    #[serde(rename = "toRepo")]
    pub to_repo: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// `PUT /api/{type}s/{repo}/settings`.
#[derive(Clone, Debug, Deserialize)]
pub struct RepoSettingsRequest {
    #[serde(default)]
    pub private: Option<bool>,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub gated: Option<serde_json::Value>,
}

/// Model or dataset info.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RepoInfo {
    #[serde(rename = "_id")]
    pub mongo_id: String,
    pub id: String,
    #[serde(rename = "modelId", skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    pub author: String,
    pub sha: String,
    #[serde(rename = "lastModified")]
    pub last_modified: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    pub private: bool,
    pub disabled: bool,
    pub gated: bool,
    pub downloads: u64,
    pub likes: u64,
    pub tags: Vec<String>,
    pub siblings: Vec<Sibling>,
    #[serde(rename = "usedStorage")]
    pub used_storage: u64,
    /// Vetting status in the Hub's shape: `{scansDone, filesWithIssues: [{path, level}]}`.
    #[serde(rename = "securityRepoStatus", skip_serializing_if = "Option::is_none", default)]
    pub security_repo_status: Option<serde_json::Value>,
}

/// A file in `siblings`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sibling {
    pub rfilename: String,
    pub size: u64,
    #[serde(rename = "blobId")]
    pub blob_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lfs: Option<SiblingLfs>,
}

/// LFS facts of a sibling.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SiblingLfs {
    pub size: u64,
    pub sha256: String,
    #[serde(rename = "pointerSize")]
    pub pointer_size: u64,
}

/// An entry of a tree listing or paths-info.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TreeEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub oid: String,
    pub size: u64,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lfs: Option<TreeLfs>,
    /// For files stored through Xet: their Xet hash (clients with hf_xet download by it).
    #[serde(rename = "xetHash", skip_serializing_if = "Option::is_none", default)]
    pub xet_hash: Option<String>,
    /// With `expand=true`: the file's vetting status in the Hub's shape.
    #[serde(rename = "securityFileStatus", skip_serializing_if = "Option::is_none", default)]
    pub security_file_status: Option<serde_json::Value>,
}

/// LFS facts of a tree entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TreeLfs {
    pub oid: String,
    pub size: u64,
    #[serde(rename = "pointerSize")]
    pub pointer_size: u64,
}

/// `POST .../preupload/{rev}`.
#[derive(Clone, Debug, Deserialize)]
pub struct PreuploadRequest {
    pub files: Vec<PreuploadFile>,
    #[serde(default, rename = "gitIgnore")]
    pub git_ignore: Option<String>,
}

/// One file asked about in preupload.
#[derive(Clone, Debug, Deserialize)]
pub struct PreuploadFile {
    pub path: String,
    #[serde(default)]
    pub sample: Option<String>,
    pub size: u64,
}

/// Preupload response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreuploadResponse {
    pub files: Vec<PreuploadAnswer>,
    #[serde(rename = "commitOid")]
    pub commit_oid: String,
}

/// How one file should be uploaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreuploadAnswer {
    pub path: String,
    #[serde(rename = "uploadMode")]
    pub upload_mode: String,
    #[serde(rename = "shouldIgnore")]
    pub should_ignore: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oid: Option<String>,
}

/// One NDJSON line of a commit body.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "key", content = "value")]
pub enum CommitLine {
    #[serde(rename = "header")]
    Header(CommitHeader),
    #[serde(rename = "file")]
    File(CommitFile),
    #[serde(rename = "lfsFile")]
    LfsFile(CommitLfsFile),
    #[serde(rename = "deletedFile")]
    DeletedFile(CommitPath),
    #[serde(rename = "deletedFolder")]
    DeletedFolder(CommitPath),
}

/// The commit header line.
#[derive(Clone, Debug, Deserialize)]
pub struct CommitHeader {
    pub summary: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, rename = "parentCommit")]
    pub parent_commit: Option<String>,
}

/// An inline file.
#[derive(Clone, Debug, Deserialize)]
pub struct CommitFile {
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub encoding: Option<String>,
}

/// A file whose bytes went through LFS.
#[derive(Clone, Debug, Deserialize)]
pub struct CommitLfsFile {
    pub path: String,
    #[serde(default)]
    pub algo: Option<String>,
    pub oid: String,
    #[serde(default)]
    pub size: Option<u64>,
}

/// A deleted file or folder.
#[derive(Clone, Debug, Deserialize)]
pub struct CommitPath {
    pub path: String,
}

/// Commit response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitResponse {
    pub success: bool,
    #[serde(rename = "commitOid")]
    pub commit_oid: String,
    #[serde(rename = "commitUrl")]
    pub commit_url: String,
    #[serde(rename = "pullRequestUrl")]
    pub pull_request_url: Option<String>,
}

/// `GET .../refs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Refs {
    pub branches: Vec<RefEntry>,
    pub converts: Vec<RefEntry>,
    pub tags: Vec<RefEntry>,
    #[serde(rename = "pullRequests")]
    pub pull_requests: Vec<RefEntry>,
}

/// One ref.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RefEntry {
    pub name: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(rename = "targetCommit")]
    pub target_commit: String,
}

/// One commit in `GET .../commits/{rev}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitEntry {
    pub id: String,
    pub title: String,
    pub message: String,
    pub authors: Vec<CommitAuthor>,
    pub date: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub parents: Vec<String>,
}

/// A commit author.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CommitAuthor {
    pub user: String,
}

/// `POST .../branch/{branch}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateBranchRequest {
    #[serde(default, rename = "startingPoint")]
    pub starting_point: Option<String>,
    #[serde(default, rename = "emptyBranch")]
    pub empty_branch: Option<bool>,
}

/// `POST .../tag/{revision}`.
#[derive(Clone, Debug, Deserialize)]
pub struct CreateTagRequest {
    pub tag: String,
    #[serde(default)]
    pub message: Option<String>,
}

/// `POST .../paths-info/{rev}` as JSON (the client sends a form; both are accepted).
#[derive(Clone, Debug, Deserialize)]
pub struct PathsInfoRequest {
    pub paths: Vec<String>,
    #[serde(default)]
    pub expand: Option<serde_json::Value>,
}

/// `POST /api/validate-yaml`.
#[derive(Clone, Debug, Deserialize)]
pub struct ValidateYamlRequest {
    pub content: String,
    #[serde(default, rename = "repoType")]
    pub repo_type: Option<String>,
}

/// Validation outcome; `error` repeats the first error for generic clients.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ValidateYamlResponse {
    pub errors: Vec<YamlMessage>,
    pub warnings: Vec<YamlMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct YamlMessage {
    pub message: String,
}
