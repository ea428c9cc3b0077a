//! Quotas on the inference APIs, on the mock runner: requests per minute per token, tokens per
//! minute per org, a monthly token budget; refusals are 429s in each API's error shape with
//! `Retry-After` and `x-ratelimit-*`; only a site admin sets quotas, and every change is audited.
//! Windows are calendar minutes: a test that needs several requests in one minute first waits
//! out the last seconds of the current one, so it never straddles two.

use axum::http::StatusCode;

use crate::harness::{file, header, TestServer, ADMIN};
use crate::openai::{gguf_with_template, CHATML};

async fn setup() -> (TestServer, String) {
    let server = TestServer::new().await;
    assert_eq!(server.json("POST", "/api/admin/orgs", Some(ADMIN), serde_json::json!({ "name": "acme" })).await.status, StatusCode::OK);
    let ann = server.user("ann", Some("acme"), "write").await;
    server.create_repo(&ann, "tiny", false).await;
    let reply = server.commit(&ann, "ann/tiny", &[header("weights"), file("tiny.gguf", &gguf_with_template(CHATML)), file("README.md", b"---\nlicense: apache-2.0\n---\n# tiny\n")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), serde_json::json!({ "name": "tiny", "repo": "ann/tiny" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    (server, ann)
}

async fn token_id(server: &TestServer, user: &str) -> i64 {
    let tokens = server.get("/api/admin/tokens", Some(ADMIN)).await.json();
    tokens.as_array().unwrap().iter().find(|t| t["user"] == user).unwrap()["id"].as_i64().unwrap()
}

async fn fresh_minute() {
    use chrono::Timelike as _;
    let second = chrono::Utc::now().second();
    if second >= 50 {
        tokio::time::sleep(std::time::Duration::from_secs(u64::from(61 - second))).await;
    }
}

fn chat(content: &str) -> serde_json::Value {
    serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": content }], "max_tokens": 4 })
}

#[tokio::test]
async fn requests_per_minute_per_token() {
    let (server, ann) = setup().await;
    let id = token_id(&server, "ann").await;
    let reply = server.json("PUT", &format!("/api/admin/quotas/token/{id}"), Some(ADMIN), serde_json::json!({ "requests_per_minute": 2 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    fresh_minute().await;
    // Admitted requests carry the headers too, counting down.
    for remaining in ["1", "0"] {
        let reply = server.json("POST", "/v1/chat/completions", Some(&ann), chat("hi")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("x-ratelimit-limit-requests").as_deref(), Some("2"));
        assert_eq!(reply.header("x-ratelimit-remaining-requests").as_deref(), Some(remaining));
    }
    let refused = server.json("POST", "/v1/chat/completions", Some(&ann), chat("hi")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused.header("x-ratelimit-limit-requests").as_deref(), Some("2"));
    assert_eq!(refused.header("x-ratelimit-remaining-requests").as_deref(), Some("0"));
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The Ollama API counts against the same limit and answers in its own shape.
    let ollama = server.json("POST", "/api/chat", Some(&ann), serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": "hi" }], "stream": false })).await;
    assert_eq!(ollama.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(ollama.json()["error"].as_str().unwrap().contains("2 requests per minute"));
    // Another token of the same user is not limited; a refused request left no usage record.
    let other = server.token("ann", "write").await;
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&other), chat("hi")).await.status, StatusCode::OK);
    server.state.usage.flush().await;
    assert_eq!(server.get("/api/usage?by=token", Some(ADMIN)).await.json()["total"]["requests"], 3);

    // Cleared: no limit.
    assert_eq!(server.send("DELETE", &format!("/api/admin/quotas/token/{id}"), Some(ADMIN), None, vec![]).await.status, StatusCode::OK);
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&ann), chat("hi")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn org_tokens_per_minute_and_monthly_budget() {
    let (server, ann) = setup().await;
    // The org's members share 60 tokens a minute; a request is refused once the minute's
    // prompt and completion tokens reach it (the mock counts a token per byte).
    let reply = server.json("PUT", "/api/admin/quotas/org/acme", Some(ADMIN), serde_json::json!({ "tokens_per_minute": 60 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    fresh_minute().await;
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&ann), chat("hello")).await.status, StatusCode::OK);
    server.state.usage.flush().await; // completion tokens are counted when the request ends
    let refused = server.json("POST", "/v1/chat/completions", Some(&ann), chat("hello")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{:?}", refused.json());
    assert_eq!(refused.header("x-ratelimit-limit-tokens").as_deref(), Some("60"));
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("org acme"));

    // A monthly budget smaller than one prompt: insufficient_quota.
    let bob = server.user("bob", None, "write").await;
    let id = token_id(&server, "bob").await;
    assert_eq!(server.json("PUT", &format!("/api/admin/quotas/token/{id}"), Some(ADMIN), serde_json::json!({ "tokens_per_month": 10 })).await.status, StatusCode::OK);
    let refused = server.json("POST", "/v1/chat/completions", Some(&bob), chat("a question longer than ten tokens")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"]["code"], "insufficient_quota");
    assert!(refused.header("retry-after").unwrap().parse::<u64>().unwrap() > 60);
}

#[tokio::test]
async fn only_admins_set_quotas_and_changes_are_audited() {
    let (server, ann) = setup().await;
    let id = token_id(&server, "ann").await;
    let body = serde_json::json!({ "requests_per_minute": 5 });
    assert_eq!(server.json("PUT", &format!("/api/admin/quotas/token/{id}"), Some(&ann), body.clone()).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.json("PUT", "/api/admin/quotas/token/999", Some(ADMIN), body.clone()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.json("PUT", "/api/admin/quotas/org/nobody", Some(ADMIN), body.clone()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.json("PUT", "/api/admin/quotas/team/acme", Some(ADMIN), body.clone()).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.json("PUT", "/api/admin/quotas/org/acme", Some(ADMIN), serde_json::json!({})).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.json("PUT", "/api/admin/quotas/org/acme", Some(ADMIN), serde_json::json!({ "tokens_per_minute": 0 })).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.json("PUT", "/api/admin/quotas/org/acme", Some(ADMIN), body).await.status, StatusCode::OK);
    let listed = server.get("/api/admin/quotas", Some(ADMIN)).await.json();
    assert_eq!(listed[0]["subject"], "acme");
    assert_eq!(listed[0]["requests_per_minute"], 5);
    assert_eq!(server.get("/api/admin/quotas", Some(&ann)).await.status, StatusCode::FORBIDDEN);
    let audit = String::from_utf8(server.get("/api/admin/audit", Some(ADMIN)).await.body).unwrap();
    assert!(audit.contains("quota.set") && audit.contains("quota:org:acme"), "{audit}");
}
