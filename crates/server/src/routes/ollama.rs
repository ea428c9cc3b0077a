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
use engine::SamplingParams;
use serde_json::{Map, Value};

use crate::inference::tools::{Call, ToolPlan};
use crate::inference::{self, Answer, EmbedInput, EmbedRequest, Finish, GenerationRequest, InferenceError, Input, KeepAlive, Output, Sampling, Target};
use crate::runtime::Keep;
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

impl OllamaError {
    fn invalid(message: impl Into<String>) -> Self {
        OllamaError { status: StatusCode::BAD_REQUEST, message: message.into(), headers: None }
    }

    fn unsupported(field: &str, what: &str) -> Self {
        Self::invalid(format!("{field}: {what} is not supported by this server yet"))
    }
}

impl From<domain::Error> for OllamaError {
    fn from(err: domain::Error) -> Self {
        use domain::Error;
        let status = match &err {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) | Error::RepoNotFound(_) | Error::RevisionNotFound(_) | Error::EntryNotFound { .. } => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Internal(detail) => {
                tracing::error!("failed to serve an Ollama request: {detail}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let message = match &err {
            Error::Internal(_) => "internal error; see the server log".to_owned(),
            Error::Unauthenticated(_) => format!("{err}: pass a Mantle token as the API key (Authorization: Bearer <token>)"),
            other => other.to_string(),
        };
        OllamaError { status, message, headers: None }
    }
}

impl From<InferenceError> for OllamaError {
    fn from(err: InferenceError) -> Self {
        match err {
            InferenceError::Invalid { message, .. } | InferenceError::ContextExceeded { message, .. } => OllamaError::invalid(message),
            InferenceError::Unsupported { param, what } => OllamaError::unsupported(&param, &what),
            InferenceError::NotGenerative { model } => OllamaError::invalid(format!("model {model:?} does not support generate")),
            InferenceError::NotEmbedding { model } => OllamaError::invalid(format!("model {model:?} does not support embeddings")),
            InferenceError::NoChatTemplate { model } => OllamaError::invalid(format!("model {model:?} has no chat template; use /api/generate with raw: true")),
            InferenceError::Quota(exceeded) => {
                let headers = crate::quotas::headers(&exceeded.limits, Some(exceeded.retry_after));
                OllamaError { status: StatusCode::TOO_MANY_REQUESTS, message: exceeded.message, headers: Some(Box::new(headers)) }
            }
            InferenceError::Domain(err) => err.into(),
            InferenceError::Engine(engine::InferError::Overloaded) => OllamaError { status: StatusCode::TOO_MANY_REQUESTS, message: engine::InferError::Overloaded.to_string(), headers: None },
            InferenceError::Engine(err) => {
                tracing::error!("failed to reach an engine: {err}");
                OllamaError { status: StatusCode::SERVICE_UNAVAILABLE, message: "the model is unavailable; see the server log".into(), headers: None }
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
    let principal = inference::authenticate(&state, &headers).await?;
    let mut models = Vec::new();
    for deployment in state.hub.runnable_deployments(&principal).await? {
        let size = state.hub.content_size(&deployment.file_sha256).await?.unwrap_or(0);
        models.push(wire::TagsModel { name: deployment.name.clone(), model: deployment.name.clone(), modified_at: deployment.created_at.clone(), size, digest: deployment.file_sha256.to_string(), details: details(&deployment) });
    }
    Ok(Json(wire::TagsResponse { models }))
}

/// `GET /api/ps`: the deployments loaded in this process that the caller may use.
pub(crate) async fn ps(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<wire::PsResponse>, OllamaError> {
    let principal = inference::authenticate(&state, &headers).await?;
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
    let principal = inference::authenticate(&state, &headers).await?;
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
    let principal = inference::authenticate(&state, &headers).await?;
    let request: wire::ChatRequest = body(&request)?;
    // Formats and tool schemas compile into grammars: CPU work the caller chooses, off the async workers.
    let (request, parsed) = inference::prompt::off_async(move || {
        let parsed = Options::parse(&request.common).and_then(|options| Ok((options, ToolPlan::parse(request.tools.as_ref(), None, None).map_err(|err| OllamaError::invalid(err.message))?)));
        (request, parsed)
    })
    .await;
    let (options, plan) = parsed?;
    if plan.is_some() && options.grammar.is_some() {
        return Err(OllamaError::unsupported("format", "format together with tools"));
    }
    let messages = chat_messages(&request.messages)?;
    let keep = keep_alive(request.common.keep_alive.as_ref())?;
    let model = request.model;
    let target = load(&state, &principal, &model).await?;
    if !target.generates() {
        return Err(InferenceError::NotGenerative { model: target.name().to_owned() }.into());
    }
    let unloaded = inference::apply_keep_alive(&state, &principal, &target.served.deployment, keep, messages.is_empty())?;
    if messages.is_empty() {
        // Ollama's way to load (or, with keep_alive 0, unload) a model: an empty chat answers at once.
        let reason = if unloaded { "unload" } else { "load" };
        let line = wire::ChatResponse { model, created_at: now(), message: assistant(String::new()), done: true, stats: Some(stats(reason, started, target.load, 0, Duration::ZERO, 0, Duration::ZERO)) };
        return Ok(with_revision(&target, Json(line).into_response()));
    }
    let answer = inference::generate(&state, &principal, &target, options.request("ollama.chat", Input::Chat(messages), plan)).await?;
    Ok(with_revision(&target, Run::new(answer, started, target.load).respond(model, options.stream, Shape::Chat).await))
}

/// Ollama chat messages as the chat template sees them (tool calls with object arguments), checked.
fn chat_messages(messages: &[wire::Message]) -> Result<Vec<Value>, OllamaError> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
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
        out.push(entry);
    }
    Ok(out)
}

/// `POST /api/generate`.
pub(crate) async fn generate(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let principal = inference::authenticate(&state, &headers).await?;
    let request: wire::GenerateRequest = body(&request)?;
    let (request, options) = inference::prompt::off_async(move || {
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
    let target = load(&state, &principal, &model).await?;
    if !target.generates() {
        return Err(InferenceError::NotGenerative { model: target.name().to_owned() }.into());
    }
    let prompt = request.prompt.unwrap_or_default();
    let unloaded = inference::apply_keep_alive(&state, &principal, &target.served.deployment, keep, prompt.is_empty())?;
    if prompt.is_empty() {
        let reason = if unloaded { "unload" } else { "load" };
        let line = wire::GenerateResponse { model, created_at: now(), response: String::new(), done: true, stats: Some(stats(reason, started, target.load, 0, Duration::ZERO, 0, Duration::ZERO)) };
        return Ok(with_revision(&target, Json(line).into_response()));
    }
    // Raw: the prompt as it is. Otherwise the model's chat template around it, as Ollama does;
    // a model without one gets the bare prompt (Ollama's default template is `{{ .Prompt }}`).
    let input = if target.has_chat_template() && !request.raw.unwrap_or(false) {
        let mut messages = Vec::new();
        if let Some(system) = request.system.filter(|s| !s.is_empty()) {
            messages.push(serde_json::json!({ "role": "system", "content": system }));
        }
        messages.push(serde_json::json!({ "role": "user", "content": prompt }));
        Input::Chat(messages)
    } else {
        Input::Texts(vec![prompt])
    };
    let answer = inference::generate(&state, &principal, &target, options.request("ollama.generate", input, None)).await?;
    Ok(with_revision(&target, Run::new(answer, started, target.load).respond(model, options.stream, Shape::Generate).await))
}

/// `POST /api/embed`.
pub(crate) async fn embed(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Response, OllamaError> {
    let started = Instant::now();
    let principal = inference::authenticate(&state, &headers).await?;
    let request: wire::EmbedRequest = body(&request)?;
    let inputs = match request.input {
        wire::EmbedInput::One(text) => vec![text],
        wire::EmbedInput::Many(texts) => texts,
    };
    if inputs.is_empty() || inputs.len() > 2048 {
        return Err(OllamaError::invalid("input must hold 1 to 2048 texts"));
    }
    let keep = keep_alive(request.keep_alive.as_ref())?;
    let target = load(&state, &principal, &request.model).await?;
    inference::apply_keep_alive(&state, &principal, &target.served.deployment, keep, false)?;
    let embed = EmbedRequest { api: "ollama.embed", input: EmbedInput::Texts(inputs), truncate: request.truncate.unwrap_or(true), dimensions: request.dimensions };
    let result = inference::embed(&state, &principal, &target, embed).await?;
    let line = wire::EmbedResponse { model: request.model, embeddings: result.vectors, total_duration: nanos(started.elapsed()), load_duration: nanos(target.load), prompt_eval_count: result.prompt_tokens as u64 };
    Ok(with_revision(&target, Json(line).into_response()))
}

/// `POST /api/embeddings`, the older one-text form.
pub(crate) async fn embeddings(State(state): State<AppState>, headers: HeaderMap, request: Bytes) -> Result<Response, OllamaError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let request: wire::EmbeddingsRequest = body(&request)?;
    let keep = keep_alive(request.keep_alive.as_ref())?;
    let target = load(&state, &principal, &request.model).await?;
    inference::apply_keep_alive(&state, &principal, &target.served.deployment, keep, request.prompt.is_empty())?;
    if request.prompt.is_empty() {
        // Ollama answers an empty prompt with an empty vector (a way to load the model).
        return Ok(with_revision(&target, Json(wire::EmbeddingsResponse { embedding: Vec::new() }).into_response()));
    }
    let embed = EmbedRequest { api: "ollama.embeddings", input: EmbedInput::Texts(vec![request.prompt]), truncate: true, dimensions: None };
    let mut result = inference::embed(&state, &principal, &target, embed).await?;
    Ok(with_revision(&target, Json(wire::EmbeddingsResponse { embedding: result.vectors.remove(0) }).into_response()))
}

/// Validated generation options.
struct Options {
    /// What the request set; the deployment's defaults and then Ollama's fill the rest.
    sampling: Sampling,
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
        let mut params = Sampling::default();
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
                "temperature" => params.temperature = Some(in_range(0.0, 2.0)? as f32),
                "top_p" => params.top_p = Some(in_range(0.0, 1.0)? as f32),
                "min_p" => params.min_p = Some(in_range(0.0, 1.0)? as f32),
                "top_k" => params.top_k = Some(in_range(-1.0, 1e6)?.max(0.0) as usize),
                "repeat_penalty" => {
                    let penalty = in_range(0.0, 10.0)? as f32;
                    params.repetition_penalty = Some(if penalty == 0.0 { 1.0 } else { penalty });
                }
                "repeat_last_n" => {
                    let n = in_range(-1.0, 1e6)?;
                    // -1: the whole context; 0: no penalty.
                    if n == 0.0 {
                        params.repetition_penalty = Some(1.0);
                        params.frequency_penalty = Some(0.0);
                        params.presence_penalty = Some(0.0);
                    }
                    params.penalty_last_n = Some(n.max(0.0) as usize);
                }
                "presence_penalty" => params.presence_penalty = Some(in_range(-2.0, 2.0)? as f32),
                "frequency_penalty" => params.frequency_penalty = Some(in_range(-2.0, 2.0)? as f32),
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
        Ok(Options { sampling: params, max_tokens, stop, stream: fields.stream.unwrap_or(true), grammar })
    }

    /// The inference service's request for `input`.
    fn request(&self, api: &'static str, input: Input, tools: Option<ToolPlan>) -> GenerationRequest {
        GenerationRequest {
            api,
            input,
            sampling: self.sampling.clone(),
            // Ollama's defaults: temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1 over the last 64 tokens.
            fallback: SamplingParams { temperature: 0.8, top_k: 40, top_p: 0.9, min_p: 0.0, repetition_penalty: 1.1, penalty_last_n: 64, ..SamplingParams::default() },
            max_tokens: self.max_tokens,
            clip_to_context: true,
            stop: self.stop.clone(),
            n: 1,
            logprobs: None,
            echo: false,
            constraint: self.grammar.clone(),
            tools,
        }
    }
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

/// The deployment's served model and how long getting it took (its load, if this request did it).
async fn load(state: &AppState, principal: &Principal, model: &str) -> Result<Target, OllamaError> {
    inference::resolve(state, principal, model_name(model)).await.map_err(|err| {
        let err = OllamaError::from(err);
        if err.status == StatusCode::NOT_FOUND {
            // Ollama's own words, which tools look for.
            OllamaError { message: format!("model {model:?} not found, try pulling it first"), ..err }
        } else {
            err
        }
    })
}

/// A deployment name from an Ollama model name: `name:latest` is `name`.
fn model_name(model: &str) -> &str {
    model.strip_suffix(":latest").unwrap_or(model)
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

fn with_revision(target: &Target, mut response: Response) -> Response {
    if let Ok(value) = HeaderValue::from_str(&target.served.revision) {
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

/// One answer and what its last line reports.
struct Run {
    answer: Answer,
    started: Instant,
    load: Duration,
    queued: Instant,
    first: Option<Instant>,
    /// Tool calls: sent whole, in a line before the last (Ollama does not stream them).
    calls: Vec<Call>,
    reason: Finish,
    ready: VecDeque<Step>,
}

impl Run {
    fn new(answer: Answer, started: Instant, load: Duration) -> Run {
        Run { answer, started, load, queued: Instant::now(), first: None, calls: Vec::new(), reason: Finish::Stop, ready: VecDeque::new() }
    }

    /// The next piece of text, the calls, then the end with its statistics.
    async fn next(&mut self) -> Result<Step, String> {
        loop {
            if let Some(step) = self.ready.pop_front() {
                return Ok(step);
            }
            match self.answer.next().await {
                Some(Output::Logprobs { .. } | Output::Prompt { .. }) => {}
                Some(Output::Text { text, .. }) => {
                    self.first.get_or_insert_with(Instant::now);
                    return Ok(Step::Text(text));
                }
                Some(Output::CallStart { name, .. }) => {
                    self.first.get_or_insert_with(Instant::now);
                    self.calls.push(Call { name, arguments: String::new() });
                }
                Some(Output::CallArguments { call, text, .. }) => {
                    if let Some(call) = self.calls.get_mut(call) {
                        call.arguments.push_str(&text);
                    }
                }
                Some(Output::Finished { reason, .. }) => self.reason = reason,
                Some(Output::Usage { prompt_tokens, completion_tokens }) => {
                    // Ollama says `stop` for an answer that is a call.
                    let reason = if self.reason == Finish::Length { "length" } else { "stop" };
                    let first = self.first.unwrap_or_else(Instant::now);
                    if !self.calls.is_empty() {
                        self.ready.push_back(Step::Calls(std::mem::take(&mut self.calls)));
                    }
                    self.ready.push_back(Step::Done(stats(reason, self.started, self.load, prompt_tokens, first - self.queued, completion_tokens, first.elapsed())));
                }
                Some(Output::Failed(message)) => return Err(message),
                None => return Err("the engine stopped".to_owned()),
            }
        }
    }

    fn line(model: &str, shape: Shape, text: String, calls: Vec<Call>, stats: Option<wire::Stats>) -> Bytes {
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
    Calls(Vec<Call>),
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
