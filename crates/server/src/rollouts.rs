//! The rollout controller: every few seconds, on every replica, `Hub::step_rollouts` analyses
//! canaries whose step has baked and moves them (next step, promotion, or rollback). Changes
//! are compare-and-set on the route, so replicas never step a route twice.

use std::time::Duration;

use crate::AppState;

/// Steps rollouts until `shutdown`.
pub async fn run_controller(state: AppState, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        match state.hub.step_rollouts().await {
            Ok(changed) => {
                for change in changed {
                    tracing::info!("rollout: {change}");
                }
            }
            Err(err) => tracing::warn!("failed to step rollouts: {err:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
    }
}
