//! Why an inference request failed, in no API's words: each protocol module phrases these in its
//! own error shape (status, body, headers).

use engine::InferError;

use super::prompt::PromptError;
use super::quotas::Refusal;

/// An inference failure.
#[derive(Debug)]
pub(crate) enum InferenceError {
    /// A request field is wrong (400); `param` names it when one field is to blame.
    Invalid { message: String, param: Option<String> },
    /// A field or value this server does not serve (400 naming it, never silently ignored).
    Unsupported { param: String, what: String },
    /// The input does not fit the model's context (400); `param` names the field holding it.
    ContextExceeded { param: String, message: String },
    /// The named model serves embeddings, not text (400).
    NotGenerative { model: String },
    /// The named model generates text, not embeddings (400).
    NotEmbedding { model: String },
    /// Chat messages for a model without a chat template (400).
    NoChatTemplate { model: String },
    /// A quota refused the request (429, with the limits for the response headers).
    Quota(domain::quota::Exceeded),
    /// Authentication, visibility, storage: the domain's own errors.
    Domain(domain::Error),
    /// The engine refused or could not be reached (429 when overloaded, 503 when unavailable).
    Engine(InferError),
}

impl InferenceError {
    /// A 400 about `param`.
    pub(crate) fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        InferenceError::Invalid { message: message.into(), param: param.map(str::to_owned) }
    }

    /// A 400 for something not served (yet).
    pub(crate) fn unsupported(param: &str, what: &str) -> Self {
        InferenceError::Unsupported { param: param.to_owned(), what: what.to_owned() }
    }

    /// The input in `param` does not fit the context.
    pub(crate) fn context_exceeded(param: &str, message: impl Into<String>) -> Self {
        InferenceError::ContextExceeded { param: param.to_owned(), message: message.into() }
    }

    /// A prompt that could not be built from the field `param`.
    pub(crate) fn prompt(err: PromptError, param: &str) -> Self {
        match &err {
            PromptError::Template(_) | PromptError::Unseparable => InferenceError::invalid(err.to_string(), Some(param)),
            PromptError::TooLong { .. } => InferenceError::context_exceeded(param, err.to_string()),
        }
    }
}

impl std::fmt::Display for InferenceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InferenceError::Invalid { message, .. } | InferenceError::ContextExceeded { message, .. } => f.write_str(message),
            InferenceError::Unsupported { what, .. } => write!(f, "{what} is not supported"),
            InferenceError::NotGenerative { model } => write!(f, "{model} serves embeddings, not text"),
            InferenceError::NotEmbedding { model } => write!(f, "{model} generates text, not embeddings"),
            InferenceError::NoChatTemplate { model } => write!(f, "{model} has no chat template"),
            InferenceError::Quota(exceeded) => write!(f, "a quota refused the request: {exceeded:?}"),
            InferenceError::Domain(err) => write!(f, "{err}"),
            InferenceError::Engine(err) => write!(f, "{err}"),
        }
    }
}

impl From<domain::Error> for InferenceError {
    fn from(err: domain::Error) -> Self {
        InferenceError::Domain(err)
    }
}

impl From<InferError> for InferenceError {
    fn from(err: InferError) -> Self {
        match err {
            // The engine refuses a prompt it cannot hold (chat's field is `messages`).
            InferError::Invalid(message) => InferenceError::context_exceeded("messages", message),
            other => InferenceError::Engine(other),
        }
    }
}

impl From<Refusal> for InferenceError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Exceeded(exceeded) => InferenceError::Quota(exceeded),
            Refusal::Error(err) => InferenceError::Domain(err),
        }
    }
}
