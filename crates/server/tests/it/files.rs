//! The Files API: multipart uploads streamed into the blob store, owned by the uploader (404 to
//! anyone else), bounded by the per-file limit and the account's quota, audited, and kept by GC
//! while a file names their bytes.

use axum::http::StatusCode;
use serde_json::json;

use crate::harness::{Reply, TestServer, ADMIN};

pub(crate) const BOUNDARY: &str = "mantle-test-boundary";

/// A multipart body: text fields, then (if given) a file part.
pub(crate) fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
    }
    if let Some((filename, content)) = file {
        body.extend(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend(content);
        body.extend(b"\r\n");
    }
    body.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

pub(crate) async fn upload(server: &TestServer, token: &str, fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> Reply {
    server.send("POST", "/v1/files", Some(token), Some(&format!("multipart/form-data; boundary={BOUNDARY}")), multipart(fields, file)).await
}

#[tokio::test]
async fn upload_list_read_and_delete_own_files_only() {
    let server = TestServer::new().await;
    let ann = server.user("ann", None, "write").await;
    let bob = server.user("bob", None, "write").await;
    let content = b"Mantle keeps files content-addressed.\n".repeat(100);
    let reply = upload(&server, &ann, &[("purpose", "assistants")], Some(("notes.txt", &content))).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let file = reply.json();
    let id = file["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("file-"));
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"], content.len());
    assert_eq!(file["filename"], "notes.txt");
    assert_eq!(file["purpose"], "assistants");
    assert_eq!(file["status"], "processed");

    assert_eq!(server.get(&format!("/v1/files/{id}"), Some(&ann)).await.json(), file);
    let listed = server.get("/v1/files", Some(&ann)).await.json();
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert_eq!(server.get("/v1/files?purpose=batch", Some(&ann)).await.json()["data"], json!([]));
    let body = server.get(&format!("/v1/files/{id}/content"), Some(&ann)).await;
    assert_eq!(body.status, StatusCode::OK);
    assert_eq!(body.body, content);
    assert!(body.header("content-disposition").unwrap().starts_with("attachment"));
    assert_eq!(body.header("x-content-type-options").unwrap(), "nosniff");

    // Another tenant sees nothing of it, and cannot delete it.
    for path in [format!("/v1/files/{id}"), format!("/v1/files/{id}/content")] {
        assert_eq!(server.get(&path, Some(&bob)).await.status, StatusCode::NOT_FOUND);
    }
    assert_eq!(server.get("/v1/files", Some(&bob)).await.json()["data"], json!([]));
    assert_eq!(server.send("DELETE", &format!("/v1/files/{id}"), Some(&bob), None, Vec::new()).await.status, StatusCode::NOT_FOUND);
    // A read token reads but does not write.
    let reader = server.token("ann", "read").await;
    assert_eq!(server.get(&format!("/v1/files/{id}"), Some(&reader)).await.status, StatusCode::OK);
    assert_eq!(upload(&server, &reader, &[("purpose", "assistants")], Some(("x.txt", b"x"))).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.send("DELETE", &format!("/v1/files/{id}"), Some(&reader), None, Vec::new()).await.status, StatusCode::FORBIDDEN);

    // GC keeps the bytes while the file names them.
    let gc = server.json("POST", "/api/admin/gc", Some(ADMIN), json!({ "min_age_secs": 0 })).await;
    assert_eq!(gc.status, StatusCode::OK, "{:?}", gc.json());
    assert_eq!(server.get(&format!("/v1/files/{id}/content"), Some(&ann)).await.body, content);

    let reply = server.send("DELETE", &format!("/v1/files/{id}"), Some(&ann), None, Vec::new()).await;
    assert_eq!(reply.json(), json!({ "id": id, "object": "file", "deleted": true }));
    assert_eq!(server.get(&format!("/v1/files/{id}"), Some(&ann)).await.status, StatusCode::NOT_FOUND);
    let actions = server.audit_actions().await;
    assert!(actions.iter().any(|a| a == "file.create") && actions.iter().any(|a| a == "file.delete"), "{actions:?}");
}

#[tokio::test]
async fn limits_and_bad_uploads_change_nothing() {
    let server = TestServer::with(|raw| {
        raw.hub.max_file_bytes = 1000;
        raw.hub.file_quota_bytes = 1500;
    })
    .await;
    let ann = server.user("ann", None, "write").await;
    let too_big = vec![b'a'; 1001];
    let reply = upload(&server, &ann, &[("purpose", "assistants")], Some(("big.txt", &too_big))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    assert_eq!(reply.json()["error"]["param"], "file");
    assert_eq!(upload(&server, &ann, &[("purpose", "assistants")], Some(("a.txt", &[b'a'; 900]))).await.status, StatusCode::OK);
    // The quota counts the account's files together.
    let reply = upload(&server, &ann, &[("purpose", "assistants")], Some(("b.txt", &[b'b'; 900]))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("quota"));

    for (fields, file, param) in [
        (vec![], Some(("c.txt", &b"c"[..])), "purpose"),
        (vec![("purpose", "nonsense")], Some(("c.txt", &b"c"[..])), "file"),
        (vec![("purpose", "assistants")], None, "file"),
        (vec![("purpose", "assistants")], Some(("../../etc/passwd", &b"c"[..])), "file"),
        (vec![("purpose", "assistants"), ("color", "red")], Some(("c.txt", &b"c"[..])), "color"),
        (vec![("purpose", "assistants"), ("expires_after[anchor]", "created_at"), ("expires_after[seconds]", "10")], Some(("c.txt", &b"c"[..])), "expires_after[seconds]"),
    ] {
        let reply = upload(&server, &ann, &fields, file).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{fields:?}: {:?}", reply.json());
        assert_eq!(reply.json()["error"]["param"], param, "{fields:?}");
    }
    let reply = server.send("POST", "/v1/files", Some(&ann), Some("application/json"), b"{}".to_vec()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.get("/v1/files", Some(&ann)).await.json()["data"].as_array().unwrap().len(), 1);
}
