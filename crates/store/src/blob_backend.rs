//! Builds the object_store backend for blobs from a URL: a local folder or `s3://bucket/prefix`.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use domain::blobs::BlobStore;
use object_store::aws::AmazonS3Builder;
use object_store::chunked::ChunkedStore;
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;

/// Reads from local files arrive in chunks of this size (object_store's default is 8 KiB, which
/// costs a blocking-pool hop per 8 KiB and caps download speed).
const LOCAL_READ_CHUNK: usize = 1024 * 1024;

/// Opens the blob store at `url`: `s3://BUCKET[/PREFIX]` (endpoint, region and credentials from
/// the standard `AWS_*` variables) or a local folder path (`file://` optional), created if missing.
pub fn open_blob_store(url: &str) -> anyhow::Result<BlobStore> {
    let store: Arc<dyn ObjectStore> = if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("blob url {url:?} names no bucket");
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Loopback and in-cluster S3-compatible servers usually speak plain HTTP and path-style URLs.
        if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")) {
            builder = builder.with_endpoint(&endpoint).with_virtual_hosted_style_request(false);
            if endpoint.starts_with("http://") {
                builder = builder.with_allow_http(true);
            }
        }
        if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err() {
            builder = builder.with_region("us-east-1");
        }
        let s3 = builder.build().context("configure the S3 blob store")?;
        let prefix = prefix.trim_matches('/');
        if prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, prefix))
        }
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        std::fs::create_dir_all(path).with_context(|| format!("create blob folder {path}"))?;
        let local = LocalFileSystem::new_with_prefix(path).with_context(|| format!("open blob folder {path}"))?;
        Arc::new(ChunkedStore::new(Arc::new(local), LOCAL_READ_CHUNK))
    };
    Ok(BlobStore::new(store))
}
