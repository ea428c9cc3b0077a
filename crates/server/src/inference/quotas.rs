//! Quota admission for the inference routes: a request that would go over a token's or an org's
//! limit is refused before it reaches a model, with a 429, `Retry-After` and the `x-ratelimit-*`
//! headers OpenAI clients read (see `domain::quota` for how the windows count).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use domain::auth::Principal;
use domain::quota::{Admission, Exceeded, Limits};

use crate::AppState;

/// How long this process uses the quota definitions it read before reading them again: a
/// change made through another replica applies here within this time (at once on this one).
const FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Every quota definition, shared by the requests that read it.
type Quotas = std::sync::Arc<Vec<domain::meta::Quota>>;

/// The quota definitions, read at most every `FRESH_FOR` (one query, not one per request).
#[derive(Clone, Default)]
pub struct QuotaCache {
    /// When they were read, and what.
    inner: std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, Quotas)>>>,
}

impl QuotaCache {
    async fn get(&self, state: &AppState) -> Result<Quotas, domain::Error> {
        if let Some((read, quotas)) = self.inner.lock().expect("quota cache not poisoned").as_ref() {
            if read.elapsed() < FRESH_FOR {
                return Ok(quotas.clone());
            }
        }
        let quotas = std::sync::Arc::new(state.hub.quota_definitions().await?);
        *self.inner.lock().expect("quota cache not poisoned") = Some((std::time::Instant::now(), quotas.clone()));
        Ok(quotas)
    }

    /// Forgets what was read (after a change through this process).
    pub fn invalidate(&self) {
        *self.inner.lock().expect("quota cache not poisoned") = None;
    }
}

/// Admits a request of `prompt_tokens`, or gives the refusal.
pub(crate) async fn admit(state: &AppState, principal: &Principal, prompt_tokens: usize) -> Result<Admission, Refusal> {
    let quotas = state.quotas.get(state).await.map_err(Refusal::Error)?;
    match state.hub.admit(principal, &quotas, prompt_tokens as u64).await {
        Ok(Ok(admission)) => Ok(admission),
        Ok(Err(exceeded)) => Err(Refusal::Exceeded(exceeded)),
        Err(err) => Err(Refusal::Error(err)),
    }
}

/// Why a request was not admitted.
pub(crate) enum Refusal {
    Exceeded(Exceeded),
    Error(domain::Error),
}

/// The `x-ratelimit-*` headers for these limits (only the kinds that apply).
pub(crate) fn headers(limits: &Limits, retry_after: Option<u64>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let Some((limit, remaining)) = limits.requests {
        put("x-ratelimit-limit-requests", limit.to_string());
        put("x-ratelimit-remaining-requests", remaining.to_string());
        put("x-ratelimit-reset-requests", format!("{}s", limits.reset_seconds));
    }
    if let Some((limit, remaining)) = limits.tokens {
        put("x-ratelimit-limit-tokens", limit.to_string());
        put("x-ratelimit-remaining-tokens", remaining.to_string());
        put("x-ratelimit-reset-tokens", format!("{}s", limits.reset_seconds));
    }
    if let Some(seconds) = retry_after {
        put("retry-after", seconds.max(1).to_string());
    }
    headers
}
