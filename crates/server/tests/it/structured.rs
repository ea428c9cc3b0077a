//! Structured output and tool calls through the OpenAI and Ollama routes, on the mock model: a
//! grammar keeps even its random letters inside the schema, and its scripted answers
//! (`[[say:...]]`) exercise the parsing of calls a model writes on its own.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::openai::{deployed, sse_data};

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({ "model": "tiny", "messages": [{ "role": "user", "content": content }], "max_tokens": 400, "temperature": 0 });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

fn weather_tools() -> Value {
    json!([
        { "type": "function", "function": { "name": "get_weather", "description": "Weather in a city", "parameters": { "type": "object", "properties": { "city": { "type": "string", "maxLength": 12 }, "unit": { "enum": ["c", "f"] } }, "required": ["city", "unit"], "additionalProperties": false } } },
        { "type": "function", "function": { "name": "get_time", "parameters": { "type": "object", "properties": { "zone": { "type": "string", "maxLength": 6 } }, "required": ["zone"], "additionalProperties": false } } }
    ])
}

/// A JSON Schema integer: an integral number (`-0` included, which serde_json reads as a float).
pub(crate) fn is_integer(value: &Value) -> bool {
    value.as_f64().is_some_and(|n| n.fract() == 0.0)
}

/// The streamed chunks of an SSE body (without `[DONE]`).
fn chunks(body: &[u8]) -> Vec<Value> {
    let events = sse_data(body);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect()
}

#[tokio::test]
async fn json_schema_output_parses_and_validates_plain_and_streamed() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let schema = json!({ "type": "object", "properties": { "name": { "type": "string", "maxLength": 10 }, "age": { "type": "integer" }, "pets": { "type": "array", "items": { "enum": ["cat", "dog"] }, "maxItems": 3 } }, "required": ["name", "age", "pets"], "additionalProperties": false });
    let format = json!({ "response_format": { "type": "json_schema", "json_schema": { "name": "person", "strict": true, "schema": schema } } });
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("a person", format.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let body = reply.json();
    let content = body["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let value: Value = serde_json::from_str(&content).unwrap_or_else(|err| panic!("{content:?}: {err}"));
    assert!(value["name"].as_str().is_some_and(|n| n.chars().count() <= 10), "{content}");
    assert!(is_integer(&value["age"]), "{content}");
    assert!(value["pets"].as_array().is_some_and(|p| p.len() <= 3 && p.iter().all(|x| x == "cat" || x == "dog")), "{content}");
    assert_eq!(value.as_object().unwrap().len(), 3);
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // Usage counts every generated token, the grammar's included.
    assert!(body["usage"]["completion_tokens"].as_u64().unwrap() >= content.len() as u64 / 4);

    let mut streamed = format.clone();
    streamed["stream"] = json!(true);
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("a person", streamed)).await;
    let text: String = chunks(&reply.body).iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned)).collect();
    assert_eq!(text, content, "greedy streamed output equals the plain one");

    // json_object: any object.
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("anything", json!({ "response_format": { "type": "json_object" }, "temperature": 1.0, "seed": 5 }))).await;
    let content = reply.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    let reason = reply.json()["choices"][0]["finish_reason"].clone();
    if reason == "stop" {
        assert!(serde_json::from_str::<Value>(&content).unwrap_or_else(|err| panic!("{content:?}: {err}")).is_object());
    } else {
        assert!(content.trim_start().starts_with('{'), "{content}");
    }

    // Completions take response_format too.
    let reply = server
        .json("POST", "/v1/completions", Some(&token), json!({ "model": "tiny", "prompt": "x", "max_tokens": 200, "temperature": 0, "response_format": { "type": "json_schema", "json_schema": { "name": "n", "schema": { "type": "integer" } } } }))
        .await;
    let text = reply.json()["choices"][0]["text"].as_str().unwrap().to_owned();
    assert!(text.trim().parse::<i64>().is_ok(), "{text:?}");
}

#[tokio::test]
async fn required_and_named_tool_choices_force_valid_calls() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("weather?", json!({ "tools": weather_tools(), "tool_choice": "required", "parallel_tool_calls": false }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let choice = reply.json()["choices"][0].clone();
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    assert!(choice["message"]["content"].is_null(), "{choice}");
    let calls = choice["message"]["tool_calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["type"], "function");
    let name = call["function"]["name"].as_str().unwrap();
    let arguments: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    match name {
        "get_weather" => assert!(arguments["city"].is_string() && (arguments["unit"] == "c" || arguments["unit"] == "f"), "{arguments}"),
        "get_time" => assert!(arguments["zone"].is_string(), "{arguments}"),
        other => panic!("unknown function {other}"),
    }

    // Streamed: an opening delta with id, type and name, then argument fragments that add up.
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat("weather?", json!({ "tools": weather_tools(), "tool_choice": "required", "parallel_tool_calls": false, "stream": true }))).await;
    let chunks = chunks(&reply.body);
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert!(deltas.len() >= 3, "{deltas:?}");
    assert_eq!(deltas[0]["index"], 0);
    assert!(deltas[0]["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(deltas[0]["function"]["name"], name);
    assert!(deltas[1..].iter().all(|d| d.get("id").is_none() && d["function"].get("name").is_none()));
    let streamed: String = deltas.iter().filter_map(|d| d["function"]["arguments"].as_str()).collect();
    assert_eq!(streamed, call["function"]["arguments"].as_str().unwrap());
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "tool_calls");
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("content").is_none_or(|t| t == "")), "no content next to a forced call");

    // A named function: that one, with finish_reason stop as OpenAI reports it.
    let named = json!({ "tools": weather_tools(), "tool_choice": { "type": "function", "function": { "name": "get_time" } } });
    let choice = server.json("POST", "/v1/chat/completions", Some(&token), chat("time?", named)).await.json()["choices"][0].clone();
    assert_eq!(choice["finish_reason"], "stop");
    let calls = choice["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls[0]["function"]["name"], "get_time");
    let arguments: Value = serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["zone"].as_str().is_some_and(|z| z.chars().count() <= 6), "{arguments}");

    // tool_choice none: plain text, no calls.
    let choice = server.json("POST", "/v1/chat/completions", Some(&token), chat("[[say:no tools]]", json!({ "tools": weather_tools(), "tool_choice": "none" }))).await.json()["choices"][0].clone();
    assert_eq!(choice["message"]["content"], "no tools");
    assert!(choice["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn calls_the_model_writes_itself_are_parsed_and_results_go_back_in() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let script = "[[say:Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"c\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"zone\": \"CET\"}}\n</tool_call>]]";
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat(script, json!({ "tools": weather_tools() }))).await;
    let choice = reply.json()["choices"][0].clone();
    assert_eq!(choice["finish_reason"], "tool_calls", "{choice}");
    assert_eq!(choice["message"]["content"].as_str().unwrap().trim(), "Let me look.");
    let calls = choice["message"]["tool_calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"], json!({ "name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}" }));
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_ne!(calls[0]["id"], calls[1]["id"]);

    // parallel_tool_calls false keeps the first call only.
    let choice = server.json("POST", "/v1/chat/completions", Some(&token), chat(script, json!({ "tools": weather_tools(), "parallel_tool_calls": false }))).await.json()["choices"][0].clone();
    assert_eq!(choice["message"]["tool_calls"].as_array().unwrap().len(), 1);

    // Streamed, the content comes first and each call gets its own index.
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), chat(script, json!({ "tools": weather_tools(), "stream": true }))).await;
    let chunks = chunks(&reply.body);
    let content: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(content.trim(), "Let me look.");
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    for (index, call) in calls.iter().enumerate().take(2) {
        let arguments: String = deltas.iter().filter(|d| d["index"] == index).filter_map(|d| d["function"]["arguments"].as_str()).collect();
        assert_eq!(arguments, call.pointer("/function/arguments").unwrap().as_str().unwrap());
    }

    // The conversation goes on: the assistant's calls and the tool's result render into the prompt.
    let messages = json!([
        { "role": "user", "content": "weather in Paris?" },
        { "role": "assistant", "content": null, "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"c\"}" } }] },
        { "role": "tool", "tool_call_id": "call_1", "content": "21 degrees" },
        { "role": "user", "content": "[[say:It is 21 degrees.]]" }
    ]);
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), json!({ "model": "tiny", "messages": messages, "tools": weather_tools(), "max_tokens": 50 })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "It is 21 degrees.");
    let broken = json!([{ "role": "assistant", "content": null, "tool_calls": [{ "id": "c", "type": "function", "function": { "name": "f", "arguments": "{not json" } }] }]);
    let reply = server.json("POST", "/v1/chat/completions", Some(&token), json!({ "model": "tiny", "messages": broken })).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["param"], "messages[0].tool_calls[0]");
}

#[tokio::test]
async fn ollama_formats_and_tool_calls_with_object_arguments() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let schema = json!({ "type": "object", "properties": { "city": { "type": "string", "maxLength": 8 }, "population": { "type": "integer" } }, "required": ["city", "population"] });
    let reply = server.json("POST", "/api/chat", Some(&token), json!({ "model": "tiny", "messages": [{ "role": "user", "content": "a city" }], "format": schema, "stream": false, "options": { "temperature": 0, "num_predict": 300 } })).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let content = reply.json()["message"]["content"].as_str().unwrap().to_owned();
    let value: Value = serde_json::from_str(&content).unwrap_or_else(|err| panic!("{content:?}: {err}"));
    assert!(value["city"].is_string() && is_integer(&value["population"]), "{content}");
    // JSON mode: the mock's scripted JSON comes through and ends the answer where the object does;
    // a script that is not JSON is overruled from its first byte.
    let reply = server.json("POST", "/api/generate", Some(&token), json!({ "model": "tiny", "prompt": "[[say:{\"a\": [1, true]}trailing]]", "format": "json", "stream": false })).await;
    assert_eq!(reply.json()["response"], "{\"a\": [1, true]}");
    assert_eq!(reply.json()["done_reason"], "stop");
    let reply = server.json("POST", "/api/generate", Some(&token), json!({ "model": "tiny", "prompt": "[[say:plain words]]", "format": "json", "stream": false, "options": { "num_predict": 20 } })).await;
    assert!(reply.json()["response"].as_str().unwrap().starts_with('{'), "{:?}", reply.json());
    let bad = server.json("POST", "/api/chat", Some(&token), json!({ "model": "tiny", "messages": [{ "role": "user", "content": "x" }], "format": { "type": "string", "pattern": "(a)\\1" } })).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.json()["error"].as_str().unwrap().contains("backreferences"));

    // Tools: calls come back whole, with object arguments, streamed or not.
    let script = "[[say:<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\", \"unit\": \"c\"}}\n</tool_call>]]";
    let body = json!({ "model": "tiny", "messages": [{ "role": "user", "content": script }], "tools": weather_tools(), "stream": false });
    let message = server.json("POST", "/api/chat", Some(&token), body.clone()).await.json()["message"].clone();
    assert_eq!(message["tool_calls"][0]["function"]["name"], "get_weather");
    assert_eq!(message["tool_calls"][0]["function"]["arguments"], json!({ "city": "Oslo", "unit": "c" }));
    assert_eq!(message["content"], "");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let reply = server.json("POST", "/api/chat", Some(&token), streamed).await;
    let lines: Vec<Value> = String::from_utf8(reply.body.to_vec()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let with_calls: Vec<&Value> = lines.iter().filter(|l| l["message"]["tool_calls"].is_array()).collect();
    assert_eq!(with_calls.len(), 1);
    assert_eq!(with_calls[0]["done"], false);
    assert_eq!(lines.last().unwrap()["done"], true);
    // Ollama-style history: calls with object arguments, results with tool_name.
    let history = json!([
        { "role": "user", "content": "weather?" },
        { "role": "assistant", "content": "", "tool_calls": [{ "function": { "name": "get_weather", "arguments": { "city": "Oslo", "unit": "c" } } }] },
        { "role": "tool", "content": "-3", "tool_name": "get_weather" },
        { "role": "user", "content": "[[say:Cold.]]" }
    ]);
    let reply = server.json("POST", "/api/chat", Some(&token), json!({ "model": "tiny", "messages": history, "tools": weather_tools(), "stream": false })).await;
    assert_eq!(reply.json()["message"]["content"], "Cold.");
}
