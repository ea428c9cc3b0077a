//! Bad input gets a clear 4xx and changes nothing.

use axum::http::StatusCode;
use sha2::Digest as _;

use crate::harness::{file, header, TestServer, ADMIN};

async fn setup() -> (TestServer, String) {
    let server = TestServer::new().await;
    let token = server.user("frank", None, "write").await;
    assert_eq!(server.create_repo(&token, "m", false).await.status, StatusCode::OK);
    (server, token)
}

#[tokio::test]
async fn hostile_paths_are_refused_and_nothing_is_written() {
    let (server, token) = setup().await;
    let before = server.head("frank/m", &token).await;
    for path in ["../escape", "/etc/passwd", "a/../../b", "a\\b", "a\u{0}b", "a\u{1}b", "a\nb", "./a", "a//b", ".git/config", "dir/", ""] {
        let reply = server.commit(&token, "frank/m", &[header("evil"), file("ok.txt", b"fine"), file(path, b"x")]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path:?}: {:?}", reply.json());
        assert!(reply.json()["error"].as_str().unwrap().contains("invalid path"), "{path:?}");
        let reply = server.commit(&token, "frank/m", &[header("evil"), serde_json::json!({ "key": "deletedFile", "value": { "path": path } })]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path:?}");
    }
    assert_eq!(server.head("frank/m", &token).await, before);
    let preupload = server.json("POST", "/api/models/frank/m/preupload/main", Some(&token), serde_json::json!({ "files": [{ "path": "../x", "size": 1, "sample": "" }] })).await;
    assert_eq!(preupload.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn invalid_repo_names_follow_hf_rules() {
    let (server, token) = setup().await;
    for name in ["-bad", "bad-", "a--b", "a..b", "x.git", "sp ace", "ünï", &"n".repeat(97), "a/b/c"] {
        let reply = server.create_repo(&token, name, false).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name}: {:?}", reply.json());
    }
}

#[tokio::test]
async fn lfs_uploads_must_match_their_oid_and_size() {
    let (server, token) = setup().await;
    let data = vec![42u8; 4096];
    let oid = hex::encode(sha2::Sha256::digest(&data));
    let batch = server.json("POST", "/frank/m.git/info/lfs/objects/batch", Some(&token), serde_json::json!({ "operation": "upload", "transfers": ["basic"], "objects": [{ "oid": oid, "size": 4096 }], "hash_algo": "sha256" })).await;
    assert_eq!(batch.status, StatusCode::OK, "{:?}", batch.json());
    let href = batch.json()["objects"][0]["actions"]["upload"]["href"].as_str().unwrap().replace("http://mantle.test", "");
    let digest = domain::ids::Digest::parse(&oid).unwrap();

    // Wrong bytes of the right size, then too few bytes: refused, nothing stored.
    let reply = server.send("PUT", &href, None, None, vec![1u8; 4096]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = server.send("PUT", &href, None, None, vec![42u8; 100]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.state.hub.blob_size(&digest).await.unwrap(), None);
    // A tampered signature is refused.
    let reply = server.send("PUT", &href.replace("sig=", "sig=00"), None, None, data.clone()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);

    // A commit naming an object never uploaded is refused.
    let lfs_line = serde_json::json!({ "key": "lfsFile", "value": { "path": "w.bin", "algo": "sha256", "oid": oid, "size": 4096 } });
    let reply = server.commit(&token, "frank/m", &[header("lfs"), lfs_line.clone()]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"].as_str().unwrap().contains("never uploaded"));

    // The right bytes work, and then the commit does.
    assert_eq!(server.send("PUT", &href, None, None, data).await.status, StatusCode::OK);
    assert_eq!(server.state.hub.blob_size(&digest).await.unwrap(), Some(4096));
    let reply = server.commit(&token, "frank/m", &[header("lfs"), lfs_line]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let tree = server.get("/api/models/frank/m/tree/main", None).await.json();
    let entry = tree.as_array().unwrap().iter().find(|e| e["path"] == "w.bin").unwrap().clone();
    assert_eq!(entry["lfs"]["oid"], oid);
    // Asking again: already stored, no actions.
    let again = server.json("POST", "/frank/m.git/info/lfs/objects/batch", Some(&token), serde_json::json!({ "operation": "upload", "objects": [{ "oid": oid, "size": 4096 }] })).await;
    assert!(again.json()["objects"][0].get("actions").is_none());
}

#[tokio::test]
async fn stale_parent_commit_conflicts() {
    let (server, token) = setup().await;
    let first = server.head("frank/m", &token).await;
    let with_parent = |parent: &str| serde_json::json!({ "key": "header", "value": { "summary": "s", "parentCommit": parent } });
    assert_eq!(server.commit(&token, "frank/m", &[with_parent(&first), file("a", b"1")]).await.status, StatusCode::OK);
    let second = server.head("frank/m", &token).await;
    let reply = server.commit(&token, "frank/m", &[with_parent(&first), file("b", b"2")]).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert_eq!(server.head("frank/m", &token).await, second);
    assert_eq!(server.commit(&token, "frank/m", &[with_parent("not-a-sha"), file("b", b"2")]).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_clear_400s() {
    let server = TestServer::with(|raw| {
        raw.server.max_json_body = 4096;
        raw.hub.lfs_threshold = 1024;
        raw.hub.max_inline_file = 2048;
    })
    .await;
    let token = server.user("gina", None, "write").await;
    server.create_repo(&token, "m", false).await;
    let before = server.head("gina/m", &token).await;

    let reply = server.send("POST", "/api/repos/create", Some(&token), Some("application/json"), b"{not json".to_vec()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"].as_str().unwrap().contains("malformed JSON"));
    let huge = serde_json::json!({ "name": "x".repeat(10_000) });
    let reply = server.json("POST", "/api/repos/create", Some(&token), huge).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(!reply.json()["error"].as_str().unwrap().is_empty());
    let reply = server.json("POST", "/api/repos/create", Some(&token), serde_json::json!({ "name": "x", "unexpected": 1 })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    for body in [
        b"not json at all\n".to_vec(),
        b"{\"key\":\"file\",\"value\":{\"path\":\"a\",\"content\":\"YQ==\"}}\n".to_vec(),
        b"{\"key\":\"header\",\"value\":{\"summary\":\"s\"}}\n{\"key\":\"teleport\",\"value\":{}}\n".to_vec(),
        b"{\"key\":\"header\",\"value\":{\"summary\":\"s\"}}\n{\"key\":\"file\",\"value\":{\"path\":\"a\",\"content\":\"!!!\"}}\n".to_vec(),
        b"".to_vec(),
    ] {
        let reply = server.send("POST", "/api/models/gina/m/commit/main", Some(&token), Some("application/x-ndjson"), body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(&body));
        assert!(!reply.json()["error"].as_str().unwrap().is_empty());
    }
    // One line longer than an inline file may be is refused before it is buffered.
    let reply = server.commit(&token, "gina/m", &[header("big"), file("big.bin", &vec![0u8; 200_000])]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"].as_str().unwrap().contains("longer than"));
    // A line within bounds whose file exceeds the inline limit is refused too.
    let reply = server.commit(&token, "gina/m", &[header("big"), file("mid.bin", &vec![0u8; 5000])]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"].as_str().unwrap().contains("inline limit"));
    assert_eq!(server.head("gina/m", &token).await, before);

    // Preupload says LFS above the threshold.
    let modes = server.json("POST", "/api/models/gina/m/preupload/main", Some(&token), serde_json::json!({ "files": [{ "path": "s", "size": 10, "sample": "" }, { "path": "l", "size": 5000, "sample": "" }] })).await;
    assert_eq!(modes.json()["files"][0]["uploadMode"], "regular");
    assert_eq!(modes.json()["files"][1]["uploadMode"], "lfs");
    let _ = ADMIN;
}

#[tokio::test]
async fn a_dropped_connection_mid_commit_changes_nothing() {
    let (server, token) = setup().await;
    let before = server.head("frank/m", &token).await;
    let mut first = serde_json::to_vec(&header("cut")).unwrap();
    first.push(b'\n');
    first.extend(serde_json::to_vec(&file("a.txt", b"complete line")).unwrap());
    first.extend(b"\n{\"key\":\"file\",\"value\":{\"path\":\"b.txt\",\"cont");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(first), Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away"))];
    let body = axum::body::Body::from_stream(futures::stream::iter(chunks));
    let request = axum::http::Request::builder().method("POST").uri("/api/models/frank/m/commit/main").header("authorization", format!("Bearer {token}")).header("content-type", "application/x-ndjson").body(body).unwrap();
    let response = tower::ServiceExt::oneshot(server.router.clone(), request).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.head("frank/m", &token).await, before);
    let files = server.get("/api/models/frank/m/tree/main", None).await.json();
    assert_eq!(files.as_array().unwrap().len(), 1, "{files}");
}
