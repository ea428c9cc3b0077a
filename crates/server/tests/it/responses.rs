//! The Responses API on the mock model: plain and streamed answers that agree, stored responses
//! continued with `previous_response_id` (and private to their owner), function calls out and
//! their outputs back in, structured output, and fields refused by name.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::openai::{assert_openai_error, deployed};

fn body(input: Value, extra: Value) -> Value {
    let mut body = json!({ "model": "tiny", "input": input, "max_output_tokens": 60, "temperature": 0 });
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// `(event name, data)` of each event of an SSE body.
fn events(raw: &[u8]) -> Vec<(String, Value)> {
    String::from_utf8(raw.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let name = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default().to_owned();
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            (name, serde_json::from_str(&data).unwrap_or_else(|err| panic!("{data:?}: {err}")))
        })
        .collect()
}

fn output_text(response: &Value) -> String {
    response["output"].as_array().unwrap().iter().filter(|i| i["type"] == "message").flat_map(|i| i["content"].as_array().unwrap().iter()).filter_map(|p| p["text"].as_str()).collect()
}

#[tokio::test]
async fn plain_and_streamed_answers_agree_and_are_stored() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let reply = server.json("POST", "/v1/responses", Some(&token), body(json!("[[say:Hello from Mantle.]]"), json!({ "instructions": "Be brief.", "metadata": { "k": "v" } }))).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    let response = reply.json();
    assert_eq!(response["object"], "response");
    assert_eq!(response["status"], "completed");
    assert!(response["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(output_text(&response), "Hello from Mantle.");
    assert_eq!(response["output"][0]["role"], "assistant");
    assert_eq!(response["instructions"], "Be brief.");
    assert_eq!(response["metadata"], json!({ "k": "v" }));
    let usage = &response["usage"];
    assert_eq!(usage["output_tokens"], "Hello from Mantle.".len(), "one token per byte, the end token not counted");
    assert_eq!(usage["total_tokens"], usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap());
    assert!(reply.header("x-mantle-revision").is_some());

    // Stored: it reads back as returned, with its input items.
    let id = response["id"].as_str().unwrap();
    let stored = server.get(&format!("/v1/responses/{id}"), Some(&token)).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert_eq!(stored.json(), response);
    let items = server.get(&format!("/v1/responses/{id}/input_items"), Some(&token)).await.json();
    assert_eq!(items["object"], "list");
    assert_eq!(items["data"][0]["role"], "user");
    assert_eq!(items["data"][0]["content"][0], json!({ "type": "input_text", "text": "[[say:Hello from Mantle.]]" }));
    assert_eq!(items["has_more"], false);

    // Streamed: the typed events in order, the same text, the final object completed.
    let reply = server.json("POST", "/v1/responses", Some(&token), body(json!("[[say:Hello from Mantle.]]"), json!({ "stream": true }))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").unwrap().starts_with("text/event-stream"));
    let events = events(&reply.body);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(&names[..4], ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]);
    assert_eq!(&names[names.len() - 4..], ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]);
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i);
    }
    let deltas: String = events.iter().filter(|(n, _)| n == "response.output_text.delta").map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    assert_eq!(deltas, "Hello from Mantle.");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(output_text(completed), deltas);
    let streamed_id = completed["id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/v1/responses/{streamed_id}"), Some(&token)).await.json(), *completed);

    // store: false keeps nothing.
    let unstored = server.json("POST", "/v1/responses", Some(&token), body(json!("[[say:x]]"), json!({ "store": false }))).await.json();
    assert_eq!(server.get(&format!("/v1/responses/{}", unstored["id"].as_str().unwrap()), Some(&token)).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_conversation_continues_from_its_stored_turns_and_stays_private() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let first = server.json("POST", "/v1/responses", Some(&token), body(json!("My name is Ann. [[say:Hi Ann.]]"), json!({}))).await.json();
    let first_id = first["id"].as_str().unwrap().to_owned();
    // The mock answers with the last [[say:]] of its whole prompt: the second turn's prompt holds the
    // first turn's input and answer, so its input tokens count them.
    let second = server.json("POST", "/v1/responses", Some(&token), body(json!("And now? [[say:Still here.]]"), json!({ "previous_response_id": first_id }))).await.json();
    assert_eq!(second["previous_response_id"], first_id.as_str());
    assert_eq!(output_text(&second), "Still here.");
    let alone = server.json("POST", "/v1/responses", Some(&token), body(json!("And now? [[say:Still here.]]"), json!({}))).await.json();
    let carried = second["usage"]["input_tokens"].as_u64().unwrap() - alone["usage"]["input_tokens"].as_u64().unwrap();
    assert!(carried as usize >= "My name is Ann. [[say:Hi Ann.]]".len() + "Hi Ann.".len(), "{carried}");

    // Another account sees none of it: not the response, not its items, not as a previous one.
    let other = server.user("bob", None, "write").await;
    for path in [format!("/v1/responses/{first_id}"), format!("/v1/responses/{first_id}/input_items")] {
        assert_openai_error(&server.get(&path, Some(&other)).await, StatusCode::NOT_FOUND, None);
    }
    let reply = server.json("POST", "/v1/responses", Some(&other), body(json!("x"), json!({ "previous_response_id": first_id }))).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("previous_response_id"));
    assert_eq!(reply.json()["error"]["code"], "previous_response_not_found");
    assert_openai_error(&server.send("DELETE", &format!("/v1/responses/{first_id}"), Some(&other), None, Vec::new()).await, StatusCode::NOT_FOUND, None);

    // The owner deletes it (audited); then it is gone, and so is continuing from it.
    let reply = server.send("DELETE", &format!("/v1/responses/{first_id}"), Some(&token), None, Vec::new()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.json());
    assert_eq!(reply.json()["deleted"], true);
    assert_eq!(server.get(&format!("/v1/responses/{first_id}"), Some(&token)).await.status, StatusCode::NOT_FOUND);
    let audit = server.audit_actions().await;
    assert!(audit.iter().any(|a| a == "response.delete"), "{audit:?}");
    let reply = server.json("POST", "/v1/responses", Some(&token), body(json!("x"), json!({ "previous_response_id": second["id"] }))).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("previous_response_id"));
}

#[tokio::test]
async fn function_calls_go_out_as_items_and_their_outputs_come_back_in() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let tools = json!([{ "type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] }, "strict": true }]);
    let script = "[[say:<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>]]";
    let response = server.json("POST", "/v1/responses", Some(&token), body(json!(script), json!({ "tools": tools, "max_output_tokens": 200 }))).await.json();
    let calls: Vec<&Value> = response["output"].as_array().unwrap().iter().filter(|i| i["type"] == "function_call").collect();
    assert_eq!(calls.len(), 1, "{response}");
    assert_eq!(calls[0]["name"], "get_weather");
    assert_eq!(serde_json::from_str::<Value>(calls[0]["arguments"].as_str().unwrap()).unwrap(), json!({ "city": "Oslo" }));
    let call_id = calls[0]["call_id"].as_str().unwrap().to_owned();
    assert_eq!(response["tools"][0]["name"], "get_weather");

    // Streamed: the call's arguments arrive as deltas that add up to the same arguments.
    let reply = server.json("POST", "/v1/responses", Some(&token), body(json!(script), json!({ "tools": tools, "stream": true, "max_output_tokens": 200 }))).await;
    let events = events(&reply.body);
    let added = events.iter().find(|(n, d)| n == "response.output_item.added" && d["item"]["type"] == "function_call").expect("a function_call item");
    assert_eq!(added.1["item"]["name"], "get_weather");
    let arguments: String = events.iter().filter(|(n, _)| n == "response.function_call_arguments.delta").map(|(_, d)| d["delta"].as_str().unwrap()).collect();
    let done = events.iter().find(|(n, _)| n == "response.function_call_arguments.done").unwrap();
    assert_eq!(done.1["arguments"], arguments.as_str());

    // The output goes back in, continuing the stored response; the model's next answer is text.
    let next = server
        .json("POST", "/v1/responses", Some(&token), body(json!([{ "type": "function_call_output", "call_id": call_id, "output": "sunny [[say:It is sunny in Oslo.]]" }]), json!({ "tools": tools, "previous_response_id": response["id"] })))
        .await;
    assert_eq!(next.status, StatusCode::OK, "{:?}", next.json());
    assert_eq!(output_text(&next.json()), "It is sunny in Oslo.");

    // Or the whole conversation is sent again, as the Agents SDK does.
    let replay = json!([
        { "role": "user", "content": "weather in Oslo?" },
        { "type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": "{\"city\": \"Oslo\"}" },
        { "type": "function_call_output", "call_id": "call_9", "output": "rain [[say:Rain.]]" }
    ]);
    let reply = server.json("POST", "/v1/responses", Some(&token), body(replay, json!({ "tools": tools, "tool_choice": "auto", "parallel_tool_calls": false }))).await;
    assert_eq!(output_text(&reply.json()), "Rain.");

    // A forced call is one, always.
    let forced = server.json("POST", "/v1/responses", Some(&token), body(json!("anything"), json!({ "tools": tools, "tool_choice": { "type": "function", "name": "get_weather" }, "max_output_tokens": 200 }))).await.json();
    assert_eq!(forced["output"].as_array().unwrap().iter().filter(|i| i["type"] == "function_call").count(), 1, "{forced}");
}

#[tokio::test]
async fn structured_output_holds_to_the_schema() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let schema = json!({ "type": "object", "properties": { "name": { "type": "string", "maxLength": 8 }, "age": { "type": "integer" } }, "required": ["name", "age"], "additionalProperties": false });
    let text = json!({ "format": { "type": "json_schema", "name": "person", "strict": true, "schema": schema } });
    let response = server.json("POST", "/v1/responses", Some(&token), body(json!("a person"), json!({ "text": text, "max_output_tokens": 300 }))).await.json();
    let value: Value = serde_json::from_str(&output_text(&response)).unwrap_or_else(|err| panic!("{response}: {err}"));
    assert!(value["name"].as_str().is_some_and(|n| n.chars().count() <= 8), "{value}");
    assert!(value["age"].is_number(), "{value}");
    assert_eq!(response["text"]["format"]["name"], "person");
}

#[tokio::test]
async fn a_cut_answer_is_incomplete_and_bad_fields_change_nothing() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let response = server.json("POST", "/v1/responses", Some(&token), body(json!("[[say:a long answer that will not fit]]"), json!({ "max_output_tokens": 5 }))).await.json();
    assert_eq!(response["status"], "incomplete");
    assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(output_text(&response), "a lon");

    for (extra, param) in [
        (json!({ "frobnicate": true }), "frobnicate"),
        (json!({ "background": true }), "background"),
        (json!({ "tools": [{ "type": "web_search" }] }), "tools[0].type"),
        (json!({ "temperature": 3 }), "temperature"),
        (json!({ "include": ["code_interpreter_call.outputs"] }), "include"),
        (json!({ "metadata": { "k": 1 } }), "metadata"),
        (json!({ "text": { "format": { "type": "json_schema", "name": "x", "schema": { "type": "object", "properties": { "a": { "$ref": "http://example.com/s.json" } } } } } }), "text.format.schema"),
    ] {
        let reply = server.json("POST", "/v1/responses", Some(&token), body(json!("hi"), extra.clone())).await;
        assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some(param));
    }
    let reply = server.json("POST", "/v1/responses", Some(&token), json!({ "model": "tiny", "input": [{ "role": "robot", "content": "x" }] })).await;
    assert_openai_error(&reply, StatusCode::BAD_REQUEST, Some("input[0]"));
    let reply = server.json("POST", "/v1/responses", Some(&token), json!({ "model": "nope", "input": "x" })).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(server.get("/v1/responses/resp_missing", Some(&token)).await.status, StatusCode::NOT_FOUND);
    let reply = server.json("POST", "/v1/responses", None, json!({ "model": "tiny", "input": "x" })).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_read_token_may_ask_but_not_delete() {
    let (server, token) = deployed(|_| {}, false, 4).await;
    let reader = server.token("ann", "read").await;
    let response = server.json("POST", "/v1/responses", Some(&reader), body(json!("[[say:ok]]"), json!({}))).await.json();
    let id = response["id"].as_str().unwrap();
    assert_eq!(server.get(&format!("/v1/responses/{id}"), Some(&token)).await.status, StatusCode::OK, "the account's other tokens see it");
    assert_eq!(server.send("DELETE", &format!("/v1/responses/{id}"), Some(&reader), None, Vec::new()).await.status, StatusCode::FORBIDDEN);
}
