//! vLLM's tokenizer endpoints beside its OpenAI-compatible API: `POST /tokenize`,
//! `POST /detokenize` and `GET /tokenizer_info` (lm-evaluation-harness's remote tokenizer reads
//! them). A request names its model with `model` (`?model=` for `tokenizer_info`); without one
//! it means the caller's only deployment.

use api::openai as wire;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;

use super::OpenAiError;
use crate::inference::{self, TokenizeInput};
use crate::AppState;

/// `POST /tokenize`.
pub(crate) async fn tokenize(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::TokenizeRequest>, JsonRejection>) -> Result<Json<wire::TokenizeResponse>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
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
    let target = inference::resolve_named_or_only(&state, &principal, request.model.as_deref()).await?;
    let tokens = inference::tokenize(&target, input).await?;
    let token_strs = match request.return_token_strs {
        Some(true) => {
            let mut strs = Vec::with_capacity(tokens.len());
            for token in &tokens {
                strs.push(inference::detokenize(&target, vec![*token]).await?);
            }
            Some(strs)
        }
        _ => None,
    };
    let max_model_len = inference::tokenizer_info(&target)?.model_max_length;
    Ok(Json(wire::TokenizeResponse { count: tokens.len(), max_model_len, tokens, token_strs }))
}

/// `POST /detokenize`.
pub(crate) async fn detokenize(State(state): State<AppState>, headers: HeaderMap, body: Result<Json<wire::DetokenizeRequest>, JsonRejection>) -> Result<Json<wire::DetokenizeResponse>, OpenAiError> {
    let principal = inference::authenticate(&state, &headers).await?;
    let Json(request) = body.map_err(OpenAiError::from_rejection)?;
    let target = inference::resolve_named_or_only(&state, &principal, request.model.as_deref()).await?;
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
    let principal = inference::authenticate(&state, &headers).await?;
    let Query(query) = query.map_err(|err| OpenAiError::invalid(err.body_text(), None))?;
    let target = inference::resolve_named_or_only(&state, &principal, query.model.as_deref()).await?;
    let info = inference::tokenizer_info(&target)?;
    Ok(Json(wire::TokenizerInfo { tokenizer_class: info.tokenizer_class, eos_token: info.eos_token, bos_token: info.bos_token, pad_token: None, chat_template: info.chat_template, model_max_length: info.model_max_length }))
}
