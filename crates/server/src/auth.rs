//! The auth extractor: `Authorization: Bearer <token>` becomes a `Principal`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use domain::auth::Principal;

use crate::{ApiError, AppState};

/// The caller of a request (anonymous when no token was sent).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Auth(principal(state, &parts.headers).await?))
    }
}

/// The caller named by the request's Bearer token, `Anonymous` without one, 401 for a bad one.
pub(crate) async fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, domain::Error> {
    let secret = match headers.get(axum::http::header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| domain::Error::Unauthenticated("malformed Authorization header".into()))?;
            let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
            if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                return Err(domain::Error::Unauthenticated("expected Authorization: Bearer <token>".into()));
            }
            Some(token.trim().to_owned())
        }
    };
    let principal = state.hub.authenticate(secret.as_deref()).await?;
    // OpenAI's clients name the org a request acts for (`organization=`): what it creates belongs
    // to that org. Only an org the user belongs to; any other is refused, never ignored.
    match headers.get("openai-organization").map(|v| v.to_str().map(str::trim)) {
        None | Some(Ok("")) => Ok(principal),
        Some(Ok(org)) => principal.acting_for(org),
        Some(Err(_)) => Err(domain::Error::Unauthenticated("malformed OpenAI-Organization header".into())),
    }
}
