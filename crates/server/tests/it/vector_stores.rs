//! Vector stores on the mock encoder (byte tokens, 64 per input): files attached and ingested by
//! the job worker (chunked in the model's tokens, embedded), hybrid search with filters and
//! scores in [0, 1], batches, hostile and unsupported files as per-file errors, and tenants kept
//! apart.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::files::upload;
use crate::harness::TestServer;
use crate::openai::{deployed, deployed_encoder};

async fn file(server: &TestServer, token: &str, name: &str, content: &str) -> String {
    let reply = upload(server, token, &[("purpose", "assistants")], Some((name, content.as_bytes()))).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    reply.json()["id"].as_str().unwrap().to_owned()
}

/// A request as `token`, acting for `org` when given (`OpenAI-Organization`).
async fn send_as(server: &TestServer, method: &str, uri: &str, token: &str, org: Option<&str>, content_type: &str, body: Vec<u8>) -> crate::harness::Reply {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str()), ("content-type", content_type)];
    if let Some(org) = org {
        headers.push(("openai-organization", org));
    }
    server.send_with(method, uri, &headers, body).await
}

async fn search(server: &TestServer, token: &str, store: &str, body: Value) -> Value {
    let reply = server.json("POST", &format!("/v1/vector_stores/{store}/search"), Some(token), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    reply.json()
}

#[tokio::test]
async fn files_are_ingested_and_searched_with_filters() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let cats = file(&server, &token, "cats.txt", "Cats are small domesticated carnivorous mammals. Cats purr when content and hunt mice at night.").await;
    let market = file(&server, &token, "market.md", "# Markets\nThe stock market fell sharply on Monday as bond yields rose.").await;
    let page = file(&server, &token, "page.html", "<html><head><script>var cats = 1;</script></head><body><p>Dogs are loyal pets.</p></body></html>").await;

    let reply = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "name": "kb", "file_ids": [cats, market] })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let store = reply.json();
    let id = store["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("vs_"));
    assert_eq!(store["object"], "vector_store");
    assert_eq!(store["embedding_model"], "enc", "the only embedding deployment is the default");
    assert_eq!(store["metadata"]["embedding_model"], "enc");
    assert!(store["embedding_revision"].as_str().unwrap().starts_with("ann/enc@"));
    assert_eq!(store["file_counts"]["in_progress"], 2);

    assert_eq!(server::retrieval::ingest_pending(&server.state).await.unwrap(), 2);
    let store = server.get(&format!("/v1/vector_stores/{id}"), Some(&token)).await.json();
    assert_eq!(store["status"], "completed");
    assert_eq!(store["file_counts"]["completed"], 2);
    assert!(store["usage_bytes"].as_u64().unwrap() > 0);
    let attached = server.get(&format!("/v1/vector_stores/{id}/files/{cats}"), Some(&token)).await.json();
    assert_eq!(attached["status"], "completed");
    // Chunked in the model's tokens: the mock takes 64, so a chunk holds at most 62.
    assert_eq!(attached["chunking_strategy"]["static"]["max_chunk_size_tokens"], 62);

    let found = search(&server, &token, &id, json!({ "query": "cats hunt mice" })).await;
    assert_eq!(found["object"], "vector_store.search_results.page");
    let data = found["data"].as_array().unwrap();
    assert_eq!(data[0]["file_id"], cats.as_str(), "{found}");
    assert_eq!(data[0]["filename"], "cats.txt");
    assert!(data.iter().all(|d| (0.0..=1.0).contains(&d["score"].as_f64().unwrap())));
    assert!(data[0]["content"][0]["text"].as_str().unwrap().contains("Cats"));

    // Attributes filter inside the search: the only finance file is found even at one result.
    let reply = server.json("POST", &format!("/v1/vector_stores/{id}/files"), Some(&token), json!({ "file_id": page, "attributes": { "kind": "pets", "year": 2024 } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server.json("POST", &format!("/v1/vector_stores/{id}/files/{market}"), Some(&token), json!({ "attributes": { "kind": "finance", "year": 2023 } })).await;
    server::retrieval::ingest_pending(&server.state).await.unwrap();
    let filtered = search(&server, &token, &id, json!({ "query": "cats", "max_num_results": 1, "filters": { "type": "eq", "key": "kind", "value": "finance" } })).await;
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["data"][0]["file_id"], market.as_str());
    let compound = json!({ "type": "and", "filters": [{ "type": "eq", "key": "kind", "value": "pets" }, { "type": "gte", "key": "year", "value": 2024 }] });
    let pets = search(&server, &token, &id, json!({ "query": "loyal dogs", "filters": compound, "ranking_options": { "hybrid_search": { "embedding_weight": 0, "text_weight": 1 } } })).await;
    assert_eq!(pets["data"][0]["file_id"], page.as_str());
    assert!(!pets["data"][0]["content"][0]["text"].as_str().unwrap().contains("var cats"), "scripts are not text");
    // A threshold of 1 keeps only a perfect score.
    let strict = search(&server, &token, &id, json!({ "query": "stock market", "ranking_options": { "score_threshold": 1.0, "hybrid_search": { "embedding_weight": 0, "text_weight": 1 } } })).await;
    assert_eq!(strict["data"].as_array().unwrap().len(), 1);

    // Detached, a file is no longer found.
    let reply = server.send("DELETE", &format!("/v1/vector_stores/{id}/files/{market}"), Some(&token), None, Vec::new()).await;
    assert_eq!(reply.json()["deleted"], true);
    let gone = search(&server, &token, &id, json!({ "query": "stock market bond yields", "ranking_options": { "hybrid_search": { "embedding_weight": 0, "text_weight": 1 } } })).await;
    assert!(gone["data"].as_array().unwrap().iter().all(|d| d["file_id"] != market.as_str()), "{gone}");

    let actions = server.audit_actions().await;
    for action in ["vector_store.create", "vector_store.files.attach", "vector_store.file.update", "vector_store.file.detach"] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

#[tokio::test]
async fn batches_bad_files_and_bad_requests() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let store = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "name": "kb", "chunking_strategy": { "type": "static", "static": { "max_chunk_size_tokens": 40, "chunk_overlap_tokens": 10 } } })).await;
    assert_eq!(store.status, StatusCode::BAD_REQUEST, "40 is under OpenAI's minimum of 100");
    let id = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "name": "kb" })).await.json()["id"].as_str().unwrap().to_owned();
    let good = file(&server, &token, "a.txt", &"plain words ".repeat(200)).await;
    let pdf = file(&server, &token, "paper.pdf", "%PDF-1.7 binary").await;
    let binary = upload(&server, &token, &[("purpose", "assistants")], Some(("blob.txt", &[0xff, 0xfe, 0x00, 0x01][..]))).await.json()["id"].as_str().unwrap().to_owned();
    let reply = server.json("POST", &format!("/v1/vector_stores/{id}/file_batches"), Some(&token), json!({ "file_ids": [good, pdf, binary], "attributes": { "source": "batch" } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let batch = reply.json();
    assert!(batch["id"].as_str().unwrap().starts_with("vsfb_"));
    assert_eq!(batch["status"], "in_progress");
    server::retrieval::ingest_pending(&server.state).await.unwrap();
    let batch = server.get(&format!("/v1/vector_stores/{id}/file_batches/{}", batch["id"].as_str().unwrap()), Some(&token)).await.json();
    assert_eq!(batch["status"], "completed");
    assert_eq!(batch["file_counts"], json!({ "in_progress": 0, "completed": 1, "failed": 2, "cancelled": 0, "total": 3 }));
    let failed = server.get(&format!("/v1/vector_stores/{id}/files/{pdf}"), Some(&token)).await.json();
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["last_error"]["code"], "unsupported_file");
    let long = server.get(&format!("/v1/vector_stores/{id}/files/{good}"), Some(&token)).await.json();
    assert_eq!(long["attributes"]["source"], "batch");
    let listed = server.get(&format!("/v1/vector_stores/{id}/files?filter=failed"), Some(&token)).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);

    for (body, param) in [
        (json!({ "query": "x", "filters": { "type": "like", "key": "a", "value": 1 } }), "filters"),
        (json!({ "query": "x", "max_num_results": 0 }), "max_num_results"),
        (json!({ "query": "x", "max_num_results": 101 }), "max_num_results"),
        (json!({ "query": "" }), "query"),
        (json!({ "query": "x", "ranking_options": { "score_threshold": 2 } }), "ranking_options.score_threshold"),
        (json!({ "query": "x", "rewrite_query": true }), "rewrite_query"),
        (json!({ "query": "x", "bogus": 1 }), "bogus"),
    ] {
        let reply = server.json("POST", &format!("/v1/vector_stores/{id}/search"), Some(&token), body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {:?}", reply.json());
        assert_eq!(reply.json()["error"]["param"], param, "{body}");
    }
}

#[tokio::test]
async fn another_tenant_sees_nothing_and_a_read_token_only_reads() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let mine = file(&server, &token, "a.txt", "secret plans").await;
    let id = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "file_ids": [mine] })).await.json()["id"].as_str().unwrap().to_owned();
    server::retrieval::ingest_pending(&server.state).await.unwrap();

    let bob = server.user("bob", None, "write").await;
    assert_eq!(server.get(&format!("/v1/vector_stores/{id}"), Some(&bob)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.json("POST", &format!("/v1/vector_stores/{id}/search"), Some(&bob), json!({ "query": "secret" })).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/v1/vector_stores", Some(&bob)).await.json()["data"], json!([]));
    // Bob cannot put Ann's file in a store of his own either.
    let reply = server.json("POST", "/v1/vector_stores", Some(&bob), json!({ "embedding_model": "enc", "file_ids": [mine] })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());

    let reader = server.token("ann", "read").await;
    assert_eq!(search(&server, &reader, &id, json!({ "query": "secret" })).await["data"].as_array().unwrap().len(), 1);
    let other = file(&server, &token, "b.txt", "more").await;
    assert_eq!(server.json("POST", &format!("/v1/vector_stores/{id}/files"), Some(&reader), json!({ "file_id": other })).await.status, StatusCode::FORBIDDEN);
    assert_eq!(server.send("DELETE", &format!("/v1/vector_stores/{id}"), Some(&reader), None, Vec::new()).await.status, StatusCode::FORBIDDEN);
    let reply = server.send("DELETE", &format!("/v1/vector_stores/{id}"), Some(&token), None, Vec::new()).await;
    assert_eq!(reply.json()["deleted"], true);
    assert_eq!(server.get(&format!("/v1/vector_stores/{id}"), Some(&token)).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn file_search_in_a_response_cites_only_what_it_retrieved() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let cats = file(&server, &token, "cats.txt", "Cats purr when they are content.").await;
    let id = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "file_ids": [cats] })).await.json()["id"].as_str().unwrap().to_owned();
    server::retrieval::ingest_pending(&server.state).await.unwrap();

    let tools = json!([{ "type": "file_search", "vector_store_ids": [id], "max_num_results": 3 }]);
    let body = json!({ "model": "tiny", "input": "Why do cats purr? [[say:They purr when content [1].]]", "tools": tools, "include": ["file_search_call.results"], "max_output_tokens": 200, "temperature": 0 });
    let reply = server.json("POST", "/v1/responses", Some(&token), body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let response = reply.json();
    let output = response["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "file_search_call");
    assert_eq!(output[0]["status"], "completed");
    assert!(output[0]["queries"][0].as_str().unwrap().contains("cats purr"));
    assert_eq!(output[0]["results"][0]["file_id"], cats.as_str());
    let message = &output[1];
    assert_eq!(message["content"][0]["text"], "They purr when content [1].");
    assert_eq!(message["content"][0]["annotations"], json!([{ "type": "file_citation", "file_id": cats, "filename": "cats.txt", "index": 23 }]));
    let actions = server.audit_actions().await;
    assert!(actions.iter().any(|a| a == "tool.file_search"), "{actions:?}");

    // A citation of a source that was not retrieved cannot be written: decoding holds `[n]` to
    // the sources given (one here), so the scripted `[7]` never appears.
    let mut bad = body.clone();
    bad["input"] = json!("Why? [[say:See [7] for more.]]");
    let response = server.json("POST", "/v1/responses", Some(&token), bad).await.json();
    let text = response["output"][1]["content"][0]["text"].as_str().unwrap().to_owned();
    assert!(!text.contains("[7]"), "{text}");
    assert!(response["output"][1]["content"][0]["annotations"].as_array().unwrap().iter().all(|a| a["file_id"] == cats.as_str()));

    // Streamed: the search call's events come before the text, and the annotation is announced.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let reply = server.json("POST", "/v1/responses", Some(&token), streamed).await;
    let raw = String::from_utf8(reply.body.clone()).unwrap();
    let names: Vec<&str> = raw.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    let searching = names.iter().position(|n| *n == "response.file_search_call.completed").unwrap();
    let first_text = names.iter().position(|n| *n == "response.output_text.delta").unwrap();
    assert!(searching < first_text, "{names:?}");
    assert!(names.contains(&"response.output_text.annotation.added"), "{names:?}");

    // Another tenant's store cannot be searched through a response.
    let bob = server.user("bob", None, "write").await;
    let reply = server.json("POST", "/v1/responses", Some(&bob), body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
}

#[tokio::test]
async fn the_site_default_embedding_model_comes_from_config() {
    let (server, token) = deployed(|raw| raw.retrieval.embedding_model = "enc".into(), false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let store = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "name": "kb" })).await.json();
    assert_eq!(store["embedding_model"], "enc");
    let (server, token) = deployed(|raw| raw.retrieval.embedding_model = "missing".into(), false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let reply = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "name": "kb" })).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "the configured model does not exist: {:?}", reply.json());
    // Naming one overrides the default.
    let reply = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "name": "kb", "embedding_model": "enc" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    // A description is not kept, so it is refused rather than dropped.
    let reply = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "embedding_model": "enc", "description": "docs" })).await;
    assert_eq!(reply.json()["error"]["param"], "description");
    // A text model is not an embedding model.
    let reply = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "embedding_model": "tiny" })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["param"], "embedding_model");
}

#[tokio::test]
async fn a_new_revision_of_the_embedding_model_reindexes_while_the_old_one_answers() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let cats = file(&server, &token, "cats.txt", "Cats are small domesticated carnivorous mammals. Cats purr when content and hunt mice at night.").await;
    let market = file(&server, &token, "market.md", "# Markets\nThe stock market fell sharply on Monday as bond yields rose.").await;
    let store = server.json("POST", "/v1/vector_stores", Some(&token), json!({ "name": "kb", "file_ids": [cats, market] })).await.json();
    let id = store["id"].as_str().unwrap().to_owned();
    let first = store["embedding_revision"].as_str().unwrap().to_owned();
    server::retrieval::ingest_pending(&server.state).await.unwrap();
    let query = json!({ "query": "cats hunt mice", "ranking_options": { "hybrid_search": { "embedding_weight": 1.0, "text_weight": 0.0 } } });
    let before = search(&server, &token, &id, query.clone()).await;
    let widths = |server: &TestServer, id: String| {
        let hub = server.state.hub.clone();
        async move {
            let store = hub.vector_store_by_id(&id).await.unwrap().unwrap();
            let (_, chunks) = hub.vector_chunks(&store).await.unwrap();
            chunks.iter().map(|c| c.chunk.vector.len()).collect::<std::collections::BTreeSet<_>>()
        }
    };
    assert_eq!(widths(&server, id.clone()).await, [16].into());
    // Nothing to do while the deployment serves the store's revision.
    assert_eq!(server::retrieval::reindex_pending(&server.state).await.unwrap(), 0);

    // A new revision whose vectors are 24 wide (in the mock), deployed under the same name.
    let reply = server.commit(&token, "ann/enc", &[crate::harness::header("wider"), crate::harness::file("config.json", br#"{"hidden_size": 24}"#)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    assert_eq!(server.send("DELETE", "/api/admin/deployments/enc", Some(crate::harness::ADMIN), None, vec![]).await.status, StatusCode::OK);
    let reply = server.json("POST", "/api/admin/deployments", Some(crate::harness::ADMIN), json!({ "name": "enc", "repo": "ann/enc" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let second = format!("ann/enc@{}", reply.json()["commit"].as_str().unwrap());
    assert_ne!(first, second);

    // Until the swap the old revision answers: queries are embedded by it (pinned), so the
    // results are exactly those from before.
    assert_eq!(search(&server, &token, &id, query.clone()).await, before);
    // A file attached meanwhile is embedded by the old revision too, and re-indexed with the rest.
    let page = file(&server, &token, "page.html", "<html><body><p>Dogs are loyal pets that fetch.</p></body></html>").await;
    server.json("POST", &format!("/v1/vector_stores/{id}/files"), Some(&token), json!({ "file_id": page })).await;
    assert_eq!(server::retrieval::ingest_pending(&server.state).await.unwrap(), 1);
    assert_eq!(server.get(&format!("/v1/vector_stores/{id}/files/{page}"), Some(&token)).await.json()["status"], "completed");
    assert_eq!(widths(&server, id.clone()).await, [16].into());
    let store = server.get(&format!("/v1/vector_stores/{id}"), Some(&token)).await.json();
    assert_eq!(store["embedding_revision"], first.as_str());

    assert_eq!(server::retrieval::reindex_pending(&server.state).await.unwrap(), 1);
    let store = server.get(&format!("/v1/vector_stores/{id}"), Some(&token)).await.json();
    assert_eq!(store["embedding_revision"], second.as_str(), "{store}");
    assert_eq!(store["reindex"], Value::Null);
    assert_eq!(store["file_counts"]["completed"], 3);
    assert_eq!(widths(&server, id.clone()).await, [24].into(), "every chunk is the new revision's");
    let after = search(&server, &token, &id, query.clone()).await;
    assert_eq!(after["data"][0]["file_id"], cats.as_str(), "{after}");
    assert_eq!(server::retrieval::reindex_pending(&server.state).await.unwrap(), 0, "done once");
    assert!(server.audit_actions().await.iter().any(|a| a == "vector_store.reindex"));
    // New files now embed with the new revision.
    server.json("POST", &format!("/v1/vector_stores/{id}/files"), Some(&token), json!({ "file_id": market })).await;
    server::retrieval::ingest_pending(&server.state).await.unwrap();
    assert_eq!(widths(&server, id.clone()).await, [24].into());
}

#[tokio::test]
async fn an_org_owns_what_its_members_make_for_it() {
    let (server, ann) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &ann, true).await;
    server.json("POST", "/api/admin/orgs", Some(crate::harness::ADMIN), json!({ "name": "acme" })).await;
    let bea = server.user("bea", Some("acme"), "write").await;
    let dan = server.user("dan", Some("acme"), "read").await;
    let cal = server.user("cal", None, "write").await;
    let acme = Some("acme");
    let plain = "application/json";
    let upload = crate::files::multipart(&[("purpose", "assistants")], Some(("plan.txt", b"The acme launch plan: rockets on Tuesday.")));
    let form = format!("multipart/form-data; boundary={}", crate::files::BOUNDARY);
    let reply = send_as(&server, "POST", "/v1/files", &bea, acme, &form, upload.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let file_id = reply.json()["id"].as_str().unwrap().to_owned();
    let body = serde_json::to_vec(&json!({ "name": "acme-kb", "file_ids": [file_id] })).unwrap();
    let reply = send_as(&server, "POST", "/v1/vector_stores", &bea, acme, plain, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let store = reply.json()["id"].as_str().unwrap().to_owned();
    server::retrieval::ingest_pending(&server.state).await.unwrap();

    // Another member reads and searches what the org owns, with or without naming the org.
    assert_eq!(server.get(&format!("/v1/files/{file_id}"), Some(&dan)).await.status, StatusCode::OK);
    assert_eq!(server.get(&format!("/v1/vector_stores/{store}"), Some(&dan)).await.json()["file_counts"]["completed"], 1);
    let found = search(&server, &dan, &store, json!({ "query": "launch rockets" })).await;
    assert_eq!(found["data"][0]["file_id"], file_id.as_str());
    // Lists show the org's things when the request acts for it, the user's own otherwise.
    let listed = send_as(&server, "GET", "/v1/vector_stores", &dan, acme, plain, vec![]).await.json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(server.get("/v1/vector_stores", Some(&dan)).await.json()["data"].as_array().unwrap().len(), 0);
    // A member's read token changes nothing.
    let reply = send_as(&server, "DELETE", &format!("/v1/vector_stores/{store}"), &dan, acme, plain, vec![]).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // Outsiders see nothing, and may not act for an org they are not in.
    assert_eq!(server.get(&format!("/v1/files/{file_id}"), Some(&cal)).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get(&format!("/v1/vector_stores/{store}"), Some(&cal)).await.status, StatusCode::NOT_FOUND);
    let reply = send_as(&server, "GET", "/v1/vector_stores", &cal, acme, plain, vec![]).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.json());
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("acme"));
    assert_eq!(send_as(&server, "POST", "/v1/files", &ann, acme, &form, upload).await.status, StatusCode::UNAUTHORIZED);

    // A stored response made for the org is the org's.
    let body = serde_json::to_vec(&json!({ "model": "tiny", "input": "hello", "max_output_tokens": 4 })).unwrap();
    let reply = send_as(&server, "POST", "/v1/responses", &bea, acme, plain, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let response = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(server.get(&format!("/v1/responses/{response}"), Some(&dan)).await.status, StatusCode::OK);
    assert_eq!(server.get(&format!("/v1/responses/{response}"), Some(&cal)).await.status, StatusCode::NOT_FOUND);
}
