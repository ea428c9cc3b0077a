//! Many models on one box: a memory budget for resident deployments, least-recently-used eviction
//! of idle ones (never one serving a request, never a pinned one), Ollama's `keep_alive`, and
//! what `/api/ps`, the deployments listing and `/metrics` say about it. The mock runner's size is
//! its deployment's context times 1000 bytes.

use axum::http::StatusCode;

use crate::harness::{file, header, TestServer, ADMIN};
use crate::openai::{gguf_with_template, CHATML};

/// A server with a 2.5 MB budget and deployments `a`, `b`, `c` of 1 MB each.
async fn three_deployments() -> (TestServer, String) {
    let server = TestServer::with(|raw| raw.runtime.memory_budget = 2_500_000).await;
    let token = server.user("ann", None, "write").await;
    server.create_repo(&token, "tiny", false).await;
    let reply = server.commit(&token, "ann/tiny", &[header("weights"), file("tiny.gguf", &gguf_with_template(CHATML)), file("README.md", b"---\nlicense: apache-2.0\n---\n# tiny\n")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    for name in ["a", "b", "c"] {
        let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), serde_json::json!({ "name": name, "repo": "ann/tiny", "context": 1000 })).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    }
    (server, token)
}

async fn ask(server: &TestServer, token: &str, model: &str, extra: serde_json::Value) {
    let mut body = serde_json::json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }], "stream": false, "options": { "num_predict": 2 } });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let reply = server.json("POST", "/api/chat", Some(token), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
}

fn resident(server: &TestServer) -> Vec<String> {
    server.state.runtime.resident().iter().map(|s| s.deployment.name.clone()).collect()
}

#[tokio::test]
async fn the_least_recently_used_idle_model_makes_room() {
    let (server, token) = three_deployments().await;
    ask(&server, &token, "a", serde_json::json!({})).await;
    ask(&server, &token, "b", serde_json::json!({})).await;
    ask(&server, &token, "a", serde_json::json!({})).await; // a is now more recent than b
    assert_eq!(resident(&server), ["a", "b"]);
    ask(&server, &token, "c", serde_json::json!({})).await;
    assert_eq!(resident(&server), ["a", "c"], "b was the least recently used");

    // The listings agree: /api/ps, the admin listing, /metrics.
    let ps = server.get("/api/ps", Some(&token)).await.json();
    let names: Vec<&str> = ps["models"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "c"]);
    let listing = server.get("/api/admin/deployments", Some(ADMIN)).await.json();
    let flags: Vec<(String, bool)> = listing.as_array().unwrap().iter().map(|d| (d["name"].as_str().unwrap().to_owned(), d["resident"].as_bool().unwrap())).collect();
    assert_eq!(flags, [("a".to_owned(), true), ("b".to_owned(), false), ("c".to_owned(), true)]);
    let metrics = String::from_utf8(server.get("/metrics", None).await.body).unwrap();
    for needle in ["mantle_model_evictions_total{deployment=\"b\"} 1", "mantle_model_memory_bytes{deployment=\"a\"} 1000000", "mantle_loaded_models 2"] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    // Showing an evicted model reads its template without loading it.
    let shown = server.json("POST", "/api/show", Some(&token), serde_json::json!({ "model": "b" })).await;
    assert_eq!(shown.status, StatusCode::OK, "{:?}", shown.json());
    assert!(shown.json()["template"].as_str().unwrap().contains("im_start"));
    assert_eq!(resident(&server), ["a", "c"]);

    // Ollama's own examples post JSON with `curl -d`, labelled as a form: still JSON.
    let body = serde_json::to_vec(&serde_json::json!({ "model": "c", "prompt": "hi", "stream": false, "options": { "num_predict": 2 } })).unwrap();
    let reply = server.send("POST", "/api/generate", Some(&token), Some("application/x-www-form-urlencoded"), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["done"], true);
    let bad = server.send("POST", "/api/generate", Some(&token), None, b"{not json".to_vec()).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].as_str().unwrap().starts_with("invalid request body"));

    // An evicted model loads again on its next request.
    ask(&server, &token, "b", serde_json::json!({})).await;
    assert_eq!(resident(&server), ["b", "c"]);
}

#[tokio::test]
async fn a_model_serving_a_request_is_never_evicted() {
    let (server, token) = three_deployments().await;
    ask(&server, &token, "a", serde_json::json!({})).await;
    ask(&server, &token, "b", serde_json::json!({})).await;
    // A stream on `a` stays open: `a` is busy although it is the least recently used.
    let held = server.open_stream("/v1/chat/completions", &token, serde_json::json!({ "model": "a", "messages": [{ "role": "user", "content": "hold" }], "stream": true, "max_tokens": 4 })).await;
    assert_eq!(held.status(), StatusCode::OK);
    ask(&server, &token, "b", serde_json::json!({})).await;
    ask(&server, &token, "c", serde_json::json!({})).await;
    assert_eq!(resident(&server), ["a", "c"], "b went, not the busy a");
    drop(held);
}

#[tokio::test]
async fn keep_alive_pins_and_unloads() {
    let (server, _) = three_deployments().await;
    // Pinning past the deployment's limit and unloading take an admin token of the namespace.
    let token = server.token("ann", "admin").await;
    // Pinned for good: never evicted, even as the least recently used.
    ask(&server, &token, "a", serde_json::json!({ "keep_alive": -1 })).await;
    ask(&server, &token, "b", serde_json::json!({})).await;
    ask(&server, &token, "c", serde_json::json!({})).await;
    assert_eq!(resident(&server), ["a", "c"]);
    let ps = server.get("/api/ps", Some(&token)).await.json();
    assert!(ps["models"][0]["expires_at"].as_str().unwrap().starts_with("9999"));
    // Pinned for a while: /api/ps says until when.
    ask(&server, &token, "c", serde_json::json!({ "keep_alive": "10m" })).await;
    let ps = server.get("/api/ps", Some(&token)).await.json();
    let until = chrono::DateTime::parse_from_rfc3339(ps["models"][1]["expires_at"].as_str().unwrap()).unwrap();
    let left = until.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((590..=600).contains(&left), "{left}");
    // Both pinned: loading b exceeds the budget rather than evicting either.
    ask(&server, &token, "b", serde_json::json!({})).await;
    assert_eq!(resident(&server), ["a", "b", "c"]);

    // An empty request with keep_alive 0 unloads, as Ollama's clients do it.
    let reply = server.json("POST", "/api/generate", Some(&token), serde_json::json!({ "model": "a", "keep_alive": 0 })).await;
    assert_eq!(reply.json()["done_reason"], "unload");
    assert_eq!(resident(&server), ["b", "c"]);
    // A keep_alive that is no duration changes nothing.
    let reply = server.json("POST", "/api/chat", Some(&token), serde_json::json!({ "model": "b", "messages": [], "keep_alive": "soon" })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(resident(&server), ["b", "c"]);
}

#[tokio::test]
async fn r11_ordinary_callers_keep_alive_is_capped_and_cannot_unload() {
    let (server, owner) = three_deployments().await;
    let bob = server.user("bob", None, "read").await;
    let admin = server.token("ann", "admin").await;
    async fn expires(server: &TestServer, token: String) -> Vec<(String, String)> {
        let ps = server.get("/api/ps", Some(&token)).await.json();
        ps["models"].as_array().unwrap().iter().map(|m| (m["name"].as_str().unwrap().to_owned(), m["expires_at"].as_str().unwrap().to_owned())).collect()
    }
    let seconds_left = |at: &str| chrono::DateTime::parse_from_rfc3339(at).unwrap().signed_duration_since(chrono::Utc::now()).num_seconds();
    // "Forever" and an hour from a write token of the owner, or from another user: capped at
    // the deployment's keep_alive_max (300 s by default).
    ask(&server, &bob, "a", serde_json::json!({ "keep_alive": -1 })).await;
    ask(&server, &owner, "b", serde_json::json!({ "keep_alive": "1h" })).await;
    for (_, at) in expires(&server, bob.clone()).await {
        assert!((290..=300).contains(&seconds_left(&at)), "{at}");
    }
    // Unloading a model others use is refused, and nothing changes.
    let reply = server.json("POST", "/api/generate", Some(&bob), serde_json::json!({ "model": "a", "keep_alive": 0 })).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.json());
    assert_eq!(resident(&server), ["a", "b"]);
    // An administrator's pin is not shortened by an ordinary caller's keep_alive.
    ask(&server, &admin, "a", serde_json::json!({ "keep_alive": -1 })).await;
    ask(&server, &bob, "a", serde_json::json!({ "keep_alive": "1m" })).await;
    assert!(expires(&server, bob.clone()).await[0].1.starts_with("9999"));
    // A deployment may allow longer.
    let huge = server.json("POST", "/api/admin/deployments", Some(ADMIN), serde_json::json!({ "name": "d", "repo": "ann/tiny", "context": 10, "keep_alive_max": u64::MAX })).await;
    assert_eq!(huge.status, StatusCode::BAD_REQUEST, "{:?}", huge.json());
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), serde_json::json!({ "name": "d", "repo": "ann/tiny", "context": 10, "keep_alive_max": 7200 })).await;
    assert_eq!(reply.json()["keep_alive_max"], 7200);
    ask(&server, &bob, "d", serde_json::json!({ "keep_alive": "1h" })).await;
    let d = expires(&server, bob.clone()).await.into_iter().find(|(name, _)| name == "d").unwrap();
    assert!((3590..=3600).contains(&seconds_left(&d.1)), "{d:?}");
}
