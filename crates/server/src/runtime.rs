//! Loaded models. A deployment loads on first use: its blob is copied to the models folder and
//! checked against the digest it was deployed with, its revision's verdict is checked again, and
//! an engine starts a runner thread on that local file: a GGUF file generates (llama.cpp), a
//! safetensors file embeds (the BERT encoder, with `config.json` and `tokenizer.json` from the
//! same commit). Later requests share the engine. A deployment that changed (another replica
//! redeployed it) or vanished is unloaded.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use domain::hub::Hub;
use domain::ids::{Digest, RepoPath};
use domain::meta::{Deployment, SamplingDefaults};
use domain::Error;
use engine::{EmbedConfig, EmbedEngine, EmbedRunner, EmbedderConfig, Engine, EngineConfig, ModelRunner, RunnerConfig};
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::config::RuntimeConfig;

/// Builds runners for local model files: the real backends, or mocks in tests.
pub trait Loader: Send + Sync {
    /// A generation runner for a GGUF file.
    fn generator(&self, config: &RunnerConfig) -> Result<Box<dyn ModelRunner>, String>;
    /// An embedding runner for a safetensors encoder.
    fn embedder(&self, config: &EmbedderConfig) -> Result<Box<dyn EmbedRunner>, String>;
}

/// The engine crate's backends.
pub struct EngineBackends;

impl Loader for EngineBackends {
    fn generator(&self, config: &RunnerConfig) -> Result<Box<dyn ModelRunner>, String> {
        engine::load_runner(config)
    }
    fn embedder(&self, config: &EmbedderConfig) -> Result<Box<dyn EmbedRunner>, String> {
        engine::load_embedder(config)
    }
}

/// A cheap handle to the loaded models of this process.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    load: Arc<dyn Loader>,
    config: RuntimeConfig,
    // A std Mutex: it is never held across an await; loads wait on the per-deployment cell.
    loaded: Mutex<HashMap<String, Slot>>,
    /// Deployments evicted to make room, by name.
    evictions: Mutex<HashMap<String, u64>>,
    /// Deployments restarted after their runner failed, by name.
    restarts: Mutex<HashMap<String, u64>>,
}

/// A load in progress, shared by every request waiting for it. It runs as its own task, so a
/// client that goes away does not abort it (the next request would start it over).
type Loading = futures::future::Shared<futures::future::BoxFuture<'static, Result<Arc<Served>, Error>>>;

struct Slot {
    identity: String,
    cell: Arc<tokio::sync::OnceCell<Arc<Served>>>,
    /// The load in progress, until it ends.
    loading: Option<Loading>,
    /// Memory set aside for the load in progress (the file's size), counted against the budget.
    reserved: u64,
    /// When a request last asked for it (the LRU order).
    last_used: std::time::Instant,
    keep: Keep,
}

/// How long a resident deployment is kept from eviction (Ollama's `keep_alive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Evicted least-recently-used first when the memory budget needs room.
    Default,
    /// Not evicted before this time.
    Until(std::time::SystemTime),
    /// Never evicted (only undeploy unloads it).
    Forever,
}

impl Keep {
    fn pinned(self) -> bool {
        match self {
            Keep::Default => false,
            Keep::Until(until) => until > std::time::SystemTime::now(),
            Keep::Forever => true,
        }
    }
}

/// One deployment, loaded and serving.
pub struct Served {
    pub deployment: Deployment,
    pub backend: Backend,
    /// The chat template from the model file, with the BOS/EOS texts it uses.
    pub chat: Option<ChatTemplate>,
    /// `fp_` and 10 hex digits over commit, file digest, backend and settings.
    pub fingerprint: String,
    /// `repo@commit`, sent as `x-mantle-revision`.
    pub revision: String,
    /// How long loading took (copy, check and backend start).
    pub load_seconds: f64,
    /// Memory it holds (weights and caches, estimated), counted against the budget.
    pub memory_bytes: u64,
    /// The sampling the model file recommends (GGUF `general.sampling.*`).
    pub file_sampling: SamplingDefaults,
}

/// What a loaded deployment does.
pub enum Backend {
    /// Text generation (chat and completions).
    Generate(Engine),
    /// Embeddings.
    Embed(EmbedEngine),
}

impl Served {
    /// The sampling a request gets for what it leaves out: the deployment's defaults, then the
    /// model file's.
    pub fn sampling_defaults(&self) -> SamplingDefaults {
        self.deployment.settings.sampling.or(&self.file_sampling)
    }

    /// Requests admitted and not yet finished.
    pub fn in_flight(&self) -> usize {
        match &self.backend {
            Backend::Generate(engine) => engine.in_flight(),
            Backend::Embed(engine) => engine.in_flight(),
        }
    }

    /// Sequences in the generation engine's latest step (0 for embedders).
    pub fn batch_size(&self) -> usize {
        match &self.backend {
            Backend::Generate(engine) => engine.batch_size(),
            Backend::Embed(_) => 0,
        }
    }
}

/// A chat template and its special-token texts.
#[derive(Clone, Debug)]
pub struct ChatTemplate {
    pub source: String,
    pub bos: String,
    pub eos: String,
}

impl Runtime {
    /// A runtime that loads models with `load`.
    pub fn new(config: RuntimeConfig, load: Arc<dyn Loader>) -> Self {
        Runtime { inner: Arc::new(Inner { load, config, loaded: Mutex::new(HashMap::new()), evictions: Mutex::new(HashMap::new()), restarts: Mutex::new(HashMap::new()) }) }
    }

    /// The real backends.
    pub fn with_engine_backends(config: RuntimeConfig) -> Self {
        Self::new(config, Arc::new(EngineBackends))
    }

    /// The served model of `deployment`, loading it first if needed (and evicting idle ones
    /// when the memory budget needs the room).
    pub async fn get(&self, hub: &Hub, deployment: Deployment) -> Result<Arc<Served>, Error> {
        let identity = identity(&deployment);
        let name = deployment.name.clone();
        let loading = {
            let mut loaded = self.inner.loaded.lock().expect("runtime map not poisoned");
            let now = std::time::Instant::now();
            let fresh = || Slot { identity: identity.clone(), cell: Arc::default(), loading: None, reserved: 0, last_used: now, keep: Keep::Default };
            let slot = loaded.entry(name.clone()).or_insert_with(fresh);
            let failed = slot.cell.get().is_some_and(|served| matches!(&served.backend, Backend::Generate(engine) if engine.health() != engine::Health::Running));
            if slot.identity != identity || failed {
                // Redeployed elsewhere: the old engine stops once its last request ends. A failed
                // runner is replaced here when a request comes before its watcher ran.
                *slot = fresh();
            }
            if failed {
                self.count_restart(&name);
            }
            slot.last_used = now;
            if let Some(served) = slot.cell.get() {
                return Ok(served.clone());
            }
            // Concurrent first requests wait for one load; a failed load is retried by the next request.
            let cell = slot.cell.clone();
            slot.loading.get_or_insert_with(|| self.spawn_load(hub.clone(), deployment, cell)).clone()
        };
        loading.await
    }

    /// Starts loading a deployment as its own task; the slot forgets the load when it ends.
    fn spawn_load(&self, hub: Hub, deployment: Deployment, cell: Arc<tokio::sync::OnceCell<Arc<Served>>>) -> Loading {
        use futures::FutureExt as _;
        let runtime = self.clone();
        let task = tokio::spawn(async move {
            let name = deployment.name.clone();
            let result = runtime.load_into(&hub, deployment, &cell).await;
            let mut loaded = runtime.inner.loaded.lock().expect("runtime map not poisoned");
            if let Some(slot) = loaded.get_mut(&name).filter(|slot| Arc::ptr_eq(&slot.cell, &cell)) {
                slot.loading = None;
                slot.reserved = 0;
            }
            result
        });
        async move { task.await.unwrap_or_else(|err| Err(Error::Internal(format!("the load stopped: {err}")))) }.boxed().shared()
    }

    async fn load_into(&self, hub: &Hub, deployment: Deployment, cell: &Arc<tokio::sync::OnceCell<Arc<Served>>>) -> Result<Arc<Served>, Error> {
        let name = deployment.name.clone();
        // Room for at least the file before loading it (set aside while it loads, so concurrent
        // loads cannot overshoot the budget together); the exact size is known after.
        let file_bytes = hub.content_size(&deployment.file_sha256).await?.unwrap_or(0);
        if let Some(slot) = self.inner.loaded.lock().expect("runtime map not poisoned").get_mut(&name).filter(|slot| Arc::ptr_eq(&slot.cell, cell)) {
            slot.reserved = file_bytes;
        }
        self.make_room(&name, file_bytes);
        let served = self.load(hub, deployment.clone()).await?;
        // Room for the exact size, before it counts as resident (so it is not counted twice).
        self.make_room(&name, served.memory_bytes);
        let _ = cell.set(served.clone());
        if let Backend::Generate(engine) = &served.backend {
            self.restart_on_failure(hub.clone(), deployment, cell.clone(), engine.watch_health());
        }
        Ok(served)
    }

    /// Watches a loaded engine: when its runner thread dies, the deployment is forgotten (its
    /// in-flight requests have already been told) and loaded again at once, so it recovers
    /// without an operator. The watch ends quietly when the engine stops normally.
    fn restart_on_failure(&self, hub: Hub, deployment: Deployment, cell: Arc<tokio::sync::OnceCell<Arc<Served>>>, mut health: tokio::sync::watch::Receiver<engine::Health>) {
        let runtime = self.clone();
        tokio::spawn(async move {
            let Ok(failed) = health.wait_for(|h| matches!(h, engine::Health::Failed(_))).await.map(|h| h.clone()) else {
                return;
            };
            let name = deployment.name.clone();
            let forgotten = {
                let mut loaded = runtime.inner.loaded.lock().expect("runtime map not poisoned");
                let current = loaded.get(&name).is_some_and(|slot| Arc::ptr_eq(&slot.cell, &cell));
                if current {
                    loaded.remove(&name);
                }
                current
            };
            drop(cell);
            if !forgotten {
                return; // unloaded or redeployed meanwhile: nothing to restart
            }
            runtime.count_restart(&name);
            tracing::warn!(deployment = %name, "the deployment's runner failed ({failed:?}); loading it again");
            // Still deployed as it was? Another replica may have changed or removed it.
            match hub.deployment_by_name(&name).await {
                Ok(Some(now)) if identity(&now) == identity(&deployment) => {
                    if let Err(err) = runtime.get(&hub, now).await {
                        tracing::error!(deployment = %name, "failed to reload the deployment after its runner failed: {err}");
                    }
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(deployment = %name, "failed to read the deployment to restart it: {err}"),
            }
        });
    }

    fn count_restart(&self, name: &str) {
        *self.inner.restarts.lock().expect("restarts not poisoned").entry(name.to_owned()).or_default() += 1;
    }

    /// Deployments restarted after a runner failure, by name (for /metrics).
    pub fn restarts(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.inner.restarts.lock().expect("restarts not poisoned").iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }

    /// Evicts idle deployments, least recently used first, until the resident ones plus `extra`
    /// bytes fit the memory budget. Never `keep` itself, never a pinned one, never one serving a
    /// request; a request that got its model just before the eviction finishes on it (the engine
    /// stops when the last handle goes), so eviction never cuts a request off.
    fn make_room(&self, keep: &str, extra: u64) {
        let budget = self.inner.config.memory_budget;
        if budget == 0 {
            return;
        }
        let mut loaded = self.inner.loaded.lock().expect("runtime map not poisoned");
        loop {
            let resident: u64 = loaded.iter().map(|(name, slot)| slot.cell.get().map_or(0, |served| served.memory_bytes) + if name == keep { 0 } else { slot.reserved }).sum();
            if resident.saturating_add(extra) <= budget {
                return;
            }
            let victim =
                loaded.iter().filter(|(name, slot)| name.as_str() != keep && !slot.keep.pinned()).filter(|(_, slot)| slot.cell.get().is_some_and(|served| served.in_flight() == 0)).min_by_key(|(_, slot)| slot.last_used).map(|(name, _)| name.clone());
            let Some(victim) = victim else {
                tracing::warn!(resident, extra, budget, "the resident models exceed the memory budget, and none is idle and unpinned to evict");
                return;
            };
            loaded.remove(&victim);
            tracing::info!(deployment = %victim, resident, budget, "evicted the least recently used deployment to make room");
            *self.inner.evictions.lock().expect("evictions not poisoned").entry(victim).or_default() += 1;
        }
    }

    /// Sets how long a deployment stays resident (Ollama's `keep_alive`); a no-op when it is not loaded.
    pub fn keep(&self, name: &str, keep: Keep) {
        if let Some(slot) = self.inner.loaded.lock().expect("runtime map not poisoned").get_mut(name) {
            slot.keep = keep;
        }
    }

    /// Keeps a deployment at least as long as `keep` asks, never shortening a longer pin (an
    /// ordinary caller's `keep_alive` must not undo an administrator's).
    pub fn extend_keep(&self, name: &str, keep: Keep) {
        if let Some(slot) = self.inner.loaded.lock().expect("runtime map not poisoned").get_mut(name) {
            slot.keep = match (slot.keep, keep) {
                (Keep::Forever, _) | (_, Keep::Forever) => Keep::Forever,
                (Keep::Until(a), Keep::Until(b)) => Keep::Until(a.max(b)),
                (Keep::Until(a), Keep::Default) | (Keep::Default, Keep::Until(a)) => Keep::Until(a),
                (Keep::Default, Keep::Default) => Keep::Default,
            };
        }
    }

    /// Until when a resident deployment is pinned: `None` when it is not pinned to a time (it
    /// stays until undeployed or, unless pinned forever, evicted for room).
    pub fn pinned_until(&self, name: &str) -> Option<std::time::SystemTime> {
        match self.inner.loaded.lock().expect("runtime map not poisoned").get(name).map(|slot| slot.keep) {
            Some(Keep::Until(until)) => Some(until),
            _ => None,
        }
    }

    /// Deployments evicted so far, by name (for /metrics).
    pub fn evictions(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self.inner.evictions.lock().expect("evictions not poisoned").iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }

    /// The chat template of a generating deployment, without starting its engine: from the
    /// loaded model when it is resident, else from a checked copy of its file.
    pub async fn chat_template(&self, hub: &Hub, deployment: &Deployment) -> Result<Option<ChatTemplate>, Error> {
        let resident = self.inner.loaded.lock().expect("runtime map not poisoned").get(&deployment.name).filter(|slot| slot.identity == identity(deployment)).and_then(|slot| slot.cell.get().cloned());
        if let Some(served) = resident {
            return Ok(served.chat.clone());
        }
        let path = materialize(hub, &self.inner.config.models_dir, &deployment.file_sha256).await?;
        tokio::task::spawn_blocking(move || read_gguf_metadata(&path).0).await.map_err(Error::internal)
    }

    /// Whether `name` is loaded in this process.
    pub fn is_resident(&self, name: &str) -> bool {
        self.inner.loaded.lock().expect("runtime map not poisoned").get(name).is_some_and(|slot| slot.cell.get().is_some())
    }

    /// Forgets a deployment; its engine stops when the last request using it ends.
    pub fn unload(&self, name: &str) {
        self.inner.loaded.lock().expect("runtime map not poisoned").remove(name);
    }

    /// Unloads `name` if no request is using it (Ollama's `keep_alive: 0`); whether it did.
    pub fn unload_if_idle(&self, name: &str) -> bool {
        let mut loaded = self.inner.loaded.lock().expect("runtime map not poisoned");
        let idle = loaded.get(name).is_some_and(|slot| slot.cell.get().is_none_or(|served| served.in_flight() == 0));
        if idle {
            loaded.remove(name);
        }
        idle
    }

    /// The loaded deployments, by name.
    pub fn resident(&self) -> Vec<Arc<Served>> {
        let loaded = self.inner.loaded.lock().expect("runtime map not poisoned");
        let mut served: Vec<Arc<Served>> = loaded.values().filter_map(|slot| slot.cell.get().cloned()).collect();
        served.sort_by(|a, b| a.deployment.name.cmp(&b.deployment.name));
        served
    }

    async fn load(&self, hub: &Hub, deployment: Deployment) -> Result<Arc<Served>, Error> {
        let started = std::time::Instant::now();
        hub.check_loadable(&deployment).await?;
        let models_dir = &self.inner.config.models_dir;
        let path = materialize(hub, models_dir, &deployment.file_sha256).await?;
        let settings = deployment.settings.clone();
        let load = self.inner.load.clone();
        let name = deployment.name.clone();
        let failed = |err: String| Error::Internal(format!("load deployment {name}: {err}"));
        let (backend, chat, backend_name, memory_bytes, file_sampling) = if is_encoder(&deployment) {
            // An encoder: its config and tokenizer come from the same commit, beside the weights.
            let folder = deployment.file_path.as_str().rsplit_once('/').map_or(String::new(), |(dir, _)| format!("{dir}/"));
            let config = self.sibling(hub, &deployment, &format!("{folder}config.json")).await?.ok_or_else(|| Error::invalid(format!("{} has no {folder}config.json beside the weights", deployment.repo)))?;
            let tokenizer = self.sibling(hub, &deployment, &format!("{folder}tokenizer.json")).await?.ok_or_else(|| Error::invalid(format!("{} has no {folder}tokenizer.json beside the weights", deployment.repo)))?;
            let sentence_config = self.sibling(hub, &deployment, &format!("{folder}sentence_bert_config.json")).await?;
            // sentence-transformers' setup: modules (pooling, normalisation) and prompts.
            let modules = self.sibling(hub, &deployment, &format!("{folder}modules.json")).await?;
            let pooling = match &modules {
                Some(path) => {
                    let bytes = tokio::fs::read(path).await.map_err(|err| Error::Internal(format!("read {}: {err}", path.display())))?;
                    let companions = engine::bert::companion_files(&bytes).map_err(&failed)?;
                    match companions.first() {
                        Some(file) => Some(self.sibling(hub, &deployment, &format!("{folder}{file}")).await?.ok_or_else(|| Error::invalid(format!("{} has no {folder}{file}, which modules.json names", deployment.repo)))?),
                        None => None,
                    }
                }
                None => None,
            };
            let st_config = self.sibling(hub, &deployment, &format!("{folder}config_sentence_transformers.json")).await?;
            let embedder_config = EmbedderConfig { weights: path.clone(), config, tokenizer, sentence_config, modules, pooling, st_config, threads: settings.threads, precision: self.inner.config.embed_precision };
            let runner = tokio::task::spawn_blocking(move || load.embedder(&embedder_config)).await.map_err(Error::internal)?.map_err(&failed)?;
            let backend_name = runner.backend();
            // max_batch counts sequences for generation; for an encoder, a batch holds up to
            // max_batch sequences of the model's full length.
            let max_batch_tokens = settings.max_batch as usize * runner.max_tokens();
            let engine = EmbedEngine::start(runner, EmbedConfig { max_batch_tokens, max_queue: self.inner.config.max_queue });
            // The encoder holds its weights (f32, as in the file) and small per-batch buffers.
            let memory_bytes = tokio::fs::metadata(&path).await.map(|m| m.len()).unwrap_or(0);
            (Backend::Embed(engine), None, backend_name, memory_bytes, SamplingDefaults::default())
        } else {
            let (prefill_chunk, max_step_tokens) = (self.inner.config.prefill_chunk, self.inner.config.max_step_tokens);
            let runner_config = RunnerConfig {
                path: path.clone(),
                context: settings.context,
                max_batch: settings.max_batch,
                threads: settings.threads,
                // A step never holds more than the budget, but at least one token per sequence.
                max_step_tokens: max_step_tokens.max(settings.max_batch as usize).min(u32::MAX as usize) as u32,
                derived_dir: models_dir.join("derived"),
                expand_max_bytes: self.inner.config.expand_max_bytes,
            };
            let (runner, (chat, sampling)) = tokio::task::spawn_blocking(move || -> Result<_, String> {
                let metadata = read_gguf_metadata(&runner_config.path);
                Ok((load.generator(&runner_config)?, metadata))
            })
            .await
            .map_err(Error::internal)?
            .map_err(&failed)?;
            let backend_name = runner.info().backend;
            let engine = Engine::start(runner, EngineConfig { max_batch: settings.max_batch as usize, max_queue: self.inner.config.max_queue, prefill_chunk, max_step_tokens });
            let memory_bytes = engine.info().memory_bytes;
            (Backend::Generate(engine), chat, backend_name, memory_bytes, sampling)
        };
        let load_seconds = started.elapsed().as_secs_f64();
        tracing::info!(deployment = %deployment.name, file = %path.display(), seconds = load_seconds, "loaded a deployment");
        let fingerprint = fingerprint(&deployment, &backend_name);
        let revision = format!("{}@{}", deployment.repo, deployment.commit);
        Ok(Arc::new(Served { deployment, backend, chat, fingerprint, revision, load_seconds, memory_bytes, file_sampling }))
    }

    /// A file of the deployment's commit, copied and checked like the weights; `None` if absent.
    async fn sibling(&self, hub: &Hub, deployment: &Deployment, path: &str) -> Result<Option<PathBuf>, Error> {
        let path = RepoPath::parse(path)?;
        match hub.commit_file(&deployment.commit, &path).await? {
            Some(entry) => Ok(Some(materialize(hub, &self.inner.config.models_dir, &entry.sha256).await?)),
            None => Ok(None),
        }
    }
}

/// What makes two deployments of one name the same loaded model.
fn identity(deployment: &Deployment) -> String {
    let s = &deployment.settings;
    // Default sampling too: a deployment redeployed with other defaults is served with them.
    format!("{}|{}|{}|{}|{}|{}|{}", deployment.commit, deployment.file_sha256, deployment.file_path, s.context, s.max_batch, s.threads, s.sampling.to_json())
}

fn fingerprint(deployment: &Deployment, backend: &str) -> String {
    let s = &deployment.settings;
    let mut text = format!("commit={}\nsha256={}\nbackend={backend}\nmantle={}\ncontext={}\nmax_batch={}\nthreads={}", deployment.commit, deployment.file_sha256, env!("CARGO_PKG_VERSION"), s.context, s.max_batch, s.threads);
    // Default sampling changes what the same request gets; only deployments that set some
    // carry it, so other fingerprints stay as they were.
    if s.sampling != SamplingDefaults::default() {
        text.push_str(&format!("\nsampling={}", s.sampling.to_json()));
    }
    format!("fp_{}", &hex::encode(Sha256::digest(text.as_bytes()))[..10])
}

/// Whether a deployment embeds (a safetensors encoder) rather than generates (a GGUF file).
pub fn is_encoder(deployment: &Deployment) -> bool {
    deployment.file_path.as_str().ends_with(".safetensors")
}

/// The chat template of a GGUF file and the sampling its author recommends
/// (`general.sampling.*`).
fn read_gguf_metadata(path: &Path) -> (Option<ChatTemplate>, SamplingDefaults) {
    let Ok(templates) = std::fs::File::open(path).map_err(|err| err.to_string()).and_then(|mut file| vet::gguf::chat_templates(&mut file)) else {
        return (None, SamplingDefaults::default());
    };
    // The GGUF names (`temp`, `penalty_repeat`) as generation_config.json's, checked the same way;
    // a negative top_k is "off".
    let mut config = serde_json::Map::new();
    for (name, value) in &templates.sampling {
        let key = match name.as_str() {
            "temp" | "temperature" => "temperature",
            "top_p" => "top_p",
            "min_p" => "min_p",
            "penalty_repeat" | "repeat_penalty" => "repetition_penalty",
            "top_k" => {
                config.insert("top_k".into(), serde_json::json!(value.max(0.0) as u64));
                continue;
            }
            _ => continue,
        };
        config.insert(key.into(), serde_json::json!(value));
    }
    let sampling = SamplingDefaults::from_generation_config(&serde_json::Value::Object(config));
    let chat =
        templates.templates.iter().find(|(key, _)| key == "tokenizer.chat_template").or(templates.templates.first()).map(|(_, source)| ChatTemplate { source: source.clone(), bos: templates.bos_token.clone(), eos: templates.eos_token.clone() });
    (chat, sampling)
}

/// Copies a blob to `dir/<sha256>` through a temporary file, checking the digest before the
/// rename. An existing copy is reused only if it is the file that was checked (size, mtime and
/// inode as recorded beside it then), or if hashing it again gives the digest; anything else is
/// copied anew. The engine only ever opens such copies.
async fn materialize(hub: &Hub, dir: &Path, digest: &Digest) -> Result<PathBuf, Error> {
    let path = dir.join(digest.as_str());
    let expected = hub.content_size(digest).await?.ok_or_else(|| Error::Internal(format!("blob {digest} is missing")))?;
    if tokio::fs::metadata(&path).await.is_ok_and(|m| m.len() == expected) {
        let (check, digest_text) = (path.clone(), digest.as_str().to_owned());
        let verified = tokio::task::spawn_blocking(move || verify_copy(&check, &digest_text)).await.map_err(Error::internal)?;
        if verified {
            return Ok(path);
        }
        tracing::warn!(file = %path.display(), "a local model copy does not match its digest; copying it again");
        let _ = tokio::fs::remove_file(&path).await;
    }
    tokio::fs::create_dir_all(dir).await.map_err(|err| Error::Internal(format!("create {}: {err}", dir.display())))?;
    let temp = dir.join(format!(".{}.{}.tmp", digest.as_str(), uuid_like()));
    let result = async {
        let mut file = tokio::fs::File::create(&temp).await.map_err(Error::internal)?;
        let mut hasher = Sha256::new();
        let mut stream = hub.blob_stream(digest, None).await?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(Error::internal)?;
        }
        file.sync_all().await.map_err(Error::internal)?;
        let actual = hex::encode(hasher.finalize());
        if actual != digest.as_str() {
            return Err(Error::Internal(format!("blob {digest} read back as {actual}; refusing to load it")));
        }
        tokio::fs::rename(&temp, &path).await.map_err(Error::internal)?;
        record_verified(&path).await;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result.map(|()| path)
}

/// The file beside a checked copy that records which file was checked: `size mtime_ns inode`.
fn stamp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".verified");
    path.with_file_name(name)
}

/// Identifies a file as it is now (a rewrite or a replacement changes it).
fn file_stamp(metadata: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt as _;
    format!("{} {} {}", metadata.len(), metadata.mtime() as i128 * 1_000_000_000 + i128::from(metadata.mtime_nsec()), metadata.ino())
}

/// Records that `path` was checked against its digest just now.
async fn record_verified(path: &Path) {
    let Ok(metadata) = tokio::fs::metadata(path).await else { return };
    let stamp = stamp_path(path);
    let temp = stamp.with_extension(format!("{}.tmp", uuid_like()));
    if tokio::fs::write(&temp, file_stamp(&metadata)).await.is_ok() && tokio::fs::rename(&temp, &stamp).await.is_ok() {
        return;
    }
    let _ = tokio::fs::remove_file(&temp).await;
}

/// Whether a local copy is the checked file (its stamp matches), else whether it hashes to the
/// digest (then it is stamped again). Blocking: it may read the whole file.
fn verify_copy(path: &Path, digest: &str) -> bool {
    let Ok(metadata) = std::fs::metadata(path) else { return false };
    if std::fs::read_to_string(stamp_path(path)).is_ok_and(|stamp| stamp == file_stamp(&metadata)) {
        return true;
    }
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let mut hasher = Sha256::new();
    if std::io::copy(&mut file, &mut hasher).is_err() || hex::encode(hasher.finalize()) != digest {
        return false;
    }
    let stamp = file_stamp(&metadata);
    let _ = std::fs::write(stamp_path(path), stamp);
    true
}

/// Removes temporary files that a load left behind when its process died (a copy still being
/// written by a live process has been touched within the last minutes).
pub fn sweep_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let stale = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|modified| modified < stale);
        if name.ends_with(".tmp") && old {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => tracing::info!(file = %entry.path().display(), "removed an abandoned temporary model file"),
                Err(err) => tracing::warn!(file = %entry.path().display(), "failed to remove an abandoned temporary model file: {err}"),
            }
        }
    }
}

/// A short random suffix for temporary names.
fn uuid_like() -> String {
    use rand::Rng as _;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}
