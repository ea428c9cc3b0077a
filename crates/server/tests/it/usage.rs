//! Usage accounting over the OpenAI and Ollama APIs, on the mock runner (one token per byte):
//! every request leaves a record, totals equal the `usage` the clients were sent, costs follow
//! the deployment's prices, and only a site admin sees other accounts' usage.

use axum::http::StatusCode;

use crate::harness::{file, header, TestServer, ADMIN};
use crate::openai::{gguf_with_template, CHATML};

async fn priced() -> (TestServer, String, String) {
    let server = TestServer::new().await;
    let ann = server.user("ann", None, "write").await;
    let bob = server.user("bob", None, "read").await;
    server.create_repo(&ann, "tiny", false).await;
    let reply = server.commit(&ann, "ann/tiny", &[header("weights"), file("tiny.gguf", &gguf_with_template(CHATML)), file("README.md", b"---\nlicense: apache-2.0\n---\n# tiny\n")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    let body = serde_json::json!({ "name": "tiny", "repo": "ann/tiny", "price_prompt": 0.5, "price_completion": 2.0 });
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["price_completion"], 2.0);
    (server, ann, bob)
}

#[tokio::test]
async fn usage_totals_equal_what_clients_were_told() {
    let (server, ann, bob) = priced().await;
    let (mut prompt, mut completion) = (0, 0);
    for (i, token) in [&ann, &ann, &bob].into_iter().enumerate() {
        let body = serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": format!("question {i}") }], "max_tokens": 5 + i });
        let reply = server.json("POST", "/v1/chat/completions", Some(token), body).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
        prompt += reply.json()["usage"]["prompt_tokens"].as_u64().unwrap();
        completion += reply.json()["usage"]["completion_tokens"].as_u64().unwrap();
    }
    let reply = server.json("POST", "/api/generate", Some(&ann), serde_json::json!({ "model": "tiny", "prompt": "hello", "stream": false, "options": { "num_predict": 4 } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    prompt += reply.json()["prompt_eval_count"].as_u64().unwrap();
    completion += reply.json()["eval_count"].as_u64().unwrap();
    // A request refused for its parameters never reached a model: no record.
    let bad = server.json("POST", "/v1/chat/completions", Some(&ann), serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": "x" }], "temperature": 9 })).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    server.state.usage.flush().await;

    let report = server.get("/api/usage?by=account", Some(ADMIN)).await;
    assert_eq!(report.status, StatusCode::OK, "{:?}", report.json());
    let report = report.json();
    assert_eq!(report["total"]["requests"], 4);
    assert_eq!((report["total"]["prompt_tokens"].as_u64().unwrap(), report["total"]["completion_tokens"].as_u64().unwrap()), (prompt, completion));
    let cost = report["total"]["cost"].as_f64().unwrap();
    let expected = (prompt as f64 * 0.5 + completion as f64 * 2.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    let accounts: Vec<(&str, u64)> = report["rows"].as_array().unwrap().iter().map(|r| (r["key"].as_str().unwrap(), r["requests"].as_u64().unwrap())).collect();
    assert_eq!(accounts, [("ann", 3), ("bob", 1)]);

    // Grouped by deployment and by day; since tomorrow, nothing.
    let by_deployment = server.get("/api/usage?by=deployment", Some(ADMIN)).await.json();
    assert_eq!(by_deployment["rows"][0]["key"], "tiny");
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).format("%Y-%m-%d").to_string();
    assert_eq!(server.get(&format!("/api/usage?since={tomorrow}"), Some(ADMIN)).await.json()["total"]["requests"], 0);

    // Bob sees his own usage only; asking for ann's, or by org, is refused; bad input is a 400.
    let own = server.get("/api/usage?by=token", Some(&bob)).await.json();
    assert_eq!(own["total"]["requests"], 1);
    assert_eq!(server.get("/api/usage?account=ann", Some(&bob)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.get("/api/usage?org=acme", Some(&bob)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.get("/api/usage?by=week", Some(&bob)).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.get("/api/usage?since=yesterday", Some(&bob)).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.get("/api/usage", None).await.status, StatusCode::UNAUTHORIZED);
}
