//! The OpenAI API over deployments: `/v1/models`, `/v1/chat/completions` and `/v1/completions`,
//! plain and streamed (SSE), and `/v1/embeddings`. Mantle tokens are the API keys; a deployment is a model the caller
//! may use when it can see the deployment's repo. This module only translates OpenAI's wire
//! format to and from the inference service (`crate::inference`).

mod answer;
mod error;
pub(crate) mod evals;
pub(crate) mod files;
mod list;
mod params;
mod responses;
mod tokenizer;
pub(crate) mod vector_stores;
pub(crate) mod webhooks;

use api::openai as wire;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;

pub(crate) use error::OpenAiError;
use params::{Endpoint, Options};
pub(crate) use responses::{create_response, delete_response, list_input_items, retrieve_response};
pub(crate) use tokenizer::{detokenize, detokenize_at, tokenize, tokenize_at, tokenizer_info, tokenizer_info_at};

use crate::inference::tools::ToolPlan;
use crate::inference::{self, EmbedInput, EmbedRequest, Input};
use crate::AppState;

/// `GET /v1/models`: the deployments the caller may use.
pub(crate) async fn list_models(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<wire::ModelList>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let deployments = state.hub.runnable_deployments(&principal).await?;
    let mut data: Vec<wire::Model> = deployments.iter().map(model_entry).collect();
    // Release routes are models to call too.
    for route in state.hub.runnable_routes(&principal).await? {
        let created = chrono::DateTime::parse_from_rfc3339(&route.updated_at).map(|t| t.timestamp()).unwrap_or(0);
        data.push(wire::Model { id: route.name, object: "model".into(), created, owned_by: "route".into() });
    }
    Ok(Json(wire::ModelList { object: "list".into(), data }))
}

/// `GET /v1/models/{model}`.
pub(crate) async fn retrieve_model(State(state): State<AppState>, headers: HeaderMap, Path(model): Path<String>) -> Result<Json<wire::Model>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    match state.hub.runnable_deployment(&principal, &model).await {
        Ok(deployment) => Ok(Json(model_entry(&deployment))),
        Err(domain::Error::NotFound(message)) => match state.hub.runnable_routes(&principal).await?.into_iter().find(|r| r.name == model) {
            Some(route) => {
                let created = chrono::DateTime::parse_from_rfc3339(&route.updated_at).map(|t| t.timestamp()).unwrap_or(0);
                Ok(Json(wire::Model { id: route.name, object: "model".into(), created, owned_by: "route".into() }))
            }
            None => Err(domain::Error::NotFound(message).into()),
        },
        Err(err) => Err(err.into()),
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn create_chat_completion(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::ChatCompletionRequest>, JsonRejection>) -> Result<Response, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    // Schemas and patterns compile into grammars: CPU work the caller chooses, off the async workers.
    let (request, parsed) = inference::prompt::off_async(move || {
        let parsed = chat_options(&request.sampling);
        (request, parsed)
    })
    .await;
    let (options, tools) = parsed?;
    let messages = params::template_messages(&request.messages)?;
    let target = inference::resolve(&state, &principal, &request.model).await?;
    let generation = options.request("openai.chat", Input::Chat(messages), tools);
    let answer = inference::generate(&state, &principal, &target, generation).await?;
    Ok(answer::respond(answer, Endpoint::Chat, request.model, options.stream, options.include_usage).await)
}

/// The sampling options and tool plan of a chat request (grammars compiled).
fn chat_options(sampling: &wire::SamplingFields) -> Result<(Options, Option<ToolPlan>), OpenAiError> {
    let options = Options::parse(sampling, Endpoint::Chat)?;
    let plan = ToolPlan::parse(sampling.tools.as_ref(), sampling.tool_choice.as_ref(), sampling.parallel_tool_calls).map_err(|err| OpenAiError::invalid(err.message, Some(&err.param)))?;
    Ok((options, plan))
}

/// `POST /v1/completions`.
pub(crate) async fn create_completion(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::CompletionRequest>, JsonRejection>) -> Result<Response, OpenAiError> {
    completion(state, headers, body, None).await
}

/// `POST /deployments/{name}/v1/completions`: the same, for clients that derive other endpoints
/// from the completions URL (lm-evaluation-harness's remote tokenizer strips `/v1/completions`
/// and calls `/tokenize` there, naming no model). The body's `model` must name the same one.
pub(crate) async fn create_completion_at(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap, body: Result<Json<wire::CompletionRequest>, JsonRejection>) -> Result<Response, OpenAiError> {
    completion(state, headers, body, Some(name)).await
}

async fn completion(state: AppState, headers: HeaderMap, body: Result<Json<wire::CompletionRequest>, JsonRejection>, at: Option<String>) -> Result<Response, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    if let Some(at) = at.filter(|at| *at != request.model) {
        return Err(OpenAiError::invalid(format!("model {:?} is not the deployment this path names ({at:?})", request.model), Some("model")));
    }
    let (request, options) = inference::prompt::off_async(move || {
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
    let echo = request.echo.unwrap_or(false);
    if options.max_tokens == Some(0) && !echo {
        return Err(OpenAiError::invalid("max_tokens must be at least 1 (0 scores the prompt only, with echo)", Some("max_tokens")));
    }
    if echo && options.grammar.is_some() {
        return Err(OpenAiError::unsupported("echo", "echo together with response_format"));
    }
    let input = match request.prompt {
        wire::Prompt::Text(text) => Input::Texts(vec![text]),
        wire::Prompt::Texts(texts) => Input::Texts(texts),
        wire::Prompt::Tokens(tokens) => Input::Tokens(vec![tokens]),
        wire::Prompt::TokenLists(lists) => Input::Tokens(lists),
    };
    let target = inference::resolve(&state, &principal, &request.model).await?;
    let mut generation = options.request("openai.completions", input, None);
    generation.echo = echo;
    let answer = inference::generate(&state, &principal, &target, generation).await?;
    Ok(answer::respond(answer, Endpoint::Completions, request.model, options.stream, options.include_usage).await)
}

/// `POST /v1/embeddings`.
pub(crate) async fn create_embedding(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::EmbeddingRequest>, JsonRejection>) -> Result<Response, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => return Err(OpenAiError::invalid(format!("encoding_format must be float or base64, not {other:?}"), Some("encoding_format"))),
    };
    let input = match request.input {
        wire::Prompt::Text(text) => EmbedInput::Texts(vec![text]),
        wire::Prompt::Texts(texts) => EmbedInput::Texts(texts),
        wire::Prompt::Tokens(tokens) => EmbedInput::Tokens(vec![tokens]),
        wire::Prompt::TokenLists(lists) => EmbedInput::Tokens(lists),
    };
    let target = inference::resolve(&state, &principal, &request.model).await?;
    // OpenAI refuses an input longer than the model takes.
    let embed = EmbedRequest { api: "openai.embeddings", input, truncate: false, dimensions: request.dimensions };
    let result = inference::embed(&state, &principal, &target, embed).await?;
    let data = result
        .vectors
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
    let tokens = result.prompt_tokens as u64;
    let usage = wire::EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens };
    let mut headers = crate::quotas::headers(&result.limits, None);
    if let Ok(value) = HeaderValue::from_str(&target.served.revision) {
        headers.insert("x-mantle-revision", value);
    }
    Ok((headers, Json(wire::EmbeddingList { object: "list".into(), data, model: request.model, usage })).into_response())
}

fn model_entry(deployment: &domain::meta::Deployment) -> wire::Model {
    let created = chrono::DateTime::parse_from_rfc3339(&deployment.created_at).map(|t| t.timestamp()).unwrap_or(0);
    wire::Model { id: deployment.name.clone(), object: "model".into(), created, owned_by: deployment.repo.namespace.to_string() }
}
