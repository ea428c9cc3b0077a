//! Request fields checked once and turned into engine settings (parse, don't validate).

use std::sync::Arc;

use api::openai::{MessageContent, SamplingFields, Stop};
use engine::grammar::Grammar;

use super::error::OpenAiError;
use crate::inference::Sampling;

/// Which route a request came in on; a few fields differ between them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completions,
}

/// Validated generation options of one request.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// What the request set; the deployment's defaults and then OpenAI's fill the rest.
    pub(crate) sampling: Sampling,
    /// `None`: up to the end of the context.
    pub(crate) max_tokens: Option<usize>,
    pub(crate) stop: Vec<String>,
    /// Choices per prompt.
    pub(crate) n: usize,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    /// `Some(k)`: report each token's log probability and its `k` likeliest alternatives.
    pub(crate) logprobs: Option<usize>,
    /// Structured output (`response_format`), or a forced tool call.
    pub(crate) grammar: Option<Arc<Grammar>>,
}

/// The most choices one request may ask for.
const MAX_N: u32 = 16;
/// The most stop sequences, as OpenAI allows.
const MAX_STOP: usize = 4;

impl Options {
    /// Checks every field; a value out of range or a feature not served is a 400 naming it.
    pub(crate) fn parse(fields: &SamplingFields, endpoint: Endpoint) -> Result<Options, OpenAiError> {
        let stream = fields.stream.unwrap_or(false);
        if fields.stream_options.is_some() && !stream {
            return Err(OpenAiError::invalid("stream_options is only allowed when stream is true", Some("stream_options")));
        }
        let include_usage = fields.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false);
        let temperature = range(fields.temperature, "temperature", 0.0, 2.0)?;
        let top_p = range(fields.top_p, "top_p", 0.0, 1.0)?;
        let min_p = range(fields.min_p, "min_p", 0.0, 1.0)?;
        let frequency_penalty = range(fields.frequency_penalty, "frequency_penalty", -2.0, 2.0)?;
        let presence_penalty = range(fields.presence_penalty, "presence_penalty", -2.0, 2.0)?;
        let repetition_penalty = range(fields.repetition_penalty, "repetition_penalty", 0.0, 10.0)?;
        if repetition_penalty == Some(0.0) {
            return Err(OpenAiError::invalid("repetition_penalty must be greater than 0", Some("repetition_penalty")));
        }
        let top_k = match fields.top_k {
            None => None,
            Some(-1) | Some(0) => Some(0),
            Some(k) if (1..=1_000_000).contains(&k) => Some(k as usize),
            Some(k) => return Err(OpenAiError::invalid(format!("top_k must be -1, 0 or a positive count; got {k}"), Some("top_k"))),
        };
        // max_completion_tokens is the newer name; a request naming both gets the newer one.
        let max_tokens = match (fields.max_completion_tokens, fields.max_tokens) {
            // Completions may score a prompt without generating (`echo` with `max_tokens: 0`); the
            // route checks that echo is on.
            (Some(0), _) | (None, Some(0)) if endpoint == Endpoint::Chat => return Err(OpenAiError::invalid("max_tokens must be at least 1", Some("max_tokens"))),
            (Some(n), _) | (None, Some(n)) => Some(n as usize),
            (None, None) => None,
        };
        let stop = match &fields.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        };
        if stop.len() > MAX_STOP {
            return Err(OpenAiError::invalid(format!("stop takes at most {MAX_STOP} sequences"), Some("stop")));
        }
        if stop.iter().any(|s| s.len() > 1024) {
            return Err(OpenAiError::invalid("a stop sequence is longer than 1024 bytes", Some("stop")));
        }
        let n = fields.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(OpenAiError::invalid(format!("n must be between 1 and {MAX_N}"), Some("n")));
        }
        // Chat: `logprobs: true` plus `top_logprobs` (0..=20). Completions: `logprobs: k` (0..=5).
        let logprobs = match (&fields.logprobs, endpoint) {
            (None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)), _) => None,
            (Some(serde_json::Value::Bool(true)), Endpoint::Chat) => Some(fields.top_logprobs.unwrap_or(0) as usize),
            (Some(serde_json::Value::Number(k)), Endpoint::Completions) => match k.as_u64() {
                Some(k) if k <= 5 => Some(k as usize),
                _ => return Err(OpenAiError::invalid("logprobs must be an integer from 0 to 5", Some("logprobs"))),
            },
            (Some(_), Endpoint::Chat) => return Err(OpenAiError::invalid("logprobs must be a boolean", Some("logprobs"))),
            (Some(_), Endpoint::Completions) => return Err(OpenAiError::invalid("logprobs must be an integer from 0 to 5", Some("logprobs"))),
        };
        match fields.top_logprobs {
            Some(k) if k > 20 => return Err(OpenAiError::invalid("top_logprobs must be between 0 and 20", Some("top_logprobs"))),
            Some(k) if k > 0 && endpoint == Endpoint::Chat && logprobs.is_none() => {
                return Err(OpenAiError::invalid("top_logprobs needs logprobs set to true", Some("top_logprobs")));
            }
            _ => {}
        }
        if fields.logit_bias.as_ref().is_some_and(|b| b.as_object().is_some_and(|m| !m.is_empty())) {
            return Err(OpenAiError::unsupported("logit_bias", "logit_bias"));
        }
        let grammar = response_format(fields.response_format.as_ref())?.map(Arc::new);
        if endpoint == Endpoint::Completions && (fields.tools.as_ref().is_some_and(|t| !t.is_null()) || fields.tool_choice.as_ref().is_some_and(|t| !t.is_null())) {
            return Err(OpenAiError::unsupported("tools", "tool calling on /v1/completions (use /v1/chat/completions)"));
        }
        let seed = fields.seed.map(|s| s as u64);
        let ignore_eos = fields.ignore_eos.unwrap_or(false);
        let sampling = Sampling { temperature, top_p, top_k, min_p, repetition_penalty, frequency_penalty, presence_penalty, penalty_last_n: None, seed, ignore_eos };
        Ok(Options { sampling, max_tokens, stop, n: n as usize, stream, include_usage, logprobs, grammar })
    }
}

/// `response_format`: `text`, `json_object`, or `json_schema` with a schema the grammar
/// compiler supports (a feature it cannot enforce is a 400 naming it). `json_object` with a
/// `schema` beside it (what llama-server accepts and instructor's `JSON_SCHEMA` mode sends) is
/// held to that schema.
fn response_format(format: Option<&serde_json::Value>) -> Result<Option<Grammar>, OpenAiError> {
    let Some(format) = format.filter(|f| !f.is_null()) else { return Ok(None) };
    let param = "response_format";
    let schema = |schema: &serde_json::Value, param: &str| Grammar::from_schema(schema).map(Some).map_err(|err| OpenAiError::invalid(format!("{param}: {err}"), Some(param)));
    match format.get("type").and_then(|t| t.as_str()) {
        Some("text") => Ok(None),
        Some("json_object") => match format.get("schema") {
            None | Some(serde_json::Value::Null) => Ok(Some(Grammar::json_object())),
            Some(found) if found.is_object() || found.is_boolean() => schema(found, "response_format.schema"),
            Some(_) => Err(OpenAiError::invalid("response_format.schema must be a JSON schema object", Some("response_format.schema"))),
        },
        Some("json_schema") => {
            let spec = format.get("json_schema").filter(|s| s.is_object()).ok_or_else(|| OpenAiError::invalid("response_format.json_schema is required for type json_schema", Some(param)))?;
            let name = spec.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(OpenAiError::invalid("response_format.json_schema.name must be 1 to 64 letters, digits, underscores or dashes", Some("response_format.json_schema.name")));
            }
            match spec.get("schema") {
                None | Some(serde_json::Value::Null) => Ok(Some(Grammar::json_object())),
                Some(found) => schema(found, "response_format.json_schema.schema"),
            }
        }
        Some(other) => Err(OpenAiError::invalid(format!("response_format.type {other:?} is not one of text, json_object, json_schema"), Some(param))),
        None => Err(OpenAiError::invalid("response_format.type is required", Some(param))),
    }
}

fn range(value: Option<f32>, name: &str, low: f32, high: f32) -> Result<Option<f32>, OpenAiError> {
    match value {
        Some(v) if !v.is_finite() || v < low || v > high => Err(OpenAiError::invalid(format!("{name} must be between {low} and {high}; got {v}"), Some(name))),
        other => Ok(other),
    }
}

/// Chat messages as the template sees them (`[{role, content}]`, assistant `tool_calls` with
/// their arguments as objects), checked.
pub(crate) fn template_messages(messages: &[api::openai::ChatMessage]) -> Result<Vec<serde_json::Value>, OpenAiError> {
    if messages.is_empty() {
        return Err(OpenAiError::invalid("messages must not be empty", Some("messages")));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let param = format!("messages[{i}]");
        let role = match message.role.as_str() {
            role @ ("system" | "user" | "assistant" | "tool") => role,
            "developer" => "system",
            other => return Err(OpenAiError::invalid(format!("{param}.role {other:?} is not one of system, developer, user, assistant, tool"), Some(&param))),
        };
        let tool_calls = match &message.tool_calls {
            None | Some(serde_json::Value::Null) => None,
            Some(calls) if role == "assistant" => Some(tool_calls(calls, &param)?),
            Some(_) => return Err(OpenAiError::invalid(format!("{param}: only assistant messages carry tool_calls"), Some(&param))),
        };
        let content = match &message.content {
            None if tool_calls.is_some() => String::new(),
            None => {
                return Err(OpenAiError::invalid(format!("{param}.content is required"), Some(&param)));
            }
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = String::new();
                for part in parts {
                    match (part.kind.as_str(), &part.text) {
                        ("text", Some(piece)) => text.push_str(piece),
                        ("text", None) => return Err(OpenAiError::invalid(format!("{param}: a text part needs text"), Some(&param))),
                        (other, _) => return Err(OpenAiError::unsupported(&param, &format!("content parts of type {other:?}"))),
                    }
                }
                text
            }
        };
        let mut entry = serde_json::json!({ "role": role, "content": content });
        if let Some(name) = &message.name {
            entry["name"] = serde_json::Value::String(name.clone());
        }
        if let Some(id) = &message.tool_call_id {
            entry["tool_call_id"] = serde_json::Value::String(id.clone());
        }
        if let Some(calls) = tool_calls {
            entry["tool_calls"] = calls;
        }
        out.push(entry);
    }
    Ok(out)
}

/// An assistant message's `tool_calls`, with each call's arguments (JSON text) parsed into an
/// object, as chat templates expect them.
fn tool_calls(calls: &serde_json::Value, param: &str) -> Result<serde_json::Value, OpenAiError> {
    let list = calls.as_array().ok_or_else(|| OpenAiError::invalid(format!("{param}.tool_calls must be an array"), Some(param)))?;
    let mut out = Vec::with_capacity(list.len());
    for (j, call) in list.iter().enumerate() {
        let at = format!("{param}.tool_calls[{j}]");
        let name = call.pointer("/function/name").and_then(|n| n.as_str()).ok_or_else(|| OpenAiError::invalid(format!("{at}.function.name is required"), Some(&at)))?;
        let arguments = match call.pointer("/function/arguments") {
            None | Some(serde_json::Value::Null) => serde_json::json!({}),
            Some(serde_json::Value::String(text)) => serde_json::from_str(text).map_err(|err| OpenAiError::invalid(format!("{at}.function.arguments is not JSON: {err}"), Some(&at)))?,
            Some(object) => object.clone(),
        };
        let id = call.get("id").cloned().unwrap_or(serde_json::Value::Null);
        out.push(serde_json::json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
    }
    Ok(serde_json::Value::Array(out))
}

impl Options {
    /// The inference service's request for `input`.
    pub(crate) fn request(&self, api: &'static str, input: crate::inference::Input, tools: Option<crate::inference::tools::ToolPlan>) -> crate::inference::GenerationRequest {
        crate::inference::GenerationRequest {
            api,
            input,
            sampling: self.sampling.clone(),
            // OpenAI's defaults: temperature 1, top_p 1, no penalties.
            fallback: engine::SamplingParams::default(),
            max_tokens: self.max_tokens,
            clip_to_context: false,
            stop: self.stop.clone(),
            n: self.n,
            logprobs: self.logprobs,
            echo: false,
            constraint: self.grammar.clone(),
            tools,
        }
    }
}
