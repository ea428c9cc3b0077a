//! A deployment's tokenizer, for clients that count or build prompts themselves (vLLM's
//! `/tokenize`, `/detokenize` and `/tokenizer_info`, which lm-evaluation-harness's remote
//! tokenizer reads): tokenization and decoding run on the blocking pool under the same size
//! bounds as prompts.

use domain::auth::Principal;
use engine::{Engine, Token};
use serde_json::Value;

use super::{prompt, InferenceError, Target};
use crate::runtime::Backend;
use crate::AppState;

/// The longest text tokenized in one request. Unlike a prompt, a text to tokenize may be longer
/// than the context (harnesses tokenize whole documents, then score them in windows);
/// tokenizing is linear in the text, and runs on the blocking pool.
const MAX_TOKENIZE_BYTES: usize = 8 * 1024 * 1024;
/// The most token ids decoded in one request.
const MAX_DECODE_TOKENS: usize = 1 << 21;

/// What to tokenize.
pub(crate) enum TokenizeInput {
    /// A text; `add_special` adds the model's own special tokens (a BOS).
    Text { text: String, add_special: bool },
    /// Chat messages, rendered through the model's chat template with the generation prompt.
    Chat(Vec<Value>),
}

/// What clients need to know about a model's tokenizer.
pub(crate) struct TokenizerInfo {
    /// The backend that tokenizes (`llama.cpp`, ...).
    pub(crate) tokenizer_class: String,
    pub(crate) eos_token: Option<String>,
    pub(crate) bos_token: Option<String>,
    pub(crate) chat_template: Option<String>,
    /// Tokens one sequence may hold.
    pub(crate) model_max_length: usize,
}

/// The deployment `name` names, or, when the request names none, the caller's only deployment.
pub(crate) async fn resolve_named_or_only(state: &AppState, principal: &Principal, name: Option<&str>) -> Result<Target, InferenceError> {
    if let Some(name) = name {
        return super::resolve(state, principal, name).await;
    }
    let deployments = state.hub.runnable_deployments(principal).await?;
    match deployments.as_slice() {
        [only] => super::resolve(state, principal, &only.name).await,
        others => Err(InferenceError::invalid(format!("model is required: {} models are served to this caller", others.len()), Some("model"))),
    }
}

fn engine(target: &Target) -> Result<&Engine, InferenceError> {
    match &target.served.backend {
        Backend::Generate(engine) => Ok(engine),
        Backend::Embed(_) => Err(InferenceError::NotGenerative { model: target.name().to_owned() }),
    }
}

/// The tokens of `input`.
pub(crate) async fn tokenize(target: &Target, input: TokenizeInput) -> Result<Vec<Token>, InferenceError> {
    let engine = engine(target)?.clone();
    match input {
        TokenizeInput::Text { text, add_special } => {
            if text.len() > MAX_TOKENIZE_BYTES {
                return Err(InferenceError::invalid(format!("the text has {} bytes; at most {MAX_TOKENIZE_BYTES} are tokenized at once", text.len()), Some("prompt")));
            }
            Ok(prompt::off_async(move || engine.tokenizer().encode_special(&text, add_special)).await)
        }
        TokenizeInput::Chat(messages) => {
            let Some(chat) = &target.served.chat else {
                return Err(InferenceError::NoChatTemplate { model: target.name().to_owned() });
            };
            prompt::chat(&engine, chat, messages, None).await.map_err(|err| InferenceError::prompt(err, "messages"))
        }
    }
}

/// The text `tokens` stand for, special tokens spelled out.
pub(crate) async fn detokenize(target: &Target, tokens: Vec<Token>) -> Result<String, InferenceError> {
    let engine = engine(target)?.clone();
    let n_vocab = engine.info().n_vocab;
    if tokens.len() > MAX_DECODE_TOKENS {
        return Err(InferenceError::invalid(format!("tokens holds {} ids; at most {MAX_DECODE_TOKENS} are decoded at once", tokens.len()), Some("tokens")));
    }
    if let Some(bad) = tokens.iter().find(|t| **t as usize >= n_vocab) {
        return Err(InferenceError::invalid(format!("token {bad} is outside the vocabulary of {n_vocab}"), Some("tokens")));
    }
    let bytes = prompt::off_async(move || engine.tokenizer().decode(&tokens)).await;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Each token's own text (special tokens spelled out), in one pass off the async workers.
pub(crate) async fn token_strings(target: &Target, tokens: Vec<Token>) -> Result<Vec<String>, InferenceError> {
    let engine = engine(target)?.clone();
    Ok(prompt::off_async(move || tokens.iter().map(|t| String::from_utf8_lossy(&engine.tokenizer().decode(&[*t])).into_owned()).collect()).await)
}

/// The tokenizer's special tokens, chat template and length.
pub(crate) fn tokenizer_info(target: &Target) -> Result<TokenizerInfo, InferenceError> {
    let engine = engine(target)?;
    let info = engine.info();
    let spell = |token: Token| Some(String::from_utf8_lossy(&engine.tokenizer().decode(&[token])).into_owned()).filter(|text| !text.is_empty());
    Ok(TokenizerInfo { tokenizer_class: info.backend.clone(), eos_token: spell(info.eos), bos_token: info.bos.and_then(spell), chat_template: target.served.chat.as_ref().map(|chat| chat.source.clone()), model_max_length: info.n_ctx })
}

/// The token put before a text scored whole (its BOS, else its EOS), as lm-evaluation-harness's
/// rolling log-likelihood does, so the text's first token is scored too.
pub(crate) fn prefix_token(target: &Target) -> Result<Token, InferenceError> {
    let info = engine(target)?.info();
    Ok(info.bos.unwrap_or(info.eos))
}

/// The tokens one sequence may hold.
pub(crate) fn context_length(target: &Target) -> Result<usize, InferenceError> {
    Ok(engine(target)?.info().n_ctx)
}
