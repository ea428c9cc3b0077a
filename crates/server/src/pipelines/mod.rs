//! The pipeline worker: on every replica, every two seconds, it turns pushes to bound repos into
//! pipeline runs (`Hub::dispatch_pipelines`, one replica at a time under the cursor's lease) and
//! steps each due run by one stage (`stages::advance`) under the run's lease. A run waiting on
//! something (scans, eval runs, a canary's analysis) is stored with the time to look again, so
//! no worker is held while it waits and a restart loses nothing.

mod stages;

use std::time::Duration;

use domain::pipelines::PipelineStatus;
use serde_json::json;

use crate::AppState;

/// How long a worker holds a run while it steps it.
const LEASE_SECS: i64 = 120;

/// Runs pipelines until `shutdown`.
pub async fn run_worker(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let holder = format!("pipelines-{}", crate::inference::random_id());
    loop {
        if *shutdown.borrow() {
            return;
        }
        if let Err(err) = tick(&state, &holder).await {
            tracing::warn!("pipelines: {err:#}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Dispatches new pushes and steps every run that is due now; how many steps (tests and tools).
pub async fn tick(state: &AppState, holder: &str) -> anyhow::Result<usize> {
    state.hub.dispatch_pipelines(holder, 30).await?;
    let mut steps = 0;
    // Bounded, so one busy tick cannot starve the dispatcher.
    while steps < 64 {
        let Some(run) = state.hub.claim_pipeline_run(LEASE_SECS).await? else { break };
        step(state, run).await;
        steps += 1;
    }
    Ok(steps)
}

async fn step(state: &AppState, mut run: domain::pipelines::PipelineRun) {
    let span = tracing::info_span!("pipeline", run = %run.id, stage = %run.stage);
    let _enter = span.enter();
    let previous = run.stage.clone();
    let wait = match stages::advance(state, &mut run).await {
        Ok(stages::Next::Now) => 0,
        Ok(stages::Next::Wait(secs)) => secs,
        Err(reason) => {
            tracing::info!("pipeline failed at {previous}: {reason}");
            stages::log(&mut run, &previous, &reason);
            run.state["reason"] = json!(reason);
            run.status = PipelineStatus::Failed;
            0
        }
    };
    if let Err(err) = state.hub.step_pipeline_run(&run, &previous, wait).await {
        // The lease runs out and the step is taken again (each stage is safe to repeat).
        tracing::error!("failed to store the pipeline's step: {err:#}");
    }
}
