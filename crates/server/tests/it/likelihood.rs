//! Likelihood evaluation on the mock runner (one token per byte; its logits are a known function
//! of the history, `engine::mock::logits_after`, so every log probability can be checked):
//! `/v1/completions` with `echo` and `logprobs` over text and token-id prompts, `max_tokens` 0,
//! streamed echo, and vLLM's `/tokenize`, `/detokenize` and `/tokenizer_info`.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::ADMIN;
use crate::openai::{assert_openai_error, deployed, sse_data};

/// The log probability the mock gives `next` after `history`.
pub(crate) fn mock_logprob(history: &[u32], next: u32) -> f64 {
    let logits = engine::mock::logits_after(history);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let norm = max + logits.iter().map(|l| (l - max).exp()).sum::<f32>().ln();
    f64::from(logits[next as usize] - norm)
}

async fn complete(server: &crate::harness::TestServer, token: &str, body: Value) -> Value {
    let reply = server.json("POST", "/v1/completions", Some(token), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    reply.json()
}

#[tokio::test]
async fn echo_scores_every_prompt_token_as_lm_eval_reads_it() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    // lm-evaluation-harness's local-completions request: a batch of token-id prompts.
    let prompts: Vec<Vec<u32>> = ["the cat sat", "a dog ran far"].iter().map(|t| t.bytes().map(u32::from).collect()).collect();
    let body = complete(&server, &token, json!({ "model": "tiny", "prompt": prompts, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": 1234, "echo": true })).await;
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    for (choice, prompt) in choices.iter().zip(&prompts) {
        let text = std::str::from_utf8(&prompt.iter().map(|t| *t as u8).collect::<Vec<_>>()).unwrap().to_owned();
        let logprobs = &choice["logprobs"];
        let tokens = logprobs["tokens"].as_array().unwrap();
        let values = logprobs["token_logprobs"].as_array().unwrap();
        let tops = logprobs["top_logprobs"].as_array().unwrap();
        let offsets = logprobs["text_offset"].as_array().unwrap();
        // The prompt's tokens, then the one generated.
        assert_eq!(tokens.len(), prompt.len() + 1);
        assert!(values[0].is_null() && tops[0].is_null());
        assert!(choice["text"].as_str().unwrap().starts_with(&text));
        let spelled: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
        assert_eq!(spelled, choice["text"].as_str().unwrap());
        for (i, offset) in offsets.iter().enumerate() {
            assert_eq!(offset.as_u64().unwrap() as usize, tokens[..i].iter().map(|t| t.as_str().unwrap().len()).sum::<usize>());
        }
        for i in 1..prompt.len() {
            let got = values[i].as_f64().unwrap();
            assert!((got - mock_logprob(&prompt[..i], prompt[i])).abs() < 1e-4, "token {i}: {got}");
            // One alternative, the likeliest: lm-eval's greedy check compares against it.
            let top = tops[i].as_object().unwrap();
            assert_eq!(top.len(), 1);
            assert!(top.values().next().unwrap().as_f64().unwrap() >= got - 1e-6);
        }
        // The generated token is scored after the whole prompt.
        let last = values[prompt.len()].as_f64().unwrap();
        let generated = tokens[prompt.len()].as_str().unwrap().as_bytes();
        let generated = if generated.is_empty() { engine::mock::EOS } else { u32::from(generated[0]) };
        assert!((last - mock_logprob(prompt, generated)).abs() < 1e-4);
    }
    assert_eq!(body["usage"]["prompt_tokens"], prompts.iter().map(Vec::len).sum::<usize>());

    // A text prompt is given back as it was sent.
    let body = complete(&server, &token, json!({ "model": "tiny", "prompt": "hello world", "max_tokens": 3, "echo": true })).await;
    assert!(body["choices"][0]["text"].as_str().unwrap().starts_with("hello world"));
    assert!(body["choices"][0]["logprobs"].is_null());
}

#[tokio::test]
async fn max_tokens_zero_scores_only_and_needs_echo() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let body = complete(&server, &token, json!({ "model": "tiny", "prompt": "score me", "max_tokens": 0, "echo": true, "logprobs": 0 })).await;
    let choice = &body["choices"][0];
    assert_eq!(choice["text"], "score me");
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(choice["logprobs"]["tokens"].as_array().unwrap().len(), 8);
    assert!(choice["logprobs"]["top_logprobs"][1].as_object().unwrap().is_empty());
    assert_eq!(body["usage"]["completion_tokens"], 0);
    assert_eq!(body["usage"]["prompt_tokens"], 8);
    let reply = server.json("POST", "/v1/completions", Some(&token), json!({ "model": "tiny", "prompt": "x", "max_tokens": 0 })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("max_tokens"));
    let reply = server.json("POST", "/v1/completions", Some(&token), json!({ "model": "tiny", "prompt": "x", "echo": true, "response_format": { "type": "json_object" } })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("echo"));
    let reply = server.json("POST", "/v1/completions", Some(&token), json!({ "model": "tiny", "prompt": [[1, 999]], "echo": true, "max_tokens": 1 })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("prompt"));
}

#[tokio::test]
async fn a_streamed_echo_sends_the_prompt_first() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let response = server.open_stream("/v1/completions", &token, json!({ "model": "tiny", "prompt": "abc", "max_tokens": 4, "echo": true, "logprobs": 1, "stream": true })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let events = sse_data(&body);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["text"], "abc");
    assert_eq!(chunks[0]["choices"][0]["logprobs"]["token_logprobs"][0], Value::Null);
    assert_eq!(chunks[0]["choices"][0]["logprobs"]["text_offset"], json!([0, 1, 2]));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect();
    let offsets: Vec<u64> = chunks.iter().filter_map(|c| c["choices"][0]["logprobs"]["text_offset"].as_array()).flatten().map(|o| o.as_u64().unwrap()).collect();
    assert_eq!(offsets.len(), text.len(), "one byte token per byte of text");
    assert!(offsets.iter().enumerate().all(|(i, o)| *o == i as u64));
}

#[tokio::test]
async fn tokenizer_endpoints_speak_vllms_shape_and_keep_deployments_apart() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let reply = server.json("POST", "/tokenize", Some(&token), json!({ "prompt": "hi <|im_end|>", "add_special_tokens": false })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["tokens"], json!("hi <|im_end|>".bytes().collect::<Vec<_>>()));
    assert_eq!(reply.json()["count"], 13);
    assert!(reply.json()["max_model_len"].as_u64().unwrap() > 0);
    let reply = server.json("POST", "/tokenize", Some(&token), json!({ "prompt": "ab", "return_token_strs": true })).await;
    assert_eq!(reply.json()["token_strs"], json!(["a", "b"]));
    let reply = server.json("POST", "/tokenize", Some(&token), json!({ "model": "tiny", "messages": [{ "role": "user", "content": "yo" }] })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["tokens"], json!("<|im_start|>user\nyo<|im_end|>\n<|im_start|>assistant\n".bytes().collect::<Vec<_>>()));
    let reply = server.json("POST", "/detokenize", Some(&token), json!({ "model": "tiny", "tokens": [104, 105] })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["prompt"], "hi");
    let reply = server.get("/tokenizer_info", Some(&token)).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["chat_template"], crate::openai::CHATML);
    assert_eq!(reply.json()["tokenizer_class"], "mock");

    // Bad input is a 400 naming the field; nothing without a token; another tenant's private model is invisible.
    for (body, param) in [(json!({ "prompt": "a", "messages": [] }), Some("prompt")), (json!({}), Some("prompt")), (json!({ "prompt": "a", "truncate_prompt_tokens": 3 }), None)] {
        let reply = server.json("POST", "/tokenize", Some(&token), body).await;
        assert_openai_error(&reply, StatusCode::BAD_REQUEST, param);
    }
    let reply = server.json("POST", "/detokenize", Some(&token), json!({ "tokens": [104, 4096] })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("tokens"));
    assert_eq!(server.json("POST", "/tokenize", None, json!({ "prompt": "a" })).await.status, StatusCode::UNAUTHORIZED);

    let bob = server.user("bob", None, "write").await;
    server.create_repo(&bob, "secret", true).await;
    let reply = server.commit(&bob, "bob/secret", &[crate::harness::header("w"), crate::harness::file("m.gguf", &crate::openai::gguf_with_template(crate::openai::CHATML)), crate::harness::file("README.md", b"---\nlicense: mit\n---\n")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    server::scanner::scan_pending(&server.state).await.unwrap();
    let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), json!({ "name": "secret", "repo": "bob/secret" })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    // Ann still sees one model, so it stays her default; she cannot name Bob's.
    assert_eq!(server.json("POST", "/tokenize", Some(&token), json!({ "prompt": "a" })).await.status, StatusCode::OK);
    assert_eq!(server.json("POST", "/tokenize", Some(&token), json!({ "model": "secret", "prompt": "a" })).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/tokenizer_info?model=secret", Some(&token)).await.status, StatusCode::NOT_FOUND);
    // Bob sees two: he must say which.
    let reply = server.json("POST", "/tokenize", Some(&bob), json!({ "prompt": "a" })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("model"));
    assert_eq!(server.json("POST", "/tokenize", Some(&bob), json!({ "model": "secret", "prompt": "a" })).await.status, StatusCode::OK);
    // Or name it in the path, as lm-eval derives the tokenizer's URL from the completions URL.
    let reply = server.json("POST", "/deployments/secret/tokenize", Some(&bob), json!({ "prompt": "ab", "add_special_tokens": false })).await;
    assert_eq!(reply.json()["tokens"], json!([97, 98]));
    assert_eq!(server.get("/deployments/tiny/tokenizer_info", Some(&bob)).await.status, StatusCode::OK);
    assert_eq!(server.json("POST", "/deployments/tiny/detokenize", Some(&bob), json!({ "tokens": [97] })).await.json()["prompt"], "a");
    let reply = server.json("POST", "/deployments/secret/v1/completions", Some(&bob), json!({ "model": "secret", "prompt": "ab", "max_tokens": 1, "echo": true, "logprobs": 1 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["choices"][0]["logprobs"]["tokens"].as_array().unwrap().len(), 3);
    let reply = server.json("POST", "/deployments/secret/v1/completions", Some(&bob), json!({ "model": "tiny", "prompt": "ab", "max_tokens": 1 })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("model"));
    assert_eq!(server.json("POST", "/deployments/secret/tokenize", Some(&token), json!({ "prompt": "a" })).await.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/deployments/secret/tokenizer_info", Some(&token)).await.status, StatusCode::NOT_FOUND);
}
