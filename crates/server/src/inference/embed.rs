//! Embeddings: inputs checked and tokenized, admitted under quotas, embedded in the encoder's
//! shared batches and accounted for.

use domain::auth::Principal;
use engine::Token;

use super::{prompt, quotas, InferenceError, Target};
use crate::runtime::Backend;
use crate::AppState;

/// The most inputs one embeddings request may carry (OpenAI's limit).
pub(crate) const MAX_INPUTS: usize = 2048;

/// An embeddings request, parsed by its protocol module.
pub(crate) struct EmbedRequest {
    /// The API and route, as usage records name it.
    pub(crate) api: &'static str,
    pub(crate) input: EmbedInput,
    /// An input longer than the model takes is cut (keeping its closing token) instead of refused.
    pub(crate) truncate: bool,
    /// Output dimensions asked for: only the model's own are served.
    pub(crate) dimensions: Option<u32>,
}

/// What to embed.
pub(crate) enum EmbedInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<Token>>),
}

/// Vectors in input order, and the tokens they took.
pub(crate) struct Embeddings {
    pub(crate) vectors: Vec<Vec<f32>>,
    pub(crate) prompt_tokens: usize,
    pub(crate) limits: domain::quota::Limits,
}

/// Embeds every input of `request` with `target`'s encoder.
pub(crate) async fn embed(state: &AppState, principal: &Principal, target: &Target, request: EmbedRequest) -> Result<Embeddings, InferenceError> {
    let Backend::Embed(engine) = &target.served.backend else {
        return Err(InferenceError::NotEmbedding { model: target.name().to_owned() });
    };
    if request.dimensions.is_some_and(|d| d as usize != engine.dims()) {
        return Err(InferenceError::unsupported("dimensions", &format!("dimensions other than the model's {}", engine.dims())));
    }
    let too_many = || InferenceError::invalid(format!("input must hold 1 to {MAX_INPUTS} items"), Some("input"));
    // Counted and checked before any tokenizing work is spent on them; empty text is refused,
    // as OpenAI does.
    let max = engine.max_tokens();
    let too_long = |i: usize| InferenceError::context_exceeded("input", format!("input[{i}] has more than the model's maximum of {max} tokens"));
    let inputs = match request.input {
        EmbedInput::Texts(texts) if texts.is_empty() || texts.len() > MAX_INPUTS => return Err(too_many()),
        EmbedInput::Texts(texts) => {
            if let Some(i) = texts.iter().position(String::is_empty) {
                return Err(InferenceError::invalid(format!("input[{i}] is empty; inputs must not be empty strings"), Some("input")));
            }
            let encoded = prompt::embedding_inputs(engine, texts).await;
            if let Some(i) = encoded.iter().position(|(_, cut)| *cut).filter(|_| !request.truncate) {
                return Err(too_long(i));
            }
            encoded.into_iter().map(|(ids, _)| ids).collect::<Vec<_>>()
        }
        EmbedInput::Tokens(lists) if lists.is_empty() || lists.len() > MAX_INPUTS => return Err(too_many()),
        EmbedInput::Tokens(lists) => {
            let mut inputs = Vec::with_capacity(lists.len());
            for (i, ids) in lists.into_iter().enumerate() {
                let (ids, cut) = engine::truncate_keeping_end(ids, max);
                if cut && !request.truncate {
                    return Err(too_long(i));
                }
                inputs.push(ids);
            }
            inputs
        }
    };
    if let Some(i) = inputs.iter().position(Vec::is_empty) {
        return Err(InferenceError::invalid(format!("input[{i}] has no tokens"), Some("input")));
    }
    if let Some(bad) = inputs.iter().flatten().find(|t| **t as usize >= engine.n_vocab()) {
        return Err(InferenceError::invalid(format!("token {bad} is outside the vocabulary of {}", engine.n_vocab()), Some("input")));
    }
    let prompt_tokens = inputs.iter().map(Vec::len).sum();
    let admission = quotas::admit(state, principal, prompt_tokens).await?;
    let limits = admission.limits.clone();
    let mut timer = state.metrics.start(target.name()).billed(&state.usage, principal, request.api, &target.served.deployment.settings, admission);
    let vectors = engine.embed(inputs).await.map_err(|err| {
        timer.reject(&err);
        match err {
            engine::InferError::Invalid(message) => InferenceError::context_exceeded("input", message),
            other => InferenceError::from(other),
        }
    })?;
    timer.finish(prompt_tokens, 0);
    Ok(Embeddings { vectors, prompt_tokens, limits })
}
