//! Repos, commits, files and refs as the domain sees them.

use sha1::{Digest as _, Sha1};

use crate::ids::{CommitId, Digest, RepoKind, RepoName, RepoPath};

/// A repository.
#[derive(Clone, Debug)]
pub struct Repo {
    pub id: i64,
    pub kind: RepoKind,
    pub name: RepoName,
    pub private: bool,
    pub created_at: String,
}

impl Repo {
    /// How audit rows name this repo: `model:alice/bert`.
    pub fn audit_target(&self) -> String {
        format!("{}:{}", self.kind.as_str(), self.name)
    }
}

/// One file of a commit's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub path: RepoPath,
    pub size: u64,
    /// Content address of the bytes in the blob store.
    pub sha256: Digest,
    /// Git's object id: sha1 of `blob <len>\0<bytes>` for regular files; of the LFS pointer for LFS files.
    pub git_oid: String,
    /// Whether the file travelled through LFS (its ETag is then the sha256).
    pub lfs: bool,
}

impl FileEntry {
    /// The ETag clients expect: sha256 for LFS files, the git blob id for regular ones.
    pub fn etag(&self) -> &str {
        if self.lfs {
            self.sha256.as_str()
        } else {
            &self.git_oid
        }
    }
    /// The size of the LFS pointer file that stands for this file in git.
    pub fn pointer_size(&self) -> u64 {
        lfs_pointer(&self.sha256, self.size).len() as u64
    }
}

/// A commit: immutable once written.
#[derive(Clone, Debug)]
pub struct Commit {
    pub id: CommitId,
    pub repo_id: i64,
    pub parent: Option<CommitId>,
    pub title: String,
    pub message: String,
    pub author: String,
    pub created_at: String,
}

/// Whether a ref is a branch or a tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Tag,
}

impl RefKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RefKind::Branch => "branch",
            RefKind::Tag => "tag",
        }
    }
}

/// A named pointer to a commit.
#[derive(Clone, Debug)]
pub struct GitRef {
    pub kind: RefKind,
    pub name: String,
    pub commit: CommitId,
}

/// The default branch of every repo.
pub const DEFAULT_BRANCH: &str = "main";

/// Git's blob object id of `bytes`.
pub fn git_blob_oid(bytes: &[u8]) -> String {
    let mut hasher = git_blob_hasher(bytes.len() as u64);
    hasher.update(bytes);
    hex::encode(hasher.finalize())
}

/// A sha1 hasher primed with git's blob header, for hashing a stream of known length.
pub fn git_blob_hasher(len: u64) -> Sha1 {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {len}\0").as_bytes());
    hasher
}

/// The git-lfs pointer text that stands for a large file in git.
pub fn lfs_pointer(sha256: &Digest, size: u64) -> String {
    format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n")
}

/// Validates a branch or tag name with git's ref rules, in the subset that matters here.
pub fn check_ref_name(name: &str) -> crate::Result<()> {
    let bad = |why: &str| Err(crate::Error::invalid(format!("invalid ref name {name:?}: {why}")));
    if name.is_empty() || name.len() > 255 {
        return bad("length must be 1 to 255");
    }
    if name.bytes().any(|b| b.is_ascii_control() || b" ~^:?*[\\".contains(&b)) {
        return bad("control characters, spaces and ~^:?*[\\ are not allowed");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') || name.contains("//") || name.contains("..") || name.contains("@{") {
        return bad("malformed");
    }
    if name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock")) {
        return bad("segments must not start with '.' or end with '.lock'");
    }
    if CommitId::parse(name).is_some() {
        return bad("a 40-hex name would shadow commit ids");
    }
    Ok(())
}

/// The `.gitattributes` every new repo starts with, as on the Hugging Face Hub.
pub const INITIAL_GITATTRIBUTES: &str = "*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
";

/// Computes a new commit's id: sha1 over its parent, tree, message, author and time, so equal
/// inputs at different times still give distinct, stable ids.
pub fn commit_id(repo_id: i64, parent: Option<&CommitId>, files: &[FileEntry], title: &str, message: &str, author: &str, time: &str) -> CommitId {
    let mut hasher = Sha1::new();
    hasher.update(format!("repo {repo_id}\n").as_bytes());
    hasher.update(format!("parent {}\n", parent.map(CommitId::as_str).unwrap_or("-")).as_bytes());
    for file in files {
        hasher.update(format!("file {} {} {} {}\n", file.sha256, file.size, u8::from(file.lfs), file.path.as_str().len()).as_bytes());
        hasher.update(file.path.as_str().as_bytes());
    }
    for field in [title, message, author, time] {
        hasher.update(format!("\n{}\n", field.len()).as_bytes());
        hasher.update(field.as_bytes());
    }
    hasher.update(uuid::Uuid::new_v4().as_bytes());
    CommitId::parse(&hex::encode(hasher.finalize())).expect("sha1 hex is 40 lowercase hex characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_oid_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(git_blob_oid(b"hello\n"), "ce013625030ba8dba906f756967f9e9ca394464a");
        assert_eq!(git_blob_oid(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }

    #[test]
    fn ref_names() {
        assert!(check_ref_name("main").is_ok());
        assert!(check_ref_name("v1.0").is_ok());
        assert!(check_ref_name("feature/x").is_ok());
        assert!(check_ref_name("a..b").is_err());
        assert!(check_ref_name("a b").is_err());
        assert!(check_ref_name(&"a".repeat(40)).is_err());
        assert!(check_ref_name("x.lock").is_err());
    }
}
