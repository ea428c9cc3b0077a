//! OpenAI Responses API wire types. The request's polymorphic parts (input items, tools, tool
//! choice, text format) stay JSON values: the server checks them field by field and names the
//! one it cannot serve. Every field OpenAI defines is listed, so a field the server does not know
//! lands in `unknown` and is refused by name, as OpenAI refuses it.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `POST /v1/responses`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CreateResponse {
    #[serde(default)]
    pub model: Option<String>,
    /// A string, or an array of input items.
    #[serde(default)]
    pub input: Option<Value>,
    /// A string (or, as OpenAI also takes it, an array of input items).
    #[serde(default)]
    pub instructions: Option<Value>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<Value>,
    #[serde(default)]
    pub max_output_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f32>,
    #[serde(default)]
    pub top_p: Option<f32>,
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    /// `{format: {type: text | json_object | json_schema, ...}, verbosity}`.
    #[serde(default)]
    pub text: Option<Value>,
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub max_tool_calls: Option<i64>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    #[serde(default)]
    pub prompt_cache_retention: Option<String>,
    #[serde(default)]
    pub truncation: Option<String>,
    #[serde(default)]
    pub service_tier: Option<String>,
    #[serde(default)]
    pub background: Option<bool>,
    #[serde(default)]
    pub conversation: Option<Value>,
    #[serde(default)]
    pub prompt: Option<Value>,
    #[serde(default)]
    pub reasoning: Option<Value>,
    #[serde(default)]
    pub context_management: Option<Value>,
    /// Not OpenAI's (vLLM and llama.cpp take it on their Responses APIs).
    #[serde(default)]
    pub seed: Option<i64>,
    /// Anything else the body held.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}
