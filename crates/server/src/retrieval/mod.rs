//! Retrieval over vector stores: the ingestion worker (a file's text extracted, chunked in the
//! embedding model's tokens, embedded through the inference service as the store's owner, its
//! chunks written in one transaction), and search (each replica keeps an index per store, rebuilt
//! when the store's version moved, so every replica answers a query the same way once an ingest
//! committed anywhere).

pub(crate) mod chunk;
mod extract;
pub(crate) mod index;
mod reindex;

pub use reindex::{reindex_pending, run_reindexer};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use domain::auth::Principal;
use domain::vectors::{Chunk, StoreFile, VectorStore};
use serde_json::{json, Value};

use crate::inference::{self, EmbedInput, EmbedRequest, InferenceError, Target};
use crate::runtime::Backend;
use crate::AppState;
use chunk::Chunking;
use index::{Filter, Index, Weights};

/// How long a claimed file is held before another replica may take it over.
const LEASE_SECS: i64 = 900;
/// The most chunks one file may make (a bound on the embedding work one claim holds).
const MAX_CHUNKS: usize = 10_000;
/// The longest text extraction and chunking of one file may take.
const EXTRACT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest the PDF extractor process may run.
const PDF_TIMEOUT: Duration = Duration::from_secs(90);
/// The most text read back from it.
const MAX_PDF_TEXT: u64 = 64 * 1024 * 1024;
/// Chunks embedded per request.
const EMBED_BATCH: usize = 64;
/// Stores whose index one process keeps.
const MAX_CACHED: usize = 64;

/// The search indexes this process holds, by store.
#[derive(Default)]
pub struct Indexes {
    cached: Mutex<HashMap<String, Arc<Index>>>,
    /// One build at a time per store: concurrent searches after an ingest wait for one rebuild
    /// instead of each reading every chunk and building its own.
    building: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Indexes {
    fn cached(&self, store: &VectorStore) -> Option<Arc<Index>> {
        self.cached.lock().unwrap_or_else(|e| e.into_inner()).get(&store.id).filter(|i| i.version >= store.version).cloned()
    }
}

/// Ingests files until `shutdown` (woken at once by `wake`, else every second).
pub async fn run_worker(state: AppState, wake: Arc<tokio::sync::Notify>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match state.hub.claim_ingestion(LEASE_SECS).await {
            Ok(Some(file)) => {
                process(&state, file).await;
                continue;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!("failed to claim a file to ingest: {err:#}"),
        }
        tokio::select! {
            () = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Ingests every file waiting now; how many (for tests and tools).
pub async fn ingest_pending(state: &AppState) -> anyhow::Result<usize> {
    let mut n = 0;
    while let Some(file) = state.hub.claim_ingestion(LEASE_SECS).await? {
        process(state, file).await;
        n += 1;
    }
    Ok(n)
}

async fn process(state: &AppState, file: StoreFile) {
    let (embedded_by, outcome) = match ingest(state, &file).await {
        Ok((revision, chunks)) => (revision, Ok(chunks)),
        Err(error) => (String::new(), Err(error)),
    };
    if let Err(error) = &outcome {
        tracing::info!(store = %file.store_id, file = %file.file_id, "ingestion failed: {error}");
    }
    if let Err(err) = state.hub.finish_ingestion(&file, &embedded_by, outcome).await {
        tracing::warn!(store = %file.store_id, file = %file.file_id, "failed to store an ingestion: {err:#}");
    }
}

fn failure(code: &str, message: impl std::fmt::Display) -> Value {
    json!({ "code": code, "message": message.to_string() })
}

fn inference_failure(err: InferenceError) -> Value {
    failure("server_error", crate::routes::openai::OpenAiError::from(err).message())
}

/// A file's chunks with their vectors and the revision that embedded them, or why it has none.
async fn ingest(state: &AppState, file: &StoreFile) -> Result<(String, Vec<Chunk>), Value> {
    let (store, bytes) = state.hub.ingestion_source(file).await.map_err(|err| failure("invalid_file", err))?;
    let principal = state.hub.principal_of_token(store.token_id).await.map_err(|err| failure("server_error", err))?;
    let target = store_model(state, &principal, &store)
        .await
        .map_err(inference_failure)?
        .ok_or_else(|| failure("server_error", format!("the store is being re-indexed and its revision {} can no longer be served; attach the file again once the re-index is done", store.embedding_revision)))?;
    let chunks = embed_file(state, &principal, &target, file, bytes, "openai.vector_stores.ingest").await?;
    Ok((target.served.revision.clone(), chunks))
}

/// The model that embeds for a store: its deployment while that serves the store's revision;
/// once the deployment moved on, that revision pinned (until a re-index swaps the store over),
/// or `None` when it can no longer be served (a policy now blocks it, or its repo is gone).
pub(crate) async fn store_model(state: &AppState, principal: &Principal, store: &VectorStore) -> Result<Option<Target>, InferenceError> {
    let started = std::time::Instant::now();
    let (current, _) = inference::deployment_of(state, principal, &store.embedding_model).await?;
    let pinned = format!("{}@{}", current.repo, current.commit) != store.embedding_revision;
    let deployment = if !pinned {
        current
    } else {
        state.reindex_wake.notify_one();
        match state.hub.pinned_embedding_model(principal, store, &current).await {
            Ok(pinned) => pinned,
            Err(err) => {
                tracing::warn!(store = %store.id, "the store's revision {} cannot be served: {err}", store.embedding_revision);
                return Ok(None);
            }
        }
    };
    match state.runtime.get(&state.hub, deployment).await {
        Ok(served) => Ok(Some(Target { served, load: started.elapsed(), shadow: None })),
        Err(err @ domain::Error::Forbidden(_)) if pinned => {
            tracing::warn!(store = %store.id, "the store's revision {} cannot be served: {err}", store.embedding_revision);
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// A file's text, chunked in the target's tokens and embedded by it (as `principal`).
async fn embed_file(state: &AppState, principal: &Principal, target: &Target, file: &StoreFile, bytes: bytes::Bytes, api: &'static str) -> Result<Vec<Chunk>, Value> {
    let Backend::Embed(engine) = &target.served.backend else {
        return Err(failure("server_error", format!("{} is not an embedding model", target.name())));
    };
    let chunking = Chunking { max_tokens: file.chunking["max_chunk_size_tokens"].as_u64().unwrap_or(800) as usize, overlap: file.chunking["chunk_overlap_tokens"].as_u64().unwrap_or(0) as usize };
    let (engine, filename) = (engine.clone(), file.filename.clone());
    // A PDF is read in a child process that caps its own memory and CPU; other formats here.
    let pdf = if extract::is_pdf(&filename) { Some(pdf_text(bytes.clone()).await?) } else { None };
    let work = tokio::task::spawn_blocking(move || -> Result<Vec<String>, Value> {
        let text = match pdf {
            Some(text) => text,
            None => extract::text_of(&filename, &bytes).map_err(|refused| failure(refused.code, refused.message))?,
        };
        Ok(chunk::chunks(&text, chunking, |piece| engine.count_tokens(piece)))
    });
    let texts = match tokio::time::timeout(EXTRACT_TIMEOUT, work).await {
        Ok(Ok(result)) => result?,
        Ok(Err(_)) => return Err(failure("server_error", "text extraction failed")),
        Err(_) => return Err(failure("invalid_file", "text extraction took too long")),
    };
    if texts.len() > MAX_CHUNKS {
        return Err(failure("invalid_file", format!("the file makes {} chunks; at most {MAX_CHUNKS} are ingested per file (split it, or use larger chunks)", texts.len())));
    }
    let mut chunks = Vec::with_capacity(texts.len());
    for batch in texts.chunks(EMBED_BATCH) {
        let request = EmbedRequest { api, input: EmbedInput::Texts(batch.to_vec()), truncate: true, dimensions: None };
        let embedded = inference::embed(state, principal, target, request).await.map_err(inference_failure)?;
        for (text, vector) in batch.iter().zip(embedded.vectors) {
            chunks.push(Chunk { file_id: file.file_id.clone(), index: chunks.len() as u32, text: text.clone(), vector });
        }
    }
    Ok(chunks)
}

/// A PDF's text, read by `mantle extract-text` in a child process (killed when it runs past
/// `PDF_TIMEOUT`; its memory and CPU are capped by the child itself).
async fn pdf_text(bytes: bytes::Bytes) -> Result<String, Value> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exe = std::env::current_exe().map_err(|err| failure("server_error", format!("cannot find the mantle binary: {err}")))?;
    if exe.file_stem().and_then(|s| s.to_str()) != Some("mantle") {
        return Err(failure("unsupported_file", "PDF text is read by a mantle child process, and this server is not running as the mantle binary"));
    }
    let mut child = tokio::process::Command::new(exe)
        .arg("extract-text")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| failure("server_error", format!("cannot start the PDF extractor: {err}")))?;
    let (Some(mut stdin), Some(stdout), Some(stderr)) = (child.stdin.take(), child.stdout.take(), child.stderr.take()) else {
        return Err(failure("server_error", "the PDF extractor has no pipes"));
    };
    let work = async {
        let write = async move {
            // The child may stop reading (a bad document): a broken pipe is its answer, not ours.
            let _ = stdin.write_all(&bytes).await;
        };
        let mut text = Vec::new();
        let mut why = Vec::new();
        let (mut out, mut err) = (stdout.take(MAX_PDF_TEXT), stderr.take(4096));
        let (_, _, _) = tokio::join!(write, out.read_to_end(&mut text), err.read_to_end(&mut why));
        let status = child.wait().await;
        (status, text, why)
    };
    let (status, text, why) = tokio::time::timeout(PDF_TIMEOUT, work).await.map_err(|_| failure("invalid_file", "reading the PDF took too long"))?;
    let status = status.map_err(|err| failure("server_error", format!("the PDF extractor failed: {err}")))?;
    let why = String::from_utf8_lossy(&why).trim().to_owned();
    match status.code() {
        Some(0) => {
            let text = String::from_utf8_lossy(&text).into_owned();
            if text.trim().is_empty() {
                return Err(failure("invalid_file", "the PDF holds no extractable text (a scan needs OCR, which is not supported)"));
            }
            Ok(text)
        }
        Some(_) => Err(failure("invalid_file", if why.is_empty() { "not a readable PDF".to_owned() } else { why })),
        None => Err(failure("invalid_file", "the PDF extractor was stopped (it ran past its memory or CPU limit)")),
    }
}

/// A search of one store.
#[derive(Clone)]
pub(crate) struct Search {
    /// The API that embeds the queries, as usage records name it.
    pub(crate) api: &'static str,
    /// One query or several (results merged, each chunk at its best score).
    pub(crate) queries: Vec<String>,
    pub(crate) filter: Option<Filter>,
    pub(crate) max: usize,
    pub(crate) weights: Weights,
    pub(crate) threshold: f32,
}

/// One result.
#[derive(Clone, Debug)]
pub(crate) struct Found {
    pub(crate) file_id: String,
    pub(crate) filename: String,
    pub(crate) score: f32,
    pub(crate) attributes: Value,
    pub(crate) text: String,
}

/// Searches one of the caller's stores.
pub(crate) async fn search(state: &AppState, principal: &Principal, store_id: &str, search: Search) -> Result<Vec<Found>, InferenceError> {
    let store = state.hub.searchable_store(principal, store_id).await?;
    let index = index_of(state, &store).await?;
    let mut weights = search.weights;
    let (queries, filter, max) = (search.queries, search.filter, search.max);
    // The filter is applied and the text rankings run while the queries are embedded.
    let ranked = {
        let (index, queries) = (index.clone(), queries.clone());
        let wanted = weights.text > 0.0;
        inference::prompt::off_async(move || {
            let allowed = index.allowed(filter.as_ref());
            let by_text: Vec<_> = queries.iter().map(|q| if wanted { index.text_ranking(q, &allowed, max) } else { Vec::new() }).collect();
            (allowed, by_text)
        })
    };
    let embedded = async {
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; queries.len()];
        if weights.embedding > 0.0 && !index.chunks.is_empty() {
            // Queries are embedded by the revision that embedded the store (pinned while a
            // re-index runs); vectors of another revision are not comparable, so without it the
            // search ranks by text alone.
            match store_model(state, principal, &store).await? {
                Some(target) => {
                    let request = EmbedRequest { api: search.api, input: EmbedInput::Texts(queries.clone()), truncate: true, dimensions: None };
                    vectors = inference::embed(state, principal, &target, request).await?.vectors.into_iter().map(Some).collect();
                }
                None => weights.embedding = 0.0,
            }
        }
        Ok::<_, InferenceError>(vectors)
    };
    let ((allowed, by_text), vectors) = tokio::join!(ranked, embedded);
    let vectors = vectors?;
    let index_for_search = index.clone();
    let hits = inference::prompt::off_async(move || {
        let mut best: HashMap<usize, f32> = HashMap::new();
        for (by_text, vector) in by_text.into_iter().zip(&vectors) {
            for hit in index_for_search.fuse(by_text, vector.as_deref(), &allowed, weights, max) {
                let score = best.entry(hit.chunk).or_insert(0.0);
                *score = score.max(hit.score);
            }
        }
        let mut hits: Vec<(usize, f32)> = best.into_iter().collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits
    })
    .await;
    Ok(hits
        .into_iter()
        .filter(|(_, score)| *score >= search.threshold)
        .take(max)
        .map(|(i, score)| {
            let chunk = &index.chunks[i];
            Found { file_id: chunk.chunk.file_id.clone(), filename: chunk.filename.clone(), score, attributes: chunk.attributes.clone(), text: chunk.chunk.text.clone() }
        })
        .collect())
}

/// The store's index at its current version: this process's cached one, or built anew.
async fn index_of(state: &AppState, store: &VectorStore) -> Result<Arc<Index>, InferenceError> {
    if let Some(index) = state.indexes.cached(store) {
        return Ok(index);
    }
    let gate = state.indexes.building.lock().unwrap_or_else(|e| e.into_inner()).entry(store.id.clone()).or_default().clone();
    let _building = gate.lock().await;
    if let Some(index) = state.indexes.cached(store) {
        return Ok(index); // built by the search this one waited for
    }
    let (version, chunks) = state.hub.vector_chunks(store).await?;
    let index = Arc::new(inference::prompt::off_async(move || Index::build(version, chunks)).await);
    let mut cached = state.indexes.cached.lock().unwrap_or_else(|e| e.into_inner());
    if cached.len() >= MAX_CACHED && !cached.contains_key(&store.id) {
        cached.clear();
        // Gates nobody waits on go too (a gate in use is held by its waiters).
        state.indexes.building.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, gate| Arc::strong_count(gate) > 1);
    }
    cached.insert(store.id.clone(), index.clone());
    Ok(index)
}
