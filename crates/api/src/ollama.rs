//! Ollama API wire types (`/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`,
//! `/api/tags`, `/api/show`, `/api/ps`, `/api/version`), as the `ollama` Python client and
//! Ollama's own server speak them. Durations are nanoseconds; times are RFC 3339. Errors use
//! [`crate::ErrorBody`], `{"error": "..."}`, which is Ollama's shape too.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `POST /api/chat`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    #[serde(default)]
    pub messages: Vec<Message>,
    #[serde(flatten)]
    pub common: GenerateFields,
    #[serde(default)]
    pub tools: Option<Value>,
}

/// `POST /api/generate`.
#[derive(Clone, Debug, Deserialize)]
pub struct GenerateRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub context: Option<Vec<i64>>,
    #[serde(default)]
    pub raw: Option<bool>,
    #[serde(default)]
    pub images: Option<Vec<Value>>,
    #[serde(flatten)]
    pub common: GenerateFields,
}

/// What chat and generate share.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct GenerateFields {
    /// Ollama streams unless told not to.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `"json"` or a JSON schema.
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub think: Option<Value>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
}

/// A chat message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
}

/// One line of a chat stream, or the whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct ChatResponse {
    pub model: String,
    pub created_at: String,
    pub message: Message,
    pub done: bool,
    #[serde(flatten)]
    pub stats: Option<Stats>,
}

/// One line of a generate stream, or the whole answer.
#[derive(Clone, Debug, Serialize)]
pub struct GenerateResponse {
    pub model: String,
    pub created_at: String,
    pub response: String,
    pub done: bool,
    #[serde(flatten)]
    pub stats: Option<Stats>,
}

/// The counts and durations (nanoseconds) of the last line.
#[derive(Clone, Debug, Serialize)]
pub struct Stats {
    pub done_reason: String,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
}

/// `POST /api/embed`.
#[derive(Clone, Debug, Deserialize)]
pub struct EmbedRequest {
    pub model: String,
    pub input: EmbedInput,
    /// Cut inputs longer than the model takes (Ollama's default) instead of failing.
    #[serde(default)]
    pub truncate: Option<bool>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

/// One text or several.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

/// `POST /api/embed` answer.
#[derive(Clone, Debug, Serialize)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
}

/// `POST /api/embeddings` (the older, one-text form).
#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

/// `POST /api/embeddings` answer.
#[derive(Clone, Debug, Serialize)]
pub struct EmbeddingsResponse {
    pub embedding: Vec<f32>,
}

/// `POST /api/show`.
#[derive(Clone, Debug, Deserialize)]
pub struct ShowRequest {
    #[serde(default)]
    pub model: String,
    /// The older name of `model`.
    #[serde(default)]
    pub name: String,
}

/// `POST /api/show` answer.
#[derive(Clone, Debug, Serialize)]
pub struct ShowResponse {
    pub modelfile: String,
    pub parameters: String,
    pub template: String,
    pub details: ModelDetails,
    pub model_info: Map<String, Value>,
    pub capabilities: Vec<String>,
    pub modified_at: String,
}

/// What `/api/tags`, `/api/show` and `/api/ps` say about a model file.
#[derive(Clone, Debug, Serialize)]
pub struct ModelDetails {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Option<Vec<String>>,
    pub parameter_size: String,
    pub quantization_level: String,
}

/// `GET /api/tags` answer.
#[derive(Clone, Debug, Serialize)]
pub struct TagsResponse {
    pub models: Vec<TagsModel>,
}

/// One model of `/api/tags`.
#[derive(Clone, Debug, Serialize)]
pub struct TagsModel {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
}

/// `GET /api/ps` answer.
#[derive(Clone, Debug, Serialize)]
pub struct PsResponse {
    pub models: Vec<PsModel>,
}

/// One resident model of `/api/ps`.
#[derive(Clone, Debug, Serialize)]
pub struct PsModel {
    pub name: String,
    pub model: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
    pub expires_at: String,
    pub size_vram: u64,
    pub context_length: u64,
}

/// `GET /api/version` answer.
#[derive(Clone, Debug, Serialize)]
pub struct VersionResponse {
    pub version: String,
}
