//! vLLM's tokenizer endpoints beside its OpenAI-compatible API: `POST /tokenize`,
//! `POST /detokenize` and `GET /tokenizer_info` (lm-evaluation-harness's remote tokenizer reads
//! them). A request names its model with `model` (`?model=` for `tokenizer_info`) or its path
//! (`/deployments/{name}/tokenize`, beside `/deployments/{name}/v1/completions`); without either
//! it means the caller's only deployment.

use api::openai as wire;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;

use super::OpenAiError;
use crate::inference::{self, TokenizeInput};
use crate::AppState;

/// `POST /tokenize`.
pub(crate) async fn tokenize(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::TokenizeRequest>, JsonRejection>) -> Result<Json<wire::TokenizeResponse>, OpenAiError> {
    tokenize_for(state, headers, body, None).await
}

/// `POST /deployments/{name}/tokenize`.
pub(crate) async fn tokenize_at(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap, body: Result<Json<wire::TokenizeRequest>, JsonRejection>) -> Result<Json<wire::TokenizeResponse>, OpenAiError> {
    tokenize_for(state, headers, body, Some(name)).await
}

/// The model a request means: its path's, which a `model` field must agree with, or its own.
fn model_of(at: Option<String>, field: Option<String>) -> Result<Option<String>, OpenAiError> {
    match (at, field) {
        (Some(at), Some(field)) if at != field => Err(OpenAiError::invalid(format!("model {field:?} is not the deployment this path names ({at:?})"), Some("model"))),
        (at, field) => Ok(at.or(field)),
    }
}

async fn tokenize_for(state: AppState, headers: HeaderMap, body: Result<Json<wire::TokenizeRequest>, JsonRejection>, at: Option<String>) -> Result<Json<wire::TokenizeResponse>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    let model = model_of(at, request.model)?;
    let input = match (request.prompt, request.messages) {
        (Some(text), None) => TokenizeInput::Text { text, add_special: request.add_special_tokens.unwrap_or(true) },
        (None, Some(messages)) => {
            if request.add_generation_prompt == Some(false) {
                return Err(OpenAiError::unsupported("add_generation_prompt", "add_generation_prompt false"));
            }
            if request.add_special_tokens == Some(true) {
                return Err(OpenAiError::unsupported("add_special_tokens", "add_special_tokens with messages (the chat template adds its own)"));
            }
            TokenizeInput::Chat(super::params::template_messages(&messages)?)
        }
        _ => return Err(OpenAiError::invalid("give exactly one of prompt and messages", Some("prompt"))),
    };
    let target = inference::resolve_named_or_only(&state, &principal, model.as_deref()).await?;
    let tokens = inference::tokenize(&target, input).await?;
    let token_strs = match request.return_token_strs {
        Some(true) => Some(inference::token_strings(&target, tokens.clone()).await?),
        _ => None,
    };
    let max_model_len = inference::tokenizer_info(&target)?.model_max_length;
    Ok(Json(wire::TokenizeResponse { count: tokens.len(), max_model_len, tokens, token_strs }))
}

/// `POST /detokenize`.
pub(crate) async fn detokenize(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::DetokenizeRequest>, JsonRejection>) -> Result<Json<wire::DetokenizeResponse>, OpenAiError> {
    detokenize_for(state, headers, body, None).await
}

/// `POST /deployments/{name}/detokenize`.
pub(crate) async fn detokenize_at(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap, body: Result<Json<wire::DetokenizeRequest>, JsonRejection>) -> Result<Json<wire::DetokenizeResponse>, OpenAiError> {
    detokenize_for(state, headers, body, Some(name)).await
}

async fn detokenize_for(state: AppState, headers: HeaderMap, body: Result<Json<wire::DetokenizeRequest>, JsonRejection>, at: Option<String>) -> Result<Json<wire::DetokenizeResponse>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    let model = model_of(at, request.model)?;
    let target = inference::resolve_named_or_only(&state, &principal, model.as_deref()).await?;
    let prompt = inference::detokenize(&target, request.tokens).await?;
    Ok(Json(wire::DetokenizeResponse { prompt }))
}

/// `?model=` of `GET /tokenizer_info`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct InfoQuery {
    model: Option<String>,
}

/// `GET /tokenizer_info`.
pub(crate) async fn tokenizer_info(State(state): State<AppState>, headers: HeaderMap, query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<wire::TokenizerInfo>, OpenAiError> {
    info_for(state, headers, query, None).await
}

/// `GET /deployments/{name}/tokenizer_info`.
pub(crate) async fn tokenizer_info_at(State(state): State<AppState>, Path(name): Path<String>, headers: HeaderMap, query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<wire::TokenizerInfo>, OpenAiError> {
    info_for(state, headers, query, Some(name)).await
}

async fn info_for(state: AppState, headers: HeaderMap, query: Result<Query<InfoQuery>, axum::extract::rejection::QueryRejection>, at: Option<String>) -> Result<Json<wire::TokenizerInfo>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    let model = model_of(at, query.model)?;
    let target = inference::resolve_named_or_only(&state, &principal, model.as_deref()).await?;
    let info = inference::tokenizer_info(&target)?;
    Ok(Json(wire::TokenizerInfo { tokenizer_class: info.tokenizer_class, eos_token: info.eos_token, bos_token: info.bos_token, pad_token: None, chat_template: info.chat_template, model_max_length: info.model_max_length }))
}
