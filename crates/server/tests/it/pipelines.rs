//! Pipelines on the mock runner: a route bound to a repo's branch releases each push through
//! vetting, the candidate's deployment, eval suites and gates (absolute, and against production
//! with a paired bootstrap), then promotion or a canary; a broken revision stops at its gate,
//! a canary that breaks its SLOs is rolled back by the controller, and every step is audited.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{file, header, TestServer, ADMIN};
use crate::openai::{deployed, gguf_with_template, CHATML};

/// A suite scored by perplexity under the model under test, gated absolutely and against
/// production; `deploy` and `canary` as given.
fn pipeline(deploy: &str, canary: &str) -> String {
    format!(
        r#"
deploy: {deploy}
suites:
  - name: wiki
    items:
      - {{text: "The cat sat on the mat."}}
      - {{text: "A quick brown fox jumps over the lazy dog."}}
      - {{text: "Rust is a systems programming language."}}
      - {{text: "Models are evaluated before release."}}
    graders:
      - {{type: perplexity, name: ppl, input: "{{{{item.text}}}}"}}
gates:
  - {{suite: wiki, max: 1000000, max_regression: 0.01}}
{canary}
"#
    )
}

/// Pushes a revision of `ann/tiny` (a new template comment makes a new file) with a pipeline.
async fn push(server: &TestServer, token: &str, tag: &str, spec: &str) -> String {
    let template = format!("{CHATML}{{# {tag} #}}");
    let reply = server.commit(token, "ann/tiny", &[header(tag), file("tiny.gguf", &gguf_with_template(&template)), file(".mantle/pipeline.yaml", spec.as_bytes())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    reply.json()["commitOid"].as_str().unwrap().to_owned()
}

/// Steps the pipeline worker (with scans, eval runs and the rollout controller) until the run
/// of `commit` ends; the run.
async fn finish(server: &TestServer, commit: &str, traffic: Option<&[String]>) -> Value {
    for _ in 0..60 {
        server::pipelines::tick(&server.state, "test").await.unwrap();
        server::evals::run_pending(&server.state).await.unwrap();
        if let Some(callers) = traffic {
            for caller in callers {
                server.json("POST", "/v1/completions", Some(caller), json!({ "model": "chat", "prompt": "hi", "max_tokens": 2 })).await;
            }
            server.state.usage.flush().await;
            server.state.hub.step_rollouts().await.unwrap();
        }
        let runs = server.get("/api/admin/pipelines/runs?route=chat", Some(ADMIN)).await.json();
        if let Some(run) = runs.as_array().unwrap().iter().find(|r| r["commit"] == commit) {
            if run["status"] != "running" {
                return run.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    panic!("the pipeline of {commit} did not end");
}

#[tokio::test]
async fn a_pipeline_promotes_a_good_revision_blocks_a_broken_one_and_rolls_back_a_bad_canary() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    assert_eq!(server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny" })).await.status, StatusCode::OK);

    // Binding needs a site admin, an existing route and repo, and a valid spec when one is given.
    let bind = json!({ "repo": "ann/tiny", "branch": "main" });
    assert_eq!(server.json("PUT", "/api/admin/routes/chat/pipeline", Some(&token), bind.clone()).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.json("PUT", "/api/admin/routes/nope/pipeline", Some(ADMIN), bind.clone()).await.status, StatusCode::NOT_FOUND);
    let reply = server.json("PUT", "/api/admin/routes/chat/pipeline", Some(ADMIN), json!({ "repo": "ann/tiny", "spec": "gates: [{suite: x, min: 1}]" })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    assert!(reply.json()["error"].as_str().unwrap().contains("names no suite x"), "{:?}", reply.json());
    let reply = server.json("PUT", "/api/admin/routes/chat/pipeline", Some(ADMIN), bind).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(server.get("/api/admin/pipelines", Some(ADMIN)).await.json()[0]["repo"], "ann/tiny");

    // A good revision: vetted, deployed, evaluated against production (the same weights score
    // the same), gated and promoted.
    let good = push(&server, &token, "v2", &pipeline("{max_batch: 2}", "")).await;
    let run = finish(&server, &good, None).await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let candidate = format!("chat-{}", &good[..12]);
    assert_eq!(run["state"]["candidate"], candidate);
    assert_eq!(run["state"]["production"], "tiny");
    let gate = &run["state"]["gates"][0];
    assert_eq!((gate["passed"].as_bool(), gate["metric"].as_str(), gate["regression"].as_f64()), (Some(true), Some("perplexity"), Some(0.0)), "{gate}");
    assert_eq!(gate["items"], 4);
    let route = server.get("/api/admin/routes/chat", Some(ADMIN)).await.json();
    assert_eq!(route["stable"], candidate.as_str());
    let history = server.get("/api/admin/routes/chat/history", Some(ADMIN)).await.json();
    let promotion = history.as_array().unwrap().last().unwrap();
    assert_eq!((promotion["action"].as_str(), promotion["actor"].as_str()), (Some("promote"), Some("admin")));
    assert_eq!(promotion["evidence"]["eval_runs"].as_array().unwrap().len(), 1, "{promotion}");
    assert_eq!(promotion["evidence"]["extra"]["pipeline"], run["id"]);
    // The eval runs it made are ordinary OpenAI eval runs, with the revision they used.
    let suite = &run["state"]["suites"][0];
    let eval_run = server.get(&format!("/v1/evals/{}/runs/{}", suite["candidate"]["eval"].as_str().unwrap(), suite["candidate"]["run"].as_str().unwrap()), Some(ADMIN)).await.json();
    assert_eq!(eval_run["status"], "completed", "{eval_run}");

    // A broken revision (every request fails) stops
    // at its gate, production untouched and the candidate removed.
    let broken = push(&server, &token, "v3", &pipeline("{context: 777}", "")).await;
    let run = finish(&server, &broken, None).await;
    assert_eq!((run["status"].as_str(), run["stage"].as_str()), (Some("failed"), Some("gate")), "{run:#}");
    assert!(run["state"]["reason"].as_str().unwrap().contains("gates failed"), "{run:#}");
    assert_eq!(server.get("/api/admin/routes/chat", Some(ADMIN)).await.json()["stable"], candidate.as_str());
    assert!(server.get("/api/admin/deployments", Some(ADMIN)).await.json().as_array().unwrap().iter().all(|d| d["name"] != format!("chat-{}", &broken[..12])));

    // A revision whose canary breaks its SLO under traffic: rolled back by the controller, and
    // the pipeline says so.
    // Callers on both sides of a 50% canary (buckets are sticky per name), so both get traffic.
    let mut callers = Vec::new();
    let (mut on_canary, mut on_stable) = (0, 0);
    for i in 0.. {
        let name = format!("caller{i}");
        if domain::routes::bucket("chat", &name) < 5000 {
            on_canary += 1;
        } else if on_stable < 2 {
            on_stable += 1;
        } else {
            continue;
        }
        callers.push(server.user(&name, None, "read").await);
        if on_canary >= 3 && on_stable >= 2 {
            break;
        }
    }
    let canary = "canary: {steps: [50, 100], bake_secs: 0, min_requests: 2, slo: {max_error_rate: 0.1}}";
    let spec = format!("deploy: {{context: 777}}\n{canary}\n");
    let bad = push(&server, &token, "v4", &spec).await;
    let run = finish(&server, &bad, Some(&callers)).await;
    assert_eq!((run["status"].as_str(), run["stage"].as_str()), (Some("failed"), Some("canary")), "{run:#}");
    assert!(run["state"]["reason"].as_str().unwrap().contains("rolled back"), "{run:#}");
    let route = server.get("/api/admin/routes/chat", Some(ADMIN)).await.json();
    assert_eq!((route["stable"].as_str(), route["canary"].as_str()), (Some(candidate.as_str()), None));
    let history = server.get("/api/admin/routes/chat/history", Some(ADMIN)).await.json();
    let last = history.as_array().unwrap().last().unwrap();
    assert_eq!((last["action"].as_str(), last["actor"].as_str()), (Some("rollback"), Some("system")), "{last}");

    // Every step audited; the runs listed newest first.
    let actions = server.audit_actions().await;
    for action in ["route.pipeline.set", "pipeline.run.create", "pipeline.run.stage", "pipeline.run.succeeded", "pipeline.run.failed", "route.promote", "route.rollback"] {
        assert!(actions.iter().any(|a| a == action), "{action} missing from {actions:?}");
    }
    let runs = server.get("/api/admin/pipelines/runs", Some(ADMIN)).await.json();
    let commits: Vec<&str> = runs.as_array().unwrap().iter().map(|r| r["commit"].as_str().unwrap()).collect();
    assert_eq!(commits, [bad.as_str(), broken.as_str(), good.as_str()]);
    assert_eq!(server.get("/api/admin/pipelines/runs", Some(&token)).await.status, StatusCode::FORBIDDEN);
    let reply = server.json("POST", &format!("/api/admin/pipelines/runs/{}/cancel", run["id"].as_str().unwrap()), Some(ADMIN), json!({})).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_revision_without_a_pipeline_file_or_blocked_by_vetting_stops_and_says_why() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    server.json("PUT", "/api/admin/routes/chat", Some(ADMIN), json!({ "stable": "tiny" })).await;
    assert_eq!(server.json("PUT", "/api/admin/routes/chat/pipeline", Some(ADMIN), json!({ "repo": "ann/tiny" })).await.status, StatusCode::OK);
    let reply = server.commit(&token, "ann/tiny", &[header("no pipeline"), file("notes.txt", b"x")]).await;
    let commit = reply.json()["commitOid"].as_str().unwrap().to_owned();
    server::scanner::scan_pending(&server.state).await.unwrap();
    let run = finish(&server, &commit, None).await;
    assert_eq!((run["status"].as_str(), run["stage"].as_str()), (Some("failed"), Some("vet")), "{run:#}");
    assert!(run["state"]["reason"].as_str().unwrap().contains(".mantle/pipeline.yaml"), "{run:#}");

    // A hostile pipeline file (an alias bomb) is a failed run with a reason, not a hang.
    let bomb = "a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\n";
    let commit = push(&server, &token, "bomb", bomb).await;
    let run = finish(&server, &commit, None).await;
    assert_eq!(run["status"], "failed");
    assert!(run["state"]["reason"].as_str().unwrap().contains("aliases"), "{run:#}");
    assert_eq!(server.get("/api/admin/routes/chat", Some(ADMIN)).await.json()["stable"], "tiny");

    // A pipeline file naming another tenant's private data: the run acts as the admin, but reads
    // only what the pusher could; it stops before any eval touches the data.
    let bob = server.user("bob", None, "write").await;
    assert_eq!(server.json("POST", "/api/repos/create", Some(&bob), json!({ "name": "secret", "type": "dataset", "private": true })).await.status, StatusCode::OK);
    let mut body = Vec::new();
    for line in [header("data"), file("x.jsonl", b"{\"text\": \"bob's secret\"}\n")] {
        body.extend(serde_json::to_vec(&line).unwrap());
        body.push(b'\n');
    }
    assert_eq!(server.send("POST", "/api/datasets/bob/secret/commit/main", Some(&bob), Some("application/x-ndjson"), body).await.status, StatusCode::OK);
    let spec = "suites:\n  - name: s\n    data: datasets/bob/secret@main:x.jsonl\n    graders: [{type: perplexity, name: p, input: \"{{item.text}}\"}]\ngates: [{suite: s, max: 1000000}]\n";
    let commit = push(&server, &token, "snoop", spec).await;
    let run = finish(&server, &commit, None).await;
    assert_eq!((run["status"].as_str(), run["stage"].as_str()), (Some("failed"), Some("evaluate")), "{run:#}");
    assert!(run["state"]["reason"].as_str().unwrap().contains("may not read it"), "{run:#}");
    assert!(run["state"]["suites"].is_null(), "no eval was created: {run:#}");
}
