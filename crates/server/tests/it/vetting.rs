//! The scan pipeline in-process: commits queue scans, the queue survives a restart, verdicts and
//! the Hub fields follow, and a blob scanned once is not scanned again.

use axum::http::StatusCode;

use crate::harness::{file, header, TestServer};

const EVIL: &[u8] = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00id\x85R.";

#[tokio::test]
async fn queued_scans_survive_a_restart_and_produce_verdicts() {
    let server = TestServer::new().await;
    let token = server.user("ivy", None, "write").await;
    server.create_repo(&token, "m", false).await;
    let reply = server.commit(&token, "ivy/m", &[header("add"), file("evil.pkl", EVIL), file("README.md", b"---\nlicense: mit\n---\n")]).await;
    assert_eq!(reply.status, StatusCode::OK);

    // Nothing scanned yet: the verdict is pending and blocked.
    let pending = server.get("/api/models/ivy/m/vetting/main", Some(&token)).await.json();
    assert_eq!(pending["status"], "pending", "{pending}");
    assert_eq!(pending["blocked"], true);

    // A new process on the same data folder finds the queued jobs and scans them.
    let restarted = server.restart().await;
    let processed = server::scanner::scan_pending(&restarted.state).await.unwrap();
    assert!(processed >= 3, "{processed}");
    let verdict = restarted.get("/api/models/ivy/m/vetting/main", Some(&token)).await.json();
    assert_eq!(verdict["status"], "unsafe", "{verdict}");
    let evil = verdict["files"].as_array().unwrap().iter().find(|f| f["path"] == "evil.pkl").unwrap().clone();
    assert_eq!(evil["findings"][0]["subject"], "os.system");
    assert_eq!(evil["findings"][0]["offset"], 2);
    let info = restarted.get("/api/models/ivy/m", Some(&token)).await.json();
    assert_eq!(info["securityRepoStatus"]["filesWithIssues"][0]["path"], "evil.pkl");
    let tree = restarted.get("/api/models/ivy/m/tree/main?expand=true", Some(&token)).await.json();
    let entry = tree.as_array().unwrap().iter().find(|e| e["path"] == "evil.pkl").unwrap().clone();
    assert_eq!(entry["securityFileStatus"]["status"], "unsafe");

    // The same bytes committed again under the same kind of name are not scanned again.
    restarted.commit(&token, "ivy/m", &[header("copy"), file("copy.pkl", EVIL)]).await;
    server::scanner::scan_pending(&restarted.state).await.unwrap();
    let results = restarted.state.hub.scan_results(&[hex_sha(EVIL)], &restarted.state.hub.config.scanner_version).await.unwrap();
    assert_eq!(results.len(), 1, "one stored result for the blob");
    let verdict = restarted.get("/api/models/ivy/m/vetting/main", Some(&token)).await.json();
    assert!(verdict["files"].as_array().unwrap().iter().any(|f| f["path"] == "copy.pkl" && f["status"] == "unsafe"));
}

#[tokio::test]
async fn private_verdicts_and_policies_are_invisible_to_others() {
    let server = TestServer::new().await;
    let owner = server.user("jay", None, "write").await;
    let other = server.user("kim", None, "admin").await;
    server.create_repo(&owner, "secret", true).await;
    assert_eq!(server.get("/api/models/jay/secret/vetting/main", Some(&other)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/api/models/jay/secret/bom/main", None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/api/policies/jay", Some(&other)).await.status, StatusCode::NOT_FOUND);
    let put = server.json("PUT", "/api/policies/jay", Some(&other), serde_json::json!({ "allow_pickle": false, "allowed_licenses": null, "suspicious_blocks": true })).await;
    assert_eq!(put.status, StatusCode::FORBIDDEN);
    // The owner's write token cannot change policy either: that needs an admin token.
    let put = server.json("PUT", "/api/policies/jay", Some(&owner), serde_json::json!({ "allow_pickle": false, "allowed_licenses": null, "suspicious_blocks": true })).await;
    assert_eq!(put.status, StatusCode::FORBIDDEN);
    let short = server.json("POST", "/api/policies/jay/overrides", Some(crate::harness::ADMIN), serde_json::json!({ "sha256": "a".repeat(64), "code": "x", "justification": "no" })).await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
}

fn hex_sha(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn only_passing_revisions_deploy_and_deployments_persist() {
    let server = TestServer::new().await;
    let token = server.user("lee", None, "write").await;
    server.create_repo(&token, "model", false).await;
    let mut gguf = b"GGUF".to_vec();
    gguf.extend(3u32.to_le_bytes());
    gguf.extend(0u64.to_le_bytes());
    gguf.extend(0u64.to_le_bytes());
    server.commit(&token, "lee/model", &[header("weights"), file("m.gguf", &gguf), file("README.md", b"---\nlicense: apache-2.0\n---\n")]).await;
    let deploy = |name: &str, revision: &str| serde_json::json!({ "name": name, "repo": "lee/model", "revision": revision });
    // Pending scans block a deployment, with the reason.
    let reply = server.json("POST", "/api/admin/deployments", Some(crate::harness::ADMIN), deploy("chat", "main")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.json()["error"].as_str().unwrap().contains("scans are still running"));
    server::scanner::scan_pending(&server.state).await.unwrap();
    // A non-admin cannot deploy.
    assert_eq!(server.json("POST", "/api/admin/deployments", Some(&token), deploy("chat", "main")).await.status, StatusCode::FORBIDDEN);
    let reply = server.json("POST", "/api/admin/deployments", Some(crate::harness::ADMIN), deploy("chat", "main")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let created = reply.json();
    assert_eq!(created["file"], "m.gguf");
    assert_eq!(created["commit"].as_str().unwrap().len(), 40);
    assert_eq!(server.json("POST", "/api/admin/deployments", Some(crate::harness::ADMIN), deploy("chat", "main")).await.status, StatusCode::CONFLICT);

    // An unsafe revision cannot deploy; the reasons say why.
    server.commit(&token, "lee/model", &[header("oops"), file("evil.pkl", EVIL)]).await;
    server::scanner::scan_pending(&server.state).await.unwrap();
    let reply = server.json("POST", "/api/admin/deployments", Some(crate::harness::ADMIN), deploy("chat2", "main")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(reply.json()["error"].as_str().unwrap().contains("os.system"), "{:?}", reply.json());

    // Deployments come back after a restart; undeploy is audited.
    let restarted = server.restart().await;
    let listed = restarted.get("/api/admin/deployments", Some(crate::harness::ADMIN)).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["commit"], created["commit"]);
    assert_eq!(restarted.send("DELETE", "/api/admin/deployments/chat", Some(crate::harness::ADMIN), None, vec![]).await.status, StatusCode::OK);
    let actions = restarted.audit_actions().await;
    assert!(actions.contains(&"deployment.create".to_owned()) && actions.contains(&"deployment.delete".to_owned()));
}
