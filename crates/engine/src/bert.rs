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

use rayon::prelude::*;

use crate::dense::{matmul, Dense};
use crate::elementwise::{gelu, layer_norm, softmax};
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

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    norm1: Norm,
    up: Dense,
    down: Dense,
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
        let precision = files.precision;
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
        if config.heads == 0 || config.hidden == 0 || config.intermediate == 0 || !config.hidden.is_multiple_of(config.heads) || config.hidden > 8192 || config.layers > 96 || config.intermediate > 65536 {
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
            // One fused projection: outputs of Q, then K, then V.
            let qkv = Dense::new(&[q.0, k.0, v.0].concat(), [q.1, k.1, v.1].concat(), h, 3 * h, precision);
            let dense = |(weight, bias): (Vec<f32>, Vec<f32>), n_in, n_out| Dense::new(&weight, bias, n_in, n_out, precision);
            layers.push(Layer {
                qkv,
                attention_out: dense(tensors.linear(&format!("{p}.attention.output.dense"), h, h)?, h, h),
                norm1: tensors.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: dense(tensors.linear(&format!("{p}.intermediate.dense"), h, config.intermediate)?, h, config.intermediate),
                down: dense(tensors.linear(&format!("{p}.output.dense"), config.intermediate, h)?, config.intermediate, h),
                norm2: tensors.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
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
        layer_norm(&mut x, &self.norm.gamma, &self.norm.beta, self.config.eps);

        let heads = self.config.heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let mut qkv = vec![0f32; total * 3 * h];
        let mut context = vec![0f32; total * h];
        let mut attended = vec![0f32; total * h];
        let mut up = vec![0f32; total * self.config.intermediate];
        let mut down = vec![0f32; total * h];
        for layer in &self.layers {
            layer.qkv.forward(&mut qkv, &x, total);
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
                    matmul(&mut scores, len, len, d, (len, 1), q, (3 * h, 1), k, (1, 3 * h), scale);
                    for row in scores.chunks_exact_mut(len) {
                        softmax(row);
                    }
                    // context[:, head] = scores · v (len × d).
                    matmul(&mut block[head * d..], len, d, len, (h, 1), &scores, (len, 1), v, (3 * h, 1), 1.0);
                }
            });
            layer.attention_out.forward(&mut attended, &context, total);
            add_into(&mut x, &attended);
            layer_norm(&mut x, &layer.norm1.gamma, &layer.norm1.beta, self.config.eps);
            layer.up.forward(&mut up, &x, total);
            up.par_chunks_mut(4096).for_each(gelu);
            layer.down.forward(&mut down, &up, total);
            add_into(&mut x, &down);
            layer_norm(&mut x, &layer.norm2.gamma, &layer.norm2.beta, self.config.eps);
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
        // The arithmetic is part of the fingerprint: bfloat16 products give vectors within
        // cosine 0.9999 of f32's, not bit-identical ones.
        if self.layers.first().is_some_and(|layer| layer.qkv.is_bf16()) {
            "mantle-bert-bf16".into()
        } else {
            "mantle-bert".into()
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
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

    /// A dense layer's PyTorch `n_out × n_in` weight and its bias.
    fn linear(&mut self, prefix: &str, n_in: usize, n_out: usize) -> Result<(Vec<f32>, Vec<f32>), String> {
        Ok((self.take(&format!("{prefix}.weight"), Some(n_in * n_out))?, self.take(&format!("{prefix}.bias"), Some(n_out))?))
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
    fn half_floats_convert() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
    }
}
