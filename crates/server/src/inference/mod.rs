//! The transport-neutral inference service. Every API surface (OpenAI, Ollama, and the ones to
//! come) translates its wire format into a [`GenerationRequest`] or an [`EmbedRequest`], calls
//! [`resolve`] and then [`generate`] or [`embed`], and translates the [`Answer`]'s
//! [`Output`]s back. What every surface must get the same lives here, once: authentication of
//! the caller, which deployment a name means and loading it (residency), prompt building
//! (chat templates, tools, tokenization, context checks), sampling defaults (request, then the
//! deployment's, then the API's), quota admission, usage accounting and metrics, tool-call
//! parsing, and the exact-revision fingerprint.
//!
//! A protocol module only parses its own fields and phrases errors and answers in its shape;
//! it never calls the engine, the quotas or the usage log itself.

mod embed;
mod error;
mod generate;
pub(crate) mod prompt;
pub mod quotas;
mod request;
mod residency;
mod tokenize;
pub(crate) mod tools;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use domain::auth::Principal;

pub(crate) use embed::{embed, EmbedInput, EmbedRequest};
pub(crate) use error::InferenceError;
pub(crate) use generate::{generate, Answer, Finish, Output};
pub(crate) use request::{GenerationRequest, Input, Sampling};
pub(crate) use residency::{apply_keep_alive, KeepAlive};
pub(crate) use tokenize::{context_length, detokenize, prefix_token, resolve_named_or_only, token_strings, tokenize, tokenizer_info, TokenizeInput};

use crate::runtime::{Backend, Served};
use crate::AppState;

/// A deployment resolved for one caller and loaded.
pub(crate) struct Target {
    pub(crate) served: Arc<Served>,
    /// How long this request waited for the model to be loaded (zero when it was resident).
    pub(crate) load: Duration,
    /// Through a route with shadow traffic: the deployment that gets a copy of this request
    /// (drawn per request at the route's share).
    pub(crate) shadow: Option<domain::meta::Deployment>,
}

impl Target {
    /// The deployment's name.
    pub(crate) fn name(&self) -> &str {
        &self.served.deployment.name
    }

    /// Whether the model generates text (rather than embeddings).
    pub(crate) fn generates(&self) -> bool {
        matches!(self.served.backend, Backend::Generate(_))
    }

    /// Whether the model has a chat template (prompts can be rendered from messages).
    pub(crate) fn has_chat_template(&self) -> bool {
        self.served.chat.is_some()
    }
}

/// The Bearer token's principal; inference always needs one.
pub(crate) async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, InferenceError> {
    let principal = crate::auth::principal(state, headers).await?;
    principal.user()?;
    Ok(principal)
}

/// The loaded model behind `name`, if the caller may use it. A deployment that is gone
/// (undeployed, perhaps by another replica) is unloaded here.
pub(crate) async fn resolve(state: &AppState, principal: &Principal, name: &str) -> Result<Target, InferenceError> {
    let started = Instant::now();
    let (deployment, shadow) = deployment_of(state, principal, name).await?;
    let served = state.runtime.get(&state.hub, deployment).await?;
    Ok(Target { served, load: started.elapsed(), shadow })
}

/// The deployment behind `name` for this caller, without loading it, and the deployment that
/// gets a copy of the request when `name` is a route with shadow traffic.
pub(crate) async fn deployment_of(state: &AppState, principal: &Principal, name: &str) -> Result<(domain::meta::Deployment, Option<domain::meta::Deployment>), InferenceError> {
    match state.hub.runnable_deployment(principal, name).await {
        Ok(deployment) => Ok((deployment, None)),
        Err(err) if matches!(err, domain::Error::NotFound(_)) => match state.hub.route_target(principal, name).await? {
            // A release route: the deployment the caller's sticky bucket falls on, and a copy of
            // the request for its shadow, drawn at the route's share.
            Some(target) => {
                let shadow = target.shadow.filter(|(_, percent)| rand::random::<f64>() * 100.0 < f64::from(*percent)).map(|(copy, _)| copy);
                Ok((target.deployment, shadow))
            }
            None => {
                state.runtime.unload(name);
                Err(err.into())
            }
        },
        Err(err) => Err(err.into()),
    }
}

/// Like `resolve`, and also `ns/name@revision`: a revision served for evaluation without a
/// deployment (the caller must be able to write its repo; evals only, never the public APIs).
pub(crate) async fn resolve_for_eval(state: &AppState, principal: &Principal, name: &str) -> Result<Target, InferenceError> {
    if !name.contains('@') {
        return resolve(state, principal, name).await;
    }
    let started = Instant::now();
    let deployment = state.hub.revision_model(principal, name).await?;
    let served = state.runtime.get(&state.hub, deployment).await?;
    Ok(Target { served, load: started.elapsed(), shadow: None })
}

/// A random identifier (24 letters and digits) for response and call ids.
pub(crate) fn random_id() -> String {
    use rand::distributions::{Alphanumeric, DistString as _};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}
