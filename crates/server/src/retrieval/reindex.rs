//! Re-indexing: a store remembers the exact revision that embedded it. When its deployment (or
//! the route it names) comes to serve another revision, the store's files are embedded again by
//! the new revision beside the chunks that keep answering (queries are embedded by the old
//! revision, pinned, meanwhile); when every file is done, one transaction swaps the new chunks in
//! and records the new revision. A store's re-index is held by one replica at a time under a
//! lease renewed per file, so a replica that dies hands it over; its progress is kept per file.

use std::sync::Arc;
use std::time::Duration;

use domain::auth::Principal;
use domain::vectors::VectorStore;

use crate::AppState;

/// How long a held re-index lasts without renewal (renewed before each file).
const LEASE_SECS: i64 = 600;
/// How long a failed attempt waits before the next.
const RETRY_SECS: i64 = 60;
/// How often every store's deployment is looked at.
const SWEEP: Duration = Duration::from_secs(30);
/// The least time between two sweeps, however often they are woken.
const MIN_GAP: Duration = Duration::from_secs(5);
/// Stores looked at per sweep.
const MAX_STORES: usize = 10_000;
/// Rounds of a store's pending files before the attempt yields (files attached meanwhile).
const MAX_ROUNDS: usize = 20;

/// Re-indexes stores until `shutdown`: a sweep every 30 seconds, or at once when `wake` (a
/// search or ingestion saw a store's deployment move).
pub async fn run_reindexer(state: AppState, wake: Arc<tokio::sync::Notify>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let holder = format!("reindex-{}", crate::inference::random_id());
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        if let Err(err) = sweep(&state, &holder, Some(&shutdown)).await {
            tracing::warn!("the re-index sweep failed: {err:#}");
        }
        tokio::select! {
            () = wake.notified() => {}
            _ = tokio::time::sleep(SWEEP) => {}
            _ = shutdown.changed() => return,
        }
        // Every search of a store whose deployment moved wakes the sweep: at most one per
        // MIN_GAP, so a busy store cannot keep the sweep (a read of every store) running.
        tokio::select! {
            _ = tokio::time::sleep_until(started + MIN_GAP) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Runs every re-index due now to its end; how many stores were swapped (for tests and tools).
pub async fn reindex_pending(state: &AppState) -> anyhow::Result<usize> {
    sweep(state, &format!("reindex-{}", crate::inference::random_id()), None).await
}

/// Looks at every store: one whose deployment serves another revision is re-indexed (when this
/// replica can take it); one whose deployment came back drops its re-index.
async fn sweep(state: &AppState, holder: &str, shutdown: Option<&tokio::sync::watch::Receiver<bool>>) -> anyhow::Result<usize> {
    let mut swapped = 0;
    for store in state.hub.reindex_candidates(MAX_STORES).await? {
        if shutdown.is_some_and(|s| *s.borrow()) {
            break;
        }
        // As the owner's token: a revoked token or a deployment it may no longer run stops here.
        let Ok(principal) = state.hub.principal_of_token(store.token_id).await else { continue };
        let Ok((deployment, _)) = crate::inference::deployment_of(state, &principal, &store.embedding_model).await else { continue };
        let revision = format!("{}@{}", deployment.repo, deployment.commit);
        if revision == store.embedding_revision {
            if store.reindex.is_some() {
                state.hub.drop_reindex(&store.id).await?;
            }
            continue;
        }
        if !state.hub.claim_reindex(&store.id, &revision, holder, LEASE_SECS).await? {
            continue;
        }
        match reindex(state, holder, &store, &principal, deployment, &revision, shutdown).await {
            Ok(true) => {
                swapped += 1;
                tracing::info!(store = %store.id, from = %store.embedding_revision, to = %revision, "re-indexed a vector store");
            }
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(store = %store.id, to = %revision, "re-indexing failed: {error}");
                state.hub.fail_reindex(&store.id, holder, &error, RETRY_SECS).await?;
            }
        }
    }
    Ok(swapped)
}

/// Embeds a store's pending files anew by `deployment` and swaps when none is left; `true` when
/// it swapped, `false` when it yielded (lease lost, shutdown, files still coming).
async fn reindex(state: &AppState, holder: &str, store: &VectorStore, principal: &Principal, deployment: domain::meta::Deployment, revision: &str, shutdown: Option<&tokio::sync::watch::Receiver<bool>>) -> Result<bool, String> {
    let started = std::time::Instant::now();
    let served = state.runtime.get(&state.hub, deployment).await.map_err(|err| format!("cannot load {revision}: {err}"))?;
    if served.revision != revision {
        return Ok(false); // moved again meanwhile: the next sweep starts over
    }
    let target = crate::inference::Target { served, load: started.elapsed(), shadow: None };
    for _ in 0..MAX_ROUNDS {
        let pending = state.hub.reindex_pending(&store.id).await.map_err(|err| err.to_string())?;
        if pending.is_empty() {
            let Some(now) = state.hub.vector_store_by_id(&store.id).await.map_err(|err| err.to_string())? else { return Ok(false) };
            return state.hub.swap_reindex(&now, revision).await.map_err(|err| err.to_string());
        }
        for file in pending {
            if shutdown.is_some_and(|s| *s.borrow()) || !state.hub.claim_reindex(&store.id, revision, holder, LEASE_SECS).await.map_err(|err| err.to_string())? {
                return Ok(false);
            }
            let (_, bytes) = state.hub.ingestion_source(&file).await.map_err(|err| format!("file {}: {err}", file.file_id))?;
            let chunks = super::embed_file(state, principal, &target, &file, bytes, "openai.vector_stores.reindex").await.map_err(|err| format!("file {}: {}", file.file_id, err["message"].as_str().unwrap_or_default()))?;
            state.hub.finish_reindex_file(&file, revision, &chunks).await.map_err(|err| err.to_string())?;
        }
    }
    Ok(false)
}
