//! Release routes on the mock runner: a route answers with its stable deployment's revision, a
//! canary takes a sticky share of the callers, promotion and rollback move it, and the history
//! keeps who, when, from and to which revision, why and on what evidence (eval results).

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{file, header, TestServer, ADMIN};
use crate::openai::{deployed, gguf_with_template, CHATML};

/// Pushes a second revision of `ann/tiny` and deploys it as `tiny-v2`.
async fn second_revision(server: &TestServer, token: &str) -> String {
    let reply = server.commit(token, "ann/tiny", &[header("v2"), file("tiny.gguf", &gguf_with_template(&format!("{CHATML}{{# v2 #}}")))]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), json!({ "name": "tiny-v2", "repo": "ann/tiny", "max_batch": 2 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    reply.json()["commit"].as_str().unwrap().to_owned()
}

async fn revision_for(server: &TestServer, token: &str) -> String {
    let reply = server.json("POST", "/v1/completions", Some(token), json!({ "model": "chat", "prompt": "hi", "max_tokens": 1 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    reply.header("x-mantle-revision").unwrap()
}

#[tokio::test]
async fn a_route_moves_callers_between_revisions_with_its_history() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let first = server.get("/api/admin/deployments", Some(ADMIN)).await.json()[0]["commit"].as_str().unwrap().to_owned();
    let second = second_revision(&server, &token).await;
    let reply = server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny", "reason": "first release" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(revision_for(&server, &token).await, format!("ann/tiny@{first}"));
    let models = server.get("/v1/models", Some(&token)).await.json();
    assert!(models["data"].as_array().unwrap().iter().any(|m| m["id"] == "chat" && m["owned_by"] == "route"), "{models}");
    assert_eq!(server.get("/v1/models/chat", Some(&token)).await.json()["id"], "chat");

    // A canary at 50%: callers split, each always on the same side.
    let mut callers = Vec::new();
    for i in 0..12 {
        callers.push(server.user(&format!("caller{i}"), None, "read").await);
    }
    // An eval run as evidence: its results go into the history.
    let eval = server.json("POST", "/v1/evals", Some(&token), json!({ "name": "gate", "data_source_config": { "type": "custom", "item_schema": { "type": "object" } }, "testing_criteria": [{ "type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "a", "operation": "eq" }] })).await.json();
    let run = server
        .json("POST", &format!("/v1/evals/{}/runs", eval["id"].as_str().unwrap()), Some(&token), json!({ "data_source": { "type": "jsonl", "source": { "type": "file_content", "content": [{ "item": {}, "sample": { "output_text": "a" } }] } } }))
        .await
        .json();
    server::evals::run_pending(&server.state).await.unwrap();
    let reply = server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny-v2", "percent": 50, "reason": "try v2", "eval_runs": [run["id"]] })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!((reply.json()["canary"].as_str(), reply.json()["canary_percent"].as_u64()), (Some("tiny-v2"), Some(50)));
    let mut sides = Vec::new();
    for caller in &callers {
        let revision = revision_for(&server, caller).await;
        assert_eq!(revision_for(&server, caller).await, revision, "sticky");
        sides.push(revision == format!("ann/tiny@{second}"));
    }
    assert!(sides.iter().any(|s| *s) && sides.iter().any(|s| !*s), "12 callers split at 50%: {sides:?}");
    // Raising the share keeps every caller the canary had.
    server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny-v2", "percent": 90 })).await;
    for (caller, on_canary) in callers.iter().zip(&sides) {
        if *on_canary {
            assert_eq!(revision_for(&server, caller).await, format!("ann/tiny@{second}"));
        }
    }

    // Promote, then roll back to where it was.
    assert_eq!(server.json("POST", "/api/admin/routes/chat/promote", Some(ADMIN), json!(null)).await.json()["stable"], "tiny-v2");
    assert_eq!(revision_for(&server, &token).await, format!("ann/tiny@{second}"));
    let reply = server.json("POST", "/api/admin/routes/chat/rollback", Some(ADMIN), json!({ "reason": "v2 regressed" })).await;
    assert_eq!(reply.json()["stable"], "tiny", "{:?}", reply.json());
    assert_eq!(revision_for(&server, &token).await, format!("ann/tiny@{first}"));

    let history: Vec<Value> = serde_json::from_value(server.get("/api/admin/routes/chat/history", Some(ADMIN)).await.json()).unwrap();
    let actions: Vec<&str> = history.iter().map(|c| c["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["create", "canary", "canary", "promote", "rollback"]);
    assert_eq!(history[1]["to"]["canary"]["revision"], format!("ann/tiny@{second}"));
    assert_eq!(history[1]["from"]["stable"]["revision"], format!("ann/tiny@{first}"));
    assert_eq!(history[1]["evidence"]["eval_runs"][0]["result_counts"]["passed"], 1);
    assert_eq!(history[4]["reason"], "v2 regressed");
    let audit = server.audit_actions().await;
    for action in ["route.create", "route.canary", "route.promote", "route.rollback"] {
        assert!(audit.iter().any(|a| a == action), "{action}");
    }
}

#[tokio::test]
async fn routes_are_for_admins_and_keep_their_names_and_deployments_apart() {
    let (server, token) = deployed(|_| {}, true, 4).await;
    assert_eq!(server.json("PUT", "/api/admin/routes/chat", Some(&token), json!({ "stable": "tiny" })).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.json("PUT", "/api/admin/routes/tiny", Some(ADMIN), json!({ "stable": "tiny" })).await.status, StatusCode::CONFLICT);
    assert_eq!(server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "nope" })).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny", "weights": 3 })).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny" })).await.status, StatusCode::OK);
    assert_eq!(server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny", "percent": 10 })).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny", "percent": 100 })).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.json("POST", "/api/admin/routes/chat/promote", Some(ADMIN), json!(null)).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(server.json("POST", "/api/admin/routes/chat/rollback", Some(ADMIN), json!(null)).await.status, StatusCode::BAD_REQUEST);
    // A deployment under a route stays; a new deployment cannot take the route's name.
    assert_eq!(server.json("DELETE", "/api/admin/deployments/tiny", Some(ADMIN), json!(null)).await.status, StatusCode::CONFLICT);
    assert_eq!(server.json("POST", "/api/admin/deployments", Some(ADMIN), json!({ "name": "chat", "repo": "ann/tiny" })).await.status, StatusCode::CONFLICT);
    // The repo is private: another user gets the route's name in a 404, never the deployment's.
    let bob = server.user("bob", None, "write").await;
    let reply = server.json("POST", "/v1/chat/completions", Some(&bob), json!({ "model": "chat", "messages": [{ "role": "user", "content": "hi" }] })).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(!String::from_utf8_lossy(&reply.body).contains("tiny"), "{:?}", reply.json());
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&token), json!({ "model": "chat", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 2 })).await.status, StatusCode::OK);
    assert_eq!(server.json("DELETE", "/api/admin/routes/chat", Some(ADMIN), json!(null)).await.status, StatusCode::OK);
    assert_eq!(server.json("DELETE", "/api/admin/deployments/tiny", Some(ADMIN), json!(null)).await.status, StatusCode::OK);
}

/// Chat requests from `callers`; how many failed.
async fn traffic(server: &TestServer, callers: &[String]) -> usize {
    let mut failed = 0;
    for caller in callers {
        let reply = server.json("POST", "/v1/chat/completions", Some(caller), json!({ "model": "chat", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 2 })).await;
        failed += usize::from(reply.status != StatusCode::OK);
    }
    server.state.usage.flush().await;
    failed
}

#[tokio::test]
async fn a_canary_that_breaks_its_slo_is_rolled_back_by_itself_and_a_healthy_one_promoted() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    second_revision(&server, &token).await;
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), json!({ "name": "tiny-broken", "repo": "ann/tiny", "context": 777 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny" })).await;
    let mut callers = Vec::new();
    for i in 0..16 {
        callers.push(server.user(&format!("caller{i}"), None, "read").await);
    }
    let analysis = json!({ "steps": [50, 100], "bake_secs": 0, "max_error_rate": 0.1, "min_requests": 3 });
    let bad = json!({ "deployment": "tiny-broken", "analysis": analysis, "reason": "try the broken build" });
    let reply = server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), bad).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["canary_percent"], 50);
    // No requests yet: inconclusive, nothing moves.
    assert!(server.state.hub.step_rollouts().await.unwrap().is_empty());
    let failed = traffic(&server, &callers).await;
    assert!(failed >= 3 && failed < callers.len(), "{failed} of {} failed", callers.len());
    assert_eq!(server.state.hub.step_rollouts().await.unwrap(), ["chat: rollback"]);
    let route = server.get("/api/admin/routes/chat", Some(ADMIN)).await.json();
    assert_eq!((route["stable"].as_str(), route["canary"].as_str()), (Some("tiny"), None));
    assert_eq!(traffic(&server, &callers).await, 0, "every caller is back on the stable deployment");
    let history = server.get("/api/admin/routes/chat/history", Some(ADMIN)).await.json();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("rollback"), Some("system")));
    assert!(last["reason"].as_str().unwrap().contains("error rate"), "{last}");
    assert_eq!(last["evidence"]["extra"]["analysis"]["failed"].as_u64(), Some(failed as u64));
    assert!(server.audit_actions().await.iter().any(|a| a == "route.rollback"));

    // A healthy canary steps through and is promoted.
    let good = json!({ "deployment": "tiny-v2", "analysis": { "steps": [25, 60, 100], "bake_secs": 0, "max_error_rate": 0.0, "max_ttft_p95_ms": 60000, "min_requests": 1 } });
    assert_eq!(server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), good).await.status, StatusCode::OK);
    traffic(&server, &callers).await;
    assert_eq!(server.state.hub.step_rollouts().await.unwrap(), ["chat: canary"]);
    assert_eq!(server.get("/api/admin/routes/chat", Some(ADMIN)).await.json()["canary_percent"], 60);
    let history = server.get("/api/admin/routes/chat/history", Some(ADMIN)).await.json();
    let step = history.as_array().unwrap().last().unwrap()["evidence"]["extra"]["analysis"].clone();
    assert!(step["requests"].as_u64().unwrap() >= 1 && step["ttft_p95_ms"].is_u64(), "{step}");
    traffic(&server, &callers).await;
    assert_eq!(server.state.hub.step_rollouts().await.unwrap(), ["chat: promote"]);
    assert_eq!(server.get("/api/admin/routes/chat", Some(ADMIN)).await.json()["stable"], "tiny-v2");
    // Bad plans are refused.
    for analysis in [json!({ "steps": [50, 40, 100], "max_error_rate": 0.1 }), json!({ "steps": [10, 50] , "max_error_rate": 0.1 }), json!({ "steps": [10, 100] }), json!({ "steps": [10, 100], "max_error_rate": 2.0 })] {
        let reply = server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny", "analysis": analysis })).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{analysis}");
    }
}

/// Waits until the usage log holds `n` requests of `deployment` (shadow copies run on their own).
async fn recorded(server: &TestServer, deployment: &str, n: u64) -> Value {
    for _ in 0..200 {
        server.state.usage.flush().await;
        let report = server.get("/api/usage?by=deployment", Some(ADMIN)).await.json();
        if let Some(row) = report["rows"].as_array().unwrap().iter().find(|r| r["key"] == deployment) {
            if row["requests"].as_u64() >= Some(n) {
                return row.clone();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{deployment} never recorded {n} requests");
}

#[tokio::test]
async fn shadow_traffic_copies_requests_that_no_caller_sees_and_a_shadow_phase_guards_the_canary() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let first = server.get("/api/admin/deployments", Some(ADMIN)).await.json()[0]["commit"].as_str().unwrap().to_owned();
    second_revision(&server, &token).await;
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), json!({ "name": "tiny-broken", "repo": "ann/tiny", "context": 777, "price_prompt": 5.0 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny" })).await;
    let mut callers = Vec::new();
    for i in 0..6 {
        callers.push(server.user(&format!("caller{i}"), None, "read").await);
    }

    // Every request copied to a deployment that fails them all: callers never see it.
    let reply = server.json("POST", "/api/admin/routes/chat/shadow", Some(ADMIN), json!({ "deployment": "tiny-broken", "percent": 100, "reason": "watch the broken build" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!((reply.json()["shadow"].as_str(), reply.json()["shadow_percent"].as_u64()), (Some("tiny-broken"), Some(100)));
    for caller in &callers {
        assert_eq!(revision_for(&server, caller).await, format!("ann/tiny@{first}"));
    }
    let row = recorded(&server, "tiny-broken", callers.len() as u64).await;
    // Recorded (failed) at no cost, under the account `shadow`, not the caller's.
    assert_eq!((row["errors"].as_u64(), row["cost"].as_f64()), (Some(callers.len() as u64), Some(0.0)), "{row}");
    let own = server.get("/api/usage", Some(&callers[0])).await.json();
    assert_eq!(own["total"]["requests"], 1, "{own}");
    let accounts = server.get("/api/usage?by=account", Some(ADMIN)).await.json();
    assert!(accounts["rows"].as_array().unwrap().iter().any(|r| r["key"] == "shadow" && r["requests"].as_u64() == Some(callers.len() as u64)), "{accounts}");
    for bad in [json!({ "deployment": "tiny", "percent": 50 }), json!({ "deployment": "tiny-v2", "percent": 0 }), json!({ "deployment": "nope" })] {
        assert_ne!(server.json("POST", "/api/admin/routes/chat/shadow", Some(ADMIN), bad.clone()).await.status, StatusCode::OK, "{bad}");
    }
    let reply = server.json("POST", "/api/admin/routes/chat/shadow", Some(ADMIN), json!({})).await;
    assert_eq!(reply.json()["shadow"], Value::Null);

    // A rollout with a shadow phase: the broken candidate is rolled back before any caller
    // reaches it.
    let analysis = json!({ "steps": [50, 100], "bake_secs": 0, "shadow_secs": 1, "max_error_rate": 0.1, "min_requests": 3 });
    let reply = server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny-broken", "analysis": analysis })).await;
    assert_eq!((reply.json()["canary"].clone(), reply.json()["shadow"].as_str()), (Value::Null, Some("tiny-broken")), "{:?}", reply.json());
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for caller in &callers {
        assert_eq!(revision_for(&server, caller).await, format!("ann/tiny@{first}"));
    }
    recorded(&server, "tiny-broken", 2 * callers.len() as u64).await;
    assert_eq!(server.state.hub.step_rollouts().await.unwrap(), ["chat: rollback"]);
    let history = server.get("/api/admin/routes/chat/history", Some(ADMIN)).await.json();
    let last = history.as_array().unwrap().last().unwrap().clone();
    assert!(last["reason"].as_str().unwrap().starts_with("shadow analysis failed"), "{last}");
    let analysis = &last["evidence"]["extra"]["analysis"];
    assert_eq!((analysis["phase"].as_str(), analysis["baseline"]["failed"].as_u64()), (Some("shadow"), Some(0)), "{analysis}");
    assert!(analysis["baseline"]["requests"].as_u64().unwrap() >= callers.len() as u64, "{analysis}");

    // A healthy candidate passes its shadow phase and becomes a canary.
    let analysis = json!({ "steps": [50, 100], "bake_secs": 0, "shadow_secs": 1, "max_error_rate": 0.0, "min_requests": 2 });
    server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny-v2", "analysis": analysis })).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    for caller in &callers {
        revision_for(&server, caller).await;
    }
    recorded(&server, "tiny-v2", callers.len() as u64).await;
    assert_eq!(server.state.hub.step_rollouts().await.unwrap(), ["chat: canary"]);
    let route = server.get("/api/admin/routes/chat", Some(ADMIN)).await.json();
    assert_eq!((route["canary"].as_str(), route["canary_percent"].as_u64(), route["shadow"].clone()), (Some("tiny-v2"), Some(50), Value::Null), "{route}");
}
