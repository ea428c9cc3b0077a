//! Who may keep a deployment resident, and for how long (Ollama's `keep_alive`, and any API
//! that asks for the same later).

use std::time::{Duration, SystemTime};

use domain::auth::Principal;
use domain::meta::Deployment;

use super::InferenceError;
use crate::runtime::Keep;
use crate::AppState;

/// What a request asks for the residency of its model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum KeepAlive {
    /// Unload now (a request that only came for that) or as soon as it is idle.
    Unload,
    Keep(Keep),
}

/// Whether the caller may pin a deployment past its `keep_alive_max` or unload it for everyone:
/// a site admin, or an admin token of the deployment's namespace.
fn may_manage_residency(principal: &Principal, deployment: &Deployment) -> bool {
    match principal {
        Principal::User(user) => principal.site_admin().is_ok() || (user.role == domain::auth::Role::Admin && principal.can_write_namespace(deployment.repo.namespace.as_str())),
        Principal::Anonymous => false,
    }
}

/// An ordinary caller's `keep` within the deployment's limit: at most `keep_alive_max` from now
/// (for good included); unloading is refused, since the model serves others too.
fn cap(deployment: &Deployment, keep: Option<KeepAlive>) -> Result<Option<KeepAlive>, InferenceError> {
    // Bounded on deploy; a stored value past the clock's range means "no limit beyond now".
    let now = SystemTime::now();
    let limit = now.checked_add(Duration::from_secs(deployment.settings.keep_alive_max_secs)).unwrap_or(now);
    Ok(match keep {
        None => None,
        Some(KeepAlive::Unload) => return Err(domain::Error::forbidden("keep_alive 0 (unloading a model others use) needs an admin token").into()),
        Some(KeepAlive::Keep(Keep::Forever)) => Some(KeepAlive::Keep(Keep::Until(limit))),
        Some(KeepAlive::Keep(Keep::Until(until))) => Some(KeepAlive::Keep(Keep::Until(until.min(limit)))),
        Some(KeepAlive::Keep(Keep::Default)) => Some(KeepAlive::Keep(Keep::Default)),
    })
}

/// Applies a request's `keep` to its deployment (an ordinary caller's capped, and never
/// shortening a pin someone else set); `true` when the request asked to unload and is `empty`
/// (it only came to do that) and the model was unloaded.
pub(crate) fn apply_keep_alive(state: &AppState, principal: &Principal, deployment: &Deployment, keep: Option<KeepAlive>, empty: bool) -> Result<bool, InferenceError> {
    let privileged = may_manage_residency(principal, deployment);
    let keep = if privileged { keep } else { cap(deployment, keep)? };
    let name = deployment.name.as_str();
    Ok(match keep {
        None => false,
        Some(KeepAlive::Keep(keep)) if privileged => {
            state.runtime.keep(name, keep);
            false
        }
        Some(KeepAlive::Keep(keep)) => {
            state.runtime.extend_keep(name, keep);
            false
        }
        Some(KeepAlive::Unload) if empty => state.runtime.unload_if_idle(name),
        Some(KeepAlive::Unload) => {
            // Evictable from now on; it goes when the budget next needs room.
            state.runtime.keep(name, Keep::Until(SystemTime::now()));
            false
        }
    })
}
