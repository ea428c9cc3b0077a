//! The Git LFS batch API as `huggingface_hub` uses it (basic and multipart transfers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /{repo}.git/info/lfs/objects/batch`.
#[derive(Clone, Debug, Deserialize)]
pub struct BatchRequest {
    pub operation: String,
    #[serde(default)]
    pub transfers: Vec<String>,
    pub objects: Vec<BatchObject>,
    #[serde(default)]
    pub hash_algo: Option<String>,
    #[serde(default, rename = "ref")]
    pub git_ref: Option<serde_json::Value>,
}

/// An object asked about.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BatchObject {
    pub oid: String,
    pub size: u64,
}

/// The batch response.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchResponse {
    pub transfer: String,
    pub objects: Vec<BatchAnswer>,
    pub hash_algo: String,
}

/// The answer for one object: actions to take, none when already stored, or an error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub oid: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authenticated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actions: Option<BatchActions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BatchError>,
}

/// Upload and verify actions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchActions {
    pub upload: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<Action>,
}

/// One action. For multipart uploads `header` holds `chunk_size` and the numbered part URLs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Action {
    pub href: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub header: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A per-object error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchError {
    pub code: u16,
    pub message: String,
}

/// Multipart completion body.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    pub oid: String,
    pub parts: Vec<CompletedPart>,
}

/// A completed part.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletedPart {
    #[serde(rename = "partNumber")]
    pub part_number: u32,
    pub etag: String,
}

/// Verify body.
#[derive(Clone, Debug, Deserialize)]
pub struct VerifyRequest {
    pub oid: String,
    pub size: u64,
}
