//! Parsed names and ids: built once from untrusted text, then passed along as proof of validity.

use std::fmt;

use crate::{Error, Result};

/// The two kinds of repository the Hub API serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepoKind {
    Model,
    Dataset,
}

impl RepoKind {
    /// The stored and audited name: `model` or `dataset`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoKind::Model => "model",
            RepoKind::Dataset => "dataset",
        }
    }
    /// Parses `model`/`dataset`, also the plural forms used in API paths.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "model" | "models" => Ok(RepoKind::Model),
            "dataset" | "datasets" => Ok(RepoKind::Dataset),
            other => Err(Error::invalid(format!("unsupported repo type {other:?}: expected model or dataset"))),
        }
    }
    /// The prefix of this kind's file URLs: empty for models, `datasets/` for datasets.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoKind::Model => "",
            RepoKind::Dataset => "datasets/",
        }
    }
}

/// A user or org name. Same character rules as a repo name, 1 to 42 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountName(String);

impl AccountName {
    /// Validates an account name.
    pub fn parse(text: &str) -> Result<Self> {
        check_name_chars(text, 42).map_err(|why| Error::invalid(format!("invalid name {text:?}: {why}")))?;
        Ok(AccountName(text.to_owned()))
    }
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `namespace/name`, validated by the Hugging Face rules: ASCII letters, digits, `-`, `_`, `.`;
/// starting and ending with a letter, digit or `_`; no `--` or `..`; no `.git` suffix; 96 chars at most.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoName {
    pub namespace: AccountName,
    pub name: String,
}

impl RepoName {
    /// Parses `namespace/name`. A bare name is refused: every repo lives in a namespace.
    pub fn parse(text: &str) -> Result<Self> {
        let (namespace, name) = text.split_once('/').ok_or_else(|| Error::invalid(format!("invalid repo id {text:?}: expected namespace/name")))?;
        Self::from_parts(namespace, name)
    }
    /// Builds a repo name from its two parts, validating both.
    pub fn from_parts(namespace: &str, name: &str) -> Result<Self> {
        let namespace = AccountName::parse(namespace)?;
        check_name_chars(name, 96).map_err(|why| Error::invalid(format!("invalid repo name {name:?}: {why}")))?;
        if name.ends_with(".git") {
            return Err(Error::invalid(format!("invalid repo name {name:?}: must not end with .git")));
        }
        Ok(RepoName { namespace, name: name.to_owned() })
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

fn check_name_chars(text: &str, max_len: usize) -> std::result::Result<(), &'static str> {
    if text.is_empty() || text.len() > max_len {
        return Err("length must be between 1 and the limit");
    }
    if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    if !is_word(bytes[0]) || !is_word(bytes[bytes.len() - 1]) {
        return Err("must start and end with a letter, digit or '_'");
    }
    if text.contains("--") || text.contains("..") {
        return Err("'--' and '..' are not allowed");
    }
    Ok(())
}

/// A sha256 digest as 64 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses 64 hex characters (either case), stored lowercase.
    pub fn parse(text: &str) -> Result<Self> {
        if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Digest(text.to_ascii_lowercase()))
        } else {
            Err(Error::invalid(format!("invalid sha256 {text:?}: expected 64 hex characters")))
        }
    }
    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Digest(hex::encode(bytes))
    }
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A commit id: 40 lowercase hex characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommitId(String);

impl CommitId {
    /// Parses 40 lowercase hex characters; anything else is not a commit id.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 40 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then(|| CommitId(text.to_owned()))
    }
    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The longest path a file in a repo may have, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// A file path inside a repo: relative, `/`-separated, no empty, `.` or `..` segments, no backslash,
/// no control characters, nothing under `.git/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoPath(String);

impl RepoPath {
    /// Validates a path sent by a client.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| Err(Error::invalid(format!("invalid path {text:?}: {why}")));
        if text.is_empty() {
            return bad("empty");
        }
        if text.len() > MAX_PATH_LEN {
            return bad("longer than 1024 bytes");
        }
        if text.starts_with('/') {
            return bad("absolute paths are not allowed");
        }
        if text.contains('\\') {
            return bad("backslashes are not allowed");
        }
        if text.chars().any(|c| c.is_control()) {
            return bad("control characters are not allowed");
        }
        for segment in text.split('/') {
            match segment {
                "" => return bad("empty segment"),
                "." | ".." => return bad("'.' and '..' segments are not allowed"),
                ".git" => return bad("'.git' is reserved"),
                _ => {}
            }
        }
        if text.len() >= 2 && text.as_bytes()[1] == b':' && text.as_bytes()[0].is_ascii_alphabetic() {
            return bad("drive-letter paths are not allowed");
        }
        Ok(RepoPath(text.to_owned()))
    }
    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Whether this path lies inside `folder` (a path without trailing slash).
    pub fn is_under(&self, folder: &str) -> bool {
        self.0.len() > folder.len() && self.0.starts_with(folder) && self.0.as_bytes()[folder.len()] == b'/'
    }
}

impl fmt::Display for RepoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_repo(text: &str, ok: bool) {
        assert_eq!(RepoName::parse(text).is_ok(), ok, "{text}");
    }

    fn check_path(text: &str, ok: bool) {
        assert_eq!(RepoPath::parse(text).is_ok(), ok, "{text:?}");
    }

    #[test]
    fn repo_names_follow_hf_rules() {
        check_repo("alice/bert-base", true);
        check_repo("org_1/model.v2", true);
        check_repo("alice/a", true);
        check_repo("bert", false);
        check_repo("alice/-bad", false);
        check_repo("alice/bad-", false);
        check_repo("alice/a--b", false);
        check_repo("alice/a..b", false);
        check_repo("alice/model.git", false);
        check_repo("alice/spaces here", false);
        check_repo("alice/ünï", false);
        check_repo("a/b/c", false);
        check_repo(&format!("alice/{}", "x".repeat(97)), false);
        check_repo(&format!("alice/{}", "x".repeat(96)), true);
    }

    #[test]
    fn paths_reject_escapes() {
        check_path("config.json", true);
        check_path("sub/dir/model.safetensors", true);
        check_path(".gitattributes", true);
        check_path("../etc/passwd", false);
        check_path("a/../../b", false);
        check_path("/etc/passwd", false);
        check_path("a\\b", false);
        check_path("a\0b", false);
        check_path("a\nb", false);
        check_path("a//b", false);
        check_path("a/./b", false);
        check_path("dir/", false);
        check_path(".git/config", false);
        check_path("C:evil", false);
        check_path("", false);
    }

    #[test]
    fn digests_and_commits() {
        assert!(Digest::parse(&"A".repeat(64)).is_ok());
        assert!(Digest::parse(&"g".repeat(64)).is_err());
        assert!(CommitId::parse(&"a".repeat(40)).is_some());
        assert!(CommitId::parse(&"A".repeat(40)).is_none());
        assert!(CommitId::parse("main").is_none());
    }
}
