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
    /// Where derived forms of model files (F16 expansions) are kept, with their lineage.
    pub derived_dir: PathBuf,
    /// The largest F16 expansion to make; 0 never expands. See `expanded_form`.
    pub expand_max_bytes: u64,
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
    let profile = crate::llama::weight_profile(&config.path)?;
    let (path, form) = match expanded_form(config, &profile)? {
        Some(path) => (path, format!("{} expanded to f16", profile.main_type)),
        None => (config.path.clone(), profile.main_type.clone()),
    };
    let mut runner = crate::llama::LlamaRunner::load(&path, &settings)?;
    runner.set_weights(form);
    Ok(Box::new(runner))
}

/// Weights of a type without a batched CPU kernel (Q4_1, Q5_0, Q5_1) run prompts and batched
/// decoding 1.5-2x slower than the same weights in F16 (bench/serve.sh), while one stream alone
/// decodes faster from the smaller file. So a deployment that batches (`max_batch` > 1) runs an
/// F16 expansion of such a file when it fits `expand_max_bytes`. The expansion is a derived
/// artifact: named by the source digest and the converter, written through a temporary file,
/// and recorded with its lineage (source sha256, converter, output sha256), which is checked
/// again before every reuse. `None`: run the file as it is.
#[cfg(feature = "llama")]
fn expanded_form(config: &RunnerConfig, profile: &crate::llama::WeightProfile) -> Result<Option<PathBuf>, String> {
    if !profile.slow_batched || config.max_batch <= 1 || profile.expanded_bytes > config.expand_max_bytes {
        return Ok(None);
    }
    let source = config.path.file_name().and_then(|n| n.to_str()).ok_or("a model file without a name")?;
    std::fs::create_dir_all(&config.derived_dir).map_err(|err| format!("create {}: {err}", config.derived_dir.display()))?;
    let name = format!("{source}.{CONVERTER_ID}.gguf");
    let path = config.derived_dir.join(&name);
    let lineage_path = config.derived_dir.join(format!("{name}.lineage.json"));
    if let Some(lineage) = std::fs::read(&lineage_path).ok().and_then(|b| serde_json::from_slice::<Lineage>(&b).ok()) {
        if lineage.converter == CONVERTER && sha256_file(&path).ok().as_deref() == Some(lineage.output_sha256.as_str()) {
            return Ok(Some(path));
        }
    }
    let source_sha256 = sha256_file(&config.path)?;
    let temp = config.derived_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let started = std::time::Instant::now();
    let written = crate::llama::expand_to_f16(&config.path, &temp, config.threads, profile).and_then(|()| {
        let output_sha256 = sha256_file(&temp)?;
        let lineage = Lineage { source_sha256, converter: CONVERTER.to_owned(), output_sha256, output_bytes: std::fs::metadata(&temp).map_err(|e| e.to_string())?.len() };
        write_atomically(&lineage_path, &serde_json::to_vec_pretty(&lineage).map_err(|e| e.to_string())?)?;
        std::fs::rename(&temp, &path).map_err(|err| format!("rename into {}: {err}", path.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    tracing::info!(source = %config.path.display(), derived = %path.display(), seconds = started.elapsed().as_secs_f64(), "expanded {} weights to f16", profile.main_type);
    Ok(Some(path))
}

/// The converter of derived files; a change to how they are made changes their names.
#[cfg(feature = "llama")]
const CONVERTER: &str = "mantle f16 expansion v1 (llama.cpp llama_model_quantize, ftype F16, token embedding and output types kept)";
#[cfg(feature = "llama")]
const CONVERTER_ID: &str = "f16v1";

/// Where a derived file came from.
#[cfg(feature = "llama")]
#[derive(serde::Serialize, serde::Deserialize)]
struct Lineage {
    source_sha256: String,
    converter: String,
    output_sha256: String,
    output_bytes: u64,
}

#[cfg(feature = "llama")]
fn sha256_file(path: &std::path::Path) -> Result<String, String> {
    use sha2::Digest as _;
    let mut file = std::fs::File::open(path).map_err(|err| format!("open {}: {err}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|err| format!("read {}: {err}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `path` through a temporary file and a rename, so readers see the old or the new bytes.
#[cfg(feature = "llama")]
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write as _;
    let temp = path.with_extension(format!("{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result.map_err(|err| format!("write {}: {err}", path.display()))
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
    /// sentence-transformers' `modules.json`, when the repo has one (pooling and normalisation).
    pub modules: Option<PathBuf>,
    /// The pooling module's `config.json` (e.g. `1_Pooling/config.json`).
    pub pooling: Option<PathBuf>,
    /// `config_sentence_transformers.json` (its default prompt).
    pub st_config: Option<PathBuf>,
    pub threads: u32,
    /// Arithmetic of the dense layers.
    pub precision: crate::Precision,
}

/// Loads a safetensors BERT encoder for embeddings.
pub fn load_embedder(config: &EmbedderConfig) -> Result<Box<dyn crate::embed::EmbedRunner>, String> {
    let bert = crate::bert::Bert::load(config)?;
    Ok(Box::new(bert))
}
