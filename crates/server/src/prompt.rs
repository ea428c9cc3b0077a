//! Prompt building shared by the inference routes: chat-template rendering and tokenization run
//! on the blocking pool (they are CPU work whose cost the caller chooses), and text that cannot
//! fit the model's context is refused before any tokenization work is spent on it.

use std::sync::Arc;

use engine::{Engine, Token};
use serde_json::Value;

use crate::runtime::ChatTemplate;

/// No tokenizer in use averages more bytes per token over a whole prompt: text longer than this
/// many bytes per context position cannot fit the context, whatever it holds.
const MAX_BYTES_PER_TOKEN: usize = 32;

/// Why a prompt could not be built.
#[derive(Debug)]
pub(crate) enum PromptError {
    /// The model's chat template failed on the messages (their fault or the template's).
    Template(String),
    /// The text is longer than any prompt the context can hold.
    TooLong { bytes: usize, n_ctx: usize },
}

impl std::fmt::Display for PromptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PromptError::Template(err) => write!(f, "the model's chat template failed on these messages: {err}"),
            PromptError::TooLong { bytes, n_ctx } => write!(f, "the prompt has {bytes} bytes, more than a context of {n_ctx} tokens can hold"),
        }
    }
}

/// Runs CPU-bound request work (grammar compilation, template rendering, tokenization) on the
/// blocking pool, so a heavy request never stalls the async workers every other request needs.
pub(crate) async fn off_async<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// Renders `messages` (with `tools` for templates that render them) through the model's chat
/// template and tokenizes the text.
pub(crate) async fn chat(engine: &Engine, template: &ChatTemplate, messages: Vec<Value>, tools: Option<Value>) -> Result<Vec<Token>, PromptError> {
    let (engine, template) = (engine.clone(), template.clone());
    let clock = wall_clock();
    off_async(move || {
        let text = vet::template::render_chat_with_tools(&template.source, &Value::Array(messages), tools.as_ref(), true, &template.bos, &template.eos, &clock).map_err(PromptError::Template)?;
        tokenize_within_context(&engine, &text)
    })
    .await
}

/// Tokenizes prompt texts taken as they are.
pub(crate) async fn texts(engine: &Engine, texts: Vec<String>) -> Result<Vec<Vec<Token>>, PromptError> {
    let engine = engine.clone();
    off_async(move || texts.iter().map(|text| tokenize_within_context(&engine, text)).collect()).await
}

/// Tokenizes embedding inputs (the encoder's tokenizer stops one token past its maximum).
pub(crate) async fn embedding_inputs(engine: &engine::EmbedEngine, texts: Vec<String>) -> Vec<Vec<Token>> {
    let engine = engine.clone();
    off_async(move || texts.iter().map(|text| engine.tokenize(text)).collect()).await
}

fn tokenize_within_context(engine: &Engine, text: &str) -> Result<Vec<Token>, PromptError> {
    let n_ctx = engine.info().n_ctx;
    if text.len() > n_ctx.saturating_mul(MAX_BYTES_PER_TOKEN) {
        return Err(PromptError::TooLong { bytes: text.len(), n_ctx });
    }
    Ok(engine.tokenize(text))
}

/// Today's date and time for templates' `strftime_now`; an invalid format comes back as given.
fn wall_clock() -> vet::template::Clock {
    Arc::new(|format: &str| {
        let items: Vec<chrono::format::Item<'_>> = chrono::format::StrftimeItems::new(format).collect();
        if items.iter().any(|item| matches!(item, chrono::format::Item::Error)) {
            return format.to_owned();
        }
        chrono::Utc::now().format_with_items(items.into_iter()).to_string()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_see_the_real_date_and_bad_formats_do_not_panic() {
        let clock = super::wall_clock();
        assert_eq!(clock("%Y"), chrono::Utc::now().format("%Y").to_string());
        assert_eq!(clock("%d %b %Y").len(), 11);
        assert_eq!(clock("100%"), "100%");
    }
}
