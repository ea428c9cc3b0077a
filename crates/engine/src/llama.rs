//! The llama.cpp runner (feature `llama`): one context with a KV slot per sequence, every step one
//! `llama_decode` over all sequences' tokens, logits read back for each sequence's last token.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use std::sync::Arc;

use crate::{ModelRunner, RunnerInfo, SeqStep, Token, Tokenizer};

/// llama.cpp's backend may be initialised once per process.
static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();

/// Settings of a llama.cpp runner.
#[derive(Clone, Debug)]
pub struct LlamaSettings {
    pub context: u32,
    pub max_batch: u32,
    pub threads: u32,
    /// Tokens one step may carry in total (prefill chunks of every sequence together).
    pub max_step_tokens: u32,
}

/// A loaded GGUF model with its context.
pub struct LlamaRunner {
    // Invariant: `ctx` borrows the model inside `model`'s Arc (a stable heap address). Fields drop
    // in declaration order, so the context goes before this Arc; the tokenizer holds another
    // Arc, so the model is freed when the last of them is gone (the runner thread has ended and
    // every Engine handle is dropped), not leaked.
    batch: LlamaBatch<'static>,
    ctx: LlamaContext<'static>,
    model: Arc<LlamaModel>,
    positions: std::collections::HashMap<usize, i32>,
    n_ctx: usize,
    capacity: usize,
}

// The context is only ever used from the runner's own thread.
#[expect(unsafe_code, reason = "LlamaContext holds raw pointers; the runner moves to its thread once and stays there")]
unsafe impl Send for LlamaRunner {}

impl LlamaRunner {
    /// Loads a local GGUF file (an approved blob's path, never a URL).
    pub fn load(path: &Path, settings: &LlamaSettings) -> Result<Self, String> {
        let backend = match BACKEND.get() {
            Some(backend) => backend,
            None => {
                let mut backend = LlamaBackend::init().map_err(|e| format!("init llama.cpp: {e}"))?;
                backend.void_logs();
                BACKEND.get_or_init(|| backend)
            }
        };
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).map_err(|e| format!("load {}: {e}", path.display()))?;
        let model = Arc::new(model);
        let capacity = settings.max_step_tokens.max(settings.max_batch) as usize;
        // `context` is per sequence: llama.cpp splits a non-unified KV cache evenly between the
        // sequences, so the whole cache holds `context` tokens for each of them.
        let total = settings.context.saturating_mul(settings.max_batch);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(total))
            .with_n_batch(capacity as u32)
            // llama.cpp splits a step into physical batches of at most 512 tokens, as its server does:
            // larger ones are slower on CPU.
            .with_n_ubatch(capacity.min(512) as u32)
            .with_n_seq_max(settings.max_batch)
            .with_n_threads(settings.threads as i32)
            .with_n_threads_batch(settings.threads as i32);
        let ctx = model.new_context(backend, params).map_err(|e| format!("create a context: {e}"))?;
        // See the invariant on `LlamaRunner::ctx`: the Arc outlives the context it lends to.
        #[expect(unsafe_code, reason = "the context borrows the model in the Arc stored next to it, which drops after it")]
        let ctx = unsafe { std::mem::transmute::<LlamaContext<'_>, LlamaContext<'static>>(ctx) };
        let n_ctx = (ctx.n_ctx() / settings.max_batch.max(1)) as usize;
        Ok(LlamaRunner { batch: LlamaBatch::new(capacity, 1), ctx, model, positions: Default::default(), n_ctx, capacity })
    }
}

impl ModelRunner for LlamaRunner {
    fn info(&self) -> RunnerInfo {
        RunnerInfo { n_vocab: self.model.n_vocab() as usize, n_ctx: self.n_ctx, eos: self.model.vocab().eos().0 as Token, backend: "llama.cpp".into() }
    }

    fn tokenizer(&self) -> Arc<dyn Tokenizer> {
        Arc::new(LlamaTokenizer { model: self.model.clone() })
    }

    fn token_bytes(&self, token: Token) -> Vec<u8> {
        self.model.vocab().token_to_piece(LlamaToken(token as i32), false, None)
    }

    fn step(&mut self, batch: &mut [SeqStep]) -> Result<(), String> {
        let total: usize = batch.iter().map(|s| s.tokens.len()).sum();
        if total > self.capacity {
            return Err(format!("a step of {total} tokens exceeds the batch capacity {}", self.capacity));
        }
        self.batch.clear();
        let mut outputs = Vec::with_capacity(batch.len());
        for seq in batch.iter() {
            let position = self.positions.entry(seq.slot).or_insert(0);
            for (i, token) in seq.tokens.iter().enumerate() {
                let last = i + 1 == seq.tokens.len();
                self.batch.add(LlamaToken(*token as i32), *position, &[seq.slot as i32], last).map_err(|e| e.to_string())?;
                *position += 1;
            }
            outputs.push(self.batch.n_tokens() - 1);
        }
        self.ctx.decode(&mut self.batch).map_err(|e| format!("decode failed: {e}"))?;
        for (seq, index) in batch.iter_mut().zip(outputs) {
            seq.logits = self.ctx.get_logits_ith(index).to_vec();
        }
        Ok(())
    }

    fn release(&mut self, slot: usize) {
        let _ = self.ctx.clear_kv_cache_seq(Some(slot as u32), None, None);
        self.positions.remove(&slot);
    }

    fn truncate(&mut self, slot: usize, keep: usize) -> bool {
        match self.ctx.clear_kv_cache_seq(Some(slot as u32), Some(keep as u32), None) {
            Ok(true) => {
                self.positions.insert(slot, keep as i32);
                true
            }
            _ => false,
        }
    }

    fn is_end(&self, token: Token) -> bool {
        self.model.vocab().is_eog(LlamaToken(token as i32))
    }
}

/// The model's own tokenizer; the model is shared read-only, which llama.cpp allows across threads.
struct LlamaTokenizer {
    model: Arc<LlamaModel>,
}

impl Tokenizer for LlamaTokenizer {
    fn encode(&self, text: &str) -> Vec<Token> {
        let vocab = self.model.vocab();
        // A rendered chat template may already begin with the BOS text; do not add a second one.
        let bos_text = vocab.token_to_piece(vocab.bos(), true, None);
        let has_bos = !bos_text.is_empty() && text.as_bytes().starts_with(&bos_text);
        vocab.tokenize(text.as_bytes(), !has_bos, true).into_iter().map(|t| t.0 as Token).collect()
    }
}
