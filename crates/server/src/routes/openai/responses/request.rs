//! A `POST /v1/responses` body checked field by field: sampling (through the chat options, so
//! the two APIs agree on ranges), the text format's grammar, function tools, and the input items
//! normalized (each with an id, as `input_items` lists them) and turned into chat messages.

use std::sync::Arc;

use api::openai::SamplingFields;
use api::responses::CreateResponse;
use engine::grammar::Grammar;
use serde_json::{json, Map, Value};

use super::super::params::{Endpoint, Options};
use super::super::OpenAiError;
use crate::inference::random_id;
use crate::inference::tools::ToolPlan;
use crate::retrieval::Search;

/// The `include` values served.
const INCLUDABLE: &[&str] = &["message.output_text.logprobs", "reasoning.encrypted_content", "file_search_call.results"];
/// OpenAI's bounds on `metadata`.
const MAX_METADATA: usize = 16;

/// The `file_search` tool: the stores and how to search them (queries filled in per request).
pub(super) struct FileSearch {
    pub(super) store_ids: Vec<String>,
    pub(super) search: Search,
}

/// The most stores one `file_search` tool may name.
const MAX_SEARCH_STORES: usize = 8;

/// A checked request.
pub(super) struct Parsed {
    pub(super) model: String,
    pub(super) options: Options,
    pub(super) tools: Option<ToolPlan>,
    /// The `file_search` tool, when offered and not turned off by `tool_choice`.
    pub(super) file_search: Option<FileSearch>,
    /// `include: ["file_search_call.results"]`.
    pub(super) include_search_results: bool,
    /// The tools, tool choice and text settings as the response object repeats them.
    pub(super) tools_echo: Vec<Value>,
    pub(super) tool_choice_echo: Value,
    pub(super) text_echo: Value,
    pub(super) parallel_tool_calls: bool,
    pub(super) instructions: Option<String>,
    /// This request's input items, normalized, each with an id.
    pub(super) input: Vec<Value>,
    pub(super) previous: Option<String>,
    pub(super) store: bool,
    pub(super) metadata: Map<String, Value>,
    /// Whether output text carries log probabilities (`include`), and how many alternatives.
    pub(super) top_logprobs: Option<usize>,
    pub(super) max_output_tokens: Option<u32>,
    pub(super) max_tool_calls: Option<u32>,
    pub(super) temperature: Option<f32>,
    pub(super) top_p: Option<f32>,
    pub(super) user: Option<String>,
}

/// Checks every field of `request`; CPU-bound (schemas compile into grammars), so callers run it
/// off the async workers.
pub(super) fn parse(request: CreateResponse) -> Result<Parsed, OpenAiError> {
    if let Some(name) = request.unknown.keys().next() {
        return Err(OpenAiError::invalid(format!("Unknown parameter: '{name}'."), Some(name)));
    }
    let model = request.model.filter(|m| !m.is_empty()).ok_or_else(|| OpenAiError::invalid("model is required", Some("model")))?;
    refuse_unserved(&request.background.map(Value::Bool), "background", "background responses", |v| v == &Value::Bool(false))?;
    refuse_unserved(&request.conversation, "conversation", "conversations (use previous_response_id)", Value::is_null)?;
    refuse_unserved(&request.prompt, "prompt", "stored prompt templates", Value::is_null)?;
    refuse_unserved(&request.context_management, "context_management", "context management", Value::is_null)?;
    refuse_unserved(&request.reasoning, "reasoning", "reasoning settings (no served model reasons)", |r| r.is_null() || r.as_object().is_some_and(|o| o.values().all(Value::is_null)))?;
    match request.truncation.as_deref() {
        None | Some("disabled") => {}
        Some("auto") => return Err(OpenAiError::unsupported("truncation", "truncation \"auto\"")),
        Some(other) => return Err(OpenAiError::invalid(format!("truncation must be auto or disabled, not {other:?}"), Some("truncation"))),
    }
    match request.service_tier.as_deref() {
        None | Some("auto") | Some("default") => {}
        Some(other) => return Err(OpenAiError::unsupported("service_tier", &format!("service_tier {other:?}"))),
    }
    if let Some(options) = request.stream_options.as_ref().filter(|o| !o.is_null()) {
        if request.stream != Some(true) {
            return Err(OpenAiError::invalid("stream_options is only allowed when stream is true", Some("stream_options")));
        }
        let known = options.as_object().is_some_and(|o| o.keys().all(|k| k == "include_obfuscation"));
        if !known {
            return Err(OpenAiError::invalid("stream_options takes only include_obfuscation", Some("stream_options")));
        }
    }
    let include = request.include.unwrap_or_default();
    if let Some(other) = include.iter().find(|i| !INCLUDABLE.contains(&i.as_str())) {
        return Err(OpenAiError::unsupported("include", &format!("include value {other:?}")));
    }
    let top_logprobs = match request.top_logprobs {
        None => None,
        Some(k) if (0..=20).contains(&k) => Some(k as usize),
        Some(_) => return Err(OpenAiError::invalid("top_logprobs must be between 0 and 20", Some("top_logprobs"))),
    };
    let logprobs = include.iter().any(|i| i == "message.output_text.logprobs");
    let max_output_tokens = match request.max_output_tokens {
        None => None,
        Some(n) if (1..=u32::MAX as i64).contains(&n) => Some(n as u32),
        Some(_) => return Err(OpenAiError::invalid("max_output_tokens must be at least 1", Some("max_output_tokens"))),
    };
    let max_tool_calls = match request.max_tool_calls {
        None => None,
        Some(n) if (0..=u32::MAX as i64).contains(&n) => Some(n as u32),
        Some(_) => return Err(OpenAiError::invalid("max_tool_calls must not be negative", Some("max_tool_calls"))),
    };
    let fields = SamplingFields {
        stream: request.stream,
        max_completion_tokens: max_output_tokens,
        temperature: request.temperature,
        top_p: request.top_p,
        seed: request.seed,
        logprobs: logprobs.then_some(Value::Bool(true)),
        top_logprobs: logprobs.then_some(top_logprobs.unwrap_or(0) as u32),
        ..SamplingFields::default()
    };
    let mut options = Options::parse(&fields, Endpoint::Chat).map_err(rename_sampling_error)?;
    let (grammar, text_echo) = text_format(request.text.as_ref())?;
    options.grammar = grammar.map(Arc::new);
    let (tools, file_search, tools_echo, tool_choice_echo) = tools(request.tools.as_ref(), request.tool_choice.as_ref(), request.parallel_tool_calls)?;
    if options.grammar.is_some() && tools.as_ref().is_some_and(ToolPlan::active) {
        return Err(OpenAiError::unsupported("text.format", "a JSON text format together with tools"));
    }
    let metadata = metadata(request.metadata)?;
    let instructions = match request.instructions {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => return Err(OpenAiError::invalid("instructions must be a string", Some("instructions"))),
    };
    let input = normalize_input(request.input)?;
    let previous = request.previous_response_id.filter(|id| !id.is_empty());
    if input.is_empty() && previous.is_none() {
        return Err(OpenAiError::invalid("input is required", Some("input")));
    }
    Ok(Parsed {
        model,
        options,
        parallel_tool_calls: request.parallel_tool_calls.unwrap_or(true),
        tools,
        file_search,
        include_search_results: include.iter().any(|i| i == "file_search_call.results"),
        tools_echo,
        tool_choice_echo,
        text_echo,
        instructions,
        input,
        previous,
        store: request.store.unwrap_or(true),
        metadata,
        top_logprobs: logprobs.then_some(top_logprobs.unwrap_or(0)),
        max_output_tokens,
        max_tool_calls,
        temperature: request.temperature,
        top_p: request.top_p,
        user: request.user,
    })
}

/// A field Mantle does not serve is refused by name unless it holds its neutral value.
fn refuse_unserved(value: &Option<Value>, param: &str, what: &str, neutral: impl Fn(&Value) -> bool) -> Result<(), OpenAiError> {
    match value {
        Some(value) if !neutral(value) => Err(OpenAiError::unsupported(param, what)),
        _ => Ok(()),
    }
}

/// The chat options speak of `max_tokens`; this API's field is `max_output_tokens`.
fn rename_sampling_error(err: OpenAiError) -> OpenAiError {
    let message = err.message();
    if message.contains("max_tokens") {
        return OpenAiError::invalid(message.replace("max_tokens", "max_output_tokens"), Some("max_output_tokens"));
    }
    err
}

/// `text`: `{format: {type: text | json_object | json_schema}, verbosity}`; the grammar a JSON
/// format compiles to, and the settings as the response repeats them.
fn text_format(text: Option<&Value>) -> Result<(Option<Grammar>, Value), OpenAiError> {
    let plain = json!({ "format": { "type": "text" } });
    let Some(text) = text.filter(|t| !t.is_null()) else { return Ok((None, plain)) };
    let object = text.as_object().ok_or_else(|| OpenAiError::invalid("text must be an object", Some("text")))?;
    if let Some(key) = object.keys().find(|k| *k != "format" && *k != "verbosity") {
        return Err(OpenAiError::invalid(format!("Unknown parameter: 'text.{key}'."), Some(&format!("text.{key}"))));
    }
    match object.get("verbosity") {
        None | Some(Value::Null) => {}
        Some(Value::String(v)) if v == "medium" => {}
        Some(_) => return Err(OpenAiError::unsupported("text.verbosity", "text.verbosity other than medium")),
    }
    let Some(format) = object.get("format").filter(|f| !f.is_null()) else { return Ok((None, plain)) };
    let param = "text.format";
    let grammar = match format.get("type").and_then(Value::as_str) {
        Some("text") => None,
        Some("json_object") => Some(Grammar::json_object()),
        Some("json_schema") => {
            let name = format.get("name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return Err(OpenAiError::invalid("text.format.name must be 1 to 64 letters, digits, underscores or dashes", Some("text.format.name")));
            }
            let schema = format.get("schema").filter(|s| s.is_object() || s.is_boolean()).ok_or_else(|| OpenAiError::invalid("text.format.schema must be a JSON schema object", Some("text.format.schema")))?;
            Some(Grammar::from_schema(schema).map_err(|err| OpenAiError::invalid(format!("text.format.schema: {err}"), Some("text.format.schema")))?)
        }
        Some(other) => return Err(OpenAiError::invalid(format!("text.format.type {other:?} is not one of text, json_object, json_schema"), Some(param))),
        None => return Err(OpenAiError::invalid("text.format.type is required", Some(param))),
    };
    Ok((grammar, text.clone()))
}

/// `tools` (function tools, flat as this API writes them), `tool_choice` and
/// `parallel_tool_calls`, into the tool plan chat uses; and the tools and choice as the response
/// repeats them.
#[allow(clippy::type_complexity)]
fn tools(tools: Option<&Value>, choice: Option<&Value>, parallel: Option<bool>) -> Result<(Option<ToolPlan>, Option<FileSearch>, Vec<Value>, Value), OpenAiError> {
    let list = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(OpenAiError::invalid("tools must be an array", Some("tools"))),
    };
    let mut chat_tools = Vec::with_capacity(list.len());
    let mut echo = Vec::with_capacity(list.len());
    let mut file_search = None;
    for (i, tool) in list.iter().enumerate() {
        let param = format!("tools[{i}]");
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some("file_search") => {
                if file_search.is_some() {
                    return Err(OpenAiError::invalid("only one file_search tool may be given", Some(&param)));
                }
                file_search = Some(file_search_tool(tool, &param)?);
                echo.push(tool.clone());
                continue;
            }
            Some(other) => return Err(OpenAiError::unsupported(&format!("{param}.type"), &format!("the {other:?} tool"))),
            None => return Err(OpenAiError::invalid(format!("{param}.type is required"), Some(&param))),
        }
        let name = tool.get("name").and_then(Value::as_str).ok_or_else(|| OpenAiError::invalid(format!("{param}.name is required"), Some(&format!("{param}.name"))))?;
        let parameters = tool.get("parameters").cloned().unwrap_or(Value::Null);
        let description = tool.get("description").cloned().unwrap_or(Value::Null);
        chat_tools.push(json!({ "type": "function", "function": { "name": name, "description": description, "parameters": parameters } }));
        let strict = tool.get("strict").and_then(Value::as_bool).unwrap_or(true);
        echo.push(json!({ "type": "function", "name": name, "description": description, "parameters": parameters, "strict": strict }));
    }
    let (chat_choice, choice_echo) = match choice {
        None | Some(Value::Null) => (None, json!("auto")),
        Some(Value::String(s)) if s == "none" => {
            file_search = None;
            (Some(Value::String(s.clone())), Value::String(s.clone()))
        }
        Some(Value::String(s)) if chat_tools.is_empty() && file_search.is_some() => (None, Value::String(s.clone())),
        Some(Value::String(s)) => (Some(Value::String(s.clone())), Value::String(s.clone())),
        Some(object) => match object.get("type").and_then(Value::as_str) {
            // Searching is what the tool does on every request; it calls no function.
            Some("file_search") if file_search.is_some() => (Some(json!("none")), object.clone()),
            Some("function") => {
                let name = object.get("name").and_then(Value::as_str).ok_or_else(|| OpenAiError::invalid("tool_choice.name is required", Some("tool_choice.name")))?;
                (Some(json!({ "type": "function", "function": { "name": name } })), object.clone())
            }
            Some(other) => return Err(OpenAiError::unsupported("tool_choice", &format!("tool_choice of type {other:?}"))),
            None => return Err(OpenAiError::invalid("tool_choice.type is required", Some("tool_choice"))),
        },
    };
    let plan = if chat_tools.is_empty() && file_search.is_some() {
        None
    } else {
        ToolPlan::parse(Some(&Value::Array(chat_tools)), chat_choice.as_ref(), parallel).map_err(|err| {
            let message = err.message.replace(".function.", ".");
            OpenAiError::invalid(message, Some(&err.param))
        })?
    };
    Ok((plan, file_search, echo, choice_echo))
}

/// `{type: "file_search", vector_store_ids, max_num_results, ranking_options, filters}`.
fn file_search_tool(tool: &Value, param: &str) -> Result<FileSearch, OpenAiError> {
    if let Some(key) = tool.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !matches!(k.as_str(), "type" | "vector_store_ids" | "max_num_results" | "ranking_options" | "filters")) {
        return Err(OpenAiError::invalid(format!("Unknown parameter: '{param}.{key}'."), Some(&format!("{param}.{key}"))));
    }
    let ids = tool
        .get("vector_store_ids")
        .and_then(Value::as_array)
        .filter(|ids| !ids.is_empty() && ids.len() <= MAX_SEARCH_STORES)
        .ok_or_else(|| OpenAiError::invalid(format!("{param}.vector_store_ids must name 1 to {MAX_SEARCH_STORES} vector stores"), Some(&format!("{param}.vector_store_ids"))))?;
    let store_ids = ids.iter().map(|id| id.as_str().map(str::to_owned).ok_or_else(|| OpenAiError::invalid("vector store ids are strings", Some(&format!("{param}.vector_store_ids"))))).collect::<Result<Vec<_>, _>>()?;
    let mut search = super::super::vector_stores::search_of(vec!["query".into()], tool.get("filters"), tool.get("max_num_results"), tool.get("ranking_options"), &format!("{param}."), super::super::vector_stores::MAX_TOOL_RESULTS)?;
    search.api = "openai.responses.file_search";
    search.queries.clear();
    Ok(FileSearch { store_ids, search })
}

/// `metadata`: at most 16 pairs, keys up to 64 characters, string values up to 512.
fn metadata(metadata: Option<std::collections::BTreeMap<String, Value>>) -> Result<Map<String, Value>, OpenAiError> {
    let metadata = metadata.unwrap_or_default();
    if metadata.len() > MAX_METADATA {
        return Err(OpenAiError::invalid(format!("metadata takes at most {MAX_METADATA} pairs"), Some("metadata")));
    }
    for (key, value) in &metadata {
        if key.chars().count() > 64 {
            return Err(OpenAiError::invalid("metadata keys are at most 64 characters", Some("metadata")));
        }
        if value.as_str().is_none_or(|v| v.chars().count() > 512) {
            return Err(OpenAiError::invalid(format!("metadata.{key} must be a string of at most 512 characters"), Some("metadata")));
        }
    }
    Ok(metadata.into_iter().collect())
}

/// `input`: a string (one user message) or an array of items: messages (`{role, content}`,
/// with or without `type: "message"`), `function_call` and `function_call_output` items. Each
/// comes back in the shape `input_items` lists, with an id.
fn normalize_input(input: Option<Value>) -> Result<Vec<Value>, OpenAiError> {
    match input {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(vec![message_item(None, "user", vec![json!({ "type": "input_text", "text": text })])]),
        Some(Value::Array(items)) => items.into_iter().enumerate().map(|(i, item)| normalize_item(item, &format!("input[{i}]"))).collect(),
        Some(_) => Err(OpenAiError::invalid("input must be a string or an array of items", Some("input"))),
    }
}

fn message_item(id: Option<String>, role: &str, content: Vec<Value>) -> Value {
    json!({ "id": id.unwrap_or_else(|| format!("msg_{}", random_id())), "type": "message", "role": role, "status": "completed", "content": content })
}

fn normalize_item(item: Value, param: &str) -> Result<Value, OpenAiError> {
    let invalid = |message: String| OpenAiError::invalid(message, Some(param));
    let object = item.as_object().ok_or_else(|| invalid(format!("{param} must be an object")))?;
    let id = object.get("id").and_then(Value::as_str).map(str::to_owned);
    let text_field = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
    match object.get("type").and_then(Value::as_str) {
        None | Some("message") => {
            let role = object.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("{param}.role is required")))?;
            if !matches!(role, "user" | "system" | "developer" | "assistant") {
                return Err(invalid(format!("{param}.role {role:?} is not one of user, system, developer, assistant")));
            }
            let content = match object.get("content") {
                Some(Value::String(text)) => vec![json!({ "type": if role == "assistant" { "output_text" } else { "input_text" }, "text": text })],
                Some(Value::Array(parts)) => parts.iter().enumerate().map(|(j, part)| content_part(part, role, &format!("{param}.content[{j}]"))).collect::<Result<_, _>>()?,
                _ => return Err(invalid(format!("{param}.content must be a string or an array of content parts"))),
            };
            let mut normalized = message_item(id, role, content);
            if role == "assistant" {
                normalized["content"].as_array_mut().into_iter().flatten().for_each(|part| {
                    if part.get("annotations").is_none() {
                        part["annotations"] = json!([]);
                    }
                });
            }
            Ok(normalized)
        }
        Some("function_call") => {
            let call_id = text_field("call_id").ok_or_else(|| invalid(format!("{param}.call_id is required")))?;
            let name = text_field("name").ok_or_else(|| invalid(format!("{param}.name is required")))?;
            let arguments = text_field("arguments").ok_or_else(|| invalid(format!("{param}.arguments must be a string of JSON")))?;
            if serde_json::from_str::<Value>(&arguments).map_or(true, |a| !a.is_object()) {
                return Err(invalid(format!("{param}.arguments must be a JSON object")));
            }
            Ok(json!({ "id": id.unwrap_or_else(|| format!("fc_{}", random_id())), "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments, "status": "completed" }))
        }
        Some("function_call_output") => {
            let call_id = text_field("call_id").ok_or_else(|| invalid(format!("{param}.call_id is required")))?;
            let output = match object.get("output") {
                Some(Value::String(text)) => Value::String(text.clone()),
                Some(Value::Array(parts)) => {
                    let mut text = String::new();
                    for (j, part) in parts.iter().enumerate() {
                        match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                            (Some("input_text"), Some(piece)) => text.push_str(piece),
                            _ => return Err(OpenAiError::unsupported(&format!("{param}.output[{j}]"), "function output parts other than input_text")),
                        }
                    }
                    Value::String(text)
                }
                _ => return Err(invalid(format!("{param}.output must be a string"))),
            };
            Ok(json!({ "id": id.unwrap_or_else(|| format!("fco_{}", random_id())), "type": "function_call_output", "call_id": call_id, "output": output, "status": "completed" }))
        }
        Some(other) => Err(OpenAiError::unsupported(&format!("{param}.type"), &format!("input items of type {other:?}"))),
    }
}

fn content_part(part: &Value, role: &str, param: &str) -> Result<Value, OpenAiError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
    let text = part.get("text").and_then(Value::as_str);
    match (kind, text) {
        ("input_text", Some(text)) if role != "assistant" => Ok(json!({ "type": "input_text", "text": text })),
        ("output_text", Some(text)) if role == "assistant" => Ok(json!({ "type": "output_text", "text": text, "annotations": part.get("annotations").cloned().unwrap_or(json!([])) })),
        ("refusal", _) if role == "assistant" => Ok(json!({ "type": "output_text", "text": part.get("refusal").and_then(Value::as_str).unwrap_or_default(), "annotations": [] })),
        ("input_text" | "output_text", Some(_)) => Err(OpenAiError::invalid(format!("{param}: {kind} parts belong to {} messages", if kind == "input_text" { "user, system and developer" } else { "assistant" }), Some(param))),
        ("input_text" | "output_text", None) => Err(OpenAiError::invalid(format!("{param}.text is required"), Some(param))),
        (other, _) => Err(OpenAiError::unsupported(param, &format!("content parts of type {other:?}"))),
    }
}

/// Chat messages (as templates see them) for a conversation's items, in order: messages by role
/// (developer as system), a run of function calls as one assistant message's `tool_calls` (joined
/// to the assistant message just before it), and each call's output as a `tool` message.
pub(super) fn chat_messages(instructions: Option<&str>, items: &[&Value]) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::with_capacity(items.len() + 1);
    if let Some(text) = instructions {
        messages.push(json!({ "role": "system", "content": text }));
    }
    let mut names: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                let role = match item["role"].as_str().unwrap_or("user") {
                    "developer" => "system",
                    role => role,
                };
                let text: String = item["content"].as_array().into_iter().flatten().filter_map(|part| part.get("text").and_then(Value::as_str)).collect();
                messages.push(json!({ "role": role, "content": text }));
            }
            Some("function_call") => {
                let call_id = item["call_id"].as_str().unwrap_or_default().to_owned();
                let name = item["name"].as_str().unwrap_or_default().to_owned();
                let arguments: Value = item["arguments"].as_str().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_else(|| json!({}));
                names.insert(call_id.clone(), name.clone());
                let call = json!({ "id": call_id, "type": "function", "function": { "name": name, "arguments": arguments } });
                match messages.last_mut().filter(|m| m["role"] == "assistant") {
                    Some(last) => match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => last["tool_calls"] = json!([call]),
                    },
                    None => messages.push(json!({ "role": "assistant", "content": "", "tool_calls": [call] })),
                }
            }
            Some("function_call_output") => {
                let call_id = item["call_id"].as_str().unwrap_or_default();
                let mut message = json!({ "role": "tool", "tool_call_id": call_id, "content": item["output"].as_str().unwrap_or_default() });
                if let Some(name) = names.get(call_id) {
                    message["name"] = Value::String(name.clone());
                }
                messages.push(message);
            }
            _ => {}
        }
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<Parsed, OpenAiError> {
        parse(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let parsed = request(json!({ "model": "m", "input": "hi", "instructions": "be brief" })).unwrap();
        assert_eq!(parsed.input.len(), 1);
        assert_eq!(parsed.input[0]["role"], "user");
        assert!(parsed.input[0]["id"].as_str().unwrap().starts_with("msg_"));
        let items: Vec<&Value> = parsed.input.iter().collect();
        let messages = chat_messages(parsed.instructions.as_deref(), &items);
        assert_eq!(messages, vec![json!({"role": "system", "content": "be brief"}), json!({"role": "user", "content": "hi"})]);
    }

    #[test]
    fn unknown_and_unserved_fields_are_refused_by_name() {
        let err = request(json!({ "model": "m", "input": "hi", "frobnicate": 1 })).err().unwrap();
        assert!(err.message().contains("frobnicate"));
        for (field, value) in [("background", json!(true)), ("truncation", json!("auto")), ("conversation", json!("conv_1")), ("reasoning", json!({"effort": "high"}))] {
            let mut body = json!({ "model": "m", "input": "hi" });
            body[field] = value;
            let err = request(body).err().unwrap();
            assert!(err.message().contains("not supported"), "{field}: {}", err.message());
        }
        // Their neutral values are fine.
        request(json!({ "model": "m", "input": "hi", "background": false, "truncation": "disabled", "reasoning": {"effort": null}, "include": [] })).unwrap();
        let err = request(json!({ "model": "m", "input": "hi", "max_output_tokens": 0 })).err().unwrap();
        assert!(err.message().contains("max_output_tokens"));
    }

    #[test]
    fn function_calls_and_outputs_become_tool_turns() {
        let parsed = request(json!({ "model": "m", "input": [
            { "role": "user", "content": [{ "type": "input_text", "text": "weather?" }] },
            { "type": "message", "role": "assistant", "content": [{ "type": "output_text", "text": "Checking." }] },
            { "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\": \"Oslo\"}" },
            { "type": "function_call_output", "call_id": "call_1", "output": "sunny" }
        ], "tools": [{ "type": "function", "name": "weather", "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } }] }))
        .unwrap();
        let items: Vec<&Value> = parsed.input.iter().collect();
        let messages = chat_messages(None, &items);
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[1]["content"], "Checking.");
        assert_eq!(messages[1]["tool_calls"][0]["function"]["arguments"]["city"], "Oslo");
        assert_eq!(messages[2], json!({ "role": "tool", "tool_call_id": "call_1", "content": "sunny", "name": "weather" }));
        assert_eq!(parsed.tools_echo[0]["name"], "weather");
        assert!(parsed.tools.unwrap().active());
    }

    #[test]
    fn bad_items_name_their_place() {
        let err = request(json!({ "model": "m", "input": [{ "role": "user", "content": [{ "type": "input_image", "image_url": "x" }] }] })).err().unwrap();
        assert!(err.message().contains("input_image"), "{}", err.message());
        let err = request(json!({ "model": "m", "input": [{ "type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]" }] })).err().unwrap();
        assert!(err.message().contains("input[0].arguments"), "{}", err.message());
        let err = request(json!({ "model": "m", "input": "x", "tools": [{ "type": "web_search" }] })).err().unwrap();
        assert!(err.message().contains("web_search"), "{}", err.message());
        let err = request(json!({ "model": "m", "input": "x", "text": { "format": { "type": "json_schema", "schema": {"type": "object"} } } })).err().unwrap();
        assert!(err.message().contains("text.format.name"), "{}", err.message());
    }

    #[test]
    fn a_json_schema_format_compiles() {
        let parsed =
            request(json!({ "model": "m", "input": "x", "text": { "format": { "type": "json_schema", "name": "Person", "strict": true, "schema": { "type": "object", "properties": { "name": { "type": "string" } }, "required": ["name"] } } } }))
                .unwrap();
        assert!(parsed.options.grammar.is_some());
        assert_eq!(parsed.text_echo["format"]["name"], "Person");
    }
}
