//! OpenAI's error shape, `{"error": {message, type, param, code}}`, for every failure on `/v1`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use engine::InferError;

use crate::inference::InferenceError;

/// An error on its way out of an OpenAI route.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    /// Headers the response carries besides the body (quota refusals: `x-ratelimit-*`).
    headers: Option<Box<axum::http::HeaderMap>>,
}

impl OpenAiError {
    /// A 400 about one request field.
    /// What the body's message says.
    pub(crate) fn message(&self) -> String {
        self.message.clone()
    }

    pub(crate) fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        OpenAiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", param: param.map(str::to_owned), code: None, headers: None }
    }

    /// A 400 for a field or value Mantle does not serve (yet), rather than silently ignoring it.
    pub(crate) fn unsupported(param: &str, what: &str) -> Self {
        OpenAiError { code: Some("unsupported_parameter"), ..Self::invalid(format!("{what} is not supported by this server"), Some(param)) }
    }

    /// The same error with OpenAI's `code` for it.
    pub(crate) fn with_code(self, code: &'static str) -> Self {
        OpenAiError { code: Some(code), ..self }
    }

    /// A 404 for a path that is no OpenAI endpoint.
    pub(crate) fn not_found(message: String) -> Self {
        OpenAiError { status: StatusCode::NOT_FOUND, message, kind: "invalid_request_error", param: None, code: Some("unknown_url"), headers: None }
    }

    /// A request body that is not the JSON this route expects.
    pub(crate) fn from_rejection(rejection: axum::extract::rejection::JsonRejection) -> Self {
        OpenAiError { status: StatusCode::BAD_REQUEST, ..Self::invalid(format!("invalid request body: {}", rejection.body_text()), None) }
    }

    /// A prompt that does not fit the model's context.
    pub(crate) fn context_exceeded(message: String) -> Self {
        Self::context_exceeded_in("messages", message)
    }

    /// An input that does not fit the model's context, naming the field.
    pub(crate) fn context_exceeded_in(param: &str, message: String) -> Self {
        OpenAiError { code: Some("context_length_exceeded"), ..Self::invalid(message, Some(param)) }
    }
}

impl From<InferenceError> for OpenAiError {
    fn from(err: InferenceError) -> Self {
        match err {
            InferenceError::Invalid { message, param } => OpenAiError::invalid(message, param.as_deref()),
            InferenceError::Unsupported { param, what } => OpenAiError::unsupported(&param, &what),
            InferenceError::ContextExceeded { param, message } => OpenAiError::context_exceeded_in(&param, message),
            InferenceError::NotGenerative { model } => OpenAiError::invalid(format!("model {model} serves embeddings; use /v1/embeddings"), Some("model")),
            InferenceError::NotEmbedding { model } => OpenAiError::invalid(format!("model {model} generates text; embeddings need an embedding deployment"), Some("model")),
            InferenceError::NoChatTemplate { model } => OpenAiError::invalid(format!("model {model} has no chat template; use /v1/completions"), Some("model")),
            InferenceError::Quota(exceeded) => crate::quotas::Refusal::Exceeded(exceeded).into(),
            InferenceError::Domain(err) => err.into(),
            InferenceError::Engine(err) => err.into(),
        }
    }
}

impl From<domain::Error> for OpenAiError {
    fn from(err: domain::Error) -> Self {
        use domain::Error;
        let (status, kind, code) = match &err {
            Error::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            Error::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key")),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "permission_error", None),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found")),
            Error::RepoNotFound(_) | Error::RevisionNotFound(_) | Error::EntryNotFound { .. } => (StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found")),
            Error::Conflict(_) => (StatusCode::CONFLICT, "invalid_request_error", None),
            Error::Internal(detail) => {
                tracing::error!("failed to serve an OpenAI request: {detail}");
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None)
            }
        };
        let message = match &err {
            Error::Internal(_) => "internal error; see the server log".to_owned(),
            Error::Unauthenticated(_) => format!("{err}: pass a Mantle token as the API key (Authorization: Bearer <token>)"),
            other => other.to_string(),
        };
        OpenAiError { status, message, kind, param: None, code, headers: None }
    }
}

impl From<InferError> for OpenAiError {
    fn from(err: InferError) -> Self {
        match err {
            InferError::Overloaded => OpenAiError { status: StatusCode::TOO_MANY_REQUESTS, message: err.to_string(), kind: "rate_limit_error", param: None, code: Some("rate_limit_exceeded"), headers: None },
            InferError::Invalid(message) => OpenAiError::context_exceeded(message),
            InferError::Unavailable(message) => {
                tracing::error!("failed to reach an engine: {message}");
                OpenAiError { status: StatusCode::SERVICE_UNAVAILABLE, message: "the model is unavailable; see the server log".into(), kind: "server_error", param: None, code: None, headers: None }
            }
        }
    }
}

impl From<crate::quotas::Refusal> for OpenAiError {
    fn from(refusal: crate::quotas::Refusal) -> Self {
        match refusal {
            crate::quotas::Refusal::Error(err) => err.into(),
            crate::quotas::Refusal::Exceeded(exceeded) => {
                // A monthly budget is OpenAI's `insufficient_quota`; a per-minute limit is a rate limit.
                let (kind, code) = if exceeded.monthly { ("insufficient_quota", "insufficient_quota") } else { ("rate_limit_error", "rate_limit_exceeded") };
                let headers = crate::quotas::headers(&exceeded.limits, Some(exceeded.retry_after));
                OpenAiError { status: StatusCode::TOO_MANY_REQUESTS, message: exceeded.message, kind, param: None, code: Some(code), headers: Some(Box::new(headers)) }
            }
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = api::openai::OpenAiErrorBody { error: api::openai::OpenAiError { message: self.message, kind: self.kind.to_owned(), param: self.param, code: self.code.map(str::to_owned) } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS && !response.headers().contains_key("retry-after") {
            response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        }
        response
    }
}
