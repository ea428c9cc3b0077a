//! The BlobStore contract.

use bytes::Bytes;
use domain::blobs::{BlobStore, Expect};
use domain::ids::Digest;
use futures::stream::{self, StreamExt as _, TryStreamExt as _};
use sha2::Digest as _;

fn sha(bytes: &[u8]) -> Digest {
    Digest::from_bytes(&sha2::Sha256::digest(bytes).into())
}

fn chunks(data: &[u8], size: usize) -> futures::stream::BoxStream<'static, Result<Bytes, String>> {
    let parts: Vec<Result<Bytes, String>> = data.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    stream::iter(parts).boxed()
}

async fn read(store: &BlobStore, digest: &Digest, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let parts: Vec<Bytes> = store.get(digest, range).await.unwrap().try_collect().await.unwrap();
    parts.concat()
}

async fn check_blob_store(store: BlobStore) {
    // Small bytes: content-addressed, with git's blob id.
    let (stored, git_oid) = store.put_bytes(Bytes::from_static(b"hello\n")).await.unwrap();
    assert_eq!(git_oid, "ce013625030ba8dba906f756967f9e9ca394464a");
    assert_eq!(store.size_of(&stored.sha256).await.unwrap(), Some(6));
    assert_eq!(read(&store, &stored.sha256, None).await, b"hello\n");

    // Streams: hashed on the way, visible under the digest only when it matches.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha(&data);
    let got = store.put_stream(chunks(&data, 65_536), Expect { sha256: Some(digest.clone()), size: Some(data.len() as u64), max_size: None }).await.unwrap();
    assert_eq!(got.sha256, digest);
    assert_eq!(read(&store, &digest, Some(1000..1010)).await, &data[1000..1010]);
    assert_eq!(read(&store, &digest, None).await.len(), data.len());

    // A wrong digest, a wrong size, an oversized or broken stream: rejected, nothing visible, no temp left.
    let other = vec![7u8; 100_000];
    let wrong = Digest::parse(&"0".repeat(64)).unwrap();
    assert!(store.put_stream(chunks(&other, 4096), Expect { sha256: Some(wrong.clone()), size: None, max_size: None }).await.is_err());
    assert!(store.put_stream(chunks(&other, 4096), Expect { sha256: Some(sha(&other)), size: Some(99), max_size: None }).await.is_err());
    assert!(store.put_stream(chunks(&other, 4096), Expect { sha256: None, size: None, max_size: Some(1000) }).await.is_err());
    let broken = stream::iter(vec![Ok(Bytes::from_static(b"partial")), Err("connection reset".to_owned())]).boxed();
    assert!(store.put_stream(broken, Expect::default()).await.is_err());
    assert_eq!(store.size_of(&sha(&other)).await.unwrap(), None);
    assert_eq!(store.size_of(&wrong).await.unwrap(), None);
    assert!(store.list_temporary().await.unwrap().is_empty(), "temporary objects left behind");

    // Multipart: parts joined, checked, then removed.
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i % 241) as u8).collect();
    let big_digest = sha(&big);
    let part_size = 5 * 1024 * 1024;
    for (i, part) in big.chunks(part_size).enumerate() {
        store.put_part(&big_digest, i as u32 + 1, chunks(part, 1 << 20), part_size as u64).await.unwrap();
    }
    assert!(store.complete_parts(&big_digest, big.len() as u64 + 1, 3).await.is_err(), "size mismatch must fail");
    let joined = store.complete_parts(&big_digest, big.len() as u64, 3).await.unwrap();
    assert_eq!(joined.size, big.len() as u64);
    assert_eq!(read(&store, &big_digest, None).await, big);
    assert!(store.list_temporary().await.unwrap().is_empty());

    // Listing and deletion.
    let listed = store.list_blobs().await.unwrap();
    for digest in [&stored.sha256, &digest, &big_digest] {
        assert!(listed.iter().any(|o| o.sha256.as_ref() == Some(digest)));
    }
    let key = listed.iter().find(|o| o.sha256.as_ref() == Some(&stored.sha256)).unwrap().key.clone();
    store.delete_key(&key).await.unwrap();
    store.delete_key(&key).await.unwrap();
    assert_eq!(store.size_of(&stored.sha256).await.unwrap(), None);
    assert!(store.get(&stored.sha256, None).await.is_err());
}

#[tokio::test]
async fn local_blob_store() {
    let dir = tempfile::tempdir().unwrap();
    check_blob_store(store::open_blob_store(dir.path().to_str().unwrap()).unwrap()).await;
}

#[tokio::test]
async fn s3_blob_store() {
    let Some(bucket) = crate::needed("TEST_S3_BUCKET") else { return };
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    check_blob_store(store::open_blob_store(&format!("s3://{bucket}/{prefix}")).unwrap()).await;
}
