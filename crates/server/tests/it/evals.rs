//! The Evals API on the mock runner: evals and runs in OpenAI's shapes, graded by the worker
//! (string checks, text similarity, a model judge under a schema), output items, hub data pinned
//! to its commit, per-grader intervals, cancellation, isolation between accounts, bad input.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{file, header, TestServer};
use crate::openai::{assert_openai_error, deployed};

fn qa_eval() -> Value {
    json!({
        "name": "capitals",
        "data_source_config": { "type": "custom", "item_schema": { "type": "object", "properties": { "question": { "type": "string" }, "answer": { "type": "string" } }, "required": ["question", "answer"] }, "include_sample_schema": true },
        "testing_criteria": [
            { "type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "operation": "eq" },
            { "type": "text_similarity", "name": "close", "input": "{{sample.output_text}}", "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.8 },
        ],
        "metadata": { "team": "search" },
    })
}

async fn create(server: &TestServer, token: &str, body: Value) -> Value {
    let reply = server.json("POST", "/v1/evals", Some(token), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    reply.json()
}

async fn run(server: &TestServer, token: &str, eval: &str, body: Value) -> Value {
    let reply = server.json("POST", &format!("/v1/evals/{eval}/runs"), Some(token), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["status"], "queued");
    server::evals::run_pending(&server.state).await.unwrap();
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    server.get(&format!("/v1/evals/{eval}/runs/{id}"), Some(token)).await.json()
}

#[tokio::test]
async fn a_completions_run_samples_the_model_and_grades_every_item() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let eval = create(&server, &token, qa_eval()).await;
    assert_eq!(eval["object"], "eval");
    assert_eq!(eval["data_source_config"]["schema"]["required"], json!(["item", "sample"]));
    let eval_id = eval["id"].as_str().unwrap();
    // The mock answers `[[say:TEXT]]` with TEXT exactly: the first two items answer right.
    let items = json!([
        { "item": { "question": "[[say:Paris]]", "answer": "Paris" } },
        { "item": { "question": "[[say:Berlin]]", "answer": "Berlin" } },
        { "item": { "question": "[[say:Lyons]]", "answer": "Lyon" } },
        { "item": { "question": "[[say:Rome]]", "answer": "Madrid" } },
    ]);
    let body = json!({ "name": "tiny on capitals", "data_source": { "type": "completions", "model": "tiny", "source": { "type": "file_content", "content": items }, "input_messages": { "type": "template", "template": [{ "role": "user", "content": "{{item.question}}" }] }, "sampling_params": { "temperature": 0, "max_completion_tokens": 16 } } });
    let done = run(&server, &token, eval_id, body).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result_counts"], json!({ "total": 4, "passed": 2, "failed": 2, "errored": 0 }));
    assert!(done["revision"].as_str().unwrap().starts_with("ann/tiny@"));
    let criteria = done["per_testing_criteria_results"].as_array().unwrap();
    assert_eq!(criteria[0]["testing_criteria"], "exact");
    assert_eq!((criteria[0]["passed"].as_u64(), criteria[0]["failed"].as_u64()), (Some(2), Some(2)));
    // "Lyons" is close to "Lyon" (fuzzy 8/9): three pass the similarity grader.
    assert_eq!(criteria[1]["passed"], 3);
    let (low, high) = (criteria[0]["pass_rate_ci95"][0].as_f64().unwrap(), criteria[0]["pass_rate_ci95"][1].as_f64().unwrap());
    assert!(low < 0.5 && 0.5 < high);
    let usage = &done["per_model_usage"][0];
    assert_eq!((usage["model_name"].as_str(), usage["invocation_count"].as_u64()), (Some("tiny"), Some(4)));
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 40);

    let run_id = done["id"].as_str().unwrap();
    let listed = server.get(&format!("/v1/evals/{eval_id}/runs/{run_id}/output_items?limit=3"), Some(&token)).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    assert_eq!(listed["has_more"], true);
    let first = &listed["data"][0];
    assert_eq!(first["object"], "eval.run.output_item");
    assert_eq!(first["status"], "pass");
    assert_eq!(first["sample"]["output"][0]["content"], "Paris");
    assert_eq!(first["results"][0], json!({ "name": "exact", "type": "string_check", "score": 1.0, "passed": true }));
    let rest = server.get(&format!("/v1/evals/{eval_id}/runs/{run_id}/output_items?after={}", listed["last_id"].as_str().unwrap()), Some(&token)).await.json();
    assert_eq!(rest["data"][0]["datasource_item"]["answer"], "Madrid");
    let failed = server.get(&format!("/v1/evals/{eval_id}/runs/{run_id}/output_items?status=fail"), Some(&token)).await.json();
    assert_eq!(failed["data"].as_array().unwrap().len(), 2);
    let one = server.get(&format!("/v1/evals/{eval_id}/runs/{run_id}/output_items/{}", first["id"].as_str().unwrap()), Some(&token)).await;
    assert_eq!(one.json()["id"], first["id"]);

    // A release route is a model too: the run records the revision that answered.
    assert_eq!(server.json("PUT", "/api/admin/routes/qa", Some(crate::harness::ADMIN), json!({ "stable": "tiny" })).await.status, StatusCode::OK);
    let body = json!({ "data_source": { "type": "completions", "model": "qa", "source": { "type": "file_content", "content": [{ "item": { "question": "[[say:Paris]]", "answer": "Paris" } }] }, "input_messages": { "type": "template", "template": [{ "role": "user", "content": "{{item.question}}" }] } } });
    let routed = run(&server, &token, eval_id, body).await;
    assert_eq!((routed["status"].as_str(), routed["result_counts"]["passed"].as_u64()), (Some("completed"), Some(1)), "{routed}");
    assert_eq!(routed["revision"], done["revision"]);

    // So is a revision of a repo the caller writes, without a deployment: pinned to its commit.
    let commit = done["revision"].as_str().unwrap().split_once('@').unwrap().1.to_owned();
    let source = json!({ "type": "file_content", "content": [{ "item": { "question": "[[say:Paris]]", "answer": "Paris" } }] });
    let template = json!({ "type": "template", "template": [{ "role": "user", "content": "{{item.question}}" }] });
    let body = json!({ "data_source": { "type": "completions", "model": "ann/tiny@main", "source": source, "input_messages": template } });
    let pinned = run(&server, &token, eval_id, body.clone()).await;
    assert_eq!((pinned["status"].as_str(), pinned["result_counts"]["passed"].as_u64()), (Some("completed"), Some(1)), "{pinned}");
    assert_eq!(pinned["data_source"]["model"], format!("ann/tiny@{commit}"));
    assert_eq!(pinned["revision"], done["revision"]);
    // A reader of the repo may not load its revisions; a public API never resolves one.
    let reader = server.user("reader", None, "write").await;
    let theirs = create(&server, &reader, qa_eval()).await;
    let reply = server.json("POST", &format!("/v1/evals/{}/runs", theirs["id"].as_str().unwrap()), Some(&reader), body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    assert_eq!(reply.json()["error"]["param"], "data_source.model");
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), json!({ "model": "ann/tiny@main", "messages": [{ "role": "user", "content": "hi" }] })).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // Usage is accounted like any request, under the run's API name.
    let actions = server.audit_actions().await;
    for action in ["eval.create", "eval.run.create", "eval.run.succeeded"] {
        assert!(actions.iter().any(|a| a == action), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn a_model_judge_answers_under_a_schema_of_its_labels() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let eval = create(
        &server,
        &token,
        json!({
            "name": "tone",
            "data_source_config": { "type": "custom", "item_schema": { "type": "object", "properties": { "verdict": { "type": "string" } } } },
            "testing_criteria": [{ "type": "label_model", "name": "judge", "model": "tiny", "input": [{ "role": "user", "content": "Rate: {{sample.output_text}} [[say:{{item.verdict}}]]" }], "labels": ["good", "bad"], "passing_labels": ["good"] }],
        }),
    )
    .await;
    let eval_id = eval["id"].as_str().unwrap();
    let content = json!([
        { "item": { "verdict": "{\"label\": \"good\"}" }, "sample": { "output_text": "fine" } },
        { "item": { "verdict": "{\"label\": \"bad\"}" }, "sample": { "output_text": "rude" } },
    ]);
    let done = run(&server, &token, eval_id, json!({ "data_source": { "type": "jsonl", "source": { "type": "file_content", "content": content } } })).await;
    assert_eq!(done["result_counts"], json!({ "total": 2, "passed": 1, "failed": 1, "errored": 0 }), "{done}");
    let items = server.get(&format!("/v1/evals/{eval_id}/runs/{}/output_items", done["id"].as_str().unwrap()), Some(&token)).await.json();
    assert_eq!(items["data"][0]["results"][0]["sample"]["label"], "good");
    assert_eq!(items["data"][1]["results"][0]["sample"]["label"], "bad");
}

#[tokio::test]
async fn hub_data_is_pinned_to_its_commit_and_evals_stay_with_their_owner() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let reply = server.json("POST", "/api/repos/create", Some(&token), json!({ "name": "qa", "type": "dataset", "private": true })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let lines = "{\"question\": \"[[say:Paris]]\", \"answer\": \"Paris\"}\n{\"item\": {\"question\": \"[[say:Oslo]]\", \"answer\": \"Oslo\"}}\n";
    let mut body = Vec::new();
    let csv = "question,answer\n\"[[say:Paris]]\",Paris\n\"[[say:Oslo, Norway]]\",\"Oslo, Norway\"\n\"[[say:Rome]]\",Madrid\n";
    for line in [header("data"), file("test.jsonl", lines.as_bytes()), file("test.csv", csv.as_bytes()), file("broken.csv", b"question,answer\nonly-one-field\n")] {
        body.extend(serde_json::to_vec(&line).unwrap());
        body.push(b'\n');
    }
    let reply = server.send("POST", "/api/datasets/ann/qa/commit/main", Some(&token), Some("application/x-ndjson"), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let commit = reply.json()["commitOid"].as_str().unwrap().to_owned();
    let eval = create(&server, &token, qa_eval()).await;
    let eval_id = eval["id"].as_str().unwrap();
    let source = json!({ "type": "file_id", "id": "datasets/ann/qa@main:test.jsonl" });
    let body = json!({ "data_source": { "type": "completions", "model": "tiny", "source": source, "input_messages": { "type": "template", "template": [{ "role": "user", "content": "{{item.question}}" }] } } });
    let done = run(&server, &token, eval_id, body.clone()).await;
    assert_eq!(done["result_counts"]["passed"], 2, "{done}");
    assert_eq!(done["data_revision"], format!("datasets/ann/qa@{commit}:test.jsonl"));
    assert_eq!(done["data_source"]["source"]["id"], format!("datasets/ann/qa@{commit}:test.jsonl"));
    // CSV with a header row (quoted fields with commas); a ragged file is refused naming it;
    // parquet is named as not read.
    let csv_body = json!({ "data_source": { "type": "completions", "model": "tiny", "source": { "type": "file_id", "id": "datasets/ann/qa@main:test.csv" }, "input_messages": { "type": "template", "template": [{ "role": "user", "content": "{{item.question}}" }] } } });
    let done_csv = run(&server, &token, eval_id, csv_body).await;
    assert_eq!(done_csv["result_counts"], json!({ "total": 3, "passed": 2, "failed": 1, "errored": 0 }), "{done_csv}");
    for (path, needle) in [("broken.csv", "CSV record 1"), ("test.parquet", "parquet")] {
        let bad = json!({ "data_source": { "type": "jsonl", "source": { "type": "file_id", "id": format!("datasets/ann/qa@main:{path}") } } });
        let reply = server.json("POST", &format!("/v1/evals/{eval_id}/runs"), Some(&token), bad).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
        assert!(reply.json()["error"]["message"].as_str().unwrap().contains(needle), "{:?}", reply.json());
    }

    // Bob sees none of it, and cannot read Ann's private data through a run of his own.
    let bob = server.user("bob", None, "write").await;
    assert_eq!(server.get(&format!("/v1/evals/{eval_id}"), Some(&bob)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get(&format!("/v1/evals/{eval_id}/runs/{}", done["id"].as_str().unwrap()), Some(&bob)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.json("POST", &format!("/v1/evals/{eval_id}/runs"), Some(&bob), body.clone()).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/v1/evals", Some(&bob)).await.json()["data"], json!([]));
    let his = create(&server, &bob, qa_eval()).await;
    let reply = server.json("POST", &format!("/v1/evals/{}/runs", his["id"].as_str().unwrap()), Some(&bob), body).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{:?}", reply.json());
    assert_eq!(server.json("DELETE", &format!("/v1/evals/{eval_id}"), Some(&bob), json!(null)).await.status, StatusCode::NOT_FOUND);
    // Ann deletes hers: runs and items go with it.
    assert_eq!(server.json("DELETE", &format!("/v1/evals/{eval_id}"), Some(&token), json!(null)).await.json()["deleted"], true);
    assert_eq!(server.get(&format!("/v1/evals/{eval_id}"), Some(&token)).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_evals_and_runs_are_refused_naming_the_field_and_a_canceled_run_stays_canceled() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let with = |pointer: &str, value: Value| {
        let mut body = qa_eval();
        *body.pointer_mut(pointer).unwrap() = value;
        body
    };
    cases.push((with("/testing_criteria/0/type", json!("python")), "testing_criteria[0].type"));
    cases.push((with("/testing_criteria/0/operation", json!("regex")), "testing_criteria[0].operation"));
    cases.push((with("/testing_criteria/1/evaluation_metric", json!("meteor")), "testing_criteria[1].evaluation_metric"));
    cases.push((with("/data_source_config/type", json!("logs")), "data_source_config.type"));
    cases.push((with("/data_source_config/item_schema", json!({ "type": "object", "properties": { "a": { "$ref": "http://example.com/x" } } })), "data_source_config.item_schema"));
    cases.push((with("/testing_criteria", json!([])), "testing_criteria"));
    cases.push((with("/metadata", json!({ "a": 1 })), "metadata"));
    for (body, param) in cases {
        let reply = server.json("POST", "/v1/evals", Some(&token), body).await;
        assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some(param));
    }
    // A name of 300 non-ASCII characters is refused too.
    let reply = server.json("POST", "/v1/evals", Some(&token), with("/name", json!("é".repeat(300)))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let eval = create(&server, &token, qa_eval()).await;
    let eval_id = eval["id"].as_str().unwrap();
    let runs = format!("/v1/evals/{eval_id}/runs");
    let template = json!({ "type": "template", "template": [{ "role": "user", "content": "{{item.question}}" }] });
    for (data_source, param) in [
        (json!({ "type": "jsonl", "source": { "type": "file_content", "content": [{ "item": { "question": "q" } }] } }), "data_source.source"),
        (json!({ "type": "completions", "model": "nope", "source": { "type": "file_content", "content": [{ "item": { "question": "q", "answer": "a" } }] }, "input_messages": template }), "data_source.model"),
        (
            json!({ "type": "completions", "model": "tiny", "source": { "type": "file_content", "content": [{ "item": { "question": "q", "answer": "a" } }] }, "input_messages": template, "sampling_params": { "temperature": 9 } }),
            "data_source.sampling_params.temperature",
        ),
        (
            json!({ "type": "completions", "model": "tiny", "source": { "type": "file_content", "content": [{ "item": { "question": "q", "answer": "a" } }] }, "input_messages": template, "sampling_params": { "tools": [] } }),
            "data_source.sampling_params.tools",
        ),
        (json!({ "type": "jsonl", "source": { "type": "file_id", "id": "file-abc123" } }), "data_source.source.id"),
        (json!({ "type": "responses", "source": { "type": "file_content", "content": [] } }), "data_source.type"),
    ] {
        let reply = server.json("POST", &runs, Some(&token), json!({ "data_source": data_source })).await;
        assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some(param));
    }
    assert_eq!(server.get(&runs, Some(&token)).await.json()["data"], json!([]), "nothing was queued");

    let reply = server.json("POST", &runs, Some(&token), json!({ "data_source": { "type": "jsonl", "source": { "type": "file_content", "content": [{ "item": { "question": "q", "answer": "a" }, "sample": { "output_text": "a" } }] } } })).await;
    let run_id = reply.json()["id"].as_str().unwrap().to_owned();
    let canceled = server.json("POST", &format!("{runs}/{run_id}/cancel"), Some(&token), json!(null)).await;
    assert_eq!(canceled.json()["status"], "canceled");
    assert_eq!(server::evals::run_pending(&server.state).await.unwrap(), 0);
    assert_eq!(server.get(&format!("{runs}?status=canceled"), Some(&token)).await.json()["data"][0]["id"], run_id);
    assert_eq!(server.json("DELETE", &format!("{runs}/{run_id}"), Some(&token), json!(null)).await.json()["deleted"], true);
    assert_eq!(server.get(&format!("{runs}/{run_id}"), Some(&token)).await.status, StatusCode::NOT_FOUND);
    // A read token may look but not start work.
    let reader = server.token("ann", "read").await;
    assert_eq!(server.get(&format!("/v1/evals/{eval_id}"), Some(&reader)).await.status, StatusCode::OK);
    assert_eq!(server.json("POST", "/v1/evals", Some(&reader), qa_eval()).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn likelihood_graders_score_perplexity_and_multiple_choice_from_the_models_own_logprobs() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let eval = create(
        &server,
        &token,
        json!({
            "name": "likelihood",
            "data_source_config": { "type": "custom", "item_schema": { "type": "object" } },
            "testing_criteria": [
                { "type": "perplexity", "name": "ppl", "model": "tiny", "input": "{{item.text}}", "unit": "byte" },
                { "type": "multiple_choice", "name": "mc", "model": "tiny", "input": "{{item.q}}", "choices": "{{item.choices}}", "answer": "{{item.answer}}" },
            ],
        }),
    )
    .await;
    let eval_id = eval["id"].as_str().unwrap();
    // The mock answers after `[[say: yes]] ... assistant\n` with " yes": it is the likeliest choice.
    let content = json!([
        { "item": { "text": "hello world", "q": "[[say: yes]] assistant\n", "choices": ["no", "yes", "maybe"], "answer": "1" } },
        { "item": { "text": "the cat", "q": "[[say: yes]] assistant\n", "choices": ["no", "yes"], "answer": "no" } },
    ]);
    let done = run(&server, &token, eval_id, json!({ "data_source": { "type": "jsonl", "source": { "type": "file_content", "content": content } } })).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result_counts"]["errored"], 0, "{done}");
    // Every byte scored after the EOS the mock has for a prefix (it has no BOS).
    let direct = |text: &str| -> f64 {
        let tokens: Vec<u32> = std::iter::once(engine::mock::EOS).chain(text.bytes().map(u32::from)).collect();
        (1..tokens.len()).map(|i| crate::likelihood::mock_logprob(&tokens[..i], tokens[i])).sum()
    };
    let (a, b) = (direct("hello world"), direct("the cat"));
    let ppl = &done["per_testing_criteria_results"][0];
    assert!((ppl["perplexity"].as_f64().unwrap() - (-(a + b) / 18.0).exp()).abs() < 1e-3, "{ppl}");
    assert!((ppl["loglikelihood"].as_f64().unwrap() - (a + b)).abs() < 1e-3);
    let mc = &done["per_testing_criteria_results"][1];
    assert_eq!((mc["acc"].as_f64(), mc["passed"].as_u64()), (Some(0.5), Some(1)), "{mc}");
    let items = server.get(&format!("/v1/evals/{eval_id}/runs/{}/output_items", done["id"].as_str().unwrap()), Some(&token)).await.json();
    let first = &items["data"][0]["results"];
    assert!((first[0]["score"].as_f64().unwrap() - (-a / 11.0).exp()).abs() < 1e-3);
    assert_eq!(first[1]["sample"]["chosen"], 1);
    let lls = first[1]["sample"]["loglikelihoods"].as_array().unwrap();
    assert!(lls[1].as_f64().unwrap() > lls[0].as_f64().unwrap());
}
