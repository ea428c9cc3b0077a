//! The inference layer's own behaviour, the same for every API: sampling defaults per deployment
//! (deploy settings, then the revision's `generation_config.json`, then the GGUF's
//! `general.sampling.*`, then the API's), and `response_format` shapes real clients send.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::harness::{file, header, TestServer, ADMIN};
use crate::openai::{deployed, gguf_with_template, CHATML};

/// A GGUF with the ChatML template and extra metadata entries `(key, GGUF type, value bytes)`.
fn gguf_with(entries: &[(&str, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = gguf_with_template(CHATML);
    // The entry count sits after the magic, the version and the tensor count.
    out[16..24].copy_from_slice(&(1 + entries.len() as u64).to_le_bytes());
    for (key, kind, value) in entries {
        out.extend((key.len() as u64).to_le_bytes());
        out.extend(key.as_bytes());
        out.extend(kind.to_le_bytes());
        out.extend(value);
    }
    out
}

/// `ann/<repo>` with `files`, scanned, deployed as `<repo>` with `extra` deploy fields.
async fn deploy(server: &TestServer, token: &str, repo: &str, files: &[(&str, Vec<u8>)], extra: Value) -> crate::harness::Reply {
    server.create_repo(token, repo, false).await;
    let mut lines = vec![header("weights")];
    lines.extend(files.iter().map(|(path, bytes)| file(path, bytes)));
    lines.push(file("README.md", b"---\nlicense: apache-2.0\n---\n# m\n"));
    let reply = server.commit(token, &format!("ann/{repo}"), &lines).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    server::scanner::scan_pending(&server.state).await.unwrap();
    let mut body = json!({ "name": repo, "repo": format!("ann/{repo}"), "max_batch": 4 });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    server.json("POST", "/api/admin/deployments", Some(ADMIN), body).await
}

async fn ask(server: &TestServer, token: &str, model: &str, extra: Value) -> Value {
    let mut body = json!({ "model": model, "messages": [{ "role": "user", "content": "hello" }] });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let reply = server.json("POST", "/v1/chat/completions", Some(token), body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    reply.json()
}

fn text(answer: &Value) -> String {
    answer["choices"][0]["message"]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn r12_deployment_sampling_defaults_apply_where_a_request_sets_none() {
    let server = TestServer::new().await;
    let token = server.user("ann", None, "write").await;
    let reply = deploy(&server, &token, "greedy", &[("m.gguf", gguf_with_template(CHATML))], json!({ "sampling": { "temperature": 0.0, "max_tokens": 6 } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["sampling"], json!({ "temperature": 0.0, "max_tokens": 6 }));
    let listed = server.get("/api/admin/deployments", Some(ADMIN)).await.json();
    assert_eq!(listed[0]["sampling"], json!({ "temperature": 0.0, "max_tokens": 6 }));

    // No temperature and no limit: greedy, six tokens, the same every time.
    let first = ask(&server, &token, "greedy", json!({})).await;
    assert_eq!(first["usage"]["completion_tokens"], 6, "{first}");
    assert_eq!(first["choices"][0]["finish_reason"], "length");
    for _ in 0..3 {
        assert_eq!(text(&ask(&server, &token, "greedy", json!({})).await), text(&first));
    }
    // What the request sets wins.
    let long = ask(&server, &token, "greedy", json!({ "max_tokens": 9 })).await;
    assert_eq!(long["usage"]["completion_tokens"], 9);
    let sampled: Vec<String> = futures::future::join_all((0..4).map(|seed| ask(&server, &token, "greedy", json!({ "temperature": 2.0, "seed": seed })))).await.iter().map(text).collect();
    assert!(sampled.iter().any(|t| *t != text(&first)), "{sampled:?}");
    // Ollama gets the same defaults (its own apply only where the deployment sets none).
    let ollama = server.json("POST", "/api/generate", Some(&token), json!({ "model": "greedy", "prompt": "hello", "stream": false })).await.json();
    assert_eq!(ollama["eval_count"], 6, "{ollama}");

    // Out of range defaults are refused and name the field.
    for bad in [json!({ "temperature": 3.0 }), json!({ "top_p": 0.0 }), json!({ "max_tokens": 0 }), json!({ "top_k": 2_000_000 }), json!({ "temprature": 1.0 })] {
        let reply = server.json("POST", "/api/admin/deployments", Some(ADMIN), json!({ "name": "bad", "repo": "ann/greedy", "sampling": bad })).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", reply.json());
    }
    assert_eq!(server.get("/api/admin/deployments", Some(ADMIN)).await.json().as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn r12_generation_config_and_gguf_metadata_fill_what_the_deployer_left_out() {
    let server = TestServer::new().await;
    let token = server.user("ann", None, "write").await;
    // generation_config.json, as vLLM reads it; an out-of-range value is dropped, not fatal.
    let config = br#"{"temperature": 0.3, "top_p": 0.8, "top_k": 7, "max_new_tokens": 5, "repetition_penalty": 99, "do_sample": true}"#.to_vec();
    let reply = deploy(&server, &token, "hf", &[("m.gguf", gguf_with_template(CHATML)), ("generation_config.json", config)], json!({ "sampling": { "top_p": 0.5 } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let sampling = &reply.json()["sampling"];
    assert_eq!(sampling["top_p"], 0.5, "the deployer's value wins: {sampling}");
    assert_eq!((sampling["top_k"].clone(), sampling["max_tokens"].clone()), (json!(7), json!(5)), "{sampling}");
    assert!((sampling["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6, "{sampling}");
    assert!(sampling.get("repetition_penalty").is_none(), "{sampling}");
    assert_eq!(ask(&server, &token, "hf", json!({})).await["usage"]["completion_tokens"], 5);

    // do_sample: false is greedy.
    let greedy = br#"{"do_sample": false, "temperature": 0.7}"#.to_vec();
    let reply = deploy(&server, &token, "hfgreedy", &[("m.gguf", gguf_with_template(CHATML)), ("generation_config.json", greedy)], json!({})).await;
    assert_eq!(reply.json()["sampling"]["temperature"], 0.0);

    // The GGUF's own recommendation (general.sampling.temp 0, top_k -1 meaning off) applies when
    // neither the deployer nor a generation_config.json says: answers without a temperature are
    // greedy, so identical.
    let file = gguf_with(&[("general.sampling.temp", 6, 0f32.to_le_bytes().to_vec()), ("general.sampling.top_k", 5, (-1i32).to_le_bytes().to_vec())]);
    let reply = deploy(&server, &token, "file", &[("m.gguf", file)], json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["sampling"], json!({}), "file metadata is read at load, not stored");
    let answers: Vec<String> = futures::future::join_all((0..4).map(|_| ask(&server, &token, "file", json!({ "max_tokens": 12 })))).await.iter().map(text).collect();
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    // Once resident, the admin listing shows the defaults in effect, the file's included.
    let listed = server.get("/api/admin/deployments", Some(ADMIN)).await.json();
    let file = listed.as_array().unwrap().iter().find(|d| d["name"] == "file").unwrap().clone();
    assert_eq!((file["resident"].clone(), file["effective_sampling"].clone()), (json!(true), json!({ "temperature": 0.0, "top_k": 0 })), "{file}");
    let hf = listed.as_array().unwrap().iter().find(|d| d["name"] == "hf").unwrap().clone();
    assert_eq!(hf["effective_sampling"]["top_p"], 0.5, "{hf}");
}

#[tokio::test]
async fn r12_json_object_with_a_schema_is_held_to_the_schema() {
    // What llama-server accepts and instructor's JSON_SCHEMA mode sends.
    let (server, token) = deployed(|_| {}, false, 4).await;
    let schema = json!({ "type": "object", "properties": { "city": { "type": "string", "maxLength": 8 }, "country": { "type": "string", "maxLength": 8 }, "population": { "type": "integer" }, "capital": { "type": "boolean" } }, "required": ["city", "country", "population", "capital"], "additionalProperties": false });
    for seed in 0..3 {
        let answer = ask(&server, &token, "tiny", json!({ "response_format": { "type": "json_object", "schema": schema }, "temperature": 1.0, "seed": seed, "max_tokens": 300 })).await;
        let content = text(&answer);
        let value: Value = serde_json::from_str(&content).unwrap_or_else(|err| panic!("{content:?}: {err}"));
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 4, "{content}");
        assert!(value["city"].is_string() && value["country"].is_string() && crate::structured::is_integer(&value["population"]) && value["capital"].is_boolean(), "{content}");
    }
    // A schema the grammar cannot enforce, or that is not a schema, is a 400 naming it.
    for (schema, param) in [(json!({ "type": "string", "pattern": "(?!a)" }), "response_format.schema"), (json!("object"), "response_format.schema")] {
        let reply = server.json("POST", "/v1/chat/completions", Some(&token), json!({ "model": "tiny", "messages": [{ "role": "user", "content": "x" }], "response_format": { "type": "json_object", "schema": schema } })).await;
        crate::openai::assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some(param));
    }
}

#[tokio::test]
async fn r12_a_prompt_over_the_context_names_the_field_that_holds_it() {
    // The mock's context is 4096 tokens at one token per byte: 5,000 bytes pass the byte bound
    // that is checked before tokenizing, and are refused once counted.
    let (server, token) = deployed(|_| {}, false, 4).await;
    let long = "y".repeat(5000);
    let chat = server.json("POST", "/v1/chat/completions", Some(&token), json!({ "model": "tiny", "messages": [{ "role": "user", "content": long }] })).await;
    crate::openai::assert_openai_error(&chat, StatusCode::BAD_REQUEST, Some("messages"));
    assert_eq!(chat.json()["error"]["code"], "context_length_exceeded");
    let completion = server.json("POST", "/v1/completions", Some(&token), json!({ "model": "tiny", "prompt": long })).await;
    crate::openai::assert_openai_error(&completion, StatusCode::BAD_REQUEST, Some("prompt"));
    // A max_tokens that does not fit beside the prompt, likewise.
    let crowded = server.json("POST", "/v1/completions", Some(&token), json!({ "model": "tiny", "prompt": "y".repeat(4000), "max_tokens": 500 })).await;
    crate::openai::assert_openai_error(&crowded, StatusCode::BAD_REQUEST, Some("prompt"));
    // An empty token prompt is the caller's 400, not an engine error.
    let empty = server.json("POST", "/v1/completions", Some(&token), json!({ "model": "tiny", "prompt": [[]] })).await;
    crate::openai::assert_openai_error(&empty, StatusCode::BAD_REQUEST, Some("prompt"));
}
