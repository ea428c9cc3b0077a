//! The OpenAI API over deployments: `/v1/models`, `/v1/chat/completions` and `/v1/completions`,
//! plain and streamed (SSE), and `/v1/embeddings`. Mantle tokens are the API keys; a deployment is a model the caller
//! may use when it can see the deployment's repo.

mod error;
mod params;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use api::openai as wire;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use domain::auth::Principal;
use engine::{Engine, Event, FinishReason, GenerateRequest, Generation, Token, TokenLogprob};
use futures::stream::{BoxStream, SelectAll};
use futures::StreamExt as _;

pub(crate) use error::OpenAiError;
use params::{Endpoint, Options};

use crate::tools::{CallParser, Piece, ToolPlan};

use crate::metrics::RequestTimer;
use crate::runtime::{Backend, Served};
use crate::AppState;

/// `GET /v1/models`: the deployments the caller may use.
pub(crate) async fn list_models(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<wire::ModelList>, OpenAiError> {
    let principal = authenticate(&state, &headers).await?;
    let deployments = state.hub.runnable_deployments(&principal).await?;
    let data = deployments.iter().map(model_entry).collect();
    Ok(Json(wire::ModelList { object: "list".into(), data }))
}

/// `GET /v1/models/{model}`.
pub(crate) async fn retrieve_model(State(state): State<AppState>, headers: HeaderMap, Path(model): Path<String>) -> Result<Json<wire::Model>, OpenAiError> {
    let principal = authenticate(&state, &headers).await?;
    let deployment = state.hub.runnable_deployment(&principal, &model).await?;
    Ok(Json(model_entry(&deployment)))
}

/// `POST /v1/chat/completions`.
pub(crate) async fn create_chat_completion(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::ChatCompletionRequest>, JsonRejection>) -> Result<Response, OpenAiError> {
    let principal = authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    // Schemas and patterns compile into grammars: CPU work the caller chooses, off the async workers.
    let (request, parsed) = crate::prompt::off_async(move || {
        let parsed = chat_options(&request.sampling);
        (request, parsed)
    })
    .await;
    let (options, plan) = parsed?;
    let mut messages = params::template_messages(&request.messages)?;
    let served = serve(&state, &principal, &request.model).await?;
    let engine = generator(&served)?;
    let Some(chat) = &served.chat else {
        return Err(OpenAiError::invalid(format!("model {} has no chat template; use /v1/completions", request.model), Some("model")));
    };
    crate::tools::messages_for_template(&mut messages, plan.as_ref(), &chat.source);
    let template_tools = plan.as_ref().filter(|_| crate::tools::template_renders_tools(&chat.source)).map(ToolPlan::template_tools);
    let prompt = crate::prompt::chat(engine, chat, messages, template_tools).await?;
    let admission = crate::quotas::admit(&state, &principal, prompt.len()).await?;
    let limits = crate::quotas::headers(&admission.limits, None);
    let timer = state.metrics.start(&served.deployment.name).billed(&state.usage, &principal, "openai.chat", &served.deployment.settings, admission);
    let mut run = Run::start(engine, vec![prompt], &options, Endpoint::Chat, timer)?;
    run.tools = plan;
    let mut response = run.respond(&served, request.model, options.stream, options.include_usage).await;
    response.headers_mut().extend(limits);
    Ok(response)
}

/// The sampling options and tool plan of a chat request (grammars compiled).
fn chat_options(sampling: &wire::SamplingFields) -> Result<(Options, Option<ToolPlan>), OpenAiError> {
    let mut options = Options::parse(sampling, Endpoint::Chat)?;
    let plan = ToolPlan::parse(sampling.tools.as_ref(), sampling.tool_choice.as_ref(), sampling.parallel_tool_calls).map_err(|err| OpenAiError::invalid(err.message, Some(&err.param)))?;
    let plan = plan.filter(ToolPlan::active);
    if let Some(plan) = &plan {
        if options.grammar.is_some() {
            return Err(OpenAiError::unsupported("response_format", "response_format json_object or json_schema together with tools"));
        }
        options.grammar = plan.grammar().map(Arc::new);
    }
    Ok((options, plan))
}

/// `POST /v1/completions`.
pub(crate) async fn create_completion(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::CompletionRequest>, JsonRejection>) -> Result<Response, OpenAiError> {
    let principal = authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    let (request, options) = crate::prompt::off_async(move || {
        let options = Options::parse(&request.sampling, Endpoint::Completions);
        (request, options)
    })
    .await;
    let options = options?;
    if request.best_of.is_some_and(|b| b as usize != options.n) {
        return Err(OpenAiError::unsupported("best_of", "best_of other than n"));
    }
    if request.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(OpenAiError::unsupported("suffix", "suffix (fill-in-the-middle)"));
    }
    if request.echo == Some(true) {
        return Err(OpenAiError::unsupported("echo", "echo"));
    }
    let served = serve(&state, &principal, &request.model).await?;
    let engine = generator(&served)?;
    let n_vocab = engine.info().n_vocab;
    let check_tokens = |tokens: &[u32]| -> Result<Vec<Token>, OpenAiError> {
        match tokens.iter().find(|t| **t as usize >= n_vocab) {
            Some(bad) => Err(OpenAiError::invalid(format!("token {bad} is outside the vocabulary of {n_vocab}"), Some("prompt"))),
            None => Ok(tokens.to_vec()),
        }
    };
    let too_many = || OpenAiError::invalid("prompt must hold 1 to 64 prompts (times n)", Some("prompt"));
    let prompts: Vec<Vec<Token>> = match &request.prompt {
        wire::Prompt::Text(text) => crate::prompt::texts(engine, vec![text.clone()]).await.map_err(prompt_error)?,
        // Counted before any tokenizing work is spent on them.
        wire::Prompt::Texts(texts) if texts.len() > 64 => return Err(too_many()),
        wire::Prompt::Texts(texts) => crate::prompt::texts(engine, texts.clone()).await.map_err(prompt_error)?,
        wire::Prompt::Tokens(tokens) => vec![check_tokens(tokens)?],
        wire::Prompt::TokenLists(lists) => lists.iter().map(|l| check_tokens(l)).collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() || prompts.len() * options.n > 64 {
        return Err(too_many());
    }
    let admission = crate::quotas::admit(&state, &principal, prompts.iter().map(Vec::len).sum::<usize>() * options.n).await?;
    let limits = crate::quotas::headers(&admission.limits, None);
    let timer = state.metrics.start(&served.deployment.name).billed(&state.usage, &principal, "openai.completions", &served.deployment.settings, admission);
    let run = Run::start(engine, prompts, &options, Endpoint::Completions, timer)?;
    let mut response = run.respond(&served, request.model, options.stream, options.include_usage).await;
    response.headers_mut().extend(limits);
    Ok(response)
}

/// A completions prompt that cannot be built: the error names `prompt`.
fn prompt_error(err: crate::prompt::PromptError) -> OpenAiError {
    OpenAiError::context_exceeded_in("prompt", err.to_string())
}

/// The most inputs one embeddings request may carry (OpenAI's limit).
const MAX_EMBEDDING_INPUTS: usize = 2048;

/// `POST /v1/embeddings`.
pub(crate) async fn create_embedding(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::EmbeddingRequest>, JsonRejection>) -> Result<Response, OpenAiError> {
    let principal = authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(OpenAiError::invalid(format!("encoding_format must be float or base64, not {other:?}"), Some("encoding_format"))),
    };
    let served = serve(&state, &principal, &request.model).await?;
    let Backend::Embed(engine) = &served.backend else {
        return Err(OpenAiError::invalid(format!("model {} generates text; embeddings need an embedding deployment", request.model), Some("model")));
    };
    if request.dimensions.is_some_and(|d| d as usize != engine.dims()) {
        return Err(OpenAiError::unsupported("dimensions", &format!("dimensions other than the model's {}", engine.dims())));
    }
    // Texts are counted and checked before any tokenizing work is spent on them; empty text is
    // refused, as OpenAI does.
    let texts = |texts: &[String]| {
        if texts.iter().any(String::is_empty) {
            return Err(OpenAiError::invalid("input must not contain empty strings", Some("input")));
        }
        Ok(texts.to_vec())
    };
    let inputs: Vec<Vec<Token>> = match &request.input {
        wire::Prompt::Text(text) => crate::prompt::embedding_inputs(engine, texts(std::slice::from_ref(text))?).await,
        wire::Prompt::Texts(list) if list.len() > MAX_EMBEDDING_INPUTS => return Err(OpenAiError::invalid(format!("input must hold 1 to {MAX_EMBEDDING_INPUTS} items"), Some("input"))),
        wire::Prompt::Texts(list) => crate::prompt::embedding_inputs(engine, texts(list)?).await,
        wire::Prompt::Tokens(tokens) => vec![tokens.clone()],
        wire::Prompt::TokenLists(lists) => lists.clone(),
    };
    if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
        return Err(OpenAiError::invalid(format!("input must hold 1 to {MAX_EMBEDDING_INPUTS} items"), Some("input")));
    }
    if let Some(long) = inputs.iter().find(|i| i.len() > engine.max_tokens()) {
        return Err(OpenAiError::context_exceeded_in("input", format!("an input has more than {} tokens, the model's maximum ({} or more)", engine.max_tokens(), long.len())));
    }
    if inputs.iter().any(Vec::is_empty) {
        return Err(OpenAiError::invalid("an input has no tokens", Some("input")));
    }
    if let Some(bad) = inputs.iter().flatten().find(|t| **t as usize >= engine.n_vocab()) {
        return Err(OpenAiError::invalid(format!("token {bad} is outside the vocabulary of {}", engine.n_vocab()), Some("input")));
    }
    let prompt_tokens: usize = inputs.iter().map(Vec::len).sum();
    let admission = crate::quotas::admit(&state, &principal, prompt_tokens).await?;
    let limits = crate::quotas::headers(&admission.limits, None);
    let mut timer = state.metrics.start(&served.deployment.name).billed(&state.usage, &principal, "openai.embeddings", &served.deployment.settings, admission);
    let vectors = engine.embed(inputs).await.map_err(|err| {
        timer.reject(&err);
        OpenAiError::from(err)
    })?;
    timer.finish(prompt_tokens, 0);
    let data = vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                wire::EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                wire::EmbeddingVector::Float(vector)
            };
            wire::Embedding { object: "embedding".into(), index: index as u32, embedding }
        })
        .collect();
    let usage = wire::EmbeddingUsage { prompt_tokens: prompt_tokens as u64, total_tokens: prompt_tokens as u64 };
    let mut headers = limits;
    if let Ok(value) = HeaderValue::from_str(&served.revision) {
        headers.insert("x-mantle-revision", value);
    }
    Ok((headers, Json(wire::EmbeddingList { object: "list".into(), data, model: request.model, usage })).into_response())
}

/// The generation engine of a deployment, or a 400 for an embedding deployment.
fn generator(served: &Served) -> Result<&Engine, OpenAiError> {
    match &served.backend {
        Backend::Generate(engine) => Ok(engine),
        Backend::Embed(_) => Err(OpenAiError::invalid(format!("model {} serves embeddings; use /v1/embeddings", served.deployment.name), Some("model"))),
    }
}

/// The Bearer token's principal; `/v1` always needs one.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, OpenAiError> {
    let principal = crate::auth::principal(state, headers).await?;
    principal.user()?;
    Ok(principal)
}

/// The loaded model behind `name`, if the caller may use it. A deployment that is gone
/// (undeployed, perhaps by another replica) is unloaded here.
pub(crate) async fn serve(state: &AppState, principal: &Principal, name: &str) -> Result<Arc<Served>, OpenAiError> {
    match state.hub.runnable_deployment(principal, name).await {
        Ok(deployment) => Ok(state.runtime.get(&state.hub, deployment).await?),
        Err(err) => {
            if matches!(err, domain::Error::NotFound(_)) {
                state.runtime.unload(name);
            }
            Err(err.into())
        }
    }
}

fn model_entry(deployment: &domain::meta::Deployment) -> wire::Model {
    let created = chrono::DateTime::parse_from_rfc3339(&deployment.created_at).map(|t| t.timestamp()).unwrap_or(0);
    wire::Model { id: deployment.name.clone(), object: "model".into(), created, owned_by: deployment.repo.namespace.to_string() }
}

/// One request's generations: every prompt times `n` choices, started together so they batch.
struct Run {
    endpoint: Endpoint,
    id: String,
    created: i64,
    prompt_tokens: usize,
    n_choices: usize,
    /// Whether the request asked for log probabilities.
    logprobs: bool,
    events: SelectAll<BoxStream<'static, (usize, Event)>>,
    timer: RequestTimer,
    /// Chat with tools: answers are parsed for calls.
    tools: Option<ToolPlan>,
}

impl Run {
    fn start(engine: &Engine, prompts: Vec<Vec<Token>>, options: &Options, endpoint: Endpoint, mut timer: RequestTimer) -> Result<Run, OpenAiError> {
        let n_ctx = engine.info().n_ctx;
        let mut streams = Vec::new();
        let prompt_tokens = prompts.iter().map(Vec::len).sum();
        for (p, prompt) in prompts.into_iter().enumerate() {
            if prompt.len() >= n_ctx {
                return Err(OpenAiError::context_exceeded(format!("the prompt has {} tokens; the model's context holds {n_ctx}", prompt.len())));
            }
            let max_tokens = options.max_tokens.unwrap_or(n_ctx - prompt.len());
            for j in 0..options.n {
                let index = p * options.n + j;
                let request = GenerateRequest { prompt: prompt.clone(), params: options.params_for(j), max_tokens, stop: options.stop.clone(), logprobs: options.logprobs, grammar: options.grammar.clone() };
                // A failure drops the generations already started, which cancels them.
                let generation = engine.generate(request).map_err(|err| {
                    timer.reject(&err);
                    OpenAiError::from(err)
                })?;
                timer.track(generation.progress());
                streams.push(events_of(index, generation));
            }
        }
        let prefix = if endpoint == Endpoint::Chat { "chatcmpl" } else { "cmpl" };
        let n_choices = streams.len();
        let logprobs = options.logprobs.is_some();
        Ok(Run { endpoint, id: format!("{prefix}-{}", random_id()), created: chrono::Utc::now().timestamp(), prompt_tokens, n_choices, logprobs, events: futures::stream::select_all(streams), timer, tools: None })
    }

    async fn respond(self, served: &Served, model: String, stream: bool, include_usage: bool) -> Response {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(&served.revision) {
            headers.insert("x-mantle-revision", value);
        }
        let head = Head { id: self.id.clone(), created: self.created, model, fingerprint: served.fingerprint.clone(), endpoint: self.endpoint };
        if stream {
            let chunks = stream_chunks(self, head, include_usage);
            (headers, Sse::new(chunks)).into_response()
        } else {
            match self.collect(head).await {
                Ok(body) => (headers, body).into_response(),
                Err(err) => err.into_response(),
            }
        }
    }

    async fn collect(mut self, head: Head) -> Result<Response, OpenAiError> {
        let mut texts = vec![String::new(); self.n_choices];
        let mut reasons = vec![None; self.n_choices];
        let mut logprobs: Vec<Vec<TokenLogprob>> = vec![Vec::new(); self.n_choices];
        let mut completion_tokens = 0;
        while let Some((index, event)) = self.events.next().await {
            match event {
                Event::Text(piece) => {
                    self.timer.token();
                    texts[index].push_str(&piece);
                }
                Event::Logprobs(list) => logprobs[index].extend(list),
                Event::Done { finish_reason, completion_tokens: n, .. } => {
                    completion_tokens += n;
                    reasons[index] = Some(finish_reason);
                }
                Event::Failed(err) => {
                    self.timer.fail();
                    return Err(domain::Error::Internal(format!("generation failed: {err}")).into());
                }
            }
        }
        let usage = usage(self.prompt_tokens, completion_tokens);
        self.timer.finish(self.prompt_tokens, completion_tokens);
        let finish = |i: usize| reason_text(reasons[i].unwrap_or(FinishReason::Stop)).to_owned();
        let wants = self.logprobs;
        let logprobs_of = |i: usize| wants.then(|| logprobs_json(head.endpoint, &logprobs[i], 0));
        Ok(match head.endpoint {
            Endpoint::Chat => {
                let tools = self.tools.as_ref();
                let choices = texts
                    .into_iter()
                    .enumerate()
                    .map(|(i, text)| {
                        let (content, calls) = match tools {
                            Some(plan) => crate::tools::split_answer(&text, CallParser::for_plan(plan)),
                            None => (text, Vec::new()),
                        };
                        let mut finish_reason = finish(i);
                        let tool_calls = (!calls.is_empty()).then(|| {
                            if reasons[i] == Some(FinishReason::Stop) {
                                finish_reason = tools.map_or("tool_calls", ToolPlan::finish_reason).to_owned();
                            }
                            calls.into_iter().map(|c| wire::ToolCall { id: crate::tools::call_id(), kind: "function".into(), function: wire::FunctionCall { name: c.name, arguments: c.arguments } }).collect()
                        });
                        let content = if tool_calls.is_some() && content.trim().is_empty() { None } else { Some(content) };
                        wire::ChatChoice { index: i as u32, message: wire::AssistantMessage { role: "assistant".into(), content, refusal: None, tool_calls }, logprobs: logprobs_of(i), finish_reason }
                    })
                    .collect();
                Json(wire::ChatCompletion { id: head.id, object: "chat.completion".into(), created: head.created, model: head.model, system_fingerprint: head.fingerprint, choices, usage }).into_response()
            }
            Endpoint::Completions => {
                let choices = texts.into_iter().enumerate().map(|(i, text)| wire::CompletionChoice { index: i as u32, text, logprobs: logprobs_of(i), finish_reason: Some(finish(i)) }).collect();
                Json(wire::Completion { id: head.id, object: "text_completion".into(), created: head.created, model: head.model, system_fingerprint: head.fingerprint, choices, usage: Some(Some(usage)) }).into_response()
            }
        })
    }
}

/// What every chunk of one response repeats.
#[derive(Clone)]
struct Head {
    id: String,
    created: i64,
    model: String,
    fingerprint: String,
    endpoint: Endpoint,
}

impl Head {
    /// One chunk with one choice's part (or, for the usage chunk, no choices).
    fn chunk(&self, part: Option<Part>, usage: Option<Option<wire::Usage>>) -> SseEvent {
        let finish = |r: Option<FinishReason>| r.map(|r| reason_text(r).to_owned());
        let json = match self.endpoint {
            Endpoint::Chat => {
                let choices = part
                    .into_iter()
                    .map(|p| wire::ChunkChoice {
                        index: p.index as u32,
                        delta: wire::Delta { role: p.role.map(str::to_owned), content: p.content, tool_calls: p.tool_calls },
                        logprobs: p.logprobs,
                        finish_reason: p.finish_text.map(str::to_owned).or_else(|| finish(p.finish)),
                    })
                    .collect();
                serde_json::to_string(&wire::ChatCompletionChunk { id: self.id.clone(), object: "chat.completion.chunk".into(), created: self.created, model: self.model.clone(), system_fingerprint: self.fingerprint.clone(), choices, usage })
            }
            Endpoint::Completions => {
                let choices = part.into_iter().map(|p| wire::CompletionChoice { index: p.index as u32, text: p.content.unwrap_or_default(), logprobs: p.logprobs, finish_reason: finish(p.finish) }).collect();
                serde_json::to_string(&wire::Completion { id: self.id.clone(), object: "text_completion".into(), created: self.created, model: self.model.clone(), system_fingerprint: self.fingerprint.clone(), choices, usage })
            }
        };
        SseEvent::default().data(json.expect("chunks serialize"))
    }
}

/// What one chunk says about one choice.
#[derive(Default)]
struct Part {
    index: usize,
    role: Option<&'static str>,
    content: Option<String>,
    logprobs: Option<serde_json::Value>,
    finish: Option<FinishReason>,
    tool_calls: Option<Vec<wire::ToolCallDelta>>,
    /// A finish reason the engine does not know (`tool_calls`).
    finish_text: Option<&'static str>,
}

/// The SSE body: a role chunk per chat choice, content chunks as text arrives, a finish chunk
/// per choice, the usage chunk when asked for, then `[DONE]`. Dropping it (a client that went
/// away) drops the generations, which cancels them in the engine.
fn stream_chunks(run: Run, head: Head, include_usage: bool) -> BoxStream<'static, Result<SseEvent, Infallible>> {
    struct State {
        run: Run,
        head: Head,
        include_usage: bool,
        queue: VecDeque<SseEvent>,
        completion_tokens: usize,
        /// Per choice: log probabilities not yet sent, and the text length sent so far.
        pending: Vec<Vec<TokenLogprob>>,
        sent_len: Vec<usize>,
        done: bool,
        /// Per choice, with tools: the parser that finds its calls.
        parsers: Vec<CallParser>,
    }
    impl State {
        /// The log probabilities of the tokens behind the next text piece, when asked for.
        fn take_logprobs(&mut self, index: usize) -> Option<serde_json::Value> {
            let entries = std::mem::take(&mut self.pending[index]);
            self.run.logprobs.then(|| logprobs_json(self.head.endpoint, &entries, self.sent_len[index]))
        }

        /// Chunks for what a choice's call parser found.
        fn push_pieces(&mut self, index: usize, pieces: Vec<Piece>, usage_field: Option<Option<wire::Usage>>) {
            for piece in pieces {
                let logprobs = if self.pending[index].is_empty() { None } else { self.take_logprobs(index) };
                let part = match piece {
                    Piece::Content(text) => Part { index, content: Some(text), logprobs, ..Part::default() },
                    Piece::Start { index: call, name } => {
                        let delta = wire::ToolCallDelta { index: call as u32, id: Some(crate::tools::call_id()), kind: Some("function".into()), function: wire::FunctionDelta { name: Some(name), arguments: Some(String::new()) } };
                        Part { index, tool_calls: Some(vec![delta]), logprobs, ..Part::default() }
                    }
                    Piece::Arguments { index: call, text } => {
                        let delta = wire::ToolCallDelta { index: call as u32, function: wire::FunctionDelta { name: None, arguments: Some(text) }, ..Default::default() };
                        Part { index, tool_calls: Some(vec![delta]), logprobs, ..Part::default() }
                    }
                };
                self.queue.push_back(self.head.chunk(Some(part), usage_field));
            }
        }
    }
    let usage_field = |include: bool| include.then_some(None);
    let mut queue = VecDeque::new();
    if head.endpoint == Endpoint::Chat {
        for index in 0..run.n_choices {
            queue.push_back(head.chunk(Some(Part { index, role: Some("assistant"), content: Some(String::new()), ..Part::default() }), usage_field(include_usage)));
        }
    }
    let n_choices = run.n_choices;
    let parsers = match &run.tools {
        Some(plan) => (0..n_choices).map(|_| CallParser::for_plan(plan)).collect(),
        None => Vec::new(),
    };
    let state = State { run, head, include_usage, queue, completion_tokens: 0, pending: vec![Vec::new(); n_choices], sent_len: vec![0; n_choices], done: false, parsers };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            if let Some(event) = state.queue.pop_front() {
                return Some((Ok(event), state));
            }
            if state.done {
                return None;
            }
            let usage_field = state.include_usage.then_some(None);
            match state.run.events.next().await {
                Some((index, Event::Text(piece))) if !state.parsers.is_empty() => {
                    state.run.timer.token();
                    let pieces = state.parsers[index].push(&piece);
                    state.push_pieces(index, pieces, usage_field);
                }
                Some((index, Event::Text(piece))) => {
                    state.run.timer.token();
                    let logprobs = state.take_logprobs(index);
                    state.sent_len[index] += piece.len();
                    state.queue.push_back(state.head.chunk(Some(Part { index, content: Some(piece), logprobs, ..Part::default() }), usage_field));
                }
                Some((index, Event::Logprobs(list))) => state.pending[index].extend(list),
                Some((index, Event::Done { finish_reason, completion_tokens, .. })) => {
                    state.completion_tokens += completion_tokens;
                    let mut finish_text = None;
                    if !state.parsers.is_empty() {
                        let pieces = state.parsers[index].finish();
                        state.push_pieces(index, pieces, usage_field);
                        if state.parsers[index].calls() > 0 && finish_reason == FinishReason::Stop {
                            finish_text = state.run.tools.as_ref().map(ToolPlan::finish_reason);
                        }
                    }
                    let content = (state.head.endpoint == Endpoint::Completions).then(String::new);
                    let logprobs = if state.pending[index].is_empty() { None } else { state.take_logprobs(index) };
                    state.queue.push_back(state.head.chunk(Some(Part { index, content, logprobs, finish: Some(finish_reason), finish_text, ..Part::default() }), usage_field));
                }
                Some((_, Event::Failed(err))) => {
                    tracing::error!("failed to generate mid-stream: {err}");
                    state.run.timer.fail();
                    let body = serde_json::json!({ "error": { "message": "generation failed; see the server log", "type": "server_error", "param": null, "code": null } });
                    state.queue.push_back(SseEvent::default().data(body.to_string()));
                    state.done = true;
                }
                None => {
                    let (prompt_tokens, completion_tokens) = (state.run.prompt_tokens, state.completion_tokens);
                    state.run.timer.finish(prompt_tokens, completion_tokens);
                    if state.include_usage {
                        state.queue.push_back(state.head.chunk(None, Some(Some(usage(prompt_tokens, completion_tokens)))));
                    }
                    state.queue.push_back(SseEvent::default().data("[DONE]"));
                    state.done = true;
                }
            }
        }
    })
    .boxed()
}

fn events_of(index: usize, generation: Generation) -> BoxStream<'static, (usize, Event)> {
    futures::stream::unfold(generation, move |mut generation| async move { generation.next().await.map(|event| ((index, event), generation)) }).boxed()
}

/// Log probabilities in the route's shape: chat's `{content: [...]}`, or the completions API's
/// parallel arrays with text offsets counted from `offset`.
fn logprobs_json(endpoint: Endpoint, entries: &[TokenLogprob], offset: usize) -> serde_json::Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    match endpoint {
        Endpoint::Chat => {
            let content: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    let top: Vec<serde_json::Value> = e.top.iter().map(|t| serde_json::json!({ "token": text(&t.bytes), "logprob": t.logprob, "bytes": t.bytes })).collect();
                    serde_json::json!({ "token": text(&e.bytes), "logprob": e.logprob, "bytes": e.bytes, "top_logprobs": top })
                })
                .collect();
            serde_json::json!({ "content": content, "refusal": null })
        }
        Endpoint::Completions => {
            let mut at = offset;
            let mut offsets = Vec::with_capacity(entries.len());
            for e in entries {
                offsets.push(at);
                at += e.bytes.len();
            }
            let top: Vec<serde_json::Value> = entries.iter().map(|e| serde_json::Value::Object(e.top.iter().map(|t| (text(&t.bytes), serde_json::json!(t.logprob))).collect())).collect();
            serde_json::json!({
                "tokens": entries.iter().map(|e| text(&e.bytes)).collect::<Vec<_>>(),
                "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
                "top_logprobs": top,
                "text_offset": offsets,
            })
        }
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> wire::Usage {
    wire::Usage { prompt_tokens: prompt_tokens as u64, completion_tokens: completion_tokens as u64, total_tokens: (prompt_tokens + completion_tokens) as u64 }
}

fn reason_text(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

pub(crate) fn random_id() -> String {
    use rand::distributions::{Alphanumeric, DistString as _};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}
