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

/// llama.cpp's backend may be initialised once per process; concurrent first loads wait for it.
static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();

/// The process's llama.cpp backend, initialised on first use.
fn backend() -> Result<&'static LlamaBackend, String> {
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| format!("init llama.cpp: {e}"))?;
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(Clone::clone)
}

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
    /// How the weights are held (e.g. `q4_1`, or `q4_1 expanded to f16`), part of the fingerprint.
    weights: String,
    /// Weights plus the F16 KV cache of every sequence.
    memory_bytes: u64,
}

// The context is only ever used from the runner's own thread.
#[expect(unsafe_code, reason = "LlamaContext holds raw pointers; the runner moves to its thread once and stays there")]
unsafe impl Send for LlamaRunner {}

impl LlamaRunner {
    /// Loads a local GGUF file (an approved blob's path, never a URL).
    pub fn load(path: &Path, settings: &LlamaSettings) -> Result<Self, String> {
        let backend = backend()?;
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
        // K and V, F16, per layer and KV head, for every cell of the context.
        let kv_width = u64::from(model.n_embd().max(0) as u32) / u64::from(model.n_head().max(1)) * u64::from(model.n_head_kv());
        let memory_bytes = model.size() + u64::from(ctx.n_ctx()) * u64::from(model.n_layer()) * kv_width * 2 * 2;
        Ok(LlamaRunner { batch: LlamaBatch::new(capacity, 1), ctx, model, positions: Default::default(), n_ctx, capacity, weights: String::new(), memory_bytes })
    }

    /// Records how the weights are held, for `info().backend`.
    pub fn set_weights(&mut self, weights: String) {
        self.weights = weights;
    }
}

impl ModelRunner for LlamaRunner {
    fn info(&self) -> RunnerInfo {
        RunnerInfo {
            n_vocab: self.model.n_vocab() as usize,
            n_ctx: self.n_ctx,
            eos: self.model.vocab().eos().0 as Token,
            bos: Some(self.model.vocab().bos().0).filter(|t| *t >= 0).map(|t| t as Token),
            backend: if self.weights.is_empty() { "llama.cpp".into() } else { format!("llama.cpp ({})", self.weights) },
            memory_bytes: self.memory_bytes,
        }
    }

    fn tokenizer(&self) -> Arc<dyn Tokenizer> {
        Arc::new(LlamaTokenizer { model: self.model.clone(), specials: OnceLock::new() })
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
        // Sequences go in in slot order: with one KV stream per sequence, llama.cpp splits a batch
        // into physical batches of consecutive, increasing sequence ids, and every physical batch
        // is one more pass over the weights. In slot order, a step of decoding sequences in
        // slots 0..n is one pass; in arrival order it could be one pass per sequence.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|i| batch[*i].slot);
        // Per sequence: the batch index of its first output row (its last token, or its first
        // token when every token's logits are wanted).
        let mut outputs = vec![0; batch.len()];
        for i in order {
            let seq = &batch[i];
            let position = self.positions.entry(seq.slot).or_insert(0);
            outputs[i] = if seq.all_logits { self.batch.n_tokens() } else { self.batch.n_tokens() + seq.tokens.len() as i32 - 1 };
            for (j, token) in seq.tokens.iter().enumerate() {
                let wanted = seq.all_logits || j + 1 == seq.tokens.len();
                self.batch.add(LlamaToken(*token as i32), *position, &[seq.slot as i32], wanted).map_err(|e| e.to_string())?;
                *position += 1;
            }
        }
        let started = std::time::Instant::now();
        self.ctx.decode(&mut self.batch).map_err(|e| format!("decode failed: {e}"))?;
        tracing::trace!(tokens = total, sequences = batch.len(), ms = started.elapsed().as_secs_f64() * 1e3, "step");
        for (seq, first) in batch.iter_mut().zip(outputs) {
            seq.logits = if seq.all_logits {
                let n_vocab = self.model.n_vocab() as usize;
                let mut rows = Vec::with_capacity(seq.tokens.len() * n_vocab);
                for j in 0..seq.tokens.len() as i32 {
                    rows.extend_from_slice(self.ctx.get_logits_ith(first + j));
                }
                rows
            } else {
                self.ctx.get_logits_ith(first).to_vec()
            };
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
    /// The texts that tokenize into one special token, found on first use.
    specials: OnceLock<Arc<Vec<String>>>,
}

impl Tokenizer for LlamaTokenizer {
    fn encode(&self, text: &str) -> Vec<Token> {
        self.encode_pieces(&[(text, false)])
    }

    fn encode_pieces(&self, pieces: &[(&str, bool)]) -> Vec<Token> {
        let vocab = self.model.vocab();
        let mut tokens = Vec::new();
        for (i, (text, literal)) in pieces.iter().filter(|(text, _)| !text.is_empty()).enumerate() {
            // A rendered chat template may already begin with the BOS text; do not add a second one.
            let add_bos = i == 0 && {
                let bos_text = vocab.token_to_piece(vocab.bos(), true, None);
                bos_text.is_empty() || !text.as_bytes().starts_with(&bos_text) || *literal
            };
            tokens.extend(vocab.tokenize(text.as_bytes(), add_bos, !literal).into_iter().map(|t| t.0 as Token));
        }
        tokens
    }

    fn encode_special(&self, text: &str, add_special: bool) -> Vec<Token> {
        self.model.vocab().tokenize(text.as_bytes(), add_special, true).into_iter().map(|t| t.0 as Token).collect()
    }

    fn decode(&self, tokens: &[Token]) -> Vec<u8> {
        let tokens: Vec<LlamaToken> = tokens.iter().map(|t| LlamaToken(*t as i32)).collect();
        self.model.vocab().detokenize(&tokens, false, true)
    }

    fn special_texts(&self) -> Arc<Vec<String>> {
        self.specials
            .get_or_init(|| {
                let vocab = self.model.vocab();
                // A token is special when its text becomes that one token only with special parsing on.
                let texts = (0..vocab.n_tokens())
                    .map(LlamaToken)
                    .filter_map(|token| {
                        let text = String::from_utf8(vocab.token_to_piece(token, true, None)).ok().filter(|t| !t.is_empty())?;
                        let special = vocab.tokenize(text.as_bytes(), false, true) == [token] && vocab.tokenize(text.as_bytes(), false, false) != [token];
                        special.then_some(text)
                    })
                    .collect();
                Arc::new(texts)
            })
            .clone()
    }
}

/// How a GGUF file stores its weights, read from its tensor table without loading it.
#[derive(Clone, Debug)]
pub struct WeightProfile {
    /// The ggml type holding most weight bytes (e.g. `q4_1`).
    pub main_type: String,
    /// Whether that type has no batched matrix kernel on x86 in llama.cpp (only a row-by-row dot
    /// product), so prompts and batched decoding run several times slower than in F16.
    pub slow_batched: bool,
    /// What the file's tensors would take with the slow ones in F16.
    pub expanded_bytes: u64,
    token_embd_type: Option<llama_cpp_sys_2::ggml_type>,
    output_type: Option<llama_cpp_sys_2::ggml_type>,
}

/// Types whose only x86 matrix path in llama.cpp is a per-row dot product (no llamafile sgemm,
/// no repacked GEMM): Q4_1, Q5_0, Q5_1.
const SLOW_BATCHED: [llama_cpp_sys_2::ggml_type; 3] = [llama_cpp_sys_2::GGML_TYPE_Q4_1, llama_cpp_sys_2::GGML_TYPE_Q5_0, llama_cpp_sys_2::GGML_TYPE_Q5_1];

/// Reads `path`'s tensor table.
pub fn weight_profile(path: &Path) -> Result<WeightProfile, String> {
    use std::ffi::{CStr, CString};
    let name = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| "a model path with a NUL byte".to_owned())?;
    let params = llama_cpp_sys_2::gguf_init_params { no_alloc: true, ctx: std::ptr::null_mut() };
    #[expect(unsafe_code, reason = "FFI: gguf reads the header and tensor table only (no_alloc); the context is freed below")]
    let profile = unsafe {
        let ctx = llama_cpp_sys_2::gguf_init_from_file(name.as_ptr(), params);
        if ctx.is_null() {
            return Err(format!("{} is not a readable GGUF file", path.display()));
        }
        let mut by_type: std::collections::BTreeMap<llama_cpp_sys_2::ggml_type, u64> = Default::default();
        let mut expanded = 0u64;
        let (mut token_embd_type, mut output_type) = (None, None);
        for id in 0..llama_cpp_sys_2::gguf_get_n_tensors(ctx) {
            let kind = llama_cpp_sys_2::gguf_get_tensor_type(ctx, id);
            let size = llama_cpp_sys_2::gguf_get_tensor_size(ctx, id) as u64;
            let tensor = CStr::from_ptr(llama_cpp_sys_2::gguf_get_tensor_name(ctx, id)).to_bytes();
            match tensor {
                b"token_embd.weight" => token_embd_type = Some(kind),
                b"output.weight" => output_type = Some(kind),
                _ => {}
            }
            *by_type.entry(kind).or_default() += size;
            expanded += if SLOW_BATCHED.contains(&kind) {
                let type_size = llama_cpp_sys_2::ggml_type_size(kind).max(1) as u64;
                size / type_size * llama_cpp_sys_2::ggml_blck_size(kind).max(1) as u64 * 2
            } else {
                size
            };
        }
        llama_cpp_sys_2::gguf_free(ctx);
        let main = by_type.iter().max_by_key(|(_, size)| **size).map(|(kind, _)| *kind);
        let main_type = main.map_or_else(|| "none".to_owned(), |kind| CStr::from_ptr(llama_cpp_sys_2::ggml_type_name(kind)).to_string_lossy().into_owned());
        WeightProfile { main_type, slow_batched: main.is_some_and(|kind| SLOW_BATCHED.contains(&kind)), expanded_bytes: expanded, token_embd_type, output_type }
    };
    Ok(profile)
}

/// Writes `dst`: `src` with every matrix of a slow-batched type expanded to F16 by llama.cpp's own
/// converter. Other tensors (token embeddings and output included) keep their type and bytes.
/// F16 holds each dequantized weight to within half an F16 step (a relative 2^-11), far inside
/// the 4-bit quantization step, so the expanded model is the same model, not a re-quantized one.
pub fn expand_to_f16(src: &Path, dst: &Path, threads: u32, profile: &WeightProfile) -> Result<(), String> {
    use std::ffi::CString;
    backend()?;
    let c = |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| "a model path with a NUL byte".to_owned());
    let (src_c, dst_c) = (c(src)?, c(dst)?);
    #[expect(unsafe_code, reason = "FFI: llama_model_quantize reads src and writes dst; both paths outlive the call")]
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.nthread = threads as i32;
        params.ftype = llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_F16;
        params.allow_requantize = true;
        params.token_embedding_type = profile.token_embd_type.unwrap_or(llama_cpp_sys_2::GGML_TYPE_COUNT);
        params.output_tensor_type = profile.output_type.unwrap_or(llama_cpp_sys_2::GGML_TYPE_COUNT);
        llama_cpp_sys_2::llama_model_quantize(src_c.as_ptr(), dst_c.as_ptr(), &params)
    };
    if status != 0 {
        return Err(format!("llama.cpp could not expand {} to F16 (status {status})", src.display()));
    }
    Ok(())
}
