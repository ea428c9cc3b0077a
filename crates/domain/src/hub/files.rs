//! `Hub`: uploaded files. A file belongs to the account that uploaded it, or to the org the
//! upload acted for: only that account's tokens (an org's: its members') list, read or delete
//! it; anyone else gets `NotFound`. Uploading and deleting take a
//! write token and are audited. Uploads are bounded in size (`max_file_bytes`) and every
//! account's files together in bytes (`file_quota_bytes`).

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::blobs::Expect;
use crate::files::{StoredFile, PURPOSES};

use super::*;

impl Hub {
    /// Stores an upload's bytes and records it as the caller's file.
    pub async fn upload_file<E: std::fmt::Display>(&self, principal: &Principal, filename: &str, purpose: &str, expires_after_secs: Option<u64>, content: BoxStream<'_, std::result::Result<Bytes, E>>) -> Result<StoredFile> {
        let user = principal.user()?;
        if user.role < Role::Write {
            return Err(Error::forbidden("this needs a write token"));
        }
        check_filename(filename)?;
        if !PURPOSES.contains(&purpose) {
            return Err(Error::invalid(format!("purpose must be one of {}", PURPOSES.join(", "))));
        }
        let used = self.meta.upload_bytes(user.owner()).await?;
        let room = self.config.file_quota_bytes.saturating_sub(used);
        if room == 0 {
            return Err(Error::invalid(format!("the account's files already hold its quota of {} bytes; delete some first", self.config.file_quota_bytes)));
        }
        let limit = self.config.max_file_bytes.min(room);
        let stored = self.blobs.put_stream(content, Expect { max_size: Some(limit), ..Expect::default() }).await.map_err(|err| match err {
            Error::Invalid(why) if why.contains("larger than") && limit < self.config.max_file_bytes => Error::invalid(format!("the account's files would hold more than its quota of {} bytes; delete some first", self.config.file_quota_bytes)),
            Error::Invalid(why) if why.contains("larger than") => Error::invalid(format!("the file is larger than the limit of {} bytes", self.config.max_file_bytes)),
            other => other,
        })?;
        self.settle_written(&stored.sha256).await?;
        let now = chrono::Utc::now();
        let expires_at = expires_after_secs.map(|secs| format_time(now + chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64)));
        let file = StoredFile {
            id: format!("file-{}", random_id()),
            owner: user.owner().to_owned(),
            filename: filename.to_owned(),
            purpose: purpose.to_owned(),
            bytes: stored.size,
            sha256: stored.sha256.to_string(),
            created_at: format_time(now),
            expires_at,
        };
        let event = AuditEvent::new(&user.name, "file.create", format!("file:{}", file.id), json!({ "filename": file.filename, "purpose": file.purpose, "bytes": file.bytes, "sha256": file.sha256 }));
        self.meta.create_upload(&file, self.config.file_quota_bytes, event).await?;
        Ok(file)
    }

    /// One of the caller's files (an expired one is gone).
    pub async fn uploaded_file(&self, principal: &Principal, id: &str) -> Result<StoredFile> {
        let user = principal.user()?;
        match self.meta.get_upload(id).await? {
            Some(file) if user.shares(&file.owner) && !expired(&file) => Ok(file),
            _ => Err(Error::NotFound(format!("no file {id}"))),
        }
    }

    /// The caller's files (its org's when it acts for one), of one purpose if given, newest first.
    pub async fn uploaded_files(&self, principal: &Principal, purpose: Option<&str>) -> Result<Vec<StoredFile>> {
        let user = principal.user()?;
        Ok(self.meta.list_uploads(user.owner(), purpose).await?.into_iter().filter(|f| !expired(f)).collect())
    }

    /// A file's bytes.
    pub async fn uploaded_file_content(&self, principal: &Principal, id: &str) -> Result<(StoredFile, BoxStream<'static, Result<Bytes>>)> {
        let file = self.uploaded_file(principal, id).await?;
        let digest = Digest::parse(&file.sha256)?;
        let stream = self.blobs.get(&digest, None).await?;
        Ok((file, stream))
    }

    /// Deletes one of the caller's files.
    pub async fn delete_file(&self, principal: &Principal, id: &str) -> Result<()> {
        let user = principal.user()?;
        if user.role < Role::Write {
            return Err(Error::forbidden("this needs a write token"));
        }
        self.uploaded_file(principal, id).await?;
        self.meta.delete_upload(id, AuditEvent::new(&user.name, "file.delete", format!("file:{id}"), json!({}))).await
    }
}

fn expired(file: &StoredFile) -> bool {
    file.expires_at.as_deref().is_some_and(|at| at <= format_time(chrono::Utc::now()).as_str())
}

/// File names: 1 to 255 characters, no control characters and no path separators.
fn check_filename(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(|c| c.is_control() || c == '/' || c == '\\') {
        return Err(Error::invalid("the file name must be 1 to 255 characters, without control characters or slashes"));
    }
    Ok(())
}

/// A random identifier: 24 letters and digits.
pub(super) fn random_id() -> String {
    use rand::distributions::{Alphanumeric, DistString as _};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 24)
}
