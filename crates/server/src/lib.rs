//! The HTTP server: Hugging Face Hub API, Git LFS, and Mantle's admin API over one `Hub`.
//! `router(state)` builds the routes (tests call it directly); `run` wires storage, bootstraps the
//! admin token and serves until shutdown.

pub mod audit_log;
pub mod auth;
pub mod bootstrap;
pub mod config;
mod error;
pub mod evals;
pub mod inference;
pub mod metrics;
pub mod pipelines;
pub mod retrieval;
pub mod rollouts;
mod routes;
pub mod runtime;
pub mod scanner;
mod signing;
pub mod usage;
pub mod webhooks;

pub use inference::quotas;

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use domain::hub::Hub;

pub use config::{Config, FlagOverrides, RawConfig};
pub use error::{ApiError, ApiResult};
pub use signing::{read_xet_token, xet_token, Signer};

/// Cheap handles shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub hub: Hub,
    pub signer: Signer,
    pub config: Arc<Config>,
    /// Notified after a commit queues scans, so the worker starts at once.
    pub scan_wake: Arc<tokio::sync::Notify>,
    /// Notified after an eval run is queued, so the run worker starts at once.
    pub eval_wake: Arc<tokio::sync::Notify>,
    /// Loaded deployments.
    pub runtime: runtime::Runtime,
    /// Serving metrics.
    pub metrics: metrics::Metrics,
    /// Usage accounting of inference requests.
    pub usage: usage::UsageLog,
    /// Quota definitions, re-read every few seconds.
    pub quotas: quotas::QuotaCache,
    /// Signs audit checkpoints.
    pub audit_signer: Arc<audit_log::AuditSigner>,
    /// Notified after files are attached to a vector store, so ingestion starts at once.
    pub ingest_wake: Arc<tokio::sync::Notify>,
    /// Wakes the re-indexer (a store's embedding deployment was seen serving another revision).
    pub reindex_wake: Arc<tokio::sync::Notify>,
    /// Vector-store search indexes this process holds.
    pub indexes: Arc<retrieval::Indexes>,
}

/// Builds the whole router.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Opens storage from config and builds the state (no port bound).
pub async fn build_state(config: Config) -> anyhow::Result<AppState> {
    if config.database_url.starts_with("sqlite:") || !config.blob_url.starts_with("s3://") {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("create data folder {}", config.data_dir.display()))?;
    }
    let meta = store::SqlMetaStore::connect(&config.database_url).await.context("open the metadata store")?;
    let blobs = store::open_blob_store(&config.blob_url).context("open the blob store")?;
    let meta: Arc<dyn domain::meta::MetaStore> = Arc::new(meta);
    let key = meta.secret("upload_signing_key", &signing::random_key()).await.map_err(|err| anyhow::anyhow!("{err}"))?;
    let usage = usage::UsageLog::start(meta.clone(), config.runtime.usage_accounting);
    let hub = Hub::new(meta, blobs, config.hub.clone());
    let models_dir = config.runtime.models_dir.clone();
    tokio::task::spawn_blocking(move || {
        runtime::sweep_temporaries(&models_dir);
        runtime::sweep_temporaries(&models_dir.join("derived"));
    })
    .await
    .context("sweep the models folder")?;
    let runtime = runtime::Runtime::with_engine_backends(config.runtime.clone());
    let audit_signer = Arc::new(audit_log::AuditSigner::load_or_create(config.audit_key_file.as_deref(), &config.data_dir).context("load the audit signing key")?);
    Ok(AppState {
        hub,
        signer: Signer::new(&key),
        config: Arc::new(config),
        scan_wake: Arc::new(tokio::sync::Notify::new()),
        eval_wake: Arc::new(tokio::sync::Notify::new()),
        runtime,
        metrics: metrics::Metrics::default(),
        usage,
        quotas: quotas::QuotaCache::default(),
        audit_signer,
        ingest_wake: Arc::new(tokio::sync::Notify::new()),
        reindex_wake: Arc::new(tokio::sync::Notify::new()),
        indexes: Arc::default(),
    })
}

/// Serves until `shutdown` resolves. Storage is opened and the admin token bootstrapped before the
/// listener is bound, so a bad configuration never leaves a half-started server.
pub async fn run(config: Config, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    let addr = config.addr;
    let state = build_state(config).await?;
    bootstrap::admin_token(&state).await.context("bootstrap the admin token")?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("bind {addr}"))?;
    let local = listener.local_addr().context("read the bound address")?;
    let (stop_workers, workers_stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(scanner::run_worker(state.clone(), state.scan_wake.clone(), workers_stopped.clone()));
    let evaluator = tokio::spawn(evals::run_worker(state.clone(), state.eval_wake.clone(), workers_stopped.clone()));
    let ingester = tokio::spawn(retrieval::run_worker(state.clone(), state.ingest_wake.clone(), workers_stopped.clone()));
    let reindexer = tokio::spawn(retrieval::run_reindexer(state.clone(), state.reindex_wake.clone(), workers_stopped.clone()));
    let controller = tokio::spawn(rollouts::run_controller(state.clone(), workers_stopped.clone()));
    let webhooks = tokio::spawn(webhooks::run_worker(state.clone(), workers_stopped.clone()));
    let pipelines = tokio::spawn(pipelines::run_worker(state.clone(), workers_stopped.clone()));
    let checkpoints = (state.config.audit_checkpoint_interval > 0).then(|| tokio::spawn(audit_log::run_checkpoints(state.clone(), std::time::Duration::from_secs(state.config.audit_checkpoint_interval), workers_stopped)));
    tracing::info!(addr = %local, "mantle is serving");
    let usage = state.usage.clone();
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await.context("serve HTTP")?;
    let _ = stop_workers.send(true);
    let _ = worker.await;
    let _ = evaluator.await;
    let _ = ingester.await;
    let _ = reindexer.await;
    let _ = controller.await;
    let _ = webhooks.await;
    let _ = pipelines.await;
    if let Some(checkpoints) = checkpoints {
        let _ = checkpoints.await;
    }
    // Requests that ended during the graceful shutdown queued their usage records: write them.
    if tokio::time::timeout(std::time::Duration::from_secs(30), usage.flush()).await.is_err() {
        tracing::error!("gave up writing the last usage records after 30 s; they are lost");
    }
    Ok(())
}
