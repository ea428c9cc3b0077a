//! The one place where domain errors become HTTP responses: status, Hugging Face's
//! `X-Error-Code`/`X-Error-Message` headers, and a JSON body `{"error": message}`.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::Error;

/// An error on its way out of a handler.
#[derive(Debug)]
pub struct ApiError(pub Error);

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        ApiError(err)
    }
}

impl ApiError {
    /// A 400 with a message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        ApiError(Error::invalid(msg))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, commit) = match &self.0 {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, None, None),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, None, None),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, None, None),
            Error::RepoNotFound(_) => (StatusCode::NOT_FOUND, Some("RepoNotFound"), None),
            Error::RevisionNotFound(_) => (StatusCode::NOT_FOUND, Some("RevisionNotFound"), None),
            Error::EntryNotFound { commit, .. } => (StatusCode::NOT_FOUND, Some("EntryNotFound"), commit.clone()),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, None, None),
            Error::Conflict(_) => (StatusCode::CONFLICT, None, None),
            Error::Internal(detail) => {
                tracing::error!("failed to serve request: {detail}");
                (StatusCode::INTERNAL_SERVER_ERROR, None, None)
            }
        };
        let message = match &self.0 {
            Error::Internal(_) => "internal error; see the server log".to_owned(),
            other => other.to_string(),
        };
        let mut headers = HeaderMap::new();
        if let Some(code) = code {
            headers.insert("x-error-code", HeaderValue::from_static(code));
        }
        // Header values must be visible ASCII; keep the message readable and bounded.
        let header_message: String = message.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(512).collect();
        if let Ok(value) = HeaderValue::from_str(&header_message) {
            headers.insert("x-error-message", value);
        }
        if let Some(commit) = commit.and_then(|c| HeaderValue::from_str(&c).ok()) {
            headers.insert("x-repo-commit", commit);
        }
        (status, headers, axum::Json(api::ErrorBody { error: message })).into_response()
    }
}

/// Turns axum's JSON extraction failures into our 400 with a clear message.
pub(crate) fn json_rejection(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    ApiError::invalid(format!("malformed JSON body: {}", rejection.body_text()))
}
