//! The VectorStoreStore contract for ingestion and re-indexing, on SQLite and (when
//! `TEST_DATABASE_URL` is set) on PostgreSQL: a re-index writes beside the live chunks, one
//! holder at a time, and its swap waits for every completed file.

use std::sync::Arc;

use domain::audit::AuditEvent;
use domain::vectors::{Chunk, StoreFile, VectorStore, VectorStoreStore, COMPLETED, IN_PROGRESS};
use serde_json::json;
use store::SqlMetaStore;

use crate::meta::{postgres_url, sqlite};

fn event(action: &str) -> AuditEvent {
    AuditEvent::new("tester", action, "target", json!({}))
}

fn chunk(file: &str, width: usize) -> Chunk {
    Chunk { file_id: file.into(), index: 0, text: format!("text of {file}"), vector: vec![0.5; width] }
}

fn widths(chunks: &[domain::vectors::IndexedChunk]) -> Vec<(String, usize)> {
    chunks.iter().map(|c| (c.chunk.file_id.clone(), c.chunk.vector.len())).collect()
}

async fn reindex(meta: Arc<SqlMetaStore>) {
    const T0: &str = "2026-01-01T00:00:00.000Z";
    const T1: &str = "2026-01-01T00:10:00.000Z";
    const LATER: &str = "2026-01-02T00:00:00.000Z";
    let store = VectorStore {
        id: "vs_1".into(),
        owner: "alice".into(),
        token_id: 1,
        name: "kb".into(),
        embedding_model: "enc".into(),
        embedding_revision: "acme/enc@a".into(),
        metadata: json!({}),
        created_at: T0.into(),
        expires_after_days: None,
        last_active_at: T0.into(),
        version: 0,
        reindex: None,
    };
    let file = |id: &str, created_at: &str| StoreFile {
        store_id: "vs_1".into(),
        file_id: id.into(),
        filename: format!("{id}.txt"),
        sha256: "a".repeat(64),
        status: IN_PROGRESS.into(),
        last_error: None,
        attributes: json!({}),
        chunking: json!({}),
        usage_bytes: 0,
        batch_id: None,
        created_at: created_at.into(),
    };
    meta.create_vector_store(&store, &[file("f1", T0), file("f2", T0)], event("vector_store.create")).await.unwrap();
    for _ in 0..2 {
        let claimed = meta.claim_ingestion(T0, T1).await.unwrap().unwrap();
        let id = claimed.file_id.clone();
        assert!(meta.finish_ingestion(&claimed, "acme/enc@a", Ok(vec![chunk(&id, 2)])).await.unwrap());
    }
    let (_, chunks) = meta.store_chunks("vs_1").await.unwrap();
    assert_eq!(widths(&chunks), [("f1".into(), 2), ("f2".into(), 2)]);

    // One holder at a time; another takes over once the lease ran out.
    assert!(meta.claim_reindex("vs_1", "acme/enc@b", "r1", T0, T1).await.unwrap());
    assert!(!meta.claim_reindex("vs_1", "acme/enc@b", "r2", T0, T1).await.unwrap());
    assert!(meta.claim_reindex("vs_1", "acme/enc@b", "r1", T0, T1).await.unwrap(), "the holder renews");
    let pending = meta.reindex_pending("vs_1").await.unwrap();
    assert_eq!(pending.iter().map(|f| f.file_id.as_str()).collect::<Vec<_>>(), ["f1", "f2"]);
    assert!(meta.finish_reindex_file(&pending[0], "acme/enc@b", &[chunk("f1", 3)]).await.unwrap());
    assert!(!meta.finish_reindex_file(&pending[1], "acme/enc@c", &[chunk("f2", 3)]).await.unwrap(), "not the re-index under way");
    let now = meta.get_vector_store("vs_1").await.unwrap().unwrap();
    let progress = now.reindex.clone().unwrap();
    assert_eq!((progress.revision.as_str(), progress.files_done, progress.started_at.as_str()), ("acme/enc@b", 1, T0));
    // The live chunks are untouched, and a swap waits for the last file.
    assert_eq!(widths(&meta.store_chunks("vs_1").await.unwrap().1), [("f1".into(), 2), ("f2".into(), 2)]);
    assert!(!meta.swap_reindex("vs_1", "acme/enc@b", event("vector_store.reindex")).await.unwrap());
    meta.fail_reindex("vs_1", "r1", "the model failed", T1).await.unwrap();
    assert_eq!(meta.get_vector_store("vs_1").await.unwrap().unwrap().reindex.unwrap().error.as_deref(), Some("the model failed"));
    assert!(!meta.claim_reindex("vs_1", "acme/enc@b", "r1", T0, T1).await.unwrap(), "released, and waiting for its retry time");
    assert!(meta.claim_reindex("vs_1", "acme/enc@b", "r2", LATER, LATER).await.unwrap(), "taken over after the retry time");
    assert_eq!(meta.reindex_pending("vs_1").await.unwrap().len(), 1, "work done before is kept");

    // A file ingested meanwhile (by the old revision) waits for the re-index too.
    meta.attach_files("vs_1", &[file("f3", T1)], None, event("vector_store.files.attach")).await.unwrap();
    let claimed = meta.claim_ingestion(LATER, LATER).await.unwrap().unwrap();
    assert!(meta.finish_ingestion(&claimed, "acme/enc@a", Ok(vec![chunk("f3", 2)])).await.unwrap());
    for file in meta.reindex_pending("vs_1").await.unwrap() {
        let id = file.file_id.clone();
        assert!(meta.finish_reindex_file(&file, "acme/enc@b", &[chunk(&id, 3)]).await.unwrap());
    }
    let before = meta.get_vector_store("vs_1").await.unwrap().unwrap().version;
    assert!(meta.swap_reindex("vs_1", "acme/enc@b", event("vector_store.reindex")).await.unwrap());
    let swapped = meta.get_vector_store("vs_1").await.unwrap().unwrap();
    assert_eq!((swapped.embedding_revision.as_str(), swapped.reindex.is_none()), ("acme/enc@b", true));
    assert!(swapped.version > before, "caches of the index see the change");
    assert_eq!(widths(&meta.store_chunks("vs_1").await.unwrap().1), [("f1".into(), 3), ("f2".into(), 3), ("f3".into(), 3)]);
    assert!(meta.store_files("vs_1").await.unwrap().iter().all(|f| f.status == COMPLETED && f.usage_bytes == ("text of f1".len() + 3 * 4) as u64));

    // Chunks embedded by a revision the store no longer has are not written: the file waits.
    meta.attach_files("vs_1", &[file("f4", LATER)], None, event("vector_store.files.attach")).await.unwrap();
    let claimed = meta.claim_ingestion(LATER, LATER).await.unwrap().unwrap();
    assert!(!meta.finish_ingestion(&claimed, "acme/enc@a", Ok(vec![chunk("f4", 2)])).await.unwrap());
    let waiting = meta.store_file("vs_1", "f4").await.unwrap().unwrap();
    assert_eq!(waiting.status, IN_PROGRESS);
    assert_eq!(meta.claim_ingestion(LATER, LATER).await.unwrap().map(|f| f.file_id), Some("f4".into()), "claimable again at once");

    // A re-index whose deployment came back is dropped with what it made.
    assert!(meta.claim_reindex("vs_1", "acme/enc@c", "r1", LATER, LATER).await.unwrap());
    let file = meta.reindex_pending("vs_1").await.unwrap().remove(0);
    assert!(meta.finish_reindex_file(&file, "acme/enc@c", &[chunk("f1", 4)]).await.unwrap());
    meta.drop_reindex("vs_1").await.unwrap();
    assert!(meta.get_vector_store("vs_1").await.unwrap().unwrap().reindex.is_none());
    assert_eq!(meta.reindex_pending("vs_1").await.unwrap().len(), 3, "nothing re-indexed is left");
    meta.delete_vector_store("vs_1", event("vector_store.delete")).await.unwrap();
}

#[tokio::test]
async fn sqlite_vector_reindex() {
    let (store, _dir) = sqlite().await;
    reindex(Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_vector_reindex() {
    let Some(url) = postgres_url().await else { return };
    reindex(Arc::new(SqlMetaStore::connect(&url).await.unwrap())).await;
}
