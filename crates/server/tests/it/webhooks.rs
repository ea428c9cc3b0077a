//! Webhooks: OpenAI's endpoint API, events read from the audit log and delivered signed with the
//! Standard Webhooks scheme to a receiver on loopback, rotation with two signatures, delivery
//! only to allowed hosts, no redirects followed, events only to those allowed to see them.

use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::ADMIN;
use crate::openai::deployed;

type Received = Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// A receiver on loopback: `/ok` answers 200, `/moved` a redirect to `/ok`; it records requests.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let record = |answer: StatusCode| {
        let received = received.clone();
        move |headers: axum::http::HeaderMap, body: String| {
            let received = received.clone();
            async move {
                received.lock().unwrap().push((headers, body));
                (answer, [("location", "/ok")])
            }
        }
    };
    let app = axum::Router::new().route("/ok", axum::routing::post(record(StatusCode::OK))).route("/moved", axum::routing::post(record(StatusCode::FOUND)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), received)
}

fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &str) -> bool {
    let id = headers["webhook-id"].to_str().unwrap();
    let timestamp: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let expected = domain::webhooks::signature(&[secret], id, timestamp, body);
    headers["webhook-signature"].to_str().unwrap().split(' ').any(|s| s == expected)
}

/// Runs an eval once (an `eval.run.succeeded` event).
async fn one_run(server: &crate::harness::TestServer, token: &str, eval: &str) {
    server.json("POST", &format!("/v1/evals/{eval}/runs"), Some(token), json!({ "data_source": { "type": "jsonl", "source": { "type": "file_content", "content": [{ "item": {} }] } } })).await;
    server::evals::run_pending(&server.state).await.unwrap();
}

async fn pump(server: &crate::harness::TestServer) {
    let client = server::webhooks::http_client().unwrap();
    server::webhooks::pump(&server.state, &client, "test-replica").await.unwrap();
}

#[tokio::test]
async fn eval_and_route_events_arrive_signed_at_allowed_hosts_only() {
    let (server, token) = deployed(|raw| raw.webhooks.allowed_hosts = vec!["127.0.0.1".into()], false, 4).await;
    let (base, received) = receiver().await;
    // Refused: hosts not allowed (cloud metadata, a name that resolves to loopback), unknown events.
    for (body, param) in [
        (json!({ "name": "x", "url": "http://169.254.169.254/latest/meta-data", "event_types": ["eval.run.succeeded"] }), "url"),
        (json!({ "name": "x", "url": "http://localhost:1/", "event_types": ["eval.run.succeeded"] }), "url"),
        (json!({ "name": "x", "url": format!("{base}/ok"), "event_types": ["batch.completed"] }), "body"),
        (json!({ "name": "名".repeat(300), "url": format!("{base}/ok"), "event_types": ["repo.push"] }), "name"),
    ] {
        let reply = server.json("POST", "/v1/webhook_endpoints", Some(&token), body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{param}: {:?}", reply.json());
    }
    let reply = server.json("POST", "/v1/webhook_endpoints", Some(&token), json!({ "name": "ci", "url": format!("{base}/ok"), "event_types": ["eval.run.succeeded", "route.rolled_back"] })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let endpoint = reply.json();
    let (id, secret) = (endpoint["id"].as_str().unwrap().to_owned(), endpoint["signing_secret"].as_str().unwrap().to_owned());
    assert!(secret.starts_with("whsec_"));
    assert!(server.get(&format!("/v1/webhook_endpoints/{id}"), Some(&token)).await.json().get("signing_secret").is_none());
    let bob = server.user("bob", None, "write").await;
    assert_eq!(server.get(&format!("/v1/webhook_endpoints/{id}"), Some(&bob)).await.status, StatusCode::NOT_FOUND);
    pump(&server).await; // the dispatcher starts at the log's head

    // An eval run ends: eval.run.succeeded, signed.
    let eval = server
        .json(
            "POST",
            "/v1/evals",
            Some(&token),
            json!({ "name": "e", "data_source_config": { "type": "custom", "item_schema": { "type": "object" } }, "testing_criteria": [{ "type": "string_check", "name": "s", "input": "a", "reference": "a", "operation": "eq" }] }),
        )
        .await
        .json();
    let run = server.json("POST", &format!("/v1/evals/{}/runs", eval["id"].as_str().unwrap()), Some(&token), json!({ "data_source": { "type": "jsonl", "source": { "type": "file_content", "content": [{ "item": {} }] } } })).await.json();
    server::evals::run_pending(&server.state).await.unwrap();
    pump(&server).await;
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 1);
        let (headers, body) = &got[0];
        assert!(verify(&secret, headers, body));
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!((event["type"].as_str(), event["object"].as_str()), (Some("eval.run.succeeded"), Some("event")));
        assert_eq!(event["data"]["id"], run["id"]);
    }

    // A dispatcher behind the log: an endpoint made meanwhile gets only what came after it.
    let eval_id = eval["id"].as_str().unwrap().to_owned();
    one_run(&server, &token, &eval_id).await;
    let late = server.json("POST", "/v1/webhook_endpoints", Some(&token), json!({ "name": "late", "url": format!("{base}/ok"), "event_types": ["eval.run.succeeded"] })).await.json();
    one_run(&server, &token, &eval_id).await;
    pump(&server).await;
    {
        let got = received.lock().unwrap();
        let late_secret = late["signing_secret"].as_str().unwrap();
        assert_eq!(got.len(), 4, "two events to the first endpoint, one to the late one");
        assert_eq!(got.iter().filter(|(h, b)| verify(late_secret, h, b)).count(), 1);
    }
    server.json("DELETE", &format!("/v1/webhook_endpoints/{}", late["id"].as_str().unwrap()), Some(&token), json!(null)).await;
    received.lock().unwrap().truncate(1);
    // A read token cannot make or change endpoints.
    let reader = server.token("ann", "read").await;
    assert_eq!(server.json("POST", "/v1/webhook_endpoints", Some(&reader), json!({ "name": "r", "url": format!("{base}/ok"), "event_types": ["repo.push"] })).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.json("POST", &format!("/v1/webhook_endpoints/{id}/rotate_secret"), Some(&reader), json!({})).await.status, StatusCode::FORBIDDEN);

    // A route rolled back is an admin's event: Ann's endpoint does not get it.
    server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny" })).await;
    let deployed_again = server.json("POST", "/api/admin/deployments", Some(ADMIN), json!({ "name": "tiny-b", "repo": "ann/tiny" })).await;
    assert_eq!(deployed_again.status, StatusCode::OK);
    server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny-b", "percent": 10 })).await;
    server.json("POST", "/api/admin/routes/chat/rollback", Some(ADMIN), json!(null)).await;
    let admin_hook = server.json("POST", "/v1/webhook_endpoints", Some(ADMIN), json!({ "name": "ops", "url": format!("{base}/ok"), "event_types": ["route.rolled_back"] })).await.json();
    server.json("POST", "/api/admin/routes/chat/canary", Some(ADMIN), json!({ "deployment": "tiny-b", "percent": 10 })).await;
    server.json("POST", "/api/admin/routes/chat/rollback", Some(ADMIN), json!({ "reason": "bad" })).await;
    pump(&server).await;
    {
        let got = received.lock().unwrap();
        assert_eq!(got.len(), 2, "only the admin's endpoint, only the rollback after it was made");
        let (headers, body) = &got[1];
        assert!(verify(admin_hook["signing_secret"].as_str().unwrap(), headers, body));
        assert_eq!(serde_json::from_str::<Value>(body).unwrap()["data"]["reason"], "bad");
    }

    // Rotation keeping the old secret: both signatures, either verifies.
    let rotated = server.json("POST", &format!("/v1/webhook_endpoints/{id}/rotate_secret"), Some(&token), json!({ "keep_old_secret_active_for_24_hours": true })).await.json();
    let new_secret = rotated["signing_secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let test = server.json("POST", &format!("/v1/webhook_endpoints/{id}/test"), Some(&token), json!({})).await;
    assert_eq!(test.json()["status_code"], 200, "{:?}", test.json());
    {
        let got = received.lock().unwrap();
        let (headers, body) = got.last().unwrap();
        assert_eq!(headers["webhook-signature"].to_str().unwrap().split(' ').count(), 2);
        assert!(verify(&secret, headers, body) && verify(&new_secret, headers, body));
    }

    // A redirect is not followed: the attempt fails and is retried later, never sent elsewhere.
    server.json("POST", &format!("/v1/webhook_endpoints/{id}"), Some(&token), json!({ "url": format!("{base}/moved") })).await;
    let before = received.lock().unwrap().len();
    let run = server.json("POST", &format!("/v1/evals/{}/runs", eval["id"].as_str().unwrap()), Some(&token), json!({ "data_source": { "type": "jsonl", "source": { "type": "file_content", "content": [{ "item": {} }] } } })).await.json();
    server::evals::run_pending(&server.state).await.unwrap();
    pump(&server).await;
    assert_eq!(received.lock().unwrap().len(), before + 1, "one request to /moved, none to /ok");
    let log = server.get(&format!("/v1/webhook_endpoints/{id}/deliveries"), Some(&token)).await.json();
    let newest = &log["data"][0];
    assert_eq!((newest["status"].as_str(), newest["last_status"].as_u64(), newest["attempts"].as_u64()), (Some("pending"), Some(302), Some(1)), "{log}");
    assert_eq!(log["data"][1]["status"], "delivered");
    let _ = run;
    assert!(server.audit_actions().await.iter().any(|a| a == "webhook.rotate_secret"));
    assert_eq!(server.json("DELETE", &format!("/v1/webhook_endpoints/{id}"), Some(&token), json!(null)).await.json()["deleted"], true);
}
