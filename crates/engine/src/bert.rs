//! A BERT encoder for sentence embeddings (sentence-transformers models such as
//! all-MiniLM-L6-v2), in plain Rust over the `gemm` crate's matrix kernels.
//!
//! Sequences are packed without padding: the dense layers run once over all tokens of a batch,
//! and attention runs per sequence and head, so no work is spent on padding and attention grows
//! with the square of each sentence, not of the batch. Output: the pooling and normalisation the
//! sentence-transformers files name (`modules.json`, `1_Pooling/config.json`; mean pooling and L2
//! normalisation when the repo has no `modules.json`), with the default prompt of
//! `config_sentence_transformers.json` before every text. Tokenization is Hugging Face's own
//! (`hf_tokenizer`).

use std::collections::HashMap;
use std::path::Path;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::hf_tokenizer::HfTokenizer;
use crate::load::EmbedderConfig;
use crate::Token;

/// How token vectors become one sentence vector (sentence-transformers' `Pooling` modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    /// The first token's (`[CLS]`).
    Cls,
    /// The largest value of each dimension.
    Max,
    /// The mean, scaled by the square root of the length.
    MeanSqrtLen,
    /// The last token's.
    LastToken,
}

/// What the sentence-transformers files around the weights say.
#[derive(Clone, Debug, PartialEq)]
pub struct SentenceSetup {
    pub pooling: Pooling,
    /// L2-normalise the pooled vector (a `Normalize` module).
    pub normalize: bool,
    /// Text put before every input (`default_prompt_name`'s prompt).
    pub prompt: String,
}

impl SentenceSetup {
    /// Reads `modules.json`, the pooling module's `config.json` and
    /// `config_sentence_transformers.json`, each optional; a module or mode this encoder does not
    /// implement is an error, never skipped.
    pub fn read(modules: Option<&[u8]>, pooling: Option<&[u8]>, st_config: Option<&[u8]>, hidden: usize) -> Result<SentenceSetup, String> {
        let json = |bytes: &[u8], name: &str| serde_json::from_slice::<serde_json::Value>(bytes).map_err(|e| format!("{name}: {e}"));
        let mut setup = SentenceSetup { pooling: Pooling::Mean, normalize: true, prompt: String::new() };
        if let Some(modules) = modules {
            setup.normalize = false;
            for module in json(modules, "modules.json")?.as_array().ok_or("modules.json is not a list")? {
                match module["type"].as_str().unwrap_or_default().rsplit('.').next().unwrap_or_default() {
                    "Transformer" | "Pooling" => {}
                    "Normalize" => setup.normalize = true,
                    other => return Err(format!("modules.json names a {other:?} module, which this encoder does not run")),
                }
            }
        }
        if let Some(pooling) = pooling {
            let config = json(pooling, "the pooling config.json")?;
            if config["word_embedding_dimension"].as_u64().is_some_and(|d| d as usize != hidden) {
                return Err(format!("the pooling config's word_embedding_dimension is not the model's {hidden}"));
            }
            let on = |key: &str| config[key].as_bool().unwrap_or(false);
            let modes = [
                ("pooling_mode_mean_tokens", Pooling::Mean),
                ("pooling_mode_cls_token", Pooling::Cls),
                ("pooling_mode_max_tokens", Pooling::Max),
                ("pooling_mode_mean_sqrt_len_tokens", Pooling::MeanSqrtLen),
                ("pooling_mode_lasttoken", Pooling::LastToken),
            ];
            let chosen: Vec<Pooling> = modes.iter().filter(|(key, _)| on(key)).map(|(_, mode)| *mode).collect();
            if on("pooling_mode_weightedmean_tokens") || chosen.len() != 1 {
                return Err("the pooling config must choose one of mean, cls, max, mean_sqrt_len or lasttoken pooling".into());
            }
            setup.pooling = chosen[0];
        }
        if let Some(st_config) = st_config {
            let config = json(st_config, "config_sentence_transformers.json")?;
            if let Some(name) = config["default_prompt_name"].as_str() {
                setup.prompt = config["prompts"][name].as_str().ok_or_else(|| format!("config_sentence_transformers.json has no prompt {name:?}"))?.to_owned();
            }
        }
        Ok(setup)
    }
}

/// The files `modules.json` points at that the encoder reads (the pooling module's config), as
/// paths relative to the model's folder.
pub fn companion_files(modules: &[u8]) -> Result<Vec<String>, String> {
    let modules: serde_json::Value = serde_json::from_slice(modules).map_err(|e| format!("modules.json: {e}"))?;
    let mut files = Vec::new();
    for module in modules.as_array().ok_or("modules.json is not a list")? {
        if module["type"].as_str().is_some_and(|t| t.ends_with(".Pooling")) {
            let path = module["path"].as_str().unwrap_or_default().trim_matches('/');
            if path.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
                return Err(format!("modules.json names a pooling path {path:?} outside the model"));
            }
            files.push(format!("{path}/config.json"));
        }
    }
    Ok(files)
}

/// `config.json` fields the encoder needs.
#[derive(Clone, Debug)]
pub struct BertConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub max_positions: usize,
    pub eps: f32,
}

struct Linear {
    /// `n_in × n_out`, row-major: PyTorch's `n_out × n_in` transposed once at load, the layout
    /// the matrix kernel reads without repacking it for every product (which cost more than the
    /// product itself for a short query).
    weight: Vec<f32>,
    bias: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Linear,
    attention_out: Linear,
    norm1: Norm,
    up: Linear,
    down: Linear,
    norm2: Norm,
}

/// A loaded encoder with its tokenizer.
pub struct Bert {
    pub config: BertConfig,
    pub tokenizer: std::sync::Arc<HfTokenizer>,
    pub setup: SentenceSetup,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    n_vocab: usize,
    /// The most tokens one input may have, special tokens included.
    max_len: usize,
    pool: rayon::ThreadPool,
}

impl Bert {
    /// Loads `model.safetensors` with `config.json` and `tokenizer.json` from the same folder,
    /// `sentence_bert_config.json`'s `max_seq_length` and the sentence-transformers setup, when
    /// present.
    pub fn load(files: &EmbedderConfig) -> Result<Bert, String> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()));
        let read_optional = |path: Option<&std::path::PathBuf>| path.map(|p| read(p)).transpose();
        let raw: serde_json::Value = serde_json::from_slice(&read(&files.config)?).map_err(|e| format!("config.json: {e}"))?;
        let field = |key: &str| raw[key].as_u64().map(|v| v as usize).ok_or_else(|| format!("config.json has no {key}"));
        if raw["hidden_act"].as_str().is_some_and(|a| a != "gelu") {
            return Err(format!("unsupported hidden_act {}", raw["hidden_act"]));
        }
        let config = BertConfig {
            hidden: field("hidden_size")?,
            layers: field("num_hidden_layers")?,
            heads: field("num_attention_heads")?,
            intermediate: field("intermediate_size")?,
            max_positions: field("max_position_embeddings")?,
            eps: raw["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
        };
        if config.heads == 0 || !config.hidden.is_multiple_of(config.heads) || config.hidden > 8192 || config.layers > 96 || config.intermediate > 65536 {
            return Err("config.json describes an unsupported shape".into());
        }
        let max_seq_length = match &files.sentence_config {
            Some(path) => serde_json::from_slice::<serde_json::Value>(&read(path)?).ok().and_then(|v| v["max_seq_length"].as_u64()).map(|m| m as usize),
            None => None,
        };
        let setup = SentenceSetup::read(read_optional(files.modules.as_ref())?.as_deref(), read_optional(files.pooling.as_ref())?.as_deref(), read_optional(files.st_config.as_ref())?.as_deref(), config.hidden)?;
        let tokenizer = HfTokenizer::from_json(&read(&files.tokenizer)?, max_seq_length, config.max_positions, setup.prompt.clone())?;
        let max_len = tokenizer.max_len();
        let mut tensors = Tensors::read(&read(&files.weights)?)?;
        let h = config.hidden;
        let word = tensors.take("embeddings.word_embeddings.weight", None)?;
        let n_vocab = word.len() / h;
        if word.len() != n_vocab * h || n_vocab < tokenizer.vocab_size() {
            return Err("the word embeddings do not match the hidden size and vocabulary".into());
        }
        let position = tensors.take("embeddings.position_embeddings.weight", Some(config.max_positions * h))?;
        let token_type = tensors.take("embeddings.token_type_embeddings.weight", None)?;
        if token_type.len() < h {
            return Err("token type embeddings are missing".into());
        }
        let norm = tensors.norm("embeddings.LayerNorm", h)?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("encoder.layer.{i}");
            let (q, k, v) = (tensors.linear(&format!("{p}.attention.self.query"), h, h)?, tensors.linear(&format!("{p}.attention.self.key"), h, h)?, tensors.linear(&format!("{p}.attention.self.value"), h, h)?);
            // One fused projection: rows of Q, then K, then V.
            let qkv = Linear { weight: [q.weight, k.weight, v.weight].concat(), bias: [q.bias, k.bias, v.bias].concat(), n_in: h, n_out: 3 * h };
            layers.push(Layer {
                qkv,
                attention_out: tensors.linear(&format!("{p}.attention.output.dense"), h, h)?,
                norm1: tensors.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: tensors.linear(&format!("{p}.intermediate.dense"), h, config.intermediate)?,
                down: tensors.linear(&format!("{p}.output.dense"), config.intermediate, h)?,
                norm2: tensors.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        for layer in &mut layers {
            for linear in [&mut layer.qkv, &mut layer.attention_out, &mut layer.up, &mut layer.down] {
                linear.weight = transpose(&linear.weight, linear.n_out, linear.n_in);
            }
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads((files.threads as usize).max(1)).thread_name(|i| format!("mantle-embed-{i}")).build().map_err(|e| e.to_string())?;
        Ok(Bert { config, tokenizer: std::sync::Arc::new(tokenizer), setup, word, position, token_type, norm, layers, n_vocab, max_len, pool })
    }

    /// Pooled (and, as configured, unit-length) embeddings of token sequences (each as the
    /// tokenizer made it).
    pub fn embed(&self, sequences: &[&[Token]]) -> Result<Vec<Vec<f32>>, String> {
        for seq in sequences {
            if seq.is_empty() || seq.len() > self.config.max_positions {
                return Err(format!("a sequence of {} tokens is outside 1..={}", seq.len(), self.config.max_positions));
            }
            if let Some(bad) = seq.iter().find(|t| **t as usize >= self.n_vocab) {
                return Err(format!("token {bad} is outside the vocabulary"));
            }
        }
        Ok(self.pool.install(|| self.forward(sequences)))
    }

    fn forward(&self, sequences: &[&[Token]]) -> Vec<Vec<f32>> {
        let h = self.config.hidden;
        let total: usize = sequences.iter().map(|s| s.len()).sum();
        let spans: Vec<(usize, usize)> = sequences
            .iter()
            .scan(0, |at, s| {
                let span = (*at, s.len());
                *at += s.len();
                Some(span)
            })
            .collect();

        let mut x = vec![0f32; total * h];
        for (row, (token, position)) in x.chunks_exact_mut(h).zip(sequences.iter().flat_map(|s| s.iter().enumerate().map(|(p, t)| (*t as usize, p)))) {
            let (w, p, t) = (&self.word[token * h..][..h], &self.position[position * h..][..h], &self.token_type[..h]);
            for i in 0..h {
                row[i] = w[i] + p[i] + t[i];
            }
        }
        layer_norm(&mut x, &self.norm, h, self.config.eps);

        let heads = self.config.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut qkv = vec![0f32; total * 3 * h];
        let mut context = vec![0f32; total * h];
        let mut attended = vec![0f32; total * h];
        let mut up = vec![0f32; total * self.config.intermediate];
        let mut down = vec![0f32; total * h];
        for layer in &self.layers {
            linear(&mut qkv, &x, &layer.qkv, total);
            // Attention per sequence (in parallel), per head, over that sequence's tokens only.
            let mut blocks: Vec<(&mut [f32], usize, usize)> = Vec::with_capacity(spans.len());
            let mut rest = context.as_mut_slice();
            for &(start, len) in &spans {
                let (block, tail) = rest.split_at_mut(len * h);
                blocks.push((block, start, len));
                rest = tail;
            }
            let qkv_ref = &qkv;
            blocks.into_par_iter().for_each(|(block, start, len)| {
                let mut scores = vec![0f32; len * len];
                for head in 0..heads {
                    let q = &qkv_ref[start * 3 * h + head * d..];
                    let k = &qkv_ref[start * 3 * h + h + head * d..];
                    let v = &qkv_ref[start * 3 * h + 2 * h + head * d..];
                    // scores = q · kᵀ (len × len), scaled.
                    matmul(&mut scores, len, len, d, (len, 1), q, (3 * h, 1), k, (1, 3 * h), scale, Parallelism::None);
                    for row in scores.chunks_exact_mut(len) {
                        softmax(row);
                    }
                    // context[:, head] = scores · v (len × d).
                    matmul(&mut block[head * d..], len, d, len, (h, 1), &scores, (len, 1), v, (3 * h, 1), 1.0, Parallelism::None);
                }
            });
            linear(&mut attended, &context, &layer.attention_out, total);
            add_into(&mut x, &attended);
            layer_norm(&mut x, &layer.norm1, h, self.config.eps);
            linear(&mut up, &x, &layer.up, total);
            up.par_chunks_mut(4096).for_each(|chunk| chunk.iter_mut().for_each(|v| *v = gelu(*v)));
            linear(&mut down, &up, &layer.down, total);
            add_into(&mut x, &down);
            layer_norm(&mut x, &layer.norm2, h, self.config.eps);
        }
        spans
            .iter()
            .map(|&(start, len)| {
                let rows = x[start * h..(start + len) * h].chunks_exact(h);
                let mut pooled = match self.setup.pooling {
                    Pooling::Cls => x[start * h..][..h].to_vec(),
                    Pooling::LastToken => x[(start + len - 1) * h..][..h].to_vec(),
                    Pooling::Max => rows.fold(vec![f32::NEG_INFINITY; h], |mut max, row| {
                        max.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
                        max
                    }),
                    Pooling::Mean | Pooling::MeanSqrtLen => {
                        let mut sum = rows.fold(vec![0f32; h], |mut sum, row| {
                            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                            sum
                        });
                        let divisor = if self.setup.pooling == Pooling::Mean { len as f32 } else { (len as f32).sqrt() };
                        sum.iter_mut().for_each(|v| *v /= divisor);
                        sum
                    }
                };
                if self.setup.normalize {
                    let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    pooled.iter_mut().for_each(|v| *v /= norm);
                }
                pooled
            })
            .collect()
    }
}

impl crate::embed::EmbedRunner for Bert {
    fn dims(&self) -> usize {
        self.config.hidden
    }
    fn max_tokens(&self) -> usize {
        self.max_len
    }
    fn tokenizer(&self) -> std::sync::Arc<dyn crate::Tokenizer> {
        self.tokenizer.clone()
    }
    fn embed(&mut self, inputs: &[&[Token]]) -> Result<Vec<Vec<f32>>, String> {
        Bert::embed(self, inputs)
    }
    fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    fn backend(&self) -> String {
        "mantle-bert".into()
    }
}

/// `out (rows × n_out) = input (rows × n_in) · weight + bias`, split between the pool's threads,
/// each running the kernel alone on its block (no synchronisation inside a product, which on
/// these small matrices beats parallelising each product). Many rows are split by rows; a few
/// rows (one short query) by output columns, so each thread streams only its share of the
/// weights, which is what bounds a product over a handful of rows.
fn linear(out: &mut [f32], input: &[f32], layer: &Linear, rows: usize) {
    let (n_in, n_out) = (layer.n_in, layer.n_out);
    let threads = rayon::current_num_threads().max(1);
    if threads > 1 && rows < FEW_ROWS * threads {
        let width = n_out.div_ceil(threads);
        let parts: Vec<(usize, Vec<f32>)> = (0..threads)
            .into_par_iter()
            .map(|t| {
                let (from, to) = (t * width, ((t + 1) * width).min(n_out));
                let cols = to.saturating_sub(from);
                let mut part = Vec::with_capacity(rows * cols);
                for _ in 0..rows {
                    part.extend_from_slice(&layer.bias[from..to]);
                }
                matmul_acc(&mut part, rows, cols, n_in, (cols, 1), input, (n_in, 1), &layer.weight[from.min(n_out)..], (n_out, 1), Parallelism::None);
                (from, part)
            })
            .collect();
        for (from, part) in parts {
            let cols = part.len() / rows.max(1);
            for (row, values) in out[..rows * n_out].chunks_exact_mut(n_out).zip(part.chunks_exact(cols.max(1))) {
                row[from..from + cols].copy_from_slice(values);
            }
        }
        return;
    }
    let block = rows.div_ceil(threads).max(1);
    out[..rows * n_out].par_chunks_mut(block * n_out).zip(input[..rows * n_in].par_chunks(block * n_in)).for_each(|(out, input)| {
        let rows = out.len() / n_out;
        for row in out.chunks_exact_mut(n_out) {
            row.copy_from_slice(&layer.bias);
        }
        matmul_acc(out, rows, n_out, n_in, (n_out, 1), input, (n_in, 1), &layer.weight, (n_out, 1), Parallelism::None);
    });
}

/// Rows per thread below which a dense layer is split by output columns instead of rows.
const FEW_ROWS: usize = 32;

/// `dst = alpha · lhs · rhs` for strided matrices (each given as (row stride, column stride)).
#[expect(clippy::too_many_arguments, reason = "a strided matrix product names its three matrices, their strides and sizes")]
fn matmul(dst: &mut [f32], m: usize, n: usize, k: usize, dst_s: (usize, usize), lhs: &[f32], lhs_s: (usize, usize), rhs: &[f32], rhs_s: (usize, usize), alpha: f32, par: Parallelism) {
    gemm_checked(dst, m, n, k, dst_s, lhs, lhs_s, rhs, rhs_s, false, alpha, par);
}

/// `dst += lhs · rhs`.
#[expect(clippy::too_many_arguments, reason = "a strided matrix product names its three matrices, their strides and sizes")]
fn matmul_acc(dst: &mut [f32], m: usize, n: usize, k: usize, dst_s: (usize, usize), lhs: &[f32], lhs_s: (usize, usize), rhs: &[f32], rhs_s: (usize, usize), par: Parallelism) {
    gemm_checked(dst, m, n, k, dst_s, lhs, lhs_s, rhs, rhs_s, true, 1.0, par);
}

/// The one call into `gemm`, after checking that every strided matrix lies inside its slice.
#[expect(clippy::too_many_arguments, reason = "a strided matrix product names its three matrices, their strides and sizes")]
fn gemm_checked(dst: &mut [f32], m: usize, n: usize, k: usize, dst_s: (usize, usize), lhs: &[f32], lhs_s: (usize, usize), rhs: &[f32], rhs_s: (usize, usize), accumulate: bool, alpha: f32, par: Parallelism) {
    let extent = |rows: usize, cols: usize, (rs, cs): (usize, usize)| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 };
    assert!(extent(m, n, dst_s) <= dst.len() && extent(m, k, lhs_s) <= lhs.len() && extent(k, n, rhs_s) <= rhs.len(), "matrix views stay inside their buffers");
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // gemm computes dst = a·dst + b·lhs·rhs, with strides given as (column, row).
    #[expect(unsafe_code, reason = "gemm takes raw pointers; the extents were checked against the slices just above")]
    unsafe {
        gemm::gemm(m, n, k, dst.as_mut_ptr(), dst_s.1 as isize, dst_s.0 as isize, accumulate, lhs.as_ptr(), lhs_s.1 as isize, lhs_s.0 as isize, rhs.as_ptr(), rhs_s.1 as isize, rhs_s.0 as isize, 1.0, alpha, false, false, false, par);
    }
}

/// `rows × cols` row-major, transposed to `cols × rows` row-major.
fn transpose(matrix: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; matrix.len()];
    for (r, row) in matrix.chunks_exact(cols).enumerate() {
        for (c, v) in row.iter().enumerate() {
            out[c * rows + r] = *v;
        }
    }
    out
}

fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
}

fn layer_norm(x: &mut [f32], norm: &Norm, h: usize, eps: f32) {
    x.par_chunks_mut(h * 64).for_each(|rows| {
        for row in rows.chunks_exact_mut(h) {
            let mean = row.iter().sum::<f32>() / h as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
                *v = (*v - mean) * inv * g + b;
            }
        }
    });
}

fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = fast_exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// GELU with erf, as BERT defines it; erf by Abramowitz and Stegun 7.1.26 (error below 1.5e-7).
/// Branch-free, with `fast_exp`, so that loops over it vectorise.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let erf_abs = 1.0 - poly * fast_exp(-a * a);
    0.5 * x * (1.0 + erf_abs.copysign(z))
}

/// e^x to about one ulp (Cephes' expf: range reduction by ln 2, a degree-6 polynomial, the
/// exponent set by bits), written without branches or calls so that loops vectorise.
#[inline(always)]
fn fast_exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r + 5e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Tensors of a safetensors file, converted to f32 and taken by name.
struct Tensors {
    by_name: HashMap<String, Vec<f32>>,
}

impl Tensors {
    fn read(bytes: &[u8]) -> Result<Tensors, String> {
        let header_len = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize).ok_or("not a safetensors file")?;
        let header = bytes.get(8..8usize.saturating_add(header_len)).ok_or("the safetensors header runs past the end")?;
        let data = &bytes[8 + header_len..];
        let header: serde_json::Value = serde_json::from_slice(header).map_err(|e| format!("safetensors header: {e}"))?;
        let mut by_name = HashMap::new();
        for (name, info) in header.as_object().ok_or("safetensors header is not an object")? {
            if name == "__metadata__" {
                continue;
            }
            let offsets = info["data_offsets"].as_array().and_then(|o| Some((o.first()?.as_u64()? as usize, o.get(1)?.as_u64()? as usize))).ok_or_else(|| format!("{name}: no data_offsets"))?;
            let raw = data.get(offsets.0..offsets.1).ok_or_else(|| format!("{name}: data out of bounds"))?;
            let values: Vec<f32> = match info["dtype"].as_str() {
                Some("F32") => raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect(),
                Some("F16") => raw.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
                Some("BF16") => raw.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)).collect(),
                // Integer tensors (position ids) are not needed.
                _ => continue,
            };
            // Checkpoints from BertModel prefix names with "bert."; sentence-transformers does not.
            by_name.insert(name.strip_prefix("bert.").unwrap_or(name).to_owned(), values);
        }
        Ok(Tensors { by_name })
    }

    fn take(&mut self, name: &str, len: Option<usize>) -> Result<Vec<f32>, String> {
        let values = self.by_name.remove(name).ok_or_else(|| format!("the weights have no {name}"))?;
        match len {
            Some(len) if values.len() != len => Err(format!("{name} has {} values; expected {len}", values.len())),
            _ => Ok(values),
        }
    }

    fn linear(&mut self, prefix: &str, n_in: usize, n_out: usize) -> Result<Linear, String> {
        Ok(Linear { weight: self.take(&format!("{prefix}.weight"), Some(n_in * n_out))?, bias: self.take(&format!("{prefix}.bias"), Some(n_out))?, n_in, n_out })
    }

    fn norm(&mut self, prefix: &str, h: usize) -> Result<Norm, String> {
        // Old checkpoints name LayerNorm parameters gamma/beta.
        let gamma = self.take(&format!("{prefix}.weight"), Some(h)).or_else(|_| self.take(&format!("{prefix}.gamma"), Some(h)))?;
        let beta = self.take(&format!("{prefix}.bias"), Some(h)).or_else(|_| self.take(&format!("{prefix}.beta"), Some(h)))?;
        Ok(Norm { gamma, beta })
    }
}

fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits >> 15) as u32) << 31;
    let exp = ((bits >> 10) & 0x1f) as u32;
    let frac = (bits & 0x3ff) as u32;
    let value = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: renormalise.
            let shift = frac.leading_zeros() - 21;
            sign | ((127 - 15 + 1 - shift) << 23) | ((frac << shift) & 0x3ff) << 13
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (frac << 13),
    };
    f32::from_bits(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_erf_values() {
        // Reference values of 0.5·x·(1 + erf(x/√2)).
        for (x, expect) in [(0.0f32, 0.0f32), (1.0, 0.841_344_7), (-1.0, -0.158_655_25), (2.5, 2.484_475_8), (-3.0, -0.004_049_694)] {
            assert!((gelu(x) - expect).abs() < 1e-6, "gelu({x}) = {}", gelu(x));
        }
    }

    #[test]
    fn fast_exp_is_within_an_ulp_or_two() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (fast_exp(x), x.exp());
            assert!(((got - want) / want).abs() < 3e-7, "exp({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn half_floats_convert() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn strided_matmul_matches_the_naive_product() {
        let (m, n, k) = (5, 3, 4);
        let lhs: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let rhs_t: Vec<f32> = (0..n * k).map(|i| (i as f32).sin()).collect(); // n × k, used transposed
        let mut dst = vec![1.0f32; m * n];
        matmul_acc(&mut dst, m, n, k, (n, 1), &lhs, (k, 1), &rhs_t, (1, k), Parallelism::None);
        for i in 0..m {
            for j in 0..n {
                let expect = 1.0 + (0..k).map(|p| lhs[i * k + p] * rhs_t[j * k + p]).sum::<f32>();
                assert!((dst[i * n + j] - expect).abs() < 1e-4);
            }
        }
    }
}
