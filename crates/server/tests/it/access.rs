//! Who may see and change what, and that every change is audited.

use axum::http::StatusCode;

use crate::harness::{file, header, TestServer, ADMIN};

#[tokio::test]
async fn private_repos_are_invisible_and_writes_need_rights() {
    let server = TestServer::new().await;
    let org_reply = server.json("POST", "/api/admin/orgs", Some(ADMIN), serde_json::json!({ "name": "acme" })).await;
    assert_eq!(org_reply.status, StatusCode::OK);
    let alice = server.user("alice", Some("acme"), "write").await;
    let bob = server.user("bob", None, "write").await;
    let alice_read = server.token("alice", "read").await;

    // Missing token: 401.
    let reply = server.json("POST", "/api/repos/create", None, serde_json::json!({ "name": "x" })).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // A read token cannot create.
    assert_eq!(server.create_repo(&alice_read, "x", false).await.status, StatusCode::FORBIDDEN);
    // Bob cannot create in alice's namespace or acme.
    assert_eq!(server.create_repo(&bob, "alice/x", false).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.create_repo(&bob, "acme/x", false).await.status, StatusCode::FORBIDDEN);

    let reply = server.create_repo(&alice, "acme/secret", true).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["url"], "http://mantle.test/acme/secret");
    assert_eq!(server.create_repo(&alice, "acme/secret", true).await.status, StatusCode::CONFLICT);
    assert_eq!(server.create_repo(&alice, "public", false).await.status, StatusCode::OK);

    // Private: 404 RepoNotFound for anonymous and for non-members, everywhere.
    for uri in ["/api/models/acme/secret", "/api/models/acme/secret/tree/main", "/api/models/acme/secret/refs", "/acme/secret/resolve/main/.gitattributes"] {
        for token in [None, Some(bob.as_str())] {
            let reply = server.get(uri, token).await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(reply.header("x-error-code").as_deref(), Some("RepoNotFound"), "{uri}");
        }
        assert_eq!(server.get(uri, Some(&alice_read)).await.status, StatusCode::OK, "{uri}");
    }
    // Non-members cannot learn it exists by writing either.
    assert_eq!(server.commit(&bob, "acme/secret", &[header("x"), file("a", b"1")]).await.status, StatusCode::NOT_FOUND);
    // Public repo: readable by all, writable only by its owner's write tokens.
    assert_eq!(server.get("/api/models/alice/public", None).await.status, StatusCode::OK);
    assert_eq!(server.commit(&bob, "alice/public", &[header("x"), file("a", b"1")]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.commit(&alice_read, "alice/public", &[header("x"), file("a", b"1")]).await.status, StatusCode::FORBIDDEN);
    let anon = server.send("POST", "/api/models/alice/public/commit/main", None, Some("application/x-ndjson"), b"{}".to_vec()).await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.commit(&alice, "alice/public", &[header("x"), file("a", b"1")]).await.status, StatusCode::OK);

    // Admin endpoints need a site admin.
    assert_eq!(server.json("POST", "/api/admin/users", Some(&alice), serde_json::json!({ "name": "eve" })).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.get("/api/admin/audit/verify", None).await.status, StatusCode::UNAUTHORIZED);

    // Invalid and revoked tokens are refused with 401.
    assert_eq!(server.get("/api/whoami-v2", Some("nonsense-token")).await.status, StatusCode::UNAUTHORIZED);
    let tokens = server.get("/api/admin/tokens", Some(ADMIN)).await.json();
    let bob_id = tokens.as_array().unwrap().iter().find(|t| t["user"] == "bob").unwrap()["id"].as_i64().unwrap();
    assert_eq!(server.send("DELETE", &format!("/api/admin/tokens/{bob_id}"), Some(ADMIN), None, vec![]).await.status, StatusCode::OK);
    assert_eq!(server.get("/api/whoami-v2", Some(&bob)).await.status, StatusCode::UNAUTHORIZED);
    let whoami = server.get("/api/whoami-v2", Some(&alice)).await.json();
    assert_eq!(whoami["name"], "alice");
    assert_eq!(whoami["orgs"][0]["name"], "acme");
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let server = TestServer::new().await;
    server.user("carol", None, "read").await;
    let name = domain::ids::AccountName::parse("carol").unwrap();
    let secret = "expired-token-0123456789";
    let event = domain::audit::AuditEvent::new("test", "token.create", "user:carol", serde_json::json!({}));
    // Written behind the server's back (the API never creates a token that is already expired).
    let meta = store::SqlMetaStore::connect(&server.state.config.database_url).await.unwrap();
    domain::meta::AccountStore::create_token(
        &meta,
        domain::meta::NewToken { user: &name, name: "old", role: domain::auth::Role::Read, hash: &domain::auth::hash_token(secret), expires_at: Some("2020-01-01T00:00:00.000Z".into()), parent: None },
        event,
    )
    .await
    .unwrap();
    assert_eq!(server.get("/api/whoami-v2", Some(secret)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn every_change_is_audited_and_the_chain_verifies() {
    let server = TestServer::new().await;
    server.json("POST", "/api/admin/orgs", Some(ADMIN), serde_json::json!({ "name": "acme" })).await;
    let dave = server.user("dave", None, "write").await;
    server.json("POST", "/api/admin/orgs/acme/members", Some(ADMIN), serde_json::json!({ "user": "dave" })).await;
    server.create_repo(&dave, "acme/m", false).await;
    server.commit(&dave, "acme/m", &[header("add"), file("a.txt", b"a")]).await;
    server.json("POST", "/api/models/acme/m/branch/dev", Some(&dave), serde_json::json!({})).await;
    server.json("POST", "/api/models/acme/m/tag/main", Some(&dave), serde_json::json!({ "tag": "v1" })).await;
    server.json("PUT", "/api/models/acme/m/settings", Some(&dave), serde_json::json!({ "private": true })).await;
    server.send("DELETE", "/api/models/acme/m/tag/v1", Some(&dave), None, vec![]).await;
    server.send("DELETE", "/api/models/acme/m/branch/dev", Some(&dave), None, vec![]).await;
    server.json("DELETE", "/api/repos/delete", Some(&dave), serde_json::json!({ "name": "m", "organization": "acme" })).await;
    let actions = server.audit_actions().await;
    for expected in ["user.create", "token.create", "org.create", "org.add_member", "repo.create", "repo.commit", "branch.create", "tag.create", "repo.visibility", "tag.delete", "branch.delete", "repo.delete"] {
        assert!(actions.iter().any(|a| a == expected), "{expected} missing from {actions:?}");
    }
    let verify = server.get("/api/admin/audit/verify", Some(ADMIN)).await.json();
    assert_eq!(verify["ok"], true, "{verify}");
    // A refused change leaves no audit row.
    let before = actions.len();
    server.create_repo(&dave, "nobody/x", false).await;
    assert_eq!(server.audit_actions().await.len(), before);
}

#[tokio::test]
async fn resolve_serves_ranges_and_hf_headers() {
    let server = TestServer::new().await;
    let erin = server.user("erin", None, "write").await;
    server.create_repo(&erin, "r", false).await;
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    let reply = server.commit(&erin, "erin/r", &[header("add"), file("data.bin", &body)]).await;
    let commit = reply.json()["commitOid"].as_str().unwrap().to_owned();

    let head = server.send("HEAD", "/erin/r/resolve/main/data.bin", None, None, vec![]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("x-repo-commit").as_deref(), Some(commit.as_str()));
    assert_eq!(head.header("etag").as_deref(), Some(format!("\"{}\"", domain::repo::git_blob_oid(&body)).as_str()));
    assert_eq!(head.header("content-length").as_deref(), Some("1000"));
    assert!(head.body.is_empty());

    let range = server.send("GET", "/erin/r/resolve/main/data.bin", None, None, vec![]).await;
    assert_eq!(range.body, body);
    let mut request = axum::http::Request::builder().uri(format!("/erin/r/resolve/{commit}/data.bin")).header("range", "bytes=10-19");
    request = request.header("host", "x");
    let response = tower::ServiceExt::oneshot(server.router.clone(), request.body(axum::body::Body::empty()).unwrap()).await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], "bytes 10-19/1000");
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    assert_eq!(&bytes[..], &body[10..20]);

    let missing = server.get("/erin/r/resolve/main/nope.txt", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.header("x-error-code").as_deref(), Some("EntryNotFound"));
    assert_eq!(missing.header("x-repo-commit").as_deref(), Some(commit.as_str()));
    let bad_rev = server.get("/erin/r/resolve/nobranch/data.bin", None).await;
    assert_eq!(bad_rev.header("x-error-code").as_deref(), Some("RevisionNotFound"));
    let no_repo = server.get("/erin/none/resolve/main/data.bin", None).await;
    assert_eq!(no_repo.header("x-error-code").as_deref(), Some("RepoNotFound"));
}

#[tokio::test]
async fn tree_pages_follow_link_headers() {
    let server = TestServer::new().await;
    let token = server.user("hank", None, "write").await;
    server.create_repo(&token, "many", false).await;
    let mut lines = vec![header("many files")];
    for i in 0..7 {
        lines.push(file(&format!("dir/f{i}.txt"), format!("{i}").as_bytes()));
    }
    assert_eq!(server.commit(&token, "hank/many", &lines).await.status, StatusCode::OK);
    let mut next = Some("/api/models/hank/many/tree/main?recursive=true&limit=3".to_owned());
    let mut paths = Vec::new();
    let mut pages = 0;
    while let Some(url) = next.take() {
        let reply = server.get(&url, None).await;
        assert_eq!(reply.status, StatusCode::OK);
        pages += 1;
        paths.extend(reply.json().as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_owned()));
        next = reply.header("link").map(|link| {
            assert!(link.ends_with("rel=\"next\""), "{link}");
            link.split_once('<').unwrap().1.split_once('>').unwrap().0.replace("http://mantle.test", "")
        });
    }
    assert_eq!(pages, 3);
    assert_eq!(paths.len(), 9, "{paths:?}");
    assert!(paths.contains(&"dir".to_owned()) && paths.contains(&"dir/f6.txt".to_owned()));
    let mut sorted = paths.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), paths.len(), "no entry twice");
}
