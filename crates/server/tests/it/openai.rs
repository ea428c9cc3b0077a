//! The OpenAI API over a deployment, on the deterministic mock runner (one token per byte, so
//! usage counts can be checked exactly): models, chat and completions, plain and streamed, seeds,
//! errors in OpenAI's shape, admission (429) and cancellation, metrics.

use axum::http::StatusCode;

use crate::harness::{file, header, TestServer, ADMIN};

pub(crate) const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// A GGUF v3 file with no tensors and one metadata entry: the chat template.
pub(crate) fn gguf_with_template(template: &str) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes());
    out.extend(1u64.to_le_bytes());
    let key = "tokenizer.chat_template";
    out.extend((key.len() as u64).to_le_bytes());
    out.extend(key.as_bytes());
    out.extend(8u32.to_le_bytes());
    out.extend((template.len() as u64).to_le_bytes());
    out.extend(template.as_bytes());
    out
}

/// What the template renders for one user message (the mock counts one token per byte).
fn rendered(user: &str) -> String {
    format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n")
}

/// A server with user `ann` (write token returned) owning `ann/tiny`, deployed as `tiny`.
pub(crate) async fn deployed(tweak: impl FnOnce(&mut server::RawConfig), private: bool, max_batch: u32) -> (TestServer, String) {
    let server = TestServer::with(tweak).await;
    let token = server.user("ann", None, "write").await;
    server.create_repo(&token, "tiny", private).await;
    let reply = server.commit(&token, "ann/tiny", &[header("weights"), file("tiny.gguf", &gguf_with_template(CHATML)), file("README.md", b"---\nlicense: apache-2.0\n---\n# tiny\n")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), serde_json::json!({ "name": "tiny", "repo": "ann/tiny", "max_batch": max_batch })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    (server, token)
}

fn chat(content: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut body = serde_json::json!({ "model": "tiny", "messages": [{ "role": "user", "content": content }], "max_tokens": 24 });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// The `data:` payloads of an SSE body.
pub(crate) fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec()).unwrap().split("\n\n").filter_map(|event| event.strip_prefix("data: ")).map(str::to_owned).collect()
}

pub(crate) fn assert_openai_error(reply: &crate::harness::Reply, status: StatusCode, param: Option<&str>) {
    assert_eq!(reply.status, status, "{:?}", reply.json());
    let error = &reply.json()["error"];
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{error}");
    assert!(error["type"].is_string(), "{error}");
    if let Some(param) = param {
        assert_eq!(error["param"], param, "{error}");
    }
}

#[tokio::test]
async fn chat_completion_names_its_revision_and_counts_tokens_exactly() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let models = server.get("/v1/models", Some(&token)).await.json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "tiny");
    assert_eq!(models["data"][0]["owned_by"], "ann");
    assert_eq!(server.get("/v1/models/tiny", Some(&token)).await.json()["id"], "tiny");

    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("Hello there", serde_json::json!({ "seed": 7, "temperature": 0.8 }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let body = reply.json();
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let fingerprint = body["system_fingerprint"].as_str().unwrap();
    assert!(fingerprint.starts_with("fp_") && fingerprint.len() == 13, "{fingerprint}");
    let commit = server.head("ann/tiny", &token).await;
    assert_eq!(reply.header("x-mantle-revision").unwrap(), format!("ann/tiny@{commit}"));
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    let content = body["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let usage = &body["usage"];
    assert_eq!(usage["prompt_tokens"], rendered("Hello there").len());
    assert_eq!(usage["completion_tokens"], content.len(), "one byte per token");
    assert_eq!(usage["total_tokens"], rendered("Hello there").len() + content.len());
    let reason = body["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(reason == "length" && content.len() == 24 || reason == "stop", "{reason} {content:?}");

    // The same seed gives the same answer; the fingerprint is stable.
    let again = server.json("POST", "/v1/chat/completions", Some(&token), chat("Hello there", serde_json::json!({ "seed": 7, "temperature": 0.8 }))).await.json();
    assert_eq!(again["choices"][0]["message"]["content"], content.as_str());
    assert_eq!(again["system_fingerprint"], fingerprint);

    // n choices, each its own sample; prompt counted once.
    let many = server.json("POST", "/v1/chat/completions", Some(&token), chat("Hello there", serde_json::json!({ "n": 3, "seed": 1 }))).await.json();
    let choices = many["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    let generated: usize = choices.iter().map(|c| c["message"]["content"].as_str().unwrap().len()).sum();
    assert_eq!(many["usage"]["completion_tokens"], generated);
    assert_eq!(many["usage"]["prompt_tokens"], rendered("Hello there").len());
}

#[tokio::test]
async fn streamed_chat_matches_the_plain_answer_and_reports_usage() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let plain = server.json("POST", "/v1/chat/completions", Some(&token), chat("stream me", serde_json::json!({ "seed": 3 }))).await.json();
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("stream me", serde_json::json!({ "seed": 3, "stream": true, "stream_options": { "include_usage": true } }))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").unwrap().starts_with("text/event-stream"));
    let events = sse_data(&reply.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], chunks[0]["id"]);
        assert_eq!(chunk["system_fingerprint"], plain["system_fingerprint"]);
        if let Some(piece) = chunk["choices"].get(0).and_then(|c| c["delta"]["content"].as_str()) {
            text.push_str(piece);
        }
    }
    assert_eq!(text, plain["choices"][0]["message"]["content"].as_str().unwrap());
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], plain["choices"][0]["finish_reason"]);
    assert!(finish["usage"].is_null());
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage_chunk["usage"], plain["usage"]);

    // Without include_usage there is no usage chunk and no usage field.
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("stream me", serde_json::json!({ "stream": true }))).await;
    let events = sse_data(&reply.body);
    let last: serde_json::Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string());
    assert!(last.get("usage").is_none());
}

#[tokio::test]
async fn completions_plain_streamed_and_by_token() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let body = serde_json::json!({ "model": "tiny", "prompt": "Once upon", "max_tokens": 10, "temperature": 0 });
    let reply = server.json("POST", "/v1/completions", Some(&token), body.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let plain = reply.json();
    assert_eq!(plain["object"], "text_completion");
    assert_eq!(plain["usage"]["prompt_tokens"], "Once upon".len());
    let text = plain["choices"][0]["text"].as_str().unwrap();
    assert_eq!(plain["usage"]["completion_tokens"], text.len());

    // The same prompt as token ids gives the same greedy text.
    let ids: Vec<u32> = "Once upon".bytes().map(u32::from).collect();
    let by_ids = server.json("POST", "/v1/completions", Some(&token), serde_json::json!({ "model": "tiny", "prompt": ids, "max_tokens": 10, "temperature": 0 })).await.json();
    assert_eq!(by_ids["choices"][0]["text"], text);

    let mut streamed = body;
    streamed["stream"] = serde_json::json!(true);
    let events = sse_data(&server.json("POST", "/v1/completions", Some(&token), streamed).await.body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let joined: String = events[..events.len() - 1].iter().map(|e| serde_json::from_str::<serde_json::Value>(e).unwrap()["choices"][0]["text"].as_str().unwrap().to_owned()).collect();
    assert_eq!(joined, text);

    // Two prompts, each its own choice.
    let two = server.json("POST", "/v1/completions", Some(&token), serde_json::json!({ "model": "tiny", "prompt": ["a", "bc"], "max_tokens": 3 })).await.json();
    assert_eq!(two["choices"].as_array().unwrap().len(), 2);
    assert_eq!(two["usage"]["prompt_tokens"], 3);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let (server, token) = deployed(|_| {}, true, 4).await;
    let outsider = server.user("oz", None, "admin").await;
    // Keys.
    assert_openai_error(&server.json("POST", "/v1/chat/completions", None, chat("hi", serde_json::json!({}))).await, StatusCode::UNAUTHORIZED, None);
    assert_openai_error(&server.json("POST", "/v1/chat/completions", Some("nope"), chat("hi", serde_json::json!({}))).await, StatusCode::UNAUTHORIZED, None);
    assert_openai_error(&server.get("/v1/models", None).await, StatusCode::UNAUTHORIZED, None);
    // A private repo's deployment is invisible to others, like a missing model.
    let hidden = server.json("POST", "/v1/chat/completions", Some(&outsider), chat("hi", serde_json::json!({}))).await;
    assert_openai_error(&hidden, StatusCode::NOT_FOUND, None);
    assert_eq!(hidden.json()["error"]["code"], "model_not_found");
    assert_eq!(server.get("/v1/models", Some(&outsider)).await.json()["data"].as_array().unwrap().len(), 0);
    let mut unknown = chat("hi", serde_json::json!({}));
    unknown["model"] = serde_json::json!("ghost");
    assert_openai_error(&server.json("POST", "/v1/chat/completions", Some(&token), unknown).await, StatusCode::NOT_FOUND, None);
    // Bodies and fields.
    let malformed = server.send("POST", "/v1/chat/completions", Some(&token), Some("application/json"), b"{not json".to_vec()).await;
    assert_openai_error(&malformed, StatusCode::BAD_REQUEST, None);
    let missing = server.json("POST", "/v1/chat/completions", Some(&token), serde_json::json!({ "model": "tiny" })).await;
    assert_openai_error(&missing, StatusCode::BAD_REQUEST, None);
    for (extra, param) in [
        (serde_json::json!({ "temperature": 3 }), "temperature"),
        (serde_json::json!({ "top_p": -0.5 }), "top_p"),
        (serde_json::json!({ "n": 0 }), "n"),
        (serde_json::json!({ "max_tokens": 0 }), "max_tokens"),
        (serde_json::json!({ "stop": ["a", "b", "c", "d", "e"] }), "stop"),
        (serde_json::json!({ "logprobs": 3 }), "logprobs"),
        (serde_json::json!({ "logprobs": true, "top_logprobs": 21 }), "top_logprobs"),
        (serde_json::json!({ "top_logprobs": 2 }), "top_logprobs"),
        (serde_json::json!({ "tools": [{ "type": "function", "function": { "name": "f", "parameters": { "type": "object", "properties": { "a": { "type": "string", "format": "idn-hostname" } } } } }], "tool_choice": "required" }), "tools[0]"),
        (serde_json::json!({ "tools": [{ "type": "function", "function": { "name": "bad name" } }] }), "tools[0]"),
        (serde_json::json!({ "tools": [{ "type": "function", "function": { "name": "f" } }], "tool_choice": { "type": "function", "function": { "name": "g" } } }), "tool_choice"),
        (serde_json::json!({ "tool_choice": "required" }), "tool_choice"),
        (serde_json::json!({ "response_format": { "type": "xml" } }), "response_format"),
        (serde_json::json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "x", "schema": { "type": "string", "pattern": "(?!a)" } } } }), "response_format.json_schema.schema"),
        (serde_json::json!({ "response_format": { "type": "json_schema", "json_schema": { "schema": { "type": "string" } } } }), "response_format.json_schema.name"),
        (serde_json::json!({ "stream_options": { "include_usage": true } }), "stream_options"),
        (serde_json::json!({ "max_tokens": 100000 }), "messages"),
    ] {
        let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("hi", extra.clone())).await;
        assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some(param));
    }
    let empty = server.json("POST", "/v1/chat/completions", Some(&token), serde_json::json!({ "model": "tiny", "messages": [] })).await;
    assert_openai_error(&empty, StatusCode::BAD_REQUEST, Some("messages"));
    let role = server.json("POST", "/v1/chat/completions", Some(&token), serde_json::json!({ "model": "tiny", "messages": [{ "role": "wizard", "content": "x" }] })).await;
    assert_openai_error(&role, StatusCode::BAD_REQUEST, Some("messages[0]"));
    let token_ids = server.json("POST", "/v1/completions", Some(&token), serde_json::json!({ "model": "tiny", "prompt": [999999] })).await;
    assert_openai_error(&token_ids, StatusCode::BAD_REQUEST, Some("prompt"));
    assert_openai_error(&server.get("/v1/nothing", Some(&token)).await, StatusCode::NOT_FOUND, None);
    // After all that, the model still answers.
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&token), chat("hi", serde_json::json!({}))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_full_engine_answers_429_and_a_dropped_stream_frees_its_place() {
    let (server, token) = deployed(|raw| raw.runtime.max_queue = 1, false, 1).await;
    let body = chat("hold", serde_json::json!({ "stream": true }));
    // Two held streams fill one running slot and one queue place.
    let first = server.open_stream("/v1/chat/completions", &token, body.clone()).await;
    let second = server.open_stream("/v1/chat/completions", &token, body.clone()).await;
    assert_eq!((first.status(), second.status()), (StatusCode::OK, StatusCode::OK));
    let refused = server.json("POST", "/v1/chat/completions", Some(&token), chat("more", serde_json::json!({}))).await;
    assert_openai_error(&refused, StatusCode::TOO_MANY_REQUESTS, None);
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    // A client that goes away frees its place at once.
    drop(first);
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("more", serde_json::json!({}))).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    drop(second);

    let metrics = String::from_utf8(server.get("/metrics", None).await.body).unwrap();
    for needle in [
        "mantle_requests_total{deployment=\"tiny\",outcome=\"ok\"} 1",
        "mantle_requests_total{deployment=\"tiny\",outcome=\"rejected\"} 1",
        "mantle_requests_total{deployment=\"tiny\",outcome=\"cancelled\"} 2",
        "mantle_loaded_models 1",
        "mantle_time_to_first_token_seconds_count{deployment=\"tiny\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}

#[tokio::test]
async fn undeploy_unloads_and_a_policy_change_stops_new_loads() {
    let (server, token) = deployed(|_| {}, false, 2).await;
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&token), chat("hi", serde_json::json!({}))).await.status, StatusCode::OK);
    assert_eq!(server.state.runtime.resident().len(), 1);
    assert_eq!(server.send("DELETE", "/api/admin/deployments/tiny", Some(ADMIN), None, vec![]).await.status, StatusCode::OK);
    assert!(server.state.runtime.resident().is_empty());
    assert_eq!(server.json("POST", "/v1/chat/completions", Some(&token), chat("hi", serde_json::json!({}))).await.status, StatusCode::NOT_FOUND);

    // Deployed again, then the org allows only MIT: loading is refused with the verdict's reasons.
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), serde_json::json!({ "name": "tiny", "repo": "ann/tiny" })).await;
    assert_eq!(reply.status, StatusCode::OK);
    let policy = serde_json::json!({ "allow_pickle": true, "allowed_licenses": ["mit"], "suspicious_blocks": false });
    assert_eq!(server.json("PUT", "/api/policies/ann", Some(ADMIN), policy).await.status, StatusCode::OK);
    let refused = server.json("POST", "/v1/chat/completions", Some(&token), chat("hi", serde_json::json!({}))).await;
    assert_openai_error(&refused, StatusCode::FORBIDDEN, None);
    assert!(server.state.runtime.resident().is_empty());
}

#[tokio::test]
async fn logprobs_in_chat_completions_and_streams() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("probe", serde_json::json!({ "logprobs": true, "top_logprobs": 2, "temperature": 0 }))).await.json();
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let entries = reply["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(entries.len() as u64, reply["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!(entries.iter().map(|e| e["token"].as_str().unwrap()).collect::<String>(), content);
    for entry in entries {
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 2);
        assert_eq!(entry["top_logprobs"][0]["token"], entry["token"], "greedy takes the likeliest");
        assert_eq!(entry["bytes"].as_array().unwrap().len(), 1);
    }
    // Without the flag there are none.
    let plain = server.json("POST", "/v1/chat/completions", Some(&token), chat("probe", serde_json::json!({}))).await.json();
    assert!(plain["choices"][0]["logprobs"].is_null());

    // Streamed: every content chunk carries the entries of its own tokens.
    let events = sse_data(&server.json("POST", "/v1/chat/completions", Some(&token), chat("probe", serde_json::json!({ "logprobs": true, "temperature": 0, "stream": true }))).await.body);
    let mut streamed = Vec::new();
    for event in &events[..events.len() - 1] {
        let chunk: serde_json::Value = serde_json::from_str(event).unwrap();
        if let Some(list) = chunk["choices"][0]["logprobs"]["content"].as_array() {
            streamed.extend(list.iter().map(|e| e["token"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(streamed.concat(), content);

    // Completions: parallel arrays with text offsets.
    let done = server.json("POST", "/v1/completions", Some(&token), serde_json::json!({ "model": "tiny", "prompt": "abc", "max_tokens": 5, "logprobs": 1, "temperature": 0 })).await.json();
    let logprobs = &done["choices"][0]["logprobs"];
    assert_eq!(logprobs["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(logprobs["text_offset"], serde_json::json!([0, 1, 2, 3, 4]));
    assert_eq!(logprobs["top_logprobs"][0].as_object().unwrap().len(), 1);
}

/// A small, valid safetensors file.
fn tiny_safetensors() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header);
    out.extend([0u8; 8]);
    out
}

/// `ann/enc` with an encoder's files (the mock embedder stands in for the weights), deployed as `enc`.
pub(crate) async fn deployed_encoder(server: &TestServer, token: &str, with_tokenizer: bool) {
    server.create_repo(token, "enc", false).await;
    let mut lines = vec![header("encoder"), file("model.safetensors", &tiny_safetensors()), file("config.json", b"{}"), file("README.md", b"---\nlicense: apache-2.0\n---\n# enc\n")];
    if with_tokenizer {
        lines.push(file("tokenizer.json", b"{}"));
    }
    let reply = server.commit(token, "ann/enc", &lines).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), serde_json::json!({ "name": "enc", "repo": "ann/enc" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["file"], "model.safetensors");
}

#[tokio::test]
async fn embeddings_as_floats_and_base64() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &token, true).await;
    let reply = server.json("POST", "/v1/embeddings", Some(&token), serde_json::json!({ "model": "enc", "input": ["a cat", "a cat", "quarterly revenue"] })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let body = reply.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["usage"]["prompt_tokens"], 5 + 5 + 17);
    let vectors: Vec<Vec<f64>> = body["data"].as_array().unwrap().iter().map(|d| d["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()).collect();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 16 && (v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-5));
    assert_eq!(vectors[0], vectors[1]);
    assert_eq!(body["data"][2]["index"], 2);
    assert!(reply.header("x-mantle-revision").unwrap().starts_with("ann/enc@"));

    // base64: the little-endian bytes of the same floats.
    let encoded = server.json("POST", "/v1/embeddings", Some(&token), serde_json::json!({ "model": "enc", "input": "a cat", "encoding_format": "base64" })).await.json();
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded["data"][0]["embedding"].as_str().unwrap()).unwrap();
    let floats: Vec<f64> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect();
    assert_eq!(floats.iter().map(|f| *f as f32).collect::<Vec<_>>(), vectors[0].iter().map(|f| *f as f32).collect::<Vec<_>>());

    // Wrong model kinds, bad fields and inputs: OpenAI errors.
    assert_openai_error(&server.json("POST", "/v1/chat/completions", Some(&token), serde_json::json!({ "model": "enc", "messages": [{ "role": "user", "content": "hi" }] })).await, StatusCode::BAD_REQUEST, Some("model"));
    assert_openai_error(&server.json("POST", "/v1/embeddings", Some(&token), serde_json::json!({ "model": "tiny", "input": "hi" })).await, StatusCode::BAD_REQUEST, Some("model"));
    for (body, param) in [
        (serde_json::json!({ "model": "enc", "input": "x".repeat(65) }), "input"),
        (serde_json::json!({ "model": "enc", "input": "" }), "input"),
        (serde_json::json!({ "model": "enc", "input": [] }), "input"),
        (serde_json::json!({ "model": "enc", "input": "hi", "encoding_format": "hex" }), "encoding_format"),
        (serde_json::json!({ "model": "enc", "input": "hi", "dimensions": 8 }), "dimensions"),
    ] {
        assert_openai_error(&server.json("POST", "/v1/embeddings", Some(&token), body).await, StatusCode::BAD_REQUEST, Some(param));
    }
    assert_openai_error(&server.json("POST", "/v1/embeddings", None, serde_json::json!({ "model": "enc", "input": "hi" })).await, StatusCode::UNAUTHORIZED, None);
}

#[tokio::test]
async fn an_encoder_without_its_tokenizer_fails_to_load_with_a_clear_error() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    deployed_encoder(&server, &token, false).await;
    let reply = server.json("POST", "/v1/embeddings", Some(&token), serde_json::json!({ "model": "enc", "input": "hi" })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, None);
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains("tokenizer.json"), "{:?}", reply.json());
}
