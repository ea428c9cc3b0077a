//! Regression tests of the hardening issue (#11): hostile or unlucky requests get a clear error
//! and never take down what other requests share, leak another tenant's data or go uncharged.

use axum::http::StatusCode;
use futures::StreamExt as _;

use crate::harness::ADMIN;
use crate::openai::{assert_openai_error, deployed, sse_data};

fn chat(content: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": content }], "max_tokens": 24 });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

#[tokio::test]
async fn r11_stop_sequences_with_multibyte_characters_work_on_both_apis() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let said = "[[say:ab。cd 😀 ef]]";
    for (stop, expected) in [("。", "ab"), ("😀", "ab。cd "), ("é", "ab。cd 😀 ef")] {
        let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat(said, serde_json::json!({ "stop": [stop] }))).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
        assert_eq!(reply.json()["choices"][0]["message"]["content"], expected);
        let streamed = server.json("POST", "/v1/chat/completions", Some(&token), chat(said, serde_json::json!({ "stop": stop, "stream": true }))).await;
        let events = sse_data(&streamed.body);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let text: String = events[..events.len() - 1].iter().filter_map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap()["choices"][0]["delta"]["content"].as_str().map(str::to_owned)).collect();
        assert_eq!(text, expected);
        let ollama = server.json("POST", "/api/chat", Some(&token), serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": said }], "stream": false, "options": { "stop": [stop] } })).await;
        assert_eq!(ollama.status, StatusCode::OK, "{:?}", ollama.json());
        assert_eq!(ollama.json()["message"]["content"], expected);
    }
    assert!(server.state.runtime.restarts().is_empty(), "no runner died");
}

#[tokio::test]
async fn r11_a_runner_panic_fails_its_requests_and_the_deployment_recovers() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    // A stream already running in the engine when another request crashes the runner.
    let long = chat("a long answer", serde_json::json!({ "stream": true, "max_tokens": 3000, "ignore_eos": true }));
    let bystander = server.open_stream("/v1/chat/completions", &token, long).await;
    assert_eq!(bystander.status(), StatusCode::OK);
    let mut body = bystander.into_body().into_data_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("assistant"));

    let crashed = server.json("POST", "/v1/chat/completions", Some(&token), chat("please [[panic]]", serde_json::json!({}))).await;
    assert_openai_error(&crashed, StatusCode::INTERNAL_SERVER_ERROR, None);
    // The bystander's stream ends with an error event, never with [DONE] after cut text.
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend(chunk.unwrap());
    }
    let events = sse_data(&rest);
    assert!(events.last().is_some_and(|e| e.contains("\"error\"")), "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    // A streamed request that hits the panic gets an error event too, on Ollama an error line.
    let streamed = server.json("POST", "/v1/chat/completions", Some(&token), chat("[[panic]]", serde_json::json!({ "stream": true }))).await;
    assert!(sse_data(&streamed.body).last().is_some_and(|e| e.contains("\"error\"")));
    let ollama = server.json("POST", "/api/chat", Some(&token), serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": "[[panic]]" }] })).await;
    let last_line = String::from_utf8(ollama.body.clone()).unwrap().lines().last().unwrap().to_owned();
    assert!(serde_json::from_str::<serde_json::Value>(&last_line).unwrap()["error"].is_string(), "{last_line}");

    // The deployment comes back by itself: later requests are served (the reload is retried for
    // up to a minute, so a loaded CI machine does not fail this).
    let mut served = false;
    for _ in 0..6000 {
        let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("hello again", serde_json::json!({}))).await;
        if reply.status == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(served, "the deployment did not recover");
    let restarts: u64 = server.state.runtime.restarts().iter().map(|(_, n)| n).sum();
    // One restart per runner that died: each of the three requests kills the runner it reaches,
    // unless it reached one that had died already and was not yet replaced (a loaded machine).
    assert!((1..=3).contains(&restarts), "one restart per runner that died, not {restarts}");
    let metrics = String::from_utf8(server.get("/metrics", None).await.body).unwrap();
    assert!(metrics.contains("mantle_runner_restarts_total{deployment=\"tiny\"}"), "{metrics}");
}

#[tokio::test]
async fn r11_a_client_that_leaves_mid_stream_is_charged_for_the_work_it_got() {
    let (server, token) = deployed(|_| {}, false, 2).await;
    let long = chat("charge me", serde_json::json!({ "stream": true, "max_tokens": 3000, "ignore_eos": true }));
    let stream = server.open_stream("/v1/chat/completions", &token, long).await;
    let mut body = stream.into_body().into_data_stream();
    let mut seen = 0;
    while seen < 6 {
        let chunk = body.next().await.unwrap().unwrap();
        seen += sse_data(&chunk).len();
    }
    drop(body);
    server.state.usage.flush().await;
    // The record is written when the engine notices the client left; wait for it.
    let mut report = serde_json::Value::Null;
    for _ in 0..200 {
        server.state.usage.flush().await;
        report = server.get("/api/usage", Some(ADMIN)).await.json();
        if report["total"]["requests"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(report["total"]["requests"], 1, "{report}");
    // The whole prompt was prefilled (one token per byte with the mock), and at least the
    // tokens the client received were generated.
    let prompt = "<|im_start|>user\ncharge me<|im_end|>\n<|im_start|>assistant\n".len() as u64;
    assert_eq!(report["total"]["prompt_tokens"], prompt, "{report}");
    assert!(report["total"]["completion_tokens"].as_u64().unwrap() >= 5, "{report}");
}

/// A "billion laughs" card: nine levels of ten aliases, 10^9 nodes once expanded.
fn yaml_bomb() -> String {
    let mut bomb = String::from("---\nlicense: mit\na0: &a0 [lol]\n");
    for level in 1..10 {
        bomb.push_str(&format!("a{level}: &a{level} [{}]\n", vec![format!("*a{}", level - 1); 10].join(", ")));
    }
    bomb + "---\n# card\n"
}

#[tokio::test]
async fn r11_yaml_bombs_get_a_4xx_and_a_finding_never_a_hang() {
    let server = crate::harness::TestServer::new().await;
    let reply = server.json("POST", "/api/validate-yaml", None, serde_json::json!({ "content": yaml_bomb(), "repoType": "model" })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    assert!(reply.json()["error"].as_str().unwrap().contains("too complex"), "{:?}", reply.json());

    // The same card pushed to a public repo: anonymous callers read the repo, and the verdict
    // carries the finding.
    let token = server.user("ann", None, "write").await;
    server.create_repo(&token, "bomb", false).await;
    let reply = server.commit(&token, "ann/bomb", &[crate::harness::header("card"), crate::harness::file("README.md", yaml_bomb().as_bytes())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    let info = server.get("/api/models/ann/bomb", None).await;
    assert_eq!(info.status, StatusCode::OK, "{:?}", info.json());
    let verdict = server.get("/api/models/ann/bomb/vetting/main", Some(&token)).await;
    assert_eq!(verdict.status, StatusCode::OK, "{:?}", verdict.json());
    assert!(verdict.body.windows(b"too complex".len()).any(|w| w == b"too complex"), "{}", String::from_utf8_lossy(&verdict.body));
}

fn lfs_batch(oid: &str, size: usize) -> serde_json::Value {
    serde_json::json!({ "operation": "upload", "transfers": ["basic"], "objects": [{ "oid": oid, "size": size }], "hash_algo": "sha256" })
}

fn lfs_line(path: &str, oid: &str, size: usize) -> serde_json::Value {
    serde_json::json!({ "key": "lfsFile", "value": { "path": path, "algo": "sha256", "oid": oid, "size": size } })
}

/// Uploads `data` through the LFS batch and a signed PUT, then commits it to `repo` as `path`.
async fn push_lfs(server: &crate::harness::TestServer, token: &str, repo: &str, path: &str, data: &[u8]) {
    use sha2::Digest as _;
    let oid = hex::encode(sha2::Sha256::digest(data));
    let batch = server.json("POST", &format!("/{repo}.git/info/lfs/objects/batch"), Some(token), lfs_batch(&oid, data.len())).await;
    assert_eq!(batch.status, StatusCode::OK, "{:?}", batch.json());
    if let Some(href) = batch.json()["objects"][0]["actions"]["upload"]["href"].as_str() {
        let href = href.replace("http://mantle.test", "");
        assert_eq!(server.send("PUT", &href, None, None, data.to_vec()).await.status, StatusCode::OK);
    }
    let reply = server.commit(token, repo, &[crate::harness::header("weights"), lfs_line(path, &oid, data.len())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
}

#[tokio::test]
async fn r11_knowing_a_private_blobs_digest_is_not_enough_to_reuse_it() {
    use sha2::Digest as _;
    let server = crate::harness::TestServer::new().await;
    let ann = server.user("ann", None, "write").await;
    let bob = server.user("bob", None, "write").await;
    server.create_repo(&ann, "secret", true).await;
    server.create_repo(&ann, "open", false).await;
    server.create_repo(&bob, "mine", false).await;
    let private = b"ann's private weights".repeat(500);
    let public = b"ann's public weights".repeat(500);
    push_lfs(&server, &ann, "ann/secret", "w.bin", &private).await;
    push_lfs(&server, &ann, "ann/open", "w.bin", &public).await;
    let oid = hex::encode(sha2::Sha256::digest(&private));

    // Bob knows the digest and size of ann's private file: the batch asks him for the bytes,
    // and a commit naming it is refused as if it were never uploaded.
    let batch = server.json("POST", "/bob/mine.git/info/lfs/objects/batch", Some(&bob), lfs_batch(&oid, private.len())).await;
    assert_eq!(batch.status, StatusCode::OK);
    assert!(batch.json()["objects"][0]["actions"]["upload"]["href"].is_string(), "{:?}", batch.json());
    let reply = server.commit(&bob, "bob/mine", &[crate::harness::header("steal"), lfs_line("stolen.bin", &oid, private.len())]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    assert!(reply.json()["error"].as_str().unwrap().contains("never uploaded"));
    assert_eq!(server.get("/bob/mine/resolve/main/stolen.bin", Some(&bob)).await.status, StatusCode::NOT_FOUND);

    // A blob bob can read (a public revision holds it) is reused without an upload.
    let public_oid = hex::encode(sha2::Sha256::digest(&public));
    let batch = server.json("POST", "/bob/mine.git/info/lfs/objects/batch", Some(&bob), lfs_batch(&public_oid, public.len())).await;
    assert!(batch.json()["objects"][0].get("actions").is_none(), "{:?}", batch.json());
    let reply = server.commit(&bob, "bob/mine", &[crate::harness::header("reuse"), lfs_line("public.bin", &public_oid, public.len())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());

    // With the bytes themselves, bob proves possession and may commit them.
    push_lfs(&server, &bob, "bob/mine", "own.bin", &private).await;
    assert_eq!(server.get("/bob/mine/resolve/main/own.bin", Some(&bob)).await.body, private);
    // Ann, owner of the private repo, reuses her blob in another of her repos without uploading.
    let batch = server.json("POST", "/ann/open.git/info/lfs/objects/batch", Some(&ann), lfs_batch(&oid, private.len())).await;
    assert!(batch.json()["objects"][0].get("actions").is_none(), "{:?}", batch.json());
}

#[tokio::test]
async fn r11_tokens_never_outlive_or_outrank_their_parent_and_die_with_it() {
    let server = crate::harness::TestServer::new().await;
    server.user("ann", None, "write").await;
    let short = server.json("POST", "/api/admin/tokens", Some(ADMIN), serde_json::json!({ "user": "ann", "role": "read", "expires_in": "1h" })).await.json();
    let short_secret = short["token"].as_str().unwrap().to_owned();
    let mint = |body: serde_json::Value| server.json("POST", "/api/admin/tokens", Some(&short_secret), body);
    // No expiry asked: the child gets the parent's; a later one or a higher role is refused.
    let child = mint(serde_json::json!({ "user": "ann", "role": "read" })).await;
    assert_eq!(child.status, StatusCode::OK, "{:?}", child.json());
    assert_eq!(child.json()["expires_at"], short["expires_at"]);
    assert_eq!(mint(serde_json::json!({ "user": "ann", "role": "read", "expires_in": "30d" })).await.status, StatusCode::FORBIDDEN);
    assert_eq!(mint(serde_json::json!({ "user": "ann", "role": "write" })).await.status, StatusCode::FORBIDDEN);
    let shorter = mint(serde_json::json!({ "user": "ann", "role": "read", "expires_in": "10m" })).await;
    assert_eq!(shorter.status, StatusCode::OK, "{:?}", shorter.json());
    let child_secret = child.json()["token"].as_str().unwrap().to_owned();
    let grandchild = server.json("POST", "/api/admin/tokens", Some(&child_secret), serde_json::json!({ "user": "ann", "role": "read" })).await;
    let grandchild_secret = grandchild.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(server.get("/api/whoami-v2", Some(&grandchild_secret)).await.status, StatusCode::OK);

    // Revoking the parent revokes everything created through it.
    let id = short["id"].as_i64().unwrap();
    let reply = server.send("DELETE", &format!("/api/admin/tokens/{id}"), Some(ADMIN), None, vec![]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    for secret in [&short_secret, &child_secret, &grandchild_secret] {
        assert_eq!(server.get("/api/whoami-v2", Some(secret)).await.status, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn r11_a_user_quota_counts_every_token_of_the_user() {
    let (server, token) = deployed(|_| {}, false, 2).await;
    let reply = server.json("PUT", "/api/admin/quotas/user/ann", Some(ADMIN), serde_json::json!({ "requests_per_minute": 2 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(server.json("PUT", "/api/admin/quotas/user/nobody", Some(ADMIN), serde_json::json!({ "requests_per_minute": 2 })).await.status, StatusCode::NOT_FOUND);
    let fresh = server.json("POST", "/api/admin/tokens", Some(&token), serde_json::json!({ "user": "ann", "role": "read" })).await.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&token), chat("one", serde_json::json!({}))).await.status, StatusCode::OK);
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&fresh), chat("two", serde_json::json!({}))).await.status, StatusCode::OK);
    // A third token minted to escape the limit escapes nothing.
    let third = server.json("POST", "/api/admin/tokens", Some(&token), serde_json::json!({ "user": "ann", "role": "read" })).await.json()["token"].as_str().unwrap().to_owned();
    let refused = server.json("POST", "/v1/chat/completions", Some(&third), chat("three", serde_json::json!({}))).await;
    assert_openai_error(&refused, StatusCode::TOO_MANY_REQUESTS, None);
    assert!(refused.json()["error"]["message"].as_str().unwrap().contains("user ann"), "{:?}", refused.json());
}

#[tokio::test]
async fn r11_an_out_of_vocabulary_embedding_input_is_a_400_for_its_caller_only() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    crate::openai::deployed_encoder(&server, &token, true).await;
    let bad = server.json("POST", "/v1/embeddings", Some(&token), serde_json::json!({ "model": "enc", "input": [[5, 6], [999999]] }));
    let good = server.json("POST", "/v1/embeddings", Some(&token), serde_json::json!({ "model": "enc", "input": [[5, 6], [7]] }));
    let (bad, good) = tokio::join!(bad, good);
    assert_openai_error(&bad, StatusCode::BAD_REQUEST, Some("input"));
    assert!(bad.json()["error"]["message"].as_str().unwrap().contains("999999"));
    assert_eq!(good.status, StatusCode::OK, "{:?}", good.json());
    let ollama = server.json("POST", "/api/embed", Some(&token), serde_json::json!({ "model": "enc", "input": "fine" })).await;
    assert_eq!(ollama.status, StatusCode::OK, "{:?}", ollama.json());
}

#[tokio::test]
async fn r11_downloads_are_never_rendered_on_the_consoles_origin() {
    let server = crate::harness::TestServer::new().await;
    let token = server.user("ann", None, "write").await;
    server.create_repo(&token, "site", false).await;
    let page = b"<html><script>fetch('/api/admin/tokens')</script></html>";
    let reply = server.commit(&token, "ann/site", &[crate::harness::header("html"), crate::harness::file("docs/index \"x\".html", page)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    for method in ["GET", "HEAD"] {
        let reply = server.send(method, "/ann/site/resolve/main/docs/index%20%22x%22.html", None, None, vec![]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("content-type").as_deref(), Some("application/octet-stream"));
        assert_eq!(reply.header("x-content-type-options").as_deref(), Some("nosniff"));
        assert!(reply.header("content-security-policy").unwrap().starts_with("sandbox"));
        let disposition = reply.header("content-disposition").unwrap();
        assert!(disposition.starts_with("attachment;"), "{disposition}");
        assert!(disposition.contains("filename=\"index__x_.html\";"), "{disposition}");
    }
}

#[tokio::test]
async fn r11_a_pathological_pattern_is_bounded_and_others_are_served_meanwhile() {
    // llguidance matches patterns by lazy derivatives under fuel limits: a pattern that blew up
    // a subset construction is served (or refused by a limit) without stalling anyone.
    let (server, token) = deployed(|_| {}, false, 4).await;
    let schema = serde_json::json!({ "type": "object", "properties": { "a": { "type": "string", "pattern": "^(?:[a-z]?[0-9]?){999}$" } }, "required": ["a"] });
    let hostile = server.json("POST", "/v1/chat/completions", Some(&token), chat("x", serde_json::json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": schema } } })));
    let normal = server.json("POST", "/v1/chat/completions", Some(&token), chat("hello", serde_json::json!({})));
    let (hostile, normal) = tokio::join!(hostile, normal);
    match hostile.status {
        StatusCode::OK => {
            let content = hostile.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
            assert!(content.starts_with("{\"a\": \"") && content[8..].chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '"' || c == '}'), "{content}");
        }
        _ => assert_openai_error(&hostile, StatusCode::BAD_REQUEST, Some("response_format.json_schema.schema")),
    }
    assert_eq!(normal.status, StatusCode::OK, "{:?}", normal.json());
    // The same through Ollama's format.
    let ollama = server.json("POST", "/api/chat", Some(&token), serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": "x" }], "stream": false, "format": schema })).await;
    assert!(matches!(ollama.status, StatusCode::OK | StatusCode::BAD_REQUEST), "{:?}", ollama.json());
}

#[tokio::test]
async fn r11_text_that_cannot_fit_the_context_is_refused_before_tokenizing() {
    let (server, token) = deployed(|_| {}, false, 2).await;
    // The mock's context is 4096 tokens: 200 KB of text cannot fit, whatever the tokenizer.
    let long = "word ".repeat(40_000);
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat(&long, serde_json::json!({}))).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("messages"));
    let reply = server.json("POST", "/v1/completions", Some(&token), serde_json::json!({ "model": "tiny", "prompt": long, "max_tokens": 4 })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("prompt"));
    let reply = server.json("POST", "/api/generate", Some(&token), serde_json::json!({ "model": "tiny", "prompt": long, "stream": false })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.json()["error"].as_str().unwrap().contains("context"), "{:?}", reply.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn r11_gc_racing_a_commit_that_reuses_a_blob_never_loses_it() {
    use sha2::Digest as _;
    let server = crate::harness::TestServer::new().await;
    let token = server.user("ann", None, "write").await;
    server.create_repo(&token, "race", false).await;
    let (mut committed, mut refused) = (0, 0);
    for round in 0..30 {
        // Uploaded, not yet committed: garbage to a GC with no minimum age, unless the commit wins.
        let data = format!("weights of round {round} ").repeat(200).into_bytes();
        let oid = hex::encode(sha2::Sha256::digest(&data));
        let batch = server.json("POST", "/ann/race.git/info/lfs/objects/batch", Some(&token), lfs_batch(&oid, data.len())).await;
        let href = batch.json()["objects"][0]["actions"]["upload"]["href"].as_str().unwrap().replace("http://mantle.test", "");
        assert_eq!(server.send("PUT", &href, None, None, data.clone()).await.status, StatusCode::OK);
        let path = format!("w{round}.bin");
        let lines = [crate::harness::header("race"), lfs_line(&path, &oid, data.len())];
        let commit = server.commit(&token, "ann/race", &lines);
        let gc = server.json("POST", "/api/admin/gc", Some(ADMIN), serde_json::json!({ "min_age_secs": 0 }));
        let (commit, gc) = tokio::join!(commit, gc);
        assert_eq!(gc.status, StatusCode::OK, "{:?}", gc.json());
        if commit.status == StatusCode::OK {
            committed += 1;
            // Whatever the interleaving, a committed file can be downloaded.
            let download = server.get(&format!("/ann/race/resolve/main/{path}"), Some(&token)).await;
            assert_eq!((download.status, download.body.len()), (StatusCode::OK, data.len()), "round {round}: a committed blob was collected");
        } else {
            refused += 1;
            assert!(matches!(commit.status, StatusCode::CONFLICT | StatusCode::BAD_REQUEST), "{:?}", commit.json());
            // The client uploads again and commits: it works once GC is done.
            push_lfs(&server, &token, "ann/race", &path, &data).await;
            assert_eq!(server.get(&format!("/ann/race/resolve/main/{path}"), Some(&token)).await.body, data);
        }
    }
    eprintln!("{committed} commits won the race, {refused} were refused and retried");
}

#[tokio::test]
async fn r11_one_lfs_batch_answer_lists_a_bounded_number_of_part_urls() {
    let server = crate::harness::TestServer::new().await;
    let token = server.user("ann", None, "write").await;
    server.create_repo(&token, "big", false).await;
    let huge = 512u64 << 30;
    let objects: Vec<serde_json::Value> = (0..100).map(|i| serde_json::json!({ "oid": format!("{i:064x}"), "size": huge })).collect();
    let reply = server.json("POST", "/ann/big.git/info/lfs/objects/batch", Some(&token), serde_json::json!({ "operation": "upload", "transfers": ["basic", "multipart"], "objects": objects })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    assert!(reply.json()["error"].as_str().unwrap().contains("part URLs"), "{:?}", reply.json());
    // A few such objects per batch are fine.
    let reply = server.json("POST", "/ann/big.git/info/lfs/objects/batch", Some(&token), serde_json::json!({ "operation": "upload", "transfers": ["basic", "multipart"], "objects": [{ "oid": "1".repeat(64), "size": huge }] })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["objects"][0]["actions"]["upload"]["header"].as_object().unwrap().len(), 513);
}

/// Loads like the test harness's mocks, but each load takes a while (a big model being copied).
struct SlowLoader;

impl server::runtime::Loader for SlowLoader {
    fn generator(&self, _: &engine::RunnerConfig) -> Result<Box<dyn engine::ModelRunner>, String> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(Box::new(engine::mock::MockRunner::new(4096)))
    }
    fn embedder(&self, _: &engine::EmbedderConfig) -> Result<Box<dyn engine::EmbedRunner>, String> {
        Err("no embedders here".into())
    }
}

#[tokio::test]
async fn r11_a_load_outlives_the_request_that_started_it() {
    let (server, _) = deployed(|_| {}, false, 2).await;
    let runtime = server::runtime::Runtime::new(server.state.config.runtime.clone(), std::sync::Arc::new(SlowLoader));
    let deployment = server.state.hub.deployment_by_name("tiny").await.unwrap().unwrap();
    // The client gives up long before the load ends.
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), runtime.get(&server.state.hub, deployment.clone())).await;
    assert!(gave_up.is_err());
    let mut resident = false;
    for _ in 0..300 {
        if runtime.is_resident("tiny") {
            resident = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(resident, "the load went on without its client");
    // Concurrent requests share one load: the same engine comes back.
    let (a, b) = tokio::join!(runtime.get(&server.state.hub, deployment.clone()), runtime.get(&server.state.hub, deployment));
    assert!(std::sync::Arc::ptr_eq(&a.unwrap(), &b.unwrap()));
}

#[tokio::test]
async fn r11_a_local_model_copy_is_checked_before_reuse_and_stale_temporaries_are_swept() {
    let (server, token) = deployed(|_| {}, false, 2).await;
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&token), chat("hi", serde_json::json!({}))).await.status, StatusCode::OK);
    let deployment = server.state.hub.deployment_by_name("tiny").await.unwrap().unwrap();
    let models = server.state.config.runtime.models_dir.clone();
    let copy = models.join(deployment.file_sha256.as_str());
    let original = std::fs::read(&copy).unwrap();
    // Same size, other bytes (a corrupted or tampered copy), and an abandoned temporary file.
    std::fs::write(&copy, vec![b'x'; original.len()]).unwrap();
    let abandoned = models.join(".deadbeef.0123456789abcdef.tmp");
    std::fs::write(&abandoned, b"half a model").unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&abandoned).unwrap().set_modified(old).unwrap();
    let fresh = models.join(".cafe.0123456789abcdef.tmp");
    std::fs::write(&fresh, b"a copy in progress").unwrap();

    let restarted = server.restart().await;
    assert!(!abandoned.exists(), "stale temporaries are swept at start");
    assert!(fresh.exists(), "a copy another process is writing is left alone");
    assert_eq!(restarted.json("POST", "/v1/chat/completions", Some(&token), chat("hi", serde_json::json!({}))).await.status, StatusCode::OK);
    assert_eq!(std::fs::read(&copy).unwrap(), original, "the bad copy was replaced by a checked one");
}

#[tokio::test]
async fn r11_every_mutating_api_refuses_read_tokens_non_members_and_anonymous_and_changes_nothing() {
    let (server, owner) = deployed(|_| {}, false, 2).await;
    server.create_repo(&owner, "secret", true).await;
    let reader = server.token("ann", "read").await;
    let outsider = server.user("mallory", None, "admin").await;
    let commit_body = |path: &str| {
        let mut body = serde_json::to_vec(&crate::harness::header("x")).unwrap();
        body.push(b'\n');
        body.extend(serde_json::to_vec(&crate::harness::file(path, b"x")).unwrap());
        body
    };
    // (method, uri, body) of every mutating route on ann's repos, deployments and site settings.
    let calls: Vec<(&str, String, Vec<u8>)> = [("tiny", "model"), ("secret", "model")]
        .iter()
        .flat_map(|(repo, _)| {
            let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
            vec![
                ("POST", format!("/api/models/ann/{repo}/commit/main"), commit_body("evil.txt")),
                ("POST", format!("/api/models/ann/{repo}/branch/evil"), b"{}".to_vec()),
                ("DELETE", format!("/api/models/ann/{repo}/branch/main"), vec![]),
                ("POST", format!("/api/models/ann/{repo}/tag/main"), br#"{"tag": "v-evil"}"#.to_vec()),
                ("DELETE", format!("/api/models/ann/{repo}/tag/v1"), vec![]),
                ("PUT", format!("/api/models/ann/{repo}/settings"), json(serde_json::json!({ "private": false }))),
                ("POST", format!("/api/models/ann/{repo}/preupload/main"), json(serde_json::json!({ "files": [{ "path": "a", "size": 1, "sample": "" }] }))),
                ("POST", format!("/ann/{repo}.git/info/lfs/objects/batch"), json(serde_json::json!({ "operation": "upload", "objects": [{ "oid": "a".repeat(64), "size": 1 }] }))),
                ("POST", "/api/repos/move".to_owned(), json(serde_json::json!({ "fromRepo": format!("ann/{repo}"), "toRepo": "ann/moved" }))),
                ("DELETE", "/api/repos/delete".to_owned(), json(serde_json::json!({ "name": repo, "organization": "ann" }))),
            ]
        })
        .chain([
            ("POST", "/api/repos/create".to_owned(), serde_json::to_vec(&serde_json::json!({ "name": "new", "organization": "ann" })).unwrap()),
            ("PUT", "/api/policies/ann".to_owned(), serde_json::to_vec(&serde_json::json!({ "allow_pickle": true, "suspicious_blocks": false })).unwrap()),
            ("POST", "/api/policies/ann/overrides".to_owned(), serde_json::to_vec(&serde_json::json!({ "sha256": "a".repeat(64), "code": "x", "subject": "y", "justification": "z" })).unwrap()),
            ("POST", "/api/admin/users".to_owned(), serde_json::to_vec(&serde_json::json!({ "name": "eve" })).unwrap()),
            ("POST", "/api/admin/orgs".to_owned(), serde_json::to_vec(&serde_json::json!({ "name": "evilcorp" })).unwrap()),
            ("POST", "/api/admin/orgs/acme/members".to_owned(), serde_json::to_vec(&serde_json::json!({ "user": "mallory" })).unwrap()),
            ("POST", "/api/admin/tokens".to_owned(), serde_json::to_vec(&serde_json::json!({ "user": "ann", "role": "admin" })).unwrap()),
            ("DELETE", "/api/admin/tokens/1".to_owned(), vec![]),
            ("POST", "/api/admin/gc".to_owned(), serde_json::to_vec(&serde_json::json!({ "min_age_secs": 0 })).unwrap()),
            ("POST", "/api/admin/deployments".to_owned(), serde_json::to_vec(&serde_json::json!({ "name": "evil", "repo": "ann/tiny" })).unwrap()),
            ("DELETE", "/api/admin/deployments/tiny".to_owned(), vec![]),
            ("PUT", "/api/admin/quotas/user/ann".to_owned(), serde_json::to_vec(&serde_json::json!({ "requests_per_minute": 1 })).unwrap()),
            ("DELETE", "/api/admin/quotas/user/ann".to_owned(), vec![]),
        ])
        .collect();
    let before = server.audit_actions().await.len();
    let head = server.head("ann/tiny", &owner).await;
    for (who, token) in [("read token", Some(reader.as_str())), ("non-member", Some(outsider.as_str())), ("anonymous", None)] {
        for (method, uri, body) in &calls {
            let content_type = if uri.contains("/commit/") { "application/x-ndjson" } else { "application/json" };
            let reply = server.send(method, uri, token, Some(content_type), body.clone()).await;
            assert!(matches!(reply.status.as_u16(), 401 | 403 | 404), "{who}: {method} {uri} answered {} {:?}", reply.status, String::from_utf8_lossy(&reply.body));
        }
    }
    assert_eq!(server.audit_actions().await.len(), before, "a refused call changed something");
    assert_eq!(server.head("ann/tiny", &owner).await, head);
    assert_eq!(server.get("/api/models/ann/secret", None).await.status, StatusCode::NOT_FOUND);

    // The services check on their own, whatever a route did before: a read principal calling
    // the hub directly with a repo it obtained is refused.
    let principal = server.state.hub.authenticate(Some(&reader)).await.unwrap();
    let repo = server.state.hub.visible_repo(&principal, domain::ids::RepoKind::Model, &domain::ids::RepoName::parse("ann/tiny").unwrap()).await.unwrap();
    let path = domain::ids::RepoPath::parse("evil.txt").unwrap();
    assert!(matches!(server.state.hub.store_inline(&principal, &repo, path, bytes::Bytes::from_static(b"x")).await, Err(domain::Error::Forbidden(_))));
    let request = domain::hub::CommitRequest { branch: "main".into(), parent_commit: None, title: "t".into(), message: String::new(), operations: vec![domain::meta::FileOperation::DeleteFile(domain::ids::RepoPath::parse("README.md").unwrap())] };
    assert!(matches!(server.state.hub.commit(&principal, &repo, request).await, Err(domain::Error::Forbidden(_))));
    assert!(matches!(server.state.hub.create_ref(&principal, &repo, domain::repo::RefKind::Tag, "t", None).await, Err(domain::Error::Forbidden(_))));
    assert!(matches!(server.state.hub.delete_ref(&principal, &repo, domain::repo::RefKind::Branch, "main").await, Err(domain::Error::Forbidden(_))));
}

#[tokio::test]
async fn r11_signed_checkpoints_detect_what_a_database_administrator_does_to_the_audit_log() {
    let server = crate::harness::TestServer::new().await;
    for name in ["ann", "bob", "cy"] {
        server.user(name, None, "write").await;
    }
    let checkpoint = server.json("POST", "/api/admin/audit/checkpoint", Some(ADMIN), serde_json::json!({})).await;
    assert_eq!(checkpoint.status, StatusCode::OK, "{:?}", checkpoint.json());
    let seq = checkpoint.json()["seq"].as_i64().unwrap();
    server.user("dee", None, "write").await; // a row after the checkpoint
    let verify = server.get("/api/admin/audit/verify", Some(ADMIN)).await.json();
    assert_eq!((verify["ok"].as_bool(), verify["verified_through"].as_i64()), (Some(true), Some(seq)), "{verify}");
    assert_eq!(server.get("/api/admin/audit/checkpoints", None).await.status, StatusCode::UNAUTHORIZED);
    let public_key = server.get("/api/audit/public-key", None).await.json()["public_key"].as_str().unwrap().to_owned();

    // The administrator drops the newest rows, down to before the checkpoint: what remains is an
    // unbroken chain, which the checkpoint exposes.
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&server.state.config.database_url).await.unwrap();
    sqlx::Executor::execute(&mut db, format!("DELETE FROM audit_log WHERE seq >= {}", seq - 1).as_str()).await.unwrap();
    let verify = server.get("/api/admin/audit/verify", Some(ADMIN)).await.json();
    assert_eq!(verify["ok"], false, "{verify}");
    assert!(verify["reason"].as_str().unwrap().contains("dropped"), "{verify}");
    // The same finding from the rows and checkpoints a client fetches, under the key it trusts.
    let entries: Vec<api::admin::AuditEntry> = serde_json::from_slice(&server.get("/api/admin/audit?limit=10000", Some(ADMIN)).await.body).unwrap();
    let checkpoints: Vec<api::admin::AuditCheckpoint> = serde_json::from_slice(&server.get("/api/admin/audit/checkpoints", Some(ADMIN)).await.body).unwrap();
    let report = server::audit_log::verify_entries(&[public_key], &checkpoints, &entries);
    assert!(report.broken.is_some_and(|b| b.contains("dropped")));
}

#[tokio::test]
async fn r11_the_openapi_document_describes_mantles_own_api() {
    let server = crate::harness::TestServer::new().await;
    let reply = server.get("/openapi.json", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let doc = reply.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    for path in ["/api/admin/users", "/api/admin/tokens/{id}", "/api/admin/deployments", "/api/usage", "/api/admin/quotas/{scope}/{subject}", "/api/policies/{namespace}", "/api/{kinds}/{ns}/{name}/vetting/{rev}", "/api/admin/audit/checkpoint"] {
        assert!(paths.contains_key(path), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["Deployment"]["properties"]["keep_alive_max"].is_object(), "{}", doc["components"]["schemas"]["Deployment"]);
    // Found by schemathesis: a huge min_age_secs overflowed the time arithmetic and killed the request.
    let reply = server.json("POST", "/api/admin/gc", Some(ADMIN), serde_json::json!({ "min_age_secs": i64::MAX })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
    let reply = server.json("POST", "/api/admin/tokens", Some(ADMIN), serde_json::json!({ "user": "admin", "role": "read", "expires_in": "5é" })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.json());
}
