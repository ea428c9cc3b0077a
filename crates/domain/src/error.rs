//! The domain's error type, named for what the caller can do about it.

/// Result with the domain error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, by what the caller can do about it. The server maps each variant to one
/// HTTP status; the message is safe to show to the caller.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The caller sent something malformed or forbidden by the rules (400).
    #[error("{0}")]
    Invalid(String),
    /// No credentials, or credentials that are not valid (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the right to do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The repository does not exist or is not visible to the caller (404, `RepoNotFound`).
    #[error("{0}")]
    RepoNotFound(String),
    /// The revision does not exist in a visible repository (404, `RevisionNotFound`).
    #[error("{0}")]
    RevisionNotFound(String),
    /// The file or folder does not exist at a revision (404, `EntryNotFound`).
    #[error("{message}")]
    EntryNotFound { message: String, commit: Option<String> },
    /// Some other named thing (user, org, token) does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state: the name exists, the parent moved (409).
    #[error("{0}")]
    Conflict(String),
    /// A backend failed; the details go to the log, not to the caller (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A 400 with a message.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }
    /// A 403 with a message.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }
    /// A 409 with a message.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Error::Conflict(msg.into())
    }
    /// A 500 from any displayable backend error.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Error::Internal(format!("{err:#}"))
    }
    /// A 404 for a missing file at a commit.
    pub fn entry_not_found(path: &str, commit: Option<String>) -> Self {
        Error::EntryNotFound { message: format!("entry {path:?} not found"), commit }
    }
}
