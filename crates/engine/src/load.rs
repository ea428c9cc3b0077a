//! Picks and loads the backend for a model file. The only place where backend features appear.

use std::path::PathBuf;

use crate::ModelRunner;

/// What to load and how.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// A local file of an approved blob; never a URL.
    pub path: PathBuf,
    /// Context length in tokens, shared by all sequences.
    pub context: u32,
    /// Sequences decoded together.
    pub max_batch: u32,
    /// CPU threads.
    pub threads: u32,
    /// Tokens one step may carry across all sequences.
    pub max_step_tokens: u32,
}

/// Loads the backend that serves `config.path`, judged by its content (GGUF: llama.cpp).
pub fn load_runner(config: &RunnerConfig) -> Result<Box<dyn ModelRunner>, String> {
    let mut magic = [0u8; 4];
    {
        use std::io::Read as _;
        let mut file = std::fs::File::open(&config.path).map_err(|err| format!("open {}: {err}", config.path.display()))?;
        file.read_exact(&mut magic).map_err(|err| format!("read {}: {err}", config.path.display()))?;
    }
    if &magic != b"GGUF" {
        return Err("only GGUF models can be served for generation so far".into());
    }
    load_gguf(config)
}

#[cfg(feature = "llama")]
fn load_gguf(config: &RunnerConfig) -> Result<Box<dyn ModelRunner>, String> {
    let settings = crate::llama::LlamaSettings { context: config.context, max_batch: config.max_batch, threads: config.threads, max_step_tokens: config.max_step_tokens };
    Ok(Box::new(crate::llama::LlamaRunner::load(&config.path, &settings)?))
}

#[cfg(not(feature = "llama"))]
fn load_gguf(_config: &RunnerConfig) -> Result<Box<dyn ModelRunner>, String> {
    Err("this build of mantle has no llama.cpp backend (build with the `llama` feature)".into())
}

/// What an embedding model needs: its weights and the files beside them in the same commit.
#[derive(Clone, Debug)]
pub struct EmbedderConfig {
    /// `model.safetensors`, a local copy of an approved blob.
    pub weights: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `tokenizer.json`.
    pub tokenizer: PathBuf,
    /// `sentence_bert_config.json`, when the repo has one (its `max_seq_length`).
    pub sentence_config: Option<PathBuf>,
    pub threads: u32,
}

/// Loads a safetensors BERT encoder for embeddings.
pub fn load_embedder(config: &EmbedderConfig) -> Result<Box<dyn crate::embed::EmbedRunner>, String> {
    let bert = crate::bert::Bert::load(&config.weights, &config.config, &config.tokenizer, config.sentence_config.as_deref(), config.threads as usize)?;
    Ok(Box::new(bert))
}
