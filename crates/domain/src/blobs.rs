//! `BlobStore`: content-addressed bytes over any `object_store` backend. It owns the key layout
//! (`sha256/ab/<digest>`), hashes while streaming, and makes a blob visible under its digest only
//! after the digest and size check out. This is the only module that calls `object_store`.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};
use sha2::{Digest as _, Sha256};

use crate::ids::Digest;
use crate::repo::git_blob_oid;
use crate::{Error, Result};

/// Bytes buffered before each backend part is written; S3 needs at least 5 MiB per part.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one blob in flight to the backend at once.
const MAX_PARTS_IN_FLIGHT: usize = 4;

/// Content-addressed blob storage.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
}

/// What a write produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub sha256: Digest,
    pub size: u64,
}

/// What an upload is expected to contain; a mismatch rejects it and nothing is kept.
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub sha256: Option<Digest>,
    pub size: Option<u64>,
    /// Hard cap on bytes read from the stream.
    pub max_size: Option<u64>,
}

/// What a hashed write stored.
fn hashed((size, sha256): (u64, Option<Digest>)) -> Result<StoredBlob> {
    let sha256 = sha256.ok_or_else(|| Error::internal("a blob was written without its sha256"))?;
    Ok(StoredBlob { sha256, size })
}

/// One object listed by `list_blobs` or `list_temporary`.
#[derive(Clone, Debug)]
pub struct ListedObject {
    pub key: String,
    /// The digest, for blobs (not for temporary objects).
    pub sha256: Option<Digest>,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    pub size: u64,
}

impl BlobStore {
    /// Wraps a backend. `store` builds the backend from config.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        BlobStore { store }
    }

    fn blob_key(digest: &Digest) -> Path {
        Path::from(format!("sha256/{}/{}", &digest.as_str()[..2], digest.as_str()))
    }

    fn part_key(digest: &Digest, part: u32) -> Path {
        Path::from(format!("parts/{}/{part:05}", digest.as_str()))
    }

    /// The size of a stored blob, or `None` if it is absent.
    pub async fn size_of(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.store.head(&Self::blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(Error::internal(err)),
        }
    }

    /// When a stored blob was last written, or `None` if it is absent.
    pub async fn modified(&self, digest: &Digest) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        match self.store.head(&Self::blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.last_modified)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(Error::internal(err)),
        }
    }

    /// Stores small bytes held in memory; returns the digest and git blob oid.
    pub async fn put_bytes(&self, bytes: Bytes) -> Result<(StoredBlob, String)> {
        let sha256 = Digest::from_bytes(&Sha256::digest(&bytes).into());
        let git_oid = git_blob_oid(&bytes);
        let size = bytes.len() as u64;
        if self.size_of(&sha256).await? != Some(size) {
            // A single put is atomic on every backend: the key shows all the bytes or none.
            self.store.put(&Self::blob_key(&sha256), PutPayload::from_bytes(bytes)).await.map_err(Error::internal)?;
        }
        Ok((StoredBlob { sha256, size }, git_oid))
    }

    /// Streams bytes to a temporary object while hashing, checks them against `expect`, and only
    /// then moves them under their digest. On any failure the temporary object is removed.
    pub async fn put_stream<E>(&self, stream: BoxStream<'_, std::result::Result<Bytes, E>>, expect: Expect) -> Result<StoredBlob>
    where
        E: std::fmt::Display,
    {
        let temp = Path::from(format!("tmp/{}", uuid::Uuid::new_v4()));
        match self.write_object(&temp, stream, &expect, true, &mut |_| Ok(())).await.and_then(hashed) {
            Ok(stored) => {
                let key = Self::blob_key(&stored.sha256);
                let already = self.size_of(&stored.sha256).await? == Some(stored.size);
                let res = if already { self.store.delete(&temp).await } else { self.store.rename(&temp, &key).await };
                if let Err(err) = res {
                    let _ = self.store.delete(&temp).await;
                    return Err(Error::internal(err));
                }
                Ok(stored)
            }
            Err(err) => {
                let _ = self.store.delete(&temp).await;
                Err(err)
            }
        }
    }

    /// Writes the stream to `temp`, hashing it and showing each piece to `inspect`, which may
    /// refuse it (and is called with `None` at the end, where it may still refuse).
    /// Without `hash`, no sha256 is computed (the caller checks the bytes its own way, as a xorb's
    /// chunk hashes).
    async fn write_object<E>(&self, temp: &Path, mut stream: BoxStream<'_, std::result::Result<Bytes, E>>, expect: &Expect, hash: bool, inspect: &mut (dyn FnMut(Option<&Bytes>) -> Result<()> + Send)) -> Result<(u64, Option<Digest>)>
    where
        E: std::fmt::Display,
    {
        let upload = self.store.put_multipart(temp).await.map_err(Error::internal)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut hasher = hash.then(Sha256::new);
        let mut size: u64 = 0;
        let limit = match (expect.size, expect.max_size) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let failed = loop {
            let chunk = match stream.next().await {
                None => match inspect(None) {
                    Ok(()) => break None,
                    Err(err) => break Some(err),
                },
                Some(Ok(chunk)) => chunk,
                Some(Err(err)) => break Some(Error::invalid(format!("upload interrupted: {err}"))),
            };
            size += chunk.len() as u64;
            if let Some(limit) = limit {
                if size > limit {
                    break Some(Error::invalid(format!("upload is larger than the declared or allowed size of {limit} bytes")));
                }
            }
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(&chunk);
            }
            if let Err(err) = inspect(Some(&chunk)) {
                break Some(err);
            }
            if let Err(err) = writer.wait_for_capacity(MAX_PARTS_IN_FLIGHT).await {
                break Some(Error::internal(err));
            }
            writer.put(chunk);
        };
        if let Some(err) = failed {
            let _ = writer.abort().await;
            return Err(err);
        }
        let sha256 = hasher.map(|h| Digest::from_bytes(&h.finalize().into()));
        let mismatch = match (&expect.sha256, &sha256, expect.size) {
            (Some(want), Some(got), _) if want != got => Some(format!("content sha256 is {got}, but {want} was declared")),
            (_, _, Some(want)) if want != size => Some(format!("content is {size} bytes, but {want} were declared")),
            _ => None,
        };
        if let Some(why) = mismatch {
            let _ = writer.abort().await;
            return Err(Error::invalid(why));
        }
        writer.finish().await.map_err(Error::internal)?;
        Ok((size, sha256))
    }

    /// Reads a blob, or a byte range of it.
    pub async fn get(&self, digest: &Digest, range: Option<Range<u64>>) -> Result<BoxStream<'static, Result<Bytes>>> {
        let options = GetOptions { range: range.map(GetRange::Bounded), ..Default::default() };
        let res = self.store.get_opts(&Self::blob_key(digest), options).await.map_err(|err| match err {
            object_store::Error::NotFound { .. } => Error::NotFound(format!("blob {digest} is missing from the blob store")),
            other => Error::internal(other),
        })?;
        Ok(res.into_stream().map_err(Error::internal).boxed())
    }

    /// Reads a whole blob into memory; for small blobs only.
    pub async fn read_all(&self, digest: &Digest) -> Result<Bytes> {
        let chunks: Vec<Bytes> = self.get(digest, None).await?.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// Stores one part of a multipart LFS upload; returns the part's sha256 as its ETag.
    pub async fn put_part<E>(&self, digest: &Digest, part: u32, stream: BoxStream<'_, std::result::Result<Bytes, E>>, max_size: u64) -> Result<String>
    where
        E: std::fmt::Display,
    {
        // A part goes straight to its own key: the backend makes it visible only once complete.
        let stored = hashed(self.write_object(&Self::part_key(digest, part), stream, &Expect { max_size: Some(max_size), ..Expect::default() }, true, &mut |_| Ok(())).await?)?;
        Ok(stored.sha256.to_string())
    }

    /// Joins parts `1..=n_parts` into the blob `digest`, checking digest and size, then removes the parts.
    pub async fn complete_parts(&self, digest: &Digest, size: u64, n_parts: u32) -> Result<StoredBlob> {
        let mut keys = Vec::new();
        for part in 1..=n_parts {
            let key = Self::part_key(digest, part);
            match self.store.head(&key).await {
                Ok(_) => keys.push(key),
                Err(object_store::Error::NotFound { .. }) => return Err(Error::invalid(format!("part {part} of {digest} was never uploaded"))),
                Err(err) => return Err(Error::internal(err)),
            }
        }
        let store = self.store.clone();
        let joined = futures::stream::iter(keys.clone())
            .then(move |key| {
                let store = store.clone();
                async move { store.get(&key).await.map(|res| res.into_stream()) }
            })
            .try_flatten()
            .boxed();
        let stored = self.put_stream(joined, Expect { sha256: Some(digest.clone()), size: Some(size), ..Expect::default() }).await?;
        for key in keys {
            let _ = self.store.delete(&key).await;
        }
        Ok(stored)
    }

    fn xorb_key(hash: &str) -> Path {
        Path::from(format!("xet/xorbs/{hash}"))
    }

    /// Streams a xorb to a temporary object (at most `max_size` bytes), showing each piece to
    /// `inspect`, which validates it; moves it under `xet/xorbs/<hash>` only once `inspect`
    /// accepted the end. Returns the stored size.
    pub async fn put_xorb<E>(&self, hash: &str, stream: BoxStream<'_, std::result::Result<Bytes, E>>, max_size: u64, inspect: &mut (dyn FnMut(Option<&Bytes>) -> Result<()> + Send)) -> Result<u64>
    where
        E: std::fmt::Display,
    {
        let temp = Path::from(format!("tmp/{}", uuid::Uuid::new_v4()));
        let (size, _) = match self.write_object(&temp, stream, &Expect { max_size: Some(max_size), ..Expect::default() }, false, inspect).await {
            Ok(stored) => stored,
            Err(err) => {
                let _ = self.store.delete(&temp).await;
                return Err(err);
            }
        };
        if let Err(err) = self.store.rename(&temp, &Self::xorb_key(hash)).await {
            let _ = self.store.delete(&temp).await;
            return Err(Error::internal(err));
        }
        Ok(size)
    }

    /// Whether a xorb's object exists.
    pub async fn xorb_exists(&self, hash: &str) -> Result<bool> {
        match self.store.head(&Self::xorb_key(hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(Error::internal(err)),
        }
    }

    /// A byte range of a stored xorb.
    pub async fn get_xorb(&self, hash: &str, range: Range<u64>) -> Result<BoxStream<'static, Result<Bytes>>> {
        let options = GetOptions { range: Some(GetRange::Bounded(range)), ..Default::default() };
        let res = self.store.get_opts(&Self::xorb_key(hash), options).await.map_err(|err| match err {
            object_store::Error::NotFound { .. } => Error::NotFound(format!("xorb {hash} is missing from the blob store")),
            other => Error::internal(other),
        })?;
        Ok(res.into_stream().map_err(Error::internal).boxed())
    }

    /// Deletes a xorb's object (missing is not an error).
    pub async fn delete_xorb(&self, hash: &str) -> Result<()> {
        self.delete_key(Self::xorb_key(hash).as_ref()).await
    }

    /// Writes a named record (e.g. `audit/checkpoints/...`): one atomic put, outside the
    /// content-addressed `sha256/` space.
    pub async fn put_record(&self, key: &str, bytes: Bytes) -> Result<()> {
        if key.starts_with("sha256/") || key.starts_with("tmp/") || key.starts_with("parts/") || key.starts_with("xet/") {
            return Err(Error::internal(format!("{key} is not a record key")));
        }
        self.store.put(&Path::from(key), PutPayload::from_bytes(bytes)).await.map_err(Error::internal)?;
        Ok(())
    }

    /// The last `newest` named records under `prefix` in key order, with their contents (one
    /// listing, then one read per record returned).
    pub async fn records(&self, prefix: &str, newest: usize) -> Result<Vec<(String, Bytes)>> {
        let mut listed = self.list_prefix(prefix).await?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        listed.drain(..listed.len().saturating_sub(newest));
        let mut out = Vec::with_capacity(listed.len());
        for object in listed {
            let bytes = self.store.get(&Path::from(object.key.as_str())).await.map_err(Error::internal)?.bytes().await.map_err(Error::internal)?;
            out.push((object.key, bytes));
        }
        Ok(out)
    }

    /// Lists every stored blob.
    pub async fn list_blobs(&self) -> Result<Vec<ListedObject>> {
        self.list_prefix("sha256").await
    }

    /// Lists temporary objects and multipart parts (candidates for cleanup once old).
    pub async fn list_temporary(&self) -> Result<Vec<ListedObject>> {
        let mut objects = self.list_prefix("tmp").await?;
        objects.extend(self.list_prefix("parts").await?);
        Ok(objects)
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<ListedObject>> {
        let prefix = Path::from(prefix);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await.map_err(Error::internal)?;
        Ok(metas
            .into_iter()
            .map(|meta| {
                let key = meta.location.to_string();
                let sha256 = key.strip_prefix("sha256/").and_then(|rest| rest.rsplit('/').next()).and_then(|d| Digest::parse(d).ok());
                ListedObject { key, sha256, last_modified: meta.last_modified, size: meta.size }
            })
            .collect())
    }

    /// Deletes an object by key (as listed). Missing objects are not an error.
    pub async fn delete_key(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(Error::internal(err)),
        }
    }
}
