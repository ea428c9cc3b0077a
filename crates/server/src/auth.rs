//! The auth extractor: `Authorization: Bearer <token>` becomes a `Principal`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use domain::auth::Principal;

use crate::{ApiError, AppState};

/// The caller of a request (anonymous when no token was sent).
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let secret = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            None => None,
            Some(value) => {
                let text = value.to_str().map_err(|_| domain::Error::Unauthenticated("malformed Authorization header".into()))?;
                let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
                if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
                    return Err(domain::Error::Unauthenticated("expected Authorization: Bearer <token>".into()).into());
                }
                Some(token.trim().to_owned())
            }
        };
        Ok(Auth(state.hub.authenticate(secret.as_deref()).await?))
    }
}
