//! The Ollama API on the same port as everything else: `/api/chat`, `/api/generate`,
//! `/api/embed`, `/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps`, `/api/version`. A
//! deployment is an Ollama model (a `:latest` tag is accepted and ignored); Mantle tokens are the
//! Bearer keys (the `ollama` client sends `OLLAMA_API_KEY` as one). Streams are NDJSON, one JSON
//! object per line, durations in nanoseconds. `format` constrains decoding to JSON or a schema;
//! `tools` are offered through the chat template and calls come back with object arguments.
//! Fields Mantle cannot honour (images, Go templates) are a 400 naming them, never silently
//! ignored.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::ollama as wire;
use api::ErrorBody;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use domain::auth::Principal;
use domain::meta::Deployment;
use engine::grammar::Grammar;
use engine::{Engine, Event, FinishReason, GenerateRequest, Generation, SamplingParams, Token};
use serde_json::{Map, Value};

use super::openai::{self, OpenAiError};
use crate::metrics::RequestTimer;
use crate::runtime::{Backend, Keep, Served};
use crate::tools::{CallParser, Piece, ToolPlan};
use crate::AppState;

/// The Ollama API version this server speaks (clients compare it to enable features).
const OLLAMA_API_VERSION: &str = "0.12.0";

/// An error on its way out of an Ollama route: `{"error": "..."}` with the status Ollama uses.
#[derive(Debug)]
pub(crate) struct OllamaError {
    status: StatusCode,
    message: String,
    /// Quota refusals carry `Retry-After` and `x-ratelimit-*`.
    headers: Option<Box<HeaderMap>>,
}

impl From<crate::prompt::PromptError> for OllamaError {
    fn from(err: crate::prompt::PromptError) -> Self {
        OllamaError::invalid(err.to_string())
    }
}

impl OllamaError {
    fn invalid(message: impl Into<String>) -> Self {
        OllamaError { status: StatusCode::BAD_REQUEST, message: message.into(), headers: None }
    }
    fn forbidden(message: impl Into<String>) -> Self {
        OllamaError { status: StatusCode::FORBIDDEN, message: message.into(), headers: None }
    }

    fn unsupported(field: &str, what: &str) -> Self {
        Self::invalid(format!("{field}: {what} is not supported by this server yet"))
    }
}

impl From<OpenAiError> for OllamaError {
    fn from(err: OpenAiError) -> Self {
        let (status, message) = err.parts();
        OllamaError { status, message: message.to_owned(), headers: None }
    }
}

impl From<domain::Error> for OllamaError {
    fn from(err: domain::Error) -> Self {
        OpenAiError::from(err).into()
    }
}

impl From<engine::InferError> for OllamaError {
    fn from(err: engine::InferError) -> Self {
        OpenAiError::from(err).into()
    }
}

impl From<crate::quotas::Refusal> for OllamaError {
    fn from(refusal: crate::quotas::Refusal) -> Self {
        match refusal {
            crate::quotas::Refusal::Error(err) => err.into(),
            crate::quotas::Refusal::Exceeded(exceeded) => {
                let headers = crate::quotas::headers(&exceeded.limits, Some(exceeded.retry_after));
                OllamaError { status: StatusCode::TOO_MANY_REQUESTS, message: exceeded.message, headers: Some(Box::new(headers)) }
            }
        }
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: self.message })).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS && !response.headers().contains_key(header::RETRY_AFTER) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// The JSON body, whatever its content type says: Ollama's own examples post JSON with
/// `curl -d`, which labels it as a form.
fn body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, OllamaError> {
    serde_json::from_slice(body).map_err(|err| OllamaError::invalid(format!("invalid request body: {err}")))
}

/// `GET /api/version`.
pub(crate) async fn version() -> Json<wire::VersionResponse> {
    Json(wire::VersionResponse { version: OLLAMA_API_VERSION.to_owned() })
}

/// `GET /api/tags`: the deployments the caller may use.
pub(crate) async fn tags(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<wire::TagsResponse>, OllamaError> {
    let principal = openai::authenticate(&state, &headers).await?;
    let mut models = Vec::new();
    for deployment in state.hub.runnable_deployments(&principal).await? {
        let size = state.hub.blob_size(&deployment.file_sha256).await?.unwrap_or(0);
        models.push(wire::TagsModel { name: deployment.name.clone(), model: deployment.name.clone(), modified_at: deployment.created_at.clone(), size, digest: deployment.file_sha256.to_string(), details: details(&deployment) });
    }
    Ok(Json(wire::TagsResponse { models }))
}

/// `GET /api/ps`: the deployments loaded in this process that the caller may use.
pub(crate) async fn ps(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<wire::PsResponse>, OllamaError> {
    let principal = openai::authenticate(&state, &headers).await?;
    let visible: std::collections::HashSet<String> = state.hub.runnable_deployments(&principal).await?.into_iter().map(|d| d.name).collect();
    let mut models = Vec::new();
    for served in state.runtime.resident() {
        let deployment = &served.deployment;
        if !visible.contains(&deployment.name) {
            continue;
        }
        models.push(wire::PsModel {
            name: deployment.name.clone(),
            model: deployment.name.clone(),
            // As Ollama reports it: the memory the loaded model holds.
            size: served.memory_bytes,
            digest: deployment.file_sha256.to_string(),
            details: details(deployment),
            // Mantle unloads on memory pressure, not on a timer: a pin's end, or never.
            expires_at: state.runtime.pinned_until(&deployment.name).map_or_else(|| "9999-12-31T23:59:59Z".to_owned(), |t| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            size_vram: 0,
            context_length: u64::from(deployment.settings.context),
        });
    }
    Ok(Json(wire::PsResponse { models }))
}

/// `POST /api/show`.
pub(crate) async fn show(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Json<wire::ShowResponse>, OllamaError> {
    let principal = openai::authenticate(&state, &headers).await?;
    let request: wire::ShowRequest = body(&request)?;
    let name = if request.model.is_empty() { request.name } else { request.model };
    let deployment = state.hub.runnable_deployment(&principal, model_name(&name)).await?;
    let embeds = crate::runtime::is_encoder(&deployment);
    // Like Ollama, showing a model does not load it (nor evict another to make room).
    let template = if embeds { String::new() } else { state.runtime.chat_template(&state.hub, &deployment).await?.map(|c| c.source).unwrap_or_default() };
    let s = &deployment.settings;
    let mut info = Map::new();
    info.insert("mantle.revision".into(), Value::String(format!("{}@{}", deployment.repo, deployment.commit)));
    info.insert("mantle.file".into(), Value::String(deployment.file_path.to_string()));
    info.insert("mantle.context_length".into(), s.context.into());
    Ok(Json(wire::ShowResponse {
        modelfile: format!("# Mantle deployment {}\nFROM {}@{}\nPARAMETER num_ctx {}\n", deployment.name, deployment.repo, deployment.commit, s.context),
        parameters: format!("num_ctx {}", s.context),
        template,
        details: details(&deployment),
        model_info: info,
        capabilities: vec![if embeds { "embedding" } else { "completion" }.to_owned()],
        modified_at: deployment.created_at.clone(),
    }))
}

/// `POST /api/chat`.
pub(crate) async fn chat(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let principal = openai::authenticate(&state, &headers).await?;
    let request: wire::ChatRequest = body(&request)?;
    // Formats and tool schemas compile into grammars: CPU work the caller chooses, off the async workers.
    let (request, parsed) = crate::prompt::off_async(move || {
        let parsed = Options::parse(&request.common).and_then(|options| Ok((options, ToolPlan::parse(request.tools.as_ref(), None, None).map_err(|err| OllamaError::invalid(err.message))?)));
        (request, parsed)
    })
    .await;
    let (options, plan) = parsed?;
    if plan.is_some() && options.grammar.is_some() {
        return Err(OllamaError::unsupported("format", "format together with tools"));
    }
    let mut messages = Vec::with_capacity(request.messages.len());
    for (i, message) in request.messages.iter().enumerate() {
        if !matches!(message.role.as_str(), "system" | "user" | "assistant" | "tool") {
            return Err(OllamaError::invalid(format!("messages[{i}].role {:?} is not one of system, user, assistant, tool", message.role)));
        }
        if message.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(OllamaError::unsupported(&format!("messages[{i}].images"), "image input"));
        }
        let mut entry = serde_json::json!({ "role": message.role, "content": message.content });
        match &message.tool_calls {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                let mut out = Vec::with_capacity(calls.len());
                for (j, call) in calls.iter().enumerate() {
                    let name = call.pointer("/function/name").and_then(Value::as_str).ok_or_else(|| OllamaError::invalid(format!("messages[{i}].tool_calls[{j}].function.name is required")))?;
                    let arguments = match call.pointer("/function/arguments") {
                        None | Some(Value::Null) => serde_json::json!({}),
                        Some(Value::String(text)) => serde_json::from_str(text).map_err(|err| OllamaError::invalid(format!("messages[{i}].tool_calls[{j}].function.arguments is not JSON: {err}")))?,
                        Some(other) => other.clone(),
                    };
                    out.push(serde_json::json!({"type": "function", "function": {"name": name, "arguments": arguments}}));
                }
                entry["tool_calls"] = Value::Array(out);
            }
            Some(_) => return Err(OllamaError::invalid(format!("messages[{i}].tool_calls must be an array"))),
        }
        if let Some(name) = &message.tool_name {
            entry["name"] = Value::String(name.clone());
        }
        messages.push(entry);
    }
    let keep = keep_alive(request.common.keep_alive.as_ref())?;
    let model = request.model;
    let (served, load) = load(&state, &principal, &model).await?;
    let engine = generator(&served)?;
    let unloaded = apply_keep_alive(&state, &principal, &served.deployment, keep, messages.is_empty())?;
    if messages.is_empty() {
        // Ollama's way to load (or, with keep_alive 0, unload) a model: an empty chat answers at once.
        let reason = if unloaded { "unload" } else { "load" };
        let line = wire::ChatResponse { model, created_at: now(), message: assistant(String::new()), done: true, stats: Some(stats(reason, started, load, 0, Duration::ZERO, 0, Duration::ZERO)) };
        return Ok(with_revision(&served, Json(line).into_response()));
    }
    let Some(chat) = &served.chat else {
        return Err(OllamaError::invalid(format!("model {model:?} has no chat template; use /api/generate with raw: true")));
    };
    crate::tools::messages_for_template(&mut messages, plan.as_ref(), &chat.source);
    let template_tools = plan.as_ref().filter(|_| crate::tools::template_renders_tools(&chat.source)).map(ToolPlan::template_tools);
    let prompt = crate::prompt::chat(engine, chat, messages, template_tools).await?;
    let admission = crate::quotas::admit(&state, &principal, prompt.len()).await?;
    let mut run = Run::start(&state, &principal, "ollama.chat", &served, engine, prompt, &options, started, load, admission)?;
    run.parser = plan.as_ref().map(CallParser::for_plan);
    Ok(with_revision(&served, run.respond(model, options.stream, Shape::Chat).await))
}

/// `POST /api/generate`.
pub(crate) async fn generate(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let principal = openai::authenticate(&state, &headers).await?;
    let request: wire::GenerateRequest = body(&request)?;
    let (request, options) = crate::prompt::off_async(move || {
        let options = Options::parse(&request.common);
        (request, options)
    })
    .await;
    let options = options?;
    if request.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(OllamaError::unsupported("suffix", "fill-in-the-middle"));
    }
    if request.template.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(OllamaError::unsupported("template", "a Go template in the request (the model's own chat template is used)"));
    }
    if request.images.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(OllamaError::unsupported("images", "image input"));
    }
    if request.context.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(OllamaError::unsupported("context", "the deprecated context token list (send the conversation to /api/chat)"));
    }
    let keep = keep_alive(request.common.keep_alive.as_ref())?;
    let model = request.model;
    let (served, load) = load(&state, &principal, &model).await?;
    let engine = generator(&served)?;
    let prompt = request.prompt.unwrap_or_default();
    let unloaded = apply_keep_alive(&state, &principal, &served.deployment, keep, prompt.is_empty())?;
    if prompt.is_empty() {
        let reason = if unloaded { "unload" } else { "load" };
        let line = wire::GenerateResponse { model, created_at: now(), response: String::new(), done: true, stats: Some(stats(reason, started, load, 0, Duration::ZERO, 0, Duration::ZERO)) };
        return Ok(with_revision(&served, Json(line).into_response()));
    }
    // Raw: the prompt as it is. Otherwise the model's chat template around it, as Ollama does;
    // a model without one gets the bare prompt (Ollama's default template is `{{ .Prompt }}`).
    let prompt = match (&served.chat, request.raw.unwrap_or(false)) {
        (Some(chat), false) => {
            let mut messages = Vec::new();
            if let Some(system) = request.system.filter(|s| !s.is_empty()) {
                messages.push(serde_json::json!({ "role": "system", "content": system }));
            }
            messages.push(serde_json::json!({ "role": "user", "content": prompt }));
            crate::prompt::chat(engine, chat, messages, None).await?
        }
        _ => crate::prompt::texts(engine, vec![prompt]).await?.remove(0),
    };
    let admission = crate::quotas::admit(&state, &principal, prompt.len()).await?;
    let run = Run::start(&state, &principal, "ollama.generate", &served, engine, prompt, &options, started, load, admission)?;
    Ok(with_revision(&served, run.respond(model, options.stream, Shape::Generate).await))
}

/// `POST /api/embed`.
pub(crate) async fn embed(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let principal = openai::authenticate(&state, &headers).await?;
    let request: wire::EmbedRequest = body(&request)?;
    let inputs = match request.input {
        wire::EmbedInput::One(text) => vec![text],
        wire::EmbedInput::Many(texts) => texts,
    };
    if inputs.is_empty() || inputs.len() > 2048 {
        return Err(OllamaError::invalid("input must hold 1 to 2048 texts"));
    }
    let keep = keep_alive(request.keep_alive.as_ref())?;
    let (served, load) = load(&state, &principal, &request.model).await?;
    apply_keep_alive(&state, &principal, &served.deployment, keep, false)?;
    let (vectors, prompt_tokens) = embed_texts(&state, &principal, "ollama.embed", &served, &inputs, request.truncate.unwrap_or(true), request.dimensions).await?;
    let line = wire::EmbedResponse { model: request.model, embeddings: vectors, total_duration: nanos(started.elapsed()), load_duration: nanos(load), prompt_eval_count: prompt_tokens as u64 };
    Ok(with_revision(&served, Json(line).into_response()))
}

/// `POST /api/embeddings`, the older one-text form.
pub(crate) async fn embeddings(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Response, OllamaError> {
    let principal = openai::authenticate(&state, &headers).await?;
    let request: wire::EmbeddingsRequest = body(&request)?;
    let keep = keep_alive(request.keep_alive.as_ref())?;
    let (served, _) = load(&state, &principal, &request.model).await?;
    apply_keep_alive(&state, &principal, &served.deployment, keep, request.prompt.is_empty())?;
    if request.prompt.is_empty() {
        // Ollama answers an empty prompt with an empty vector (a way to load the model).
        return Ok(with_revision(&served, Json(wire::EmbeddingsResponse { embedding: Vec::new() }).into_response()));
    }
    let (mut vectors, _) = embed_texts(&state, &principal, "ollama.embeddings", &served, &[request.prompt], true, None).await?;
    Ok(with_revision(&served, Json(wire::EmbeddingsResponse { embedding: vectors.remove(0) }).into_response()))
}

async fn embed_texts(state: &AppState, principal: &Principal, api: &'static str, served: &Served, inputs: &[String], truncate: bool, dimensions: Option<u32>) -> Result<(Vec<Vec<f32>>, usize), OllamaError> {
    let Backend::Embed(engine) = &served.backend else {
        return Err(OllamaError::invalid(format!("model {:?} does not support embeddings", served.deployment.name)));
    };
    if dimensions.is_some_and(|d| d as usize != engine.dims()) {
        return Err(OllamaError::unsupported("dimensions", &format!("dimensions other than the model's {}", engine.dims())));
    }
    if let Some(i) = inputs.iter().position(String::is_empty) {
        return Err(OllamaError::invalid(format!("input[{i}] is empty")));
    }
    let mut tokens = Vec::with_capacity(inputs.len());
    for (i, mut ids) in crate::prompt::embedding_inputs(engine, inputs.to_vec()).await.into_iter().enumerate() {
        if ids.len() > engine.max_tokens() {
            if !truncate {
                return Err(OllamaError::invalid(format!("input[{i}] has {} tokens, more than the model's {}; send truncate: true to cut it", ids.len(), engine.max_tokens())));
            }
            cut_keeping_end(&mut ids, engine.max_tokens());
        }
        tokens.push(ids);
    }
    let prompt_tokens = tokens.iter().map(Vec::len).sum();
    let admission = crate::quotas::admit(state, principal, prompt_tokens).await?;
    let mut timer = state.metrics.start(&served.deployment.name).billed(&state.usage, principal, api, &served.deployment.settings, admission);
    let vectors = engine.embed(tokens).await.map_err(|err| {
        timer.reject(&err);
        OllamaError::from(err)
    })?;
    timer.finish(prompt_tokens, 0);
    Ok((vectors, prompt_tokens))
}

/// Cuts a tokenized input to `max` tokens, keeping its last one (an encoder's closing special
/// token, such as BERT's `[SEP]`).
fn cut_keeping_end(ids: &mut Vec<Token>, max: usize) {
    if max == 0 {
        ids.clear();
        return;
    }
    let last = ids.last().copied();
    ids.truncate(max);
    if let (Some(last), Some(end)) = (last, ids.last_mut()) {
        *end = last;
    }
}

/// Validated generation options.
struct Options {
    params: SamplingParams,
    max_tokens: Option<usize>,
    stop: Vec<String>,
    stream: bool,
    /// `format`: JSON mode or a JSON schema.
    grammar: Option<Arc<Grammar>>,
}

impl Options {
    /// Ollama's defaults (temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1 over the
    /// last 64 tokens) with the request's `options` over them. Options about loading (num_ctx,
    /// num_gpu, num_thread, use_mmap...) are hints a deployment's settings decide; sampling
    /// options Mantle does not have (mirostat, tfs_z, typical_p) are a 400 when set.
    fn parse(fields: &wire::GenerateFields) -> Result<Options, OllamaError> {
        let grammar = match fields.format.as_ref().filter(|f| !f.is_null() && f.as_str() != Some("")) {
            None => None,
            Some(Value::String(s)) if s == "json" => Some(Arc::new(Grammar::json_object())),
            Some(schema @ Value::Object(_)) => Some(Arc::new(Grammar::from_schema(schema).map_err(|err| OllamaError::invalid(format!("format: {err}")))?)),
            Some(_) => return Err(OllamaError::invalid("format must be \"json\" or a JSON schema object")),
        };
        match &fields.think {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => return Err(OllamaError::invalid("think: this model does not support thinking")),
        }
        if fields.logprobs == Some(true) || fields.top_logprobs.is_some_and(|n| n > 0) {
            return Err(OllamaError::unsupported("logprobs", "log probabilities on the Ollama API (use /v1)"));
        }
        let mut params = SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.9, min_p: 0.0, repetition_penalty: 1.1, penalty_last_n: 64, ..SamplingParams::default() };
        let mut max_tokens = None;
        let mut stop = Vec::new();
        let empty = Map::new();
        for (key, value) in fields.options.as_ref().unwrap_or(&empty) {
            if value.is_null() {
                continue;
            }
            let number = || value.as_f64().ok_or_else(|| OllamaError::invalid(format!("options.{key} must be a number")));
            let in_range = |low: f64, high: f64| -> Result<f64, OllamaError> {
                let n = number()?;
                if (low..=high).contains(&n) {
                    Ok(n)
                } else {
                    Err(OllamaError::invalid(format!("options.{key} must be between {low} and {high}")))
                }
            };
            match key.as_str() {
                "temperature" => params.temperature = in_range(0.0, 2.0)? as f32,
                "top_p" => params.top_p = in_range(0.0, 1.0)? as f32,
                "min_p" => params.min_p = in_range(0.0, 1.0)? as f32,
                "top_k" => params.top_k = in_range(-1.0, 1e6)?.max(0.0) as usize,
                "repeat_penalty" => {
                    params.repetition_penalty = in_range(0.0, 10.0)? as f32;
                    if params.repetition_penalty == 0.0 {
                        params.repetition_penalty = 1.0;
                    }
                }
                "repeat_last_n" => {
                    let n = in_range(-1.0, 1e6)?;
                    // -1: the whole context; 0: no penalty.
                    if n == 0.0 {
                        params.repetition_penalty = 1.0;
                        params.frequency_penalty = 0.0;
                        params.presence_penalty = 0.0;
                    }
                    params.penalty_last_n = n.max(0.0) as usize;
                }
                "presence_penalty" => params.presence_penalty = in_range(-2.0, 2.0)? as f32,
                "frequency_penalty" => params.frequency_penalty = in_range(-2.0, 2.0)? as f32,
                "seed" => params.seed = Some(number()? as i64 as u64),
                "num_predict" => {
                    let n = number()?;
                    max_tokens = match n {
                        n if n < 0.0 => None,
                        n if n >= 1.0 => Some(n as usize),
                        _ => return Err(OllamaError::invalid("options.num_predict must be -1, -2 or at least 1")),
                    };
                }
                "stop" => {
                    stop = match value {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(items) => items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| OllamaError::invalid("options.stop must be a list of strings"))).collect::<Result<_, _>>()?,
                        _ => return Err(OllamaError::invalid("options.stop must be a list of strings")),
                    };
                    if stop.len() > 16 || stop.iter().any(|s| s.len() > 1024) {
                        return Err(OllamaError::invalid("options.stop takes at most 16 strings of at most 1024 bytes"));
                    }
                }
                "mirostat" if number()? != 0.0 => return Err(OllamaError::unsupported("options.mirostat", "mirostat sampling")),
                "tfs_z" if number()? != 1.0 => return Err(OllamaError::unsupported("options.tfs_z", "tail-free sampling")),
                "typical_p" if number()? != 1.0 => return Err(OllamaError::unsupported("options.typical_p", "locally typical sampling")),
                // Load-time and hardware hints, decided by the deployment's settings; penalize_newline
                // is gone from Ollama itself.
                _ => {}
            }
        }
        Ok(Options { params, max_tokens, stop, stream: fields.stream.unwrap_or(true), grammar })
    }
}

/// What a request's `keep_alive` asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KeepAlive {
    /// `0`: unload now (an empty request) or as soon as it is idle.
    Unload,
    Keep(Keep),
}

/// Ollama's `keep_alive`: seconds as a number, or a Go duration (`"5m"`, `"1h30m"`, `"-1"`);
/// negative keeps the model loaded for good.
fn keep_alive(value: Option<&Value>) -> Result<Option<KeepAlive>, OllamaError> {
    let bad = || OllamaError::invalid("keep_alive must be a number of seconds or a duration such as \"5m\", \"1h\" or \"-1\"");
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(bad)?,
        Some(Value::String(text)) => parse_duration(text).ok_or_else(bad)?,
        Some(_) => return Err(bad()),
    };
    Ok(Some(if seconds < 0.0 {
        KeepAlive::Keep(Keep::Forever)
    } else if seconds == 0.0 {
        KeepAlive::Unload
    } else {
        let until = std::time::SystemTime::now().checked_add(Duration::from_secs_f64(seconds.min(1e10))).ok_or_else(bad)?;
        KeepAlive::Keep(Keep::Until(until))
    }))
}

/// Seconds in a Go duration (`"1h30m"`, `"90s"`, `"-1m"`, `"250ms"`) or a bare number of seconds.
fn parse_duration(text: &str) -> Option<f64> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Some(seconds);
    }
    if text.is_empty() || text == "-" || text == "+" {
        return None;
    }
    let (sign, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, text.strip_prefix('+').unwrap_or(text)),
    };
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Some(sign * total)
}

/// Whether the caller may pin a deployment past its `keep_alive_max` or unload it for everyone:
/// a site admin, or an admin token of the deployment's namespace.
fn may_manage_residency(principal: &Principal, deployment: &domain::meta::Deployment) -> bool {
    match principal {
        Principal::User(user) => principal.site_admin().is_ok() || (user.role == domain::auth::Role::Admin && principal.can_write_namespace(deployment.repo.namespace.as_str())),
        Principal::Anonymous => false,
    }
}

/// An ordinary caller's `keep_alive` within the deployment's limit: at most `keep_alive_max`
/// from now (`-1` included); unloading is refused, since the model serves others too.
fn cap_keep_alive(deployment: &domain::meta::Deployment, keep: Option<KeepAlive>) -> Result<Option<KeepAlive>, OllamaError> {
    // Bounded on deploy; a stored value past the clock's range means "no limit beyond now".
    let now = std::time::SystemTime::now();
    let limit = now.checked_add(Duration::from_secs(deployment.settings.keep_alive_max_secs)).unwrap_or(now);
    Ok(match keep {
        None => None,
        Some(KeepAlive::Unload) => return Err(OllamaError::forbidden("keep_alive 0 (unloading a model others use) needs an admin token")),
        Some(KeepAlive::Keep(Keep::Forever)) => Some(KeepAlive::Keep(Keep::Until(limit))),
        Some(KeepAlive::Keep(Keep::Until(until))) => Some(KeepAlive::Keep(Keep::Until(until.min(limit)))),
        Some(KeepAlive::Keep(Keep::Default)) => Some(KeepAlive::Keep(Keep::Default)),
    })
}

/// Applies a request's `keep_alive` to its deployment (an ordinary caller's capped, and never
/// shortening a pin someone else set); `true` when the request asked to unload and is empty
/// (it only came to do that).
fn apply_keep_alive(state: &AppState, principal: &Principal, deployment: &domain::meta::Deployment, keep: Option<KeepAlive>, empty: bool) -> Result<bool, OllamaError> {
    let privileged = may_manage_residency(principal, deployment);
    let keep = if privileged { keep } else { cap_keep_alive(deployment, keep)? };
    let name = deployment.name.as_str();
    Ok(match keep {
        None => false,
        Some(KeepAlive::Keep(keep)) if privileged => {
            state.runtime.keep(name, keep);
            false
        }
        Some(KeepAlive::Keep(keep)) => {
            state.runtime.extend_keep(name, keep);
            false
        }
        Some(KeepAlive::Unload) if empty => state.runtime.unload_if_idle(name),
        Some(KeepAlive::Unload) => {
            // Evictable from now on; it goes when the budget next needs room.
            state.runtime.keep(name, Keep::Until(std::time::SystemTime::now()));
            false
        }
    })
}

/// The deployment's served model and how long getting it took (its load, if this request did it).
async fn load(state: &AppState, principal: &Principal, model: &str) -> Result<(Arc<Served>, Duration), OllamaError> {
    let started = Instant::now();
    let served = openai::serve(state, principal, model_name(model)).await.map_err(|err| {
        let (status, message) = err.parts();
        if status == StatusCode::NOT_FOUND {
            // Ollama's own words, which tools look for.
            OllamaError { status, message: format!("model {model:?} not found, try pulling it first"), headers: None }
        } else {
            OllamaError { status, message: message.to_owned(), headers: None }
        }
    })?;
    Ok((served, started.elapsed()))
}

/// A deployment name from an Ollama model name: `name:latest` is `name`.
fn model_name(model: &str) -> &str {
    model.strip_suffix(":latest").unwrap_or(model)
}

fn generator(served: &Served) -> Result<&Engine, OllamaError> {
    match &served.backend {
        Backend::Generate(engine) => Ok(engine),
        Backend::Embed(_) => Err(OllamaError::invalid(format!("model {:?} does not support generate", served.deployment.name))),
    }
}

fn details(deployment: &Deployment) -> wire::ModelDetails {
    let path = deployment.file_path.as_str();
    let format = if path.ends_with(".gguf") {
        "gguf"
    } else if path.ends_with(".safetensors") {
        "safetensors"
    } else {
        ""
    };
    wire::ModelDetails { parent_model: String::new(), format: format.to_owned(), family: String::new(), families: None, parameter_size: String::new(), quantization_level: String::new() }
}

fn with_revision(served: &Served, mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&served.revision) {
        response.headers_mut().insert("x-mantle-revision", value);
    }
    response
}

fn assistant(content: String) -> wire::Message {
    wire::Message { role: "assistant".into(), content, images: None, tool_calls: None, tool_name: None, thinking: None }
}

/// Now, as Ollama writes it (RFC 3339, nanoseconds, UTC).
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn stats(reason: &str, started: Instant, load: Duration, prompt_tokens: usize, prompt_time: Duration, completion_tokens: usize, eval_time: Duration) -> wire::Stats {
    wire::Stats {
        done_reason: reason.to_owned(),
        total_duration: nanos(started.elapsed()),
        load_duration: nanos(load),
        prompt_eval_count: prompt_tokens as u64,
        prompt_eval_duration: nanos(prompt_time),
        eval_count: completion_tokens as u64,
        eval_duration: nanos(eval_time),
    }
}

/// Which answer shape a run has.
#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Generate,
}

/// One generation and what its last line reports.
struct Run {
    generation: Generation,
    timer: RequestTimer,
    prompt_tokens: usize,
    started: Instant,
    load: Duration,
    queued: Instant,
    first: Option<Instant>,
    /// Chat with tools: the answer is parsed for calls, sent in a line before the last.
    parser: Option<CallParser>,
    calls: Vec<crate::tools::Call>,
    ready: VecDeque<Step>,
}

impl Run {
    #[allow(clippy::too_many_arguments, reason = "one call per route; a struct would only rename them")]
    fn start(state: &AppState, principal: &Principal, api: &'static str, served: &Served, engine: &Engine, prompt: Vec<Token>, options: &Options, started: Instant, load: Duration, admission: domain::quota::Admission) -> Result<Run, OllamaError> {
        let n_ctx = engine.info().n_ctx;
        if prompt.len() >= n_ctx {
            return Err(OllamaError::invalid(format!("the prompt has {} tokens; the model's context holds {n_ctx}", prompt.len())));
        }
        let prompt_tokens = prompt.len();
        let max_tokens = options.max_tokens.unwrap_or(n_ctx - prompt.len()).min(n_ctx - prompt.len());
        let mut timer = state.metrics.start(&served.deployment.name).billed(&state.usage, principal, api, &served.deployment.settings, admission);
        let request = GenerateRequest { prompt, params: options.params.clone(), max_tokens, stop: options.stop.clone(), logprobs: None, grammar: options.grammar.clone() };
        let generation = engine.generate(request).map_err(|err| {
            timer.reject(&err);
            OllamaError::from(err)
        })?;
        timer.track(generation.progress());
        Ok(Run { generation, timer, prompt_tokens, started, load, queued: Instant::now(), first: None, parser: None, calls: Vec::new(), ready: VecDeque::new() })
    }

    /// The next piece of text, or the end: `Ok(None)` with the finish reason and token count.
    async fn next(&mut self) -> Result<Step, String> {
        loop {
            if let Some(step) = self.ready.pop_front() {
                return Ok(step);
            }
            match self.generation.next().await {
                Some(Event::Text(piece)) => {
                    self.timer.token();
                    self.first.get_or_insert_with(Instant::now);
                    match &mut self.parser {
                        Some(parser) => {
                            let pieces = parser.push(&piece);
                            self.take_pieces(pieces);
                        }
                        None => return Ok(Step::Text(piece)),
                    }
                }
                Some(Event::Logprobs(_)) => {}
                Some(Event::Done { finish_reason, completion_tokens, .. }) => {
                    self.timer.finish(self.prompt_tokens, completion_tokens);
                    if let Some(parser) = &mut self.parser {
                        let pieces = parser.finish();
                        self.take_pieces(pieces);
                    }
                    let reason = if finish_reason == FinishReason::Length { "length" } else { "stop" };
                    let first = self.first.unwrap_or_else(Instant::now);
                    if !self.calls.is_empty() {
                        self.ready.push_back(Step::Calls(std::mem::take(&mut self.calls)));
                    }
                    self.ready.push_back(Step::Done(stats(reason, self.started, self.load, self.prompt_tokens, first - self.queued, completion_tokens, first.elapsed())));
                }
                Some(Event::Failed(err)) => {
                    self.timer.fail();
                    tracing::error!("failed to generate: {err}");
                    return Err("generation failed; see the server log".to_owned());
                }
                None => return Err("the engine stopped".to_owned()),
            }
        }
    }

    /// Content goes out as text; calls wait for the end of the answer (Ollama sends them whole).
    fn take_pieces(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            match piece {
                Piece::Content(text) => self.ready.push_back(Step::Text(text)),
                Piece::Start { name, .. } => self.calls.push(crate::tools::Call { name, arguments: String::new() }),
                Piece::Arguments { index, text } => {
                    if let Some(call) = self.calls.get_mut(index) {
                        call.arguments.push_str(&text);
                    }
                }
            }
        }
    }

    fn line(model: &str, shape: Shape, text: String, calls: Vec<crate::tools::Call>, stats: Option<wire::Stats>) -> Bytes {
        let done = stats.is_some();
        let mut json = match shape {
            Shape::Chat => {
                let mut message = assistant(text);
                if !calls.is_empty() {
                    // Ollama's calls carry the arguments as an object.
                    let calls: Vec<Value> =
                        calls.into_iter().enumerate().map(|(i, c)| serde_json::json!({"function": {"index": i, "name": c.name, "arguments": serde_json::from_str::<Value>(&c.arguments).unwrap_or_else(|_| serde_json::json!({}))}})).collect();
                    message.tool_calls = Some(Value::Array(calls));
                }
                serde_json::to_vec(&wire::ChatResponse { model: model.to_owned(), created_at: now(), message, done, stats })
            }
            Shape::Generate => serde_json::to_vec(&wire::GenerateResponse { model: model.to_owned(), created_at: now(), response: text, done, stats }),
        }
        .expect("responses serialize");
        json.push(b'\n');
        Bytes::from(json)
    }

    async fn respond(mut self, model: String, stream: bool, shape: Shape) -> Response {
        if !stream {
            let mut text = String::new();
            let mut calls = Vec::new();
            loop {
                match self.next().await {
                    Ok(Step::Text(piece)) => text.push_str(&piece),
                    Ok(Step::Calls(list)) => calls = list,
                    Ok(Step::Done(stats)) => {
                        let body = Self::line(&model, shape, text, calls, Some(stats));
                        return ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response();
                    }
                    Err(message) => return OllamaError { status: StatusCode::INTERNAL_SERVER_ERROR, message, headers: None }.into_response(),
                }
            }
        }
        // NDJSON: a line per piece of text, then the done line with the counts; a failure
        // mid-stream is an `{"error": ...}` line, which the ollama client raises. Dropping the
        // body (a client that left) drops the generation, which cancels it in the engine.
        let lines = futures::stream::unfold(Some(self), move |run| {
            let model = model.clone();
            async move {
                let mut run = run?;
                let line = match run.next().await {
                    Ok(Step::Text(piece)) => return Some((Ok::<_, std::convert::Infallible>(Self::line(&model, shape, piece, Vec::new(), None)), Some(run))),
                    Ok(Step::Calls(calls)) => return Some((Ok(Self::line(&model, shape, String::new(), calls, None)), Some(run))),
                    Ok(Step::Done(stats)) => Self::line(&model, shape, String::new(), Vec::new(), Some(stats)),
                    Err(message) => {
                        let mut json = serde_json::to_vec(&ErrorBody { error: message }).expect("errors serialize");
                        json.push(b'\n');
                        Bytes::from(json)
                    }
                };
                Some((Ok(line), None))
            }
        });
        ([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response()
    }
}

enum Step {
    Text(String),
    Calls(Vec<crate::tools::Call>),
    Done(wire::Stats),
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn go_durations() {
        for (text, seconds) in [("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), ("-1m", -60.0), ("0", 0.0), ("250ms", 0.25), ("90s", 90.0), ("1.5h", 5400.0), ("3600", 3600.0)] {
            assert_eq!(parse_duration(text), Some(seconds), "{text}");
        }
        for text in ["", "5x", "m", "1h-", "abc", "5 m"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }
}
